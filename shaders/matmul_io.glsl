// The matmuls' bindings: A (0), B (1) and the bias (3) read, C (2) written, the residual (4)
// read, the pre-activation (5) written (training: float32 only). The including shader defines
// TEXEL, STORAGE16 and MATMUL_SPEC_ID, the first of its specialization constants here:
//   MATMUL_SPEC_ID + 0 .. 2: W_DTYPE, BIAS_DTYPE, W_WORDS (weights.glsl)
//   MATMUL_SPEC_ID + 3 .. 5: A_DTYPE, C_DTYPE, R_DTYPE (the residual's): 0 float32, 1 F16, in
//   STORAGE16 variants (float16_t loads and stores; the stores round as the device's
//   float-to-half conversion does). Through texel views an F16 A reads as floats already.
// a1(i) / a4(i) read A, store_c / store_c4 write C, res1 / res4 read the residual.
#extension GL_EXT_shader_16bit_storage : enable

#define W_DTYPE_ID MATMUL_SPEC_ID
#include "weights.glsl"
layout(constant_id = MATMUL_SPEC_ID + 3) const uint A_DTYPE = 0;
layout(constant_id = MATMUL_SPEC_ID + 4) const uint C_DTYPE = 0;
layout(constant_id = MATMUL_SPEC_ID + 5) const uint R_DTYPE = 0;

#if TEXEL
layout(set = 0, binding = 0) uniform textureBuffer A; // R32 or R16 SFLOAT, R32G32B32A32 / R16G16B16A16 with VEC_A 4
float a1(uint i) { return texelFetch(A, int(i)).x; }
vec4 a4(uint i) { return texelFetch(A, int(i)); }
#else
layout(set = 0, binding = 0) readonly buffer A { float a[]; };
#if STORAGE16
layout(set = 0, binding = 0) readonly buffer AH { float16_t ah[]; };
float a1(uint i) { return A_DTYPE == 1 ? float(ah[i]) : a[i]; }
#else
float a1(uint i) { return a[i]; }
#endif
vec4 a4(uint i) { return vec4(a1(4 * i), a1(4 * i + 1), a1(4 * i + 2), a1(4 * i + 3)); }
#endif

layout(set = 0, binding = 2) writeonly buffer C { float c[]; };
layout(set = 0, binding = 4) readonly buffer Residual { float residual[]; };
layout(set = 0, binding = 5) writeonly buffer Pre { float pre[]; }; // epilogue bit 4: A B + bias
// The same buffers as vec4s: on CPU drivers a storage-buffer access is a loop over the lanes, so
// one vec4 per lane costs a quarter of four floats.
layout(set = 0, binding = 2) writeonly buffer C4 { vec4 c4[]; };
layout(set = 0, binding = 4) readonly buffer Residual4 { vec4 residual4[]; };
layout(set = 0, binding = 5) writeonly buffer Pre4 { vec4 pre4[]; };
#if STORAGE16
layout(set = 0, binding = 2) writeonly buffer CH { float16_t ch[]; };
layout(set = 0, binding = 2) writeonly buffer CH4 { f16vec4 ch4[]; };
layout(set = 0, binding = 4) readonly buffer RH { float16_t rh[]; };
layout(set = 0, binding = 4) readonly buffer RH4 { f16vec4 rh4[]; };
void store_c(uint i, float v) { if (C_DTYPE == 1) ch[i] = float16_t(v); else c[i] = v; }
void store_c4(uint i, vec4 v) { if (C_DTYPE == 1) ch4[i] = f16vec4(v); else c4[i] = v; }
float res1(uint i) { return R_DTYPE == 1 ? float(rh[i]) : residual[i]; }
vec4 res4(uint i) { return R_DTYPE == 1 ? vec4(rh4[i]) : residual4[i]; }
#else
void store_c(uint i, float v) { c[i] = v; }
void store_c4(uint i, vec4 v) { c4[i] = v; }
float res1(uint i) { return residual[i]; }
vec4 res4(uint i) { return residual4[i]; }
#endif
