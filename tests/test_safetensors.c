/* The safetensors reader on hand-made files: a valid file, F16 and BF16 conversion, and every
 * kind of malformed file, each refused with a message that names the problem. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "safetensors.h"

static const float g_a[6] = {1, 2, 3, 4, 5, 6}, g_b[3] = {-1, 0.5f, 7};

static unsigned char *valid_file(size_t *size) {
    test_st_entry e[2] = {
        {"a.kernel", "F32", 2, {2, 3}, g_a, sizeof g_a},
        {"a.bias", "F32", 1, {3}, g_b, sizeof g_b},
    };
    return test_safetensors_bytes(e, 2, "{\"hidden_size\":\"3\",\"note\":\"caf\\u00e9 \\\"q\\\"\"}", size);
}

static void valid(void **state) {
    (void)state;
    size_t size;
    unsigned char *bytes = valid_file(&size);
    spk__safetensors st;
    char error[256];
    assert_int_equal(spk__safetensors_parse(bytes, size, &st, error, sizeof error), SPK_OK);
    assert_int_equal(st.tensor_count, 2);
    const spk__st_tensor *a = spk__safetensors_find(&st, "a.kernel");
    assert_non_null(a);
    assert_int_equal(a->ndim, 2);
    assert_int_equal(a->shape[0], 2);
    assert_int_equal(a->shape[1], 3);
    float out[6];
    spk__safetensors_to_f32(&st, a, out);
    assert_memory_equal(out, g_a, sizeof g_a);
    spk__safetensors_to_f32(&st, spk__safetensors_find(&st, "a.bias"), out);
    assert_memory_equal(out, g_b, sizeof g_b);
    assert_string_equal(spk__safetensors_metadata(&st, "hidden_size"), "3");
    assert_string_equal(spk__safetensors_metadata(&st, "note"), "caf\xc3\xa9 \"q\"");
    assert_null(spk__safetensors_metadata(&st, "missing"));
    assert_null(spk__safetensors_find(&st, "a"));
    spk__safetensors_free(&st);
    free(bytes);
}

static void half_precision(void **state) {
    (void)state;
    /* F16: 1, -2.5, 65504 (largest), 2^-24 (smallest subnormal), -0, inf; BF16: 1, -3, 2^-100. */
    const uint16_t f16[6] = {0x3C00, 0xC100, 0x7BFF, 0x0001, 0x8000, 0x7C00};
    const uint16_t bf16[3] = {0x3F80, 0xC040, 0x0D80};
    test_st_entry e[2] = {
        {"h", "F16", 1, {6}, f16, sizeof f16},
        {"b", "BF16", 1, {3}, bf16, sizeof bf16},
    };
    size_t size;
    unsigned char *bytes = test_safetensors_bytes(e, 2, NULL, &size);
    spk__safetensors st;
    char error[256];
    assert_int_equal(spk__safetensors_parse(bytes, size, &st, error, sizeof error), SPK_OK);
    float h[6], b[3];
    spk__safetensors_to_f32(&st, spk__safetensors_find(&st, "h"), h);
    spk__safetensors_to_f32(&st, spk__safetensors_find(&st, "b"), b);
    assert_true(h[0] == 1.0f && h[1] == -2.5f && h[2] == 65504.0f && h[3] == ldexpf(1.0f, -24));
    assert_true(h[4] == 0.0f && signbit(h[4]) && isinf(h[5]) && h[5] > 0);
    assert_true(b[0] == 1.0f && b[1] == -3.0f && b[2] == ldexpf(1.0f, -100));
    spk__safetensors_free(&st);
    free(bytes);
}

/* Parses `header` (JSON) followed by `data_bytes` zero bytes; expects a format error whose
 * message contains `expect`. */
