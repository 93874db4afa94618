/* The softpick op: y = x / (1 + sum |x|) along one axis, and the other normalizers
 * (shaders/normalizer.glsl: rectified softpick, softmax) through the same kernels, after a pass
 * that finds each row's or column's maximum.
 *
 * The tensor is viewed as [outer, n, inner] around the axis. A contiguous axis (inner == 1) is a
 * set of rows, reduced by groups of invocations with a tree (softpick_rows.comp); a strided axis
 * is a set of columns, each owned by one invocation so that neighbours read neighbouring
 * addresses (softpick_cols.comp). Either splits long rows or columns into segments with a partial
 * sum pass when there would otherwise be too few workgroups to fill the device. */
#include "internal.h"

#include <string.h>

#include "softpick_plan.h"

void spk__softpick_plan_defaults(const spk_context *ctx, spk__softpick_tuning *t) {
    const spk__device_caps *caps = &ctx->caps;
    memset(t, 0, sizeof *t);
    uint32_t max_wg = caps->props.limits.maxComputeWorkGroupInvocations;
    if (max_wg > caps->props.limits.maxComputeWorkGroupSize[0]) max_wg = caps->props.limits.maxComputeWorkGroupSize[0];
    /* A multiple of the largest subgroup so the subgroup path always sees full subgroups. */
    uint32_t wg = caps->max_subgroup_size > 64 ? caps->max_subgroup_size : 64;
    t->workgroup = wg < max_wg ? wg : max_wg;
    /* Measured on lavapipe (softpick bench --variants 1): a CPU driver runs a workgroup per core
     * at a time, 8 lanes wide, and pays per load and per barrier, so it wants few invocations,
     * rows handled by one invocation or one subgroup, and loads kept in registers. GPUs want
     * many invocations, rows spread over a subgroup or a workgroup, and coalesced loads. */
    bool cpu = caps->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    t->target_invocations = cpu ? 4096 : 65536;
    t->min_row_segment = cpu ? 4096 : 1024;
    t->min_column_segment = cpu ? 512 : 64;
    t->short_row = cpu ? 32 : 4;
    t->subgroup_row_max = cpu ? UINT32_MAX : 1024;
    /* At most 16 loads kept: rows of 1024 floats ran as fast read twice as with 32 kept (36.4 and
     * 37.2 ms at [16384, 1024]), and 32 cost Mesa 25 four times the compile (every storage load
     * and store unrolls into a bounds-checked block per lane and component). */
    t->cache_max = cpu ? 16 : 8;
    t->interleave_columns = !cpu;
    t->texel = cpu && caps->texel_buffers;
}

spk__tune_problem spk__softpick_problem(const spk_tensor *x, const spk_tensor *y, int axis, bool backward) {
    int a = axis < 0 ? axis + x->ndim : axis;
    uint64_t outer = 1, inner = 1;
    for (int i = 0; i < a; i++) outer *= (uint64_t)x->shape[i];
    for (int i = a + 1; i < x->ndim; i++) inner *= (uint64_t)x->shape[i];
    bool s16 = x->dtype != SPK_DTYPE_F32 || y->dtype != SPK_DTYPE_F32;
    return (spk__tune_problem){SPK__TUNE_SOFTPICK, backward | (inner > 1) << 1 | s16 << 2,
                               {outer, (uint64_t)x->shape[a], inner}};
}

void spk__softpick_tuning_pack(const spk__softpick_tuning *t, bool strided, uint32_t p[SPK__TUNE_PARAMS]) {
    uint32_t q[SPK__TUNE_PARAMS] = {t->workgroup, t->short_row, t->subgroup_row_max, t->cache_max, t->texel,
                                    strided ? 1u + t->interleave_columns : 0u,
                                    (uint32_t)(t->target_invocations < UINT32_MAX ? t->target_invocations : UINT32_MAX),
                                    strided ? t->min_column_segment : t->min_row_segment};
    memcpy(p, q, sizeof q);
}

