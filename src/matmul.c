/* Matmul with a fused epilogue (shaders/matmul.comp), and the elementwise GELU and erf
 * (shaders/unary.comp) that share its erf. */
#include "internal.h"

#include <string.h>

#include "matmul_plan.h"
#include "tuning.h"

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

/* Parameters of a tuned choice (tuning.h): kind (1 shuffle), wg_x, wg_y, tm, tn, bk, flags
 * (1 shared, 2 texel), row_sets. */
void spk__matmul_tuning_pack(const spk__matmul_tuning *t, uint32_t p[SPK__TUNE_PARAMS]) {
    uint32_t q[SPK__TUNE_PARAMS] = {t->shuffle, t->wg_x, t->wg_y, t->tm, t->tn, t->bk,
                                    (t->shared ? 1u : 0u) | (t->texel ? 2u : 0u), t->row_sets};
    memcpy(p, q, sizeof q);
}

bool spk__matmul_tuning_unpack(const spk_context *ctx, const uint32_t p[SPK__TUNE_PARAMS], spk__matmul_tuning *t) {
    const spk__device_caps *caps = &ctx->caps;
    const VkPhysicalDeviceLimits *l = &caps->props.limits;
    *t = (spk__matmul_tuning){.shuffle = p[0] == 1, .wg_x = p[1], .wg_y = p[2], .tm = p[3], .tn = p[4], .bk = p[5],
                              .shared = p[6] & 1, .texel = (p[6] & 2) && caps->texel_buffers, .row_sets = p[7]};
    if (p[0] > 1 || p[6] > 3 || t->tn < 1 || t->tn > 8 || t->wg_x < 1 || t->wg_x > l->maxComputeWorkGroupSize[0])
        return false;
    if (t->shuffle) {
        uint32_t sg = caps->max_subgroup_size;
        return caps->subgroup_shuffle && caps->min_subgroup_size == sg && t->wg_x % sg == 0 &&
               t->wg_x <= l->maxComputeWorkGroupInvocations && t->row_sets >= 1 && t->row_sets <= 16 &&
               (t->tm == 0 || (t->tm <= sg && sg % t->tm == 0));
    }
    uint64_t shared = t->shared ? (uint64_t)t->bk * (t->wg_y * t->tm + t->wg_x * t->tn) * sizeof(float) : 0;
    return t->wg_y >= 1 && t->wg_y <= l->maxComputeWorkGroupSize[1] &&
           (uint64_t)t->wg_x * t->wg_y <= l->maxComputeWorkGroupInvocations && t->tm >= 1 && t->tm <= 8 &&
           t->bk >= 1 && t->bk <= 64 && shared <= l->maxComputeSharedMemorySize;
}

spk__tune_problem spk__matmul_problem(const spk__matmul_args *p) {
    uint32_t vec_a = (p->trans_a ? p->m : p->k) % 4 == 0, vec_b = (p->trans_b ? p->k : p->n) % 4 == 0;
    uint32_t c_dtype = p->c->dtype, r_dtype = p->residual ? p->residual->dtype : SPK_DTYPE_F32;
    uint32_t variant = p->epilogue | (uint32_t)p->trans_a << 6 | (uint32_t)p->trans_b << 7 | vec_a << 8 |
                       vec_b << 9 | (uint32_t)(p->n % 4 == 0) << 10 | (uint32_t)p->shared_b << 11 |
                       (uint32_t)p->b->dtype << 12 | (uint32_t)p->a->dtype << 14 | c_dtype << 16 | r_dtype << 18 |
                       (uint32_t)(p->bias ? p->bias->dtype : SPK_DTYPE_F32) << 20;
    return (spk__tune_problem){SPK__TUNE_MATMUL, variant, {p->batch, p->m, p->n, p->k}};
}

/* The tuned choice for this problem where the context has one, else the rule. */
static void spk__matmul_choose(spk_context *ctx, const spk__matmul_args *p, spk__matmul_tuning *t) {
    spk__tune_problem problem = spk__matmul_problem(p);
    uint32_t params[SPK__TUNE_PARAMS];
    if (!spk__tuned(ctx, &problem, params) || !spk__matmul_tuning_unpack(ctx, params, t))
        spk__matmul_tuning_defaults(ctx, t);
}

