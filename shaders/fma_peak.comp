#version 450
// The arithmetic ceiling for the benchmarks: CHAINS independent vec4 FMA chains per invocation
// and nothing else in the loop, so the driver's peak FMA rate shows (a CPU driver needs enough
// independent chains to cover the FMA latency: 2 chains measured 61 GFLOP/s on lavapipe where 8
// reach 85-96). The benchmark runs several chain counts, unrollings and workgroup sizes and keeps
// the best.
// Each invocation stores its result so the work cannot be removed.
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint ITERATIONS = 1024;
layout(constant_id = 2) const uint CHAINS = 8;
layout(constant_id = 3) const uint UNROLL = 4; // divides ITERATIONS
layout(set = 0, binding = 0) readonly buffer Src { float src[]; };
layout(set = 0, binding = 1) writeonly buffer Dst { float dst[]; };
layout(push_constant) uniform Push { uint count; } pc; // elements of src

void main() {
    uint i = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x +
             gl_LocalInvocationID.x;
    float x = src[i % pc.count];
    vec4 p[CHAINS];
    [[unroll]] for (uint c = 0; c < CHAINS; c++) p[c] = vec4(x) + vec4(4 * c, 4 * c + 1, 4 * c + 2, 4 * c + 3);
    const vec4 s = vec4(0.999), t = vec4(0.001);
    // UNROLL rounds per trip, so the loop's own overhead (on CPU drivers a mask test per trip) is
    // spread over UNROLL * CHAINS FMAs without holding more registers (lavapipe: 4 rounds per
    // trip measured 172 GFLOP/s where 1 gave 113-125).
    for (uint k = 0; k < ITERATIONS; k += UNROLL)
        [[unroll]] for (uint u = 0; u < UNROLL; u++)
            [[unroll]] for (uint c = 0; c < CHAINS; c++) p[c] = fma(p[c], s, t);
    vec4 sum = vec4(0.0);
    [[unroll]] for (uint c = 0; c < CHAINS; c++) sum += p[c];
    dst[i] = dot(sum, vec4(1.0));
}
