/* softpick bench train under mpirun: the default model's training step data-parallel over the
 * ranks (the global batch of 32 split by rows, the gradients all-reduced over MPI between the
 * backward and the optimizer) beside one rank alone on the whole batch in the same run, with the
 * time the reduction takes; then, on paper, what N GPUs would do from the measured step and the
 * gradient bytes. Wall time: a data-parallel step is two submits with the host's reduction
 * between them, which GPU timestamps would not see. */
#include <stdio.h>
#include <stdlib.h>

#include "bench_common.h"
#include "cli.h"

/* The reductions of one step: all of them, and the last two (the last bucket's and the loss's),
 * which run once the backward is done: the exposed part. The earlier buckets' run while the
 * device is still busy with the rest of the backward. */
typedef struct reduce_clock {
    double ms, last[2];
} reduce_clock;

static spk_status timed_reduce(void *user, float *data, size_t count) {
    reduce_clock *c = user;
    double t0 = cli_now_ms();
    spk_status s = cli_dist_reduce(NULL, data, count);
    double ms = cli_now_ms() - t0;
    c->ms += ms, c->last[0] = c->last[1], c->last[1] = ms;
    return s;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Medians over `repeats` steps (after 3 warm-up steps) of the step's wall time, the time in the
 * reductions and its exposed part (out[0..2]); false on failure. */
static bool time_steps(spk_model *m, const float *x, const float *t, int64_t rows, int64_t seq, int repeats,
                       reduce_clock *clock, double out[3]) {
    spk_optimizer_desc opt = spk_optimizer_defaults(SPK_OPTIMIZER_ADAMW);
    double *runs = calloc(3 * (size_t)repeats, sizeof *runs);
    bool ok = runs != NULL;
    for (int i = -3; i < repeats && ok; i++) {
        *clock = (reduce_clock){0};
        double t0 = cli_now_ms();
        ok = spk_model_train_step(m, x, rows, seq, SPK_LOSS_CROSS_ENTROPY, t, &opt, NULL) == SPK_OK;
        if (i >= 0)
            runs[i] = cli_now_ms() - t0, runs[repeats + i] = clock->ms, runs[2 * repeats + i] = clock->last[0] + clock->last[1];
    }
    for (int k = 0; ok && k < 3; k++) {
        qsort(runs + k * repeats, (size_t)repeats, sizeof *runs, by_value);
        out[k] = runs[k * repeats + repeats / 2];
    }
    free(runs);
    return ok;
}

int bench_train_dist(spk_context *ctx, int repeats) {
    const cli_dist *d = cli_dist_get();
    spk_model_config cfg = spk_model_config_default(256);
    cfg.num_outputs = 4;
    const int64_t batch = 32, seq = cfg.window_size;
    int64_t first = d->rank * batch / d->size, share = (d->rank + 1) * batch / d->size - first;
    spk_model *alone = NULL, *m = NULL;
    float *x = malloc((size_t)(batch * seq * cfg.embed_dim) * sizeof *x), *t = malloc((size_t)batch * sizeof *t);
    spk_status s = x && t ? SPK_OK : SPK_ERROR_OUT_OF_HOST_MEMORY;
    if (s == SPK_OK) {
        fill_random(x, batch * seq * cfg.embed_dim);
        for (int64_t i = 0; i < batch; i++) t[i] = (float)(i % 4);
    }
    reduce_clock clock = {0};
    double solo[3] = {0}, one[3] = {0}, layered[3] = {0}; /* step, reduction, exposed (ms) */
    /* One rank alone on the whole batch first, the others waiting (it has the machine). */
    if (s == SPK_OK && d->rank == 0) {
        s = spk_model_create(ctx, &cfg, &alone);
        if (s == SPK_OK) s = spk_model_init_random(alone, 1);
        if (s == SPK_OK && !time_steps(alone, x, t, batch, seq, repeats, &clock, solo))
            s = SPK_ERROR_DEVICE_LOST;
        spk_model_destroy(alone);
    }
    int64_t params = 0;
    /* Data-parallel: one reduction after the whole backward, then a bucket per layer (1 MiB: each
     * of the default model's layers holds 3 MiB of gradients), reduced while the backward goes on. */
    spk_data_parallel dp = {.global_batch = batch, .first_sample = first, .reduce = timed_reduce, .user = &clock};
    if (cli_dist_all(s == SPK_OK)) {
        s = spk_model_create(ctx, &cfg, &m);
        if (s == SPK_OK) s = spk_model_init_random(m, 1);
        if (s == SPK_OK) s = spk_model_set_data_parallel(m, &dp);
        spk_model_memory_info mem;
        if (s == SPK_OK) s = spk_model_memory(m, &mem);
        params = s == SPK_OK ? (int64_t)(mem.weights / sizeof(float)) : 0;
        const float *mx = x + first * seq * cfg.embed_dim, *mt = t + first;
        if (s == SPK_OK && !time_steps(m, mx, mt, share, seq, repeats, &clock, one))
            s = SPK_ERROR_DEVICE_LOST;
        dp.bucket_bytes = 1 << 20;
        if (s == SPK_OK) s = spk_model_set_data_parallel(m, &dp);
        if (s == SPK_OK && !time_steps(m, mx, mt, share, seq, repeats, &clock, layered))
            s = SPK_ERROR_DEVICE_LOST;
    }
    int rc = s == SPK_OK ? 0 : cli_fail("bench train: %s", spk_context_last_error(ctx));
    if (!cli_dist_all(rc == 0)) rc = 1;
    if (rc == 0 && d->rank == 0) {
        double bytes = (double)(params + 1) * sizeof(float), moved = 2.0 * (d->size - 1) / d->size * bytes;
        printf("train, data-parallel: the default model (embed 256, hidden 256, 4 heads, 6 layers, seq 60, a 4-class "
               "head), global batch %lld, AdamW; wall time per step, median of %d after 3 warm-up steps\n",
               (long long)batch, repeats);
        printf("%-34s %10s %14s %14s %10s\n", "run", "step ms", "reduction ms", "exposed ms", "seq/s");
        printf("%-34s %10.2f %14s %14s %10.1f\n", "1 rank, batch 32", solo[0], "-", "-", (double)batch * 1e3 / solo[0]);
        char label[64];
        snprintf(label, sizeof label, "%d ranks of %lld-%lld rows, 1 bucket", d->size, (long long)(batch / d->size),
                 (long long)((batch + d->size - 1) / d->size));
        printf("%-34s %10.2f %14.2f %14.2f %10.1f\n", label, one[0], one[1], one[1], (double)batch * 1e3 / one[0]);
        snprintf(label, sizeof label, "%d ranks, a bucket per layer", d->size);
        printf("%-34s %10.2f %14.2f %14.2f %10.1f\n", label, layered[0], layered[1], layered[2],
               (double)batch * 1e3 / layered[0]);
        printf("gradients all-reduced per step: %.2f MiB (%lld parameters and the loss); each rank sends and receives "
               "2 (N-1)/N of them in a ring: %.2f MiB, %.2f GB/s in the one-bucket reduction; in buckets, %.0f%% of the "
               "reduction runs while the device is still in the backward (exposed: the last bucket's and the loss's)\n",
               bytes / (1 << 20), (long long)params, moved / (1 << 20), one[1] > 0 ? moved / one[1] / 1e6 : 0.0,
               layered[1] > 0 ? 100.0 * (layered[1] - layered[2]) / layered[1] : 0.0);
        double alone_ms = solo[0];
        printf("on paper, N GPUs each computing 1/N of this step (%.2f ms here) and a ring all-reduce of %.2f MiB "
               "without overlap:\n", alone_ms, bytes / (1 << 20));
        printf("%4s %16s %22s %22s\n", "N", "compute ms", "at 25 GB/s: ms, x1", "at 10 Gbit/s: ms, x1");
        for (int n = 2; n <= 8; n *= 2) {
            double compute = alone_ms / n, ring = 2.0 * (n - 1) / n * bytes;
            double fast = compute + ring / 25e9 * 1e3, slow = compute + ring / 1.25e9 * 1e3;
            printf("%4d %16.2f %14.2f %6.2fx %14.2f %6.2fx\n", n, compute, fast, alone_ms / fast, slow, alone_ms / slow);
        }
    }
    spk_model_destroy(m);
    free(x), free(t);
    return rc;
}
