/* spk_selftest: every kernel family in the variant this device uses and in every alternative it
 * can run, on awkward shapes, against the float64 references of reference.c. One line per
 * (op, variant); outputs are poisoned with NaN before each run. */
#include "internal.h"
#include "fault.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention_plan.h"
#include "layer_norm_plan.h"
#include "matmul_plan.h"
#include "model.h"
#include "reference.h"
#include "selftest.h"
#include "softpick_plan.h"

/* ---- lines ------------------------------------------------------------------------------- */

bool spk__st_wanted(const spk__selftest *st, const char *op) {
    return st->fatal == SPK_OK && !atomic_load(st->stop) && (!st->desc->only || strstr(op, st->desc->only));
}

void spk__st_begin(spk__selftest *st, const char *op, double bound, const char *fmt, ...) {
    snprintf(st->op, sizeof st->op, "%s", op);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->variant, sizeof st->variant, fmt, ap);
    va_end(ap);
    st->shapes[0] = st->reason[0] = '\0';
    st->r = (spk_selftest_result){.op = st->op, .variant = st->variant, .shapes = st->shapes, .bound = bound,
                                  .reason = st->reason};
}

/* Ends the line as skipped (when `why` is set and nothing failed) and keeps it for the report. A
 * variant the device cannot run is never the one it uses. */
void spk__st_end(spk__selftest *st, const char *why) {
    if (why && st->r.outcome == SPK_SELFTEST_PASS) {
        st->r.outcome = SPK_SELFTEST_SKIPPED;
        st->r.used = false;
        snprintf(st->reason, sizeof st->reason, "%s", why);
    }
    if (st->line_count == st->line_capacity) {
        uint32_t capacity = st->line_capacity ? 2 * st->line_capacity : 8;
        spk__st_line *lines = spk__realloc(st->lines, capacity * sizeof *lines);
        if (!lines) {
            st->fatal = SPK_ERROR_OUT_OF_HOST_MEMORY;
            return;
        }
        st->lines = lines;
        st->line_capacity = capacity;
    }
    spk__st_line *l = &st->lines[st->line_count++];
    l->r = st->r;
    memcpy(l->op, st->op, sizeof l->op);
    memcpy(l->variant, st->variant, sizeof l->variant);
    memcpy(l->shapes, st->shapes, sizeof l->shapes);
    memcpy(l->reason, st->reason, sizeof l->reason);
}

void spk__st_fail(spk__selftest *st, const char *fmt, ...) {
    if (st->r.outcome == SPK_SELFTEST_FAIL) return; /* the first failure names the line's problem */
    st->r.outcome = SPK_SELFTEST_FAIL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->reason, sizeof st->reason, fmt, ap);
    va_end(ap);
}

/* Appends a covered shape to the line (once per distinct text). */
void spk__st_shape(spk__selftest *st, const char *shape) {
    size_t n = strlen(st->shapes), len = strlen(shape);
    for (const char *at = strstr(st->shapes, shape); at; at = strstr(at + 1, shape))
        if ((at == st->shapes || at[-1] == ' ') && (at[len] == ' ' || at[len] == '\0')) return;
    if (n + len + 3 < sizeof st->shapes) snprintf(st->shapes + n, sizeof st->shapes - n, "%s%s", n ? " " : "", shape);
}

/* An op's status: false unless SPK_OK. A device that cannot run the variant skips it (fails it if
 * it is the one the device uses); running out of memory or losing the device stops the test. */
bool spk__st_ran(spk__selftest *st, spk_status status, const char *shape) {
    if (status == SPK_OK) return true;
    if (status == SPK_ERROR_OUT_OF_HOST_MEMORY || status == SPK_ERROR_OUT_OF_DEVICE_MEMORY ||
        status == SPK_ERROR_DEVICE_LOST) {
        st->fatal = status;
        spk__st_fail(st, "%s: %s", shape, spk_context_last_error(st->ctx));
    } else if (status == SPK_ERROR_UNSUPPORTED && !st->r.used) {
        if (st->r.outcome == SPK_SELFTEST_PASS) {
            st->r.outcome = SPK_SELFTEST_SKIPPED;
            snprintf(st->reason, sizeof st->reason, "%s", spk_context_last_error(st->ctx));
        }
    } else {
        spk__st_fail(st, "%s: %s (%s)", shape, spk_status_string(status), spk_context_last_error(st->ctx));
    }
    return false;
}

void spk__st_compare(spk__selftest *st, const float *y, const double *ref, int64_t n, const char *shape) {
    double err = spk__ref_error(y, ref, n);
    spk__st_shape(st, shape);
    if (!(err <= st->r.max_error)) st->r.max_error = err;
    if (!(err <= st->r.bound)) spk__st_fail(st, "%s: error %.3g exceeds %.0e", shape, err, st->r.bound);
}

/* ---- data ---------------------------------------------------------------------------------- */

void spk__st_random(spk__selftest *st, float *x, int64_t n, float scale) { spk__ref_random(&st->seed, x, n, scale); }

