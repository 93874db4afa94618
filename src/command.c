/* Command recording and submission. Every dispatch and copy goes through here, so this is the one
 * place that knows each buffer range's last access in the current recording and inserts the
 * barriers the recorded work needs, only where a write is involved. */
#include "internal.h"
#include "fault.h"

#include <stdlib.h>
#include <string.h>

#define SPK__POOL_SETS 64

spk_status spk__commands_init(spk_context *ctx) {
    VkCommandPoolCreateInfo pool_info = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
        .queueFamilyIndex = ctx->queue_family,
    };
    VkResult r = SPK__VK(VK_ERROR_OUT_OF_HOST_MEMORY, ctx->vk.vkCreateCommandPool(ctx->device, &pool_info, NULL, &ctx->command_pool));
    if (r != VK_SUCCESS) {
        ctx->command_pool = VK_NULL_HANDLE;
        return spk__fail_vk(ctx, r, "vkCreateCommandPool");
    }
    VkFenceCreateInfo fence_info = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    r = SPK__VK(VK_ERROR_OUT_OF_HOST_MEMORY, ctx->vk.vkCreateFence(ctx->device, &fence_info, NULL, &ctx->fence));
    if (r != VK_SUCCESS) {
        ctx->fence = VK_NULL_HANDLE;
        return spk__fail_vk(ctx, r, "vkCreateFence");
    }
    ctx->rec = &ctx->own;
    return spk__recording_init(ctx, &ctx->own, 0);
}

void spk__commands_destroy(spk_context *ctx) {
    for (uint32_t i = 0; i < ctx->cache_pool_count; i++)
        ctx->vk.vkDestroyDescriptorPool(ctx->device, ctx->cache_pools[i], NULL);
    free(ctx->cache_pools);
    free(ctx->cached_sets);
    for (uint32_t i = 0; i < SPK__APP_RECORDINGS; i++) free(ctx->apps[i].accesses), ctx->apps[i] = (spk__recording){0};
    ctx->cache_pools = NULL, ctx->cached_sets = NULL;
    ctx->cache_pool_count = ctx->cached_set_count = 0;
    spk__recording_destroy(ctx, &ctx->own);
    if (ctx->fence) ctx->vk.vkDestroyFence(ctx->device, ctx->fence, NULL);
    if (ctx->command_pool) ctx->vk.vkDestroyCommandPool(ctx->device, ctx->command_pool, NULL);
}

spk_status spk__recording_init(spk_context *ctx, spk__recording *rec, uint32_t profile_dispatches) {
    *rec = (spk__recording){0};
    VkCommandBufferAllocateInfo cb_info = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = ctx->command_pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = 1,
    };
    VkResult r = SPK__VK(VK_ERROR_OUT_OF_HOST_MEMORY, ctx->vk.vkAllocateCommandBuffers(ctx->device, &cb_info, &rec->cmd));
    if (r != VK_SUCCESS) {
        rec->cmd = VK_NULL_HANDLE;
        return spk__fail_vk(ctx, r, "vkAllocateCommandBuffers");
    }
    if (ctx->caps.timestamps) {
        VkQueryPoolCreateInfo query_info = {
            .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
            .queryType = VK_QUERY_TYPE_TIMESTAMP,
            .queryCount = 2 + 2 * profile_dispatches,
        };
        r = SPK__VK(VK_ERROR_OUT_OF_HOST_MEMORY, ctx->vk.vkCreateQueryPool(ctx->device, &query_info, NULL, &rec->timestamps));
        if (r != VK_SUCCESS) {
            rec->timestamps = VK_NULL_HANDLE;
            return spk__fail_vk(ctx, r, "vkCreateQueryPool");
        }
        rec->timestamp_capacity = query_info.queryCount;
        if (profile_dispatches) {
            rec->profiled_shaders = spk__calloc(profile_dispatches, sizeof *rec->profiled_shaders);
            if (!rec->profiled_shaders) return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
        }
    }
    return SPK_OK;
}

