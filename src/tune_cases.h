/* spk_tune's kernel families (tune_cases.c): for each, the candidates this device can run, the
 * rule's choice, and a case that runs one candidate on one problem and checks it against float64.
 * Internal. */
#ifndef SOFTPICK_TUNE_CASES_H
#define SOFTPICK_TUNE_CASES_H

#include "tuning.h"

#define SPK__TUNE_MAX_CANDIDATES 256
#define SPK__TUNE_MAX_OUTPUTS 3

/* One problem's operands, float64 references and the candidate being run. */
typedef struct spk__tune_case {
    spk_context *ctx;
    spk__tune_problem problem;
    spk_tensor *in[8];                       /* the family's operands, NULL where unused */
    spk_tensor *out[SPK__TUNE_MAX_OUTPUTS];  /* what is checked, NULL where unused */
    double *ref[SPK__TUNE_MAX_OUTPUTS];
    float *got;                              /* room for the largest output */
    const uint32_t *params;                  /* the candidate */
    bool sabotage;                           /* tests: write zeros instead of running the kernel */
    bool checking;                           /* the run checked against the reference (not timed) */
} spk__tune_case;

typedef struct spk__tune_family_ops {
    double bound; /* the op's documented accuracy, max |y - ref| / max |ref| */
    /* Every candidate of the family this device may run, in the order worth trying (the rule's kind
     * first); the same list whatever the problem (a candidate a problem cannot take is skipped). */
    uint32_t (*candidates)(const spk_context *ctx, uint32_t (*out)[SPK__TUNE_PARAMS], uint32_t max);
    void (*rule)(const spk_context *ctx, const spk__tune_problem *p, uint32_t out[SPK__TUNE_PARAMS]);
    /* The kernel shape a candidate belongs to: a slow shape's other candidates are pruned. */
    uint32_t (*kind)(const uint32_t params[SPK__TUNE_PARAMS]);
    int (*describe)(const uint32_t params[SPK__TUNE_PARAMS], char *out, size_t size);
    int (*describe_problem)(const spk__tune_problem *p, char *out, size_t size);
    /* Whether a problem's storage types and variant are ones this family tunes. */
    bool (*tunable)(const spk__tune_problem *p);
    /* Makes the operands and references (c->problem set); run records the candidate c->params. */
    spk_status (*open)(spk__tune_case *c, uint64_t *seed);
    spk_status (*record)(spk_context *ctx, const void *c);
} spk__tune_family_ops;

extern const spk__tune_family_ops *const spk__tune_families[SPK__TUNE_FAMILY_COUNT];
/* The families of tune_cases_ops.c (the others are tune_cases.c's). */
extern const spk__tune_family_ops spk__tune_layer_norm_backward_family, spk__tune_column_sums_family,
    spk__tune_softpick_family, spk__tune_optimizer_family, spk__tune_loss_family;

/* ---- what the families share (tune_cases.c) ---- */
bool spk__tune_cpu(const spk_context *ctx);
/* Fixed subgroup sizes with shuffles. */
bool spk__tune_fixed_shuffles(const spk_context *ctx);
/* Appends a candidate to out (n of max used); the new count. */
uint32_t spk__tune_add(uint32_t (*out)[SPK__TUNE_PARAMS], uint32_t n, uint32_t max, const uint32_t p[SPK__TUNE_PARAMS]);
/* A tensor of `shape` holding random values of `scale` (kept in *keep unless NULL), NULL on
 * failure (status in *s; nothing is done once *s is an error). */
spk_tensor *spk__tune_tensor(spk__tune_case *c, int ndim, const int64_t *shape, uint64_t *seed, float scale,
                             float **keep, spk_status *s);
/* An output of `shape` in the case's next output slot, and its reference buffer (zeroed). */
double *spk__tune_output(spk__tune_case *c, int ndim, const int64_t *shape, spk_status *s);
/* Room to download the largest output. */
spk_status spk__tune_room(spk__tune_case *c);
/* Tests: a candidate that writes zeros to every output (fast and wrong). */
spk_status spk__tune_sabotaged(spk_context *ctx, const spk__tune_case *c);
/* Whether the problem's variant has none of `dtype_bits` set (float32 operands). */
bool spk__tune_f32(const spk__tune_problem *p, uint32_t dtype_bits);
/* Row groups (short_row, subgroup_row_max): an invocation, a subgroup or a workgroup per row. */
extern const uint32_t spk__tune_row_groups[3][2];

/* Frees a case's tensors and buffers. */
void spk__tune_case_close(spk__tune_case *c);

#endif
