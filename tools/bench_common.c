/* The benchmark's shared pieces (bench_common.h): timing runs, the ceilings every table prints. */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"
#include "bench_common.h"
#include "cli.h"

static int compare_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Median GPU nanoseconds of `repeats` runs after 3 warm-up runs; 0 on failure. */
/* Runs fn 3 times to warm up, then `repeats` times; returns the time of the given rank among
 * them (0: the best), or 0 if a run failed. */
static uint64_t ranked_ns(bench_fn fn, void *arg, int repeats, int rank) {
    uint64_t *t = calloc((size_t)repeats, sizeof *t);
    if (!t) return 0;
    uint64_t ns = 0, result = 0;
    bool ok = true;
    for (int i = 0; i < 3 && ok; i++) ok = fn(arg, &ns) == SPK_OK;
    for (int i = 0; i < repeats && ok; i++) ok = fn(arg, &t[i]) == SPK_OK;
    if (ok) {
        qsort(t, (size_t)repeats, sizeof *t, compare_u64);
        result = t[rank];
    }
    free(t);
    return result;
}

uint64_t median_ns(bench_fn fn, void *arg, int repeats) { return ranked_ns(fn, arg, repeats, repeats / 2); }

spk_status run_recorded(void *arg, uint64_t *ns) {
    const recorded_run *r = arg;
    spk_status s = spk__run_sync(r->ctx, r->record, r->arg);
    *ns = spk_context_last_gpu_time_ns(r->ctx);
    return s;
}

/* Ceilings are the best of their runs: what the device can reach, not what it typically does. */
static uint64_t best_ns(bench_fn fn, void *arg, int repeats) { return ranked_ns(fn, arg, repeats < 5 ? 5 : repeats, 0); }

static spk_status run_copy_shader(void *arg, uint64_t *ns) {
    copy_run *r = arg;
    return spk__bench_copy_shader(r->ctx, r->src, r->dst, &r->variant, ns);
}
static spk_status run_copy_buffer(void *arg, uint64_t *ns) {
    copy_run *r = arg;
    return spk__bench_copy_buffer(r->ctx, r->src, r->dst, ns);
}

/* The best time of the copy shader over its variants (workgroup size, vec4s per invocation, with
 * and without the bounds check), reading through a storage buffer or a texel view; 0 where none
 * runs. The best variant is described in `best`. */
static uint64_t best_copy_shader(copy_run *copy, bool texel, int repeats, char *best, size_t best_size) {
    static const uint32_t workgroups[] = {64, 256}, per_invocation[] = {1, 4};
    uint64_t best_ns_so_far = 0;
    snprintf(best, best_size, "none");
    for (int w = 0; w < 2; w++)
        for (int p = 0; p < 2; p++)
            for (uint32_t checked = 0; checked < 2; checked++) {
                copy->variant = (spk__copy_variant){workgroups[w], per_invocation[p], checked, texel};
                uint64_t dummy;
                if (spk__bench_copy_shader(copy->ctx, copy->src, copy->dst, &copy->variant, &dummy) != SPK_OK) continue;
                uint64_t ns = best_ns(run_copy_shader, copy, repeats);
                if (ns && (!best_ns_so_far || ns < best_ns_so_far)) {
                    best_ns_so_far = ns;
                    snprintf(best, best_size, "workgroup %u, %u vec4/invocation, %s", workgroups[w],
                             per_invocation[p], checked ? "bounds-checked" : "exact grid");
                }
            }
    return best_ns_so_far;
}

/* The copy ceilings over copy->src (best of their runs and variants, in ns): the copy shader,
 * the same reading a texel view (0 where src has none), vkCmdCopyBuffer. */
void time_copies(copy_run *copy, int repeats, uint64_t *shader_ns, uint64_t *texel_ns, uint64_t *buffer_ns,
                        char best[2][64]) {
    *shader_ns = best_copy_shader(copy, false, repeats, best[0], sizeof best[0]);
    *texel_ns = copy->src->views[1] ? best_copy_shader(copy, true, repeats, best[1], sizeof best[1]) : 0;
    *buffer_ns = best_ns(run_copy_buffer, copy, repeats);
}