spk_tensor *spk__st_tensor_typed(spk__selftest *st, spk_dtype dtype, int ndim, const int64_t *shape, float *data) {
    spk_tensor *t = NULL;
    spk_status s = spk_tensor_create_typed(st->ctx, dtype, ndim, shape, &t);
    if (s == SPK_OK && data && dtype != SPK_DTYPE_F32)
        for (int64_t i = 0; i < t->count; i++) {
            uint16_t h;
            spk_convert(&data[i], SPK_DTYPE_F32, &h, dtype, 1);
            spk_convert(&h, dtype, &data[i], SPK_DTYPE_F32, 1);
        }
    int64_t n = t ? t->count : 0;
    float *nan = NULL;
    if (s == SPK_OK && !data) {
        nan = spk__malloc((size_t)(n ? n : 1) * sizeof *nan);
        if (!nan) s = SPK_ERROR_OUT_OF_HOST_MEMORY;
        for (int64_t i = 0; nan && i < n; i++) nan[i] = NAN;
    }
    if (s == SPK_OK) s = spk_tensor_upload(t, data ? data : nan, n);
    free(nan);
    if (s != SPK_OK) {
        spk_tensor_destroy(t);
        st->fatal = s;
        spk__st_fail(st, "setup: %s", spk_context_last_error(st->ctx));
        return NULL;
    }
    return t;
}

spk_tensor *spk__st_tensor(spk__selftest *st, int ndim, const int64_t *shape, const float *data) {
    return spk__st_tensor_typed(st, SPK_DTYPE_F32, ndim, shape, (float *)(uintptr_t)data); /* f32: not written */
}

/* NULL once anything failed: a case checks only its last allocation. */
void *spk__st_alloc(spk__selftest *st, spk__st_buffers *b, int64_t count, size_t size) {
    if (st->fatal != SPK_OK) return NULL;
    void *p = spk__calloc((size_t)(count ? count : 1), size);
    if (!p || b->n == 8) {
        free(p);
        st->fatal = SPK_ERROR_OUT_OF_HOST_MEMORY;
        spk__st_fail(st, "out of host memory");
        return NULL;
    }
    return b->p[b->n++] = p;
}

void spk__st_free(spk__st_buffers *b) {
    for (int i = 0; i < b->n; i++) free(b->p[i]);
    b->n = 0;
}

/* ---- softpick ------------------------------------------------------------------------------ */

void spk__st_softpick_case(spk__selftest *st, const spk__softpick_tuning *t, spk_dtype ad, int64_t outer, int64_t n,
                           int64_t inner) {
    int64_t shape[3] = {outer, n, inner}, count = outer * n * inner;
    char text[48];
    snprintf(text, sizeof text, "[%lld,%lld,%lld]", (long long)outer, (long long)n, (long long)inner);
    spk__st_buffers b = {0};
    float *x = spk__st_alloc(st, &b, count, sizeof *x), *y = spk__st_alloc(st, &b, count, sizeof *y);
    double *ref = spk__st_alloc(st, &b, count, sizeof *ref);
    spk_tensor *tx = NULL, *ty = NULL;
    if (ref) {
        spk__st_random(st, x, count, 4.0f);
        tx = spk__st_tensor_typed(st, ad, 3, shape, x);
        ty = tx ? spk__st_tensor_typed(st, ad, 3, shape, NULL) : NULL;
    }
    if (ty && spk__st_ran(st, spk__softpick_tuned(st->ctx, t, tx, 1, ty), text) &&
        spk__st_ran(st, spk_tensor_download(ty, y, count), text)) {
        spk__ref_softpick(x, outer, n, inner, ref);
        spk__st_compare(st, y, ref, count, text);
    }
    spk_tensor_destroy(tx), spk_tensor_destroy(ty);
    spk__st_free(&b);
}

/* spk_normalize along the middle axis of [outer, n, inner] against float64 per row or column,
 * every 10th element masked (-inf). */
static void spk__st_normalize_case(spk__selftest *st, spk_normalizer norm, int64_t outer, int64_t n, int64_t inner) {
    int64_t shape[3] = {outer, n, inner}, count = outer * n * inner;
    char text[48];
    snprintf(text, sizeof text, "[%lld,%lld,%lld]", (long long)outer, (long long)n, (long long)inner);
    spk__st_buffers b = {0};
    float *x = spk__st_alloc(st, &b, count, sizeof *x), *y = spk__st_alloc(st, &b, count, sizeof *y);
    double *ref = spk__st_alloc(st, &b, count, sizeof *ref), *row = spk__st_alloc(st, &b, 2 * n, sizeof *row);
    spk_tensor *tx = NULL, *ty = NULL;
    if (row) {
        spk__st_random(st, x, count, 4.0f);
        for (int64_t i = 0; i < count; i++)
            if (i / inner % n % 10 == 9) x[i] = -INFINITY;
        tx = spk__st_tensor(st, 3, shape, x);
        ty = tx ? spk__st_tensor(st, 3, shape, NULL) : NULL;
    }
    if (ty && spk__st_ran(st, spk_normalize(st->ctx, tx, 1, norm, ty), text) &&
        spk__st_ran(st, spk_tensor_download(ty, y, count), text)) {
        for (int64_t o = 0; o < outer; o++)
            for (int64_t k = 0; k < inner; k++) {
                int64_t live = 0;
                for (int64_t j = 0; j < n; j++)
                    if (j % 10 != 9) row[live++] = x[(o * n + j) * inner + k];
                spk__ref_normalize(norm, row, live, row + n);
                for (int64_t j = 0, l = 0; j < n; j++) ref[(o * n + j) * inner + k] = j % 10 == 9 ? 0.0 : row[n + l++];
            }
        spk__st_compare(st, y, ref, count, text);
    }
    spk_tensor_destroy(tx), spk_tensor_destroy(ty);
    spk__st_free(&b);
}

