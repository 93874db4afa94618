/* Storage types: float32 <-> F16 / BF16 conversions against float64 references computed here
 * (every 16-bit value, every midpoint between neighbours, subnormals, NaN, infinities), and the
 * names and sizes. No GPU needed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* The value of a finite F16 from its fields, in float64. */
static double ref_f16_value(uint16_t h) {
    int exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
    double v = exp ? ldexp(1024 + mant, exp - 25) : ldexp(mant, -24);
    return (h & 0x8000) ? -v : v;
}

/* The F16 nearest to x (ties to the even encoding), by search over the positive finite values. */
static uint16_t ref_to_f16(double x) {
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    double a = fabs(x);
    if (a >= 65520.0) return sign | 0x7C00;
    unsigned lo = 0, hi = 0x7BFF; /* the largest encoding with value <= a */
    while (lo < hi) {
        unsigned mid = (lo + hi + 1) / 2;
        if (ref_f16_value((uint16_t)mid) <= a) lo = mid;
        else hi = mid - 1;
    }
    if (lo == 0x7BFF) return sign | 0x7BFF;
    double below = ref_f16_value((uint16_t)lo), above = ref_f16_value((uint16_t)(lo + 1));
    unsigned pick = a - below < above - a ? lo : a - below > above - a ? lo + 1 : (lo & 1) ? lo + 1 : lo;
    return (uint16_t)(sign | pick);
}

/* The BF16 nearest to a finite float x (ties to even), from its two neighbours in float64. */
static uint16_t ref_to_bf16(float x) {
    uint32_t u = bits_of(x), sign = u & 0x80000000u, mag = u & 0x7FFFFFFFu;
    uint32_t lo = mag & 0xFFFF0000u, hi = lo + 0x10000u;
    double a = fabs((double)x), below = from_bits(lo);
    double above = hi >= 0x7F800000u ? ldexp(1.0, 128) : (double)from_bits(hi); /* inf sits where 2^128 would */
    uint32_t pick = a - below < above - a ? lo : a - below > above - a ? hi : ((lo >> 16) & 1) ? hi : lo;
    return (uint16_t)((sign | pick) >> 16);
}

static uint16_t to_f16(float f) {
    uint16_t h;
    assert_int_equal(spk_convert(&f, SPK_DTYPE_F32, &h, SPK_DTYPE_F16, 1), SPK_OK);
    return h;
}

static uint16_t to_bf16(float f) {
    uint16_t h;
    assert_int_equal(spk_convert(&f, SPK_DTYPE_F32, &h, SPK_DTYPE_BF16, 1), SPK_OK);
    return h;
}

static float widen(uint16_t h, spk_dtype from) {
    float f;
    assert_int_equal(spk_convert(&h, from, &f, SPK_DTYPE_F32, 1), SPK_OK);
    return f;
}

static void check_f16(float f) {
    if (isnan(f)) {
        uint16_t h = to_f16(f);
        assert_true((h & 0x7C00) == 0x7C00 && (h & 0x3FF) != 0 && (h & 0x200)); /* a quiet NaN */
        assert_int_equal(h >> 15, bits_of(f) >> 31);
        return;
    }
    uint16_t want = isinf(f) ? (uint16_t)((f < 0 ? 0x8000 : 0) | 0x7C00) : ref_to_f16(f);
    if (to_f16(f) != want) fail_msg("f16 of %a (0x%08x): got 0x%04x, want 0x%04x", f, bits_of(f), to_f16(f), want);
}

static void check_bf16(float f) {
    if (isnan(f)) {
        uint16_t h = to_bf16(f);
        assert_true((h & 0x7F80) == 0x7F80 && (h & 0x7F) != 0 && (h & 0x40));
        assert_int_equal(h >> 15, bits_of(f) >> 31);
        return;
    }
    uint16_t want = isinf(f) ? (uint16_t)(bits_of(f) >> 16) : ref_to_bf16(f);
    if (to_bf16(f) != want) fail_msg("bf16 of %a (0x%08x): got 0x%04x, want 0x%04x", f, bits_of(f), to_bf16(f), want);
}

/* Every F16 widens to its exact value and narrows back to itself; every midpoint between two
 * neighbours (and the floats just either side of it) rounds as float64 says. */
static void test_f16_every_value_and_midpoint(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = widen((uint16_t)h, SPK_DTYPE_F16);
        if ((h & 0x7C00) == 0x7C00 && (h & 0x3FF)) {
            assert_true(isnan(f));
            assert_int_equal(to_f16(f), h | 0x200); /* payload kept, made quiet */
            continue;
        }
        if ((h & 0x7FFF) == 0x7C00) assert_true(isinf(f) && (f < 0) == (h >> 15));
        else assert_true((double)f == ref_f16_value((uint16_t)h));
        assert_int_equal(to_f16(f), h);
        if ((h & 0x7FFF) >= 0x7BFF) continue;
        double mid = (ref_f16_value((uint16_t)h) + ref_f16_value((uint16_t)(h + 1))) / 2; /* exact in float */
        float m = (float)mid;
        assert_true((double)m == mid);
        check_f16(m);
        check_f16(nextafterf(m, 0));
        check_f16(nextafterf(m, INFINITY));
        check_f16(-m);
    }
}

