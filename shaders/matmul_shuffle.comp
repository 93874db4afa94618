#version 450
// C = A B (+ bias) (then GELU) (+ residual), like matmul.comp, shaped for CPU drivers (lavapipe),
// where every per-invocation memory access is a gather costing several times an 8-wide FMA.
//
// Each subgroup of SG invocations computes RB = SG * ROW_SETS rows by SG * TN * VEC columns of C.
// Per k, invocation l loads A for rows m0 + r * SG + l (ROW_SETS loads) and B for its columns
// (TN loads of VEC floats), then takes every row's A value from its owner with a subgroup
// shuffle (a register move, no memory access): ROW_SETS + TN loads feed SG * ROW_SETS * TN * VEC
// FMAs. (Loading A at one address in every invocation instead measured slower on lavapipe.)
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_shuffle : enable

layout(local_size_x_id = 0) in;                  // a multiple of SG: WG / SG subgroups
layout(constant_id = 1) const uint SG = 8;       // the device's (fixed, full) subgroup size
layout(constant_id = 2) const uint ROW_SETS = 2;
layout(constant_id = 3) const uint TN = 4;
layout(constant_id = 4) const uint EPILOGUE = 0; // bit 0 bias, bit 1 GELU, bit 2 residual

layout(set = 0, binding = 0) readonly buffer A { float a[]; };
#if VEC == 4
// VEC 4 (N a multiple of 4): invocation l owns the 4 adjacent columns of each group of 4 * SG,
// loaded as one vec4.
layout(set = 0, binding = 1) readonly buffer B { vec4 b[]; };
#define BT vec4
#else
layout(set = 0, binding = 1) readonly buffer B { float b[]; };
#define BT float
#endif
layout(set = 0, binding = 2) writeonly buffer C { float c[]; };
layout(set = 0, binding = 3) readonly buffer Bias { float bias[]; };
layout(set = 0, binding = 4) readonly buffer Residual { float residual[]; };

layout(push_constant) uniform Push {
    uint M, N, K;
    uint a_batch_stride, b_batch_stride, c_batch_stride;
    uint tile_m0;
} pc;

#include "erf.glsl"

void main() {
    const uint RB = SG * ROW_SETS, CB = SG * TN * VEC;
    uint lane = gl_SubgroupInvocationID;
    uint batch = gl_WorkGroupID.z;
    // Subgroups of a workgroup take consecutive row blocks.
    uint row0 = ((pc.tile_m0 + gl_WorkGroupID.y) * gl_NumSubgroups + gl_SubgroupID) * RB;
    uint col0 = gl_WorkGroupID.x * CB;
    uint a_base = batch * pc.a_batch_stride, b_base = batch * pc.b_batch_stride;

    uint a_row[ROW_SETS], b_col[TN];
    [[unroll]] for (uint r = 0; r < ROW_SETS; r++) a_row[r] = a_base + min(row0 + r * SG + lane, pc.M - 1) * pc.K;
    // In units of BT: VEC columns each.
    [[unroll]] for (uint j = 0; j < TN; j++) b_col[j] = b_base / VEC + min(col0 / VEC + lane + j * SG, pc.N / VEC - 1);

    BT acc[RB * TN];
    [[unroll]] for (uint i = 0; i < RB * TN; i++) acc[i] = BT(0.0);
    for (uint k = 0; k < pc.K; k++) {
        float av[ROW_SETS];
        BT bv[TN];
        [[unroll]] for (uint r = 0; r < ROW_SETS; r++) av[r] = a[a_row[r] + k];
        [[unroll]] for (uint j = 0; j < TN; j++) bv[j] = b[b_col[j] + k * (pc.N / VEC)];
        [[unroll]] for (uint r = 0; r < ROW_SETS; r++)
            [[unroll]] for (uint i = 0; i < SG; i++) {
                BT x = BT(subgroupShuffle(av[r], i));
                [[unroll]] for (uint j = 0; j < TN; j++) acc[(r * SG + i) * TN + j] = fma(x, bv[j], acc[(r * SG + i) * TN + j]);
            }
    }

    uint c_base = batch * pc.c_batch_stride;
    [[unroll]] for (uint i = 0; i < RB; i++) {
        uint m = row0 + i;
        if (m >= pc.M) break;
        [[unroll]] for (uint j = 0; j < TN; j++) {
            [[unroll]] for (uint e = 0; e < VEC; e++) {
                uint n = col0 + (lane + j * SG) * VEC + e;
                if (n >= pc.N) break;
#if VEC == 4
                float v = acc[i * TN + j][e];
#else
                float v = acc[i * TN + j];
#endif
                if ((EPILOGUE & 1u) != 0) v += bias[n];
                if ((EPILOGUE & 2u) != 0) v = gelu(v);
                uint idx = c_base + m * pc.N + n;
                if ((EPILOGUE & 4u) != 0) v += residual[idx];
                c[idx] = v;
            }
        }
    }
}
