/* Internal declarations shared by the library's source files. Nothing here is public. */
#ifndef SOFTPICK_INTERNAL_H
#define SOFTPICK_INTERNAL_H

/* volk's global symbols are renamed (see cmake/Volk.cmake) so they never collide with the
 * application's Vulkan loader or its own copy of volk. */
#include "volk_private.h"
#include <volk.h>

#include <pthread.h>
#include <stdarg.h>

#include "softpick/softpick.h"

#define SPK__ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SPK__MAX_BINDINGS 8
#define SPK__MAX_TEXEL_INPUTS 4
#define SPK__MAX_SPEC 17
#define SPK__PUSH_BYTES 128 /* the minimum maxPushConstantsSize every device guarantees */
#define SPK__ERROR_LEN 512
#define SPK__APP_RECORDINGS 8

/* ---- memory.c: device memory sub-allocated from large blocks ------------------------------- */

typedef struct spk__range {
    VkDeviceSize offset, size;
} spk__range;

/* One VkDeviceMemory with one VkBuffer over all of it; allocations are ranges of that buffer. */
typedef struct spk__block {
    VkDeviceMemory memory;
    VkBuffer buffer;
    void *mapped; /* persistent mapping, or NULL for device-only memory */
    VkDeviceSize size;
    uint32_t memory_type;
    bool dedicated;          /* made for one large allocation; freed when that is freed */
    spk__range *free_ranges; /* sorted by offset, coalesced */
    uint32_t free_count, free_capacity;
} spk__block;

typedef struct spk__allocation {
    spk__block *block;
    VkDeviceSize offset, size;
} spk__allocation;

typedef enum spk__memory_kind {
    SPK__MEMORY_TENSOR = 0, /* where tensors live: device-local (and host-visible on UMA devices) */
    SPK__MEMORY_STAGING,    /* host-visible, coherent, preferably cached: uploads and downloads */
    SPK__MEMORY_KIND_COUNT,
} spk__memory_kind;

typedef struct spk__allocator {
    spk__block **blocks;
    uint32_t block_count, block_capacity;
    uint32_t memory_type[SPK__MEMORY_KIND_COUNT];
    VkMemoryPropertyFlags memory_flags[VK_MAX_MEMORY_TYPES];
    VkDeviceSize block_size;
    VkDeviceSize alignment;
    VkDeviceSize tensor_heap_size; /* the heap tensors are allocated from */
} spk__allocator;

/* ---- pipeline.c ------------------------------------------------------------------------- */

typedef struct spk__shader {
    const char *name;
    const uint32_t *code;
    size_t code_size; /* bytes */
    uint32_t binding_count;
    /* The first texel_inputs bindings are uniform texel buffers, read through the tensors' views:
     * on CPU drivers a texel fetch is a vectorized gather, many times cheaper than a
     * storage-buffer load. Every other binding is a storage buffer. */
    uint32_t texel_inputs;
} spk__shader;

enum {
    SPK__PIPELINE_FULL_SUBGROUPS = 1u << 0, /* require full subgroups of the device's size */
};

typedef struct spk__pipeline {
    const spk__shader *shader;
    uint32_t spec[SPK__MAX_SPEC];
    uint32_t spec_count;
    uint32_t flags;
    VkPipeline pipeline;
    VkDescriptorSetLayout set_layout; /* shared, owned by the context */
    VkPipelineLayout layout;
} spk__pipeline;

/* ---- command.c: one recording, with barrier tracking ------------------------------------ */

typedef struct spk__buffer_ref {
    VkBuffer buffer;
    VkDeviceSize offset, size;
} spk__buffer_ref;

/* A dropout mask of shaders/dropout.glsl, as the shaders take it after their own push constants:
 * (seed, site), threshold = rate * 2^32, scale = 1 / (1 - rate); the step count is read on the
 * device from `step` (a float), so a recorded training step replays with a new mask each step. */
typedef struct spk__dropout_push {
    uint32_t seed_lo, seed_hi, site, threshold;
    float scale;
    uint32_t offset; /* the first element's index in the mask */
} spk__dropout_push;
typedef struct spk__dropout_mask {
    spk__buffer_ref step;
    spk__dropout_push push;
} spk__dropout_mask;

