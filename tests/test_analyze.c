/* spk_model_analyze (src/analyze.c, shaders/analyze.comp) against the same measurements computed
 * here in float64 from the reference model's per-layer q, k and hidden states (src/reference.c's
 * forward with a probe), for each normalizer; a model whose every score is equal, where the sink
 * rate is known on paper (uniform weights: the first key's mean weight over seq queries is
 * H(seq) / seq, above 0.3 at seq 7, below at 12); F16 activations; the errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model.h"

enum { BATCH = 3, EMBED = 6, HIDDEN = 8, HEADS = 2, LAYERS = 2, MAX_SEQ = 12 };

typedef struct want {
    spk_normalizer norm;
    int64_t seq;
    spk_head_analysis heads[LAYERS * HEADS];
    spk_layer_analysis layers[LAYERS];
} want;

/* The reference forward's probe: layer l's measurements in float64, from their definitions. */
static void measure(void *user, int l, const double *qkv, const double *x) {
    want *w = user;
    int64_t seq = w->seq, rows = BATCH * seq, hd = HIDDEN / HEADS;
    for (int h = 0; h < HEADS; h++) {
        double sinks = 0, zeros = 0, abs_sum = 0, first = 0;
        for (int64_t b = 0; b < BATCH; b++) {
            double sample_first = 0;
            for (int64_t i = 0; i < seq; i++) {
                double s[MAX_SEQ], y[MAX_SEQ];
                const double *q = qkv + (b * seq + i) * 3 * HIDDEN + h * hd;
                for (int64_t j = 0; j <= i; j++) {
                    const double *k = qkv + (b * seq + j) * 3 * HIDDEN + HIDDEN + h * hd;
                    s[j] = 0;
                    for (int64_t d = 0; d < hd; d++) s[j] += q[d] * k[d];
                    s[j] /= sqrt((double)hd);
                }
                ref_normalize(w->norm, s, i + 1, y);
                sample_first += y[0];
                for (int64_t j = 0; j <= i; j++) zeros += y[j] == 0.0, abs_sum += fabs(y[j]);
            }
            first += sample_first;
            sinks += sample_first / (double)seq > 0.3;
        }
        double queries = (double)(BATCH * seq);
        w->heads[l * HEADS + h] = (spk_head_analysis){sinks / BATCH, zeros / (queries * (double)(seq + 1) / 2),
                                                      abs_sum / queries, first / queries};
    }
    double mean = 0, m2 = 0, m4 = 0, largest = 0;
    for (int64_t i = 0; i < rows * HIDDEN; i++) mean += x[i], largest = fmax(largest, fabs(x[i]));
    mean /= (double)(rows * HIDDEN);
    for (int64_t i = 0; i < rows * HIDDEN; i++) {
        double e = (x[i] - mean) * (x[i] - mean);
        m2 += e, m4 += e * e;
    }
    w->layers[l] = (spk_layer_analysis){m4 * (double)(rows * HIDDEN) / (m2 * m2), largest};
}

static void assert_close(double got, double want, double tol, const char *what, int l, int h) {
    if (!(fabs(got - want) <= tol * fmax(1.0, fabs(want))))
        fail_msg("%s, layer %d head %d: %.9g, float64 %.9g", what, l, h, got, want);
}

/* The device's analysis of `m` on x against the float64 one; `sparsity_slack` allows that many
 * weights per head to round to zero on one side only (a float32 score of the other sign than
 * float64's, rectified softpick's ReLU deciding). */
