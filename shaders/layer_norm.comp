#version 450
// Layer norm over the last axis: y = (x - mean) / sqrt(var + eps) * gamma + beta, with the biased
// variance. The tensor is [rows, n]; a group of GROUP invocations handles one row. The mean and
// then the variance are two separate compensated sums (mean first, then squared deviations) of
// x - x[0], the row shifted by its first element, so a row like 1e4 + N(0, 1) keeps its accuracy:
// the shifted values are exact and their mean is small, where a float32 mean of 1e4 alone would
// be off by half an ulp (5e-4), and E[x^2] - E[x]^2 would lose every digit. Rows of
// at most CACHE * GROUP elements stay in registers across the three passes; longer ones re-read x.
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint GROUP = 64;
layout(constant_id = 2) const bool USE_SUBGROUP = false;
layout(constant_id = 3) const uint CACHE = 1; // 0: re-read x in every pass

layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) readonly buffer Gamma { float gamma[]; };
layout(set = 0, binding = 2) readonly buffer Beta { float beta[]; };
layout(set = 0, binding = 3) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint n;
    uint rows;
    float eps;
} pc;

#include "kahan.glsl"
#include "reduce.glsl"

void main() {
    uint groups_per_wg = gl_WorkGroupSize.x / GROUP;
    uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint row = wg * groups_per_wg + gl_LocalInvocationID.x / GROUP;
    uint g = gl_LocalInvocationID.x % GROUP;
    uint n = row < pc.rows ? pc.n : 0; // rows past the end take part in the reductions only
    uint base = row * pc.n;
    float inv_n = 1.0 / float(pc.n);

    float shift = n > 0 ? x[base] : 0.0;
    float v[CACHE > 0 ? CACHE : 1]; // x - shift
    float sum = 0.0, comp = 0.0;
    if (CACHE > 0) {
        for (uint k = 0; k < CACHE; k++) {
            uint i = g + k * GROUP;
            v[k] = i < n ? x[base + i] - shift : 0.0;
            kahan_add(sum, comp, v[k]);
        }
    } else {
        for (uint i = g; i < n; i += GROUP) kahan_add(sum, comp, x[base + i] - shift);
    }
    float mean = group_sum(sum) * inv_n; // of the shifted row

    sum = 0.0, comp = 0.0;
    if (CACHE > 0) {
        for (uint k = 0; k < CACHE; k++) {
            float d = g + k * GROUP < n ? v[k] - mean : 0.0;
            kahan_add(sum, comp, d * d);
        }
    } else {
        for (uint i = g; i < n; i += GROUP) {
            float d = (x[base + i] - shift) - mean;
            kahan_add(sum, comp, d * d);
        }
    }
    float rstd = inversesqrt(group_sum(sum) * inv_n + pc.eps);

    if (CACHE > 0) {
        for (uint k = 0; k < CACHE; k++) {
            uint i = g + k * GROUP;
            if (i < n) y[base + i] = (v[k] - mean) * rstd * gamma[i] + beta[i];
        }
    } else {
        for (uint i = g; i < n; i += GROUP) y[base + i] = ((x[base + i] - shift) - mean) * rstd * gamma[i] + beta[i];
    }
}
