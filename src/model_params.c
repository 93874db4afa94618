/* The model's parameters (SPEC.md section 3): the file format's names and where each lives in
 * the model, random initialisation, and loading from safetensors (every entry checked before any
 * upload, so a failed load changes nothing). */
#include "model.h"
#include "fault.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

/* ---- parameters --------------------------------------------------------------------------- */

static void spk__param_dense(spk__param **p, const char *name, spk_tensor *kernel, spk_tensor *bias, int64_t in,
                             int64_t out, int64_t column) {
    spk__param *k = (*p)++, *b = (*p)++;
    *k = (spk__param){.tensor = kernel, .ndim = 2, .rows = in, .cols = out, .column = column, .init = SPK__INIT_GLOROT};
    *b = (spk__param){.tensor = bias, .ndim = 1, .rows = 1, .cols = out, .column = column, .init = SPK__INIT_ZERO};
    snprintf(k->name, sizeof k->name, "%s.kernel", name);
    snprintf(b->name, sizeof b->name, "%s.bias", name);
}

static void spk__param_norm(spk__param **p, const char *name, const spk__norm_params *n, int64_t hidden) {
    spk__param *g = (*p)++, *b = (*p)++;
    *g = (spk__param){.tensor = n->gamma, .ndim = 1, .rows = 1, .cols = hidden, .init = SPK__INIT_ONE};
    *b = (spk__param){.tensor = n->beta, .ndim = 1, .rows = 1, .cols = hidden, .init = SPK__INIT_ZERO};
    snprintf(g->name, sizeof g->name, "%s.gamma", name);
    snprintf(b->name, sizeof b->name, "%s.beta", name);
}

/* Lists the parameters (SPEC.md section 3 names); returns how many, or 0 when out of memory. */
uint32_t spk__model_params(const spk_model *m, const spk__weights *w, spk__param **out) {
    int64_t h = m->cfg.hidden_size, e = m->cfg.embed_dim;
    uint32_t count = (uint32_t)spk_model_parameter_count(m); /* w has the model's layout */
    spk__param *params = spk__calloc(count, sizeof *params), *p = params;
    *out = params;
    if (!params) return 0;
    if (w->input_projection.kernel)
        spk__param_dense(&p, "input_projection", w->input_projection.kernel, w->input_projection.bias, e, h, 0);
    for (int l = 0; l < m->cfg.num_layers; l++) {
        const spk__layer *b = &w->layers[l];
        char name[64];
#define SPK__NAME(suffix) (snprintf(name, sizeof name, "softpick_block_%d_%s", l + 1, suffix), name)
        spk__param_norm(&p, SPK__NAME("attn_norm"), &b->attn_norm, h);
        spk__param_dense(&p, SPK__NAME("attn_q_proj"), b->qkv.kernel, b->qkv.bias, h, h, 0);
        spk__param_dense(&p, SPK__NAME("attn_k_proj"), b->qkv.kernel, b->qkv.bias, h, h, h);
        spk__param_dense(&p, SPK__NAME("attn_v_proj"), b->qkv.kernel, b->qkv.bias, h, h, 2 * h);
        spk__param_dense(&p, SPK__NAME("attn_out_proj"), b->out.kernel, b->out.bias, h, h, 0);
        spk__param_norm(&p, SPK__NAME("ffn_norm"), &b->ffn_norm, h);
        spk__param_dense(&p, SPK__NAME("ffn_up"), b->up.kernel, b->up.bias, h, 4 * h, 0);
        spk__param_dense(&p, SPK__NAME("ffn_down"), b->down.kernel, b->down.bias, 4 * h, h, 0);
#undef SPK__NAME
    }
    spk__param_norm(&p, "final_norm", &w->final_norm, h);
    if (w->head.kernel)
        spk__param_dense(&p, "output_head", w->head.kernel, w->head.bias, h, m->cfg.num_outputs, 0);
    return count;
}

