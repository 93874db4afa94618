/* The softpick transformer of SPEC.md section 2. spk__model_record reads like the spec's
 * pseudocode; the rest is creation and the cache of recorded forwards that spk_model_forward
 * replays. The configuration is model_config.c, the parameters' names, random init and loading
 * model_params.c. The model knows nothing of training: training (model_backward.c) depends on
 * it, and reaches back only through the hooks it sets in spk_model.training. */
#include "model.h"
#include "fault.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention_plan.h"
#include "layer_norm_plan.h"
#include "matmul_plan.h"

/* ---- creation ----------------------------------------------------------------------------- */

static spk_status spk__tensor1(spk_context *ctx, int64_t n, spk_tensor **out) {
    return spk_tensor_create(ctx, 1, &n, out);
}

static spk_status spk__tensor2(spk_context *ctx, int64_t rows, int64_t cols, spk_tensor **out) {
    int64_t shape[2] = {rows, cols};
    return spk_tensor_create(ctx, 2, shape, out);
}

/* An activation between kernels, in the model's activation dtype. */
static spk_status spk__act2(spk_model *m, int64_t rows, int64_t cols, spk_tensor **out) {
    int64_t shape[2] = {rows, cols};
    return spk_tensor_create_typed(m->ctx, m->cfg.activation_dtype, 2, shape, out);
}

/* Where a set of weights' tensors come from: allocations of their own, or slices of one tensor
 * `whole` (the gradients: one buffer that one reduction covers), carved from its end down so that
 * the buffer holds them in the order the backward finishes them (the last layers first). A pass
 * with `measure` set only adds up the bytes `whole` needs. */
typedef struct spk__maker {
    spk_context *ctx;
    spk_dtype kernel_dtype;
    spk_tensor *whole;
    VkDeviceSize end;
    bool measure;
} spk__maker;

static spk_status spk__make(spk__maker *mk, spk_dtype dtype, int ndim, const int64_t *shape, spk_tensor **out) {
    if (!mk->whole && !mk->measure) return spk_tensor_create_typed(mk->ctx, dtype, ndim, shape, out);
    VkDeviceSize align = mk->ctx->allocator.alignment; /* as every tensor's: vec4 loads, storage and texel views */
    int64_t count = 1;
    for (int i = 0; i < ndim; i++) count *= shape[i];
    VkDeviceSize bytes = ((VkDeviceSize)count * sizeof(float) + align - 1) / align * align;
    *out = NULL;
    if (mk->measure) return mk->end += bytes, SPK_OK;
    mk->end -= bytes;
    return spk__tensor_slice(mk->whole, mk->end, ndim, shape, out);
}

static spk_status spk__dense_create(spk__maker *mk, int64_t in, int64_t out, spk__dense_params *d) {
    int64_t shape[2] = {in, out};
    spk_status s = spk__make(mk, mk->kernel_dtype, 2, shape, &d->kernel);
    if (s == SPK_OK) s = spk__make(mk, SPK_DTYPE_F32, 1, &out, &d->bias);
    return s;
}

static void spk__dense_destroy(spk__dense_params *d) {
    spk_tensor_destroy(d->kernel);
    spk_tensor_destroy(d->bias);
}

static spk_status spk__norm_create(spk__maker *mk, int64_t n, spk__norm_params *norm) {
    spk_status s = spk__make(mk, SPK_DTYPE_F32, 1, &n, &norm->gamma);
    if (s == SPK_OK) s = spk__make(mk, SPK_DTYPE_F32, 1, &n, &norm->beta);
    return s;
}

static void spk__norm_destroy(spk__norm_params *n) {
    spk_tensor_destroy(n->gamma);
    spk_tensor_destroy(n->beta);
}

static void spk__recordings_clear(spk_model *m) {
    for (uint32_t i = 0; i < SPK__MODEL_RECORDINGS; i++) {
        spk__model_recording *r = &m->recordings[i];
        if (r->rec.cmd) {
            pthread_mutex_lock(&m->ctx->lock);
            spk__recording_destroy(m->ctx, &r->rec);
            pthread_mutex_unlock(&m->ctx->lock);
        }
        *r = (spk__model_recording){0};
    }
}

static void spk__activations_destroy(spk_model *m) {
    spk__recordings_clear(m);
    if (m->training) m->training->forget(m, false);
    spk_tensor *const all[] = {m->input, m->x, m->normed, m->qkv, m->attended, m->ffn, m->last, m->output, m->mean_weights};
    for (size_t i = 0; i < SPK__ARRAY_LEN(all); i++) spk_tensor_destroy(all[i]);
    m->input = m->x = m->normed = m->qkv = m->attended = m->ffn = m->last = m->output = m->mean_weights = NULL;
    if (m->staging.block) {
        pthread_mutex_lock(&m->ctx->lock);
        spk__free(m->ctx, &m->staging);
        pthread_mutex_unlock(&m->ctx->lock);
    }
    m->rows = 0;
}

