/* spk_layer_norm against a float64 reference: row lengths from 1 to 100000, random gamma and
 * beta, rows with a large mean, in place, epsilon, and the error paths. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "layer_norm_plan.h"

/* Normalizes `rows` rows of n (x given) and returns max abs error / max abs reference. */
static const spk__layer_norm_tuning *g_tuning; /* NULL: the device's defaults */
static spk_dtype g_x_dtype, g_y_dtype;           /* F16 activations: x and y stored in 16 bits */

static double run(spk_context *ctx, const float *x_in, int64_t rows, int64_t n, float eps, bool in_place) {
    float *gamma = test_alloc_floats(n), *beta = test_alloc_floats(n), *y = test_alloc_floats(rows * n);
    float *x = test_alloc_floats(rows * n); /* as stored: the reference computes on it */
    memcpy(x, x_in, (size_t)(rows * n) * sizeof *x);
    test_round_to(g_x_dtype, x, rows * n);
    test_fill_random(gamma, n, 77);
    test_fill_random(beta, n, 78);
    for (int64_t i = 0; i < n; i++) gamma[i] += 1.0f;
    int64_t xs[2] = {rows, n}, gs[1] = {n};
    spk_tensor *tx = NULL, *tg = NULL, *tb = NULL, *ty = NULL;
    assert_int_equal(spk_tensor_create_typed(ctx, g_x_dtype, 2, xs, &tx), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 1, gs, &tg), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 1, gs, &tb), SPK_OK);
    assert_int_equal(spk_tensor_upload(tx, x, rows * n), SPK_OK);
    assert_int_equal(spk_tensor_upload(tg, gamma, n), SPK_OK);
    assert_int_equal(spk_tensor_upload(tb, beta, n), SPK_OK);
    if (in_place) {
        ty = tx;
    } else {
        assert_int_equal(spk_tensor_create_typed(ctx, g_y_dtype, 2, xs, &ty), SPK_OK);
        test_poison(ty);
    }
    spk_layer_norm_desc desc = {.epsilon = eps};
    spk_status s = spk__layer_norm_tuned(ctx, g_tuning, tx, tg, tb, &desc, ty);
    if (s != SPK_OK) fail_msg("layer norm failed: %s", spk_context_last_error(ctx));
    assert_int_equal(spk_tensor_download(ty, y, rows * n), SPK_OK);
    double max_err = 0, max_ref = 0;
    double e = eps == 0.0f ? 1e-5 : eps;
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * n;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < n; i++) mean += row[i];
        mean /= (double)n;
        for (int64_t i = 0; i < n; i++) var += (row[i] - mean) * (row[i] - mean);
        var /= (double)n;
        for (int64_t i = 0; i < n; i++) {
            double ref = (row[i] - mean) / sqrt(var + e) * gamma[i] + beta[i];
            double err = fabs(ref - y[r * n + i]);
            if (!(err <= max_err)) max_err = err;
            if (fabs(ref) > max_ref) max_ref = fabs(ref);
        }
    }
    if (ty != tx) spk_tensor_destroy(ty);
    spk_tensor_destroy(tx), spk_tensor_destroy(tg), spk_tensor_destroy(tb);
    free(gamma), free(beta), free(y), free(x);
    test_assert_no_validation();
    return max_err / (max_ref > 0 ? max_ref : 1);
}

static void row_lengths_on(spk_context *ctx) {
    static const int64_t lengths[] = {1, 2, 7, 256, 1024, 4097, 100000};
    float *x = test_alloc_floats(3 * 100000);
    for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
        int64_t n = lengths[l], rows = n > 10000 ? 2 : 37;
        test_fill_random(x, rows * n, (uint64_t)n);
        double err = run(ctx, x, rows, n, 0.0f, false);
        /* An F16 y rounds every value once more: 2^-11 of it at most. */
        double bound = g_y_dtype == SPK_DTYPE_F16 ? 1e-3 : 1e-5;
        if (!(err <= bound))
            fail_msg("rows of %lld (x %s, y %s): relative error %.3g", (long long)n, spk_dtype_name(g_x_dtype),
                     spk_dtype_name(g_y_dtype), err);
    }
    free(x);
}

