/* The context: Vulkan loading, instance, physical-device choice, logical device and queue.
 * Set-up runs in Vulkan's natural order; memory, pipelines and commands have their own files. */
#include "internal.h"
#include "fault.h"
#include "tuning.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPK__VALIDATION_LAYER "VK_LAYER_KHRONOS_validation"
#define SPK__MIN_API VK_API_VERSION_1_1

/* volk keeps loader-level and instance-level entry points in (renamed, library-private) globals.
 * They are loader trampolines valid for every instance, so they are loaded once, under a lock;
 * device-level calls use each context's own VolkDeviceTable. */
static pthread_mutex_t spk__loader_lock = PTHREAD_MUTEX_INITIALIZER;
static bool spk__loader_ready;

/* Loads the loader's entry point once: the given one (an application's), else the system's. */
static spk_status spk__load_vulkan_with(PFN_vkGetInstanceProcAddr get_instance_proc_addr) {
    pthread_mutex_lock(&spk__loader_lock);
    if (!spk__loader_ready && get_instance_proc_addr) {
        volkInitializeCustom(get_instance_proc_addr);
        spk__loader_ready = true;
    }
    if (!spk__loader_ready) spk__loader_ready = volkInitialize() == VK_SUCCESS;
    bool ready = spk__loader_ready;
    pthread_mutex_unlock(&spk__loader_lock);
    return ready ? SPK_OK : SPK_ERROR_NO_VULKAN;
}

static spk_status spk__load_vulkan(void) { return spk__load_vulkan_with(NULL); }

/* Instance-level pointers are loaded once, from the first instance, and never written again:
 * other threads call through them without the lock. (Extension functions, whose availability
 * depends on the instance, are fetched per context: spk__load_debug_utils.) */
static void spk__load_instance(VkInstance instance) {
    pthread_mutex_lock(&spk__loader_lock);
    if (!volkGetLoadedInstance()) volkLoadInstanceOnly(instance);
    pthread_mutex_unlock(&spk__loader_lock);
}

