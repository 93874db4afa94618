/*
 * softpick-vk: softpick ops and the softpick transformer on any Vulkan device.
 *
 *     softpick(x)_i = x_i / (1 + sum_j |x_j|)
 *
 * Step by step
 * ------------
 * 1. Create a context. It loads Vulkan at run time (the library does not link libvulkan), picks a
 *    device and builds its pipelines lazily:
 *
 *        spk_context *ctx;
 *        if (spk_context_create(NULL, &ctx) != SPK_OK) { ... no Vulkan, no device ... }
 *
 * 2. Make tensors (float32 unless created with another spk_dtype, row-major, rank 1..8) and upload
 *    data:
 *
 *        int64_t shape[2] = {4, 1000};
 *        spk_tensor *x;
 *        spk_tensor_create(ctx, 2, shape, &x);
 *        spk_tensor_upload(x, host_data, 4 * 1000);
 *
 * 3. Run ops. Every op is synchronous: it records, submits, waits on a fence and returns.
 *
 *        spk_softpick(ctx, x, -1, x);            // in place, along the last axis
 *        spk_tensor_download(x, host_data, 4 * 1000);
 *
 * 4. Destroy in reverse order (tensors before their context). Destroy functions accept NULL.
 *
 * Errors
 * ------
 * Every fallible call returns an spk_status. Calls on a context also leave a message naming the
 * problem in spk_context_last_error(ctx). Nothing in the library aborts or exits on bad input.
 * On failure, out-parameters are set to NULL and the caller's data is untouched. Out of memory
 * (host or device) is SPK_ERROR_OUT_OF_HOST_MEMORY / SPK_ERROR_OUT_OF_DEVICE_MEMORY and leaves the
 * context usable. After VK_ERROR_DEVICE_LOST every call on that context returns
 * SPK_ERROR_DEVICE_LOST (nothing hangs); destroy its objects and the context, which stays clean.
 *
 * Threads
 * -------
 * - Contexts: distinct contexts are fully independent, each usable from its own thread.
 * - One context may be shared: every call that touches the device (ops, uploads, downloads, tensor
 *   creation and destruction, model forwards, spk_record_*) takes the context's lock, so they may
 *   be made from several threads at once and run one after another. spk_context_last_error() and
 *   spk_context_last_gpu_time_ns() then describe the last call of any thread: give each thread its
 *   own context when they matter.
 * - Tensors: calls on different tensors may run concurrently; ordering two calls that write the
 *   same tensor (or read one another writes) is the caller's.
 * - Models: a model (its buffers and recordings) is used by one thread at a time; lock around it
 *   when sharing. Different models on one context may run in different threads.
 * - Application command buffers (spk_record_*): the caller synchronizes each command buffer and
 *   its pool, as Vulkan requires; recording different command buffers from different threads on
 *   one context works.
 */
#ifndef SOFTPICK_SOFTPICK_H
#define SOFTPICK_SOFTPICK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Vulkan's types, for running on an application's own device (vulkan_core.h, not vulkan.h, so
 * that an application using volk may include this header before or after volk.h). */
#include <vulkan/vulkan_core.h>

#if defined(SPK_STATIC)
#define SPK_API
#elif defined(_WIN32)
#ifdef SPK_BUILDING_LIBRARY
#define SPK_API __declspec(dllexport)
#else
#define SPK_API __declspec(dllimport)
#endif
#else
#define SPK_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define SPK_MAX_RANK 8

/* Status codes. One list generates the enum and spk_status_string(). */
#define SPK_STATUS_LIST(X)                                                                    \
    X(SPK_OK, 0, "success")                                                                   \
    X(SPK_ERROR_INVALID_ARGUMENT, -1, "invalid argument")                                     \
    X(SPK_ERROR_SHAPE, -2, "invalid or mismatched shape")                                     \
    X(SPK_ERROR_NO_VULKAN, -3, "no Vulkan loader (libvulkan) could be loaded")                \
    X(SPK_ERROR_NO_DEVICE, -4, "no suitable Vulkan device")                                   \
    X(SPK_ERROR_UNSUPPORTED, -5, "the device lacks a required feature or limit")              \
    X(SPK_ERROR_OUT_OF_HOST_MEMORY, -6, "out of host memory")                                 \
    X(SPK_ERROR_OUT_OF_DEVICE_MEMORY, -7, "out of device memory")                             \
    X(SPK_ERROR_DEVICE_LOST, -8, "the Vulkan device was lost")                                \
    X(SPK_ERROR_VULKAN, -9, "a Vulkan call failed")                                           \
    X(SPK_ERROR_IO, -10, "file input/output error")                                           \
    X(SPK_ERROR_FORMAT, -11, "malformed or unsupported file")                                 \
    X(SPK_ERROR_TOO_LARGE, -12, "size exceeds a device limit or overflows")

typedef enum spk_status {
#define SPK_STATUS_ENUM_(name, value, text) name = value,
    SPK_STATUS_LIST(SPK_STATUS_ENUM_)
#undef SPK_STATUS_ENUM_
} spk_status;

/* A static, human-readable description of a status; "unknown status" for other values. */
SPK_API const char *spk_status_string(spk_status status);
/* The status's enumerator name ("SPK_ERROR_SHAPE"); "SPK_UNKNOWN_STATUS" for other values. */
SPK_API const char *spk_status_name(spk_status status);

/* ---------------------------------------------------------------------------------------------
 * Devices
 * ------------------------------------------------------------------------------------------- */

typedef enum spk_device_type {
    SPK_DEVICE_OTHER = 0,
    SPK_DEVICE_INTEGRATED_GPU,
    SPK_DEVICE_DISCRETE_GPU,
    SPK_DEVICE_VIRTUAL_GPU,
    SPK_DEVICE_CPU,
} spk_device_type;

typedef struct spk_device_info {
    uint32_t index;                 /* position in the system's device list (spk_list_devices) */
    char name[256];
    char driver[256];               /* driver name and info, when the driver reports them */
    spk_device_type type;
    uint32_t vendor_id;
    uint32_t device_id;
    uint32_t api_version;           /* VK_MAKE_API_VERSION-encoded */
    uint32_t subgroup_size;         /* default subgroup size of compute shaders */
    bool subgroup_arithmetic;       /* subgroup add/reduce supported in compute shaders */
    bool usable;                    /* meets the library's needs (Vulkan 1.1, a compute queue) */
    uint64_t max_storage_buffer_range; /* largest tensor in bytes a single op can bind */
    /* How 16-bit tensors can be read (spk_half_storage): storageBuffer16BitAccess, and R16 SFLOAT
     * (F16) and R16 UINT (BF16) uniform texel buffers; without any, 32-bit words serve. */
    bool storage_16bit;
    bool texel_f16, texel_bf16;
} spk_device_info;

/* Human-readable type name: "discrete GPU", "CPU", ... */
SPK_API const char *spk_device_type_string(spk_device_type type);

/* Lists the Vulkan devices visible through the system's loader. Writes up to `capacity` entries
 * to `infos` (which may be NULL when capacity is 0) and the total number to `*count`.
 * Returns SPK_ERROR_NO_VULKAN when no loader can be loaded. */
SPK_API spk_status spk_list_devices(spk_device_info *infos, uint32_t capacity, uint32_t *count);

/* ---------------------------------------------------------------------------------------------
 * Context
 * ------------------------------------------------------------------------------------------- */

typedef struct spk_context spk_context;

typedef enum spk_log_level {
    SPK_LOG_ERROR = 0,
    SPK_LOG_WARNING,
    SPK_LOG_INFO,
} spk_log_level;