/* An access of the current recording that later work may conflict with. */
typedef struct spk__access {
    spk__buffer_ref ref;
    VkPipelineStageFlags stage;
    bool write;
} spk__access;

/* Commands being recorded, with what they need to stay valid while they may execute: the
 * descriptor sets their dispatches bind and the timestamp queries around them. The context's own
 * recording is reused by every synchronous op; a model keeps one per shape it was run with, and
 * submits it again and again. */
typedef struct spk__recording {
    VkCommandBuffer cmd;
    spk__access *accesses; /* since the last barrier */
    uint32_t access_count, access_capacity;
    VkDescriptorPool *descriptor_pools;
    uint32_t descriptor_pool_count, descriptor_pool_capacity;
    VkQueryPool timestamps; /* [0] start, [1] end, then (before, after) per dispatch if profiling */
    uint32_t timestamp_capacity, timestamp_count;
    const char **profiled_shaders; /* the shader of each timed dispatch */
    uint32_t dispatch_count;
    /* Recording into an application's command buffer: descriptor sets come from the context's
     * cache and stay valid until a buffer they name is destroyed. */
    bool external;
} spk__recording;

/* A descriptor set kept for recordings in application command buffers, found again by its
 * bindings so that re-recording every frame reuses it. */
typedef struct spk__cached_set {
    uint32_t binding_count;
    spk__buffer_ref bindings[SPK__MAX_BINDINGS];
    VkBufferView views[SPK__MAX_TEXEL_INPUTS];
    VkDescriptorSetLayout layout;
    VkDescriptorPool pool;
    VkDescriptorSet set;
} spk__cached_set;

/* ---- the context ------------------------------------------------------------------------ */

typedef struct spk__device_caps {
    VkPhysicalDeviceProperties props;
    VkPhysicalDeviceSubgroupProperties subgroup;
    uint32_t min_subgroup_size, max_subgroup_size;
    bool subgroup_arithmetic;   /* in compute shaders */
    bool subgroup_shuffle;      /* in compute shaders */
    bool subgroup_size_control; /* computeFullSubgroups usable (1.3 core or the extension) */
    bool subgroup_size_control_ext; /* enabled through VK_EXT_subgroup_size_control */
    bool timestamps;
    bool texel_buffers; /* R32 and R32G32B32A32 float uniform texel buffers */
    bool texel_f16;     /* R16 and R16G16B16A16 SFLOAT uniform texel buffers: F16 read as floats */
    bool texel_u16;     /* R16 and R16G16B16A16 UINT uniform texel buffers: BF16 read as words */
    bool storage16;     /* storageBuffer16BitAccess: the device has it (and, external, the app enabled it) */
    bool uma; /* device memory is host-visible and cheap to map (CPU and integrated devices) */
    float timestamp_period;
    uint32_t timestamp_valid_bits;
} spk__device_caps;

struct spk_context {
    pthread_mutex_t lock; /* serializes synchronous calls */
    spk_log_fn log;
    void *log_user_data;
    char error[SPK__ERROR_LEN];

    VkInstance instance;
    VkDebugUtilsMessengerEXT messenger;
    PFN_vkCreateDebugUtilsMessengerEXT create_messenger; /* this instance's, NULL without the extension */
    PFN_vkDestroyDebugUtilsMessengerEXT destroy_messenger;
    PFN_vkSetDebugUtilsObjectNameEXT set_object_name;
    VkPhysicalDevice physical_device;
    uint32_t device_index;
    VkDevice device;
    struct VolkDeviceTable vk;
    uint32_t queue_family;
    VkQueue queue;
    spk__device_caps caps;
    spk_reduction reduction; /* resolved: never AUTO */
    bool half_words;         /* 16-bit tensors in storage buffers are read as 32-bit words */
    bool force_staging;      /* tests: copy through staging even where tensors are mapped */
    bool debug_names;

    spk__allocator allocator;
    spk__allocation staging;    /* grown on demand, for non-UMA uploads and downloads */
    spk__allocation scratch;    /* grown on demand, for multi-pass reductions */

