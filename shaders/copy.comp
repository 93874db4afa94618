#version 450
#extension GL_EXT_samplerless_texture_functions : require
// The bandwidth ceiling for the benchmarks: a vec4 copy, PER_INVOCATION vec4s per invocation
// (consecutive invocations take consecutive vec4s in each round). CHECKED 0 drops the bounds
// check: the dispatch must then cover the tensor exactly (no invocation masked), which on lavapipe
// moved 9.5 GB/s against 6 with the branch. TEXEL 1 reads the source through a uniform texel view
// (R32G32B32A32), the way the CPU-driver kernels read their inputs. The benchmark runs the
// variants and keeps the best.
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint PER_INVOCATION = 1;
layout(constant_id = 2) const uint CHECKED = 1;
#if TEXEL
layout(set = 0, binding = 0) uniform textureBuffer src;
#define LOAD(i) texelFetch(src, int(i))
#else
layout(set = 0, binding = 0) readonly buffer Src { vec4 src[]; };
#define LOAD(i) src[i]
#endif
layout(set = 0, binding = 1) writeonly buffer Dst { vec4 dst[]; };
layout(push_constant) uniform Push { uint count; } pc;

void main() {
    uint group = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint base = group * gl_WorkGroupSize.x * PER_INVOCATION + gl_LocalInvocationID.x;
    [[unroll]] for (uint r = 0; r < PER_INVOCATION; r++) {
        uint i = base + r * gl_WorkGroupSize.x;
        if (CHECKED == 0 || i < pc.count) dst[i] = LOAD(i);
    }
}
