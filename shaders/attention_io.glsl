// The attention kernels' q, k, v (bindings 0-2, read) and output (3, written) in their storage
// types. IN_DTYPE (q, k and v) and OUT_DTYPE, specialization constants ATTN_IO_ID and
// ATTN_IO_ID + 1: 0 float32, 1 F16, loaded and stored as float16_t in STORAGE16 variants (through
// texel views F16 reads as floats already). q1 / k1 / v1 read one element, store_o writes one.
#extension GL_EXT_shader_16bit_storage : enable

layout(constant_id = ATTN_IO_ID) const uint IN_DTYPE = 0;
layout(constant_id = ATTN_IO_ID + 1) const uint OUT_DTYPE = 0;

#if !TEXEL
layout(set = 0, binding = 0) readonly buffer Q { float q[]; };
layout(set = 0, binding = 1) readonly buffer K { float k[]; };
layout(set = 0, binding = 2) readonly buffer V { float v[]; };
#if STORAGE16
layout(set = 0, binding = 0) readonly buffer QH { float16_t qh[]; };
layout(set = 0, binding = 1) readonly buffer KH { float16_t kh[]; };
layout(set = 0, binding = 2) readonly buffer VH { float16_t vh[]; };
float q1(uint i) { return IN_DTYPE == 1 ? float(qh[i]) : q[i]; }
float k1(uint i) { return IN_DTYPE == 1 ? float(kh[i]) : k[i]; }
float v1(uint i) { return IN_DTYPE == 1 ? float(vh[i]) : v[i]; }
#else
float q1(uint i) { return q[i]; }
float k1(uint i) { return k[i]; }
float v1(uint i) { return v[i]; }
#endif
#endif

layout(set = 0, binding = 3) writeonly buffer O { float o[]; };
#if STORAGE16
layout(set = 0, binding = 3) writeonly buffer OH { float16_t oh[]; };
void store_o(uint i, float x) { if (OUT_DTYPE == 1) oh[i] = float16_t(x); else o[i] = x; }
#else
void store_o(uint i, float x) { o[i] = x; }
#endif
