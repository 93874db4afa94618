/* Gradient checks of the whole model: with each attention normalizer, in every output mode, with
 * and without an output head, with mse, cross-entropy and a loss of the caller's own
 * (spk_model_forward_train and spk_model_backward, on host arrays and on device tensors), the
 * device's dL/dparameter against central finite differences of a float64 evaluation of the same
 * model (src/reference.c's forward, the head, the loss), on sampled elements of every parameter
 * tensor; and two backward runs give the same bits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model.h"
#include "reference.h"

enum { BATCH = 2, SEQ = 5 };
/* A loss of the caller's own, through spk_model_forward_train and spk_model_backward:
 * L = sum_i v_i y_i, v in the target array (so dL/dy = v). */
#define LINEAR ((spk_loss_kind)100)

/* L of SPEC.md section 6 in float64: mse over every element, or the mean cross-entropy per row. */
static double ref_loss(const spk__ref_model *r, const float *x, spk_loss_kind loss, const float *target,
                       int64_t out_count, int64_t classes) {
    double *y = malloc((size_t)out_count * sizeof *y);
    assert_non_null(y);
    assert_true(spk__ref_model_forward(r, x, BATCH, SEQ, y));
    double sum = 0;
    int64_t rows = out_count / classes;
    for (int64_t i = 0; loss == LINEAR && i < out_count; i++) sum += target[i] * y[i];
    for (int64_t i = 0; loss == SPK_LOSS_MSE && i < out_count; i++) sum += (y[i] - target[i]) * (y[i] - target[i]);
    for (int64_t i = 0; loss == SPK_LOSS_CROSS_ENTROPY && i < rows; i++) {
        const double *row = y + i * classes;
        double max = row[0], z = 0;
        for (int64_t j = 1; j < classes; j++) max = fmax(max, row[j]);
        for (int64_t j = 0; j < classes; j++) z += exp(row[j] - max);
        sum += max + log(z) - row[(int64_t)target[i]];
    }
    free(y);
    return loss == LINEAR ? sum : sum / (double)(loss == SPK_LOSS_MSE ? out_count : rows);
}

/* One configuration: the device's gradients against finite differences, per tensor (max abs error
 * over the sampled elements / max abs gradient of the tensor) within 1e-4. */
