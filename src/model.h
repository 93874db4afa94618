/* The model's internals (internal): its parameters, activation buffers and recorded forwards.
 * The benchmark reaches the profiling hooks through this header. */
#ifndef SOFTPICK_MODEL_H
#define SOFTPICK_MODEL_H

#include "internal.h"
#include "tuning.h"

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

/* Every parameter tensor of the model. Gradients and the optimizer's moments are spk__weights
 * too: one layout for all of them (llm.c's ParameterTensors). */
typedef struct spk__weights {
    spk__dense_params input_projection; /* NULL tensors when embed_dim == hidden_size */
    spk__layer *layers;                 /* num_layers */
    spk__norm_params final_norm;
    spk__dense_params head; /* [hidden, num_outputs]: NULL tensors without an output head */
} spk__weights;

/* Makes (uninitialized) or frees a set of weights of this configuration, the dense kernels
 * stored as `kernel_dtype` (gradients and moments: always float32). */
spk_status spk__weights_create(spk_context *ctx, const spk_model_config *c, spk_dtype kernel_dtype, spk__weights *w);
/* The same as float32 slices of one tensor `whole` (made here), in the backward's order: the
 * gradients, which one reduction covers. */
spk_status spk__weights_create_flat(spk_context *ctx, const spk_model_config *c, spk__weights *w, spk_tensor **whole);
void spk__weights_destroy(spk__weights *w, int num_layers);
/* The weights' tensors in one fixed order (input projection, layers, final norm, head), NULL
 * ones skipped; `out` holds at least spk__weights_count. Returns how many. */
uint32_t spk__weights_list(const spk__weights *w, int num_layers, spk_tensor **out);
uint32_t spk__weights_count(int num_layers);

/* What the training forward keeps for the backward, per layer, for `rows` positions (llm.c's
 * ActivationTensors). Inference keeps none of it. */
typedef struct spk__layer_acts {
    spk_tensor *x;              /* [rows, hidden]: the block's input (unused for layer 0 without a
                                 * projection: the model's input is) */
    spk_tensor *a1, *stats1;    /* [rows, hidden], [rows, 2]: attn_norm output, its mean and rstd */
    spk_tensor *qkv;            /* [rows, 3 hidden] */
    spk_tensor *r;              /* [rows * num_heads]: 1 + sum |s| per (batch, head, query) */
    spk_tensor *o;              /* [rows, hidden]: attention output */
    spk_tensor *x_mid;          /* [rows, hidden]: x + dense(o, out_proj) */
    spk_tensor *a2, *stats2;    /* [rows, hidden], [rows, 2]: ffn_norm output and stats */
    spk_tensor *h, *g;          /* [rows, 4 hidden]: gelu' of the ffn_up pre-activation, and its GELU */
} spk__layer_acts;

typedef struct spk__acts {
    int64_t rows;
    spk__layer_acts *layers;    /* num_layers */
    spk_tensor *x_final;        /* [rows, hidden]: the last block's output */
    spk_tensor *final_in;       /* [rows, hidden]: mode last: the gathered last positions */
    spk_tensor *final_stats;    /* [rows, 2]: final_norm's */
    spk_tensor *final_normed;   /* [rows, hidden]: final_norm's output (the head's input) */
    spk_tensor *pooled;         /* [rows, hidden]: mode mean: the mean over positions */
    spk_tensor *drop_tmp;       /* [rows, hidden]: a block's output before its dropout (in the backward: the
                                 * gradient through the mask) */
    /* Dropout of this forward (rate 0: none): masks from (seed, step, site = 2 layer + 0 for
     * attention, 1 for the feed-forward), the step read on the device from `step` (a float). */
    float dropout;
    uint64_t seed;
    spk__buffer_ref step;
    uint32_t drop_offset; /* the masks' index of this forward's first element (data-parallel: its rows' place) */
} spk__acts;

