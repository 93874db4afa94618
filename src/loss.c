/* Losses on the device (shaders/loss.comp): mse and cross-entropy with their gradient. */
#include "loss_plan.h"

bool spk__loss_workgroup_ok(const spk_context *ctx, uint32_t workgroup) {
    const VkPhysicalDeviceLimits *l = &ctx->caps.props.limits;
    return spk__is_pow2(workgroup) && workgroup <= l->maxComputeWorkGroupInvocations &&
           workgroup <= l->maxComputeWorkGroupSize[0];
}

spk_status spk__record_loss(spk_context *ctx, uint32_t workgroup, spk_loss_kind kind, const spk_tensor *y,
                            const spk_tensor *target, spk__buffer_ref row_loss, const spk_tensor *loss,
                            const spk_tensor *dy, uint64_t mean_over) {
    uint64_t n = (uint64_t)y->shape[y->ndim - 1], rows = n ? (uint64_t)y->count / n : 0;
    if (!workgroup) { /* an invocation per row, 64 per workgroup unless tuned */
        spk__tune_problem problem = {SPK__TUNE_LOSS, kind, {rows, n}};
        uint32_t params[SPK__TUNE_PARAMS];
        workgroup = spk__tuned(ctx, &problem, params) && spk__loss_workgroup_ok(ctx, params[0]) ? params[0] : 64;
    }
    uint64_t count = mean_over ? mean_over : kind == SPK_LOSS_MSE ? rows * n : rows;
    uint32_t push_rows[4] = {(uint32_t)rows, (uint32_t)n, 0, dy != NULL};
    float scale = count ? (float)(1.0 / (double)count) : 0.0f;
    memcpy(&push_rows[2], &scale, sizeof scale);
    /* Bindings the shader declares writable are tracked as written whatever the mode does (the
     * validation layer counts them so). Without dy, the loss in its place. */
    spk__dispatch_desc d = {
        .bindings = {y->ref, target->ref, dy ? dy->ref : loss->ref, row_loss, loss->ref},
        .written_mask = 0x1C,
        .push = push_rows,
        .push_size = sizeof push_rows,
    };
    uint32_t spec[2] = {workgroup, kind == SPK_LOSS_MSE ? 0u : 1u};
    spk_status status = spk__grid(ctx, (rows + workgroup - 1) / workgroup, d.groups);
    if (status == SPK_OK && rows) status = spk__pipeline_get(ctx, &spk__shader_loss, spec, 2, 0, &d.pipeline);
    if (status == SPK_OK && rows) status = spk__dispatch(ctx, &d);
    /* The mean of the rows' losses, added in order by one invocation (dy is not touched: the
     * loss takes its binding). */
    spec[0] = 64, spec[1] = 2;
    d.bindings[2] = loss->ref;
    d.groups[0] = d.groups[1] = d.groups[2] = 1;
    if (status == SPK_OK) status = spk__pipeline_get(ctx, &spk__shader_loss, spec, 2, 0, &d.pipeline);
    if (status == SPK_OK) status = spk__dispatch(ctx, &d);
    return status;
}

spk_status spk__check_loss(spk_context *ctx, spk_loss_kind kind, const spk_tensor *y, const spk_tensor *target) {
    if ((unsigned)kind > SPK_LOSS_CROSS_ENTROPY)
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "unknown loss %d", (int)kind);
    spk_status s = spk__check_tensor(ctx, y, "loss input");
    if (s == SPK_OK) s = spk__check_tensor(ctx, target, "loss target");
    if (s != SPK_OK) return s;
    if (kind == SPK_LOSS_MSE) return spk__check_shape(ctx, target, y->ndim, y->shape, "mse target");
    if (y->ndim < 2) return spk__fail(ctx, SPK_ERROR_SHAPE, "cross-entropy needs logits of rank >= 2 ([..., classes])");
    return spk__check_shape(ctx, target, y->ndim - 1, y->shape, "cross-entropy target");
}

typedef struct spk__loss_args {
    spk_loss_kind kind;
    const spk_tensor *y, *target, *loss, *dy;
    spk__buffer_ref row_loss;
} spk__loss_args;

static spk_status spk__loss_dispatch(spk_context *ctx, const void *arg) {
    const spk__loss_args *a = arg;
    return spk__record_loss(ctx, 0, a->kind, a->y, a->target, a->row_loss, a->loss, a->dy, 0);
}

spk_status spk_loss(spk_context *ctx, spk_loss_kind kind, const spk_tensor *y, const spk_tensor *target, spk_tensor *loss,
                    spk_tensor *dy) {
    if (!ctx) return SPK_ERROR_INVALID_ARGUMENT;
    spk_status s = spk__check_loss(ctx, kind, y, target);
    int64_t one = 1;
    if (s == SPK_OK) s = spk__check_tensor(ctx, loss, "loss");
    if (s == SPK_OK) s = spk__check_shape(ctx, loss, 1, &one, "loss");
    if (s == SPK_OK && dy) s = spk__check_tensor(ctx, dy, "loss gradient");
    if (s == SPK_OK && dy) s = spk__check_shape(ctx, dy, y->ndim, y->shape, "loss gradient");
    if (s != SPK_OK) return s;
    const spk_tensor *ins[2] = {y, target};
    for (int i = 0; i < 2; i++)
        if (spk__overlap(loss, ins[i]) || (dy && spk__overlap(dy, ins[i])) || (dy && spk__overlap(dy, loss)))
            return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "loss outputs overlap the inputs or each other");
    uint64_t n = (uint64_t)y->shape[y->ndim - 1];
    if (n == 0 && kind == SPK_LOSS_CROSS_ENTROPY && y->count == 0 && target->count > 0)
        return spk__fail(ctx, SPK_ERROR_SHAPE, "cross-entropy over zero classes");
    spk_tensor *rows = NULL; /* each row's loss, then summed in order */
    int64_t row_count = n ? y->count / (int64_t)n : 1;
    s = spk_tensor_create(ctx, 1, &row_count, &rows);
    if (s != SPK_OK) return s;
    spk__loss_args args = {kind, y, target, loss, dy, rows->ref};
    s = spk__run_sync(ctx, spk__loss_dispatch, &args);
    spk_tensor_destroy(rows);
    return s;
}