void spk__recording_destroy(spk_context *ctx, spk__recording *rec) {
    for (uint32_t i = 0; i < rec->descriptor_pool_count; i++)
        ctx->vk.vkDestroyDescriptorPool(ctx->device, rec->descriptor_pools[i], NULL);
    free(rec->descriptor_pools);
    free(rec->accesses);
    free(rec->profiled_shaders);
    if (rec->timestamps) ctx->vk.vkDestroyQueryPool(ctx->device, rec->timestamps, NULL);
    if (rec->cmd) ctx->vk.vkFreeCommandBuffers(ctx->device, ctx->command_pool, 1, &rec->cmd);
    *rec = (spk__recording){0};
}

spk_status spk__recording_begin(spk_context *ctx, spk__recording *rec, bool reusable) {
    spk_status alive = spk__check_alive(ctx);
    if (alive != SPK_OK) return alive;
    /* The previous submission has completed (every submit waits), so its descriptor sets can go. */
    for (uint32_t i = 0; i < rec->descriptor_pool_count; i++)
        ctx->vk.vkResetDescriptorPool(ctx->device, rec->descriptor_pools[i], 0);
    rec->access_count = 0;
    rec->dispatch_count = 0;
    rec->timestamp_count = 0;
    ctx->rec = rec;
    VkResult r = ctx->vk.vkResetCommandBuffer(rec->cmd, 0);
    if (r != VK_SUCCESS) return spk__fail_vk(ctx, r, "vkResetCommandBuffer");
    VkCommandBufferBeginInfo begin = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
        .flags = reusable ? 0 : VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
    };
    r = ctx->vk.vkBeginCommandBuffer(rec->cmd, &begin);
    if (r != VK_SUCCESS) return spk__fail_vk(ctx, r, "vkBeginCommandBuffer");
    if (rec->timestamps) {
        ctx->vk.vkCmdResetQueryPool(rec->cmd, rec->timestamps, 0, rec->timestamp_capacity);
        ctx->vk.vkCmdWriteTimestamp(rec->cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, rec->timestamps, 0);
        rec->timestamp_count = 2;
    }
    return SPK_OK;
}

spk_status spk__begin(spk_context *ctx) { return spk__recording_begin(ctx, &ctx->own, false); }

static VkAccessFlags spk__write_access(VkPipelineStageFlags stage) {
    return stage == VK_PIPELINE_STAGE_TRANSFER_BIT ? VK_ACCESS_TRANSFER_WRITE_BIT : VK_ACCESS_SHADER_WRITE_BIT;
}

/* Emits one barrier covering every tracked access when any of `refs` conflicts with them. */
static void spk__barrier_before(spk_context *ctx, const spk__buffer_ref *refs, const bool *writes, uint32_t n) {
    spk__recording *rec = ctx->rec;
    bool conflict = false;
    for (uint32_t i = 0; i < n && !conflict; i++) {
        for (uint32_t j = 0; j < rec->access_count && !conflict; j++) {
            const spk__access *a = &rec->accesses[j];
            conflict = a->ref.buffer == refs[i].buffer && (a->write || writes[i]) &&
                       a->ref.offset < refs[i].offset + refs[i].size &&
                       refs[i].offset < a->ref.offset + a->ref.size;
        }
    }
    if (!conflict) return;
    /* Read-after-write, write-after-read or write-after-write on overlapping bytes: order all
     * earlier work before this command and make its writes visible, to compute and transfer work
     * alike whichever this command is (a buffer a dispatch reads may be copied next). Everything
     * tracked so far is covered, so the tracker starts over. */
    VkPipelineStageFlags src_stage = 0;
    VkAccessFlags src_access = 0;
    for (uint32_t j = 0; j < rec->access_count; j++) {
        const spk__access *a = &rec->accesses[j];
        src_stage |= a->stage;
        if (a->write) src_access |= spk__write_access(a->stage);
    }
    VkMemoryBarrier barrier = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = src_access,
        .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_SHADER_READ_BIT |
                         VK_ACCESS_SHADER_WRITE_BIT,
    };
    ctx->vk.vkCmdPipelineBarrier(rec->cmd, src_stage, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                                 0, 1, &barrier, 0, NULL, 0, NULL);
    rec->access_count = 0;
}

