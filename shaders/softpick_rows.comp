#version 450
#extension GL_EXT_samplerless_texture_functions : require
// Softpick (or another normalizer: NORM, normalizer.glsl) along a contiguous axis: the tensor is
// [rows, row_len] in memory.
//
// A group of GROUP invocations handles one segment of one row: the row is split into `segments`
// segments so that a few long rows still spread over many workgroups. With one segment per row
// (MODE 0) the group sums |x| and scales in one dispatch. With several, MODE 1 writes each
// segment's partial sum and MODE 2 adds a row's partials and scales its segment. MODE 3 is MODE 0
// for rows of at most CACHE * GROUP loads: each invocation keeps its loads in registers between
// the sum and the scaling, so x is read once (on CPU drivers the loads, not DRAM, are the cost).
// GROUP is 1 (an invocation per row, for short rows), the subgroup size, or the workgroup size.
//
// BACKWARD 1 is the backward pass over the same rows and segments: with S = sum |x| and
// T = sum dy x, dx = (dy - sgn(x) T / (1 + S)) / (1 + S) (sgn(0) = 0), two sums where the forward
// has one (partials hold both).
//
// The exponential normalizers (NORM 1 and 2) need each row's maximum first: MODE 4 writes it
// after the partial sums (at max_base), one group per row, and every other mode reads it; the
// sums are then of op_mass and dy op_weight instead of |x| and dy x.
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#extension GL_EXT_control_flow_attributes : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint GROUP = 64;           // invocations per segment, a power of two
layout(constant_id = 2) const bool USE_SUBGROUP = false; // subgroup arithmetic, else shared memory
layout(constant_id = 3) const uint MODE = 0; // 0 fused, 1 partial sums, 2 scale, 3 cached, 4 row maxima
layout(constant_id = 4) const uint CACHE = 1;            // MODE 3: loads kept per invocation

#if VEC == 4
#define T vec4
#define ABS_SUM(v) ((abs(v.x) + abs(v.y)) + (abs(v.z) + abs(v.w)))
#define DOT(a, b) dot(a, b)
#else
#define T float
#define ABS_SUM(v) abs(v)
#define DOT(a, b) ((a) * (b))
#endif

#define SOFTPICK_IO_ID 5
#include "softpick_io.glsl" // x, dy and y in their storage types
#define NORM_ID 7
#include "normalizer.glsl"
// The element functions of the normalizer on a load, summed over its components where a load
// is a vec4 (four elements of one row), and the load's largest element.
#if VEC == 4
#define MASS(v, m) ((op_mass(v.x, m) + op_mass(v.y, m)) + (op_mass(v.z, m) + op_mass(v.w, m)))
#define WDOT(v, d, m) ((op_weight(v.x, m) * d.x + op_weight(v.y, m) * d.y) + (op_weight(v.z, m) * d.z + op_weight(v.w, m) * d.w))
#define LOAD_MAX(v) max(max(v.x, v.y), max(v.z, v.w))
#else
#define MASS(v, m) op_mass(v, m)
#define WDOT(v, d, m) (op_weight(v, m) * (d))
#define LOAD_MAX(v) (v)
#endif
layout(set = 0, binding = 2 + BACKWARD) buffer Partial { float partial[]; }; // [rows, segments(, 2)]

layout(push_constant) uniform Push {
    uint row_len;  // in units of T
    uint rows;
    uint segments; // per row
    uint seg_len;  // in units of T
    uint max_base; // NORM 1, 2: the row maxima's place in Partial
} pc;

#include "kahan.glsl"
#define GROUP_MAX
#include "reduce.glsl"

// The output at i from x (and dy), the row's sums and its maximum m: y = x / (1 + S), or the
// backward's dx (the other normalizers: normalizer.glsl's op_*).
T result(uint i, T xv, float s, float t, float m) {
    if (NORM == 0) {
#if BACKWARD
        float r = 1.0 + s;
        return (LOAD_DY(i) - sign(xv) * (t / r)) / r;
#else
        return xv / (1.0 + s);
#endif
    }
    T y;
#if VEC == 4
    [[unroll]] for (uint c = 0; c < 4; c++)
        y[c] = BACKWARD != 0 ? op_dx(xv[c], LOAD_DY(i)[c], s, t, m) : op_weight(xv[c], m) / norm_total(s);
#else
    y = BACKWARD != 0 ? op_dx(xv, LOAD_DY(i), s, t, m) : op_weight(xv, m) / norm_total(s);
#endif
    return y;
}

