#version 450
#extension GL_EXT_samplerless_texture_functions : require
// C = A B (+ bias) (then GELU) (+ residual), like matmul.comp, shaped for CPU drivers (lavapipe),
// where a shader's subgroup is one SIMD register and every per-invocation memory access is a
// gather.
//
// Each subgroup of SG invocations computes RB = ROWS * ROW_SETS rows by SG * CG * 4 columns of C;
// invocation l owns 4 adjacent columns in each of CG groups. Per 4 steps of k, invocation l loads
// A's 4 values for rows m0 + r * ROWS + l % ROWS (ROW_SETS loads) and, for each k, B's 4 columns
// of each group (4 * CG loads), then takes every row's A from its owner with a subgroup shuffle (a
// register move, no memory access): ROW_SETS + 4 * CG loads feed RB * CG * 16 FMAs. ROWS is SG
// unless fewer rows per set are asked for: a set of SG rows holds SG vec4 accumulators per lane,
// which on a CPU driver is 4 * SG vector registers, more than a 16-register CPU (AVX2) has.
//
// TRANS_A takes A as stored [batch, K, M] (dB = A^T dC in the backward): lanes then load 4
// adjacent rows at one k (a vec4 along M) and the shuffles hand out row quads, ROW_SETS loads per
// 4 steps as before. TRANS_B takes B as stored [N, K] (dA = dC B^T): each column's 4 steps are
// one vec4 along K, transposed in registers. Neither makes a transposed copy.
//
// TEXEL 1 reads A and B as uniform texel buffers: on lavapipe a texel fetch is one vectorized
// gather where a storage-buffer load is a loop over the lanes (measured 5.7 against 0.3 G floats/s),
// which makes this variant several times faster. VEC_A / VEC_B say whether the view (or, for
// storage buffers, the indexing) is vec4: A's and B's stored rows (K or, with TRANS_A, M for A;
// N or, with TRANS_B, K for B) a multiple of 4. Storage types of every operand: matmul_io.glsl.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_shuffle : enable

layout(local_size_x_id = 0) in;                  // a multiple of SG: WG / SG subgroups
layout(constant_id = 1) const uint SG = 8;       // the device's (fixed, full) subgroup size
layout(constant_id = 2) const uint ROW_SETS = 4;
layout(constant_id = 3) const uint CG = 1;
layout(constant_id = 4) const uint VEC_A = 1;
layout(constant_id = 5) const uint VEC_B = 1;
layout(constant_id = 6) const uint TRANS_A = 0; // A(m, k) at k * M + m
layout(constant_id = 7) const uint TRANS_B = 0; // B(k, n) at n * K + k
layout(constant_id = 8) const uint VEC_C = 1;   // 4: N a multiple of 4, the epilogue moves vec4s
// The epilogue's bits (SPK__EPILOGUE_*, as matmul.comp's push constant): bit 0 bias, 1 GELU, 2
// residual, 3 times the residual, 4 keep Pre, 5 keep gelu'. A specialization constant here, not a
// push constant: llvmpipe (Mesa 22) runs both sides of every branch it cannot resolve at compile
// time, masked, so a runtime bit cost every matmul the GELU's erf, the residual's loads and the
// kept pre-activation's store loop whether set or not (1920 x 256 x 256 with a bias only: 3.5-3.7
// ms against 2.8-2.9 compiled for it).
layout(constant_id = 15) const uint EPILOGUE = 0;
layout(constant_id = 16) const uint ROWS_ASKED = 0; // rows per set: 0 for SG, else a divisor of SG
const uint ROWS = ROWS_ASKED == 0 ? SG : ROWS_ASKED;

#define MATMUL_SPEC_ID 9
#include "matmul_io.glsl" // A, B, C, bias, residual, pre-activation in their storage types

layout(push_constant) uniform Push {
    uint M, N, K;
    uint a_batch_stride, b_batch_stride, c_batch_stride;
    uint tile_m0;
    uint epilogue; // the tile kernel's (matmul.comp); here EPILOGUE
} pc;

#include "erf.glsl"

