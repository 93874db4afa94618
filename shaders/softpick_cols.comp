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
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0; // 0 fused, 1 partial sums, 3 their total, 2 scale
layout(constant_id = 2) const uint FOLD = 1; // 2: two rows of a 2-wide tensor per vec4

#if VEC == 4
#define T vec4
#else
#define T float
#endif

#define SOFTPICK_IO_ID 3
#include "softpick_io.glsl" // x, dy and y in their storage types
layout(set = 0, binding = 2 + BACKWARD) buffer Partial { T partial[]; }; // [outer, segments(, 2), inner]

layout(push_constant) uniform Push {
    uint outer;
    uint n;
    uint inner;    // in units of T
    uint segments;
    uint seg_len;   // rows per segment
    uint seg_first; // first row of segment s is s * seg_first
    uint row_step;  // distance between a segment's rows
} pc;

#include "kahan.glsl"

#if VEC == 4
#define ACC vec4
#define ADD kahan_add4
#else
#define ACC float
#define ADD kahan_add
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
            ADD(sum, comp, abs(xv));
            if (BACKWARD != 0) ADD(tsum, tcomp, xv * LOAD_DY(column + j * pc.inner));
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
#if BACKWARD
        T xv = LOAD_X(at);
        store_y(at, (LOAD_DY(at) - sign(xv) * (tsum / r)) / r);
#else
        store_y(at, LOAD_X(at) / r);
#endif
    }
}
