/* Small host-side helpers: checked arithmetic, growable arrays, error messages, the clock. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "internal.h"
#include "fault.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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

uint64_t spk__fnv1a_more(uint64_t h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

uint64_t spk__fnv1a(const unsigned char *p, size_t n) { return spk__fnv1a_more(1469598103934665603ull, p, n); }

unsigned char *spk__read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *data = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0) data = spk__malloc(n ? (size_t)n : 1);
    if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
    fclose(f);
    if (data) *size = (size_t)n;
    return data;
}


double spk__now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