static void spk__load_debug_utils(spk_context *ctx) {
    ctx->create_messenger = (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(
        ctx->instance, "vkCreateDebugUtilsMessengerEXT");
    ctx->destroy_messenger = (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(
        ctx->instance, "vkDestroyDebugUtilsMessengerEXT");
    ctx->set_object_name =
        (PFN_vkSetDebugUtilsObjectNameEXT)vkGetInstanceProcAddr(ctx->instance, "vkSetDebugUtilsObjectNameEXT");
}

static bool spk__env_true(const char *name) {
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

static bool spk__has_instance_extension(const VkExtensionProperties *exts, uint32_t n,
                                        const char *name) {
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(exts[i].extensionName, name) == 0) return true;
    return false;
}

static VKAPI_ATTR VkBool32 VKAPI_CALL spk__debug_callback(
    VkDebugUtilsMessageSeverityFlagBitsEXT severity, VkDebugUtilsMessageTypeFlagsEXT types,
    const VkDebugUtilsMessengerCallbackDataEXT *data, void *user) {
    (void)types;
    spk_context *ctx = user;
    spk_log_level level =
        (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) ? SPK_LOG_ERROR : SPK_LOG_WARNING;
    spk__log(ctx->log, ctx->log_user_data, level, "Vulkan validation: %s",
             data && data->pMessage ? data->pMessage : "(no message)");
    return VK_FALSE;
}

/* Creates the instance; with `validation`, the Khronos layer with synchronization validation and a
 * messenger that forwards every warning and error to the context's log. */
static spk_status spk__create_instance(spk_context *ctx, bool validation) {
    uint32_t ext_count = 0;
    vkEnumerateInstanceExtensionProperties(NULL, &ext_count, NULL);
    VkExtensionProperties *exts = spk__calloc(ext_count ? ext_count : 1, sizeof *exts);
    if (!exts) return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    vkEnumerateInstanceExtensionProperties(NULL, &ext_count, exts);
    bool debug_utils = spk__has_instance_extension(exts, ext_count, VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
    bool portability =
        spk__has_instance_extension(exts, ext_count, VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME);
    free(exts);

    if (validation) {
        uint32_t n = 0;
        vkEnumerateInstanceLayerProperties(&n, NULL);
        VkLayerProperties *layers = spk__calloc(n ? n : 1, sizeof *layers);
        if (!layers) return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
        vkEnumerateInstanceLayerProperties(&n, layers);
        bool found = false;
        for (uint32_t i = 0; i < n; i++)
            if (strcmp(layers[i].layerName, SPK__VALIDATION_LAYER) == 0) found = true;
        free(layers);
        if (!found)
            return spk__fail(ctx, SPK_ERROR_UNSUPPORTED,
                             "validation was requested but %s is not installed "
                             "(Debian: vulkan-validationlayers)",
                             SPK__VALIDATION_LAYER);
        if (!debug_utils)
            return spk__fail(ctx, SPK_ERROR_UNSUPPORTED,
                             "validation needs VK_EXT_debug_utils, which the loader lacks");
    }

    uint32_t loader_version = volkGetInstanceVersion();
    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "softpick",
        .pEngineName = "softpick-vk",
        /* Ask for 1.3 so 1.3 devices expose their core features; older devices still work. */
        .apiVersion = loader_version >= VK_API_VERSION_1_3 ? VK_API_VERSION_1_3 : loader_version,
    };
    if (app.apiVersion < SPK__MIN_API)
        return spk__fail(ctx, SPK_ERROR_UNSUPPORTED,
                         "the Vulkan loader supports only %u.%u; softpick needs 1.1",
                         VK_API_VERSION_MAJOR(loader_version), VK_API_VERSION_MINOR(loader_version));

    const char *enabled_exts[3];
    uint32_t enabled_ext_count = 0;
    if (debug_utils) enabled_exts[enabled_ext_count++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    if (portability) enabled_exts[enabled_ext_count++] = VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME;
    const char *layer = SPK__VALIDATION_LAYER;

    VkDebugUtilsMessengerCreateInfoEXT messenger_info = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = spk__debug_callback,
        .pUserData = ctx,
    };
    VkValidationFeatureEnableEXT sync_validation =
        VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
    VkValidationFeaturesEXT features = {
        .sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
        .pNext = &messenger_info, /* also catches messages from instance creation itself */
        .enabledValidationFeatureCount = 1,
        .pEnabledValidationFeatures = &sync_validation,
    };
    VkInstanceCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pNext = validation ? &features : NULL,
        .flags = portability ? VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR : 0,
        .pApplicationInfo = &app,
        .enabledLayerCount = validation ? 1 : 0,
        .ppEnabledLayerNames = &layer,
        .enabledExtensionCount = enabled_ext_count,
        .ppEnabledExtensionNames = enabled_exts,
    };
    VkResult r = SPK__VK(VK_ERROR_OUT_OF_HOST_MEMORY, vkCreateInstance(&info, NULL, &ctx->instance));
    if (r != VK_SUCCESS) {
        ctx->instance = VK_NULL_HANDLE;
        /* The loader says "incompatible driver" when it finds no driver at all. */
        if (r == VK_ERROR_INCOMPATIBLE_DRIVER)
            return spk__fail(ctx, SPK_ERROR_NO_DEVICE,
                             "no Vulkan driver found (vkCreateInstance: VK_ERROR_INCOMPATIBLE_DRIVER); "
                             "for a CPU driver install mesa-vulkan-drivers");
        return spk__fail_vk(ctx, r, "vkCreateInstance");
    }
    spk__load_instance(ctx->instance);
    spk__load_debug_utils(ctx);
    ctx->debug_names = validation && debug_utils;
    if (validation) {
        r = ctx->create_messenger ? ctx->create_messenger(ctx->instance, &messenger_info, NULL, &ctx->messenger)
                                  : VK_ERROR_EXTENSION_NOT_PRESENT;
        if (r != VK_SUCCESS) return spk__fail_vk(ctx, r, "vkCreateDebugUtilsMessengerEXT");
    }
    return SPK_OK;
}

/* ---- physical devices ------------------------------------------------------------------- */

static spk_device_type spk__device_type(VkPhysicalDeviceType t) {
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return SPK_DEVICE_INTEGRATED_GPU;
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return SPK_DEVICE_DISCRETE_GPU;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return SPK_DEVICE_VIRTUAL_GPU;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return SPK_DEVICE_CPU;
    default: return SPK_DEVICE_OTHER;
    }
}

const char *spk_device_type_string(spk_device_type type) {
    switch (type) {
    case SPK_DEVICE_INTEGRATED_GPU: return "integrated GPU";
    case SPK_DEVICE_DISCRETE_GPU: return "discrete GPU";
    case SPK_DEVICE_VIRTUAL_GPU: return "virtual GPU";
    case SPK_DEVICE_CPU: return "CPU";
    default: return "other";
    }
}

