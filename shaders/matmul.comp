#version 450
#extension GL_EXT_samplerless_texture_functions : require
// C = A B (+ bias) (then GELU) (+ residual), float32 arithmetic, row-major (operands may be stored in
// 16 bits: matmul_io.glsl):
// A [batch, M, K], B [K, N] shared or [batch, K, N], bias [N], residual and C [batch, M, N].
// The backward passes read an operand transposed where it is stored: TRANS_A takes A as stored
// [batch, K, M] (dB = A^T dC), TRANS_B takes B as stored [N, K] (dA = dC B^T); no copy is made.
//
// A workgroup of WG_X x WG_Y invocations computes a BM x BN tile of C (BM = WG_Y * TM,
// BN = WG_X * TN); each invocation keeps a TM x TN register block: rows ty * TM + i, columns
// tx + j * WG_X, so neighbouring invocations read and write neighbouring columns. With SHARED the
// workgroup stages BK-deep slices of A and B in shared memory; without, every invocation reads
// its operands straight from memory (CPU drivers, whose caches do the staging). Indices past the
// edges are clamped for loads (every read stays in bounds) and masked for stores.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require

layout(local_size_x_id = 0, local_size_y_id = 1) in;
layout(constant_id = 2) const uint TM = 4;
layout(constant_id = 3) const uint TN = 4;
layout(constant_id = 4) const uint BK = 16;
layout(constant_id = 5) const bool SHARED = true;
// Shared tile sizes, BK * BM and BK * BN with SHARED (1 without), given by the host: array sizes
// computed from other specialization constants are not accepted by every driver's compiler.
layout(constant_id = 6) const uint TILE_A = 1;
layout(constant_id = 7) const uint TILE_B = 1;
layout(constant_id = 8) const uint TRANS_A = 0; // A(m, k) at k * M + m
layout(constant_id = 9) const uint TRANS_B = 0; // B(k, n) at n * K + k

#define TEXEL 0
#define MATMUL_SPEC_ID 10
#include "matmul_io.glsl" // A, B, C, bias, residual, pre-activation in their storage types

layout(push_constant) uniform Push {
    uint M, N, K;
    uint a_batch_stride, b_batch_stride, c_batch_stride; // elements; b's is 0 when B is shared
    uint tile_m0; // first row tile of this dispatch (rows beyond one dispatch's grid are split)
    // bit 0 bias, bit 1 GELU, bit 2 residual, bit 3 times the residual, bit 4 keep A B + bias
    // in Pre, bit 5 keep gelu'(A B + bias) there instead (the training forward): a push constant
    // (a uniform branch per stored element), so one pipeline serves every epilogue instead of one
    // LLVM compile each
    uint epilogue;
} pc;

#include "erf.glsl"

const uint WG_X = gl_WorkGroupSize.x;
const uint WG_Y = gl_WorkGroupSize.y;
const uint BM = WG_Y * TM;
const uint BN = WG_X * TN;
shared float tile_a[TILE_A]; // [BK][BM]
shared float tile_b[TILE_B]; // [BK][BN]

