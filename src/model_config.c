/* The model's configuration: defaults, validation, the attention normalizers' names, and reading
 * it from a weights file. Pure C with no device, so the safetensors fuzzer runs it too. */
#include "model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention_plan.h"
#include "safetensors.h"

spk_model_config spk_model_config_default(int embed_dim) {
    return (spk_model_config){
        .embed_dim = embed_dim,
        .hidden_size = 256,
        .num_heads = 4,
        .num_layers = 6,
        .dropout = 0.1f,
        .window_size = 60,
        .output_mode = SPK_OUTPUT_LAST,
    };
}

static const char *const spk__normalizer_names[] = {"softpick", "rectified-softpick", "softmax"};

const char *spk_normalizer_name(spk_normalizer normalizer) {
    return (unsigned)normalizer < 3 ? spk__normalizer_names[normalizer] : NULL;
}

spk_status spk__check_normalizer(spk_context *ctx, spk_normalizer normalizer) {
    if (spk_normalizer_name(normalizer)) return SPK_OK;
    return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "unknown normalizer %d (" SPK__NORMALIZERS ")", (int)normalizer);
}

spk_status spk_normalizer_parse(const char *name, spk_normalizer *out) {
    for (int i = 0; i < 3 && name; i++)
        if (!strcmp(name, spk__normalizer_names[i])) return *out = (spk_normalizer)i, SPK_OK;
    return SPK_ERROR_INVALID_ARGUMENT;
}

int spk_model_output_size(const spk_model_config *config) {
    return !config ? 0 : config->num_outputs > 0 ? config->num_outputs : config->hidden_size;
}

spk_status spk_model_config_check(const spk_model_config *c, char *error, size_t error_size) {
    const char *why = NULL;
    char buf[160];
    if (!c) why = "the configuration is NULL";
    else if (c->embed_dim <= 0) why = "embed_dim must be > 0";
    else if (c->hidden_size <= 0) why = "hidden_size must be > 0";
    else if (c->num_heads <= 0) why = "num_heads must be > 0";
    else if (c->num_layers <= 0) why = "num_layers must be > 0";
    else if (c->num_outputs < 0) why = "num_outputs must be >= 0 (0: no output head)";
    else if (c->window_size <= 0) why = "window_size must be > 0";
    else if (!(c->dropout >= 0.0f && c->dropout < 1.0f)) why = "dropout must be in [0, 1)";
    else if ((unsigned)c->output_mode > SPK_OUTPUT_MEAN) why = "unknown output mode";
    else if (!spk_normalizer_name(c->attention))
        why = "unknown attention normalizer (" SPK__NORMALIZERS ")";
    else if (!spk_dtype_size(c->weights_dtype)) why = "unknown weights_dtype";
    else if (c->activation_dtype != SPK_DTYPE_F32 && c->activation_dtype != SPK_DTYPE_F16)
        why = "activation_dtype must be f32 or f16";
    else if (c->hidden_size % c->num_heads != 0) {
        snprintf(buf, sizeof buf, "hidden_size %d is not divisible by num_heads %d", c->hidden_size, c->num_heads);
        why = buf;
    } else if (c->hidden_size / c->num_heads > SPK__ATTENTION_MAX_HEAD_DIM) {
        snprintf(buf, sizeof buf, "head size %d (hidden_size / num_heads) exceeds the supported %d",
                 c->hidden_size / c->num_heads, SPK__ATTENTION_MAX_HEAD_DIM);
        why = buf;
    } else if ((int64_t)c->hidden_size * 4 > INT32_MAX / 4) {
        why = "hidden_size is too large";
    }
    if (!why) return SPK_OK;
    if (error && error_size) snprintf(error, error_size, "%s", why);
    return SPK_ERROR_INVALID_ARGUMENT;
}

/* A metadata integer: decimal, positive, nothing else. */
static spk_status spk__metadata_int(const spk__safetensors *st, const char *key, int *out, char *error,
                                    size_t error_size) {
    const char *v = spk__safetensors_metadata(st, key);
    if (!v) return SPK_OK;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n <= 0 || n > INT32_MAX)
        return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "metadata %s = '%.32s' is not a positive integer",
                                  key, v);
    *out = (int)n;
    return SPK_OK;
}

spk_status spk__model_config_from_safetensors(const spk__safetensors *st, spk_model_config *c, char *error,
                                              size_t error_size) {
    const spk__st_tensor *gamma = spk__safetensors_find(st, "final_norm.gamma");
    const spk__st_tensor *proj = spk__safetensors_find(st, "input_projection.kernel");
    int hidden = gamma && gamma->ndim == 1 && gamma->shape[0] <= INT32_MAX ? (int)gamma->shape[0] : 256;
    *c = spk_model_config_default(proj && proj->ndim == 2 && proj->shape[0] <= INT32_MAX ? (int)proj->shape[0]
                                                                                           : hidden);
    c->hidden_size = hidden;
    c->num_layers = 0;
    char name[64];
    do snprintf(name, sizeof name, "softpick_block_%d_attn_norm.gamma", ++c->num_layers);
    while (c->num_layers < 100000 && spk__safetensors_find(st, name));
    c->num_layers = c->num_layers > 1 ? c->num_layers - 1 : 6;
    const spk__st_tensor *head = spk__safetensors_find(st, "output_head.kernel");
    c->num_outputs = head && head->ndim == 2 && head->shape[1] <= INT32_MAX ? (int)head->shape[1] : 0;
    spk_status s = spk__metadata_int(st, "embed_dim", &c->embed_dim, error, error_size);
    if (s == SPK_OK) s = spk__metadata_int(st, "hidden_size", &c->hidden_size, error, error_size);
    if (s == SPK_OK) s = spk__metadata_int(st, "num_heads", &c->num_heads, error, error_size);
    if (s == SPK_OK) s = spk__metadata_int(st, "num_layers", &c->num_layers, error, error_size);
    if (s == SPK_OK) s = spk__metadata_int(st, "window_size", &c->window_size, error, error_size);
    if (s == SPK_OK) s = spk__metadata_int(st, "num_outputs", &c->num_outputs, error, error_size);
    const char *attention = spk__safetensors_metadata(st, "attention");
    if (s == SPK_OK && attention && spk_normalizer_parse(attention, &c->attention) != SPK_OK)
        s = spk__error_message(error, error_size, SPK_ERROR_FORMAT,
                               "metadata attention = '%.32s' is not softpick, rectified-softpick or softmax", attention);
    const char *dropout = spk__safetensors_metadata(st, "dropout");
    if (s == SPK_OK && dropout) {
        char *end;
        double d = strtod(dropout, &end);
        if (end == dropout || *end || !(d >= 0.0 && d < 1.0))
            s = spk__error_message(error, error_size, SPK_ERROR_FORMAT, "metadata dropout = '%.32s' is not a rate in [0, 1)",
                                   dropout);
        c->dropout = (float)d;
    }
    return s;
}