/* Whether two plans (each under its reduction) run the same kernel the same way. */
static bool spk__st_softpick_same(const spk__softpick_plan_t *a, const spk__softpick_tuning *ta,
                                  const spk__softpick_plan_t *b, const spk__softpick_tuning *tb) {
    return a->group == b->group && a->use_subgroup == b->use_subgroup && a->segments == b->segments &&
           a->cache == b->cache && ta->texel == tb->texel &&
           (a->segments == 1 || !a->strided || ta->interleave_columns == tb->interleave_columns);
}

static void spk__st_softpick_variant(spk__selftest *st, const spk__softpick_tuning *t, spk_reduction reduction,
                                     bool strided) {
    static const int64_t row_lengths[] = {1, 7, 33, 257, 4097, 1024};
    static const int64_t col_shapes[][2] = {{1, 8}, {7, 2}, {33, 2}, {257, 7}, {4097, 8}};
    spk_context *ctx = st->ctx;
    spk_reduction saved = ctx->reduction;
    spk__softpick_tuning defaults;
    spk__softpick_plan_defaults(ctx, &defaults);
    size_t cases = strided ? SPK__ARRAY_LEN(col_shapes) : SPK__ARRAY_LEN(row_lengths);
    for (size_t i = 0; i < cases; i++) {
        int64_t outer = strided ? 2 : 3, n = strided ? col_shapes[i][0] : row_lengths[i];
        int64_t inner = strided ? col_shapes[i][1] : 1;
        spk__softpick_plan_t mine, chosen;
        spk__softpick_plan(ctx, &defaults, outer, n, inner, true, &chosen);
        ctx->reduction = reduction;
        spk__softpick_plan(ctx, t, outer, n, inner, true, &mine);
        if (spk__st_softpick_same(&mine, t, &chosen, &defaults)) st->r.used = true;
        ctx->reduction = saved;
    }
    for (size_t i = 0; i < cases && st->fatal == SPK_OK; i++) {
        ctx->reduction = reduction;
        if (strided) spk__st_softpick_case(st, t, SPK_DTYPE_F32, 2, col_shapes[i][0], col_shapes[i][1]);
        else spk__st_softpick_case(st, t, SPK_DTYPE_F32, 3, row_lengths[i], 1);
        ctx->reduction = saved;
    }
}

void spk__st_softpick(spk__selftest *st) {
    if (!spk__st_wanted(st, "softpick")) return;
    spk_context *ctx = st->ctx;
    const spk__device_caps *caps = &ctx->caps;
    spk__softpick_tuning defaults;
    spk__softpick_plan_defaults(ctx, &defaults);
    uint32_t fixed_sg = caps->min_subgroup_size == caps->max_subgroup_size ? caps->max_subgroup_size : 0;
    const struct {
        uint32_t group;
        const char *name;
    } groups[] = {{1, "an invocation per row"}, {fixed_sg, "a subgroup per row"}, {defaults.workgroup, "a workgroup per row"}};
    for (int texel = 1; texel >= 0; texel--) {
        const char *reads = texel ? "texel reads" : "storage-buffer reads";
        const char *no_texel = texel && !caps->texel_buffers ? "device has no float uniform texel buffers" : NULL;
        for (size_t g = 0; g < SPK__ARRAY_LEN(groups); g++)
            for (int sub = 1; sub >= 0; sub--) {
                if (groups[g].group == 1 && !sub) continue; /* no reduction across invocations */
                spk__softpick_tuning t = defaults;
                t.force_group = groups[g].group;
                t.texel = texel;
                spk_reduction red = sub ? SPK_REDUCTION_SUBGROUP : SPK_REDUCTION_SHARED_MEMORY;
                spk__st_begin(st, "softpick", 1e-5, "rows, %s%s, %s", groups[g].name,
                              groups[g].group == 1 ? "" : sub ? ", subgroup reduction" : ", shared-memory reduction",
                              reads);
                const char *why = no_texel;
                if (!why && !groups[g].group) why = "device has no fixed subgroup size";
                if (!why && sub && groups[g].group > 1 && !caps->subgroup_arithmetic)
                    why = "device has no subgroup arithmetic";
                if (!why) spk__st_softpick_variant(st, &t, groups[g].group == 1 ? ctx->reduction : red, false);
                spk__st_end(st, why);
            }
        /* Long rows split into segments with a partial-sum pass. */
        spk__softpick_tuning t = defaults;
        t.texel = texel;
        t.target_invocations = 1u << 20;
        t.min_row_segment = 64;
        spk__st_begin(st, "softpick", 1e-5, "rows in segments (partial-sum pass), %s", reads);
        if (!no_texel) spk__st_softpick_variant(st, &t, ctx->reduction, false);
        spk__st_end(st, no_texel);
        /* Strided axes: a column per invocation, and long columns split into segments that
         * interleave rows or take contiguous blocks. */
        static const char *columns[] = {"columns", "columns in interleaved segments", "columns in contiguous segments"};
        for (int c = 0; c < 3; c++) {
            t = defaults;
            t.texel = texel;
            if (c) t.target_invocations = 1u << 20, t.min_column_segment = 16, t.interleave_columns = c == 1;
            spk__st_begin(st, "softpick", 1e-5, "%s, %s", columns[c], reads);
            if (!no_texel) spk__st_softpick_variant(st, &t, ctx->reduction, true);
            spk__st_end(st, no_texel);
        }
    }
    /* The other normalizers through this device's kernels, rows and columns (long ones split),
     * a tenth of the elements masked with -inf. */
    static const int64_t shapes[][3] = {{3, 1, 1}, {3, 257, 1}, {1, 40000, 1}, {2, 33, 2}, {2, 4097, 8}};
    for (int norm = 1; norm < 3 && st->fatal == SPK_OK; norm++) {
        spk__st_begin(st, "softpick", 1e-5, "%s, rows and columns", spk_normalizer_name((spk_normalizer)norm));
        st->r.used = true;
        for (size_t c = 0; c < SPK__ARRAY_LEN(shapes) && st->fatal == SPK_OK; c++)
            spk__st_normalize_case(st, (spk_normalizer)norm, shapes[c][0], shapes[c][1], shapes[c][2]);
        spk__st_end(st, NULL);
    }
}