spk_status spk__record_matmul_args(spk_context *ctx, const void *arg) {
    const spk__matmul_args *p = arg;
    spk__matmul_tuning chosen;
    const spk__matmul_tuning *t = p->tuning;
    if (!t) spk__matmul_choose(ctx, p, &chosen), t = &chosen;
    const spk__device_caps *caps = &ctx->caps;
    if (t->shuffle && !(caps->subgroup_shuffle && caps->min_subgroup_size == caps->max_subgroup_size &&
                        t->wg_x % caps->max_subgroup_size == 0))
        return spk__fail(ctx, SPK_ERROR_UNSUPPORTED, "the shuffle matmul needs subgroup shuffles of one fixed size");
    /* Transposed A is read in quads of rows: a block of whole quads. */
    uint32_t rows = t->shuffle ? (t->tm ? t->tm : caps->max_subgroup_size) * t->row_sets : 0;
    if (t->shuffle && p->trans_a && rows % 4 != 0)
        return spk__fail(ctx, SPK_ERROR_UNSUPPORTED, "the shuffle matmul reads transposed A in blocks of 4 rows");
    const spk__pipeline *pipeline;
    spk_status status;
    uint32_t bm, bn; /* rows and columns of C per workgroup */
    VkBufferView views[2] = {VK_NULL_HANDLE, VK_NULL_HANDLE};
    /* Operands in 16 bits (shaders/matmul_io.glsl): the weights read as float16_t / uint16_t or as
     * words, F16 activations loaded and stored as float16_t (through texel views A converts in the
     * fetch). Variants with 16-bit storage only where something needs it. */
    uint32_t w_dtype = p->b->dtype, bias_dtype = p->bias ? p->bias->dtype : SPK_DTYPE_F32;
    uint32_t a_dtype = p->a->dtype, c_dtype = p->c->dtype, r_dtype = p->residual ? p->residual->dtype : SPK_DTYPE_F32;
    bool act16 = a_dtype != SPK_DTYPE_F32 || c_dtype != SPK_DTYPE_F32 || r_dtype != SPK_DTYPE_F32;
    bool storage16 = (w_dtype != SPK_DTYPE_F32 && !ctx->half_words) || act16;
    uint32_t io_spec[6] = {w_dtype, bias_dtype, ctx->half_words, a_dtype, c_dtype, r_dtype};
    if (t->shuffle) {
        /* vec4 indexing (and vec4 texel views) where stored rows of A and of B are whole vec4s. */
        bool vec_a = (p->trans_a ? p->m : p->k) % 4 == 0, vec_b = (p->trans_b ? p->k : p->n) % 4 == 0;
        views[0] = p->a->views[vec_a];
        views[1] = p->b->views[vec_b];
        /* Without views (a wrapped buffer, or one past the texel limits), storage buffers. */
        bool texel = t->texel && views[0] && views[1];
        uint32_t sg = ctx->caps.max_subgroup_size;
        bm = t->wg_x / sg * rows;
        bn = sg * t->tn * 4;
        uint32_t spec[17] = {t->wg_x, sg, t->row_sets, t->tn, vec_a ? 4 : 1, vec_b ? 4 : 1, p->trans_a, p->trans_b,
                             p->n % 4 == 0 ? 4 : 1};
        memcpy(spec + 9, io_spec, sizeof io_spec);
        spec[15] = p->epilogue, spec[16] = t->tm;
        /* Through texel views 16-bit storage is only for an F16 C or residual. */
        bool bf16 = w_dtype == SPK_DTYPE_BF16, s16 = c_dtype != SPK_DTYPE_F32 || r_dtype != SPK_DTYPE_F32;
        const spk__shader *shader =
            texel ? (bf16 ? (s16 ? &spk__shader_matmul_shuffle_texel_bf16_s16 : &spk__shader_matmul_shuffle_texel_bf16)
                          : (s16 ? &spk__shader_matmul_shuffle_texel_s16 : &spk__shader_matmul_shuffle_texel))
                  : storage16 ? &spk__shader_matmul_shuffle_s16 : &spk__shader_matmul_shuffle;
        status = spk__pipeline_get(ctx, shader, spec, 17, SPK__PIPELINE_FULL_SUBGROUPS, &pipeline);
    } else {
        bm = t->wg_y * t->tm;
        bn = t->wg_x * t->tn;
        uint32_t spec[16] = {t->wg_x, t->wg_y, t->tm, t->tn, t->bk, t->shared, t->shared ? t->bk * bm : 1,
                             t->shared ? t->bk * bn : 1, p->trans_a, p->trans_b};
        memcpy(spec + 10, io_spec, sizeof io_spec);
        status = spk__pipeline_get(ctx, storage16 ? &spk__shader_matmul_s16 : &spk__shader_matmul, spec, 16, 0, &pipeline);
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
        /* Absent bias and residual bind A in their place (declared but never read), an absent
         * pre-activation C (never written through that binding). */
        .bindings = {p->a->ref, p->b->ref, p->c->ref, p->bias ? p->bias->ref : p->a->ref,
                     p->residual ? p->residual->ref : p->a->ref, p->pre ? p->pre->ref : p->c->ref},
        .views = {views[0], views[1]},
        .written_mask = p->pre ? 0x24 : 0x4,
    };
    uint32_t push[8] = {(uint32_t)p->m, (uint32_t)p->n, (uint32_t)p->k, (uint32_t)(p->m * p->k),
                        p->shared_b ? 0 : (uint32_t)(p->k * p->n), (uint32_t)(p->m * p->n), 0, p->epilogue};
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

/* Checks the operands and plans the dispatch; args->batch is 0 when there is nothing to do. */
static spk_status spk__matmul_check(spk_context *ctx, const spk__matmul_tuning *tuning, const spk_tensor *a,
                                    const spk_tensor *b, const spk_matmul_desc *desc, spk_tensor *c,
                                    spk__matmul_args *args) {
    *args = (spk__matmul_args){0};
    if (!ctx) return SPK_ERROR_INVALID_ARGUMENT;
    spk_matmul_desc opts = {0};
    if (desc) opts = *desc;
    spk_status status = spk__check_activation(ctx, a, "matmul", "matmul A");
    if (status == SPK_OK) status = spk__check_tensor_dtypes(ctx, b, "matmul B", SPK__ANY_DTYPE);
    if (status == SPK_OK) status = spk__check_activation(ctx, c, "matmul", "matmul C");
    if (status == SPK_OK && opts.bias) status = spk__check_tensor_dtypes(ctx, opts.bias, "matmul bias", SPK__ANY_DTYPE);
    if (status == SPK_OK && opts.residual) status = spk__check_activation(ctx, opts.residual, "matmul", "matmul residual");
    if (status == SPK_OK && opts.pre_activation)
        status = spk__check_tensor(ctx, opts.pre_activation, "matmul pre-activation");
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
    if (status == SPK_OK && opts.pre_activation)
        status = spk__check_shape(ctx, opts.pre_activation, a->ndim, c_shape, "matmul pre-activation");
    if (status != SPK_OK) return status;
    if (spk__overlap(c, a) || spk__overlap(c, b) || (opts.bias && spk__overlap(c, opts.bias)) ||
        (opts.residual && opts.residual != c && spk__overlap(c, opts.residual)))
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "matmul C overlaps an input (only the residual may be C)");
    const spk_tensor *pre = opts.pre_activation;
    if (pre && (spk__overlap(pre, c) || spk__overlap(pre, a) || spk__overlap(pre, b) ||
                (opts.bias && spk__overlap(pre, opts.bias)) || (opts.residual && spk__overlap(pre, opts.residual))))
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "matmul pre-activation overlaps another operand");
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

    /* With one B for all batches, A's and C's batches are just more rows: one [batch * M, K]
     * product fills the row tiles that a short M (a model's few positions) would leave empty. */
    if (shared_b) m *= batch, batch = 1;
    uint32_t epilogue = (opts.bias ? SPK__EPILOGUE_BIAS : 0) | (opts.residual ? SPK__EPILOGUE_RESIDUAL : 0) |
                        (opts.activation == SPK_ACTIVATION_GELU ? SPK__EPILOGUE_GELU : 0) |
                        (pre ? SPK__EPILOGUE_PRE : 0);
    *args = (spk__matmul_args){tuning, a, b, opts.bias, opts.residual, c, (spk_tensor *)pre, epilogue,
                               batch, m, n, k, shared_b, false, false};
    return SPK_OK;
}

