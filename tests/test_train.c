/* Training: the golden cases of an independent float64 autograd (loss and every gradient), and
 * the gradient API's error paths. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "layer_norm_plan.h"
#include "model.h"
#include "reference.h"
#include "safetensors.h"

static float *read_npy(const char *dir, const char *name, spk_array *a) {
    char path[512], error[256];
    snprintf(path, sizeof path, "%s/%s", test_data_path(dir), name);
    if (spk_npy_read(path, a, error, sizeof error) != SPK_OK) fail_msg("%s: %s", path, error);
    return a->data;
}

/* One golden case: the loss and every gradient within 1e-4 (max abs error / max abs value, per
 * tensor) of the float64 evaluation, dropout off. */
static void golden_gradients(const char *dir, spk_output_mode mode, spk_loss_kind loss) {
    spk_context *ctx = test_shared_context();
    char path[512];
    snprintf(path, sizeof path, "%s/weights.safetensors", test_data_path(dir));
    spk_model_config over = {.output_mode = mode};
    spk_model *m = NULL;
    if (spk_model_create_from_safetensors(ctx, path, &over, &m) != SPK_OK) fail_msg("%s", spk_context_last_error(ctx));
    spk_array in, target, want_loss;
    read_npy(dir, "input.npy", &in), read_npy(dir, "target.npy", &target), read_npy(dir, "expected_loss.npy", &want_loss);
    assert_int_equal(target.integer, loss == SPK_LOSS_CROSS_ENTROPY);
    float got_loss = 0;
    if (spk_model_grad(m, in.data, in.shape[0], in.shape[1], loss, target.data, &got_loss) != SPK_OK)
        fail_msg("grad: %s", spk_context_last_error(ctx));
    double loss_err = fabs(got_loss - want_loss.data[0]) / fabs(want_loss.data[0]);
    printf("%s: loss %.7g (float64 %.7g, relative error %.2g)\n", dir, got_loss, want_loss.data[0], loss_err);
    assert_true(loss_err <= 1e-4);

    spk__safetensors st;
    char error[256];
    snprintf(path, sizeof path, "%s/expected_gradients.safetensors", test_data_path(dir));
    if (spk__safetensors_read(path, &st, error, sizeof error) != SPK_OK) fail_msg("%s", error);
    double worst = 0;
    for (uint32_t i = 0; i < st.tensor_count; i++) {
        const spk__st_tensor *t = &st.tensors[i];
        float *want = test_alloc_floats((int64_t)t->count), *got = test_alloc_floats((int64_t)t->count);
        spk__safetensors_to_f32(&st, t, want);
        if (spk_model_get_gradient(m, t->name, got, (int64_t)t->count) != SPK_OK)
            fail_msg("%s: %s", t->name, spk_context_last_error(ctx));
        double err = 0, scale = 0;
        for (uint64_t j = 0; j < t->count; j++) {
            double e = fabs((double)got[j] - want[j]);
            if (!(e <= err)) err = e;
            scale = fmax(scale, fabs(want[j]));
        }
        double rel = err / (scale > 0 ? scale : 1);
        if (!(rel <= 1e-4)) fail_msg("%s: gradient %s relative error %.3g", dir, t->name, rel);
        worst = fmax(worst, rel);
        free(want), free(got);
    }
    printf("%s: %u gradients, worst relative error %.2g\n", dir, st.tensor_count, worst);
    /* Gradients accumulate: a second call doubles them; zeroing clears them. */
    const spk__st_tensor *t0 = &st.tensors[0];
    float *once = test_alloc_floats((int64_t)t0->count), *twice = test_alloc_floats((int64_t)t0->count);
    assert_int_equal(spk_model_get_gradient(m, t0->name, once, (int64_t)t0->count), SPK_OK);
    assert_int_equal(spk_model_grad(m, in.data, in.shape[0], in.shape[1], loss, target.data, NULL), SPK_OK);
    assert_int_equal(spk_model_get_gradient(m, t0->name, twice, (int64_t)t0->count), SPK_OK);
    for (uint64_t j = 0; j < t0->count; j++) assert_true(fabsf(twice[j] - 2 * once[j]) <= 1e-6f * (1 + fabsf(once[j])));
    assert_int_equal(spk_model_zero_grad(m), SPK_OK);
    assert_int_equal(spk_model_get_gradient(m, t0->name, twice, (int64_t)t0->count), SPK_OK);
    for (uint64_t j = 0; j < t0->count; j++) assert_true(twice[j] == 0.0f);
    free(once), free(twice);
    spk__safetensors_free(&st);
    spk_array_free(&in), spk_array_free(&target), spk_array_free(&want_loss);
    spk_model_destroy(m);
    test_assert_no_validation();
}

