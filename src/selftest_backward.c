/* The self-test's backward lines: every backward kernel (softpick along rows and columns, each
 * matmul kernel's transposed reads, GELU, layer norm, each attention kernel) and the losses,
 * against the float64 references of reference.c, outputs poisoned with NaN first. */
#include "selftest.h"
#include "fault.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention_plan.h"
#include "layer_norm_plan.h"
#include "loss_plan.h"
#include "matmul_plan.h"
#include "reference.h"
#include "softpick_plan.h"

/* Runs and downloads `count` outputs of `t`; false (the line failed or stopped) otherwise. */
static bool spk__st_get(spk__selftest *st, spk_tensor *t, float *out, const char *shape) {
    return t && spk__st_ran(st, spk_tensor_download(t, out, t->count), shape);
}

void spk__st_softpick_backward(spk__selftest *st) {
    if (!spk__st_wanted(st, "softpick")) return;
    static const int64_t shapes[][3] = {{5, 1, 1}, {3, 7, 1}, {2, 4097, 1}, {1, 33, 5}, {2, 257, 8}, {3, 6, 2}};
    spk__st_begin(st, "softpick", 1e-5, "backward, rows and columns as this device reduces them");
    st->r.used = true;
    for (size_t c = 0; c < SPK__ARRAY_LEN(shapes) && st->fatal == SPK_OK; c++) {
        int64_t outer = shapes[c][0], n = shapes[c][1], inner = shapes[c][2], count = outer * n * inner;
        int64_t shape[3] = {outer, n, inner};
        char text[48];
        snprintf(text, sizeof text, "%lldx%lldx%lld", (long long)outer, (long long)n, (long long)inner);
        spk__st_buffers b = {0};
        float *x = spk__st_alloc(st, &b, 2 * count, sizeof *x), *y = spk__st_alloc(st, &b, count, sizeof *y);
        double *ref = spk__st_alloc(st, &b, count, sizeof *ref);
        spk_tensor *tx = NULL, *tdy = NULL, *tdx = NULL;
        if (ref) {
            spk__st_random(st, x, 2 * count, 3.0f);
            tx = spk__st_tensor(st, 3, shape, x);
            tdy = tx ? spk__st_tensor(st, 3, shape, x + count) : NULL;
            tdx = tdy ? spk__st_tensor(st, 3, shape, NULL) : NULL;
        }
        if (tdx && spk__st_ran(st, spk__softpick_backward_tuned(st->ctx, NULL, tx, tdy, 1, tdx), text) &&
            spk__st_get(st, tdx, y, text)) {
            spk__ref_softpick_backward(x, x + count, outer, n, inner, ref);
            spk__st_compare(st, y, ref, count, text);
        }
        spk_tensor_destroy(tx), spk_tensor_destroy(tdy), spk_tensor_destroy(tdx);
        spk__st_free(&b);
    }
    spk__st_end(st, NULL);
}

/* dA, dB and dbias of one product through one kernel (reads of A^T and B^T as stored). */
static void spk__st_matmul_grads_case(spk__selftest *st, const spk__matmul_tuning *t, int64_t batch, int64_t m,
                                      int64_t n, int64_t k, bool shared_b) {
    int64_t nb = shared_b ? 1 : batch, na = batch * m * k, nbk = nb * k * n, nc = batch * m * n;
    int64_t as[3] = {batch, m, k}, bs[3] = {batch, k, n}, cs[3] = {batch, m, n};
    char text[64];
    snprintf(text, sizeof text, "%s%lldx%lldx%lldx%lld", shared_b ? "" : "batched B:", (long long)batch, (long long)m,
             (long long)n, (long long)k);
    spk__st_buffers b = {0};
    float *in = spk__st_alloc(st, &b, na + nbk + nc, sizeof *in), *got = spk__st_alloc(st, &b, na + nbk + n, sizeof *got);
    double *ref = spk__st_alloc(st, &b, na + nbk + n, sizeof *ref);
    spk_tensor *ta = NULL, *tb = NULL, *tdc = NULL, *tda = NULL, *tdb = NULL, *tdbias = NULL;
    if (ref) {
        spk__st_random(st, in, na + nbk + nc, 1.0f);
        ta = spk__st_tensor(st, 3, as, in);
        tb = ta ? spk__st_tensor(st, shared_b ? 2 : 3, shared_b ? bs + 1 : bs, in + na) : NULL;
        tdc = tb ? spk__st_tensor(st, 3, cs, in + na + nbk) : NULL;
        tda = tdc ? spk__st_tensor(st, 3, as, NULL) : NULL;
        tdb = tda ? spk__st_tensor(st, shared_b ? 2 : 3, shared_b ? bs + 1 : bs, NULL) : NULL;
        tdbias = tdb ? spk__st_tensor(st, 1, &n, NULL) : NULL;
    }
    spk_matmul_grads g = {.da = tda, .db = tdb, .dbias = tdbias};
    if (tdbias && spk__st_ran(st, spk__matmul_backward_tuned(st->ctx, t, ta, tb, NULL, tdc, &g), text) &&
        spk__st_get(st, tda, got, text) && spk__st_get(st, tdb, got + na, text) &&
        spk__st_get(st, tdbias, got + na + nbk, text)) {
        spk__ref_matmul_grads(in, in + na, in + na + nbk, batch, m, n, k, shared_b, ref, ref + na, ref + na + nbk);
        spk__st_compare(st, got, ref, na, text);
        spk__st_compare(st, got + na, ref + na, nbk, text);
        spk__st_compare(st, got + na + nbk, ref + na + nbk, n, text);
    }
    spk_tensor *all[] = {ta, tb, tdc, tda, tdb, tdbias};
    for (size_t i = 0; i < SPK__ARRAY_LEN(all); i++) spk_tensor_destroy(all[i]);
    spk__st_free(&b);
}

