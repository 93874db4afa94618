/* How spk_layer_norm maps rows onto invocations. Internal: the tests use it to run the GPU
 * shape of the kernel on any device. */
#ifndef SOFTPICK_LAYER_NORM_PLAN_H
#define SOFTPICK_LAYER_NORM_PLAN_H

#include "internal.h"
#include "tuning.h"

typedef struct spk__layer_norm_tuning {
    uint32_t workgroup;        /* invocations per workgroup */
    uint32_t short_row;        /* rows up to this many loads get one invocation each */
    uint32_t subgroup_row_max; /* rows up to this many loads get one subgroup each (fixed sizes) */
    uint32_t cache_max;        /* loads an invocation may keep in registers (0: never) */
    uint32_t rows_max;         /* rows one group may normalize with gamma and beta in registers */
    bool texel;                /* read x, gamma and beta through texel views where they have them */
} spk__layer_norm_tuning;

void spk__layer_norm_tuning_defaults(const spk_context *ctx, spk__layer_norm_tuning *t);
/* The tuning problem of a forward, and a tuning's parameters in the tuning file and back (false:
 * parameters this device cannot run). */
spk__tune_problem spk__layer_norm_problem(const spk_tensor *x, const spk_tensor *y, bool stats);
void spk__layer_norm_tuning_pack(const spk__layer_norm_tuning *t, uint32_t p[SPK__TUNE_PARAMS]);
bool spk__layer_norm_tuning_unpack(const spk_context *ctx, const uint32_t p[SPK__TUNE_PARAMS], spk__layer_norm_tuning *t);
/* Invocations per row for rows of `len` loads: 1, a subgroup or the workgroup. */
uint32_t spk__layer_norm_group(const spk_context *ctx, const spk__layer_norm_tuning *t, uint64_t len);
/* Checks the operands and records the layer norm into the current recording (ctx->rec). */
spk_status spk__record_layer_norm(spk_context *ctx, const spk__layer_norm_tuning *tuning, const spk_tensor *x,
                                  const spk_tensor *gamma, const spk_tensor *beta, const spk_layer_norm_desc *desc,
                                  spk_tensor *y);
/* spk_layer_norm with a given tuning (NULL: the defaults). */
spk_status spk__layer_norm_tuned(spk_context *ctx, const spk__layer_norm_tuning *tuning, const spk_tensor *x,
                                 const spk_tensor *gamma, const spk_tensor *beta, const spk_layer_norm_desc *desc,
                                 spk_tensor *y);

/* The backward, recorded into the current recording without checks (the model's), and run
 * synchronously with checks and a given tuning (NULL: the defaults). With `drop` (and dx), the
 * same pass also stores dx through that dropout mask into `masked` (dx's shape). */
spk_status spk__record_layer_norm_backward(spk_context *ctx, const spk__layer_norm_tuning *tuning, const spk_tensor *x,
                                           const spk_tensor *gamma, const spk_tensor *stats, const spk_tensor *dy,
                                           const spk_layer_norm_grads *grads, const spk__dropout_mask *drop,
                                           spk_tensor *masked);
spk_status spk__layer_norm_backward_tuned(spk_context *ctx, const spk__layer_norm_tuning *tuning, const spk_tensor *x,
                                          const spk_tensor *gamma, const spk_tensor *stats, const spk_tensor *dy,
                                          const spk_layer_norm_grads *grads);

#endif