/* Receives the library's warnings (e.g. an ignored pipeline cache file), with validation on the
 * validation layer's messages, and with SOFTPICK_LOG_PIPELINES=1 in the environment one INFO
 * message per pipeline built, with its build time. May be called from any thread that uses the
 * context. The default (NULL) prints them all to stderr. */
typedef void (*spk_log_fn)(spk_log_level level, const char *message, void *user_data);

/* Which workgroup reduction the kernels use. AUTO picks subgroup arithmetic where the device
 * supports it; the others force one path (for testing and for working around drivers). Forcing
 * SUBGROUP on a device without subgroup arithmetic fails at context creation. */
typedef enum spk_reduction {
    SPK_REDUCTION_AUTO = 0,
    SPK_REDUCTION_SUBGROUP,
    SPK_REDUCTION_SHARED_MEMORY,
} spk_reduction;

/* How kernels read 16-bit tensors (spk_dtype F16 and BF16) from storage buffers. Arithmetic is
 * float32 in every case; where a kernel reads through uniform texel views (CPU drivers) and the
 * device's R16 formats allow it, the fetch converts instead, whatever this says. */
typedef enum spk_half_storage {
    SPK_HALF_STORAGE_AUTO = 0, /* 16BIT where the device has storageBuffer16BitAccess, else WORDS */
    SPK_HALF_STORAGE_16BIT,    /* float16_t / uint16_t storage buffers: SPK_ERROR_UNSUPPORTED without
                                  storageBuffer16BitAccess */
    SPK_HALF_STORAGE_WORDS,    /* 32-bit words unpacked in the shader: any device */
} spk_half_storage;

/* Options for spk_context_create. Zero-initialize and set only what you need. */
typedef struct spk_context_desc {
    /* Device: a decimal index into spk_list_devices' list, or a case-insensitive substring of the
     * device name. NULL (default): the SOFTPICK_DEVICE environment variable if set, else the first
     * discrete GPU, else integrated, else virtual, else any other, else a CPU driver. */
    const char *device;
    /* Pipeline cache file, loaded at creation and saved at destruction. NULL (default): the
     * SOFTPICK_PIPELINE_CACHE environment variable if set, else no file. A file written for
     * another device or driver, or damaged, is ignored with a warning. */
    const char *pipeline_cache_path;
    /* Enables the Khronos validation layer with synchronization validation (default off; the
     * environment variable SOFTPICK_VALIDATION=1 also enables it). Messages go to `log`. */
    bool validation;
    spk_reduction reduction; /* default SPK_REDUCTION_AUTO */
    spk_half_storage half_storage; /* default SPK_HALF_STORAGE_AUTO */
    spk_log_fn log;          /* default NULL: messages are printed to stderr */
    void *log_user_data;
    /* Tuning file (spk_tune): the kernel choices measured on this device, used before the rules.
     * NULL (default): SOFTPICK_TUNING if set, else $XDG_CACHE_HOME/softpick/ (~/.cache/softpick/)
     * tuning-VENDOR-DEVICE.txt; "": none. A file for another device, driver, library version or
     * candidate set, or a damaged one, is ignored with a warning. */
    const char *tuning_path;
} spk_context_desc;

/* Creates a context on one Vulkan device. `desc` may be NULL for all defaults. On failure
 * `*out` is NULL and the status says why (SPK_ERROR_NO_VULKAN, SPK_ERROR_NO_DEVICE, ...); the
 * message is passed to desc->log (or stderr) since there is no context to hold it. */
SPK_API spk_status spk_context_create(const spk_context_desc *desc, spk_context **out);

/* Waits for the device to be idle, saves the pipeline cache if configured, and frees everything.
 * All tensors of the context must have been destroyed first. Accepts NULL. */
SPK_API void spk_context_destroy(spk_context *ctx);

/* The message of the last failed call on this context ("" if none). Valid until the next call. */
SPK_API const char *spk_context_last_error(const spk_context *ctx);

/* Describes the context's device. */
SPK_API spk_status spk_context_device_info(const spk_context *ctx, spk_device_info *out);

/* GPU time in nanoseconds of the last synchronous op on this context, measured with timestamp
 * queries around its dispatches; 0 when the device has no timestamp support. */
SPK_API uint64_t spk_context_last_gpu_time_ns(const spk_context *ctx);

/* ---------------------------------------------------------------------------------------------
 * Storage types. Arithmetic is always float32; a tensor may store its elements in 16 bits.
 * ------------------------------------------------------------------------------------------- */

typedef enum spk_dtype {
    SPK_DTYPE_F32 = 0,  /* IEEE binary32 */
    SPK_DTYPE_F16 = 1,  /* IEEE binary16: 11 significant bits, finite up to 65504 */
    SPK_DTYPE_BF16 = 2, /* bfloat16: float32's upper 16 bits, 8 significant bits, float32's range */
} spk_dtype;

/* Bytes per element (4 or 2); 0 for a value outside the enum. */
SPK_API size_t spk_dtype_size(spk_dtype dtype);
/* "f32", "f16", "bf16"; "unknown dtype" for other values. */
SPK_API const char *spk_dtype_name(spk_dtype dtype);
/* The dtype named "f32", "f16" or "bf16"; SPK_ERROR_INVALID_ARGUMENT for any other name. */
SPK_API spk_status spk_dtype_from_name(const char *name, spk_dtype *out);
/* Converts `count` elements on the host. Narrowing rounds to nearest, ties to even; NaN stays NaN
 * (quiet, sign kept), infinities and signed zeros are kept, finite values beyond the target's
 * range become infinities, and F16 subnormals are produced and read exactly. src and dst must not
 * overlap unless from == to. */
SPK_API spk_status spk_convert(const void *src, spk_dtype from, void *dst, spk_dtype to, size_t count);

/* ---------------------------------------------------------------------------------------------
 * Tensors: row-major, rank 1..SPK_MAX_RANK, in device memory owned by the context; float32
 * unless created with another spk_dtype.
 * ------------------------------------------------------------------------------------------- */

typedef struct spk_tensor spk_tensor;

/* Creates an uninitialized tensor. Dimensions must be >= 0 (a zero dimension gives an empty
 * tensor). Tensors larger than the device's maxStorageBufferRange are refused with
 * SPK_ERROR_TOO_LARGE. Memory is sub-allocated from large blocks. */
SPK_API spk_status spk_tensor_create(spk_context *ctx, int ndim, const int64_t *shape,
                                     spk_tensor **out);
/* As spk_tensor_create, storing `dtype`. Uploads and downloads still take floats and convert
 * (as spk_convert); spk_tensor_upload_raw moves the stored bytes as they are. Ops say which of
 * their tensors may be 16-bit; any other refuses one with SPK_ERROR_UNSUPPORTED. */
SPK_API spk_status spk_tensor_create_typed(spk_context *ctx, spk_dtype dtype, int ndim, const int64_t *shape,
                                           spk_tensor **out);
/* Frees the tensor's memory. Accepts NULL. */
SPK_API void spk_tensor_destroy(spk_tensor *tensor);

SPK_API int spk_tensor_ndim(const spk_tensor *tensor);
/* Pointer to ndim dimensions, valid for the tensor's lifetime. */
SPK_API const int64_t *spk_tensor_shape(const spk_tensor *tensor);
SPK_API int64_t spk_tensor_count(const spk_tensor *tensor);
SPK_API spk_dtype spk_tensor_dtype(const spk_tensor *tensor);

/* Copies `count` floats (which must equal the tensor's element count) between host and device,
 * converting to and from the tensor's dtype. */
