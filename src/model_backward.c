/* Training the softpick transformer (SPEC.md section 6): what the training forward keeps, the
 * backward (spk__model_record_backward reads like spk__model_record in model.c, reversed), the
 * gradients that accumulate until zeroed, and spk_model_grad, which records the forward, the loss
 * and the backward into one command buffer. */
#include "model.h"
#include "fault.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention_plan.h"
#include "layer_norm_plan.h"
#include "loss_plan.h"
#include "matmul_plan.h"

static spk_status spk__t2(spk_context *ctx, int64_t rows, int64_t cols, spk_tensor **out) {
    int64_t shape[2] = {rows, cols};
    return spk_tensor_create(ctx, 2, shape, out);
}

/* Where every tensor of the kept activations and the backward's buffers lives (11 per layer and
 * 16 more: at most 456 for the 40 layers a model may train); returns how many. */
static uint32_t spk__acts_slots(const spk_model *m, spk_tensor **slots[512]) {
    spk__train *t = m->train;
    spk__acts *a = &t->acts;
    uint32_t n = 0;
    for (int l = 0; a->layers && l < m->cfg.num_layers; l++) {
        spk__layer_acts *k = &a->layers[l];
        spk_tensor **layer[] = {&k->x, &k->a1, &k->stats1, &k->qkv, &k->r, &k->o, &k->x_mid, &k->a2, &k->stats2, &k->h, &k->g};
        for (size_t i = 0; i < SPK__ARRAY_LEN(layer); i++) slots[n++] = layer[i];
    }
    spk_tensor **rest[] = {&a->x_final, &a->final_in, &a->final_stats, &a->final_normed, &a->pooled, &a->drop_tmp,
                           &t->dx, &t->da, &t->d_o, &t->dqkv, &t->dh, &t->d_final, &t->d_scratch, &t->dy,
                           &t->target, &t->row_loss};
    for (size_t i = 0; i < SPK__ARRAY_LEN(rest); i++) slots[n++] = rest[i];
    return n;
}

static void spk__acts_destroy(spk_model *m) {
    spk__train *t = m->train;
    spk_tensor **slots[512];
    uint32_t n = spk__acts_slots(m, slots);
    for (uint32_t i = 0; i < n; i++) spk_tensor_destroy(*slots[i]);
    free(t->acts.layers);
    t->acts = (spk__acts){0};
    t->dx = t->da = t->d_o = t->dqkv = t->dh = t->d_final = t->d_scratch = t->dy = t->target = t->row_loss = NULL;
    t->step_valid = false;
    if (t->staging.block) {
        pthread_mutex_lock(&m->ctx->lock);
        spk__free(m->ctx, &t->staging);
        pthread_mutex_unlock(&m->ctx->lock);
    }
}

static uint64_t spk__train_bytes(const spk_model *m) {
    spk_tensor **slots[512], *weights[512];
    uint64_t bytes = (m->train->loss ? m->train->loss->ref.size : 0) + (m->train->grad_all ? m->train->grad_all->ref.size : 0);
    uint32_t n = spk__acts_slots(m, slots);
    for (uint32_t i = 0; i < n; i++)
        if (*slots[i]) bytes += (*slots[i])->ref.size;
    const spk__weights *sets[2] = {m->train->has_moments ? &m->train->moment1 : NULL,
                                   m->train->has_moments ? &m->train->moment2 : NULL};
    for (int s = 0; s < 2; s++) {
        n = sets[s] ? spk__weights_list(sets[s], m->cfg.num_layers, weights) : 0;
        for (uint32_t i = 0; i < n; i++) bytes += weights[i]->ref.size;
    }
    return bytes;
}

/* The kept activations and the backward's buffers for `rows` positions. Device memory per
 * position: (16 hidden + 4 + heads) floats per layer, plus about 12 hidden + 2 outputs. */
