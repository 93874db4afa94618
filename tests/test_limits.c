/* Hostile values at every public entry point: NULL pointers, ranks 0 and 9, zero, negative and
 * huge dimensions, sizes whose products overflow, mismatched and foreign tensors. Each is a clear
 * error (a status and, where there is a context, a message), never a crash. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"

static void expect(spk_context *ctx, spk_status got, spk_status want, const char *words) {
    if (got != want) fail_msg("status %s, expected %s (%s)", spk_status_string(got), spk_status_string(want), words);
    if (ctx && words && !strstr(spk_context_last_error(ctx), words))
        fail_msg("message '%s' lacks '%s'", spk_context_last_error(ctx), words);
}

static void without_a_context(void **state) {
    (void)state;
    spk_tensor *t = (spk_tensor *)0x1;
    int64_t shape[1] = {4};
    expect(NULL, spk_tensor_create(NULL, 1, shape, &t), SPK_ERROR_INVALID_ARGUMENT, NULL);
    assert_null(t);
    expect(NULL, spk_context_create(NULL, NULL), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_softpick(NULL, NULL, 0, NULL), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_matmul(NULL, NULL, NULL, NULL, NULL), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_layer_norm(NULL, NULL, NULL, NULL, NULL, NULL), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_gelu(NULL, NULL, NULL), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_softpick_attention(NULL, NULL, NULL, NULL, 1, true, NULL), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_record_softpick(NULL, NULL, NULL, 0, NULL), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_record_matmul(NULL, NULL, NULL, NULL, NULL, NULL), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_record_layer_norm(NULL, NULL, NULL, NULL, NULL, NULL, NULL), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_record_softpick_attention(NULL, NULL, NULL, NULL, NULL, 1, true, NULL), SPK_ERROR_INVALID_ARGUMENT,
           NULL);
    expect(NULL, spk_tensor_wrap_buffer(NULL, VK_NULL_HANDLE, 0, 1, shape, &t), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_tensor_upload(NULL, NULL, 0), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_tensor_download(NULL, NULL, 0), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_model_create(NULL, NULL, NULL), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_model_init_random(NULL, 1), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_model_load_safetensors(NULL, "x"), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_model_forward(NULL, NULL, 1, 1, NULL), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_model_forward_tensors(NULL, NULL, NULL), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_model_record_forward(NULL, NULL, NULL, NULL), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_model_set_output_mode(NULL, SPK_OUTPUT_ALL), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_model_create_from_safetensors(NULL, "x", NULL, NULL), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_context_create_external(NULL, NULL), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_context_device_info(NULL, NULL), SPK_ERROR_INVALID_ARGUMENT, NULL);
    uint32_t count;
    expect(NULL, spk_list_devices(NULL, 3, &count), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_list_devices(NULL, 0, NULL), SPK_ERROR_INVALID_ARGUMENT, NULL);
    char error[64];
    spk_array a;
    expect(NULL, spk_npy_read(NULL, &a, error, sizeof error), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_npy_parse(NULL, 10, &a, error, sizeof error), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_npy_write(NULL, 1, shape, NULL, error, sizeof error), SPK_ERROR_INVALID_ARGUMENT, NULL);
    expect(NULL, spk_model_config_check(NULL, error, sizeof error), SPK_ERROR_INVALID_ARGUMENT, NULL);
    int ndim;
    int64_t out_shape[3];
    assert_int_equal(spk_model_output_shape(NULL, 1, 1, &ndim, out_shape), 0);
    assert_string_equal(spk_context_last_error(NULL), "");
    assert_int_equal(spk_context_last_gpu_time_ns(NULL), 0);
    assert_int_equal(spk_model_output_size(NULL), 0);
    assert_null(spk_model_get_config(NULL));
    spk_tensor_destroy(NULL);
    spk_model_destroy(NULL);
    spk_context_destroy(NULL);
    spk_array_free(NULL);
}

static void shapes(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    spk_tensor *t = NULL;
    int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, neg[2] = {4, -1}, huge[2] = {INT64_MAX, 2};
    int64_t overflow[4] = {1 << 20, 1 << 20, 1 << 20, 1 << 20}, big[1] = {(int64_t)1 << 40};
    expect(ctx, spk_tensor_create(ctx, 0, nine, &t), SPK_ERROR_SHAPE, "rank 0");
    expect(ctx, spk_tensor_create(ctx, 9, nine, &t), SPK_ERROR_SHAPE, "rank 9");
    expect(ctx, spk_tensor_create(ctx, -1, nine, &t), SPK_ERROR_SHAPE, "rank -1");
    expect(ctx, spk_tensor_create(ctx, 2, neg, &t), SPK_ERROR_SHAPE, "negative");
    expect(ctx, spk_tensor_create(ctx, 2, huge, &t), SPK_ERROR_TOO_LARGE, "overflows");
    expect(ctx, spk_tensor_create(ctx, 4, overflow, &t), SPK_ERROR_TOO_LARGE, "overflows");
    /* 4 TiB: more than any heap (or maxStorageBufferRange); the message gives size and limit */
    expect(ctx, spk_tensor_create(ctx, 1, big, &t), SPK_ERROR_TOO_LARGE, "4398046511104 bytes exceeds the device's");
    int64_t past_range[1] = {(int64_t)(1u << 30)}; /* 4 GiB: past lavapipe's maxStorageBufferRange */
    spk_status s = spk_tensor_create(ctx, 1, past_range, &t);
    if (s != SPK_OK) expect(ctx, s, SPK_ERROR_TOO_LARGE, "bytes exceeds the device's");
    else spk_tensor_destroy(t), t = NULL;
    expect(ctx, spk_tensor_create(ctx, 1, NULL, &t), SPK_ERROR_INVALID_ARGUMENT, "NULL");
    expect(ctx, spk_tensor_create(ctx, 1, big, NULL), SPK_ERROR_INVALID_ARGUMENT, "NULL");
    assert_null(t);

    int64_t s23[2] = {2, 3}, s32[2] = {3, 2}, zero[2] = {0, 3}, n3[1] = {3};
    spk_tensor *a, *b, *c, *z, *v;
    assert_int_equal(spk_tensor_create(ctx, 2, s23, &a), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 2, s32, &b), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 2, s23, &c), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 2, zero, &z), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 1, n3, &v), SPK_OK);
    float host[6] = {0};
    expect(ctx, spk_tensor_upload(a, host, 5), SPK_ERROR_SHAPE, "5 floats");
    expect(ctx, spk_tensor_upload(a, NULL, 6), SPK_ERROR_INVALID_ARGUMENT, "NULL");
    expect(ctx, spk_tensor_download(a, host, 7), SPK_ERROR_SHAPE, "7 floats");
    assert_int_equal(spk_tensor_upload(z, NULL, 0), SPK_OK); /* empty is fine */
    expect(ctx, spk_softpick(ctx, a, 2, c), SPK_ERROR_INVALID_ARGUMENT, "axis 2");
    expect(ctx, spk_softpick(ctx, a, -3, c), SPK_ERROR_INVALID_ARGUMENT, "axis -3");
    expect(ctx, spk_softpick(ctx, a, 0, b), SPK_ERROR_SHAPE, "shape");
    expect(ctx, spk_softpick(ctx, a, 0, NULL), SPK_ERROR_INVALID_ARGUMENT, "NULL");
    assert_int_equal(spk_softpick(ctx, z, 0, z), SPK_OK);
    expect(ctx, spk_matmul(ctx, a, a, NULL, c), SPK_ERROR_SHAPE, "inner dimensions");
    expect(ctx, spk_matmul(ctx, v, b, NULL, c), SPK_ERROR_SHAPE, "rank");
    int64_t s22[2] = {2, 2};
    spk_tensor *d;
    assert_int_equal(spk_tensor_create(ctx, 2, s22, &d), SPK_OK);
    spk_matmul_desc bad_bias = {.bias = a};
    expect(ctx, spk_matmul(ctx, a, b, &bad_bias, d), SPK_ERROR_SHAPE, "bias");
    spk_matmul_desc bad_act = {.activation = (spk_activation)9};
    expect(ctx, spk_matmul(ctx, a, b, &bad_act, d), SPK_ERROR_INVALID_ARGUMENT, "activation");
    spk_tensor_destroy(d);
    expect(ctx, spk_matmul(ctx, a, b, NULL, a), SPK_ERROR_SHAPE, "shape");
    expect(ctx, spk_layer_norm(ctx, a, a, v, NULL, c), SPK_ERROR_SHAPE, "gamma");
    spk_layer_norm_desc nan_eps = {.epsilon = NAN}, neg_eps = {.epsilon = -1.0f};
    expect(ctx, spk_layer_norm(ctx, a, v, v, &nan_eps, c), SPK_ERROR_INVALID_ARGUMENT, "epsilon");
    expect(ctx, spk_layer_norm(ctx, a, v, v, &neg_eps, c), SPK_ERROR_INVALID_ARGUMENT, "epsilon");
    expect(ctx, spk_gelu(ctx, a, b), SPK_ERROR_SHAPE, "shape");

    /* A tensor of another context. */
    spk_context *other = test_context(NULL);
    spk_tensor *foreign;
    assert_int_equal(spk_tensor_create(other, 2, s23, &foreign), SPK_OK);
    expect(ctx, spk_softpick(ctx, foreign, 0, c), SPK_ERROR_INVALID_ARGUMENT, "another context");
    expect(ctx, spk_gelu(ctx, a, foreign), SPK_ERROR_INVALID_ARGUMENT, "another context");
    spk_tensor_destroy(foreign);
    spk_context_destroy(other);

    /* Model arguments. */
    spk_model_config cfg = spk_model_config_default(8);
    cfg.hidden_size = 8, cfg.num_heads = 2, cfg.num_layers = 1, cfg.window_size = 2;
    spk_model *m;
    assert_int_equal(spk_model_create(ctx, &cfg, &m), SPK_OK);
    assert_int_equal(spk_model_init_random(m, 3), SPK_OK);
    float y[64];
    expect(ctx, spk_model_forward(m, host, INT64_MAX, 2, y), SPK_ERROR_TOO_LARGE, "too large");
    expect(ctx, spk_model_forward(m, host, 1, 0, y), SPK_ERROR_SHAPE, "must be > 0");
    expect(ctx, spk_model_forward(m, host, 1, 1, NULL), SPK_ERROR_INVALID_ARGUMENT, "NULL");
    expect(ctx, spk_model_forward_tensors(m, a, c), SPK_ERROR_SHAPE, "[batch, seq_len, 8]");
    expect(ctx, spk_model_load_safetensors(m, NULL), SPK_ERROR_INVALID_ARGUMENT, "NULL");
    assert_int_equal(spk_model_output_shape(m, 0, 1, &(int){0}, (int64_t[3]){0}), 0);
    spk_model_destroy(m);
    spk_tensor_destroy(a), spk_tensor_destroy(b), spk_tensor_destroy(c), spk_tensor_destroy(z), spk_tensor_destroy(v);
    test_assert_no_validation();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(without_a_context),
        cmocka_unit_test(shapes),
    };
    return cmocka_run_group_tests(tests, NULL, test_teardown_shared_context);
}