bool spk__softpick_tuning_unpack(const spk_context *ctx, const uint32_t p[SPK__TUNE_PARAMS], bool strided,
                                 spk__softpick_tuning *t) {
    const spk__device_caps *caps = &ctx->caps;
    const VkPhysicalDeviceLimits *l = &caps->props.limits;
    *t = (spk__softpick_tuning){.workgroup = p[0], .short_row = p[1], .subgroup_row_max = p[2], .cache_max = p[3],
                                .texel = p[4] == 1 && caps->texel_buffers, .interleave_columns = p[5] == 2,
                                .target_invocations = p[6], .min_row_segment = p[7], .min_column_segment = p[7]};
    return spk__is_pow2(t->workgroup) && t->workgroup % caps->max_subgroup_size == 0 &&
           t->workgroup <= l->maxComputeWorkGroupInvocations && t->workgroup <= l->maxComputeWorkGroupSize[0] &&
           t->cache_max <= 32 && p[4] <= 1 && (strided ? p[5] == 1 || p[5] == 2 : p[5] == 0) && p[6] && p[7];
}

/* Segments for `busy` invocations over `len` loads each, so that about `target` run. */
static uint64_t spk__segments(uint64_t busy, uint64_t len, uint64_t target, uint64_t min_segment) {
    if (busy >= target || len < 2 * min_segment) return 1;
    uint64_t segments = (target + busy - 1) / busy;
    return segments < len / min_segment ? segments : len / min_segment;
}

/* Chooses the kernel, group shape, segmentation and caching for one softpick. */
void spk__softpick_plan(const spk_context *ctx, const spk__softpick_tuning *t, uint64_t outer, uint64_t n,
                        uint64_t inner, bool aligned16, spk__softpick_plan_t *plan) {
    memset(plan, 0, sizeof *plan);
    plan->workgroup = t->workgroup;
    const spk__device_caps *caps = &ctx->caps;
    if (inner == 1) {
        plan->vec = (n % 4 == 0 && aligned16) ? 4 : 1;
        plan->len = n / plan->vec;
        uint32_t fixed_sg = caps->min_subgroup_size == caps->max_subgroup_size ? caps->max_subgroup_size : 0;
        if (t->force_group) plan->group = t->force_group;
        else if (plan->len <= t->short_row) plan->group = 1;
        else if (fixed_sg && plan->len <= t->subgroup_row_max) plan->group = fixed_sg;
        else plan->group = plan->workgroup;
        /* The subgroup reduction needs whole subgroups per group. */
        bool subgroup = ctx->reduction == SPK_REDUCTION_SUBGROUP;
        if (subgroup && plan->group > 1 && plan->group != plan->workgroup && plan->group != fixed_sg)
            plan->group = plan->workgroup;
        plan->use_subgroup = subgroup && plan->group > 1;
        plan->segments = (uint32_t)spk__segments(outer * plan->group, plan->len, t->target_invocations,
                                                 t->min_row_segment);
        plan->seg_len = (uint32_t)((plan->len + plan->segments - 1) / plan->segments);
        uint64_t per_invocation = (plan->len + plan->group - 1) / plan->group;
        if (plan->segments == 1 && per_invocation <= t->cache_max)
            plan->cache = spk__pow2_at_least(per_invocation);
        plan->items = outer * plan->segments;
        uint64_t per_wg = plan->workgroup / plan->group;
        plan->workgroups = (plan->items + per_wg - 1) / per_wg;
        plan->partials = plan->segments > 1 ? plan->items : 0;
    } else {
        plan->strided = true;
        plan->fold = 1;
        if (inner % 4 == 0 && aligned16) {
            plan->vec = 4;
            plan->columns = inner / 4;
            plan->len = n;
        } else if (inner == 2 && n % 2 == 0 && aligned16) {
            plan->vec = 4;
            plan->fold = 2;
            plan->columns = 1;
            plan->len = n / 2;
        } else {
            plan->vec = 1;
            plan->columns = inner;
            plan->len = n;
        }
        plan->segments = (uint32_t)spk__segments(outer * plan->columns, plan->len, t->target_invocations,
                                                 t->min_column_segment);
        plan->seg_len = (uint32_t)((plan->len + plan->segments - 1) / plan->segments);
        plan->items = outer * plan->columns * plan->segments;
        plan->workgroups = (plan->items + plan->workgroup - 1) / plan->workgroup;
        plan->partials = plan->segments > 1 ? plan->items * plan->vec : 0;
    }
}