    VkPipelineCache pipeline_cache;
    char *pipeline_cache_path;
    /* By texel inputs and binding count, made on first use. */
    VkDescriptorSetLayout set_layouts[SPK__MAX_TEXEL_INPUTS + 1][SPK__MAX_BINDINGS + 1];
    VkPipelineLayout pipeline_layouts[SPK__MAX_TEXEL_INPUTS + 1][SPK__MAX_BINDINGS + 1];
    spk__pipeline **pipelines;
    uint32_t pipeline_count, pipeline_capacity;
    bool log_pipelines;         /* SOFTPICK_LOG_PIPELINES: report each build with its time */

    /* tuning.c: kernel choices measured by spk_tune, by problem class (the rules elsewhere) */
    struct spk__tune_entry *tuned;
    uint32_t tuned_count;
    char *tuning_path;                /* the file loaded and written; NULL: none */
    struct spk__tune_collect *collect; /* spk_tune: every problem looked up is also collected */

    VkCommandPool command_pool;
    VkFence fence;
    uint64_t last_gpu_time_ns;
    spk__recording own;  /* the synchronous ops' recording */
    spk__recording *rec; /* the recording dispatches go to (under the lock) */
    /* spk_record_*: the application's command buffers, each with its own access tracking (the
     * most recently used few; one evicted starts clean, which at worst adds a barrier). */
    spk__recording apps[SPK__APP_RECORDINGS];
    uint64_t app_clock, app_last_use[SPK__APP_RECORDINGS];
    spk__cached_set *cached_sets;
    uint32_t cached_set_count, cached_set_capacity;
    VkDescriptorPool *cache_pools;
    uint32_t cache_pool_count, cache_pool_capacity;

    bool external;  /* on the application's VkDevice (spk_context_create_external) */
    bool lost;      /* VK_ERROR_DEVICE_LOST was seen: every later call refuses */
};

struct spk_tensor {
    spk_context *ctx;
    int ndim;
    int64_t shape[SPK_MAX_RANK];
    int64_t count;
    spk_dtype dtype;
    spk__allocation alloc; /* empty for a wrapped application buffer */
    spk__buffer_ref ref;   /* the tensor's bytes: buffer, offset, size */
    bool wrapped;
    bool slice;            /* alloc is a part of another tensor's, freed with that one */
    /* Uniform texel views over the tensor's bytes, one element and four elements per texel
     * (R32_SFLOAT and R32G32B32A32_SFLOAT; F16: R16_SFLOAT and R16G16B16A16_SFLOAT, which read
     * as floats in the same shaders; BF16: R16_UINT and R16G16B16A16_UINT), for kernels with
     * texel inputs; NULL for wrapped buffers (their usage flags are unknown) and where the
     * device's formats or limits exclude them. */
    VkBufferView views[2];
    /* Partial sums of softpick recorded into application command buffers with this tensor as
     * output: kept as long as the tensor, since those recordings may be replayed. */
    spk__allocation *scratch;
    uint32_t scratch_count, scratch_capacity;
};

/* A float32 tensor over `whole`'s bytes from `offset` (a multiple of the storage and texel
 * offset alignments), with views of its own; destroyed before `whole`. */
spk_status spk__tensor_slice(spk_tensor *whole, VkDeviceSize offset, int ndim, const int64_t *shape, spk_tensor **out);

/* ---- status.c --------------------------------------------------------------------------- */