/* Floats across the whole range (every 65521st bit pattern: all exponents, both signs), and the
 * edges: overflow at 65520, the smallest subnormal and half of it. */
static void test_f16_from_any_float(void **state) {
    (void)state;
    for (uint64_t u = 0; u < 0x100000000ull; u += 65521) check_f16(from_bits((uint32_t)u));
    float edges[] = {65504.0f, 65519.996f, 65520.0f, 1e30f, 0x1p-24f, 0x1p-25f, 0x1.000002p-25f, 0x1.8p-24f,
                     0x1p-14f, 0x1.ffcp-15f, 0x1.ffep-15f, 1e-30f, 0.0f, -0.0f, 0x1p-149f, INFINITY, -INFINITY, NAN};
    for (size_t i = 0; i < sizeof edges / sizeof *edges; i++) {
        check_f16(edges[i]);
        check_f16(-edges[i]);
    }
    assert_int_equal(to_f16(65519.996f), 0x7BFF);
    assert_int_equal(to_f16(65520.0f), 0x7C00);
    assert_int_equal(to_f16(0x1p-25f), 0x0000);    /* the tie between 0 and 2^-24 goes to even 0 */
    assert_int_equal(to_f16(0x1.8p-24f), 0x0002);  /* 1.5 units ties to 2 */
    assert_int_equal(to_f16(-0.0f), 0x8000);
}

static void test_bf16(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = widen((uint16_t)h, SPK_DTYPE_BF16);
        assert_int_equal(bits_of(f), h << 16); /* exact: float32's upper half */
        if (isnan(f)) {
            assert_int_equal(to_bf16(f), h | 0x40);
            continue;
        }
        assert_int_equal(to_bf16(f), h);
        uint32_t mid = (h << 16) | 0x8000u; /* halfway to the next encoding */
        if ((mid & 0x7F800000u) != 0x7F800000u) {
            check_bf16(from_bits(mid));
            check_bf16(from_bits(mid - 1));
            check_bf16(from_bits(mid + 1));
        }
    }
    for (uint64_t u = 0; u < 0x100000000ull; u += 65521) check_bf16(from_bits((uint32_t)u));
    assert_int_equal(to_bf16(from_bits(0x7F7FFFFFu)), 0x7F80); /* FLT_MAX rounds to inf */
    assert_int_equal(to_bf16(from_bits(0x3F808000u)), 0x3F80); /* tie to even */
    assert_int_equal(to_bf16(from_bits(0x3F818000u)), 0x3F82);
}

static void test_names_sizes_and_bulk(void **state) {
    (void)state;
    spk_dtype d;
    const char *names[] = {"f32", "f16", "bf16"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(spk_dtype_from_name(names[i], &d), SPK_OK);
        assert_int_equal(d, i);
        assert_string_equal(spk_dtype_name(d), names[i]);
        assert_int_equal(spk_dtype_size(d), i ? 2 : 4);
    }
    assert_int_equal(spk_dtype_from_name("fp16", &d), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_dtype_from_name(NULL, &d), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_dtype_size((spk_dtype)7), 0);
    assert_string_equal(spk_dtype_name((spk_dtype)7), "unknown dtype");
    float f[5] = {1, -2.5f, 3e-6f, 70000, NAN}, back[5];
    uint16_t h[5], b[5];
    assert_int_equal(spk_convert(f, SPK_DTYPE_F32, h, (spk_dtype)7, 5), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_convert(NULL, SPK_DTYPE_F32, h, SPK_DTYPE_F16, 5), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_convert(NULL, SPK_DTYPE_F32, NULL, SPK_DTYPE_F16, 0), SPK_OK);
    assert_int_equal(spk_convert(f, SPK_DTYPE_F32, h, SPK_DTYPE_F16, 5), SPK_OK);
    for (int i = 0; i < 5; i++) assert_int_equal(h[i], to_f16(f[i]));
    /* F16 -> BF16 goes through the exact float: one rounding. */
    assert_int_equal(spk_convert(h, SPK_DTYPE_F16, b, SPK_DTYPE_BF16, 5), SPK_OK);
    for (int i = 0; i < 5; i++) assert_int_equal(b[i], to_bf16(widen(h[i], SPK_DTYPE_F16)));
    assert_int_equal(spk_convert(b, SPK_DTYPE_BF16, back, SPK_DTYPE_F32, 5), SPK_OK);
    assert_true(back[0] == 1 && back[1] == -2.5f && isinf(back[3]) && isnan(back[4]));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_every_value_and_midpoint),
        cmocka_unit_test(test_f16_from_any_float),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_names_sizes_and_bulk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