SPK_API spk_status spk_tensor_upload(spk_tensor *tensor, const float *data, int64_t count);
SPK_API spk_status spk_tensor_download(const spk_tensor *tensor, float *data, int64_t count);
/* Copies the tensor's elements in its own dtype: `bytes` must be count * spk_dtype_size(dtype)
 * (F16 and BF16 as little-endian 16-bit words, as safetensors stores them). */
SPK_API spk_status spk_tensor_upload_raw(spk_tensor *tensor, const void *data, size_t bytes);
SPK_API spk_status spk_tensor_download_raw(const spk_tensor *tensor, void *data, size_t bytes);

/* ---------------------------------------------------------------------------------------------
 * Ops
 *
 * 16-bit tensors: where an op below says it takes F16 (or BF16), its arithmetic stays float32 and
 * its bound holds against a float64 evaluation on the values as stored; an F16 output adds its
 * own rounding (at most 2^-11 relative), so its bound becomes 1e-3 of the output's largest
 * magnitude. F16 activations need storageBuffer16BitAccess (SPK_ERROR_UNSUPPORTED naming it
 * otherwise). Ops that do not mention 16 bits take float32 only.
 * ------------------------------------------------------------------------------------------- */

/* y = softpick(x) along `axis` (negative counts from the end, -1 is the last axis). `y` must have
 * x's shape; y == x computes in place. Empty tensors are valid and do nothing. NaN and infinities
 * follow the float32 formula (a NaN makes its row NaN). Accuracy: within 1e-5 relative to a
 * float64 evaluation for rows of up to 2^20 elements. x and y may each be F32 or F16. */
SPK_API spk_status spk_softpick(spk_context *ctx, const spk_tensor *x, int axis, spk_tensor *y);
/* The backward of spk_softpick: given the forward's input x and dy (x's shape), writes
 *     dx_k = (dy_k - sgn(x_k) sum_i dy_i y_i) / (1 + S),   S = sum_j |x_j|,  y = softpick(x),
 * along `axis` (sgn(0) = 0), with the forward's reductions (rows, strided columns, compensated
 * sums). dx must not overlap x or dy. Relative error within 1e-5 of float64 per row. */
SPK_API spk_status spk_softpick_backward(spk_context *ctx, const spk_tensor *x, const spk_tensor *dy, int axis,
                                         spk_tensor *dx);

/* Activation applied in a matmul's epilogue. */
typedef enum spk_activation {
    SPK_ACTIVATION_NONE = 0,
    SPK_ACTIVATION_GELU, /* exact: 0.5 x (1 + erf(x / sqrt 2)) */
} spk_activation;

/* Epilogue of spk_matmul, fused into the same dispatch. Zero-initialized: plain C = A B. */
typedef struct spk_matmul_desc {
    const spk_tensor *bias;     /* [N], added to every row; NULL: none */
    spk_activation activation;  /* applied after the bias; default none */
    const spk_tensor *residual; /* C's shape, added last (may be C itself); NULL: none */
    /* C's shape: A B + bias before the activation, stored by the same dispatch (what training
     * keeps for spk_matmul_backward through GELU); NULL (default): not stored. */
    spk_tensor *pre_activation;
} spk_matmul_desc;

/* C = activation(A B + bias) + residual, computed in float32.
 * A is [..., M, K] (leading dimensions are batches); B is [K, N] (shared by every batch, the
 * layout of Axon's dense kernels, used as stored) or [..., K, N] with A's batch dimensions; C is
 * [..., M, N]. C must not overlap A, B or the bias. `desc` may be NULL. Any M, N, K >= 0 works
 * (K == 0 gives the epilogue of zeros).
 * B and the bias (the weights) may each be F16 or BF16, and A, C and the residual F16 (the
 * activations). Products and sums stay float32, so the result is within the float32 bound of a
 * float64 evaluation on the 16-bit values as stored (relative 1e-5 of max |C| for K up to 4097;
 * 1e-3 with an F16 C). */
SPK_API spk_status spk_matmul(spk_context *ctx, const spk_tensor *a, const spk_tensor *b,
                              const spk_matmul_desc *desc, spk_tensor *c);

/* Gradients spk_matmul_backward writes. Zero-initialized: none. */
typedef struct spk_matmul_grads {
    spk_tensor *da;    /* A's shape: dZ B^T; NULL: not computed */
    spk_tensor *db;    /* B's shape: A^T dZ, summed over A's batches when B is shared [K, N] */
    spk_tensor *dbias; /* [N]: the column sums of dZ over every row */
    bool accumulate;   /* add to what da, db and dbias hold (PyTorch's .grad) instead of overwriting */
} spk_matmul_grads;

/* The backward of spk_matmul: given dC (C's shape), writes the gradients `grads` asks for, with
 * dZ = dC, or dC * gelu'(pre) when desc->activation is GELU (desc->pre_activation must then hold
 * the forward's A B + bias). `desc` is the forward's (NULL: no epilogue); the residual's gradient
 * is dC itself, so nothing is computed for it. The kernels read A and B transposed where they lie
 * (no transposed copy). Outputs must not overlap the inputs or each other. Relative error within
 * 1e-5 of float64 (tested for K, M, N up to 4097). */
SPK_API spk_status spk_matmul_backward(spk_context *ctx, const spk_tensor *a, const spk_tensor *b,
                                       const spk_matmul_desc *desc, const spk_tensor *dc,
                                       const spk_matmul_grads *grads);

/* Options of spk_layer_norm. Zero-initialized: the defaults. */
typedef struct spk_layer_norm_desc {
    float epsilon; /* added to the variance; 0 means the default 1e-5; must be >= 0 */
    /* x's shape with 2 as the last dimension: each row's mean and 1/sqrt(var + epsilon), written
     * by the same dispatch (what training keeps for spk_layer_norm_backward); NULL (default): not
     * stored. */
    spk_tensor *stats;
} spk_layer_norm_desc;

/* y = (x - mean) / sqrt(var + epsilon) * gamma + beta over the last axis of x (biased variance),
 * with gamma and beta of shape [last dimension]. y has x's shape; y == x works in place. The mean
 * and variance are computed in two compensated passes, so rows with a large mean stay accurate.
 * x and y may each be F32 or F16; gamma and beta are float32. */
SPK_API spk_status spk_layer_norm(spk_context *ctx, const spk_tensor *x, const spk_tensor *gamma,
                                  const spk_tensor *beta, const spk_layer_norm_desc *desc,
                                  spk_tensor *y);

/* Gradients spk_layer_norm_backward writes. Zero-initialized: none. */
typedef struct spk_layer_norm_grads {
    spk_tensor *dx;     /* x's shape; may be dy itself when not accumulating; NULL: not computed */
    spk_tensor *dgamma; /* [n]: sum over rows of dy * xhat, xhat = (x - mean) * rstd */
    spk_tensor *dbeta;  /* [n]: sum over rows of dy */
    bool accumulate;    /* add to what the tensors hold instead of overwriting */
} spk_layer_norm_grads;

/* The backward of spk_layer_norm, from the forward's input x, gamma and the stats it kept
 * (desc->stats): dx = rstd (g - mean(g) - xhat mean(g xhat)) with g = dy gamma, per row; dgamma
 * and dbeta as above, summed in a fixed order (the same bits on every run). Relative error within
 * 1e-5 of float64 (tested for rows of 1 to 4097). */
SPK_API spk_status spk_layer_norm_backward(spk_context *ctx, const spk_tensor *x, const spk_tensor *gamma,
                                           const spk_tensor *stats, const spk_tensor *dy,
                                           const spk_layer_norm_grads *grads);

/* y = GELU(x) elementwise, the exact erf form; y == x works in place. */
SPK_API spk_status spk_gelu(spk_context *ctx, const spk_tensor *x, spk_tensor *y);
/* The backward of spk_gelu: dx = dy * gelu'(x), gelu'(x) = Phi(x) + x phi(x) (the standard normal
 * distribution and density). dx may be dy (in place). */
