#version 450
#extension GL_EXT_samplerless_texture_functions : require
// Causal (or full) attention, fused: for one (batch, head, block of BQ queries) a workgroup
// streams over blocks of BK keys in shared memory and accumulates, per query,
//     num = sum_j w_ij v_j    and    den = sum_j |w_ij|,    s_ij = q_i . k_j / sqrt(D),
// with the weights w of the normalizer (normalizer.glsl), then writes num / total(den). Softpick
// (w = s) has no running maximum to track, so one pass is exact; the exponential forms rescale
// num and den where a block raises a query's maximum. Future keys take no part: key blocks
// wholly after the last query of the block are skipped. The [seq, seq] scores never reach memory.
//
// MODE 1 and 2 are the unfused reference the benchmark compares against: 1 writes the scores
// (future ones as the normalizer's masked value: 0 for softpick, -inf for the exponential forms)
// to S for a separate normalizing pass, 2 computes W V reading W from S.
//
// Tensors are rows of `stride` floats; head h of a row is D floats from column `off + h * D`, so
// q, k and v may be separate [batch, seq, hidden] tensors or column ranges of one fused tensor.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 64;     // head dimension
layout(constant_id = 2) const uint BQ = 16;    // queries per workgroup
layout(constant_id = 3) const uint BK = 16;    // keys per shared-memory block
layout(constant_id = 4) const uint ACC = 16;   // outputs per invocation: ceil(BQ * D / WG)
layout(constant_id = 5) const uint MODE = 0;   // 0 fused, 1 scores only, 2 product with S

#define TEXEL 0
#define ATTN_IO_ID 6
#include "attention_io.glsl" // q, k, v and the output, float32 or F16
#define NORM_ID 8
#include "normalizer.glsl"
layout(set = 0, binding = 4) buffer S { float s[]; };

layout(push_constant) uniform Push {
    uint seq, heads;
    uint q_stride, k_stride, v_stride, o_stride;
    uint q_off, k_off, v_off;
    float scale;
    uint causal; // a push constant, not a specialization: one pipeline (one compile) serves both
    uint keep_r; // MODE 0, training: write each query's row statistic to S ([batch, heads, seq])
} pc;

const uint KD = D + 1; // padded rows: invocations reading different keys hit different banks
shared float qs[BQ * D];
shared float ks[BK * KD];
shared float vs[BK * D];
shared float ss[BQ * BK];
shared float den_s[BQ]; // each query's normalizing total; while walking, its rescale factor

