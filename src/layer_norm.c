/* Layer norm over the last axis (shaders/layer_norm.comp). */
#include "layer_norm_plan.h"
#include "matmul_plan.h"

#include <math.h>
#include <string.h>

void spk__layer_norm_tuning_defaults(const spk_context *ctx, spk__layer_norm_tuning *t) {
    /* As for softpick: a CPU driver wants an invocation or a subgroup per row with the row in
     * registers, and rows sharing gamma and beta; a GPU, and any device for very long rows, a
     * workgroup per row. */
    const spk__device_caps *caps = &ctx->caps;
    bool cpu = caps->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    uint32_t fixed_sg = caps->min_subgroup_size == caps->max_subgroup_size ? caps->max_subgroup_size : 0;
    *t = (spk__layer_norm_tuning){
        .workgroup = caps->max_subgroup_size > 64 ? caps->max_subgroup_size : 64,
        .short_row = cpu ? 16 : 0,
        .subgroup_row_max = cpu && fixed_sg ? 4096 : 0,
        /* 32 ran slower than none at rows of 1024 floats on lavapipe (0.37 against 0.21 ms) and
         * compiled 2.5x longer on Mesa 25 (its storage accesses unroll per lane and component). */
        .cache_max = 16,
        .rows_max = cpu ? 16 : 1,
        .texel = cpu && caps->texel_buffers,
    };
}

/* Tuned parameters (tuning.h): the fields in order. */
void spk__layer_norm_tuning_pack(const spk__layer_norm_tuning *t, uint32_t p[SPK__TUNE_PARAMS]) {
    uint32_t q[SPK__TUNE_PARAMS] = {t->workgroup, t->short_row, t->subgroup_row_max, t->cache_max, t->rows_max, t->texel};
    memcpy(p, q, sizeof q);
}

bool spk__layer_norm_tuning_unpack(const spk_context *ctx, const uint32_t p[SPK__TUNE_PARAMS], spk__layer_norm_tuning *t) {
    const spk__device_caps *caps = &ctx->caps;
    const VkPhysicalDeviceLimits *l = &caps->props.limits;
    *t = (spk__layer_norm_tuning){p[0], p[1], p[2], p[3], p[4], p[5] == 1 && caps->texel_buffers};
    bool pow2 = t->workgroup && !(t->workgroup & (t->workgroup - 1));
    return pow2 && t->workgroup % caps->max_subgroup_size == 0 && t->workgroup <= l->maxComputeWorkGroupInvocations &&
           t->workgroup <= l->maxComputeWorkGroupSize[0] && t->cache_max <= 64 && t->rows_max >= 1 &&
           t->rows_max <= 64 && p[5] <= 1;
}

spk__tune_problem spk__layer_norm_problem(const spk_tensor *x, const spk_tensor *y, bool stats) {
    uint64_t n = (uint64_t)x->shape[x->ndim - 1];
    return (spk__tune_problem){SPK__TUNE_LAYER_NORM, stats | x->dtype << 1 | y->dtype << 3,
                               {(uint64_t)x->count / n, n}};
}

uint32_t spk__layer_norm_group(const spk_context *ctx, const spk__layer_norm_tuning *t, uint64_t len) {
    const spk__device_caps *caps = &ctx->caps;
    uint32_t fixed_sg = caps->min_subgroup_size == caps->max_subgroup_size ? caps->max_subgroup_size : 0;
    if (len <= t->short_row) return 1;
    if (fixed_sg && len <= t->subgroup_row_max) return fixed_sg;
    return t->workgroup;
}

typedef struct spk__layer_norm_args {
    const spk__layer_norm_tuning *tuning;
    const spk_tensor *x, *gamma, *beta;
    spk_tensor *y, *stats;
    float epsilon;
    uint64_t rows, n;
} spk__layer_norm_args;