SPK_API spk_status spk_gelu_backward(spk_context *ctx, const spk_tensor *x, const spk_tensor *dy, spk_tensor *dx);

/* How attention normalizes a query's row of scores s_j over the keys it may see (masked keys
 * take no part, not even in the maximum), m = max_j s_j:
 * - SPK_NORMALIZER_SOFTPICK (default): the seed's s_j / (1 + sum_j |s_j|) (SPEC.md section 1);
 * - SPK_NORMALIZER_RECTIFIED_SOFTPICK: the published softpick (Zuhri et al. 2025), in its
 *   numerically safe form with its epsilon: ReLU(e^(s_j - m) - e^-m) / (sum_j |e^(s_j - m) - e^-m|
 *   + 1e-6), correct for scores of either sign and any size (computed with max(m, 0) in place of
 *   m, which gives the same result and never overflows);
 * - SPK_NORMALIZER_SOFTMAX: e^(s_j - m) / sum_j e^(s_j - m).
 * The exponential forms run flash style with a running maximum (FlashAttention-2). */
typedef enum spk_normalizer {
    SPK_NORMALIZER_SOFTPICK = 0,
    SPK_NORMALIZER_RECTIFIED_SOFTPICK,
    SPK_NORMALIZER_SOFTMAX,
} spk_normalizer;

/* "softpick", "rectified-softpick", "softmax" (NULL for a value outside the enum). */
SPK_API const char *spk_normalizer_name(spk_normalizer normalizer);
/* The normalizer of that name; SPK_ERROR_INVALID_ARGUMENT for any other name. */
SPK_API spk_status spk_normalizer_parse(const char *name, spk_normalizer *out);

/* spk_softpick and spk_softpick_backward with any normalizer: along `axis`, with m the largest
 * element, rectified softpick ReLU(e^(x-m) - e^-m) / (sum |e^(x-m) - e^-m| + 1e-6) or softmax
 * e^(x-m) / sum e^(x-m); -inf elements are masked (weight 0, no part of any sum, as the paper's
 * reference does). A pass finds each row's (or column's) maximum first. The backward holds m
 * constant (exact for softmax). Shapes, dtypes and rules as spk_softpick's. */
SPK_API spk_status spk_normalize(spk_context *ctx, const spk_tensor *x, int axis, spk_normalizer normalizer,
                                 spk_tensor *y);
SPK_API spk_status spk_normalize_backward(spk_context *ctx, const spk_tensor *x, const spk_tensor *dy, int axis,
                                          spk_normalizer normalizer, spk_tensor *dx);

/* Attention's options: heads (required), the causal mask, the normalizer (0: softpick). */
typedef struct spk_attention_desc {
    int num_heads;
    bool causal;
    spk_normalizer normalizer;
} spk_attention_desc;

/* Multi-head attention, fused in one kernel: q, k, v and out are [batch, seq, hidden], hidden =
 * num_heads * head_dim (head h is columns h*head_dim .. (h+1)*head_dim-1), head_dim at most 256.
 * Per head, s = q k^T / sqrt(head_dim); with `causal`, later keys take no part; w = the
 * normalizer of s over keys; out = w v. The [seq, seq] scores are never stored: memory is
 * O(seq * hidden). out must not overlap q, k or v. q, k and v may be F16 (all three alike), and
 * so may out. */
SPK_API spk_status spk_attention(spk_context *ctx, const spk_attention_desc *desc, const spk_tensor *q,
                                 const spk_tensor *k, const spk_tensor *v, spk_tensor *out);
/* As spk_attention, and also keeps what the backward needs: r [batch, num_heads, seq], each
 * head's and query's row statistic (softpick: r_i = 1 + sum_j |s_ij|; the exponential forms: the
 * log of the normalizing sum), written by the same fused kernel. */
SPK_API spk_status spk_attention_train(spk_context *ctx, const spk_attention_desc *desc, const spk_tensor *q,
                                       const spk_tensor *k, const spk_tensor *v, spk_tensor *out, spk_tensor *r);

/* spk_attention and spk_attention_train with the softpick normalizer (the seed's API). */
SPK_API spk_status spk_softpick_attention(spk_context *ctx, const spk_tensor *q, const spk_tensor *k,
                                          const spk_tensor *v, int num_heads, bool causal,
                                          spk_tensor *out);

SPK_API spk_status spk_softpick_attention_train(spk_context *ctx, const spk_tensor *q, const spk_tensor *k,
                                                const spk_tensor *v, int num_heads, bool causal, spk_tensor *out,
                                                spk_tensor *r);

/* Gradients spk_attention_backward writes, each [batch, seq, hidden] (all required). */
typedef struct spk_attention_grads {
    spk_tensor *dq, *dk, *dv;
} spk_attention_grads;

/* The backward of attention, flash style: from the forward's q, k, v, its output `out` and r
 * (spk_attention_train with the same desc) and the output's gradient dout, with
 *     D_i = dO_i . O_i,  dS_ij = mask_ij dscore_ij,  dQ = dS K / sqrt(d),  dK = dS^T Q / sqrt(d),
 *     dV = P^T dO,
 * P the forward's weights, recomputed from r; softpick: dscore_ij = (dO_i . v_j - sgn(s_ij) D_i)
 * / r_i; softmax: P_ij (dO_i . v_j - D_i); rectified softpick: e^(s_ij - lse_i) (1[s_ij > 0]
 * dO_i . v_j - sgn(s_ij) D_i), holding the maximum constant as the paper's kernel does,
 * scores recomputed per block (never a [seq, seq] tensor), in two passes (dQ, then dK and dV)
 * that each write only their own rows: the same inputs give the same bits on every run. Needs
 * O(batch * heads * seq) scratch for D. The gradients must not overlap the inputs or each other. */
SPK_API spk_status spk_attention_backward(spk_context *ctx, const spk_attention_desc *desc, const spk_tensor *q,
                                          const spk_tensor *k, const spk_tensor *v, const spk_tensor *out,
                                          const spk_tensor *r, const spk_tensor *dout,
                                          const spk_attention_grads *grads);
/* spk_attention_backward with the softpick normalizer. */
SPK_API spk_status spk_softpick_attention_backward(spk_context *ctx, const spk_tensor *q, const spk_tensor *k,
                                                   const spk_tensor *v, const spk_tensor *out, const spk_tensor *r,
                                                   const spk_tensor *dout, int num_heads, bool causal,
                                                   const spk_attention_grads *grads);

/* Losses (SPEC.md section 6). */
typedef enum spk_loss_kind {
    SPK_LOSS_MSE = 0,       /* mean over every element of (y - t)^2; t has y's shape */
    SPK_LOSS_CROSS_ENTROPY, /* mean over rows of -log_softmax(y_row)[t_row]; t holds class indices */
} spk_loss_kind;

/* Computes the loss of y ([..., n]) against `target` into loss ([1]) on the device, and dL/dy
 * into dy (y's shape) unless dy is NULL. For cross-entropy `target` has y's shape without its
 * last axis and holds class indices as floats (exact below 2^24); an index outside [0, n) or not
 * an integer makes the loss and that row's gradient NaN (the model's training calls check the
 * targets on the host and refuse them instead). log_softmax is shifted by each row's maximum,
 * so large logits stay finite. Rows are summed in a fixed order: the same bits every run. */
SPK_API spk_status spk_loss(spk_context *ctx, spk_loss_kind kind, const spk_tensor *y, const spk_tensor *target,
                            spk_tensor *loss, spk_tensor *dy);