/* Three full-batch AdamW steps at lr 1e-2 (the other settings PyTorch's defaults): the loss at
 * each step and the weights after the third within 1e-4 of the float64 run. */
static void golden_adamw(const char *dir, spk_output_mode mode, spk_loss_kind loss) {
    spk_context *ctx = test_shared_context();
    char path[512], error[256];
    snprintf(path, sizeof path, "%s/weights.safetensors", test_data_path(dir));
    spk_model_config over = {.output_mode = mode};
    spk_model *m = NULL;
    if (spk_model_create_from_safetensors(ctx, path, &over, &m) != SPK_OK) fail_msg("%s", spk_context_last_error(ctx));
    spk_array in, target, losses;
    read_npy(dir, "input.npy", &in), read_npy(dir, "target.npy", &target);
    read_npy(dir, "expected_adamw_3_losses.npy", &losses);
    assert_int_equal(losses.count, 3);
    spk_optimizer_desc opt = spk_optimizer_defaults(SPK_OPTIMIZER_ADAMW);
    opt.lr = 1e-2f;
    for (int step = 0; step < 3; step++) {
        float l;
        if (spk_model_train_step(m, in.data, in.shape[0], in.shape[1], loss, target.data, &opt, &l) != SPK_OK)
            fail_msg("train step: %s", spk_context_last_error(ctx));
        double e = fabs(l - losses.data[step]) / fabs(losses.data[step]);
        printf("%s: AdamW step %d loss %.7g (float64 %.7g)\n", dir, step, l, losses.data[step]);
        assert_true(e <= 1e-4);
    }
    spk__safetensors st;
    snprintf(path, sizeof path, "%s/expected_adamw_3_steps.safetensors", test_data_path(dir));
    if (spk__safetensors_read(path, &st, error, sizeof error) != SPK_OK) fail_msg("%s", error);
    double worst = 0;
    for (uint32_t i = 0; i < st.tensor_count; i++) {
        const spk__st_tensor *t = &st.tensors[i];
        float *want = test_alloc_floats((int64_t)t->count), *got = test_alloc_floats((int64_t)t->count);
        spk__safetensors_to_f32(&st, t, want);
        if (spk_model_get_parameter(m, t->name, got, (int64_t)t->count) != SPK_OK)
            fail_msg("%s: %s", t->name, spk_context_last_error(ctx));
        double err = 0, scale = 0;
        for (uint64_t j = 0; j < t->count; j++) err = fmax(err, fabs((double)got[j] - want[j])), scale = fmax(scale, fabs(want[j]));
        double rel = err / (scale > 0 ? scale : 1);
        if (!(rel <= 1e-4)) fail_msg("%s: weight %s after 3 AdamW steps: relative error %.3g", dir, t->name, rel);
        worst = fmax(worst, rel);
        free(want), free(got);
    }
    printf("%s: %u weights after 3 AdamW steps, worst relative error %.2g\n", dir, st.tensor_count, worst);
    spk__safetensors_free(&st);
    spk_array_free(&in), spk_array_free(&target), spk_array_free(&losses);
    spk_model_destroy(m);
    test_assert_no_validation();
}