static spk_status spk__layer_norm_dispatch(spk_context *ctx, const void *arg) {
    const spk__layer_norm_args *p = arg;
    const spk__layer_norm_tuning *t = p->tuning;
    bool vec4 = p->n % 4 == 0 && p->x->ref.offset % 16 == 0 && p->y->ref.offset % 16 == 0 &&
                p->gamma->ref.offset % 16 == 0 && p->beta->ref.offset % 16 == 0;
    uint64_t len = vec4 ? p->n / 4 : p->n; /* loads per row */
    uint32_t workgroup = t->workgroup, group = spk__layer_norm_group(ctx, t, len);
    bool subgroup = ctx->reduction == SPK_REDUCTION_SUBGROUP && group > 1;
    uint64_t per_invocation = (len + group - 1) / group;
    uint32_t cache = per_invocation <= t->cache_max ? spk__pow2_at_least(per_invocation) : 0;

    /* Rows per group share gamma and beta in registers (on CPU drivers the loads cost the most):
     * up to rows_max (16 measured best on lavapipe), while at least 16 workgroups remain to spread
     * over the cores; a power of two, so that few pipeline variants exist. */
    uint64_t groups_per_wg = workgroup / group;
    uint32_t rows_per_group = 1;
    while (cache && rows_per_group < t->rows_max && p->rows >= groups_per_wg * 16 * rows_per_group * 2)
        rows_per_group *= 2;
    /* F16 x or y: the variants with 16-bit storage (an F16 x through a texel view reads as floats). */
    bool s16 = p->x->dtype != SPK_DTYPE_F32 || p->y->dtype != SPK_DTYPE_F32;
    uint32_t spec[7] = {workgroup, group, subgroup, cache, rows_per_group, p->x->dtype, p->y->dtype};
    /* Texel views of T where x, gamma and beta all have one (wrapped buffers do not). */
    bool texel = t->texel && p->x->views[vec4] && p->gamma->views[vec4] && p->beta->views[vec4];
    spk__dispatch_desc d = {
        /* Without stats, y in their place (never written through that binding). */
        .bindings = {p->x->ref, p->gamma->ref, p->beta->ref, p->y->ref, p->stats ? p->stats->ref : p->y->ref},
        .views = {texel ? p->x->views[vec4] : VK_NULL_HANDLE, texel ? p->gamma->views[vec4] : VK_NULL_HANDLE,
                  texel ? p->beta->views[vec4] : VK_NULL_HANDLE},
        .written_mask = p->stats ? 0x18 : 0x8,
    };
    struct {
        uint32_t n, rows;
        float eps;
        uint32_t keep_stats;
    } push = {(uint32_t)len, (uint32_t)p->rows, p->epsilon, p->stats != NULL};
    d.push = &push;
    d.push_size = sizeof push;
    uint64_t rows_per_wg = groups_per_wg * rows_per_group;
    spk_status status = spk__grid(ctx, (p->rows + rows_per_wg - 1) / rows_per_wg, d.groups);
    if (status == SPK_OK)
        status = spk__pipeline_get(
            ctx,
            texel ? (s16 ? (vec4 ? &spk__shader_layer_norm_texel_s16_f4 : &spk__shader_layer_norm_texel_s16_f1)
                         : (vec4 ? &spk__shader_layer_norm_texel_f4 : &spk__shader_layer_norm_texel_f1))
                  : (s16 ? (vec4 ? &spk__shader_layer_norm_s16_f4 : &spk__shader_layer_norm_s16_f1)
                         : (vec4 ? &spk__shader_layer_norm_f4 : &spk__shader_layer_norm_f1)),
            spec, 7, subgroup ? SPK__PIPELINE_FULL_SUBGROUPS : 0, &d.pipeline);
    if (status == SPK_OK) status = spk__dispatch(ctx, &d);
    return status;
}

spk_status spk_layer_norm(spk_context *ctx, const spk_tensor *x, const spk_tensor *gamma, const spk_tensor *beta,
                          const spk_layer_norm_desc *desc, spk_tensor *y) {
    return spk__layer_norm_tuned(ctx, NULL, x, gamma, beta, desc, y);
}

/* Checks that `stats` is a tensor of ctx with x's shape but 2 in the last dimension. */
static spk_status spk__check_stats(spk_context *ctx, const spk_tensor *x, const spk_tensor *stats) {
    spk_status status = spk__check_tensor(ctx, stats, "layer norm stats");
    int64_t shape[SPK_MAX_RANK];
    memcpy(shape, x->shape, (size_t)x->ndim * sizeof *shape);
    shape[x->ndim - 1] = 2;
    if (status == SPK_OK) status = spk__check_shape(ctx, stats, x->ndim, shape, "layer norm stats");
    return status;
}