/* ---- matmul ------------------------------------------------------------------------------- */

void spk__st_matmul_case(spk__selftest *st, const spk__matmul_tuning *t, spk_dtype wd, spk_dtype ad, int epilogue,
                         int64_t batch, int64_t m, int64_t n, int64_t k, bool shared_b) {
    char text[64];
    snprintf(text, sizeof text, "%s%lldx%lldx%lld%s", batch > 1 ? (shared_b ? "3*" : "2*") : "", (long long)m,
             (long long)n, (long long)k, batch > 1 && shared_b ? "(shared B)" : "");
    spk__st_buffers b = {0};
    int64_t nb = shared_b ? k * n : batch * k * n;
    float *a = spk__st_alloc(st, &b, batch * m * k, sizeof *a), *bb = spk__st_alloc(st, &b, nb, sizeof *bb);
    float *bias = spk__st_alloc(st, &b, n, sizeof *bias), *res = spk__st_alloc(st, &b, batch * m * n, sizeof *res);
    float *c = spk__st_alloc(st, &b, batch * m * n, sizeof *c);
    double *ref = spk__st_alloc(st, &b, batch * m * n, sizeof *ref);
    if (!ref) return spk__st_free(&b);
    spk__st_random(st, a, batch * m * k, 1.0f), spk__st_random(st, bb, nb, 1.0f);
    spk__st_random(st, bias, n, 1.0f), spk__st_random(st, res, batch * m * n, 1.0f);
    int64_t as[3] = {batch, m, k}, bs[3] = {batch, k, n}, cs[3] = {batch, m, n};
    spk_tensor *ta = spk__st_tensor_typed(st, ad, 3, as, a);
    spk_tensor *tb = ta ? spk__st_tensor_typed(st, wd, shared_b ? 2 : 3, shared_b ? bs + 1 : bs, bb) : NULL;
    spk_tensor *tbias = tb ? spk__st_tensor_typed(st, wd, 1, &n, bias) : NULL;
    spk_tensor *tres = tbias ? spk__st_tensor_typed(st, ad, 3, cs, res) : NULL;
    /* Epilogue 4 accumulates into C itself, which then starts as the residual. */
    spk_tensor *tc = tres ? spk__st_tensor_typed(st, ad, 3, cs, epilogue == 4 ? res : NULL) : NULL;
    spk_matmul_desc desc = {.bias = epilogue >= 1 && epilogue <= 3 ? tbias : NULL,
                            .activation = epilogue == 2 || epilogue == 3 ? SPK_ACTIVATION_GELU : SPK_ACTIVATION_NONE,
                            .residual = epilogue == 3 ? tres : epilogue == 4 ? tc : NULL};
    if (tc && spk__st_ran(st, spk__matmul_tuned(st->ctx, t, ta, tb, &desc, tc), text) &&
        spk__st_ran(st, spk_tensor_download(tc, c, batch * m * n), text)) {
        spk__ref_matmul(a, bb, desc.bias ? bias : NULL, desc.activation == SPK_ACTIVATION_GELU, desc.residual ? res : NULL,
                        batch, m, n, k, shared_b, ref);
        spk__st_compare(st, c, ref, batch * m * n, text);
    }
    spk_tensor_destroy(ta), spk_tensor_destroy(tb), spk_tensor_destroy(tbias), spk_tensor_destroy(tres);
    spk_tensor_destroy(tc);
    spk__st_free(&b);
}

const char *const spk__st_matmul_kernel_names[4] = {"shared-memory tiles", "register blocks",
                                                   "subgroup shuffles, storage-buffer reads",
                                                   "subgroup shuffles, texel reads"};

void spk__st_matmul_kernels(const spk_context *ctx, spk__matmul_tuning kernels[4]) {
    spk__matmul_tuning_tiles(ctx, &kernels[0]);
    kernels[1] = (spk__matmul_tuning){.wg_x = 8, .wg_y = 8, .tm = 4, .tn = 4, .bk = 16, .shared = false};
    spk__matmul_tuning_shuffle(ctx, false, &kernels[2]);
    spk__matmul_tuning_shuffle(ctx, true, &kernels[3]);
}

