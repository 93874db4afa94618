#version 450
#extension GL_EXT_samplerless_texture_functions : require
// The backward of fused attention, flash style: the [seq, seq] scores are recomputed per block
// and never stored. Per head, with s_ij = q_i . k_j / sqrt(D), the weights P_ij of the normalizer
// recomputed from each row's statistic (r_i = 1 + sum_j |s_ij| for softpick, the log of the sum
// for the exponential forms: normalizer.glsl), O = P V and dO given:
//     D_i = dO_i . O_i,   dP_ij = dO_i . v_j,   dS_ij = mask_ij dscore(s_ij, dP_ij, D_i, row i),
//     dQ = dS K / sqrt(D),   dK = dS^T Q / sqrt(D),   dV = P^T dO
// (softpick: dscore = (dP_ij - sgn(s_ij) D_i) / r_i).
// Two passes, each writing only its own rows, so a run gives the same bits every time (no
// atomics): PASS 0 owns a query per invocation (dQ, and D_i for pass 1), PASS 1 a key per
// invocation (dK and dV), walking the queries that see it.
//
// The walk is attention_shuffle.comp's: an invocation keeps its own row (and accumulators) in
// registers, and a group of SG invocations takes SG other rows at a time, each lane loading one
// and every lane taking all SG values by exchange: a subgroup shuffle (a register move), or with
// SHARED_XCHG a round through shared memory (devices without fixed-size subgroup shuffles; the
// workgroup is then one group of SG). Rows go round 4 dimensions at a time, in loops unrolled so
// that the per-invocation rows stay registers indexed by constants (rolled, they were indexed at
// run time and lived in memory: 1.6x slower on lavapipe; unrolled, a variant compiles there in
// 60 to 120 ms at head size 64 to 128).
//
// TEXEL 1 reads q, k, v and dO as uniform texel buffers (vectorized gathers on lavapipe); VEC 4
// fetches 4 dimensions at once (head size, strides and column offsets multiples of 4).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_shuffle : enable

layout(local_size_x_id = 0) in;                // a multiple of SG (SG itself with SHARED_XCHG)
layout(constant_id = 1) const uint D = 64;     // head dimension
layout(constant_id = 2) const uint SG = 8;     // the exchange group: the subgroup size
layout(constant_id = 3) const uint VEC = 1;

#if TEXEL
layout(set = 0, binding = 0) uniform textureBuffer q;
layout(set = 0, binding = 1) uniform textureBuffer k;
layout(set = 0, binding = 2) uniform textureBuffer v;
layout(set = 0, binding = 3) uniform textureBuffer dout;
#define DEFINE_LOAD(name, buf)                                                                   \
    vec4 name(uint base, uint d) {                                                              \
        if (VEC == 4) return texelFetch(buf, int((base + d) / 4));                              \
        return vec4(texelFetch(buf, int(base + min(d, D - 1))).x, texelFetch(buf, int(base + min(d + 1, D - 1))).x, \
                    texelFetch(buf, int(base + min(d + 2, D - 1))).x, texelFetch(buf, int(base + min(d + 3, D - 1))).x); \
    }
#else
layout(set = 0, binding = 0) readonly buffer Q { float q[]; };
layout(set = 0, binding = 1) readonly buffer K { float k[]; };
layout(set = 0, binding = 2) readonly buffer V { float v[]; };
layout(set = 0, binding = 3) readonly buffer DO { float dout[]; };
#define DEFINE_LOAD(name, buf)                                                                   \
    vec4 name(uint base, uint d) {                                                              \
        return vec4(buf[base + min(d, D - 1)], buf[base + min(d + 1, D - 1)], buf[base + min(d + 2, D - 1)], \
                    buf[base + min(d + 3, D - 1)]);                                             \
    }
#endif
DEFINE_LOAD(load_q, q)
DEFINE_LOAD(load_k, k)
DEFINE_LOAD(load_v, v)
DEFINE_LOAD(load_do, dout)
#define NORM_ID 4
#include "normalizer.glsl"
layout(set = 0, binding = 4) readonly buffer R { float r[]; }; // [batch, heads, seq]: row statistics
#if PASS == 0
layout(set = 0, binding = 5) writeonly buffer DD { float dd[]; }; // [batch, heads, seq]: D_i
layout(set = 0, binding = 6) writeonly buffer G1 { float g1[]; }; // dQ
layout(set = 0, binding = 7) readonly buffer O { float o[]; };
layout(set = 0, binding = 7) readonly buffer O4 { vec4 o4[]; };
#else
layout(set = 0, binding = 5) readonly buffer DD { float dd[]; };
layout(set = 0, binding = 6) writeonly buffer G1 { float g1[]; }; // dK
layout(set = 0, binding = 7) writeonly buffer G2 { float g2[]; }; // dV
layout(set = 0, binding = 7) writeonly buffer G2_4 { vec4 g2_4[]; };
#endif
// The same as vec4s with VEC 4 (every offset a multiple of 4): on CPU drivers each storage-buffer
// access is a loop over the lanes, so a vec4 costs a quarter of four floats.
layout(set = 0, binding = 6) writeonly buffer G1_4 { vec4 g1_4[]; };

