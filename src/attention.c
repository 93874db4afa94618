/* Fused causal attention with any normalizer (shaders/attention.comp, attention_shuffle.comp,
 * attention_backward.comp, normalizer.glsl). */
#include "attention_plan.h"
#include "tuning.h"

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
    uint32_t causal, keep_r;
} spk__attention_push;

static spk__attention_push spk__attention_push_of(const spk__attention_args *a) {
    return (spk__attention_push){a->seq,      a->heads,    a->q.stride, a->k.stride, a->v.stride, a->out.stride,
                                 a->q.offset, a->k.offset, a->v.offset, (float)(1.0 / sqrt((double)a->head_dim)),
                                 a->causal ? 1u : 0u, a->r.buffer != VK_NULL_HANDLE};
}

/* Binding 4: the scores of the unfused modes, r when the fused forward keeps it, else q (unused). */
static spk__buffer_ref spk__attention_binding4(const spk__attention_args *a, uint32_t mode, spk__buffer_ref scores,
                                               uint32_t *written_mask) {
    *written_mask = mode == SPK__ATTENTION_SCORES ? 0x10 : 0x08;
    if (mode != SPK__ATTENTION_FUSED) return scores;
    if (a->r.buffer == VK_NULL_HANDLE) return a->q.ref;
    *written_mask |= 0x10;
    return a->r;
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
    uint32_t spec[8] = {wg, a->head_dim, sg, mode, vec4 ? 4 : 1, a->q.dtype, a->out.dtype, a->norm};
    bool s16 = a->q.dtype != SPK_DTYPE_F32 || a->out.dtype != SPK_DTYPE_F32; /* shaders/attention_io.glsl */
    spk__attention_push push = spk__attention_push_of(a);
    uint32_t written;
    spk__buffer_ref b4 = spk__attention_binding4(a, mode, scores, &written);
    spk__dispatch_desc desc = {
        .bindings = {a->q.ref, a->k.ref, a->v.ref, a->out.ref, b4},
        .written_mask = written,
        .views = {texel ? a->q.views[vec4] : VK_NULL_HANDLE, texel ? a->k.views[vec4] : VK_NULL_HANDLE,
                  texel ? a->v.views[vec4] : VK_NULL_HANDLE},
        .groups = {(uint32_t)groups, a->heads, a->batch},
        .push = &push,
        .push_size = sizeof push,
    };
    const spk__shader *shader = texel ? (s16 ? &spk__shader_attention_shuffle_texel_s16 : &spk__shader_attention_shuffle_texel)
                                      : (s16 ? &spk__shader_attention_shuffle_s16 : &spk__shader_attention_shuffle);
    spk_status status = spk__pipeline_get(ctx, shader, spec, 8, SPK__PIPELINE_FULL_SUBGROUPS, &desc.pipeline);
    if (status == SPK_OK) status = spk__dispatch(ctx, &desc);
    return status;
}

/* Tuned parameters (tuning.h): shuffle, workgroup, queries, keys, texel. */
void spk__attention_tuning_pack(const spk__attention_tuning *t, uint32_t p[SPK__TUNE_PARAMS]) {
    uint32_t q[SPK__TUNE_PARAMS] = {t->shuffle, t->workgroup, t->queries, t->keys, t->texel};
    memcpy(p, q, sizeof q);
}

bool spk__attention_tuning_unpack(const spk_context *ctx, const uint32_t p[SPK__TUNE_PARAMS], uint32_t head_dim,
                                  spk__attention_tuning *t) {
    const VkPhysicalDeviceLimits *l = &ctx->caps.props.limits;
    *t = (spk__attention_tuning){.shuffle = p[0] == 1, .workgroup = p[1], .queries = p[2], .keys = p[3],
                                 .texel = p[4] == 1 && ctx->caps.texel_buffers};
    if (p[0] > 1 || p[4] > 1 || t->workgroup < 1 || t->workgroup > l->maxComputeWorkGroupInvocations ||
        t->workgroup > l->maxComputeWorkGroupSize[0])
        return false;
    if (t->shuffle) return spk__attention_shuffle_supported(ctx) && t->workgroup % ctx->caps.max_subgroup_size == 0;
    bool pow2 = t->queries && t->keys && !(t->queries & (t->queries - 1)) && !(t->keys & (t->keys - 1));
    return pow2 && t->queries <= t->workgroup &&
           spk__attention_shared_floats(head_dim, t->queries, t->keys) * sizeof(float) <= l->maxComputeSharedMemorySize;
}

