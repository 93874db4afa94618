/* What a renderer already has, reduced to the parts the examples and tests need: an instance
 * (with the validation layer and synchronization validation when installed, counting messages),
 * a device with one compute queue, one host-visible storage buffer, a command pool, a command
 * buffer and a fence. Header-only; the library never sees any of this except through
 * spk_vulkan_device and the handles passed to it. */
#ifndef SOFTPICK_EXAMPLE_ENGINE_H
#define SOFTPICK_EXAMPLE_ENGINE_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vulkan/vulkan.h>

#define CHECK_VK(call)                                                                   \
    do {                                                                                 \
        VkResult r_ = (call);                                                            \
        if (r_ != VK_SUCCESS) {                                                          \
            fprintf(stderr, "renderer_interop: %s failed (%d)\n", #call, (int)r_);      \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

static int g_validation_messages; /* warnings and errors from the validation layer */

static VKAPI_ATTR VkBool32 VKAPI_CALL on_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                 VkDebugUtilsMessageTypeFlagsEXT type,
                                                 const VkDebugUtilsMessengerCallbackDataEXT *data, void *user) {
    (void)type, (void)user;
    if (severity >= VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) {
        fprintf(stderr, "validation: %s\n", data->pMessage);
        g_validation_messages++;
    }
    return VK_FALSE;
}

typedef struct engine {
    VkInstance instance;
    VkDebugUtilsMessengerEXT messenger;
    VkPhysicalDevice physical_device;
    VkDevice device;
    uint32_t family;
    VkQueue queue;
    VkBuffer buffer;
    VkDeviceMemory memory;
    float *mapped;
    VkCommandPool pool;
    VkCommandBuffer cmd;
    VkFence fence;
} engine;

static bool has_layer(const char *name) {
    uint32_t n = 0;
    vkEnumerateInstanceLayerProperties(&n, NULL);
    VkLayerProperties *layers = calloc(n ? n : 1, sizeof *layers);
    vkEnumerateInstanceLayerProperties(&n, layers);
    bool found = false;
    for (uint32_t i = 0; i < n; i++) found = found || strcmp(layers[i].layerName, name) == 0;
    free(layers);
    return found;
}

/* device_features: the VkDeviceCreateInfo pNext chain (features to enable), or NULL. */
static void engine_create(engine *e, VkDeviceSize buffer_bytes, const void *device_features) {
    memset(e, 0, sizeof *e);
    bool validation = has_layer("VK_LAYER_KHRONOS_validation");
    const char *layers[] = {"VK_LAYER_KHRONOS_validation"};
    const char *extensions[] = {VK_EXT_DEBUG_UTILS_EXTENSION_NAME};
    VkValidationFeatureEnableEXT sync = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
    VkValidationFeaturesEXT features = {
        .sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
        .enabledValidationFeatureCount = 1,
        .pEnabledValidationFeatures = &sync,
    };
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .apiVersion = VK_API_VERSION_1_1};
    VkInstanceCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pNext = validation ? &features : NULL,
        .pApplicationInfo = &app,
        .enabledLayerCount = validation ? 1 : 0,
        .ppEnabledLayerNames = layers,
        .enabledExtensionCount = validation ? 1 : 0,
        .ppEnabledExtensionNames = extensions,
    };
    CHECK_VK(vkCreateInstance(&info, NULL, &e->instance));
    if (validation) {
        VkDebugUtilsMessengerCreateInfoEXT m = {
            .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
            .messageSeverity =
                VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
            .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT,
            .pfnUserCallback = on_message,
        };
        PFN_vkCreateDebugUtilsMessengerEXT create =
            (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(e->instance, "vkCreateDebugUtilsMessengerEXT");
        CHECK_VK(create(e->instance, &m, NULL, &e->messenger));
    }
    uint32_t n = 1;
    VkResult r = vkEnumeratePhysicalDevices(e->instance, &n, &e->physical_device);
    if ((r != VK_SUCCESS && r != VK_INCOMPLETE) || n == 0) {
        fprintf(stderr, "renderer_interop: no Vulkan device\n");
        exit(1);
    }
    uint32_t families = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(e->physical_device, &families, NULL);
    VkQueueFamilyProperties props[16];
    if (families > 16) families = 16;
    vkGetPhysicalDeviceQueueFamilyProperties(e->physical_device, &families, props);
    e->family = UINT32_MAX;
    for (uint32_t i = 0; i < families && e->family == UINT32_MAX; i++)
        if (props[i].queueFlags & VK_QUEUE_COMPUTE_BIT) e->family = i;
    float priority = 1.0f;
    VkDeviceQueueCreateInfo queue_info = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
        .queueFamilyIndex = e->family,
        .queueCount = 1,
        .pQueuePriorities = &priority,
    };
    VkDeviceCreateInfo device_info = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .pNext = device_features,
        .queueCreateInfoCount = 1,
        .pQueueCreateInfos = &queue_info,
    };
    CHECK_VK(vkCreateDevice(e->physical_device, &device_info, NULL, &e->device));
    vkGetDeviceQueue(e->device, e->family, 0, &e->queue);

    /* The engine's buffer: host-visible so that the example can write and read it directly. */
    VkBufferCreateInfo buffer_info = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = buffer_bytes,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
    };
    CHECK_VK(vkCreateBuffer(e->device, &buffer_info, NULL, &e->buffer));
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(e->device, e->buffer, &req);
    VkPhysicalDeviceMemoryProperties mem;
    vkGetPhysicalDeviceMemoryProperties(e->physical_device, &mem);
    uint32_t type = UINT32_MAX;
    VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    for (uint32_t i = 0; i < mem.memoryTypeCount && type == UINT32_MAX; i++)
        if ((req.memoryTypeBits & (1u << i)) && (mem.memoryTypes[i].propertyFlags & want) == want) type = i;
    VkMemoryAllocateInfo alloc = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size, .memoryTypeIndex = type};
    CHECK_VK(vkAllocateMemory(e->device, &alloc, NULL, &e->memory));
    CHECK_VK(vkBindBufferMemory(e->device, e->buffer, e->memory, 0));
    CHECK_VK(vkMapMemory(e->device, e->memory, 0, VK_WHOLE_SIZE, 0, (void **)&e->mapped));

    VkCommandPoolCreateInfo pool_info = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                         .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                         .queueFamilyIndex = e->family};
    CHECK_VK(vkCreateCommandPool(e->device, &pool_info, NULL, &e->pool));
    VkCommandBufferAllocateInfo cb = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                      .commandPool = e->pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                      .commandBufferCount = 1};
    CHECK_VK(vkAllocateCommandBuffers(e->device, &cb, &e->cmd));
    VkFenceCreateInfo fence_info = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    CHECK_VK(vkCreateFence(e->device, &fence_info, NULL, &e->fence));
}

static void engine_destroy(engine *e) {
    vkDestroyFence(e->device, e->fence, NULL);
    vkDestroyCommandPool(e->device, e->pool, NULL);
    vkDestroyBuffer(e->device, e->buffer, NULL);
    vkFreeMemory(e->device, e->memory, NULL);
    vkDestroyDevice(e->device, NULL);
    if (e->messenger) {
        PFN_vkDestroyDebugUtilsMessengerEXT destroy =
            (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(e->instance, "vkDestroyDebugUtilsMessengerEXT");
        destroy(e->instance, e->messenger, NULL);
    }
    vkDestroyInstance(e->instance, NULL);
}

static void memory_barrier(VkCommandBuffer cmd, VkPipelineStageFlags src_stage, VkAccessFlags src,
                           VkPipelineStageFlags dst_stage, VkAccessFlags dst) {
    VkMemoryBarrier b = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = src, .dstAccessMask = dst};
    vkCmdPipelineBarrier(cmd, src_stage, dst_stage, 0, 1, &b, 0, NULL, 0, NULL);
}

#endif
