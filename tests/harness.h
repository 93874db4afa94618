/* Shared test helpers: contexts with the validation layer on, float64 references, random data. */
#ifndef SOFTPICK_TEST_HARNESS_H
#define SOFTPICK_TEST_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// clang-format off
#include <cmocka.h>
// clang-format on

#include "softpick/softpick.h"
#include "reference.h"

/* Messages the library logged through the test's callback, by kind. */
typedef struct test_log {
    int validation; /* validation-layer messages: any one fails the test */
    int warnings;   /* other warnings (e.g. an ignored pipeline cache file) */
    char last[1024];
} test_log;

extern test_log g_log;
void test_log_callback(spk_log_level level, const char *message, void *user);

/* Creates a context with validation (synchronization validation included) and the test log, on
 * the rules (no tuning file) unless `extra` or SOFTPICK_TUNING names one.
 * With no Vulkan device: skips the test, or fails it when the CI variable is set. */
spk_context *test_context(const spk_context_desc *extra);
/* One context per test program, created on first use (same skip/fail rule as test_context);
 * pass test_teardown_shared_context as the group teardown. */
spk_context *test_shared_context(void);
int test_teardown_shared_context(void **state);
/* Asserts that no validation message was logged since the last reset, then resets. */
void test_assert_no_validation(void);

/* xorshift random floats in [-1, 1), deterministic for a seed. */
void test_fill_random(float *data, int64_t n, uint64_t seed);
float *test_alloc_floats(int64_t n);
/* NaN in every element, so outputs never written by the device show. */
void test_poison(spk_tensor *t);
/* A tensor of ctx holding `data`, or poisoned with NaN (an output) when data is NULL. */
spk_tensor *test_tensor(spk_context *ctx, int ndim, const int64_t *shape, const float *data);
/* The same in a given dtype (data rounded by the upload). */
spk_tensor *test_typed_tensor(spk_context *ctx, spk_dtype dtype, int ndim, const int64_t *shape, const float *data);
/* Rounds data in place to the values `dtype` stores (spk_convert, itself checked against float64 in
 * test_dtype); nothing for F32. */
void test_round_to(spk_dtype dtype, float *data, int64_t n);
/* max |got - want| / max |want| over n values (NaN in got gives NaN, failing any bound). */
double test_rel_error(const float *got, const double *want, int64_t n);

/* float64 weights y[j] of one row of n live scores under an attention normalizer, by its
 * definition (m the largest score; rectified softpick with m <= 0 has no positive term, every
 * weight 0, where the direct form would need e^-m past double's range). */
void ref_normalize(spk_normalizer norm, const double *s, int64_t n, double *y);
/* Rectified softpick's e^(s - m) - e^-m, as e^-m expm1(s) near s = 0 (where the difference cancels). */
double ref_rect_term(double s, double m);
/* float64 softpick along `axis` of a row-major tensor. */
void ref_softpick(const float *x, double *y, int ndim, const int64_t *shape, int axis);
/* Max over rows (along `axis`) of max|y - ref| / max(max|ref|, 1e-30). NaN when y has a NaN where
 * ref has none. */
double ref_row_error(const float *y, const double *ref, int ndim, const int64_t *shape, int axis);

/* One tensor of a safetensors file written by test_safetensors_bytes. */
typedef struct test_st_entry {
    const char *name;
    const char *dtype; /* "F32", "F16", ... */
    int ndim;
    int64_t shape[4];
    const void *data;
    size_t bytes;
} test_st_entry;

/* A safetensors image of these entries, packed in order, with `metadata_json` (an object, or
 * NULL) as __metadata__. Returns a malloc'd buffer and its size. */
unsigned char *test_safetensors_bytes(const test_st_entry *entries, int count, const char *metadata_json,
                                      size_t *size);
/* Writes bytes to a file; returns the path (a static buffer per name). */
const char *test_write_file(const char *name, const void *bytes, size_t size);
/* The path of a file in tests/data. */
const char *test_data_path(const char *relative);

/* A model's parameters on the host, one array per tensor of spk__weights_list's order (freed by
 * test_params_free), and the float64 reference model over them (src/reference.c). */
#define TEST_MAX_TENSORS 64
typedef struct test_host_params {
    spk_tensor *tensors[TEST_MAX_TENSORS];
    float *values[TEST_MAX_TENSORS];
    uint32_t count;
} test_host_params;
void test_params_download(const spk_model *m, test_host_params *p);
/* Every parameter (or gradient) of a model through the public API, in spk_model_parameter_info's
 * order, into out (NULL: counted only); returns how many floats, or -1 on failure (no cmocka
 * assert: usable from any thread). */
int64_t test_model_values(spk_model *m, bool gradients, float *out);
void test_params_free(test_host_params *p);
spk__ref_model test_ref_model(const spk_model *m, const test_host_params *p, spk__ref_layer *layers);

#endif
