#ifndef SOFTPICK_TEST_EXTERNAL_PROBE_H
#define SOFTPICK_TEST_EXTERNAL_PROBE_H

#include "softpick/softpick.h"

uint32_t probe_cached_sets(const spk_context *ctx);     /* descriptor sets kept for recordings */
bool probe_full_subgroups(const spk_context *ctx);       /* full-subgroup control in use */
uint64_t probe_offset_alignment(const spk_context *ctx); /* minStorageBufferOffsetAlignment */

#endif
