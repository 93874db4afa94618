/* Tensors: shape bookkeeping, device memory, and copies between host and device. */
#include "internal.h"
#include "fault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

spk_status spk__check_tensor_dtypes(spk_context *ctx, const spk_tensor *t, const char *what, uint32_t dtypes) {
    if (!t) return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "%s is NULL", what);
    if (t->ctx != ctx) return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "%s belongs to another context", what);
    if (!(dtypes & SPK__DTYPE_BIT(t->dtype)))
        return spk__fail(ctx, SPK_ERROR_UNSUPPORTED, "%s is %s, which this op does not take%s", what,
                         spk_dtype_name(t->dtype), dtypes == SPK__DTYPE_BIT(SPK_DTYPE_F32) ? " (f32 only)" : "");
    return SPK_OK;
}

spk_status spk__check_storage16(spk_context *ctx, const char *op) {
    if (ctx->caps.storage16) return SPK_OK;
    return spk__fail(ctx, SPK_ERROR_UNSUPPORTED,
                     "%s with F16 activations stores 16-bit values, which needs storageBuffer16BitAccess; %s lacks it "
                     "(16-bit weights work on any device)",
                     op, ctx->caps.props.deviceName);
}

spk_status spk__check_activation(spk_context *ctx, const spk_tensor *t, const char *op, const char *what) {
    spk_status status = spk__check_tensor_dtypes(ctx, t, what, SPK__DTYPE_BIT(SPK_DTYPE_F32) | SPK__DTYPE_BIT(SPK_DTYPE_F16));
    if (status == SPK_OK && t->dtype == SPK_DTYPE_F16) status = spk__check_storage16(ctx, op);
    return status;
}

spk_status spk__check_tensor(spk_context *ctx, const spk_tensor *t, const char *what) {
    return spk__check_tensor_dtypes(ctx, t, what, SPK__DTYPE_BIT(SPK_DTYPE_F32));
}

/* Checks a shape (rank, non-negative dimensions, size within maxStorageBufferRange) and gives its
 * element count. */
static spk_status spk__shape_count(spk_context *ctx, spk_dtype dtype, int ndim, const int64_t *shape, uint64_t *count) {
    if (!spk_dtype_size(dtype)) return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "dtype %d is not an spk_dtype", (int)dtype);
    if (ndim < 1 || ndim > SPK_MAX_RANK)
        return spk__fail(ctx, SPK_ERROR_SHAPE, "tensor rank %d is outside 1..%d", ndim, SPK_MAX_RANK);
    if (!shape) return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "the shape is NULL");
    *count = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return spk__fail(ctx, SPK_ERROR_SHAPE, "dimension %d is negative (%lld)", i, (long long)shape[i]);
        if (spk__mul_overflows(*count, (uint64_t)shape[i], count) || *count > (UINT64_MAX >> 3))
            return spk__fail(ctx, SPK_ERROR_TOO_LARGE, "the shape's element count overflows");
    }
    uint64_t bytes = *count * spk_dtype_size(dtype), limit = ctx->caps.props.limits.maxStorageBufferRange;
    uint64_t heap = ctx->allocator.tensor_heap_size;
    if (heap && bytes > heap)
        return spk__fail(ctx, SPK_ERROR_TOO_LARGE, "a tensor of %llu bytes exceeds the device's memory heap of %llu bytes",
                         (unsigned long long)bytes, (unsigned long long)heap);
    if (bytes > limit)
        return spk__fail(ctx, SPK_ERROR_TOO_LARGE,
                         "a tensor of %llu bytes exceeds the device's maxStorageBufferRange of %llu bytes",
                         (unsigned long long)bytes, (unsigned long long)limit);
    return SPK_OK;
}

/* The tensor's uniform texel views (spk_tensor.views), where the device's formats and limits
 * allow them. */