/* ---------------------------------------------------------------------------------------------
 * The softpick transformer (SPEC.md section 2): pre-norm blocks of causal softpick attention
 * and a GELU feed-forward, a final layer norm, the last position (or all, or the mean) out.
 * ------------------------------------------------------------------------------------------- */

typedef enum spk_output_mode {
    SPK_OUTPUT_LAST = 0, /* [batch, hidden]: position seq_len - 1 (default) */
    SPK_OUTPUT_ALL,      /* [batch, seq_len, hidden] */
    SPK_OUTPUT_MEAN,     /* [batch, hidden]: the mean over positions of the final-normed sequence */
} spk_output_mode;

typedef struct spk_model_config {
    int embed_dim;   /* input features; required (> 0) */
    int hidden_size; /* default 256; a multiple of num_heads, head size at most 256 */
    int num_heads;   /* default 4 */
    int num_layers;  /* default 6 */
    float dropout;   /* default 0.1: the training steps' rate (spk_model_set_dropout); never at inference */
    int window_size; /* default 60: the sequence length buffers and recordings are made for */
    spk_output_mode output_mode; /* default SPK_OUTPUT_LAST */
    /* default 0: no output head. > 0: the output is dense(output, "output_head"), num_outputs
     * wide (SPEC.md section 6): [batch, num_outputs], or [batch, seq_len, num_outputs] in mode all */
    int num_outputs;
    /* default SPK_DTYPE_F32. F16 or BF16: the dense kernels (the 2-D weights, almost all of the
     * bytes) are stored in 16 bits and read by the matmuls with float32 arithmetic; biases and the
     * norms' gamma and beta stay float32, as ggml keeps its 1-D tensors. Inference only: training
     * keeps float32 weights (train in f32, then load the file with a 16-bit weights_dtype). */
    spk_dtype weights_dtype;
    /* default SPK_DTYPE_F32. F16: the activations between kernels (the residual stream, the norms'
     * outputs, q/k/v, attention and feed-forward outputs) are stored in 16 bits, halving their
     * memory and traffic; every kernel still computes in float32, and the input and output stay
     * float32. Needs storageBuffer16BitAccess (SPK_ERROR_UNSUPPORTED naming it otherwise).
     * Inference only, as weights_dtype. */
    spk_dtype activation_dtype;
    /* default SPK_NORMALIZER_SOFTPICK: how attention normalizes its scores (spk_normalizer); the
     * weights file's metadata key "attention" ("softpick", "rectified-softpick", "softmax") */
    spk_normalizer attention;
} spk_model_config;

/* The defaults above for this embed_dim. */
SPK_API spk_model_config spk_model_config_default(int embed_dim);
/* The size of each output vector: num_outputs with an output head, else hidden_size. */
SPK_API int spk_model_output_size(const spk_model_config *config);
/* SPK_OK, or SPK_ERROR_INVALID_ARGUMENT with the reason in `error`: sizes <= 0, hidden_size not
 * divisible by num_heads, a dropout outside [0, 1), an unknown output mode, num_outputs < 0. */
SPK_API spk_status spk_model_config_check(const spk_model_config *config, char *error, size_t error_size);

typedef struct spk_model spk_model;

/* Creates a model with the given configuration: parameters are allocated (uninitialized: call
 * spk_model_init_random or spk_model_load_safetensors) and activation buffers are sized for one
 * sequence of window_size. */
SPK_API spk_status spk_model_create(spk_context *ctx, const spk_model_config *config, spk_model **out);
/* Frees the model's parameters, buffers and recordings. Accepts NULL. */
SPK_API void spk_model_destroy(spk_model *model);
SPK_API const spk_model_config *spk_model_get_config(const spk_model *model);

/* Device memory a model holds, in bytes (tensor sizes, not the allocator's blocks). */
typedef struct spk_model_memory_info {
    uint64_t weights;     /* the parameters: half of float32's for the kernels with 16-bit weights */
    uint64_t activations; /* the forward's buffers, for the largest batch * seq_len run so far */
    uint64_t training;    /* gradients, optimizer moments and what the training forward keeps; 0
                             before the first training call */
} spk_model_memory_info;
SPK_API spk_status spk_model_memory(const spk_model *model, spk_model_memory_info *out);
/* Sets the output mode of later forwards. */
SPK_API spk_status spk_model_set_output_mode(spk_model *model, spk_output_mode mode);

/* Glorot-uniform kernels, zero biases, gamma 1, beta 0; the same seed gives the same weights. */
SPK_API spk_status spk_model_init_random(spk_model *model, uint64_t seed);
/* Loads every parameter from a safetensors file (F32, F16 or BF16, converted to the model's
 * storage types; a file that stores them is uploaded as it is), named as in
 * SPEC.md section 3 ("softpick_block_1_attn_q_proj.kernel", ...). A missing or extra tensor, a
 * wrong shape, a malformed or truncated file is SPK_ERROR_FORMAT (SPK_ERROR_IO if unreadable)
 * with the tensor named; the model's previous parameters are then unchanged. */
SPK_API spk_status spk_model_load_safetensors(spk_model *model, const char *path);
/* Creates a model whose configuration comes from the file's __metadata__ (embed_dim,
 * hidden_size, num_heads, num_layers, window_size, dropout; absent sizes are inferred from the
 * tensor shapes, or take the defaults), with any nonzero field of `overrides` taking precedence
 * (overrides->output_mode is always used; NULL: no overrides), and loads its parameters. */
SPK_API spk_status spk_model_create_from_safetensors(spk_context *ctx, const char *path,
                                                     const spk_model_config *overrides,
                                                     spk_model **out);

/* The output's shape for a forward of this batch and sequence length in the model's output mode:
 * writes ndim (2 or 3) and the shape, returns the element count (0 if an argument is bad). */
SPK_API int64_t spk_model_output_shape(const spk_model *model, int64_t batch, int64_t seq_len,
                                       int *ndim, int64_t shape[3]);
/* Runs the model on host data: `input` is [batch, seq_len, embed_dim] floats, `output` receives
 * spk_model_output_shape's element count. The whole pass is one command buffer, submitted once;
 * it is recorded on first use of each (batch, seq_len) and replayed after that (the most recent
 * few are kept). Buffers grow when batch * seq_len exceeds what was allocated. Dropout is never
 * applied. */
SPK_API spk_status spk_model_forward(spk_model *model, const float *input, int64_t batch, int64_t seq_len,
                                     float *output);
/* As spk_model_forward on device tensors: input [batch, seq_len, embed_dim], output of
 * spk_model_output_shape's shape. Recorded on every call (the input and output are the caller's). */
SPK_API spk_status spk_model_forward_tensors(spk_model *model, const spk_tensor *input, spk_tensor *output);

/* The softpick paper's measurements of attention and hidden states (Zuhri et al. 2025,
 * measure_metrics.py) over one forward, on the device: each attention row is recomputed from the
 * layer's q and k (no [seq, seq] tensor is held) and reduced to a few numbers per row. */
typedef struct spk_head_analysis {
    double sink_rate;        /* share of samples whose mean weight on the first key, over queries, exceeds 0.3 */
    double sparsity;         /* share of exact zeros among the causal weights (the lower triangle, diagonal included) */
    double row_abs_sum;      /* mean over queries of sum_j |w_j| */
    double first_key_weight; /* mean weight on the first key, over samples and queries */
} spk_head_analysis;
typedef struct spk_layer_analysis {
    double kurtosis; /* mu4 / mu2^2 (not excess: 3 for a Gaussian) of the block's output, every value */
    double max_abs;  /* its largest |value| */
} spk_layer_analysis;
/* Runs the model on `input` ([batch, seq_len, embed_dim] floats, as spk_model_forward) and fills
 * heads[layer * num_heads + head] and layers[layer]. */
