/* Timed single runs for the benchmark tool. Internal: linked from the static library only. */
#ifndef SOFTPICK_BENCH_H
#define SOFTPICK_BENCH_H

#include "softpick_plan.h"

/* Each records one copy alone in a command buffer, submits, waits, and returns its GPU time from
 * timestamp queries in *ns (0 when the device has no timestamps). Tensors need equal sizes; the
 * copy shader copies whole vec4s (count a multiple of 4), reading through the source's texel view
 * if `texel`. */
spk_status spk__bench_copy_shader(spk_context *ctx, const spk_tensor *src, const spk_tensor *dst, bool texel,
                                  uint64_t *ns);
spk_status spk__bench_copy_buffer(spk_context *ctx, const spk_tensor *src, const spk_tensor *dst, uint64_t *ns);
/* The FMA-only shader over one invocation per element of dst (a multiple of 64), each running
 * `iterations` rounds of 8 FMAs; *flops is the work done (2 per FMA). */
spk_status spk__bench_fma_peak(spk_context *ctx, const spk_tensor *src, const spk_tensor *dst, uint32_t iterations,
                               uint64_t *ns, double *flops);

#endif
