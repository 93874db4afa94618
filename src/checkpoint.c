/* Checkpoints (SPEC.md sections 3 and 6): trained weights and gradients as safetensors with the
 * configuration in the metadata, and the optimizer state (AdamW's moments and the step count) in
 * a second file, so that a run resumes exactly. */
#include "model.h"
#include "fault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

/* Downloads the parameters of each of `count` weight sets (named prefixes[i] + name) and writes
 * them to `path` with the model's configuration (and `step`, when >= 0) in the metadata. */
static spk_status spk__save(spk_model *m, const spk__weights *const *sets, const char *const *prefixes, uint32_t count,
                            double step, const char *path) {
    spk_context *ctx = m->ctx;
    if (!path) return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "the output path is NULL");
    spk__param *params[2] = {NULL, NULL};
    uint32_t n = 0, total = 0;
    spk_status s = SPK_OK;
    for (uint32_t k = 0; k < count && s == SPK_OK; k++) {
        n = spk__model_params(m, sets[k], &params[k]);
        if (!n) s = spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
        total += n;
    }
    spk__st_output *outs = s == SPK_OK ? spk__calloc(total, sizeof *outs) : NULL;
    char (*names)[192] = s == SPK_OK ? spk__calloc(total, sizeof *names) : NULL;
    float **datas = s == SPK_OK ? spk__calloc(total, sizeof *datas) : NULL;
    if (s == SPK_OK && (!outs || !names || !datas)) s = spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (uint32_t k = 0, o = 0; k < count && s == SPK_OK; k++)
        for (uint32_t i = 0; i < n && s == SPK_OK; i++, o++) {
            const spk__param *p = &params[k][i];
            snprintf(names[o], sizeof names[o], "%s%s", prefixes[k], p->name);
            datas[o] = spk__malloc((size_t)(p->rows * p->cols) * sizeof *datas[o]);
            s = datas[o] ? spk__param_download(m, p, datas[o]) : spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
            outs[o] = (spk__st_output){names[o], p->ndim, {p->ndim == 2 ? p->rows : p->cols, p->cols}, datas[o]};
        }
    const spk_model_config *c = &m->cfg;
    char values[9][32];
    const char *meta[18];
    uint32_t meta_count = 0;
    const char *keys[9] = {"embed_dim", "hidden_size", "num_heads", "num_layers", "window_size", "num_outputs", "dropout", "step",
                           "attention"};
    snprintf(values[0], 32, "%d", c->embed_dim), snprintf(values[1], 32, "%d", c->hidden_size);
    snprintf(values[2], 32, "%d", c->num_heads), snprintf(values[3], 32, "%d", c->num_layers);
    snprintf(values[4], 32, "%d", c->window_size), snprintf(values[5], 32, "%d", c->num_outputs);
    snprintf(values[6], 32, "%.9g", (double)c->dropout), snprintf(values[7], 32, "%.0f", step);
    snprintf(values[8], 32, "%s", spk_normalizer_name(c->attention));
    for (uint32_t i = 0; i < 9; i++) {
        if ((i == 5 && c->num_outputs <= 0) || (i == 7 && step < 0) || (i == 8 && c->attention == SPK_NORMALIZER_SOFTPICK))
            continue;
        meta[2 * meta_count] = keys[i], meta[2 * meta_count + 1] = values[i], meta_count++;
    }
    char error[SPK__ERROR_LEN];
    if (s == SPK_OK && spk__safetensors_write(path, meta, meta_count, outs, total, error, sizeof error) != SPK_OK)
        s = spk__fail(ctx, SPK_ERROR_IO, "%s", error);
    for (uint32_t i = 0; datas && i < total; i++) free(datas[i]);
    free(datas), free(names), free(outs), free(params[0]), free(params[1]);
    return s;
}

spk_status spk_model_save_safetensors(spk_model *m, const char *path) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    const spk__weights *sets[1] = {&m->w};
    const char *prefixes[1] = {""};
    return spk__save(m, sets, prefixes, 1, -1, path);
}

spk_status spk_model_save_gradients(spk_model *m, const char *path) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    spk_status s = m->train ? SPK_OK : spk_model_zero_grad(m);
    if (s != SPK_OK) return s;
    const spk__weights *sets[1] = {&m->train->grad};
    const char *prefixes[1] = {""};
    return spk__save(m, sets, prefixes, 1, -1, path);
}

spk_status spk_model_save_state(spk_model *m, const char *path) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    spk_status s = m->train ? SPK_OK : spk_model_zero_grad(m);
    if (s == SPK_OK) s = spk__optimizer_prepare(m);
    float state[8];
    if (s == SPK_OK) s = spk_tensor_download(m->train->opt_state, state, 8);
    if (s != SPK_OK) return s;
    const spk__weights *sets[2] = {&m->train->moment1, &m->train->moment2};
    const char *prefixes[2] = {"exp_avg.", "exp_avg_sq."};
    return spk__save(m, sets, prefixes, 2, state[0], path);
}

spk_status spk_model_load_state(spk_model *m, const char *path) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    spk_context *ctx = m->ctx;
    if (!path) return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "the state path is NULL");
    spk_status s = m->train ? SPK_OK : spk_model_zero_grad(m);
    if (s == SPK_OK) s = spk__optimizer_prepare(m);
    if (s != SPK_OK) return s;
    spk__safetensors st;
    char error[SPK__ERROR_LEN];
    s = spk__safetensors_read(path, &st, error, sizeof error);
    if (s != SPK_OK) return spk__fail(ctx, s, "%s: %s", path, error);
    const char *step_text = spk__safetensors_metadata(&st, "step");
    char *end = NULL;
    double step = step_text ? strtod(step_text, &end) : -1;
    if (!step_text || end == step_text || *end || !(step >= 0 && step <= 16777216.0))
        s = spk__fail(ctx, SPK_ERROR_FORMAT, "%s: the optimizer state's metadata lacks a valid step count", path);
    /* Every second moment must match its first moment's shape: then the first load (which checks
     * all of its own tensors before uploading any) and the second cannot fail halfway. */
    for (uint32_t i = 0; i < st.tensor_count && s == SPK_OK; i++) {
        const spk__st_tensor *t = &st.tensors[i];
        if (strncmp(t->name, "exp_avg.", 8) != 0) continue;
        char twin[200];
        snprintf(twin, sizeof twin, "exp_avg_sq.%s", t->name + 8);
        const spk__st_tensor *u = spk__safetensors_find(&st, twin);
        if (!u || u->ndim != t->ndim || memcmp(u->shape, t->shape, (size_t)t->ndim * sizeof *t->shape) != 0)
            s = spk__fail(ctx, SPK_ERROR_FORMAT, "%s: '%s' has no matching '%s'", path, t->name, twin);
    }
    if (s == SPK_OK) s = spk__load_params(m, &m->train->moment1, &st, "exp_avg.");
    if (s == SPK_OK) s = spk__load_params(m, &m->train->moment2, &st, "exp_avg_sq.");
    float state[8] = {(float)step, 1.0f}; /* the rest is recomputed at every step */
    if (s == SPK_OK) s = spk_tensor_upload(m->train->opt_state, state, 8);
    if (s == SPK_OK) m->train->steps = (uint64_t)step;
    spk__safetensors_free(&st);
    return s;
}
