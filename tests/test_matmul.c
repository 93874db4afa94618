/* spk_matmul against a float64 reference: square and skinny shapes, batches, every epilogue,
 * grids past maxComputeWorkGroupCount, errors; erf and GELU on their own. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "matmul_plan.h"

static spk_tensor *make(spk_context *ctx, int ndim, const int64_t *shape, const float *data) {
    spk_tensor *t = NULL;
    assert_int_equal(spk_tensor_create(ctx, ndim, shape, &t), SPK_OK);
    if (data) assert_int_equal(spk_tensor_upload(t, data, spk_tensor_count(t)), SPK_OK);
    else test_poison(t);
    return t;
}

static double gelu64(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }

/* One matmul [batch, m, k] x [k, n] (or batched B) with the given epilogue; checks the relative
 * error (max abs error / max abs reference) against float64. */
static void check_matmul(spk_context *ctx, const spk__matmul_tuning *tuning, int64_t batch, int64_t m, int64_t n,
                         int64_t k, bool batched_b, bool bias, bool gelu, bool residual) {
    int64_t as[3] = {batch, m, k}, bs[3] = {batch, k, n}, cs[3] = {batch, m, n}, ns[1] = {n};
    int64_t a_count = batch * m * k, b_count = (batched_b ? batch : 1) * k * n, c_count = batch * m * n;
    float *a = test_alloc_floats(a_count), *b = test_alloc_floats(b_count), *bv = test_alloc_floats(n);
    float *rv = test_alloc_floats(c_count), *out = test_alloc_floats(c_count);
    test_fill_random(a, a_count, (uint64_t)(m * 7 + k));
    test_fill_random(b, b_count, (uint64_t)(n * 3 + k));
    test_fill_random(bv, n, 5);
    test_fill_random(rv, c_count, 6);
    spk_tensor *ta = make(ctx, 3, as, a);
    spk_tensor *tb = batched_b ? make(ctx, 3, bs, b) : make(ctx, 2, bs + 1, b);
    spk_tensor *tbias = bias ? make(ctx, 1, ns, bv) : NULL;
    spk_tensor *tc = make(ctx, 3, cs, residual ? rv : NULL);
    /* The residual is C itself: the model's x = x + dense(...). */
    spk_matmul_desc desc = {.bias = tbias, .activation = gelu ? SPK_ACTIVATION_GELU : SPK_ACTIVATION_NONE,
                            .residual = residual ? tc : NULL};
    spk_status s = spk__matmul_tuned(ctx, tuning, ta, tb, &desc, tc);
    if (s != SPK_OK) fail_msg("matmul failed: %s", spk_context_last_error(ctx));
    assert_int_equal(spk_tensor_download(tc, out, c_count), SPK_OK);
    double max_err = 0, max_ref = 0;
    for (int64_t q = 0; q < batch; q++)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                const float *bb = b + (batched_b ? q * k * n : 0);
                double acc = 0;
                for (int64_t p = 0; p < k; p++) acc += (double)a[(q * m + i) * k + p] * bb[p * n + j];
                if (bias) acc += bv[j];
                if (gelu) acc = gelu64(acc);
                int64_t idx = (q * m + i) * n + j;
                if (residual) acc += rv[idx];
                double e = fabs(acc - out[idx]);
                if (!(e <= max_err)) max_err = e; /* NaN poisons max_err */
                if (fabs(acc) > max_ref) max_ref = fabs(acc);
            }
    double rel = max_err / (max_ref > 0 ? max_ref : 1);
    if (!(rel <= 1e-5))
        fail_msg("matmul batch %lld m %lld n %lld k %lld (bias %d gelu %d residual %d): relative error %.3g",
                 (long long)batch, (long long)m, (long long)n, (long long)k, bias, gelu, residual, rel);
    spk_tensor_destroy(ta);
    spk_tensor_destroy(tb);
    spk_tensor_destroy(tbias);
    spk_tensor_destroy(tc);
    free(a), free(b), free(bv), free(rv), free(out);
    test_assert_no_validation();
}

