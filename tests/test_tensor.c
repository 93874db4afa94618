/* Tensors and the memory behind them: shapes, round trips through mapped memory and through the
 * staging path, sub-allocation from shared blocks, dedicated blocks for large tensors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "internal.h"

static void round_trip(spk_context *ctx, int ndim, const int64_t *shape) {
    spk_tensor *t = NULL;
    assert_int_equal(spk_tensor_create(ctx, ndim, shape, &t), SPK_OK);
    assert_int_equal(spk_tensor_ndim(t), ndim);
    assert_memory_equal(spk_tensor_shape(t), shape, (size_t)ndim * sizeof *shape);
    int64_t n = spk_tensor_count(t);
    float *in = test_alloc_floats(n), *out = test_alloc_floats(n);
    test_fill_random(in, n, (uint64_t)n);
    memset(out, 0xff, (size_t)n * sizeof *out);
    assert_int_equal(spk_tensor_upload(t, in, n), SPK_OK);
    assert_int_equal(spk_tensor_download(t, out, n), SPK_OK);
    assert_memory_equal(in, out, (size_t)n * sizeof *in);
    free(in);
    free(out);
    spk_tensor_destroy(t);
}

static void test_round_trips(void **state) {
    (void)state;
    spk_context *ctx = test_context(NULL);
    int64_t one[1] = {1}, odd[3] = {3, 5, 7}, big[2] = {1000, 1001}, eight[8] = {2, 1, 2, 1, 3, 1, 2, 2};
    for (int staging = 0; staging < 2; staging++) {
        /* The staging path (discrete GPUs) is exercised here on any device, in small chunks. */
        ctx->force_staging = staging;
        round_trip(ctx, 1, one);
        round_trip(ctx, 3, odd);
        round_trip(ctx, 2, big);
        round_trip(ctx, 8, eight);
    }
    spk_context_destroy(ctx);
    test_assert_no_validation();
}

static void test_small_tensors_share_blocks(void **state) {
    (void)state;
    spk_context *ctx = test_context(NULL);
    uint32_t before = ctx->allocator.block_count;
    spk_tensor *t[100];
    int64_t shape[1] = {1000};
    for (int i = 0; i < 100; i++) assert_int_equal(spk_tensor_create(ctx, 1, shape, &t[i]), SPK_OK);
    /* 100 tensors of 4 KB: one block, distinct aligned ranges. */
    assert_int_equal(ctx->allocator.block_count, before + 1);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(t[i]->ref.offset % 16, 0);
        for (int j = 0; j < i; j++)
            assert_true(t[i]->ref.offset + t[i]->ref.size <= t[j]->ref.offset ||
                        t[j]->ref.offset + t[j]->ref.size <= t[i]->ref.offset);
    }
    /* Freed ranges coalesce: after freeing every other tensor and then the rest, the block is
     * one free range again and a tensor of the whole freed size fits without a new block. */
    for (int i = 0; i < 100; i += 2) spk_tensor_destroy(t[i]);
    for (int i = 1; i < 100; i += 2) spk_tensor_destroy(t[i]);
    spk__block *b = ctx->allocator.blocks[before];
    assert_int_equal(b->free_count, 1);
    assert_int_equal(b->free_ranges[0].size, b->size);
    int64_t whole[1] = {100 * 1000};
    spk_tensor *w = NULL;
    assert_int_equal(spk_tensor_create(ctx, 1, whole, &w), SPK_OK);
    assert_int_equal(ctx->allocator.block_count, before + 1);
    spk_tensor_destroy(w);

    /* A large tensor gets a dedicated block, returned to the driver when destroyed. */
    int64_t large[1] = {(int64_t)(ctx->allocator.block_size / 4)};
    spk_tensor *l = NULL;
    assert_int_equal(spk_tensor_create(ctx, 1, large, &l), SPK_OK);
    assert_int_equal(ctx->allocator.block_count, before + 2);
    spk_tensor_destroy(l);
    assert_int_equal(ctx->allocator.block_count, before + 1);
    spk_context_destroy(ctx);
    test_assert_no_validation();
}

/* 16-bit tensors: uploads round (as spk_convert, checked against float64 in test_dtype), raw
 * bytes go both ways unchanged, through mapped memory and through staging in chunks; their sizes
 * and views follow the dtype; f32-only ops refuse them. */
