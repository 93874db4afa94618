#version 450
// Losses over the model's output y ([rows, n]) and targets t, with dL/dy (SPEC.md section 6):
//   MODE 0, mse:           L = mean over every element of (y - t)^2, t of y's shape;
//   MODE 1, cross-entropy: L = mean over rows of -log_softmax(y_row)[t_row], t one class index
//                          per row (stored as a float); log-softmax shifted by the row's maximum,
//                          so large logits stay finite. An index outside [0, n) gives NaN.
// An invocation per row writes the row's loss (and its gradient, `scale` being 1 / count);
// MODE 2, one invocation, adds the rows' losses in order: the same bits on every run.
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0;

layout(set = 0, binding = 0) readonly buffer Y { float y[]; };
layout(set = 0, binding = 1) readonly buffer T { float t[]; };
layout(set = 0, binding = 2) writeonly buffer DY { float dy[]; };
layout(set = 0, binding = 3) buffer RowLoss { float row_loss[]; };
layout(set = 0, binding = 4) writeonly buffer Loss { float loss[]; };

layout(push_constant) uniform Push {
    uint rows, n;
    float scale; // 1 / (rows * n) for mse, 1 / rows for cross-entropy
    uint grad;   // write dy
} pc;

#include "kahan.glsl"

void main() {
    uint row = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x +
               gl_LocalInvocationID.x;
    if (MODE == 2) {
        if (row != 0) return;
        float sum = 0.0, comp = 0.0;
        for (uint r = 0; r < pc.rows; r++) kahan_add(sum, comp, row_loss[r]);
        loss[0] = sum * pc.scale;
        return;
    }
    if (row >= pc.rows) return;
    uint base = row * pc.n;
    float sum = 0.0, comp = 0.0;
    if (MODE == 0) {
        for (uint i = 0; i < pc.n; i++) {
            float d = y[base + i] - t[base + i];
            kahan_add(sum, comp, d * d);
            if (pc.grad != 0) dy[base + i] = 2.0 * d * pc.scale;
        }
        row_loss[row] = sum;
        return;
    }
    float m = y[base];
    for (uint i = 1; i < pc.n; i++) m = max(m, y[base + i]);
    for (uint i = 0; i < pc.n; i++) kahan_add(sum, comp, exp(y[base + i] - m));
    float c = t[row];
    bool valid = c >= 0.0 && c < float(pc.n) && c == floor(c);
    uint ci = valid ? uint(c) : 0u;
    // -log_softmax(y)[c] = log(sum exp(y - m)) - (y[c] - m)
    row_loss[row] = valid ? log(sum) - (y[base + ci] - m) : uintBitsToFloat(0x7fc00000u);
    if (pc.grad != 0)
        for (uint i = 0; i < pc.n; i++) {
            float p = exp(y[base + i] - m) / sum;
            dy[base + i] = valid ? (p - (i == ci ? 1.0 : 0.0)) * pc.scale : uintBitsToFloat(0x7fc00000u);
        }
}
