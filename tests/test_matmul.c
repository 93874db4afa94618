/* spk_matmul against a float64 reference: square and skinny shapes, batches, every epilogue,
 * grids past maxComputeWorkGroupCount, errors; erf and GELU on their own. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "matmul_plan.h"

static double gelu64(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }

/* One matmul [batch, m, k] x [k, n] (or batched B) with the given epilogue; checks the relative
 * error (max abs error / max abs reference) against float64. */
static double check_matmul_io(spk_context *ctx, const spk__matmul_tuning *tuning, spk_dtype wd, spk_dtype ad,
                              int64_t batch, int64_t m, int64_t n, int64_t k, bool batched_b, bool bias, bool gelu,
                              bool residual) {
    int64_t as[3] = {batch, m, k}, bs[3] = {batch, k, n}, cs[3] = {batch, m, n}, ns[1] = {n};
    int64_t a_count = batch * m * k, b_count = (batched_b ? batch : 1) * k * n, c_count = batch * m * n;
    float *a = test_alloc_floats(a_count), *b = test_alloc_floats(b_count), *bv = test_alloc_floats(n);
    float *rv = test_alloc_floats(c_count), *out = test_alloc_floats(c_count);
    test_fill_random(a, a_count, (uint64_t)(m * 7 + k));
    test_fill_random(b, b_count, (uint64_t)(n * 3 + k));
    test_fill_random(bv, n, 5);
    test_fill_random(rv, c_count, 6);
    /* F16 activations: A and C (and so the residual, C itself) stored in 16 bits. */
    spk_tensor *ta = test_typed_tensor(ctx, ad, 3, as, a);
    test_round_to(ad, a, a_count);
    test_round_to(ad, rv, c_count);
    /* 16-bit weights: B and the bias as stored (rounded), and the reference on those values. */
    spk_tensor *tb = test_typed_tensor(ctx, wd, batched_b ? 3 : 2, batched_b ? bs : bs + 1, b);
    spk_dtype bias_dtype = (spk_dtype)((wd + m) % 3); /* each B dtype meets every bias dtype */
    spk_tensor *tbias = bias ? test_typed_tensor(ctx, bias_dtype, 1, ns, bv) : NULL;
    test_round_to(wd, b, b_count);
    test_round_to(bias_dtype, bv, n);
    spk_tensor *tc = test_typed_tensor(ctx, ad, 3, cs, residual ? rv : NULL);
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
    /* An F16 C rounds every value once more: 2^-11 of it at most. */
    double bound = ad == SPK_DTYPE_F16 ? 1e-3 : 1e-5;
    if (!(rel <= bound))
        fail_msg("matmul batch %lld m %lld n %lld k %lld (bias %d gelu %d residual %d, %s weights, %s activations): "
                 "relative error %.3g",
                 (long long)batch, (long long)m, (long long)n, (long long)k, bias, gelu, residual, spk_dtype_name(wd),
                 spk_dtype_name(ad), rel);
    spk_tensor_destroy(ta);
    spk_tensor_destroy(tb);
    spk_tensor_destroy(tbias);
    spk_tensor_destroy(tc);
    free(a), free(b), free(bv), free(rv), free(out);
    test_assert_no_validation();
    return rel;
}

