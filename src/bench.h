/* Timed single runs for the benchmark tool. Internal: linked from the static library only. */
#ifndef SOFTPICK_BENCH_H
#define SOFTPICK_BENCH_H

#include "softpick_plan.h"

/* A variant of the copy shader (shaders/copy.comp); zero fields are not defaults here. */
typedef struct spk__copy_variant {
    uint32_t workgroup, per_invocation; /* vec4s per invocation */
    uint32_t checked;                   /* 0: no bounds check (the grid must cover the copy exactly) */
    bool texel;                         /* read the source through its texel view */
} spk__copy_variant;

/* A variant of the FMA-only shader (shaders/fma_peak.comp). */
typedef struct spk__fma_variant {
    uint32_t workgroup, chains, iterations; /* independent vec4 chains per invocation */
    uint32_t unroll;                        /* rounds per loop trip; divides iterations */
} spk__fma_variant;

/* Each records one copy alone in a command buffer, submits, waits, and returns its GPU time from
 * timestamp queries in *ns (0 when the device has no timestamps). Tensors need equal sizes; the
 * copy shader copies whole vec4s (count a multiple of 4). SPK_ERROR_UNSUPPORTED: a variant this
 * size or device cannot run (an unchecked copy whose grid would not be exact, no texel view). */
spk_status spk__bench_copy_shader(spk_context *ctx, const spk_tensor *src, const spk_tensor *dst,
                                  const spk__copy_variant *variant, uint64_t *ns);
spk_status spk__bench_copy_buffer(spk_context *ctx, const spk_tensor *src, const spk_tensor *dst, uint64_t *ns);
/* The FMA-only shader over one invocation per element of dst (rounded down to whole
 * workgroups); *flops is the work done (2 per FMA, 4 lanes per chain). */
spk_status spk__bench_fma_peak(spk_context *ctx, const spk_tensor *src, const spk_tensor *dst,
                               const spk__fma_variant *variant, uint64_t *ns, double *flops);

/* Records `count` dispatches of a copy of a.count floats (a multiple of 4; b the same size), back
 * and forth between a and b so that each waits on the one before (a barrier between every two, as
 * between a model's kernels): timed as a recording, the cost of a dispatch beyond its kernel's
 * work when a is small. arg: a spk__dispatches_args. */
typedef struct spk__dispatches_args {
    const spk_tensor *a, *b;
    uint32_t count;
} spk__dispatches_args;
spk_status spk__record_dispatches(spk_context *ctx, const void *arg);

#endif