static spk_status spk__acts_create(spk_model *m, int64_t rows) {
    spk_context *ctx = m->ctx;
    spk__train *t = m->train;
    const spk_model_config *c = &m->cfg;
    int64_t h = c->hidden_size, outs = spk_model_output_size(c);
    spk__acts_destroy(m);
    spk__acts *a = &t->acts;
    a->layers = spk__calloc((size_t)c->num_layers, sizeof *a->layers);
    spk_status s = a->layers ? SPK_OK : spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (int l = 0; l < c->num_layers && s == SPK_OK; l++) {
        spk__layer_acts *k = &a->layers[l];
        s = spk__t2(ctx, rows, h, &k->x);
        if (s == SPK_OK) s = spk__t2(ctx, rows, h, &k->a1);
        if (s == SPK_OK) s = spk__t2(ctx, rows, 2, &k->stats1);
        if (s == SPK_OK) s = spk__t2(ctx, rows, 3 * h, &k->qkv);
        if (s == SPK_OK) s = spk__t2(ctx, rows, c->num_heads, &k->r);
        if (s == SPK_OK) s = spk__t2(ctx, rows, h, &k->o);
        if (s == SPK_OK) s = spk__t2(ctx, rows, h, &k->x_mid);
        if (s == SPK_OK) s = spk__t2(ctx, rows, h, &k->a2);
        if (s == SPK_OK) s = spk__t2(ctx, rows, 2, &k->stats2);
        if (s == SPK_OK) s = spk__t2(ctx, rows, 4 * h, &k->h);
        if (s == SPK_OK) s = spk__t2(ctx, rows, 4 * h, &k->g);
    }
    if (s == SPK_OK) s = spk__t2(ctx, rows, h, &a->x_final);
    if (s == SPK_OK) s = spk__t2(ctx, rows, h, &a->final_in);
    if (s == SPK_OK) s = spk__t2(ctx, rows, 2, &a->final_stats);
    if (s == SPK_OK) s = spk__t2(ctx, rows, h, &a->final_normed);
    if (s == SPK_OK) s = spk__t2(ctx, rows, h, &a->pooled);
    if (s == SPK_OK) s = spk__t2(ctx, rows, h, &a->drop_tmp);
    if (s == SPK_OK) s = spk__t2(ctx, rows, h, &t->dx);
    if (s == SPK_OK) s = spk__t2(ctx, rows, h, &t->da);
    if (s == SPK_OK) s = spk__t2(ctx, rows, h, &t->d_o);
    if (s == SPK_OK) s = spk__t2(ctx, rows, 3 * h, &t->dqkv);
    if (s == SPK_OK) s = spk__t2(ctx, rows, 4 * h, &t->dh);
    if (s == SPK_OK) s = spk__t2(ctx, rows, h, &t->d_final);
    if (s == SPK_OK) s = spk__t2(ctx, rows, c->num_heads, &t->d_scratch);
    if (s == SPK_OK) s = spk__t2(ctx, rows, outs, &t->dy);
    if (s == SPK_OK) s = spk__t2(ctx, rows, outs, &t->target);
    if (s == SPK_OK) s = spk__t2(ctx, rows, 1, &t->row_loss);
    /* Where tensors are not host-visible, the targets and the loss go through staging copies
     * recorded into the step itself (the input through the model's). */
    bool mapped = s == SPK_OK && t->target->alloc.block->mapped && t->loss->alloc.block->mapped && !ctx->force_staging;
    if (s == SPK_OK && !mapped) {
        pthread_mutex_lock(&ctx->lock);
        s = spk__allocate(ctx, SPK__MEMORY_STAGING, (VkDeviceSize)(rows * outs + 1) * sizeof(float), &t->staging);
        pthread_mutex_unlock(&ctx->lock);
    }
    if (s == SPK_OK) a->rows = rows;
    else spk__acts_destroy(m);
    return s;
}

static void spk__train_destroy(spk_model *m) {
    spk__train *t = m->train;
    if (!t) return;
    spk__acts_destroy(m);
    spk__optimizer_destroy(m);
    spk__dp_destroy(m);
    if (t->step.cmd) {
        pthread_mutex_lock(&m->ctx->lock);
        spk__recording_destroy(m->ctx, &t->step);
        pthread_mutex_unlock(&m->ctx->lock);
    }
    spk__weights_destroy(&t->grad, m->cfg.num_layers);
    spk_tensor_destroy(t->grad_all);
    spk_tensor_destroy(t->loss);
    free(t);
    m->train = NULL;
    m->training = NULL;
}

static void spk__train_forget_either(spk_model *m, bool forward_only) {
    if (forward_only) spk__train_forget_forward(m);
    else spk__train_forget(m);
}

/* The model's calls into its training state (spk__model_training). */
static const spk__model_training spk__training_hooks = {spk__train_destroy, spk__train_bytes, spk__train_forget_either};

/* Records zeros into every gradient. */
static spk_status spk__record_zero_grad(spk_model *m) { return spk__fill_zero(m->ctx, m->train->grad_all->ref); }

/* The training state, made (with zeroed gradients) on first use, and activations for `rows`. */
spk_status spk__train_prepare(spk_model *m, int64_t rows) {
    spk_context *ctx = m->ctx;
    spk_status s = SPK_OK;
    if (m->cfg.weights_dtype != SPK_DTYPE_F32 || m->cfg.activation_dtype != SPK_DTYPE_F32)
        return spk__fail(ctx, SPK_ERROR_UNSUPPORTED, "training keeps float32 weights and activations; this model's are "
                         "%s and %s (train in f32, then load the weights with 16-bit types for inference)",
                         spk_dtype_name(m->cfg.weights_dtype), spk_dtype_name(m->cfg.activation_dtype));
    if (!m->train) {
        if (spk__weights_count(m->cfg.num_layers) > 512)
            return spk__fail(ctx, SPK_ERROR_TOO_LARGE, "too many layers to train (at most 40)");
        m->train = spk__calloc(1, sizeof *m->train);
        if (!m->train) return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
        m->training = &spk__training_hooks;
        s = spk__weights_create_flat(ctx, &m->cfg, &m->train->grad, &m->train->grad_all);
        int64_t one = 1;
        if (s == SPK_OK) s = spk_tensor_create(ctx, 1, &one, &m->train->loss);
        if (s == SPK_OK) {
            pthread_mutex_lock(&ctx->lock);
            s = spk__begin(ctx);
            if (s == SPK_OK) s = spk__record_zero_grad(m);
            if (s == SPK_OK) s = spk__submit_and_wait(ctx);
            pthread_mutex_unlock(&ctx->lock);
        }
        if (s != SPK_OK) {
            spk__train_destroy(m);
            return s;
        }
    }
    if (rows > m->train->acts.rows) s = spk__acts_create(m, rows);
    if (s == SPK_OK && rows > m->rows) s = spk__activations_create(m, rows);
    return s;
}

/* ---- the backward ------------------------------------------------------------------------- */

