/* Renderer integration: a context on the application's device (examples/engine.h plays the
 * application), its buffers wrapped as tensors, every op recorded into its command buffers and
 * checked against the library's own synchronous path; the refusals; recording from two threads. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "external_probe.h"
#include "harness.h"

static engine g_engine;

static int setup(void **state) {
    (void)state;
    uint32_t count = 0;
    if (spk_list_devices(NULL, 0, &count) != SPK_OK || count == 0) return getenv("CI") ? -1 : 0;
    engine_create(&g_engine, 1 << 20, NULL);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    if (g_engine.device) engine_destroy(&g_engine);
    return 0;
}

static spk_vulkan_device app_device(const engine *e) {
    return (spk_vulkan_device){
        .instance = e->instance,
        .physical_device = e->physical_device,
        .device = e->device,
        .queue_family_index = e->family,
        .queue = e->queue,
        .api_version = VK_API_VERSION_1_1,
    };
}

static spk_context *external_context(void) {
    if (!g_engine.device) skip();
    spk_vulkan_device dev = app_device(&g_engine);
    spk_context *ctx = NULL;
    assert_int_equal(spk_context_create_external(&dev, &ctx), SPK_OK);
    return ctx;
}

static void begin(VkCommandBuffer cmd) {
    VkCommandBufferBeginInfo b = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    assert_int_equal(vkBeginCommandBuffer(cmd, &b), VK_SUCCESS);
    memory_barrier(cmd, VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_WRITE_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                   VK_ACCESS_SHADER_READ_BIT);
}

static void end_and_submit(VkCommandBuffer cmd) {
    memory_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
                   VK_ACCESS_HOST_READ_BIT);
    assert_int_equal(vkEndCommandBuffer(cmd), VK_SUCCESS);
    VkSubmitInfo submit = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &cmd};
    assert_int_equal(vkQueueSubmit(g_engine.queue, 1, &submit, g_engine.fence), VK_SUCCESS);
    assert_int_equal(vkWaitForFences(g_engine.device, 1, &g_engine.fence, VK_TRUE, UINT64_MAX), VK_SUCCESS);
    assert_int_equal(vkResetFences(g_engine.device, 1, &g_engine.fence), VK_SUCCESS);
}

static spk_tensor *wrap(spk_context *ctx, VkDeviceSize offset, int ndim, const int64_t *shape) {
    spk_tensor *t = NULL;
    spk_status s = spk_tensor_wrap_buffer(ctx, g_engine.buffer, offset, ndim, shape, &t);
    if (s != SPK_OK) fail_msg("wrap: %s", spk_context_last_error(ctx));
    return t;
}

static float *at(VkDeviceSize offset) { return g_engine.mapped + offset / sizeof(float); }

/* Every recorded op equals its synchronous twin on the same data; softpick over long rows (a
 * partial-sum pass with its own scratch) is replayed after the scratch of later ops changed. */