void spk__st_matmul(spk__selftest *st) {
    if (!spk__st_wanted(st, "matmul")) return;
    spk_context *ctx = st->ctx;
    const spk__device_caps *caps = &ctx->caps;
    static const int64_t shapes[][5] = {
        /* batch, M, N, K, shared B */
        {1, 1, 1, 1, 1}, {1, 7, 33, 257, 1}, {1, 33, 7, 4097, 1}, {1, 65, 70, 33, 1},
        {1, 4, 64, 64, 1}, {2, 7, 9, 33, 0}, {3, 5, 6, 17, 1},
    };
    static const char *epilogues[] = {"no epilogue", "+ bias", "+ bias, GELU", "+ bias, GELU, + residual",
                                      "+= into C (residual in place)"};
    spk__matmul_tuning defaults, kernels[4];
    spk__matmul_tuning_defaults(ctx, &defaults);
    spk__st_matmul_kernels(ctx, kernels);
    const char *const *names = spk__st_matmul_kernel_names;
    bool shuffles = caps->subgroup_shuffle && caps->min_subgroup_size == caps->max_subgroup_size;
    for (int kernel = 0; kernel < 4; kernel++)
        for (int e = 0; e < 5 && st->fatal == SPK_OK; e++) {
            spk__st_begin(st, "matmul", 1e-5, "%s, %s", names[kernel], epilogues[e]);
            st->r.used = memcmp(&kernels[kernel], &defaults, sizeof defaults) == 0;
            const char *why = NULL;
            if (kernel >= 2 && !shuffles) why = "device has no subgroup shuffles of one fixed size";
            if (kernel == 3 && !kernels[3].texel) why = "device has no float uniform texel buffers";
            for (size_t s = 0; !why && s < SPK__ARRAY_LEN(shapes) && st->fatal == SPK_OK; s++)
                spk__st_matmul_case(st, &kernels[kernel], SPK_DTYPE_F32, SPK_DTYPE_F32, e, shapes[s][0], shapes[s][1],
                                    shapes[s][2], shapes[s][3], shapes[s][4] != 0);
            spk__st_end(st, why);
        }
}

/* ---- layer norm, erf, GELU ---------------------------------------------------------------- */

void spk__st_layer_norm_case(spk__selftest *st, const spk__layer_norm_tuning *t, spk_dtype ad, int64_t rows, int64_t n,
                             float mean) {
    char text[48];
    snprintf(text, sizeof text, "%s[%lld,%lld]", mean != 0 ? "1e4+" : "", (long long)rows, (long long)n);
    spk__st_buffers b = {0};
    int64_t count = rows * n, shape[2] = {rows, n};
    float *x = spk__st_alloc(st, &b, count, sizeof *x), *y = spk__st_alloc(st, &b, count, sizeof *y);
    float *gb = spk__st_alloc(st, &b, 2 * n, sizeof *gb);
    double *ref = spk__st_alloc(st, &b, count, sizeof *ref);
    if (!ref) return spk__st_free(&b);
    spk__st_random(st, x, count, 2.0f), spk__st_random(st, gb, 2 * n, 1.0f);
    for (int64_t i = 0; i < count; i++) x[i] += mean;
    for (int64_t j = 0; j < n; j++) gb[j] += 1.0f;
    spk_tensor *tx = spk__st_tensor_typed(st, ad, 2, shape, x), *tg = tx ? spk__st_tensor(st, 1, &n, gb) : NULL;
    spk_tensor *tb = tg ? spk__st_tensor(st, 1, &n, gb + n) : NULL;
    spk_tensor *ty = tb ? spk__st_tensor_typed(st, ad, 2, shape, NULL) : NULL;
    if (ty && spk__st_ran(st, spk__layer_norm_tuned(st->ctx, t, tx, tg, tb, NULL, ty), text) &&
        spk__st_ran(st, spk_tensor_download(ty, y, count), text)) {
        spk__ref_layer_norm(x, gb, gb + n, rows, n, 1e-5, ref);
        spk__st_compare(st, y, ref, count, text);
    }
    spk_tensor_destroy(tx), spk_tensor_destroy(tg), spk_tensor_destroy(tb), spk_tensor_destroy(ty);
    spk__st_free(&b);
}

