// Softpick's input x (binding 0), the backward's dy (1) and the output y (1, dx at 2 in the
// backward), elements of type T (float or vec4). LOAD_X / LOAD_DY read, store_y writes.
//
// TEXEL 1 reads x (and dy) as uniform texel buffers (views of T): on lavapipe a vectorized
// gather, where a storage-buffer load is a loop over the lanes. STORAGE16 variants (forward only)
// hold x and y as F16 where X_DTYPE / Y_DTYPE (specialization constants SOFTPICK_IO_ID and + 1)
// are 1: float16_t loads and stores; through texel views an F16 x reads as floats already.
#extension GL_EXT_shader_16bit_storage : enable

layout(constant_id = SOFTPICK_IO_ID) const uint X_DTYPE = 0;
layout(constant_id = SOFTPICK_IO_ID + 1) const uint Y_DTYPE = 0;
#if VEC == 4
#define T16 f16vec4
#else
#define T16 float16_t
#endif

#if TEXEL
layout(set = 0, binding = 0) uniform textureBuffer x;
#if BACKWARD
layout(set = 0, binding = 1) uniform textureBuffer dy;
#endif
#if VEC == 4
#define LOAD_X(i) texelFetch(x, int(i))
#define LOAD_DY(i) texelFetch(dy, int(i))
#else
#define LOAD_X(i) texelFetch(x, int(i)).x
#define LOAD_DY(i) texelFetch(dy, int(i)).x
#endif
#else
layout(set = 0, binding = 0) readonly buffer X { T x[]; };
#if BACKWARD
layout(set = 0, binding = 1) readonly buffer DY { T dy[]; };
#endif
#if STORAGE16
layout(set = 0, binding = 0) readonly buffer XH { T16 xh[]; };
#define LOAD_X(i) (X_DTYPE == 1 ? T(xh[i]) : x[i])
#else
#define LOAD_X(i) x[i]
#endif
#define LOAD_DY(i) dy[i]
#endif
#if !BACKWARD
#undef LOAD_DY
#define LOAD_DY(i) T(0.0) // never read: the forward's branches on BACKWARD are constant
#endif
layout(set = 0, binding = 1 + BACKWARD) writeonly buffer Y { T y[]; }; // dx in the backward
#if STORAGE16
layout(set = 0, binding = 1 + BACKWARD) writeonly buffer YH { T16 yh[]; };
void store_y(uint i, T v) { if (Y_DTYPE == 1) yh[i] = T16(v); else y[i] = v; }
#else
void store_y(uint i, T v) { y[i] = v; }
#endif