/* Checks the operands and plans the dispatch; args->tuning is NULL when there is nothing to do. */
static spk_status spk__layer_norm_check(spk_context *ctx, const spk__layer_norm_tuning *tuning, const spk_tensor *x,
                                        const spk_tensor *gamma, const spk_tensor *beta,
                                        const spk_layer_norm_desc *desc, spk_tensor *y,
                                        spk__layer_norm_tuning *defaults, spk__layer_norm_args *args) {
    *args = (spk__layer_norm_args){0};
    if (!ctx) return SPK_ERROR_INVALID_ARGUMENT;
    spk_status status = spk__check_activation(ctx, x, "layer norm", "layer norm input");
    if (status == SPK_OK) status = spk__check_tensor(ctx, gamma, "layer norm gamma");
    if (status == SPK_OK) status = spk__check_tensor(ctx, beta, "layer norm beta");
    if (status == SPK_OK) status = spk__check_activation(ctx, y, "layer norm", "layer norm output");
    if (status != SPK_OK) return status;
    float epsilon = desc && desc->epsilon != 0.0f ? desc->epsilon : 1e-5f;
    if (!(epsilon >= 0.0f) || isinf(epsilon))
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "layer norm epsilon must be finite and >= 0");
    int64_t n = x->shape[x->ndim - 1];
    status = spk__check_shape(ctx, gamma, 1, &n, "layer norm gamma");
    if (status == SPK_OK) status = spk__check_shape(ctx, beta, 1, &n, "layer norm beta");
    if (status == SPK_OK) status = spk__check_shape(ctx, y, x->ndim, x->shape, "layer norm output");
    if (status != SPK_OK) return status;
    if ((x != y && spk__overlap(x, y)) || spk__overlap(y, gamma) || spk__overlap(y, beta))
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "layer norm output overlaps an input (in place needs y == x)");
    spk_tensor *stats = desc ? desc->stats : NULL;
    if (stats) {
        status = spk__check_stats(ctx, x, stats);
        if (status != SPK_OK) return status;
        if (spk__overlap(stats, x) || spk__overlap(stats, y) || spk__overlap(stats, gamma) || spk__overlap(stats, beta))
            return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "layer norm stats overlap another operand");
    }
    if (x->count == 0) return SPK_OK;
    if (!tuning) {
        spk__tune_problem problem = spk__layer_norm_problem(x, y, stats != NULL);
        uint32_t params[SPK__TUNE_PARAMS];
        if (!spk__tuned(ctx, &problem, params) || !spk__layer_norm_tuning_unpack(ctx, params, defaults))
            spk__layer_norm_tuning_defaults(ctx, defaults);
        tuning = defaults;
    }
    *args = (spk__layer_norm_args){tuning, x, gamma, beta, y, stats, epsilon, (uint64_t)(x->count / n), (uint64_t)n};
    return SPK_OK;
}

spk_status spk__record_layer_norm(spk_context *ctx, const spk__layer_norm_tuning *tuning, const spk_tensor *x,
                                  const spk_tensor *gamma, const spk_tensor *beta, const spk_layer_norm_desc *desc,
                                  spk_tensor *y) {
    spk__layer_norm_tuning defaults;
    spk__layer_norm_args args;
    spk_status status = spk__layer_norm_check(ctx, tuning, x, gamma, beta, desc, y, &defaults, &args);
    if (status == SPK_OK && args.tuning) status = spk__layer_norm_dispatch(ctx, &args);
    return status;
}

spk_status spk__layer_norm_tuned(spk_context *ctx, const spk__layer_norm_tuning *tuning, const spk_tensor *x,
                                 const spk_tensor *gamma, const spk_tensor *beta, const spk_layer_norm_desc *desc,
                                 spk_tensor *y) {
    spk__layer_norm_tuning defaults;
    spk__layer_norm_args args;
    spk_status status = spk__layer_norm_check(ctx, tuning, x, gamma, beta, desc, y, &defaults, &args);
    if (status == SPK_OK && args.tuning) status = spk__run_sync(ctx, spk__layer_norm_dispatch, &args);
    return status;
}

spk_status spk_record_layer_norm(spk_context *ctx, VkCommandBuffer cmd, const spk_tensor *x, const spk_tensor *gamma,
                                 const spk_tensor *beta, const spk_layer_norm_desc *desc, spk_tensor *y) {
    spk_status status = spk__record_app_begin(ctx, cmd);
    if (status != SPK_OK) return status;
    status = spk__record_layer_norm(ctx, NULL, x, gamma, beta, desc, y);
    spk__record_app_end(ctx);
    return status;
}