static spk_status spk__track(spk_context *ctx, const spk__buffer_ref *refs, const bool *writes, uint32_t n,
                             VkPipelineStageFlags stage) {
    spk__recording *rec = ctx->rec;
    spk__barrier_before(ctx, refs, writes, n);
    if (!spk__grow((void **)&rec->accesses, &rec->access_capacity, rec->access_count + n, sizeof *rec->accesses))
        return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (uint32_t i = 0; i < n; i++)
        rec->accesses[rec->access_count++] = (spk__access){refs[i], stage, writes[i]};
    return SPK_OK;
}

/* A descriptor pool of SPK__POOL_SETS sets. */
static spk_status spk__create_pool(spk_context *ctx, VkDescriptorPoolCreateFlags flags, VkDescriptorPool *pool) {
    VkDescriptorPoolSize sizes[2] = {{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, SPK__POOL_SETS * SPK__MAX_BINDINGS},
                                     {VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, SPK__POOL_SETS * SPK__MAX_TEXEL_INPUTS}};
    VkDescriptorPoolCreateInfo pool_info = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
        .flags = flags,
        .maxSets = SPK__POOL_SETS,
        .poolSizeCount = 2,
        .pPoolSizes = sizes,
    };
    VkResult r = SPK__VK(VK_ERROR_OUT_OF_HOST_MEMORY, ctx->vk.vkCreateDescriptorPool(ctx->device, &pool_info, NULL, pool));
    return r == VK_SUCCESS ? SPK_OK : spk__fail_vk(ctx, r, "vkCreateDescriptorPool");
}

/* A set of `layout` from the last pool of a list, adding a pool (with `flags`) when that one is
 * full or there is none yet; *from is the pool it came from. */
static spk_status spk__allocate_from_pools(spk_context *ctx, VkDescriptorPool **pools, uint32_t *count,
                                           uint32_t *capacity, VkDescriptorPoolCreateFlags flags,
                                           VkDescriptorSetLayout layout, VkDescriptorSet *set,
                                           VkDescriptorPool *from) {
    for (uint32_t attempt = 0; attempt < 2; attempt++) {
        if (*count > 0) {
            *from = (*pools)[*count - 1];
            VkDescriptorSetAllocateInfo info = {
                .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                .descriptorPool = *from,
                .descriptorSetCount = 1,
                .pSetLayouts = &layout,
            };
            VkResult r = SPK__VK(VK_ERROR_OUT_OF_HOST_MEMORY, ctx->vk.vkAllocateDescriptorSets(ctx->device, &info, set));
            if (r == VK_SUCCESS) return SPK_OK;
            if (r != VK_ERROR_OUT_OF_POOL_MEMORY && r != VK_ERROR_FRAGMENTED_POOL)
                return spk__fail_vk(ctx, r, "vkAllocateDescriptorSets");
        }
        if (!spk__grow((void **)pools, capacity, *count + 1, sizeof **pools))
            return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
        spk_status status = spk__create_pool(ctx, flags, &(*pools)[*count]);
        if (status != SPK_OK) return status;
        (*count)++;
    }
    return spk__fail(ctx, SPK_ERROR_VULKAN, "a fresh descriptor pool could not supply one set");
}

/* A set for the current recording. Its pools are reset, not freed, between recordings, so a long
 * recording's pools are reused by later ones. */
static spk_status spk__allocate_set(spk_context *ctx, VkDescriptorSetLayout layout, VkDescriptorSet *set) {
    spk__recording *rec = ctx->rec;
    VkDescriptorPool from;
    return spk__allocate_from_pools(ctx, &rec->descriptor_pools, &rec->descriptor_pool_count,
                                    &rec->descriptor_pool_capacity, 0, layout, set, &from);
}

