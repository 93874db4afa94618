/* The optimizer step on the device (shaders/optimizer.comp): AdamW and SGD exactly as PyTorch's,
 * with optional global-norm clipping, over every parameter of a model. */
#include "model.h"
#include "fault.h"

#include <math.h>
#include <string.h>

spk_optimizer_desc spk_optimizer_defaults(spk_optimizer_kind kind) {
    spk_optimizer_desc d = {.kind = kind, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    d.weight_decay = kind == SPK_OPTIMIZER_ADAMW ? 0.01f : 0.0f;
    return d;
}

void spk__optimizer_destroy(spk_model *m) {
    spk__train *t = m->train;
    if (!t) return;
    t->step_valid = false; /* the recorded step names the state's buffers */
    if (t->has_moments) {
        spk__weights_destroy(&t->moment1, m->cfg.num_layers);
        spk__weights_destroy(&t->moment2, m->cfg.num_layers);
    }
    spk_tensor_destroy(t->opt_state);
    spk_tensor_destroy(t->opt_partial);
    t->has_moments = false;
    t->opt_state = t->opt_partial = NULL;
}

spk_status spk__optimizer_prepare(spk_model *m) {
    spk__train *t = m->train;
    if (t->has_moments) return SPK_OK;
    spk_context *ctx = m->ctx;
    t->step_valid = false; /* the recorded step names the state's buffers */
    int64_t eight = 8, slots = spk__weights_count(m->cfg.num_layers);
    spk_status s = spk__weights_create(ctx, &m->cfg, SPK_DTYPE_F32, &t->moment1);
    if (s == SPK_OK) {
        s = spk__weights_create(ctx, &m->cfg, SPK_DTYPE_F32, &t->moment2);
        if (s != SPK_OK) spk__weights_destroy(&t->moment1, m->cfg.num_layers);
    }
    if (s != SPK_OK) return s;
    t->has_moments = true;
    s = spk_tensor_create(ctx, 1, &eight, &t->opt_state);
    if (s == SPK_OK) s = spk_tensor_create(ctx, 1, &slots, &t->opt_partial);
    spk_tensor *tensors[2 * 512];
    uint32_t n = s == SPK_OK ? spk__weights_list(&t->moment1, m->cfg.num_layers, tensors) : 0;
    n += s == SPK_OK ? spk__weights_list(&t->moment2, m->cfg.num_layers, tensors + n) : 0;
    if (s == SPK_OK) {
        pthread_mutex_lock(&ctx->lock);
        s = spk__begin(ctx);
        for (uint32_t i = 0; i < n && s == SPK_OK; i++) s = spk__fill_zero(ctx, tensors[i]->ref);
        if (s == SPK_OK) s = spk__fill_zero(ctx, t->opt_state->ref);
        if (s == SPK_OK) s = spk__submit_and_wait(ctx);
        pthread_mutex_unlock(&ctx->lock);
    }
    if (s != SPK_OK) spk__optimizer_destroy(m);
    return s;
}

spk_status spk__optimizer_check(spk_context *ctx, const spk_optimizer_desc *o) {
    const char *why = NULL;
    if (!o) why = "the optimizer description is NULL";
    else if ((unsigned)o->kind > SPK_OPTIMIZER_SGD) why = "unknown optimizer";
    else if (!(o->lr > 0.0f) || isinf(o->lr)) why = "the learning rate must be finite and > 0";
    else if (!(o->weight_decay >= 0.0f) || isinf(o->weight_decay)) why = "weight decay must be finite and >= 0";
    else if (!(o->clip_norm >= 0.0f) || isinf(o->clip_norm)) why = "the clipping norm must be finite and >= 0 (0: off)";
    else if (o->kind == SPK_OPTIMIZER_ADAMW && !(o->beta1 >= 0.0f && o->beta1 < 1.0f && o->beta2 >= 0.0f && o->beta2 < 1.0f))
        why = "AdamW's betas must be in [0, 1)";
    else if (o->kind == SPK_OPTIMIZER_ADAMW && !(o->eps > 0.0f)) why = "AdamW's eps must be > 0";
    return why ? spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "%s", why) : SPK_OK;
}

void spk__optimizer_tuning_defaults(const spk_context *ctx, spk__optimizer_tuning *t) {
    /* On CPU drivers tensors of a multiple of 4 elements read through vec4 texel views. */
    *t = (spk__optimizer_tuning){64, ctx->caps.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU};
}

bool spk__optimizer_tuning_unpack(const spk_context *ctx, const uint32_t p[SPK__TUNE_PARAMS], spk__optimizer_tuning *t) {
    const VkPhysicalDeviceLimits *l = &ctx->caps.props.limits;
    *t = (spk__optimizer_tuning){p[0], p[1] == 1};
    return spk__is_pow2(t->workgroup) && t->workgroup <= l->maxComputeWorkGroupInvocations &&
           t->workgroup <= l->maxComputeWorkGroupSize[0] && p[1] <= 1;
}

