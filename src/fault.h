/* Fault injection for the tests (internal; compiled in only with SOFTPICK_FAULT_INJECTION, never
 * in a release build). Every fallible call the library makes goes through these wrappers: host
 * allocations, and each vkCreate*, vkAllocate*, vkBindBufferMemory, vkMapMemory, vkQueueSubmit and
 * fence wait. Armed with N, the N-th such call from then on fails (allocations return NULL,
 * Vulkan calls return the given error) and the counter disarms. */
#ifndef SOFTPICK_FAULT_H
#define SOFTPICK_FAULT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#ifdef SPK_FAULT_INJECTION
/* Counts one fallible call; true when it is the armed one. */
bool spk__fault(void);
/* Fails the n-th fallible call from now (n >= 1); 0 disarms. */
void spk__fault_arm(uint64_t n);
/* Fallible calls counted since the last arm (or census). */
uint64_t spk__fault_calls(void);
/* Disarms and, until the next arm, records where each fallible call comes from: */
void spk__fault_census(void);
/* the n-th call's site since the census (n >= 1), a hash of its place and two callers up: calls
 * from one place by one path (a loop's iterations) share it. 0 where not recorded. */
uint64_t spk__fault_site(uint64_t n);
#define SPK__FAULT_ENABLED 1
#else
static inline bool spk__fault(void) { return false; }
#define SPK__FAULT_ENABLED 0
#endif

#define spk__malloc(n) (spk__fault() ? NULL : malloc(n))
#define spk__calloc(n, size) (spk__fault() ? NULL : calloc(n, size))
#define spk__realloc(p, n) (spk__fault() ? NULL : realloc(p, n))
/* A Vulkan call that may fail: `error` stands in for it when injected. */
#define SPK__VK(error, call) (spk__fault() ? (error) : (call))

#endif