static void recorded_ops_match(void **state) {
    (void)state;
    spk_context *ctx = external_context();
    const int64_t m = 37, k = 70, n = 52, rows = 3, long_row = 300000;
    int64_t a_shape[2] = {m, k}, b_shape[2] = {k, n}, c_shape[2] = {m, n}, bias_shape[1] = {n};
    int64_t long_shape[2] = {rows, long_row}, q_shape[3] = {2, 33, 24};
    /* Byte offsets of the engine's tensors in its buffer (q, k, v and the output 8 KiB apart). */
    const VkDeviceSize A = 0, B = 16384, C = 40960, BIAS = 49152, LN = 57344, Q = 1 << 19;
    spk_tensor *a = wrap(ctx, A, 2, a_shape), *b = wrap(ctx, B, 2, b_shape), *c = wrap(ctx, C, 2, c_shape);
    spk_tensor *bias = wrap(ctx, BIAS, 1, bias_shape), *ln = wrap(ctx, LN, 2, c_shape);
    test_fill_random(at(A), m * k, 1);
    test_fill_random(at(B), k * n, 2);
    test_fill_random(at(BIAS), n, 3);
    /* the long rows live in a buffer of the library's, too big for the engine's */
    spk_tensor *x = NULL, *y = NULL;
    assert_int_equal(spk_tensor_create(ctx, 2, long_shape, &x), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 2, long_shape, &y), SPK_OK);
    float *host = test_alloc_floats(rows * long_row);
    test_fill_random(host, rows * long_row, 4);
    assert_int_equal(spk_tensor_upload(x, host, rows * long_row), SPK_OK);
    spk_tensor *q = wrap(ctx, Q, 3, q_shape), *kk = wrap(ctx, Q + 8192, 3, q_shape), *v = wrap(ctx, Q + 16384, 3, q_shape);
    spk_tensor *o = wrap(ctx, Q + 24576, 3, q_shape);
    test_fill_random(at(Q), 3 * 8192 / 4, 5);

    spk_matmul_desc desc = {.bias = bias, .activation = SPK_ACTIVATION_GELU};
    spk_tensor *gamma = NULL, *beta = NULL;
    assert_int_equal(spk_tensor_create(ctx, 1, bias_shape, &gamma), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 1, bias_shape, &beta), SPK_OK);
    assert_int_equal(spk_tensor_upload(gamma, at(BIAS), n), SPK_OK);
    assert_int_equal(spk_tensor_upload(beta, at(BIAS), n), SPK_OK);

    begin(g_engine.cmd);
    assert_int_equal(spk_record_matmul(ctx, g_engine.cmd, a, b, &desc, c), SPK_OK);
    assert_int_equal(spk_record_layer_norm(ctx, g_engine.cmd, c, gamma, beta, NULL, ln), SPK_OK);
    assert_int_equal(spk_record_softpick(ctx, g_engine.cmd, x, -1, y), SPK_OK);
    assert_int_equal(spk_record_softpick_attention(ctx, g_engine.cmd, q, kk, v, 3, true, o), SPK_OK);
    end_and_submit(g_engine.cmd);
    float *got_c = test_alloc_floats(m * n), *got_ln = test_alloc_floats(m * n), *got_y = test_alloc_floats(rows * long_row);
    float *got_o = test_alloc_floats(2 * 33 * 24);
    memcpy(got_c, at(C), (size_t)(m * n) * sizeof(float));
    memcpy(got_ln, at(LN), (size_t)(m * n) * sizeof(float));
    memcpy(got_o, at(Q + 24576), 2 * 33 * 24 * sizeof(float));
    assert_int_equal(spk_tensor_download(y, got_y, rows * long_row), SPK_OK);

    /* The synchronous twins (through the queue given at creation), then a replay after them. */
    memset(at(C), 0, (size_t)(m * n) * sizeof(float));
    assert_int_equal(spk_matmul(ctx, a, b, &desc, c), SPK_OK);
    assert_memory_equal(at(C), got_c, (size_t)(m * n) * sizeof(float));
    assert_int_equal(spk_layer_norm(ctx, c, gamma, beta, NULL, ln), SPK_OK);
    assert_memory_equal(at(LN), got_ln, (size_t)(m * n) * sizeof(float));
    assert_int_equal(spk_softpick_attention(ctx, q, kk, v, 3, true, o), SPK_OK);
    assert_memory_equal(at(Q + 24576), got_o, 2 * 33 * 24 * sizeof(float));
    float *sync_y = test_alloc_floats(rows * long_row);
    assert_int_equal(spk_softpick(ctx, x, -1, y), SPK_OK);
    assert_int_equal(spk_tensor_download(y, sync_y, rows * long_row), SPK_OK);
    assert_memory_equal(sync_y, got_y, (size_t)(rows * long_row) * sizeof(float));

    /* Replay: the recording still names valid descriptors and its own scratch. */
    memset(at(C), 0, (size_t)(m * n) * sizeof(float));
    assert_int_equal(spk_tensor_upload(y, host, rows * long_row), SPK_OK);
    VkSubmitInfo submit = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &g_engine.cmd};
    assert_int_equal(vkQueueSubmit(g_engine.queue, 1, &submit, g_engine.fence), VK_SUCCESS);
    assert_int_equal(vkWaitForFences(g_engine.device, 1, &g_engine.fence, VK_TRUE, UINT64_MAX), VK_SUCCESS);
    assert_int_equal(vkResetFences(g_engine.device, 1, &g_engine.fence), VK_SUCCESS);
    assert_memory_equal(at(C), got_c, (size_t)(m * n) * sizeof(float));
    assert_int_equal(spk_tensor_download(y, sync_y, rows * long_row), SPK_OK);
    assert_memory_equal(sync_y, got_y, (size_t)(rows * long_row) * sizeof(float));

    /* Recording the same tensors again reuses the cached descriptor sets. */
    uint32_t sets = probe_cached_sets(ctx);
    assert_int_equal(vkResetCommandPool(g_engine.device, g_engine.pool, 0), VK_SUCCESS);
    begin(g_engine.cmd);
    assert_int_equal(spk_record_matmul(ctx, g_engine.cmd, a, b, &desc, c), SPK_OK);
    end_and_submit(g_engine.cmd);
    assert_int_equal(probe_cached_sets(ctx), sets);
    assert_memory_equal(at(C), got_c, (size_t)(m * n) * sizeof(float));

    free(host), free(got_c), free(got_ln), free(got_y), free(got_o), free(sync_y);
    spk_tensor *all[] = {a, b, c, bias, ln, x, y, q, kk, v, o, gamma, beta};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) spk_tensor_destroy(all[i]);
    /* Every cached set went with the tensors it binds (the engine's buffer and the library's own). */
    assert_int_equal(probe_cached_sets(ctx), 0);
    spk_context_destroy(ctx);
    assert_int_equal(g_validation_messages, 0);
    /* the engine's device and buffer are intact */
    at(0)[0] = 1.0f;
    assert_int_equal(vkDeviceWaitIdle(g_engine.device), VK_SUCCESS);
}

