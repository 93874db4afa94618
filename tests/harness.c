#include "harness.h"
#include "model.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

test_log g_log;

/* Messages may come from several threads at once (the self-test's contexts). */
static pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;

void test_log_callback(spk_log_level level, const char *message, void *user) {
    (void)user;
    pthread_mutex_lock(&g_log_lock);
    if (strstr(message, "Vulkan validation")) {
        g_log.validation++;
        fprintf(stderr, "VALIDATION: %s\n", message);
    } else if (level <= SPK_LOG_WARNING) {
        g_log.warnings++;
    } else {
        fprintf(stderr, "info: %s\n", message);
    }
    snprintf(g_log.last, sizeof g_log.last, "%s", message);
    pthread_mutex_unlock(&g_log_lock);
}

spk_context *test_context(const spk_context_desc *extra) {
    spk_context_desc desc = {0};
    if (extra) desc = *extra;
    desc.validation = true;
    desc.log = test_log_callback;
    /* The rules, not a tuning file a developer's `softpick tune` left in ~/.cache, unless asked. */
    if (!desc.tuning_path && !getenv("SOFTPICK_TUNING")) desc.tuning_path = "";
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

spk_tensor *test_typed_tensor(spk_context *ctx, spk_dtype dtype, int ndim, const int64_t *shape, const float *data) {
    spk_tensor *t = NULL;
    assert_int_equal(spk_tensor_create_typed(ctx, dtype, ndim, shape, &t), SPK_OK);
    if (data) assert_int_equal(spk_tensor_upload(t, data, spk_tensor_count(t)), SPK_OK);
    else test_poison(t);
    return t;
}

spk_tensor *test_tensor(spk_context *ctx, int ndim, const int64_t *shape, const float *data) {
    return test_typed_tensor(ctx, SPK_DTYPE_F32, ndim, shape, data);
}

void test_round_to(spk_dtype dtype, float *data, int64_t n) {
    if (dtype == SPK_DTYPE_F32) return;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        assert_int_equal(spk_convert(&data[i], SPK_DTYPE_F32, &h, dtype, 1), SPK_OK);
        assert_int_equal(spk_convert(&h, dtype, &data[i], SPK_DTYPE_F32, 1), SPK_OK);
    }
}

double test_rel_error(const float *got, const double *want, int64_t n) {
    double err = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= err)) err = e;
        if (fabs(want[i]) > scale) scale = fabs(want[i]);
    }
    return err / (scale > 0 ? scale : 1);
}

/* The tensor as [outer, len, inner] around axis. */
static void split(int ndim, const int64_t *shape, int axis, int64_t *outer, int64_t *len, int64_t *inner) {
    int a = axis < 0 ? axis + ndim : axis;
    *outer = *inner = 1;
    for (int i = 0; i < a; i++) *outer *= shape[i];
    for (int i = a + 1; i < ndim; i++) *inner *= shape[i];
    *len = shape[a];
}

double ref_rect_term(double s, double m) { return fabs(s) < 0.5 ? exp(-m) * expm1(s) : exp(s - m) - exp(-m); }

void ref_normalize(spk_normalizer norm, const double *s, int64_t n, double *y) {
    double m = -INFINITY, sum = 0;
    for (int64_t j = 0; j < n; j++) m = fmax(m, s[j]);
    if (norm == SPK_NORMALIZER_SOFTPICK) {
        for (int64_t j = 0; j < n; j++) sum += fabs(s[j]);
        for (int64_t j = 0; j < n; j++) y[j] = s[j] / (1.0 + sum);
    } else if (norm == SPK_NORMALIZER_SOFTMAX) {
        for (int64_t j = 0; j < n; j++) sum += exp(s[j] - m);
        for (int64_t j = 0; j < n; j++) y[j] = exp(s[j] - m) / sum;
    } else {
        for (int64_t j = 0; j < n; j++) sum += fabs(ref_rect_term(s[j], m));
        for (int64_t j = 0; j < n; j++) y[j] = m <= 0 ? 0.0 : fmax(ref_rect_term(s[j], m), 0.0) / (sum + 1e-6);
    }
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

unsigned char *test_safetensors_bytes(const test_st_entry *entries, int count, const char *metadata_json,
                                      size_t *size) {
    size_t header_cap = 256 + (size_t)count * 256 + (metadata_json ? strlen(metadata_json) : 0);
    char *header = malloc(header_cap);
    assert_non_null(header);
    size_t n = (size_t)snprintf(header, header_cap, "{");
    if (metadata_json) n += (size_t)snprintf(header + n, header_cap - n, "\"__metadata__\":%s", metadata_json);
    size_t offset = 0, total = 0;
    for (int i = 0; i < count; i++) total += entries[i].bytes;
    for (int i = 0; i < count; i++) {
        const test_st_entry *e = &entries[i];
        n += (size_t)snprintf(header + n, header_cap - n, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                              (i || metadata_json) ? "," : "", e->name, e->dtype);
        for (int d = 0; d < e->ndim; d++)
            n += (size_t)snprintf(header + n, header_cap - n, "%s%lld", d ? "," : "", (long long)e->shape[d]);
        n += (size_t)snprintf(header + n, header_cap - n, "],\"data_offsets\":[%zu,%zu]}", offset, offset + e->bytes);
        offset += e->bytes;
    }
    n += (size_t)snprintf(header + n, header_cap - n, "}");
    while (n % 8) header[n++] = ' ';
    assert_true(n < header_cap);
    *size = 8 + n + total;
    unsigned char *out = malloc(*size);
    assert_non_null(out);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(out + 8, header, n);
    unsigned char *data = out + 8 + n;
    for (int i = 0; i < count; i++) {
        if (entries[i].bytes) memcpy(data, entries[i].data, entries[i].bytes);
        data += entries[i].bytes;
    }
    free(header);
    return out;
}

const char *test_write_file(const char *name, const void *bytes, size_t size) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", SOFTPICK_TEST_OUTPUT, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, size, f), size);
    fclose(f);
    return path;
}

