/* Fused causal softpick attention (shaders/attention.comp). */
#include "attention_plan.h"

#include <math.h>
#include <string.h>

/* Floats of shared memory the kernel declares for these tile sizes. */
static uint64_t spk__attention_shared_floats(uint32_t d, uint32_t bq, uint32_t bk) {
    return (uint64_t)bq * d + (uint64_t)bk * (d + 1) + (uint64_t)bk * d + (uint64_t)bq * bk + bq;
}

void spk__attention_tuning_tiles(const spk_context *ctx, uint32_t head_dim, uint32_t seq, spk__attention_tuning *t) {
    /* 32 x 32 blocks where shared memory allows (16 KiB is all Vulkan guarantees: head_dim 256
     * gets 4 x 4), no larger than the sequence needs, nor than the workgroup (an invocation per
     * query sums its row's |s|). */
    const VkPhysicalDeviceLimits *l = &ctx->caps.props.limits;
    uint32_t wg = 64;
    while (wg > l->maxComputeWorkGroupInvocations || wg > l->maxComputeWorkGroupSize[0]) wg /= 2;
    uint32_t block = 32 < wg ? 32 : wg, seq_pow2 = spk__pow2_at_least(seq ? seq : 1);
    while (block > seq_pow2 && block > 1) block /= 2;
    while (block > 1 && spk__attention_shared_floats(head_dim, block, block) * sizeof(float) >
                            l->maxComputeSharedMemorySize)
        block /= 2;
    *t = (spk__attention_tuning){.workgroup = wg, .queries = block, .keys = block};
}

void spk__attention_tuning_shuffle(const spk_context *ctx, bool texel, spk__attention_tuning *t) {
    /* 64 queries per workgroup (one subgroup where subgroups are wider), within the limits. */
    const VkPhysicalDeviceLimits *l = &ctx->caps.props.limits;
    uint32_t sg = ctx->caps.max_subgroup_size, max = l->maxComputeWorkGroupInvocations;
    if (max > l->maxComputeWorkGroupSize[0]) max = l->maxComputeWorkGroupSize[0];
    uint32_t wg = sg >= 64 ? sg : 64;
    while (wg > sg && wg > max) wg /= 2;
    *t = (spk__attention_tuning){.workgroup = wg, .shuffle = true, .texel = texel && ctx->caps.texel_buffers};
}

void spk__attention_tuning_defaults(const spk_context *ctx, uint32_t head_dim, uint32_t seq,
                                    spk__attention_tuning *t) {
    /* CPU drivers: shared memory is ordinary memory and every lane's access a gather, while
     * shuffles are register moves (softpick bench attention, lavapipe, batch 32 x seq 60: the
     * shared-memory kernel 689 ms, the shuffle kernel 26 ms through storage buffers, 9 ms
     * through texel views). GPUs: the shared-memory tiles. */
    const spk__device_caps *caps = &ctx->caps;
    if (caps->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU && spk__attention_shuffle_supported(ctx))
        spk__attention_tuning_shuffle(ctx, true, t);
    else
        spk__attention_tuning_tiles(ctx, head_dim, seq, t);
}

bool spk__attention_shuffle_supported(const spk_context *ctx) {
    const spk__device_caps *caps = &ctx->caps;
    return caps->subgroup_shuffle && caps->min_subgroup_size == caps->max_subgroup_size &&
           caps->max_subgroup_size <= 64;
}

/* The push constants both kernels take. */
typedef struct spk__attention_push {
    uint32_t seq, heads, q_stride, k_stride, v_stride, o_stride, q_off, k_off, v_off;
    float scale;
    uint32_t causal;
} spk__attention_push;

static spk__attention_push spk__attention_push_of(const spk__attention_args *a) {
    return (spk__attention_push){a->seq,      a->heads,    a->q.stride, a->k.stride, a->v.stride, a->out.stride,
                                 a->q.offset, a->k.offset, a->v.offset, (float)(1.0 / sqrt((double)a->head_dim)),
                                 a->causal ? 1u : 0u};
}