static void test_row_lengths(void **state) {
    (void)state;
    row_lengths_on(test_shared_context());
}

static void test_large_mean(void **state);

/* The GPU shape (a workgroup per row, the row in registers where it fits) on any device. */
static void test_row_lengths_workgroup_per_row(void **state) {
    (void)state;
    spk__layer_norm_tuning t = {.workgroup = 64, .cache_max = 16, .rows_max = 1};
    g_tuning = &t;
    row_lengths_on(test_shared_context());
    test_large_mean(state);
    g_tuning = NULL;
}

/* The device's own shape read through storage buffers (the path wrapped application buffers
 * take, where the default reads texel views). */
static void test_row_lengths_storage_buffers(void **state) {
    (void)state;
    spk__layer_norm_tuning t;
    spk__layer_norm_tuning_defaults(test_shared_context(), &t);
    t.texel = false;
    g_tuning = &t;
    row_lengths_on(test_shared_context());
    test_large_mean(state);
    g_tuning = NULL;
}

static void test_row_lengths_shared_memory_path(void **state) {
    (void)state;
    spk_context_desc desc = {.reduction = SPK_REDUCTION_SHARED_MEMORY};
    spk_context *ctx = test_context(&desc);
    row_lengths_on(ctx);
    spk_context_destroy(ctx);
    test_assert_no_validation();
}

/* F16 activations: x, y or both in 16 bits, through texel views and storage buffers, a subgroup
 * and a workgroup per row, against float64 on the stored x. */
static void test_half_activations(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    if (!ctx->caps.storage16) {
        int64_t shape[2] = {2, 8};
        spk_tensor *x = test_typed_tensor(ctx, SPK_DTYPE_F16, 2, shape, NULL);
        spk_tensor *g = test_tensor(ctx, 1, shape + 1, NULL);
        assert_int_equal(spk_layer_norm(ctx, x, g, g, NULL, x), SPK_ERROR_UNSUPPORTED);
        assert_non_null(strstr(spk_context_last_error(ctx), "storageBuffer16BitAccess"));
        spk_tensor_destroy(x), spk_tensor_destroy(g);
        return;
    }
    spk__layer_norm_tuning t[3];
    spk__layer_norm_tuning_defaults(ctx, &t[0]);
    t[1] = t[0], t[1].texel = false;
    t[2] = (spk__layer_norm_tuning){.workgroup = 64, .cache_max = 16, .rows_max = 1};
    static const spk_dtype pairs[3][2] = {{SPK_DTYPE_F16, SPK_DTYPE_F16}, {SPK_DTYPE_F16, SPK_DTYPE_F32},
                                          {SPK_DTYPE_F32, SPK_DTYPE_F16}};
    for (int i = 0; i < 3; i++)
        for (int p = 0; p < 3; p++) {
            g_tuning = &t[i], g_x_dtype = pairs[p][0], g_y_dtype = pairs[p][1];
            row_lengths_on(ctx);
        }
    g_tuning = NULL, g_x_dtype = g_y_dtype = SPK_DTYPE_F32;
    /* BF16 is for weights only; gamma and beta are float32. */
    int64_t shape[2] = {2, 8};
    spk_tensor *xb = test_typed_tensor(ctx, SPK_DTYPE_BF16, 2, shape, NULL), *y = test_tensor(ctx, 2, shape, NULL);
    spk_tensor *g = test_tensor(ctx, 1, shape + 1, NULL), *g16 = test_typed_tensor(ctx, SPK_DTYPE_F16, 1, shape + 1, NULL);
    assert_int_equal(spk_layer_norm(ctx, xb, g, g, NULL, y), SPK_ERROR_UNSUPPORTED);
    assert_int_equal(spk_layer_norm(ctx, y, g16, g, NULL, y), SPK_ERROR_UNSUPPORTED);
    spk_tensor_destroy(xb), spk_tensor_destroy(y), spk_tensor_destroy(g), spk_tensor_destroy(g16);
    test_assert_no_validation();
}

