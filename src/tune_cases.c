/* spk_tune's kernel families: each one's candidate space, generated from the device's properties
 * (subgroup size, shuffles, texel views, workgroup and shared-memory limits), and a case that runs
 * one candidate on one problem of a model against a float64 reference. */
#include "tune_cases.h"
#include "fault.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention_plan.h"
#include "layer_norm_plan.h"
#include "matmul_plan.h"
#include "reference.h"

/* ---- helpers ------------------------------------------------------------------------------- */

bool spk__tune_cpu(const spk_context *ctx) { return ctx->caps.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU; }

bool spk__tune_fixed_shuffles(const spk_context *ctx) {
    const spk__device_caps *c = &ctx->caps;
    return c->subgroup_shuffle && c->min_subgroup_size == c->max_subgroup_size;
}

uint32_t spk__tune_add(uint32_t (*out)[SPK__TUNE_PARAMS], uint32_t n, uint32_t max, const uint32_t p[SPK__TUNE_PARAMS]) {
    if (n < max) memcpy(out[n], p, sizeof out[n]);
    return n + 1 <= max ? n + 1 : max;
}

/* A tensor of `shape` holding random values, NULL on failure (status in *s). */
spk_tensor *spk__tune_tensor(spk__tune_case *c, int ndim, const int64_t *shape, uint64_t *seed, float scale,
                                    float **keep, spk_status *s) {
    spk_tensor *t = NULL;
    if (*s == SPK_OK) *s = spk_tensor_create(c->ctx, ndim, shape, &t);
    if (*s != SPK_OK) return NULL;
    float *v = spk__malloc((size_t)(t->count ? t->count : 1) * sizeof *v);
    if (!v) *s = spk__fail(c->ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    if (v) spk__ref_random(seed, v, t->count, scale);
    if (*s == SPK_OK) *s = spk_tensor_upload(t, v, t->count);
    if (*s == SPK_OK && keep) *keep = v;
    else free(v);
    if (*s != SPK_OK) spk_tensor_destroy(t), t = NULL;
    return t;
}

/* An output of `shape` with its reference buffer, in the case's next output slot. */
double *spk__tune_output(spk__tune_case *c, int ndim, const int64_t *shape, spk_status *s) {
    int i = 0;
    while (i < SPK__TUNE_MAX_OUTPUTS && c->out[i]) i++;
    if (*s == SPK_OK) *s = spk_tensor_create(c->ctx, ndim, shape, &c->out[i]);
    if (*s != SPK_OK) return NULL;
    c->ref[i] = spk__calloc((size_t)(c->out[i]->count ? c->out[i]->count : 1), sizeof(double));
    if (!c->ref[i]) *s = spk__fail(c->ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    return c->ref[i];
}

/* Room to download the largest output. */
spk_status spk__tune_room(spk__tune_case *c) {
    int64_t most = 1;
    for (int i = 0; i < SPK__TUNE_MAX_OUTPUTS; i++)
        if (c->out[i] && c->out[i]->count > most) most = c->out[i]->count;
    c->got = spk__malloc((size_t)most * sizeof *c->got);
    return c->got ? SPK_OK : spk__fail(c->ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
}

void spk__tune_case_close(spk__tune_case *c) {
    for (int i = 0; i < 8; i++) spk_tensor_destroy(c->in[i]);
    for (int i = 0; i < SPK__TUNE_MAX_OUTPUTS; i++) {
        spk_tensor_destroy(c->out[i]);
        free(c->ref[i]);
    }
    free(c->got);
    memset(c->in, 0, sizeof c->in), memset(c->out, 0, sizeof c->out), memset(c->ref, 0, sizeof c->ref);
    c->got = NULL;
}

/* Tests: a candidate that writes zeros where the kernel should have written (fast and wrong). */
spk_status spk__tune_sabotaged(spk_context *ctx, const spk__tune_case *c) {
    spk_status s = SPK_OK;
    for (int i = 0; i < SPK__TUNE_MAX_OUTPUTS && s == SPK_OK; i++)
        if (c->out[i]) s = spk__fill_zero(ctx, c->out[i]->ref);
    return s;
}

bool spk__tune_f32(const spk__tune_problem *p, uint32_t dtype_bits) { return (p->variant & dtype_bits) == 0; }

/* ---- matmul -------------------------------------------------------------------------------- */

static uint32_t spk__tune_matmul_candidates(const spk_context *ctx, uint32_t (*out)[SPK__TUNE_PARAMS], uint32_t max) {
    const spk__device_caps *caps = &ctx->caps;
    uint32_t n = 0, sg = caps->max_subgroup_size;
    spk__matmul_tuning t;
    uint32_t p[SPK__TUNE_PARAMS];
    /* The shuffle kernel (fixed subgroups with shuffles): 1 to 8 sets of SG, SG / 2 or SG / 4
     * rows per subgroup block (a set of SG rows is SG vec4 accumulators per lane and column group;
     * the smaller sets fit CPUs of 16 vector registers), one or two column groups, one or four
     * subgroups per workgroup, texel or storage reads. */
    for (int pass = 0; pass < 2; pass++) {
        bool shuffles = pass == (spk__tune_cpu(ctx) ? 0 : 1);
        if (shuffles && spk__tune_fixed_shuffles(ctx)) {
            for (int texel = caps->texel_buffers; texel >= 0; texel--)
                for (uint32_t rows = sg; rows >= 2 && rows * 4 >= sg; rows /= 2)
                    for (uint32_t rs = 1; rs <= 8; rs *= 2)
                        for (uint32_t tn = 1; tn <= 2; tn++)
                            for (uint32_t wgs = 1; wgs <= 4; wgs *= 4) {
                                t = (spk__matmul_tuning){.wg_x = sg * wgs, .tm = rows == sg ? 0 : rows, .tn = tn,
                                                         .shuffle = true, .row_sets = rs, .texel = texel};
                                spk__matmul_tuning_pack(&t, p);
                                if (spk__matmul_tuning_unpack(ctx, p, &t)) n = spk__tune_add(out, n, max, p);
                            }
        } else if (!shuffles) {
            /* Register-blocked tiles, staged through shared memory or read directly: 64 to 256
             * invocations, blocks of 1 to 8 by 1 to 8, slices 8 to 32 deep. */
            static const uint32_t wgs[][2] = {{16, 16}, {8, 8}, {16, 8}, {32, 8}, {8, 32}};
            static const uint32_t blocks[][2] = {{4, 4}, {2, 2}, {8, 4}, {4, 8}, {8, 8}, {1, 4}, {4, 1}};
            static const uint32_t depths[] = {16, 8, 32};
            for (int shared = 1; shared >= 0; shared--)
                for (size_t w = 0; w < SPK__ARRAY_LEN(wgs); w++)
                    for (size_t b = 0; b < SPK__ARRAY_LEN(blocks); b++)
                        for (size_t d = 0; d < (shared ? SPK__ARRAY_LEN(depths) : 1); d++) {
                            t = (spk__matmul_tuning){.wg_x = wgs[w][0], .wg_y = wgs[w][1], .tm = blocks[b][0],
                                                     .tn = blocks[b][1], .bk = depths[d], .shared = shared};
                            spk__matmul_tuning_pack(&t, p);
                            if (spk__matmul_tuning_unpack(ctx, p, &t)) n = spk__tune_add(out, n, max, p);
                        }
        }
    }
    return n;
}

static void spk__tune_matmul_rule(const spk_context *ctx, const spk__tune_problem *p, uint32_t out[SPK__TUNE_PARAMS]) {
    (void)p;
    spk__matmul_tuning t;
    spk__matmul_tuning_defaults(ctx, &t);
    spk__matmul_tuning_pack(&t, out);
}

static uint32_t spk__tune_matmul_kind(const uint32_t p[SPK__TUNE_PARAMS]) { return p[0] ? (p[6] & 2 ? 0 : 1) : 2 + (p[6] & 1); }

static int spk__tune_matmul_describe(const uint32_t p[SPK__TUNE_PARAMS], char *out, size_t size) {
    if (p[0] && p[3])
        return snprintf(out, size, "shuffle %s, %u invocations, %u sets of %u rows x %u column groups",
                        p[6] & 2 ? "texel" : "storage", p[1], p[7], p[3], p[4]);
    if (p[0])
        return snprintf(out, size, "shuffle %s, %u invocations, %u row sets x %u column groups",
                        p[6] & 2 ? "texel" : "storage", p[1], p[7], p[4]);
    return snprintf(out, size, "tiles %s, %ux%u invocations, %ux%u blocks, k %u", p[6] & 1 ? "shared" : "direct", p[1],
                    p[2], p[3], p[4], p[5]);
}

static int spk__tune_matmul_describe_problem(const spk__tune_problem *p, char *out, size_t size) {
    uint32_t v = p->variant;
    return snprintf(out, size, "%s%llux%llux%llu%s%s%s%s%s%s", v & 64 ? "dB " : v & 128 ? "dA " : "",
                    (unsigned long long)(p->size[0] * p->size[1]), (unsigned long long)p->size[2],
                    (unsigned long long)p->size[3], v & 1 ? " +bias" : "", v & 2 ? " gelu" : "",
                    v & 4 ? " +residual" : "", v & 8 ? " *gelu'" : "", v & 16 ? " keep pre" : "",
                    v & 32 ? " keep gelu'" : "");
}

bool spk__tune_matmul_tunable(const spk__tune_problem *p) { return spk__tune_f32(p, 0x3ff000u); }

static spk_status spk__tune_matmul_open(spk__tune_case *c, uint64_t *seed) {
    const spk__tune_problem *p = &c->problem;
    uint32_t v = p->variant;
    int64_t batch = (int64_t)p->size[0], m = (int64_t)p->size[1], n = (int64_t)p->size[2], k = (int64_t)p->size[3];
    bool trans_a = v & 64, trans_b = v & 128, shared_b = v & 2048;
    spk_status s = SPK_OK;
    float *a = NULL, *b = NULL, *bias = NULL, *res = NULL;
    int64_t a_shape[3] = {batch, trans_a ? k : m, trans_a ? m : k}, c_shape[3] = {batch, m, n};
    int64_t b_shape[3] = {batch, trans_b ? n : k, trans_b ? k : n};
    /* Operands around 1 keep GELU's both ranges in play; a gelu' factor in [0, 1.1). */
    c->in[0] = spk__tune_tensor(c, 3, a_shape, seed, 1.0f, &a, &s);
    c->in[1] = shared_b ? spk__tune_tensor(c, 2, b_shape + 1, seed, 1.0f / sqrtf((float)k), &b, &s)
                        : spk__tune_tensor(c, 3, b_shape, seed, 1.0f / sqrtf((float)k), &b, &s);
    if (v & 1) c->in[2] = spk__tune_tensor(c, 1, &n, seed, 0.5f, &bias, &s);
    if (v & 12) c->in[3] = spk__tune_tensor(c, 3, c_shape, seed, 1.0f, &res, &s);
    double *ref = spk__tune_output(c, 3, c_shape, &s), *pre = v & 48 ? spk__tune_output(c, 3, c_shape, &s) : NULL;
    if (s == SPK_OK) s = spk__tune_room(c);
    for (int64_t q = 0; s == SPK_OK && q < batch; q++)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                const float *ap = a + q * m * k, *bp = b + (shared_b ? 0 : q * k * n);
                double z = bias ? bias[j] : 0.0;
                for (int64_t l = 0; l < k; l++)
                    z += (double)(trans_a ? ap[l * m + i] : ap[i * k + l]) * (trans_b ? bp[j * k + l] : bp[l * n + j]);
                int64_t at = (q * m + i) * n + j;
                double y = z;
                if (v & 16) pre[at] = z;
                if (v & 2) y = spk__ref_gelu(z);
                if (v & 32) pre[at] = spk__ref_gelu_grad(z);
                if (v & 4) y += res[at];
                if (v & 8) y *= res[at];
                ref[at] = y;
            }
    free(a), free(b), free(bias), free(res);
    return s;
}

static spk_status spk__tune_matmul_record(spk_context *ctx, const void *arg) {
    const spk__tune_case *c = arg;
    if (c->sabotage) return spk__tune_sabotaged(ctx, c);
    spk__matmul_tuning t;
    if (!spk__matmul_tuning_unpack(ctx, c->params, &t)) return SPK_ERROR_UNSUPPORTED;
    uint32_t v = c->problem.variant;
    spk__matmul_args args = {
        .tuning = &t, .a = c->in[0], .b = c->in[1], .bias = c->in[2], .residual = c->in[3], .c = c->out[0],
        .pre = c->out[1], .epilogue = v & 63, .batch = c->problem.size[0], .m = c->problem.size[1],
        .n = c->problem.size[2], .k = c->problem.size[3], .shared_b = v & 2048, .trans_a = v & 64, .trans_b = v & 128,
    };
    return spk__record_matmul_args(ctx, &args);
}

/* ---- attention, forward and backward ------------------------------------------------------- */

static uint32_t spk__tune_attention_candidates_of(const spk_context *ctx, bool backward, uint32_t (*out)[SPK__TUNE_PARAMS],
                                                  uint32_t max) {
    const VkPhysicalDeviceLimits *l = &ctx->caps.props.limits;
    uint32_t n = 0, sg = ctx->caps.max_subgroup_size, limit = l->maxComputeWorkGroupInvocations;
    if (limit > l->maxComputeWorkGroupSize[0]) limit = l->maxComputeWorkGroupSize[0];
    spk__attention_tuning t;
    uint32_t p[SPK__TUNE_PARAMS];
    /* Shuffles: an invocation per query, workgroups of one subgroup to 256 invocations. */
    if (spk__attention_shuffle_supported(ctx))
        for (int texel = ctx->caps.texel_buffers; texel >= 0; texel--)
            for (uint32_t wg = sg; wg <= 256 && wg <= limit; wg *= 2) {
                t = (spk__attention_tuning){.workgroup = wg, .shuffle = true, .texel = texel};
                spk__attention_tuning_pack(&t, p);
                n = spk__tune_add(out, n, max, p);
            }
    if (backward) { /* the shared-memory exchange: a workgroup is one group, the smallest first */
        for (uint32_t wg = 8; wg <= 32 && wg <= limit; wg *= 2) {
            t = (spk__attention_tuning){.workgroup = wg};
            spk__attention_tuning_pack(&t, p);
            n = spk__tune_add(out, n, max, p);
        }
        return n;
    }
    /* Tiles: blocks of queries and keys in shared memory (what fits is checked per head_dim). */
    static const uint32_t blocks[][2] = {{32, 32}, {16, 16}, {64, 64}, {16, 32}, {32, 16}, {8, 8}, {64, 32}};
    for (uint32_t wg = 64; wg >= 32; wg /= 2)
        for (size_t b = 0; b < SPK__ARRAY_LEN(blocks); b++) {
            t = (spk__attention_tuning){.workgroup = wg, .queries = blocks[b][0], .keys = blocks[b][1]};
            if (t.queries <= wg && wg <= limit) spk__attention_tuning_pack(&t, p), n = spk__tune_add(out, n, max, p);
        }
    return n;
}

static uint32_t spk__tune_attention_candidates(const spk_context *ctx, uint32_t (*out)[SPK__TUNE_PARAMS], uint32_t max) {
    return spk__tune_attention_candidates_of(ctx, false, out, max);
}

static uint32_t spk__tune_attention_backward_candidates(const spk_context *ctx, uint32_t (*out)[SPK__TUNE_PARAMS],
                                                        uint32_t max) {
    return spk__tune_attention_candidates_of(ctx, true, out, max);
}

static void spk__tune_attention_rule(const spk_context *ctx, const spk__tune_problem *p, uint32_t out[SPK__TUNE_PARAMS]) {
    spk__attention_tuning t;
    if (p->family == SPK__TUNE_ATTENTION)
        spk__attention_tuning_defaults(ctx, (uint32_t)p->size[3], (uint32_t)p->size[1], &t);
    else
        spk__attention_backward_tuning(ctx, spk__tune_cpu(ctx), false, &t);
    spk__attention_tuning_pack(&t, out);
}

static uint32_t spk__tune_attention_kind(const uint32_t p[SPK__TUNE_PARAMS]) { return p[0] ? (p[4] ? 0 : 1) : 2; }

static int spk__tune_attention_describe(const uint32_t p[SPK__TUNE_PARAMS], char *out, size_t size) {
    if (p[0]) return snprintf(out, size, "shuffle %s, %u invocations", p[4] ? "texel" : "storage", p[1]);
    if (!p[2]) return snprintf(out, size, "shared-memory exchange, %u invocations", p[1]);
    return snprintf(out, size, "tiles, %u invocations, %u queries x %u keys", p[1], p[2], p[3]);
}

/* The normalizer of an attention problem (spk__attention_problem's bits 6-7). */
static spk_normalizer spk__tune_normalizer(const spk__tune_problem *p) { return (spk_normalizer)(p->variant >> 6 & 3); }

static int spk__tune_attention_describe_problem(const spk__tune_problem *p, char *out, size_t size) {
    return snprintf(out, size, "batch %llu x seq %llu x %llu heads x %llu%s%s, %s", (unsigned long long)p->size[0],
                    (unsigned long long)p->size[1], (unsigned long long)p->size[2], (unsigned long long)p->size[3],
                    p->variant & 1 ? ", causal" : "", p->variant & 2 ? ", keeps r" : "",
                    spk_normalizer_name(spk__tune_normalizer(p)));
}

bool spk__tune_attention_tunable(const spk__tune_problem *p) { return spk__tune_f32(p, 0x3cu); }

/* Random q, k, v; the forward's output (and r where kept) against float64, or for the backward
 * dq, dk, dv from the forward's own o and r and a random dO. */
static spk_status spk__tune_attention_open(spk__tune_case *c, uint64_t *seed) {
    const spk__tune_problem *p = &c->problem;
    bool backward = p->family == SPK__TUNE_ATTENTION_BACKWARD, causal = p->variant & 1;
    spk_attention_desc desc = {.num_heads = (int)p->size[2], .causal = causal, .normalizer = spk__tune_normalizer(p)};
    int64_t batch = (int64_t)p->size[0], seq = (int64_t)p->size[1], heads = (int64_t)p->size[2], d = (int64_t)p->size[3];
    int64_t shape[3] = {batch, seq, heads * d}, r_shape[3] = {batch, heads, seq};
    spk_status s = SPK_OK;
    float *q = NULL, *k = NULL, *v = NULL, *dout = NULL;
    c->in[0] = spk__tune_tensor(c, 3, shape, seed, 1.0f, &q, &s);
    c->in[1] = spk__tune_tensor(c, 3, shape, seed, 1.0f, &k, &s);
    c->in[2] = spk__tune_tensor(c, 3, shape, seed, 1.0f, &v, &s);
    if (backward) {
        c->in[3] = spk__tune_tensor(c, 3, shape, seed, 1.0f, &dout, &s);
        c->in[4] = spk__tune_tensor(c, 3, shape, seed, 0.0f, NULL, &s); /* o */
        c->in[5] = spk__tune_tensor(c, 3, r_shape, seed, 0.0f, NULL, &s);
        c->in[6] = spk__tune_tensor(c, 3, r_shape, seed, 0.0f, NULL, &s); /* D */
        if (s == SPK_OK)
            s = spk_attention_train(c->ctx, &desc, c->in[0], c->in[1], c->in[2], c->in[4], c->in[5]);
        double *dq = spk__tune_output(c, 3, shape, &s), *dk = spk__tune_output(c, 3, shape, &s);
        double *dv = spk__tune_output(c, 3, shape, &s);
        if (s == SPK_OK && !spk__ref_attention_backward(q, k, v, dout, batch, seq, heads, d, causal, desc.normalizer, dq, dk, dv))
            s = spk__fail(c->ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    } else {
        double *ref = spk__tune_output(c, 3, shape, &s), *r = p->variant & 2 ? spk__tune_output(c, 3, r_shape, &s) : NULL;
        /* The output, and each row's statistic where the forward keeps it (training). */
        if (s == SPK_OK && !spk__ref_attention(q, k, v, batch, seq, heads, d, causal, desc.normalizer, ref, r))
            s = spk__fail(c->ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    }
    if (s == SPK_OK) s = spk__tune_room(c);
    free(q), free(k), free(v), free(dout);
    return s;
}

static spk__attention_operand spk__tune_operand(const spk_tensor *t, uint32_t stride) {
    return (spk__attention_operand){t->ref, stride, 0, t->views, SPK_DTYPE_F32};
}

static spk_status spk__tune_attention_record(spk_context *ctx, const void *arg) {
    const spk__tune_case *c = arg;
    if (c->sabotage) return spk__tune_sabotaged(ctx, c);
    const spk__tune_problem *p = &c->problem;
    uint32_t heads = (uint32_t)p->size[2], d = (uint32_t)p->size[3], h = heads * d;
    spk__attention_tuning t;
    if (!spk__attention_tuning_unpack(ctx, c->params, d, &t)) return SPK_ERROR_UNSUPPORTED;
    uint32_t batch = (uint32_t)p->size[0], seq = (uint32_t)p->size[1];
    bool causal = p->variant & 1;
    if (p->family == SPK__TUNE_ATTENTION_BACKWARD) {
        if (!t.shuffle && t.workgroup != 16) return SPK_ERROR_UNSUPPORTED;
        spk__attention_backward_args a = {
            .q = spk__tune_operand(c->in[0], h), .k = spk__tune_operand(c->in[1], h), .v = spk__tune_operand(c->in[2], h),
            .o = spk__tune_operand(c->in[4], h), .dout = spk__tune_operand(c->in[3], h),
            .dq = spk__tune_operand(c->out[0], h), .dk = spk__tune_operand(c->out[1], h), .dv = spk__tune_operand(c->out[2], h),
            .r = c->in[5]->ref, .d = c->in[6]->ref, .batch = batch, .seq = seq, .heads = heads, .head_dim = d,
            .causal = causal, .norm = spk__tune_normalizer(p),
        };
        return spk__record_attention_backward(ctx, &a, &t);
    }
    spk__attention_args a = {
        .q = spk__tune_operand(c->in[0], h), .k = spk__tune_operand(c->in[1], h), .v = spk__tune_operand(c->in[2], h),
        .out = spk__tune_operand(c->out[0], h), .batch = batch, .seq = seq, .heads = heads, .head_dim = d,
        .causal = causal, .norm = spk__tune_normalizer(p),
    };
    a.out.views = NULL;
    if (c->out[1]) a.r = c->out[1]->ref;
    spk__buffer_ref none = {0};
    return spk__record_attention(ctx, &t, &a, SPK__ATTENTION_FUSED, none);
}

/* ---- layer norm ---------------------------------------------------------------------------- */

/* Rows per invocation, per subgroup or per workgroup (short_row, subgroup_row_max). */
const uint32_t spk__tune_row_groups[3][2] = {{1u << 30, 0}, {0, 1u << 30}, {0, 0}};

static uint32_t spk__tune_layer_norm_candidates(const spk_context *ctx, uint32_t (*out)[SPK__TUNE_PARAMS], uint32_t max) {
    /* Row groups by invocation, subgroup, workgroup (CPU drivers first; GPUs the other way), two
     * workgroup sizes, x kept in registers or read twice (cache 0), 16 or 1 rows per group. */
    static const uint32_t wgs[] = {64, 256}, caches[] = {16, 0}, rows[] = {16, 1};
    uint32_t n = 0, p[SPK__TUNE_PARAMS];
    spk__layer_norm_tuning t;
    for (int texel = ctx->caps.texel_buffers; texel >= 0; texel--)
        for (int i = 0; i < 3; i++) {
            int g = spk__tune_cpu(ctx) ? i : 2 - i;
            if (g == 1 && !spk__tune_fixed_shuffles(ctx)) continue;
            for (size_t w = 0; w < SPK__ARRAY_LEN(wgs); w++)
                for (size_t c = 0; c < SPK__ARRAY_LEN(caches); c++)
                    for (size_t r = 0; r < SPK__ARRAY_LEN(rows); r++) {
                        t = (spk__layer_norm_tuning){wgs[w], spk__tune_row_groups[g][0], spk__tune_row_groups[g][1],
                                                     caches[c], rows[r], texel};
                        spk__layer_norm_tuning_pack(&t, p);
                        if (spk__layer_norm_tuning_unpack(ctx, p, &t)) n = spk__tune_add(out, n, max, p);
                    }
        }
    return n;
}

static void spk__tune_layer_norm_rule(const spk_context *ctx, const spk__tune_problem *p, uint32_t out[SPK__TUNE_PARAMS]) {
    (void)p;
    spk__layer_norm_tuning t;
    spk__layer_norm_tuning_defaults(ctx, &t);
    spk__layer_norm_tuning_pack(&t, out);
}

static uint32_t spk__tune_layer_norm_kind(const uint32_t p[SPK__TUNE_PARAMS]) {
    return (p[1] ? 0 : p[2] ? 1 : 2) * 2 + (p[5] ? 0 : 1);
}

static int spk__tune_layer_norm_describe(const uint32_t p[SPK__TUNE_PARAMS], char *out, size_t size) {
    return snprintf(out, size, "%s, %s, %u invocations, cache %u, %u rows per group",
                    p[1] >= (1u << 30) ? "an invocation per row" : p[2] >= (1u << 30) ? "a subgroup per row" :
                    p[1] || p[2] ? "rows by length" : "a workgroup per row",
                    p[5] ? "texel" : "storage", p[0], p[3], p[4]);
}

static int spk__tune_layer_norm_describe_problem(const spk__tune_problem *p, char *out, size_t size) {
    return snprintf(out, size, "%llu rows x %llu%s", (unsigned long long)p->size[0], (unsigned long long)p->size[1],
                    p->variant & 1 ? ", keeps stats" : "");
}

bool spk__tune_layer_norm_tunable(const spk__tune_problem *p) { return spk__tune_f32(p, 0x1eu); }

static spk_status spk__tune_layer_norm_open(spk__tune_case *c, uint64_t *seed) {
    int64_t rows = (int64_t)c->problem.size[0], n = (int64_t)c->problem.size[1], shape[2] = {rows, n}, st[2] = {rows, 2};
    spk_status s = SPK_OK;
    float *x = NULL, *gamma = NULL, *beta = NULL;
    c->in[0] = spk__tune_tensor(c, 2, shape, seed, 2.0f, &x, &s);
    c->in[1] = spk__tune_tensor(c, 1, &n, seed, 1.0f, &gamma, &s);
    c->in[2] = spk__tune_tensor(c, 1, &n, seed, 1.0f, &beta, &s);
    double *ref = spk__tune_output(c, 2, shape, &s), *stats = c->problem.variant & 1 ? spk__tune_output(c, 2, st, &s) : NULL;
    if (s == SPK_OK) s = spk__tune_room(c);
    if (s == SPK_OK) spk__ref_layer_norm(x, gamma, beta, rows, n, 1e-5, ref);
    for (int64_t i = 0; s == SPK_OK && stats && i < rows; i++) {
        double mean = 0.0, var = 0.0;
        for (int64_t j = 0; j < n; j++) mean += x[i * n + j];
        mean /= (double)n;
        for (int64_t j = 0; j < n; j++) var += (x[i * n + j] - mean) * (x[i * n + j] - mean);
        stats[2 * i] = mean, stats[2 * i + 1] = 1.0 / sqrt(var / (double)n + 1e-5);
    }
    free(x), free(gamma), free(beta);
    return s;
}

static spk_status spk__tune_layer_norm_record(spk_context *ctx, const void *arg) {
    const spk__tune_case *c = arg;
    if (c->sabotage) return spk__tune_sabotaged(ctx, c);
    spk__layer_norm_tuning t;
    if (!spk__layer_norm_tuning_unpack(ctx, c->params, &t)) return SPK_ERROR_UNSUPPORTED;
    spk_layer_norm_desc desc = {.stats = c->out[1]};
    return spk__record_layer_norm(ctx, &t, c->in[0], c->in[1], c->in[2], &desc, c->out[0]);
}

static const spk__tune_family_ops spk__tune_forward_families[] = {
    [SPK__TUNE_MATMUL] = {1e-5, spk__tune_matmul_candidates, spk__tune_matmul_rule, spk__tune_matmul_kind,
                          spk__tune_matmul_describe, spk__tune_matmul_describe_problem, spk__tune_matmul_tunable,
                          spk__tune_matmul_open, spk__tune_matmul_record},
    [SPK__TUNE_ATTENTION] = {1e-5, spk__tune_attention_candidates, spk__tune_attention_rule, spk__tune_attention_kind,
                             spk__tune_attention_describe, spk__tune_attention_describe_problem,
                             spk__tune_attention_tunable, spk__tune_attention_open, spk__tune_attention_record},
    [SPK__TUNE_ATTENTION_BACKWARD] = {2e-5, spk__tune_attention_backward_candidates, spk__tune_attention_rule,
                                      spk__tune_attention_kind, spk__tune_attention_describe,
                                      spk__tune_attention_describe_problem, spk__tune_attention_tunable,
                                      spk__tune_attention_open, spk__tune_attention_record},
    [SPK__TUNE_LAYER_NORM] = {1e-5, spk__tune_layer_norm_candidates, spk__tune_layer_norm_rule,
                              spk__tune_layer_norm_kind, spk__tune_layer_norm_describe,
                              spk__tune_layer_norm_describe_problem, spk__tune_layer_norm_tunable,
                              spk__tune_layer_norm_open, spk__tune_layer_norm_record},
};

const spk__tune_family_ops *const spk__tune_families[SPK__TUNE_FAMILY_COUNT] = {
    [SPK__TUNE_MATMUL] = &spk__tune_forward_families[SPK__TUNE_MATMUL],
    [SPK__TUNE_ATTENTION] = &spk__tune_forward_families[SPK__TUNE_ATTENTION],
    [SPK__TUNE_ATTENTION_BACKWARD] = &spk__tune_forward_families[SPK__TUNE_ATTENTION_BACKWARD],
    [SPK__TUNE_LAYER_NORM] = &spk__tune_forward_families[SPK__TUNE_LAYER_NORM],
    [SPK__TUNE_LAYER_NORM_BACKWARD] = &spk__tune_layer_norm_backward_family,
    [SPK__TUNE_COLUMN_SUMS] = &spk__tune_column_sums_family,
    [SPK__TUNE_SOFTPICK] = &spk__tune_softpick_family,
    [SPK__TUNE_OPTIMIZER] = &spk__tune_optimizer_family,
    [SPK__TUNE_LOSS] = &spk__tune_loss_family,
};