void main() {
    uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
    uint batch = gl_WorkGroupID.z;
    uint row0 = (pc.tile_m0 + gl_WorkGroupID.y) * BM;
    uint col0 = gl_WorkGroupID.x * BN;
    uint a_base = batch * pc.a_batch_stride, b_base = batch * pc.b_batch_stride;

    float acc[TM * TN];
    [[unroll]] for (uint i = 0; i < TM * TN; i++) acc[i] = 0.0;

    if (SHARED) {
        uint tid = ty * WG_X + tx;
        for (uint k0 = 0; k0 < pc.K; k0 += BK) {
            // Neighbouring invocations load neighbouring addresses, whichever way A and B lie.
            for (uint e = tid; e < BM * BK; e += WG_X * WG_Y) {
                uint r = TRANS_A != 0 ? e % BM : e / BK, kk = TRANS_A != 0 ? e / BM : e % BK;
                uint m = min(row0 + r, pc.M - 1), k = k0 + kk;
                uint at = TRANS_A != 0 ? a_base + k * pc.M + m : a_base + m * pc.K + k;
                tile_a[kk * BM + r] = k < pc.K ? a1(at) : 0.0;
            }
            for (uint e = tid; e < BK * BN; e += WG_X * WG_Y) {
                uint kk = TRANS_B != 0 ? e % BK : e / BN, cc = TRANS_B != 0 ? e / BK : e % BN;
                uint n = min(col0 + cc, pc.N - 1), k = k0 + kk;
                uint at = TRANS_B != 0 ? b_base + n * pc.K + k : b_base + k * pc.N + n;
                tile_b[kk * BN + cc] = k < pc.K ? b1(at) : 0.0;
            }
            barrier();
            for (uint kk = 0; kk < BK; kk++) {
                float av[TM], bv[TN];
                [[unroll]] for (uint i = 0; i < TM; i++) av[i] = tile_a[kk * BM + ty * TM + i];
                [[unroll]] for (uint j = 0; j < TN; j++) bv[j] = tile_b[kk * BN + tx + j * WG_X];
                [[unroll]] for (uint i = 0; i < TM; i++)
                    [[unroll]] for (uint j = 0; j < TN; j++) acc[i * TN + j] = fma(av[i], bv[j], acc[i * TN + j]);
            }
            barrier();
        }
    } else {
        // Element (m, k) of A at rows[i] + k * a_step, (k, n) of B at cols[j] + k * b_step.
        uint rows[TM], cols[TN];
        uint a_step = TRANS_A != 0 ? pc.M : 1, b_step = TRANS_B != 0 ? 1 : pc.N;
        [[unroll]] for (uint i = 0; i < TM; i++) {
            uint m = min(row0 + ty * TM + i, pc.M - 1);
            rows[i] = a_base + (TRANS_A != 0 ? m : m * pc.K);
        }
        [[unroll]] for (uint j = 0; j < TN; j++) {
            uint n = min(col0 + tx + j * WG_X, pc.N - 1);
            cols[j] = b_base + (TRANS_B != 0 ? n * pc.K : n);
        }
        for (uint k = 0; k < pc.K; k++) {
            float av[TM], bv[TN];
            [[unroll]] for (uint i = 0; i < TM; i++) av[i] = a1(rows[i] + k * a_step);
            [[unroll]] for (uint j = 0; j < TN; j++) bv[j] = b1(cols[j] + k * b_step);
            [[unroll]] for (uint i = 0; i < TM; i++)
                [[unroll]] for (uint j = 0; j < TN; j++) acc[i * TN + j] = fma(av[i], bv[j], acc[i * TN + j]);
        }
    }

    uint c_base = batch * pc.c_batch_stride;
    [[unroll]] for (uint i = 0; i < TM; i++) {
        uint m = row0 + ty * TM + i;
        if (m >= pc.M) break;
        [[unroll]] for (uint j = 0; j < TN; j++) {
            uint n = col0 + tx + j * WG_X;
            if (n >= pc.N) break;
            float v = acc[i * TN + j];
            if ((pc.epilogue & 1u) != 0) v += bias_at(n);
            uint idx = c_base + m * pc.N + n;
            if ((pc.epilogue & 16u) != 0) pre[idx] = v;
            if (TRANS_A == 0 && TRANS_B == 0 && (pc.epilogue & 2u) != 0) {
                float cdf = gelu_cdf(v);
                if ((pc.epilogue & 32u) != 0) pre[idx] = gelu_grad_cdf(v, cdf);
                v *= cdf;
            }
            if ((pc.epilogue & 4u) != 0) v += res1(idx);
            // Bit 3, times the residual (the gelu' that bit 5 kept): the backward through a GELU,
            // fused into the dA product (TRANS_B variants only, see matmul_shuffle.comp).
            if (TRANS_B != 0 && (pc.epilogue & 8u) != 0) v *= res1(idx);
            store_c(idx, v);
        }
    }
}