/* ---- backward ------------------------------------------------------------------------------ */

typedef struct spk__layer_norm_backward_args {
    const spk__layer_norm_tuning *tuning;
    const spk_tensor *x, *gamma, *stats, *dy;
    spk_layer_norm_grads grads;
    const spk__dropout_mask *drop; /* NULL: none */
    spk_tensor *masked;
} spk__layer_norm_backward_args;

static spk_status spk__layer_norm_backward_dispatch(spk_context *ctx, const void *arg) {
    const spk__layer_norm_backward_args *p = arg;
    const spk__layer_norm_tuning *t = p->tuning;
    const spk_layer_norm_grads *g = &p->grads;
    uint64_t n = (uint64_t)p->x->shape[p->x->ndim - 1], rows = n ? (uint64_t)p->x->count / n : 0;
    spk_status status = SPK_OK;
    if (g->dx && rows) {
        /* Rows as in the forward: an invocation, a subgroup or the workgroup each. */
        bool vec4 = n % 4 == 0 && p->x->ref.offset % 16 == 0 && p->dy->ref.offset % 16 == 0 &&
                    p->gamma->ref.offset % 16 == 0 && g->dx->ref.offset % 16 == 0 &&
                    (!p->drop || p->masked->ref.offset % 16 == 0);
        uint64_t len = vec4 ? n / 4 : n;
        uint32_t workgroup = t->workgroup, group = spk__layer_norm_group(ctx, t, len);
        bool subgroup = ctx->reduction == SPK_REDUCTION_SUBGROUP && group > 1;
        bool texel = t->texel && p->x->views[vec4] && p->gamma->views[vec4] && p->dy->views[vec4];
        uint32_t spec[3] = {workgroup, group, subgroup};
        struct {
            uint32_t n, rows, accumulate, drop;
            spk__dropout_push mask;
        } push = {(uint32_t)len, (uint32_t)rows, g->accumulate, p->drop != NULL, {0}};
        if (p->drop) push.mask = p->drop->push;
        /* Without a mask, its bindings repeat the stats (never read) and dx (never written twice). */
        spk__dispatch_desc d = {
            .bindings = {p->x->ref, p->gamma->ref, p->dy->ref, p->stats->ref, g->dx->ref,
                         p->drop ? p->drop->step : p->stats->ref, p->drop ? p->masked->ref : g->dx->ref},
            .views = {texel ? p->x->views[vec4] : VK_NULL_HANDLE, texel ? p->gamma->views[vec4] : VK_NULL_HANDLE,
                      texel ? p->dy->views[vec4] : VK_NULL_HANDLE},
            .written_mask = 0x50,
            .push = &push,
            .push_size = sizeof push,
        };
        uint64_t rows_per_wg = workgroup / group;
        status = spk__grid(ctx, (rows + rows_per_wg - 1) / rows_per_wg, d.groups);
        const spk__shader *shader = texel ? (vec4 ? &spk__shader_layer_norm_backward_texel_f4 : &spk__shader_layer_norm_backward_texel_f1)
                                          : (vec4 ? &spk__shader_layer_norm_backward_f4 : &spk__shader_layer_norm_backward_f1);
        if (status == SPK_OK)
            status = spk__pipeline_get(ctx, shader, spec, 3, subgroup ? SPK__PIPELINE_FULL_SUBGROUPS : 0, &d.pipeline);
        if (status == SPK_OK) status = spk__dispatch(ctx, &d);
    }
    /* dbeta = column sums of dy, dgamma = column sums of dy * xhat: one pass for both. */
    if (status == SPK_OK && (g->dgamma || g->dbeta))
        status = spk__record_column_sums(ctx, p->dy, p->x, p->stats, g->accumulate, g->dbeta, g->dgamma);
    return status;
}