spk_status spk__record_optimizer_update(spk_context *ctx, const spk__optimizer_tuning *tuning, const spk_optimizer_desc *o,
                                        spk_tensor *p, const spk_tensor *g, spk_tensor *m, spk_tensor *v,
                                        const spk_tensor *state) {
    spk__optimizer_tuning chosen;
    if (!tuning) {
        spk__tune_problem problem = {SPK__TUNE_OPTIMIZER, o->kind, {(uint64_t)p->count}};
        uint32_t params[SPK__TUNE_PARAMS];
        if (!spk__tuned(ctx, &problem, params) || !spk__optimizer_tuning_unpack(ctx, params, &chosen))
            spk__optimizer_tuning_defaults(ctx, &chosen);
        tuning = &chosen;
    }
    struct {
        uint32_t n, slot, slots;
        float lr, beta1, beta2, eps, weight_decay, max_norm;
    } push = {(uint32_t)p->count, 0, 0, o->lr, o->beta1, o->beta2, o->eps, o->weight_decay, o->clip_norm};
    spk__dispatch_desc u = {
        .bindings = {p->ref, g->ref, m->ref, v->ref, state->ref, state->ref},
        .written_mask = 0x3D, /* every binding the shader declares writable */
        .push = &push,
        .push_size = sizeof push,
    };
    /* With texel reads, the four read through vec4 views, then p, m, v written and the state. */
    const spk_tensor *reads[4] = {p, g, m, v};
    bool texel = tuning->texel && p->count % 4 == 0;
    for (int b = 0; b < 4; b++) u.views[b] = reads[b]->views[1], texel = texel && u.views[b];
    if (texel) {
        u.bindings[4] = p->ref, u.bindings[5] = m->ref, u.bindings[6] = v->ref, u.bindings[7] = state->ref;
        u.written_mask = 0x70;
    } else {
        memset(u.views, 0, sizeof u.views);
    }
    uint32_t spec[3] = {tuning->workgroup, 2, o->kind == SPK_OPTIMIZER_SGD};
    spk_status s = spk__grid(ctx, (p->count + 4 * tuning->workgroup - 1) / (4 * tuning->workgroup), u.groups);
    if (s == SPK_OK) /* 4 elements per invocation */
        s = spk__pipeline_get(ctx, texel ? &spk__shader_optimizer_texel : &spk__shader_optimizer, spec, 3, 0, &u.pipeline);
    if (s == SPK_OK) s = spk__dispatch(ctx, &u);
    return s;
}

spk_status spk__record_optimizer_step(spk_model *m, const spk_optimizer_desc *o) {
    spk_context *ctx = m->ctx;
    spk__train *t = m->train;
    spk_tensor *p[512], *g[512], *m1[512], *m2[512];
    uint32_t n = spk__weights_list(&m->w, m->cfg.num_layers, p);
    spk__weights_list(&t->grad, m->cfg.num_layers, g);
    spk__weights_list(&t->moment1, m->cfg.num_layers, m1);
    spk__weights_list(&t->moment2, m->cfg.num_layers, m2);
    struct {
        uint32_t n, slot, slots;
        float lr, beta1, beta2, eps, weight_decay, max_norm;
    } push = {0, 0, n, o->lr, o->beta1, o->beta2, o->eps, o->weight_decay, o->clip_norm};
    spk__dispatch_desc d = {.push = &push, .push_size = sizeof push, .groups = {1, 1, 1}};
    uint32_t spec[3] = {64, 0, o->kind == SPK_OPTIMIZER_SGD};
    spk_status s = SPK_OK;
    /* Every gradient's sum of squares, then the step count and the clipping coefficient. */
    for (uint32_t i = 0; i < n && s == SPK_OK && o->clip_norm > 0.0f; i++) {
        push.n = (uint32_t)g[i]->count, push.slot = i;
        d.bindings[0] = p[i]->ref, d.bindings[1] = g[i]->ref, d.bindings[2] = m1[i]->ref, d.bindings[3] = m2[i]->ref;
        d.bindings[4] = t->opt_state->ref, d.bindings[5] = t->opt_partial->ref;
        d.written_mask = 0x3D; /* every binding declared writable, though this mode writes the partial only */
        s = spk__pipeline_get(ctx, &spk__shader_optimizer, spec, 3, 0, &d.pipeline);
        if (s == SPK_OK) s = spk__dispatch(ctx, &d);
    }
    spec[1] = 1;
    d.bindings[0] = p[0]->ref, d.bindings[1] = g[0]->ref, d.bindings[2] = m1[0]->ref, d.bindings[3] = m2[0]->ref;
    d.bindings[4] = t->opt_state->ref, d.bindings[5] = t->opt_partial->ref;
    d.written_mask = 0x3D;
    if (s == SPK_OK) s = spk__pipeline_get(ctx, &spk__shader_optimizer, spec, 3, 0, &d.pipeline);
    if (s == SPK_OK) s = spk__dispatch(ctx, &d);
    /* The update, tensor by tensor. */
    for (uint32_t i = 0; i < n && s == SPK_OK; i++)
        s = spk__record_optimizer_update(ctx, NULL, o, p[i], g[i], m1[i], m2[i], t->opt_state);
    return s;
}


spk_status spk_model_get_step(spk_model *m, int64_t *step) {
    if (!m || !step) return SPK_ERROR_INVALID_ARGUMENT;
    *step = m->train ? (int64_t)m->train->steps : 0;
    return SPK_OK;
}
