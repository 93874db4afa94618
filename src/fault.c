/* The fault-injection counter (see fault.h). Process-wide: the tests that arm it run one thread. */
#include "fault.h"
#include "internal.h"

#include <execinfo.h>
#include <stdatomic.h>

#define SPK__FAULT_SITES 65536 /* calls a census records; later ones read as site 0 */

static atomic_uint_fast64_t spk__fault_target, spk__fault_seen;
static atomic_bool spk__fault_recording;
static uint64_t spk__fault_sites[SPK__FAULT_SITES];

/* The call's place and the two calls that led there, hashed (FNV-1a): the same for every call
 * made from one place by one path, whatever the data (the whole stack tells nearly every call of
 * a training step from the others: a walk of 420 of its 450). */
#define SPK__FAULT_DEPTH 3
static uint64_t spk__fault_stack_hash(void) {
    void *frames[SPK__FAULT_DEPTH + 1];
    int n = backtrace(frames, SPK__FAULT_DEPTH + 1);
    uint64_t h = n > 1 ? spk__fnv1a((const unsigned char *)(frames + 1), (size_t)(n - 1) * sizeof *frames) : 1;
    return h ? h : 1;
}

bool spk__fault(void) {
    uint64_t seen = atomic_fetch_add(&spk__fault_seen, 1) + 1;
    if (atomic_load(&spk__fault_recording) && seen <= SPK__FAULT_SITES)
        spk__fault_sites[seen - 1] = spk__fault_stack_hash();
    uint64_t target = atomic_load(&spk__fault_target);
    if (target == 0 || seen != target) return false;
    atomic_store(&spk__fault_target, 0);
    return true;
}

void spk__fault_arm(uint64_t n) {
    atomic_store(&spk__fault_recording, false);
    atomic_store(&spk__fault_seen, 0);
    atomic_store(&spk__fault_target, n);
}

void spk__fault_census(void) {
    spk__fault_arm(0);
    atomic_store(&spk__fault_recording, true);
}

uint64_t spk__fault_calls(void) { return atomic_load(&spk__fault_seen); }

uint64_t spk__fault_site(uint64_t n) {
    return n >= 1 && n <= SPK__FAULT_SITES && n <= spk__fault_calls() ? spk__fault_sites[n - 1] : 0;
}
