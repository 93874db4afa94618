#version 450
#extension GL_EXT_samplerless_texture_functions : require
// Softpick along a strided axis: the tensor is [outer, n, inner] in memory with inner > 1 and the
// reduction runs over n. Each invocation owns one column (one outer, one inner index; with VEC 4,
// four adjacent columns) over one segment of n, so neighbouring invocations read neighbouring
// addresses. Segment s takes seg_len rows j = s * seg_first + k * row_step: blocked segments
// (seg_first = seg_len, row_step = 1) suit CPU drivers, whose lanes then each stream through
// their own memory; interleaved ones (seg_first = 1, row_step = segments) suit GPUs, whose
// neighbouring invocations then read neighbouring rows. MODE 0 handles a whole column in one
// dispatch; for long columns MODE 1 writes each segment's partial sums, MODE 3 (one invocation
// per column) adds them into the column's first partial, and MODE 2 scales each segment by it.
//
// BACKWARD 1 is the backward pass over the same columns and segments: with S = sum |x| and
// T = sum dy x, dx = (dy - sgn(x) T / (1 + S)) / (1 + S) (sgn(0) = 0); partials hold S and T side
// by side ([outer, segments, 2, inner]).
//
// FOLD 2 packs two rows of a 2-wide tensor into each vec4 (x0 y0 x1 y1): the host passes it as
// n/2 rows of one vec4 column, and the sums of lanes (0, 2) and (1, 3) are folded together.
//
// The exponential normalizers (NORM 1 and 2, normalizer.glsl) need each column's maximum first:
// MODE 4 writes it after the partial sums (at max_base, [outer, inner]), and every other mode
// reads it; the sums are then of op_mass and dy op_weight instead of |x| and dy x.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0; // 0 fused, 1 partial sums, 3 their total, 2 scale, 4 maxima
layout(constant_id = 2) const uint FOLD = 1; // 2: two rows of a 2-wide tensor per vec4

#if VEC == 4
#define T vec4
#else
#define T float
#endif

#define SOFTPICK_IO_ID 3
#include "softpick_io.glsl" // x, dy and y in their storage types
#define NORM_ID 5
#include "normalizer.glsl"
layout(set = 0, binding = 2 + BACKWARD) buffer Partial { T partial[]; }; // [outer, segments(, 2), inner]

layout(push_constant) uniform Push {
    uint outer;
    uint n;
    uint inner;    // in units of T
    uint segments;
    uint seg_len;   // rows per segment
    uint seg_first; // first row of segment s is s * seg_first
    uint row_step;  // distance between a segment's rows
    uint max_base;  // NORM 1, 2: the column maxima's place in Partial (in T)
} pc;

#include "kahan.glsl"

#if VEC == 4
#define ACC vec4
#define ADD kahan_add4
// The normalizer's element functions on each column of a load (m: the columns' maxima).
#define APPLY4(f, v, m) vec4(f(v.x, m.x), f(v.y, m.y), f(v.z, m.z), f(v.w, m.w))
#define MASS(v, m) APPLY4(op_mass, v, m)
#define WDOT(v, d, m) (APPLY4(op_weight, v, m) * (d))
#define WEIGHT(v, m) APPLY4(op_weight, v, m)
#define OP_MAX(m) vec4(op_max(m.x), op_max(m.y), op_max(m.z), op_max(m.w))
#define DX(v, d, s, t, m) vec4(op_dx(v.x, d.x, s.x, t.x, m.x), op_dx(v.y, d.y, s.y, t.y, m.y), \
                               op_dx(v.z, d.z, s.z, t.z, m.z), op_dx(v.w, d.w, s.w, t.w, m.w))
#else
#define ACC float
#define ADD kahan_add
#define MASS(v, m) op_mass(v, m)
#define WDOT(v, d, m) (op_weight(v, m) * (d))
#define WEIGHT(v, m) op_weight(v, m)
#define OP_MAX(m) op_max(m)
#define DX(v, d, s, t, m) op_dx(v, d, s, t, m)
#endif

void main() {
    uint id = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x +
              gl_LocalInvocationID.x;
    uint i = id % pc.inner;
    uint rest = id / pc.inner;
    uint segments = MODE == 3 ? 1 : pc.segments; // MODE 3 runs one invocation per column
    uint seg = rest % segments;
    uint o = rest / segments;
    if (o >= pc.outer) return;
    const uint P = 1 + BACKWARD; // partial sums per segment

    uint column = o * pc.n * pc.inner + i;
    uint partials = o * pc.segments * P * pc.inner + i; // segment s's S at + s * P * inner, T after

    if (MODE == 4) { // the column's maximum, by its first segment's invocation
        if (seg != 0) return;
        T m = T(uintBitsToFloat(0xff800000u)); // -inf
        for (uint j = 0; j < pc.n; j++) m = max(m, LOAD_X(column + j * pc.inner));
#if VEC == 4
        if (FOLD == 2) m = max(m, m.zwxy);
#endif
        partial[pc.max_base + o * pc.inner + i] = m;
        return;
    }
    T m = NORM != 0 ? OP_MAX(partial[pc.max_base + o * pc.inner + i]) : T(0.0);

    ACC sum = ACC(0.0), comp = ACC(0.0), tsum = ACC(0.0), tcomp = ACC(0.0);
    if (MODE == 3) {
        for (uint s = 0; s < pc.segments; s++) {
            ADD(sum, comp, partial[partials + s * P * pc.inner]);
            if (BACKWARD != 0) ADD(tsum, tcomp, partial[partials + (s * P + 1) * pc.inner]);
        }
        partial[partials] = sum;
        if (BACKWARD != 0) partial[partials + pc.inner] = tsum;
        return;
    }
    if (MODE == 2) {
        sum = partial[partials];
        if (BACKWARD != 0) tsum = partial[partials + pc.inner];
    } else {
        uint j = seg * pc.seg_first;
        for (uint k = 0; k < pc.seg_len && j < pc.n; k++, j += pc.row_step) {
            T xv = LOAD_X(column + j * pc.inner);
            ADD(sum, comp, NORM == 0 ? abs(xv) : MASS(xv, m));
            if (BACKWARD != 0) ADD(tsum, tcomp, NORM == 0 ? xv * LOAD_DY(column + j * pc.inner) : WDOT(xv, LOAD_DY(column + j * pc.inner), m));
        }
        if (MODE == 1) {
            partial[partials + seg * P * pc.inner] = sum;
            if (BACKWARD != 0) partial[partials + (seg * P + 1) * pc.inner] = tsum;
            return;
        }
    }
#if VEC == 4
    if (FOLD == 2) sum = (sum + sum.zwxy), tsum = (tsum + tsum.zwxy);
#endif
    ACC r = 1.0 + sum;
    uint j = seg * pc.seg_first;
    for (uint k = 0; k < pc.seg_len && j < pc.n; k++, j += pc.row_step) {
        uint at = column + j * pc.inner;
        T xv = LOAD_X(at);
        if (NORM != 0) {
            store_y(at, BACKWARD != 0 ? DX(xv, LOAD_DY(at), sum, tsum, m) : WEIGHT(xv, m) / (NORM == 1 ? sum + NORM_EPS : sum));
            continue;
        }
#if BACKWARD
        store_y(at, (LOAD_DY(at) - sign(xv) * (tsum / r)) / r);
#else
        store_y(at, xv / r);
#endif
    }
}
