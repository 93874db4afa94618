/* spk_tune with test hooks. Internal: test_tune reaches it to plant a wrong candidate and to make
 * the whole model's check fail. */
#ifndef SOFTPICK_TUNE_H
#define SOFTPICK_TUNE_H

#include "tuning.h"

/* A deliberately broken candidate: in family `sabotage_family` (-1: none), the candidate at
 * `sabotage_candidate` in the order tried (0 is the rule's) writes zeros instead of running its
 * kernel: faster than any real one, and wrong. */
typedef struct spk__tune_testing {
    int sabotage_family;
    uint32_t sabotage_candidate;
    int model_check; /* the whole forward's check: 0 measures; -1 finds the kept choices slower at
                      * every batch, +1 faster */
} spk__tune_testing;

spk_status spk__tune(spk_context *ctx, const spk_tune_desc *desc, spk_tune_report *report,
                     const spk__tune_testing *testing);

#endif
