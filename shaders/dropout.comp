#version 450
// Inverted dropout (SPEC.md section 6), training only, with its mask drawn from a counter-based
// generator: element i of site `site` at step `step` is kept when hash(seed, step, site, i) is at
// least `threshold` (rate * 2^32), so a seeded run is reproducible and the backward recomputes
// the forward's mask instead of storing it. The step is the optimizer's count on the device, so
// a recorded training step replays with a new mask every step.
//   MODE 0, forward:  out = residual + keep * y / (1 - rate)
//   MODE 1, backward: out = keep * dy / (1 - rate)
//
// TEXEL 1 reads the residual and y as uniform texel buffers (R32 views): on lavapipe a vectorized
// gather, where a storage-buffer load is a loop over the lanes (2.4 -> 0.8-1.2 ms per [1920, 256] pass here).
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0;

#if TEXEL
layout(set = 0, binding = 0) uniform samplerBuffer residual;
layout(set = 0, binding = 1) uniform samplerBuffer y;
#define LOAD(buf, i) texelFetch(buf, int(i)).x
#else
layout(set = 0, binding = 0) readonly buffer Residual { float residual[]; };
layout(set = 0, binding = 1) readonly buffer Y { float y[]; };
#define LOAD(buf, i) buf[i]
#endif
layout(set = 0, binding = 2) writeonly buffer Out { float o[]; };
layout(set = 0, binding = 3) readonly buffer Step { float step_state[]; }; // [0]: the step count

layout(push_constant) uniform Push {
    uint n, seed_lo, seed_hi, site, threshold;
    float scale; // 1 / (1 - rate)
} pc;

// murmur3's 32-bit finalizer, chained over the counter's words.
uint mix32(uint h) {
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

// Four elements per invocation (as unary.comp: CPU drivers pay per workgroup).
void main() {
    uint i0 = ((gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x +
               gl_LocalInvocationID.x) * 4;
    uint h = mix32(pc.seed_lo ^ 0x9e3779b9u);
    h = mix32(h ^ pc.seed_hi);
    h = mix32(h ^ uint(step_state[0]));
    h = mix32(h ^ (pc.site * 0x27d4eb2fu));
    [[unroll]] for (uint e = 0; e < 4; e++) {
        uint i = i0 + e;
        if (i >= pc.n) return;
        float kept = mix32(h ^ i) >= pc.threshold ? LOAD(y, i) * pc.scale : 0.0;
        o[i] = MODE == 0 ? LOAD(residual, i) + kept : kept;
    }
}
