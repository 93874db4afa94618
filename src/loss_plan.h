/* How the losses map onto shaders/loss.comp. Internal: the model records them into a training
 * step. */
#ifndef SOFTPICK_LOSS_PLAN_H
#define SOFTPICK_LOSS_PLAN_H

#include "internal.h"
#include "tuning.h"

#include <string.h>

/* Checks a loss's kind and the shapes of y and its targets. */
spk_status spk__check_loss(spk_context *ctx, spk_loss_kind kind, const spk_tensor *y, const spk_tensor *target);
/* Records the loss of y against target into loss[0] (and dL/dy into dy unless NULL), with
 * row_loss holding one float per row of y; `workgroup` is the rows' pass's (0: tuned, else the
 * rule's 64). The mean divides by `mean_over` (0: y's own count; data-parallel: the global
 * batch's, so that the processes' losses and gradients add up). */
spk_status spk__record_loss(spk_context *ctx, uint32_t workgroup, spk_loss_kind kind, const spk_tensor *y,
                            const spk_tensor *target, spk__buffer_ref row_loss, const spk_tensor *loss,
                            const spk_tensor *dy, uint64_t mean_over);
/* Whether a tuned workgroup size fits this device. */
bool spk__loss_workgroup_ok(const spk_context *ctx, uint32_t workgroup);

#endif