/* The backward of y = x W + b: dW += x^T dy, db += column sums of dy, and dx = dy W^T (times
 * `gelu_grad`, the gelu' that the training forward kept for the GELU that followed this layer's
 * input's own dense) unless dx is NULL. */
static spk_status spk__dense_backward(spk_context *ctx, const spk_tensor *x, const spk__dense_params *p,
                                      spk__dense_params *grad, const spk_tensor *dy, const spk_tensor *gelu_grad,
                                      spk_tensor *dx) {
    spk_status s = spk__record_column_sums(ctx, dy, NULL, NULL, true, grad->bias, NULL);
    if (s == SPK_OK) s = spk__record_matmul_db(ctx, NULL, x, dy, true, grad->kernel);
    if (s == SPK_OK && dx) s = spk__record_matmul_da(ctx, NULL, dy, p->kernel, gelu_grad, false, dx);
    return s;
}

/* The backward of y = layer_norm(x): dx (+)= ..., dgamma += ..., dbeta += ...; with `drop`, the
 * new dx also goes through that dropout's mask into `masked` in the same pass (the backward of
 * the dropout whose output the forward added to x, which the next step back needs). */
static spk_status spk__norm_backward(spk_context *ctx, const spk_tensor *x, const spk__norm_params *p,
                                     spk__norm_params *grad, const spk_tensor *stats, const spk_tensor *dy,
                                     bool accumulate_dx, spk_tensor *dx, const spk__dropout_mask *drop,
                                     spk_tensor *masked) {
    /* dgamma and dbeta always accumulate; dx as asked: one call each way. */
    spk_layer_norm_grads g = {.dgamma = grad->gamma, .dbeta = grad->beta, .accumulate = true};
    spk_status s = spk__record_layer_norm_backward(ctx, NULL, x, p->gamma, stats, dy, &g, NULL, NULL);
    g = (spk_layer_norm_grads){.dx = dx, .accumulate = accumulate_dx};
    if (s == SPK_OK) s = spk__record_layer_norm_backward(ctx, NULL, x, p->gamma, stats, dy, &g, drop, masked);
    return s;
}

/* The dropout mask of `site` in `slot`, or NULL without dropout or for a site before the first. */
static const spk__dropout_mask *spk__mask(const spk__acts *k, int site, spk__dropout_mask *slot) {
    if (k->dropout <= 0.0f || site < 0) return NULL;
    *slot = spk__dropout_mask_of(k, (uint32_t)site);
    return slot;
}

/* The backward of attention over the columns of qkv, into the same columns of dqkv. */
static spk_status spk__attention_backward(spk_context *ctx, const spk_model *m, const spk__layer_view *v,
                                          const spk_tensor *d_o, spk_tensor *dqkv, const spk_tensor *d_scratch,
                                          uint32_t batch, uint32_t seq) {
    uint32_t h = (uint32_t)m->cfg.hidden_size, heads = (uint32_t)m->cfg.num_heads;
    spk__attention_backward_args args = {
        .q = {v->qkv.ref, 3 * h, 0, v->qkv.views, SPK_DTYPE_F32},
        .k = {v->qkv.ref, 3 * h, h, v->qkv.views, SPK_DTYPE_F32},
        .v = {v->qkv.ref, 3 * h, 2 * h, v->qkv.views, SPK_DTYPE_F32},
        .o = {v->o.ref, h, 0, NULL, SPK_DTYPE_F32},
        .dout = {d_o->ref, h, 0, d_o->views, SPK_DTYPE_F32},
        .dq = {dqkv->ref, 3 * h, 0, NULL, SPK_DTYPE_F32},
        .dk = {dqkv->ref, 3 * h, h, NULL, SPK_DTYPE_F32},
        .dv = {dqkv->ref, 3 * h, 2 * h, NULL, SPK_DTYPE_F32},
        .r = v->r.ref,
        .d = {d_scratch->ref.buffer, d_scratch->ref.offset, v->r.ref.size},
        .batch = batch, .seq = seq, .heads = heads, .head_dim = h / heads, .causal = true, .norm = m->cfg.attention,
    };
    return spk__record_attention_backward(ctx, &args, NULL);
}

/* Records the backward of the last training forward on input [batch, seq, embed] from dL/dy
 * (the output's shape), accumulating every parameter's gradient: the forward's steps in reverse. */
