/* The fault-injection counter (see fault.h). Process-wide: the tests that arm it run one thread. */
#include "fault.h"

#include <stdatomic.h>

static atomic_uint_fast64_t spk__fault_target, spk__fault_seen;

bool spk__fault(void) {
    uint64_t seen = atomic_fetch_add(&spk__fault_seen, 1) + 1;
    uint64_t target = atomic_load(&spk__fault_target);
    if (target == 0 || seen != target) return false;
    atomic_store(&spk__fault_target, 0);
    return true;
}

void spk__fault_arm(uint64_t n) {
    atomic_store(&spk__fault_seen, 0);
    atomic_store(&spk__fault_target, n);
}

uint64_t spk__fault_calls(void) { return atomic_load(&spk__fault_seen); }
