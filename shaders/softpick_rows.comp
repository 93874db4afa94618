#version 450
// Softpick along a contiguous axis: the tensor is [rows, row_len] in memory.
//
// A group of GROUP invocations handles one segment of one row: the row is split into `segments`
// segments so that a few long rows still spread over many workgroups. With one segment per row
// (MODE 0) the group sums |x| and scales in one dispatch. With several, MODE 1 writes each
// segment's partial sum and MODE 2 adds a row's partials and scales its segment. MODE 3 is MODE 0
// for rows of at most CACHE * GROUP loads: each invocation keeps its loads in registers between
// the sum and the scaling, so x is read once (on CPU drivers the loads, not DRAM, are the cost).
// GROUP is 1 (an invocation per row, for short rows), the subgroup size, or the workgroup size.
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint GROUP = 64;           // invocations per segment, a power of two
layout(constant_id = 2) const bool USE_SUBGROUP = false; // subgroup arithmetic, else shared memory
layout(constant_id = 3) const uint MODE = 0;             // 0 fused, 1 partial sums, 2 scale, 3 cached
layout(constant_id = 4) const uint CACHE = 1;            // MODE 3: loads kept per invocation

#if VEC == 4
#define T vec4
#define ABS_SUM(v) ((abs(v.x) + abs(v.y)) + (abs(v.z) + abs(v.w)))
#else
#define T float
#define ABS_SUM(v) abs(v)
#endif

// TEXEL 1 reads x as a uniform texel buffer (a view of T): on lavapipe a vectorized gather, where a
// storage-buffer load is a loop over the lanes.
#if TEXEL
layout(set = 0, binding = 0) uniform samplerBuffer x;
#if VEC == 4
#define LOAD_X(i) texelFetch(x, int(i))
#else
#define LOAD_X(i) texelFetch(x, int(i)).x
#endif
#else
layout(set = 0, binding = 0) readonly buffer X { T x[]; };
#define LOAD_X(i) x[i]
#endif
layout(set = 0, binding = 1) writeonly buffer Y { T y[]; };
layout(set = 0, binding = 2) buffer Partial { float partial[]; }; // [rows, segments]

layout(push_constant) uniform Push {
    uint row_len;  // in units of T
    uint rows;
    uint segments; // per row
    uint seg_len;  // in units of T
} pc;

#include "kahan.glsl"
#include "reduce.glsl"

void main() {
    uint groups_per_wg = gl_WorkGroupSize.x / GROUP;
    uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint item = wg * groups_per_wg + gl_LocalInvocationID.x / GROUP;
    uint g = gl_LocalInvocationID.x % GROUP;
    uint row = item / pc.segments;
    uint seg = item % pc.segments;
    bool valid = row < pc.rows;

    uint base = row * pc.row_len;
    uint begin = seg * pc.seg_len;
    uint end = valid ? min(begin + pc.seg_len, pc.row_len) : 0;

    if (MODE == 3) {
        T v[CACHE];
        float sum = 0.0, comp = 0.0;
        for (uint k = 0; k < CACHE; k++) {
            uint i = begin + g + k * GROUP;
            v[k] = i < end ? LOAD_X(base + i) : T(0.0);
            kahan_add(sum, comp, ABS_SUM(v[k]));
        }
        float denom = 1.0 + group_sum(sum);
        for (uint k = 0; k < CACHE; k++) {
            uint i = begin + g + k * GROUP;
            if (i < end) y[base + i] = v[k] / denom;
        }
        return;
    }

    float total;
    if (MODE == 2) {
        // Add the row's partial sums (written by MODE 1) in the same compensated way.
        float sum = 0.0, comp = 0.0;
        if (valid)
            for (uint s = g; s < pc.segments; s += GROUP) kahan_add(sum, comp, partial[row * pc.segments + s]);
        total = group_sum(sum);
    } else {
        float sum = 0.0, comp = 0.0;
        for (uint i = begin + g; i < end; i += GROUP) kahan_add(sum, comp, ABS_SUM(LOAD_X(base + i)));
        total = group_sum(sum);
        if (MODE == 1) {
            if (valid && g == 0) partial[row * pc.segments + seg] = total;
            return;
        }
    }
    float denom = 1.0 + total;
    for (uint i = begin + g; i < end; i += GROUP) y[base + i] = LOAD_X(base + i) / denom;
}