static void check_matmul(spk_context *ctx, const spk__matmul_tuning *tuning, int64_t batch, int64_t m, int64_t n,
                         int64_t k, bool batched_b, bool bias, bool gelu, bool residual) {
    check_matmul_io(ctx, tuning, SPK_DTYPE_F32, SPK_DTYPE_F32, batch, m, n, k, batched_b, bias, gelu, residual);
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
     * buffers have no texel views). The odd blocks take one row set (the default kernel runs
     * several) and no GELU (the same code at every block): three column groups of two sets and a
     * GELU spill so many accumulators on CPU drivers that each layout was a 13-22 s LLVM compile
     * on Mesa 25. */
    const spk__device_caps *caps = &ctx->caps;
    if (caps->subgroup_shuffle && caps->min_subgroup_size == caps->max_subgroup_size) {
        for (int texel = 0; texel < 2; texel++) {
            t = (spk__matmul_tuning){.wg_x = 2 * caps->max_subgroup_size, .tn = 3, .shuffle = true, .row_sets = 1,
                                     .texel = texel};
            check_matmul(ctx, &t, 2, 65, 127, 31, true, true, false, true);
            check_matmul(ctx, &t, 2, 64, 128, 32, true, true, false, true);
        }
        t = (spk__matmul_tuning){.wg_x = caps->max_subgroup_size, .tn = 1, .shuffle = true, .row_sets = 1};
        run_shapes(ctx, &t);
        /* Sets of fewer rows than lanes (the blocks for 16-register CPUs): lanes past them repeat
         * a row's loads. */
        for (uint32_t rows = caps->max_subgroup_size / 2; rows >= 2; rows /= 2) {
            t = (spk__matmul_tuning){.wg_x = 2 * caps->max_subgroup_size, .tm = rows, .tn = 2, .shuffle = true,
                                     .row_sets = 3, .texel = true};
            check_matmul(ctx, &t, 2, 65, 127, 31, true, true, false, true);
            t.row_sets = 1, t.texel = false;
            check_matmul(ctx, &t, 1, 33, 64, 32, false, true, false, true);
        }
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

/* The 16-bit shapes, every one with a bias, GELU and the residual, so that the storage types meet
 * every operand: awkward rows, whole vec4s, batched B, and a long K. Shapes differ in layout
 * only, and the shuffle kernel compiles one pipeline per layout and epilogue (on CPU drivers an
 * LLVM compile each): the first, third and fourth share one. Returns the worst relative error. */
static double check_half_shapes(spk_context *ctx, const spk__matmul_tuning *tuning, spk_dtype wd, spk_dtype ad) {
    double e[4] = {check_matmul_io(ctx, tuning, wd, ad, 1, 33, 257, 65, false, true, true, true),
                   check_matmul_io(ctx, tuning, wd, ad, 2, 60, 64, 128, false, true, true, true),
                   check_matmul_io(ctx, tuning, wd, ad, 2, 7, 31, 33, true, true, true, true),
                   check_matmul_io(ctx, tuning, wd, ad, 1, 1, 7, 4097, false, true, true, true)};
    return fmax(fmax(e[0], e[1]), fmax(e[2], e[3]));
}

/* B and the bias in F16 and BF16, through every tier this device has (16-bit storage buffers, 32-bit
 * words, texel views) and every kernel: within the float32 bound of float64 on the rounded values. */
static void test_half_weights(void **state) {
    (void)state;
    for (int tier = SPK_HALF_STORAGE_16BIT; tier <= SPK_HALF_STORAGE_WORDS; tier++) {
        spk_context_desc desc = {.half_storage = (spk_half_storage)tier};
        spk_context *probe = test_shared_context();
        if (tier == SPK_HALF_STORAGE_16BIT && !probe->caps.storage16) {
            /* Forcing a tier the device lacks is refused, naming the feature. */
            spk_context *ctx = NULL;
            desc.log = test_log_callback;
            assert_int_equal(spk_context_create(&desc, &ctx), SPK_ERROR_UNSUPPORTED);
            assert_non_null(strstr(g_log.last, "storageBuffer16BitAccess"));
            continue;
        }
        spk_context *ctx = test_context(&desc);
        assert_int_equal(ctx->half_words, tier == SPK_HALF_STORAGE_WORDS);
        const spk__device_caps *caps = &ctx->caps;
        spk__matmul_tuning tiles, shuffle[2];
        spk__matmul_tuning_tiles(ctx, &tiles);
        bool has_shuffle = caps->subgroup_shuffle && caps->min_subgroup_size == caps->max_subgroup_size;
        for (int texel = 0; texel < 2; texel++) spk__matmul_tuning_shuffle(ctx, texel, &shuffle[texel]);
        const spk__matmul_tuning *kernels[4] = {NULL, &tiles, has_shuffle ? &shuffle[0] : NULL,
                                                has_shuffle ? &shuffle[1] : NULL};
        for (int wd = SPK_DTYPE_F16; wd <= SPK_DTYPE_BF16; wd++)
            for (int kn = 0; kn < 4; kn++)
                if (kn < 2 || kernels[kn]) check_half_shapes(ctx, kernels[kn], (spk_dtype)wd, SPK_DTYPE_F32);
        /* F16 activations (A, C and the residual) with every weight type, on every kernel (float32
         * weights read alike in both tiers: once). */
        double worst = 0;
        for (int wd = tier == SPK_HALF_STORAGE_WORDS ? SPK_DTYPE_F16 : SPK_DTYPE_F32; wd <= SPK_DTYPE_BF16; wd++)
            for (int kn = 0; kn < 4 && caps->storage16; kn++)
                if (kn < 2 || kernels[kn]) worst = fmax(worst, check_half_shapes(ctx, kernels[kn], (spk_dtype)wd, SPK_DTYPE_F16));
        if (caps->storage16) print_message("F16 activations: worst relative error %.2e (bound 1e-3)\n", worst);
        /* Activations are F32 or F16 (no BF16). */
        int64_t as[2] = {4, 5}, bs[2] = {5, 6}, cs[2] = {4, 6};
        spk_tensor *a = test_tensor(ctx, 2, as, NULL), *b = test_typed_tensor(ctx, SPK_DTYPE_F16, 2, bs, NULL);
        spk_tensor *c16 = test_typed_tensor(ctx, SPK_DTYPE_BF16, 2, cs, NULL), *c = test_tensor(ctx, 2, cs, NULL);
        spk_tensor *a16 = test_typed_tensor(ctx, SPK_DTYPE_BF16, 2, as, NULL);
        spk_tensor *r16 = test_typed_tensor(ctx, SPK_DTYPE_F16, 2, cs, NULL);
        assert_int_equal(spk_matmul(ctx, a, b, NULL, c16), SPK_ERROR_UNSUPPORTED);
        assert_non_null(strstr(spk_context_last_error(ctx), "C is bf16"));
        assert_int_equal(spk_matmul(ctx, a16, b, NULL, c), SPK_ERROR_UNSUPPORTED);
        spk_matmul_desc d = {.residual = c16};
        assert_int_equal(spk_matmul(ctx, a, b, &d, c), SPK_ERROR_UNSUPPORTED);
        assert_non_null(strstr(spk_context_last_error(ctx), "residual is bf16"));
        /* A residual of another dtype than C (the model's first block adds its float32 input
         * into F16 activations): C = A B + R with R F16, C float32, and the reverse. */
        float ha[20], hb[30], hr[24], out[24];
        test_fill_random(ha, 20, 11), test_fill_random(hb, 30, 12), test_fill_random(hr, 24, 13);
        test_round_to(SPK_DTYPE_F16, hb, 30), test_round_to(SPK_DTYPE_F16, hr, 24);
        assert_int_equal(spk_tensor_upload(a, ha, 20), SPK_OK);
        assert_int_equal(spk_tensor_upload(b, hb, 30), SPK_OK);
        for (int rev = 0; rev < 2 && caps->storage16; rev++) {
            spk_tensor *r = rev ? test_tensor(ctx, 2, cs, hr) : r16, *cc = rev ? test_typed_tensor(ctx, SPK_DTYPE_F16, 2, cs, NULL) : c;
            if (!rev) assert_int_equal(spk_tensor_upload(r16, hr, 24), SPK_OK);
            d.residual = r;
            assert_int_equal(spk_matmul(ctx, a, b, &d, cc), SPK_OK);
            assert_int_equal(spk_tensor_download(cc, out, 24), SPK_OK);
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 6; j++) {
                    double ref = hr[i * 6 + j];
                    for (int q = 0; q < 5; q++) ref += (double)ha[i * 5 + q] * hb[q * 6 + j];
                    assert_true(fabs(out[i * 6 + j] - ref) <= (rev ? 2e-3 : 1e-5) * (1 + fabs(ref)));
                }
            if (rev) spk_tensor_destroy(r), spk_tensor_destroy(cc);
        }
        spk_tensor_destroy(a), spk_tensor_destroy(b), spk_tensor_destroy(c16), spk_tensor_destroy(a16);
        spk_tensor_destroy(c), spk_tensor_destroy(r16);
        spk_context_destroy(ctx);
        test_assert_no_validation();
    }
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
    spk_tensor *a = test_tensor(ctx, 2, a_s, NULL), *b = test_tensor(ctx, 2, b_s, NULL), *c = test_tensor(ctx, 2, c_s, NULL);
    spk_tensor *wrong_b = test_tensor(ctx, 2, bad_b, NULL), *v = test_tensor(ctx, 1, vec, NULL), *bias7 = test_tensor(ctx, 1, n7, NULL);
    assert_int_equal(spk_matmul(ctx, a, wrong_b, NULL, c), SPK_ERROR_SHAPE);
    assert_non_null(strstr(spk_context_last_error(ctx), "inner dimensions"));
    assert_int_equal(spk_matmul(ctx, v, b, NULL, c), SPK_ERROR_SHAPE);
    int64_t transposed[2] = {6, 4};
    spk_tensor *bad_c = test_tensor(ctx, 2, transposed, NULL);
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
    spk_tensor *s = test_tensor(ctx, 2, sq, NULL);
    assert_int_equal(spk_matmul(ctx, s, s, NULL, s), SPK_ERROR_INVALID_ARGUMENT); /* C overlaps A */
    /* Sizes past 32-bit element offsets cannot even be made as tensors. */
    int64_t huge[2] = {65536, 65536};
    spk_tensor *h = NULL;
    assert_int_equal(spk_tensor_create(ctx, 2, huge, &h), SPK_ERROR_TOO_LARGE);
    spk_tensor_destroy(a), spk_tensor_destroy(b), spk_tensor_destroy(c), spk_tensor_destroy(wrong_b);
    spk_tensor_destroy(v), spk_tensor_destroy(bias7), spk_tensor_destroy(s);
    test_assert_no_validation();
}

