/* spk_softpick against a float64 reference: every axis of awkward shapes, long rows, the
 * properties of SPEC.md section 1, special values, empty tensors, in place, both reduction paths,
 * every kernel variant, grids past maxComputeWorkGroupCount, and the error paths. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "softpick_plan.h"

/* With g_backward the checks below run spk_softpick_backward (dy from test_fill_random, seed 99)
 * against the float64 backward instead of the forward. */
static bool g_backward;

/* float64 dx of softpick along axis: (dy - sgn(x) sum dy y) / (1 + sum |x|). */
static void ref_softpick_backward(const float *x, const float *dy, double *dx, int ndim, const int64_t *shape,
                                  int axis) {
    int a = axis < 0 ? axis + ndim : axis;
    int64_t outer = 1, len = shape[a], inner = 1;
    for (int i = 0; i < a; i++) outer *= shape[i];
    for (int i = a + 1; i < ndim; i++) inner *= shape[i];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const int64_t base = o * len * inner + i;
            double s = 0.0, t = 0.0;
            for (int64_t j = 0; j < len; j++) s += fabs((double)x[base + j * inner]);
            for (int64_t j = 0; j < len; j++) t += (double)dy[base + j * inner] * x[base + j * inner] / (1.0 + s);
            for (int64_t j = 0; j < len; j++) {
                double xv = x[base + j * inner], sgn = xv > 0 ? 1.0 : xv < 0 ? -1.0 : 0.0;
                dx[base + j * inner] = ((double)dy[base + j * inner] - sgn * t) / (1.0 + s);
            }
        }
}

/* Runs softpick (with `tuning`, NULL for the defaults) on `x_host` along `axis`, out of place and
 * with the output poisoned, and returns the device's output (caller frees); with `dy_host` the
 * backward's dx. */
static spk_dtype g_x_dtype, g_y_dtype; /* F16 activations: x and y stored in 16 bits */

static float *run(spk_context *ctx, const spk__softpick_tuning *tuning, const float *x_host, const float *dy_host,
                  int ndim, const int64_t *shape, int axis, bool in_place) {
    spk_tensor *x = NULL, *y = NULL, *dy = NULL;
    assert_int_equal(spk_tensor_create_typed(ctx, g_x_dtype, ndim, shape, &x), SPK_OK);
    int64_t n = spk_tensor_count(x);
    assert_int_equal(spk_tensor_upload(x, x_host, n), SPK_OK);
    if (in_place) {
        y = x;
    } else {
        assert_int_equal(spk_tensor_create_typed(ctx, g_y_dtype, ndim, shape, &y), SPK_OK);
        test_poison(y);
    }
    spk_status status;
    if (dy_host) {
        assert_int_equal(spk_tensor_create(ctx, ndim, shape, &dy), SPK_OK);
        assert_int_equal(spk_tensor_upload(dy, dy_host, n), SPK_OK);
        status = spk__softpick_backward_tuned(ctx, tuning, x, dy, axis, y);
    } else {
        status = spk__softpick_tuned(ctx, tuning, x, axis, y);
    }
    if (status != SPK_OK) fail_msg("softpick failed: %s", spk_context_last_error(ctx));
    float *out = test_alloc_floats(n);
    assert_int_equal(spk_tensor_download(y, out, n), SPK_OK);
    if (y != x) spk_tensor_destroy(y);
    spk_tensor_destroy(x);
    spk_tensor_destroy(dy);
    test_assert_no_validation();
    return out;
}