static void check_norm(spk_output_mode mode, int outputs, spk_loss_kind loss, float dropout, spk_normalizer norm) {
    spk_context *ctx = test_shared_context();
    spk_model_config c = spk_model_config_default(6);
    c.hidden_size = 8, c.num_heads = 2, c.num_layers = 2, c.window_size = SEQ, c.output_mode = mode;
    c.num_outputs = outputs, c.dropout = 0.0f, c.attention = norm;
    spk_model *m = NULL;
    assert_int_equal(spk_model_create(ctx, &c, &m), SPK_OK);
    /* With dropout: the training step's forward, loss and backward without its optimizer, so the
     * step count stays 0 and every run draws the masks of step 0. */
    const uint64_t seed = 77;
    spk_optimizer_desc sgd = spk_optimizer_defaults(SPK_OPTIMIZER_SGD);
    if (dropout > 0) assert_int_equal(spk_model_set_dropout(m, dropout, seed), SPK_OK);
    assert_int_equal(spk_model_init_random(m, 21 + (uint64_t)mode), SPK_OK);
    test_host_params p;
    test_params_download(m, &p);
    /* Biases and norm offsets away from their zero initialisation, so their gradients matter. */
    for (uint32_t i = 0; i < p.count; i++) {
        int64_t n = p.tensors[i]->count;
        if (p.tensors[i]->ndim == 1) {
            test_fill_random(p.values[i], n, 100 + i);
            for (int64_t j = 0; j < n; j++) p.values[i][j] = 0.2f * p.values[i][j] + (j % 2 ? 1.0f : 0.0f);
            assert_int_equal(spk_tensor_upload(p.tensors[i], p.values[i], n), SPK_OK);
        }
    }
    int ndim;
    int64_t shape[3], out_count = spk_model_output_shape(m, BATCH, SEQ, &ndim, shape);
    int64_t classes = spk_model_output_size(&c), rows = out_count / classes;
    float x[BATCH * SEQ * 6], target[BATCH * SEQ * 8];
    test_fill_random(x, BATCH * SEQ * 6, 7);
    test_fill_random(target, loss == SPK_LOSS_CROSS_ENTROPY ? rows : out_count, 8);
    for (int64_t i = 0; loss == SPK_LOSS_CROSS_ENTROPY && i < rows; i++) target[i] = (float)((i * 7 + 1) % classes);

    float got_loss = 0, y[BATCH * SEQ * 8];
    spk__ref_layer layers[2];
    spk__ref_model r = test_ref_model(m, &p, layers);
    r.dropout = dropout, r.seed = seed, r.step = 0;
    if (loss == LINEAR) { /* the forward on its own, checked too; then dL/dy = v */
        assert_int_equal(spk_model_backward(m, target), SPK_ERROR_INVALID_ARGUMENT); /* no forward yet */
        assert_int_equal(spk_model_forward_train(m, x, BATCH, SEQ, y), SPK_OK);
        double want_y[BATCH * SEQ * 8];
        assert_true(spk__ref_model_forward(&r, x, BATCH, SEQ, want_y));
        assert_true(spk__ref_error(y, want_y, out_count) <= 1e-5);
        for (int64_t i = 0; i < out_count; i++) got_loss += target[i] * y[i];
        assert_int_equal(spk_model_backward(m, target), SPK_OK);
    } else if (dropout > 0) {
        assert_int_equal(spk__train_phases(m, x, BATCH, SEQ, loss, target, &sgd, SPK__PHASE_BACKWARD, &got_loss), SPK_OK);
    } else {
        assert_int_equal(spk_model_grad(m, x, BATCH, SEQ, loss, target, &got_loss), SPK_OK);
    }
    double want_loss = ref_loss(&r, x, loss, target, out_count, classes);
    assert_true(fabs(got_loss - want_loss) <= 1e-5 * fmax(1.0, fabs(want_loss)));

    spk_tensor *grads[TEST_MAX_TENSORS];
    assert_int_equal(spk__weights_list(&m->train->grad, c.num_layers, grads), p.count);
    double worst = 0;
    for (uint32_t i = 0; i < p.count; i++) {
        int64_t n = p.tensors[i]->count;
        float *g = test_alloc_floats(n);
        assert_int_equal(spk_tensor_download(grads[i], g, n), SPK_OK);
        double scale = 0, err = 0;
        for (int64_t j = 0; j < n; j++) scale = fmax(scale, fabs(g[j]));
        const int64_t samples[] = {0, n / 3, (2 * n) / 3, n - 1};
        for (size_t k = 0; k < SPK__ARRAY_LEN(samples); k++) {
            float *v = &p.values[i][samples[k]], saved = *v;
            float up = saved + 1e-3f, down = saved - 1e-3f;
            *v = up;
            double l_up = ref_loss(&r, x, loss, target, out_count, classes);
            *v = down;
            double l_down = ref_loss(&r, x, loss, target, out_count, classes);
            *v = saved;
            double fd = (l_up - l_down) / ((double)up - (double)down);
            err = fmax(err, fabs(fd - g[samples[k]]));
            scale = fmax(scale, fabs(fd));
        }
        double rel = err / (scale > 0 ? scale : 1);
        if (!(rel <= 1e-4)) fail_msg("mode %d, %d outputs, loss %d: tensor %u relative error %.3g", mode, outputs, loss, i, rel);
        worst = fmax(worst, rel);
        free(g);
    }
    printf("%s, mode %s, %s, %s, dropout %g: loss %.7g (float64 %.7g), %u tensors, worst relative error %.2g against "
           "finite differences\n",
           spk_normalizer_name(norm), mode == SPK_OUTPUT_LAST ? "last" : mode == SPK_OUTPUT_ALL ? "all" : "mean",
           outputs ? "a 3-class head" : "no head",
           loss == LINEAR ? "a loss of its own (forward_train, backward)" : loss == SPK_LOSS_MSE ? "mse" : "cross-entropy",
           (double)dropout, got_loss, want_loss,
           p.count, worst);

    /* Deterministic: zeroed and run again, the same bits in every gradient. */
    float *first[TEST_MAX_TENSORS];
    for (uint32_t i = 0; i < p.count; i++) {
        first[i] = test_alloc_floats(grads[i]->count);
        assert_int_equal(spk_tensor_download(grads[i], first[i], grads[i]->count), SPK_OK);
    }
    assert_int_equal(spk_model_zero_grad(m), SPK_OK);
    if (loss == LINEAR) { /* again on device tensors: the same bits */
        int64_t in_shape[3] = {BATCH, SEQ, 6};
        spk_tensor *tx = NULL, *ty = NULL, *tdy = NULL;
        assert_int_equal(spk_tensor_create(ctx, 3, in_shape, &tx), SPK_OK);
        assert_int_equal(spk_tensor_create(ctx, ndim, shape, &ty), SPK_OK);
        assert_int_equal(spk_tensor_create(ctx, ndim, shape, &tdy), SPK_OK);
        assert_int_equal(spk_tensor_upload(tx, x, BATCH * SEQ * 6), SPK_OK);
        assert_int_equal(spk_tensor_upload(tdy, target, out_count), SPK_OK);
        assert_int_equal(spk_model_forward_train_tensors(m, tx, ty), SPK_OK);
        assert_int_equal(spk_model_backward_tensors(m, tx), SPK_ERROR_SHAPE); /* dy of the input's shape */
        assert_int_equal(spk_model_backward_tensors(m, tdy), SPK_OK);
        spk_tensor_destroy(tx), spk_tensor_destroy(ty), spk_tensor_destroy(tdy);
    } else if (dropout > 0) {
        assert_int_equal(spk__train_phases(m, x, BATCH, SEQ, loss, target, &sgd, SPK__PHASE_BACKWARD, NULL), SPK_OK);
    } else {
        assert_int_equal(spk_model_grad(m, x, BATCH, SEQ, loss, target, NULL), SPK_OK);
    }
    for (uint32_t i = 0; i < p.count; i++) {
        float *g = test_alloc_floats(grads[i]->count);
        assert_int_equal(spk_tensor_download(grads[i], g, grads[i]->count), SPK_OK);
        assert_memory_equal(g, first[i], (size_t)grads[i]->count * sizeof *g);
        free(g), free(first[i]), free(p.values[i]);
    }
    spk_model_destroy(m);
    test_assert_no_validation();
}