void main() {
    uint groups_per_wg = gl_WorkGroupSize.x / GROUP;
    uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint item = wg * groups_per_wg + gl_LocalInvocationID.x / GROUP;
    uint g = gl_LocalInvocationID.x % GROUP;
    uint row = item / pc.segments;
    uint seg = item % pc.segments;
    bool valid = row < pc.rows;
    const uint P = 1 + BACKWARD; // partial sums per segment

    uint base = row * pc.row_len;
    uint begin = seg * pc.seg_len;
    uint end = valid ? min(begin + pc.seg_len, pc.row_len) : 0;

    if (MODE == 4) { // the row's maximum, by its first segment's group over the whole row
        float m = uintBitsToFloat(0xff800000u); // -inf
        for (uint i = g; valid && seg == 0 && i < pc.row_len; i += GROUP) m = max(m, LOAD_MAX(LOAD_X(base + i)));
        m = group_max(m);
        if (valid && seg == 0 && g == 0) partial[pc.max_base + row] = m;
        return;
    }
    float m = NORM != 0 && valid ? op_max(partial[pc.max_base + row]) : 0.0;

    if (MODE == 3) {
        T v[CACHE];
        float sum = 0.0, comp = 0.0, tsum = 0.0, tcomp = 0.0;
        for (uint k = 0; k < CACHE; k++) {
            uint i = begin + g + k * GROUP;
            v[k] = i < end ? LOAD_X(base + i) : T(0.0);
            // (padding loads are zeros: no part of |x|'s sum, but of the exponential forms')
            if (NORM == 0 || i < end) kahan_add(sum, comp, NORM == 0 ? ABS_SUM(v[k]) : MASS(v[k], m));
            if (BACKWARD != 0 && i < end)
                kahan_add(tsum, tcomp, NORM == 0 ? DOT(v[k], LOAD_DY(base + i)) : WDOT(v[k], LOAD_DY(base + i), m));
        }
        float s = group_sum(sum), t = BACKWARD != 0 ? group_sum(tsum) : 0.0;
        for (uint k = 0; k < CACHE; k++) {
            uint i = begin + g + k * GROUP;
            if (i < end) store_y(base + i, result(base + i, v[k], s, t, m));
        }
        return;
    }

    float s, t = 0.0;
    if (MODE == 2) {
        // Add the row's partial sums (written by MODE 1) in the same compensated way.
        float sum = 0.0, comp = 0.0, tsum = 0.0, tcomp = 0.0;
        if (valid)
            for (uint k = g; k < pc.segments; k += GROUP) {
                kahan_add(sum, comp, partial[(row * pc.segments + k) * P]);
                if (BACKWARD != 0) kahan_add(tsum, tcomp, partial[(row * pc.segments + k) * P + 1]);
            }
        s = group_sum(sum);
        if (BACKWARD != 0) t = group_sum(tsum);
    } else {
        float sum = 0.0, comp = 0.0, tsum = 0.0, tcomp = 0.0;
        for (uint i = begin + g; i < end; i += GROUP) {
            T xv = LOAD_X(base + i);
            kahan_add(sum, comp, NORM == 0 ? ABS_SUM(xv) : MASS(xv, m));
            if (BACKWARD != 0)
                kahan_add(tsum, tcomp, NORM == 0 ? DOT(xv, LOAD_DY(base + i)) : WDOT(xv, LOAD_DY(base + i), m));
        }
        s = group_sum(sum);
        if (BACKWARD != 0) t = group_sum(tsum);
        if (MODE == 1) {
            if (valid && g == 0) {
                partial[(row * pc.segments + seg) * P] = s;
                if (BACKWARD != 0) partial[(row * pc.segments + seg) * P + 1] = t;
            }
            return;
        }
    }
    for (uint i = begin + g; i < end; i += GROUP) store_y(base + i, result(base + i, LOAD_X(base + i), s, t, m));
}
