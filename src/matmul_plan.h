/* How spk_matmul maps onto its kernel, and the elementwise ops. Internal: the benchmark and the
 * tests use it to run each variant side by side and to test erf on its own. */
#ifndef SOFTPICK_MATMUL_PLAN_H
#define SOFTPICK_MATMUL_PLAN_H

#include "internal.h"
#include "tuning.h"

typedef struct spk__matmul_tuning {
    uint32_t wg_x, wg_y; /* invocations per workgroup in columns and rows */
    uint32_t tm, tn;     /* register block per invocation: rows and columns */
    uint32_t bk;         /* k-depth of a shared-memory slice */
    bool shared;         /* stage tiles in shared memory (else read operands directly) */
    /* matmul_shuffle.comp instead: wg_x invocations; each subgroup computes row_sets sets of tm
     * rows (0: SG, else a divisor of SG) by tn groups of 4 x SG columns, reading A and B through
     * texel views if `texel` */
    bool shuffle;
    uint32_t row_sets;
    bool texel;
} spk__matmul_tuning;

void spk__matmul_tuning_defaults(const spk_context *ctx, spk__matmul_tuning *t);
/* The shuffle kernel (the CPU drivers' default) with its block for this subgroup size; `texel`:
 * read through texel views (where the device has them). */
void spk__matmul_tuning_shuffle(const spk_context *ctx, bool texel, spk__matmul_tuning *t);
/* The shared-memory tile kernel (the GPU default), sized within the device's limits. */
void spk__matmul_tuning_tiles(const spk_context *ctx, spk__matmul_tuning *t);
/* Checks the operands and records the matmul into the current recording (ctx->rec). */
spk_status spk__record_matmul(spk_context *ctx, const spk__matmul_tuning *tuning, const spk_tensor *a,
                              const spk_tensor *b, const spk_matmul_desc *desc, spk_tensor *c);
/* One product as the kernels see it (B's batch folded into rows where B is shared). */
typedef struct spk__matmul_args {
    const spk__matmul_tuning *tuning; /* NULL: the context's choice (tuned, else the rule) */
    const spk_tensor *a, *b, *bias, *residual;
    spk_tensor *c, *pre;
    uint32_t epilogue; /* SPK__EPILOGUE_* bits */
    uint64_t batch, m, n, k;
    bool shared_b;
    bool trans_a, trans_b; /* A stored [K, M], B stored [N, K] (matmul.comp) */
} spk__matmul_args;
/* Records one product (arg: a spk__matmul_args) into the current recording, unchecked. */
spk_status spk__record_matmul_args(spk_context *ctx, const void *arg);
/* The product's tuning problem, and a tuning's parameters in the tuning file and back (false:
 * parameters this device cannot run). */
spk__tune_problem spk__matmul_problem(const spk__matmul_args *p);
void spk__matmul_tuning_pack(const spk__matmul_tuning *t, uint32_t p[SPK__TUNE_PARAMS]);
bool spk__matmul_tuning_unpack(const spk_context *ctx, const uint32_t p[SPK__TUNE_PARAMS], spk__matmul_tuning *t);
/* spk_matmul with a given tuning (NULL: the context's choice, tuned or the rule). */
spk_status spk__matmul_tuned(spk_context *ctx, const spk__matmul_tuning *tuning, const spk_tensor *a,
                             const spk_tensor *b, const spk_matmul_desc *desc, spk_tensor *c);

/* The epilogue bits of shaders/matmul*.comp. */
enum {
    SPK__EPILOGUE_BIAS = 1u,
    SPK__EPILOGUE_GELU = 2u,
    SPK__EPILOGUE_RESIDUAL = 4u,
    SPK__EPILOGUE_GELU_GRAD = 8u,  /* times the residual, a kept gelu' (bit 5); TRANS_B kernels only */
    SPK__EPILOGUE_PRE = 16u,       /* also store A B + bias */
    SPK__EPILOGUE_KEEP_GRAD = 32u, /* with GELU, store gelu'(A B + bias) instead (the same erf) */
};

