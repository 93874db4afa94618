/* Attention's normalizers (rectified softpick and softmax beside the seed's softpick) against a
 * float64 reference: every kernel of the forward (tiles, the shuffle kernel through storage
 * buffers and texel views, F16 activations) and of the backward, with scores up to 1e4 in size
 * (where an unshifted exponential overflows); the names and the errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention_plan.h"
#include "harness.h"
#include "softpick_plan.h"

/* float64 gradient of the row's scores from dy: ds = J^T dy, the Jacobian of ref_normalize with the
 * maximum held constant (rectified softpick's 1e-6 aside, exact). */
static void ref_dscores(spk_normalizer norm, const double *s, const double *y, const double *dy, int64_t n,
                        double *ds) {
    double dd = 0, m = -INFINITY, sum = 0;
    for (int64_t j = 0; j < n; j++) dd += y[j] * dy[j], m = fmax(m, s[j]);
    for (int64_t j = 0; j < n; j++) {
        double sg = s[j] > 0 ? 1.0 : s[j] < 0 ? -1.0 : 0.0;
        if (norm == SPK_NORMALIZER_SOFTPICK) sum += fabs(s[j]);
        if (norm == SPK_NORMALIZER_RECTIFIED_SOFTPICK) sum += fabs(ref_rect_term(s[j], m));
        ds[j] = norm == SPK_NORMALIZER_SOFTMAX ? y[j] * (dy[j] - dd) : sg; /* the others finish below */
    }
    for (int64_t j = 0; j < n && norm != SPK_NORMALIZER_SOFTMAX; j++) {
        double sg = ds[j];
        if (norm == SPK_NORMALIZER_SOFTPICK) ds[j] = (dy[j] - sg * dd) / (1.0 + sum);
        else ds[j] = m <= 0 ? 0.0 : exp(s[j] - m) / (sum + 1e-6) * ((s[j] > 0 ? dy[j] : 0.0) - sg * dd);
    }
}

/* float64 attention of one batch row ([seq, hidden] each): out, and with g (the output's
 * gradient) dq, dk and dv. */
static void ref_attention(spk_normalizer norm, const float *q, const float *k, const float *v, const float *g,
                          int64_t seq, int64_t heads, int64_t hd, bool causal, double *out, double *dq, double *dk,
                          double *dv) {
    int64_t hidden = heads * hd;
    double *s = malloc((size_t)seq * 4 * sizeof *s), *y = s + seq, *dy = y + seq, *ds = dy + seq;
    assert_non_null(s);
    double scale = 1.0 / sqrt((double)hd);
    for (int64_t i = 0; g && i < seq * hidden; i++) dq[i] = dk[i] = dv[i] = 0;
    for (int64_t h = 0; h < heads; h++)
        for (int64_t i = 0; i < seq; i++) {
            int64_t n = causal ? i + 1 : seq, c = h * hd;
            for (int64_t j = 0; j < n; j++) {
                double dot = 0;
                for (int64_t d = 0; d < hd; d++) dot += (double)q[i * hidden + c + d] * k[j * hidden + c + d];
                s[j] = dot * scale;
            }
            ref_normalize(norm, s, n, y);
            for (int64_t d = 0; d < hd; d++) {
                double acc = 0;
                for (int64_t j = 0; j < n; j++) acc += y[j] * v[j * hidden + c + d];
                out[i * hidden + c + d] = acc;
            }
            if (!g) continue;
            for (int64_t j = 0; j < n; j++) {
                dy[j] = 0;
                for (int64_t d = 0; d < hd; d++) dy[j] += (double)g[i * hidden + c + d] * v[j * hidden + c + d];
            }
            ref_dscores(norm, s, y, dy, n, ds);
            for (int64_t j = 0; j < n; j++)
                for (int64_t d = 0; d < hd; d++) {
                    dq[i * hidden + c + d] += ds[j] * k[j * hidden + c + d] * scale;
                    dk[j * hidden + c + d] += ds[j] * q[i * hidden + c + d] * scale;
                    dv[j * hidden + c + d] += y[j] * g[i * hidden + c + d];
                }
        }
    free(s);
}

