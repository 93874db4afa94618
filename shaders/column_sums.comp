#version 450
#extension GL_EXT_samplerless_texture_functions : require
// Sums over rows, column by column, for the backward passes: out0[n] = sum_m g[m, n] (a bias's
// gradient; layer norm's dbeta) and, with MODE 1 (or alone with MODE 2),
// out1[n] = sum_m g[m, n] xhat[m, n] with
// xhat = (x[m, n] - mean_m) * rstd_m from the per-row statistics the training forward kept
// (layer norm's dgamma). The rows are cut into CHUNKS runs: an invocation sums one run of one
// column (or, with VEC 4, of 4 adjacent columns) with a compensated sum, and the workgroup adds its
// runs in order, so every run gives the same bits (no atomics) while a few hundred columns still
// fill several workgroups; neighbouring invocations read neighbouring addresses. With
// `accumulate` the sums are added to what out0 and out1 hold (gradients accumulate until zeroed,
// as PyTorch's .grad does).
//
// TEXEL 1 reads g and x as uniform texel buffers (R32 views): on lavapipe a vectorized gather,
// where a storage-buffer load is a loop over the lanes.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0; // 0 plain sums, 1 also the sums against xhat, 2 those alone

layout(constant_id = 2) const uint VEC = 1;  // 4 (TEXEL, columns a multiple of 4): 4 columns per invocation

#if TEXEL
layout(set = 0, binding = 0) uniform textureBuffer g; // R32 views, R32G32B32A32 with VEC 4
layout(set = 0, binding = 1) uniform textureBuffer x;
#define LOAD(buf, i) texelFetch(buf, int(i)).x
#define LOAD4(buf, i) texelFetch(buf, int(i))
#else
layout(set = 0, binding = 0) readonly buffer G { float g[]; };
layout(set = 0, binding = 1) readonly buffer X { float x[]; };
#define LOAD(buf, i) buf[i]
#endif
layout(set = 0, binding = 2) readonly buffer Stats { vec2 stats[]; }; // [rows]: mean, rstd
layout(set = 0, binding = 3) buffer Out0 { float out0[]; };
layout(set = 0, binding = 4) buffer Out1 { float out1[]; };

layout(push_constant) uniform Push {
    uint rows, n;
    uint accumulate;
} pc;

#include "kahan.glsl"

layout(constant_id = 3) const uint CHUNKS = 4;            // runs of rows per column (divides the workgroup)
const uint COLS = gl_WorkGroupSize.x / CHUNKS;              // columns (or quads) per workgroup
shared vec4 part[4][gl_WorkGroupSize.x]; // each invocation's sums and compensations

// g and x at one row of this invocation's columns (VEC 1: in .x).
vec4 load_g(uint i) {
#if TEXEL
    if (VEC == 4) return LOAD4(g, i);
#endif
    return vec4(LOAD(g, i), 0.0, 0.0, 0.0);
}
vec4 load_x(uint i) {
#if TEXEL
    if (VEC == 4) return LOAD4(x, i);
#endif
    return vec4(LOAD(x, i), 0.0, 0.0, 0.0);
}

void main() {
    uint lid = gl_LocalInvocationID.x, run = lid / COLS;
    uint col = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * COLS + lid % COLS;
    uint cols = pc.n / VEC; // invocations per row
    uint per = (pc.rows + CHUNKS - 1) / CHUNKS, first = min(run * per, pc.rows), end = min(first + per, pc.rows);
    vec4 s0 = vec4(0.0), c0 = vec4(0.0), s1 = vec4(0.0), c1 = vec4(0.0);
    for (uint m = col < cols ? first : end; m < end; m++) {
        vec4 gv = load_g(m * cols + col);
        if (MODE != 2) kahan_add4(s0, c0, gv);
        if (MODE != 0) {
            vec2 st = stats[m];
            kahan_add4(s1, c1, gv * ((load_x(m * cols + col) - st.x) * st.y));
        }
    }
    part[0][lid] = s0, part[1][lid] = c0, part[2][lid] = s1, part[3][lid] = c1;
    barrier();
    if (run != 0 || col >= cols) return;
    for (uint k = 1; k < CHUNKS; k++) { // the later runs' sums, then their compensations
        uint o = lid + k * COLS;
        if (MODE != 2) kahan_add4(s0, c0, part[0][o]), kahan_add4(s0, c0, -part[1][o]);
        if (MODE != 0) kahan_add4(s1, c1, part[2][o]), kahan_add4(s1, c1, -part[3][o]);
    }
    [[unroll]] for (uint e = 0; e < VEC; e++) {
        uint c = VEC * col + e;
        if (MODE != 2) out0[c] = pc.accumulate != 0 ? out0[c] + s0[e] : s0[e];
        if (MODE != 0) out1[c] = pc.accumulate != 0 ? out1[c] + s1[e] : s1[e];
    }
}
