/* Device memory: large blocks, each one VkDeviceMemory with one VkBuffer over it, carved into
 * aligned ranges with a first-fit free list. Small tensors never cost a vkAllocateMemory. */
#include "internal.h"
#include "fault.h"

#include <stdlib.h>
#include <string.h>

#define SPK__BLOCK_SIZE ((VkDeviceSize)64 << 20)

static uint32_t spk__find_memory_type(const VkPhysicalDeviceMemoryProperties *mem,
                                      const VkMemoryPropertyFlags *preferences, uint32_t count) {
    for (uint32_t p = 0; p < count; p++)
        for (uint32_t i = 0; i < mem->memoryTypeCount; i++)
            if ((mem->memoryTypes[i].propertyFlags & preferences[p]) == preferences[p]) return i;
    return UINT32_MAX;
}

spk_status spk__allocator_init(spk_context *ctx) {
    spk__allocator *a = &ctx->allocator;
    VkPhysicalDeviceMemoryProperties mem;
    vkGetPhysicalDeviceMemoryProperties(ctx->physical_device, &mem);
    const VkMemoryPropertyFlags host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    const VkMemoryPropertyFlags local = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
    /* On UMA devices (CPU drivers, integrated GPUs) device memory is host memory: map it and skip
     * staging copies. Discrete GPUs keep tensors in device-local memory. */
    VkMemoryPropertyFlags tensor_prefs[] = {ctx->caps.uma ? (local | host) : local, local, 0};
    VkMemoryPropertyFlags staging_prefs[] = {host | VK_MEMORY_PROPERTY_HOST_CACHED_BIT, host};
    for (uint32_t i = 0; i < mem.memoryTypeCount; i++) a->memory_flags[i] = mem.memoryTypes[i].propertyFlags;
    a->memory_type[SPK__MEMORY_TENSOR] = spk__find_memory_type(&mem, tensor_prefs, 3);
    a->memory_type[SPK__MEMORY_STAGING] = spk__find_memory_type(&mem, staging_prefs, 2);
    if (a->memory_type[SPK__MEMORY_STAGING] == UINT32_MAX)
        return spk__fail(ctx, SPK_ERROR_UNSUPPORTED, "the device has no host-visible coherent memory");
    if (a->memory_type[SPK__MEMORY_TENSOR] != UINT32_MAX)
        a->tensor_heap_size = mem.memoryHeaps[mem.memoryTypes[a->memory_type[SPK__MEMORY_TENSOR]].heapIndex].size;

    const VkPhysicalDeviceLimits *limits = &ctx->caps.props.limits;
    /* 16 bytes keeps every tensor aligned for vec4 loads; texel views need their own alignment. */
    a->alignment = limits->minStorageBufferOffsetAlignment > 16 ? limits->minStorageBufferOffsetAlignment : 16;
    if (limits->minTexelBufferOffsetAlignment > a->alignment) a->alignment = limits->minTexelBufferOffsetAlignment;
    a->block_size = SPK__BLOCK_SIZE;
    return SPK_OK;
}

static void spk__block_destroy(spk_context *ctx, spk__block *b) {
    spk__forget_range(ctx, (spk__buffer_ref){b->buffer, 0, b->size});
    if (b->buffer) ctx->vk.vkDestroyBuffer(ctx->device, b->buffer, NULL);
    if (b->memory) ctx->vk.vkFreeMemory(ctx->device, b->memory, NULL);
    free(b->free_ranges);
    free(b);
}

void spk__allocator_destroy(spk_context *ctx) {
    spk__allocator *a = &ctx->allocator;
    spk__free(ctx, &ctx->staging);
    spk__free(ctx, &ctx->scratch);
    for (uint32_t i = 0; i < a->block_count; i++) spk__block_destroy(ctx, a->blocks[i]);
    free(a->blocks);
    memset(a, 0, sizeof *a);
}