/* Records `status` with a formatted message as the context's last error and returns status. */
spk_status spk__fail(spk_context *ctx, spk_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* SPK_OK, or SPK_ERROR_DEVICE_LOST (with the message) once the context's device was lost. */
spk_status spk__check_alive(spk_context *ctx);
/* As spk__fail for a failed Vulkan call: maps the VkResult to a status, names it in the message;
 * VK_ERROR_DEVICE_LOST marks the context lost. */
spk_status spk__fail_vk(spk_context *ctx, VkResult result, const char *what);
spk_status spk__status_from_vk(VkResult result);
const char *spk__vk_result_string(VkResult result);
void spk__log(spk_log_fn log, void *user, spk_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- util.c ----------------------------------------------------------------------------- */

/* Overflow-checked products for sizes computed from caller input. */
bool spk__mul_overflows(uint64_t a, uint64_t b, uint64_t *out);
/* Makes room for `needed` items in a realloc'd array (doubling); false when out of memory, with
 * the array unchanged. */
bool spk__grow(void **items, uint32_t *capacity, uint32_t needed, size_t item_size);
/* Formats a message into a caller's buffer (for functions that have no context to hold one, like
 * the file readers) and returns `status`. */
spk_status spk__error_message(char *error, size_t error_size, spk_status status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Seconds on a monotonic clock. */
double spk__now_seconds(void);
/* FNV-1a of n bytes, and continued over more bytes from a previous hash. */
uint64_t spk__fnv1a(const unsigned char *p, size_t n);
uint64_t spk__fnv1a_more(uint64_t h, const unsigned char *p, size_t n);
/* A whole file, malloc'd (free it); NULL when it cannot be read. */
unsigned char *spk__read_file(const char *path, size_t *size);
/* The smallest power of two >= v (v <= 2^31). */
uint32_t spk__pow2_at_least(uint64_t v);
/* The normalizers' names, for messages; SPK_OK for a known normalizer, else
 * SPK_ERROR_INVALID_ARGUMENT naming the accepted ones (model_config.c). */
#define SPK__NORMALIZERS "softpick, rectified-softpick or softmax"
spk_status spk__check_normalizer(spk_context *ctx, spk_normalizer normalizer);
static inline bool spk__is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

/* ---- memory.c --------------------------------------------------------------------------- */

spk_status spk__allocator_init(spk_context *ctx);
void spk__allocator_destroy(spk_context *ctx);
spk_status spk__allocate(spk_context *ctx, spk__memory_kind kind, VkDeviceSize size,
                         spk__allocation *out);
void spk__free(spk_context *ctx, spk__allocation *alloc);
/* Device memory the allocator holds (its blocks) and of that what is handed out, in bytes. */
void spk__memory_in_use(spk_context *ctx, uint64_t *allocated, uint64_t *used);
/* Grows `alloc` (staging or scratch) to hold at least `size` bytes; contents are not kept. */
spk_status spk__reserve(spk_context *ctx, spk__memory_kind kind, VkDeviceSize size,
                        spk__allocation *alloc);
static inline spk__buffer_ref spk__allocation_ref(const spk__allocation *a) {
    spk__buffer_ref r = {a->block->buffer, a->offset, a->size};
    return r;
}

/* ---- pipeline.c ------------------------------------------------------------------------- */

spk_status spk__pipelines_init(spk_context *ctx, const char *cache_path);
/* FNV-1a over every embedded SPIR-V variant: changes whenever any kernel does. */
uint64_t spk__spirv_hash(void);
void spk__pipelines_destroy(spk_context *ctx);
/* The pipeline of `shader` with these specialization constants (constant_id 0..count-1), built on
 * first use and cached for the context's lifetime. */
spk_status spk__pipeline_get(spk_context *ctx, const spk__shader *shader, const uint32_t *spec,
                             uint32_t spec_count, uint32_t flags, const spk__pipeline **out);
extern const spk__shader spk__shader_softpick_rows_f1, spk__shader_softpick_rows_f4,
    spk__shader_softpick_cols_f1, spk__shader_softpick_cols_f4,
    spk__shader_softpick_rows_texel_f1, spk__shader_softpick_rows_texel_f4, spk__shader_softpick_cols_texel_f1,
    spk__shader_softpick_cols_texel_f4, spk__shader_softpick_rows_s16_f1, spk__shader_softpick_rows_s16_f4,
    spk__shader_softpick_cols_s16_f1, spk__shader_softpick_cols_s16_f4, spk__shader_softpick_rows_texel_s16_f1,
    spk__shader_softpick_rows_texel_s16_f4, spk__shader_softpick_cols_texel_s16_f1, spk__shader_softpick_cols_texel_s16_f4,
    spk__shader_softpick_rows_backward_f1, spk__shader_softpick_rows_backward_f4,
    spk__shader_softpick_cols_backward_f1, spk__shader_softpick_cols_backward_f4, spk__shader_softpick_rows_backward_texel_f1,
    spk__shader_softpick_rows_backward_texel_f4, spk__shader_softpick_cols_backward_texel_f1,
    spk__shader_softpick_cols_backward_texel_f4, spk__shader_copy_f4, spk__shader_copy_texel_f4, spk__shader_fma_peak,
    spk__shader_unary, spk__shader_unary_texel, spk__shader_loss, spk__shader_analyze, spk__shader_analyze_s16, spk__shader_optimizer, spk__shader_optimizer_texel, spk__shader_dropout, spk__shader_dropout_texel, spk__shader_column_sums, spk__shader_column_sums_texel, spk__shader_matmul, spk__shader_matmul_s16, spk__shader_matmul_shuffle, spk__shader_matmul_shuffle_s16,
    spk__shader_matmul_shuffle_texel, spk__shader_matmul_shuffle_texel_s16, spk__shader_matmul_shuffle_texel_bf16,
    spk__shader_matmul_shuffle_texel_bf16_s16, spk__shader_layer_norm_f1,
    spk__shader_layer_norm_f4, spk__shader_layer_norm_texel_f1, spk__shader_layer_norm_texel_f4, spk__shader_layer_norm_s16_f1,
    spk__shader_layer_norm_s16_f4, spk__shader_layer_norm_texel_s16_f1, spk__shader_layer_norm_texel_s16_f4, spk__shader_layer_norm_backward_f1,
    spk__shader_layer_norm_backward_f4, spk__shader_layer_norm_backward_texel_f1, spk__shader_layer_norm_backward_texel_f4, spk__shader_attention, spk__shader_attention_shuffle,
    spk__shader_attention_shuffle_texel, spk__shader_attention_s16, spk__shader_attention_shuffle_s16,
    spk__shader_attention_shuffle_texel_s16, spk__shader_attention_backward_q, spk__shader_attention_backward_q_texel,
    spk__shader_attention_backward_q_shared, spk__shader_attention_backward_kv, spk__shader_attention_backward_kv_texel,
    spk__shader_attention_backward_kv_shared;

/* ---- command.c -------------------------------------------------------------------------- */

spk_status spk__commands_init(spk_context *ctx);
void spk__commands_destroy(spk_context *ctx);
/* Allocates a recording's command buffer and timestamp queries: 2, or 2 + 2 per dispatch for up
 * to `profile_dispatches` dispatches. */
spk_status spk__recording_init(spk_context *ctx, spk__recording *rec, uint32_t profile_dispatches);
void spk__recording_destroy(spk_context *ctx, spk__recording *rec);
/* Resets `rec` (its previous submission must have completed), begins it and makes it the one
 * dispatches go to. `reusable`: it will be submitted more than once. */
spk_status spk__recording_begin(spk_context *ctx, spk__recording *rec, bool reusable);
/* Makes every write visible to the host, writes the end timestamp and ends the command buffer. */
spk_status spk__recording_end(spk_context *ctx, spk__recording *rec);
/* Submits an ended recording, waits on the fence (blocking) and reads its timestamps into
 * ctx->last_gpu_time_ns. */
spk_status spk__recording_submit(spk_context *ctx, spk__recording *rec);
/* Submits an ended recording with `fence` signalled at its end, without waiting; then waiting
 * for (and resetting) a fence. */
spk_status spk__recording_submit_async(spk_context *ctx, spk__recording *rec, VkFence fence);
spk_status spk__fence_wait(spk_context *ctx, VkFence fence);
/* Records a barrier ordering all earlier work on the queue (earlier submissions included) before
 * all later work: the start of a recording submitted after another without a wait. */
spk_status spk__barrier_all(spk_context *ctx);
/* Per-dispatch GPU nanoseconds of the last submission of a profiling recording, and each
 * dispatch's shader name if `shaders` is not NULL: fills up to `max` entries and returns how many
 * dispatches were timed. */
uint32_t spk__recording_dispatch_times(spk_context *ctx, const spk__recording *rec, uint64_t *ns,
                                       const char **shaders, uint32_t max);
/* Locks the context and directs recording into an application's command buffer (no submit, no
 * wait, no timestamps); spk__record_app_end unlocks. */
spk_status spk__record_app_begin(spk_context *ctx, VkCommandBuffer cmd);
void spk__record_app_end(spk_context *ctx);
/* Drops cached descriptor sets that bind any of these bytes (they are going away). */
void spk__forget_range(spk_context *ctx, spk__buffer_ref range);
/* Begins the context's own recording (the synchronous ops'). */
spk_status spk__begin(spk_context *ctx);
/* Ends, submits and waits for the context's own recording. */
spk_status spk__submit_and_wait(spk_context *ctx);

typedef struct spk__dispatch_desc {
    const spk__pipeline *pipeline;
    spk__buffer_ref bindings[SPK__MAX_BINDINGS];
    VkBufferView views[SPK__MAX_TEXEL_INPUTS]; /* the texel inputs' bindings */
    uint32_t written_mask; /* bit i: binding i is written by the shader */
    const void *push;
    uint32_t push_size;
    uint32_t groups[3];
} spk__dispatch_desc;

/* Records a dispatch, preceded by whatever barrier its bindings need against earlier work. */
spk_status spk__dispatch(spk_context *ctx, const spk__dispatch_desc *d);
/* Records a dispatch of a two-binding shader (binding 0 read, binding 1 written) over at least
 * `invocations` invocations, spec[0] being its workgroup size and `count` its one push constant.
 * `src_view` is src's texel view for a shader with a texel input (else ignored). */
spk_status spk__dispatch_map(spk_context *ctx, const spk__shader *shader, const uint32_t *spec, uint32_t spec_count,
                             spk__buffer_ref src, VkBufferView src_view, spk__buffer_ref dst, uint64_t invocations,
                             uint32_t count);
/* Records vkCmdFillBuffer of zeros over dst, with the same barrier tracking. */
spk_status spk__fill_zero(spk_context *ctx, spk__buffer_ref dst);
/* Records vkCmdCopyBuffer, with the same barrier tracking. */
spk_status spk__copy(spk_context *ctx, spk__buffer_ref src, spk__buffer_ref dst);
/* Records one vkCmdCopyBuffer of several regions (absolute offsets) lying within src and dst. */
spk_status spk__copy_regions(spk_context *ctx, spk__buffer_ref src, spk__buffer_ref dst, const VkBufferCopy *regions,
                             uint32_t count);
/* Splits `count` workgroups into a 2D grid within maxComputeWorkGroupCount. */
spk_status spk__grid(spk_context *ctx, uint64_t count, uint32_t groups[3]);

/* ---- dtype.c ---------------------------------------------------------------------------- */

uint16_t spk__f32_to_f16(float f);
float spk__f16_to_f32(uint16_t h);
uint16_t spk__f32_to_bf16(float f);
float spk__bf16_to_f32(uint16_t h);
#define SPK__DTYPE_BIT(d) (1u << (d))
#define SPK__ANY_DTYPE (SPK__DTYPE_BIT(SPK_DTYPE_F32) | SPK__DTYPE_BIT(SPK_DTYPE_F16) | SPK__DTYPE_BIT(SPK_DTYPE_BF16))

/* ---- tensor.c --------------------------------------------------------------------------- */

/* Checks that t belongs to ctx and is float32; records an error naming `what` otherwise. */
spk_status spk__check_tensor(spk_context *ctx, const spk_tensor *t, const char *what);
/* SPK_OK where the device can store 16-bit values (F16 activations), else SPK_ERROR_UNSUPPORTED
 * naming storageBuffer16BitAccess and `op`. */
spk_status spk__check_storage16(spk_context *ctx, const char *op);
/* As spk__check_tensor, for a tensor that may be any dtype in `dtypes` (SPK__DTYPE_BIT's). */
spk_status spk__check_tensor_dtypes(spk_context *ctx, const spk_tensor *t, const char *what, uint32_t dtypes);
/* An op's activation (an input or output it may keep in F16): float32, or F16 where the device
 * stores 16-bit values (spk__check_storage16 for `op`). */
spk_status spk__check_activation(spk_context *ctx, const spk_tensor *t, const char *op, const char *what);
/* Checks that t has exactly this shape; records an error naming `what` otherwise. */
spk_status spk__check_shape(spk_context *ctx, const spk_tensor *t, int ndim, const int64_t *shape, const char *what);
/* The tensor's bytes (tests and tools reach them through this). */
static inline spk__buffer_ref spk__tensor_ref(const spk_tensor *t) { return t->ref; }
/* Whether two tensors' bytes overlap. */
bool spk__overlap(const spk_tensor *a, const spk_tensor *b);
/* Runs `record` alone in the context's command buffer, submits and waits, under the lock. */
spk_status spk__run_sync(spk_context *ctx, spk_status (*record)(spk_context *, const void *), const void *arg);

/* ---- context.c -------------------------------------------------------------------------- */

void spk__set_debug_name(spk_context *ctx, VkObjectType type, uint64_t handle, const char *name);

#endif /* SOFTPICK_INTERNAL_H */
