#version 450
#extension GL_EXT_samplerless_texture_functions : require
// Layer norm over the last axis: y = (x - mean) / sqrt(var + eps) * gamma + beta, with the biased
// variance. The tensor is [rows, n]; a group of GROUP invocations handles one row. The mean and
// then the variance are two separate compensated sums (mean first, then squared deviations) of
// x - x[0], the row shifted by its first element, so a row like 1e4 + N(0, 1) keeps its accuracy:
// the shifted values are exact and their mean is small, where a float32 mean of 1e4 alone would
// be off by half an ulp (5e-4), and E[x^2] - E[x]^2 would lose every digit. Rows of
// at most CACHE * GROUP elements stay in registers across the three passes; longer ones re-read x.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#extension GL_EXT_shader_16bit_storage : enable

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint GROUP = 64;
layout(constant_id = 2) const bool USE_SUBGROUP = false;
layout(constant_id = 3) const uint CACHE = 1; // 0: re-read x in every pass
// With CACHE, each group normalizes ROWS consecutive rows, loading gamma and beta into registers
// once for all of them (on CPU drivers the loads, not the arithmetic, are the cost).
layout(constant_id = 4) const uint ROWS = 1;

// VEC 4 loads four elements at a time (rows whose length is a multiple of 4).
#if VEC == 4
#define T vec4
#define SUM(v) ((v.x + v.y) + (v.z + v.w))
#define FIRST(v) v.x
#else
#define T float
#define SUM(v) (v)
#define FIRST(v) (v)
#endif

// X_DTYPE and Y_DTYPE (specialization constants 5 and 6): 0 float32, 1 F16 (STORAGE16 variants
// load and store float16_t; through texel views an F16 x reads as floats already). gamma, beta
// and the statistics are float32.
layout(constant_id = 5) const uint X_DTYPE = 0;
layout(constant_id = 6) const uint Y_DTYPE = 0;
#if VEC == 4
#define T16 f16vec4
#else
#define T16 float16_t
#endif

// TEXEL 1 reads x, gamma and beta as uniform texel buffers (views of T), which on lavapipe are
// vectorized gathers where storage-buffer loads loop over the lanes.
#if TEXEL
layout(set = 0, binding = 0) uniform textureBuffer x;
layout(set = 0, binding = 1) uniform textureBuffer gamma;
layout(set = 0, binding = 2) uniform textureBuffer beta;
#if VEC == 4
#define LOAD(buf, i) texelFetch(buf, int(i))
#else
#define LOAD(buf, i) texelFetch(buf, int(i)).x
#endif
#define LOAD_X(i) LOAD(x, i)
#else
layout(set = 0, binding = 0) readonly buffer X { T x[]; };
layout(set = 0, binding = 1) readonly buffer Gamma { T gamma[]; };
layout(set = 0, binding = 2) readonly buffer Beta { T beta[]; };
#define LOAD(buf, i) buf[i]
#if STORAGE16
layout(set = 0, binding = 0) readonly buffer XH { T16 xh[]; };
#define LOAD_X(i) (X_DTYPE == 1 ? T(xh[i]) : x[i])
#else
#define LOAD_X(i) x[i]
#endif
#endif
layout(set = 0, binding = 3) writeonly buffer Y { T y[]; };
#if STORAGE16
layout(set = 0, binding = 3) writeonly buffer YH { T16 yh[]; };
void store_y(uint i, T v) { if (Y_DTYPE == 1) yh[i] = T16(v); else y[i] = v; }
#else
void store_y(uint i, T v) { y[i] = v; }
#endif
layout(set = 0, binding = 4) writeonly buffer Stats { vec2 stats[]; }; // [rows]: mean, rstd

layout(push_constant) uniform Push {
    uint n; // in units of T
    uint rows;
    float eps;
    uint keep_stats; // training: write each row's mean and rstd for the backward
} pc;

#include "kahan.glsl"
#include "reduce.glsl"

void main() {
    uint groups_per_wg = gl_WorkGroupSize.x / GROUP;
    uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint first_row = (wg * groups_per_wg + gl_LocalInvocationID.x / GROUP) * ROWS;
    uint g = gl_LocalInvocationID.x % GROUP;
    float inv_n = 1.0 / (float(pc.n) * float(VEC));

    T gv[CACHE > 0 ? CACHE : 1], bv[CACHE > 0 ? CACHE : 1];
    if (CACHE > 0) {
        [[unroll]] for (uint k = 0; k < CACHE; k++) {
            uint i = g + k * GROUP;
            gv[k] = i < pc.n ? LOAD(gamma, i) : T(0.0);
            bv[k] = i < pc.n ? LOAD(beta, i) : T(0.0);
        }
    }

    for (uint r = 0; r < ROWS; r++) {
        uint row = first_row + r;
        uint n = row < pc.rows ? pc.n : 0; // rows past the end take part in the reductions only
        uint base = row * pc.n;

        float shift = n > 0 ? FIRST(LOAD_X(base)) : 0.0;
        T v[CACHE > 0 ? CACHE : 1]; // x - shift
        float sum = 0.0, comp = 0.0;
        if (CACHE > 0) {
            [[unroll]] for (uint k = 0; k < CACHE; k++) {
                uint i = g + k * GROUP;
                v[k] = i < n ? LOAD_X(base + i) - shift : T(0.0);
                sum += SUM(v[k]); // at most CACHE terms here: no compensation needed
            }
        } else {
            for (uint i = g; i < n; i += GROUP) kahan_add(sum, comp, SUM((LOAD_X(base + i) - shift)));
        }
        float mean = group_sum(sum) * inv_n; // of the shifted row

        sum = 0.0, comp = 0.0;
        if (CACHE > 0) {
            [[unroll]] for (uint k = 0; k < CACHE; k++) {
                T d = g + k * GROUP < n ? v[k] - mean : T(0.0);
                sum += SUM((d * d));
            }
        } else {
            for (uint i = g; i < n; i += GROUP) {
                T d = (LOAD_X(base + i) - shift) - mean;
                kahan_add(sum, comp, SUM((d * d)));
            }
        }
        float rstd = inversesqrt(group_sum(sum) * inv_n + pc.eps);
        if (pc.keep_stats != 0 && g == 0 && n > 0) stats[row] = vec2(shift + mean, rstd);

        if (CACHE > 0) {
            // y = (v - mean) * rstd * gamma + beta as one fma: scale = rstd * gamma,
            // offset = beta - mean * scale.
            [[unroll]] for (uint k = 0; k < CACHE; k++) {
                uint i = g + k * GROUP;
                T scale = rstd * gv[k];
                if (i < n) store_y(base + i, fma(v[k], scale, fma(T(-mean), scale, bv[k])));
            }
        } else {
            for (uint i = g; i < n; i += GROUP)
                store_y(base + i, ((LOAD_X(base + i) - shift) - mean) * rstd * LOAD(gamma, i) + LOAD(beta, i));
        }
    }
}