spk_status spk__record_matmul(spk_context *ctx, const spk__matmul_tuning *tuning, const spk_tensor *a,
                              const spk_tensor *b, const spk_matmul_desc *desc, spk_tensor *c) {
    spk__matmul_args args;
    spk_status status = spk__matmul_check(ctx, tuning, a, b, desc, c, &args);
    if (status == SPK_OK && args.batch) status = spk__record_matmul_args(ctx, &args);
    return status;
}

spk_status spk__record_matmul_gelu_keep_grad(spk_context *ctx, const spk_tensor *a, const spk_tensor *b,
                                             const spk_tensor *bias, spk_tensor *gelu_grad, spk_tensor *c) {
    spk_matmul_desc desc = {.bias = bias, .activation = SPK_ACTIVATION_GELU, .pre_activation = gelu_grad};
    spk__matmul_args args;
    spk_status status = spk__matmul_check(ctx, NULL, a, b, &desc, c, &args);
    args.epilogue = (args.epilogue & ~(uint32_t)SPK__EPILOGUE_PRE) | SPK__EPILOGUE_KEEP_GRAD;
    if (status == SPK_OK && args.batch) status = spk__record_matmul_args(ctx, &args);
    return status;
}

spk_status spk__matmul_tuned(spk_context *ctx, const spk__matmul_tuning *tuning, const spk_tensor *a,
                             const spk_tensor *b, const spk_matmul_desc *desc, spk_tensor *c) {
    spk__matmul_args args;
    spk_status status = spk__matmul_check(ctx, tuning, a, b, desc, c, &args);
    if (status == SPK_OK && args.batch) status = spk__run_sync(ctx, spk__record_matmul_args, &args);
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

/* ---- backward ------------------------------------------------------------------------------ */

/* A tensor's matrix dimensions: rows (the second last) and columns (the last), and the batch
 * (the product of the rest). */
static void spk__matrix_dims(const spk_tensor *t, uint64_t *batch, uint64_t *rows, uint64_t *cols) {
    *batch = 1;
    for (int i = 0; i < t->ndim - 2; i++) *batch *= (uint64_t)t->shape[i];
    *rows = (uint64_t)t->shape[t->ndim - 2];
    *cols = (uint64_t)t->shape[t->ndim - 1];
}

spk_status spk__record_matmul_da(spk_context *ctx, const spk__matmul_tuning *tuning, const spk_tensor *dz, const spk_tensor *b,
                                 const spk_tensor *gelu_grad, bool accumulate, spk_tensor *da) {
    /* dA [.., M, K] = dZ [.., M, N] B^T, B read as stored [K, N]: the product's B operand is B^T
     * laid out [N(reduction), K(columns)] transposed (TRANS_B). */
    uint64_t batch, m, n, kb, nb, unused;
    spk__matrix_dims(dz, &batch, &m, &n);
    spk__matrix_dims(b, &unused, &kb, &nb);
    bool shared_b = b->ndim == 2;
    if (shared_b) m *= batch, batch = 1;
    spk__matmul_args args = {
        .tuning = tuning, .a = dz, .b = b, .c = da,
        .residual = gelu_grad ? gelu_grad : accumulate ? da : NULL,
        .epilogue = gelu_grad ? SPK__EPILOGUE_GELU_GRAD : accumulate ? SPK__EPILOGUE_RESIDUAL : 0,
        .batch = batch, .m = m, .n = kb, .k = nb, .shared_b = shared_b, .trans_b = true,
    };
    return m * kb * batch != 0 ? spk__record_matmul_args(ctx, &args) : SPK_OK;
}

spk_status spk__record_matmul_db(spk_context *ctx, const spk__matmul_tuning *tuning, const spk_tensor *a, const spk_tensor *dz, bool accumulate,
                                 spk_tensor *db) {
    /* dB [K, N] = A^T dZ over every row of every batch (a shared B gets the sum over the batch),
     * or per batch for a batched B; A read as stored [.., M, K] (TRANS_A). */
    uint64_t batch, m, k, unused, n;
    spk__matrix_dims(a, &batch, &m, &k);
    spk__matrix_dims(dz, &unused, &unused, &n);
    if (db->ndim == 2) m *= batch, batch = 1;
    spk__matmul_args args = {
        .tuning = tuning, .a = a, .b = dz, .c = db,
        .residual = accumulate ? db : NULL, .epilogue = accumulate ? SPK__EPILOGUE_RESIDUAL : 0,
        .batch = batch, .m = k, .n = n, .k = m, .trans_a = true,
    };
    /* No rows (m == 0) gives zeros: nothing to add when accumulating. */
    if (k * n * batch == 0 || (m == 0 && accumulate)) return SPK_OK;
    return spk__record_matmul_args(ctx, &args);
}

typedef struct spk__matmul_backward_args {
    const spk__matmul_tuning *tuning;
    const spk_tensor *a, *b, *dc, *pre;
    spk_tensor *dz; /* dC times gelu'(pre) with GELU, else dC itself */
    spk_matmul_grads grads;
} spk__matmul_backward_args;

static spk_status spk__matmul_backward_dispatch(spk_context *ctx, const void *arg) {
    const spk__matmul_backward_args *p = arg;
    const spk_matmul_grads *g = &p->grads;
    spk_status s = SPK_OK;
    if (p->pre) s = spk__record_gelu_backward(ctx, p->pre, p->dc, p->dz);
    if (s == SPK_OK && g->da) s = spk__record_matmul_da(ctx, p->tuning, p->dz, p->b, NULL, g->accumulate, g->da);
    if (s == SPK_OK && g->db) s = spk__record_matmul_db(ctx, p->tuning, p->a, p->dz, g->accumulate, g->db);
    if (s == SPK_OK && g->dbias) s = spk__record_column_sums(ctx, p->dz, NULL, NULL, g->accumulate, g->dbias, NULL);
    return s;
}

spk_status spk_matmul_backward(spk_context *ctx, const spk_tensor *a, const spk_tensor *b, const spk_matmul_desc *desc,
                               const spk_tensor *dc, const spk_matmul_grads *grads) {
    return spk__matmul_backward_tuned(ctx, NULL, a, b, desc, dc, grads);
}

spk_status spk__matmul_backward_tuned(spk_context *ctx, const spk__matmul_tuning *tuning, const spk_tensor *a,
                                      const spk_tensor *b, const spk_matmul_desc *desc, const spk_tensor *dc,
                                      const spk_matmul_grads *grads) {
    spk_matmul_desc opts = {0};
    if (desc) opts = *desc;
    bool gelu = opts.activation == SPK_ACTIVATION_GELU;
    if (gelu && !opts.pre_activation)
        return ctx ? spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT,
                               "matmul backward through GELU needs the forward's pre-activation (desc->pre_activation)")
                   : SPK_ERROR_INVALID_ARGUMENT;
    /* The forward's checks give every shape: C's is dC's. */
    spk__matmul_args fwd;
    spk_matmul_desc shapes = {.bias = opts.bias, .activation = opts.activation};
    spk_status s = spk__check_tensor(ctx, dc, "matmul backward dC");
    if (s == SPK_OK) s = spk__matmul_check(ctx, NULL, a, b, &shapes, (spk_tensor *)dc, &fwd);
    if (s == SPK_OK && gelu) s = spk__check_tensor(ctx, opts.pre_activation, "matmul pre-activation");
    if (s == SPK_OK && gelu) s = spk__check_shape(ctx, opts.pre_activation, dc->ndim, dc->shape, "matmul pre-activation");
    if (s != SPK_OK) return s;
    spk_matmul_grads g = {0};
    if (grads) g = *grads;
    const spk_tensor *outs[3] = {g.da, g.db, g.dbias}, *likes[3] = {a, b, NULL};
    static const char *names[3] = {"matmul dA", "matmul dB", "matmul dbias"};
    int64_t n = dc->shape[dc->ndim - 1];
    for (int i = 0; i < 3 && s == SPK_OK; i++) {
        if (!outs[i]) continue;
        s = spk__check_tensor(ctx, outs[i], names[i]);
        if (s == SPK_OK) s = likes[i] ? spk__check_shape(ctx, outs[i], likes[i]->ndim, likes[i]->shape, names[i])
                                      : spk__check_shape(ctx, outs[i], 1, &n, names[i]);
        const spk_tensor *ins[4] = {a, b, dc, opts.pre_activation};
        for (int j = 0; j < 4 && s == SPK_OK; j++)
            if (ins[j] && spk__overlap(outs[i], ins[j]))
                s = spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "%s overlaps an input", names[i]);
        for (int j = 0; j < i && s == SPK_OK; j++)
            if (outs[j] && spk__overlap(outs[i], outs[j]))
                s = spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "%s overlaps %s", names[i], names[j]);
    }
    if (s != SPK_OK || (dc->count == 0 && !g.db && !g.dbias)) return s;
    spk__matmul_backward_args args = {tuning, a, b, dc, gelu ? opts.pre_activation : NULL, (spk_tensor *)dc, g};
    spk_tensor *dz = NULL;
    if (gelu) {
        s = spk_tensor_create(ctx, dc->ndim, dc->shape, &dz);
        args.dz = dz;
    }
    if (s == SPK_OK) s = spk__run_sync(ctx, spk__matmul_backward_dispatch, &args);
    spk_tensor_destroy(dz);
    return s;
}