/* The cached set of `layout` with exactly these bindings and views, made if new; *fresh says
 * whether it still needs writing. */
static spk_status spk__find_cached_set(spk_context *ctx, VkDescriptorSetLayout layout, uint32_t n,
                                       const spk__buffer_ref *bindings, const VkBufferView *views,
                                       VkDescriptorSet *set, bool *fresh) {
    for (uint32_t i = 0; i < ctx->cached_set_count; i++) {
        const spk__cached_set *c = &ctx->cached_sets[i];
        if (c->layout == layout && c->binding_count == n && memcmp(c->bindings, bindings, n * sizeof *bindings) == 0 &&
            memcmp(c->views, views, sizeof c->views) == 0) {
            *set = c->set;
            *fresh = false;
            return SPK_OK;
        }
    }
    if (!spk__grow((void **)&ctx->cached_sets, &ctx->cached_set_capacity, ctx->cached_set_count + 1,
                   sizeof *ctx->cached_sets))
        return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    VkDescriptorPool pool;
    spk_status status = spk__allocate_from_pools(ctx, &ctx->cache_pools, &ctx->cache_pool_count,
                                                 &ctx->cache_pool_capacity, VK_DESCRIPTOR_POOL_CREATE_FREE_DESCRIPTOR_SET_BIT,
                                                 layout, set, &pool);
    if (status != SPK_OK) return status;
    spk__cached_set *c = &ctx->cached_sets[ctx->cached_set_count++];
    *c = (spk__cached_set){.binding_count = n, .layout = layout, .pool = pool, .set = *set};
    memcpy(c->bindings, bindings, n * sizeof *bindings);
    memcpy(c->views, views, sizeof c->views);
    *fresh = true;
    return SPK_OK;
}

void spk__forget_range(spk_context *ctx, spk__buffer_ref range) {
    for (uint32_t i = 0; i < ctx->cached_set_count;) {
        spk__cached_set *c = &ctx->cached_sets[i];
        bool names = false;
        for (uint32_t b = 0; b < c->binding_count; b++) {
            const spk__buffer_ref *r = &c->bindings[b];
            names = names || (r->buffer == range.buffer && r->offset < range.offset + range.size &&
                              range.offset < r->offset + r->size);
        }
        if (!names) {
            i++;
            continue;
        }
        ctx->vk.vkFreeDescriptorSets(ctx->device, c->pool, 1, &c->set);
        *c = ctx->cached_sets[--ctx->cached_set_count];
    }
}

spk_status spk__record_app_begin(spk_context *ctx, VkCommandBuffer cmd) {
    if (!ctx) return SPK_ERROR_INVALID_ARGUMENT;
    if (!cmd) return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "the command buffer is VK_NULL_HANDLE");
    spk_status alive = spk__check_alive(ctx);
    if (alive != SPK_OK) return alive;
    pthread_mutex_lock(&ctx->lock);
    /* Calls into one command buffer keep tracking each other's accesses (a later op may read
     * what an earlier one wrote); a command buffer not seen before starts clean, the caller's
     * barriers covering what came before. */
    uint32_t slot = 0;
    for (uint32_t i = 0; i < SPK__APP_RECORDINGS; i++) {
        if (ctx->apps[i].cmd == cmd) {
            slot = i;
            break;
        }
        if (ctx->app_last_use[i] < ctx->app_last_use[slot]) slot = i;
    }
    spk__recording *rec = &ctx->apps[slot];
    if (rec->cmd != cmd) rec->access_count = 0;
    rec->cmd = cmd;
    rec->external = true;
    ctx->app_last_use[slot] = ++ctx->app_clock;
    ctx->rec = rec;
    return SPK_OK;
}

void spk__record_app_end(spk_context *ctx) {
    ctx->rec = &ctx->own;
    pthread_mutex_unlock(&ctx->lock);
}

