/* Data-parallel training steps (spk_model_set_data_parallel): the caller's reduction of the
 * gradients between the backward and the optimizer. The gradients lie in one buffer in the order
 * the backward finishes them (model.c's spk__weights_create_flat), so a bucket is a range of it.
 * A step records as segments, one per bucket, each ending where the backward has finished its
 * bucket and each submitted with a fence of its own: while the device runs the later segments,
 * the host hands the finished buckets to the caller's reduction. Then the tail: the reduced
 * gradients back where they are not host-visible, and the optimizer. */
#include "model.h"
#include "fault.h"

spk_status spk_model_set_data_parallel(spk_model *m, const spk_data_parallel *dp) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    spk_data_parallel none = {0};
    if (!dp) dp = &none;
    if (dp->global_batch < 0 || dp->first_sample < 0 || (dp->global_batch && dp->first_sample >= dp->global_batch))
        return spk__fail(m->ctx, SPK_ERROR_INVALID_ARGUMENT, "data-parallel: first sample %lld outside a global batch of %lld",
                         (long long)dp->first_sample, (long long)dp->global_batch);
    if (dp->global_batch && !dp->reduce)
        return spk__fail(m->ctx, SPK_ERROR_INVALID_ARGUMENT, "data-parallel: the reduce callback is NULL");
    m->dp = *dp; /* the next step records for it: its key holds the settings */
    return SPK_OK;
}

void spk__dp_destroy(spk_model *m) {
    spk__train *t = m->train;
    spk_context *ctx = m->ctx;
    pthread_mutex_lock(&ctx->lock);
    for (uint32_t i = 0; i < SPK__MAX_BUCKETS; i++) {
        if (t->segments[i].cmd) spk__recording_destroy(ctx, &t->segments[i]);
        if (t->fences[i]) ctx->vk.vkDestroyFence(ctx->device, t->fences[i], NULL);
        t->fences[i] = VK_NULL_HANDLE;
    }
    if (t->step_tail.cmd) spk__recording_destroy(ctx, &t->step_tail);
    if (t->grad_staging.block) spk__free(ctx, &t->grad_staging);
    pthread_mutex_unlock(&ctx->lock);
}

/* The range of grad_all (in floats) that a set of tensors covers. */
static void spk__grad_range(const spk__train *t, spk_tensor *const *tensors, uint32_t n, uint64_t *lo, uint64_t *hi) {
    *lo = UINT64_MAX, *hi = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!tensors[i]) continue;
        uint64_t at = (tensors[i]->ref.offset - t->grad_all->ref.offset) / sizeof(float);
        if (at < *lo) *lo = at;
        if (at + (uint64_t)tensors[i]->count > *hi) *hi = at + (uint64_t)tensors[i]->count;
    }
}

spk_status spk__dp_plan(spk_model *m) {
    spk__train *t = m->train;
    /* Where the gradients are not host-visible, the buckets go through a staging copy. */
    spk_status s = SPK_OK;
    if ((!t->grad_all->alloc.block->mapped || m->ctx->force_staging) && !t->grad_staging.block)
        s = spk__allocate(m->ctx, SPK__MEMORY_STAGING, t->grad_all->ref.size, &t->grad_staging);
    int layers = m->cfg.num_layers;
    uint64_t cap = m->dp.bucket_bytes / sizeof(float), begin = 0, total = (uint64_t)t->grad_all->count;
    t->buckets = 0, t->recorded_segments = 0;
    for (int l = layers - 1; l >= 0; l--) {
        const spk__layer *g = &t->grad.layers[l];
        spk_tensor *const all[12] = {g->attn_norm.gamma, g->attn_norm.beta, g->qkv.kernel, g->qkv.bias,
                                     g->out.kernel,      g->out.bias,       g->ffn_norm.gamma, g->ffn_norm.beta,
                                     g->up.kernel,       g->up.bias,        g->down.kernel,   g->down.bias};
        uint64_t lo, hi;
        spk__grad_range(t, all, 12, &lo, &hi);
        /* Layer 0's bucket runs to the end: the input projection's gradients come after it. */
        t->cut_after[l] = cap && l > 0 && hi - begin >= cap;
        if (t->cut_after[l]) t->bucket_end[t->buckets++] = hi, begin = hi;
    }
    t->bucket_end[t->buckets++] = total;
    return s;
}