static void expect_bad_header(const char *header, size_t data_bytes, const char *expect) {
    size_t n = strlen(header), size = 8 + n + data_bytes;
    unsigned char *bytes = calloc(1, size);
    assert_non_null(bytes);
    for (int i = 0; i < 8; i++) bytes[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(bytes + 8, header, n);
    spk__safetensors st;
    char error[256] = "";
    spk_status s = spk__safetensors_parse(bytes, size, &st, error, sizeof error);
    if (s != SPK_ERROR_FORMAT || !strstr(error, expect))
        fail_msg("header %s: status %d, message '%s', expected one containing '%s'", header, s, error, expect);
    assert_int_equal(st.tensor_count, 0);
    free(bytes);
}

static void malformed(void **state) {
    (void)state;
    expect_bad_header("", 0, "expected a JSON object");
    expect_bad_header("{", 0, "expected a string");
    expect_bad_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, "expected ',' or '}'");
    expect_bad_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x", 4, "trailing");
    expect_bad_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]", 4, "'t'");
    expect_bad_header("{\"t\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unsupported dtype 'I32'");
    expect_bad_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 3, "fall outside");
    expect_bad_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8, "shape needs 8");
    expect_bad_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 8, "fall outside");
    expect_bad_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"u\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}",
                      8, "overlap");
    expect_bad_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                      8, "appears twice");
    expect_bad_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "non-negative");
    expect_bad_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "integer");
    expect_bad_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                      "more than 8");
    expect_bad_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", 4,
                      "too large");
    expect_bad_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
                      "overflows");
    expect_bad_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "needs 2");
    expect_bad_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "lacks data_offsets");
    expect_bad_header("{\"t\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                      "repeats");
    expect_bad_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, "unknown field");
    expect_bad_header("{\"t\":[]}", 0, "must be an object");
    expect_bad_header("{\"__metadata__\":{\"a\":1}}", 0, "must be strings");
    expect_bad_header("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "twice");
    expect_bad_header("{\"t\\q\":{}}", 0, "bad escape");
    expect_bad_header("{\"t\\u00\":{}}", 0, "\\u escape");
    expect_bad_header("{\"t\\ud800\":{}}", 0, "\\u escape");
    expect_bad_header("{\"t\n\":{}}", 0, "control character");
    expect_bad_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, "outside");
}

/* Header lengths past the end, and every truncation of a valid file. */
static void truncated(void **state) {
    (void)state;
    size_t size;
    unsigned char *bytes = valid_file(&size);
    spk__safetensors st;
    char error[256];
    for (size_t n = 0; n < size; n++) {
        spk_status s = spk__safetensors_parse(bytes, n, &st, error, sizeof error);
        if (s != SPK_ERROR_FORMAT) fail_msg("a file truncated to %zu of %zu bytes gave status %d", n, size, s);
        assert_true(strstr(error, "truncated") || strstr(error, "past the end") || strstr(error, "outside"));
    }
    bytes[7] = 0x7F; /* a header length near 2^63 */
    assert_int_equal(spk__safetensors_parse(bytes, size, &st, error, sizeof error), SPK_ERROR_FORMAT);
    assert_non_null(strstr(error, "past the end"));
    free(bytes);
}

static void files(void **state) {
    (void)state;
    spk__safetensors st;
    char error[256];
    assert_int_equal(spk__safetensors_read("/nonexistent/w.safetensors", &st, error, sizeof error), SPK_ERROR_IO);
    assert_non_null(strstr(error, "cannot open"));
    assert_int_equal(spk__safetensors_read(test_data_path("golden/model-e20-h32-n4-l2/weights.safetensors"), &st,
                                           error, sizeof error),
                     SPK_OK);
    assert_int_equal(st.tensor_count, 36);
    assert_string_equal(spk__safetensors_metadata(&st, "num_heads"), "4");
    spk__safetensors_free(&st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid),     cmocka_unit_test(half_precision), cmocka_unit_test(malformed),
        cmocka_unit_test(truncated), cmocka_unit_test(files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