spk_status spk__dispatch(spk_context *ctx, const spk__dispatch_desc *d) {
    const spk__pipeline *p = d->pipeline;
    uint32_t n = p->shader->binding_count;
    bool writes[SPK__MAX_BINDINGS] = {false};
    for (uint32_t i = 0; i < n; i++) writes[i] = (d->written_mask >> i) & 1u;
    spk_status status = spk__track(ctx, d->bindings, writes, n, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT);
    if (status != SPK_OK) return status;

    VkDescriptorSet set;
    bool fresh = true;
    uint32_t texel = p->shader->texel_inputs;
    VkBufferView views[SPK__MAX_TEXEL_INPUTS] = {VK_NULL_HANDLE};
    memcpy(views, d->views, texel * sizeof *views);
    if (ctx->rec->external) status = spk__find_cached_set(ctx, p->set_layout, n, d->bindings, views, &set, &fresh);
    else status = spk__allocate_set(ctx, p->set_layout, &set);
    if (status != SPK_OK) return status;
    VkDescriptorBufferInfo infos[SPK__MAX_BINDINGS];
    VkWriteDescriptorSet write_sets[SPK__MAX_BINDINGS];
    for (uint32_t i = 0; i < n; i++) {
        bool texel_binding = i < texel;
        infos[i] = (VkDescriptorBufferInfo){d->bindings[i].buffer, d->bindings[i].offset, d->bindings[i].size};
        write_sets[i] = (VkWriteDescriptorSet){
            .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
            .dstSet = set,
            .dstBinding = i,
            .descriptorCount = 1,
            .descriptorType = texel_binding ? VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER : VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .pBufferInfo = texel_binding ? NULL : &infos[i],
            .pTexelBufferView = texel_binding ? &views[i] : NULL,
        };
    }
    if (fresh) ctx->vk.vkUpdateDescriptorSets(ctx->device, n, write_sets, 0, NULL);

    spk__recording *rec = ctx->rec;
    VkCommandBuffer cmd = rec->cmd;
    ctx->vk.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p->pipeline);
    ctx->vk.vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p->layout, 0, 1, &set, 0, NULL);
    if (d->push_size)
        ctx->vk.vkCmdPushConstants(cmd, p->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, d->push_size, d->push);
    /* Profiling: timestamps once the previous work is done (after any barrier) and once this
     * dispatch is, so that their difference is the kernel alone. */
    bool profile = rec->timestamp_count + 2 <= rec->timestamp_capacity && rec->timestamp_capacity > 2;
    if (profile) {
        rec->profiled_shaders[(rec->timestamp_count - 2) / 2] = p->shader->name;
        ctx->vk.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, rec->timestamps, rec->timestamp_count++);
    }
    ctx->vk.vkCmdDispatch(cmd, d->groups[0], d->groups[1], d->groups[2]);
    if (profile)
        ctx->vk.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, rec->timestamps, rec->timestamp_count++);
    rec->dispatch_count++;
    return SPK_OK;
}

spk_status spk__copy_regions(spk_context *ctx, spk__buffer_ref src, spk__buffer_ref dst, const VkBufferCopy *regions,
                             uint32_t count) {
    spk__buffer_ref refs[2] = {src, dst};
    bool writes[2] = {false, true};
    spk_status status = spk__track(ctx, refs, writes, 2, VK_PIPELINE_STAGE_TRANSFER_BIT);
    if (status != SPK_OK) return status;
    ctx->vk.vkCmdCopyBuffer(ctx->rec->cmd, src.buffer, dst.buffer, count, regions);
    return SPK_OK;
}

spk_status spk__fill_zero(spk_context *ctx, spk__buffer_ref dst) {
    bool writes[1] = {true};
    spk_status status = spk__track(ctx, &dst, writes, 1, VK_PIPELINE_STAGE_TRANSFER_BIT);
    if (status != SPK_OK) return status;
    /* vkCmdFillBuffer needs a multiple of 4 bytes: float tensors always are. */
    ctx->vk.vkCmdFillBuffer(ctx->rec->cmd, dst.buffer, dst.offset, dst.size, 0);
    return SPK_OK;
}

