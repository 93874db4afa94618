/* spk_tune's smaller kernel families: the softpick op (rows and columns, forward and backward),
 * layer norm's backward, the column sums of the backward passes, the optimizer's update and the
 * losses. Each: the candidates this device can run, the rule, and a case against float64. */
#include "tune_cases.h"
#include "fault.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layer_norm_plan.h"
#include "loss_plan.h"
#include "matmul_plan.h"
#include "model.h"
#include "reference.h"
#include "softpick_plan.h"

/* Workgroup sizes worth trying: 64 (every rule's) first, then the rest up to 256. */
static const uint32_t spk__tune_workgroups[] = {64, 128, 256, 32, 16, 8};

static int spk__tune_describe_rows_n(const spk__tune_problem *p, const char *what, char *out, size_t size) {
    return snprintf(out, size, "%s%llu rows x %llu", what, (unsigned long long)p->size[0], (unsigned long long)p->size[1]);
}

/* ---- softpick ------------------------------------------------------------------------------ */

static uint32_t spk__tune_softpick_candidates(const spk_context *ctx, uint32_t (*out)[SPK__TUNE_PARAMS], uint32_t max) {
    spk__softpick_tuning base, t;
    spk__softpick_plan_defaults(ctx, &base);
    uint32_t n = 0, p[SPK__TUNE_PARAMS];
    /* Rows: an invocation, a subgroup or the workgroup per row, 64 or 256 invocations, the row
     * kept in registers or read twice, texel or storage reads, few or many invocations wanted
     * (segments of long rows). Columns: 64 to 256 invocations, segments contiguous or
     * interleaved, few or many invocations, texel or storage reads. */
    static const uint32_t wgs[] = {64, 256, 128}, caches[] = {16, 0};
    static const uint32_t targets[][3] = {{4096, 4096, 512}, {65536, 1024, 64}}; /* invocations, row, column segment */
    for (int strided = 0; strided <= 1; strided++)
        for (int texel = ctx->caps.texel_buffers; texel >= 0; texel--)
            for (int g = 0; g < 3; g++)
                for (size_t w = 0; w < SPK__ARRAY_LEN(wgs); w++)
                    for (size_t c = 0; c < SPK__ARRAY_LEN(caches); c++)
                        for (size_t s = 0; s < SPK__ARRAY_LEN(targets); s++) {
                            int group = spk__tune_cpu(ctx) ? g : 2 - g;
                            if (strided && (group != 0 || c != 0)) continue; /* columns: one each */
                            if (!strided && (w == 2 || (group == 1 && !spk__tune_fixed_shuffles(ctx)))) continue;
                            for (int inter = 0; inter <= strided; inter++) {
                                t = base;
                                t.workgroup = wgs[w], t.texel = texel, t.target_invocations = targets[s][0];
                                t.min_row_segment = targets[s][1], t.min_column_segment = targets[s][2];
                                t.interleave_columns = inter;
                                if (!strided) {
                                    t.short_row = spk__tune_row_groups[group][0];
                                    t.subgroup_row_max = spk__tune_row_groups[group][1], t.cache_max = caches[c];
                                }
                                spk__softpick_tuning_pack(&t, strided, p);
                                if (spk__softpick_tuning_unpack(ctx, p, strided, &t)) n = spk__tune_add(out, n, max, p);
                            }
                        }
    return n;
}

static void spk__tune_softpick_rule(const spk_context *ctx, const spk__tune_problem *p, uint32_t out[SPK__TUNE_PARAMS]) {
    spk__softpick_tuning t;
    spk__softpick_plan_defaults(ctx, &t);
    spk__softpick_tuning_pack(&t, p->variant & 2, out);
}

static uint32_t spk__tune_softpick_kind(const uint32_t p[SPK__TUNE_PARAMS]) {
    return p[5] ? 6 + p[4] : (p[1] >= (1u << 30) ? 0 : p[2] >= (1u << 30) ? 1 : 2) * 2 + p[4];
}