static spk_status spk__model_record_backward(spk_model *m, const spk_tensor *input, int64_t batch, int64_t seq,
                                             const spk_tensor *dy, spk_status (*layer_done)(void *, int)) {
    spk_context *ctx = m->ctx;
    const spk_model_config *c = &m->cfg;
    spk__train *t = m->train;
    const spk__acts *k = &t->acts;
    spk__weights *g = &t->grad;
    int64_t h = c->hidden_size, rows = c->output_mode == SPK_OUTPUT_ALL ? batch * seq : batch;
    int64_t rows_h[3] = {batch, seq, h}, rows_3h[3] = {batch, seq, 3 * h}, rows_4h[3] = {batch, seq, 4 * h};
    int64_t out_h[2] = {rows, h}, all_h[2] = {batch * seq, h}, out_2[2] = {rows, 2}, all_2[2] = {batch * seq, 2};
    spk_tensor dx = spk__view(t->dx, 3, rows_h), da = spk__view(t->da, 3, rows_h), d_o = spk__view(t->d_o, 3, rows_h);
    spk_tensor dqkv = spk__view(t->dqkv, 3, rows_3h), dh = spk__view(t->dh, 3, rows_4h);
    spk_tensor x_final = spk__view(k->x_final, 3, rows_h), d_drop = spk__view(k->drop_tmp, 3, rows_h);
    bool mean = c->output_mode == SPK_OUTPUT_MEAN, last = c->output_mode == SPK_OUTPUT_LAST;
    spk_status s = SPK_OK;
    /* Dropout's masks, site 2 l + 0 (attention) and + 1 (feed-forward) of layer l; `masked`: d_drop
     * holds the next site's masked gradient already. */
    bool masks = k->dropout > 0.0f, masked = false;
    spk__dropout_mask mask;

    /* output = dense(head_in, output_head) */
    spk_tensor d_final = spk__view(t->d_final, 2, out_h), normed = spk__view(k->final_normed, 2, mean ? all_h : out_h);
    spk_tensor pooled = spk__view(k->pooled, 2, out_h), d_head_in = d_final;
    if (m->w.head.kernel) {
        s = spk__dense_backward(ctx, mean ? &pooled : &normed, &m->w.head, &g->head, dy, NULL, &d_final);
    } else {
        d_head_in = spk__view(dy, 2, out_h);
    }
    /* pooled = the mean over positions: d normed = w^T d pooled, with w = 1 / seq */
    spk_tensor d_normed = d_head_in;
    if (s == SPK_OK && mean) {
        int64_t w_shape[3] = {batch, 1, seq}, one_h[3] = {batch, 1, h};
        spk_tensor w = spk__view(m->mean_weights, 3, w_shape), dp = spk__view(&d_head_in, 3, one_h);
        spk_tensor dn = spk__view(t->da, 3, rows_h);
        s = spk__record_matmul_db(ctx, NULL, &w, &dp, false, &dn);
        d_normed = spk__view(t->da, 2, all_h);
    }
    /* normed = layer_norm(x at the last position, every position) */
    if (s == SPK_OK && last) {
        spk_tensor in = spk__view(k->final_in, 2, out_h), st = spk__view(k->final_stats, 2, out_2);
        spk_tensor d_last = spk__view(t->da, 2, out_h);
        s = spk__norm_backward(ctx, &in, &m->w.final_norm, &g->final_norm, &st, &d_normed, false, &d_last, NULL, NULL);
        /* Scatter the last positions' gradient into dx; the other positions get none. */
        if (s == SPK_OK) s = spk__fill_zero(ctx, dx.ref);
        VkBufferCopy *regions = s == SPK_OK ? spk__malloc((size_t)batch * sizeof *regions) : NULL;
        if (s == SPK_OK && !regions) s = spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
        VkDeviceSize row_bytes = (VkDeviceSize)h * sizeof(float);
        for (int64_t i = 0; s == SPK_OK && i < batch; i++)
            regions[i] = (VkBufferCopy){d_last.ref.offset + (VkDeviceSize)i * row_bytes,
                                        dx.ref.offset + (VkDeviceSize)(i * seq + seq - 1) * row_bytes, row_bytes};
        if (s == SPK_OK) s = spk__copy_regions(ctx, d_last.ref, dx.ref, regions, (uint32_t)batch);
        free(regions);
    } else if (s == SPK_OK) {
        spk_tensor in = spk__view(&x_final, 2, all_h), st = spk__view(k->final_stats, 2, all_2);
        spk_tensor dx2 = spk__view(t->dx, 2, all_h), d_drop2 = spk__view(k->drop_tmp, 2, all_h);
        s = spk__norm_backward(ctx, &in, &m->w.final_norm, &g->final_norm, &st, &d_normed, false, &dx2,
                               spk__mask(k, 2 * c->num_layers - 1, &mask), &d_drop2);
        masked = masks;
    }

    for (int l = c->num_layers - 1; l >= 0 && s == SPK_OK; l--) {
        const spk__layer *b = &m->w.layers[l];
        spk__layer *gb = &g->layers[l];
        spk__layer_view v;
        spk__layer_views(&k->layers[l], batch, seq, h, c->num_heads, &v);
        const spk_tensor *x_in = l == 0 && !m->w.input_projection.kernel ? input : &v.x;
        /* x = x_mid + dropout(dense(gelu(dense(a2, up)), down)): dx flows to x_mid unchanged, and
         * through the mask (which the norm backward that made dx applied, where there was one) */
        if (masks && !masked) s = spk__record_dropout(ctx, k, 2 * (uint32_t)l + 1, true, NULL, &dx, &d_drop);
        const spk_tensor *d_block = masks ? &d_drop : &dx;
        if (s == SPK_OK) s = spk__dense_backward(ctx, &v.g, &b->down, &gb->down, d_block, &v.h, &dh);
        if (s == SPK_OK) s = spk__dense_backward(ctx, &v.a2, &b->up, &gb->up, &dh, NULL, &da);
        /* a2 = layer_norm(x_mid) */
        if (s == SPK_OK)
            s = spk__norm_backward(ctx, &v.x_mid, &b->ffn_norm, &gb->ffn_norm, &v.stats2, &da, true, &dx,
                                   spk__mask(k, 2 * l, &mask), &d_drop);
        /* x_mid = x + dropout(dense(o, out_proj)): dx flows to x unchanged */
        if (s == SPK_OK) s = spk__dense_backward(ctx, &v.o, &b->out, &gb->out, d_block, NULL, &d_o);
        /* o = softpick attention of q, k, v */
        if (s == SPK_OK)
            s = spk__attention_backward(ctx, m, &v, &d_o, &dqkv, t->d_scratch, (uint32_t)batch, (uint32_t)seq);
        /* q, k, v = dense(a1) */
        if (s == SPK_OK) s = spk__dense_backward(ctx, &v.a1, &b->qkv, &gb->qkv, &dqkv, NULL, &da);
        /* a1 = layer_norm(x) */
        if (s == SPK_OK)
            s = spk__norm_backward(ctx, x_in, &b->attn_norm, &gb->attn_norm, &v.stats1, &da, true, &dx,
                                   spk__mask(k, 2 * l - 1, &mask), &d_drop);
        masked = masks;
        if (s == SPK_OK && layer_done) s = layer_done(m, l); /* layer l's gradients are final */
    }
    /* x = dense(input, input_projection) */
    if (s == SPK_OK && m->w.input_projection.kernel)
        s = spk__dense_backward(ctx, input, &m->w.input_projection, &g->input_projection, &dx, NULL, NULL);
    return s;
}