static spk_status spk__create_views(spk_context *ctx, spk_tensor *t) {
    static const VkFormat formats[3][2] = {
        [SPK_DTYPE_F32] = {VK_FORMAT_R32_SFLOAT, VK_FORMAT_R32G32B32A32_SFLOAT},
        [SPK_DTYPE_F16] = {VK_FORMAT_R16_SFLOAT, VK_FORMAT_R16G16B16A16_SFLOAT},
        [SPK_DTYPE_BF16] = {VK_FORMAT_R16_UINT, VK_FORMAT_R16G16B16A16_UINT},
    };
    bool supported[3] = {ctx->caps.texel_buffers, ctx->caps.texel_f16, ctx->caps.texel_u16};
    if (!supported[t->dtype]) return SPK_OK;
    VkDeviceSize element = spk_dtype_size(t->dtype);
    for (int i = 0; i < 2; i++) {
        VkDeviceSize per_texel = i ? 4 : 1, texels = (VkDeviceSize)t->count / per_texel;
        if (texels == 0 || texels > ctx->caps.props.limits.maxTexelBufferElements) continue;
        VkBufferViewCreateInfo info = {
            .sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO,
            .buffer = t->ref.buffer,
            .format = formats[t->dtype][i],
            .offset = t->ref.offset,
            .range = texels * per_texel * element,
        };
        VkResult r = SPK__VK(VK_ERROR_OUT_OF_HOST_MEMORY, ctx->vk.vkCreateBufferView(ctx->device, &info, NULL, &t->views[i]));
        if (r != VK_SUCCESS) {
            t->views[i] = VK_NULL_HANDLE;
            return spk__fail_vk(ctx, r, "vkCreateBufferView");
        }
    }
    return SPK_OK;
}

spk_status spk_tensor_create_typed(spk_context *ctx, spk_dtype dtype, int ndim, const int64_t *shape,
                                   spk_tensor **out) {
    if (!out) return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "spk_tensor_create: out is NULL");
    *out = NULL;
    if (!ctx) return SPK_ERROR_INVALID_ARGUMENT;
    uint64_t count;
    spk_status status = spk__check_alive(ctx);
    if (status == SPK_OK) status = spk__shape_count(ctx, dtype, ndim, shape, &count);
    if (status != SPK_OK) return status;
    /* 16-bit tensors bind whole 32-bit words, so shaders may read their elements in pairs. */
    uint64_t bytes = (count * spk_dtype_size(dtype) + 3) & ~(uint64_t)3;

    spk_tensor *t = spk__calloc(1, sizeof *t);
    if (!t) return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    pthread_mutex_lock(&ctx->lock);
    status = spk__allocate(ctx, SPK__MEMORY_TENSOR, bytes, &t->alloc);
    pthread_mutex_unlock(&ctx->lock);
    if (status != SPK_OK) {
        free(t);
        return status;
    }
    t->ctx = ctx;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->count = (int64_t)count;
    t->dtype = dtype;
    t->ref = (spk__buffer_ref){t->alloc.block->buffer, t->alloc.offset, bytes ? bytes : t->alloc.size};
    status = spk__create_views(ctx, t);
    if (status != SPK_OK) {
        spk_tensor_destroy(t);
        return status;
    }
    *out = t;
    return SPK_OK;
}

spk_status spk__tensor_slice(spk_tensor *whole, VkDeviceSize offset, int ndim, const int64_t *shape, spk_tensor **out) {
    spk_context *ctx = whole->ctx;
    uint64_t count;
    spk_status status = spk__shape_count(ctx, SPK_DTYPE_F32, ndim, shape, &count);
    if (status != SPK_OK) return status;
    VkDeviceSize bytes = count * sizeof(float);
    if (offset > whole->ref.size || bytes > whole->ref.size - offset)
        return spk__fail(ctx, SPK_ERROR_SHAPE, "a slice past its tensor's end");
    spk_tensor *t = spk__calloc(1, sizeof *t);
    if (!t) return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    *t = (spk_tensor){.ctx = ctx, .ndim = ndim, .count = (int64_t)count, .dtype = SPK_DTYPE_F32, .slice = true};
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->alloc = (spk__allocation){whole->alloc.block, whole->alloc.offset + offset, bytes};
    t->ref = (spk__buffer_ref){whole->ref.buffer, whole->ref.offset + offset, bytes};
    status = spk__create_views(ctx, t);
    if (status != SPK_OK) {
        spk_tensor_destroy(t);
        return status;
    }
    *out = t;
    return SPK_OK;
}

spk_status spk_tensor_create(spk_context *ctx, int ndim, const int64_t *shape, spk_tensor **out) {
    return spk_tensor_create_typed(ctx, SPK_DTYPE_F32, ndim, shape, out);
}

