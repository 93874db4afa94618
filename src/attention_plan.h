/* How attention maps onto shaders/attention.comp (and its shuffle and backward kernels). Internal: the model records it on
 * column ranges of its fused q/k/v tensor, and the benchmark runs the unfused reference. */
#ifndef SOFTPICK_ATTENTION_PLAN_H
#define SOFTPICK_ATTENTION_PLAN_H

#include "internal.h"
#include "tuning.h"

/* One operand: rows of `stride` elements, heads starting at column `offset`. */
typedef struct spk__attention_operand {
    spk__buffer_ref ref;
    uint32_t stride, offset;
    const VkBufferView *views; /* the tensor's texel views (spk_tensor.views), or NULL */
    spk_dtype dtype;           /* the forward's q, k, v and output: F32 or F16 (q, k and v alike) */
} spk__attention_operand;

typedef struct spk__attention_args {
    spk__attention_operand q, k, v, out; /* out.offset must be 0 */
    uint32_t batch, seq, heads, head_dim;
    bool causal;
    /* Training: the fused forward writes each (batch, head, query)'s row statistic here (r = 1 +
     * sum_j |s_ij| for softpick, the log of the normalizing sum for the exponential forms:
     * shaders/normalizer.glsl), [batch, heads, seq] floats; buffer VK_NULL_HANDLE: not kept. */
    spk__buffer_ref r;
    spk_normalizer norm;
} spk__attention_args;

/* The backward's operands: the forward's q, k, v, its output o and r, the output's gradient;
 * dq, dk and dv are written (any stride and column offset, like the inputs). */
typedef struct spk__attention_backward_args {
    spk__attention_operand q, k, v, o, dout, dq, dk, dv;
    spk__buffer_ref r, d; /* [batch, heads, seq]: r (read), D_i = dO_i . O_i (written, scratch) */
    uint32_t batch, seq, heads, head_dim;
    bool causal;
    spk_normalizer norm;
} spk__attention_backward_args;

typedef struct spk__attention_tuning {
    uint32_t workgroup; /* invocations per workgroup */
    uint32_t queries;   /* per workgroup (a power of two) */
    uint32_t keys;      /* per shared-memory block (a power of two) */
    /* attention_shuffle.comp instead: an invocation per query, subgroups walking the keys with
     * shuffles (needs fixed-size subgroups with shuffles) */
    bool shuffle;
    bool texel; /* the shuffle kernel reads q, k and v through texel views where they have them */
} spk__attention_tuning;

enum { SPK__ATTENTION_FUSED = 0, SPK__ATTENTION_SCORES = 1, SPK__ATTENTION_PRODUCT = 2 };

/* Whether the device can run the shuffle kernel. */
bool spk__attention_shuffle_supported(const spk_context *ctx);
/* The tuning this device uses, and each kernel's own tuning for this device (a variant's tuning
 * is derived for that variant at the device's subgroup size, never copied from another). */
void spk__attention_tuning_defaults(const spk_context *ctx, uint32_t head_dim, uint32_t seq,
                                    spk__attention_tuning *t);
void spk__attention_tuning_tiles(const spk_context *ctx, uint32_t head_dim, uint32_t seq, spk__attention_tuning *t);
/* The shuffle kernel's (check spk__attention_shuffle_supported); `texel`: through texel views. */
void spk__attention_tuning_shuffle(const spk_context *ctx, bool texel, spk__attention_tuning *t);
/* Records attention into the current recording. `mode` SCORES writes the scores to `scores`
 * ([batch, heads, seq, seq]); PRODUCT reads softpick'ed scores from it; FUSED ignores it. */
spk_status spk__record_attention(spk_context *ctx, const spk__attention_tuning *tuning,
                                 const spk__attention_args *args, uint32_t mode, spk__buffer_ref scores);
/* The backward's tuning: the shuffle kernels where the device has fixed-size subgroup shuffles
 * (through texel views with `texel`), else (or with `shared_xchg`) exchanging through shared
 * memory in workgroups of 16. */
void spk__attention_backward_tuning(const spk_context *ctx, bool texel, bool shared_xchg, spk__attention_tuning *t);
/* Records the backward (two passes: dQ with D, then dK and dV); `tuning` NULL: the context's
 * choice (tuned, else the rule). */
spk_status spk__record_attention_backward(spk_context *ctx, const spk__attention_backward_args *args,
                                          const spk__attention_tuning *tuning);
/* spk_attention_backward with the kernel given (NULL: the context's choice). */
spk_status spk__attention_backward_tuned(spk_context *ctx, const spk__attention_tuning *tuning,
                                         const spk_attention_desc *desc, const spk_tensor *q, const spk_tensor *k,
                                         const spk_tensor *v, const spk_tensor *out, const spk_tensor *r,
                                         const spk_tensor *dout, const spk_attention_grads *grads);
/* The tuning problem of a forward (or of the backward of the same shape), and a tuning's
 * parameters in the tuning file and back (false: parameters this device cannot run). */
spk__tune_problem spk__attention_problem(const spk__attention_args *a, bool backward);
void spk__attention_tuning_pack(const spk__attention_tuning *t, uint32_t p[SPK__TUNE_PARAMS]);
bool spk__attention_tuning_unpack(const spk_context *ctx, const uint32_t p[SPK__TUNE_PARAMS], uint32_t head_dim,
                                  spk__attention_tuning *t);
/* The largest head dimension the kernel takes. */
#define SPK__ATTENTION_MAX_HEAD_DIM 256

#endif
