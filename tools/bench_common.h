/* Pieces shared by the benchmark's tables (bench_common.c), which bench.c, bench_model.c,
 * bench_train.c and bench_dist.c include; none of them calls back into another. */
#ifndef SOFTPICK_BENCH_COMMON_H
#define SOFTPICK_BENCH_COMMON_H

#include "softpick/softpick.h"
#include "bench.h"

/* One timed run: GPU nanoseconds in *ns. */
typedef spk_status (*bench_fn)(void *arg, uint64_t *ns);
/* A bench_fn's argument for work recorded by `record` (an internal spk__record_* sequence) and
 * run in one submit: median_ns(run_recorded, &(recorded_run){...}, repeats). */
typedef struct recorded_run {
    spk_context *ctx;
    spk_status (*record)(spk_context *ctx, const void *arg);
    const void *arg;
} recorded_run;
spk_status run_recorded(void *arg, uint64_t *ns);
/* Median of `repeats` runs after 3 warm-up runs; 0 on failure. */
uint64_t median_ns(bench_fn fn, void *arg, int repeats);
double gbps(uint64_t bytes, uint64_t ns);
/* Deterministic floats in [-1, 1). */
void fill_random(float *data, int64_t n);

/* The copy ceilings over copy->src (best of their runs and variants, in ns): the copy shader,
 * the same reading a texel view (0 where src has none), vkCmdCopyBuffer; the best variants
 * described in `best`. */
typedef struct copy_run {
    spk_context *ctx;
    spk_tensor *src, *dst;
    spk__copy_variant variant;
} copy_run;
void time_copies(copy_run *copy, int repeats, uint64_t *shader_ns, uint64_t *texel_ns, uint64_t *buffer_ns,
                 char best[2][64]);

/* The ceilings every table prints: copy bandwidths (GB/s, read + written) and the FMA peak. */
typedef struct ceilings {
    double copy_shader, copy_texel, copy_buffer, fma_gflops; /* copy_texel: reading a texel view (0: none) */
} ceilings;
/* Measures and prints them; returns non-zero (after printing why) on failure. */
int measure_ceilings(spk_context *ctx, int repeats, ceilings *c);

int bench_attention(spk_context *ctx, int repeats);
/* The model at batches 1 and 32 in float32 and, unless both are f32, with these storage types. */
/* With `tuned`, the float32 rows again on the context's tuned choices (the rules' rows hide them). */
int bench_model(spk_context *ctx, int repeats, spk_dtype weights_dtype, spk_dtype activation_dtype, bool tuned,
                spk_normalizer attention);
int bench_soak(spk_context *ctx, long forwards);
/* With `tuned`, the step again on the context's tuned choices (the table hides them). */
int bench_train(spk_context *ctx, int repeats, bool tuned);
/* bench train under mpirun: data-parallel over the ranks beside one rank alone (bench_dist.c). */
int bench_train_dist(spk_context *ctx, int repeats);

#endif