/* Copies bucket b to the staging buffer where the gradients are not host-visible. */
static spk_status spk__bucket_out(spk_model *m, uint32_t b) {
    spk__train *t = m->train;
    if (!t->grad_staging.block) return SPK_OK;
    VkDeviceSize begin = (b ? t->bucket_end[b - 1] : 0) * sizeof(float), bytes = t->bucket_end[b] * sizeof(float) - begin;
    return spk__copy(m->ctx, (spk__buffer_ref){t->grad_all->ref.buffer, t->grad_all->ref.offset + begin, bytes},
                     (spk__buffer_ref){t->grad_staging.block->buffer, t->grad_staging.offset + begin, bytes});
}

spk_status spk__dp_layer_done(void *user, int layer) {
    spk_model *m = user;
    spk__train *t = m->train;
    spk_context *ctx = m->ctx;
    if (!t->cut_after[layer]) return SPK_OK;
    spk__recording *next = &t->segments[t->recorded_segments];
    spk_status s = spk__bucket_out(m, t->recorded_segments);
    if (s == SPK_OK) s = spk__recording_end(ctx, ctx->rec);
    if (s == SPK_OK && !next->cmd) s = spk__recording_init(ctx, next, 0);
    if (s == SPK_OK) s = spk__recording_begin(ctx, next, true);
    if (s == SPK_OK) s = spk__barrier_all(ctx); /* after the earlier segments, submitted without a wait */
    if (s == SPK_OK) t->recorded_segments++;
    return s;
}

spk_status spk__dp_last_bucket(spk_model *m) {
    spk_status s = spk__bucket_out(m, m->train->recorded_segments);
    return s == SPK_OK ? spk__recording_end(m->ctx, m->ctx->rec) : s;
}

/* Called with the context locked; unlocks it around the caller's reductions. */
spk_status spk__dp_run(spk_model *m, const float *loss_host, float *loss) {
    spk__train *t = m->train;
    spk_context *ctx = m->ctx;
    const spk_data_parallel *dp = &m->dp;
    spk_status s = SPK_OK, r = SPK_OK; /* the library's, the caller's */
    uint32_t submitted = 0, waited = 0;
    for (; submitted < t->buckets && s == SPK_OK; submitted++) {
        VkFence *fence = &t->fences[submitted];
        if (!*fence) {
            VkFenceCreateInfo info = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
            VkResult vr = SPK__VK(VK_ERROR_OUT_OF_HOST_MEMORY, ctx->vk.vkCreateFence(ctx->device, &info, NULL, fence));
            if (vr != VK_SUCCESS) s = spk__fail_vk(ctx, vr, "vkCreateFence"), *fence = VK_NULL_HANDLE;
        }
        if (s == SPK_OK) s = spk__recording_submit_async(ctx, submitted ? &t->segments[submitted - 1] : &t->step, *fence);
        if (s != SPK_OK) break;
    }
    const spk__allocation *host = t->grad_staging.block ? &t->grad_staging : &t->grad_all->alloc;
    float *grads = (float *)((unsigned char *)host->block->mapped + host->offset);
    for (; waited < submitted && s == SPK_OK; waited++) {
        s = spk__fence_wait(ctx, t->fences[waited]);
        uint64_t begin = waited ? t->bucket_end[waited - 1] : 0;
        pthread_mutex_unlock(&ctx->lock);
        if (s == SPK_OK && r == SPK_OK) r = dp->reduce(dp->user, grads + begin, (size_t)(t->bucket_end[waited] - begin));
        pthread_mutex_lock(&ctx->lock);
    }
    if (s != SPK_OK) { /* nothing submitted may still run, and no fence stay signalled */
        ctx->vk.vkQueueWaitIdle(ctx->queue);
        for (uint32_t i = waited; i < submitted; i++) ctx->vk.vkResetFences(ctx->device, 1, &t->fences[i]);
        return s;
    }
    *loss = *loss_host;
    pthread_mutex_unlock(&ctx->lock);
    if (r == SPK_OK) r = dp->reduce(dp->user, loss, 1);
    if (r == SPK_OK && dp->wait) r = dp->wait(dp->user);
    pthread_mutex_lock(&ctx->lock);
    if (r != SPK_OK) return spk__fail(ctx, r, "data-parallel: the reduction failed (%s)", spk_status_string(r));
    return spk__recording_submit(ctx, &t->step_tail);
}