/* ---- the public calls --------------------------------------------------------------------- */

spk_status spk_model_zero_grad(spk_model *m) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    spk_status s = spk__train_prepare(m, 1);
    if (s != SPK_OK) return s;
    pthread_mutex_lock(&m->ctx->lock);
    s = spk__begin(m->ctx);
    if (s == SPK_OK) s = spk__record_zero_grad(m);
    if (s == SPK_OK) s = spk__submit_and_wait(m->ctx);
    pthread_mutex_unlock(&m->ctx->lock);
    return s;
}

/* Checks targets on the host: mse floats of the output's count, or class indices in [0, classes). */
static spk_status spk__check_targets(spk_model *m, spk_loss_kind kind, const float *target, int64_t rows,
                                     int64_t classes) {
    if (!target) return spk__fail(m->ctx, SPK_ERROR_INVALID_ARGUMENT, "the targets are NULL");
    if (kind == SPK_LOSS_MSE) {
        for (int64_t i = 0; i < rows * classes; i++)
            if (isnan(target[i])) return spk__fail(m->ctx, SPK_ERROR_INVALID_ARGUMENT, "target %lld is NaN", (long long)i);
        return SPK_OK;
    }
    if (kind != SPK_LOSS_CROSS_ENTROPY) return spk__fail(m->ctx, SPK_ERROR_INVALID_ARGUMENT, "unknown loss %d", (int)kind);
    for (int64_t i = 0; i < rows; i++)
        if (!(target[i] >= 0 && target[i] < (float)classes && target[i] == floorf(target[i])))
            return spk__fail(m->ctx, SPK_ERROR_INVALID_ARGUMENT, "class index %g at row %lld is outside [0, %lld)",
                             (double)target[i], (long long)i, (long long)classes);
    return SPK_OK;
}

void spk__train_forget(spk_model *m) {
    if (m->train) m->train->step_valid = false;
}

void spk__train_forget_forward(spk_model *m) {
    if (m->train) m->train->fwd_valid = false;
}

static bool spk__step_key_equal(const spk__step_key *a, const spk__step_key *b) {
    const spk_optimizer_desc *p = &a->opt, *q = &b->opt;
    bool same_opt = !a->has_opt || (p->kind == q->kind && p->lr == q->lr && p->beta1 == q->beta1 &&
                                    p->beta2 == q->beta2 && p->eps == q->eps && p->weight_decay == q->weight_decay &&
                                    p->clip_norm == q->clip_norm);
    return a->batch == b->batch && a->seq == b->seq && a->mode == b->mode && a->loss == b->loss && a->upto == b->upto &&
           a->has_opt == b->has_opt && a->profile == b->profile && same_opt && a->dropout == b->dropout &&
           a->seed == b->seed && a->global_batch == b->global_batch && a->first_sample == b->first_sample &&
           a->bucket_bytes == b->bucket_bytes;
}

/* Where the host writes a tensor's data for a step: its staging copy, or the tensor itself. */
static unsigned char *spk__host_side(const spk__allocation *staging, VkDeviceSize offset, const spk_tensor *t) {
    return staging->block ? (unsigned char *)staging->block->mapped + staging->offset + offset
                          : (unsigned char *)t->alloc.block->mapped + t->alloc.offset;
}

/* Records the training step `key` describes into t->step: the staging copies in, zeroing the
 * gradients (a whole step), the forward keeping its activations, the loss, the backward, the
 * optimizer, and the loss's copy out. Called with the context locked. */