static void golden_adamw_xent_last(void **state) {
    (void)state;
    golden_adamw("golden/train-e12-h16-n2-l2-o3-xent-last", SPK_OUTPUT_LAST, SPK_LOSS_CROSS_ENTROPY);
}

static void golden_adamw_mse_all(void **state) {
    (void)state;
    golden_adamw("golden/train-e20-h20-n4-l1-mse-all", SPK_OUTPUT_ALL, SPK_LOSS_MSE);
}

static void golden_xent_last_with_head(void **state) {
    (void)state;
    golden_gradients("golden/train-e12-h16-n2-l2-o3-xent-last", SPK_OUTPUT_LAST, SPK_LOSS_CROSS_ENTROPY);
}

static void golden_mse_all(void **state) {
    (void)state;
    golden_gradients("golden/train-e20-h20-n4-l1-mse-all", SPK_OUTPUT_ALL, SPK_LOSS_MSE);
}

/* 3 steps, a checkpoint (weights and optimizer state) and 2 resumed steps in a new model give
 * the bits of 5 steps, with each attention normalizer (the checkpoint's metadata carries it); the
 * saved gradients read back as the model's. */
static void check_resume(spk_normalizer norm) {
    spk_context *ctx = test_shared_context();
    spk_model_config c = spk_model_config_default(6);
    c.hidden_size = 8, c.num_heads = 2, c.num_layers = 2, c.num_outputs = 3, c.window_size = 5, c.attention = norm;
    spk_model *a = NULL, *b = NULL;
    assert_int_equal(spk_model_create(ctx, &c, &a), SPK_OK);
    assert_int_equal(spk_model_init_random(a, 11), SPK_OK);
    float x[4 * 5 * 6], t[4] = {0, 2, 1, 2};
    test_fill_random(x, 4 * 5 * 6, 3);
    spk_optimizer_desc opt = spk_optimizer_defaults(SPK_OPTIMIZER_ADAMW);
    opt.lr = 1e-2f, opt.clip_norm = 0.5f;
    for (int i = 0; i < 3; i++) assert_int_equal(spk_model_train_step(a, x, 4, 5, SPK_LOSS_CROSS_ENTROPY, t, &opt, NULL), SPK_OK);
    char weights[512], opt_state[512], grads[512];
    snprintf(weights, sizeof weights, "%s/resume_weights.safetensors", SOFTPICK_TEST_OUTPUT);
    snprintf(opt_state, sizeof opt_state, "%s/resume_state.safetensors", SOFTPICK_TEST_OUTPUT);
    snprintf(grads, sizeof grads, "%s/resume_grads.safetensors", SOFTPICK_TEST_OUTPUT);
    assert_int_equal(spk_model_save_safetensors(a, weights), SPK_OK);
    assert_int_equal(spk_model_save_state(a, opt_state), SPK_OK);
    assert_int_equal(spk_model_save_gradients(a, grads), SPK_OK);
    float loss_a[2], loss_b[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(spk_model_train_step(a, x, 4, 5, SPK_LOSS_CROSS_ENTROPY, t, &opt, &loss_a[i]), SPK_OK);
    /* The resumed model copies its input, targets and loss through staging buffers, as on a
     * device whose memory the host cannot map: the same bits. */
    ctx->force_staging = true;
    assert_int_equal(spk_model_create_from_safetensors(ctx, weights, NULL, &b), SPK_OK);
    assert_int_equal(spk_model_get_config(b)->num_outputs, 3);
    assert_int_equal(spk_model_get_config(b)->attention, norm);
    assert_int_equal(spk_model_load_state(b, opt_state), SPK_OK);
    for (int i = 0; i < 2; i++)
        assert_int_equal(spk_model_train_step(b, x, 4, 5, SPK_LOSS_CROSS_ENTROPY, t, &opt, &loss_b[i]), SPK_OK);
    ctx->force_staging = false;
    assert_non_null(b->train->staging.block);
    assert_memory_equal(loss_a, loss_b, sizeof loss_a);
    float wa[8 * 24], wb[8 * 24];
    const char *names[] = {"softpick_block_1_attn_q_proj.kernel", "softpick_block_2_ffn_down.bias", "output_head.kernel"};
    const int64_t counts[] = {64, 8, 24};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(spk_model_get_parameter(a, names[i], wa, counts[i]), SPK_OK);
        assert_int_equal(spk_model_get_parameter(b, names[i], wb, counts[i]), SPK_OK);
        assert_memory_equal(wa, wb, (size_t)counts[i] * sizeof(float));
    }
    /* The gradients file holds every parameter under its name. */
    spk__safetensors st;
    char error[256];
    assert_int_equal(spk__safetensors_read(grads, &st, error, sizeof error), SPK_OK);
    assert_int_equal(st.tensor_count, 2 + 16 * 2 + 2 + 2);
    assert_non_null(spk__safetensors_find(&st, "output_head.bias"));
    assert_string_equal(spk__safetensors_metadata(&st, "num_outputs"), "3");
    spk__safetensors_free(&st);
    /* A state file that is not one changes nothing and says why. */
    assert_int_equal(spk_model_load_state(b, weights), SPK_ERROR_FORMAT);
    assert_non_null(strstr(spk_context_last_error(ctx), "step"));
    spk_model_destroy(a), spk_model_destroy(b);
    test_assert_no_validation();
}