/* Activation buffers for `rows` = batch * seq_len positions. */
spk_status spk__activations_create(spk_model *m, int64_t rows) {
    spk_context *ctx = m->ctx;
    int64_t h = m->cfg.hidden_size;
    spk__activations_destroy(m);
    spk_status s = spk__tensor2(ctx, rows, m->cfg.embed_dim, &m->input);
    if (s == SPK_OK) s = spk__act2(m, rows, h, &m->x);
    if (s == SPK_OK) s = spk__act2(m, rows, h, &m->normed);
    if (s == SPK_OK) s = spk__act2(m, rows, 3 * h, &m->qkv);
    if (s == SPK_OK) s = spk__act2(m, rows, h, &m->attended);
    if (s == SPK_OK) s = spk__act2(m, rows, 4 * h, &m->ffn);
    if (s == SPK_OK) s = spk__act2(m, rows, h, &m->last);
    if (s == SPK_OK) s = spk__tensor2(ctx, rows, spk_model_output_size(&m->cfg), &m->output);
    if (s == SPK_OK) s = spk__tensor1(ctx, rows, &m->mean_weights);
    /* Where tensors are not host-visible, input and output go through staging copies recorded
     * into the forward itself, so that a forward stays one submission. */
    bool mapped = s == SPK_OK && m->input->alloc.block->mapped && m->output->alloc.block->mapped &&
                  !ctx->force_staging;
    if (s == SPK_OK && !mapped) {
        pthread_mutex_lock(&ctx->lock);
        s = spk__allocate(ctx, SPK__MEMORY_STAGING, (VkDeviceSize)(m->input->count + m->output->count) * sizeof(float),
                          &m->staging);
        pthread_mutex_unlock(&ctx->lock);
    }
    if (s == SPK_OK) m->rows = rows;
    else spk__activations_destroy(m);
    return s;
}

static spk_status spk__weights_make(spk__maker *mk, const spk_model_config *c, spk__weights *w) {
    *w = (spk__weights){0};
    w->layers = spk__calloc((size_t)c->num_layers, sizeof *w->layers);
    if (!w->layers) return spk__fail(mk->ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    int64_t h = c->hidden_size;
    spk_status s = SPK_OK;
    if (c->embed_dim != c->hidden_size) s = spk__dense_create(mk, c->embed_dim, h, &w->input_projection);
    for (int l = 0; l < c->num_layers && s == SPK_OK; l++) {
        spk__layer *b = &w->layers[l];
        s = spk__norm_create(mk, h, &b->attn_norm);
        if (s == SPK_OK) s = spk__dense_create(mk, h, 3 * h, &b->qkv);
        if (s == SPK_OK) s = spk__dense_create(mk, h, h, &b->out);
        if (s == SPK_OK) s = spk__norm_create(mk, h, &b->ffn_norm);
        if (s == SPK_OK) s = spk__dense_create(mk, h, 4 * h, &b->up);
        if (s == SPK_OK) s = spk__dense_create(mk, 4 * h, h, &b->down);
    }
    if (s == SPK_OK) s = spk__norm_create(mk, h, &w->final_norm);
    if (s == SPK_OK && c->num_outputs > 0) s = spk__dense_create(mk, h, c->num_outputs, &w->head);
    if (s != SPK_OK || mk->measure) spk__weights_destroy(w, c->num_layers);
    return s;
}

spk_status spk__weights_create(spk_context *ctx, const spk_model_config *c, spk_dtype kd, spk__weights *w) {
    spk__maker mk = {ctx, kd, NULL, 0, false};
    return spk__weights_make(&mk, c, w);
}

spk_status spk__weights_create_flat(spk_context *ctx, const spk_model_config *c, spk__weights *w, spk_tensor **whole) {
    spk__maker mk = {ctx, SPK_DTYPE_F32, NULL, 0, true};
    spk_status s = spk__weights_make(&mk, c, w);
    int64_t count = (int64_t)(mk.end / sizeof(float));
    if (s == SPK_OK) s = spk_tensor_create(ctx, 1, &count, whole);
    if (s != SPK_OK) return s;
    mk.whole = *whole, mk.measure = false;
    s = spk__weights_make(&mk, c, w);
    if (s != SPK_OK) spk_tensor_destroy(*whole), *whole = NULL;
    return s;
}

void spk__weights_destroy(spk__weights *w, int num_layers) {
    spk__dense_destroy(&w->input_projection);
    for (int l = 0; w->layers && l < num_layers; l++) {
        spk__layer *b = &w->layers[l];
        spk__norm_destroy(&b->attn_norm);
        spk__dense_destroy(&b->qkv);
        spk__dense_destroy(&b->out);
        spk__norm_destroy(&b->ffn_norm);
        spk__dense_destroy(&b->up);
        spk__dense_destroy(&b->down);
    }
    spk__norm_destroy(&w->final_norm);
    spk__dense_destroy(&w->head);
    free(w->layers);
    *w = (spk__weights){0};
}

uint32_t spk__weights_count(int num_layers) { return 2 + 12 * (uint32_t)num_layers + 2 + 2; }

uint32_t spk__weights_list(const spk__weights *w, int num_layers, spk_tensor **out) {
    uint32_t n = 0;
#define SPK__PUT(t) \
    if (t) out[n++] = t
    SPK__PUT(w->input_projection.kernel);
    SPK__PUT(w->input_projection.bias);
    for (int l = 0; l < num_layers; l++) {
        const spk__layer *b = &w->layers[l];
        spk_tensor *const all[12] = {b->attn_norm.gamma, b->attn_norm.beta, b->qkv.kernel, b->qkv.bias,
                                     b->out.kernel,      b->out.bias,       b->ffn_norm.gamma, b->ffn_norm.beta,
                                     b->up.kernel,       b->up.bias,        b->down.kernel,   b->down.bias};
        for (int i = 0; i < 12; i++) SPK__PUT(all[i]);
    }
    SPK__PUT(w->final_norm.gamma);
    SPK__PUT(w->final_norm.beta);
    SPK__PUT(w->head.kernel);
    SPK__PUT(w->head.bias);
#undef SPK__PUT
    return n;
}

spk_status spk_model_create(spk_context *ctx, const spk_model_config *config, spk_model **out) {
    if (!out) return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "spk_model_create: out is NULL");
    *out = NULL;
    if (!ctx) return SPK_ERROR_INVALID_ARGUMENT;
    char error[200];
    if (spk_model_config_check(config, error, sizeof error) != SPK_OK)
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "model configuration: %s", error);
    if (config->activation_dtype != SPK_DTYPE_F32) {
        spk_status s = spk__check_storage16(ctx, "a model");
        if (s != SPK_OK) return s;
    }
    spk_model *m = spk__calloc(1, sizeof *m);
    if (!m) return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    m->ctx = ctx;
    m->cfg = *config;
    spk_status s = spk__weights_create(ctx, config, config->weights_dtype, &m->w);
    if (s == SPK_OK) s = spk__activations_create(m, config->window_size);
    if (s != SPK_OK) {
        spk_model_destroy(m);
        return s;
    }
    *out = m;
    return SPK_OK;
}