/* One case's data: q scaled by `q_scale` (scores of about q_scale * 3 in size), host and device. */
typedef struct norm_case {
    int64_t batch, seq, heads, hd, n;
    bool causal;
    spk_dtype dtype;
    float *host[4]; /* q, k, v, and the output's gradient */
    spk_tensor *t[5]; /* q, k, v, out, r */
} norm_case;

static void case_init(spk_context *ctx, norm_case *c, int64_t seq, int64_t heads, int64_t hd, bool causal,
                      double q_scale, spk_dtype dtype) {
    *c = (norm_case){.batch = 2, .seq = seq, .heads = heads, .hd = hd, .causal = causal, .dtype = dtype};
    c->n = c->batch * seq * heads * hd;
    int64_t shape[3] = {c->batch, seq, heads * hd}, rs[3] = {c->batch, heads, seq};
    for (int i = 0; i < 4; i++) {
        c->host[i] = test_alloc_floats(c->n);
        test_fill_random(c->host[i], c->n, (uint64_t)(seq * 31 + hd * 7 + i));
    }
    for (int64_t i = 0; i < c->n; i++) c->host[0][i] *= (float)q_scale;
    for (int i = 0; i < 3; i++) test_round_to(dtype, c->host[i], c->n);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(spk_tensor_create_typed(ctx, dtype, 3, shape, &c->t[i]), SPK_OK);
        if (i < 3) assert_int_equal(spk_tensor_upload(c->t[i], c->host[i], c->n), SPK_OK);
        else test_poison(c->t[i]);
    }
    assert_int_equal(spk_tensor_create(ctx, 3, rs, &c->t[4]), SPK_OK);
}

static void case_free(norm_case *c) {
    for (int i = 0; i < 4; i++) free(c->host[i]);
    for (int i = 0; i < 5; i++) spk_tensor_destroy(c->t[i]);
}

/* max |got - ref| / max |ref| over the batch, for the output (which 0) or dq, dk, dv (1-3). */
static double case_error(const norm_case *c, spk_normalizer norm, const float *got, int which) {
    int64_t row = c->seq * c->heads * c->hd;
    double *ref = malloc((size_t)row * 4 * sizeof *ref);
    assert_non_null(ref);
    double err = 0, scale = 0;
    for (int64_t b = 0; b < c->batch; b++) {
        const float *g = which ? c->host[3] + b * row : NULL;
        ref_attention(norm, c->host[0] + b * row, c->host[1] + b * row, c->host[2] + b * row, g, c->seq, c->heads, c->hd,
                      c->causal, ref, ref + row, ref + 2 * row, ref + 3 * row);
        for (int64_t i = 0; i < row; i++) {
            double want = ref[which * row + i];
            err = fmax(err, fabs(want - got[b * row + i])), scale = fmax(scale, fabs(want));
            if (isnan(got[b * row + i])) err = INFINITY;
        }
    }
    free(ref);
    return err / (scale > 0 ? scale : 1);
}

typedef struct fused_run {
    const spk__attention_args *args;
    const spk__attention_tuning *tuning;
} fused_run;

static spk_status record_fused(spk_context *ctx, const void *arg) {
    const fused_run *f = arg;
    spk__buffer_ref none = {0};
    return spk__record_attention(ctx, f->tuning, f->args, SPK__ATTENTION_FUSED, none);
}

static const spk_normalizer exp_forms[2] = {SPK_NORMALIZER_RECTIFIED_SOFTPICK, SPK_NORMALIZER_SOFTMAX};

/* The unfused path (the benchmark's reference): the scores stored with -inf for future keys, the
 * op along the keys, the product with v. */
typedef struct unfused_run {
    const spk__attention_args *args;
    const spk__attention_tuning *tuning;
    spk_tensor *scores;
} unfused_run;

static spk_status record_unfused(spk_context *ctx, const void *arg) {
    const unfused_run *u = arg;
    spk__buffer_ref s = spk__tensor_ref(u->scores);
    spk_status st = spk__record_attention(ctx, u->tuning, u->args, SPK__ATTENTION_SCORES, s);
    if (st == SPK_OK) st = spk__record_normalize(ctx, NULL, u->scores, -1, u->args->norm, u->scores);
    if (st == SPK_OK) st = spk__record_attention(ctx, u->tuning, u->args, SPK__ATTENTION_PRODUCT, s);
    return st;
}