static void check(spk_output_mode mode, int outputs, spk_loss_kind loss, float dropout) {
    check_norm(mode, outputs, loss, dropout, SPK_NORMALIZER_SOFTPICK);
}

static void last_no_head(void **state) { (void)state, check(SPK_OUTPUT_LAST, 0, SPK_LOSS_MSE, 0); }
static void all_no_head(void **state) { (void)state, check(SPK_OUTPUT_ALL, 0, SPK_LOSS_MSE, 0); }
static void mean_no_head(void **state) { (void)state, check(SPK_OUTPUT_MEAN, 0, SPK_LOSS_MSE, 0); }
static void last_head(void **state) { (void)state, check(SPK_OUTPUT_LAST, 3, SPK_LOSS_CROSS_ENTROPY, 0); }
static void all_head(void **state) { (void)state, check(SPK_OUTPUT_ALL, 3, SPK_LOSS_CROSS_ENTROPY, 0); }
static void mean_head(void **state) { (void)state, check(SPK_OUTPUT_MEAN, 3, SPK_LOSS_CROSS_ENTROPY, 0); }
static void mean_head_mse(void **state) { (void)state, check(SPK_OUTPUT_MEAN, 3, SPK_LOSS_MSE, 0); }
static void own_loss_last_head(void **state) { (void)state, check(SPK_OUTPUT_LAST, 3, LINEAR, 0); }
static void own_loss_all(void **state) { (void)state, check(SPK_OUTPUT_ALL, 0, LINEAR, 0); }
static void own_loss_mean(void **state) { (void)state, check(SPK_OUTPUT_MEAN, 0, LINEAR, 0); }
/* Dropout 0.5 against the masks evaluated in float64 from their definition: mode last (whose
 * last block's mask is a pass of its own in the backward) and mode all (every mask applied by the
 * norm backward that makes the gradient). */
static void last_head_dropout(void **state) { (void)state, check(SPK_OUTPUT_LAST, 3, SPK_LOSS_CROSS_ENTROPY, 0.5f); }
static void all_dropout(void **state) { (void)state, check(SPK_OUTPUT_ALL, 0, SPK_LOSS_MSE, 0.5f); }
/* The other attention normalizers through the whole model. */
static void last_head_rectified(void **state) {
    (void)state, check_norm(SPK_OUTPUT_LAST, 3, SPK_LOSS_CROSS_ENTROPY, 0, SPK_NORMALIZER_RECTIFIED_SOFTPICK);
}
static void all_softmax_dropout(void **state) {
    (void)state, check_norm(SPK_OUTPUT_ALL, 0, SPK_LOSS_MSE, 0.5f, SPK_NORMALIZER_SOFTMAX);
}
static void mean_rectified_own_loss(void **state) {
    (void)state, check_norm(SPK_OUTPUT_MEAN, 0, LINEAR, 0, SPK_NORMALIZER_RECTIFIED_SOFTPICK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(last_no_head), cmocka_unit_test(all_no_head), cmocka_unit_test(mean_no_head),
        cmocka_unit_test(last_head),    cmocka_unit_test(all_head),    cmocka_unit_test(mean_head),
        cmocka_unit_test(mean_head_mse),  cmocka_unit_test(own_loss_last_head), cmocka_unit_test(own_loss_all),
        cmocka_unit_test(own_loss_mean), cmocka_unit_test(last_head_dropout), cmocka_unit_test(all_dropout),
        cmocka_unit_test(last_head_rectified), cmocka_unit_test(all_softmax_dropout), cmocka_unit_test(mean_rectified_own_loss),
    };
    return cmocka_run_group_tests(tests, NULL, test_teardown_shared_context);
}