static bool spk__device_has_extension(VkPhysicalDevice pd, const char *name) {
    uint32_t n = 0;
    if (vkEnumerateDeviceExtensionProperties(pd, NULL, &n, NULL) != VK_SUCCESS || n == 0) return false;
    VkExtensionProperties *exts = spk__calloc(n, sizeof *exts);
    if (!exts) return false;
    bool found = false;
    if (vkEnumerateDeviceExtensionProperties(pd, NULL, &n, exts) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++) found = strcmp(exts[i].extensionName, name) == 0;
    free(exts);
    return found;
}

/* The first queue family with compute, preferring one with timestamps; UINT32_MAX if none. */
static uint32_t spk__compute_queue_family(VkPhysicalDevice pd, uint32_t *timestamp_bits) {
    uint32_t n = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, NULL);
    VkQueueFamilyProperties families[32];
    if (n > SPK__ARRAY_LEN(families)) n = SPK__ARRAY_LEN(families);
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, families);
    uint32_t best = UINT32_MAX;
    for (uint32_t i = 0; i < n; i++) {
        if (!(families[i].queueFlags & VK_QUEUE_COMPUTE_BIT) || families[i].queueCount == 0) continue;
        if (best == UINT32_MAX ||
            (families[best].timestampValidBits == 0 && families[i].timestampValidBits > 0))
            best = i;
    }
    if (timestamp_bits) *timestamp_bits = best == UINT32_MAX ? 0 : families[best].timestampValidBits;
    return best;
}

/* Reads the properties and capabilities the library cares about. */
/* Whether both formats (one and four channels) can be read as uniform texel buffers. */
static bool spk__texel_format_pair(VkPhysicalDevice pd, VkFormat one, VkFormat four) {
    VkFormatProperties p1, p4;
    vkGetPhysicalDeviceFormatProperties(pd, one, &p1);
    vkGetPhysicalDeviceFormatProperties(pd, four, &p4);
    return (p1.bufferFeatures & VK_FORMAT_FEATURE_UNIFORM_TEXEL_BUFFER_BIT) &&
           (p4.bufferFeatures & VK_FORMAT_FEATURE_UNIFORM_TEXEL_BUFFER_BIT);
}

static void spk__query_caps(VkPhysicalDevice pd, spk__device_caps *caps,
                            VkPhysicalDeviceDriverProperties *driver) {
    memset(caps, 0, sizeof *caps);
    vkGetPhysicalDeviceProperties(pd, &caps->props);
    uint32_t api = caps->props.apiVersion;
    bool size_control_ext = api < VK_API_VERSION_1_3 &&
                            spk__device_has_extension(pd, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);

    VkPhysicalDeviceSubgroupSizeControlProperties size_props = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES,
    };
    caps->subgroup.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES;
    VkPhysicalDeviceProperties2 props2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                          .pNext = &caps->subgroup};
    void **tail = &caps->subgroup.pNext;
    if (api >= VK_API_VERSION_1_3 || size_control_ext) {
        *tail = &size_props;
        tail = &size_props.pNext;
    }
    if (driver && api >= VK_API_VERSION_1_2) {
        memset(driver, 0, sizeof *driver);
        driver->sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES;
        *tail = driver;
    }
    vkGetPhysicalDeviceProperties2(pd, &props2);
    caps->props = props2.properties;

    caps->subgroup_arithmetic =
        (caps->subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
        (caps->subgroup.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) &&
        (caps->subgroup.supportedOperations & VK_SUBGROUP_FEATURE_BASIC_BIT);
    caps->subgroup_shuffle = (caps->subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                             (caps->subgroup.supportedOperations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT);
    caps->min_subgroup_size = caps->max_subgroup_size = caps->subgroup.subgroupSize;

    VkPhysicalDevice16BitStorageFeatures storage16 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
    VkPhysicalDeviceFeatures2 features2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &storage16};
    vkGetPhysicalDeviceFeatures2(pd, &features2);
    caps->storage16 = storage16.storageBuffer16BitAccess;

    if (api >= VK_API_VERSION_1_3 || size_control_ext) {
        VkPhysicalDeviceSubgroupSizeControlFeatures size_features = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES,
        };
        VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                        .pNext = &size_features};
        vkGetPhysicalDeviceFeatures2(pd, &f2);
        if (size_features.subgroupSizeControl && size_features.computeFullSubgroups &&
            size_props.minSubgroupSize > 0) {
            caps->subgroup_size_control = true;
            caps->subgroup_size_control_ext = size_control_ext;
            caps->min_subgroup_size = size_props.minSubgroupSize;
            caps->max_subgroup_size = size_props.maxSubgroupSize;
        }
    }

    VkPhysicalDeviceMemoryProperties mem;
    vkGetPhysicalDeviceMemoryProperties(pd, &mem);
    const VkMemoryPropertyFlags uma_flags = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT |
                                            VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                            VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    bool host_visible_local = false;
    for (uint32_t i = 0; i < mem.memoryTypeCount; i++)
        if ((mem.memoryTypes[i].propertyFlags & uma_flags) == uma_flags) host_visible_local = true;
    caps->uma = host_visible_local && (caps->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU ||
                                       caps->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU);
    caps->timestamp_period = caps->props.limits.timestampPeriod;

    /* Vulkan requires the 32-bit formats as uniform texel buffers; checked all the same. */
    caps->texel_buffers = spk__texel_format_pair(pd, VK_FORMAT_R32_SFLOAT, VK_FORMAT_R32G32B32A32_SFLOAT);
    caps->texel_f16 = spk__texel_format_pair(pd, VK_FORMAT_R16_SFLOAT, VK_FORMAT_R16G16B16A16_SFLOAT);
    caps->texel_u16 = spk__texel_format_pair(pd, VK_FORMAT_R16_UINT, VK_FORMAT_R16G16B16A16_UINT);
}