/* The forward's bound: float32 scores carry rounding errors of about 1e-7 of their size, which an
 * exponential turns into relative errors of the weights as large: the bound grows with q's scale
 * (scores of about 3 per unit of it). */
static double forward_bound(double q_scale, spk_dtype dtype) {
    return (dtype == SPK_DTYPE_F16 ? 1e-3 : 1e-5) * fmax(1.0, q_scale);
}

/* Every forward kernel, each exponential form, scores from about 3 to about 1e4 in size. */
static void forward_every_kernel(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    static const struct {
        int64_t seq, heads, hd;
        bool causal;
    } shapes[] = {{1, 1, 1, true}, {17, 3, 16, false}, {61, 2, 33, true}, {300, 4, 64, true}, {40, 1, 128, false}};
    static const double q_scales[] = {1.0, 100.0, 3000.0};
    bool shuffle = spk__attention_shuffle_supported(ctx);
    /* Each kernel compiles per head size and normalizer (seconds of LLVM at 64 and 128 on CPU
     * drivers): at the two large head sizes each kernel runs one normalizer, the other at the
     * other size; F16 reads take one shape. */
    for (int dt = 0; dt < (ctx->caps.storage16 ? 2 : 1); dt++)
        for (size_t si = dt; si < (dt ? 2 : sizeof shapes / sizeof *shapes); si++)
            for (size_t qi = 0; qi < (dt ? 1 : 3); qi++) {
                norm_case c;
                case_init(ctx, &c, shapes[si].seq, shapes[si].heads, shapes[si].hd, shapes[si].causal, q_scales[qi],
                          dt ? SPK_DTYPE_F16 : SPK_DTYPE_F32);
                uint32_t h = (uint32_t)(c.heads * c.hd);
                spk__attention_tuning kernels[3];
                spk__attention_tuning_tiles(ctx, (uint32_t)c.hd, (uint32_t)c.seq, &kernels[0]);
                spk__attention_tuning_shuffle(ctx, false, &kernels[1]);
                spk__attention_tuning_shuffle(ctx, true, &kernels[2]);
                float *got = test_alloc_floats(c.n);
                for (int nf = 0; nf < 2; nf++)
                    for (int kn = 0; kn < (shuffle ? 3 : 1); kn++) {
                        if (c.hd >= 64 && (nf + kn + si) % 2) continue;
                        spk__attention_args args = {
                            .q = {spk__tensor_ref(c.t[0]), h, 0, c.t[0]->views, c.dtype},
                            .k = {spk__tensor_ref(c.t[1]), h, 0, c.t[1]->views, c.dtype},
                            .v = {spk__tensor_ref(c.t[2]), h, 0, c.t[2]->views, c.dtype},
                            .out = {spk__tensor_ref(c.t[3]), h, 0, NULL, c.dtype},
                            .batch = (uint32_t)c.batch, .seq = (uint32_t)c.seq, .heads = (uint32_t)c.heads,
                            .head_dim = (uint32_t)c.hd, .causal = c.causal, .norm = exp_forms[nf],
                        };
                        /* Fused, then (float32, the first scale) unfused through the op. */
                        for (int unfused = 0; unfused < (dt == 0 && qi == 0 ? 2 : 1); unfused++) {
                            fused_run f = {&args, &kernels[kn]};
                            unfused_run u = {&args, &kernels[kn], NULL};
                            int64_t s_shape[4] = {c.batch, c.heads, c.seq, c.seq};
                            if (unfused) assert_int_equal(spk_tensor_create(ctx, 4, s_shape, &u.scores), SPK_OK);
                            test_poison(c.t[3]);
                            assert_int_equal(spk__run_sync(ctx, unfused ? record_unfused : record_fused, unfused ? (const void *)&u : &f), SPK_OK);
                            spk_tensor_destroy(u.scores);
                            assert_int_equal(spk_tensor_download(c.t[3], got, c.n), SPK_OK);
                            double err = case_error(&c, exp_forms[nf], got, 0);
                            if (!(err <= forward_bound(q_scales[qi], c.dtype)))
                                fail_msg("%s%s, kernel %d, %s, seq %lld heads %lld head size %lld causal %d, q x %g: error %.3g",
                                         spk_normalizer_name(exp_forms[nf]), unfused ? " unfused" : "", kn,
                                         spk_dtype_name(c.dtype), (long long)c.seq, (long long)c.heads, (long long)c.hd,
                                         c.causal, q_scales[qi], err);
                        }
                    }
                free(got);
                case_free(&c);
            }
    test_assert_no_validation();
}