static spk_status spk__record_train_step(spk_model *m, const spk__step_key *key) {
    spk_context *ctx = m->ctx;
    spk__train *t = m->train;
    int out_ndim;
    int64_t in_shape[3] = {key->batch, key->seq, m->cfg.embed_dim}, out_shape[3];
    spk_model_output_shape(m, key->batch, key->seq, &out_ndim, out_shape);
    int t_ndim = key->loss == SPK_LOSS_MSE ? out_ndim : out_ndim - 1;
    spk_tensor in = spk__view(m->input, 3, in_shape), out = spk__view(m->output, out_ndim, out_shape);
    spk_tensor dy = spk__view(t->dy, out_ndim, out_shape), tgt = spk__view(t->target, t_ndim, out_shape);
    /* Dropout in training steps only (spk_model_grad evaluates without it); data-parallel, the
     * masks of this process's rows of the global batch. */
    t->acts.dropout = key->dropout;
    t->acts.seed = key->seed;
    t->acts.step = key->has_opt ? t->opt_state->ref : (spk__buffer_ref){0};
    t->acts.drop_offset = (uint32_t)(key->first_sample * key->seq * m->cfg.hidden_size);
    t->step_valid = false;
    bool split = key->global_batch > 0 && key->upto >= SPK__PHASE_BACKWARD;
    spk_status s = SPK_OK;
    if (t->step.cmd && t->step_key.profile != key->profile) spk__recording_destroy(ctx, &t->step);
    if (!t->step.cmd) s = spk__recording_init(ctx, &t->step, key->profile ? SPK__MODEL_PROFILE_DISPATCHES : 0);
    if (s == SPK_OK && split && !t->step_tail.cmd) s = spk__recording_init(ctx, &t->step_tail, 0);
    if (s == SPK_OK) s = spk__recording_begin(ctx, &t->step, true);
    if (s == SPK_OK && m->staging.block)
        s = spk__copy(ctx, (spk__buffer_ref){m->staging.block->buffer, m->staging.offset, in.ref.size}, in.ref);
    if (s == SPK_OK && t->staging.block)
        s = spk__copy(ctx, (spk__buffer_ref){t->staging.block->buffer, t->staging.offset, tgt.ref.size}, tgt.ref);
    bool whole = key->has_opt && key->upto == SPK__PHASE_STEP;
    if (s == SPK_OK && whole) s = spk__record_zero_grad(m);
    if (s == SPK_OK) s = spk__model_record(m, &in, key->batch, key->seq, &out, &t->acts, NULL);
    /* Data-parallel, the loss is the global batch's mean: every process divides by its count. */
    uint64_t mean_over = (uint64_t)key->global_batch * (uint64_t)(m->cfg.output_mode == SPK_OUTPUT_ALL ? key->seq : 1) *
                         (uint64_t)(key->loss == SPK_LOSS_MSE ? spk_model_output_size(&m->cfg) : 1);
    if (s == SPK_OK && key->upto >= SPK__PHASE_LOSS)
        s = spk__record_loss(ctx, 0, key->loss, &out, &tgt, t->row_loss->ref, t->loss, &dy, mean_over);
    /* Data-parallel: the step ends in segments, one per bucket of gradients (data_parallel.c). */
    if (s == SPK_OK && split) s = spk__dp_plan(m);
    if (s == SPK_OK && key->upto >= SPK__PHASE_BACKWARD)
        s = spk__model_record_backward(m, &in, key->batch, key->seq, &dy, split ? spk__dp_layer_done : NULL);
    if (s == SPK_OK && t->staging.block) {
        VkDeviceSize at = (VkDeviceSize)t->acts.rows * (VkDeviceSize)spk_model_output_size(&m->cfg) * sizeof(float);
        s = spk__copy(ctx, t->loss->ref, (spk__buffer_ref){t->staging.block->buffer, t->staging.offset + at, sizeof(float)});
    }
    spk__buffer_ref staged = {t->grad_staging.block ? t->grad_staging.block->buffer : VK_NULL_HANDLE,
                              t->grad_staging.offset, t->grad_all->ref.size};
    if (s == SPK_OK && split) s = spk__dp_last_bucket(m);
    if (s == SPK_OK && split) s = spk__recording_begin(ctx, &t->step_tail, true);
    if (s == SPK_OK && split && staged.buffer) s = spk__copy(ctx, staged, t->grad_all->ref);
    if (s == SPK_OK && whole) s = spk__record_optimizer_step(m, &key->opt);
    if (s == SPK_OK) s = spk__recording_end(ctx, split ? &t->step_tail : &t->step);
    ctx->rec = &ctx->own;
    if (s == SPK_OK) t->step_key = *key, t->step_valid = true;
    return s;
}

/* spk_model_grad, optionally zeroing the gradients first and taking an optimizer step after:
 * one command buffer, recorded once for a shape, loss and optimizer and replayed, one submit per
 * step; the loss is read only when asked. `upto` stops after a phase (the benchmark times each). */