static const int64_t sizes[] = {1, 2, 7, 31, 60, 64, 65, 127, 256, 257, 1000};
#define NSIZES (sizeof sizes / sizeof sizes[0])

/* Square shapes, and skinny ones: each size as M, N and K against two awkward others. */
static void run_shapes(spk_context *ctx, const spk__matmul_tuning *tuning) {
    for (size_t i = 0; i < NSIZES; i++) {
        int64_t s = sizes[i];
        check_matmul(ctx, tuning, 1, s, s, s, false, false, false, false);
        check_matmul(ctx, tuning, 1, s, 65, 127, false, false, false, false);
        check_matmul(ctx, tuning, 1, 31, s, 257, false, false, false, false);
        check_matmul(ctx, tuning, 1, 60, 127, s, false, false, false, false);
    }
    check_matmul(ctx, tuning, 1, 33, 47, 4096, false, false, false, false);
}

static void test_shapes_default_kernel(void **state) {
    (void)state;
    run_shapes(test_shared_context(), NULL);
}

/* The GPU kernel (shared-memory tiles) on every shape, whatever the device's default is. */
static void test_shapes_tile_kernel(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    spk__matmul_tuning t;
    spk__matmul_tuning_tiles(ctx, &t);
    run_shapes(ctx, &t);
    t = (spk__matmul_tuning){.wg_x = 8, .wg_y = 4, .tm = 3, .tn = 5, .bk = 7, .shared = true};
    check_matmul(ctx, &t, 2, 65, 127, 31, true, true, true, true);
    t = (spk__matmul_tuning){.wg_x = 8, .wg_y = 8, .tm = 4, .tn = 4, .bk = 16, .shared = false};
    check_matmul(ctx, &t, 2, 65, 127, 31, true, true, true, true);
    /* The shuffle kernel, where the device has fixed-size subgroup shuffles: odd blocks through
     * storage buffers and texel views, and storage buffers on every shape (wrapped application
     * buffers have no texel views). */
    const spk__device_caps *caps = &ctx->caps;
    if (caps->subgroup_shuffle && caps->min_subgroup_size == caps->max_subgroup_size) {
        for (int texel = 0; texel < 2; texel++) {
            t = (spk__matmul_tuning){.wg_x = 2 * caps->max_subgroup_size, .tn = 3, .shuffle = true, .row_sets = 2,
                                     .texel = texel};
            check_matmul(ctx, &t, 2, 65, 127, 31, true, true, true, true);
            check_matmul(ctx, &t, 2, 64, 128, 32, true, true, true, true);
        }
        t = (spk__matmul_tuning){.wg_x = caps->max_subgroup_size, .tn = 1, .shuffle = true, .row_sets = 1};
        run_shapes(ctx, &t);
    }
}

static void test_batches_and_epilogues(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    for (int e = 0; e < 8; e++) {
        check_matmul(ctx, NULL, 3, 17, 33, 65, false, e & 1, e & 2, e & 4);
        check_matmul(ctx, NULL, 2, 60, 31, 64, true, e & 1, e & 2, e & 4);
    }
    check_matmul(ctx, NULL, 1, 5, 7, 0, false, true, true, false); /* K = 0: the epilogue of zeros */
}

/* More row tiles than maxComputeWorkGroupCount[1]: split into several dispatches. */
static void test_grid_split(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    spk__matmul_tuning t = {.wg_x = 8, .wg_y = 1, .tm = 1, .tn = 1, .bk = 8, .shared = false};
    check_matmul(ctx, &t, 1, 70000, 3, 2, false, true, false, false);
}