static void resume_and_checkpoints(void **state) {
    (void)state;
    for (int norm = 0; norm < 3; norm++) check_resume((spk_normalizer)norm);
}

typedef struct dropout_run {
    const spk__acts *k;
    const spk_tensor *y;
    spk_tensor *out;
} dropout_run;

static spk_status record_dropout(spk_context *ctx, const void *arg) {
    const dropout_run *r = arg;
    return spk__record_dropout(ctx, r->k, 3, true, NULL, r->y, r->out); /* the backward form: mask(y) alone */
}

/* The dropout mask: the observed rate within 3 sigma of 0.1, kept values scaled by 1 / 0.9,
 * another mask at another step, the same at the same (seed, step); none at inference. */
static void dropout_masks(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    const int64_t n = 100000;
    float *ones = test_alloc_floats(n), *a = test_alloc_floats(n), *b = test_alloc_floats(n);
    for (int64_t i = 0; i < n; i++) ones[i] = 1.0f;
    spk_tensor *ty = NULL, *tout = NULL, *tstep = NULL;
    const int64_t one = 1;
    float step = 7.0f;
    assert_int_equal(spk_tensor_create(ctx, 1, &n, &ty), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 1, &n, &tout), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 1, &one, &tstep), SPK_OK);
    assert_int_equal(spk_tensor_upload(ty, ones, n), SPK_OK);
    assert_int_equal(spk_tensor_upload(tstep, &step, 1), SPK_OK);
    spk__acts k = {.dropout = 0.1f, .seed = 42, .step = tstep->ref}; /* the step count, on the device */
    dropout_run r = {&k, ty, tout};
    assert_int_equal(spk__run_sync(ctx, record_dropout, &r), SPK_OK);
    assert_int_equal(spk_tensor_download(tout, a, n), SPK_OK);
    int64_t dropped = 0;
    for (int64_t i = 0; i < n; i++) {
        if (a[i] == 0.0f) dropped++;
        else if (a[i] != (float)(1.0 / (1.0 - (double)0.1f))) fail_msg("kept value %.9g at %lld", a[i], (long long)i);
    }
    double sigma = sqrt((double)n * 0.1 * 0.9);
    printf("dropout 0.1 over %lld elements: %lld dropped (expected %.0f, sigma %.1f)\n", (long long)n, (long long)dropped,
           0.1 * (double)n, sigma);
    assert_true(fabs((double)dropped - 0.1 * (double)n) <= 3 * sigma);
    step = 8.0f;
    assert_int_equal(spk_tensor_upload(tstep, &step, 1), SPK_OK);
    assert_int_equal(spk__run_sync(ctx, record_dropout, &r), SPK_OK);
    assert_int_equal(spk_tensor_download(tout, b, n), SPK_OK);
    assert_memory_not_equal(a, b, (size_t)n * sizeof *a);
    step = 7.0f;
    assert_int_equal(spk_tensor_upload(tstep, &step, 1), SPK_OK);
    assert_int_equal(spk__run_sync(ctx, record_dropout, &r), SPK_OK);
    assert_int_equal(spk_tensor_download(tout, b, n), SPK_OK);
    assert_memory_equal(a, b, (size_t)n * sizeof *a);
    /* The storage-buffer kernel (a tensor without texel views, as GPUs take it): the same mask. */
    spk_tensor plain = *ty;
    memset(plain.views, 0, sizeof plain.views);
    r.y = &plain;
    assert_int_equal(spk_tensor_upload(tout, ones, n), SPK_OK);
    assert_int_equal(spk__run_sync(ctx, record_dropout, &r), SPK_OK);
    assert_int_equal(spk_tensor_download(tout, b, n), SPK_OK);
    assert_memory_equal(a, b, (size_t)n * sizeof *a);
    spk_tensor_destroy(ty), spk_tensor_destroy(tout), spk_tensor_destroy(tstep);
    free(ones), free(a), free(b);

    /* Inference never drops: two forwards of a model with dropout 0.5 agree, before and after a
     * training step (which does drop, so its loss differs from spk_model_grad's). */
    spk_model_config c = spk_model_config_default(8);
    c.hidden_size = 8, c.num_heads = 2, c.num_layers = 1, c.window_size = 4;
    spk_model *m = NULL;
    assert_int_equal(spk_model_create(ctx, &c, &m), SPK_OK);
    assert_int_equal(spk_model_init_random(m, 5), SPK_OK);
    assert_int_equal(spk_model_set_dropout(m, 0.5f, 9), SPK_OK);
    float x[2 * 4 * 8], t[2 * 8] = {0}, y1[16], y2[16], l_grad, l_train;
    test_fill_random(x, 64, 1);
    assert_int_equal(spk_model_forward(m, x, 2, 4, y1), SPK_OK);
    assert_int_equal(spk_model_forward(m, x, 2, 4, y2), SPK_OK);
    assert_memory_equal(y1, y2, sizeof y1);
    assert_int_equal(spk_model_grad(m, x, 2, 4, SPK_LOSS_MSE, t, &l_grad), SPK_OK);
    spk_optimizer_desc opt = spk_optimizer_defaults(SPK_OPTIMIZER_SGD);
    opt.lr = 1e-30f; /* a step that leaves the weights as they are, to compare the losses */
    assert_int_equal(spk_model_train_step(m, x, 2, 4, SPK_LOSS_MSE, t, &opt, &l_train), SPK_OK);
    assert_true(l_grad != l_train);
    /* The step is recorded once and replayed: the replay draws the next step's masks. */
    float l_next;
    assert_int_equal(spk_model_train_step(m, x, 2, 4, SPK_LOSS_MSE, t, &opt, &l_next), SPK_OK);
    assert_true(l_next != l_train);
    /* Rate 0 drops nothing: a training step's loss is spk_model_grad's, bit for bit. */
    assert_int_equal(spk_model_set_dropout(m, 0.0f, 9), SPK_OK);
    assert_int_equal(spk_model_grad(m, x, 2, 4, SPK_LOSS_MSE, t, &l_grad), SPK_OK);
    assert_int_equal(spk_model_train_step(m, x, 2, 4, SPK_LOSS_MSE, t, &opt, &l_train), SPK_OK);
    assert_true(l_grad == l_train);
    assert_int_equal(spk_model_set_dropout(m, 1.0f, 0), SPK_ERROR_INVALID_ARGUMENT);
    spk_model_destroy(m);
    test_assert_no_validation();
}

