/* The model: the golden cases, a float64 reference model over shapes and output modes, causality
 * and batch independence, random init, the device-tensor and staging paths, configuration and
 * weight-file errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model.h"
#include "safetensors.h"

#define E20 "golden/model-e20-h32-n4-l2/"
#define E48 "golden/model-e48-h48-n3-l3/"

/* ---- a float64 reference of SPEC.md section 2, reading weights by name -------------------- */

typedef struct ref_model {
    spk__safetensors st;
    int embed, hidden, heads, layers;
    spk_normalizer norm;
} ref_model;

/* The dtype the reference rounds the dense kernels to (16-bit weights: the values as stored). */
static spk_dtype g_ref_kernels = SPK_DTYPE_F32;

static double *ref_param(const ref_model *r, const char *prefix, const char *suffix) {
    char name[96];
    snprintf(name, sizeof name, "%s%s", prefix, suffix);
    const spk__st_tensor *t = spk__safetensors_find(&r->st, name);
    if (!t) fail_msg("reference: no tensor %s", name);
    float *f = test_alloc_floats((int64_t)t->count);
    spk__safetensors_to_f32(&r->st, t, f);
    if (strcmp(suffix, ".kernel") == 0) test_round_to(g_ref_kernels, f, (int64_t)t->count);
    double *d = malloc(t->count * sizeof *d);
    assert_non_null(d);
    for (uint64_t i = 0; i < t->count; i++) d[i] = f[i];
    free(f);
    return d;
}

/* y[rows, out] = x[rows, in] W + b (+ y if accumulate) */
static void ref_dense(const ref_model *r, const char *name, const double *x, int64_t rows, int in, int out,
                      bool gelu, bool accumulate, double *y) {
    double *w = ref_param(r, name, ".kernel"), *b = ref_param(r, name, ".bias");
    for (int64_t i = 0; i < rows; i++)
        for (int j = 0; j < out; j++) {
            double acc = b[j];
            for (int k = 0; k < in; k++) acc += x[i * in + k] * w[(int64_t)k * out + j];
            if (gelu) acc = 0.5 * acc * (1.0 + erf(acc / sqrt(2.0)));
            y[i * out + j] = accumulate ? y[i * out + j] + acc : acc;
        }
    free(w), free(b);
}

static void ref_norm(const ref_model *r, const char *name, const double *x, int64_t rows, int n, double *y) {
    double *g = ref_param(r, name, ".gamma"), *b = ref_param(r, name, ".beta");
    for (int64_t i = 0; i < rows; i++) {
        double mean = 0, var = 0;
        for (int j = 0; j < n; j++) mean += x[i * n + j];
        mean /= n;
        for (int j = 0; j < n; j++) var += (x[i * n + j] - mean) * (x[i * n + j] - mean);
        var /= n;
        for (int j = 0; j < n; j++) y[i * n + j] = (x[i * n + j] - mean) / sqrt(var + 1e-5) * g[j] + b[j];
    }
    free(g), free(b);
}

/* out: [batch, hidden] (last, mean) or [batch, seq, hidden] (all) */
static void ref_forward(const ref_model *r, const float *input, int64_t batch, int64_t seq, spk_output_mode mode,
                        double *out) {
    int h = r->hidden, e = r->embed, hd = h / r->heads;
    int64_t rows = batch * seq;
    double *x = malloc((size_t)(rows * h) * sizeof *x), *a = malloc((size_t)(rows * h) * sizeof *a);
    double *q = malloc((size_t)(rows * h) * sizeof *q), *k = malloc((size_t)(rows * h) * sizeof *k);
    double *v = malloc((size_t)(rows * h) * sizeof *v), *o = malloc((size_t)(rows * h) * sizeof *o);
    double *f = malloc((size_t)(rows * 4 * h) * sizeof *f), *s = malloc((size_t)seq * 2 * sizeof *s), *w = s + seq;
    double *in = malloc((size_t)(rows * e) * sizeof *in);
    assert_true(x && a && q && k && v && o && f && s && in);
    for (int64_t i = 0; i < rows * e; i++) in[i] = input[i];
    if (e != h) ref_dense(r, "input_projection", in, rows, e, h, false, false, x);
    else memcpy(x, in, (size_t)(rows * h) * sizeof *x);
    for (int l = 1; l <= r->layers; l++) {
        char p[64];
#define P(suffix) (snprintf(p, sizeof p, "softpick_block_%d_%s", l, suffix), p)
        ref_norm(r, P("attn_norm"), x, rows, h, a);
        ref_dense(r, P("attn_q_proj"), a, rows, h, h, false, false, q);
        ref_dense(r, P("attn_k_proj"), a, rows, h, h, false, false, k);
        ref_dense(r, P("attn_v_proj"), a, rows, h, h, false, false, v);
        for (int64_t b = 0; b < batch; b++)
            for (int head = 0; head < r->heads; head++)
                for (int64_t i = 0; i < seq; i++) {
                    const double *qi = q + (b * seq + i) * h + head * hd;
                    for (int64_t j = 0; j <= i; j++) { /* causal: the keys up to i */
                        const double *kj = k + (b * seq + j) * h + head * hd;
                        double dot = 0;
                        for (int d = 0; d < hd; d++) dot += qi[d] * kj[d];
                        s[j] = dot / sqrt((double)hd);
                    }
                    ref_normalize(r->norm, s, i + 1, w);
                    for (int d = 0; d < hd; d++) {
                        double acc = 0;
                        for (int64_t j = 0; j <= i; j++) acc += w[j] * v[(b * seq + j) * h + head * hd + d];
                        o[(b * seq + i) * h + head * hd + d] = acc;
                    }
                }
        ref_dense(r, P("attn_out_proj"), o, rows, h, h, false, true, x);
        ref_norm(r, P("ffn_norm"), x, rows, h, a);
        ref_dense(r, P("ffn_up"), a, rows, h, 4 * h, true, false, f);
        ref_dense(r, P("ffn_down"), f, rows, 4 * h, h, false, true, x);
#undef P
    }
    ref_norm(r, "final_norm", x, rows, h, a);
    for (int64_t b = 0; b < batch; b++)
        for (int j = 0; j < h; j++) {
            if (mode == SPK_OUTPUT_ALL) {
                for (int64_t t = 0; t < seq; t++) out[(b * seq + t) * h + j] = a[(b * seq + t) * h + j];
            } else if (mode == SPK_OUTPUT_MEAN) {
                double sum = 0;
                for (int64_t t = 0; t < seq; t++) sum += a[(b * seq + t) * h + j];
                out[b * h + j] = sum / (double)seq;
            } else {
                out[b * h + j] = a[(b * seq + seq - 1) * h + j];
            }
        }
    free(x), free(a), free(q), free(k), free(v), free(o), free(f), free(s), free(in);
}