void spk_model_destroy(spk_model *m) {
    if (!m) return;
    if (m->training) m->training->destroy(m);
    spk__activations_destroy(m);
    spk__weights_destroy(&m->w, m->cfg.num_layers);
    free(m);
}

const spk_model_config *spk_model_get_config(const spk_model *m) { return m ? &m->cfg : NULL; }

/* The bytes of `n` tensors (NULL ones count nothing). */
static uint64_t spk__tensor_bytes(spk_tensor *const *t, uint32_t n) {
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < n; i++)
        if (t[i]) bytes += t[i]->ref.size;
    return bytes;
}

spk_status spk_model_memory(const spk_model *m, spk_model_memory_info *out) {
    if (!m || !out) return SPK_ERROR_INVALID_ARGUMENT;
    spk_tensor *list[512];
    int layers = m->cfg.num_layers;
    *out = (spk_model_memory_info){0};
    if (spk__weights_count(layers) <= SPK__ARRAY_LEN(list))
        out->weights = spk__tensor_bytes(list, spk__weights_list(&m->w, layers, list));
    spk_tensor *const acts[] = {m->input, m->x, m->normed, m->qkv, m->attended, m->ffn, m->last, m->output, m->mean_weights};
    out->activations = spk__tensor_bytes(acts, SPK__ARRAY_LEN(acts));
    if (m->training) out->training = m->training->bytes(m);
    return SPK_OK;
}

spk_status spk_model_set_output_mode(spk_model *m, spk_output_mode mode) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    if ((unsigned)mode > SPK_OUTPUT_MEAN) return spk__fail(m->ctx, SPK_ERROR_INVALID_ARGUMENT, "unknown output mode %d", (int)mode);
    m->cfg.output_mode = mode;
    return SPK_OK;
}

spk_status spk_model_set_dropout(spk_model *m, float rate, uint64_t seed) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    if (!(rate >= 0.0f && rate < 1.0f)) return spk__fail(m->ctx, SPK_ERROR_INVALID_ARGUMENT, "dropout must be in [0, 1)");
    m->cfg.dropout = rate;
    m->dropout_seed = seed;
    return SPK_OK;
}

int64_t spk_model_output_shape(const spk_model *m, int64_t batch, int64_t seq_len, int *ndim, int64_t shape[3]) {
    if (!m || !ndim || !shape || batch <= 0 || seq_len <= 0) return 0;
    int64_t h = spk_model_output_size(&m->cfg);
    if (m->cfg.output_mode == SPK_OUTPUT_ALL) {
        *ndim = 3, shape[0] = batch, shape[1] = seq_len, shape[2] = h;
        return batch * seq_len * h;
    }
    *ndim = 2, shape[0] = batch, shape[1] = h;
    return batch * h;
}