/* The public op with each normalizer (the device's own kernel), the training forward's row
 * statistics feeding every backward kernel, and the same bits on a second run. */
static void backward_every_kernel(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    static const struct {
        int64_t seq, heads, hd;
        bool causal;
    } shapes[] = {{17, 2, 16, true}, {61, 3, 8, false}, {130, 1, 64, true}};
    /* (Not a sequence of one: there rectified softpick's dq and dk are e (1 - y) dP with 1 - y
     * about 1e-6, left after D = dO . O cancels dP, a float32 rounding of D in size: see
     * shaders/normalizer.glsl.) */
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
        for (int big = 0; big < 2; big++)
            for (int nf = 0; nf < 2; nf++) {
                norm_case c;
                case_init(ctx, &c, shapes[si].seq, shapes[si].heads, shapes[si].hd, shapes[si].causal, big ? 100.0 : 1.0,
                          SPK_DTYPE_F32);
                spk_attention_desc desc = {.num_heads = (int)c.heads, .causal = c.causal, .normalizer = exp_forms[nf]};
                float *got = test_alloc_floats(4 * c.n), *again = test_alloc_floats(3 * c.n);
                assert_int_equal(spk_attention(ctx, &desc, c.t[0], c.t[1], c.t[2], c.t[3]), SPK_OK);
                assert_int_equal(spk_tensor_download(c.t[3], got, c.n), SPK_OK);
                double err = case_error(&c, exp_forms[nf], got, 0);
                if (!(err <= forward_bound(big ? 100.0 : 1.0, SPK_DTYPE_F32)))
                    fail_msg("spk_attention, %s, case %zu: error %.3g", spk_normalizer_name(exp_forms[nf]), si, err);
                assert_int_equal(spk_attention_train(ctx, &desc, c.t[0], c.t[1], c.t[2], c.t[3], c.t[4]), SPK_OK);
                int64_t shape[3] = {c.batch, c.seq, c.heads * c.hd};
                spk_tensor *tg = NULL, *d[3] = {NULL, NULL, NULL};
                assert_int_equal(spk_tensor_create(ctx, 3, shape, &tg), SPK_OK);
                assert_int_equal(spk_tensor_upload(tg, c.host[3], c.n), SPK_OK);
                for (int i = 0; i < 3; i++) assert_int_equal(spk_tensor_create(ctx, 3, shape, &d[i]), SPK_OK);
                spk_attention_grads grads = {d[0], d[1], d[2]};
                /* Kernels: the default, the shuffle kernel through storage buffers, the exchange
                 * through shared memory in groups of 16 and of 4 (at small head sizes only: on CPU
                 * drivers each barrier-laden variant takes seconds of LLVM, test_attention's note). */
                for (int kn = 0; kn < (c.hd <= 16 ? 4 : 2); kn++) {
                    if ((kn == 2 && c.hd > 8) || (c.hd >= 64 && (kn + nf) % 2)) continue; /* as the forward's */
                    spk__attention_tuning tuning;
                    spk__attention_backward_tuning(ctx, false, kn >= 2, &tuning);
                    if (kn == 3) tuning.workgroup = 4;
                    for (int run = 0; run < 2; run++) {
                        for (int i = 0; i < 3; i++) test_poison(d[i]);
                        spk_status s = spk__attention_backward_tuned(ctx, kn ? &tuning : NULL, &desc, c.t[0], c.t[1],
                                                                     c.t[2], c.t[3], c.t[4], tg, &grads);
                        if (s != SPK_OK) fail_msg("backward: %s", spk_context_last_error(ctx));
                        for (int i = 0; i < 3; i++)
                            assert_int_equal(spk_tensor_download(d[i], (run ? again : got) + i * c.n, c.n), SPK_OK);
                    }
                    assert_memory_equal(got, again, (size_t)(3 * c.n) * sizeof *got);
                    for (int i = 0; i < 3; i++) {
                        double e = case_error(&c, exp_forms[nf], got + i * c.n, 1 + i);
                        if (!(e <= 1e-4 * (big ? 100.0 : 1.0)))
                            fail_msg("%s backward, kernel %d, case %zu, scores x%d, d%c: error %.3g",
                                     spk_normalizer_name(exp_forms[nf]), kn, si, big ? 100 : 1, "qkv"[i], e);
                    }
                }
                spk_tensor_destroy(tg);
                for (int i = 0; i < 3; i++) spk_tensor_destroy(d[i]);
                free(got), free(again);
                case_free(&c);
            }
    test_assert_no_validation();
}

