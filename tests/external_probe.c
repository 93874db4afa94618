/* Internal state test_external.c checks, read from a translation unit that sees the library's
 * internals (test_external.c itself plays the application, with the system loader's
 * prototypes, which cannot share a translation unit with the library's private volk). */
#include "external_probe.h"

#include "internal.h"

uint32_t probe_cached_sets(const spk_context *ctx) { return ctx->cached_set_count; }
bool probe_full_subgroups(const spk_context *ctx) { return ctx->caps.subgroup_size_control; }
uint64_t probe_offset_alignment(const spk_context *ctx) {
    return ctx->caps.props.limits.minStorageBufferOffsetAlignment;
}
