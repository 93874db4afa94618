/* The ceilings for the benchmarks (tools/bench.c): copy shaders, vkCmdCopyBuffer and an FMA-only
 * shader, each timed on the GPU with the context's timestamp queries. Internal: the
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
    spk__copy_variant variant;
} spk__copy_args;

static spk_status spk__record_copy_shader(spk_context *ctx, const void *arg) {
    const spk__copy_args *a = arg;
    const spk__copy_variant *v = &a->variant;
    uint32_t count = (uint32_t)(a->src->count / 4), per_group = v->workgroup * v->per_invocation;
    uint32_t spec[3] = {v->workgroup, v->per_invocation, v->checked};
    if (v->texel && !a->src->views[1]) return spk__fail(ctx, SPK_ERROR_UNSUPPORTED, "the source has no texel view");
    if (!v->checked) { /* no bounds check: the grid must cover the copy exactly */
        uint32_t groups[3];
        spk_status status = spk__grid(ctx, (count + per_group - 1) / per_group, groups);
        if (status != SPK_OK) return status;
        if ((uint64_t)groups[0] * groups[1] * per_group != count)
            return spk__fail(ctx, SPK_ERROR_UNSUPPORTED, "an unchecked copy needs a grid that covers it exactly");
    }
    return spk__dispatch_map(ctx, v->texel ? &spk__shader_copy_texel_f4 : &spk__shader_copy_f4, spec, 3, a->src->ref,
                             a->src->views[1], a->dst->ref, (count + v->per_invocation - 1) / v->per_invocation,
                             count);
}

static spk_status spk__record_copy_buffer(spk_context *ctx, const void *arg) {
    const spk__copy_args *a = arg;
    return spk__copy(ctx, a->src->ref, a->dst->ref);
}

spk_status spk__bench_copy_shader(spk_context *ctx, const spk_tensor *src, const spk_tensor *dst,
                                  const spk__copy_variant *variant, uint64_t *ns) {
    spk__copy_args a = {src, dst, *variant};
    return spk__timed(ctx, spk__record_copy_shader, &a, ns);
}

spk_status spk__bench_copy_buffer(spk_context *ctx, const spk_tensor *src, const spk_tensor *dst, uint64_t *ns) {
    spk__copy_args a = {src, dst, {0}};
    return spk__timed(ctx, spk__record_copy_buffer, &a, ns);
}

typedef struct spk__fma_args {
    const spk_tensor *src, *dst;
    spk__fma_variant variant;
} spk__fma_args;

static spk_status spk__record_fma_peak(spk_context *ctx, const void *arg) {
    const spk__fma_args *a = arg;
    uint32_t spec[4] = {a->variant.workgroup, a->variant.iterations, a->variant.chains, a->variant.unroll};
    return spk__dispatch_map(ctx, &spk__shader_fma_peak, spec, 4, a->src->ref, VK_NULL_HANDLE, a->dst->ref,
                             (uint64_t)a->dst->count, (uint32_t)a->src->count);
}

spk_status spk__bench_fma_peak(spk_context *ctx, const spk_tensor *src, const spk_tensor *dst,
                               const spk__fma_variant *variant, uint64_t *ns, double *flops) {
    spk__fma_args a = {src, dst, *variant};
    uint64_t invocations = (uint64_t)dst->count / variant->workgroup * variant->workgroup;
    *flops = (double)invocations * variant->iterations * variant->chains * 8.0;
    return spk__timed(ctx, spk__record_fma_peak, &a, ns);
}

spk_status spk__record_dispatches(spk_context *ctx, const void *arg) {
    const spk__dispatches_args *o = arg;
    uint32_t n = (uint32_t)(o->a->count / 4), spec[3] = {64, 1, 1};
    spk_status status = SPK_OK;
    for (uint32_t i = 0; i < o->count && status == SPK_OK; i++) {
        const spk_tensor *src = i % 2 ? o->b : o->a, *dst = i % 2 ? o->a : o->b;
        status = spk__dispatch_map(ctx, &spk__shader_copy_f4, spec, 3, src->ref, VK_NULL_HANDLE, dst->ref, n, n);
    }
    return status;
}
