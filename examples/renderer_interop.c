/* A renderer's view of softpick-vk: the application owns the VkInstance, the VkDevice, the
 * buffers and the command buffers; the library records its work into them and never submits.
 *
 * The "engine" (engine.h: what a renderer already has) creates a device with one compute queue
 * (and the validation layer when it is installed), a host-visible storage buffer holding a batch
 * of attention scores and a model input, and one command buffer recorded once and submitted every
 * "frame":
 *
 *     host writes -> [barrier] -> softpick rows -> transformer forward -> [barrier] -> host reads
 *
 * Each frame changes the inputs through the mapped buffer, submits the same command buffer, and
 * checks the results against a CPU softpick and against spk_model_forward. It exits non-zero on
 * any mismatch or validation message, so it doubles as a test (ctest runs it).
 *
 * Build: part of the project (examples/CMakeLists.txt), linked against the system loader like a
 * real engine; the library itself still loads Vulkan through its own private volk. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <softpick/softpick.h>

#include "engine.h"

#define FAIL(...) (fprintf(stderr, "renderer_interop: " __VA_ARGS__), fputc('\n', stderr), exit(1))
#define CHECK_SPK(ctx, call) \
    do { \
        if ((call) != SPK_OK) FAIL("%s: %s", #call, spk_context_last_error(ctx)); \
    } while (0)

int main(void) {
    /* Layout of the engine's buffer, each region aligned to 256 bytes (a common
     * minStorageBufferOffsetAlignment; the library checks the device's). */
    enum { ROWS = 4, COLS = 60, BATCH = 2, SEQ = 8, EMBED = 32 };
    const VkDeviceSize scores_at = 0, probs_at = 1024, input_at = 2048, output_at = 2048 + 2304;
    engine e;
    engine_create(&e, 8192, NULL);

    spk_vulkan_device dev = {
        .instance = e.instance,
        .physical_device = e.physical_device,
        .device = e.device,
        .queue_family_index = e.family,
        .queue = e.queue, /* only for spk_model_forward below, the host-data reference */
        .api_version = VK_API_VERSION_1_1,
    };
    spk_context *ctx = NULL;
    if (spk_context_create_external(&dev, &ctx) != SPK_OK) FAIL("spk_context_create_external failed");

    int64_t score_shape[2] = {ROWS, COLS}, in_shape[3] = {BATCH, SEQ, EMBED}, out_shape[2] = {BATCH, 64};
    spk_tensor *scores, *probs, *input, *output;
    CHECK_SPK(ctx, spk_tensor_wrap_buffer(ctx, e.buffer, scores_at, 2, score_shape, &scores));
    CHECK_SPK(ctx, spk_tensor_wrap_buffer(ctx, e.buffer, probs_at, 2, score_shape, &probs));
    CHECK_SPK(ctx, spk_tensor_wrap_buffer(ctx, e.buffer, input_at, 3, in_shape, &input));
    CHECK_SPK(ctx, spk_tensor_wrap_buffer(ctx, e.buffer, output_at, 2, out_shape, &output));

    spk_model_config cfg = spk_model_config_default(EMBED);
    cfg.hidden_size = 64, cfg.num_heads = 4, cfg.num_layers = 2, cfg.window_size = SEQ;
    spk_model *model;
    CHECK_SPK(ctx, spk_model_create(ctx, &cfg, &model));
    CHECK_SPK(ctx, spk_model_init_random(model, 7));

    /* Record once: the caller's barrier before (host writes -> compute reads), the library's
     * work, the caller's barrier after (compute writes -> host reads). */
    VkCommandBufferBeginInfo begin = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    CHECK_VK(vkBeginCommandBuffer(e.cmd, &begin));
    memory_barrier(e.cmd, VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_WRITE_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                   VK_ACCESS_SHADER_READ_BIT);
    CHECK_SPK(ctx, spk_record_softpick(ctx, e.cmd, scores, -1, probs));
    CHECK_SPK(ctx, spk_model_record_forward(model, e.cmd, input, output));
    memory_barrier(e.cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
                   VK_ACCESS_HOST_READ_BIT);
    CHECK_VK(vkEndCommandBuffer(e.cmd));

    float *x = e.mapped + scores_at / 4, *y = e.mapped + probs_at / 4;
    float *in = e.mapped + input_at / 4, *out = e.mapped + output_at / 4;
    float expected[BATCH * 64];
    double worst = 0;
    for (int frame = 0; frame < 3; frame++) {
        for (int i = 0; i < ROWS * COLS; i++) x[i] = sinf((float)(i * (frame + 1))) * 4.0f;
        for (int i = 0; i < BATCH * SEQ * EMBED; i++) in[i] = cosf((float)(i + 31 * frame));
        VkSubmitInfo submit = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &e.cmd};
        CHECK_VK(vkQueueSubmit(e.queue, 1, &submit, e.fence));
        CHECK_VK(vkWaitForFences(e.device, 1, &e.fence, VK_TRUE, UINT64_MAX));
        CHECK_VK(vkResetFences(e.device, 1, &e.fence));
        for (int r = 0; r < ROWS; r++) {
            double sum = 1.0;
            for (int c = 0; c < COLS; c++) sum += fabs((double)x[r * COLS + c]);
            for (int c = 0; c < COLS; c++) {
                double err = fabs(y[r * COLS + c] - x[r * COLS + c] / sum);
                if (err > worst) worst = err;
            }
        }
        /* The same forward through the library's own synchronous path. */
        CHECK_SPK(ctx, spk_model_forward(model, in, BATCH, SEQ, expected));
        for (int i = 0; i < BATCH * 64; i++)
            if (fabsf(out[i] - expected[i]) > 1e-5f * (1.0f + fabsf(expected[i])))
                FAIL("frame %d: recorded forward differs at %d: %g vs %g", frame, i, out[i], expected[i]);
    }
    if (worst > 1e-6) FAIL("softpick error %g", worst);
    printf("renderer_interop: 3 frames replayed one command buffer: softpick max error %.2e, "
           "forward equal to spk_model_forward, %d validation messages\n",
           worst, g_validation_messages);

    spk_model_destroy(model);
    spk_tensor_destroy(scores), spk_tensor_destroy(probs), spk_tensor_destroy(input), spk_tensor_destroy(output);
    spk_context_destroy(ctx);
    engine_destroy(&e);
    return g_validation_messages ? 1 : 0;
}