/* ---- elementwise ---------------------------------------------------------------------------- */

typedef struct spk__unary_args {
    const spk_tensor *x, *dy; /* dy: GELU_GRAD only */
    spk_tensor *y;
    uint32_t op;
} spk__unary_args;

static spk_status spk__record_unary(spk_context *ctx, const void *arg) {
    const spk__unary_args *u = arg;
    uint32_t spec[2] = {256, u->op}, count = (uint32_t)u->x->count;
    /* Texel views on CPU drivers where both inputs have one. */
    const spk_tensor *dy = u->dy ? u->dy : u->x;
    bool texel = ctx->caps.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU && u->x->views[0] && dy->views[0];
    spk__dispatch_desc d = {.bindings = {u->x->ref, dy->ref, u->y->ref},
                            .views = {texel ? u->x->views[0] : VK_NULL_HANDLE, texel ? dy->views[0] : VK_NULL_HANDLE},
                            .written_mask = 0x4, .push = &count, .push_size = sizeof count};
    uint64_t per_group = 4 * (uint64_t)spec[0]; /* 4 elements per invocation */
    spk_status status = spk__grid(ctx, (count + per_group - 1) / per_group, d.groups);
    if (status == SPK_OK)
        status = spk__pipeline_get(ctx, texel ? &spk__shader_unary_texel : &spk__shader_unary, spec, 2, 0, &d.pipeline);
    if (status == SPK_OK) status = spk__dispatch(ctx, &d);
    return status;
}