/* ---- backward ------------------------------------------------------------------------------- */

static double gelu_grad64(double x) { return 0.5 * (1.0 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / 2.5066282746310002; }

/* The forward with its pre-activation kept, then spk_matmul_backward: dA, dB and dbias against
 * float64, overwriting or accumulating onto random values. */
static void check_backward(spk_context *ctx, const spk__matmul_tuning *tuning, int64_t batch, int64_t m, int64_t n,
                           int64_t k, bool batched_b, bool gelu, bool accumulate) {
    int64_t as[3] = {batch, m, k}, bs[3] = {batch, k, n}, cs[3] = {batch, m, n}, ns[1] = {n};
    int64_t a_count = batch * m * k, nb = batched_b ? batch : 1, b_count = nb * k * n, c_count = batch * m * n;
    float *a = test_alloc_floats(a_count), *b = test_alloc_floats(b_count), *bias = test_alloc_floats(n);
    float *dc = test_alloc_floats(c_count), *pre = test_alloc_floats(c_count);
    float *da0 = test_alloc_floats(a_count), *db0 = test_alloc_floats(b_count), *dbias0 = test_alloc_floats(n);
    float *got = test_alloc_floats(a_count + b_count + n);
    test_fill_random(a, a_count, (uint64_t)(m * 7 + k)), test_fill_random(b, b_count, (uint64_t)(n * 3 + k));
    test_fill_random(bias, n, 5), test_fill_random(dc, c_count, 9);
    test_fill_random(da0, a_count, 11), test_fill_random(db0, b_count, 12), test_fill_random(dbias0, n, 13);
    spk_tensor *ta = test_tensor(ctx, 3, as, a), *tb = batched_b ? test_tensor(ctx, 3, bs, b) : test_tensor(ctx, 2, bs + 1, b);
    spk_tensor *tbias = test_tensor(ctx, 1, ns, bias), *tc = test_tensor(ctx, 3, cs, NULL), *tpre = test_tensor(ctx, 3, cs, NULL);
    spk_tensor *tdc = test_tensor(ctx, 3, cs, dc);
    spk_tensor *tda = test_tensor(ctx, 3, as, accumulate ? da0 : NULL);
    spk_tensor *tdb = batched_b ? test_tensor(ctx, 3, bs, accumulate ? db0 : NULL) : test_tensor(ctx, 2, bs + 1, accumulate ? db0 : NULL);
    spk_tensor *tdbias = test_tensor(ctx, 1, ns, accumulate ? dbias0 : NULL);
    spk_matmul_desc desc = {.bias = tbias, .activation = gelu ? SPK_ACTIVATION_GELU : SPK_ACTIVATION_NONE,
                            .pre_activation = tpre};
    if (spk__matmul_tuned(ctx, tuning, ta, tb, &desc, tc) != SPK_OK) fail_msg("%s", spk_context_last_error(ctx));
    assert_int_equal(spk_tensor_download(tpre, pre, c_count), SPK_OK);
    spk_matmul_grads grads = {.da = tda, .db = tdb, .dbias = tdbias, .accumulate = accumulate};
    if (spk__matmul_backward_tuned(ctx, tuning, ta, tb, &desc, tdc, &grads) != SPK_OK)
        fail_msg("%s", spk_context_last_error(ctx));

    /* float64: the kept pre-activation (A B + bias), then dZ, dA, dB, dbias. */
    double *dz = calloc((size_t)c_count, sizeof *dz), *want = calloc((size_t)(a_count + b_count + n), sizeof *want);
    assert_non_null(dz), assert_non_null(want);
    double *wa = want, *wb = want + a_count, *wbias = wb + b_count, pre_err = 0, pre_scale = 0;
    for (int64_t q = 0; q < batch; q++)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                const float *bb = b + (batched_b ? q * k * n : 0);
                double acc = bias[j];
                for (int64_t p = 0; p < k; p++) acc += (double)a[(q * m + i) * k + p] * bb[p * n + j];
                int64_t idx = (q * m + i) * n + j;
                pre_err = fmax(pre_err, fabs(acc - pre[idx])), pre_scale = fmax(pre_scale, fabs(acc));
                dz[idx] = gelu ? dc[idx] * gelu_grad64(pre[idx]) : dc[idx];
            }
    assert_true(pre_err <= 1e-5 * fmax(pre_scale, 1e-30));
    for (int64_t i = 0; i < a_count + b_count + n; i++)
        want[i] = accumulate ? (i < a_count ? da0[i] : i < a_count + b_count ? db0[i - a_count] : dbias0[i - a_count - b_count]) : 0;
    for (int64_t q = 0; q < batch; q++) {
        const float *bb = b + (batched_b ? q * k * n : 0);
        double *wbb = wb + (batched_b ? q * k * n : 0);
        for (int64_t i = 0; i < m; i++) {
            const double *dzr = dz + (q * m + i) * n;
            for (int64_t p = 0; p < k; p++) {
                double acc = 0, ai = a[(q * m + i) * k + p];
                for (int64_t j = 0; j < n; j++) acc += dzr[j] * bb[p * n + j], wbb[p * n + j] += ai * dzr[j];
                wa[(q * m + i) * k + p] += acc;
            }
            for (int64_t j = 0; j < n; j++) wbias[j] += dzr[j];
        }
    }
    assert_int_equal(spk_tensor_download(tda, got, a_count), SPK_OK);
    assert_int_equal(spk_tensor_download(tdb, got + a_count, b_count), SPK_OK);
    assert_int_equal(spk_tensor_download(tdbias, got + a_count + b_count, n), SPK_OK);
    double e[3] = {test_rel_error(got, wa, a_count), test_rel_error(got + a_count, wb, b_count),
                   test_rel_error(got + a_count + b_count, wbias, n)};
    if (!(e[0] <= 1e-5 && e[1] <= 1e-5 && e[2] <= 1e-5))
        fail_msg("matmul backward batch %lld m %lld n %lld k %lld (batched B %d gelu %d accumulate %d): relative "
                 "errors dA %.3g dB %.3g dbias %.3g", (long long)batch, (long long)m, (long long)n, (long long)k,
                 batched_b, gelu, accumulate, e[0], e[1], e[2]);
    spk_tensor *all[] = {ta, tb, tbias, tc, tpre, tdc, tda, tdb, tdbias};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) spk_tensor_destroy(all[i]);
    free(a), free(b), free(bias), free(dc), free(pre), free(da0), free(db0), free(dbias0), free(got), free(dz), free(want);
    test_assert_no_validation();
}