void spk_tensor_destroy(spk_tensor *t) {
    if (!t) return;
    spk_context *ctx = t->ctx;
    pthread_mutex_lock(&ctx->lock);
    /* Cached descriptor sets may name the buffer range or the views. */
    spk__forget_range(ctx, t->ref);
    for (int i = 0; i < 2; i++)
        if (t->views[i]) ctx->vk.vkDestroyBufferView(ctx->device, t->views[i], NULL);
    if (!t->slice) spk__free(ctx, &t->alloc);
    for (uint32_t i = 0; i < t->scratch_count; i++) spk__free(ctx, &t->scratch[i]);
    pthread_mutex_unlock(&ctx->lock);
    free(t->scratch);
    free(t);
}

spk_status spk_tensor_wrap_buffer(spk_context *ctx, VkBuffer buffer, VkDeviceSize offset, int ndim,
                                  const int64_t *shape, spk_tensor **out) {
    if (!out) return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "spk_tensor_wrap_buffer: out is NULL");
    *out = NULL;
    if (!ctx) return SPK_ERROR_INVALID_ARGUMENT;
    if (!buffer) return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "spk_tensor_wrap_buffer: buffer is VK_NULL_HANDLE");
    uint64_t count;
    spk_status status = spk__shape_count(ctx, SPK_DTYPE_F32, ndim, shape, &count);
    if (status != SPK_OK) return status;
    const VkPhysicalDeviceLimits *l = &ctx->caps.props.limits;
    if (offset % l->minStorageBufferOffsetAlignment != 0)
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT,
                         "buffer offset %llu is not a multiple of minStorageBufferOffsetAlignment (%llu)",
                         (unsigned long long)offset, (unsigned long long)l->minStorageBufferOffsetAlignment);
    /* Vulkan cannot report a buffer's size; its memory requirements are at least that large, so a
     * shape past them certainly does not fit. */
    VkMemoryRequirements req;
    ctx->vk.vkGetBufferMemoryRequirements(ctx->device, buffer, &req);
    uint64_t bytes = count * sizeof(float);
    if (offset > req.size || bytes > req.size - offset)
        return spk__fail(ctx, SPK_ERROR_SHAPE, "%llu bytes from offset %llu do not fit the buffer (%llu bytes)",
                         (unsigned long long)bytes, (unsigned long long)offset, (unsigned long long)req.size);
    spk_tensor *t = spk__calloc(1, sizeof *t);
    if (!t) return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    t->ctx = ctx;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->count = (int64_t)count;
    t->wrapped = true;
    t->ref = (spk__buffer_ref){buffer, offset, bytes}; /* empty tensors are never bound */
    *out = t;
    return SPK_OK;
}

int spk_tensor_ndim(const spk_tensor *t) { return t ? t->ndim : 0; }
const int64_t *spk_tensor_shape(const spk_tensor *t) { return t ? t->shape : NULL; }
int64_t spk_tensor_count(const spk_tensor *t) { return t ? t->count : 0; }
spk_dtype spk_tensor_dtype(const spk_tensor *t) { return t ? t->dtype : SPK_DTYPE_F32; }

/* Moves the tensor's elements between host memory (of dtype `host_type`) and the device,
 * converting between the two types; `to_device` picks the direction. Mapped (UMA) tensors are
 * converted in place; others go through the staging buffer in chunks. */
static spk_status spk__transfer(spk_tensor *t, void *host, spk_dtype host_type, bool to_device) {
    spk_context *ctx = t->ctx;
    size_t hs = spk_dtype_size(host_type), ds = spk_dtype_size(t->dtype);
    if (t->alloc.block && t->alloc.block->mapped && !ctx->force_staging) {
        unsigned char *dev = (unsigned char *)t->alloc.block->mapped + t->alloc.offset;
        if (to_device) return spk_convert(host, host_type, dev, t->dtype, (size_t)t->count);
        return spk_convert(dev, t->dtype, host, host_type, (size_t)t->count);
    }
    const VkDeviceSize chunk_max = ctx->force_staging ? 4096 : (VkDeviceSize)16 << 20;
    VkDeviceSize bytes = (VkDeviceSize)t->count * ds;
    spk_status status = spk__reserve(ctx, SPK__MEMORY_STAGING, bytes < chunk_max ? bytes : chunk_max, &ctx->staging);
    for (VkDeviceSize done = 0; status == SPK_OK && done < (VkDeviceSize)t->count;) {
        VkDeviceSize n = (VkDeviceSize)t->count - done, room = ctx->staging.size / ds;
        if (n > room) n = room;
        unsigned char *staging = (unsigned char *)ctx->staging.block->mapped + ctx->staging.offset;
        unsigned char *h = (unsigned char *)host + done * hs;
        spk__buffer_ref stage = {ctx->staging.block->buffer, ctx->staging.offset, n * ds};
        spk__buffer_ref dev = {t->ref.buffer, t->ref.offset + done * ds, n * ds};
        if (to_device) spk_convert(h, host_type, staging, t->dtype, n);
        status = spk__begin(ctx);
        if (status == SPK_OK) status = to_device ? spk__copy(ctx, stage, dev) : spk__copy(ctx, dev, stage);
        if (status == SPK_OK) status = spk__submit_and_wait(ctx);
        if (status == SPK_OK && !to_device) spk_convert(staging, t->dtype, h, host_type, n);
        done += n;
    }
    return status;
}