/* The dropout mask of (seed, step, site) for this forward (rate > 0). */
spk__dropout_mask spk__dropout_mask_of(const spk__acts *k, uint32_t site);
/* Records inverted dropout: forward out = residual + mask(y) / (1 - rate), or with `backward`
 * out = mask(y) / (1 - rate) (residual unused), the mask of (seed, step, site). */
spk_status spk__record_dropout(spk_context *ctx, const spk__acts *k, uint32_t site, bool backward,
                               const spk_tensor *residual, const spk_tensor *y, spk_tensor *out);

/* Views of one layer's kept activations for a (batch, seq). */
typedef struct spk__layer_view {
    spk_tensor x, a1, stats1, qkv, r, o, x_mid, a2, stats2, h, g;
} spk__layer_view;

void spk__layer_views(const spk__layer_acts *k, int64_t batch, int64_t seq, int64_t h, int heads, spk__layer_view *v);

/* A tensor over the first elements of `t` with another shape (never destroyed). */
spk_tensor spk__view(const spk_tensor *t, int ndim, const int64_t *shape);

/* A training step's phases, in order. */
typedef enum spk__train_phase {
    SPK__PHASE_FORWARD = 0,
    SPK__PHASE_LOSS,
    SPK__PHASE_BACKWARD,
    SPK__PHASE_STEP, /* zeroing the gradients, the above, and the optimizer */
} spk__train_phase;

#define SPK__MAX_BUCKETS 48 /* at most 40 layers train (spk__weights_count within 512), + 2 */

/* What a recorded training step bakes in: replayed only while all of it is the same. */
typedef struct spk__step_key {
    int64_t batch, seq;
    spk_output_mode mode;
    spk_loss_kind loss;
    spk__train_phase upto;
    bool has_opt, profile;
    spk_optimizer_desc opt;
    float dropout;
    uint64_t seed;
    int64_t global_batch, first_sample; /* data-parallel (0: alone) */
    size_t bucket_bytes;
} spk__step_key;

/* The training state of a model, made on first use (inference never pays for it). */
typedef struct spk__train {
    spk__weights grad;   /* dL/dparameter, accumulated until spk_model_zero_grad: slices of grad_all */
    spk_tensor *grad_all; /* every gradient, in the backward's order, zero between them */
    spk__acts acts;      /* what the forward kept, for acts.rows positions */
    /* The backward's own buffers for acts.rows positions. */
    spk_tensor *dx;      /* [rows, hidden]: dL/dx of the residual stream, walking back */
    spk_tensor *da;      /* [rows, hidden]: dL/d(a norm's output) */
    spk_tensor *d_o;     /* [rows, hidden]: dL/d(attention output) */
    spk_tensor *dqkv;    /* [rows, 3 hidden] */
    spk_tensor *dh;      /* [rows, 4 hidden]: dL/d(ffn_up pre-activation) */
    spk_tensor *d_final; /* [rows, hidden]: dL/d(final norm output) (mode last: the gathered rows') */
    spk_tensor *d_scratch; /* [rows * heads]: the attention backward's D */
    spk_tensor *dy;      /* [rows, outputs]: dL/d(model output) */
    spk_tensor *target;  /* [rows, outputs]: the loss's targets */
    spk_tensor *loss;    /* [1] */
    spk_tensor *row_loss; /* [rows] */
    /* The optimizer's, made on its first step: AdamW's moments (the weights' layout), and on the
     * device the step count, the clipping coefficient and the gradient norm. */
    spk__weights moment1, moment2;
    bool has_moments;
    spk_tensor *opt_state;   /* [8]: step, clip coefficient, norm, 0, 1 - beta1^t, 1 - beta2^t, 0, 0 */
    spk_tensor *opt_partial; /* [tensors]: each gradient's sum of squares */
    uint64_t steps;          /* optimizer steps taken (the device's count, mirrored) */
    /* The training step, recorded once and replayed while what it bakes in (its key) holds;
     * with spk_model.profile it times every dispatch. */
    spk__recording step;
    spk__step_key step_key;
    bool step_valid;
    /* Data-parallel (data_parallel.c): the step is `step` and the segments, one per bucket of
     * gradients after the first, each submitted with a fence of its own; the caller's reduction
     * of a bucket runs once its segment is done (its gradients copied out first where not
     * host-visible), then `step_tail` (the copy back, the optimizer). */
    spk__recording segments[SPK__MAX_BUCKETS], step_tail;
    VkFence fences[SPK__MAX_BUCKETS];
    uint64_t bucket_end[SPK__MAX_BUCKETS]; /* where each bucket ends in grad_all (floats) */
    bool cut_after[SPK__MAX_BUCKETS];      /* a bucket ends after layer l's backward */
    uint32_t buckets, recorded_segments;
    spk__allocation grad_staging;
    spk__allocation staging; /* targets then the loss, where tensors are not host-visible */
    /* The last spk_model_forward_train, which spk_model_backward goes back through (any other
     * forward or training call of the model in between clears `fwd_valid`). */
    spk_tensor fwd_input; /* a view of the model's input, or the caller's tensor */
    bool fwd_valid;
} spk__train;

