// The matmuls' B (binding 1) and bias (binding 3) in the weights' storage type, read as float:
// b1(i) is element i, b4(i) elements 4i .. 4i + 3, bias_at(n) bias element n.
//
// Specialization constants from W_DTYPE_ID on (9 with the shuffle kernel, 10 with the tile
// kernel): W_DTYPE and BIAS_DTYPE, 0 float32, 1 F16, 2 BF16; W_WORDS, below. The tiers for B:
// - TEXEL (shuffle kernel): B through a uniform texel view; F16's R16_SFLOAT views convert in the
//   fetch, so float32 and F16 share the variant; BF16 (define W_BF16_TEXEL) reads R16_UINT words
//   and widens them (a BF16 is float32's upper half);
// - STORAGE16 variants (storageBuffer16BitAccess) read float16_t / uint16_t storage buffers
//   unless W_WORDS;
// - otherwise 16-bit values as 32-bit words, unpacked here: needs no feature at all.
// A 16-bit bias is read as words (a handful of loads per invocation).

layout(constant_id = W_DTYPE_ID) const uint W_DTYPE = 0;
layout(constant_id = W_DTYPE_ID + 1) const uint BIAS_DTYPE = 0;
layout(constant_id = W_DTYPE_ID + 2) const bool W_WORDS = true; // STORAGE16 variants: B as words

// Element i of 16-bit values of type `dtype` (1 F16, 2 BF16) packed two to a word, as float.
float word_half(uint w, uint i, uint dtype) {
    uint h = (i & 1u) != 0 ? w >> 16 : w & 0xFFFFu;
    return dtype == 1 ? unpackHalf2x16(h).x : uintBitsToFloat(h << 16);
}

#if TEXEL && W_BF16_TEXEL
layout(set = 0, binding = 1) uniform utextureBuffer B; // R16_UINT, or R16G16B16A16_UINT with VEC_B 4
float b1(uint i) { return uintBitsToFloat(texelFetch(B, int(i)).x << 16); }
vec4 b4(uint i) { return uintBitsToFloat(texelFetch(B, int(i)) << 16); }
#elif TEXEL
layout(set = 0, binding = 1) uniform textureBuffer B; // R32 or R16 SFLOAT, or their 4-channel forms
float b1(uint i) { return texelFetch(B, int(i)).x; }
vec4 b4(uint i) { return texelFetch(B, int(i)); }
#else
layout(set = 0, binding = 1) readonly buffer B { float b[]; };
layout(set = 0, binding = 1) readonly buffer BW { uint bw[]; };
#if STORAGE16
layout(set = 0, binding = 1) readonly buffer BH { float16_t bh[]; };
layout(set = 0, binding = 1) readonly buffer BU { uint16_t bu[]; };
float b16(uint i) { return W_DTYPE == 1 ? float(bh[i]) : uintBitsToFloat(uint(bu[i]) << 16); }
#define STORAGE16_READS !W_WORDS
#else
float b16(uint i) { return 0.0; } // never called
#define STORAGE16_READS false
#endif
float b1(uint i) { return W_DTYPE == 0 ? b[i] : STORAGE16_READS ? b16(i) : word_half(bw[i >> 1], i, W_DTYPE); }
vec4 b4(uint i) {
    if (W_DTYPE == 0) return vec4(b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]);
    if (STORAGE16_READS) return vec4(b16(4 * i), b16(4 * i + 1), b16(4 * i + 2), b16(4 * i + 3));
    uint lo = bw[2 * i], hi = bw[2 * i + 1];
    return vec4(word_half(lo, 0, W_DTYPE), word_half(lo, 1, W_DTYPE), word_half(hi, 0, W_DTYPE), word_half(hi, 1, W_DTYPE));
}
#endif

layout(set = 0, binding = 3) readonly buffer Bias { float bias[]; };
layout(set = 0, binding = 3) readonly buffer BiasW { uint bias_w[]; };
float bias_at(uint n) { return BIAS_DTYPE == 0 ? bias[n] : word_half(bias_w[n >> 1], n, BIAS_DTYPE); }