double gbps(uint64_t bytes, uint64_t ns) { return ns ? (double)bytes / (double)ns : 0.0; }

void fill_random(float *data, int64_t n) {
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        data[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
}

typedef struct fma_run {
    spk_context *ctx;
    spk_tensor *src, *dst;
    spk__fma_variant variant;
    double flops;
} fma_run;

static spk_status run_fma(void *arg, uint64_t *ns) {
    fma_run *r = arg;
    return spk__bench_fma_peak(r->ctx, r->src, r->dst, &r->variant, ns, &r->flops);
}

/* The FMA peak in GFLOP/s: the best over chain counts, unrollings and workgroup sizes (the same
 * work in each). */
static double best_fma(fma_run *fma, int repeats, char *best, size_t best_size) {
    static const uint32_t chains[] = {4, 8, 16}, unrolls[] = {1, 4, 8}, workgroups[] = {64, 256};
    double peak = 0;
    snprintf(best, best_size, "none");
    for (int c = 0; c < 3; c++)
        for (int u = 0; u < 3; u++)
            for (int w = 0; w < 2; w++) {
                fma->variant = (spk__fma_variant){workgroups[w], chains[c], 2048 / chains[c], unrolls[u]};
                uint64_t ns = best_ns(run_fma, fma, repeats);
                double g = ns ? fma->flops / (double)ns : 0;
                if (g > peak) {
                    peak = g;
                    snprintf(best, best_size, "%u vec4 chains, %u rounds per trip, workgroup %u", chains[c],
                             unrolls[u], workgroups[w]);
                }
            }
    return peak;
}

int measure_ceilings(spk_context *ctx, int repeats, ceilings *c) {
    int64_t n = 1 << 22, inv = 1 << 18;
    copy_run copy = {ctx, NULL, NULL, {0}};
    fma_run fma = {ctx, NULL, NULL, {0}, 0};
    float *host = malloc((size_t)n * sizeof *host);
    spk_status status = host ? SPK_OK : SPK_ERROR_OUT_OF_HOST_MEMORY;
    if (status == SPK_OK) status = spk_tensor_create(ctx, 1, &n, &copy.src);
    if (status == SPK_OK) status = spk_tensor_create(ctx, 1, &n, &copy.dst);
    if (status == SPK_OK) status = spk_tensor_create(ctx, 1, &inv, &fma.dst);
    if (status == SPK_OK) {
        fill_random(host, n);
        status = spk_tensor_upload(copy.src, host, n);
    }
    int rc = 0;
    if (status != SPK_OK) {
        rc = cli_fail("bench setup failed: %s", spk_context_last_error(ctx));
    } else {
        fma.src = copy.src;
        uint64_t bytes = 2 * (uint64_t)n * sizeof(float);
        uint64_t shader_ns, texel_ns, buffer_ns;
        char best[3][64];
        time_copies(&copy, repeats, &shader_ns, &texel_ns, &buffer_ns, best);
        c->copy_shader = gbps(bytes, shader_ns);
        c->copy_texel = gbps(bytes, texel_ns);
        c->copy_buffer = gbps(bytes, buffer_ns);
        c->fma_gflops = best_fma(&fma, repeats, best[2], sizeof best[2]);
        printf("ceilings (best of %d runs and of the variants; 16 MiB read + written):\n"
               "  vec4 copy shader      %7.2f GB/s  (%s)\n  same, texel reads     %7.2f GB/s  (%s)\n"
               "  vkCmdCopyBuffer       %7.2f GB/s\n  FMA-only shader       %7.1f GFLOP/s  (%s)\n\n",
               repeats < 5 ? 5 : repeats, c->copy_shader, best[0], c->copy_texel, best[1], c->copy_buffer,
               c->fma_gflops, best[2]);
    }
    spk_tensor_destroy(copy.src), spk_tensor_destroy(copy.dst), spk_tensor_destroy(fma.dst);
    free(host);
    return rc;
}