/* Makes the training state (zeroed gradients) on first use, and activations for `rows`. */
spk_status spk__train_prepare(spk_model *m, int64_t rows);
/* Forgets the recorded training step (its buffers or state are about to change). */
void spk__train_forget(spk_model *m);
/* Forgets the last training forward (another forward is about to use the model's buffers). */
void spk__train_forget_forward(spk_model *m);
/* spk_model_train_step (opt set, upto STEP) or spk_model_grad (opt NULL, upto BACKWARD), or a
 * training step's first phases alone (the benchmark times each): one submit. */
spk_status spk__train_phases(spk_model *m, const float *input, int64_t batch, int64_t seq_len, spk_loss_kind loss,
                             const float *target, const spk_optimizer_desc *opt, spk__train_phase upto,
                             float *loss_out);
/* Data-parallel steps (data_parallel.c): plans the buckets of the step being recorded (and the
 * staging copy where gradients are not host-visible; called with the context locked); the
 * backward's hook after each layer (user: the model), ending a segment where a bucket ends; the
 * last segment's end; and a recorded step run: its segments, the caller's reductions (the loss,
 * read from `loss_host` once the step is done, reduced into *loss), the tail. */
spk_status spk__dp_plan(spk_model *m);
spk_status spk__dp_layer_done(void *user, int layer);
spk_status spk__dp_last_bucket(spk_model *m);
spk_status spk__dp_run(spk_model *m, const float *loss_host, float *loss);
void spk__dp_destroy(spk_model *m);
/* Per-dispatch GPU nanoseconds and shader names of the last profiled training run. */
uint32_t spk__train_dispatch_times(spk_model *m, uint64_t *ns, const char **shaders, uint32_t max);
/* Records the optimizer's step over every parameter (optimizer.c); makes its state first. */
spk_status spk__record_optimizer_step(spk_model *m, const spk_optimizer_desc *opt);
/* One tensor's update (the step's last pass), with a given choice (NULL: tuned, else the rule):
 * invocations per workgroup and vec4 texel reads; `state` holds what the step's first passes left. */
typedef struct spk__optimizer_tuning {
    uint32_t workgroup;
    bool texel;
} spk__optimizer_tuning;
void spk__optimizer_tuning_defaults(const spk_context *ctx, spk__optimizer_tuning *t);
bool spk__optimizer_tuning_unpack(const spk_context *ctx, const uint32_t p[SPK__TUNE_PARAMS], spk__optimizer_tuning *t);
spk_status spk__record_optimizer_update(spk_context *ctx, const spk__optimizer_tuning *tuning, const spk_optimizer_desc *o,
                                        spk_tensor *p, const spk_tensor *g, spk_tensor *m, spk_tensor *v,
                                        const spk_tensor *state);