/* Runs and checks against the float64 reference; returns the error. */
static double check(spk_context *ctx, const spk__softpick_tuning *tuning, const float *x_in, int ndim,
                    const int64_t *shape, int axis, double tolerance) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    double *ref = malloc((size_t)(n ? n : 1) * sizeof *ref);
    float *x = test_alloc_floats(n); /* as stored: the reference computes on it */
    assert_non_null(ref);
    memcpy(x, x_in, (size_t)n * sizeof *x);
    test_round_to(g_x_dtype, x, n);
    /* An F16 y rounds every value once more: 2^-11 of it at most. */
    if (g_y_dtype == SPK_DTYPE_F16 && tolerance < 1e-3) tolerance = 1e-3;
    float *dy = NULL;
    if (g_backward) {
        dy = test_alloc_floats(n);
        test_fill_random(dy, n, 99);
        ref_softpick_backward(x, dy, ref, ndim, shape, axis);
    } else {
        ref_softpick(x, ref, ndim, shape, axis);
    }
    float *y = run(ctx, tuning, x, dy, ndim, shape, axis, false);
    free(dy);
    double err = ref_row_error(y, ref, ndim, shape, axis);
    if (!(err <= tolerance)) {
        char text[128] = "";
        for (int i = 0; i < ndim; i++) snprintf(text + strlen(text), sizeof text - strlen(text), "%lld ", (long long)shape[i]);
        fail_msg("shape [%s] axis %d: relative error %.3g > %.3g", text, axis, err, tolerance);
    }
    free(y);
    free(ref);
    free(x);
    return err;
}

static void test_every_axis_of_awkward_shapes(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    static const int64_t lengths[] = {1, 7, 33, 1000, 4097, 100003};
    static const int64_t others[] = {3, 2, 5, 1};
    float *x = test_alloc_floats(100003 * 6);
    for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
        for (int rank = 1; rank <= 5; rank++) {
            /* The long axis moves through every position; the others are small. */
            for (int pos = 0; pos < rank; pos++) {
                int64_t shape[5];
                int64_t n = 1;
                for (int i = 0, k = 0; i < rank; i++) {
                    shape[i] = i == pos ? lengths[l] : others[k++ % 4];
                    n *= shape[i];
                }
                if (n > 100003 * 6) continue;
                test_fill_random(x, n, (uint64_t)(l * 31 + rank * 7 + pos));
                for (int axis = -rank; axis < rank; axis++) check(ctx, NULL, x, rank, shape, axis, 1e-5);
            }
        }
    }
    free(x);
}

static void test_rows_of_2_pow_20(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    const int64_t n = 1 << 20;
    float *x = test_alloc_floats(2 * n);
    /* All positive: the sum grows monotonically, the hardest case for a float32 accumulator. */
    test_fill_random(x, 2 * n, 99);
    for (int64_t i = 0; i < 2 * n; i++) x[i] = fabsf(x[i]) + 0.5f;
    int64_t rows[2] = {2, n};
    check(ctx, NULL, x, 2, rows, -1, 1e-5);
    int64_t cols[2] = {n, 2};
    check(ctx, NULL, x, 2, cols, 0, 1e-5);
    free(x);
}

/* Every kernel variant the planner can choose, on each reduction path: invocations per row
 * (1, a subgroup, a workgroup), registers or re-reads, segmented rows and columns, blocked and
 * interleaved column segments, scalar and vec4 loads, folded 2-wide columns, x read through its
 * texel view or as a storage buffer. */
static void run_variants(spk_context *ctx) {
    spk__softpick_tuning base;
    spk__softpick_plan_defaults(ctx, &base);
    float *x = test_alloc_floats(6 * 40000); /* the largest shape below, [2, 40000, 3] */
    test_fill_random(x, 6 * 40000, 5);
    static const int64_t lengths[] = {5, 8, 60, 1024, 1027, 40000};
    static const uint32_t groups[] = {1, 8, 16, 64};
    for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
        for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
            for (int cache = 0; cache < 2; cache++) {
                spk__softpick_tuning t = base;
                t.force_group = groups[g];
                t.cache_max = cache ? 64 : 0;
                t.texel = base.texel && (g + cache) % 2 == 0; /* texel views and storage buffers */
                t.target_invocations = l % 2 ? 1 << 20 : 64; /* segment some rows */
                t.min_row_segment = 256;
                int64_t shape[2] = {3, lengths[l]};
                check(ctx, &t, x, 2, shape, -1, 1e-5);
            }
        }
        for (int variant = 0; variant < 4; variant++) {
            spk__softpick_tuning t = base;
            t.interleave_columns = variant & 1;
            t.texel = base.texel && variant < 2;
            t.target_invocations = 1 << 16;
            t.min_column_segment = 16;
            int64_t two[2] = {lengths[l] * 3 / 2 * 2 / 2, 2}; /* even and odd row counts */
            check(ctx, &t, x, 2, two, 0, 1e-5);
            int64_t three[3] = {2, lengths[l], 3};
            check(ctx, &t, x, 3, three, 1, 1e-5);
            int64_t four[3] = {1, lengths[l] > 10000 ? 10000 : lengths[l], 12};
            check(ctx, &t, x, 3, four, 1, 1e-5);
        }
    }
    free(x);
}