static void refusals(void **state) {
    (void)state;
    if (!g_engine.device) skip();
    spk_vulkan_device dev = app_device(&g_engine);
    spk_context *ctx = NULL;
    dev.api_version = VK_API_VERSION_1_0;
    assert_int_equal(spk_context_create_external(&dev, &ctx), SPK_ERROR_UNSUPPORTED);
    assert_null(ctx);
    dev = app_device(&g_engine);
    dev.queue_family_index = 999;
    assert_int_equal(spk_context_create_external(&dev, &ctx), SPK_ERROR_UNSUPPORTED);
    dev = app_device(&g_engine);
    dev.device = VK_NULL_HANDLE;
    assert_int_equal(spk_context_create_external(&dev, &ctx), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_context_create_external(NULL, &ctx), SPK_ERROR_INVALID_ARGUMENT);

    /* No queue: recording works, synchronous calls say why they cannot. */
    dev = app_device(&g_engine);
    dev.queue = VK_NULL_HANDLE;
    assert_int_equal(spk_context_create_external(&dev, &ctx), SPK_OK);
    int64_t shape[2] = {4, 8};
    spk_tensor *t = wrap(ctx, 0, 2, shape);
    assert_int_equal(spk_softpick(ctx, t, -1, t), SPK_ERROR_UNSUPPORTED);
    assert_non_null(strstr(spk_context_last_error(ctx), "without a queue"));
    test_fill_random(at(0), 32, 9);
    float expected[32];
    memcpy(expected, at(0), sizeof expected);
    begin(g_engine.cmd);
    assert_int_equal(spk_record_softpick(ctx, g_engine.cmd, t, -1, t), SPK_OK);
    end_and_submit(g_engine.cmd);
    assert_int_equal(vkResetCommandPool(g_engine.device, g_engine.pool, 0), VK_SUCCESS);
    for (int r = 0; r < 4; r++) {
        double sum = 1;
        for (int i = 0; i < 8; i++) sum += fabs(expected[r * 8 + i]);
        for (int i = 0; i < 8; i++) assert_true(fabs(at(0)[r * 8 + i] - expected[r * 8 + i] / sum) < 1e-6);
    }
    assert_int_equal(spk_record_softpick(ctx, VK_NULL_HANDLE, t, -1, t), SPK_ERROR_INVALID_ARGUMENT);
    spk_tensor_destroy(t);

    /* Wraps: alignment, size, rank. */
    VkDeviceSize align = probe_offset_alignment(ctx);
    spk_tensor *w = NULL;
    if (align > 1) {
        assert_int_equal(spk_tensor_wrap_buffer(ctx, g_engine.buffer, align / 2, 2, shape, &w), SPK_ERROR_INVALID_ARGUMENT);
        assert_non_null(strstr(spk_context_last_error(ctx), "minStorageBufferOffsetAlignment"));
    }
    int64_t huge[2] = {1 << 20, 1 << 10};
    assert_int_equal(spk_tensor_wrap_buffer(ctx, g_engine.buffer, 0, 2, huge, &w), SPK_ERROR_TOO_LARGE);
    int64_t big[1] = {(1 << 18) + 1};
    assert_int_equal(spk_tensor_wrap_buffer(ctx, g_engine.buffer, 0, 1, big, &w), SPK_ERROR_SHAPE);
    assert_non_null(strstr(spk_context_last_error(ctx), "do not fit"));
    assert_int_equal(spk_tensor_wrap_buffer(ctx, g_engine.buffer, 0, 0, shape, &w), SPK_ERROR_SHAPE);
    assert_int_equal(spk_tensor_wrap_buffer(ctx, VK_NULL_HANDLE, 0, 2, shape, &w), SPK_ERROR_INVALID_ARGUMENT);
    assert_null(w);
    spk_context_destroy(ctx);
    assert_int_equal(g_validation_messages, 0);
}