static void ref_load(const char *dir, ref_model *r) {
    char path[256], error[256];
    snprintf(path, sizeof path, "%sweights.safetensors", dir);
    assert_int_equal(spk__safetensors_read(test_data_path(path), &r->st, error, sizeof error), SPK_OK);
    r->embed = atoi(spk__safetensors_metadata(&r->st, "embed_dim"));
    r->hidden = atoi(spk__safetensors_metadata(&r->st, "hidden_size"));
    r->heads = atoi(spk__safetensors_metadata(&r->st, "num_heads"));
    r->layers = atoi(spk__safetensors_metadata(&r->st, "num_layers"));
    const char *norm = spk__safetensors_metadata(&r->st, "attention");
    r->norm = SPK_NORMALIZER_SOFTPICK;
    if (norm) assert_int_equal(spk_normalizer_parse(norm, &r->norm), SPK_OK);
}

/* max |y - ref| / max |ref| */
static double rel_error(const float *y, const double *ref, int64_t n) {
    double max_err = 0, max_ref = 0;
    for (int64_t i = 0; i < n; i++) {
        double err = fabs(y[i] - ref[i]);
        if (!(err <= max_err)) max_err = err;
        if (fabs(ref[i]) > max_ref) max_ref = fabs(ref[i]);
    }
    return max_err / (max_ref > 0 ? max_ref : 1);
}

static spk_model *load_model(spk_context *ctx, const char *dir, spk_output_mode mode) {
    char path[256];
    snprintf(path, sizeof path, "%sweights.safetensors", dir);
    spk_model_config overrides = {.output_mode = mode};
    spk_model *m = NULL;
    spk_status s = spk_model_create_from_safetensors(ctx, test_data_path(path), &overrides, &m);
    if (s != SPK_OK) fail_msg("loading %s: %s", path, spk_context_last_error(ctx));
    return m;
}