static void spk__fill_info(VkPhysicalDevice pd, uint32_t index, spk_device_info *info) {
    spk__device_caps caps;
    VkPhysicalDeviceDriverProperties driver;
    spk__query_caps(pd, &caps, &driver);
    memset(info, 0, sizeof *info);
    info->index = index;
    snprintf(info->name, sizeof info->name, "%s", caps.props.deviceName);
    if (caps.props.apiVersion >= VK_API_VERSION_1_2) {
        /* "name info"; each part is cut so both fit. */
        int len = snprintf(info->driver, sizeof info->driver, "%.120s", driver.driverName);
        if (driver.driverInfo[0] && len >= 0)
            snprintf(info->driver + len, sizeof info->driver - (size_t)len, " %.120s", driver.driverInfo);
    }
    info->type = spk__device_type(caps.props.deviceType);
    info->vendor_id = caps.props.vendorID;
    info->device_id = caps.props.deviceID;
    info->api_version = caps.props.apiVersion;
    info->subgroup_size = caps.subgroup.subgroupSize;
    info->subgroup_arithmetic = caps.subgroup_arithmetic;
    info->max_storage_buffer_range = caps.props.limits.maxStorageBufferRange;
    info->storage_16bit = caps.storage16;
    info->texel_f16 = caps.texel_f16;
    info->texel_bf16 = caps.texel_u16;
    info->usable = caps.props.apiVersion >= SPK__MIN_API &&
                   spk__compute_queue_family(pd, NULL) != UINT32_MAX;
}

static int spk__type_rank(spk_device_type t) {
    switch (t) {
    case SPK_DEVICE_DISCRETE_GPU: return 0;
    case SPK_DEVICE_INTEGRATED_GPU: return 1;
    case SPK_DEVICE_VIRTUAL_GPU: return 2;
    case SPK_DEVICE_OTHER: return 3;
    default: return 4; /* CPU drivers last */
    }
}