spk_status spk__copy(spk_context *ctx, spk__buffer_ref src, spk__buffer_ref dst) {
    VkBufferCopy region = {src.offset, dst.offset, src.size < dst.size ? src.size : dst.size};
    return spk__copy_regions(ctx, src, dst, &region, 1);
}

spk_status spk__grid(spk_context *ctx, uint64_t count, uint32_t groups[3]) {
    const uint32_t *max = ctx->caps.props.limits.maxComputeWorkGroupCount;
    uint64_t x = count < max[0] ? count : max[0];
    if (x == 0) x = 1;
    uint64_t y = (count + x - 1) / x;
    if (y > max[1])
        return spk__fail(ctx, SPK_ERROR_TOO_LARGE, "%llu workgroups exceed the device's %u x %u grid",
                         (unsigned long long)count, max[0], max[1]);
    groups[0] = (uint32_t)x;
    groups[1] = (uint32_t)(y ? y : 1);
    groups[2] = 1;
    return SPK_OK;
}

spk_status spk__recording_end(spk_context *ctx, spk__recording *rec) {
    VkCommandBuffer cmd = rec->cmd;
    /* Make the device's writes visible to the host, which reads mapped tensors and staging
     * memory once the fence signals. */
    VkPipelineStageFlags src_stage = 0;
    VkAccessFlags src_access = 0;
    for (uint32_t j = 0; j < rec->access_count; j++) {
        if (!rec->accesses[j].write) continue;
        src_stage |= rec->accesses[j].stage;
        src_access |= spk__write_access(rec->accesses[j].stage);
    }
    if (src_stage) {
        VkMemoryBarrier to_host = {
            .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
            .srcAccessMask = src_access,
            .dstAccessMask = VK_ACCESS_HOST_READ_BIT,
        };
        ctx->vk.vkCmdPipelineBarrier(cmd, src_stage, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &to_host, 0, NULL, 0, NULL);
    }
    rec->access_count = 0;
    if (rec->timestamps)
        ctx->vk.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, rec->timestamps, 1);
    VkResult r = ctx->vk.vkEndCommandBuffer(cmd);
    if (r != VK_SUCCESS) return spk__fail_vk(ctx, r, "vkEndCommandBuffer");
    return SPK_OK;
}

/* Nanoseconds between two raw timestamps, within the queue's valid bits. */
static uint64_t spk__timestamp_ns(const spk_context *ctx, uint64_t from, uint64_t to) {
    uint64_t mask = ctx->caps.timestamp_valid_bits >= 64 ? UINT64_MAX : (1ull << ctx->caps.timestamp_valid_bits) - 1;
    return (uint64_t)((double)((to - from) & mask) * ctx->caps.timestamp_period);
}

spk_status spk__recording_submit_async(spk_context *ctx, spk__recording *rec, VkFence fence) {
    if (!ctx->queue)
        return spk__fail(ctx, SPK_ERROR_UNSUPPORTED,
                         "this context was created without a queue: record with spk_record_* and submit yourself");
    spk_status alive = spk__check_alive(ctx);
    if (alive != SPK_OK) return alive;
    VkSubmitInfo submit = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
        .commandBufferCount = 1,
        .pCommandBuffers = &rec->cmd,
    };
    VkResult r = SPK__VK(VK_ERROR_OUT_OF_DEVICE_MEMORY, ctx->vk.vkQueueSubmit(ctx->queue, 1, &submit, fence));
    return r == VK_SUCCESS ? SPK_OK : spk__fail_vk(ctx, r, "vkQueueSubmit");
}

spk_status spk__fence_wait(spk_context *ctx, VkFence fence) {
    /* A blocking wait: on CPU drivers the host thread shares the cores with the driver's workers,
     * and a spinning waiter would take their time. */
    VkResult r = SPK__VK(VK_ERROR_DEVICE_LOST, ctx->vk.vkWaitForFences(ctx->device, 1, &fence, VK_TRUE, UINT64_MAX));
    if (r != VK_SUCCESS) {
        /* The device is lost (or the wait failed): nothing submitted may still be running when
         * objects are destroyed later, so drain the queue (a lost device answers at once). The
         * fence is not reset: it may still be in use. */
        ctx->vk.vkQueueWaitIdle(ctx->queue);
        return spk__fail_vk(ctx, r, "vkWaitForFences");
    }
    VkResult reset = ctx->vk.vkResetFences(ctx->device, 1, &fence);
    return reset == VK_SUCCESS ? SPK_OK : spk__fail_vk(ctx, reset, "vkResetFences");
}