/* Runs a forward and returns its output (malloc'd), checking its element count. */
static float *forward(spk_model *m, const float *x, int64_t batch, int64_t seq) {
    int ndim;
    int64_t shape[3];
    int64_t n = spk_model_output_shape(m, batch, seq, &ndim, shape);
    assert_true(n > 0);
    float *y = test_alloc_floats(n);
    spk_status s = spk_model_forward(m, x, batch, seq, y);
    if (s != SPK_OK) fail_msg("forward: %s", spk_context_last_error(m->ctx));
    return y;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void golden(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    /* The seed's softpick, and the other normalizers (-large-scores: scores near 190 in size,
     * where only a shifted exponential stays finite). */
    const char *dirs[] = {E20, E48, "golden/model-e20-h32-n4-l2-rectified/", "golden/model-e48-h48-n3-l3-softmax/",
                          "golden/model-e24-h32-n2-l2-rectified-large-scores/",
                          "golden/model-e24-h32-n2-l2-softmax-large-scores/"};
    for (int i = 0; i < 6; i++) {
        char path[256], error[256];
        spk_array x, expected;
        snprintf(path, sizeof path, "%sinput.npy", dirs[i]);
        assert_int_equal(spk_npy_read(test_data_path(path), &x, error, sizeof error), SPK_OK);
        snprintf(path, sizeof path, "%sexpected.npy", dirs[i]);
        assert_int_equal(spk_npy_read(test_data_path(path), &expected, error, sizeof error), SPK_OK);
        spk_model *m = load_model(ctx, dirs[i], SPK_OUTPUT_LAST);
        float *y = forward(m, x.data, x.shape[0], x.shape[1]);
        double *ref = malloc((size_t)expected.count * sizeof *ref);
        assert_non_null(ref);
        for (int64_t j = 0; j < expected.count; j++) ref[j] = expected.data[j];
        double err = rel_error(y, ref, expected.count);
        if (!(err <= 1e-3)) fail_msg("%s: error %.3g against the golden output", dirs[i], err);
        /* The test's own float64 reference agrees with the independent one. */
        ref_model r;
        ref_load(dirs[i], &r);
        ref_forward(&r, x.data, x.shape[0], x.shape[1], SPK_OUTPUT_LAST, ref);
        float *expected_f = expected.data;
        assert_true(rel_error(expected_f, ref, expected.count) <= 1e-6);
        print_message("%s: relative error %.2e\n", dirs[i], err);
        spk__safetensors_free(&r.st);
        free(ref), free(y);
        spk_model_destroy(m);
        spk_array_free(&x), spk_array_free(&expected);
    }
    test_assert_no_validation();
}

/* Sequence lengths other than the window, batch 1 and 33, every output mode. */
static void shapes_and_modes(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    ref_model r;
    ref_load(E20, &r);
    static const struct {
        int64_t batch, seq;
    } cases[] = {{1, 9}, {1, 1}, {1, 40}, {33, 5}, {33, 12}, {2, 70}};
    for (int mode = 0; mode < 3; mode++) {
        spk_model *m = load_model(ctx, E20, (spk_output_mode)mode);
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            int64_t batch = cases[i].batch, seq = cases[i].seq, n_in = batch * seq * r.embed;
            float *x = test_alloc_floats(n_in);
            test_fill_random(x, n_in, 1000 + i);
            float *y = forward(m, x, batch, seq);
            int ndim;
            int64_t shape[3], n = spk_model_output_shape(m, batch, seq, &ndim, shape);
            double *ref = malloc((size_t)n * sizeof *ref);
            assert_non_null(ref);
            ref_forward(&r, x, batch, seq, (spk_output_mode)mode, ref);
            double err = rel_error(y, ref, n);
            if (!(err <= 1e-3))
                fail_msg("mode %d batch %lld seq %lld: error %.3g", mode, (long long)batch, (long long)seq, err);
            free(x), free(y), free(ref);
        }
        spk_model_destroy(m);
    }
    spk__safetensors_free(&r.st);
    test_assert_no_validation();
}

/* Row t of an `all` forward is the `last` output of a forward on the first t + 1 positions; a
 * batch row's output does not depend on the other rows. */
static void causality_and_batch_independence(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    spk_model *all = load_model(ctx, E48, SPK_OUTPUT_ALL), *last = load_model(ctx, E48, SPK_OUTPUT_LAST);
    const int64_t seq = 20, e = 48, h = 48;
    float *x = test_alloc_floats(seq * e);
    test_fill_random(x, seq * e, 5);
    float *y_all = forward(all, x, 1, seq);
    for (int64_t t = 0; t < seq; t += 3) {
        float *y = forward(last, x, 1, t + 1);
        double ref[48];
        for (int j = 0; j < h; j++) ref[j] = y_all[t * h + j];
        double err = rel_error(y, ref, h);
        if (!(err <= 1e-5)) fail_msg("position %lld: error %.3g", (long long)t, err);
        free(y);
    }
    /* batch 33: each row alone gives the same */
    const int64_t batch = 33;
    float *xb = test_alloc_floats(batch * seq * e);
    test_fill_random(xb, batch * seq * e, 6);
    float *yb = forward(last, xb, batch, seq);
    for (int64_t b = 0; b < batch; b += 8) {
        float *y = forward(last, xb + b * seq * e, 1, seq);
        double ref[48];
        for (int j = 0; j < h; j++) ref[j] = yb[b * h + j];
        double err = rel_error(y, ref, h);
        if (!(err <= 1e-5)) fail_msg("batch row %lld: error %.3g", (long long)b, err);
        free(y);
    }
    free(x), free(y_all), free(xb), free(yb);
    spk_model_destroy(all);
    spk_model_destroy(last);
    test_assert_no_validation();
}

/* Random init: deterministic per seed, glorot bounds, zero biases, unit gamma. */
/* The parameter list: every name of the file format with its shape, in the file's order. */
static void parameter_list(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    spk_model_config cfg = spk_model_config_default(24);
    cfg.hidden_size = 32, cfg.num_layers = 2, cfg.num_outputs = 3;
    spk_model *m = NULL;
    assert_int_equal(spk_model_create(ctx, &cfg, &m), SPK_OK);
    int n = spk_model_parameter_count(m);
    assert_int_equal(n, 2 + 16 * 2 + 2 + 2);
    char name[128];
    int ndim;
    int64_t shape[2];
    assert_int_equal(spk_model_parameter_info(m, 0, name, sizeof name, &ndim, shape), SPK_OK);
    assert_string_equal(name, "input_projection.kernel");
    assert_true(ndim == 2 && shape[0] == 24 && shape[1] == 32);
    assert_int_equal(spk_model_parameter_info(m, 5, name, sizeof name, &ndim, shape), SPK_OK);
    assert_string_equal(name, "softpick_block_1_attn_q_proj.bias");
    assert_true(ndim == 1 && shape[0] == 32);
    assert_int_equal(spk_model_parameter_info(m, n - 2, name, sizeof name, &ndim, shape), SPK_OK);
    assert_string_equal(name, "output_head.kernel");
    assert_true(ndim == 2 && shape[0] == 32 && shape[1] == 3);
    for (int i = 0; i < n; i++) { /* each one readable under its name, at its size */
        assert_int_equal(spk_model_parameter_info(m, i, name, sizeof name, &ndim, shape), SPK_OK);
        int64_t count = ndim == 2 ? shape[0] * shape[1] : shape[0];
        float *v = test_alloc_floats(count);
        assert_int_equal(spk_model_get_parameter(m, name, v, count), SPK_OK);
        free(v);
    }
    assert_int_equal(spk_model_parameter_info(m, n, name, sizeof name, &ndim, shape), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_model_parameter_info(m, -1, name, sizeof name, &ndim, shape), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_model_parameter_info(m, 0, NULL, 0, &ndim, shape), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_model_parameter_count(NULL), 0);
    spk_model_destroy(m);
    test_assert_no_validation();
}