spk_status spk__train_phases(spk_model *m, const float *input, int64_t batch, int64_t seq_len, spk_loss_kind loss,
                             const float *target, const spk_optimizer_desc *opt, spk__train_phase upto,
                             float *loss_out) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    spk_context *ctx = m->ctx;
    if (!input) return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "grad: input is NULL");
    spk__train_forget_forward(m);
    spk_status s = spk__check_forward_size(m, batch, seq_len);
    int out_ndim;
    int64_t out_shape[3], rows = batch * seq_len;
    int64_t out_count = s == SPK_OK ? spk_model_output_shape(m, batch, seq_len, &out_ndim, out_shape) : 0;
    int64_t classes = spk_model_output_size(&m->cfg), out_rows = classes ? out_count / classes : 0;
    if (s == SPK_OK) s = spk__check_targets(m, loss, target, out_rows, classes);
    if (s == SPK_OK && opt) s = spk__optimizer_check(ctx, opt);
    if (s == SPK_OK) s = spk__train_prepare(m, rows);
    if (s == SPK_OK && opt) s = spk__optimizer_prepare(m);
    if (s == SPK_OK) s = spk__mean_weights(m, batch, seq_len);
    if (s != SPK_OK) return s;
    spk__train *t = m->train;
    const spk_data_parallel *dp = &m->dp;
    if (dp->global_batch && dp->first_sample + batch > dp->global_batch)
        return spk__fail(ctx, SPK_ERROR_SHAPE, "data-parallel: samples %lld to %lld are past the global batch of %lld",
                         (long long)dp->first_sample, (long long)(dp->first_sample + batch - 1), (long long)dp->global_batch);
    spk__step_key key = {.batch = batch, .seq = seq_len, .mode = m->cfg.output_mode, .loss = loss, .upto = upto,
                         .has_opt = opt != NULL, .profile = m->profile, .dropout = opt ? m->cfg.dropout : 0.0f,
                         .seed = m->dropout_seed, .global_batch = dp->global_batch, .first_sample = dp->first_sample,
                         .bucket_bytes = dp->bucket_bytes};
    if (opt) key.opt = *opt;
    size_t in_bytes = (size_t)(rows * m->cfg.embed_dim) * sizeof(float);
    size_t target_bytes = (size_t)(loss == SPK_LOSS_MSE ? out_count : out_rows) * sizeof(float);
    VkDeviceSize loss_at = (VkDeviceSize)t->acts.rows * (VkDeviceSize)classes * sizeof(float);
    pthread_mutex_lock(&ctx->lock);
    if (!t->step_valid || !spk__step_key_equal(&t->step_key, &key)) s = spk__record_train_step(m, &key);
    bool split = dp->global_batch && upto >= SPK__PHASE_BACKWARD;
    const float *loss_host = (const float *)spk__host_side(&t->staging, loss_at, t->loss);
    float value = 0.0f;
    if (s == SPK_OK) {
        memcpy(spk__host_side(&m->staging, 0, m->input), input, in_bytes);
        memcpy(spk__host_side(&t->staging, 0, t->target), target, target_bytes);
        s = split ? spk__dp_run(m, loss_host, &value) : spk__recording_submit(ctx, &t->step);
    }
    if (s == SPK_OK && !split) value = *loss_host;
    if (s == SPK_OK && loss_out) *loss_out = value;
    pthread_mutex_unlock(&ctx->lock);
    if (s == SPK_OK && opt && upto == SPK__PHASE_STEP) t->steps++;
    return s;
}

spk_status spk_model_step(spk_model *m, const spk_optimizer_desc *opt) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    spk_status s = spk__optimizer_check(m->ctx, opt);
    if (s == SPK_OK && !m->train) s = spk_model_zero_grad(m);
    if (s == SPK_OK) s = spk__optimizer_prepare(m);
    if (s != SPK_OK) return s;
    pthread_mutex_lock(&m->ctx->lock);
    s = spk__begin(m->ctx);
    if (s == SPK_OK) s = spk__record_optimizer_step(m, opt);
    if (s == SPK_OK) s = spk__submit_and_wait(m->ctx);
    pthread_mutex_unlock(&m->ctx->lock);
    return s;
}

spk_status spk_model_grad(spk_model *m, const float *input, int64_t batch, int64_t seq_len, spk_loss_kind loss,
                          const float *target, float *loss_out) {
    return spk__train_phases(m, input, batch, seq_len, loss, target, NULL, SPK__PHASE_BACKWARD, loss_out);
}

spk_status spk_model_train_step(spk_model *m, const float *input, int64_t batch, int64_t seq_len, spk_loss_kind loss,
                                const float *target, const spk_optimizer_desc *opt, float *loss_out) {
    if (m && !opt) return spk__fail(m->ctx, SPK_ERROR_INVALID_ARGUMENT, "train step: the optimizer is NULL");
    return spk__train_phases(m, input, batch, seq_len, loss, target, opt, SPK__PHASE_STEP, loss_out);
}

/* ---- a forward and a backward of the caller's own (their head, their loss) ---------------- */

/* What spk__run_sync records for the calls below: the training forward (in to out), or the
 * backward of the remembered one (from dy). */
typedef struct spk__own_pass {
    spk_model *m;
    const spk_tensor *in, *dy;
    spk_tensor *out;
} spk__own_pass;

static spk_status spk__record_own_forward(spk_context *ctx, const void *arg) {
    (void)ctx;
    const spk__own_pass *p = arg;
    return spk__model_record(p->m, p->in, p->in->shape[0], p->in->shape[1], p->out, &p->m->train->acts, NULL);
}

static spk_status spk__record_own_backward(spk_context *ctx, const void *arg) {
    (void)ctx;
    const spk__own_pass *p = arg;
    const spk_tensor *in = &p->m->train->fwd_input;
    return spk__model_record_backward(p->m, in, in->shape[0], in->shape[1], p->dy, NULL);
}

/* Records the training forward (dropout off, as spk_model_grad) in one submit and remembers its
 * input for spk_model_backward. */
static spk_status spk__forward_train(spk_model *m, const spk_tensor *in, spk_tensor *out) {
    spk__train *t = m->train;
    t->acts.dropout = 0.0f;
    spk__own_pass pass = {.m = m, .in = in, .out = out};
    spk_status s = spk__run_sync(m->ctx, spk__record_own_forward, &pass);
    if (s == SPK_OK) t->fwd_input = *in, t->fwd_valid = true;
    return s;
}