/* The shaders by [backward][strided][texel][vec4]. */
/* By kind (forward, backward, forward with 16-bit storage), rows / columns, texel, vec4. */
static const spk__shader *const spk__softpick_shaders[3][2][2][2] = {
    {{{&spk__shader_softpick_rows_f1, &spk__shader_softpick_rows_f4},
      {&spk__shader_softpick_rows_texel_f1, &spk__shader_softpick_rows_texel_f4}},
     {{&spk__shader_softpick_cols_f1, &spk__shader_softpick_cols_f4},
      {&spk__shader_softpick_cols_texel_f1, &spk__shader_softpick_cols_texel_f4}}},
    {{{&spk__shader_softpick_rows_backward_f1, &spk__shader_softpick_rows_backward_f4},
      {&spk__shader_softpick_rows_backward_texel_f1, &spk__shader_softpick_rows_backward_texel_f4}},
     {{&spk__shader_softpick_cols_backward_f1, &spk__shader_softpick_cols_backward_f4},
      {&spk__shader_softpick_cols_backward_texel_f1, &spk__shader_softpick_cols_backward_texel_f4}}},
    {{{&spk__shader_softpick_rows_s16_f1, &spk__shader_softpick_rows_s16_f4},
      {&spk__shader_softpick_rows_texel_s16_f1, &spk__shader_softpick_rows_texel_s16_f4}},
     {{&spk__shader_softpick_cols_s16_f1, &spk__shader_softpick_cols_s16_f4},
      {&spk__shader_softpick_cols_texel_s16_f1, &spk__shader_softpick_cols_texel_s16_f4}}},
};

/* The forward (dy NULL: y = softpick(x)) or the backward (y = dx from x and dy): the same plan,
 * passes and reductions, the backward with two sums (|x| and dy x) where the forward has one;
 * the exponential normalizers with a maxima pass first. */