/* x = 1e4 + noise: E[x^2] - E[x]^2 in float32 would lose every digit of the variance. */
static void test_large_mean(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    static const int64_t lengths[] = {60, 256, 1024, 100000};
    float *x = test_alloc_floats(2 * 100000);
    for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
        int64_t n = lengths[l];
        test_fill_random(x, 2 * n, 3);
        for (int64_t i = 0; i < 2 * n; i++) x[i] = 1e4f + x[i] * 1.7f;
        double err = run(ctx, x, 2, n, 0.0f, false);
        if (!(err <= 1e-5)) fail_msg("large-mean rows of %lld: relative error %.3g", (long long)n, err);
    }
    free(x);
}

static void test_in_place_and_epsilon(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    float x[5 * 64];
    test_fill_random(x, 5 * 64, 12);
    assert_true(run(ctx, x, 5, 64, 0.0f, true) <= 1e-5);
    /* A large epsilon changes the result, and the reference follows it. */
    for (int i = 0; i < 5 * 64; i++) x[i] *= 0.01f;
    assert_true(run(ctx, x, 5, 64, 0.5f, false) <= 1e-5);
}

/* ---- backward ------------------------------------------------------------------------------- */

/* The forward keeping its stats, then the backward: stats, dx, dgamma and dbeta against float64
 * (x offset by `mean` so the stats matter), overwriting or accumulating. */