static const int64_t grad_sizes[] = {1, 7, 60, 65, 257};

/* Each size of the set as M, N and K against awkward others, batches, GELU and
 * accumulation, for one kernel tuning. */
static void run_backward(spk_context *ctx, const spk__matmul_tuning *tuning) {
    for (size_t i = 0; i < sizeof grad_sizes / sizeof grad_sizes[0]; i++) {
        int64_t s = grad_sizes[i];
        check_backward(ctx, tuning, 1, s, 65, 7, false, false, false);
        check_backward(ctx, tuning, 1, 7, s, 60, false, true, true);
        check_backward(ctx, tuning, 1, 60, 257, s, false, false, true);
    }
    check_backward(ctx, tuning, 3, 17, 33, 64, false, true, false); /* shared B sums over the batch */
    check_backward(ctx, tuning, 2, 60, 32, 65, true, false, true);  /* batched B */
    check_backward(ctx, tuning, 2, 64, 128, 32, false, true, true); /* every stored row whole vec4s */
}

static void test_backward_default_kernel(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    run_backward(ctx, NULL);
    check_backward(ctx, NULL, 1, 33, 47, 4097, false, true, false);
    check_backward(ctx, NULL, 1, 4097, 33, 7, false, false, false);
}

/* The transposed reads of every kernel: tiles (shared memory and register blocks) and the
 * shuffle kernel through storage buffers and texel views, at this device's subgroup size. The
 * default kernel runs every shape above; the others run one shape whose stored rows are all
 * awkward and one whose rows are all whole vec4s (each layout is a pipeline of its own: on CPU
 * drivers an LLVM compile each). */