static spk_status spk__record_attention_shuffle(spk_context *ctx, const spk__attention_tuning *t,
                                                const spk__attention_args *a, uint32_t mode, spk__buffer_ref scores) {
    const VkPhysicalDeviceLimits *l = &ctx->caps.props.limits;
    uint32_t sg = ctx->caps.max_subgroup_size, wg = t->workgroup;
    if (!spk__attention_shuffle_supported(ctx) || wg % sg != 0)
        return spk__fail(ctx, SPK_ERROR_UNSUPPORTED, "the shuffle attention kernel needs fixed-size subgroups");
    uint64_t queries_per_group = wg, groups = ((uint64_t)a->seq + queries_per_group - 1) / queries_per_group;
    if (groups > l->maxComputeWorkGroupCount[0] || a->heads > l->maxComputeWorkGroupCount[1] ||
        a->batch > l->maxComputeWorkGroupCount[2])
        return spk__fail(ctx, SPK_ERROR_TOO_LARGE,
                         "attention over %u positions, %u heads, batch %u exceeds the device's workgroup grid",
                         a->seq, a->heads, a->batch);
    /* vec4 fetches where every row of every head starts at a multiple of 4 floats. */
    const spk__attention_operand *in[3] = {&a->q, &a->k, &a->v};
    bool vec4 = a->head_dim % 4 == 0, texel = t->texel;
    for (int i = 0; i < 3; i++) vec4 = vec4 && in[i]->stride % 4 == 0 && in[i]->offset % 4 == 0;
    for (int i = 0; i < 3; i++) texel = texel && in[i]->views && in[i]->views[vec4];
    uint32_t spec[5] = {wg, a->head_dim, sg, mode, vec4 ? 4 : 1};
    spk__attention_push push = spk__attention_push_of(a);
    spk__dispatch_desc desc = {
        .bindings = {a->q.ref, a->k.ref, a->v.ref, a->out.ref, mode == SPK__ATTENTION_FUSED ? a->q.ref : scores},
        .views = {texel ? a->q.views[vec4] : VK_NULL_HANDLE, texel ? a->k.views[vec4] : VK_NULL_HANDLE,
                  texel ? a->v.views[vec4] : VK_NULL_HANDLE},
        .written_mask = mode == SPK__ATTENTION_SCORES ? 0x10 : 0x08,
        .groups = {(uint32_t)groups, a->heads, a->batch},
        .push = &push,
        .push_size = sizeof push,
    };
    spk_status status = spk__pipeline_get(ctx, texel ? &spk__shader_attention_shuffle_texel : &spk__shader_attention_shuffle,
                                          spec, 5, SPK__PIPELINE_FULL_SUBGROUPS, &desc.pipeline);
    if (status == SPK_OK) status = spk__dispatch(ctx, &desc);
    return status;
}

spk_status spk__record_attention(spk_context *ctx, const spk__attention_tuning *tuning,
                                 const spk__attention_args *a, uint32_t mode, spk__buffer_ref scores) {
    spk__attention_tuning defaults;
    if (!tuning) {
        spk__attention_tuning_defaults(ctx, a->head_dim, a->seq, &defaults);
        tuning = &defaults;
    }
    const VkPhysicalDeviceLimits *l = &ctx->caps.props.limits;
    if (tuning->shuffle) return spk__record_attention_shuffle(ctx, tuning, a, mode, scores);
    uint32_t d = a->head_dim, wg = tuning->workgroup, bq = tuning->queries, bk = tuning->keys;
    if (bq > wg || spk__attention_shared_floats(d, bq, bk) * sizeof(float) > l->maxComputeSharedMemorySize)
        return spk__fail(ctx, SPK_ERROR_UNSUPPORTED, "attention blocks of %u x %u do not fit head_dim %u here", bq,
                         bk, d);
    uint64_t query_blocks = ((uint64_t)a->seq + bq - 1) / bq;
    if (query_blocks > l->maxComputeWorkGroupCount[0] || a->heads > l->maxComputeWorkGroupCount[1] ||
        a->batch > l->maxComputeWorkGroupCount[2])
        return spk__fail(ctx, SPK_ERROR_TOO_LARGE,
                         "attention over %u positions, %u heads, batch %u exceeds the device's workgroup grid",
                         a->seq, a->heads, a->batch);
    uint32_t spec[6] = {wg, d, bq, bk, (bq * d + wg - 1) / wg, mode};
    spk__dispatch_desc desc = {
        .bindings = {a->q.ref, a->k.ref, a->v.ref, a->out.ref, mode == SPK__ATTENTION_FUSED ? a->q.ref : scores},
        .written_mask = mode == SPK__ATTENTION_SCORES ? 0x10 : 0x08,
        .groups = {(uint32_t)query_blocks, a->heads, a->batch},
    };
    spk__attention_push push = spk__attention_push_of(a);
    desc.push = &push;
    desc.push_size = sizeof push;
    spk_status status = spk__pipeline_get(ctx, &spk__shader_attention, spec, 6, 0, &desc.pipeline);
    if (status == SPK_OK) status = spk__dispatch(ctx, &desc);
    return status;
}