typedef struct masked_norm_run {
    const spk__acts *k;
    const spk_tensor *x, *gamma, *stats, *dy;
    spk_tensor *dx, *masked;
} masked_norm_run;

static spk_status record_masked_norm(spk_context *ctx, const void *arg) {
    const masked_norm_run *r = arg;
    spk__dropout_mask mask = spk__dropout_mask_of(r->k, 3);
    spk_layer_norm_grads g = {.dx = r->dx};
    return spk__record_layer_norm_backward(ctx, NULL, r->x, r->gamma, r->stats, r->dy, &g, &mask, r->masked);
}

/* The layer norm backward's masked dx (the model's backward through dropout) is dropout.comp's
 * mask applied to that dx, bit for bit, on rows of 256 (vec4) and of 7 (scalars), through texel
 * views and through storage buffers. */
static void dropout_in_norm_backward(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    const int64_t widths[2] = {256, 7}, rows = 33, one = 1;
    float step = 5.0f;
    spk_tensor *tstep = NULL;
    assert_int_equal(spk_tensor_create(ctx, 1, &one, &tstep), SPK_OK);
    assert_int_equal(spk_tensor_upload(tstep, &step, 1), SPK_OK);
    spk__acts k = {.dropout = 0.25f, .seed = 1234567890123ull, .step = tstep->ref};
    for (int w = 0; w < 2; w++) {
        int64_t n = widths[w], shape[2] = {rows, n}, stats_shape[2] = {rows, 2}, count = rows * n;
        float *x = test_alloc_floats(count), *dy = test_alloc_floats(count), *gamma = test_alloc_floats(n);
        float *dx = test_alloc_floats(count), *masked = test_alloc_floats(count), *want = test_alloc_floats(count);
        test_fill_random(x, count, 1), test_fill_random(dy, count, 2), test_fill_random(gamma, n, 3);
        spk_tensor *tx, *tdy, *tg, *tst, *tdx, *tm, *tw;
        assert_int_equal(spk_tensor_create(ctx, 2, shape, &tx), SPK_OK);
        assert_int_equal(spk_tensor_create(ctx, 2, shape, &tdy), SPK_OK);
        assert_int_equal(spk_tensor_create(ctx, 1, &n, &tg), SPK_OK);
        assert_int_equal(spk_tensor_create(ctx, 2, stats_shape, &tst), SPK_OK);
        assert_int_equal(spk_tensor_create(ctx, 2, shape, &tdx), SPK_OK);
        assert_int_equal(spk_tensor_create(ctx, 2, shape, &tm), SPK_OK);
        assert_int_equal(spk_tensor_create(ctx, 2, shape, &tw), SPK_OK);
        assert_int_equal(spk_tensor_upload(tx, x, count), SPK_OK);
        assert_int_equal(spk_tensor_upload(tdy, dy, count), SPK_OK);
        assert_int_equal(spk_tensor_upload(tg, gamma, n), SPK_OK);
        spk_layer_norm_desc desc = {.stats = tst};
        assert_int_equal(spk_layer_norm(ctx, tx, tg, tg, &desc, tw), SPK_OK); /* the stats */
        /* The texel kernel (lavapipe's), then the storage-buffer one (inputs without views, as
         * GPUs take them). */
        spk_tensor px = *tx, pg = *tg, pdy = *tdy;
        memset(px.views, 0, sizeof px.views), memset(pg.views, 0, sizeof pg.views), memset(pdy.views, 0, sizeof pdy.views);
        for (int plain = 0; plain < 2; plain++) {
            masked_norm_run r = {&k, plain ? &px : tx, plain ? &pg : tg, tst, plain ? &pdy : tdy, tdx, tm};
            assert_int_equal(spk_tensor_upload(tm, dy, count), SPK_OK); /* stale values, overwritten */
            assert_int_equal(spk__run_sync(ctx, record_masked_norm, &r), SPK_OK);
            dropout_run d = {&k, tdx, tw};
            assert_int_equal(spk__run_sync(ctx, record_dropout, &d), SPK_OK);
            assert_int_equal(spk_tensor_download(tdx, dx, count), SPK_OK);
            assert_int_equal(spk_tensor_download(tm, masked, count), SPK_OK);
            assert_int_equal(spk_tensor_download(tw, want, count), SPK_OK);
            int64_t dropped = 0;
            for (int64_t i = 0; i < count; i++) dropped += masked[i] == 0.0f && dx[i] != 0.0f;
            assert_true(dropped > count / 8 && dropped < count / 2); /* about a quarter */
            assert_memory_equal(masked, want, (size_t)count * sizeof *masked);
        }
        spk_tensor_destroy(tx), spk_tensor_destroy(tdy), spk_tensor_destroy(tg), spk_tensor_destroy(tst);
        spk_tensor_destroy(tdx), spk_tensor_destroy(tm), spk_tensor_destroy(tw);
        free(x), free(dy), free(gamma), free(dx), free(masked), free(want);
    }
    spk_tensor_destroy(tstep);
    test_assert_no_validation();
}

