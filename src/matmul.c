/* Matmul with a fused epilogue (shaders/matmul.comp), and the elementwise GELU and erf
 * (shaders/unary.comp) that share its erf. */
#include "internal.h"

#include <string.h>

#include "matmul_plan.h"

void spk__matmul_tuning_tiles(const spk_context *ctx, spk__matmul_tuning *t) {
    /* 64 x 64 tiles of C, 4 x 4 per invocation, 16-deep slices in shared memory; smaller where
     * the device's limits require (Vulkan guarantees only 128 invocations and 16 KiB). */
    const VkPhysicalDeviceLimits *l = &ctx->caps.props.limits;
    uint32_t max_inv = l->maxComputeWorkGroupInvocations;
    *t = (spk__matmul_tuning){.wg_x = 16, .wg_y = 16, .tm = 4, .tn = 4, .bk = 16, .shared = true};
    while (t->wg_x * t->wg_y > max_inv || t->wg_y > l->maxComputeWorkGroupSize[1]) t->wg_y /= 2;
    while (t->bk > 1 && t->bk * (t->wg_y * t->tm + t->wg_x * t->tn) * sizeof(float) > l->maxComputeSharedMemorySize)
        t->bk /= 2;
}

void spk__matmul_tuning_shuffle(const spk_context *ctx, bool texel, spk__matmul_tuning *t) {
    /* Rows per subgroup block by subgroup size, measured on lavapipe at 1920 x 1024 x 256 (softpick
     * bench matmul --variants 1, x FMA peak): subgroups of 4 want 32 rows (0.38 against 0.27 for
     * 8), of 8 want 16 (0.60-0.85 against 0.52-0.58 for 32), of 16 want 32 (0.74). Wider
     * subgroups (no CPU driver has them) take one row set: already SG rows. */
    uint32_t sg = ctx->caps.max_subgroup_size;
    uint32_t row_sets = sg <= 4 ? 8 : sg <= 16 ? 2 : 1;
    *t = (spk__matmul_tuning){.wg_x = sg, .tn = 1, .shuffle = true, .row_sets = row_sets,
                              .texel = texel && ctx->caps.texel_buffers};
}

void spk__matmul_tuning_defaults(const spk_context *ctx, spk__matmul_tuning *t) {
    /* Measured with softpick bench matmul --variants 1 on lavapipe: shared-memory tiles 0.6
     * GFLOP/s, register blocks read directly 1.0-1.4, the shuffle kernel through storage buffers
     * 7-9, through texel views 20-50 (blocks of 8-64 rows by 32-64 columns). 16 rows by 32
     * columns was the best or within noise of it at 2048^3 and every 1920-row model shape (x FMA
     * peak 0.60-0.85, against 0.52-0.58 for 32 x 32); larger blocks spill their accumulators.
     * GPUs get the classic shared-memory tiles. */
    const spk__device_caps *caps = &ctx->caps;
    if (caps->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU && caps->subgroup_shuffle &&
        caps->min_subgroup_size == caps->max_subgroup_size)
        spk__matmul_tuning_shuffle(ctx, caps->texel_buffers, t);
    else if (caps->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU)
        *t = (spk__matmul_tuning){.wg_x = 8, .wg_y = 8, .tm = 4, .tn = 4, .bk = 16, .shared = false};
    else
        spk__matmul_tuning_tiles(ctx, t);
}

typedef struct spk__matmul_args {
    const spk__matmul_tuning *tuning;
    const spk_tensor *a, *b, *bias, *residual;
    spk_tensor *c;
    spk_activation activation;
    uint64_t batch, m, n, k;
    bool shared_b;
} spk__matmul_args;

