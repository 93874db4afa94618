#version 450
// The bandwidth ceiling for the benchmarks: a plain vec4 copy, one vec4 per invocation (on
// lavapipe this measured as fast as grid-stride loops of any shape). TEXEL 1 reads the source
// through a uniform texel view (R32G32B32A32), the way the CPU-driver kernels read their inputs.
layout(local_size_x_id = 0) in;
#if TEXEL
layout(set = 0, binding = 0) uniform samplerBuffer src;
#define LOAD(i) texelFetch(src, int(i))
#else
layout(set = 0, binding = 0) readonly buffer Src { vec4 src[]; };
#define LOAD(i) src[i]
#endif
layout(set = 0, binding = 1) writeonly buffer Dst { vec4 dst[]; };
layout(push_constant) uniform Push { uint count; } pc;

void main() {
    uint i = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x +
             gl_LocalInvocationID.x;
    if (i < pc.count) dst[i] = LOAD(i);
}