static void check_backward(spk_context *ctx, int64_t rows, int64_t n, float mean, bool accumulate) {
    int64_t count = rows * n, xs[2] = {rows, n}, ss[2] = {rows, 2}, gs[1] = {n};
    float *x = test_alloc_floats(count), *dy = test_alloc_floats(count), *gamma = test_alloc_floats(n);
    float *beta = test_alloc_floats(n), *init = test_alloc_floats(count + 2 * n), *got = test_alloc_floats(count + 2 * n + 2 * rows);
    test_fill_random(x, count, (uint64_t)(rows * 31 + n)), test_fill_random(dy, count, 3);
    test_fill_random(gamma, n, 4), test_fill_random(beta, n, 5), test_fill_random(init, count + 2 * n, 6);
    for (int64_t i = 0; i < count; i++) x[i] += mean;
    spk_tensor *tx = test_tensor(ctx, 2, xs, x), *tdy = test_tensor(ctx, 2, xs, dy), *tg = test_tensor(ctx, 1, gs, gamma);
    spk_tensor *tb = test_tensor(ctx, 1, gs, beta), *ty = test_tensor(ctx, 2, xs, NULL), *tst = test_tensor(ctx, 2, ss, NULL);
    spk_tensor *tdx = test_tensor(ctx, 2, xs, accumulate ? init : NULL);
    spk_tensor *tdg = test_tensor(ctx, 1, gs, accumulate ? init + count : NULL);
    spk_tensor *tdb = test_tensor(ctx, 1, gs, accumulate ? init + count + n : NULL);
    spk_layer_norm_desc desc = {.stats = tst};
    if (spk__layer_norm_tuned(ctx, g_tuning, tx, tg, tb, &desc, ty) != SPK_OK) fail_msg("%s", spk_context_last_error(ctx));
    spk_layer_norm_grads grads = {.dx = tdx, .dgamma = tdg, .dbeta = tdb, .accumulate = accumulate};
    if (spk__layer_norm_backward_tuned(ctx, g_tuning, tx, tg, tst, tdy, &grads) != SPK_OK)
        fail_msg("%s", spk_context_last_error(ctx));
    assert_int_equal(spk_tensor_download(tdx, got, count), SPK_OK);
    assert_int_equal(spk_tensor_download(tdg, got + count, n), SPK_OK);
    assert_int_equal(spk_tensor_download(tdb, got + count + n, n), SPK_OK);
    assert_int_equal(spk_tensor_download(tst, got + count + 2 * n, 2 * rows), SPK_OK);

    double *want = calloc((size_t)(count + 2 * n + 2 * rows), sizeof *want);
    assert_non_null(want);
    for (int64_t i = 0; i < count + 2 * n; i++) want[i] = accumulate ? init[i] : 0;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n, *dyr = dy + r * n;
        double mu = 0, var = 0, mg = 0, mgx = 0;
        for (int64_t i = 0; i < n; i++) mu += xr[i];
        mu /= (double)n;
        for (int64_t i = 0; i < n; i++) var += (xr[i] - mu) * (xr[i] - mu);
        double rstd = 1.0 / sqrt(var / (double)n + 1e-5);
        want[count + 2 * n + 2 * r] = mu, want[count + 2 * n + 2 * r + 1] = rstd;
        for (int64_t i = 0; i < n; i++) {
            double xhat = (xr[i] - mu) * rstd, gv = (double)dyr[i] * gamma[i];
            mg += gv, mgx += gv * xhat;
            want[count + i] += dyr[i] * xhat, want[count + n + i] += dyr[i];
        }
        mg /= (double)n, mgx /= (double)n;
        for (int64_t i = 0; i < n; i++) {
            double xhat = (xr[i] - mu) * rstd, gv = (double)dyr[i] * gamma[i];
            want[r * n + i] += rstd * (gv - mg - xhat * mgx);
        }
    }
    double e[4] = {test_rel_error(got, want, count), test_rel_error(got + count, want + count, n),
                   test_rel_error(got + count + n, want + count + n, n), test_rel_error(got + count + 2 * n, want + count + 2 * n, 2 * rows)};
    /* A row offset by 1e3 keeps float32's rounding of its mean (as PyTorch's saved mean does). */
    double bound = mean != 0 ? 1e-3 : 1e-5;
    if (!(e[0] <= bound && e[1] <= bound && e[2] <= 1e-5 && e[3] <= 1e-5))
        fail_msg("layer norm backward %lld x %lld (mean %g, accumulate %d): relative errors dx %.3g dgamma %.3g "
                 "dbeta %.3g stats %.3g", (long long)rows, (long long)n, mean, accumulate, e[0], e[1], e[2], e[3]);
    spk_tensor *all[] = {tx, tdy, tg, tb, ty, tst, tdx, tdg, tdb};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) spk_tensor_destroy(all[i]);
    free(x), free(dy), free(gamma), free(beta), free(init), free(got), free(want);
    test_assert_no_validation();
}

static void run_backward(void) {
    spk_context *ctx = test_shared_context();
    static const int64_t lengths[] = {1, 7, 33, 256, 257, 4097};
    for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
        check_backward(ctx, 3, lengths[i], 0.0f, false);
        check_backward(ctx, 60, lengths[i], 0.0f, true);
    }
    check_backward(ctx, 5, 64, 1e3f, false);
}

static void test_backward(void **state) {
    (void)state;
    run_backward();
}

/* The GPU shape (a workgroup per row, shared-memory reduction) and storage-buffer reads. */
static void test_backward_workgroup_per_row(void **state) {
    (void)state;
    spk__layer_norm_tuning t = {.workgroup = 64, .cache_max = 16, .rows_max = 1};
    g_tuning = &t;
    run_backward();
    spk__layer_norm_tuning_defaults(test_shared_context(), &t);
    t.texel = false;
    run_backward();
    g_tuning = NULL;
}