spk_status spk__barrier_all(spk_context *ctx) {
    VkMemoryBarrier barrier = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_SHADER_READ_BIT |
                         VK_ACCESS_SHADER_WRITE_BIT,
    };
    VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
    ctx->vk.vkCmdPipelineBarrier(ctx->rec->cmd, stages, stages, 0, 1, &barrier, 0, NULL, 0, NULL);
    ctx->rec->access_count = 0;
    return SPK_OK;
}

spk_status spk__recording_submit(spk_context *ctx, spk__recording *rec) {
    spk_status s = spk__recording_submit_async(ctx, rec, ctx->fence);
    if (s == SPK_OK) s = spk__fence_wait(ctx, ctx->fence);
    if (s != SPK_OK) return s;
    VkResult r;
    ctx->last_gpu_time_ns = 0;
    if (rec->timestamps) {
        uint64_t ts[2];
        r = ctx->vk.vkGetQueryPoolResults(ctx->device, rec->timestamps, 0, 2, sizeof ts, ts, sizeof ts[0],
                                          VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
        if (r == VK_SUCCESS) ctx->last_gpu_time_ns = spk__timestamp_ns(ctx, ts[0], ts[1]);
    }
    return SPK_OK;
}

uint32_t spk__recording_dispatch_times(spk_context *ctx, const spk__recording *rec, uint64_t *ns,
                                       const char **shaders, uint32_t max) {
    uint32_t timed = rec->timestamp_count > 2 ? (rec->timestamp_count - 2) / 2 : 0;
    if (timed > max) timed = max;
    for (uint32_t i = 0; i < timed; i++) {
        uint64_t ts[2] = {0, 0};
        VkResult r = ctx->vk.vkGetQueryPoolResults(ctx->device, rec->timestamps, 2 + 2 * i, 2, sizeof ts, ts,
                                                   sizeof ts[0], VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
        ns[i] = r == VK_SUCCESS ? spk__timestamp_ns(ctx, ts[0], ts[1]) : 0;
        if (shaders) shaders[i] = rec->profiled_shaders[i];
    }
    return timed;
}

spk_status spk__submit_and_wait(spk_context *ctx) {
    spk_status status = spk__recording_end(ctx, &ctx->own);
    if (status == SPK_OK) status = spk__recording_submit(ctx, &ctx->own);
    return status;
}

spk_status spk__run_sync(spk_context *ctx, spk_status (*record)(spk_context *, const void *), const void *arg) {
    pthread_mutex_lock(&ctx->lock);
    spk_status status = spk__begin(ctx);
    if (status == SPK_OK) status = record(ctx, arg);
    if (status == SPK_OK) status = spk__submit_and_wait(ctx);
    pthread_mutex_unlock(&ctx->lock);
    return status;
}

spk_status spk__dispatch_map(spk_context *ctx, const spk__shader *shader, const uint32_t *spec, uint32_t spec_count,
                             spk__buffer_ref src, VkBufferView src_view, spk__buffer_ref dst, uint64_t invocations,
                             uint32_t count) {
    spk__dispatch_desc d = {.bindings = {src, dst}, .views = {src_view}, .written_mask = 0x2, .push = &count,
                            .push_size = sizeof count};
    spk_status status = spk__grid(ctx, (invocations + spec[0] - 1) / spec[0], d.groups);
    if (status == SPK_OK) status = spk__pipeline_get(ctx, shader, spec, spec_count, 0, &d.pipeline);
    if (status == SPK_OK) status = spk__dispatch(ctx, &d);
    return status;
}