void spk__st_layer_norm(spk__selftest *st) {
    if (!spk__st_wanted(st, "layer norm")) return;
    spk_context *ctx = st->ctx;
    const spk__device_caps *caps = &ctx->caps;
    static const int64_t shapes[][2] = {{3, 1}, {3, 7}, {3, 33}, {3, 257}, {3, 4097}, {3, 1024}, {2048, 8}};
    spk__layer_norm_tuning defaults;
    spk__layer_norm_tuning_defaults(ctx, &defaults);
    uint32_t fixed_sg = caps->min_subgroup_size == caps->max_subgroup_size ? caps->max_subgroup_size : 0;
    spk_reduction saved = ctx->reduction;
    static const char *group_names[] = {"an invocation per row", "a subgroup per row", "a workgroup per row"};
    for (int texel = 1; texel >= 0; texel--)
        for (int g = 0; g < 3; g++)
            for (int sub = 1; sub >= 0; sub--) {
                if (g == 0 && !sub) continue;
                spk__layer_norm_tuning t = defaults;
                t.texel = texel;
                t.short_row = g == 0 ? UINT32_MAX : 0;
                t.subgroup_row_max = g == 1 ? UINT32_MAX : 0;
                spk_reduction red = g == 0 ? saved : sub ? SPK_REDUCTION_SUBGROUP : SPK_REDUCTION_SHARED_MEMORY;
                spk__st_begin(st, "layer norm", 1e-5, "%s%s, %s", group_names[g],
                              g == 0 ? "" : sub ? ", subgroup reduction" : ", shared-memory reduction",
                              texel ? "texel reads" : "storage-buffer reads");
                const char *why = NULL;
                if (texel && !caps->texel_buffers) why = "device has no float uniform texel buffers";
                if (!why && g == 1 && !fixed_sg) why = "device has no fixed subgroup size";
                if (!why && sub && g > 0 && !caps->subgroup_arithmetic) why = "device has no subgroup arithmetic";
                for (size_t s = 0; !why && s < SPK__ARRAY_LEN(shapes); s++) {
                    uint64_t len = shapes[s][1] % 4 == 0 ? (uint64_t)shapes[s][1] / 4 : (uint64_t)shapes[s][1];
                    uint32_t mine = spk__layer_norm_group(ctx, &t, len);
                    if (mine == spk__layer_norm_group(ctx, &defaults, len) && texel == defaults.texel &&
                        (mine == 1 || red == saved))
                        st->r.used = true;
                }
                ctx->reduction = red;
                for (size_t s = 0; !why && s < SPK__ARRAY_LEN(shapes) && st->fatal == SPK_OK; s++)
                    spk__st_layer_norm_case(st, &t, SPK_DTYPE_F32, shapes[s][0], shapes[s][1], 0.0f);
                if (!why && st->fatal == SPK_OK) spk__st_layer_norm_case(st, &t, SPK_DTYPE_F32, 3, 257, 1e4f);
                ctx->reduction = saved;
                spk__st_end(st, why);
            }
}

void spk__st_unary(spk__selftest *st) {
    for (uint32_t op = SPK__UNARY_ERF; op <= SPK__UNARY_GELU; op++) {
        const char *name = op == SPK__UNARY_ERF ? "erf" : "gelu";
        if (!spk__st_wanted(st, name)) continue;
        spk__st_begin(st, name, op == SPK__UNARY_ERF ? 2e-7 : 1e-6, "%s", "elementwise, storage buffers");
        st->r.used = true;
        int64_t n = 4097;
        spk__st_buffers b = {0};
        float *x = spk__st_alloc(st, &b, n, sizeof *x), *y = spk__st_alloc(st, &b, n, sizeof *y);
        double *ref = spk__st_alloc(st, &b, n, sizeof *ref);
        spk_tensor *tx = NULL, *ty = NULL;
        if (ref) {
            for (int64_t i = 0; i < n; i++) x[i] = -10.0f + 20.0f * (float)i / (float)(n - 1);
            tx = spk__st_tensor(st, 1, &n, x);
            ty = tx ? spk__st_tensor(st, 1, &n, NULL) : NULL;
        }
        if (ty && spk__st_ran(st, spk__unary(st->ctx, op, tx, NULL, ty), "x in [-10, 10]") &&
            spk__st_ran(st, spk_tensor_download(ty, y, n), "x in [-10, 10]")) {
            for (int64_t i = 0; i < n; i++) ref[i] = op == SPK__UNARY_ERF ? erf((double)x[i]) : spk__ref_gelu(x[i]);
            spk__st_compare(st, y, ref, n, "4097 points in [-10,10]");
        }
        spk_tensor_destroy(tx), spk_tensor_destroy(ty);
        spk__st_free(&b);
        spk__st_end(st, NULL);
    }
}

/* ---- attention ---------------------------------------------------------------------------- */

typedef struct spk__st_attention_run {
    const spk__attention_tuning *tuning;
    const spk__attention_args *args;
} spk__st_attention_run;

static spk_status spk__st_record_attention(spk_context *ctx, const void *arg) {
    const spk__st_attention_run *r = arg;
    spk__buffer_ref none = {0};
    return spk__record_attention(ctx, r->tuning, r->args, SPK__ATTENTION_FUSED, none);
}

void spk__st_attention_kernel(const spk_context *ctx, int kernel, uint32_t dim, uint32_t seq, spk__attention_tuning *t) {
    if (kernel == 0) spk__attention_tuning_tiles(ctx, dim, seq, t);
    else spk__attention_tuning_shuffle(ctx, kernel == 2, t);
}

const char *const spk__st_attention_kernel_names[3] = {"shared-memory tiles", "subgroup shuffles, storage-buffer reads",
                                                       "subgroup shuffles, texel reads"};