/* spk_model_step against the update computed here in float64 from the same gradients: SGD with
 * weight decay and AdamW's first step, each with global-norm clipping, on tensors of 4n elements
 * (the vec4 path) and of 3 (the scalar one). */
static void optimizer_against_float64(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    spk_model_config c = spk_model_config_default(8);
    c.hidden_size = 8, c.num_heads = 2, c.num_layers = 1, c.num_outputs = 3, c.window_size = 4;
    float x[2 * 4 * 8], t[2] = {0, 2};
    test_fill_random(x, 64, 4);
    for (int run = 0; run < 3; run++) {
        /* AdamW, SGD, and AdamW again through the storage-buffer kernel (as GPUs take it; CPU
         * drivers read through texel views). */
        int algo = run == 1;
        spk_model *m = NULL;
        assert_int_equal(spk_model_create(ctx, &c, &m), SPK_OK);
        assert_int_equal(spk_model_init_random(m, 3), SPK_OK);
        assert_int_equal(spk_model_grad(m, x, 2, 4, SPK_LOSS_CROSS_ENTROPY, t, NULL), SPK_OK);
        spk_tensor *p[64], *g[64];
        uint32_t n = spk__weights_list(&m->w, c.num_layers, p);
        spk__weights_list(&m->train->grad, c.num_layers, g);
        float *before[64], *grads[64];
        double sumsq = 0;
        for (uint32_t i = 0; i < n; i++) {
            before[i] = test_alloc_floats(p[i]->count), grads[i] = test_alloc_floats(p[i]->count);
            assert_int_equal(spk_tensor_download(p[i], before[i], p[i]->count), SPK_OK);
            assert_int_equal(spk_tensor_download(g[i], grads[i], g[i]->count), SPK_OK);
            for (int64_t j = 0; j < g[i]->count; j++) sumsq += (double)grads[i][j] * grads[i][j];
        }
        spk_optimizer_desc opt = spk_optimizer_defaults(algo ? SPK_OPTIMIZER_SGD : SPK_OPTIMIZER_ADAMW);
        opt.lr = 0.05f, opt.weight_decay = 0.1f, opt.clip_norm = 0.5f * (float)sqrt(sumsq);
        double coef = fmin(1.0, opt.clip_norm / (sqrt(sumsq) + 1e-6)), worst = 0;
        VkBufferView views[64][SPK__ARRAY_LEN(p[0]->views)];
        for (uint32_t i = 0; run == 2 && i < n; i++)
            memcpy(views[i], p[i]->views, sizeof views[i]), memset(p[i]->views, 0, sizeof views[i]);
        assert_int_equal(spk_model_step(m, &opt), SPK_OK);
        for (uint32_t i = 0; run == 2 && i < n; i++) memcpy(p[i]->views, views[i], sizeof views[i]);
        for (uint32_t i = 0; i < n; i++) {
            float *after = test_alloc_floats(p[i]->count);
            assert_int_equal(spk_tensor_download(p[i], after, p[i]->count), SPK_OK);
            for (int64_t j = 0; j < p[i]->count; j++) {
                double w = before[i][j], want = spk__ref_optimizer_first_step(&opt, w, grads[i][j] * coef);
                worst = fmax(worst, fabs(after[j] - want) / fmax(fabs(want), 1e-3));
            }
            free(after), free(before[i]), free(grads[i]);
        }
        printf("%s step with clipping (coefficient %.3f)%s: worst relative error %.2g against float64\n",
               algo ? "SGD" : "AdamW", coef, run == 2 ? ", storage buffers" : "", worst);
        assert_true(worst <= 2e-5);
        spk_model_destroy(m);
    }
    test_assert_no_validation();
}