static bool spk__contains_nocase(const char *haystack, const char *needle) {
    size_t n = strlen(needle);
    for (; *haystack; haystack++) {
        size_t i = 0;
        while (i < n && haystack[i] &&
               tolower((unsigned char)haystack[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n) return true;
    }
    return n == 0;
}

/* Picks the device named by `selector` (index or name substring), or the best by type. */
static spk_status spk__choose_device(spk_context *ctx, const char *selector) {
    uint32_t n = 0;
    VkResult r = vkEnumeratePhysicalDevices(ctx->instance, &n, NULL);
    if (r != VK_SUCCESS) return spk__fail_vk(ctx, r, "vkEnumeratePhysicalDevices");
    if (n == 0)
        return spk__fail(ctx, SPK_ERROR_NO_DEVICE,
                         "no Vulkan device found (for a CPU driver install mesa-vulkan-drivers)");
    VkPhysicalDevice *devices = spk__calloc(n, sizeof *devices);
    if (!devices) return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    r = vkEnumeratePhysicalDevices(ctx->instance, &n, devices);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
        free(devices);
        return spk__fail_vk(ctx, r, "vkEnumeratePhysicalDevices");
    }

    uint32_t chosen = UINT32_MAX;
    spk_status status = SPK_OK;
    spk_device_info info;
    if (selector && *selector) {
        char *end;
        unsigned long index = strtoul(selector, &end, 10);
        bool is_index = *end == '\0' && isdigit((unsigned char)selector[0]);
        for (uint32_t i = 0; i < n && chosen == UINT32_MAX; i++) {
            spk__fill_info(devices[i], i, &info);
            if (is_index ? i == index : spk__contains_nocase(info.name, selector)) chosen = i;
        }
        if (chosen == UINT32_MAX)
            status = spk__fail(ctx, SPK_ERROR_NO_DEVICE,
                               "no Vulkan device matches '%s' (%u devices; see `softpick devices`)",
                               selector, n);
        else if (!info.usable) /* info still describes the chosen device */
            status = spk__fail(ctx, SPK_ERROR_UNSUPPORTED,
                               "device %u (%s) supports Vulkan %u.%u without the 1.1 and compute "
                               "queue softpick needs",
                               chosen, info.name, VK_API_VERSION_MAJOR(info.api_version),
                               VK_API_VERSION_MINOR(info.api_version));
    } else {
        int best_rank = 1 << 30;
        for (uint32_t i = 0; i < n; i++) {
            spk__fill_info(devices[i], i, &info);
            if (info.usable && spk__type_rank(info.type) < best_rank) {
                best_rank = spk__type_rank(info.type);
                chosen = i;
            }
        }
        if (chosen == UINT32_MAX)
            status = spk__fail(ctx, SPK_ERROR_NO_DEVICE,
                               "none of the %u Vulkan devices supports Vulkan 1.1 with a compute queue", n);
    }
    if (status == SPK_OK) {
        ctx->physical_device = devices[chosen];
        ctx->device_index = chosen;
    }
    free(devices);
    return status;
}

/* Creates the logical device with one compute queue and the optional features the device has. */
static spk_status spk__create_device(spk_context *ctx, const spk_context_desc *desc) {
    spk__device_caps *caps = &ctx->caps;
    spk__query_caps(ctx->physical_device, caps, NULL);
    ctx->queue_family = spk__compute_queue_family(ctx->physical_device, &caps->timestamp_valid_bits);
    caps->timestamps = caps->timestamp_valid_bits > 0 && caps->props.limits.timestampPeriod > 0;

    switch (desc->reduction) {
    case SPK_REDUCTION_SUBGROUP:
        if (!caps->subgroup_arithmetic)
            return spk__fail(ctx, SPK_ERROR_UNSUPPORTED,
                             "subgroup reductions were requested but %s lacks subgroup arithmetic "
                             "in compute shaders",
                             caps->props.deviceName);
        ctx->reduction = SPK_REDUCTION_SUBGROUP;
        break;
    case SPK_REDUCTION_SHARED_MEMORY:
        ctx->reduction = SPK_REDUCTION_SHARED_MEMORY;
        break;
    default:
        ctx->reduction = caps->subgroup_arithmetic ? SPK_REDUCTION_SUBGROUP : SPK_REDUCTION_SHARED_MEMORY;
    }
    if (desc->half_storage == SPK_HALF_STORAGE_16BIT && !caps->storage16)
        return spk__fail(ctx, SPK_ERROR_UNSUPPORTED,
                         "16-bit storage was requested but %s lacks storageBuffer16BitAccess (SPK_HALF_STORAGE_WORDS "
                         "works on any device)",
                         caps->props.deviceName);
    ctx->half_words = desc->half_storage == SPK_HALF_STORAGE_WORDS || !caps->storage16;

    float priority = 1.0f;
    VkDeviceQueueCreateInfo queue_info = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
        .queueFamilyIndex = ctx->queue_family,
        .queueCount = 1,
        .pQueuePriorities = &priority,
    };
    /* Full subgroups make gl_SubgroupSize the real width on drivers that would otherwise launch
     * partial subgroups; enable them wherever the device has them. */
    VkPhysicalDeviceSubgroupSizeControlFeatures size_control = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES,
        .subgroupSizeControl = VK_TRUE,
        .computeFullSubgroups = VK_TRUE,
    };
    VkPhysicalDeviceVulkan13Features features13 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES,
        .subgroupSizeControl = VK_TRUE,
        .computeFullSubgroups = VK_TRUE,
    };
    /* Portability implementations (MoltenVK) must have VK_KHR_portability_subset enabled. */
    const char *extensions[2];
    uint32_t extension_count = 0;
    if (caps->subgroup_size_control_ext) extensions[extension_count++] = VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME;
    if (spk__device_has_extension(ctx->physical_device, "VK_KHR_portability_subset"))
        extensions[extension_count++] = "VK_KHR_portability_subset";
    VkPhysicalDevice16BitStorageFeatures storage16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES,
        .storageBuffer16BitAccess = VK_TRUE,
    };
    void *features = NULL;
    if (caps->subgroup_size_control)
        features = caps->subgroup_size_control_ext ? (void *)&size_control : (void *)&features13;
    if (caps->storage16) {
        storage16.pNext = features;
        features = &storage16;
    }
    VkDeviceCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .pNext = features,
        .queueCreateInfoCount = 1,
        .pQueueCreateInfos = &queue_info,
        .enabledExtensionCount = extension_count,
        .ppEnabledExtensionNames = extensions,
    };
    VkResult r = SPK__VK(VK_ERROR_OUT_OF_HOST_MEMORY, vkCreateDevice(ctx->physical_device, &info, NULL, &ctx->device));
    if (r != VK_SUCCESS) {
        ctx->device = VK_NULL_HANDLE;
        return spk__fail_vk(ctx, r, "vkCreateDevice");
    }
    volkLoadDeviceTable(&ctx->vk, ctx->device);
    ctx->vk.vkGetDeviceQueue(ctx->device, ctx->queue_family, 0, &ctx->queue);
    return SPK_OK;
}

