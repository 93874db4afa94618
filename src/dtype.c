/* Storage types: float32, IEEE binary16 (F16) and bfloat16 (BF16), and the conversions between
 * them. Narrowing rounds to nearest, ties to even; NaN stays NaN (made quiet, sign and leading
 * payload bits kept), infinities and signed zeros are kept, finite values past a type's range
 * become infinities, F16's subnormals are produced and read exactly. */
#include "internal.h"

#include <string.h>

static uint32_t spk__bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float spk__from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t spk__f32_to_f16(float f) {
    uint32_t x = spk__bits(f), sign = (x >> 16) & 0x8000u, a = x & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return (uint16_t)(sign | 0x7E00u | ((a >> 13) & 0x3FFu)); /* NaN, quiet */
    if (a >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u); /* >= 65520 rounds past 65504: inf */
    uint32_t h, rest, half;
    if (a >= 0x38800000u) { /* a normal half (>= 2^-14): drop 13 mantissa bits */
        h = (a - 0x38000000u) >> 13;
        rest = a & 0x1FFFu, half = 0x1000u;
    } else { /* a subnormal half or zero: units of 2^-24 */
        uint32_t e = a >> 23, shift = 126 - e;
        if (shift > 24) return (uint16_t)sign; /* below 2^-25: rounds to zero */
        uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
        h = m >> shift;
        rest = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    }
    if (rest > half || (rest == half && (h & 1))) h++; /* a carry moves into the exponent, as it should */
    return (uint16_t)(sign | h);
}

float spk__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
    if (exp == 0x1F) return spk__from_bits(sign | 0x7F800000u | (mant << 13)); /* inf, NaN */
    if (exp != 0) return spk__from_bits(sign | ((exp + 112) << 23) | (mant << 13));
    float f = (float)mant * 0x1p-24f; /* zero and subnormals are exact in float */
    return sign ? -f : f;
}

uint16_t spk__f32_to_bf16(float f) {
    uint32_t x = spk__bits(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x40u); /* NaN, quiet */
    return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1)) >> 16); /* overflow carries into inf */
}

float spk__bf16_to_f32(uint16_t h) { return spk__from_bits((uint32_t)h << 16); /* float32's upper half */ }

size_t spk_dtype_size(spk_dtype dtype) {
    switch (dtype) {
    case SPK_DTYPE_F32: return 4;
    case SPK_DTYPE_F16:
    case SPK_DTYPE_BF16: return 2;
    }
    return 0;
}

const char *spk_dtype_name(spk_dtype dtype) {
    switch (dtype) {
    case SPK_DTYPE_F32: return "f32";
    case SPK_DTYPE_F16: return "f16";
    case SPK_DTYPE_BF16: return "bf16";
    }
    return "unknown dtype";
}

spk_status spk_dtype_from_name(const char *name, spk_dtype *out) {
    if (!name || !out) return SPK_ERROR_INVALID_ARGUMENT;
    for (int d = SPK_DTYPE_F32; d <= SPK_DTYPE_BF16; d++)
        if (strcmp(name, spk_dtype_name((spk_dtype)d)) == 0) {
            *out = (spk_dtype)d;
            return SPK_OK;
        }
    return SPK_ERROR_INVALID_ARGUMENT;
}

/* Element i of `src` (of type `from`) as a float. */
static float spk__load(const void *src, spk_dtype from, size_t i) {
    if (from == SPK_DTYPE_F32) {
        float f;
        memcpy(&f, (const unsigned char *)src + 4 * i, sizeof f);
        return f;
    }
    uint16_t h;
    memcpy(&h, (const unsigned char *)src + 2 * i, sizeof h);
    return from == SPK_DTYPE_F16 ? spk__f16_to_f32(h) : spk__bf16_to_f32(h);
}

spk_status spk_convert(const void *src, spk_dtype from, void *dst, spk_dtype to, size_t count) {
    if (!spk_dtype_size(from) || !spk_dtype_size(to)) return SPK_ERROR_INVALID_ARGUMENT;
    if (count == 0) return SPK_OK;
    if (!src || !dst) return SPK_ERROR_INVALID_ARGUMENT;
    if (from == to) {
        memmove(dst, src, count * spk_dtype_size(to));
        return SPK_OK;
    }
    unsigned char *out = dst;
    for (size_t i = 0; i < count; i++) {
        float f = spk__load(src, from, i);
        if (to == SPK_DTYPE_F32) {
            memcpy(out + 4 * i, &f, sizeof f);
        } else {
            uint16_t h = to == SPK_DTYPE_F16 ? spk__f32_to_f16(f) : spk__f32_to_bf16(f);
            memcpy(out + 2 * i, &h, sizeof h);
        }
    }
    return SPK_OK;
}