/* Makes the optimizer's state (zeroed moments, step 0) if the model has none. */
spk_status spk__optimizer_prepare(spk_model *m);
void spk__optimizer_destroy(spk_model *m);
/* Checks an optimizer description (SPK_ERROR_INVALID_ARGUMENT with the reason). */
spk_status spk__optimizer_check(spk_context *ctx, const spk_optimizer_desc *opt);

/* Every parameter of the file format, with where it lives in the model: q, k and v kernels are
 * packed side by side into one [hidden, 3 hidden] kernel (one matmul instead of three). */
typedef struct spk__param {
    char name[80];
    spk_tensor *tensor; /* destination */
    int ndim;           /* in the file: 2 for kernels [rows, cols], 1 otherwise [cols] */
    int64_t rows, cols;
    int64_t column; /* first destination column (of a destination row of tensor->shape[last]) */
    enum { SPK__INIT_GLOROT, SPK__INIT_ZERO, SPK__INIT_ONE } init;
} spk__param;

/* Lists the parameters (SPEC.md section 3 names) of `w` (the model's weights, or gradients or
 * moments of the same layout); returns how many, or 0 when out of memory. */
uint32_t spk__model_params(const spk_model *m, const spk__weights *w, spk__param **out);
/* Downloads a [rows, cols] parameter from its place in its tensor (spk__image_put's inverse). */
spk_status spk__param_download(spk_model *m, const spk__param *p, float *out);
struct spk__safetensors;
/* Loads weights `w` (the model's, or moments of its layout) from the tensors named prefix + the
 * parameter names (prefix NULL: exactly the parameters, nothing else); checks everything first. */
spk_status spk__load_params(spk_model *m, spk__weights *w, const struct spk__safetensors *st, const char *prefix);
/* Work recorded after each layer of a forward, reading the layer's qkv and output x (analyze.c). */
typedef struct spk__model_probe {
    spk_status (*layer)(spk_model *m, void *user, int layer, const spk_tensor *qkv, const spk_tensor *x);
    void *user;
} spk__model_probe;
/* Records the forward (model.c); `keep` NULL for inference, else the training activations;
 * `probe` NULL, or work after each layer. */
spk_status spk__model_record(spk_model *m, const spk_tensor *input, int64_t batch, int64_t seq, spk_tensor *output,
                             const spk__acts *keep, const spk__model_probe *probe);
/* Checks a forward's sizes; fills the mean-mode weights for a shape; sizes the activations. */
spk_status spk__check_forward_size(spk_model *m, int64_t batch, int64_t seq);
spk_status spk__mean_weights(spk_model *m, int64_t batch, int64_t seq);
spk_status spk__activations_create(spk_model *m, int64_t rows);
/* Checks a forward on device tensors and prepares the model's buffers for it. */
spk_status spk__forward_tensors_prepare(spk_model *m, const spk_tensor *input, spk_tensor *output);

/* What the model calls of its training state without knowing it (model_backward.c sets it when it
 * makes the state): training depends on the model, never the other way. */
typedef struct spk__model_training {
    void (*destroy)(spk_model *m);
    uint64_t (*bytes)(const spk_model *m);
    /* Forgets the recorded training step (`forward_only` false: the model's buffers are about to
     * change), or only the last training forward (another forward is about to use the buffers). */
    void (*forget)(spk_model *m, bool forward_only);
} spk__model_training;

struct spk_model {
    spk_context *ctx;
    spk_model_config cfg;
    spk__weights w;
    struct spk__train *train; /* gradients, moments, kept activations: made on first training use */
    const spk__model_training *training; /* NULL until then */
    uint64_t dropout_seed;    /* spk_model_set_dropout */
    spk_data_parallel dp;     /* spk_model_set_data_parallel (global_batch 0: alone) */

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
