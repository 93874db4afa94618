/* Context creation, device choice, the validation messenger, and the pipeline cache file. */
#define _POSIX_C_SOURCE 200809L /* setenv, mkstemp */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "internal.h"

static void test_list_devices(void **state) {
    (void)state;
    uint32_t count = 0;
    spk_status s = spk_list_devices(NULL, 0, &count);
    if (s == SPK_ERROR_NO_VULKAN || (s == SPK_OK && count == 0)) {
        if (getenv("CI")) fail_msg("no Vulkan device in CI");
        skip();
    }
    assert_int_equal(s, SPK_OK);
    spk_device_info infos[16];
    uint32_t n = 0;
    assert_int_equal(spk_list_devices(infos, 16, &n), SPK_OK);
    assert_int_equal(n, count);
    for (uint32_t i = 0; i < n && i < 16; i++) {
        assert_int_equal(infos[i].index, i);
        assert_true(strlen(infos[i].name) > 0);
        if (infos[i].usable) assert_true(infos[i].api_version >= (1u << 22 | 1u << 12));
    }
}

static void test_device_selection(void **state) {
    (void)state;
    spk_context *ctx = test_context(NULL);
    spk_device_info chosen;
    assert_int_equal(spk_context_device_info(ctx, &chosen), SPK_OK);
    assert_true(chosen.usable);
    assert_true(chosen.subgroup_size >= 1);
    spk_context_destroy(ctx);

    /* By index, and by a name substring in another case. */
    char index[16], name[64];
    snprintf(index, sizeof index, "%u", chosen.index);
    snprintf(name, sizeof name, "%.8s", chosen.name);
    for (char *p = name; *p; p++)
        if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 'a' + 'A');
    const char *selectors[] = {index, name};
    for (int i = 0; i < 2; i++) {
        spk_context_desc desc = {.device = selectors[i]};
        ctx = test_context(&desc);
        spk_device_info info;
        assert_int_equal(spk_context_device_info(ctx, &info), SPK_OK);
        assert_string_equal(info.name, chosen.name);
        spk_context_destroy(ctx);
    }
    /* SOFTPICK_DEVICE does the same when the options name none. */
    setenv("SOFTPICK_DEVICE", "no-such-device-anywhere", 1);
    spk_context_desc quiet = {.log = test_log_callback};
    ctx = (spk_context *)&ctx;
    assert_int_equal(spk_context_create(&quiet, &ctx), SPK_ERROR_NO_DEVICE);
    assert_null(ctx);
    assert_non_null(strstr(g_log.last, "no-such-device-anywhere"));
    unsetenv("SOFTPICK_DEVICE");
    /* No driver at all (the loader finds no ICD): a clear NO_DEVICE, not a crash. */
    setenv("VK_DRIVER_FILES", "/nonexistent/icd.json", 1);
    setenv("VK_ICD_FILENAMES", "/nonexistent/icd.json", 1);
    assert_int_equal(spk_context_create(&quiet, &ctx), SPK_ERROR_NO_DEVICE);
    assert_non_null(strstr(g_log.last, "no Vulkan driver"));
    uint32_t count = 7;
    assert_int_equal(spk_list_devices(NULL, 0, &count), SPK_ERROR_NO_DEVICE);
    assert_int_equal(count, 0);
    unsetenv("VK_DRIVER_FILES");
    unsetenv("VK_ICD_FILENAMES");
    spk_context_desc by_bad_index = {.device = "4000", .log = test_log_callback};
    assert_int_equal(spk_context_create(&by_bad_index, &ctx), SPK_ERROR_NO_DEVICE);
    spk_context_desc bad_reduction = {.reduction = (spk_reduction)7, .log = test_log_callback};
    assert_int_equal(spk_context_create(&bad_reduction, &ctx), SPK_ERROR_INVALID_ARGUMENT);
    assert_null(ctx);
    g_log.warnings = 0;
}

/* The harness really sees validation messages: an invalid call (a zero-sized buffer) is caught. */
static void test_validation_messages_are_caught(void **state) {
    (void)state;
    spk_context *ctx = test_context(NULL);
    VkBufferCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = 0,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT,
    };
    VkBuffer buffer = VK_NULL_HANDLE;
    VkResult r = ctx->vk.vkCreateBuffer(ctx->device, &info, NULL, &buffer);
    if (r == VK_SUCCESS && buffer) ctx->vk.vkDestroyBuffer(ctx->device, buffer, NULL);
    assert_true(g_log.validation > 0);
    g_log.validation = 0;
    spk_context_destroy(ctx);
}