void spk__st_matmul_backward(spk__selftest *st) {
    if (!spk__st_wanted(st, "matmul")) return;
    spk_context *ctx = st->ctx;
    const spk__device_caps *caps = &ctx->caps;
    spk__matmul_tuning defaults, kernels[4];
    spk__matmul_tuning_defaults(ctx, &defaults);
    spk__st_matmul_kernels(ctx, kernels);
    const char *const *names = spk__st_matmul_kernel_names;
    /* Stored rows all awkward, then all whole vec4s: each layout is its own pipeline (on CPU
     * drivers an LLVM compile each), so the alternatives to this device's kernel run the first. */
    static const int64_t shapes[][5] = {{1, 7, 33, 65, 1}, {2, 33, 7, 17, 0}, {3, 5, 9, 1, 1}, {2, 12, 8, 16, 1}};
    bool shuffles = caps->subgroup_shuffle && caps->min_subgroup_size == caps->max_subgroup_size;
    for (int kernel = 0; kernel < 4 && st->fatal == SPK_OK; kernel++) {
        spk__st_begin(st, "matmul", 1e-5, "backward (dA = dC B^T, dB = A^T dC, dbias), %s", names[kernel]);
        st->r.used = memcmp(&kernels[kernel], &defaults, sizeof defaults) == 0;
        const char *why = NULL;
        if (kernel >= 2 && !shuffles) why = "device has no subgroup shuffles of one fixed size";
        if (kernel == 3 && !kernels[3].texel) why = "device has no float uniform texel buffers";
        size_t shape_count = st->r.used ? SPK__ARRAY_LEN(shapes) : 2;
        for (size_t s = 0; !why && s < shape_count && st->fatal == SPK_OK; s++)
            spk__st_matmul_grads_case(st, &kernels[kernel], shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3],
                                      shapes[s][4] != 0);
        spk__st_end(st, why);
    }
}

void spk__st_gelu_backward(spk__selftest *st) {
    if (!spk__st_wanted(st, "gelu")) return;
    spk__st_begin(st, "gelu", 1e-6, "backward, elementwise");
    st->r.used = true;
    const int64_t n = 20001;
    spk__st_buffers b = {0};
    float *x = spk__st_alloc(st, &b, 3 * n, sizeof *x);
    double *ref = spk__st_alloc(st, &b, n, sizeof *ref);
    spk_tensor *tx = NULL, *tdy = NULL, *tdx = NULL;
    if (ref) {
        for (int64_t i = 0; i < n; i++) x[i] = (float)(-10.0 + 20.0 * (double)i / (double)(n - 1));
        spk__st_random(st, x + n, n, 1.0f);
        for (int64_t i = 0; i < n; i++) {
            double v = x[i];
            ref[i] = x[n + i] * (0.5 * (1 + erf(v / sqrt(2.0))) + v * exp(-0.5 * v * v) / sqrt(2 * 3.14159265358979323846));
        }
        tx = spk__st_tensor(st, 1, &n, x);
        tdy = tx ? spk__st_tensor(st, 1, &n, x + n) : NULL;
        tdx = tdy ? spk__st_tensor(st, 1, &n, NULL) : NULL;
    }
    if (tdx && spk__st_ran(st, spk_gelu_backward(st->ctx, tx, tdy, tdx), "x in [-10, 10]") &&
        spk__st_get(st, tdx, x + 2 * n, "x in [-10, 10]")) {
        spk__st_compare(st, x + 2 * n, ref, n, "x in [-10, 10]");
    }
    spk_tensor_destroy(tx), spk_tensor_destroy(tdy), spk_tensor_destroy(tdx);
    spk__st_free(&b);
    spk__st_end(st, NULL);
}