static spk_status spk__attention_dispatch(spk_context *ctx, const void *arg) {
    spk__buffer_ref none = {0};
    return spk__record_attention(ctx, NULL, arg, SPK__ATTENTION_FUSED, none);
}

/* Checks the operands of the public op; args->batch is 0 when there is nothing to do. */
static spk_status spk__attention_check(spk_context *ctx, const spk_tensor *q, const spk_tensor *k, const spk_tensor *v,
                                       int num_heads, bool causal, spk_tensor *out, spk__attention_args *args) {
    *args = (spk__attention_args){0};
    if (!ctx) return SPK_ERROR_INVALID_ARGUMENT;
    spk_status status = spk__check_tensor(ctx, q, "attention q");
    if (status == SPK_OK) status = spk__check_tensor(ctx, k, "attention k");
    if (status == SPK_OK) status = spk__check_tensor(ctx, v, "attention v");
    if (status == SPK_OK) status = spk__check_tensor(ctx, out, "attention output");
    if (status != SPK_OK) return status;
    if (q->ndim != 3) return spk__fail(ctx, SPK_ERROR_SHAPE, "attention q must be [batch, seq, hidden]");
    status = spk__check_shape(ctx, k, 3, q->shape, "attention k");
    if (status == SPK_OK) status = spk__check_shape(ctx, v, 3, q->shape, "attention v");
    if (status == SPK_OK) status = spk__check_shape(ctx, out, 3, q->shape, "attention output");
    if (status != SPK_OK) return status;
    int64_t hidden = q->shape[2];
    if (num_heads <= 0 || hidden % num_heads != 0)
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "hidden size %lld is not divisible by %d heads",
                         (long long)hidden, num_heads);
    if (hidden / num_heads > SPK__ATTENTION_MAX_HEAD_DIM)
        return spk__fail(ctx, SPK_ERROR_UNSUPPORTED, "head dimension %lld exceeds the supported %d",
                         (long long)(hidden / num_heads), SPK__ATTENTION_MAX_HEAD_DIM);
    if (spk__overlap(out, q) || spk__overlap(out, k) || spk__overlap(out, v))
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "attention output overlaps an input");
    if (q->count > UINT32_MAX)
        return spk__fail(ctx, SPK_ERROR_TOO_LARGE, "attention over %lld elements overflows 32-bit indices",
                         (long long)q->count);
    if (q->count == 0) return SPK_OK;
    uint32_t h = (uint32_t)hidden;
    *args = (spk__attention_args){
        .q = {q->ref, h, 0, q->views},
        .k = {k->ref, h, 0, k->views},
        .v = {v->ref, h, 0, v->views},
        .out = {out->ref, h, 0, NULL},
        .batch = (uint32_t)q->shape[0],
        .seq = (uint32_t)q->shape[1],
        .heads = (uint32_t)num_heads,
        .head_dim = h / (uint32_t)num_heads,
        .causal = causal,
    };
    return SPK_OK;
}

spk_status spk_softpick_attention(spk_context *ctx, const spk_tensor *q, const spk_tensor *k, const spk_tensor *v,
                                  int num_heads, bool causal, spk_tensor *out) {
    spk__attention_args args;
    spk_status status = spk__attention_check(ctx, q, k, v, num_heads, causal, out, &args);
    if (status == SPK_OK && args.batch) status = spk__run_sync(ctx, spk__attention_dispatch, &args);
    return status;
}

spk_status spk_record_softpick_attention(spk_context *ctx, VkCommandBuffer cmd, const spk_tensor *q,
                                         const spk_tensor *k, const spk_tensor *v, int num_heads, bool causal,
                                         spk_tensor *out) {
    spk__attention_args args;
    spk_status status = spk__attention_check(ctx, q, k, v, num_heads, causal, out, &args);
    if (status != SPK_OK || !args.batch) return status;
    status = spk__record_app_begin(ctx, cmd);
    if (status != SPK_OK) return status;
    status = spk__attention_dispatch(ctx, &args);
    spk__record_app_end(ctx);
    return status;
}