static void test_errors(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    int64_t a_s[2] = {4, 5}, b_s[2] = {5, 6}, c_s[2] = {4, 6}, bad_b[2] = {4, 6}, vec[1] = {5}, n7[1] = {7};
    spk_tensor *a = make(ctx, 2, a_s, NULL), *b = make(ctx, 2, b_s, NULL), *c = make(ctx, 2, c_s, NULL);
    spk_tensor *wrong_b = make(ctx, 2, bad_b, NULL), *v = make(ctx, 1, vec, NULL), *bias7 = make(ctx, 1, n7, NULL);
    assert_int_equal(spk_matmul(ctx, a, wrong_b, NULL, c), SPK_ERROR_SHAPE);
    assert_non_null(strstr(spk_context_last_error(ctx), "inner dimensions"));
    assert_int_equal(spk_matmul(ctx, v, b, NULL, c), SPK_ERROR_SHAPE);
    int64_t transposed[2] = {6, 4};
    spk_tensor *bad_c = make(ctx, 2, transposed, NULL);
    assert_int_equal(spk_matmul(ctx, a, b, NULL, bad_c), SPK_ERROR_SHAPE);
    assert_string_equal(spk_context_last_error(ctx), "matmul C has shape [6, 4], expected [4, 6]");
    spk_tensor_destroy(bad_c);
    spk_matmul_desc d = {.bias = bias7};
    assert_int_equal(spk_matmul(ctx, a, b, &d, c), SPK_ERROR_SHAPE);
    assert_non_null(strstr(spk_context_last_error(ctx), "bias"));
    d = (spk_matmul_desc){.activation = (spk_activation)9};
    assert_int_equal(spk_matmul(ctx, a, b, &d, c), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_matmul(ctx, a, b, NULL, NULL), SPK_ERROR_INVALID_ARGUMENT);
    int64_t sq[2] = {5, 5};
    spk_tensor *s = make(ctx, 2, sq, NULL);
    assert_int_equal(spk_matmul(ctx, s, s, NULL, s), SPK_ERROR_INVALID_ARGUMENT); /* C overlaps A */
    /* Sizes past 32-bit element offsets cannot even be made as tensors. */
    int64_t huge[2] = {65536, 65536};
    spk_tensor *h = NULL;
    assert_int_equal(spk_tensor_create(ctx, 2, huge, &h), SPK_ERROR_TOO_LARGE);
    spk_tensor_destroy(a), spk_tensor_destroy(b), spk_tensor_destroy(c), spk_tensor_destroy(wrong_b);
    spk_tensor_destroy(v), spk_tensor_destroy(bias7), spk_tensor_destroy(s);
    test_assert_no_validation();
}

/* erf on its own: max abs error <= 2e-7 against the float64 function over [-10, 10]; GELU too. */
static void test_erf_and_gelu(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    const int64_t n = 400001;
    float *x = test_alloc_floats(n), *y = test_alloc_floats(n);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(-10.0 + 20.0 * (double)i / (double)(n - 1));
    int64_t shape[1] = {n};
    spk_tensor *tx = make(ctx, 1, shape, x), *ty = make(ctx, 1, shape, NULL);
    assert_int_equal(spk__unary(ctx, SPK__UNARY_ERF, tx, ty), SPK_OK);
    assert_int_equal(spk_tensor_download(ty, y, n), SPK_OK);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)y[i] - erf((double)x[i]));
        if (!(e <= worst)) worst = e;
    }
    printf("erf: max abs error %.3g over [-10, 10]\n", worst);
    assert_true(worst <= 2e-7);
    assert_int_equal(spk_gelu(ctx, tx, tx), SPK_OK); /* in place */
    assert_int_equal(spk_tensor_download(tx, y, n), SPK_OK);
    worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double ref = gelu64((double)x[i]);
        double e = fabs((double)y[i] - ref) / fmax(1.0, fabs(ref));
        if (!(e <= worst)) worst = e;
    }
    printf("gelu: max error %.3g (absolute, relative above 1)\n", worst);
    assert_true(worst <= 1e-6);
    spk_tensor_destroy(tx), spk_tensor_destroy(ty);
    free(x), free(y);
    test_assert_no_validation();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_erf_and_gelu),
        cmocka_unit_test(test_shapes_default_kernel),
        cmocka_unit_test(test_shapes_tile_kernel),
        cmocka_unit_test(test_batches_and_epilogues),
        cmocka_unit_test(test_grid_split),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, test_teardown_shared_context);
}
