/* How spk_matmul maps onto its kernel, and the elementwise ops. Internal: the benchmark and the
 * tests use it to run each variant side by side and to test erf on its own. */
#ifndef SOFTPICK_MATMUL_PLAN_H
#define SOFTPICK_MATMUL_PLAN_H

#include "internal.h"

typedef struct spk__matmul_tuning {
    uint32_t wg_x, wg_y; /* invocations per workgroup in columns and rows */
    uint32_t tm, tn;     /* register block per invocation: rows and columns */
    uint32_t bk;         /* k-depth of a shared-memory slice */
    bool shared;         /* stage tiles in shared memory (else read operands directly) */
    /* matmul_shuffle.comp instead: wg_x invocations; each subgroup computes row_sets x SG rows by
     * tn groups of 4 x SG columns, reading A and B through texel views if `texel` */
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
/* spk_matmul with a given tuning (NULL: the defaults). */
spk_status spk__matmul_tuned(spk_context *ctx, const spk__matmul_tuning *tuning, const spk_tensor *a,
                             const spk_tensor *b, const spk_matmul_desc *desc, spk_tensor *c);

enum { SPK__UNARY_ERF = 0, SPK__UNARY_GELU = 1 };
/* y = op(x) elementwise (shaders/unary.comp). */
spk_status spk__unary(spk_context *ctx, uint32_t op, const spk_tensor *x, spk_tensor *y);

#endif