static spk_status spk__record_softpick_pass(spk_context *ctx, const spk__softpick_tuning *tuning, const spk_tensor *x,
                                            const spk_tensor *dy, int axis, spk_normalizer norm, spk_tensor *y) {
    int a = axis < 0 ? axis + x->ndim : axis;
    uint64_t outer = 1, n = (uint64_t)x->shape[a], inner = 1;
    for (int i = 0; i < a; i++) outer *= (uint64_t)x->shape[i];
    for (int i = a + 1; i < x->ndim; i++) inner *= (uint64_t)x->shape[i];
    if (x->count == 0) return SPK_OK;

    spk__softpick_tuning defaults;
    if (!tuning) {
        spk__tune_problem problem = spk__softpick_problem(x, y, axis, dy != NULL);
        uint32_t params[SPK__TUNE_PARAMS];
        if (!spk__tuned(ctx, &problem, params) || !spk__softpick_tuning_unpack(ctx, params, inner > 1, &defaults))
            spk__softpick_plan_defaults(ctx, &defaults);
        tuning = &defaults;
    }
    spk__softpick_plan_t plan;
    bool backward = dy != NULL;
    spk__softpick_plan(ctx, tuning, outer, n, inner,
                       x->ref.offset % 16 == 0 && y->ref.offset % 16 == 0 && (!dy || dy->ref.offset % 16 == 0), &plan);

    /* Scratch: the partial sums, then (exponential normalizers) each row's or column's maximum. */
    uint64_t partial_floats = plan.partials * (backward ? 2 : 1);
    uint64_t max_floats = norm ? (plan.strided ? outer * plan.columns * plan.vec : outer) : 0;
    VkDeviceSize partial_bytes = partial_floats + max_floats ? (partial_floats + max_floats) * sizeof(float) : 16;
    /* Synchronous runs share the context's scratch; a recording in an application's command
     * buffer gets its own, kept with the output tensor, because it may be replayed later. */
    spk__allocation *scratch = &ctx->scratch;
    spk_status status = SPK_OK;
    if (ctx->rec->external) {
        scratch = y->scratch_count ? &y->scratch[y->scratch_count - 1] : NULL;
        if (!scratch || scratch->size < partial_bytes) {
            if (!spk__grow((void **)&y->scratch, &y->scratch_capacity, y->scratch_count + 1, sizeof *y->scratch))
                return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
            scratch = &y->scratch[y->scratch_count];
            status = spk__allocate(ctx, SPK__MEMORY_TENSOR, partial_bytes, scratch);
            if (status == SPK_OK) y->scratch_count++;
        }
    } else {
        status = spk__reserve(ctx, SPK__MEMORY_TENSOR, partial_bytes, scratch);
    }
    uint32_t groups[3], column_groups[3] = {1, 1, 1};
    if (status == SPK_OK) status = spk__grid(ctx, plan.workgroups, groups);
    if (status == SPK_OK && plan.strided)
        status = spk__grid(ctx, (outer * plan.columns + plan.workgroup - 1) / plan.workgroup, column_groups);
    if (status != SPK_OK) return status;

    /* Passes: mode 0 alone (fused) or, with segments, 1 (partial sums) then 2 (scale). Rows use
     * mode 3 for fused with the loads kept in registers; columns add their partials per column
     * in mode 3 between 1 and 2, so the scaling pass reads one total instead of all partials. */
    uint32_t modes[4] = {plan.cache ? 3 : 0}, mode_count = 1;
    if (plan.segments > 1 && !plan.strided) {
        modes[0] = 1, modes[1] = 2, mode_count = 2;
    } else if (plan.segments > 1) {
        modes[0] = 1, modes[1] = 3, modes[2] = 2, mode_count = 3;
    }
    if (norm) { /* mode 4 first: the maxima */
        memmove(modes + 1, modes, mode_count * sizeof *modes);
        modes[0] = 4, mode_count++;
    }
    uint32_t push[8] = {0}, spec[8], spec_count, mode_index, flags = 0;
    bool vec4 = plan.vec == 4, texel = tuning->texel && x->views[vec4] && (!dy || dy->views[vec4]);
    /* F16 x or y (forward only): the variants with 16-bit storage (shaders/softpick_io.glsl). */
    bool s16 = x->dtype != SPK_DTYPE_F32 || y->dtype != SPK_DTYPE_F32;
    const spk__shader *shader = spk__softpick_shaders[backward ? 1 : s16 ? 2 : 0][plan.strided][texel][vec4];
    if (!plan.strided) {
        push[0] = (uint32_t)plan.len;
        push[1] = (uint32_t)outer;
        push[2] = plan.segments;
        push[3] = plan.seg_len;
        push[4] = (uint32_t)partial_floats; /* the maxima, in floats */
        spec[0] = plan.workgroup;
        spec[1] = plan.group;
        spec[2] = plan.use_subgroup;
        mode_index = 3;
        spec[4] = plan.cache ? plan.cache : 1;
        spec[5] = x->dtype, spec[6] = y->dtype, spec[7] = norm;
        spec_count = 8;
        if (plan.use_subgroup) flags |= SPK__PIPELINE_FULL_SUBGROUPS;
    } else {
        push[0] = (uint32_t)outer;
        push[1] = (uint32_t)plan.len;
        push[2] = (uint32_t)plan.columns;
        push[3] = plan.segments;
        push[4] = plan.seg_len;
        push[5] = tuning->interleave_columns ? 1 : plan.seg_len;
        push[6] = tuning->interleave_columns ? plan.segments : 1;
        push[7] = (uint32_t)(partial_floats / plan.vec); /* the maxima, in loads */
        spec[0] = plan.workgroup;
        mode_index = 1;
        spec[2] = plan.fold;
        spec[3] = x->dtype, spec[4] = y->dtype, spec[5] = norm;
        spec_count = 6;
    }

    spk__buffer_ref partials = {scratch->block->buffer, scratch->offset, partial_bytes};
    spk__dispatch_desc d = {
        .bindings = {x->ref, y->ref, partials},
        .views = {texel ? x->views[vec4] : VK_NULL_HANDLE},
        .push = push,
        .push_size = sizeof push,
    };
    if (backward) { /* x, dy, dx, partials */
        d.bindings[1] = dy->ref, d.bindings[2] = y->ref, d.bindings[3] = partials;
        d.views[1] = texel ? dy->views[vec4] : VK_NULL_HANDLE;
    }
    uint32_t y_bit = backward ? 0x4 : 0x2, partial_bit = y_bit << 1;
    for (uint32_t m = 0; m < mode_count && status == SPK_OK; m++) {
        spec[mode_index] = modes[m];
        status = spk__pipeline_get(ctx, shader, spec, spec_count, flags, &d.pipeline);
        /* The partials binding is declared writable in every mode, so it is tracked as written. */
        d.written_mask = modes[m] == 1 || modes[m] == 4 || (plan.strided && modes[m] == 3) ? partial_bit : partial_bit | y_bit;
        const uint32_t *g = plan.strided && modes[m] == 3 ? column_groups : groups;
        memcpy(d.groups, g, sizeof d.groups);
        if (status == SPK_OK) status = spk__dispatch(ctx, &d);
    }
    return status;
}