int spk_model_parameter_count(const spk_model *m) {
    return m ? (m->w.input_projection.kernel ? 2 : 0) + 16 * m->cfg.num_layers + 2 + (m->w.head.kernel ? 2 : 0) : 0;
}

spk_status spk_model_parameter_info(const spk_model *m, int index, char *name, size_t name_size, int *ndim,
                                    int64_t shape[2]) {
    if (!m || !name || !name_size || !ndim || !shape) return SPK_ERROR_INVALID_ARGUMENT;
    if (index < 0 || index >= spk_model_parameter_count(m))
        return spk__fail(m->ctx, SPK_ERROR_INVALID_ARGUMENT, "parameter index %d is outside 0..%d", index,
                         spk_model_parameter_count(m) - 1);
    spk__param *params;
    if (!spk__model_params(m, &m->w, &params)) return spk__fail(m->ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    const spk__param *p = &params[index];
    snprintf(name, name_size, "%s", p->name);
    *ndim = p->ndim;
    shape[0] = p->ndim == 2 ? p->rows : p->cols;
    shape[1] = p->ndim == 2 ? p->cols : 0;
    free(params);
    return SPK_OK;
}

/* Host images of the destination tensors in their own dtypes, filled parameter by parameter (q, k
 * and v side by side), then uploaded as they are: a file that stores the model's dtype is never
 * widened to float32 on the way. */
typedef struct spk__images {
    spk_tensor **tensors;
    unsigned char **data;
    uint32_t count;
} spk__images;

static unsigned char *spk__image_of(spk__images *im, spk_tensor *t) {
    for (uint32_t i = 0; i < im->count; i++)
        if (im->tensors[i] == t) return im->data[i];
    unsigned char *data = spk__malloc((size_t)t->count * spk_dtype_size(t->dtype));
    uint32_t n = im->count;
    spk_tensor **tensors = spk__realloc(im->tensors, (n + 1) * sizeof *tensors);
    if (tensors) im->tensors = tensors;
    unsigned char **datas = tensors ? spk__realloc(im->data, (n + 1) * sizeof *datas) : NULL;
    if (datas) im->data = datas;
    if (!data || !tensors || !datas) {
        free(data);
        return NULL;
    }
    im->tensors[n] = t;
    im->data[n] = data;
    im->count++;
    return data;
}

static void spk__images_free(spk__images *im) {
    for (uint32_t i = 0; i < im->count; i++) free(im->data[i]);
    free(im->tensors);
    free(im->data);
}

/* Writes a [rows, cols] parameter (`values` of dtype `from`) at its place in its destination
 * image, converting to the destination's dtype (a copy when they are the same). */
static void spk__image_put(unsigned char *image, const spk__param *p, const void *values, spk_dtype from) {
    spk_dtype to = p->tensor->dtype;
    size_t ds = spk_dtype_size(to), vs = spk_dtype_size(from);
    int64_t stride = p->tensor->shape[p->tensor->ndim - 1];
    for (int64_t r = 0; r < p->rows; r++)
        spk_convert((const unsigned char *)values + (size_t)(r * p->cols) * vs, from,
                    image + (size_t)(r * stride + p->column) * ds, to, (size_t)p->cols);
}

spk_status spk__param_download(spk_model *m, const spk__param *p, float *out) {
    float *all = spk__malloc((size_t)p->tensor->count * sizeof *all);
    if (!all) return spk__fail(m->ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory reading '%s'", p->name);
    spk_status s = spk_tensor_download(p->tensor, all, p->tensor->count);
    int64_t stride = p->tensor->shape[p->tensor->ndim - 1];
    for (int64_t r = 0; s == SPK_OK && r < p->rows; r++)
        memcpy(out + r * p->cols, all + r * stride + p->column, (size_t)p->cols * sizeof *out);
    free(all);
    return s;
}

static spk_status spk__images_upload(spk__images *im) {
    spk_status s = SPK_OK;
    for (uint32_t i = 0; i < im->count && s == SPK_OK; i++) {
        const spk_tensor *t = im->tensors[i];
        s = spk_tensor_upload_raw(im->tensors[i], im->data[i], (size_t)t->count * spk_dtype_size(t->dtype));
    }
    return s;
}

/* Room for the largest parameter's values. */
static float *spk__param_buffer(const spk__param *params, uint32_t count) {
    int64_t max = 1;
    for (uint32_t i = 0; i < count; i++)
        if (params[i].rows * params[i].cols > max) max = params[i].rows * params[i].cols;
    return spk__malloc((size_t)max * sizeof(float));
}

/* splitmix64: a small, well-mixed generator; one stream per parameter. */
static uint64_t spk__splitmix(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

spk_status spk_model_init_random(spk_model *m, uint64_t seed) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    spk__param *params;
    uint32_t count = spk__model_params(m, &m->w, &params);
    spk__images im = {0};
    float *values = count ? spk__param_buffer(params, count) : NULL, *v = values;
    spk_status s = values ? SPK_OK : SPK_ERROR_OUT_OF_HOST_MEMORY;
    for (uint32_t i = 0; i < count && s == SPK_OK; i++) {
        const spk__param *p = &params[i];
        unsigned char *image = spk__image_of(&im, p->tensor);
        if (!image) {
            s = SPK_ERROR_OUT_OF_HOST_MEMORY;
            break;
        }
        /* Glorot uniform: U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out)). */
        double limit = sqrt(6.0 / (double)(p->rows + p->cols));
        uint64_t state = seed ^ (0xD1B54A32D192ED03ull * (i + 1));
        for (int64_t j = 0; j < p->rows * p->cols; j++) {
            double u = (double)(spk__splitmix(&state) >> 11) * 0x1p-53; /* [0, 1) */
            v[j] = p->init == SPK__INIT_GLOROT ? (float)((2.0 * u - 1.0) * limit) : p->init == SPK__INIT_ONE ? 1.0f : 0.0f;
        }
        spk__image_put(image, p, v, SPK_DTYPE_F32);
    }
    if (s == SPK_OK) s = spk__images_upload(&im);
    else spk__fail(m->ctx, s, "out of host memory initializing the model");
    free(values);
    spk__images_free(&im);
    free(params);
    return s;
}

spk_status spk__load_params(spk_model *m, spk__weights *w, const spk__safetensors *st, const char *prefix) {
    char full[160];
#define SPK__FULL(p) (snprintf(full, sizeof full, "%s%s", prefix ? prefix : "", (p)->name), full)
    spk_context *ctx = m->ctx;
    spk__param *params;
    uint32_t count = spk__model_params(m, w, &params);
    if (!count) return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    spk_status s = SPK_OK;
    /* Everything is checked before anything is uploaded, so a bad file changes nothing. */
    for (uint32_t i = 0; i < count && s == SPK_OK; i++) {
        const spk__param *p = &params[i];
        const spk__st_tensor *t = spk__safetensors_find(st, SPK__FULL(p));
        int64_t want[2] = {p->rows, p->cols};
        const int64_t *want_shape = p->ndim == 2 ? want : want + 1;
        if (!t) {
            s = spk__fail(ctx, SPK_ERROR_FORMAT, prefix ? "the optimizer state lacks tensor '%s'" : "the weights lack tensor '%s'",
                          full);
        } else if (t->ndim != p->ndim || memcmp(t->shape, want_shape, (size_t)p->ndim * sizeof *want_shape) != 0) {
            char got[96] = "";
            for (int d = 0; d < t->ndim; d++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
            s = p->ndim == 2 ? spk__fail(ctx, SPK_ERROR_FORMAT, "tensor '%s' has shape [%s], expected [%lld, %lld]",
                                         full, got, (long long)p->rows, (long long)p->cols)
                             : spk__fail(ctx, SPK_ERROR_FORMAT, "tensor '%s' has shape [%s], expected [%lld]",
                                         full, got, (long long)p->cols);
        }
    }
    /* A weights file holds exactly the parameters; an optimizer state file holds them twice. */
    if (s == SPK_OK && !prefix && st->tensor_count != count) {
        for (uint32_t i = 0; i < st->tensor_count && s == SPK_OK; i++) {
            bool known = false;
            for (uint32_t j = 0; j < count && !known; j++) known = strcmp(st->tensors[i].name, params[j].name) == 0;
            if (!known)
                s = spk__fail(ctx, SPK_ERROR_FORMAT, "the weights have an unexpected tensor '%s'",
                              st->tensors[i].name);
        }
    }
    spk__images im = {0};
    for (uint32_t i = 0; i < count && s == SPK_OK; i++) {
        const spk__param *p = &params[i];
        unsigned char *image = spk__image_of(&im, p->tensor);
        const spk__st_tensor *t = spk__safetensors_find(st, SPK__FULL(p));
        if (!image) s = spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory loading '%s'", p->name);
        else spk__image_put(image, p, st->data + t->begin, t->dtype);
    }
    if (s == SPK_OK) s = spk__images_upload(&im);
    spk__images_free(&im);
    free(params);
    return s;
#undef SPK__FULL
}

spk_status spk_model_load_safetensors(spk_model *m, const char *path) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    if (!path) return spk__fail(m->ctx, SPK_ERROR_INVALID_ARGUMENT, "the weights path is NULL");
    spk__safetensors st;
    char error[SPK__ERROR_LEN];
    spk_status s = spk__safetensors_read(path, &st, error, sizeof error);
    if (s != SPK_OK) return spk__fail(m->ctx, s, "%s: %s", path, error);
    s = spk__load_params(m, &m->w, &st, NULL);
    spk__safetensors_free(&st);
    return s;
}

spk_status spk_model_create_from_safetensors(spk_context *ctx, const char *path, const spk_model_config *overrides,
                                             spk_model **out) {
    if (!out) return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "spk_model_create_from_safetensors: out is NULL");
    *out = NULL;
    if (!ctx) return SPK_ERROR_INVALID_ARGUMENT;
    if (!path) return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "the weights path is NULL");
    spk__safetensors st;
    char error[SPK__ERROR_LEN];
    spk_status s = spk__safetensors_read(path, &st, error, sizeof error);
    if (s != SPK_OK) return spk__fail(ctx, s, "%s: %s", path, error);
    spk_model_config c;
    s = spk__model_config_from_safetensors(&st, &c, error, sizeof error);
    if (s != SPK_OK) spk__fail(ctx, s, "%s: %s", path, error);
    if (s == SPK_OK && overrides) {
        if (overrides->embed_dim) c.embed_dim = overrides->embed_dim;
        if (overrides->hidden_size) c.hidden_size = overrides->hidden_size;
        if (overrides->num_heads) c.num_heads = overrides->num_heads;
        if (overrides->num_layers) c.num_layers = overrides->num_layers;
        if (overrides->window_size) c.window_size = overrides->window_size;
        if (overrides->dropout) c.dropout = overrides->dropout;
        if (overrides->num_outputs) c.num_outputs = overrides->num_outputs;
        if (overrides->weights_dtype) c.weights_dtype = overrides->weights_dtype;
        if (overrides->activation_dtype) c.activation_dtype = overrides->activation_dtype;
        if (overrides->attention) c.attention = overrides->attention;
        c.output_mode = overrides->output_mode;
    }
    spk_model *m = NULL;
    if (s == SPK_OK) s = spk_model_create(ctx, &c, &m);
    if (s == SPK_OK) s = spk__load_params(m, &m->w, &st, NULL);
    spk__safetensors_free(&st);
    if (s != SPK_OK) {
        /* Keep the message: destroying the model does not touch it. */
        spk_model_destroy(m);
        return s;
    }
    *out = m;
    return SPK_OK;
}