SPK_API spk_status spk_model_analyze(spk_model *model, const float *input, int64_t batch, int64_t seq_len,
                                     spk_head_analysis *heads, spk_layer_analysis *layers);

/* ---------------------------------------------------------------------------------------------
 * Training (SPEC.md section 6). Each parameter has a gradient of its shape, accumulated over
 * calls until spk_model_zero_grad (as PyTorch's .grad). Training state (gradients, the kept
 * activations: about (16 hidden + 4 + heads) floats per position per layer) is made on first use.
 * ------------------------------------------------------------------------------------------- */

/* Zeroes every gradient. */
SPK_API spk_status spk_model_zero_grad(spk_model *model);
/* The forward on `input` [batch, seq_len, embed_dim] keeping its activations, the loss against
 * `target` (mse: the output's shape; cross-entropy: one class index per output row, as floats,
 * checked: an index outside [0, outputs) or not an integer is SPK_ERROR_INVALID_ARGUMENT), and the
 * backward, adding dL/dparameter to every gradient: one command buffer, one submit. Dropout is
 * off. Writes the loss to *loss_out unless NULL. */
SPK_API spk_status spk_model_grad(spk_model *model, const float *input, int64_t batch, int64_t seq_len,
                                  spk_loss_kind loss, const float *target, float *loss_out);
/* Your own head and loss: the training forward alone (dropout off, as spk_model_grad) writes the
 * output (spk_model_output_shape's elements) and keeps what the backward needs; spk_model_backward
 * then takes dL/d(output) (the same count of floats) and adds dL/dparameter to every gradient.
 * The backward goes back through the last spk_model_forward_train: any other forward, grad or
 * training step of the model in between makes it SPK_ERROR_INVALID_ARGUMENT. One submit each. */
SPK_API spk_status spk_model_forward_train(spk_model *model, const float *input, int64_t batch, int64_t seq_len,
                                           float *output);
SPK_API spk_status spk_model_backward(spk_model *model, const float *dy);
/* The same on device tensors (input [batch, seq_len, embed_dim]; dy of the output's shape). The
 * backward reads the forward's input tensor again: keep it alive and unchanged until then. */
SPK_API spk_status spk_model_forward_train_tensors(spk_model *model, const spk_tensor *input, spk_tensor *output);
SPK_API spk_status spk_model_backward_tensors(spk_model *model, const spk_tensor *dy);
/* Copies the gradient of the parameter `name` (SPEC.md section 3 names, e.g.
 * "softpick_block_1_attn_q_proj.kernel") into out, which holds `count` floats (its element count). */
SPK_API spk_status spk_model_get_gradient(spk_model *model, const char *name, float *out, int64_t count);

typedef enum spk_optimizer_kind {
    SPK_OPTIMIZER_ADAMW = 0, /* torch.optim.AdamW: decoupled weight decay on every parameter */
    SPK_OPTIMIZER_SGD,       /* torch.optim.SGD without momentum: weight decay added to the gradient */
} spk_optimizer_kind;

/* An optimizer step's settings, used as given: start from spk_optimizer_defaults. */
typedef struct spk_optimizer_desc {
    spk_optimizer_kind kind;
    float lr;           /* > 0; default 1e-3 */
    float beta1, beta2; /* AdamW: in [0, 1); default 0.9, 0.999 */
    float eps;          /* AdamW: > 0; default 1e-8 */
    float weight_decay; /* >= 0; default 0.01 for AdamW, 0 for SGD */
    float clip_norm;    /* > 0: scale the gradients so that their global L2 norm is at most this
                         * (torch.nn.utils.clip_grad_norm_; the gradient tensors keep their values);
                         * default 0: off */
} spk_optimizer_desc;

/* PyTorch's defaults for this optimizer (SPEC.md section 6). */
SPK_API spk_optimizer_desc spk_optimizer_defaults(spk_optimizer_kind kind);
/* One optimizer step over every parameter from the current gradients, on the device (the step
 * count lives there too; the first step makes AdamW's moments, zeroed). One submit. */
SPK_API spk_status spk_model_step(spk_model *model, const spk_optimizer_desc *opt);
/* A whole training step in one command buffer, one submit: zero the gradients, spk_model_grad's
 * forward, loss and backward, and spk_model_step. The command buffer is recorded on the first
 * step of a (batch, seq_len, output mode, loss, optimizer settings, dropout) and replayed by the
 * steps after (the step count, and with it dropout's masks, advance on the device). Reads the
 * loss (before the update) back only when loss_out is not NULL. */
SPK_API spk_status spk_model_train_step(spk_model *model, const float *input, int64_t batch, int64_t seq_len,
                                        spk_loss_kind loss, const float *target, const spk_optimizer_desc *opt,
                                        float *loss_out);
/* Checkpoints (SPEC.md sections 3 and 6), each written through a temporary file renamed into
 * place (no partial file on failure) with the configuration in __metadata__:
 * the weights (loadable by spk_model_load_safetensors / spk_model_create_from_safetensors); */
SPK_API spk_status spk_model_save_safetensors(spk_model *model, const char *path);
/* every parameter's gradient, under the parameter's name; */
SPK_API spk_status spk_model_save_gradients(spk_model *model, const char *path);
/* the optimizer state: AdamW's moments as "exp_avg.<name>" and "exp_avg_sq.<name>", the step
 * count as metadata "step". Loading it (after loading the weights) resumes exactly: 3 steps, then
 * 2 resumed steps, give the weights of 5 steps. A malformed or mismatched file changes nothing. */
SPK_API spk_status spk_model_save_state(spk_model *model, const char *path);
SPK_API spk_status spk_model_load_state(spk_model *model, const char *path);
/* Sets the dropout rate of training steps (the configuration's, default 0.1) and the seed of its
 * masks: a counter-based generator of (seed, step, site, element), so a seeded run is
 * reproducible. Dropout applies in spk_model_train_step only: never at inference, nor in
 * spk_model_grad. */
SPK_API spk_status spk_model_set_dropout(spk_model *model, float rate, uint64_t seed);
/* The optimizer steps taken (restored by spk_model_load_state): the step counter of SPEC.md
 * section 6's batch order. */
SPK_API spk_status spk_model_get_step(spk_model *model, int64_t *step);
/* Copies the parameter `name` into out (`count` floats, its element count). */
SPK_API spk_status spk_model_get_parameter(spk_model *model, const char *name, float *out, int64_t count);
/* The model's parameters in the file format's order (SPEC.md section 3): the count, and the name
 * (written into name_size bytes) and shape ([rows, cols] kernels, [cols] otherwise) of each. */
SPK_API int spk_model_parameter_count(const spk_model *model);
SPK_API spk_status spk_model_parameter_info(const spk_model *model, int index, char *name, size_t name_size, int *ndim,
                                            int64_t shape[2]);

/* ---------------------------------------------------------------------------------------------
 * Data-parallel training, past one device. Each process (an MPI rank, one per device) trains the
 * same model on its share of every step's global batch, and the library calls the caller's
 * reduction between the backward and the optimizer: it links no communication library. With the
 * gradients and the loss summed over the processes before the optimizer (whose clipping sees the
 * sum), every process applies the same update and keeps the same weights, bit for bit. The loss is
 * the global batch's mean (each process scales its rows by 1 / the global count), and dropout masks
 * are the ones a single process would draw for the same rows.
 * ------------------------------------------------------------------------------------------- */