spk__tune_problem spk__attention_problem(const spk__attention_args *a, bool backward) {
    uint32_t variant = a->causal | (a->r.buffer != VK_NULL_HANDLE) << 1 | a->q.dtype << 2 | a->out.dtype << 4 |
                       (uint32_t)a->norm << 6;
    return (spk__tune_problem){backward ? SPK__TUNE_ATTENTION_BACKWARD : SPK__TUNE_ATTENTION, variant,
                               {a->batch, a->seq, a->heads, a->head_dim}};
}

spk_status spk__record_attention(spk_context *ctx, const spk__attention_tuning *tuning,
                                 const spk__attention_args *a, uint32_t mode, spk__buffer_ref scores) {
    spk__attention_tuning chosen;
    if (!tuning) {
        spk__tune_problem problem = spk__attention_problem(a, false);
        uint32_t params[SPK__TUNE_PARAMS];
        if (mode != SPK__ATTENTION_FUSED || !spk__tuned(ctx, &problem, params) ||
            !spk__attention_tuning_unpack(ctx, params, a->head_dim, &chosen))
            spk__attention_tuning_defaults(ctx, a->head_dim, a->seq, &chosen);
        tuning = &chosen;
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
    uint32_t spec[9] = {wg, d, bq, bk, (bq * d + wg - 1) / wg, mode, a->q.dtype, a->out.dtype, a->norm};
    bool s16 = a->q.dtype != SPK_DTYPE_F32 || a->out.dtype != SPK_DTYPE_F32;
    uint32_t written;
    spk__buffer_ref b4 = spk__attention_binding4(a, mode, scores, &written);
    spk__dispatch_desc desc = {
        .bindings = {a->q.ref, a->k.ref, a->v.ref, a->out.ref, b4},
        .written_mask = written,
        .groups = {(uint32_t)query_blocks, a->heads, a->batch},
    };
    spk__attention_push push = spk__attention_push_of(a);
    desc.push = &push;
    desc.push_size = sizeof push;
    spk_status status = spk__pipeline_get(ctx, s16 ? &spk__shader_attention_s16 : &spk__shader_attention, spec, 9, 0,
                                          &desc.pipeline);
    if (status == SPK_OK) status = spk__dispatch(ctx, &desc);
    return status;
}

/* ---- backward ------------------------------------------------------------------------------ */

void spk__attention_backward_tuning(const spk_context *ctx, bool texel, bool shared_xchg, spk__attention_tuning *t) {
    /* Without shuffles a workgroup of 16 is one exchange group: two barriers per 4 dimensions of
     * 16 rows (larger groups amortize loads better but compile far slower on CPU drivers). */
    if (shared_xchg || !spk__attention_shuffle_supported(ctx))
        *t = (spk__attention_tuning){.workgroup = 16};
    else
        spk__attention_tuning_shuffle(ctx, texel, t);
}

spk_status spk__record_attention_backward(spk_context *ctx, const spk__attention_backward_args *a,
                                          const spk__attention_tuning *tuning) {
    const VkPhysicalDeviceLimits *l = &ctx->caps.props.limits;
    spk__attention_tuning chosen;
    if (!tuning) {
        spk__attention_args fwd = {.q = a->q, .out = a->q, .batch = a->batch, .seq = a->seq, .heads = a->heads,
                                   .head_dim = a->head_dim, .causal = a->causal, .norm = a->norm};
        spk__tune_problem problem = spk__attention_problem(&fwd, true);
        uint32_t params[SPK__TUNE_PARAMS];
        if (!spk__tuned(ctx, &problem, params) || !spk__attention_tuning_unpack(ctx, params, a->head_dim, &chosen) ||
            (!chosen.shuffle && chosen.workgroup != 16))
            spk__attention_backward_tuning(ctx, ctx->caps.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU, false,
                                           &chosen);
        tuning = &chosen;
    }
    bool shuffle = tuning->shuffle, texel = tuning->texel;
    if (shuffle && !spk__attention_shuffle_supported(ctx))
        return spk__fail(ctx, SPK_ERROR_UNSUPPORTED, "the shuffle attention kernel needs fixed-size subgroups");
    /* The shared-memory exchange takes groups of 4 to 64: the workgroup is one group. */
    uint32_t wg = tuning->workgroup, sg = shuffle ? ctx->caps.max_subgroup_size : wg;
    if (shuffle ? wg % sg != 0 : wg < 4 || wg > 64)
        return spk__fail(ctx, SPK_ERROR_UNSUPPORTED, "attention backward workgroup of %u invocations", wg);
    uint64_t groups = ((uint64_t)a->seq + wg - 1) / wg;
    if (groups > l->maxComputeWorkGroupCount[0] || a->heads > l->maxComputeWorkGroupCount[1] ||
        a->batch > l->maxComputeWorkGroupCount[2])
        return spk__fail(ctx, SPK_ERROR_TOO_LARGE,
                         "attention over %u positions, %u heads, batch %u exceeds the device's workgroup grid",
                         a->seq, a->heads, a->batch);
    /* vec4 loads and stores where every row of every head of every operand starts at a multiple
     * of 4 (q, k, v and dO are the texel inputs). */
    const spk__attention_operand *in[8] = {&a->q, &a->k, &a->v, &a->dout, &a->o, &a->dq, &a->dk, &a->dv};
    bool vec4 = a->head_dim % 4 == 0;
    for (int i = 0; i < 8; i++) vec4 = vec4 && in[i]->stride % 4 == 0 && in[i]->offset % 4 == 0;
    texel = texel && shuffle;
    for (int i = 0; i < 4; i++) texel = texel && in[i]->views && in[i]->views[vec4];
    uint32_t spec[5] = {wg, a->head_dim, sg, vec4 ? 4 : 1, a->norm};
    uint32_t flags = shuffle ? SPK__PIPELINE_FULL_SUBGROUPS : 0;
    struct {
        uint32_t seq, heads, q_stride, k_stride, v_stride, do_stride, x_stride, q_off, k_off, v_off, do_off, x_off;
        uint32_t g1_stride, g1_off, g2_stride, g2_off;
        float scale;
        uint32_t causal;
    } push = {a->seq, a->heads, a->q.stride, a->k.stride, a->v.stride, a->dout.stride, a->o.stride,
              a->q.offset, a->k.offset, a->v.offset, a->dout.offset, a->o.offset, a->dq.stride, a->dq.offset,
              0, 0, (float)(1.0 / sqrt((double)a->head_dim)), a->causal};
    spk__dispatch_desc d = {
        .bindings = {a->q.ref, a->k.ref, a->v.ref, a->dout.ref, a->r, a->d, a->dq.ref, a->o.ref},
        .written_mask = 0x60,
        .groups = {(uint32_t)groups, a->heads, a->batch},
        .push = &push,
        .push_size = sizeof push,
    };
    for (int i = 0; i < 4 && texel; i++) d.views[i] = in[i]->views[vec4];
    /* Pass 0: dQ, and D_i = dO_i . O_i for pass 1. */
    spk_status status = spk__pipeline_get(ctx, texel ? &spk__shader_attention_backward_q_texel
                                               : shuffle ? &spk__shader_attention_backward_q
                                                         : &spk__shader_attention_backward_q_shared,
                                          spec, 5, flags, &d.pipeline);
    if (status == SPK_OK) status = spk__dispatch(ctx, &d);
    /* Pass 1: dK and dV, once every D_i is written (the tracked binding orders them). */
    push.g1_stride = a->dk.stride, push.g1_off = a->dk.offset, push.g2_stride = a->dv.stride, push.g2_off = a->dv.offset;
    d.bindings[6] = a->dk.ref, d.bindings[7] = a->dv.ref;
    d.written_mask = 0xC0;
    if (status == SPK_OK)
        status = spk__pipeline_get(ctx, texel ? &spk__shader_attention_backward_kv_texel
                                         : shuffle ? &spk__shader_attention_backward_kv
                                                   : &spk__shader_attention_backward_kv_shared,
                                   spec, 5, flags, &d.pipeline);
    if (status == SPK_OK) status = spk__dispatch(ctx, &d);
    return status;
}

static spk_status spk__attention_dispatch(spk_context *ctx, const void *arg) {
    spk__buffer_ref none = {0};
    return spk__record_attention(ctx, NULL, arg, SPK__ATTENTION_FUSED, none);
}

/* Checks the operands of the public op; args->batch is 0 when there is nothing to do. */
static spk_status spk__attention_check(spk_context *ctx, const spk_attention_desc *desc, const spk_tensor *q,
                                       const spk_tensor *k, const spk_tensor *v, spk_tensor *out,
                                       spk__attention_args *args) {
    *args = (spk__attention_args){0};
    if (!ctx) return SPK_ERROR_INVALID_ARGUMENT;
    if (!desc) return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "attention: desc is NULL");
    spk_status status = spk__check_normalizer(ctx, desc->normalizer);
    if (status == SPK_OK) status = spk__check_activation(ctx, q, "attention", "attention q");
    if (status == SPK_OK) status = spk__check_tensor_dtypes(ctx, k, "attention k (q's dtype)", SPK__DTYPE_BIT(q->dtype));
    if (status == SPK_OK) status = spk__check_tensor_dtypes(ctx, v, "attention v (q's dtype)", SPK__DTYPE_BIT(q->dtype));
    if (status == SPK_OK) status = spk__check_activation(ctx, out, "attention", "attention output");
    if (status != SPK_OK) return status;
    if (q->ndim != 3) return spk__fail(ctx, SPK_ERROR_SHAPE, "attention q must be [batch, seq, hidden]");
    status = spk__check_shape(ctx, k, 3, q->shape, "attention k");
    if (status == SPK_OK) status = spk__check_shape(ctx, v, 3, q->shape, "attention v");
    if (status == SPK_OK) status = spk__check_shape(ctx, out, 3, q->shape, "attention output");
    if (status != SPK_OK) return status;
    int64_t hidden = q->shape[2];
    int num_heads = desc->num_heads;
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
        .q = {q->ref, h, 0, q->views, q->dtype},
        .k = {k->ref, h, 0, k->views, k->dtype},
        .v = {v->ref, h, 0, v->views, v->dtype},
        .out = {out->ref, h, 0, NULL, out->dtype},
        .batch = (uint32_t)q->shape[0],
        .seq = (uint32_t)q->shape[1],
        .heads = (uint32_t)num_heads,
        .head_dim = h / (uint32_t)num_heads,
        .causal = desc->causal,
        .norm = desc->normalizer,
    };
    return SPK_OK;
}