/* ---- the forward pass --------------------------------------------------------------------- */

spk_tensor spk__view(const spk_tensor *t, int ndim, const int64_t *shape) {
    spk_tensor v = *t;
    v.ndim = ndim;
    v.count = 1;
    for (int i = 0; i < ndim; i++) v.shape[i] = shape[i], v.count *= shape[i];
    v.ref.size = (VkDeviceSize)v.count * spk_dtype_size(t->dtype);
    if (v.ref.size == 0) v.ref.size = t->ref.size;
    return v;
}

/* y = x W + b (then GELU) (+ residual). */
static spk_status spk__record_dense(spk_context *ctx, const spk_tensor *x, const spk__dense_params *d, spk_activation activation,
                                    const spk_tensor *residual, spk_tensor *y) {
    spk_matmul_desc desc = {.bias = d->bias, .activation = activation, .residual = residual};
    return spk__record_matmul(ctx, NULL, x, d->kernel, &desc, y);
}

/* y = layer_norm(x), keeping each row's mean and rstd in `stats` when not NULL. */
static spk_status spk__record_norm(spk_context *ctx, const spk_tensor *x, const spk__norm_params *n, spk_tensor *stats,
                                   spk_tensor *y) {
    spk_layer_norm_desc desc = {.stats = stats};
    return spk__record_layer_norm(ctx, NULL, x, n->gamma, n->beta, &desc, y);
}

/* Causal attention of every head with the model's normalizer, reading q, k and v from their
 * columns of `qkv`; training keeps each head's and query's row statistic in `r`. */
static spk_status spk__attention(spk_context *ctx, const spk_model *m, const spk_tensor *qkv, uint32_t batch,
                                 uint32_t seq, const spk_tensor *r, spk_tensor *out) {
    uint32_t h = (uint32_t)m->cfg.hidden_size;
    spk__attention_args args = {
        .q = {qkv->ref, 3 * h, 0, qkv->views, qkv->dtype},
        .k = {qkv->ref, 3 * h, h, qkv->views, qkv->dtype},
        .v = {qkv->ref, 3 * h, 2 * h, qkv->views, qkv->dtype},
        .out = {out->ref, h, 0, NULL, out->dtype},
        .batch = batch,
        .seq = seq,
        .heads = (uint32_t)m->cfg.num_heads,
        .head_dim = h / (uint32_t)m->cfg.num_heads,
        .causal = true,
        .norm = m->cfg.attention,
    };
    if (r) args.r = (spk__buffer_ref){r->ref.buffer, r->ref.offset, (VkDeviceSize)batch * seq * (uint32_t)m->cfg.num_heads * sizeof(float)};
    spk__buffer_ref unused = {0};
    return spk__record_attention(ctx, NULL, &args, SPK__ATTENTION_FUSED, unused);
}

/* output = layer_norm(x, final_norm) at the last position, every position, or averaged over
 * positions, then dense(output, output_head) with a head. Training keeps the norm's input rows,
 * stats and output, and the head's input (keep: see spk__acts). */