void spk__set_debug_name(spk_context *ctx, VkObjectType type, uint64_t handle, const char *name) {
    if (!ctx->debug_names || !handle) return;
    VkDebugUtilsObjectNameInfoEXT info = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_OBJECT_NAME_INFO_EXT,
        .objectType = type,
        .objectHandle = handle,
        .pObjectName = name,
    };
    if (ctx->set_object_name) ctx->set_object_name(ctx->device, &info);
}

spk_status spk_context_create(const spk_context_desc *desc_in, spk_context **out) {
    if (!out) return SPK_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    spk_context_desc desc = {0};
    if (desc_in) desc = *desc_in;
    if (!desc.device) desc.device = getenv("SOFTPICK_DEVICE");
    if (!desc.pipeline_cache_path) desc.pipeline_cache_path = getenv("SOFTPICK_PIPELINE_CACHE");
    desc.validation = desc.validation || spk__env_true("SOFTPICK_VALIDATION");
    if ((unsigned)desc.reduction > SPK_REDUCTION_SHARED_MEMORY) {
        spk__log(desc.log, desc.log_user_data, SPK_LOG_ERROR, "invalid reduction option %d",
                 (int)desc.reduction);
        return SPK_ERROR_INVALID_ARGUMENT;
    }
    if ((unsigned)desc.half_storage > SPK_HALF_STORAGE_WORDS) {
        spk__log(desc.log, desc.log_user_data, SPK_LOG_ERROR, "invalid half_storage option %d", (int)desc.half_storage);
        return SPK_ERROR_INVALID_ARGUMENT;
    }

    spk_context *ctx = spk__calloc(1, sizeof *ctx);
    if (!ctx) {
        spk__log(desc.log, desc.log_user_data, SPK_LOG_ERROR, "out of host memory creating a context");
        return SPK_ERROR_OUT_OF_HOST_MEMORY;
    }
    ctx->log = desc.log;
    ctx->log_user_data = desc.log_user_data;
    pthread_mutex_init(&ctx->lock, NULL);

    spk_status status = spk__load_vulkan();
    if (status != SPK_OK)
        spk__fail(ctx, status, "no Vulkan loader found (libvulkan.so.1); install a Vulkan driver "
                               "(Debian: libvulkan1 and mesa-vulkan-drivers)");
    if (status == SPK_OK) status = spk__create_instance(ctx, desc.validation);
    if (status == SPK_OK) status = spk__choose_device(ctx, desc.device);
    if (status == SPK_OK) status = spk__create_device(ctx, &desc);
    if (status == SPK_OK) status = spk__allocator_init(ctx);
    if (status == SPK_OK) status = spk__commands_init(ctx);
    if (status == SPK_OK) status = spk__pipelines_init(ctx, desc.pipeline_cache_path);
    if (status == SPK_OK) status = spk__tuning_init(ctx, desc.tuning_path);
    if (status != SPK_OK) {
        spk__log(ctx->log, ctx->log_user_data, SPK_LOG_ERROR, "%s", ctx->error);
        spk_context_destroy(ctx);
        return status;
    }
    *out = ctx;
    return SPK_OK;
}