spk_status spk__unary(spk_context *ctx, uint32_t op, const spk_tensor *x, const spk_tensor *dy, spk_tensor *y) {
    if (!ctx) return SPK_ERROR_INVALID_ARGUMENT;
    spk_status status = spk__check_tensor(ctx, x, "input");
    if (status == SPK_OK && op == SPK__UNARY_GELU_GRAD) status = spk__check_tensor(ctx, dy, "output gradient");
    if (status == SPK_OK) status = spk__check_tensor(ctx, y, "output");
    if (status == SPK_OK && op == SPK__UNARY_GELU_GRAD) status = spk__check_shape(ctx, dy, x->ndim, x->shape, "output gradient");
    if (status == SPK_OK) status = spk__check_shape(ctx, y, x->ndim, x->shape, "output");
    if (status != SPK_OK) return status;
    if ((x != y && spk__overlap(x, y)) || (dy && dy != y && spk__overlap(dy, y)))
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "input and output partially overlap");
    if (x->count > UINT32_MAX) return spk__fail(ctx, SPK_ERROR_TOO_LARGE, "more than 2^32 elements");
    if (x->count == 0) return SPK_OK;
    spk__unary_args args = {x, op == SPK__UNARY_GELU_GRAD ? dy : NULL, y, op};
    return spk__run_sync(ctx, spk__record_unary, &args);
}