/* F16 x and y: every variant with both in 16 bits; each alone on every axis of a few shapes. */
static void test_half_activations(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    if (!ctx->caps.storage16) {
        int64_t shape[1] = {8};
        spk_tensor *x = test_typed_tensor(ctx, SPK_DTYPE_F16, 1, shape, NULL);
        assert_int_equal(spk_softpick(ctx, x, 0, x), SPK_ERROR_UNSUPPORTED);
        spk_tensor_destroy(x);
        return;
    }
    g_x_dtype = g_y_dtype = SPK_DTYPE_F16;
    run_variants(ctx);
    float *x = test_alloc_floats(3 * 5 * 1027);
    test_fill_random(x, 3 * 5 * 1027, 17);
    static const int64_t shapes[][3] = {{3, 5, 1027}, {1027, 3, 5}, {2, 1000, 2}};
    for (int pair = 0; pair < 2; pair++) {
        g_x_dtype = pair ? SPK_DTYPE_F32 : SPK_DTYPE_F16, g_y_dtype = pair ? SPK_DTYPE_F16 : SPK_DTYPE_F32;
        for (int c = 0; c < 3; c++)
            for (int axis = 0; axis < 3; axis++) check(ctx, NULL, x, 3, shapes[c], axis, 1e-5);
    }
    g_x_dtype = g_y_dtype = SPK_DTYPE_F32;
    free(x);
    /* BF16 is for weights only. */
    int64_t shape[1] = {8};
    spk_tensor *xb = test_typed_tensor(ctx, SPK_DTYPE_BF16, 1, shape, NULL), *y = test_tensor(ctx, 1, shape, NULL);
    assert_int_equal(spk_softpick(ctx, xb, 0, y), SPK_ERROR_UNSUPPORTED);
    assert_non_null(strstr(spk_context_last_error(ctx), "bf16"));
    spk_tensor_destroy(xb), spk_tensor_destroy(y);
    test_assert_no_validation();
}

static void run_variants_on(spk_reduction reduction) {
    spk_context_desc desc = {.reduction = reduction};
    spk_context *ctx = test_context(&desc);
    run_variants(ctx);
    spk_context_destroy(ctx);
    test_assert_no_validation();
}

static void test_variants_subgroup_path(void **state) {
    (void)state;
    run_variants_on(SPK_REDUCTION_SUBGROUP);
}

static void test_variants_shared_memory_path(void **state) {
    (void)state;
    run_variants_on(SPK_REDUCTION_SHARED_MEMORY);
}

/* The backward through the same shapes and variants (g_backward: check() runs it instead). */
static void test_backward_every_axis(void **state) {
    g_backward = true;
    test_every_axis_of_awkward_shapes(state);
    g_backward = false;
}

static void test_backward_variants(void **state) {
    (void)state;
    g_backward = true;
    run_variants_on(SPK_REDUCTION_SUBGROUP);
    g_backward = false;
}

static void test_backward_errors(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    int64_t s[2] = {3, 4}, other[2] = {4, 3};
    spk_tensor *x = NULL, *dy = NULL, *dx = NULL, *bad = NULL;
    assert_int_equal(spk_tensor_create(ctx, 2, s, &x), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 2, s, &dy), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 2, s, &dx), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 2, other, &bad), SPK_OK);
    assert_int_equal(spk_softpick_backward(ctx, x, dy, 2, dx), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_softpick_backward(ctx, x, bad, -1, dx), SPK_ERROR_SHAPE);
    assert_int_equal(spk_softpick_backward(ctx, x, dy, -1, bad), SPK_ERROR_SHAPE);
    assert_int_equal(spk_softpick_backward(ctx, x, dy, -1, dy), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_softpick_backward(ctx, x, dy, 0, x), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_softpick_backward(ctx, x, NULL, 0, dx), SPK_ERROR_INVALID_ARGUMENT);
    spk_tensor_destroy(x), spk_tensor_destroy(dy), spk_tensor_destroy(dx), spk_tensor_destroy(bad);
    test_assert_no_validation();
}