static spk_status spk__block_create(spk_context *ctx, uint32_t memory_type, VkDeviceSize size,
                                    bool dedicated, spk__block **out) {
    spk__allocator *a = &ctx->allocator;
    *out = NULL;
    if (!spk__grow((void **)&a->blocks, &a->block_capacity, a->block_count + 1, sizeof *a->blocks))
        return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    spk__block *b = spk__calloc(1, sizeof *b);
    if (!b || !spk__grow((void **)&b->free_ranges, &b->free_capacity, 1, sizeof *b->free_ranges)) {
        free(b);
        return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    }
    b->size = size;
    b->memory_type = memory_type;
    b->dedicated = dedicated;

    VkBufferCreateInfo buffer_info = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = size,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT |
                 VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    VkResult r = SPK__VK(VK_ERROR_OUT_OF_HOST_MEMORY, ctx->vk.vkCreateBuffer(ctx->device, &buffer_info, NULL, &b->buffer));
    spk_status status = SPK_OK;
    if (r != VK_SUCCESS) status = spk__fail_vk(ctx, r, "vkCreateBuffer");
    VkMemoryRequirements req = {0};
    if (status == SPK_OK) {
        ctx->vk.vkGetBufferMemoryRequirements(ctx->device, b->buffer, &req);
        if (!(req.memoryTypeBits & (1u << memory_type)))
            status = spk__fail(ctx, SPK_ERROR_UNSUPPORTED, "storage buffers cannot use memory type %u",
                               memory_type);
    }
    if (status == SPK_OK) {
        VkMemoryAllocateInfo alloc_info = {
            .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
            .allocationSize = req.size,
            .memoryTypeIndex = memory_type,
        };
        r = SPK__VK(VK_ERROR_OUT_OF_DEVICE_MEMORY, ctx->vk.vkAllocateMemory(ctx->device, &alloc_info, NULL, &b->memory));
        if (r != VK_SUCCESS) {
            b->memory = VK_NULL_HANDLE;
            status = spk__fail(ctx, spk__status_from_vk(r),
                               "cannot allocate %llu bytes of device memory: %s",
                               (unsigned long long)req.size, spk__vk_result_string(r));
        }
    }
    if (status == SPK_OK) {
        r = SPK__VK(VK_ERROR_OUT_OF_DEVICE_MEMORY, ctx->vk.vkBindBufferMemory(ctx->device, b->buffer, b->memory, 0));
        if (r != VK_SUCCESS) status = spk__fail_vk(ctx, r, "vkBindBufferMemory");
    }
    if (status == SPK_OK && (ctx->allocator.memory_flags[memory_type] & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)) {
        r = SPK__VK(VK_ERROR_OUT_OF_DEVICE_MEMORY, ctx->vk.vkMapMemory(ctx->device, b->memory, 0, VK_WHOLE_SIZE, 0, &b->mapped));
        if (r != VK_SUCCESS) status = spk__fail_vk(ctx, r, "vkMapMemory");
    }
    if (status != SPK_OK) {
        spk__block_destroy(ctx, b);
        return status;
    }
    b->free_ranges[0] = (spk__range){0, size};
    b->free_count = 1;
    spk__set_debug_name(ctx, VK_OBJECT_TYPE_BUFFER, (uint64_t)b->buffer, "softpick memory block");
    a->blocks[a->block_count++] = b;
    *out = b;
    return SPK_OK;
}

/* First fit within one block; returns false when no free range is large enough. */
static bool spk__block_take(spk__block *b, VkDeviceSize size, VkDeviceSize alignment, VkDeviceSize *offset) {
    for (uint32_t i = 0; i < b->free_count; i++) {
        spk__range *f = &b->free_ranges[i];
        VkDeviceSize start = (f->offset + alignment - 1) / alignment * alignment;
        if (start + size > f->offset + f->size) continue;
        /* The aligned start never moves past the range: ranges begin at multiples of the
         * alignment because every allocation size is rounded up to it. */
        *offset = start;
        f->offset = start + size;
        f->size -= size;
        if (f->size == 0) {
            memmove(f, f + 1, (b->free_count - i - 1) * sizeof *f);
            b->free_count--;
        }
        return true;
    }
    return false;
}