static void test_gpu_time_is_measured(void **state) {
    (void)state;
    spk_context *ctx = test_context(NULL);
    int64_t shape[1] = {4096};
    spk_tensor *t = NULL;
    assert_int_equal(spk_tensor_create(ctx, 1, shape, &t), SPK_OK);
    float data[4096];
    test_fill_random(data, 4096, 2);
    assert_int_equal(spk_tensor_upload(t, data, 4096), SPK_OK);
    assert_int_equal(spk_softpick(ctx, t, 0, t), SPK_OK);
    if (ctx->caps.timestamps) assert_true(spk_context_last_gpu_time_ns(ctx) > 0);
    spk_tensor_destroy(t);
    spk_context_destroy(ctx);
    test_assert_no_validation();
}

/* Runs one softpick on a context using the cache file; returns the warnings logged. */
static int use_cache(const char *path) {
    g_log.warnings = 0;
    spk_context_desc desc = {.pipeline_cache_path = path};
    spk_context *ctx = test_context(&desc);
    int64_t shape[2] = {3, 5};
    spk_tensor *t = NULL;
    float data[15], out[15];
    double ref[15];
    test_fill_random(data, 15, 9);
    assert_int_equal(spk_tensor_create(ctx, 2, shape, &t), SPK_OK);
    assert_int_equal(spk_tensor_upload(t, data, 15), SPK_OK);
    assert_int_equal(spk_softpick(ctx, t, 1, t), SPK_OK);
    assert_int_equal(spk_tensor_download(t, out, 15), SPK_OK);
    ref_softpick(data, ref, 2, shape, 1);
    assert_true(ref_row_error(out, ref, 2, shape, 1) <= 1e-6);
    spk_tensor_destroy(t);
    spk_context_destroy(ctx);
    test_assert_no_validation();
    return g_log.warnings;
}

static unsigned char *read_all(const char *path, long *size) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc((size_t)*size);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)*size, f), (size_t)*size);
    fclose(f);
    return data;
}

static void write_all(const char *path, const unsigned char *data, long size) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, (size_t)size, f), (size_t)size);
    fclose(f);
}

static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void test_pipeline_cache_file(void **state) {
    (void)state;
    char path[] = "/tmp/softpick_cache_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    remove(path); /* start with no file */
    (void)fd;

    assert_int_equal(use_cache(path), 0); /* no file yet: silently created */
    long size;
    unsigned char *good = read_all(path, &size);
    assert_true(size >= 24 + 32); /* our prefix and at least the Vulkan header */
    assert_memory_equal(good, "SPKPCACH", 8);
    assert_int_equal(use_cache(path), 0); /* a valid file: used without a warning */

    /* A damaged payload (checksum), a foreign device (valid checksum, other vendor), a
     * truncated file and garbage are each ignored with a warning, and the op still works. */
    unsigned char *bad = malloc((size_t)size);
    assert_non_null(bad);
    memcpy(bad, good, (size_t)size);
    bad[size - 1] ^= 0x5a;
    write_all(path, bad, size);
    assert_int_equal(use_cache(path), 1);
    assert_non_null(strstr(g_log.last, "checksum"));

    memcpy(bad, good, (size_t)size);
    bad[24 + 8] ^= 0x01; /* vendorID in the Vulkan header */
    uint64_t h = fnv1a(bad + 24, (size_t)size - 24);
    for (int i = 0; i < 8; i++) bad[16 + i] = (unsigned char)(h >> (8 * i));
    write_all(path, bad, size);
    assert_int_equal(use_cache(path), 1);
    assert_non_null(strstr(g_log.last, "another device"));

    write_all(path, good, size / 2);
    assert_int_equal(use_cache(path), 1);
    write_all(path, (const unsigned char *)"garbage", 7);
    assert_int_equal(use_cache(path), 1);
    /* Each ignored file was rewritten with a valid one. */
    assert_int_equal(use_cache(path), 0);

    free(bad);
    free(good);
    remove(path);
    g_log.warnings = 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_devices),
        cmocka_unit_test(test_device_selection),
        cmocka_unit_test(test_validation_messages_are_caught),
        cmocka_unit_test(test_gpu_time_is_measured),
        cmocka_unit_test(test_pipeline_cache_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