void spk__st_attention_case(spk__selftest *st, int kernel, spk_dtype ad, spk_normalizer norm, int64_t seq,
                            int64_t heads, int64_t dim, bool causal) {
    spk_context *ctx = st->ctx;
    int64_t batch = 2, hidden = heads * dim, count = batch * seq * hidden, shape[3] = {batch, seq, hidden};
    spk__attention_tuning t, chosen;
    spk__st_attention_kernel(ctx, kernel, (uint32_t)dim, (uint32_t)seq, &t);
    spk__attention_tuning_defaults(ctx, (uint32_t)dim, (uint32_t)seq, &chosen);
    if (t.shuffle == chosen.shuffle && t.texel == chosen.texel) st->r.used = true;
    char text[64];
    snprintf(text, sizeof text, "%s2x%lldx%lldx%lld", causal ? "causal:" : "", (long long)seq, (long long)heads,
             (long long)dim);
    spk__st_buffers b = {0};
    float *q = spk__st_alloc(st, &b, 3 * count, sizeof *q), *y = spk__st_alloc(st, &b, count, sizeof *y);
    double *ref = spk__st_alloc(st, &b, count, sizeof *ref);
    spk_tensor *tq = NULL, *tk = NULL, *tv = NULL, *to = NULL;
    if (ref) {
        spk__st_random(st, q, 3 * count, 2.0f);
        tq = spk__st_tensor_typed(st, ad, 3, shape, q);
        tk = tq ? spk__st_tensor_typed(st, ad, 3, shape, q + count) : NULL;
        tv = tk ? spk__st_tensor_typed(st, ad, 3, shape, q + 2 * count) : NULL;
        to = tv ? spk__st_tensor_typed(st, ad, 3, shape, NULL) : NULL;
    }
    if (to) {
        uint32_t h = (uint32_t)hidden;
        spk__attention_args args = {
            .q = {tq->ref, h, 0, t.texel ? tq->views : NULL, ad}, .k = {tk->ref, h, 0, t.texel ? tk->views : NULL, ad},
            .v = {tv->ref, h, 0, t.texel ? tv->views : NULL, ad}, .out = {to->ref, h, 0, NULL, ad},
            .batch = (uint32_t)batch, .seq = (uint32_t)seq, .heads = (uint32_t)heads, .head_dim = (uint32_t)dim,
            .causal = causal, .norm = norm};
        spk__st_attention_run run = {&t, &args};
        if (spk__st_ran(st, spk__run_sync(ctx, spk__st_record_attention, &run), text) &&
            spk__st_ran(st, spk_tensor_download(to, y, count), text)) {
            if (spk__ref_attention(q, q + count, q + 2 * count, batch, seq, heads, dim, causal, args.norm, ref, NULL))
                spk__st_compare(st, y, ref, count, text);
            else
                spk__st_ran(st, SPK_ERROR_OUT_OF_HOST_MEMORY, text);
        }
    }
    spk_tensor_destroy(tq), spk_tensor_destroy(tk), spk_tensor_destroy(tv), spk_tensor_destroy(to);
    spk__st_free(&b);
}

void spk__st_attention(spk__selftest *st) {
    if (!spk__st_wanted(st, "attention")) return;
    spk_context *ctx = st->ctx;
    static const int64_t cases[][3] = {{1, 1, 1}, {7, 3, 33}, {33, 4, 16}, {257, 2, 64}, {9, 1, 128}};
    /* Each kernel with the seed's softpick on every case, then with the exponential normalizers
     * on two, and on the head size 64 case with one of them per kernel (each normalizer and head
     * size a pipeline of its own: seconds of LLVM on CPU drivers at 64). */
    for (int norm = 0; norm < 3 && st->fatal == SPK_OK; norm++)
        for (int kernel = 0; kernel < 3 && st->fatal == SPK_OK; kernel++) {
            if (norm) spk__st_begin(st, "attention", 1e-5, "%s, %s", spk_normalizer_name((spk_normalizer)norm),
                                    spk__st_attention_kernel_names[kernel]);
            else spk__st_begin(st, "attention", 1e-5, "%s", spk__st_attention_kernel_names[kernel]);
            const char *why = NULL;
            if (kernel > 0 && !spk__attention_shuffle_supported(ctx)) why = "device has no subgroup shuffles of one fixed size";
            if (kernel == 2 && !ctx->caps.texel_buffers) why = "device has no float uniform texel buffers";
            for (size_t c = norm ? 1 : 0; !why && c < (norm ? 4 : SPK__ARRAY_LEN(cases)) && st->fatal == SPK_OK; c++)
                for (int causal = 1; causal >= 0 && st->fatal == SPK_OK && !(c == 3 && norm && (norm + kernel) % 2 == 0); causal--)
                    spk__st_attention_case(st, kernel, SPK_DTYPE_F32, (spk_normalizer)norm, cases[c][0], cases[c][1],
                                           cases[c][2], causal);
            spk__st_end(st, why);
        }
}

/* ---- the model ---------------------------------------------------------------------------- */

/* Fills a model tensor with random values (around `center`) and keeps them for the reference. */
static const float *spk__st_param(spk__selftest *st, spk__st_buffers *keep, spk_tensor *t, float scale, float center) {
    float *v = spk__st_alloc(st, keep, t->count, sizeof *v);
    if (!v) return NULL;
    spk__st_random(st, v, t->count, scale);
    for (int64_t i = 0; i < t->count; i++) v[i] += center;
    spk_status s = spk_tensor_upload(t, v, t->count);
    if (s == SPK_OK && t->dtype != SPK_DTYPE_F32) s = spk_tensor_download(t, v, t->count); /* as stored */
    if (s != SPK_OK) spk__st_ran(st, s, "parameters");
    return s == SPK_OK ? v : NULL;
}

