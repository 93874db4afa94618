#version 450
#extension GL_EXT_samplerless_texture_functions : require
// Attention like attention.comp (any normalizer of normalizer.glsl), shaped for CPU drivers (lavapipe), where every
// per-invocation memory access is a gather and shared memory is no faster than any other memory,
// but a subgroup shuffle is a register move.
//
// Each invocation owns one query (its row of q scaled by 1 / sqrt(D), and the D accumulators
// of its output, in registers); a subgroup of SG queries walks the keys SG at a time. For each
// dimension d, lane i loads k[j0 + i][d] and every lane takes all SG values by shuffles: SG
// scores per lane from one load per lane. The product with v is the same walk over d. Loads:
// 2 D per SG keys, for 2 SG D FMAs per lane. The exponential normalizers rescale the D
// accumulators once per SG keys where the running maximum grows.
//
// MODE 1 and 2: the unfused reference, as in attention.comp (1 writes the scores to S, future
// ones as the normalizer's masked value, 2 reads the normalized scores from S for the product).
//
// TEXEL 1 reads q, k and v as uniform texel buffers (see matmul_shuffle.comp: on lavapipe a
// texel fetch is a vectorized gather); VEC 4 fetches 4 dimensions at once (head_dim, strides and
// column offsets all multiples of 4, views of R32G32B32A32).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_shuffle : enable

layout(local_size_x_id = 0) in;                // a multiple of SG
layout(constant_id = 1) const uint D = 64;     // head dimension
layout(constant_id = 2) const uint SG = 8;     // the device's (fixed, full) subgroup size
layout(constant_id = 3) const uint MODE = 0;   // 0 fused, 1 scores only, 2 product with S
layout(constant_id = 4) const uint VEC = 1;

// load_x(base, d): dimensions d .. d + 3 of the row starting at element `base` (those past D
// repeat the last one and are never used).
#if TEXEL
layout(set = 0, binding = 0) uniform textureBuffer q;
layout(set = 0, binding = 1) uniform textureBuffer k;
layout(set = 0, binding = 2) uniform textureBuffer v;
#define DEFINE_LOAD(name, buf)                                                                   \
    vec4 name(uint base, uint d) {                                                              \
        if (VEC == 4) return texelFetch(buf, int((base + d) / 4));                              \
        return vec4(texelFetch(buf, int(base + min(d, D - 1))).x, texelFetch(buf, int(base + min(d + 1, D - 1))).x, \
                    texelFetch(buf, int(base + min(d + 2, D - 1))).x, texelFetch(buf, int(base + min(d + 3, D - 1))).x); \
    }
#else
#define DEFINE_LOAD(name, buf)                                                                   \
    vec4 name(uint base, uint d) {                                                              \
        return vec4(buf(base + min(d, D - 1)), buf(base + min(d + 1, D - 1)), buf(base + min(d + 2, D - 1)), \
                    buf(base + min(d + 3, D - 1)));                                             \
    }
#endif
#define ATTN_IO_ID 5
#include "attention_io.glsl" // q, k, v and the output, float32 or F16
#define NORM_ID 7
#include "normalizer.glsl"
#if TEXEL
DEFINE_LOAD(load_q, q)
DEFINE_LOAD(load_k, k)
DEFINE_LOAD(load_v, v)
#else
DEFINE_LOAD(load_q, q1)
DEFINE_LOAD(load_k, k1)
DEFINE_LOAD(load_v, v1)
#endif
layout(set = 0, binding = 4) buffer S { float s[]; };

layout(push_constant) uniform Push {
    uint seq, heads;
    uint q_stride, k_stride, v_stride, o_stride;
    uint q_off, k_off, v_off;
    float scale;
    uint causal; // a push constant, not a specialization: one pipeline (one compile) serves both
    uint keep_r; // MODE 0, training: write each query's row statistic to S ([batch, heads, seq])
} pc;

