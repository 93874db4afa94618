#version 450
#extension GL_EXT_samplerless_texture_functions : require
// Elementwise functions: OP 0 is erf (tested on its own), OP 1 the exact GELU, OP 2 GELU's
// backward, y = dy * gelu'(x).
//
// TEXEL 1 reads x and dy as uniform texel buffers (R32 views): on lavapipe a vectorized gather,
// where a storage-buffer load is a loop over the lanes (GELU's backward over a model's [rows,
// 4 hidden] was a third of a training step through storage buffers).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint OP = 1;
#if TEXEL
layout(set = 0, binding = 0) uniform textureBuffer x;
layout(set = 0, binding = 1) uniform textureBuffer dy; // OP 2 only
#define LOAD(buf, i) texelFetch(buf, int(i)).x
#else
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) readonly buffer DY { float dy[]; }; // OP 2 only
#define LOAD(buf, i) buf[i]
#endif
layout(set = 0, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Push { uint count; } pc;

#include "erf.glsl"

// Four elements per invocation: CPU drivers pay per workgroup, and 2M elements in workgroups of
// 64 single elements cost more in scheduling than in arithmetic.
void main() {
    uint i0 = ((gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x +
               gl_LocalInvocationID.x) * 4;
    [[unroll]] for (uint e = 0; e < 4; e++) {
        uint i = i0 + e;
        if (i >= pc.count) return;
        float v = LOAD(x, i);
        y[i] = OP == 0 ? erf_f32(v) : OP == 1 ? gelu(v) : LOAD(dy, i) * gelu_grad(v);
    }
}