/* Feature use follows the application's chain: no chain, no full-subgroup control. */
static void features_follow_the_application(void **state) {
    (void)state;
    spk_context *ctx = external_context();
    assert_false(probe_full_subgroups(ctx));
    spk_context_destroy(ctx);
    if (!g_engine.device) return;
    VkPhysicalDeviceSubgroupSizeControlFeatures supported = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES};
    VkPhysicalDeviceFeatures2 query = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &supported};
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(g_engine.physical_device, &props);
    if (props.apiVersion < VK_API_VERSION_1_3) return;
    vkGetPhysicalDeviceFeatures2(g_engine.physical_device, &query);
    if (!supported.subgroupSizeControl || !supported.computeFullSubgroups) return;
    /* A second application device with the features enabled. */
    VkPhysicalDeviceSubgroupSizeControlFeatures enable = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES,
        .subgroupSizeControl = VK_TRUE,
        .computeFullSubgroups = VK_TRUE,
    };
    VkPhysicalDeviceFeatures2 chain = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &enable};
    engine e2;
    engine_create(&e2, 4096, &chain);
    spk_vulkan_device dev = app_device(&e2);
    dev.enabled_features = &chain;
    assert_int_equal(spk_context_create_external(&dev, &ctx), SPK_OK);
    assert_true(probe_full_subgroups(ctx));
    spk_context_destroy(ctx);
    engine_destroy(&e2);
}

/* Two threads record into two command buffers on one context at the same time. */
typedef struct thread_job {
    spk_context *ctx;
    VkCommandBuffer cmd;
    spk_tensor *t;
    spk_status status;
} thread_job;

static void *record_many(void *arg) {
    thread_job *j = arg;
    j->status = SPK_OK;
    for (int i = 0; i < 50 && j->status == SPK_OK; i++) j->status = spk_record_softpick(j->ctx, j->cmd, j->t, -1, j->t);
    return NULL;
}

static void threads_record(void **state) {
    (void)state;
    spk_context *ctx = external_context();
    VkCommandBuffer cmds[2];
    VkCommandPool pools[2];
    thread_job jobs[2];
    pthread_t threads[2];
    int64_t shape[2] = {2, 16};
    for (int i = 0; i < 2; i++) {
        VkCommandPoolCreateInfo pool_info = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                             .queueFamilyIndex = g_engine.family};
        assert_int_equal(vkCreateCommandPool(g_engine.device, &pool_info, NULL, &pools[i]), VK_SUCCESS);
        VkCommandBufferAllocateInfo cb = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                          .commandPool = pools[i],
                                          .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                          .commandBufferCount = 1};
        assert_int_equal(vkAllocateCommandBuffers(g_engine.device, &cb, &cmds[i]), VK_SUCCESS);
        begin(cmds[i]);
        jobs[i] = (thread_job){ctx, cmds[i], wrap(ctx, (VkDeviceSize)i * 256, 2, shape), SPK_ERROR_VULKAN};
    }
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&threads[i], NULL, record_many, &jobs[i]), 0);
    for (int i = 0; i < 2; i++) pthread_join(threads[i], NULL);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(jobs[i].status, SPK_OK);
        end_and_submit(cmds[i]);
        spk_tensor_destroy(jobs[i].t);
        vkDestroyCommandPool(g_engine.device, pools[i], NULL);
    }
    spk_context_destroy(ctx);
    assert_int_equal(g_validation_messages, 0);
}

