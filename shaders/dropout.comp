#version 450
#extension GL_EXT_samplerless_texture_functions : require
// Inverted dropout (SPEC.md section 6), training only, with the mask of dropout.glsl. The step is
// the optimizer's count on the device, so a recorded training step replays with a new mask every
// step. (The model's backward applies its masks in the layer norm backward that makes each
// gradient; this pass serves the forward, and the backward where no norm precedes.)
//   MODE 0, forward:  out = residual + keep * y / (1 - rate)
//   MODE 1, backward: out = keep * dy / (1 - rate)
//
// TEXEL 1 reads the residual and y as uniform texel buffers (R32 views): on lavapipe a vectorized
// gather, where a storage-buffer load is a loop over the lanes (2.4 -> 0.8-1.2 ms per [1920, 256] pass here).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0;

#if TEXEL
layout(set = 0, binding = 0) uniform textureBuffer residual;
layout(set = 0, binding = 1) uniform textureBuffer y;
#define LOAD(buf, i) texelFetch(buf, int(i)).x
#else
layout(set = 0, binding = 0) readonly buffer Residual { float residual[]; };
layout(set = 0, binding = 1) readonly buffer Y { float y[]; };
#define LOAD(buf, i) buf[i]
#endif
layout(set = 0, binding = 2) writeonly buffer Out { float o[]; };
layout(set = 0, binding = 2) writeonly buffer Out4 { vec4 o4[]; }; // n a multiple of 4
layout(set = 0, binding = 3) readonly buffer Step { float step_state[]; }; // [0]: the step count

layout(push_constant) uniform Push {
    uint n, seed_lo, seed_hi, site, threshold;
    float scale;  // 1 / (1 - rate)
    uint offset;  // element i's index in the mask: offset + i (a process's rows of a global batch)
} pc;

#include "dropout.glsl"

// Four adjacent elements per invocation (as unary.comp: CPU drivers pay per workgroup), stored
// as one vec4 where n is a multiple of 4 (on CPU drivers each storage-buffer access is a loop
// over the lanes).
void main() {
    uint i0 = ((gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x +
               gl_LocalInvocationID.x) * 4;
    if (i0 >= pc.n) return;
    uint h = dropout_base(pc.seed_lo, pc.seed_hi, step_state[0], pc.site);
    uvec4 at = min(i0 + uvec4(0, 1, 2, 3), uvec4(pc.n - 1)); // past n: never stored
    vec4 kept = dropout_apply(h, pc.threshold, pc.scale, pc.offset + i0, vec4(LOAD(y, at.x), LOAD(y, at.y), LOAD(y, at.z), LOAD(y, at.w)));
    if (MODE == 0) kept += vec4(LOAD(residual, at.x), LOAD(residual, at.y), LOAD(residual, at.z), LOAD(residual, at.w));
    if ((pc.n & 3u) == 0) {
        o4[i0 / 4] = kept;
        return;
    }
    [[unroll]] for (uint e = 0; e < 4; e++)
        if (i0 + e < pc.n) o[i0 + e] = kept[e];
}