void main() {
    const uint WG = gl_WorkGroupSize.x;
    uint tid = gl_LocalInvocationID.x;
    uint q0 = gl_WorkGroupID.x * BQ, head = gl_WorkGroupID.y, batch = gl_WorkGroupID.z;
    uint row0 = batch * pc.seq; // the batch's first row
    uint q_col = pc.q_off + head * D, k_col = pc.k_off + head * D, v_col = pc.v_off + head * D;
    uint s_row0 = (batch * pc.heads + head) * pc.seq; // MODE 1/2: this head's rows of S

    // Queries, pre-scaled by 1 / sqrt(D).
    if (MODE != 2)
        for (uint i = tid; i < BQ * D; i += WG) {
            uint t = q0 + i / D;
            qs[i] = t < pc.seq ? q1((row0 + t) * pc.q_stride + q_col + i % D) * pc.scale : 0.0;
        }

    float num[ACC];
    [[unroll]] for (uint j = 0; j < ACC; j++) num[j] = 0.0;
    float den = 0.0, m_run = NORM_M0; // invocations tid < BQ: query q0 + tid

    uint key_end = pc.seq;
    if (pc.causal != 0 && MODE == 0) key_end = min(pc.seq, q0 + BQ);
    for (uint kb = 0; kb < key_end; kb += BK) {
        if (MODE != 2)
            for (uint i = tid; i < BK * D; i += WG) {
                uint key = kb + i / D;
                ks[(i / D) * KD + i % D] = key < pc.seq ? k1((row0 + key) * pc.k_stride + k_col + i % D) : 0.0;
            }
        if (MODE != 1)
            for (uint i = tid; i < BK * D; i += WG) {
                uint key = kb + i / D;
                vs[i] = key < pc.seq ? v1((row0 + key) * pc.v_stride + v_col + i % D) : 0.0;
            }
        if (MODE == 2)
            for (uint i = tid; i < BQ * BK; i += WG) {
                uint t = q0 + i / BK, key = kb + i % BK;
                ss[i] = t < pc.seq && key < pc.seq ? s[(s_row0 + t) * pc.seq + key] : 0.0;
            }
        barrier();

        if (MODE != 2)
            for (uint i = tid; i < BQ * BK; i += WG) {
                uint qi = i / BK, kj = i % BK;
                float dot = 0.0;
                for (uint d = 0; d < D; d++) dot = fma(qs[qi * D + d], ks[kj * KD + d], dot);
                // Future (and padding) keys score exactly zero (the normalizer skips them).
                uint t = q0 + qi, key = kb + kj;
                if ((pc.causal != 0 && key > t) || key >= pc.seq) dot = 0.0;
                if (MODE == 1) {
                    if (t < pc.seq && key < pc.seq) s[(s_row0 + t) * pc.seq + key] = key > t && pc.causal != 0 ? norm_masked() : dot;
                } else {
                    ss[i] = dot;
                }
            }
        if (MODE == 1) {
            barrier(); // ks is reloaded next block
            continue;
        }
        if (MODE == 0) barrier();

        if (MODE == 0 && NORM == 0 && tid < BQ)
            for (uint kj = 0; kj < BK; kj++) den += abs(ss[tid * BK + kj]);
        if (MODE == 0 && NORM != 0) {
            // Each query's invocation turns its row of scores into weights at the new maximum.
            if (tid < BQ) {
                uint t = q0 + tid;
                uint live_end = min(pc.seq, pc.causal != 0 ? t + 1 : pc.seq); // keys below it take part
                float m_new = m_run;
                for (uint kj = 0; kj < BK && kb + kj < live_end; kj++) m_new = max(m_new, ss[tid * BK + kj]);
                float rescale = exp(m_run - m_new), em = NORM == 1 ? exp(-m_new) : 0.0;
                m_run = m_new;
                den *= rescale;
                for (uint kj = 0; kj < BK; kj++) {
                    vec2 term = kb + kj < live_end ? norm_term(ss[tid * BK + kj], m_run, em) : vec2(0.0);
                    ss[tid * BK + kj] = term.x;
                    den += term.y;
                }
                den_s[tid] = rescale;
            }
            barrier();
            [[unroll]] for (uint j = 0; j < ACC; j++) {
                uint i = tid + j * WG;
                if (ACC * WG > BQ * D && i >= BQ * D) break;
                num[j] *= den_s[i / D];
            }
        }
        // Only the loop over this invocation's outputs is unrolled (num[] stays in registers);
        // unrolling the key loop too multiplied compile time (LLVM on CPU drivers: minutes per
        // variant) for no measured gain.
        for (uint kj = 0; kj < BK; kj++)
            [[unroll]] for (uint j = 0; j < ACC; j++) {
                uint i = tid + j * WG;
                if (ACC * WG > BQ * D && i >= BQ * D) break;
                num[j] = fma(ss[(i / D) * BK + kj], vs[kj * D + i % D], num[j]);
            }
        barrier(); // the next block overwrites ks, vs and ss
    }
    if (MODE == 1) return;

    float total = MODE == 2 ? 1.0 : norm_total(den); // S already holds the normalized weights
    if (tid < BQ) den_s[tid] = total;
    if (MODE == 0 && pc.keep_r != 0 && tid < BQ && q0 + tid < pc.seq) s[s_row0 + q0 + tid] = norm_stat(total, m_run);
    barrier();
    [[unroll]] for (uint j = 0; j < ACC; j++) {
        uint i = tid + j * WG;
        if (ACC * WG > BQ * D && i >= BQ * D) break;
        uint t = q0 + i / D;
        if (t < pc.seq) store_o((row0 + t) * pc.o_stride + head * D + i % D, num[j] / den_s[i / D]);
    }
}