static void test_properties(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    int64_t shape[3] = {4, 9, 37};
    const int64_t n = 4 * 9 * 37;
    float *x = test_alloc_floats(n);
    test_fill_random(x, n, 11);
    for (int axis = 0; axis < 3; axis++) {
        float *y = run(ctx, NULL, x, NULL, 3, shape, axis, false);
        int64_t stride = axis == 2 ? 1 : axis == 1 ? 37 : 9 * 37;
        int64_t len = shape[axis];
        for (int64_t i = 0; i < n; i++) {
            /* Sign preserved (zero stays zero) and every |y| < 1. */
            assert_true((x[i] > 0) == (y[i] > 0) && (x[i] < 0) == (y[i] < 0));
            assert_true(fabsf(y[i]) < 1.0f);
            /* sum |y| < 1 over the row that starts here. */
            if ((i / stride) % len == 0) {
                double s = 0;
                for (int64_t j = 0; j < len; j++) s += fabs(y[i + j * stride]);
                assert_true(s < 1.0);
            }
        }
        free(y);
    }

    /* Agreement on every axis: softpick along axis a equals softpick along the last axis of the
     * tensor with axis a moved last (transposed on the host). */
    for (int axis = 0; axis < 2; axis++) {
        float *direct = run(ctx, NULL, x, NULL, 3, shape, axis, false);
        int64_t tshape[3], perm[3];
        for (int i = 0, k = 0; i < 3; i++)
            if (i != axis) perm[k++] = i;
        perm[2] = axis;
        for (int i = 0; i < 3; i++) tshape[i] = shape[perm[i]];
        float *xt = test_alloc_floats(n);
        int64_t idx[3];
        for (idx[0] = 0; idx[0] < shape[0]; idx[0]++)
            for (idx[1] = 0; idx[1] < shape[1]; idx[1]++)
                for (idx[2] = 0; idx[2] < shape[2]; idx[2]++)
                    xt[(idx[perm[0]] * tshape[1] + idx[perm[1]]) * tshape[2] + idx[perm[2]]] =
                        x[(idx[0] * shape[1] + idx[1]) * shape[2] + idx[2]];
        float *yt = run(ctx, NULL, xt, NULL, 3, tshape, 2, false);
        for (idx[0] = 0; idx[0] < shape[0]; idx[0]++)
            for (idx[1] = 0; idx[1] < shape[1]; idx[1]++)
                for (idx[2] = 0; idx[2] < shape[2]; idx[2]++) {
                    float a = direct[(idx[0] * shape[1] + idx[1]) * shape[2] + idx[2]];
                    float b = yt[(idx[perm[0]] * tshape[1] + idx[perm[1]]) * tshape[2] + idx[perm[2]]];
                    assert_true(fabsf(a - b) <= 1e-6f * fabsf(b) + 1e-12f);
                }
        free(direct);
        free(xt);
        free(yt);
    }

    /* Scale behaviour: softpick(c x) -> sign(x) |x| / sum |x| as c grows. */
    int64_t row[1] = {37};
    float cx[37];
    double sum = 0;
    for (int i = 0; i < 37; i++) sum += fabs(x[i]);
    for (int i = 0; i < 37; i++) cx[i] = x[i] * 1e7f;
    float *y = run(ctx, NULL, cx, NULL, 1, row, 0, false);
    for (int i = 0; i < 37; i++) assert_true(fabs(y[i] - x[i] / sum) <= 1e-5 * fabs(x[i] / sum) + 1e-7);
    free(y);
    free(x);
}

/* NaN, infinities and an overflowing |x| sum, on every kernel shape (cached rows, re-read rows,
 * segmented rows, columns). */
