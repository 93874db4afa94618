#version 450
// The softpick paper's measurements (Zuhri et al. 2025) of a model's forward, per row, summed on
// the host (src/analyze.c):
//   MODE 0, attention: an invocation per (sample, head, query i) recomputes the causal row of
//     scaled scores s_j = q_i . k_j / sqrt(D), j <= i, from the layer's qkv ([rows, 3 hidden]: q,
//     k, v side by side), and its weights w_j with the model's normalizer, as the forward does
//     (the exact maximum first, then the sum, then each weight; no [seq, seq] tensor). It writes
//     (w_0, the count of w_j == 0 exactly, sum_j |w_j|).
//   MODE 1, hidden states: an invocation per row of x ([rows, hidden]) writes the row's mean, its
//     central moments' sums M2, M3, M4 and max |x|, which the host merges into the layer's
//     kurtosis mu4 / mu2^2 (Pebay's pairwise update, in float64).
// STORAGE16 variants read F16 activations (IN_DTYPE 1) as float16_t.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_shader_16bit_storage : enable

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0;
layout(constant_id = 2) const uint IN_DTYPE = 0;
#define NORM_ID 3
#include "normalizer.glsl"

layout(set = 0, binding = 0) readonly buffer X { float x[]; };
#if STORAGE16
layout(set = 0, binding = 0) readonly buffer XH { float16_t xh[]; };
float load(uint i) { return IN_DTYPE == 1 ? float(xh[i]) : x[i]; }
#else
float load(uint i) { return x[i]; }
#endif
layout(set = 0, binding = 1) writeonly buffer Out { float result[]; };

layout(push_constant) uniform Push {
    uint count;   // invocations: batch * heads * seq (MODE 0) or rows (MODE 1)
    uint seq;     // MODE 0
    uint heads;   // MODE 0
    uint dim;     // the head size (MODE 0) or the row's length (MODE 1)
    float scale;  // 1 / sqrt(head size)
} pc;

float score(uint q_base, uint k_base) {
    float s = 0.0;
    for (uint d = 0; d < pc.dim; d++) s = fma(load(q_base + d), load(k_base + d), s);
    return s * pc.scale;
}

void attention_row(uint g) {
    uint i = g % pc.seq, head = (g / pc.seq) % pc.heads, b = g / (pc.seq * pc.heads);
    uint hidden = pc.heads * pc.dim, stride = 3 * hidden, row0 = b * pc.seq;
    uint q_base = (row0 + i) * stride + head * pc.dim, k_col = hidden + head * pc.dim;
    float m = -3.0e38;
    for (uint j = 0; j <= i; j++) m = max(m, score(q_base, (row0 + j) * stride + k_col));
    m = op_max(m);
    float em = exp(-m), sum = 0.0;
    for (uint j = 0; j <= i; j++) sum += norm_term(score(q_base, (row0 + j) * stride + k_col), m, em).y;
    float total = norm_total(sum), first = 0.0, zeros = 0.0, abs_sum = 0.0;
    for (uint j = 0; j <= i; j++) {
        float w = norm_term(score(q_base, (row0 + j) * stride + k_col), m, em).x / total;
        if (j == 0) first = w;
        zeros += w == 0.0 ? 1.0 : 0.0;
        abs_sum += abs(w);
    }
    result[3 * g] = first, result[3 * g + 1] = zeros, result[3 * g + 2] = abs_sum;
}

void hidden_row(uint row) {
    uint base = row * pc.dim;
    float sum = 0.0, largest = 0.0;
    for (uint d = 0; d < pc.dim; d++) {
        float v = load(base + d);
        sum += v;
        largest = max(largest, abs(v));
    }
    float mean = sum / float(pc.dim), m2 = 0.0, m3 = 0.0, m4 = 0.0;
    for (uint d = 0; d < pc.dim; d++) {
        float e = load(base + d) - mean, e2 = e * e;
        m2 += e2, m3 += e2 * e, m4 += e2 * e2;
    }
    result[5 * row] = mean, result[5 * row + 1] = m2, result[5 * row + 2] = m3;
    result[5 * row + 3] = m4, result[5 * row + 4] = largest;
}

void main() {
    uint g = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (g >= pc.count) return;
    if (MODE == 0) attention_row(g);
    else hidden_row(g);
}