static int spk__tune_softpick_describe(const uint32_t p[SPK__TUNE_PARAMS], char *out, size_t size) {
    const char *how = p[5] == 2 ? "interleaved segments" : p[5] ? "contiguous segments"
                    : p[1] >= (1u << 30) ? "an invocation per row" : p[2] >= (1u << 30) ? "a subgroup per row"
                    : p[1] || p[2] ? "rows by length" : "a workgroup per row";
    return snprintf(out, size, "%s, %s, %u invocations, cache %u, %u wanted (segments of %u)", how,
                    p[4] ? "texel" : "storage", p[0], p[3], p[6], p[7]);
}

static int spk__tune_softpick_describe_problem(const spk__tune_problem *p, char *out, size_t size) {
    return snprintf(out, size, "%s%s %llu x %llu x %llu", p->variant & 1 ? "backward " : "",
                    p->variant & 2 ? "columns" : "rows", (unsigned long long)p->size[0], (unsigned long long)p->size[1],
                    (unsigned long long)p->size[2]);
}

static bool spk__tune_softpick_tunable(const spk__tune_problem *p) { return spk__tune_f32(p, 4); }

static spk_status spk__tune_softpick_open(spk__tune_case *c, uint64_t *seed) {
    const spk__tune_problem *p = &c->problem;
    int64_t shape[3] = {(int64_t)p->size[0], (int64_t)p->size[1], (int64_t)p->size[2]};
    spk_status s = SPK_OK;
    float *x = NULL, *dy = NULL;
    c->in[0] = spk__tune_tensor(c, 3, shape, seed, 3.0f, &x, &s);
    if (p->variant & 1) c->in[1] = spk__tune_tensor(c, 3, shape, seed, 1.0f, &dy, &s);
    double *ref = spk__tune_output(c, 3, shape, &s);
    if (s == SPK_OK) s = spk__tune_room(c);
    if (s == SPK_OK && dy) spk__ref_softpick_backward(x, dy, shape[0], shape[1], shape[2], ref);
    else if (s == SPK_OK) spk__ref_softpick(x, shape[0], shape[1], shape[2], ref);
    free(x), free(dy);
    return s;
}

static spk_status spk__tune_softpick_record(spk_context *ctx, const void *arg) {
    const spk__tune_case *c = arg;
    if (c->sabotage) return spk__tune_sabotaged(ctx, c);
    spk__softpick_tuning t;
    bool strided = c->problem.variant & 2;
    if (!spk__softpick_tuning_unpack(ctx, c->params, strided, &t)) return SPK_ERROR_UNSUPPORTED;
    return c->in[1] ? spk__record_softpick_backward(ctx, &t, c->in[0], c->in[1], 1, c->out[0])
                    : spk__record_softpick(ctx, &t, c->in[0], 1, c->out[0]);
}

const spk__tune_family_ops spk__tune_softpick_family = {
    1e-5, spk__tune_softpick_candidates, spk__tune_softpick_rule, spk__tune_softpick_kind, spk__tune_softpick_describe,
    spk__tune_softpick_describe_problem, spk__tune_softpick_tunable, spk__tune_softpick_open, spk__tune_softpick_record,
};

/* ---- layer norm's backward (dx; dgamma and dbeta are column sums) ---------------------------- */

static uint32_t spk__tune_layer_norm_backward_candidates(const spk_context *ctx, uint32_t (*out)[SPK__TUNE_PARAMS],
                                                         uint32_t max) {
    /* As the forward's, less what the backward does not have (no cache, no rows sharing gamma). */
    uint32_t n = 0, p[SPK__TUNE_PARAMS];
    spk__layer_norm_tuning base, t;
    spk__layer_norm_tuning_defaults(ctx, &base);
    for (int texel = ctx->caps.texel_buffers; texel >= 0; texel--)
        for (int i = 0; i < 3; i++) {
            int g = spk__tune_cpu(ctx) ? i : 2 - i;
            if (g == 1 && !spk__tune_fixed_shuffles(ctx)) continue;
            for (size_t w = 0; w < 3; w++) {
                t = base;
                t.workgroup = spk__tune_workgroups[w], t.texel = texel;
                t.short_row = spk__tune_row_groups[g][0], t.subgroup_row_max = spk__tune_row_groups[g][1];
                spk__layer_norm_tuning_pack(&t, p);
                if (spk__layer_norm_tuning_unpack(ctx, p, &t)) n = spk__tune_add(out, n, max, p);
            }
        }
    return n;
}