static void test_special_values(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    static const int64_t lengths[] = {6, 60, 5001, 100000};
    for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
        int64_t len = lengths[l];
        for (int strided = 0; strided < 2; strided++) {
            /* Four rows: NaN, +Inf, overflow, plain. As columns when strided. */
            int64_t shape[2] = {strided ? len : 4, strided ? 4 : len};
            float *x = test_alloc_floats(4 * len);
            test_fill_random(x, 4 * len, 3);
#define AT(r, j) x[strided ? (j) * 4 + (r) : (r) * len + (j)]
            AT(0, len / 2) = NAN;
            AT(1, len / 3) = INFINITY;
            for (int64_t j = 0; j < len; j += 2) AT(2, j) = (j % 4 ? -1 : 1) * 3e38f;
            float *y = run(ctx, NULL, x, NULL, 2, shape, strided ? 0 : 1, false);
            for (int64_t j = 0; j < len; j++) {
                float y0 = strided ? y[j * 4 + 0] : y[0 * len + j];
                float y1 = strided ? y[j * 4 + 1] : y[1 * len + j];
                float y2 = strided ? y[j * 4 + 2] : y[2 * len + j];
                float y3 = strided ? y[j * 4 + 3] : y[3 * len + j];
                assert_true(isnan(y0));
                if (j == len / 3) {
                    assert_true(isnan(y1));
                } else {
                    assert_true(y1 == 0.0f && signbit(y1) == signbit(AT(1, j)));
                }
                assert_true(y2 == 0.0f && signbit(y2) == signbit(AT(2, j)));
                assert_true(isfinite(y3) && fabsf(y3) < 1.0f);
            }
#undef AT
            free(y);
            free(x);
        }
    }
}

static void test_empty_tensors(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    int64_t shapes[3][2] = {{0, 5}, {5, 0}, {0, 0}};
    for (int s = 0; s < 3; s++) {
        spk_tensor *x = NULL;
        assert_int_equal(spk_tensor_create(ctx, 2, shapes[s], &x), SPK_OK);
        assert_int_equal(spk_tensor_count(x), 0);
        assert_int_equal(spk_tensor_upload(x, NULL, 0), SPK_OK);
        for (int axis = -2; axis < 2; axis++) assert_int_equal(spk_softpick(ctx, x, axis, x), SPK_OK);
        assert_int_equal(spk_tensor_download(x, NULL, 0), SPK_OK);
        spk_tensor_destroy(x);
    }
    test_assert_no_validation();
}

static void test_in_place(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    int64_t shape[2] = {300, 64};
    float *x = test_alloc_floats(300 * 64);
    double *ref = malloc(300 * 64 * sizeof *ref);
    assert_non_null(ref);
    test_fill_random(x, 300 * 64, 8);
    for (int axis = 0; axis < 2; axis++) {
        ref_softpick(x, ref, 2, shape, axis);
        float *y = run(ctx, NULL, x, NULL, 2, shape, axis, true);
        assert_true(ref_row_error(y, ref, 2, shape, axis) <= 1e-5);
        free(y);
    }
    free(ref);
    free(x);
}

/* More workgroups than maxComputeWorkGroupCount[0] allows in one dimension. */
static void test_grid_beyond_one_dimension(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    spk_device_info info;
    assert_int_equal(spk_context_device_info(ctx, &info), SPK_OK);
    spk__softpick_tuning t;
    spk__softpick_plan_defaults(ctx, &t);
    t.force_group = t.workgroup; /* one row per workgroup */
    t.cache_max = 0;
    int64_t shape[2] = {70000, 3}; /* 70000 > 65535, the usual limit */
    float *x = test_alloc_floats(70000 * 3);
    test_fill_random(x, 70000 * 3, 21);
    check(ctx, &t, x, 2, shape, 1, 1e-5);
    free(x);
}

