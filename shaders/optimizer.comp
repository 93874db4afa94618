#version 450
#extension GL_EXT_samplerless_texture_functions : require
// The optimizer step over one parameter tensor at a time (SPEC.md section 6), on the device:
//   MODE 0: the sum of squares of a gradient (one workgroup, a fixed tree: the same bits every
//           run) into partial[slot], for the global-norm clipping;
//   MODE 1: one invocation: the step count + 1, the clipping coefficient
//           min(1, max_norm / (norm + 1e-6)) from the partials (1 without clipping), as
//           torch.nn.utils.clip_grad_norm_ computes it, and AdamW's bias corrections 1 - b^t
//           (without the cancellation of 1 - pow(b, t), which lost 4 digits at b2 = 0.999);
//           kept in `state`;
//   MODE 2: the update of every element, the gradient scaled by the coefficient:
//           ALGO 0, AdamW as torch.optim.AdamW: p *= 1 - lr wd; m = b1 m + (1 - b1) g;
//             v = b2 v + (1 - b2) g^2; p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps);
//           ALGO 1, SGD as torch.optim.SGD without momentum: p -= lr (g + wd p).
// The step count lives on the device, so one recorded step can be replayed step after step.
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 2;
layout(constant_id = 2) const uint ALGO = 0;

#if TEXEL
// MODE 2 alone, on tensors of a multiple of 4 elements: p, g, m and v read through uniform texel
// buffers (R32G32B32A32 views; on lavapipe a vectorized gather, where a storage-buffer load is a
// loop over the lanes), p, m and v written through bindings 4 to 6.
layout(set = 0, binding = 0) uniform textureBuffer p_in;
layout(set = 0, binding = 1) uniform textureBuffer g_in;
layout(set = 0, binding = 2) uniform textureBuffer m_in;
layout(set = 0, binding = 3) uniform textureBuffer v_in;
layout(set = 0, binding = 4) writeonly buffer P4 { vec4 p4[]; };
layout(set = 0, binding = 5) writeonly buffer M4 { vec4 m4[]; };
layout(set = 0, binding = 6) writeonly buffer V4 { vec4 v4[]; };
layout(set = 0, binding = 7) buffer State4 { vec4 state4[]; }; // as below
#else
layout(set = 0, binding = 0) buffer P { float p[]; };
layout(set = 0, binding = 1) readonly buffer G { float g[]; };
layout(set = 0, binding = 2) buffer M { float m[]; };
layout(set = 0, binding = 3) buffer V { float v[]; };
layout(set = 0, binding = 4) buffer State { float state[]; }; // step, clip coefficient, norm, -,
                                                               // 1 - beta1^t, 1 - beta2^t,
                                                               // clip coefficient again, -
layout(set = 0, binding = 4) buffer State4 { vec4 state4[]; }; // [1]: what MODE 2 reads, at once
layout(set = 0, binding = 5) buffer Partial { float partial[]; }; // per tensor: sum of g^2
// The same buffers as vec4s, for tensors of a multiple of 4 elements: on CPU drivers a
// storage-buffer access is a loop over the lanes, so one vec4 costs a quarter of four floats.
layout(set = 0, binding = 0) buffer P4 { vec4 p4[]; };
layout(set = 0, binding = 1) readonly buffer G4 { vec4 g4[]; };
layout(set = 0, binding = 2) buffer M4 { vec4 m4[]; };
layout(set = 0, binding = 3) buffer V4 { vec4 v4[]; };
#endif

layout(push_constant) uniform Push {
    uint n, slot, slots;
    float lr, beta1, beta2, eps, weight_decay, max_norm; // max_norm 0: no clipping
} pc;

shared float tree[gl_WorkGroupSize.x];