/* The backward's tuned choice for dx's pass (tuning.h), else the forward's rule. */
static const spk__layer_norm_tuning *spk__layer_norm_backward_choice(spk_context *ctx, const spk_tensor *x,
                                                                     const spk_tensor *dy, spk__layer_norm_tuning *t) {
    uint64_t n = (uint64_t)x->shape[x->ndim - 1];
    spk__tune_problem problem = {SPK__TUNE_LAYER_NORM_BACKWARD, x->dtype | dy->dtype << 2, {(uint64_t)x->count / n, n}};
    uint32_t params[SPK__TUNE_PARAMS];
    if (!spk__tuned(ctx, &problem, params) || !spk__layer_norm_tuning_unpack(ctx, params, t))
        spk__layer_norm_tuning_defaults(ctx, t);
    return t;
}

spk_status spk__record_layer_norm_backward(spk_context *ctx, const spk__layer_norm_tuning *tuning, const spk_tensor *x,
                                           const spk_tensor *gamma, const spk_tensor *stats, const spk_tensor *dy,
                                           const spk_layer_norm_grads *grads, const spk__dropout_mask *drop,
                                           spk_tensor *masked) {
    spk__layer_norm_tuning defaults;
    if (!tuning && x->count) tuning = spk__layer_norm_backward_choice(ctx, x, dy, &defaults);
    spk__layer_norm_backward_args args = {tuning, x, gamma, stats, dy, *grads, drop, masked};
    return spk__layer_norm_backward_dispatch(ctx, &args);
}

spk_status spk__layer_norm_backward_tuned(spk_context *ctx, const spk__layer_norm_tuning *tuning, const spk_tensor *x,
                                          const spk_tensor *gamma, const spk_tensor *stats, const spk_tensor *dy,
                                          const spk_layer_norm_grads *grads) {
    if (!ctx) return SPK_ERROR_INVALID_ARGUMENT;
    spk_status s = spk__check_tensor(ctx, x, "layer norm input");
    if (s == SPK_OK) s = spk__check_tensor(ctx, gamma, "layer norm gamma");
    if (s == SPK_OK) s = spk__check_tensor(ctx, dy, "layer norm output gradient");
    if (s == SPK_OK) s = spk__check_shape(ctx, dy, x->ndim, x->shape, "layer norm output gradient");
    if (s == SPK_OK) s = spk__check_stats(ctx, x, stats);
    int64_t n = x ? x->shape[x->ndim - 1] : 0;
    if (s == SPK_OK) s = spk__check_shape(ctx, gamma, 1, &n, "layer norm gamma");
    spk_layer_norm_grads g = {0};
    if (grads) g = *grads;
    spk_tensor *outs[3] = {g.dx, g.dgamma, g.dbeta};
    static const char *names[3] = {"layer norm dx", "layer norm dgamma", "layer norm dbeta"};
    for (int i = 0; i < 3 && s == SPK_OK; i++) {
        if (!outs[i]) continue;
        s = spk__check_tensor(ctx, outs[i], names[i]);
        if (s == SPK_OK) s = i == 0 ? spk__check_shape(ctx, outs[i], x->ndim, x->shape, names[i])
                                    : spk__check_shape(ctx, outs[i], 1, &n, names[i]);
        const spk_tensor *ins[4] = {x, gamma, stats, dy};
        for (int j = 0; j < 4 && s == SPK_OK; j++)
            if (spk__overlap(outs[i], ins[j]) && !(i == 0 && j == 3 && outs[i] == dy))
                s = spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "%s overlaps an input", names[i]);
        for (int j = 0; j < i && s == SPK_OK; j++)
            if (outs[j] && spk__overlap(outs[i], outs[j]))
                s = spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "%s overlaps %s", names[i], names[j]);
    }
    if (s == SPK_OK && g.dx == dy && g.dx && g.accumulate)
        s = spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "layer norm dx may be dy only when overwriting");
    if (s != SPK_OK || x->count == 0) return s;
    spk__layer_norm_tuning defaults;
    if (!tuning) tuning = spk__layer_norm_backward_choice(ctx, x, dy, &defaults);
    spk__layer_norm_backward_args args = {tuning, x, gamma, stats, dy, g, NULL, NULL};
    return spk__run_sync(ctx, spk__layer_norm_backward_dispatch, &args);
}

spk_status spk_layer_norm_backward(spk_context *ctx, const spk_tensor *x, const spk_tensor *gamma,
                                   const spk_tensor *stats, const spk_tensor *dy, const spk_layer_norm_grads *grads) {
    return spk__layer_norm_backward_tuned(ctx, NULL, x, gamma, stats, dy, grads);
}