static void random_init(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    spk_model_config cfg = spk_model_config_default(24);
    cfg.hidden_size = 32, cfg.num_layers = 2, cfg.window_size = 8;
    spk_model *a = NULL, *b = NULL;
    assert_int_equal(spk_model_create(ctx, &cfg, &a), SPK_OK);
    assert_int_equal(spk_model_create(ctx, &cfg, &b), SPK_OK);
    assert_int_equal(spk_model_init_random(a, 7), SPK_OK);
    assert_int_equal(spk_model_init_random(b, 7), SPK_OK);
    float *x = test_alloc_floats(2 * 8 * 24);
    test_fill_random(x, 2 * 8 * 24, 3);
    float *ya = forward(a, x, 2, 8), *yb = forward(b, x, 2, 8);
    assert_memory_equal(ya, yb, 2 * 32 * sizeof(float));
    assert_int_equal(spk_model_init_random(b, 8), SPK_OK);
    float *yc = forward(b, x, 2, 8);
    assert_memory_not_equal(ya, yc, 2 * 32 * sizeof(float));

    /* ffn_up kernel [32, 128]: U(-limit, limit), limit = sqrt(6 / 160) */
    const spk_tensor *up = a->w.layers[1].up.kernel;
    float *w = test_alloc_floats(up->count), *bias = test_alloc_floats(128), *gamma = test_alloc_floats(32);
    assert_int_equal(spk_tensor_download(up, w, up->count), SPK_OK);
    assert_int_equal(spk_tensor_download(a->w.layers[1].up.bias, bias, 128), SPK_OK);
    assert_int_equal(spk_tensor_download(a->w.final_norm.gamma, gamma, 32), SPK_OK);
    double limit = sqrt(6.0 / 160.0), max = 0, mean = 0;
    for (int64_t i = 0; i < up->count; i++) {
        assert_true(fabs(w[i]) <= limit);
        if (fabs(w[i]) > max) max = fabs(w[i]);
        mean += w[i];
    }
    assert_true(max > 0.95 * limit);
    assert_true(fabs(mean / (double)up->count) < 0.05 * limit);
    for (int i = 0; i < 128; i++) assert_true(bias[i] == 0.0f);
    for (int i = 0; i < 32; i++) assert_true(gamma[i] == 1.0f);
    free(w), free(bias), free(gamma), free(x), free(ya), free(yb), free(yc);
    spk_model_destroy(a);
    spk_model_destroy(b);
    test_assert_no_validation();
}

/* spk_model_forward_tensors, and the staging path of devices without host-visible tensors, give
 * what the host path gives. */
static void device_tensors_and_staging(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    spk_model *m = load_model(ctx, E20, SPK_OUTPUT_ALL);
    const int64_t batch = 3, seq = 11, n_in = batch * seq * 20, n_out = batch * seq * 32;
    float *x = test_alloc_floats(n_in), *y = test_alloc_floats(n_out);
    test_fill_random(x, n_in, 11);
    float *expected = forward(m, x, batch, seq);
    int64_t in_shape[3] = {batch, seq, 20}, out_shape[3] = {batch, seq, 32};
    spk_tensor *tin = NULL, *tout = NULL;
    assert_int_equal(spk_tensor_create(ctx, 3, in_shape, &tin), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 3, out_shape, &tout), SPK_OK);
    assert_int_equal(spk_tensor_upload(tin, x, n_in), SPK_OK);
    test_poison(tout);
    assert_int_equal(spk_model_forward_tensors(m, tin, tout), SPK_OK);
    assert_int_equal(spk_tensor_download(tout, y, n_out), SPK_OK);
    assert_memory_equal(y, expected, (size_t)n_out * sizeof(float));
    /* wrong output shape */
    assert_int_equal(spk_model_forward_tensors(m, tin, tin), SPK_ERROR_SHAPE);
    spk_model_destroy(m);

    ctx->force_staging = true; /* models created now copy through staging buffers */
    m = load_model(ctx, E20, SPK_OUTPUT_ALL);
    assert_non_null(m->staging.block);
    float *staged = forward(m, x, batch, seq);
    assert_memory_equal(staged, expected, (size_t)n_out * sizeof(float));
    ctx->force_staging = false;
    spk_model_destroy(m);
    spk_tensor_destroy(tin), spk_tensor_destroy(tout);
    free(x), free(y), free(expected), free(staged);
    test_assert_no_validation();
}