static spk_status spk__matmul_dispatch(spk_context *ctx, const void *arg) {
    const spk__matmul_args *p = arg;
    const spk__matmul_tuning *t = p->tuning;
    uint32_t epilogue = (p->bias ? 1u : 0u) | (p->activation == SPK_ACTIVATION_GELU ? 2u : 0u) |
                        (p->residual ? 4u : 0u);
    const spk__pipeline *pipeline;
    spk_status status;
    uint32_t bm, bn; /* rows and columns of C per workgroup */
    VkBufferView views[2] = {VK_NULL_HANDLE, VK_NULL_HANDLE};
    if (t->shuffle) {
        /* vec4 indexing (and vec4 texel views) where rows of A and of B are whole vec4s. */
        bool vec_a = p->k % 4 == 0, vec_b = p->n % 4 == 0;
        views[0] = p->a->views[vec_a];
        views[1] = p->b->views[vec_b];
        /* Without views (a wrapped buffer, or one past the texel limits), storage buffers. */
        bool texel = t->texel && views[0] && views[1];
        uint32_t sg = ctx->caps.max_subgroup_size;
        bm = t->wg_x / sg * sg * t->row_sets;
        bn = sg * t->tn * 4;
        uint32_t spec[6] = {t->wg_x, sg, t->row_sets, t->tn, vec_a ? 4 : 1, vec_b ? 4 : 1};
        status = spk__pipeline_get(ctx, texel ? &spk__shader_matmul_shuffle_texel : &spk__shader_matmul_shuffle, spec,
                                   6, SPK__PIPELINE_FULL_SUBGROUPS, &pipeline);
    } else {
        bm = t->wg_y * t->tm;
        bn = t->wg_x * t->tn;
        uint32_t spec[8] = {t->wg_x, t->wg_y, t->tm, t->tn, t->bk, t->shared,
                            t->shared ? t->bk * bm : 1, t->shared ? t->bk * bn : 1};
        status = spk__pipeline_get(ctx, &spk__shader_matmul, spec, 8, 0, &pipeline);
    }
    if (status != SPK_OK) return status;

    const uint32_t *max = ctx->caps.props.limits.maxComputeWorkGroupCount;
    uint64_t tiles_m = (p->m + bm - 1) / bm, tiles_n = (p->n + bn - 1) / bn;
    if (tiles_n > max[0] || p->batch > max[2])
        return spk__fail(ctx, SPK_ERROR_TOO_LARGE,
                         "matmul needs %llu x %llu column tiles and batches; the device allows %u x %u",
                         (unsigned long long)tiles_n, (unsigned long long)p->batch, max[0], max[2]);
    spk__dispatch_desc d = {
        .pipeline = pipeline,
        /* Absent bias and residual bind A in their place: declared but never read. */
        .bindings = {p->a->ref, p->b->ref, p->c->ref, p->bias ? p->bias->ref : p->a->ref,
                     p->residual ? p->residual->ref : p->a->ref},
        .views = {views[0], views[1]},
        .written_mask = 0x4,
    };
    uint32_t push[8] = {(uint32_t)p->m, (uint32_t)p->n, (uint32_t)p->k, (uint32_t)(p->m * p->k),
                        p->shared_b ? 0 : (uint32_t)(p->k * p->n), (uint32_t)(p->m * p->n), 0, epilogue};
    d.push = push;
    d.push_size = sizeof push;
    /* Row tiles beyond one dispatch's grid go to further dispatches. */
    for (uint64_t m0 = 0; m0 < tiles_m && status == SPK_OK; m0 += max[1]) {
        push[6] = (uint32_t)m0;
        uint64_t rows = tiles_m - m0 < max[1] ? tiles_m - m0 : max[1];
        d.groups[0] = (uint32_t)tiles_n;
        d.groups[1] = (uint32_t)rows;
        d.groups[2] = (uint32_t)p->batch;
        status = spk__dispatch(ctx, &d);
    }
    return status;
}