enum { SPK__UNARY_ERF = 0, SPK__UNARY_GELU = 1, SPK__UNARY_GELU_GRAD = 2 };
/* spk_matmul_backward with a given tuning (NULL: the context's choice). */
spk_status spk__matmul_backward_tuned(spk_context *ctx, const spk__matmul_tuning *tuning, const spk_tensor *a,
                                      const spk_tensor *b, const spk_matmul_desc *desc, const spk_tensor *dc,
                                      const spk_matmul_grads *grads);

/* y = op(x) elementwise (shaders/unary.comp); dy: GELU_GRAD's y = dy * gelu'(x), else NULL. */
spk_status spk__unary(spk_context *ctx, uint32_t op, const spk_tensor *x, const spk_tensor *dy, spk_tensor *y);

/* The backward passes, recorded into the current recording without checks (the model's and
 * spk_matmul_backward's shapes are right by construction), `tuning` NULL for the defaults:
 * C = gelu(A B + bias), storing gelu'(A B + bias) in `gelu_grad` (the training forward's up
 * projection: its backward then multiplies instead of evaluating erf again);
 * dA = dZ B^T (times gelu_grad in the same dispatch when not NULL; else added to dA with
 * `accumulate`), B [K, N] shared or batched as in the forward; */
spk_status spk__record_matmul_gelu_keep_grad(spk_context *ctx, const spk_tensor *a, const spk_tensor *b,
                                             const spk_tensor *bias, spk_tensor *gelu_grad, spk_tensor *c);
spk_status spk__record_matmul_da(spk_context *ctx, const spk__matmul_tuning *tuning, const spk_tensor *dz, const spk_tensor *b,
                                 const spk_tensor *gelu_grad, bool accumulate, spk_tensor *da);
/* dB = A^T dZ, summed over A's batch when dB is [K, N]; */
spk_status spk__record_matmul_db(spk_context *ctx, const spk__matmul_tuning *tuning, const spk_tensor *a, const spk_tensor *dz, bool accumulate,
                                 spk_tensor *db);
/* out0 = column sums of g over all its rows (its count is the column count); with x and stats
 * ([rows, 2]: mean, rstd) out1 = column sums of g * (x - mean) * rstd; either may be NULL; */
spk_status spk__record_column_sums(spk_context *ctx, const spk_tensor *g, const spk_tensor *x, const spk_tensor *stats,
                                   bool accumulate, spk_tensor *out0, spk_tensor *out1);
/* The column sums' choices: invocations per workgroup, runs of rows per column (the workgroup
 * adds them in order), texel reads, 4 columns per invocation (with texel reads); the rule, the
 * tuned problem and its packing, and the sums with a given choice (NULL: tuned, else the rule). */
typedef struct spk__column_sums_tuning {
    uint32_t workgroup, chunks;
    bool texel, vec4;
} spk__column_sums_tuning;
void spk__column_sums_tuning_defaults(const spk_context *ctx, spk__column_sums_tuning *t);
void spk__column_sums_tuning_pack(const spk__column_sums_tuning *t, uint32_t p[SPK__TUNE_PARAMS]);
bool spk__column_sums_tuning_unpack(const spk_context *ctx, const uint32_t p[SPK__TUNE_PARAMS], spk__column_sums_tuning *t);
spk__tune_problem spk__column_sums_problem(const spk_tensor *g, uint64_t n, uint32_t mode);
spk_status spk__record_column_sums_tuned(spk_context *ctx, const spk__column_sums_tuning *tuning, const spk_tensor *g,
                                         const spk_tensor *x, const spk_tensor *stats, bool accumulate, spk_tensor *out0,
                                         spk_tensor *out1);
/* dx = dy * gelu'(x). */
spk_status spk__record_gelu_backward(spk_context *ctx, const spk_tensor *x, const spk_tensor *dy, spk_tensor *dx);

#endif