typedef struct spk_data_parallel {
    int64_t global_batch; /* samples in each step's global batch; 0: this process alone (the default) */
    int64_t first_sample; /* this process's first sample in it: its share is the step's `batch` samples from here */
    /* Sums `count` floats at `data` (host memory) over every process, in place: an all-reduce.
     * Called in each training step (and spk_model_grad) after the backward, for the gradients,
     * in the order the backward finishes them, then for the step's loss (1 float). It may start
     * the reduction and return (MPI_Iallreduce), leaving `wait` to finish them all. Called without
     * the context's lock; it must not use this model. spk_model_grad reduces the whole
     * accumulated gradient: zero it before each call. */
    spk_status (*reduce)(void *user, float *data, size_t count);
    spk_status (*wait)(void *user); /* NULL, or finishes every reduction `reduce` started */
    void *user;
    /* 0: one reduction of every gradient after the whole backward. Else buckets of whole layers'
     * gradients of at least this many bytes, each handed to `reduce` as soon as the backward has
     * finished it, while the device goes on with the earlier layers (PyTorch DDP's buckets). */
    size_t bucket_bytes;
} spk_data_parallel;
/* Sets (or with NULL clears) data-parallel training for this model's later steps. */
SPK_API spk_status spk_model_set_data_parallel(spk_model *model, const spk_data_parallel *dp);

/* ---------------------------------------------------------------------------------------------
 * Self-test: every kernel this device can run, in the variant the library chooses here and in
 * every alternative, on small and awkward shapes, against float64 references computed on the host
 * in the same process (outputs are poisoned with NaN first, so an unwritten element fails). Run it
 * first on new hardware: `softpick selftest` prints the same table.
 * ------------------------------------------------------------------------------------------- */

typedef enum spk_selftest_outcome {
    SPK_SELFTEST_PASS = 0,
    SPK_SELFTEST_FAIL,
    SPK_SELFTEST_SKIPPED, /* the device cannot run this variant (the reason says why) */
} spk_selftest_outcome;

/* One line of the self-test: an (op, variant) pair over all its shapes. Strings are valid during
 * the callback only. */
typedef struct spk_selftest_result {
    const char *op;      /* "softpick", "matmul", "layer norm", "erf", "gelu", "attention", "model", "loss", "train" */
    const char *variant; /* e.g. "rows, a subgroup per row, subgroup reduction, texel reads" */
    bool used;           /* this device's defaults choose this variant (for some shape covered) */
    const char *shapes;  /* the shapes covered */
    double max_error;    /* the largest over shapes of max |y - ref| / max |ref| */
    double bound;        /* the accuracy promised (SPEC.md; the header's op comments) */
    spk_selftest_outcome outcome;
    const char *reason;  /* why it failed or was skipped; "" when it passed */
} spk_selftest_result;

typedef void (*spk_selftest_fn)(const spk_selftest_result *result, void *user_data);

/* Options of spk_selftest. Zero-initialized: every op, no callback. */
typedef struct spk_selftest_desc {
    spk_selftest_fn on_result; /* called once per line as it completes */
    void *user_data;
    const char *only;          /* run only the ops whose name contains this; NULL: all */
    /* Contexts on the device that run the lines at once, each on a thread: the caller's and more
     * made like it (a first run is mostly the driver compiling pipelines, which runs in parallel
     * across devices). 0 (default): one per CPU core; at most 4; always 1 on an
     * application's device (spk_context_create_external). The lines and their order are the same. */
    uint32_t threads;
} spk_selftest_desc;

typedef struct spk_selftest_report {
    uint32_t passed, failed, skipped;
} spk_selftest_report;

/* Runs the self-test on the context's device. Returns SPK_OK when it ran to the end, whatever the
 * outcomes (report->failed counts the failures); an error status when it could not (out of memory,
 * a lost device), with report holding the lines done so far. It switches the context's kernel
 * choices as it goes: run no other work on the context meanwhile. `desc` may be NULL. on_result
 * is called on the calling thread, once per line, in the order of the lines. */
SPK_API spk_status spk_selftest(spk_context *ctx, const spk_selftest_desc *desc, spk_selftest_report *report);

/* ---------------------------------------------------------------------------------------------
 * Tuning: on new hardware, after the self-test, measure every kernel candidate this device can run
 * at a model's shapes and keep the fastest in the context's tuning file (spk_context_desc's
 * tuning_path); contexts made later on the same device, driver and library use it. A candidate
 * competes only once its output matched the float64 reference on that shape, so tuned results stay
 * within each op's documented bound. `softpick tune` prints the same report.
 * ------------------------------------------------------------------------------------------- */

/* One tuned problem: a kernel family at one shape. Strings are valid during the callback only. */
typedef struct spk_tune_result {
    const char *family;  /* "matmul", "attention", "attention-backward", "layer-norm", "layer-norm-backward",
                          * "column-sums", "softpick", "optimizer", "loss" */
    const char *problem; /* its shape and variant, e.g. "1920x768x256 +bias" */
    uint32_t uses;       /* dispatches of it in the model's recordings */
    const char *rule, *winner;  /* the rule's candidate and the kept one (the rule's when it won) */
    double rule_ns, winner_ns;  /* median GPU times of one dispatch */
    uint32_t candidates;        /* this device's candidates for the problem */
    uint32_t tried;             /* checked and timed */
    uint32_t excluded;          /* wrong against float64 (the first reported in `excluded_why`) */
    const char *excluded_why;   /* the first wrong candidate and its error; "" if none */
} spk_tune_result;

typedef void (*spk_tune_result_fn)(const spk_tune_result *result, void *user_data);
/* Progress: candidate `index` (from 1) of `count` of a problem was measured: its median time, or 0
 * when it was excluded, unable to run at this shape, or its kind pruned; best_ns is the best so far. */
typedef void (*spk_tune_progress_fn)(const char *family, const char *problem, const char *candidate, uint32_t index,
                                     uint32_t count, double candidate_ns, double best_ns, void *user_data);

/* Options of spk_tune. Zero-initialized: the default model, batches 1 and 32, its training step. */
typedef struct spk_tune_desc {
    spk_model_config config;  /* the model whose shapes are tuned; embed_dim 0: spk_model_config_default(256) */
    const int64_t *batches;   /* the batch sizes (each at the config's window_size); NULL: 1 and 32 */
    uint32_t batch_count;
    bool inference_only;      /* skip the training step's kernels (its backward) */
    double budget_seconds;    /* the time to spend measuring; 0: 90 */
    uint32_t repeats;         /* timed runs per candidate (the median is kept); 0: 5 */
    /* Where the choices are written, merged with what the context's file already held; NULL: the
     * context's tuning file (none: not saved; the context uses them until destroyed). */
    const char *path;
    spk_tune_result_fn on_result;
    spk_tune_progress_fn on_progress;
    void *user_data;
} spk_tune_desc;

typedef struct spk_tune_report {
    uint32_t problems, improved;     /* problems measured; those whose winner beat the rule */
    uint32_t dropped;                /* kept choices dropped again: the model's forward at a batch
                                      * ran no faster on them than on the rules */
    uint32_t tried, excluded;        /* candidates over all problems */
    double rule_ns, tuned_ns;        /* sums of the problems' times weighted by their uses */
    double seconds;                  /* wall time of the whole tuning */
} spk_tune_report;

/* Tunes the context's device (see above) and from then on uses the choices on this context. Takes
 * the context for its duration: run no other work on it meanwhile. `desc` may be NULL. A file
 * that cannot be written is SPK_ERROR_IO, and the context's choices are then unchanged. */
SPK_API spk_status spk_tune(spk_context *ctx, const spk_tune_desc *desc, spk_tune_report *report);
/* The context's tuning file ("" if none) and how many tuned choices it loaded or holds. */
SPK_API const char *spk_context_tuning_path(const spk_context *ctx, uint32_t *entries);