static void config_errors(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    char error[200];
    spk_model_config c = spk_model_config_default(16);
    assert_int_equal(spk_model_config_check(&c, error, sizeof error), SPK_OK);
    assert_int_equal(spk_model_output_size(&c), 256);
    assert_int_equal(c.num_heads, 4);
    assert_int_equal(c.num_layers, 6);
    assert_int_equal(c.window_size, 60);
    assert_true(c.dropout == 0.1f);
    spk_model_config h = c;
    h.hidden_size = 30;
    assert_int_equal(spk_model_config_check(&h, error, sizeof error), SPK_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(error, "not divisible"));
    spk_model *m = NULL;
    assert_int_equal(spk_model_create(ctx, &h, &m), SPK_ERROR_INVALID_ARGUMENT);
    assert_null(m);
    assert_non_null(strstr(spk_context_last_error(ctx), "not divisible"));
    int *fields[] = {&h.embed_dim, &h.hidden_size, &h.num_heads, &h.num_layers, &h.window_size};
    for (int i = 0; i < 5; i++) {
        h = c;
        *fields[i] = 0;
        assert_int_equal(spk_model_config_check(&h, error, sizeof error), SPK_ERROR_INVALID_ARGUMENT);
        *fields[i] = -3;
        assert_int_equal(spk_model_config_check(&h, error, sizeof error), SPK_ERROR_INVALID_ARGUMENT);
        assert_non_null(strstr(error, "> 0"));
    }
    h = c;
    h.dropout = 1.5f;
    assert_int_equal(spk_model_config_check(&h, error, sizeof error), SPK_ERROR_INVALID_ARGUMENT);
    h = c;
    h.output_mode = (spk_output_mode)7;
    assert_int_equal(spk_model_config_check(&h, error, sizeof error), SPK_ERROR_INVALID_ARGUMENT);
    h = c;
    h.hidden_size = 1024, h.num_heads = 2;
    assert_int_equal(spk_model_config_check(&h, error, sizeof error), SPK_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(error, "head size"));

    /* forward arguments */
    c.hidden_size = 16, c.num_layers = 1, c.window_size = 4;
    assert_int_equal(spk_model_create(ctx, &c, &m), SPK_OK);
    assert_int_equal(spk_model_init_random(m, 1), SPK_OK);
    float x[64], y[64];
    memset(x, 0, sizeof x);
    assert_int_equal(spk_model_forward(m, x, 0, 4, y), SPK_ERROR_SHAPE);
    assert_int_equal(spk_model_forward(m, x, 1, -1, y), SPK_ERROR_SHAPE);
    assert_int_equal(spk_model_forward(m, NULL, 1, 4, y), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_model_forward(m, x, (int64_t)1 << 40, 1 << 20, y), SPK_ERROR_TOO_LARGE);
    assert_int_equal(spk_model_set_output_mode(m, (spk_output_mode)9), SPK_ERROR_INVALID_ARGUMENT);
    spk_model_destroy(m);
    test_assert_no_validation();
}

/* 16-bit weights: each golden model with its dense kernels stored as F16 and BF16 (the float32
 * file rounded once at load) against float64 on the same rounded kernels; half the kernel bytes;
 * training refused. */