/* Checks the operands and plans the dispatch; args->tuning is NULL when there is nothing to do. */
static spk_status spk__matmul_check(spk_context *ctx, const spk__matmul_tuning *tuning, const spk_tensor *a,
                                    const spk_tensor *b, const spk_matmul_desc *desc, spk_tensor *c,
                                    spk__matmul_tuning *defaults, spk__matmul_args *args) {
    *args = (spk__matmul_args){0};
    if (!ctx) return SPK_ERROR_INVALID_ARGUMENT;
    spk_matmul_desc opts = {0};
    if (desc) opts = *desc;
    spk_status status = spk__check_tensor(ctx, a, "matmul A");
    if (status == SPK_OK) status = spk__check_tensor(ctx, b, "matmul B");
    if (status == SPK_OK) status = spk__check_tensor(ctx, c, "matmul C");
    if (status == SPK_OK && opts.bias) status = spk__check_tensor(ctx, opts.bias, "matmul bias");
    if (status == SPK_OK && opts.residual) status = spk__check_tensor(ctx, opts.residual, "matmul residual");
    if (status != SPK_OK) return status;
    if ((unsigned)opts.activation > SPK_ACTIVATION_GELU)
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "unknown activation %d", (int)opts.activation);
    if (a->ndim < 2) return spk__fail(ctx, SPK_ERROR_SHAPE, "matmul A must have rank >= 2 ([..., M, K])");
    bool shared_b = b->ndim == 2;
    if (!shared_b && (b->ndim != a->ndim || memcmp(a->shape, b->shape, (size_t)(a->ndim - 2) * sizeof *a->shape)))
        return spk__fail(ctx, SPK_ERROR_SHAPE, "matmul B must be [K, N] or have A's batch dimensions");
    uint64_t m = (uint64_t)a->shape[a->ndim - 2], k = (uint64_t)a->shape[a->ndim - 1];
    if ((uint64_t)b->shape[b->ndim - 2] != k)
        return spk__fail(ctx, SPK_ERROR_SHAPE, "matmul inner dimensions differ: A has K = %llu, B has %lld",
                         (unsigned long long)k, (long long)b->shape[b->ndim - 2]);
    uint64_t n = (uint64_t)b->shape[b->ndim - 1];
    int64_t c_shape[SPK_MAX_RANK];
    memcpy(c_shape, a->shape, (size_t)a->ndim * sizeof *c_shape);
    c_shape[a->ndim - 1] = (int64_t)n;
    status = spk__check_shape(ctx, c, a->ndim, c_shape, "matmul C");
    int64_t bias_shape[1] = {(int64_t)n};
    if (status == SPK_OK && opts.bias) status = spk__check_shape(ctx, opts.bias, 1, bias_shape, "matmul bias");
    if (status == SPK_OK && opts.residual)
        status = spk__check_shape(ctx, opts.residual, a->ndim, c_shape, "matmul residual");
    if (status != SPK_OK) return status;
    if (spk__overlap(c, a) || spk__overlap(c, b) || (opts.bias && spk__overlap(c, opts.bias)) ||
        (opts.residual && opts.residual != c && spk__overlap(c, opts.residual)))
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "matmul C overlaps an input (only the residual may be C)");
    uint64_t batch = 1;
    for (int i = 0; i < a->ndim - 2; i++) batch *= (uint64_t)a->shape[i];
    /* Element offsets in the shader are 32-bit; tensors are capped by maxStorageBufferRange, but
     * refuse plainly anything that would not fit rather than wrap. */
    uint64_t c_count = batch * m * n;
    if (c_count > UINT32_MAX || batch * m * k > UINT32_MAX || k * n > UINT32_MAX)
        return spk__fail(ctx, SPK_ERROR_TOO_LARGE, "matmul of %llu x %llu x %llu (batch %llu) overflows 32-bit indices",
                         (unsigned long long)m, (unsigned long long)n, (unsigned long long)k,
                         (unsigned long long)batch);
    if (c_count == 0) return SPK_OK;

    if (!tuning) {
        spk__matmul_tuning_defaults(ctx, defaults);
        tuning = defaults;
    }
    const spk__device_caps *caps = &ctx->caps;
    if (tuning->shuffle && !(caps->subgroup_shuffle && caps->min_subgroup_size == caps->max_subgroup_size &&
                             tuning->wg_x % caps->max_subgroup_size == 0))
        return spk__fail(ctx, SPK_ERROR_UNSUPPORTED, "the shuffle matmul needs subgroup shuffles of one fixed size");

    /* With one B for all batches, A's and C's batches are just more rows: one [batch * M, K]
     * product fills the row tiles that a short M (a model's few positions) would leave empty. */
    if (shared_b) m *= batch, batch = 1;
    *args = (spk__matmul_args){tuning, a, b, opts.bias, opts.residual, c, opts.activation, batch, m, n, k, shared_b};
    return SPK_OK;
}