void spk__st_layer_norm_backward(spk__selftest *st) {
    if (!spk__st_wanted(st, "layer norm")) return;
    spk_context *ctx = st->ctx;
    spk__layer_norm_tuning tunings[2];
    spk__layer_norm_tuning_defaults(ctx, &tunings[0]);
    tunings[1] = (spk__layer_norm_tuning){.workgroup = 64, .cache_max = 16, .rows_max = 1};
    static const char *names[] = {"this device's grouping", "a workgroup per row, storage-buffer reads"};
    static const int64_t shapes[][2] = {{3, 1}, {5, 33}, {2, 257}, {60, 64}, {1, 4097}};
    for (int t = 0; t < 2 && st->fatal == SPK_OK; t++) {
        spk__st_begin(st, "layer norm", 1e-5, "backward (dx, dgamma, dbeta from the kept stats), %s", names[t]);
        st->r.used = t == 0;
        for (size_t c = 0; c < SPK__ARRAY_LEN(shapes) && st->fatal == SPK_OK; c++) {
            int64_t rows = shapes[c][0], n = shapes[c][1], count = rows * n, xs[2] = {rows, n}, ss[2] = {rows, 2};
            char text[32];
            snprintf(text, sizeof text, "%lldx%lld", (long long)rows, (long long)n);
            spk__st_buffers b = {0};
            float *in = spk__st_alloc(st, &b, 2 * count + 2 * n, sizeof *in);
            float *got = spk__st_alloc(st, &b, count + 2 * n, sizeof *got);
            double *ref = spk__st_alloc(st, &b, count + 2 * n, sizeof *ref);
            spk_tensor *tx = NULL, *tdy = NULL, *tg = NULL, *tbeta = NULL, *ty = NULL, *tst = NULL, *tdx = NULL,
                       *tdg = NULL, *tdb = NULL;
            if (ref) {
                spk__st_random(st, in, 2 * count + 2 * n, 2.0f);
                tx = spk__st_tensor(st, 2, xs, in);
                tdy = tx ? spk__st_tensor(st, 2, xs, in + count) : NULL;
                tg = tdy ? spk__st_tensor(st, 1, &n, in + 2 * count) : NULL;
                tbeta = tg ? spk__st_tensor(st, 1, &n, in + 2 * count + n) : NULL;
                ty = tbeta ? spk__st_tensor(st, 2, xs, NULL) : NULL;
                tst = ty ? spk__st_tensor(st, 2, ss, NULL) : NULL;
                tdx = tst ? spk__st_tensor(st, 2, xs, NULL) : NULL;
                tdg = tdx ? spk__st_tensor(st, 1, &n, NULL) : NULL;
                tdb = tdg ? spk__st_tensor(st, 1, &n, NULL) : NULL;
            }
            spk_layer_norm_desc desc = {.stats = tst};
            spk_layer_norm_grads g = {.dx = tdx, .dgamma = tdg, .dbeta = tdb};
            if (tdb && spk__st_ran(st, spk__layer_norm_tuned(ctx, &tunings[t], tx, tg, tbeta, &desc, ty), text) &&
                spk__st_ran(st, spk__layer_norm_backward_tuned(ctx, &tunings[t], tx, tg, tst, tdy, &g), text) &&
                spk__st_get(st, tdx, got, text) && spk__st_get(st, tdg, got + count, text) &&
                spk__st_get(st, tdb, got + count + n, text)) {
                spk__ref_layer_norm_backward(in, in + 2 * count, in + count, rows, n, 1e-5, ref, ref + count,
                                             ref + count + n);
                spk__st_compare(st, got, ref, count, text);
                spk__st_compare(st, got + count, ref + count, n, text);
                spk__st_compare(st, got + count + n, ref + count + n, n, text);
            }
            spk_tensor *all[] = {tx, tdy, tg, tbeta, ty, tst, tdx, tdg, tdb};
            for (size_t i = 0; i < SPK__ARRAY_LEN(all); i++) spk_tensor_destroy(all[i]);
            spk__st_free(&b);
        }
        spk__st_end(st, NULL);
    }
}