static void half_weights(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    const char *dirs[] = {E20, E48};
    for (int i = 0; i < 2; i++) {
        char path[256], error[256];
        spk_array x;
        snprintf(path, sizeof path, "%sinput.npy", dirs[i]);
        assert_int_equal(spk_npy_read(test_data_path(path), &x, error, sizeof error), SPK_OK);
        ref_model r;
        ref_load(dirs[i], &r);
        uint64_t kernel_bytes = 0; /* as float32 */
        for (uint32_t t = 0; t < r.st.tensor_count; t++)
            if (strstr(r.st.tensors[t].name, ".kernel")) kernel_bytes += 4 * r.st.tensors[t].count;
        spk_model *m32 = load_model(ctx, dirs[i], SPK_OUTPUT_LAST);
        free(forward(m32, x.data, x.shape[0], x.shape[1])); /* activations for this shape */
        spk_model_memory_info mem32, mem16;
        assert_int_equal(spk_model_memory(m32, &mem32), SPK_OK);
        /* Weights F16 / BF16 with float32 activations, and F16 activations with every weight type. */
        static const spk_dtype combos[5][2] = {{SPK_DTYPE_F16, SPK_DTYPE_F32}, {SPK_DTYPE_BF16, SPK_DTYPE_F32},
                                               {SPK_DTYPE_F32, SPK_DTYPE_F16}, {SPK_DTYPE_F16, SPK_DTYPE_F16},
                                               {SPK_DTYPE_BF16, SPK_DTYPE_F16}};
        for (int c = 0; c < (ctx->caps.storage16 ? 5 : 2); c++) {
            spk_dtype dt = combos[c][0], at = combos[c][1];
            snprintf(path, sizeof path, "%sweights.safetensors", dirs[i]);
            spk_model_config overrides = {.weights_dtype = dt, .activation_dtype = at};
            spk_model *m = NULL;
            assert_int_equal(spk_model_create_from_safetensors(ctx, test_data_path(path), &overrides, &m), SPK_OK);
            assert_int_equal(m->w.layers[0].up.kernel->dtype, dt);
            assert_int_equal(m->w.layers[0].up.bias->dtype, SPK_DTYPE_F32);
            assert_int_equal(m->x->dtype, at);
            float *y = forward(m, x.data, x.shape[0], x.shape[1]);
            int64_t n = x.shape[0] * r.hidden;
            double *ref = malloc((size_t)n * sizeof *ref);
            assert_non_null(ref);
            g_ref_kernels = dt;
            ref_forward(&r, x.data, x.shape[0], x.shape[1], SPK_OUTPUT_LAST, ref);
            g_ref_kernels = SPK_DTYPE_F32;
            double err = rel_error(y, ref, n);
            /* SPEC's bounds: 1e-3 with 16-bit weights, 1e-2 with F16 activations too (they round
             * between kernels, which the reference does not). */
            double bound = at == SPK_DTYPE_F16 ? 1e-2 : 1e-3;
            print_message("%s %s weights, %s activations: relative error %.2e against float64 on the rounded weights "
                          "(bound %.0e)\n",
                          dirs[i], spk_dtype_name(dt), spk_dtype_name(at), err, bound);
            if (!(err <= bound)) fail_msg("%s %s/%s: error %.3g", dirs[i], spk_dtype_name(dt), spk_dtype_name(at), err);
            assert_int_equal(spk_model_memory(m, &mem16), SPK_OK);
            assert_int_equal(mem16.weights, mem32.weights - (dt == SPK_DTYPE_F32 ? 0 : kernel_bytes / 2));
            if (at == SPK_DTYPE_F32) assert_int_equal(mem16.activations, mem32.activations);
            else assert_true(mem16.activations < mem32.activations * 0.6);
            assert_int_equal(mem16.training, 0);
            /* The other output modes (mean pools F16 rows through the matmul's 16-bit B). */
            for (int mode = SPK_OUTPUT_ALL; mode <= SPK_OUTPUT_MEAN && at == SPK_DTYPE_F16 && i == 0; mode++) {
                assert_int_equal(spk_model_set_output_mode(m, (spk_output_mode)mode), SPK_OK);
                int64_t count = (mode == SPK_OUTPUT_ALL ? x.shape[1] : 1) * n;
                double *mref = malloc((size_t)count * sizeof *mref);
                assert_non_null(mref);
                float *my = forward(m, x.data, x.shape[0], x.shape[1]);
                g_ref_kernels = dt;
                ref_forward(&r, x.data, x.shape[0], x.shape[1], (spk_output_mode)mode, mref);
                g_ref_kernels = SPK_DTYPE_F32;
                double e = rel_error(my, mref, count);
                if (!(e <= 1e-2)) fail_msg("mode %d with F16 activations: error %.3g", mode, e);
                free(my), free(mref);
            }
            float *target = calloc((size_t)n, sizeof *target); /* the output's count, as the API reads */
            assert_non_null(target);
            assert_int_equal(spk_model_grad(m, x.data, x.shape[0], x.shape[1], SPK_LOSS_MSE, target, NULL),
                             SPK_ERROR_UNSUPPORTED);
            free(target);
            assert_non_null(strstr(spk_context_last_error(ctx), "training keeps float32 weights and activations"));
            free(y), free(ref);
            spk_model_destroy(m);
        }
        spk_model_destroy(m32);
        spk__safetensors_free(&r.st);
        spk_array_free(&x);
    }
    test_assert_no_validation();
}

/* ---- weight files ------------------------------------------------------------------------- */

/* The E20 golden file's tensors as entries, to be edited and written back. */
typedef struct file_edit {
    spk__safetensors st;
    test_st_entry entries[64];
    int count;
} file_edit;

static void edit_load(file_edit *f) {
    char error[256];
    assert_int_equal(spk__safetensors_read(test_data_path(E20 "weights.safetensors"), &f->st, error, sizeof error),
                     SPK_OK);
    f->count = (int)f->st.tensor_count;
    for (int i = 0; i < f->count; i++) {
        const spk__st_tensor *t = &f->st.tensors[i];
        f->entries[i] = (test_st_entry){t->name, "F32", t->ndim, {0}, f->st.data + t->begin, t->end - t->begin};
        for (int d = 0; d < t->ndim; d++) f->entries[i].shape[d] = t->shape[d];
    }
}

static int edit_find(file_edit *f, const char *name) {
    for (int i = 0; i < f->count; i++)
        if (strcmp(f->entries[i].name, name) == 0) return i;
    fail_msg("no tensor %s", name);
    return -1;
}

#define E20_METADATA "{\"embed_dim\":\"20\",\"hidden_size\":\"32\",\"num_heads\":\"4\",\"num_layers\":\"2\"}"

/* Writes the edited file and expects spk_model_create_from_safetensors to fail with `status` and a
 * message containing `expect`. */
static void expect_load_error(file_edit *f, const char *metadata, spk_status status, const char *expect) {
    spk_context *ctx = test_shared_context();
    size_t size;
    unsigned char *bytes = test_safetensors_bytes(f->entries, f->count, metadata, &size);
    const char *path = test_write_file("bad.safetensors", bytes, size);
    spk_model *m = NULL;
    spk_status s = spk_model_create_from_safetensors(ctx, path, NULL, &m);
    if (s != status || !strstr(spk_context_last_error(ctx), expect))
        fail_msg("status %d, message '%s'; expected %d and '%s'", s, spk_context_last_error(ctx), status, expect);
    assert_null(m);
    free(bytes);
}