static void check_model(spk_model *m, const float *x, int64_t seq, double tol, int sparsity_slack) {
    const spk_model_config *c = spk_model_get_config(m);
    test_host_params p;
    test_params_download(m, &p);
    spk__ref_layer layers[LAYERS];
    spk__ref_model r = test_ref_model(m, &p, layers);
    want w = {.norm = c->attention, .seq = seq};
    r.probe = measure, r.probe_user = &w;
    double out[BATCH * HIDDEN];
    assert_true(spk__ref_model_forward(&r, x, BATCH, seq, out));
    spk_head_analysis heads[LAYERS * HEADS];
    spk_layer_analysis got[LAYERS];
    assert_int_equal(spk_model_analyze(m, x, BATCH, seq, heads, got), SPK_OK);
    double triangle = (double)BATCH * (double)(seq * (seq + 1) / 2);
    for (int l = 0; l < LAYERS; l++) {
        for (int h = 0; h < HEADS; h++) {
            const spk_head_analysis *g = &heads[l * HEADS + h], *e = &w.heads[l * HEADS + h];
            assert_close(g->sink_rate, e->sink_rate, 0, "sink rate", l, h);
            assert_close(g->sparsity, e->sparsity, (sparsity_slack + 0.5) / triangle, "sparsity", l, h);
            assert_close(g->row_abs_sum, e->row_abs_sum, tol, "row sum |w|", l, h);
            assert_close(g->first_key_weight, e->first_key_weight, tol, "first key's weight", l, h);
        }
        assert_close(got[l].kurtosis, w.layers[l].kurtosis, tol, "kurtosis", l, -1);
        assert_close(got[l].max_abs, w.layers[l].max_abs, tol, "max |hidden|", l, -1);
    }
    printf("%s, seq %lld, activations %s: layer 0 head 0 sink %.3f sparsity %.4f row sum %.5f first %.5f, kurtosis "
           "%.4f max %.4f (float64: %.4f %.4f %.5f %.5f, %.4f %.4f)\n",
           spk_normalizer_name(c->attention), (long long)seq, spk_dtype_name(c->activation_dtype), heads[0].sink_rate,
           heads[0].sparsity, heads[0].row_abs_sum, heads[0].first_key_weight, got[0].kurtosis, got[0].max_abs,
           w.heads[0].sink_rate, w.heads[0].sparsity, w.heads[0].row_abs_sum, w.heads[0].first_key_weight,
           w.layers[0].kurtosis, w.layers[0].max_abs);
    test_params_free(&p);
}

static spk_model *make_model(spk_normalizer norm, spk_dtype activations, uint64_t seed) {
    spk_model_config c = spk_model_config_default(EMBED);
    c.hidden_size = HIDDEN, c.num_heads = HEADS, c.num_layers = LAYERS, c.window_size = MAX_SEQ;
    c.attention = norm, c.activation_dtype = activations;
    spk_model *m = NULL;
    assert_int_equal(spk_model_create(test_shared_context(), &c, &m), SPK_OK);
    assert_int_equal(spk_model_init_random(m, seed), SPK_OK);
    return m;
}

/* Random models, scores scaled up (the qkv kernels x 4) so that rectified softpick has many zeros
 * and some heads lean on the first key. */
static void test_random_models(void **state) {
    (void)state;
    float x[BATCH * MAX_SEQ * EMBED];
    test_fill_random(x, BATCH * MAX_SEQ * EMBED, 5);
    for (spk_normalizer norm = 0; norm <= SPK_NORMALIZER_SOFTMAX; norm++) {
        spk_model *m = make_model(norm, SPK_DTYPE_F32, 11 + norm);
        for (int l = 0; l < LAYERS; l++) {
            spk_tensor *k = m->w.layers[l].qkv.kernel;
            float *v = test_alloc_floats(k->count);
            assert_int_equal(spk_tensor_download(k, v, k->count), SPK_OK);
            for (int64_t i = 0; i < k->count; i++) v[i] *= 4.0f;
            assert_int_equal(spk_tensor_upload(k, v, k->count), SPK_OK);
            free(v);
        }
        /* The forward's own output is unchanged by an analysis in between (same buffers). */
        float before[BATCH * HIDDEN], after[BATCH * HIDDEN];
        assert_int_equal(spk_model_forward(m, x, BATCH, 9, before), SPK_OK);
        check_model(m, x, 9, 1e-4, 1);
        check_model(m, x, 4, 1e-4, 1);
        assert_int_equal(spk_model_forward(m, x, BATCH, 9, after), SPK_OK);
        assert_memory_equal(before, after, sizeof before);
        spk_model_destroy(m);
    }
    test_assert_no_validation();
}

/* Every score equal (qkv kernels zero, q and k biases 3): uniform weights, sinks at seq 7, none
 * at 12, for each normalizer; the device's figures against the paper's H(seq) / seq too. */