static spk_status spk__record_output(spk_model *m, const spk_tensor *x, int64_t batch, int64_t seq, spk_tensor *output,
                                     const spk__acts *keep) {
    spk_context *ctx = m->ctx;
    const spk_model_config *c = &m->cfg;
    int64_t h = c->hidden_size, rows = c->output_mode == SPK_OUTPUT_ALL ? batch * seq : batch;
    bool head = m->w.head.kernel != NULL;
    int64_t all_h[2] = {batch * seq, h}, all_2[2] = {batch * seq, 2}, out_h[2] = {rows, h}, out_2[2] = {rows, 2};
    int64_t out_shape[2] = {rows, spk_model_output_size(c)};
    spk_tensor out = spk__view(output, 2, out_shape);
    /* The norm's rows: every position, or the last ones gathered first. */
    spk_tensor norm_in = spk__view(x, 2, all_h), stats, normed, pooled;
    spk_status s = SPK_OK;
    if (c->output_mode == SPK_OUTPUT_LAST) {
        spk_tensor last = spk__view(keep ? keep->final_in : m->last, 2, out_h);
        VkBufferCopy *regions = spk__malloc((size_t)batch * sizeof *regions);
        if (!regions) return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
        VkDeviceSize row_bytes = (VkDeviceSize)h * spk_dtype_size(x->dtype);
        for (int64_t i = 0; i < batch; i++)
            regions[i] = (VkBufferCopy){x->ref.offset + (VkDeviceSize)(i * seq + seq - 1) * row_bytes,
                                        last.ref.offset + (VkDeviceSize)i * row_bytes, row_bytes};
        s = spk__copy_regions(ctx, x->ref, last.ref, regions, (uint32_t)batch);
        free(regions);
        norm_in = last;
    }
    bool mean = c->output_mode == SPK_OUTPUT_MEAN;
    if (keep) {
        stats = spk__view(keep->final_stats, 2, mean ? all_2 : out_2);
        normed = spk__view(keep->final_normed, 2, mean ? all_h : out_h);
        pooled = spk__view(keep->pooled, 2, out_h);
    } else {
        /* In place on the gathered rows, or in the normed buffer; the mean pools into `last`. */
        normed = c->output_mode == SPK_OUTPUT_LAST ? norm_in : spk__view(m->normed, 2, mean ? all_h : out_h);
        pooled = spk__view(m->last, 2, out_h);
    }
    /* Without a head (and not pooling) the norm writes the output itself; in place on the
     * gathered rows, it takes the same tensor as input and output. */
    if (!head && !mean) normed = out;
    spk_tensor *norm_out = !keep && head && c->output_mode == SPK_OUTPUT_LAST ? &norm_in : &normed;
    if (s == SPK_OK) s = spk__record_norm(ctx, &norm_in, &m->w.final_norm, keep ? &stats : NULL, norm_out);
    spk_tensor *head_in = norm_out;
    if (s == SPK_OK && mean) {
        /* The mean over positions as a batched product with weights of 1 / seq: [b, 1, seq] x
         * [b, seq, h]. */
        int64_t w_shape[3] = {batch, 1, seq}, seq_h[3] = {batch, seq, h}, one_h[3] = {batch, 1, h};
        spk_tensor w = spk__view(m->mean_weights, 3, w_shape), n3 = spk__view(norm_out, 3, seq_h);
        spk_tensor y = spk__view(head ? &pooled : &out, 3, one_h);
        s = spk__record_matmul(ctx, NULL, &w, &n3, NULL, &y);
        head_in = &pooled;
    }
    if (s == SPK_OK && head) s = spk__record_dense(ctx, head_in, &m->w.head, SPK_ACTIVATION_NONE, NULL, &out);
    return s;
}

spk__dropout_mask spk__dropout_mask_of(const spk__acts *k, uint32_t site) {
    double threshold = (double)k->dropout * 4294967296.0;
    return (spk__dropout_mask){k->step, {(uint32_t)k->seed, (uint32_t)(k->seed >> 32), site,
                                         threshold >= 4294967295.0 ? UINT32_MAX : (uint32_t)threshold,
                                         (float)(1.0 / (1.0 - k->dropout)), k->drop_offset}};
}

spk_status spk__record_dropout(spk_context *ctx, const spk__acts *k, uint32_t site, bool backward,
                               const spk_tensor *residual, const spk_tensor *y, spk_tensor *out) {
    struct {
        uint32_t n;
        spk__dropout_push mask;
    } push = {(uint32_t)y->count, spk__dropout_mask_of(k, site).push};
    uint32_t spec[2] = {64, backward};
    /* Texel views on CPU drivers, as the other elementwise kernels (storage-buffer reads are
     * per-lane loops there). */
    const spk_tensor *r = residual ? residual : y;
    bool texel = ctx->caps.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU && ctx->caps.texel_buffers &&
                 r->views[0] && y->views[0];
    spk__dispatch_desc d = {.bindings = {r->ref, y->ref, out->ref, k->step},
                            .views = {texel ? r->views[0] : VK_NULL_HANDLE, texel ? y->views[0] : VK_NULL_HANDLE},
                            .written_mask = 0x4, .push = &push, .push_size = sizeof push};
    spk_status s = spk__grid(ctx, (y->count + 4 * 64 - 1) / (4 * 64), d.groups);
    if (s == SPK_OK)
        s = spk__pipeline_get(ctx, texel ? &spk__shader_dropout_texel : &spk__shader_dropout, spec, 2, 0, &d.pipeline);
    if (s == SPK_OK) s = spk__dispatch(ctx, &d);
    return s;
}

/* A block's output added to the residual stream: out = residual + dense(x), the add fused into
 * the matmul; in training with dropout, out = residual + dropout(dense(x)) in a second pass. */
static spk_status spk__record_block_out(spk_model *m, const spk__acts *keep, const spk_tensor *x,
                                        const spk__dense_params *d, const spk_tensor *residual, uint32_t site,
                                        const int64_t *rows_h, spk_tensor *out) {
    if (!keep || keep->dropout <= 0.0f) return spk__record_dense(m->ctx, x, d, SPK_ACTIVATION_NONE, residual, out);
    spk_tensor tmp = spk__view(keep->drop_tmp, 3, rows_h);
    spk_status s = spk__record_dense(m->ctx, x, d, SPK_ACTIVATION_NONE, NULL, &tmp);
    if (s == SPK_OK) s = spk__record_dropout(m->ctx, keep, site, false, residual, &tmp, out);
    return s;
}

