/* The self-test's lines and helpers (internal), shared by its parts (selftest.c, selftest_half.c,
 * selftest_backward.c, selftest_train.c) and the runner that reports them (selftest_run.c). */
#ifndef SOFTPICK_SELFTEST_H
#define SOFTPICK_SELFTEST_H

#include <stdatomic.h>

#include "internal.h"
#include "matmul_plan.h"

/* A finished line, kept until it is reported in order (selftest_run.c). */
typedef struct spk__st_line {
    spk_selftest_result r;
    char op[32], variant[128], shapes[256], reason[SPK__ERROR_LEN];
} spk__st_line;

/* One part of the self-test (a few lines of one op family) as it runs on one context. */
typedef struct spk__selftest {
    spk_context *ctx;
    const spk_selftest_desc *desc;
    spk_status fatal;        /* out of memory or a lost device: stop */
    const atomic_bool *stop; /* another part stopped */
    uint64_t seed;
    spk_selftest_result r; /* the line being run */
    char op[32], variant[128], shapes[256], reason[SPK__ERROR_LEN];
    spk__st_line *lines; /* the part's finished lines */
    uint32_t line_count, line_capacity;
} spk__selftest;

/* Host buffers of one case, freed together. */
typedef struct spk__st_buffers {
    void *p[8];
    int n;
} spk__st_buffers;

bool spk__st_wanted(const spk__selftest *st, const char *op);
/* Starts a line: its op, the accuracy bound, the variant's description. */
void spk__st_begin(spk__selftest *st, const char *op, double bound, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Ends the line as skipped (when `why` is set and nothing failed) and keeps it for the report. */
void spk__st_end(spk__selftest *st, const char *why);
void spk__st_fail(spk__selftest *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An op's status: false unless SPK_OK (unsupported variants are skipped; out of memory stops). */
bool spk__st_ran(spk__selftest *st, spk_status status, const char *shape);
/* Appends a covered shape to the line (once per distinct text). */
void spk__st_shape(spk__selftest *st, const char *shape);
/* Compares n outputs with their float64 reference for the shape named. */
void spk__st_compare(spk__selftest *st, const float *y, const double *ref, int64_t n, const char *shape);
void spk__st_random(spk__selftest *st, float *x, int64_t n, float scale);
/* A tensor holding `data`, or NaN everywhere (an output) when data is NULL; NULL on failure. */
spk_tensor *spk__st_tensor(spk__selftest *st, int ndim, const int64_t *shape, const float *data);
/* NULL once anything failed: a case checks only its last allocation. */
void *spk__st_alloc(spk__selftest *st, spk__st_buffers *b, int64_t count, size_t size);
void spk__st_free(spk__st_buffers *b);
/* The four matmul kernels every matmul line runs (tiles, register blocks, shuffles through
 * storage buffers and through texel views), tuned for this device, and their names. */
void spk__st_matmul_kernels(const spk_context *ctx, spk__matmul_tuning kernels[4]);
extern const char *const spk__st_matmul_kernel_names[4];
/* A tensor of `dtype` holding `data` (rounded in place to what the tensor stores, so that the
 * reference computes on the same values), or NaN everywhere (an output) when data is NULL; NULL
 * on failure. */
spk_tensor *spk__st_tensor_typed(spk__selftest *st, spk_dtype dtype, int ndim, const int64_t *shape, float *data);
/* One case of each op against its float64 reference, with B and the bias in `wd` and the
 * activations in `ad`: softpick along axis 1 of [outer, n, inner], a matmul (epilogue 0 none, 1 bias, 2 bias and GELU, 3 and a residual, 4
 * accumulating into C), a layer norm (x and y), attention with kernel 0 tiles, 1 shuffles through
 * storage buffers, 2 shuffles through texel views (q, k, v and the output). */
struct spk__softpick_tuning;
void spk__st_softpick_case(spk__selftest *st, const struct spk__softpick_tuning *t, spk_dtype ad, int64_t outer, int64_t n,
                           int64_t inner);
void spk__st_matmul_case(spk__selftest *st, const spk__matmul_tuning *t, spk_dtype wd, spk_dtype ad, int epilogue,
                         int64_t batch, int64_t m, int64_t n, int64_t k, bool shared_b);
struct spk__layer_norm_tuning;
void spk__st_layer_norm_case(spk__selftest *st, const struct spk__layer_norm_tuning *t, spk_dtype ad, int64_t rows,
                             int64_t n, float mean);
void spk__st_attention_case(spk__selftest *st, int kernel, spk_dtype ad, spk_normalizer norm, int64_t seq,
                            int64_t heads, int64_t dim, bool causal);
extern const char *const spk__st_attention_kernel_names[3];
/* The parts, in the order of their lines: each makes whole lines and may run on a context of its
 * own, beside the others (selftest_run.c). selftest.c: the forward kernels and the model; */
void spk__st_softpick(spk__selftest *st);
void spk__st_matmul(spk__selftest *st);
void spk__st_layer_norm(spk__selftest *st);
void spk__st_unary(spk__selftest *st);
void spk__st_attention(spk__selftest *st);
void spk__st_model_f32(spk__selftest *st);
/* The model's forward lines with these storage types (every output mode in float32). */
void spk__st_model(spk__selftest *st, spk_dtype wd, spk_dtype ad);
/* selftest_half.c: 16-bit storage; */
void spk__st_softpick_half(spk__selftest *st);
void spk__st_matmul_half(spk__selftest *st);
void spk__st_layer_norm_half(spk__selftest *st);
void spk__st_attention_half(spk__selftest *st);
void spk__st_model_half(spk__selftest *st);
/* selftest_backward.c: the backward kernels, the losses. */
void spk__st_softpick_backward(spk__selftest *st);
void spk__st_matmul_backward(spk__selftest *st);
void spk__st_gelu_backward(spk__selftest *st);
void spk__st_layer_norm_backward(spk__selftest *st);
void spk__st_attention_backward(spk__selftest *st);
void spk__st_losses(spk__selftest *st);
/* selftest_train.c: the model's gradients through the training step's kernels, the optimizer. */
void spk__st_training(spk__selftest *st);

#endif