spk_status spk__record_matmul(spk_context *ctx, const spk__matmul_tuning *tuning, const spk_tensor *a,
                              const spk_tensor *b, const spk_matmul_desc *desc, spk_tensor *c) {
    spk__matmul_tuning defaults;
    spk__matmul_args args;
    spk_status status = spk__matmul_check(ctx, tuning, a, b, desc, c, &defaults, &args);
    if (status == SPK_OK && args.tuning) status = spk__matmul_dispatch(ctx, &args);
    return status;
}

spk_status spk__matmul_tuned(spk_context *ctx, const spk__matmul_tuning *tuning, const spk_tensor *a,
                             const spk_tensor *b, const spk_matmul_desc *desc, spk_tensor *c) {
    spk__matmul_tuning defaults;
    spk__matmul_args args;
    spk_status status = spk__matmul_check(ctx, tuning, a, b, desc, c, &defaults, &args);
    if (status == SPK_OK && args.tuning) status = spk__run_sync(ctx, spk__matmul_dispatch, &args);
    return status;
}

spk_status spk_record_matmul(spk_context *ctx, VkCommandBuffer cmd, const spk_tensor *a, const spk_tensor *b,
                             const spk_matmul_desc *desc, spk_tensor *c) {
    spk_status status = spk__record_app_begin(ctx, cmd);
    if (status != SPK_OK) return status;
    status = spk__record_matmul(ctx, NULL, a, b, desc, c);
    spk__record_app_end(ctx);
    return status;
}

spk_status spk_matmul(spk_context *ctx, const spk_tensor *a, const spk_tensor *b, const spk_matmul_desc *desc,
                      spk_tensor *c) {
    return spk__matmul_tuned(ctx, NULL, a, b, desc, c);
}

/* ---- elementwise ---------------------------------------------------------------------------- */

typedef struct spk__unary_args {
    const spk_tensor *x;
    spk_tensor *y;
    uint32_t op;
} spk__unary_args;

static spk_status spk__record_unary(spk_context *ctx, const void *arg) {
    const spk__unary_args *u = arg;
    uint32_t spec[2] = {64, u->op}, count = (uint32_t)u->x->count;
    return spk__dispatch_map(ctx, &spk__shader_unary, spec, 2, u->x->ref, VK_NULL_HANDLE, u->y->ref, count, count);
}

spk_status spk__unary(spk_context *ctx, uint32_t op, const spk_tensor *x, spk_tensor *y) {
    if (!ctx) return SPK_ERROR_INVALID_ARGUMENT;
    spk_status status = spk__check_tensor(ctx, x, "input");
    if (status == SPK_OK) status = spk__check_tensor(ctx, y, "output");
    if (status == SPK_OK) status = spk__check_shape(ctx, y, x->ndim, x->shape, "output");
    if (status != SPK_OK) return status;
    if (x != y && spk__overlap(x, y))
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "input and output partially overlap");
    if (x->count == 0) return SPK_OK;
    spk__unary_args args = {x, y, op};
    return spk__run_sync(ctx, spk__record_unary, &args);
}

spk_status spk_gelu(spk_context *ctx, const spk_tensor *x, spk_tensor *y) {
    return spk__unary(ctx, SPK__UNARY_GELU, x, y);
}