const char *test_data_path(const char *relative) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", SOFTPICK_TEST_DATA, relative);
    return path;
}

/* SOFTPICK_TEST_FILTER=pattern runs only the matching tests of a program (cmocka's filter, '*'
 * and '?' wildcards): for timing or debugging one test. */
__attribute__((constructor)) static void test_filter_from_env(void) {
    const char *filter = getenv("SOFTPICK_TEST_FILTER");
    if (filter && *filter) cmocka_set_test_filter(filter);
}

void test_params_download(const spk_model *m, test_host_params *p) {
    p->count = spk__weights_list(&m->w, m->cfg.num_layers, p->tensors);
    for (uint32_t i = 0; i < p->count; i++) {
        p->values[i] = test_alloc_floats(p->tensors[i]->count);
        assert_int_equal(spk_tensor_download(p->tensors[i], p->values[i], p->tensors[i]->count), SPK_OK);
    }
}

void test_params_free(test_host_params *p) {
    for (uint32_t i = 0; i < p->count; i++) free(p->values[i]);
    p->count = 0;
}

static const float *host_of(const test_host_params *p, const spk_tensor *t) {
    for (uint32_t i = 0; i < p->count; i++)
        if (p->tensors[i] == t) return p->values[i];
    return NULL;
}

spk__ref_model test_ref_model(const spk_model *m, const test_host_params *p, spk__ref_layer *layers) {
    const spk__weights *w = &m->w;
    spk__ref_model r = {.cfg = m->cfg, .layers = layers};
    r.in_kernel = host_of(p, w->input_projection.kernel), r.in_bias = host_of(p, w->input_projection.bias);
    for (int l = 0; l < m->cfg.num_layers; l++) {
        const spk__layer *L = &w->layers[l];
        layers[l] = (spk__ref_layer){
            host_of(p, L->attn_norm.gamma), host_of(p, L->attn_norm.beta), host_of(p, L->qkv.kernel),
            host_of(p, L->qkv.bias),        host_of(p, L->out.kernel),      host_of(p, L->out.bias),
            host_of(p, L->ffn_norm.gamma),  host_of(p, L->ffn_norm.beta),   host_of(p, L->up.kernel),
            host_of(p, L->up.bias),         host_of(p, L->down.kernel),     host_of(p, L->down.bias),
        };
    }
    r.final_gamma = host_of(p, w->final_norm.gamma), r.final_beta = host_of(p, w->final_norm.beta);
    r.head_kernel = host_of(p, w->head.kernel), r.head_bias = host_of(p, w->head.bias);
    return r;
}

int64_t test_model_values(spk_model *m, bool gradients, float *out) {
    int64_t total = 0;
    for (int i = 0; i < spk_model_parameter_count(m); i++) {
        char name[128];
        int ndim;
        int64_t shape[2];
        if (spk_model_parameter_info(m, i, name, sizeof name, &ndim, shape) != SPK_OK) return -1;
        int64_t n = ndim == 2 ? shape[0] * shape[1] : shape[0];
        spk_status s = !out ? SPK_OK
                       : gradients ? spk_model_get_gradient(m, name, out + total, n)
                                   : spk_model_get_parameter(m, name, out + total, n);
        if (s != SPK_OK) return -1;
        total += n;
    }
    return total;
}