/* One recording submitted three times gives the same result each time; an owned context runs
 * beside the external one; after the external context is gone the engine's device, buffer and
 * command buffer keep working. */
static void replay_and_coexistence(void **state) {
    (void)state;
    spk_context *ctx = external_context();
    spk_context *owned = test_context(NULL);
    int64_t shape[2] = {5, 61};
    spk_tensor *x = wrap(ctx, 0, 2, shape), *y = wrap(ctx, 2048, 2, shape);
    float input[5 * 61], first[5 * 61];
    test_fill_random(input, 5 * 61, 77);
    begin(g_engine.cmd);
    assert_int_equal(spk_record_softpick(ctx, g_engine.cmd, x, 0, y), SPK_OK);
    memory_barrier(g_engine.cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                   VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    assert_int_equal(vkEndCommandBuffer(g_engine.cmd), VK_SUCCESS);
    for (int frame = 0; frame < 3; frame++) {
        memcpy(at(0), input, sizeof input);
        memset(at(2048), 0, sizeof input);
        VkSubmitInfo submit = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1,
                               .pCommandBuffers = &g_engine.cmd};
        assert_int_equal(vkQueueSubmit(g_engine.queue, 1, &submit, g_engine.fence), VK_SUCCESS);
        assert_int_equal(vkWaitForFences(g_engine.device, 1, &g_engine.fence, VK_TRUE, UINT64_MAX), VK_SUCCESS);
        assert_int_equal(vkResetFences(g_engine.device, 1, &g_engine.fence), VK_SUCCESS);
        if (frame == 0) memcpy(first, at(2048), sizeof first);
        else assert_memory_equal(at(2048), first, sizeof first);
    }
    /* the owned context computes the same on its own device */
    spk_tensor *t = NULL;
    float owned_out[5 * 61];
    assert_int_equal(spk_tensor_create(owned, 2, shape, &t), SPK_OK);
    assert_int_equal(spk_tensor_upload(t, input, 5 * 61), SPK_OK);
    assert_int_equal(spk_softpick(owned, t, 0, t), SPK_OK);
    assert_int_equal(spk_tensor_download(t, owned_out, 5 * 61), SPK_OK);
    assert_memory_equal(owned_out, first, sizeof first);
    spk_tensor_destroy(t);
    spk_context_destroy(owned);
    spk_tensor_destroy(x), spk_tensor_destroy(y);
    spk_context_destroy(ctx);

    /* The engine carries on alone: fill its buffer with its own command buffer. */
    VkCommandBufferBeginInfo b = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    assert_int_equal(vkBeginCommandBuffer(g_engine.cmd, &b), VK_SUCCESS);
    vkCmdFillBuffer(g_engine.cmd, g_engine.buffer, 0, 256, 0x3f800000u); /* 1.0f */
    memory_barrier(g_engine.cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                   VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    assert_int_equal(vkEndCommandBuffer(g_engine.cmd), VK_SUCCESS);
    VkSubmitInfo submit = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1,
                           .pCommandBuffers = &g_engine.cmd};
    assert_int_equal(vkQueueSubmit(g_engine.queue, 1, &submit, g_engine.fence), VK_SUCCESS);
    assert_int_equal(vkWaitForFences(g_engine.device, 1, &g_engine.fence, VK_TRUE, UINT64_MAX), VK_SUCCESS);
    assert_int_equal(vkResetFences(g_engine.device, 1, &g_engine.fence), VK_SUCCESS);
    for (int i = 0; i < 64; i++) assert_true(at(0)[i] == 1.0f);
    assert_int_equal(g_validation_messages, 0);
    test_assert_no_validation();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(recorded_ops_match),
        cmocka_unit_test(refusals),
        cmocka_unit_test(features_follow_the_application),
        cmocka_unit_test(threads_record),
        cmocka_unit_test(replay_and_coexistence),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