static void run_backward_two(spk_context *ctx, const spk__matmul_tuning *t) {
    check_backward(ctx, t, 2, 65, 127, 31, false, true, true);
    check_backward(ctx, t, 2, 64, 128, 32, true, true, true);
}

static void test_backward_every_kernel(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    spk__matmul_tuning t;
    spk__matmul_tuning_tiles(ctx, &t);
    run_backward_two(ctx, &t);
    t = (spk__matmul_tuning){.wg_x = 8, .wg_y = 4, .tm = 3, .tn = 5, .bk = 7, .shared = true};
    run_backward_two(ctx, &t);
    t = (spk__matmul_tuning){.wg_x = 8, .wg_y = 8, .tm = 4, .tn = 4, .bk = 16, .shared = false};
    run_backward_two(ctx, &t);
    const spk__device_caps *caps = &ctx->caps;
    if (caps->subgroup_shuffle && caps->min_subgroup_size == caps->max_subgroup_size) {
        for (int texel = 0; texel < 2; texel++) {
            spk__matmul_tuning_shuffle(ctx, texel, &t);
            run_backward_two(ctx, &t);
        }
        /* One row set: fewer row quads than lanes (the default's are as many, or more at
         * subgroups of 4), two column groups, two subgroups per workgroup. */
        t = (spk__matmul_tuning){.wg_x = 2 * caps->max_subgroup_size, .tn = 2, .shuffle = true, .row_sets = 1};
        run_backward_two(ctx, &t);
        /* Sets of fewer rows than lanes: half a subgroup's in two sets (quads of transposed A
         * spread over them), and a set of 4 rows, one quad. */
        t = (spk__matmul_tuning){.wg_x = caps->max_subgroup_size, .tm = caps->max_subgroup_size / 2, .tn = 1,
                                 .shuffle = true, .row_sets = 2, .texel = true};
        run_backward_two(ctx, &t);
        t.tm = 4, t.row_sets = 1;
        run_backward_two(ctx, &t);
    } else if (getenv("CI")) {
        fail_msg("lavapipe in CI must have fixed-size subgroup shuffles");
    }
}