/* `count` elements of `host_type` against the tensor's (a mismatch only comes from the float calls:
 * the raw ones check their byte count first). */
static spk_status spk__transfer_checked(spk_tensor *t, void *host, int64_t count, spk_dtype host_type,
                                        bool to_device) {
    if (!t) return SPK_ERROR_INVALID_ARGUMENT;
    spk_context *ctx = t->ctx;
    if (count != t->count)
        return spk__fail(ctx, SPK_ERROR_SHAPE, "%s of %lld floats for a tensor of %lld elements",
                         to_device ? "upload" : "download", (long long)count, (long long)t->count);
    if (count == 0) return SPK_OK;
    if (!host) return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "host data pointer is NULL");
    spk_status alive = spk__check_alive(ctx);
    if (alive != SPK_OK) return alive;
    pthread_mutex_lock(&ctx->lock);
    spk_status status = spk__transfer(t, host, host_type, to_device);
    pthread_mutex_unlock(&ctx->lock);
    return status;
}

spk_status spk_tensor_upload(spk_tensor *t, const float *data, int64_t count) {
    return spk__transfer_checked(t, (void *)(uintptr_t)data, count, SPK_DTYPE_F32, true);
}

spk_status spk_tensor_download(const spk_tensor *t, float *data, int64_t count) {
    return spk__transfer_checked((spk_tensor *)(uintptr_t)t, data, count, SPK_DTYPE_F32, false);
}

/* The raw calls: `bytes` of the tensor's own dtype. */
static spk_status spk__transfer_raw(spk_tensor *t, void *host, size_t bytes, bool to_device) {
    if (!t) return SPK_ERROR_INVALID_ARGUMENT;
    size_t size = spk_dtype_size(t->dtype);
    if (bytes != (size_t)t->count * size)
        return spk__fail(t->ctx, SPK_ERROR_SHAPE, "%s of %zu bytes for a tensor of %lld %s elements (%zu bytes)",
                         to_device ? "upload" : "download", bytes, (long long)t->count, spk_dtype_name(t->dtype),
                         (size_t)t->count * size);
    return spk__transfer_checked(t, host, t->count, t->dtype, to_device);
}

spk_status spk_tensor_upload_raw(spk_tensor *t, const void *data, size_t bytes) {
    return spk__transfer_raw(t, (void *)(uintptr_t)data, bytes, true);
}

spk_status spk_tensor_download_raw(const spk_tensor *t, void *data, size_t bytes) {
    return spk__transfer_raw((spk_tensor *)(uintptr_t)t, data, bytes, false);
}

spk_status spk__check_shape(spk_context *ctx, const spk_tensor *t, int ndim, const int64_t *shape, const char *what) {
    if (t->ndim == ndim && memcmp(t->shape, shape, (size_t)ndim * sizeof *shape) == 0) return SPK_OK;
    char expected[160] = "", got[160] = "";
    for (int i = 0; i < ndim; i++)
        snprintf(expected + strlen(expected), sizeof expected - strlen(expected), "%s%lld", i ? ", " : "",
                 (long long)shape[i]);
    for (int i = 0; i < t->ndim; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    return spk__fail(ctx, SPK_ERROR_SHAPE, "%s has shape [%s], expected [%s]", what, got, expected);
}

bool spk__overlap(const spk_tensor *a, const spk_tensor *b) {
    return a->ref.buffer == b->ref.buffer && a->ref.offset < b->ref.offset + b->ref.size &&
           b->ref.offset < a->ref.offset + a->ref.size;
}