static void bad_files(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    file_edit f;
    edit_load(&f);
    expect_load_error(&f, "{\"embed_dim\":\"20\",\"hidden_size\":\"32\",\"num_heads\":\"5\"}",
                      SPK_ERROR_INVALID_ARGUMENT, "not divisible by num_heads 5");
    expect_load_error(&f, "{\"num_heads\":\"four\"}", SPK_ERROR_FORMAT, "num_heads");

    int q = edit_find(&f, "softpick_block_2_attn_q_proj.kernel");
    test_st_entry saved = f.entries[q];
    test_st_entry moved = f.entries[f.count - 1];
    f.entries[q] = moved, f.count--; /* missing */
    expect_load_error(&f, E20_METADATA, SPK_ERROR_FORMAT, "lack tensor 'softpick_block_2_attn_q_proj.kernel'");
    f.entries[q] = saved, f.entries[f.count++] = moved;

    f.entries[q].shape[0] = 16, f.entries[q].shape[1] = 64; /* same bytes, wrong shape */
    expect_load_error(&f, E20_METADATA, SPK_ERROR_FORMAT, "'softpick_block_2_attn_q_proj.kernel' has shape [16, 64]");
    f.entries[q] = saved;

    f.entries[f.count++] = (test_st_entry){"extra.bias", "F32", 1, {1}, saved.data, 4};
    expect_load_error(&f, E20_METADATA, SPK_ERROR_FORMAT, "unexpected tensor 'extra.bias'");
    f.count--;

    f.entries[q].dtype = "I32";
    expect_load_error(&f, E20_METADATA, SPK_ERROR_FORMAT, "unsupported dtype 'I32'");
    f.entries[q] = saved;

    /* Raw damage: truncated, a header length past the end, offsets past the end or overlapping. */
    size_t size;
    unsigned char *bytes = test_safetensors_bytes(f.entries, f.count, E20_METADATA, &size);
    spk_model *m = NULL;
    const char *path = test_write_file("bad.safetensors", bytes, size - 100);
    assert_int_equal(spk_model_create_from_safetensors(ctx, path, NULL, &m), SPK_ERROR_FORMAT);
    assert_non_null(strstr(spk_context_last_error(ctx), "outside"));
    path = test_write_file("bad.safetensors", bytes, 5);
    assert_int_equal(spk_model_create_from_safetensors(ctx, path, NULL, &m), SPK_ERROR_FORMAT);
    assert_non_null(strstr(spk_context_last_error(ctx), "truncated"));
    bytes[5] = 1;
    path = test_write_file("bad.safetensors", bytes, size);
    assert_int_equal(spk_model_create_from_safetensors(ctx, path, NULL, &m), SPK_ERROR_FORMAT);
    assert_non_null(strstr(spk_context_last_error(ctx), "past the end"));
    free(bytes);
    const char *overlap = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}";
    size_t n = strlen(overlap);
    bytes = calloc(1, 8 + n + 12);
    bytes[0] = (unsigned char)n;
    memcpy(bytes + 8, overlap, n);
    path = test_write_file("bad.safetensors", bytes, 8 + n + 12);
    assert_int_equal(spk_model_create_from_safetensors(ctx, path, NULL, &m), SPK_ERROR_FORMAT);
    assert_non_null(strstr(spk_context_last_error(ctx), "overlap"));
    free(bytes);
    assert_int_equal(spk_model_create_from_safetensors(ctx, "/nonexistent.safetensors", NULL, &m), SPK_ERROR_IO);

    /* A failed load leaves a model's parameters as they were. */
    spk_model *good = load_model(ctx, E20, SPK_OUTPUT_LAST);
    float x[9 * 20];
    test_fill_random(x, 9 * 20, 2);
    float *before = forward(good, x, 1, 9);
    f.entries[q].shape[0] = 16, f.entries[q].shape[1] = 64;
    bytes = test_safetensors_bytes(f.entries, f.count, E20_METADATA, &size);
    path = test_write_file("bad.safetensors", bytes, size);
    assert_int_equal(spk_model_load_safetensors(good, path), SPK_ERROR_FORMAT);
    float *after = forward(good, x, 1, 9);
    assert_memory_equal(before, after, 32 * sizeof(float));
    free(bytes), free(before), free(after);
    spk_model_destroy(good);
    spk__safetensors_free(&f.st);
    test_assert_no_validation();
}

/* Files that store 16-bit tensors: kernels in F16 and the 1-D tensors in BF16. With F16 weights
 * the kernels arrive as the file's bytes; as BF16 they are rounded once; the 1-D tensors widen
 * to float32 exactly; the forward matches float64 on the file's values. Sizes that do not match
 * a 16-bit dtype are refused. */