/* Returns a range to the free list, coalescing with its neighbours. */
static bool spk__block_give(spk__block *b, VkDeviceSize offset, VkDeviceSize size) {
    uint32_t i = 0;
    while (i < b->free_count && b->free_ranges[i].offset < offset) i++;
    bool merge_prev = i > 0 && b->free_ranges[i - 1].offset + b->free_ranges[i - 1].size == offset;
    bool merge_next = i < b->free_count && offset + size == b->free_ranges[i].offset;
    if (merge_prev && merge_next) {
        b->free_ranges[i - 1].size += size + b->free_ranges[i].size;
        memmove(&b->free_ranges[i], &b->free_ranges[i + 1], (b->free_count - i - 1) * sizeof *b->free_ranges);
        b->free_count--;
    } else if (merge_prev) {
        b->free_ranges[i - 1].size += size;
    } else if (merge_next) {
        b->free_ranges[i].offset = offset;
        b->free_ranges[i].size += size;
    } else {
        /* Out of host memory, the range stays lost to this block until it is destroyed. */
        if (!spk__grow((void **)&b->free_ranges, &b->free_capacity, b->free_count + 1, sizeof *b->free_ranges))
            return false;
        memmove(&b->free_ranges[i + 1], &b->free_ranges[i], (b->free_count - i) * sizeof *b->free_ranges);
        b->free_ranges[i] = (spk__range){offset, size};
        b->free_count++;
    }
    return true;
}

spk_status spk__allocate(spk_context *ctx, spk__memory_kind kind, VkDeviceSize size, spk__allocation *out) {
    spk__allocator *a = &ctx->allocator;
    memset(out, 0, sizeof *out);
    uint32_t type = a->memory_type[kind];
    VkDeviceSize rounded = (size + a->alignment - 1) / a->alignment * a->alignment;
    if (rounded == 0) rounded = a->alignment; /* empty tensors still get a valid binding */
    if (rounded <= a->block_size / 2) {
        for (uint32_t i = 0; i < a->block_count; i++) {
            spk__block *b = a->blocks[i];
            if (b->dedicated || b->memory_type != type) continue;
            if (spk__block_take(b, rounded, a->alignment, &out->offset)) {
                out->block = b;
                out->size = rounded;
                return SPK_OK;
            }
        }
    }
    bool dedicated = rounded > a->block_size / 2;
    spk__block *b;
    spk_status status = spk__block_create(ctx, type, dedicated ? rounded : a->block_size, dedicated, &b);
    if (status != SPK_OK) return status;
    spk__block_take(b, rounded, a->alignment, &out->offset);
    out->block = b;
    out->size = rounded;
    return SPK_OK;
}

void spk__free(spk_context *ctx, spk__allocation *alloc) {
    spk__block *b = alloc->block;
    if (!b) return;
    spk__allocator *a = &ctx->allocator;
    spk__block_give(b, alloc->offset, alloc->size);
    memset(alloc, 0, sizeof *alloc);
    bool empty = b->free_count == 1 && b->free_ranges[0].size == b->size;
    if (!(b->dedicated && empty)) return;
    /* Dedicated blocks go back to the driver at once: they are large by definition. */
    for (uint32_t i = 0; i < a->block_count; i++) {
        if (a->blocks[i] != b) continue;
        a->blocks[i] = a->blocks[--a->block_count];
        break;
    }
    spk__block_destroy(ctx, b);
}

spk_status spk__reserve(spk_context *ctx, spk__memory_kind kind, VkDeviceSize size, spk__allocation *alloc) {
    if (alloc->block && alloc->size >= size) return SPK_OK;
    spk__free(ctx, alloc);
    return spk__allocate(ctx, kind, size, alloc);
}

void spk__memory_in_use(spk_context *ctx, uint64_t *allocated, uint64_t *used) {
    pthread_mutex_lock(&ctx->lock);
    *allocated = *used = 0;
    for (uint32_t i = 0; i < ctx->allocator.block_count; i++) {
        const spk__block *b = ctx->allocator.blocks[i];
        uint64_t free_bytes = 0;
        for (uint32_t r = 0; r < b->free_count; r++) free_bytes += b->free_ranges[r].size;
        *allocated += b->size;
        *used += b->size - free_bytes;
    }
    pthread_mutex_unlock(&ctx->lock);
}