/* Views of the kept activations of layer l for this batch and sequence length. */
void spk__layer_views(const spk__layer_acts *k, int64_t batch, int64_t seq, int64_t h, int heads,
                             spk__layer_view *v) {
    int64_t rows_h[3] = {batch, seq, h}, rows_3h[3] = {batch, seq, 3 * h}, rows_4h[3] = {batch, seq, 4 * h};
    int64_t rows_2[3] = {batch, seq, 2}, r_shape[3] = {batch, heads, seq};
    v->x = spk__view(k->x, 3, rows_h), v->a1 = spk__view(k->a1, 3, rows_h), v->stats1 = spk__view(k->stats1, 3, rows_2);
    v->qkv = spk__view(k->qkv, 3, rows_3h), v->r = spk__view(k->r, 3, r_shape), v->o = spk__view(k->o, 3, rows_h);
    v->x_mid = spk__view(k->x_mid, 3, rows_h), v->a2 = spk__view(k->a2, 3, rows_h);
    v->stats2 = spk__view(k->stats2, 3, rows_2), v->h = spk__view(k->h, 3, rows_4h), v->g = spk__view(k->g, 3, rows_4h);
}

/* Records the model on input [batch, seq, embed] into output (the output mode's shape). Inference
 * (keep NULL) uses the model's activation buffers, which must hold batch * seq rows, and
 * overwrites them layer after layer; training keeps every layer's activations in `keep` for the
 * backward (model_backward.c). A probe records its own work after each layer (analyze.c). */
spk_status spk__model_record(spk_model *m, const spk_tensor *input, int64_t batch, int64_t seq,
                                    spk_tensor *output, const spk__acts *keep, const spk__model_probe *probe) {
    spk_context *ctx = m->ctx;
    const spk_model_config *c = &m->cfg;
    int64_t h = c->hidden_size;
    int64_t rows_h[3] = {batch, seq, h}, rows_3h[3] = {batch, seq, 3 * h}, rows_4h[3] = {batch, seq, 4 * h};
    spk_tensor x = spk__view(m->x, 3, rows_h), a = spk__view(m->normed, 3, rows_h);
    spk_tensor qkv = spk__view(m->qkv, 3, rows_3h), o = spk__view(m->attended, 3, rows_h);
    spk_tensor f = spk__view(m->ffn, 3, rows_4h);
    spk_status s;

    /* x = input, projected to hidden_size if embed_dim differs. Without a projection the first
     * block reads the input in place of x (no copy: the first pass writing x is its residual
     * add), so a recording starts and ends with compute work. */
    spk__layer_view v;
    const spk_tensor *x_in = &x;
    if (keep) spk__layer_views(&keep->layers[0], batch, seq, h, c->num_heads, &v);
    s = SPK_OK;
    if (m->w.input_projection.kernel)
        s = spk__record_dense(ctx, input, &m->w.input_projection, SPK_ACTIVATION_NONE, NULL, keep ? &v.x : &x);
    if (!m->w.input_projection.kernel) x_in = input;

    spk_tensor x_next;
    for (int l = 0; l < c->num_layers && s == SPK_OK; l++) {
        const spk__layer *b = &m->w.layers[l];
        /* Where this layer's activations go: the shared buffers (inference), or its own. */
        spk_tensor *a1 = &a, *q = &qkv, *att = &o, *xm = &x, *a2 = &a, *ff = &f, *xn = &x;
        spk_tensor *st1 = NULL, *st2 = NULL, *r = NULL, *pre = NULL;
        if (keep) {
            spk__layer_views(&keep->layers[l], batch, seq, h, c->num_heads, &v);
            if (l > 0 || m->w.input_projection.kernel) x_in = &v.x;
            a1 = &v.a1, st1 = &v.stats1, q = &v.qkv, r = &v.r, att = &v.o, xm = &v.x_mid, a2 = &v.a2, st2 = &v.stats2;
            pre = &v.h, ff = &v.g;
            x_next = l + 1 < c->num_layers ? spk__view(keep->layers[l + 1].x, 3, rows_h) : spk__view(keep->x_final, 3, rows_h);
            xn = &x_next;
        }
        /* a = layer_norm(x); q, k, v = dense(a) (one fused matmul) */
        s = spk__record_norm(ctx, x_in, &b->attn_norm, st1, a1);
        if (s == SPK_OK) s = spk__record_dense(ctx, a1, &b->qkv, SPK_ACTIVATION_NONE, NULL, q);
        /* o = softpick(causal(q k^T / sqrt(head_dim))) v, per head */
        if (s == SPK_OK) s = spk__attention(ctx, m, q, (uint32_t)batch, (uint32_t)seq, r, att);
        /* x = x + dropout(dense(o, out_proj)) */
        if (s == SPK_OK) s = spk__record_block_out(m, keep, att, &b->out, x_in, 2 * (uint32_t)l, rows_h, xm);
        /* x = x + dropout(dense(gelu(dense(layer_norm(x), up)), down)) */
        if (s == SPK_OK) s = spk__record_norm(ctx, xm, &b->ffn_norm, st2, a2);
        if (s == SPK_OK && pre) s = spk__record_matmul_gelu_keep_grad(ctx, a2, b->up.kernel, b->up.bias, pre, ff);
        else if (s == SPK_OK) s = spk__record_dense(ctx, a2, &b->up, SPK_ACTIVATION_GELU, NULL, ff);
        if (s == SPK_OK) s = spk__record_block_out(m, keep, ff, &b->down, xm, 2 * (uint32_t)l + 1, rows_h, xn);
        if (s == SPK_OK && probe) s = probe->layer(m, probe->user, l, q, xn);
        x_in = xn;
    }
    if (s != SPK_OK) return s;
    return spk__record_output(m, x_in, batch, seq, output, keep);
}