/* Whether the application's feature chain enables 16-bit storage buffers. */
static bool spk__chain_enables_storage16(const void *chain) {
    for (const VkBaseInStructure *p = chain; p; p = p->pNext) {
        if (p->sType == VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES &&
            ((const VkPhysicalDevice16BitStorageFeatures *)(const void *)p)->storageBuffer16BitAccess)
            return true;
        if (p->sType == VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES &&
            ((const VkPhysicalDeviceVulkan11Features *)(const void *)p)->storageBuffer16BitAccess)
            return true;
    }
    return false;
}

/* Whether the application's feature chain enables full-subgroup control. */
static bool spk__chain_enables_full_subgroups(const void *chain) {
    for (const VkBaseInStructure *p = chain; p; p = p->pNext) {
        if (p->sType == VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES) {
            const VkPhysicalDeviceSubgroupSizeControlFeatures *f = (const void *)p;
            if (f->subgroupSizeControl && f->computeFullSubgroups) return true;
        } else if (p->sType == VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES) {
            const VkPhysicalDeviceVulkan13Features *f = (const void *)p;
            if (f->subgroupSizeControl && f->computeFullSubgroups) return true;
        }
    }
    return false;
}

static spk_status spk__adopt_device(spk_context *ctx, const spk_vulkan_device *dev) {
    if (!dev->instance || !dev->physical_device || !dev->device)
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "the instance, physical device and device are all required");
    if (dev->api_version < VK_API_VERSION_1_1) /* 0 means 1.0, as in VkApplicationInfo */
        return spk__fail(ctx, SPK_ERROR_UNSUPPORTED, "the instance was created for Vulkan %u.%u; softpick needs 1.1",
                         VK_API_VERSION_MAJOR(dev->api_version), VK_API_VERSION_MINOR(dev->api_version));
    ctx->external = true; /* from here on, destroying ctx must leave the application's objects */
    spk__load_instance(dev->instance);
    ctx->instance = dev->instance;
    ctx->physical_device = dev->physical_device;
    spk__device_caps *caps = &ctx->caps;
    spk__query_caps(dev->physical_device, caps, NULL);
    if (caps->props.apiVersion < VK_API_VERSION_1_1)
        return spk__fail(ctx, SPK_ERROR_UNSUPPORTED, "%s supports Vulkan %u.%u; softpick needs 1.1",
                         caps->props.deviceName, VK_API_VERSION_MAJOR(caps->props.apiVersion),
                         VK_API_VERSION_MINOR(caps->props.apiVersion));
    uint32_t family_count = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(dev->physical_device, &family_count, NULL);
    VkQueueFamilyProperties families[64];
    if (family_count > 64) family_count = 64;
    vkGetPhysicalDeviceQueueFamilyProperties(dev->physical_device, &family_count, families);
    if (dev->queue_family_index >= family_count ||
        !(families[dev->queue_family_index].queueFlags & VK_QUEUE_COMPUTE_BIT))
        return spk__fail(ctx, SPK_ERROR_UNSUPPORTED, "queue family %u has no VK_QUEUE_COMPUTE_BIT",
                         dev->queue_family_index);
    ctx->queue_family = dev->queue_family_index;
    caps->timestamp_valid_bits = families[dev->queue_family_index].timestampValidBits;
    caps->timestamps = caps->timestamp_valid_bits > 0 && caps->props.limits.timestampPeriod > 0;
    /* Only what the application enabled: full subgroups need its feature chain to say so. */
    if (!spk__chain_enables_full_subgroups(dev->enabled_features)) {
        caps->subgroup_size_control = caps->subgroup_size_control_ext = false;
        caps->min_subgroup_size = caps->max_subgroup_size = caps->subgroup.subgroupSize;
    }
    ctx->reduction = caps->subgroup_arithmetic ? SPK_REDUCTION_SUBGROUP : SPK_REDUCTION_SHARED_MEMORY;
    caps->storage16 = caps->storage16 && spk__chain_enables_storage16(dev->enabled_features);
    ctx->half_words = !caps->storage16;
    ctx->device = dev->device;
    ctx->queue = dev->queue;
    volkLoadDeviceTable(&ctx->vk, dev->device);
    return SPK_OK;
}