/* The standalone op (spk_normalize and its backward) on [outer, n, inner] around `axis` against
 * float64 per row (or column), masked -inf elements left out: the relative errors of y and dx. */
static void check_op(spk_context *ctx, spk_normalizer norm, int ndim, const int64_t *shape, int axis, double scale,
                     bool masked, double rel[2]) {
    int64_t count = 1, outer = 1, inner = 1, n = shape[axis];
    for (int i = 0; i < ndim; i++) count *= shape[i];
    for (int i = 0; i < axis; i++) outer *= shape[i];
    for (int i = axis + 1; i < ndim; i++) inner *= shape[i];
    float *x = test_alloc_floats(count), *dy = test_alloc_floats(count), *got = test_alloc_floats(2 * count);
    test_fill_random(x, count, (uint64_t)(count + n)), test_fill_random(dy, count, 9);
    for (int64_t i = 0; i < count; i++) x[i] *= (float)scale;
    /* Masked elements, never a whole row: every 5th along the axis from the second on. */
    for (int64_t o = 0; masked && o < outer; o++)
        for (int64_t j = 1; j < n; j += 5)
            for (int64_t k = 0; k < inner; k++) x[(o * n + j) * inner + k] = -INFINITY;
    spk_tensor *tx = test_tensor(ctx, ndim, shape, x), *tdy = test_tensor(ctx, ndim, shape, dy);
    spk_tensor *ty = test_tensor(ctx, ndim, shape, NULL), *tdx = test_tensor(ctx, ndim, shape, NULL);
    if (spk_normalize(ctx, tx, axis, norm, ty) != SPK_OK || spk_normalize_backward(ctx, tx, tdy, axis, norm, tdx) != SPK_OK)
        fail_msg("%s: %s", spk_normalizer_name(norm), spk_context_last_error(ctx));
    assert_int_equal(spk_tensor_download(ty, got, count), SPK_OK);
    assert_int_equal(spk_tensor_download(tdx, got + count, count), SPK_OK);
    double *s = malloc((size_t)n * 4 * sizeof *s), *y = s + n, *g = y + n, *ds = g + n;
    int64_t *live = malloc((size_t)n * sizeof *live);
    assert_non_null(s), assert_non_null(live);
    double err[2] = {0, 0}, big[2] = {0, 0};
    for (int64_t o = 0; o < outer; o++)
        for (int64_t k = 0; k < inner; k++) {
            int64_t m = 0;
            for (int64_t j = 0; j < n; j++) {
                int64_t at = (o * n + j) * inner + k;
                if (!isinf(x[at])) live[m] = at, s[m] = x[at], g[m] = dy[at], m++;
            }
            ref_normalize(norm, s, m, y);
            ref_dscores(norm, s, y, g, m, ds);
            for (int64_t j = 0, l = 0; j < n; j++) {
                int64_t at = (o * n + j) * inner + k;
                bool on = l < m && live[l] == at;
                double want[2] = {on ? y[l] : 0.0, on ? ds[l] : 0.0};
                for (int w = 0; w < 2; w++) {
                    double e = fabs(want[w] - got[w * count + at]);
                    err[w] = isnan(e) ? INFINITY : fmax(err[w], e), big[w] = fmax(big[w], fabs(want[w]));
                }
                l += on;
            }
        }
    spk_tensor_destroy(tx), spk_tensor_destroy(tdy), spk_tensor_destroy(ty), spk_tensor_destroy(tdx);
    free(x), free(dy), free(got), free(s), free(live);
    for (int w = 0; w < 2; w++) rel[w] = err[w] / big[w];
}

