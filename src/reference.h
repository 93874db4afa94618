/* float64 references of every op and of the model, evaluated on the host: the self-test compares
 * each kernel against them. Internal. Inputs are the float32 values the device sees, promoted. */
#ifndef SOFTPICK_REFERENCE_H
#define SOFTPICK_REFERENCE_H

#include <stdbool.h>
#include <stdint.h>

#include "softpick/softpick.h"

/* max |y - ref| / max |ref| over n values; NaN (an unwritten, poisoned output) makes it NaN. */
double spk__ref_error(const float *y, const double *ref, int64_t n);
/* softpick along the middle axis of x viewed as [outer, n, inner]. */
void spk__ref_softpick(const float *x, int64_t outer, int64_t n, int64_t inner, double *y);
/* C[b] = act(A[b] B[b or shared] + bias) + residual; A [batch, M, K], B [(batch,) K, N]; bias and
 * residual may be NULL. */
void spk__ref_matmul(const float *a, const float *b, const float *bias, bool gelu, const float *residual,
                     int64_t batch, int64_t m, int64_t n, int64_t k, bool shared_b, double *c);
/* Layer norm over rows of n (biased variance). */
void spk__ref_layer_norm(const float *x, const float *gamma, const float *beta, int64_t rows, int64_t n,
                         double epsilon, double *y);
double spk__ref_gelu(double x);
double spk__ref_gelu_grad(double x);
/* n values uniform in [-scale, scale) from a splitmix64 stream (the same seed, the same values). */
void spk__ref_random(uint64_t *seed, float *x, int64_t n, float scale);
/* The weights y of one row of n live scores under `norm`; returns the row statistic the fused
 * forward keeps (shaders/normalizer.glsl): r = 1 + sum |s| for softpick, else M + log(sum), M the
 * largest score (for rectified softpick at least 0). */
double spk__ref_normalize(spk_normalizer norm, const double *s, int64_t n, double *y);
/* The row's score gradient from dy (dL/dy), its weights y and statistic, the maximum held
 * constant (as the kernels; rectified softpick's 1e-6 aside, the exact derivative). */
void spk__ref_dscores(spk_normalizer norm, const double *s, const double *y, const double *dy, int64_t n,
                      double stat, double *ds);
/* Multi-head attention, q, k, v [batch, seq, heads * head_dim], and each row's statistic into
 * `stat` ([batch, heads, seq]) when not NULL; false when out of host memory. */
bool spk__ref_attention(const float *q, const float *k, const float *v, int64_t batch, int64_t seq, int64_t heads,
                        int64_t head_dim, bool causal, spk_normalizer norm, double *out, double *stat);

/* The backward passes (SPEC.md section 6): softpick along the middle axis; the matmul's dA, dB
 * (summed over the batch when B is shared) and dbias from dC (no epilogue); layer norm's dx,
 * dgamma, dbeta; attention's dq, dk, dv (false when out of host memory). */
void spk__ref_softpick_backward(const float *x, const float *dy, int64_t outer, int64_t n, int64_t inner, double *dx);
void spk__ref_matmul_grads(const float *a, const float *b, const float *dc, int64_t batch, int64_t m, int64_t n,
                           int64_t k, bool shared_b, double *da, double *db, double *dbias);
void spk__ref_layer_norm_backward(const float *x, const float *gamma, const float *dy, int64_t rows, int64_t n,
                                  double epsilon, double *dx, double *dgamma, double *dbeta);
bool spk__ref_attention_backward(const float *q, const float *k, const float *v, const float *dout, int64_t batch,
                                 int64_t seq, int64_t heads, int64_t hd, bool causal, spk_normalizer norm, double *dq,
                                 double *dk, double *dv);

/* The model's parameters as the device holds them (q, k and v kernels packed side by side). */
typedef struct spk__ref_layer {
    const float *attn_gamma, *attn_beta, *qkv_kernel, *qkv_bias, *out_kernel, *out_bias;
    const float *ffn_gamma, *ffn_beta, *up_kernel, *up_bias, *down_kernel, *down_bias;
} spk__ref_layer;
typedef struct spk__ref_model {
    spk_model_config cfg;
    const float *in_kernel, *in_bias; /* NULL when embed_dim == hidden_size */
    const spk__ref_layer *layers;
    const float *final_gamma, *final_beta;
    const float *head_kernel, *head_bias; /* NULL without an output head (num_outputs 0) */
    /* Training's dropout (SPEC.md section 6) at this rate (0: none), with the masks of
     * shaders/dropout.glsl for (seed, step), evaluated here from its definition. */
    float dropout;
    uint64_t seed;
    uint32_t step;
    /* NULL, or called after each layer with its qkv [rows, 3 hidden] and output x [rows, hidden]. */
    void (*probe)(void *user, int layer, const double *qkv, const double *x);
    void *probe_user;
} spk__ref_model;
/* The forward of SPEC.md section 2 on x [batch, seq, embed_dim]; `out` receives
 * spk_model_output_shape's elements. false when out of host memory. */
bool spk__ref_model_forward(const spk__ref_model *m, const float *x, int64_t batch, int64_t seq, double *out);

/* A step of SGD, or AdamW's first (zero moments), on weight w with gradient g (already clipped),
 * as SPEC.md section 6 and PyTorch define them. */
double spk__ref_optimizer_first_step(const spk_optimizer_desc *o, double w, double g);

#endif
