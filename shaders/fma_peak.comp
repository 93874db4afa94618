#version 450
// The arithmetic ceiling for the benchmarks: independent FMA chains and nothing else, so the
// driver's peak FMA rate shows. Each invocation runs 8 chains of ITERATIONS FMAs (16 flops each
// round) and stores its result so the work cannot be removed.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint ITERATIONS = 1024;
layout(set = 0, binding = 0) readonly buffer Src { float src[]; };
layout(set = 0, binding = 1) writeonly buffer Dst { float dst[]; };
layout(push_constant) uniform Push { uint count; } pc; // elements of src

void main() {
    uint i = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x +
             gl_LocalInvocationID.x;
    float x = src[i % pc.count];
    vec4 p = vec4(x, x + 1.0, x + 2.0, x + 3.0), q = p + 4.0;
    const vec4 s = vec4(0.999), t = vec4(0.001);
    for (uint k = 0; k < ITERATIONS; k++) {
        p = fma(p, s, t);
        q = fma(q, s, t);
    }
    dst[i] = dot(p + q, vec4(1.0));
}