/* ---------------------------------------------------------------------------------------------
 * Renderer integration: the application's VkDevice, buffers and command buffers.
 *
 * Rules (see also README "Inside a renderer"):
 * - Function pointers: the library loads Vulkan through its own private copy of volk (every
 *   symbol renamed) and calls device functions through a per-context table (volkLoadDeviceTable),
 *   so the application's loader, its own volk and its global function pointers are untouched. It
 *   never destroys what it did not create (the instance, device, queue, wrapped buffers).
 * - Features: optional paths follow what the application enabled. With `enabled_features` (the
 *   VkPhysicalDeviceFeatures2 chain the device was created with), full-subgroup control is used
 *   where VkPhysicalDeviceSubgroupSizeControlFeatures or VkPhysicalDeviceVulkan13Features enable
 *   it, and 16-bit tensors are read from 16-bit storage buffers where
 *   VkPhysicalDevice16BitStorageFeatures or VkPhysicalDeviceVulkan11Features enable
 *   storageBuffer16BitAccess (else as 32-bit words); without it only Vulkan 1.1 core is used
 *   (subgroup operations are core properties and need no enabling). A device below Vulkan 1.1, or
 *   a queue family without compute, is refused.
 * - spk_record_* only record: no submit, no wait, no queue use. Before the recorded work the
 *   caller makes its writes to the inputs available to VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT /
 *   VK_ACCESS_SHADER_READ_BIT; the recorded work ends with its results written by compute
 *   shaders, so the caller's next barrier has source COMPUTE_SHADER / SHADER_WRITE. Between its
 *   own passes the library records every barrier they need. Descriptor sets a recording uses are
 *   kept by the context (found again when the same tensors are recorded again) and stay valid
 *   until a tensor they name is destroyed, so one recording can be submitted every frame.
 * - Threads: recording calls on one context are serialized by its lock (recording into different
 *   command buffers from different threads is safe; the pool of the command buffer is the
 *   caller's to synchronize). Synchronous calls (spk_softpick, uploads, ...) need `queue`.
 * ------------------------------------------------------------------------------------------- */

typedef struct spk_vulkan_device {
    VkInstance instance;
    VkPhysicalDevice physical_device;
    VkDevice device;
    uint32_t queue_family_index; /* a family with VK_QUEUE_COMPUTE_BIT */
    VkQueue queue;               /* used only by spk's synchronous calls; may be VK_NULL_HANDLE */
    uint32_t api_version;        /* the version the application's instance was created with */
    const void *enabled_features; /* optional: the VkPhysicalDeviceFeatures2 chain the device was created with */
    PFN_vkGetInstanceProcAddr get_instance_proc_addr; /* optional; NULL = the system loader's */
} spk_vulkan_device;

/* Creates a context on the application's device. Destroying it frees only what the library
 * created (its memory blocks, pipelines, pools); it does not wait for the device to be idle:
 * work the application submitted must have completed. */
SPK_API spk_status spk_context_create_external(const spk_vulkan_device *dev, spk_context **out);

/* A tensor over the application's buffer, from byte `offset` (a multiple of the device's
 * minStorageBufferOffsetAlignment). The buffer must have VK_BUFFER_USAGE_STORAGE_BUFFER_BIT and
 * hold the shape's bytes from `offset` (checked against its memory requirements; Vulkan cannot
 * report the usage, so that is the caller's promise). Destroying the tensor leaves the buffer.
 * Kernels read a wrapped tensor as a storage buffer; the library's own tensors may also be read
 * through texel views, which on CPU drivers (lavapipe) is several times faster. */
SPK_API spk_status spk_tensor_wrap_buffer(spk_context *ctx, VkBuffer buffer, VkDeviceSize offset, int ndim,
                                          const int64_t *shape, spk_tensor **out);

/* The ops, recorded into the caller's command buffer (in the recording state) instead of run. */
SPK_API spk_status spk_record_softpick(spk_context *ctx, VkCommandBuffer cmd, const spk_tensor *x, int axis,
                                       spk_tensor *y);
SPK_API spk_status spk_record_normalize(spk_context *ctx, VkCommandBuffer cmd, const spk_tensor *x, int axis,
                                        spk_normalizer normalizer, spk_tensor *y);
SPK_API spk_status spk_record_layer_norm(spk_context *ctx, VkCommandBuffer cmd, const spk_tensor *x,
                                         const spk_tensor *gamma, const spk_tensor *beta,
                                         const spk_layer_norm_desc *desc, spk_tensor *y);
SPK_API spk_status spk_record_matmul(spk_context *ctx, VkCommandBuffer cmd, const spk_tensor *a, const spk_tensor *b,
                                     const spk_matmul_desc *desc, spk_tensor *c);
SPK_API spk_status spk_record_attention(spk_context *ctx, VkCommandBuffer cmd, const spk_attention_desc *desc,
                                        const spk_tensor *q, const spk_tensor *k, const spk_tensor *v,
                                        spk_tensor *out);
SPK_API spk_status spk_record_softpick_attention(spk_context *ctx, VkCommandBuffer cmd, const spk_tensor *q,
                                                 const spk_tensor *k, const spk_tensor *v, int num_heads,
                                                 bool causal, spk_tensor *out);
/* The whole forward on device tensors (as spk_model_forward_tensors), recorded. It uses the
 * model's activation buffers: the recording stays valid until the model is destroyed or a later
 * call needs more positions (batch * seq_len) than any before, which re-allocates them. */
SPK_API spk_status spk_model_record_forward(spk_model *model, VkCommandBuffer cmd, const spk_tensor *input,
                                            spk_tensor *output);

/* ---------------------------------------------------------------------------------------------
 * NPY files (version 1.0/2.0, C order, little-endian float32; <f8 is converted to float32;
 * integers <i4 and <i8, such as class indices, are converted exactly up to 2^24 in magnitude)
 * ------------------------------------------------------------------------------------------- */

typedef struct spk_array {
    int ndim;
    int64_t shape[SPK_MAX_RANK];
    int64_t count;
    float *data;  /* owned: free with spk_array_free */
    bool integer; /* the file held integers (<i4, <i8) */
} spk_array;

/* Reads a .npy file. On failure `*out` is zeroed and, if `error` is given, a one-line reason is
 * written to it (at most error_size bytes). Never reads past the file's end. Rank 0 files are
 * returned as rank 1 of one element. */
SPK_API spk_status spk_npy_read(const char *path, spk_array *out, char *error, size_t error_size);
/* Reads only the given rows (indices along the first axis, any order) of a .npy file: `out` has
 * the file's shape with `count` rows, and *file_rows (if not NULL) the file's row count (count 0
 * reads the header alone). The same checks as spk_npy_read, and a row outside the file is
 * SPK_ERROR_SHAPE. A data-parallel rank reads its share of a batch this way. */
SPK_API spk_status spk_npy_read_rows(const char *path, const int64_t *rows, int64_t count, spk_array *out,
                                     int64_t *file_rows, char *error, size_t error_size);
/* Parses a .npy image already in memory; same contract as spk_npy_read. */
SPK_API spk_status spk_npy_parse(const void *bytes, size_t size, spk_array *out, char *error,
                                 size_t error_size);
/* Writes `data` with the given shape as a little-endian float32 .npy (version 1.0). */
SPK_API spk_status spk_npy_write(const char *path, int ndim, const int64_t *shape,
                                 const float *data, char *error, size_t error_size);
/* Frees the array's data and zeroes it. Accepts NULL. */
SPK_API void spk_array_free(spk_array *array);

#ifdef __cplusplus
}
#endif
#endif /* SOFTPICK_SOFTPICK_H */
