#version 450
// The optimizer step over one parameter tensor at a time (SPEC.md section 6), on the device:
//   MODE 0: the sum of squares of a gradient (one workgroup, a fixed tree: the same bits every
//           run) into partial[slot], for the global-norm clipping;
//   MODE 1: one invocation: the step count + 1, and the clipping coefficient
//           min(1, max_norm / (norm + 1e-6)) from the partials (1 without clipping), as
//           torch.nn.utils.clip_grad_norm_ computes it; kept in `state`;
//   MODE 2: the update of every element, the gradient scaled by the coefficient:
//           ALGO 0, AdamW as torch.optim.AdamW: p *= 1 - lr wd; m = b1 m + (1 - b1) g;
//             v = b2 v + (1 - b2) g^2; p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps);
//           ALGO 1, SGD as torch.optim.SGD without momentum: p -= lr (g + wd p).
// The step count lives on the device, so one recorded step can be replayed step after step.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 2;
layout(constant_id = 2) const uint ALGO = 0;

layout(set = 0, binding = 0) buffer P { float p[]; };
layout(set = 0, binding = 1) readonly buffer G { float g[]; };
layout(set = 0, binding = 2) buffer M { float m[]; };
layout(set = 0, binding = 3) buffer V { float v[]; };
layout(set = 0, binding = 4) buffer State { float state[]; }; // step, clip coefficient, norm
layout(set = 0, binding = 5) buffer Partial { float partial[]; }; // per tensor: sum of g^2

layout(push_constant) uniform Push {
    uint n, slot, slots;
    float lr, beta1, beta2, eps, weight_decay, max_norm; // max_norm 0: no clipping
} pc;

shared float tree[gl_WorkGroupSize.x];

void main() {
    uint lid = gl_LocalInvocationID.x;
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
        return;
    }
    uint i = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x + lid;
    if (i >= pc.n) return;
    float grad = g[i] * state[1];
    if (ALGO == 1) {
        p[i] -= pc.lr * (grad + pc.weight_decay * p[i]);
        return;
    }
    float t = state[0];
    float param = p[i] * (1.0 - pc.lr * pc.weight_decay);
    float mi = m[i] + (1.0 - pc.beta1) * (grad - m[i]);
    float vi = pc.beta2 * v[i] + (1.0 - pc.beta2) * grad * grad;
    m[i] = mi, v[i] = vi;
    float step_size = pc.lr / (1.0 - pow(pc.beta1, t));
    float denom = sqrt(vi) / sqrt(1.0 - pow(pc.beta2, t)) + pc.eps;
    p[i] = param - step_size * mi / denom;
}