static void test_backward_errors(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    int64_t a_s[2] = {4, 5}, b_s[2] = {5, 6}, c_s[2] = {4, 6}, n6[1] = {6};
    spk_tensor *a = test_tensor(ctx, 2, a_s, NULL), *b = test_tensor(ctx, 2, b_s, NULL), *dc = test_tensor(ctx, 2, c_s, NULL);
    spk_tensor *da = test_tensor(ctx, 2, a_s, NULL), *dbias = test_tensor(ctx, 1, n6, NULL);
    spk_matmul_desc gelu = {.activation = SPK_ACTIVATION_GELU};
    spk_matmul_grads g = {.da = da};
    assert_int_equal(spk_matmul_backward(ctx, a, b, &gelu, dc, &g), SPK_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(spk_context_last_error(ctx), "pre-activation"));
    g = (spk_matmul_grads){.da = dbias};
    assert_int_equal(spk_matmul_backward(ctx, a, b, NULL, dc, &g), SPK_ERROR_SHAPE);
    assert_non_null(strstr(spk_context_last_error(ctx), "dA"));
    g = (spk_matmul_grads){.dbias = da};
    assert_int_equal(spk_matmul_backward(ctx, a, b, NULL, dc, &g), SPK_ERROR_SHAPE);
    g = (spk_matmul_grads){.da = a};
    assert_int_equal(spk_matmul_backward(ctx, a, b, NULL, dc, &g), SPK_ERROR_INVALID_ARGUMENT); /* dA is A */
    assert_int_equal(spk_matmul_backward(ctx, a, b, NULL, da, &g), SPK_ERROR_SHAPE);            /* dC's shape */
    assert_int_equal(spk_matmul_backward(ctx, a, b, NULL, dc, NULL), SPK_OK);                  /* nothing asked */
    spk_tensor_destroy(a), spk_tensor_destroy(b), spk_tensor_destroy(dc), spk_tensor_destroy(da);
    spk_tensor_destroy(dbias);
    test_assert_no_validation();
}