static void spk__tune_layer_norm_backward_rule(const spk_context *ctx, const spk__tune_problem *p,
                                               uint32_t out[SPK__TUNE_PARAMS]) {
    (void)p;
    spk__layer_norm_tuning t;
    spk__layer_norm_tuning_defaults(ctx, &t);
    spk__layer_norm_tuning_pack(&t, out);
}

static uint32_t spk__tune_layer_norm_backward_kind(const uint32_t p[SPK__TUNE_PARAMS]) {
    return (p[1] >= (1u << 30) ? 0 : p[2] >= (1u << 30) ? 1 : 2) * 2 + p[5];
}

static int spk__tune_layer_norm_backward_describe(const uint32_t p[SPK__TUNE_PARAMS], char *out, size_t size) {
    return snprintf(out, size, "%s, %s, %u invocations",
                    p[1] >= (1u << 30) ? "an invocation per row" : p[2] >= (1u << 30) ? "a subgroup per row" :
                    p[1] || p[2] ? "rows by length" : "a workgroup per row", p[5] ? "texel" : "storage", p[0]);
}

static int spk__tune_layer_norm_backward_describe_problem(const spk__tune_problem *p, char *out, size_t size) {
    return spk__tune_describe_rows_n(p, "dx of ", out, size);
}

static bool spk__tune_layer_norm_backward_tunable(const spk__tune_problem *p) { return p->variant == 0; }

