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

extern const spk__tune_family_ops spk__tune_families[SPK__TUNE_FAMILY_COUNT];

/* Frees a case's tensors and buffers. */
void spk__tune_case_close(spk__tune_case *c);

#endif
