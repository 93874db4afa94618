#version 450
// Sums over rows, column by column, for the backward passes: out0[n] = sum_m g[m, n] (a bias's
// gradient; layer norm's dbeta) and, with MODE 1 (or alone with MODE 2),
// out1[n] = sum_m g[m, n] xhat[m, n] with
// xhat = (x[m, n] - mean_m) * rstd_m from the per-row statistics the training forward kept
// (layer norm's dgamma). An invocation owns one column and walks the rows in order with a
// compensated sum, so every run gives the same bits (no atomics), and neighbouring invocations
// read neighbouring addresses. With `accumulate` the sums are added to what out0 and out1 hold
// (gradients accumulate until zeroed, as PyTorch's .grad does).
//
// TEXEL 1 reads g and x as uniform texel buffers (R32 views): on lavapipe a vectorized gather,
// where a storage-buffer load is a loop over the lanes.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0; // 0 plain sums, 1 also the sums against xhat, 2 those alone

layout(constant_id = 2) const uint VEC = 1;  // 4 (TEXEL, columns a multiple of 4): 4 columns per invocation

#if TEXEL
layout(set = 0, binding = 0) uniform samplerBuffer g; // R32 views, R32G32B32A32 with VEC 4
layout(set = 0, binding = 1) uniform samplerBuffer x;
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

void main() {
    uint col = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x +
               gl_LocalInvocationID.x;
#if TEXEL
    if (VEC == 4) {
        // One fetch per row for 4 adjacent columns: a quarter of the gathers.
        uint n4 = pc.n / 4;
        if (col >= n4) return;
        vec4 s0 = vec4(0.0), c0 = vec4(0.0), s1 = vec4(0.0), c1 = vec4(0.0);
        for (uint m = 0; m < pc.rows; m++) {
            vec4 gv = LOAD4(g, m * n4 + col);
            if (MODE != 2) kahan_add4(s0, c0, gv);
            if (MODE != 0) {
                vec2 st = stats[m];
                kahan_add4(s1, c1, gv * ((LOAD4(x, m * n4 + col) - st.x) * st.y));
            }
        }
        [[unroll]] for (uint e = 0; e < 4; e++) {
            uint c = 4 * col + e;
            if (MODE != 2) out0[c] = pc.accumulate != 0 ? out0[c] + s0[e] : s0[e];
            if (MODE != 0) out1[c] = pc.accumulate != 0 ? out1[c] + s1[e] : s1[e];
        }
        return;
    }
#endif
    if (col >= pc.n) return;
    float s0 = 0.0, c0 = 0.0, s1 = 0.0, c1 = 0.0;
    for (uint m = 0; m < pc.rows; m++) {
        float gv = LOAD(g, m * pc.n + col);
        if (MODE != 2) kahan_add(s0, c0, gv);
        if (MODE != 0) {
            vec2 st = stats[m];
            kahan_add(s1, c1, gv * ((LOAD(x, m * pc.n + col) - st.x) * st.y));
        }
    }
    if (MODE != 2) out0[col] = pc.accumulate != 0 ? out0[col] + s0 : s0;
    if (MODE != 0) out1[col] = pc.accumulate != 0 ? out1[col] + s1 : s1;
}