/* GELU's backward on its own: dy * gelu'(x) against float64 over [-10, 10], in place. */
static void test_gelu_backward(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    const int64_t n = 100001;
    float *x = test_alloc_floats(n), *dy = test_alloc_floats(n), *got = test_alloc_floats(n);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(-10.0 + 20.0 * (double)i / (double)(n - 1));
    test_fill_random(dy, n, 3);
    int64_t shape[1] = {n};
    spk_tensor *tx = test_tensor(ctx, 1, shape, x), *tdy = test_tensor(ctx, 1, shape, dy);
    assert_int_equal(spk_gelu_backward(ctx, tx, tdy, tdy), SPK_OK);
    assert_int_equal(spk_tensor_download(tdy, got, n), SPK_OK);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double ref = dy[i] * gelu_grad64((double)x[i]), e = fabs((double)got[i] - ref) / fmax(1.0, fabs(ref));
        if (!(e <= worst)) worst = e;
    }
    printf("gelu backward: max error %.3g\n", worst);
    assert_true(worst <= 1e-6);
    int64_t other[1] = {7};
    spk_tensor *t7 = test_tensor(ctx, 1, other, NULL);
    assert_int_equal(spk_gelu_backward(ctx, tx, t7, tdy), SPK_ERROR_SHAPE);
    spk_tensor_destroy(tx), spk_tensor_destroy(tdy), spk_tensor_destroy(t7);
    free(x), free(dy), free(got);
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
    spk_tensor *tx = test_tensor(ctx, 1, shape, x), *ty = test_tensor(ctx, 1, shape, NULL);
    assert_int_equal(spk__unary(ctx, SPK__UNARY_ERF, tx, NULL, ty), SPK_OK);
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
        cmocka_unit_test(test_half_weights),
        cmocka_unit_test(test_grid_split),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_gelu_backward),
        cmocka_unit_test(test_backward_default_kernel),
        cmocka_unit_test(test_backward_every_kernel),
        cmocka_unit_test(test_backward_errors),
    };
    return cmocka_run_group_tests(tests, NULL, test_teardown_shared_context);
}
