/* The model's internals (internal): its parameters, activation buffers and recorded forwards.
 * The benchmark reaches the profiling hooks through this header. */
#ifndef SOFTPICK_MODEL_H
#define SOFTPICK_MODEL_H

#include "internal.h"

typedef struct spk__dense_params {
    spk_tensor *kernel, *bias; /* [in, out], [out] */
} spk__dense_params;

typedef struct spk__norm_params {
    spk_tensor *gamma, *beta;
} spk__norm_params;

typedef struct spk__layer {
    spk__norm_params attn_norm;
    spk__dense_params qkv; /* q, k and v projections side by side: [hidden, 3 hidden] */
    spk__dense_params out;
    spk__norm_params ffn_norm;
    spk__dense_params up, down;
} spk__layer;

/* A forward recorded for one (batch, seq_len, output mode), replayed by spk_model_forward. */
typedef struct spk__model_recording {
    spk__recording rec;
    int64_t batch, seq;
    spk_output_mode mode;
    bool valid;
    uint64_t last_use;
} spk__model_recording;

#define SPK__MODEL_RECORDINGS 4
#define SPK__MODEL_PROFILE_DISPATCHES 1024

struct spk_model {
    spk_context *ctx;
    spk_model_config cfg;
    spk__dense_params input_projection; /* NULL tensors when embed_dim == hidden_size */
    spk__layer *layers;
    spk__norm_params final_norm;

    /* Activations for `rows` positions (batch * seq_len), grown on demand. */
    int64_t rows;
    spk_tensor *input, *x, *normed, *qkv, *attended, *ffn, *last, *output, *mean_weights;
    spk__allocation staging; /* input then output, where tensors are not host-visible */

    spk__model_recording recordings[SPK__MODEL_RECORDINGS];
    uint64_t clock;
    bool profile; /* benchmark: later recordings time every dispatch */
};

struct spk__safetensors;
/* The configuration a weights file describes: its __metadata__, else what the tensor shapes say,
 * else the defaults (model_config.c). On failure `error` says why. */
spk_status spk__model_config_from_safetensors(const struct spk__safetensors *st, spk_model_config *c, char *error,
                                              size_t error_size);

/* Per-dispatch GPU nanoseconds (and shader names, if `shaders` is not NULL) of the most recent
 * forward (the model must have `profile` set before that shape was first recorded); returns how
 * many were timed. */
uint32_t spk__model_dispatch_times(spk_model *m, uint64_t *ns, const char **shaders, uint32_t max);

#endif