static void test_uniform_scores(void **state) {
    (void)state;
    float x[BATCH * MAX_SEQ * EMBED], bias[3 * HIDDEN];
    test_fill_random(x, BATCH * MAX_SEQ * EMBED, 6);
    for (int i = 0; i < 3 * HIDDEN; i++) bias[i] = i < 2 * HIDDEN ? 3.0f : 0.5f;
    for (spk_normalizer norm = 0; norm <= SPK_NORMALIZER_SOFTMAX; norm++) {
        spk_model *m = make_model(norm, SPK_DTYPE_F32, 3);
        for (int l = 0; l < LAYERS; l++) {
            spk_tensor *k = m->w.layers[l].qkv.kernel;
            float *zero = calloc((size_t)k->count, sizeof *zero);
            assert_non_null(zero);
            assert_int_equal(spk_tensor_upload(k, zero, k->count), SPK_OK);
            assert_int_equal(spk_tensor_upload(m->w.layers[l].qkv.bias, bias, 3 * HIDDEN), SPK_OK);
            free(zero);
        }
        const int64_t seqs[2] = {7, 12};
        for (int i = 0; i < 2; i++) {
            check_model(m, x, seqs[i], 1e-4, 0);
            spk_head_analysis heads[LAYERS * HEADS];
            spk_layer_analysis layers[LAYERS];
            assert_int_equal(spk_model_analyze(m, x, BATCH, seqs[i], heads, layers), SPK_OK);
            double harmonic = 0;
            for (int64_t n = 1; n <= seqs[i]; n++) harmonic += 1.0 / (double)n;
            for (int h = 0; h < LAYERS * HEADS; h++) {
                assert_true(heads[h].sink_rate == (seqs[i] == 7 ? 1.0 : 0.0));
                assert_true(heads[h].sparsity == 0.0);
                /* softpick's weights are s / (1 + n s) with s = 2 * 9: 1 / n less a little */
                assert_true(fabs(heads[h].first_key_weight - harmonic / (double)seqs[i]) < (norm ? 1e-6 : 2e-2));
            }
        }
        spk_model_destroy(m);
    }
    test_assert_no_validation();
}

static void test_half_activations(void **state) {
    (void)state;
    float x[BATCH * MAX_SEQ * EMBED];
    test_fill_random(x, BATCH * MAX_SEQ * EMBED, 7);
    spk_model_config c = spk_model_config_default(EMBED);
    c.activation_dtype = SPK_DTYPE_F16;
    spk_model *probe = NULL;
    spk_status s = spk_model_create(test_shared_context(), &c, &probe);
    spk_model_destroy(probe);
    if (s == SPK_ERROR_UNSUPPORTED) {
        printf("F16 activations: unsupported on this device, not checked\n");
        skip();
    }
    for (spk_normalizer norm = 0; norm <= SPK_NORMALIZER_SOFTMAX; norm++) {
        spk_model *m = make_model(norm, SPK_DTYPE_F16, 21);
        check_model(m, x, 8, 2e-2, BATCH * 36); /* sparsity: F16 scores round to 0 and change sign */
        spk_model_destroy(m);
    }
    test_assert_no_validation();
}

static void test_errors(void **state) {
    (void)state;
    spk_model *m = make_model(SPK_NORMALIZER_SOFTPICK, SPK_DTYPE_F32, 1);
    float x[BATCH * MAX_SEQ * EMBED] = {0};
    spk_head_analysis heads[LAYERS * HEADS];
    spk_layer_analysis layers[LAYERS];
    assert_int_equal(spk_model_analyze(NULL, x, 1, 1, heads, layers), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_model_analyze(m, NULL, 1, 1, heads, layers), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_model_analyze(m, x, 1, 1, NULL, layers), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_model_analyze(m, x, 1, 1, heads, NULL), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_model_analyze(m, x, 0, 4, heads, layers), SPK_ERROR_SHAPE);
    assert_int_equal(spk_model_analyze(m, x, 2, -1, heads, layers), SPK_ERROR_SHAPE);
    assert_non_null(strstr(spk_context_last_error(test_shared_context()), "must be > 0"));
    spk_model_destroy(m);
    test_assert_no_validation();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_models),
        cmocka_unit_test(test_uniform_scores),
        cmocka_unit_test(test_half_activations),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, test_teardown_shared_context);
}
