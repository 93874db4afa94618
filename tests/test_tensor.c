/* Tensors and the memory behind them: shapes, round trips through mapped memory and through the
 * staging path, sub-allocation from shared blocks, dedicated blocks for large tensors. */
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_small_tensors_share_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