static void test_backward_errors(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    int64_t xs[2] = {3, 4}, ss[2] = {3, 2}, bad_s[2] = {3, 4}, gs[1] = {4};
    spk_tensor *x = test_tensor(ctx, 2, xs, NULL), *st = test_tensor(ctx, 2, ss, NULL), *bad = test_tensor(ctx, 2, bad_s, NULL);
    spk_tensor *g = test_tensor(ctx, 1, gs, NULL), *dx = test_tensor(ctx, 2, xs, NULL), *dy = test_tensor(ctx, 2, xs, NULL);
    spk_layer_norm_grads grads = {.dx = dx};
    assert_int_equal(spk_layer_norm_backward(ctx, x, g, bad, dy, &grads), SPK_ERROR_SHAPE);
    assert_non_null(strstr(spk_context_last_error(ctx), "stats"));
    assert_int_equal(spk_layer_norm_backward(ctx, x, g, st, st, &grads), SPK_ERROR_SHAPE);
    grads = (spk_layer_norm_grads){.dgamma = dx};
    assert_int_equal(spk_layer_norm_backward(ctx, x, g, st, dy, &grads), SPK_ERROR_SHAPE);
    grads = (spk_layer_norm_grads){.dx = x};
    assert_int_equal(spk_layer_norm_backward(ctx, x, g, st, dy, &grads), SPK_ERROR_INVALID_ARGUMENT);
    grads = (spk_layer_norm_grads){.dx = dy, .accumulate = true};
    assert_int_equal(spk_layer_norm_backward(ctx, x, g, st, dy, &grads), SPK_ERROR_INVALID_ARGUMENT);
    spk_layer_norm_desc desc = {.stats = bad};
    assert_int_equal(spk_layer_norm(ctx, x, g, g, &desc, dx), SPK_ERROR_SHAPE);
    spk_tensor *all[] = {x, st, bad, g, dx, dy};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) spk_tensor_destroy(all[i]);
    test_assert_no_validation();
}

static void test_errors(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    int64_t xs[2] = {3, 8}, gs[1] = {8}, bad[1] = {7};
    spk_tensor *x = NULL, *g = NULL, *b = NULL, *wrong = NULL;
    assert_int_equal(spk_tensor_create(ctx, 2, xs, &x), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 1, gs, &g), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 1, gs, &b), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 1, bad, &wrong), SPK_OK);
    assert_int_equal(spk_layer_norm(ctx, x, wrong, b, NULL, x), SPK_ERROR_SHAPE);
    assert_string_equal(spk_context_last_error(ctx), "layer norm gamma has shape [7], expected [8]");
    assert_int_equal(spk_layer_norm(ctx, x, g, wrong, NULL, x), SPK_ERROR_SHAPE);
    assert_int_equal(spk_layer_norm(ctx, x, g, b, NULL, g), SPK_ERROR_SHAPE);
    spk_layer_norm_desc negative = {.epsilon = -1.0f};
    assert_int_equal(spk_layer_norm(ctx, x, g, b, &negative, x), SPK_ERROR_INVALID_ARGUMENT);
    spk_layer_norm_desc nan_eps = {.epsilon = NAN};
    assert_int_equal(spk_layer_norm(ctx, x, g, b, &nan_eps, x), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_layer_norm(ctx, x, NULL, b, NULL, x), SPK_ERROR_INVALID_ARGUMENT);
    spk_tensor_destroy(x), spk_tensor_destroy(g), spk_tensor_destroy(b), spk_tensor_destroy(wrong);
    test_assert_no_validation();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_lengths),
        cmocka_unit_test(test_row_lengths_workgroup_per_row),
        cmocka_unit_test(test_row_lengths_storage_buffers),
        cmocka_unit_test(test_row_lengths_shared_memory_path),
        cmocka_unit_test(test_half_activations),
        cmocka_unit_test(test_large_mean),
        cmocka_unit_test(test_in_place_and_epsilon),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_backward),
        cmocka_unit_test(test_backward_workgroup_per_row),
        cmocka_unit_test(test_backward_errors),
    };
    return cmocka_run_group_tests(tests, NULL, test_teardown_shared_context);
}