void spk__st_attention_backward(spk__selftest *st) {
    if (!spk__st_wanted(st, "attention")) return;
    spk_context *ctx = st->ctx;
    /* Each head size is a pipeline of each pass (on CPU drivers an LLVM compile each): the kernel
     * this device uses runs four, the alternatives the awkward one. */
    static const int64_t cases[][3] = {{7, 3, 5}, {1, 1, 1}, {33, 2, 16}, {70, 1, 64}};
    static const char *names[] = {"subgroup shuffles, texel reads", "subgroup shuffles, storage-buffer reads",
                                  "exchange through shared memory"};
    bool cpu = ctx->caps.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    for (int nk = 0; nk < 9 && st->fatal == SPK_OK; nk++) {
        int kernel = nk % 3;
        spk_normalizer norm = (spk_normalizer)(nk / 3);
        if (norm) spk__st_begin(st, "attention", 2e-5, "backward, %s, %s", spk_normalizer_name(norm), names[kernel]);
        else spk__st_begin(st, "attention", 2e-5, "backward (dQ pass, dK/dV pass), %s", names[kernel]);
        bool shuffles = spk__attention_shuffle_supported(ctx);
        st->r.used = kernel == 2 ? !shuffles : shuffles && (kernel == 0) == (cpu && ctx->caps.texel_buffers);
        const char *why = NULL;
        if (kernel < 2 && !shuffles) why = "device has no subgroup shuffles of one fixed size";
        if (kernel == 0 && !ctx->caps.texel_buffers) why = "device has no float uniform texel buffers";
        /* The exponential forms skip the sequence of one (case 1): rectified softpick's dq and dk there
         * are e (1 - y) dP, 1 - y about 1e-6, the float32 rounding of D's cancellation in size
         * (shaders/normalizer.glsl). */
        size_t case_count = !st->r.used ? 1 : norm ? 3 : SPK__ARRAY_LEN(cases);
        for (size_t c = 0; !why && c < case_count && st->fatal == SPK_OK; c += norm && c == 0 ? 2 : 1)
            for (int causal = 1; causal >= 0 && st->fatal == SPK_OK; causal--) {
                int64_t seq = cases[c][0], heads = cases[c][1], dim = cases[c][2], batch = 2;
                int64_t hidden = heads * dim, count = batch * seq * hidden, shape[3] = {batch, seq, hidden};
                int64_t rs[3] = {batch, heads, seq};
                char text[64];
                snprintf(text, sizeof text, "%s2x%lldx%lldx%lld", causal ? "causal:" : "", (long long)seq,
                         (long long)heads, (long long)dim);
                spk__st_buffers b = {0};
                float *in = spk__st_alloc(st, &b, 4 * count, sizeof *in), *got = spk__st_alloc(st, &b, 3 * count, sizeof *got);
                double *ref = spk__st_alloc(st, &b, 3 * count, sizeof *ref);
                spk_tensor *t[8] = {NULL};
                if (ref) {
                    spk__st_random(st, in, 4 * count, 2.0f);
                    for (int i = 0; i < 4 && (i == 0 || t[i - 1]); i++) t[i] = spk__st_tensor(st, 3, shape, in + i * count);
                    t[4] = t[3] ? spk__st_tensor(st, 3, shape, NULL) : NULL;
                    t[5] = t[4] ? spk__st_tensor(st, 3, rs, NULL) : NULL;
                    t[6] = t[5] ? spk__st_tensor(st, 3, shape, NULL) : NULL;
                    t[7] = t[6] ? spk__st_tensor(st, 3, shape, NULL) : NULL;
                }
                spk_tensor *tdv = t[7] ? spk__st_tensor(st, 3, shape, NULL) : NULL;
                spk_attention_grads g = {t[6], t[7], tdv};
                spk__attention_tuning tuning;
                spk__attention_backward_tuning(ctx, kernel == 0, kernel == 2, &tuning);
                spk_attention_desc desc = {.num_heads = (int)heads, .causal = causal, .normalizer = norm};
                if (tdv &&
                    spk__st_ran(st, spk_attention_train(ctx, &desc, t[0], t[1], t[2], t[4], t[5]), text) &&
                    spk__st_ran(st, spk__attention_backward_tuned(ctx, &tuning, &desc, t[0], t[1], t[2], t[4], t[5], t[3],
                                                                  &g), text) &&
                    spk__st_get(st, t[6], got, text) && spk__st_get(st, t[7], got + count, text) &&
                    spk__st_get(st, tdv, got + 2 * count, text)) {
                    if (!spk__ref_attention_backward(in, in + count, in + 2 * count, in + 3 * count, batch, seq, heads, dim,
                                                     causal, norm, ref, ref + count, ref + 2 * count)) {
                        st->fatal = SPK_ERROR_OUT_OF_HOST_MEMORY;
                        spk__st_fail(st, "out of host memory");
                    } else {
                        for (int i = 0; i < 3; i++) spk__st_compare(st, got + i * count, ref + i * count, count, text);
                    }
                }
                for (int i = 0; i < 8; i++) spk_tensor_destroy(t[i]);
                spk_tensor_destroy(tdv);
                spk__st_free(&b);
            }
        spk__st_end(st, why);
    }
}

