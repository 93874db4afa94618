/* spk_loss against float64: mse and cross-entropy on awkward shapes, large logits, a class index
 * out of range (NaN), the same bits on a second run, and the error paths. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

/* One loss of `rows` rows of n against float64: loss within 1e-6 relative, dy within 1e-5. */
static void check(spk_context *ctx, spk_loss_kind kind, int64_t rows, int64_t n, float logit_scale) {
    int64_t ys[2] = {rows, n}, one = 1, count = rows * n;
    float *y = test_alloc_floats(count), *t = test_alloc_floats(count), *dy = test_alloc_floats(count), loss, again;
    test_fill_random(y, count, (uint64_t)(rows * 5 + n));
    test_fill_random(t, count, 7);
    for (int64_t i = 0; i < count; i++) y[i] *= logit_scale;
    if (kind == SPK_LOSS_CROSS_ENTROPY)
        for (int64_t r = 0; r < rows; r++) t[r] = (float)((r * 7 + 3) % n);
    spk_tensor *ty = test_tensor(ctx, 2, ys, y), *tt = test_tensor(ctx, kind == SPK_LOSS_MSE ? 2 : 1, ys, t);
    spk_tensor *tl = test_tensor(ctx, 1, &one, NULL), *tdy = test_tensor(ctx, 2, ys, NULL);
    assert_int_equal(spk_loss(ctx, kind, ty, tt, tl, tdy), SPK_OK);
    assert_int_equal(spk_tensor_download(tl, &loss, 1), SPK_OK);
    assert_int_equal(spk_tensor_download(tdy, dy, count), SPK_OK);
    assert_int_equal(spk_loss(ctx, kind, ty, tt, tl, NULL), SPK_OK);
    assert_int_equal(spk_tensor_download(tl, &again, 1), SPK_OK);
    assert_memory_equal(&loss, &again, sizeof loss); /* deterministic */

    double want = 0, err = 0, scale = 0;
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = y + r * n;
        if (kind == SPK_LOSS_MSE) {
            for (int64_t i = 0; i < n; i++) {
                double d = (double)yr[i] - t[r * n + i], g = 2 * d / (double)count;
                want += d * d;
                err = fmax(err, fabs(g - dy[r * n + i])), scale = fmax(scale, fabs(g));
            }
        } else {
            double m = yr[0], se = 0;
            for (int64_t i = 1; i < n; i++) m = fmax(m, yr[i]);
            for (int64_t i = 0; i < n; i++) se += exp(yr[i] - m);
            int64_t c = (int64_t)t[r];
            want += log(se) + m - yr[c];
            for (int64_t i = 0; i < n; i++) {
                double g = (exp(yr[i] - m) / se - (i == c)) / (double)rows;
                err = fmax(err, fabs(g - dy[r * n + i])), scale = fmax(scale, fabs(g));
            }
        }
    }
    want /= (double)(kind == SPK_LOSS_MSE ? count : rows);
    double loss_err = fabs(loss - want) / fmax(fabs(want), 1e-30), grad_err = err / (scale > 0 ? scale : 1);
    if (!(loss_err <= 1e-6 && grad_err <= 1e-5))
        fail_msg("loss %d rows %lld n %lld scale %g: loss %.9g want %.9g (error %.3g), gradient error %.3g", kind,
                 (long long)rows, (long long)n, logit_scale, loss, want, loss_err, grad_err);
    spk_tensor_destroy(ty), spk_tensor_destroy(tt), spk_tensor_destroy(tl), spk_tensor_destroy(tdy);
    free(y), free(t), free(dy);
    test_assert_no_validation();
}

static void shapes(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    static const int64_t rows[] = {1, 7, 60, 1920}, widths[] = {1, 4, 33, 256};
    for (size_t r = 0; r < 4; r++)
        for (size_t w = 0; w < 4; w++) {
            check(ctx, SPK_LOSS_MSE, rows[r], widths[w], 1.0f);
            check(ctx, SPK_LOSS_CROSS_ENTROPY, rows[r], widths[w], 3.0f);
        }
}

/* Logits of 1e4: a plain softmax overflows; the shifted one stays finite. */
static void large_logits(void **state) {
    (void)state;
    check(test_shared_context(), SPK_LOSS_CROSS_ENTROPY, 5, 10, 1e4f);
}

static void bad_class_gives_nan(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    int64_t ys[2] = {2, 3}, one = 1;
    float y[6] = {1, 2, 3, 4, 5, 6}, t[2] = {1, 3}, loss;
    spk_tensor *ty = test_tensor(ctx, 2, ys, y), *tt = test_tensor(ctx, 1, ys, t), *tl = test_tensor(ctx, 1, &one, NULL);
    assert_int_equal(spk_loss(ctx, SPK_LOSS_CROSS_ENTROPY, ty, tt, tl, NULL), SPK_OK);
    assert_int_equal(spk_tensor_download(tl, &loss, 1), SPK_OK);
    assert_true(isnan(loss));
    spk_tensor_destroy(ty), spk_tensor_destroy(tt), spk_tensor_destroy(tl);
    test_assert_no_validation();
}

static void errors(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    int64_t ys[2] = {2, 3}, other[2] = {3, 2}, two = 2;
    spk_tensor *y = test_tensor(ctx, 2, ys, NULL), *bad = test_tensor(ctx, 2, other, NULL), *l2 = test_tensor(ctx, 1, &two, NULL);
    spk_tensor *l = test_tensor(ctx, 1, (int64_t[]){1}, NULL);
    assert_int_equal(spk_loss(ctx, SPK_LOSS_MSE, y, bad, l, NULL), SPK_ERROR_SHAPE);
    assert_int_equal(spk_loss(ctx, SPK_LOSS_CROSS_ENTROPY, y, y, l, NULL), SPK_ERROR_SHAPE);
    assert_int_equal(spk_loss(ctx, SPK_LOSS_CROSS_ENTROPY, y, l2, l2, NULL), SPK_ERROR_SHAPE); /* loss is [1] */
    assert_int_equal(spk_loss(ctx, (spk_loss_kind)7, y, y, l, NULL), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_loss(ctx, SPK_LOSS_MSE, y, y, l, y), SPK_ERROR_INVALID_ARGUMENT); /* dy overlaps y */
    assert_non_null(strstr(spk_context_last_error(ctx), "overlap"));
    spk_tensor_destroy(y), spk_tensor_destroy(bad), spk_tensor_destroy(l2), spk_tensor_destroy(l);
    test_assert_no_validation();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shapes),
        cmocka_unit_test(large_logits),
        cmocka_unit_test(bad_class_gives_nan),
        cmocka_unit_test(errors),
    };
    return cmocka_run_group_tests(tests, NULL, test_teardown_shared_context);
}