spk_status spk_attention(spk_context *ctx, const spk_attention_desc *desc, const spk_tensor *q, const spk_tensor *k,
                         const spk_tensor *v, spk_tensor *out) {
    spk__attention_args args;
    spk_status status = spk__attention_check(ctx, desc, q, k, v, out, &args);
    if (status == SPK_OK && args.batch) status = spk__run_sync(ctx, spk__attention_dispatch, &args);
    return status;
}

spk_status spk_softpick_attention(spk_context *ctx, const spk_tensor *q, const spk_tensor *k, const spk_tensor *v,
                                  int num_heads, bool causal, spk_tensor *out) {
    spk_attention_desc desc = {.num_heads = num_heads, .causal = causal};
    return spk_attention(ctx, &desc, q, k, v, out);
}

spk_status spk_record_attention(spk_context *ctx, VkCommandBuffer cmd, const spk_attention_desc *desc,
                                const spk_tensor *q, const spk_tensor *k, const spk_tensor *v, spk_tensor *out) {
    spk__attention_args args;
    spk_status status = spk__attention_check(ctx, desc, q, k, v, out, &args);
    if (status != SPK_OK || !args.batch) return status;
    status = spk__record_app_begin(ctx, cmd);
    if (status != SPK_OK) return status;
    status = spk__attention_dispatch(ctx, &args);
    spk__record_app_end(ctx);
    return status;
}