/* Rows (an invocation, a subgroup or a workgroup each; split into segments when long; vec4 loads
 * or not) and columns (contiguous or folded pairs; split when long), scores to 1e3, masked or not. */
static void op_every_path(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    static const struct {
        int ndim;
        int64_t shape[3];
        int axis;
    } cases[] = {{2, {7, 5}, 1},     {2, {3, 300}, 1}, {2, {1, 40000}, 1}, {2, {2, 4099}, -1},
                 {3, {3, 50, 5}, 1}, {3, {2, 3000, 8}, 1}, {3, {4, 100, 2}, 1}, {2, {129, 3}, 0}};
    for (int nf = 0; nf < 2; nf++)
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
            for (int v = 0; v < 3; v++) {
                double scale = v == 2 ? 1000.0 : 1.0;
                int axis = cases[c].axis < 0 ? cases[c].axis + cases[c].ndim : cases[c].axis;
                double err[2];
                check_op(ctx, exp_forms[nf], cases[c].ndim, cases[c].shape, axis, scale, v == 1, err);
                /* Scores of 1e3 carry float32 rounding of 6e-5 into the exponentials; the
                 * backward's dy - D cancels where one element holds nearly all the weight (as
                 * attention's does), so there it is checked only for being finite. */
                if (!(err[0] <= (v == 2 ? 1e-3 : 1e-5)) || !(err[1] <= (v == 2 ? INFINITY : 1e-5)))
                    fail_msg("%s, case %zu, scale %g, masked %d: errors y %.3g, dx %.3g",
                             spk_normalizer_name(exp_forms[nf]), c, scale, v == 1, err[0], err[1]);
            }
    test_assert_no_validation();
}

/* Names both ways; an unknown normalizer is a clear error, and the output stays untouched. */
static void names_and_errors(void **state) {
    (void)state;
    static const char *names[3] = {"softpick", "rectified-softpick", "softmax"};
    for (int i = 0; i < 3; i++) {
        spk_normalizer n = SPK_NORMALIZER_SOFTMAX;
        assert_string_equal(spk_normalizer_name((spk_normalizer)i), names[i]);
        assert_int_equal(spk_normalizer_parse(names[i], &n), SPK_OK);
        assert_int_equal(n, i);
    }
    spk_normalizer n = SPK_NORMALIZER_SOFTMAX;
    assert_int_equal(spk_normalizer_parse("rectified", &n), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_normalizer_parse(NULL, &n), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(n, SPK_NORMALIZER_SOFTMAX);
    assert_null(spk_normalizer_name((spk_normalizer)3));
    spk_context *ctx = test_shared_context();
    norm_case c;
    case_init(ctx, &c, 4, 1, 4, true, 1.0, SPK_DTYPE_F32);
    spk_attention_desc desc = {.num_heads = 1, .causal = true, .normalizer = (spk_normalizer)7};
    assert_int_equal(spk_attention(ctx, &desc, c.t[0], c.t[1], c.t[2], c.t[3]), SPK_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(spk_context_last_error(ctx), "rectified-softpick"));
    assert_int_equal(spk_attention(ctx, NULL, c.t[0], c.t[1], c.t[2], c.t[3]), SPK_ERROR_INVALID_ARGUMENT);
    spk_model_config cfg = spk_model_config_default(4);
    cfg.attention = (spk_normalizer)-1;
    char why[128];
    assert_int_equal(spk_model_config_check(&cfg, why, sizeof why), SPK_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(why, "softmax"));
    case_free(&c);
    test_assert_no_validation();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_and_errors),
        cmocka_unit_test(forward_every_kernel),
        cmocka_unit_test(backward_every_kernel),
        cmocka_unit_test(op_every_path),
    };
    return cmocka_run_group_tests(tests, NULL, test_teardown_shared_context);
}
