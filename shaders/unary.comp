#version 450
// Elementwise functions: OP 0 is erf (tested on its own), OP 1 the exact GELU, OP 2 GELU's
// backward, y = dy * gelu'(x).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint OP = 1;
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) writeonly buffer Y { float y[]; };
layout(set = 0, binding = 2) readonly buffer DY { float dy[]; }; // OP 2 only
layout(push_constant) uniform Push { uint count; } pc;

#include "erf.glsl"

void main() {
    uint i = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x +
             gl_LocalInvocationID.x;
    if (i >= pc.count) return;
    y[i] = OP == 0 ? erf_f32(x[i]) : OP == 1 ? gelu(x[i]) : dy[i] * gelu_grad(x[i]);
}