/* Random x, gamma and dy, x's statistics as the forward keeps them. */
static spk_status spk__tune_layer_norm_backward_open(spk__tune_case *c, uint64_t *seed) {
    int64_t rows = (int64_t)c->problem.size[0], n = (int64_t)c->problem.size[1], shape[2] = {rows, n}, st[2] = {rows, 2};
    spk_status s = SPK_OK;
    float *x = NULL, *gamma = NULL, *dy = NULL, *stats = spk__malloc((size_t)rows * 2 * sizeof *stats);
    double *sums = spk__calloc((size_t)n * 2, sizeof *sums);
    if (!stats || !sums) s = spk__fail(c->ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    c->in[0] = spk__tune_tensor(c, 2, shape, seed, 2.0f, &x, &s);
    c->in[1] = spk__tune_tensor(c, 1, &n, seed, 1.0f, &gamma, &s);
    c->in[2] = spk__tune_tensor(c, 2, st, seed, 0.0f, NULL, &s);
    c->in[3] = spk__tune_tensor(c, 2, shape, seed, 1.0f, &dy, &s);
    double *ref = spk__tune_output(c, 2, shape, &s);
    if (s == SPK_OK) s = spk__tune_room(c);
    for (int64_t i = 0; s == SPK_OK && i < rows; i++) {
        double mean = 0.0, var = 0.0;
        for (int64_t j = 0; j < n; j++) mean += x[i * n + j];
        mean /= (double)n;
        for (int64_t j = 0; j < n; j++) var += (x[i * n + j] - mean) * (x[i * n + j] - mean);
        stats[2 * i] = (float)mean, stats[2 * i + 1] = (float)(1.0 / sqrt(var / (double)n + 1e-5));
    }
    if (s == SPK_OK) s = spk_tensor_upload(c->in[2], stats, rows * 2);
    if (s == SPK_OK) spk__ref_layer_norm_backward(x, gamma, dy, rows, n, 1e-5, ref, sums, sums + n);
    free(x), free(gamma), free(dy), free(stats), free(sums);
    return s;
}

static spk_status spk__tune_layer_norm_backward_record(spk_context *ctx, const void *arg) {
    const spk__tune_case *c = arg;
    if (c->sabotage) return spk__tune_sabotaged(ctx, c);
    spk__layer_norm_tuning t;
    if (!spk__layer_norm_tuning_unpack(ctx, c->params, &t)) return SPK_ERROR_UNSUPPORTED;
    spk_layer_norm_grads g = {.dx = c->out[0]};
    return spk__record_layer_norm_backward(ctx, &t, c->in[0], c->in[1], c->in[2], c->in[3], &g, NULL, NULL);
}

const spk__tune_family_ops spk__tune_layer_norm_backward_family = {
    1e-5, spk__tune_layer_norm_backward_candidates, spk__tune_layer_norm_backward_rule,
    spk__tune_layer_norm_backward_kind, spk__tune_layer_norm_backward_describe,
    spk__tune_layer_norm_backward_describe_problem, spk__tune_layer_norm_backward_tunable,
    spk__tune_layer_norm_backward_open, spk__tune_layer_norm_backward_record,
};

/* ---- column sums --------------------------------------------------------------------------- */

static uint32_t spk__tune_column_sums_candidates(const spk_context *ctx, uint32_t (*out)[SPK__TUNE_PARAMS], uint32_t max) {
    /* Texel reads 4 columns or 1 per invocation, or storage reads (CPU drivers first; GPUs the
     * other way), 64 to 256 invocations, the rows cut into 1 to 32 runs. */
    static const uint32_t reads[3][2] = {{1, 1}, {1, 0}, {0, 0}}, chunks[] = {4, 1, 2, 8, 16, 32};
    uint32_t n = 0, p[SPK__TUNE_PARAMS];
    spk__column_sums_tuning t;
    for (int i = 0; i < 3; i++) {
        int r = spk__tune_cpu(ctx) ? i : 2 - i;
        for (size_t w = 0; w < 3; w++)
            for (size_t k = 0; k < SPK__ARRAY_LEN(chunks); k++) {
                t = (spk__column_sums_tuning){spk__tune_workgroups[w], chunks[k], reads[r][0], reads[r][1]};
                spk__column_sums_tuning_pack(&t, p);
                if (spk__column_sums_tuning_unpack(ctx, p, &t)) n = spk__tune_add(out, n, max, p);
            }
    }
    return n;
}

static void spk__tune_column_sums_rule(const spk_context *ctx, const spk__tune_problem *p, uint32_t out[SPK__TUNE_PARAMS]) {
    (void)p;
    spk__column_sums_tuning t;
    spk__column_sums_tuning_defaults(ctx, &t);
    spk__column_sums_tuning_pack(&t, out);
}

static uint32_t spk__tune_column_sums_kind(const uint32_t p[SPK__TUNE_PARAMS]) { return p[2] + p[3]; }

static int spk__tune_column_sums_describe(const uint32_t p[SPK__TUNE_PARAMS], char *out, size_t size) {
    return snprintf(out, size, "%s, %u invocations, %u runs of rows", p[3] ? "texel, 4 columns" : p[2] ? "texel" : "storage",
                    p[0], p[1]);
}

static int spk__tune_column_sums_describe_problem(const spk__tune_problem *p, char *out, size_t size) {
    static const char *const what[3] = {"sums of ", "sums and sums against xhat of ", "sums against xhat of "};
    return spk__tune_describe_rows_n(p, what[p->variant % 3], out, size);
}

static bool spk__tune_column_sums_tunable(const spk__tune_problem *p) { return p->variant <= 2; }

/* Random g, x and per-row statistics (a mean and a positive rstd); the sums in float64. */
static spk_status spk__tune_column_sums_open(spk__tune_case *c, uint64_t *seed) {
    uint32_t mode = c->problem.variant;
    int64_t rows = (int64_t)c->problem.size[0], n = (int64_t)c->problem.size[1], shape[2] = {rows, n}, st[2] = {rows, 2};
    spk_status s = SPK_OK;
    float *g = NULL, *x = NULL, *stats = NULL;
    c->in[0] = spk__tune_tensor(c, 2, shape, seed, 1.0f, &g, &s);
    c->in[1] = spk__tune_tensor(c, 2, shape, seed, 2.0f, &x, &s);
    c->in[2] = spk__tune_tensor(c, 2, st, seed, 1.0f, &stats, &s);
    double *sums = mode != 2 ? spk__tune_output(c, 1, &n, &s) : NULL, *dots = mode != 0 ? spk__tune_output(c, 1, &n, &s) : NULL;
    if (s == SPK_OK) s = spk__tune_room(c);
    for (int64_t i = 0; s == SPK_OK && i < rows; i++) {
        stats[2 * i + 1] = fabsf(stats[2 * i + 1]) + 0.5f;
        for (int64_t j = 0; j < n; j++) {
            if (sums) sums[j] += g[i * n + j];
            if (dots) dots[j] += (double)g[i * n + j] * ((double)x[i * n + j] - stats[2 * i]) * stats[2 * i + 1];
        }
    }
    if (s == SPK_OK) s = spk_tensor_upload(c->in[2], stats, rows * 2);
    free(g), free(x), free(stats);
    return s;
}

static spk_status spk__tune_column_sums_record(spk_context *ctx, const void *arg) {
    const spk__tune_case *c = arg;
    if (c->sabotage) return spk__tune_sabotaged(ctx, c);
    spk__column_sums_tuning t;
    if (!spk__column_sums_tuning_unpack(ctx, c->params, &t)) return SPK_ERROR_UNSUPPORTED;
    uint32_t mode = c->problem.variant;
    return spk__record_column_sums_tuned(ctx, &t, c->in[0], mode ? c->in[1] : NULL, mode ? c->in[2] : NULL, false,
                                         mode != 2 ? c->out[0] : NULL, mode == 1 ? c->out[1] : mode == 2 ? c->out[0] : NULL);
}

const spk__tune_family_ops spk__tune_column_sums_family = {
    1e-5, spk__tune_column_sums_candidates, spk__tune_column_sums_rule, spk__tune_column_sums_kind,
    spk__tune_column_sums_describe, spk__tune_column_sums_describe_problem, spk__tune_column_sums_tunable,
    spk__tune_column_sums_open, spk__tune_column_sums_record,
};

/* ---- the optimizer's update ---------------------------------------------------------------- */

static uint32_t spk__tune_optimizer_candidates(const spk_context *ctx, uint32_t (*out)[SPK__TUNE_PARAMS], uint32_t max) {
    /* vec4 texel reads or storage reads (CPU drivers first), 8 to 256 invocations. */
    uint32_t n = 0, p[SPK__TUNE_PARAMS] = {0};
    spk__optimizer_tuning t;
    for (int i = 0; i < 2; i++)
        for (size_t w = 0; w < SPK__ARRAY_LEN(spk__tune_workgroups); w++) {
            p[0] = spk__tune_workgroups[w], p[1] = spk__tune_cpu(ctx) ? 1 - i : i;
            if (spk__optimizer_tuning_unpack(ctx, p, &t)) n = spk__tune_add(out, n, max, p);
        }
    return n;
}

static void spk__tune_optimizer_rule(const spk_context *ctx, const spk__tune_problem *p, uint32_t out[SPK__TUNE_PARAMS]) {
    (void)p;
    spk__optimizer_tuning t;
    spk__optimizer_tuning_defaults(ctx, &t);
    memset(out, 0, SPK__TUNE_PARAMS * sizeof *out);
    out[0] = t.workgroup, out[1] = t.texel;
}

static uint32_t spk__tune_optimizer_kind(const uint32_t p[SPK__TUNE_PARAMS]) { return p[1]; }

static int spk__tune_optimizer_describe(const uint32_t p[SPK__TUNE_PARAMS], char *out, size_t size) {
    return snprintf(out, size, "%s, %u invocations", p[1] ? "texel" : "storage", p[0]);
}

static int spk__tune_optimizer_describe_problem(const spk__tune_problem *p, char *out, size_t size) {
    return snprintf(out, size, "%s update of %llu", p->variant == SPK_OPTIMIZER_SGD ? "SGD" : "AdamW",
                    (unsigned long long)p->size[0]);
}

static bool spk__tune_optimizer_tunable(const spk__tune_problem *p) { return p->variant <= SPK_OPTIMIZER_SGD; }

/* The first step from random p, g, m and v (v >= 0): p, m and v are updated in place, so the
 * case keeps them in in[0..3] and each checked run starts from copies in out[0..2]. */
static spk_status spk__tune_optimizer_open(spk__tune_case *c, uint64_t *seed) {
    int64_t n = (int64_t)c->problem.size[0], eight = 8;
    bool sgd = c->problem.variant == SPK_OPTIMIZER_SGD;
    spk_optimizer_desc o = spk_optimizer_defaults((spk_optimizer_kind)c->problem.variant);
    spk_status s = SPK_OK;
    float *p = NULL, *g = NULL, *m = NULL, *v = NULL;
    float state[8] = {1.0f, 1.0f, 0.0f, 0.0f, 1.0f - o.beta1, 1.0f - o.beta2, 1.0f, 0.0f}; /* step 1, no clipping */
    c->in[0] = spk__tune_tensor(c, 1, &n, seed, 1.0f, &p, &s);
    c->in[1] = spk__tune_tensor(c, 1, &n, seed, 1.0f, &g, &s);
    c->in[2] = spk__tune_tensor(c, 1, &n, seed, 0.1f, &m, &s);
    c->in[3] = spk__tune_tensor(c, 1, &n, seed, 0.0f, &v, &s);
    c->in[4] = spk__tune_tensor(c, 1, &eight, seed, 0.0f, NULL, &s);
    double *rp = spk__tune_output(c, 1, &n, &s), *rm = spk__tune_output(c, 1, &n, &s), *rv = spk__tune_output(c, 1, &n, &s);
    if (s == SPK_OK) s = spk__tune_room(c);
    for (int64_t i = 0; s == SPK_OK && i < n; i++) {
        v[i] = 0.01f * fabsf(g[(i * 7) % n]);
        double w = p[i], grad = g[i], m1 = m[i], v1 = v[i];
        if (!sgd) {
            m1 = o.beta1 * m1 + (1.0 - o.beta1) * grad, v1 = o.beta2 * v1 + (1.0 - o.beta2) * grad * grad;
            w = w * (1.0 - (double)o.lr * o.weight_decay) -
                o.lr / (1.0 - o.beta1) * m1 / (sqrt(v1) / sqrt(1.0 - o.beta2) + o.eps);
        } else {
            w -= o.lr * (grad + o.weight_decay * w);
        }
        rp[i] = w, rm[i] = m1, rv[i] = v1;
    }
    if (s == SPK_OK) s = spk_tensor_upload(c->in[3], v, n);
    if (s == SPK_OK) s = spk_tensor_upload(c->in[4], state, 8);
    free(p), free(g), free(m), free(v);
    return s;
}

static spk_status spk__tune_optimizer_record(spk_context *ctx, const void *arg) {
    const spk__tune_case *c = arg;
    if (c->sabotage) return spk__tune_sabotaged(ctx, c);
    spk__optimizer_tuning t;
    if (!spk__optimizer_tuning_unpack(ctx, c->params, &t)) return SPK_ERROR_UNSUPPORTED;
    spk_status s = SPK_OK;
    const int copied[3] = {0, 2, 3}; /* p, m, v */
    for (int i = 0; i < 3 && c->checking && s == SPK_OK; i++) s = spk__copy(ctx, c->in[copied[i]]->ref, c->out[i]->ref);
    spk_optimizer_desc o = spk_optimizer_defaults((spk_optimizer_kind)c->problem.variant);
    if (s == SPK_OK) s = spk__record_optimizer_update(ctx, &t, &o, c->out[0], c->in[1], c->out[1], c->out[2], c->in[4]);
    return s;
}

const spk__tune_family_ops spk__tune_optimizer_family = {
    1e-5, spk__tune_optimizer_candidates, spk__tune_optimizer_rule, spk__tune_optimizer_kind,
    spk__tune_optimizer_describe, spk__tune_optimizer_describe_problem, spk__tune_optimizer_tunable,
    spk__tune_optimizer_open, spk__tune_optimizer_record,
};

/* ---- losses -------------------------------------------------------------------------------- */

static uint32_t spk__tune_loss_candidates(const spk_context *ctx, uint32_t (*out)[SPK__TUNE_PARAMS], uint32_t max) {
    uint32_t n = 0, p[SPK__TUNE_PARAMS] = {0};
    for (size_t w = 0; w < SPK__ARRAY_LEN(spk__tune_workgroups); w++) /* an invocation per row, 8 to 256 each */
        if (p[0] = spk__tune_workgroups[w], spk__loss_workgroup_ok(ctx, p[0])) n = spk__tune_add(out, n, max, p);
    return n;
}

static void spk__tune_loss_rule(const spk_context *ctx, const spk__tune_problem *p, uint32_t out[SPK__TUNE_PARAMS]) {
    (void)ctx, (void)p;
    memset(out, 0, SPK__TUNE_PARAMS * sizeof *out);
    out[0] = 64;
}

static uint32_t spk__tune_loss_kind(const uint32_t p[SPK__TUNE_PARAMS]) {
    (void)p;
    return 0;
}

static int spk__tune_loss_describe(const uint32_t p[SPK__TUNE_PARAMS], char *out, size_t size) {
    return snprintf(out, size, "%u invocations", p[0]);
}

static int spk__tune_loss_describe_problem(const spk__tune_problem *p, char *out, size_t size) {
    return spk__tune_describe_rows_n(p, p->variant == SPK_LOSS_MSE ? "mse of " : "cross-entropy of ", out, size);
}

static bool spk__tune_loss_tunable(const spk__tune_problem *p) { return p->variant <= SPK_LOSS_CROSS_ENTROPY; }

/* Random y and targets (values, or one class per row); the loss and dL/dy in float64. */
static spk_status spk__tune_loss_open(spk__tune_case *c, uint64_t *seed) {
    bool mse = c->problem.variant == SPK_LOSS_MSE;
    int64_t rows = (int64_t)c->problem.size[0], n = (int64_t)c->problem.size[1], shape[2] = {rows, n}, one = 1;
    spk_status s = SPK_OK;
    float *y = NULL, *t = NULL;
    c->in[0] = spk__tune_tensor(c, 2, shape, seed, 3.0f, &y, &s);
    c->in[1] = spk__tune_tensor(c, mse ? 2 : 1, shape, seed, 1.0f, &t, &s);
    c->in[2] = spk__tune_tensor(c, 1, &rows, seed, 0.0f, NULL, &s); /* the rows' losses */
    double *loss = spk__tune_output(c, 1, &one, &s), *dy = spk__tune_output(c, 2, shape, &s);
    if (s == SPK_OK) s = spk__tune_room(c);
    double count = mse ? (double)rows * (double)n : (double)rows;
    for (int64_t i = 0; s == SPK_OK && i < rows; i++) {
        const float *yr = y + i * n;
        if (mse) {
            for (int64_t j = 0; j < n; j++) {
                double d = (double)yr[j] - t[i * n + j];
                *loss += d * d / count, dy[i * n + j] = 2.0 * d / count;
            }
            continue;
        }
        int64_t cls = (int64_t)floor((fabs((double)t[i]) * 1e4)) % n;
        t[i] = (float)cls;
        double top = yr[0], sum = 0.0;
        for (int64_t j = 1; j < n; j++) top = fmax(top, yr[j]);
        for (int64_t j = 0; j < n; j++) sum += exp(yr[j] - top);
        *loss += (log(sum) - (yr[cls] - top)) / count;
        for (int64_t j = 0; j < n; j++) dy[i * n + j] = (exp(yr[j] - top) / sum - (j == cls)) / count;
    }
    if (s == SPK_OK && !mse) s = spk_tensor_upload(c->in[1], t, rows);
    free(y), free(t);
    return s;
}

static spk_status spk__tune_loss_record(spk_context *ctx, const void *arg) {
    const spk__tune_case *c = arg;
    if (c->sabotage) return spk__tune_sabotaged(ctx, c);
    if (!spk__loss_workgroup_ok(ctx, c->params[0])) return SPK_ERROR_UNSUPPORTED;
    return spk__record_loss(ctx, c->params[0], (spk_loss_kind)c->problem.variant, c->in[0], c->in[1], c->in[2]->ref,
                            c->out[0], c->out[1], 0);
}

const spk__tune_family_ops spk__tune_loss_family = {
    1e-5, spk__tune_loss_candidates, spk__tune_loss_rule, spk__tune_loss_kind, spk__tune_loss_describe,
    spk__tune_loss_describe_problem, spk__tune_loss_tunable, spk__tune_loss_open, spk__tune_loss_record,
};