spk_status spk__record_normalize(spk_context *ctx, const spk__softpick_tuning *tuning, const spk_tensor *x, int axis,
                                 spk_normalizer norm, spk_tensor *y) {
    return spk__record_softpick_pass(ctx, tuning, x, NULL, axis, norm, y);
}

spk_status spk__record_softpick(spk_context *ctx, const spk__softpick_tuning *tuning, const spk_tensor *x, int axis,
                                spk_tensor *y) {
    return spk__record_softpick_pass(ctx, tuning, x, NULL, axis, SPK_NORMALIZER_SOFTPICK, y);
}

spk_status spk__record_softpick_backward(spk_context *ctx, const spk__softpick_tuning *tuning, const spk_tensor *x,
                                         const spk_tensor *dy, int axis, spk_tensor *dx) {
    return spk__record_softpick_pass(ctx, tuning, x, dy, axis, SPK_NORMALIZER_SOFTPICK, dx);
}

spk_status spk_softpick(spk_context *ctx, const spk_tensor *x, int axis, spk_tensor *y) {
    return spk__normalize_tuned(ctx, NULL, x, axis, SPK_NORMALIZER_SOFTPICK, y);
}

spk_status spk_normalize(spk_context *ctx, const spk_tensor *x, int axis, spk_normalizer normalizer, spk_tensor *y) {
    return spk__normalize_tuned(ctx, NULL, x, axis, normalizer, y);
}

/* Checks softpick's operands; *empty when there is nothing to do. */
static spk_status spk__softpick_check(spk_context *ctx, const spk_tensor *x, int axis, spk_normalizer norm,
                                      const spk_tensor *y, bool *empty) {
    *empty = true;
    if (!ctx) return SPK_ERROR_INVALID_ARGUMENT;
    spk_status status = spk__check_normalizer(ctx, norm);
    if (status == SPK_OK) status = spk__check_activation(ctx, x, "softpick", "softpick input");
    if (status == SPK_OK) status = spk__check_activation(ctx, y, "softpick", "softpick output");
    if (status != SPK_OK) return status;
    if (axis < -x->ndim || axis >= x->ndim)
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "axis %d is out of range for a rank-%d tensor", axis,
                         x->ndim);
    if (x->ndim != y->ndim || memcmp(x->shape, y->shape, (size_t)x->ndim * sizeof *x->shape) != 0)
        return spk__fail(ctx, SPK_ERROR_SHAPE, "softpick output shape differs from the input shape");
    if (x != y && spk__overlap(x, y) && x->ref.offset != y->ref.offset)
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "softpick input and output partially overlap");
    *empty = x->count == 0;
    return SPK_OK;
}