static void half_files(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    file_edit f;
    edit_load(&f);
    void *converted[64] = {0};
    for (int i = 0; i < f.count; i++) {
        test_st_entry *e = &f.entries[i];
        bool kernel = strstr(e->name, ".kernel") != NULL;
        size_t n = e->bytes / 4;
        converted[i] = malloc(2 * n);
        assert_non_null(converted[i]);
        assert_int_equal(spk_convert(e->data, SPK_DTYPE_F32, converted[i], kernel ? SPK_DTYPE_F16 : SPK_DTYPE_BF16, n),
                         SPK_OK);
        e->dtype = kernel ? "F16" : "BF16", e->data = converted[i], e->bytes = 2 * n;
    }
    size_t size;
    unsigned char *bytes = test_safetensors_bytes(f.entries, f.count, E20_METADATA, &size);
    const char *path = test_write_file("half.safetensors", bytes, size);
    int up = edit_find(&f, "softpick_block_1_ffn_up.kernel");
    size_t up_count = f.entries[up].bytes / 2;
    uint16_t *raw = malloc(2 * up_count), *want = malloc(2 * up_count);
    assert_true(raw && want);
    float x[9 * 20];
    test_fill_random(x, 9 * 20, 4);
    ref_model r;
    assert_int_equal(spk__safetensors_read(path, &r.st, (char[256]){0}, 256), SPK_OK);
    r.embed = 20, r.hidden = 32, r.heads = 4, r.layers = 2, r.norm = SPK_NORMALIZER_SOFTPICK;
    double ref[32];
    ref_forward(&r, x, 1, 9, SPK_OUTPUT_LAST, ref);
    for (int dt = SPK_DTYPE_F32; dt <= SPK_DTYPE_BF16; dt++) {
        spk_model_config overrides = {.weights_dtype = (spk_dtype)dt};
        spk_model *m = NULL;
        assert_int_equal(spk_model_create_from_safetensors(ctx, path, &overrides, &m), SPK_OK);
        if (dt != SPK_DTYPE_F32) {
            assert_int_equal(spk_tensor_download_raw(m->w.layers[0].up.kernel, raw, 2 * up_count), SPK_OK);
            assert_int_equal(spk_convert(f.entries[up].data, SPK_DTYPE_F16, want, (spk_dtype)dt, up_count), SPK_OK);
            assert_memory_equal(raw, want, 2 * up_count);
        }
        float *y = forward(m, x, 1, 9);
        double err = rel_error(y, ref, 32);
        /* BF16 rounds the F16 kernels again: only F32 and F16 compute on the file's exact values. */
        if (dt != SPK_DTYPE_BF16 && !(err <= 1e-5)) fail_msg("%s from an F16 file: error %.3g", spk_dtype_name((spk_dtype)dt), err);
        if (!(err <= 1e-2)) fail_msg("bf16 from an F16 file: error %.3g", err);
        free(y);
        spk_model_destroy(m);
    }
    spk__safetensors_free(&r.st);
    free(bytes), free(raw), free(want);

    /* A 16-bit dtype with float32's bytes (the source file's), and the reverse. */
    int q = edit_find(&f, "softpick_block_2_attn_q_proj.kernel");
    test_st_entry saved = f.entries[q];
    const spk__st_tensor *f32 = spk__safetensors_find(&f.st, saved.name);
    f.entries[q].data = f.st.data + f32->begin, f.entries[q].bytes = f32->end - f32->begin;
    expect_load_error(&f, E20_METADATA, SPK_ERROR_FORMAT, "softpick_block_2_attn_q_proj.kernel': data_offsets span");
    f.entries[q] = saved;
    f.entries[q].dtype = "F32";
    expect_load_error(&f, E20_METADATA, SPK_ERROR_FORMAT, "its shape needs");
    for (int i = 0; i < f.count; i++) free(converted[i]);
    spk__safetensors_free(&f.st);
    test_assert_no_validation();
}

/* Config from metadata with overrides, and from shapes when the metadata is absent. */
static void config_from_file(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    spk_model *m = load_model(ctx, E48, SPK_OUTPUT_MEAN);
    const spk_model_config *c = spk_model_get_config(m);
    assert_int_equal(c->embed_dim, 48);
    assert_int_equal(c->hidden_size, 48);
    assert_int_equal(c->num_heads, 3);
    assert_int_equal(c->num_layers, 3);
    assert_int_equal(c->window_size, 33);
    assert_int_equal(c->output_mode, SPK_OUTPUT_MEAN);
    spk_model_destroy(m);

    file_edit f;
    edit_load(&f);
    size_t size;
    unsigned char *bytes = test_safetensors_bytes(f.entries, f.count, NULL, &size);
    const char *path = test_write_file("no_metadata.safetensors", bytes, size);
    spk_model_config overrides = {.num_heads = 2};
    assert_int_equal(spk_model_create_from_safetensors(ctx, path, &overrides, &m), SPK_OK);
    c = spk_model_get_config(m);
    assert_int_equal(c->embed_dim, 20);
    assert_int_equal(c->hidden_size, 32);
    assert_int_equal(c->num_layers, 2);
    assert_int_equal(c->num_heads, 2);
    spk_model_destroy(m);
    /* an override that contradicts the tensors is a shape error naming the tensor */
    overrides = (spk_model_config){.num_layers = 3};
    assert_int_equal(spk_model_create_from_safetensors(ctx, path, &overrides, &m), SPK_ERROR_FORMAT);
    assert_non_null(strstr(spk_context_last_error(ctx), "softpick_block_3"));
    free(bytes);
    spk__safetensors_free(&f.st);
    test_assert_no_validation();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(golden),
        cmocka_unit_test(half_weights),
        cmocka_unit_test(shapes_and_modes),
        cmocka_unit_test(causality_and_batch_independence),
        cmocka_unit_test(parameter_list),
        cmocka_unit_test(random_init),
        cmocka_unit_test(device_tensors_and_staging),
        cmocka_unit_test(config_errors),
        cmocka_unit_test(bad_files),
        cmocka_unit_test(half_files),
        cmocka_unit_test(config_from_file),
    };
    return cmocka_run_group_tests(tests, NULL, test_teardown_shared_context);
}