static void spk__st_model_mode(spk__selftest *st, spk_model *m, const spk__ref_model *ref_model, spk_output_mode mode) {
    static const char *modes[] = {"last", "all", "mean"};
    /* SPEC's bounds with 16-bit storage: 1e-3 for 16-bit weights, 1e-2 with F16 activations. */
    const spk_model_config *c = &m->cfg;
    double bound = c->activation_dtype != SPK_DTYPE_F32 ? 1e-2 : c->weights_dtype != SPK_DTYPE_F32 ? 1e-3 : 1e-5;
    if (c->weights_dtype == SPK_DTYPE_F32 && c->activation_dtype == SPK_DTYPE_F32)
        spk__st_begin(st, "model", bound, "forward, output mode %s", modes[mode]);
    else
        spk__st_begin(st, "model", bound, "forward, output mode %s, %s weights, %s activations", modes[mode],
                      spk_dtype_name(c->weights_dtype), spk_dtype_name(c->activation_dtype));
    st->r.used = true;
    spk__ref_model rm = *ref_model;
    rm.cfg.output_mode = mode;
    static const int64_t seqs[] = {1, 7, 33};
    for (size_t i = 0; i < SPK__ARRAY_LEN(seqs) && st->fatal == SPK_OK; i++) {
        int64_t batch = 2, seq = seqs[i], shape[3];
        int ndim;
        char text[48];
        snprintf(text, sizeof text, "2x%lldx%d", (long long)seq, rm.cfg.embed_dim);
        spk__st_buffers b = {0};
        int64_t n_in = batch * seq * rm.cfg.embed_dim, n_out = spk_model_output_shape(m, batch, seq, &ndim, shape);
        float *x = spk__st_alloc(st, &b, n_in, sizeof *x), *y = spk__st_alloc(st, &b, n_out, sizeof *y);
        double *ref = spk__st_alloc(st, &b, n_out, sizeof *ref);
        if (ref) {
            spk__st_random(st, x, n_in, 1.0f);
            for (int64_t j = 0; j < n_out; j++) y[j] = NAN;
            if (spk__st_ran(st, spk_model_set_output_mode(m, mode), text) &&
                spk__st_ran(st, spk_model_forward(m, x, batch, seq, y), text)) {
                if (spk__ref_model_forward(&rm, x, batch, seq, ref)) spk__st_compare(st, y, ref, n_out, text);
                else spk__st_ran(st, SPK_ERROR_OUT_OF_HOST_MEMORY, text);
            }
        }
        spk__st_free(&b);
    }
    spk__st_end(st, NULL);
}

void spk__st_model(spk__selftest *st, spk_dtype wd, spk_dtype ad) {
    if (!spk__st_wanted(st, "model")) return;
    spk_model_config cfg = spk_model_config_default(12);
    cfg.hidden_size = 32, cfg.num_layers = 2, cfg.window_size = 33;
    cfg.weights_dtype = wd, cfg.activation_dtype = ad;
    spk_model *m = NULL;
    spk_status s = spk_model_create(st->ctx, &cfg, &m);
    spk__st_buffers keep[8];
    memset(keep, 0, sizeof keep);
    spk__ref_layer layers[2];
    spk__ref_model rm = {.cfg = cfg, .layers = layers};
    bool ok = s == SPK_OK;
    if (!ok) {
        st->fatal = s;
        return;
    }
    float glorot = 0.35f;
    rm.in_kernel = spk__st_param(st, &keep[0], m->w.input_projection.kernel, glorot, 0);
    rm.in_bias = spk__st_param(st, &keep[0], m->w.input_projection.bias, 0.1f, 0);
    rm.final_gamma = spk__st_param(st, &keep[0], m->w.final_norm.gamma, 0.2f, 1);
    rm.final_beta = spk__st_param(st, &keep[0], m->w.final_norm.beta, 0.1f, 0);
    for (int l = 0; l < 2; l++) {
        spk__layer *L = &m->w.layers[l];
        spk__st_buffers *k = &keep[1 + 3 * l];
        layers[l] = (spk__ref_layer){
            .attn_gamma = spk__st_param(st, k, L->attn_norm.gamma, 0.2f, 1),
            .attn_beta = spk__st_param(st, k, L->attn_norm.beta, 0.1f, 0),
            .qkv_kernel = spk__st_param(st, k, L->qkv.kernel, glorot, 0),
            .qkv_bias = spk__st_param(st, k, L->qkv.bias, 0.1f, 0),
            .out_kernel = spk__st_param(st, k, L->out.kernel, glorot, 0),
            .out_bias = spk__st_param(st, k, L->out.bias, 0.1f, 0),
            .ffn_gamma = spk__st_param(st, k + 1, L->ffn_norm.gamma, 0.2f, 1),
            .ffn_beta = spk__st_param(st, k + 1, L->ffn_norm.beta, 0.1f, 0),
            .up_kernel = spk__st_param(st, k + 1, L->up.kernel, glorot, 0),
            .up_bias = spk__st_param(st, k + 1, L->up.bias, 0.1f, 0),
            .down_kernel = spk__st_param(st, k + 2, L->down.kernel, glorot / 2, 0),
            .down_bias = spk__st_param(st, k + 2, L->down.bias, 0.1f, 0),
        };
    }
    /* Every output mode in float32; the last one with 16-bit storage (the others differ only in
     * float32 kernels after the last block). */
    spk_output_mode last = wd == SPK_DTYPE_F32 && ad == SPK_DTYPE_F32 ? SPK_OUTPUT_MEAN : SPK_OUTPUT_LAST;
    for (int mode = SPK_OUTPUT_LAST; mode <= (int)last && st->fatal == SPK_OK; mode++)
        spk__st_model_mode(st, m, &rm, (spk_output_mode)mode);
    spk_model_destroy(m);
    for (int i = 0; i < 8; i++) spk__st_free(&keep[i]);
}

void spk__st_model_f32(spk__selftest *st) { spk__st_model(st, SPK_DTYPE_F32, SPK_DTYPE_F32); }