spk_status spk_gelu(spk_context *ctx, const spk_tensor *x, spk_tensor *y) {
    return spk__unary(ctx, SPK__UNARY_GELU, x, NULL, y);
}

spk_status spk_gelu_backward(spk_context *ctx, const spk_tensor *x, const spk_tensor *dy, spk_tensor *dx) {
    return spk__unary(ctx, SPK__UNARY_GELU_GRAD, x, dy, dx);
}

spk_status spk__record_gelu_backward(spk_context *ctx, const spk_tensor *x, const spk_tensor *dy, spk_tensor *dx) {
    spk__unary_args args = {x, dy, dx, SPK__UNARY_GELU_GRAD};
    return x->count ? spk__record_unary(ctx, &args) : SPK_OK;
}

/* ---- column sums: the gradients of biases, gamma and beta ------------------------------------ */

void spk__column_sums_tuning_defaults(const spk_context *ctx, spk__column_sums_tuning *t) {
    /* Texel views on CPU drivers (storage-buffer reads are per-lane loops there), four columns per
     * invocation through vec4 views where rows are whole vec4s; a workgroup of 64: 16 columns (or
     * quads) by 4 runs of rows each. GPUs read storage buffers. */
    bool texel = ctx->caps.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU && ctx->caps.texel_buffers;
    *t = (spk__column_sums_tuning){.workgroup = 64, .chunks = 4, .texel = texel, .vec4 = texel};
}