spk_status spk_record_softpick_attention(spk_context *ctx, VkCommandBuffer cmd, const spk_tensor *q,
                                         const spk_tensor *k, const spk_tensor *v, int num_heads, bool causal,
                                         spk_tensor *out) {
    spk_attention_desc desc = {.num_heads = num_heads, .causal = causal};
    return spk_record_attention(ctx, cmd, &desc, q, k, v, out);
}

/* Checks r: [batch, num_heads, seq] of the context. */
static spk_status spk__check_r(spk_context *ctx, const spk_tensor *q, int num_heads, const spk_tensor *r) {
    int64_t shape[3] = {q->shape[0], num_heads, q->shape[1]};
    spk_status status = spk__check_tensor(ctx, r, "attention r");
    if (status == SPK_OK) status = spk__check_shape(ctx, r, 3, shape, "attention r");
    return status;
}

spk_status spk_attention_train(spk_context *ctx, const spk_attention_desc *desc, const spk_tensor *q,
                               const spk_tensor *k, const spk_tensor *v, spk_tensor *out, spk_tensor *r) {
    spk__attention_args args;
    spk_status status = spk__attention_check(ctx, desc, q, k, v, out, &args);
    if (status == SPK_OK) status = spk__check_r(ctx, q, desc->num_heads, r);
    if (status == SPK_OK && (spk__overlap(r, q) || spk__overlap(r, k) || spk__overlap(r, v) || spk__overlap(r, out)))
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "attention r overlaps another operand");
    if (status != SPK_OK || !args.batch) return status;
    args.r = r->ref;
    return spk__run_sync(ctx, spk__attention_dispatch, &args);
}

