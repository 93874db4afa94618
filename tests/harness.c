#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

test_log g_log;


void test_log_callback(spk_log_level level, const char *message, void *user) {
    (void)user;
    if (strstr(message, "Vulkan validation")) {
        g_log.validation++;
        fprintf(stderr, "VALIDATION: %s\n", message);
    } else if (level <= SPK_LOG_WARNING) {
        g_log.warnings++;
    }
    snprintf(g_log.last, sizeof g_log.last, "%s", message);
}

spk_context *test_context(const spk_context_desc *extra) {
    spk_context_desc desc = {0};
    if (extra) desc = *extra;
    desc.validation = true;
    desc.log = test_log_callback;
    spk_context *ctx = NULL;
    spk_status status = spk_context_create(&desc, &ctx);
    if (status == SPK_ERROR_NO_VULKAN || status == SPK_ERROR_NO_DEVICE) {
        if (getenv("CI")) fail_msg("no Vulkan device in CI (%s): %s", spk_status_string(status), g_log.last);
        skip();
    }
    if (status != SPK_OK) fail_msg("context creation failed (%s): %s", spk_status_string(status), g_log.last);
    return ctx;
}

static spk_context *g_shared;

spk_context *test_shared_context(void) {
    if (!g_shared) g_shared = test_context(NULL);
    return g_shared;
}

int test_teardown_shared_context(void **state) {
    (void)state;
    spk_context_destroy(g_shared);
    g_shared = NULL;
    return 0;
}

void test_assert_no_validation(void) {
    int n = g_log.validation;
    g_log.validation = 0;
    assert_int_equal(n, 0);
}

void test_fill_random(float *data, int64_t n, uint64_t seed) {
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        data[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
}

float *test_alloc_floats(int64_t n) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
    assert_non_null(p);
    return p;
}

void test_poison(spk_tensor *t) {
    int64_t n = spk_tensor_count(t);
    float *nan = test_alloc_floats(n);
    for (int64_t i = 0; i < n; i++) nan[i] = NAN;
    assert_int_equal(spk_tensor_upload(t, nan, n), SPK_OK);
    free(nan);
}

/* The tensor as [outer, len, inner] around axis. */
static void split(int ndim, const int64_t *shape, int axis, int64_t *outer, int64_t *len, int64_t *inner) {
    int a = axis < 0 ? axis + ndim : axis;
    *outer = *inner = 1;
    for (int i = 0; i < a; i++) *outer *= shape[i];
    for (int i = a + 1; i < ndim; i++) *inner *= shape[i];
    *len = shape[a];
}

void ref_softpick(const float *x, double *y, int ndim, const int64_t *shape, int axis) {
    int64_t outer, len, inner;
    split(ndim, shape, axis, &outer, &len, &inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const int64_t base = o * len * inner + i;
            double sum = 0.0;
            for (int64_t j = 0; j < len; j++) sum += fabs((double)x[base + j * inner]);
            for (int64_t j = 0; j < len; j++) y[base + j * inner] = (double)x[base + j * inner] / (1.0 + sum);
        }
}

double ref_row_error(const float *y, const double *ref, int ndim, const int64_t *shape, int axis) {
    int64_t outer, len, inner;
    split(ndim, shape, axis, &outer, &len, &inner);
    double worst = 0.0;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const int64_t base = o * len * inner + i;
            double err = 0.0, scale = 1e-30;
            for (int64_t j = 0; j < len; j++) {
                double d = fabs((double)y[base + j * inner] - ref[base + j * inner]);
                if (isnan(d)) return NAN;
                if (d > err) err = d;
                if (fabs(ref[base + j * inner]) > scale) scale = fabs(ref[base + j * inner]);
            }
            if (err / scale > worst) worst = err / scale;
        }
    return worst;
}
