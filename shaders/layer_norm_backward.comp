#version 450
#extension GL_EXT_samplerless_texture_functions : require
// The backward of layer norm over the last axis, from the per-row mean and rstd = 1/sqrt(var +
// eps) that the training forward kept (layer_norm.comp with `keep_stats`):
//     xhat = (x - mean) * rstd,   g = dy * gamma,
//     dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
// The tensor is [rows, n]; a group of GROUP invocations (1, a subgroup or the workgroup, as in the
// forward) handles one row: one pass sums g and g * xhat, a second writes dx. With `accumulate`
// dx is added to what it holds (the residual stream's gradient). With `drop`, the new dx is also
// stored through a dropout mask (dropout.glsl) into `masked`: the model's backward through the
// dropout that precedes this norm's input, in the same pass. dgamma and dbeta are column sums
// (column_sums.comp).
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint GROUP = 64;
layout(constant_id = 2) const bool USE_SUBGROUP = false;

#if VEC == 4
#define T vec4
#define SUM(v) ((v.x + v.y) + (v.z + v.w))
#else
#define T float
#define SUM(v) (v)
#endif

// TEXEL 1 reads x, gamma and dy as uniform texel buffers (views of T): see layer_norm.comp.
#if TEXEL
layout(set = 0, binding = 0) uniform textureBuffer x;
layout(set = 0, binding = 1) uniform textureBuffer gamma;
layout(set = 0, binding = 2) uniform textureBuffer dy;
#if VEC == 4
#define LOAD(buf, i) texelFetch(buf, int(i))
#else
#define LOAD(buf, i) texelFetch(buf, int(i)).x
#endif
#else
layout(set = 0, binding = 0) readonly buffer X { T x[]; };
layout(set = 0, binding = 1) readonly buffer Gamma { T gamma[]; };
layout(set = 0, binding = 2) readonly buffer DY { T dy[]; };
#define LOAD(buf, i) buf[i]
#endif
layout(set = 0, binding = 3) readonly buffer Stats { vec2 stats[]; }; // [rows]: mean, rstd
layout(set = 0, binding = 4) buffer DX { T dx[]; };
layout(set = 0, binding = 5) readonly buffer Step { float step_state[]; }; // [0]: the step count
layout(set = 0, binding = 6) writeonly buffer Masked { T masked[]; };

layout(push_constant) uniform Push {
    uint n; // in units of T
    uint rows;
    uint accumulate;
    uint drop; // 1: also store the masked dx (below: the mask's parameters, as dropout.comp's)
    uint seed_lo, seed_hi, site, threshold;
    float scale;
    uint offset;
} pc;

#include "dropout.glsl"
#include "kahan.glsl"
#include "reduce.glsl"

void main() {
    uint groups_per_wg = gl_WorkGroupSize.x / GROUP;
    uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint row = wg * groups_per_wg + gl_LocalInvocationID.x / GROUP;
    uint g = gl_LocalInvocationID.x % GROUP;
    uint n = row < pc.rows ? pc.n : 0; // rows past the end take part in the reductions only
    uint base = row * pc.n;
    vec2 st = n > 0 ? stats[row] : vec2(0.0);
    float inv_n = 1.0 / (float(pc.n) * float(VEC));

    float s_g = 0.0, c_g = 0.0, s_gx = 0.0, c_gx = 0.0;
    for (uint i = g; i < n; i += GROUP) {
        T gv = LOAD(dy, base + i) * LOAD(gamma, i);
        T xhat = (LOAD(x, base + i) - st.x) * st.y;
        kahan_add(s_g, c_g, SUM(gv));
        kahan_add(s_gx, c_gx, SUM((gv * xhat)));
    }
    float mean_g = group_sum(s_g) * inv_n;
    float mean_gx = group_sum(s_gx) * inv_n;
    uint mask = pc.drop != 0 ? dropout_base(pc.seed_lo, pc.seed_hi, step_state[0], pc.site) : 0;
    for (uint i = g; i < n; i += GROUP) {
        T gv = LOAD(dy, base + i) * LOAD(gamma, i);
        T xhat = (LOAD(x, base + i) - st.x) * st.y;
        T d = st.y * (gv - mean_g - xhat * mean_gx);
        if (pc.accumulate != 0) d += dx[base + i];
        dx[base + i] = d;
        if (pc.drop != 0) masked[base + i] = dropout_apply(mask, pc.threshold, pc.scale, pc.offset + (base + i) * VEC, d);
    }
}