/* Checks a forward's sizes: positive, and every activation's element count within 32 bits. */
spk_status spk__check_forward_size(spk_model *m, int64_t batch, int64_t seq) {
    if (batch <= 0 || seq <= 0)
        return spk__fail(m->ctx, SPK_ERROR_SHAPE, "batch (%lld) and sequence length (%lld) must be > 0",
                         (long long)batch, (long long)seq);
    uint64_t rows, widest = (uint64_t)(m->cfg.embed_dim > 4 * m->cfg.hidden_size ? m->cfg.embed_dim : 4 * m->cfg.hidden_size), count;
    if (spk__mul_overflows((uint64_t)batch, (uint64_t)seq, &rows) || spk__mul_overflows(rows, widest, &count) ||
        count > UINT32_MAX || batch > UINT32_MAX)
        return spk__fail(m->ctx, SPK_ERROR_TOO_LARGE, "a forward of batch %lld and sequence length %lld is too large",
                         (long long)batch, (long long)seq);
    return SPK_OK;
}

/* Fills the mean-mode weights (1 / seq) for a forward of this shape. */
spk_status spk__mean_weights(spk_model *m, int64_t batch, int64_t seq) {
    if (m->cfg.output_mode != SPK_OUTPUT_MEAN) return SPK_OK;
    float *w = spk__malloc((size_t)m->mean_weights->count * sizeof *w);
    if (!w) return spk__fail(m->ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (int64_t i = 0; i < m->mean_weights->count; i++) w[i] = i < batch * seq ? 1.0f / (float)seq : 0.0f;
    spk_status s = spk_tensor_upload(m->mean_weights, w, m->mean_weights->count);
    free(w);
    return s;
}

/* The recording for this shape and mode, recorded now if not cached (evicting the least recently
 * used). */
static spk_status spk__model_recording_for(spk_model *m, int64_t batch, int64_t seq, spk__model_recording **out) {
    spk_context *ctx = m->ctx;
    spk__model_recording *r = NULL;
    for (uint32_t i = 0; i < SPK__MODEL_RECORDINGS && !r; i++) {
        spk__model_recording *c = &m->recordings[i];
        if (c->valid && c->batch == batch && c->seq == seq && c->mode == m->cfg.output_mode) r = c;
    }
    if (!r) {
        r = &m->recordings[0];
        for (uint32_t i = 1; i < SPK__MODEL_RECORDINGS; i++)
            if (m->recordings[i].last_use < r->last_use) r = &m->recordings[i];
        spk_status s = spk__mean_weights(m, batch, seq);
        if (s != SPK_OK) return s;
        pthread_mutex_lock(&ctx->lock);
        r->valid = false;
        if (!r->rec.cmd) s = spk__recording_init(ctx, &r->rec, m->profile ? SPK__MODEL_PROFILE_DISPATCHES : 0);
        if (s == SPK_OK) s = spk__recording_begin(ctx, &r->rec, true);
        int64_t in_shape[3] = {batch, seq, m->cfg.embed_dim}, out_shape[3];
        int out_ndim;
        spk_model_output_shape(m, batch, seq, &out_ndim, out_shape);
        spk_tensor input = spk__view(m->input, 3, in_shape), output = spk__view(m->output, out_ndim, out_shape);
        VkDeviceSize in_bytes = input.ref.size, out_bytes = output.ref.size;
        if (s == SPK_OK && m->staging.block) {
            spk__buffer_ref staged = {m->staging.block->buffer, m->staging.offset, in_bytes};
            s = spk__copy(ctx, staged, input.ref);
        }
        if (s == SPK_OK) s = spk__model_record(m, &input, batch, seq, &output, NULL, NULL);
        if (s == SPK_OK && m->staging.block) {
            spk__buffer_ref staged = {m->staging.block->buffer, m->staging.offset + in_bytes, out_bytes};
            s = spk__copy(ctx, output.ref, staged);
        }
        if (s == SPK_OK) s = spk__recording_end(ctx, &r->rec);
        ctx->rec = &ctx->own;
        pthread_mutex_unlock(&ctx->lock);
        if (s != SPK_OK) return s;
        *r = (spk__model_recording){r->rec, batch, seq, m->cfg.output_mode, true, 0};
    }
    r->last_use = ++m->clock;
    *out = r;
    return SPK_OK;
}

spk_status spk_model_forward(spk_model *m, const float *input, int64_t batch, int64_t seq_len, float *output) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    if (m->training) m->training->forget(m, true);
    spk_context *ctx = m->ctx;
    if (!input || !output) return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "forward: input or output is NULL");
    spk_status s = spk__check_forward_size(m, batch, seq_len);
    if (s != SPK_OK) return s;
    if (batch * seq_len > m->rows) {
        s = spk__activations_create(m, batch * seq_len);
        if (s != SPK_OK) return s;
    }
    spk__model_recording *r;
    s = spk__model_recording_for(m, batch, seq_len, &r);
    if (s != SPK_OK) return s;

    int out_ndim;
    int64_t out_shape[3];
    size_t in_bytes = (size_t)(batch * seq_len * m->cfg.embed_dim) * sizeof(float);
    size_t out_bytes = (size_t)spk_model_output_shape(m, batch, seq_len, &out_ndim, out_shape) * sizeof(float);
    unsigned char *in_dst, *out_src;
    if (m->staging.block) {
        in_dst = (unsigned char *)m->staging.block->mapped + m->staging.offset;
        out_src = in_dst + in_bytes;
    } else {
        in_dst = (unsigned char *)m->input->alloc.block->mapped + m->input->alloc.offset;
        out_src = (unsigned char *)m->output->alloc.block->mapped + m->output->alloc.offset;
    }
    pthread_mutex_lock(&ctx->lock);
    memcpy(in_dst, input, in_bytes);
    s = spk__recording_submit(ctx, &r->rec);
    if (s == SPK_OK) memcpy(output, out_src, out_bytes);
    pthread_mutex_unlock(&ctx->lock);
    return s;
}