void spk__st_losses(spk__selftest *st) {
    if (!spk__st_wanted(st, "loss")) return;
    static const char *names[] = {"mse", "cross-entropy (log-softmax shifted by each row's maximum)"};
    static const int64_t shapes[][2] = {{1, 1}, {7, 4}, {60, 33}, {3, 1000}};
    for (int kind = 0; kind < 2 && st->fatal == SPK_OK; kind++) {
        spk__st_begin(st, "loss", 1e-5, "%s, with dL/dy", names[kind]);
        st->r.used = true;
        for (size_t c = 0; c < SPK__ARRAY_LEN(shapes) && st->fatal == SPK_OK; c++) {
            int64_t rows = shapes[c][0], n = shapes[c][1], count = rows * n, ys[2] = {rows, n}, one = 1;
            char text[32];
            snprintf(text, sizeof text, "%lldx%lld", (long long)rows, (long long)n);
            spk__st_buffers b = {0};
            float *in = spk__st_alloc(st, &b, 3 * count + 1, sizeof *in), *got = in + 2 * count; /* y, t, dy and loss */
            double *ref = spk__st_alloc(st, &b, count + 1, sizeof *ref);
            spk_tensor *ty = NULL, *tt = NULL, *tl = NULL, *tdy = NULL;
            if (ref) {
                spk__st_random(st, in, 2 * count, 5.0f);
                for (int64_t r = 0; kind == 1 && r < rows; r++) in[count + r] = (float)((r * 5 + 1) % n);
                ty = spk__st_tensor(st, 2, ys, in);
                tt = ty ? spk__st_tensor(st, kind ? 1 : 2, ys, in + count) : NULL;
                tl = tt ? spk__st_tensor(st, 1, &one, NULL) : NULL;
                tdy = tl ? spk__st_tensor(st, 2, ys, NULL) : NULL;
            }
            if (tdy && spk__st_ran(st, spk_loss(st->ctx, (spk_loss_kind)kind, ty, tt, tl, tdy), text) &&
                spk__st_get(st, tdy, got, text) && spk__st_get(st, tl, got + count, text)) {
                double loss = 0, scale = 1.0 / (double)(kind == 0 ? count : rows);
                for (int64_t r = 0; r < rows; r++) {
                    const float *y = in + r * n;
                    if (kind == 0) {
                        for (int64_t i = 0; i < n; i++) {
                            double d = (double)y[i] - in[count + r * n + i];
                            loss += d * d, ref[r * n + i] = 2 * d * scale;
                        }
                        continue;
                    }
                    double m = y[0], se = 0;
                    for (int64_t i = 1; i < n; i++) m = fmax(m, y[i]);
                    for (int64_t i = 0; i < n; i++) se += exp(y[i] - m);
                    int64_t cls = (int64_t)in[count + r];
                    loss += log(se) + m - y[cls];
                    for (int64_t i = 0; i < n; i++) ref[r * n + i] = (exp(y[i] - m) / se - (i == cls)) * scale;
                }
                ref[count] = loss * scale;
                spk__st_compare(st, got, ref, count, text);
                spk__st_compare(st, got + count, ref + count, 1, text);
            }
            spk_tensor_destroy(ty), spk_tensor_destroy(tt), spk_tensor_destroy(tl), spk_tensor_destroy(tdy);
            spk__st_free(&b);
        }
        spk__st_end(st, NULL);
    }
}