// A at one row (`row` its first element), columns k .. k + 3 (k a multiple of 4, k + 3 < K).
vec4 load_a(uint row, uint k) {
    if (VEC_A == 4) return a4((row + k) / 4);
    return vec4(a1(row + k), a1(row + k + 1), a1(row + k + 2), a1(row + k + 3));
}

// TRANS_A: A at rows m .. m + 3 (m a multiple of 4; rows past M repeat the last) of step k.
vec4 load_a_t(uint base, uint m, uint k) {
    uint at = base + k * pc.M;
    if (VEC_A == 4) return a4((at + min(m, pc.M - 4)) / 4);
    uint last = pc.M - 1;
    return vec4(a1(at + min(m, last)), a1(at + min(m + 1, last)), a1(at + min(m + 2, last)), a1(at + min(m + 3, last)));
}

// B at one row (`row` its first element), columns n .. n + 3; columns past N repeat the last
// one (their results are never stored).
vec4 load_b(uint row, uint n) {
    if (VEC_B == 4) return b4((row + n) / 4);
    uint last = pc.N - 1;
    return vec4(b1(row + min(n, last)), b1(row + min(n + 1, last)), b1(row + min(n + 2, last)),
                b1(row + min(n + 3, last)));
}

// TRANS_B: B at steps k .. k + 3 of column n (clamped to N - 1).
vec4 load_b_t(uint base, uint n, uint k) {
    uint at = base + min(n, pc.N - 1) * pc.K + k;
    if (VEC_B == 4) return b4(at / 4);
    return vec4(b1(at), b1(at + 1), b1(at + 2), b1(at + 3));
}

// This invocation's accumulators and operand positions (private globals, kept in registers).
const uint RB = ROWS * ROW_SETS, QUADS = RB / 4; // with TRANS_A, RB a multiple of 4
// Steps of k per main-loop trip, and B loads per lane and 4 steps with TRANS_B (below).
const uint TRIP = TRANS_B != 0 ? 16 : 8, BT = 4 * CG;
const bool FORWARD = TRANS_A == 0 && TRANS_B == 0; // the backward's products have no GELU
vec4 acc[RB * CG];
uint a_row[ROW_SETS], b_col[CG];
uint a_base, row0;

// acc += A B over k .. k + 3 (k a multiple of 4, k + 3 < K). With TRANS_B the caller loads B:
// bt[4 * g + c] is column c of group g at steps k .. k + 3.
void step4(uint k, uint b_base, vec4 bt[BT]) {
    vec4 av[ROW_SETS], bv[4 * CG];
    uint lane = gl_SubgroupInvocationID;
    // A: ROW_SETS loads per lane. Without TRANS_A load r is 4 steps of row r * ROWS + lane % ROWS;
    // with it, item u = r * SG + lane is the row quad u % QUADS at step u / QUADS (items past RB
    // repeat one below it).
    [[unroll]] for (uint r = 0; r < ROW_SETS; r++) {
        uint u = (r * SG + lane) % RB;
        av[r] = TRANS_A != 0 ? load_a_t(a_base, row0 + 4 * (u % QUADS), k + u / QUADS) : load_a(a_row[r], k);
    }
    [[unroll]] for (uint g = 0; g < CG; g++) {
        if (TRANS_B != 0) { // transposed in registers
            [[unroll]] for (uint kk = 0; kk < 4; kk++)
                bv[kk * CG + g] = vec4(bt[4 * g][kk], bt[4 * g + 1][kk], bt[4 * g + 2][kk], bt[4 * g + 3][kk]);
        } else {
            [[unroll]] for (uint kk = 0; kk < 4; kk++) bv[kk * CG + g] = load_b(b_base + (k + kk) * pc.N, b_col[g]);
        }
    }
    if (TRANS_A != 0) {
        [[unroll]] for (uint kk = 0; kk < 4; kk++)
            [[unroll]] for (uint q = 0; q < QUADS; q++) {
                uint u = kk * QUADS + q;
                vec4 x = subgroupShuffle(av[u / SG], u % SG); // rows 4q .. 4q + 3 at step kk
                [[unroll]] for (uint e = 0; e < 4; e++)
                    [[unroll]] for (uint g = 0; g < CG; g++)
                        acc[(4 * q + e) * CG + g] = fma(vec4(x[e]), bv[kk * CG + g], acc[(4 * q + e) * CG + g]);
            }
        return;
    }
    [[unroll]] for (uint r = 0; r < ROW_SETS; r++)
        [[unroll]] for (uint i = 0; i < ROWS; i++) {
            vec4 x = subgroupShuffle(av[r], i);
            [[unroll]] for (uint kk = 0; kk < 4; kk++)
                [[unroll]] for (uint g = 0; g < CG; g++)
                    acc[(r * ROWS + i) * CG + g] = fma(vec4(x[kk]), bv[kk * CG + g], acc[(r * ROWS + i) * CG + g]);
        }
}