spk_status spk_model_forward_train(spk_model *m, const float *input, int64_t batch, int64_t seq_len, float *output) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    spk__train_forget_forward(m);
    if (!input || !output) return spk__fail(m->ctx, SPK_ERROR_INVALID_ARGUMENT, "forward: input or output is NULL");
    spk_status s = spk__check_forward_size(m, batch, seq_len);
    if (s == SPK_OK) s = spk__train_prepare(m, batch * seq_len);
    if (s == SPK_OK) s = spk__mean_weights(m, batch, seq_len);
    if (s != SPK_OK) return s;
    int out_ndim;
    int64_t in_shape[3] = {batch, seq_len, m->cfg.embed_dim}, out_shape[3];
    spk_model_output_shape(m, batch, seq_len, &out_ndim, out_shape);
    spk_tensor in = spk__view(m->input, 3, in_shape), out = spk__view(m->output, out_ndim, out_shape);
    s = spk_tensor_upload(&in, input, in.count);
    if (s == SPK_OK) s = spk__forward_train(m, &in, &out);
    if (s == SPK_OK) s = spk_tensor_download(&out, output, out.count);
    if (s != SPK_OK) spk__train_forget_forward(m);
    return s;
}

spk_status spk_model_forward_train_tensors(spk_model *m, const spk_tensor *input, spk_tensor *output) {
    spk_status s = spk__forward_tensors_prepare(m, input, output);
    if (s == SPK_OK) s = spk__train_prepare(m, input->shape[0] * input->shape[1]);
    return s == SPK_OK ? spk__forward_train(m, input, output) : s;
}

/* The backward of the remembered training forward from dy (the output's shape), one submit. */
static spk_status spk__backward_from(spk_model *m, const spk_tensor *dy) {
    spk__own_pass pass = {.m = m, .dy = dy};
    return spk__run_sync(m->ctx, spk__record_own_backward, &pass);
}

/* The output shape of the remembered training forward, or an error when there is none. */
static spk_status spk__backward_shape(spk_model *m, int *ndim, int64_t shape[3]) {
    if (!m->train || !m->train->fwd_valid)
        return spk__fail(m->ctx, SPK_ERROR_INVALID_ARGUMENT,
                         "backward: no training forward to go back through (spk_model_forward_train, with no other "
                         "forward or training call of the model since)");
    const spk_tensor *in = &m->train->fwd_input;
    spk_model_output_shape(m, in->shape[0], in->shape[1], ndim, shape);
    return SPK_OK;
}

spk_status spk_model_backward(spk_model *m, const float *dy) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    if (!dy) return spk__fail(m->ctx, SPK_ERROR_INVALID_ARGUMENT, "backward: dy is NULL");
    int ndim;
    int64_t shape[3];
    spk_status s = spk__backward_shape(m, &ndim, shape);
    if (s != SPK_OK) return s;
    spk_tensor view = spk__view(m->train->dy, ndim, shape);
    s = spk_tensor_upload(&view, dy, view.count);
    return s == SPK_OK ? spk__backward_from(m, &view) : s;
}

spk_status spk_model_backward_tensors(spk_model *m, const spk_tensor *dy) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    int ndim;
    int64_t shape[3];
    spk_status s = spk__backward_shape(m, &ndim, shape);
    if (s == SPK_OK) s = spk__check_tensor(m->ctx, dy, "model output gradient");
    if (s == SPK_OK) s = spk__check_shape(m->ctx, dy, ndim, shape, "model output gradient");
    return s == SPK_OK ? spk__backward_from(m, dy) : s;
}

/* Copies the [rows, cols] block of parameter `name` in weights `w` (the model's or its gradients). */
static spk_status spk__get_param(spk_model *m, const spk__weights *w, const char *name, float *out, int64_t count) {
    if (!name || !out) return spk__fail(m->ctx, SPK_ERROR_INVALID_ARGUMENT, "the parameter name or output is NULL");
    spk__param *params;
    uint32_t n = spk__model_params(m, w, &params);
    if (!n) return spk__fail(m->ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    spk_status s = SPK_OK;
    const spk__param *p = NULL;
    for (uint32_t i = 0; i < n && !p; i++)
        if (strcmp(params[i].name, name) == 0) p = &params[i];
    if (!p) s = spk__fail(m->ctx, SPK_ERROR_INVALID_ARGUMENT, "the model has no parameter '%s'", name);
    else if (count != p->rows * p->cols)
        s = spk__fail(m->ctx, SPK_ERROR_SHAPE, "parameter '%s' has %lld elements, not %lld", name,
                      (long long)(p->rows * p->cols), (long long)count);
    if (s == SPK_OK) s = spk__param_download(m, p, out);
    free(params);
    return s;
}

spk_status spk_model_get_parameter(spk_model *m, const char *name, float *out, int64_t count) {
    return m ? spk__get_param(m, &m->w, name, out, count) : SPK_ERROR_INVALID_ARGUMENT;
}

spk_status spk_model_get_gradient(spk_model *m, const char *name, float *out, int64_t count) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    spk_status s = spk__train_prepare(m, 1);
    return s == SPK_OK ? spk__get_param(m, &m->train->grad, name, out, count) : s;
}

uint32_t spk__train_dispatch_times(spk_model *m, uint64_t *ns, const char **shaders, uint32_t max) {
    spk__train *t = m->train;
    return t && t->step_valid && t->step_key.profile ? spk__recording_dispatch_times(m->ctx, &t->step, ns, shaders, max) : 0;
}