// 1 - b^t for b in [0, 1), t >= 1, to float32 precision: -expm1(t log1p(-d)) with d = 1 - b
// (exact in float32 for b >= 0.5), both by their series; directly where nothing cancels.
float one_minus_pow(float b, float t) {
    float d = 1.0 - b;
    if (d > 0.5) return 1.0 - pow(b, t);
    float l = 0.0, dk = d; // log1p(-d) = -(d + d^2 / 2 + d^3 / 3 + ...)
    for (int k = 1; k <= 32; k++) l -= dk / float(k), dk *= d;
    float x = t * l;
    if (x < -0.5) return 1.0 - exp(x);
    float e = 0.0, term = 1.0; // expm1(x) = x + x^2 / 2! + ...
    for (int k = 1; k <= 12; k++) term *= x / float(k), e += term;
    return -e;
}

// One update of parameters p from gradients g (scaled by the clipping coefficient), AdamW's
// moments mi and vi updated in place.
// s: state[4 .. 7] (one load: on CPU drivers each storage-buffer load is a loop over the lanes).
vec4 update(vec4 s, vec4 param, vec4 g_raw, inout vec4 mi, inout vec4 vi) {
    vec4 grad = g_raw * s.z;
    if (ALGO == 1) return param - pc.lr * (grad + pc.weight_decay * param);
    param *= 1.0 - pc.lr * pc.weight_decay;
    mi += (1.0 - pc.beta1) * (grad - mi);
    vi = pc.beta2 * vi + (1.0 - pc.beta2) * grad * grad;
    float step_size = pc.lr / s.x;
    vec4 denom = sqrt(vi) / sqrt(s.y) + pc.eps;
    return param - step_size * mi / denom;
}

void main() {
    uint lid = gl_LocalInvocationID.x;
#if TEXEL
    uint t4 = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x + lid;
    if (4 * t4 >= pc.n) return;
    vec4 mt = ALGO == 0 ? texelFetch(m_in, int(t4)) : vec4(0.0), vt = ALGO == 0 ? texelFetch(v_in, int(t4)) : vec4(0.0);
    p4[t4] = update(state4[1], texelFetch(p_in, int(t4)), texelFetch(g_in, int(t4)), mt, vt);
    if (ALGO == 0) m4[t4] = mt, v4[t4] = vt;
#else
    if (MODE == 0) {
        float s = 0.0;
        for (uint i = lid; i < pc.n; i += gl_WorkGroupSize.x) s = fma(g[i], g[i], s);
        tree[lid] = s;
        barrier();
        for (uint w = gl_WorkGroupSize.x / 2; w > 0; w >>= 1) {
            if (lid < w) tree[lid] += tree[lid + w];
            barrier();
        }
        if (lid == 0) partial[pc.slot] = tree[0];
        return;
    }
    if (MODE == 1) {
        if (lid != 0 || gl_WorkGroupID.x != 0) return;
        float total = 0.0;
        for (uint i = 0; i < pc.slots; i++) total += partial[i];
        float norm = sqrt(total);
        state[0] += 1.0;
        state[1] = pc.max_norm > 0.0 ? min(1.0, pc.max_norm / (norm + 1e-6)) : 1.0;
        state[2] = pc.max_norm > 0.0 ? norm : 0.0;
        state[6] = state[1];
        state[4] = one_minus_pow(pc.beta1, state[0]);
        state[5] = one_minus_pow(pc.beta2, state[0]);
        return;
    }
    // MODE 2: four elements per invocation.
    uint i4 = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x + lid;
    if (4 * i4 >= pc.n) return;
    vec4 s = state4[1];
    if ((pc.n & 3u) == 0) {
        vec4 mi = ALGO == 0 ? m4[i4] : vec4(0.0), vi = ALGO == 0 ? v4[i4] : vec4(0.0); // SGD has none
        p4[i4] = update(s, p4[i4], g4[i4], mi, vi);
        if (ALGO == 0) m4[i4] = mi, v4[i4] = vi;
        return;
    }
    [[unroll]] for (uint e = 0; e < 4; e++) {
        uint i = 4 * i4 + e;
        if (i >= pc.n) return;
        vec4 mi = vec4(ALGO == 0 ? m[i] : 0.0), vi = vec4(ALGO == 0 ? v[i] : 0.0);
        p[i] = update(s, vec4(p[i]), vec4(g[i]), mi, vi).x;
        if (ALGO == 0) m[i] = mi.x, v[i] = vi.x;
    }
#endif
}
