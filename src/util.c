/* Small host-side helpers: checked arithmetic, growable arrays, error messages. */
#include "internal.h"
#include "fault.h"

#include <stdio.h>
#include <stdlib.h>

bool spk__mul_overflows(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return true;
    *out = a * b;
    return false;
}

bool spk__grow(void **items, uint32_t *capacity, uint32_t needed, size_t item_size) {
    if (needed <= *capacity) return true;
    uint32_t cap = *capacity ? *capacity : 4;
    while (cap < needed) cap *= 2;
    void *grown = spk__realloc(*items, (size_t)cap * item_size);
    if (!grown) return false;
    *items = grown;
    *capacity = cap;
    return true;
}

uint32_t spk__pow2_at_least(uint64_t v) {
    uint32_t p = 1;
    while (p < v) p <<= 1;
    return p;
}

spk_status spk__error_message(char *error, size_t error_size, spk_status status, const char *fmt, ...) {
    if (error && error_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(error, error_size, fmt, ap);
        va_end(ap);
    }
    return status;
}