void spk__column_sums_tuning_pack(const spk__column_sums_tuning *t, uint32_t p[SPK__TUNE_PARAMS]) {
    uint32_t q[SPK__TUNE_PARAMS] = {t->workgroup, t->chunks, t->texel, t->vec4};
    memcpy(p, q, sizeof q);
}

bool spk__column_sums_tuning_unpack(const spk_context *ctx, const uint32_t p[SPK__TUNE_PARAMS], spk__column_sums_tuning *t) {
    const VkPhysicalDeviceLimits *l = &ctx->caps.props.limits;
    *t = (spk__column_sums_tuning){p[0], p[1], p[2] == 1, p[3] == 1};
    bool pow2 = spk__is_pow2(t->workgroup) && spk__is_pow2(t->chunks);
    return pow2 && t->chunks <= t->workgroup && t->workgroup <= l->maxComputeWorkGroupInvocations &&
           t->workgroup <= l->maxComputeWorkGroupSize[0] && p[2] <= 1 && p[3] <= p[2] &&
           (!t->texel || ctx->caps.texel_buffers) && (size_t)t->workgroup * 64 <= l->maxComputeSharedMemorySize;
}

spk__tune_problem spk__column_sums_problem(const spk_tensor *g, uint64_t n, uint32_t mode) {
    return (spk__tune_problem){SPK__TUNE_COLUMN_SUMS, mode, {(uint64_t)g->count / n, n}};
}

spk_status spk__record_column_sums_tuned(spk_context *ctx, const spk__column_sums_tuning *tuning, const spk_tensor *g,
                                         const spk_tensor *x, const spk_tensor *stats, bool accumulate, spk_tensor *out0,
                                         spk_tensor *out1) {
    spk_tensor *out = out0 ? out0 : out1;
    uint64_t n = (uint64_t)out->count, rows = n ? (uint64_t)g->count / n : 0;
    if (n == 0) return SPK_OK;
    uint32_t mode = !out1 ? 0u : out0 ? 1u : 2u, params[SPK__TUNE_PARAMS];
    spk__column_sums_tuning chosen;
    if (!tuning) {
        spk__tune_problem problem = spk__column_sums_problem(g, n, mode);
        if (!spk__tuned(ctx, &problem, params) || !spk__column_sums_tuning_unpack(ctx, params, &chosen))
            spk__column_sums_tuning_defaults(ctx, &chosen);
        tuning = &chosen;
    }
    const spk_tensor *xs = x ? x : g;
    bool texel = tuning->texel && g->views[0] && xs->views[0];
    bool vec4 = texel && tuning->vec4 && n % 4 == 0 && g->views[1] && xs->views[1];
    uint32_t spec[4] = {tuning->workgroup, mode, vec4 ? 4u : 1u, tuning->chunks};
    uint32_t push[3] = {(uint32_t)rows, (uint32_t)n, accumulate};
    spk__dispatch_desc d = {
        .bindings = {g->ref, xs->ref, stats ? stats->ref : g->ref, out->ref, out1 ? out1->ref : out->ref},
        .views = {texel ? g->views[vec4] : VK_NULL_HANDLE, texel ? xs->views[vec4] : VK_NULL_HANDLE},
        .written_mask = (out0 ? 0x8 : 0) | (out1 ? 0x10 : 0),
        .push = push,
        .push_size = sizeof push,
    };
    uint64_t per_group = spec[0] / spec[3];
    spk_status status = spk__grid(ctx, (n / spec[2] + per_group - 1) / per_group, d.groups);
    if (status == SPK_OK)
        status = spk__pipeline_get(ctx, texel ? &spk__shader_column_sums_texel : &spk__shader_column_sums, spec, 4, 0,
                                   &d.pipeline);
    if (status == SPK_OK) status = spk__dispatch(ctx, &d);
    return status;
}

spk_status spk__record_column_sums(spk_context *ctx, const spk_tensor *g, const spk_tensor *x, const spk_tensor *stats,
                                   bool accumulate, spk_tensor *out0, spk_tensor *out1) {
    return spk__record_column_sums_tuned(ctx, NULL, g, x, stats, accumulate, out0, out1);
}
