/* The bandwidth ceilings for the benchmarks (tools/bench.c): a vec4 copy shader and
 * vkCmdCopyBuffer, each timed on the GPU with the context's timestamp queries. Internal: the
 * public API has no benchmarking surface. */
#include "bench.h"

static spk_status spk__timed(spk_context *ctx, spk_status (*record)(spk_context *, const void *), const void *arg,
                             uint64_t *ns) {
    spk_status status = spk__run_sync(ctx, record, arg);
    *ns = spk_context_last_gpu_time_ns(ctx);
    return status;
}

typedef struct spk__copy_args {
    const spk_tensor *src, *dst;
    bool texel;
} spk__copy_args;

static spk_status spk__record_copy_shader(spk_context *ctx, const void *arg) {
    const spk__copy_args *a = arg;
    uint32_t count = (uint32_t)(a->src->count / 4), workgroup = 256;
    if (a->texel && !a->src->views[1]) return spk__fail(ctx, SPK_ERROR_UNSUPPORTED, "the source has no texel view");
    return spk__dispatch_map(ctx, a->texel ? &spk__shader_copy_texel_f4 : &spk__shader_copy_f4, &workgroup, 1,
                             a->src->ref, a->src->views[1], a->dst->ref, count, count);
}

static spk_status spk__record_copy_buffer(spk_context *ctx, const void *arg) {
    const spk__copy_args *a = arg;
    return spk__copy(ctx, a->src->ref, a->dst->ref);
}

spk_status spk__bench_copy_shader(spk_context *ctx, const spk_tensor *src, const spk_tensor *dst, bool texel,
                                  uint64_t *ns) {
    spk__copy_args a = {src, dst, texel};
    return spk__timed(ctx, spk__record_copy_shader, &a, ns);
}

spk_status spk__bench_copy_buffer(spk_context *ctx, const spk_tensor *src, const spk_tensor *dst, uint64_t *ns) {
    spk__copy_args a = {src, dst, false};
    return spk__timed(ctx, spk__record_copy_buffer, &a, ns);
}

typedef struct spk__fma_args {
    const spk_tensor *src, *dst;
    uint32_t iterations;
} spk__fma_args;

static spk_status spk__record_fma_peak(spk_context *ctx, const void *arg) {
    const spk__fma_args *a = arg;
    uint32_t spec[2] = {64, a->iterations};
    return spk__dispatch_map(ctx, &spk__shader_fma_peak, spec, 2, a->src->ref, VK_NULL_HANDLE, a->dst->ref,
                             (uint64_t)a->dst->count, (uint32_t)a->src->count);
}

spk_status spk__bench_fma_peak(spk_context *ctx, const spk_tensor *src, const spk_tensor *dst, uint32_t iterations,
                               uint64_t *ns, double *flops) {
    spk__fma_args a = {src, dst, iterations};
    *flops = (double)(dst->count / 64 * 64) * iterations * 16.0;
    return spk__timed(ctx, spk__record_fma_peak, &a, ns);
}