static void grad_errors(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    spk_model_config c = spk_model_config_default(8);
    c.hidden_size = 8, c.num_heads = 2, c.num_layers = 1, c.num_outputs = 3;
    spk_model *m = NULL;
    assert_int_equal(spk_model_create(ctx, &c, &m), SPK_OK);
    assert_int_equal(spk_model_init_random(m, 1), SPK_OK);
    float x[2 * 4 * 8] = {0}, classes[2] = {0, 3}, nan_t[6] = {0, 0, NAN, 0, 0, 0}, g[24];
    assert_int_equal(spk_model_grad(m, x, 2, 4, SPK_LOSS_CROSS_ENTROPY, classes, NULL), SPK_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(spk_context_last_error(ctx), "outside [0, 3)"));
    classes[1] = 1.5f;
    assert_int_equal(spk_model_grad(m, x, 2, 4, SPK_LOSS_CROSS_ENTROPY, classes, NULL), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_model_grad(m, x, 2, 4, SPK_LOSS_MSE, nan_t, NULL), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_model_grad(m, x, 2, 4, SPK_LOSS_MSE, NULL, NULL), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_model_grad(m, x, 0, 4, SPK_LOSS_MSE, nan_t, NULL), SPK_ERROR_SHAPE);
    assert_int_equal(spk_model_get_gradient(m, "no_such.kernel", g, 24), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_model_get_gradient(m, "output_head.kernel", g, 23), SPK_ERROR_SHAPE);
    assert_int_equal(spk_model_get_gradient(m, "output_head.kernel", g, 24), SPK_OK);
    /* spk_model_backward goes back through the last training forward only. */
    float y[6], dy[6] = {1, 0, 0, 0, 1, 0};
    assert_int_equal(spk_model_backward(m, dy), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_model_forward_train(m, x, 2, 4, y), SPK_OK);
    assert_int_equal(spk_model_backward(m, NULL), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_model_backward(m, dy), SPK_OK);
    assert_int_equal(spk_model_backward(m, dy), SPK_OK); /* twice: the gradients add up */
    assert_int_equal(spk_model_forward(m, x, 2, 4, y), SPK_OK);
    assert_int_equal(spk_model_backward(m, dy), SPK_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(spk_context_last_error(ctx), "no training forward"));
    assert_int_equal(spk_model_forward_train(m, x, 2, 4, y), SPK_OK);
    assert_int_equal(spk_model_grad(m, x, 2, 4, SPK_LOSS_MSE, y, NULL), SPK_OK);
    assert_int_equal(spk_model_backward(m, dy), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_model_forward_train(m, x, 0, 4, y), SPK_ERROR_SHAPE);
    spk_model_destroy(m);
    test_assert_no_validation();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(golden_xent_last_with_head),
        cmocka_unit_test(golden_mse_all),
        cmocka_unit_test(golden_adamw_xent_last),
        cmocka_unit_test(golden_adamw_mse_all),
        cmocka_unit_test(resume_and_checkpoints),
        cmocka_unit_test(optimizer_against_float64),
        cmocka_unit_test(dropout_masks), cmocka_unit_test(dropout_in_norm_backward),
        cmocka_unit_test(grad_errors),
    };
    return cmocka_run_group_tests(tests, NULL, test_teardown_shared_context);
}