spk_status spk__forward_tensors_prepare(spk_model *m, const spk_tensor *input, spk_tensor *output) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    if (m->training) m->training->forget(m, true);
    spk_context *ctx = m->ctx;
    spk_status s = spk__check_tensor(ctx, input, "model input");
    if (s == SPK_OK) s = spk__check_tensor(ctx, output, "model output");
    if (s == SPK_OK && (input->ndim != 3 || input->shape[2] != m->cfg.embed_dim))
        s = spk__fail(ctx, SPK_ERROR_SHAPE, "model input must be [batch, seq_len, %d]", m->cfg.embed_dim);
    if (s != SPK_OK) return s;
    int64_t batch = input->shape[0], seq = input->shape[1];
    s = spk__check_forward_size(m, batch, seq);
    int out_ndim;
    int64_t out_shape[3];
    spk_model_output_shape(m, batch, seq, &out_ndim, out_shape);
    if (s == SPK_OK) s = spk__check_shape(ctx, output, out_ndim, out_shape, "model output");
    if (s == SPK_OK && spk__overlap(input, output))
        s = spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "model input and output overlap");
    if (s == SPK_OK && batch * seq > m->rows) s = spk__activations_create(m, batch * seq);
    if (s == SPK_OK) s = spk__mean_weights(m, batch, seq);
    return s;
}

spk_status spk_model_forward_tensors(spk_model *m, const spk_tensor *input, spk_tensor *output) {
    spk_status s = spk__forward_tensors_prepare(m, input, output);
    if (s != SPK_OK) return s;
    spk_context *ctx = m->ctx;
    pthread_mutex_lock(&ctx->lock);
    s = spk__begin(ctx);
    if (s == SPK_OK) s = spk__model_record(m, input, input->shape[0], input->shape[1], output, NULL, NULL);
    if (s == SPK_OK) s = spk__submit_and_wait(ctx);
    pthread_mutex_unlock(&ctx->lock);
    return s;
}

spk_status spk_model_record_forward(spk_model *m, VkCommandBuffer cmd, const spk_tensor *input, spk_tensor *output) {
    spk_status s = spk__forward_tensors_prepare(m, input, output);
    if (s == SPK_OK) s = spk__record_app_begin(m->ctx, cmd);
    if (s != SPK_OK) return s;
    s = spk__model_record(m, input, input->shape[0], input->shape[1], output, NULL, NULL);
    spk__record_app_end(m->ctx);
    return s;
}

uint32_t spk__model_dispatch_times(spk_model *m, uint64_t *ns, const char **shaders, uint32_t max) {
    const spk__model_recording *last = NULL;
    for (uint32_t i = 0; i < SPK__MODEL_RECORDINGS; i++)
        if (m->recordings[i].valid && (!last || m->recordings[i].last_use > last->last_use)) last = &m->recordings[i];
    return last ? spk__recording_dispatch_times(m->ctx, &last->rec, ns, shaders, max) : 0;
}