spk_status spk_context_create_external(const spk_vulkan_device *dev, spk_context **out) {
    if (!out) return SPK_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    if (!dev) return SPK_ERROR_INVALID_ARGUMENT;
    spk_context *ctx = spk__calloc(1, sizeof *ctx);
    if (!ctx) {
        spk__log(NULL, NULL, SPK_LOG_ERROR, "out of host memory creating a context");
        return SPK_ERROR_OUT_OF_HOST_MEMORY;
    }
    pthread_mutex_init(&ctx->lock, NULL);
    spk_status status = spk__load_vulkan_with(dev->get_instance_proc_addr);
    if (status != SPK_OK) spk__fail(ctx, status, "no Vulkan loader found (libvulkan.so.1)");
    if (status == SPK_OK) status = spk__adopt_device(ctx, dev);
    if (status == SPK_OK) status = spk__allocator_init(ctx);
    if (status == SPK_OK) status = spk__commands_init(ctx);
    if (status == SPK_OK) status = spk__pipelines_init(ctx, getenv("SOFTPICK_PIPELINE_CACHE"));
    if (status == SPK_OK) status = spk__tuning_init(ctx, NULL);
    if (status != SPK_OK) {
        spk__log(NULL, NULL, SPK_LOG_ERROR, "%s", ctx->error);
        spk_context_destroy(ctx);
        return status;
    }
    *out = ctx;
    return SPK_OK;
}

void spk_context_destroy(spk_context *ctx) {
    if (!ctx) return;
    if (ctx->device) {
        /* Every synchronous op has waited for its work; on an application's device its own work
         * is its business, so the library does not wait for the whole device there. */
        if (!ctx->external) ctx->vk.vkDeviceWaitIdle(ctx->device);
        spk__pipelines_destroy(ctx);
        spk__tuning_destroy(ctx);
        spk__commands_destroy(ctx);
        spk__allocator_destroy(ctx);
        if (!ctx->external) ctx->vk.vkDestroyDevice(ctx->device, NULL);
    }
    if (ctx->messenger) ctx->destroy_messenger(ctx->instance, ctx->messenger, NULL);
    if (ctx->instance && !ctx->external) vkDestroyInstance(ctx->instance, NULL);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
}

const char *spk_context_last_error(const spk_context *ctx) { return ctx ? ctx->error : ""; }

spk_status spk_context_device_info(const spk_context *ctx, spk_device_info *out) {
    if (!ctx || !out) return SPK_ERROR_INVALID_ARGUMENT;
    spk__fill_info(ctx->physical_device, ctx->device_index, out);
    return SPK_OK;
}

uint64_t spk_context_last_gpu_time_ns(const spk_context *ctx) { return ctx ? ctx->last_gpu_time_ns : 0; }

spk_status spk_list_devices(spk_device_info *infos, uint32_t capacity, uint32_t *count) {
    if (!count || (capacity > 0 && !infos)) return SPK_ERROR_INVALID_ARGUMENT;
    *count = 0;
    spk_status status = spk__load_vulkan();
    if (status != SPK_OK) return status;
    spk_context scratch = {0}; /* holds the instance and receives error messages */
    status = spk__create_instance(&scratch, false);
    if (status != SPK_OK) return status;
    uint32_t n = 0;
    VkResult r = vkEnumeratePhysicalDevices(scratch.instance, &n, NULL);
    VkPhysicalDevice *devices = n ? spk__calloc(n, sizeof *devices) : NULL;
    if (r == VK_SUCCESS && n && !devices) status = SPK_ERROR_OUT_OF_HOST_MEMORY;
    else if (r == VK_SUCCESS && n) r = vkEnumeratePhysicalDevices(scratch.instance, &n, devices);
    if (status == SPK_OK && r != VK_SUCCESS && r != VK_INCOMPLETE) status = spk__status_from_vk(r);
    if (status == SPK_OK) {
        for (uint32_t i = 0; i < n && i < capacity; i++) spk__fill_info(devices[i], i, &infos[i]);
        *count = n;
    }
    free(devices);
    vkDestroyInstance(scratch.instance, NULL);
    return status;
}