spk_status spk_softpick_attention_train(spk_context *ctx, const spk_tensor *q, const spk_tensor *k, const spk_tensor *v,
                                        int num_heads, bool causal, spk_tensor *out, spk_tensor *r) {
    spk_attention_desc desc = {.num_heads = num_heads, .causal = causal};
    return spk_attention_train(ctx, &desc, q, k, v, out, r);
}

typedef struct spk__attention_backward_run {
    spk__attention_backward_args args;
    const spk__attention_tuning *tuning;
} spk__attention_backward_run;

static spk_status spk__attention_backward_dispatch(spk_context *ctx, const void *arg) {
    const spk__attention_backward_run *run = arg;
    return spk__record_attention_backward(ctx, &run->args, run->tuning);
}

spk_status spk__attention_backward_tuned(spk_context *ctx, const spk__attention_tuning *tuning,
                                         const spk_attention_desc *desc, const spk_tensor *q, const spk_tensor *k,
                                         const spk_tensor *v, const spk_tensor *out, const spk_tensor *r,
                                         const spk_tensor *dout, const spk_attention_grads *grads) {
    spk__attention_args fwd;
    spk_status status = spk__attention_check(ctx, desc, q, k, v, (spk_tensor *)out, &fwd);
    if (status == SPK_OK) status = spk__check_r(ctx, q, desc->num_heads, r);
    if (status == SPK_OK) status = spk__check_tensor(ctx, dout, "attention output gradient");
    if (status == SPK_OK) status = spk__check_shape(ctx, dout, 3, q->shape, "attention output gradient");
    if (status == SPK_OK && !grads)
        status = spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "attention backward: grads is NULL");
    if (status != SPK_OK) return status;
    spk_tensor *outs[3] = {grads->dq, grads->dk, grads->dv};
    const spk_tensor *ins[6] = {q, k, v, out, r, dout};
    static const char *names[3] = {"attention dq", "attention dk", "attention dv"};
    for (int i = 0; i < 3 && status == SPK_OK; i++) {
        status = spk__check_tensor(ctx, outs[i], names[i]);
        if (status == SPK_OK) status = spk__check_shape(ctx, outs[i], 3, q->shape, names[i]);
        for (int j = 0; j < 6 && status == SPK_OK; j++)
            if (spk__overlap(outs[i], ins[j])) status = spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "%s overlaps an input", names[i]);
        for (int j = 0; j < i && status == SPK_OK; j++)
            if (spk__overlap(outs[i], outs[j]))
                status = spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "%s overlaps %s", names[i], names[j]);
    }
    if (status != SPK_OK || !fwd.batch) return status;
    spk_tensor *dt = NULL; /* D_i = dO_i . O_i, between the two passes */
    status = spk_tensor_create(ctx, 3, r->shape, &dt);
    if (status != SPK_OK) return status;
    uint32_t h = fwd.q.stride;
    spk__attention_backward_run run = {
        .args = {.q = fwd.q, .k = fwd.k, .v = fwd.v, .o = {out->ref, h, 0, NULL, SPK_DTYPE_F32}, .dout = {dout->ref, h, 0, dout->views, SPK_DTYPE_F32},
                 .dq = {grads->dq->ref, h, 0, NULL, SPK_DTYPE_F32}, .dk = {grads->dk->ref, h, 0, NULL, SPK_DTYPE_F32}, .dv = {grads->dv->ref, h, 0, NULL, SPK_DTYPE_F32},
                 .r = r->ref, .d = dt->ref, .batch = fwd.batch, .seq = fwd.seq, .heads = fwd.heads,
                 .head_dim = fwd.head_dim, .causal = fwd.causal, .norm = fwd.norm},
        .tuning = tuning,
    };
    status = spk__run_sync(ctx, spk__attention_backward_dispatch, &run);
    spk_tensor_destroy(dt);
    return status;
}

spk_status spk_attention_backward(spk_context *ctx, const spk_attention_desc *desc, const spk_tensor *q,
                                  const spk_tensor *k, const spk_tensor *v, const spk_tensor *out, const spk_tensor *r,
                                  const spk_tensor *dout, const spk_attention_grads *grads) {
    return spk__attention_backward_tuned(ctx, NULL, desc, q, k, v, out, r, dout, grads);
}

spk_status spk_softpick_attention_backward(spk_context *ctx, const spk_tensor *q, const spk_tensor *k,
                                           const spk_tensor *v, const spk_tensor *out, const spk_tensor *r,
                                           const spk_tensor *dout, int num_heads, bool causal,
                                           const spk_attention_grads *grads) {
    spk_attention_desc desc = {.num_heads = num_heads, .causal = causal};
    return spk_attention_backward(ctx, &desc, q, k, v, out, r, dout, grads);
}
