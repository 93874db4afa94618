/* Status strings, error recording and logging. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

const char *spk_status_string(spk_status status) {
    switch (status) {
#define SPK_STATUS_CASE_(name, value, text) \
    case name:                              \
        return text;
        SPK_STATUS_LIST(SPK_STATUS_CASE_)
#undef SPK_STATUS_CASE_
    }
    return "unknown status";
}

const char *spk_status_name(spk_status status) {
    switch (status) {
#define SPK_STATUS_NAME_(name, value, text) \
    case name:                              \
        return #name;
        SPK_STATUS_LIST(SPK_STATUS_NAME_)
#undef SPK_STATUS_NAME_
    }
    return "SPK_UNKNOWN_STATUS";
}

spk_status spk__fail(spk_context *ctx, spk_status status, const char *fmt, ...) {
    if (ctx) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
        va_end(ap);
    }
    return status;
}

const char *spk__vk_result_string(VkResult result) {
    switch (result) {
#define SPK_VK_CASE_(r) \
    case r:             \
        return #r;
        SPK_VK_CASE_(VK_SUCCESS)
        SPK_VK_CASE_(VK_NOT_READY)
        SPK_VK_CASE_(VK_TIMEOUT)
        SPK_VK_CASE_(VK_INCOMPLETE)
        SPK_VK_CASE_(VK_ERROR_OUT_OF_HOST_MEMORY)
        SPK_VK_CASE_(VK_ERROR_OUT_OF_DEVICE_MEMORY)
        SPK_VK_CASE_(VK_ERROR_INITIALIZATION_FAILED)
        SPK_VK_CASE_(VK_ERROR_DEVICE_LOST)
        SPK_VK_CASE_(VK_ERROR_MEMORY_MAP_FAILED)
        SPK_VK_CASE_(VK_ERROR_LAYER_NOT_PRESENT)
        SPK_VK_CASE_(VK_ERROR_EXTENSION_NOT_PRESENT)
        SPK_VK_CASE_(VK_ERROR_FEATURE_NOT_PRESENT)
        SPK_VK_CASE_(VK_ERROR_INCOMPATIBLE_DRIVER)
        SPK_VK_CASE_(VK_ERROR_TOO_MANY_OBJECTS)
        SPK_VK_CASE_(VK_ERROR_FORMAT_NOT_SUPPORTED)
        SPK_VK_CASE_(VK_ERROR_FRAGMENTED_POOL)
        SPK_VK_CASE_(VK_ERROR_OUT_OF_POOL_MEMORY)
        SPK_VK_CASE_(VK_ERROR_INVALID_EXTERNAL_HANDLE)
        SPK_VK_CASE_(VK_ERROR_FRAGMENTATION)
        SPK_VK_CASE_(VK_PIPELINE_COMPILE_REQUIRED)
#undef SPK_VK_CASE_
    default:
        return "VkResult(unknown)";
    }
}

spk_status spk__status_from_vk(VkResult result) {
    switch (result) {
    case VK_SUCCESS:
        return SPK_OK;
    case VK_ERROR_OUT_OF_HOST_MEMORY:
        return SPK_ERROR_OUT_OF_HOST_MEMORY;
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
    case VK_ERROR_OUT_OF_POOL_MEMORY:
    case VK_ERROR_FRAGMENTED_POOL:
    case VK_ERROR_FRAGMENTATION:
    case VK_ERROR_TOO_MANY_OBJECTS:
        return SPK_ERROR_OUT_OF_DEVICE_MEMORY;
    case VK_ERROR_DEVICE_LOST:
        return SPK_ERROR_DEVICE_LOST;
    case VK_ERROR_INCOMPATIBLE_DRIVER:
    case VK_ERROR_FEATURE_NOT_PRESENT:
    case VK_ERROR_EXTENSION_NOT_PRESENT:
    case VK_ERROR_LAYER_NOT_PRESENT:
        return SPK_ERROR_UNSUPPORTED;
    default:
        return SPK_ERROR_VULKAN;
    }
}

spk_status spk__check_alive(spk_context *ctx) {
    if (!ctx->lost) return SPK_OK;
    return spk__fail(ctx, SPK_ERROR_DEVICE_LOST,
                     "the device was lost earlier; destroy this context (and its tensors) and create a new one");
}

spk_status spk__fail_vk(spk_context *ctx, VkResult result, const char *what) {
    if (ctx && result == VK_ERROR_DEVICE_LOST) ctx->lost = true;
    return spk__fail(ctx, spk__status_from_vk(result), "%s failed: %s", what,
                     spk__vk_result_string(result));
}

void spk__log(spk_log_fn log, void *user, spk_log_level level, const char *fmt, ...) {
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    if (log) {
        log(level, message, user);
    } else {
        fprintf(stderr, "softpick: %s: %s\n",
                level == SPK_LOG_ERROR ? "error" : level == SPK_LOG_WARNING ? "warning" : "info", message);
    }
}