layout(push_constant) uniform Push {
    uint seq, heads;
    uint q_stride, k_stride, v_stride, do_stride, x_stride; // x: O (pass 0)
    uint q_off, k_off, v_off, do_off, x_off;
    uint g1_stride, g1_off, g2_stride, g2_off;
    float scale;
    uint causal;
} pc;

// publish(a, b) makes this lane's a and b available to the group; take_a(a, i) and take_b(b, i)
// return lane i's (a and b being the published values).
#if SHARED_XCHG
shared vec4 xa[SG], xb[SG];
#define LANE gl_LocalInvocationID.x
// Every invocation of the workgroup (one group) calls it at the same point.
void publish(vec4 a, vec4 b) {
    barrier(); // the previous values have been read
    xa[LANE] = a, xb[LANE] = b;
    barrier();
}
#define take_a(a, i) xa[i]
#define take_b(b, i) xb[i]
#else
#define LANE gl_SubgroupInvocationID
#define publish(a, b)
#define take_a(a, i) subgroupShuffle(a, i)
#define take_b(b, i) subgroupShuffle(b, i)
#endif

void main() {
    uint lane = LANE;
    uint block = gl_WorkGroupID.x * (gl_WorkGroupSize.x / SG) + gl_LocalInvocationID.x / SG;
    uint head = gl_WorkGroupID.y, batch = gl_WorkGroupID.z;
    uint b0 = block * SG; // this group's first query (pass 0) or key (pass 1)
    if (b0 >= pc.seq) return; // whole groups only: the exchanges need every lane
    uint t = b0 + lane, t_load = min(t, pc.seq - 1); // lanes past the end compute, write nothing
    uint row0 = batch * pc.seq, stat0 = (batch * pc.heads + head) * pc.seq;
    uint q_col = pc.q_off + head * D, k_col = pc.k_off + head * D, v_col = pc.v_off + head * D;
    uint do_col = pc.do_off + head * D;

    float mine1[D], mine2[D], acc1[D];
#if PASS == 1
    float acc2[D];
#endif
    // Own rows: q (scaled) and dO for a query; k (scaled) and v for a key.
    [[unroll]] for (uint d4 = 0; d4 < D; d4 += 4) {
#if PASS == 0
        vec4 a = load_q((row0 + t_load) * pc.q_stride + q_col, d4) * pc.scale;
        vec4 b = load_do((row0 + t_load) * pc.do_stride + do_col, d4);
#else
        vec4 a = load_k((row0 + t_load) * pc.k_stride + k_col, d4) * pc.scale;
        vec4 b = load_v((row0 + t_load) * pc.v_stride + v_col, d4);
#endif
        [[unroll]] for (uint e = 0; e < 4; e++)
            if (d4 + e < D) mine1[d4 + e] = a[e], mine2[d4 + e] = b[e], acc1[d4 + e] = 0.0;
    }

#if PASS == 0
    // D_t = dO_t . O_t, kept for pass 1; this query's r.
    float dt = 0.0;
    uint o_base = (row0 + t_load) * pc.x_stride + pc.x_off + head * D;
    [[unroll]] for (uint d4 = 0; d4 < D; d4 += 4) {
        vec4 od = VEC == 4 ? o4[(o_base + d4) / 4] : vec4(o[o_base + d4], o[o_base + min(d4 + 1, D - 1)],
                                                           o[o_base + min(d4 + 2, D - 1)], o[o_base + min(d4 + 3, D - 1)]);
        [[unroll]] for (uint e = 0; e < 4; e++)
            if (d4 + e < D) dt = fma(mine2[d4 + e], od[e], dt);
    }
    vec2 row_t = norm_row(r[stat0 + t_load]); // once per query, not once per key
    if (t < pc.seq) dd[stat0 + t] = dt;

    uint key_end = pc.causal != 0 ? min(pc.seq, b0 + SG) : pc.seq;
    for (uint j0 = 0; j0 < key_end; j0 += SG) {
        uint kb = (row0 + min(j0 + lane, pc.seq - 1)) * pc.k_stride + k_col;
        uint vb = (row0 + min(j0 + lane, pc.seq - 1)) * pc.v_stride + v_col;
        float sc[SG], dp[SG];
        [[unroll]] for (uint i = 0; i < SG; i++) sc[i] = 0.0, dp[i] = 0.0;
        [[unroll]] for (uint d4 = 0; d4 < D; d4 += 4) {
            vec4 kd = load_k(kb, d4), vd = load_v(vb, d4);
            publish(kd, vd);
            [[unroll]] for (uint i = 0; i < SG; i++) {
                vec4 ki = take_a(kd, i), vi = take_b(vd, i);
                [[unroll]] for (uint e = 0; e < 4; e++)
                    if (d4 + e < D) sc[i] = fma(mine1[d4 + e], ki[e], sc[i]), dp[i] = fma(mine2[d4 + e], vi[e], dp[i]);
            }
        }
        // dS for this query against keys j0 .. j0 + SG - 1 (masked and padding keys: zero).
        [[unroll]] for (uint i = 0; i < SG; i++) {
            bool live = j0 + i < pc.seq && !(pc.causal != 0 && j0 + i > t);
            sc[i] = live ? norm_dscore(sc[i], dp[i], dt, row_t) : 0.0;
        }
        [[unroll]] for (uint d4 = 0; d4 < D; d4 += 4) {
            vec4 kd = load_k(kb, d4);
            publish(kd, kd);
            vec4 a = vec4(0.0);
            [[unroll]] for (uint i = 0; i < SG; i++) a = fma(vec4(sc[i]), take_a(kd, i), a);
            [[unroll]] for (uint e = 0; e < 4; e++)
                if (d4 + e < D) acc1[d4 + e] += a[e];
        }
    }
    if (t >= pc.seq) return;
    uint dst = (row0 + t) * pc.g1_stride + pc.g1_off + head * D;
    if (VEC == 4) {
        [[unroll]] for (uint d4 = 0; d4 < D; d4 += 4)
            g1_4[(dst + d4) / 4] = vec4(acc1[d4], acc1[min(d4 + 1, D - 1)], acc1[min(d4 + 2, D - 1)], acc1[min(d4 + 3, D - 1)]) * pc.scale;
        return;
    }
    [[unroll]] for (uint d = 0; d < D; d++) g1[dst + d] = acc1[d] * pc.scale;
#else
    [[unroll]] for (uint d = 0; d < D; d++) acc2[d] = 0.0;
    // Queries i >= this group's first key see it (all queries without the mask).
    for (uint i0 = pc.causal != 0 ? b0 : 0; i0 < pc.seq; i0 += SG) {
        uint i_load = min(i0 + lane, pc.seq - 1);
        uint qb = (row0 + i_load) * pc.q_stride + q_col, gb = (row0 + i_load) * pc.do_stride + do_col;
        vec2 row_l = norm_row(r[stat0 + i_load]);
        float d_l = dd[stat0 + i_load];
        float sc[SG], dp[SG], p[SG];
        [[unroll]] for (uint i = 0; i < SG; i++) sc[i] = 0.0, dp[i] = 0.0;
        [[unroll]] for (uint d4 = 0; d4 < D; d4 += 4) {
            vec4 qd = load_q(qb, d4), gd = load_do(gb, d4);
            publish(qd, gd);
            [[unroll]] for (uint i = 0; i < SG; i++) {
                vec4 qi = take_a(qd, i), gi = take_b(gd, i);
                [[unroll]] for (uint e = 0; e < 4; e++)
                    if (d4 + e < D) sc[i] = fma(mine1[d4 + e], qi[e], sc[i]), dp[i] = fma(mine2[d4 + e], gi[e], dp[i]);
            }
        }
        // P and dS of queries i0 .. i0 + SG - 1 against this key (each row's values exchanged:
        // one division or exponential per query row, not one per pair).
        vec4 rd = vec4(row_l, d_l, 0.0);
        publish(rd, rd);
        [[unroll]] for (uint i = 0; i < SG; i++) {
            vec4 row_i = take_a(rd, i);
            bool live = i0 + i < pc.seq && !(pc.causal != 0 && i0 + i < t);
            p[i] = live ? norm_weight(sc[i], row_i.xy) : 0.0;
            sc[i] = live ? norm_dscore(sc[i], dp[i], row_i.z, row_i.xy) : 0.0;
        }
        [[unroll]] for (uint d4 = 0; d4 < D; d4 += 4) {
            vec4 qd = load_q(qb, d4), gd = load_do(gb, d4);
            publish(qd, gd);
            vec4 a = vec4(0.0), b = vec4(0.0);
            [[unroll]] for (uint i = 0; i < SG; i++) a = fma(vec4(sc[i]), take_a(qd, i), a), b = fma(vec4(p[i]), take_b(gd, i), b);
            [[unroll]] for (uint e = 0; e < 4; e++)
                if (d4 + e < D) acc1[d4 + e] += a[e], acc2[d4 + e] += b[e];
        }
    }
    if (t >= pc.seq) return;
    uint dk_dst = (row0 + t) * pc.g1_stride + pc.g1_off + head * D;
    uint dv_dst = (row0 + t) * pc.g2_stride + pc.g2_off + head * D;
    if (VEC == 4) {
        [[unroll]] for (uint d4 = 0; d4 < D; d4 += 4) {
            g1_4[(dk_dst + d4) / 4] = vec4(acc1[d4], acc1[min(d4 + 1, D - 1)], acc1[min(d4 + 2, D - 1)], acc1[min(d4 + 3, D - 1)]) * pc.scale;
            g2_4[(dv_dst + d4) / 4] = vec4(acc2[d4], acc2[min(d4 + 1, D - 1)], acc2[min(d4 + 2, D - 1)], acc2[min(d4 + 3, D - 1)]);
        }
        return;
    }
    [[unroll]] for (uint d = 0; d < D; d++) g1[dk_dst + d] = acc1[d] * pc.scale, g2[dv_dst + d] = acc2[d];
#endif
}
