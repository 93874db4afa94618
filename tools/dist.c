/* The processes of one run of the tool: MPI ranks when it is built with MPI (SOFTPICK_MPI) and
 * started by mpirun, one per device; otherwise one process. The library knows nothing of MPI: it
 * calls cli_dist_reduce between a training step's backward and its optimizer. */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#ifdef SOFTPICK_MPI
#include <mpi.h>
#endif

static cli_dist g_dist = {0, 1, 0};
static bool g_agreed_failure; /* cli_dist_all said no: every rank knows, and ends normally */

/* The ranks mpirun (Open MPI, MPICH's PMI) says this process belongs to: 1 when not under it. */
static int launcher_size(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"};
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 1) return atoi(v);
    }
    return 1;
}

#ifdef SOFTPICK_MPI
/* Waits for a request without spinning (MPI's blocking calls poll a core): a rank waiting for
 * another leaves the cores to it, which matters where the device is the CPU. */
static bool quiet_wait(MPI_Request *request, long nanoseconds) {
    int done = 0;
    while (MPI_Test(request, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && !done)
        nanosleep(&(struct timespec){0, nanoseconds}, NULL);
    return done;
}
#endif

bool cli_dist_init(int *argc, char ***argv) {
    int size = launcher_size();
#ifdef SOFTPICK_MPI
    if (size <= 1) return true; /* not under mpirun: no MPI at all (nothing to start or finish) */
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_dist.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_dist.size);
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &g_dist.local_rank);
    MPI_Comm_free(&node);
    return true;
#else
    (void)argc, (void)argv;
    if (size <= 1) return true;
    fprintf(stderr, "softpick: started as %d ranks, but this softpick was built without MPI (install libopenmpi-dev "
                    "and rebuild)\n", size);
    return false;
#endif
}

void cli_dist_finish(int rc) {
    /* A rank failing on its own ends the job (the others may be waiting for it in a reduction). */
    if (rc && !g_agreed_failure) cli_dist_abort(rc);
#ifdef SOFTPICK_MPI
    if (g_dist.size > 1) MPI_Finalize();
#endif
}

const cli_dist *cli_dist_get(void) { return &g_dist; }

void cli_dist_abort(int rc) {
#ifdef SOFTPICK_MPI
    if (g_dist.size > 1) {
        fflush(stdout), fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, rc);
    }
#endif
    (void)rc;
}

spk_status cli_dist_reduce(void *user, float *data, size_t count) {
    (void)user;
#ifdef SOFTPICK_MPI
    for (size_t done = 0; g_dist.size > 1 && done < count;) { /* counts are ints */
        int n = count - done > (size_t)1 << 30 ? 1 << 30 : (int)(count - done);
        MPI_Request request;
        if (MPI_Iallreduce(MPI_IN_PLACE, data + done, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &request) != MPI_SUCCESS ||
            !quiet_wait(&request, 100000))
            return SPK_ERROR_IO; /* the communication failed */
        done += (size_t)n;
    }
#else
    (void)data, (void)count;
#endif
    return SPK_OK;
}

bool cli_dist_all(bool ok) {
#ifdef SOFTPICK_MPI
    int mine = ok, all = ok;
    if (g_dist.size > 1) {
        MPI_Request request;
        MPI_Iallreduce(&mine, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD, &request);
        quiet_wait(&request, 1000000);
    }
    g_agreed_failure = !all;
    return all;
#else
    return ok;
#endif
}

/* FNV-1a, 64 bits. */
static uint64_t fnv(uint64_t h, const void *bytes, size_t n) {
    const unsigned char *p = bytes;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

uint64_t cli_dist_digest(uint64_t h, const void *bytes, size_t n) { return fnv(h ? h : 0xcbf29ce484222325ull, bytes, n); }

int cli_dist_differs(const uint64_t *digests, int count) {
#ifdef SOFTPICK_MPI
    for (int i = 0; g_dist.size > 1 && i < count; i++) {
        uint64_t mine[2] = {digests[i], ~digests[i]}, least[2];
        MPI_Allreduce(mine, least, 2, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
        if (least[0] != digests[i] || ~least[1] != digests[i]) { /* someone's is lower or higher */
            g_agreed_failure = true;
            return i;
        }
    }
#else
    (void)digests, (void)count;
#endif
    return -1;
}

void cli_dist_gather(const float *mine, int64_t count, float *all) {
#ifdef SOFTPICK_MPI
    if (g_dist.size > 1) {
        int *counts = calloc((size_t)g_dist.size, sizeof *counts), *at = calloc((size_t)g_dist.size, sizeof *at);
        if (!counts || !at) {
            fputs("softpick: out of host memory\n", stderr);
            cli_dist_abort(1);
        }
        int n = (int)count;
        MPI_Gather(&n, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD);
        for (int r = 1; g_dist.rank == 0 && r < g_dist.size; r++) at[r] = at[r - 1] + counts[r - 1];
        /* Rank 0's own rows are already in place (its part of `all`). */
        const void *send = g_dist.rank == 0 && mine == all ? MPI_IN_PLACE : (const void *)mine;
        MPI_Gatherv(send, n, MPI_FLOAT, all, counts, at, MPI_FLOAT, 0, MPI_COMM_WORLD);
        free(counts), free(at);
        return;
    }
#endif
    if (all != mine) memcpy(all, mine, (size_t)count * sizeof *all);
}
