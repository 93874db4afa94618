/* Status strings and option defaults: no GPU needed. */
#include <string.h>

#include "harness.h"

static void test_every_status_has_a_distinct_string(void **state) {
    (void)state;
    static const spk_status all[] = {
#define SPK_STATUS_VALUE_(name, value, text) name,
        SPK_STATUS_LIST(SPK_STATUS_VALUE_)
#undef SPK_STATUS_VALUE_
    };
    size_t n = sizeof all / sizeof all[0];
    assert_true(n >= 13);
    for (size_t i = 0; i < n; i++) {
        const char *s = spk_status_string(all[i]);
        assert_non_null(s);
        assert_true(strlen(s) > 3);
        assert_string_not_equal(s, "unknown status");
        for (size_t j = 0; j < i; j++) assert_string_not_equal(s, spk_status_string(all[j]));
    }
    assert_string_equal(spk_status_string(SPK_OK), "success");
    assert_string_equal(spk_status_string((spk_status)12345), "unknown status");
    assert_string_equal(spk_status_string((spk_status)-999), "unknown status");
    /* The enumerator names (what the Python package's Error.status holds). */
    assert_string_equal(spk_status_name(SPK_OK), "SPK_OK");
    assert_string_equal(spk_status_name(SPK_ERROR_SHAPE), "SPK_ERROR_SHAPE");
    assert_string_equal(spk_status_name(SPK_ERROR_TOO_LARGE), "SPK_ERROR_TOO_LARGE");
    assert_string_equal(spk_status_name((spk_status)-999), "SPK_UNKNOWN_STATUS");
}

static void test_device_type_strings(void **state) {
    (void)state;
    assert_string_equal(spk_device_type_string(SPK_DEVICE_CPU), "CPU");
    assert_string_equal(spk_device_type_string(SPK_DEVICE_DISCRETE_GPU), "discrete GPU");
    assert_string_equal(spk_device_type_string((spk_device_type)77), "other");
}

/* A zeroed options struct means the defaults: documented values that are all zero. */
static void test_zeroed_options_are_the_defaults(void **state) {
    (void)state;
    spk_context_desc desc;
    memset(&desc, 0, sizeof desc);
    assert_null(desc.device);
    assert_null(desc.pipeline_cache_path);
    assert_false(desc.validation);
    assert_int_equal(desc.reduction, SPK_REDUCTION_AUTO);
    assert_int_equal(SPK_REDUCTION_AUTO, 0);
}

static void test_null_arguments(void **state) {
    (void)state;
    assert_int_equal(spk_context_create(NULL, NULL), SPK_ERROR_INVALID_ARGUMENT);
    assert_string_equal(spk_context_last_error(NULL), "");
    assert_int_equal(spk_list_devices(NULL, 1, NULL), SPK_ERROR_INVALID_ARGUMENT);
    uint32_t count;
    assert_int_equal(spk_list_devices(NULL, 3, &count), SPK_ERROR_INVALID_ARGUMENT);
    spk_tensor *t = (spk_tensor *)&t;
    int64_t shape[1] = {4};
    assert_int_equal(spk_tensor_create(NULL, 1, shape, &t), SPK_ERROR_INVALID_ARGUMENT);
    assert_null(t);
    assert_int_equal(spk_tensor_count(NULL), 0);
    assert_int_equal(spk_tensor_ndim(NULL), 0);
    assert_null(spk_tensor_shape(NULL));
    assert_int_equal(spk_tensor_upload(NULL, NULL, 0), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_context_device_info(NULL, NULL), SPK_ERROR_INVALID_ARGUMENT);
    spk_context_destroy(NULL);
    spk_tensor_destroy(NULL);
    spk_array_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_status_has_a_distinct_string),
        cmocka_unit_test(test_device_type_strings),
        cmocka_unit_test(test_zeroed_options_are_the_defaults),
        cmocka_unit_test(test_null_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