static void test_errors(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    spk_tensor *x = NULL, *y = NULL, *z = NULL;
    int64_t shape[2] = {4, 5}, other[2] = {5, 4};
    assert_int_equal(spk_tensor_create(ctx, 2, shape, &x), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 2, other, &z), SPK_OK);
    float data[20], back[20];
    test_fill_random(data, 20, 1);
    assert_int_equal(spk_tensor_upload(x, data, 20), SPK_OK);

    /* Bad axis. */
    assert_int_equal(spk_softpick(ctx, x, 2, x), SPK_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(spk_context_last_error(ctx), "axis 2"));
    assert_int_equal(spk_softpick(ctx, x, -3, x), SPK_ERROR_INVALID_ARGUMENT);
    /* Mismatched output shape (same element count, other shape). */
    assert_int_equal(spk_softpick(ctx, x, -1, z), SPK_ERROR_SHAPE);
    assert_non_null(strstr(spk_context_last_error(ctx), "shape"));
    /* NULL tensors and context. */
    assert_int_equal(spk_softpick(ctx, NULL, -1, x), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_softpick(ctx, x, -1, NULL), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_softpick(NULL, x, -1, x), SPK_ERROR_INVALID_ARGUMENT);
    /* Bad ranks and dimensions. */
    int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    assert_int_equal(spk_tensor_create(ctx, 9, nine, &y), SPK_ERROR_SHAPE);
    assert_null(y);
    assert_int_equal(spk_tensor_create(ctx, 0, nine, &y), SPK_ERROR_SHAPE);
    int64_t negative[2] = {3, -1};
    assert_int_equal(spk_tensor_create(ctx, 2, negative, &y), SPK_ERROR_SHAPE);
    assert_non_null(strstr(spk_context_last_error(ctx), "negative"));
    int64_t overflow[3] = {INT64_MAX / 2, 4, 4};
    assert_int_equal(spk_tensor_create(ctx, 3, overflow, &y), SPK_ERROR_TOO_LARGE);
    spk_device_info info;
    assert_int_equal(spk_context_device_info(ctx, &info), SPK_OK);
    int64_t huge[1] = {(int64_t)(info.max_storage_buffer_range / 4 + 1)};
    assert_int_equal(spk_tensor_create(ctx, 1, huge, &y), SPK_ERROR_TOO_LARGE);
    assert_non_null(strstr(spk_context_last_error(ctx), "maxStorageBufferRange"));
    assert_null(y);
    /* Upload and download counts must match. */
    assert_int_equal(spk_tensor_upload(x, data, 19), SPK_ERROR_SHAPE);
    assert_int_equal(spk_tensor_download(x, back, 21), SPK_ERROR_SHAPE);
    assert_int_equal(spk_tensor_upload(x, NULL, 20), SPK_ERROR_INVALID_ARGUMENT);

    /* The caller's data is intact after all of that. */
    assert_int_equal(spk_tensor_download(x, back, 20), SPK_OK);
    assert_memory_equal(data, back, sizeof data);

    /* Tensors of another context are refused. */
    spk_context *other_ctx = test_context(NULL);
    spk_tensor *foreign = NULL;
    assert_int_equal(spk_tensor_create(other_ctx, 2, shape, &foreign), SPK_OK);
    assert_int_equal(spk_softpick(ctx, foreign, -1, x), SPK_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(spk_context_last_error(ctx), "another context"));
    spk_tensor_destroy(foreign);
    spk_context_destroy(other_ctx);

    spk_tensor_destroy(x);
    spk_tensor_destroy(z);
    spk_tensor_destroy(NULL);
    test_assert_no_validation();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_axis_of_awkward_shapes),
        cmocka_unit_test(test_rows_of_2_pow_20),
        cmocka_unit_test(test_variants_subgroup_path),
        cmocka_unit_test(test_variants_shared_memory_path),
        cmocka_unit_test(test_properties),
        cmocka_unit_test(test_special_values),
        cmocka_unit_test(test_empty_tensors),
        cmocka_unit_test(test_in_place),
        cmocka_unit_test(test_grid_beyond_one_dimension),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_half_activations),
        cmocka_unit_test(test_backward_every_axis),
        cmocka_unit_test(test_backward_variants),
        cmocka_unit_test(test_backward_errors),
    };
    return cmocka_run_group_tests(tests, NULL, test_teardown_shared_context);
}