void main() {
    const uint CB = SG * CG * 4;
    uint lane = gl_SubgroupInvocationID;
    uint batch = gl_WorkGroupID.z;
    // Subgroups of a workgroup take consecutive row blocks.
    row0 = ((pc.tile_m0 + gl_WorkGroupID.y) * gl_NumSubgroups + gl_SubgroupID) * RB;
    uint col0 = gl_WorkGroupID.x * CB;
    a_base = batch * pc.a_batch_stride;
    uint b_base = batch * pc.b_batch_stride;

    // Rows past M repeat the last one, group starts past N the last group (never stored).
    [[unroll]] for (uint r = 0; r < ROW_SETS; r++) a_row[r] = a_base + min(row0 + r * ROWS + lane % ROWS, pc.M - 1) * pc.K;
    [[unroll]] for (uint g = 0; g < CG; g++) b_col[g] = min(col0 + (g * SG + lane) * 4, (pc.N - 1) & ~3u);

    [[unroll]] for (uint i = 0; i < RB * CG; i++) acc[i] = vec4(0.0);
    uint k_end = pc.K & ~3u;
    // Several 4-deep steps per loop trip: on CPU drivers every trip pays a lane-mask test. With
    // TRANS_B, 16 steps, each column's 16 loaded at once: a lane's columns lie K apart, so where
    // K * 4 bytes is a multiple of 4 KiB they all share one set of the CPU's L1 cache, and a line
    // read a step at a time was evicted between its steps (dA = dC B^T at K 1024 ran 1.6-1.9x
    // slower than the forward of the same shape; at K 1028 as fast).
    uint k = 0;
    for (; k + TRIP <= k_end; k += TRIP) {
        vec4 bt[TRIP / 4][BT];
        if (TRANS_B != 0)
            [[unroll]] for (uint j = 0; j < BT; j++)
                [[unroll]] for (uint h = 0; h < TRIP / 4; h++) bt[h][j] = load_b_t(b_base, b_col[j / 4] + j % 4, k + 4 * h);
        [[unroll]] for (uint h = 0; h < TRIP / 4; h++) step4(k + 4 * h, b_base, bt[h]);
    }
    for (; k < k_end; k += 4) {
        vec4 bt[BT];
        if (TRANS_B != 0) [[unroll]] for (uint j = 0; j < BT; j++) bt[j] = load_b_t(b_base, b_col[j / 4] + j % 4, k);
        step4(k, b_base, bt);
    }
    // The last K % 4 steps, one at a time (VEC_A, or with TRANS_B VEC_B, is 1 whenever there are
    // any; with TRANS_A a lane takes its row from its quad's load). Left out where the variant
    // knows K is a multiple of 4: CPU drivers run a loop's body at least once, masked.
    const bool K4 = TRANS_A == 0 ? VEC_A == 4 : TRANS_B != 0 && VEC_B == 4;
    if (!K4) for (k = k_end; k < pc.K; k++) {
        float av[ROW_SETS];
        vec4 bv[CG];
        [[unroll]] for (uint r = 0; r < ROW_SETS; r++) {
            uint m = min(row0 + r * ROWS + lane % ROWS, pc.M - 1);
            av[r] = TRANS_A != 0 ? load_a_t(a_base, m & ~3u, k)[m & 3u] : a1(a_row[r] + k);
        }
        [[unroll]] for (uint g = 0; g < CG; g++) {
            if (TRANS_B != 0) {
                uint at = b_base + k;
                bv[g] = vec4(b1(at + min(b_col[g], pc.N - 1) * pc.K), b1(at + min(b_col[g] + 1, pc.N - 1) * pc.K),
                             b1(at + min(b_col[g] + 2, pc.N - 1) * pc.K), b1(at + min(b_col[g] + 3, pc.N - 1) * pc.K));
            } else {
                bv[g] = load_b(b_base + k * pc.N, b_col[g]);
            }
        }
        [[unroll]] for (uint r = 0; r < ROW_SETS; r++)
            [[unroll]] for (uint i = 0; i < ROWS; i++) {
                float x = subgroupShuffle(av[r], i);
                [[unroll]] for (uint g = 0; g < CG; g++) acc[(r * ROWS + i) * CG + g] = fma(vec4(x), bv[g], acc[(r * ROWS + i) * CG + g]);
            }
    }

    // The bias of this invocation's columns, loaded once for all rows.
    vec4 bias_v[CG];
    [[unroll]] for (uint g = 0; g < CG; g++)
        [[unroll]] for (uint e = 0; e < 4; e++)
            bias_v[g][e] = (EPILOGUE & 1u) != 0 ? bias_at(min(col0 + (g * SG + lane) * 4 + e, pc.N - 1)) : 0.0;

    uint c_base = batch * pc.c_batch_stride;
    if (VEC_C == 4) {
        // Each lane's 4 columns of a group are one vec4 (N a multiple of 4: all or none stored).
        [[unroll]] for (uint i = 0; i < RB; i++) {
            uint m = row0 + i;
            if (m >= pc.M) break;
            [[unroll]] for (uint g = 0; g < CG; g++) {
                uint n = col0 + (g * SG + lane) * 4;
                if (n >= pc.N) break;
                vec4 v = acc[i * CG + g] + bias_v[g];
                uint idx = (c_base + m * pc.N + n) / 4;
                if ((EPILOGUE & 16u) != 0) pre4[idx] = v;
                if (FORWARD && (EPILOGUE & 2u) != 0) {
                    vec4 cdf = vec4(gelu_cdf(v.x), gelu_cdf(v.y), gelu_cdf(v.z), gelu_cdf(v.w));
                    if ((EPILOGUE & 32u) != 0) pre4[idx] = gelu_grad_cdf(v, cdf);
                    v *= cdf;
                }
                if ((EPILOGUE & 4u) != 0) v += res4(idx);
                if (TRANS_B != 0 && (EPILOGUE & 8u) != 0) v *= res4(idx);
                store_c4(idx, v);
            }
        }
        return;
    }
    [[unroll]] for (uint i = 0; i < RB; i++) {
        uint m = row0 + i;
        if (m >= pc.M) break;
        [[unroll]] for (uint g = 0; g < CG; g++) {
            [[unroll]] for (uint e = 0; e < 4; e++) {
                uint n = col0 + (g * SG + lane) * 4 + e;
                if (n >= pc.N) break;
                float v = acc[i * CG + g][e] + bias_v[g][e];
                uint idx = c_base + m * pc.N + n;
                if ((EPILOGUE & 16u) != 0) pre[idx] = v;
                // GELU, and with bit 5 its derivative kept for the backward from the same erf.
                if (FORWARD && (EPILOGUE & 2u) != 0) {
                    float cdf = gelu_cdf(v);
                    if ((EPILOGUE & 32u) != 0) pre[idx] = gelu_grad_cdf(v, cdf);
                    v *= cdf;
                }
                if ((EPILOGUE & 4u) != 0) v += res1(idx);
                // Bit 3, times the residual: the backward through a GELU, fused into the dA product
                // that makes its gradient, the residual being the gelu' the training forward kept.
                if (TRANS_B != 0 && (EPILOGUE & 8u) != 0) v *= res1(idx);
                store_c(idx, v);
            }
        }
    }
}