void main() {
    uint lane = gl_SubgroupInvocationID;
    uint block = gl_WorkGroupID.x * gl_NumSubgroups + gl_SubgroupID; // SG queries each
    uint head = gl_WorkGroupID.y, batch = gl_WorkGroupID.z;
    uint q0 = block * SG;
    if (q0 >= pc.seq) return; // whole subgroups only: the shuffles below need every lane
    uint t = q0 + lane;
    uint row0 = batch * pc.seq;
    uint k_col = pc.k_off + head * D, v_col = pc.v_off + head * D;
    uint s_row0 = (batch * pc.heads + head) * pc.seq;
    uint t_load = min(t, pc.seq - 1); // lanes past the end compute on a valid row, write nothing

    float qv[D];
    if (MODE != 2) {
        uint base = (row0 + t_load) * pc.q_stride + pc.q_off + head * D;
        [[unroll]] for (uint d4 = 0; d4 < D; d4 += 4) {
            vec4 x = load_q(base, d4);
            [[unroll]] for (uint e = 0; e < 4; e++)
                if (d4 + e < D) qv[d4 + e] = x[e] * pc.scale;
        }
    }
    float num[D];
    [[unroll]] for (uint d = 0; d < D; d++) num[d] = 0.0;
    float den = 0.0, m_run = NORM_M0;

    uint key_end = pc.seq;
    if (pc.causal != 0 && MODE == 0) key_end = min(pc.seq, q0 + SG); // later keys score zero
    for (uint j0 = 0; j0 < key_end; j0 += SG) {
        uint key = j0 + lane; // the key this lane loads
        uint key_load = min(key, pc.seq - 1);
        float sc[SG];
        if (MODE == 2) {
            [[unroll]] for (uint i = 0; i < SG; i++) {
                uint kj = min(j0 + i, pc.seq - 1);
                sc[i] = j0 + i < pc.seq ? s[(s_row0 + t_load) * pc.seq + kj] : 0.0;
            }
        } else {
            [[unroll]] for (uint i = 0; i < SG; i++) sc[i] = 0.0;
            uint base = (row0 + key_load) * pc.k_stride + k_col;
            [[unroll]] for (uint d4 = 0; d4 < D; d4 += 4) {
                vec4 kd = load_k(base, d4);
                [[unroll]] for (uint e = 0; e < 4; e++)
                    if (d4 + e < D)
                        [[unroll]] for (uint i = 0; i < SG; i++) sc[i] = fma(qv[d4 + e], subgroupShuffle(kd[e], i), sc[i]);
            }
        }
        if (MODE == 1) {
            if (t < pc.seq)
                [[unroll]] for (uint i = 0; i < SG; i++)
                    if (j0 + i < pc.seq) s[(s_row0 + t) * pc.seq + j0 + i] = j0 + i > t && pc.causal != 0 ? norm_masked() : sc[i];
            continue;
        }
        if (MODE == 0) {
            // Future and padding keys take no part; the running maximum over the live ones.
            bool live[SG];
            float m_new = m_run;
            [[unroll]] for (uint i = 0; i < SG; i++) {
                live[i] = !((pc.causal != 0 && j0 + i > t) || j0 + i >= pc.seq);
                if (NORM != 0 && live[i]) m_new = max(m_new, sc[i]);
            }
            if (NORM != 0) {
                float rescale = exp(m_run - m_new);
                m_run = m_new;
                den *= rescale;
                [[unroll]] for (uint d = 0; d < D; d++) num[d] *= rescale;
            }
            float em = NORM == 1 ? exp(-m_run) : 0.0;
            [[unroll]] for (uint i = 0; i < SG; i++) {
                vec2 term = live[i] ? norm_term(sc[i], m_run, em) : vec2(0.0);
                sc[i] = term.x, den += term.y;
            }
        }
        uint base = (row0 + key_load) * pc.v_stride + v_col;
        [[unroll]] for (uint d4 = 0; d4 < D; d4 += 4) {
            vec4 vd = load_v(base, d4);
            [[unroll]] for (uint e = 0; e < 4; e++)
                if (d4 + e < D)
                    [[unroll]] for (uint i = 0; i < SG; i++) num[d4 + e] = fma(sc[i], subgroupShuffle(vd[e], i), num[d4 + e]);
        }
    }
    if (MODE == 1 || t >= pc.seq) return;
    float total = MODE == 2 ? 1.0 : norm_total(den); // S already holds the normalized weights
    if (MODE == 0 && pc.keep_r != 0) s[s_row0 + t] = norm_stat(total, m_run);
    float inv = 1.0 / total;
    uint dst = (row0 + t) * pc.o_stride + head * D;
    [[unroll]] for (uint d = 0; d < D; d++) store_o(dst + d, num[d] * inv);
}