static void test_typed_tensors(void **state) {
    (void)state;
    spk_context *ctx = test_context(NULL);
    const int64_t n = 5001; /* odd, and several 4 KB staging chunks */
    int64_t shape[1] = {n};
    float *in = test_alloc_floats(n), *out = test_alloc_floats(n);
    test_fill_random(in, n, 9);
    in[0] = 1e6f, in[1] = -0.0f, in[2] = 1e-7f, in[3] = NAN, in[4] = -INFINITY; /* inf in F16, a subnormal */
    uint16_t *want = calloc((size_t)n, 2), *raw = calloc((size_t)n, 2);
    assert_non_null(want);
    assert_non_null(raw);
    for (int dt = SPK_DTYPE_F16; dt <= SPK_DTYPE_BF16; dt++) {
        assert_int_equal(spk_convert(in, SPK_DTYPE_F32, want, (spk_dtype)dt, (size_t)n), SPK_OK);
        for (int staging = 0; staging < 2; staging++) {
            ctx->force_staging = staging;
            spk_tensor *t = NULL;
            assert_int_equal(spk_tensor_create_typed(ctx, (spk_dtype)dt, 1, shape, &t), SPK_OK);
            assert_int_equal(spk_tensor_dtype(t), dt);
            assert_int_equal(t->ref.size, (2 * n + 3) / 4 * 4); /* whole words */
            if (dt == SPK_DTYPE_F16 ? ctx->caps.texel_f16 : ctx->caps.texel_u16) assert_non_null(t->views[1]);
            assert_int_equal(spk_tensor_upload(t, in, n), SPK_OK);
            assert_int_equal(spk_tensor_download_raw(t, raw, 2 * (size_t)n), SPK_OK);
            assert_memory_equal(raw, want, 2 * (size_t)n);
            assert_int_equal(spk_tensor_download(t, out, n), SPK_OK);
            for (int64_t i = 0; i < n; i++) {
                float w;
                spk_convert(&want[i], (spk_dtype)dt, &w, SPK_DTYPE_F32, 1);
                assert_true(memcmp(&w, &out[i], 4) == 0);
            }
            raw[7] ^= 0x5A5A; /* raw upload: exactly these bits */
            assert_int_equal(spk_tensor_upload_raw(t, raw, 2 * (size_t)n), SPK_OK);
            memset(want, 0, 2 * (size_t)n);
            assert_int_equal(spk_tensor_download_raw(t, want, 2 * (size_t)n), SPK_OK);
            assert_memory_equal(raw, want, 2 * (size_t)n);
            assert_int_equal(spk_convert(in, SPK_DTYPE_F32, want, (spk_dtype)dt, (size_t)n), SPK_OK);
            assert_int_equal(spk_tensor_upload_raw(t, raw, 2 * (size_t)n - 1), SPK_ERROR_SHAPE);
            assert_int_equal(spk_tensor_download_raw(t, raw, 4 * (size_t)n), SPK_ERROR_SHAPE);
            assert_non_null(strstr(spk_context_last_error(ctx), "bytes"));

            /* An op that takes float32 only refuses it, naming the dtype. */
            spk_tensor *y = test_tensor(ctx, 1, shape, NULL);
            assert_int_equal(spk_gelu(ctx, t, y), SPK_ERROR_UNSUPPORTED);
            assert_non_null(strstr(spk_context_last_error(ctx), spk_dtype_name((spk_dtype)dt)));
            assert_int_equal(spk_gelu(ctx, y, t), SPK_ERROR_UNSUPPORTED);
            spk_tensor_destroy(y);
            spk_tensor_destroy(t);
        }
    }
    ctx->force_staging = false;
    spk_tensor *t = NULL;
    assert_int_equal(spk_tensor_create_typed(ctx, (spk_dtype)3, 1, shape, &t), SPK_ERROR_INVALID_ARGUMENT);
    assert_null(t);
    /* The byte size, not the element count, meets the device's limits. */
    int64_t half_limit[1] = {(int64_t)(ctx->caps.props.limits.maxStorageBufferRange / 2 + 1)};
    assert_int_equal(spk_tensor_create_typed(ctx, SPK_DTYPE_F16, 1, half_limit, &t), SPK_ERROR_TOO_LARGE);
    free(in);
    free(out);
    free(want);
    free(raw);
    spk_context_destroy(ctx);
    test_assert_no_validation();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_small_tensors_share_blocks),
        cmocka_unit_test(test_typed_tensors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