spk_status spk__normalize_tuned(spk_context *ctx, const spk__softpick_tuning *tuning, const spk_tensor *x, int axis,
                                spk_normalizer norm, spk_tensor *y) {
    bool empty;
    spk_status status = spk__softpick_check(ctx, x, axis, norm, y, &empty);
    if (status != SPK_OK || empty) return status;
    pthread_mutex_lock(&ctx->lock);
    status = spk__begin(ctx);
    if (status == SPK_OK) status = spk__record_normalize(ctx, tuning, x, axis, norm, y);
    if (status == SPK_OK) status = spk__submit_and_wait(ctx);
    pthread_mutex_unlock(&ctx->lock);
    return status;
}

spk_status spk__softpick_tuned(spk_context *ctx, const spk__softpick_tuning *tuning, const spk_tensor *x, int axis,
                               spk_tensor *y) {
    return spk__normalize_tuned(ctx, tuning, x, axis, SPK_NORMALIZER_SOFTPICK, y);
}

spk_status spk_record_normalize(spk_context *ctx, VkCommandBuffer cmd, const spk_tensor *x, int axis,
                                spk_normalizer normalizer, spk_tensor *y) {
    bool empty;
    spk_status status = spk__softpick_check(ctx, x, axis, normalizer, y, &empty);
    if (status != SPK_OK || empty) return status;
    status = spk__record_app_begin(ctx, cmd);
    if (status != SPK_OK) return status;
    status = spk__record_normalize(ctx, NULL, x, axis, normalizer, y);
    spk__record_app_end(ctx);
    return status;
}

spk_status spk_record_softpick(spk_context *ctx, VkCommandBuffer cmd, const spk_tensor *x, int axis, spk_tensor *y) {
    return spk_record_normalize(ctx, cmd, x, axis, SPK_NORMALIZER_SOFTPICK, y);
}

spk_status spk__normalize_backward_tuned(spk_context *ctx, const spk__softpick_tuning *tuning, const spk_tensor *x,
                                         const spk_tensor *dy, int axis, spk_normalizer norm, spk_tensor *dx) {
    bool empty;
    spk_status status = spk__softpick_check(ctx, x, axis, norm, dx, &empty);
    if (status == SPK_OK) status = spk__check_tensor(ctx, dy, "softpick output gradient");
    if (status == SPK_OK) status = spk__check_shape(ctx, dy, x->ndim, x->shape, "softpick output gradient");
    /* dx is written after each row's sums are complete only within one pass; a split row's last
     * pass would read x or dy already overwritten, so dx must be separate from both. */
    if (status == SPK_OK && (spk__overlap(dx, x) || spk__overlap(dx, dy)))
        status = spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "softpick backward dx overlaps x or dy");
    if (status != SPK_OK || empty) return status;
    pthread_mutex_lock(&ctx->lock);
    status = spk__begin(ctx);
    if (status == SPK_OK) status = spk__record_softpick_pass(ctx, tuning, x, dy, axis, norm, dx);
    if (status == SPK_OK) status = spk__submit_and_wait(ctx);
    pthread_mutex_unlock(&ctx->lock);
    return status;
}

spk_status spk__softpick_backward_tuned(spk_context *ctx, const spk__softpick_tuning *tuning, const spk_tensor *x,
                                        const spk_tensor *dy, int axis, spk_tensor *dx) {
    return spk__normalize_backward_tuned(ctx, tuning, x, dy, axis, SPK_NORMALIZER_SOFTPICK, dx);
}

spk_status spk_softpick_backward(spk_context *ctx, const spk_tensor *x, const spk_tensor *dy, int axis,
                                 spk_tensor *dx) {
    return spk__softpick_backward_tuned(ctx, NULL, x, dy, axis, dx);
}

spk_status spk_normalize_backward(spk_context *ctx, const spk_tensor *x, const spk_tensor *dy, int axis,
                                  spk_normalizer normalizer, spk_tensor *dx) {
    return spk__normalize_backward_tuned(ctx, NULL, x, dy, axis, normalizer, dx);
}
