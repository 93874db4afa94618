/* Fault injection (src/fault.h): for each scenario, the N-th fallible call (host allocation,
 * vkCreate*, vkAllocate*, vkBindBufferMemory, vkMapMemory, vkQueueSubmit, fence wait) fails, for
 * every N whose call comes from a new place: a call site reached through callers (two levels up)
 * that no earlier call came through, so every error path is taken once. At every N: a clean
 * status with a
 * message, no crash, no leak (the asan preset), no validation message; where the context
 * survived, the next operation on it succeeds with the right result; after an injected device
 * loss every call says so and destroying still works. Built only with SOFTPICK_FAULT_INJECTION. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"
#include "harness.h"
#include "internal.h"

#define GOLDEN "golden/model-e20-h32-n4-l2/"

typedef struct scenario {
    const char *name;
    /* Prepares what the step needs on a fresh context (unarmed). */
    void (*prepare)(spk_context *ctx, void **data);
    /* The operation under injection. */
    spk_status (*step)(spk_context *ctx, void *data);
    /* Frees what prepare and step made. */
    void (*cleanup)(void *data);
    /* Which of the suite's fault tests runs it (test_fault PART: they run in parallel). */
    size_t part;
} scenario;

/* ---- the scenarios ---------------------------------------------------------------------- */

typedef struct op_data {
    spk_tensor *x, *y, *w, *gamma, *beta;
    spk_model *model;
    float host[4 * 60];
} op_data;

static void prepare_tensors(spk_context *ctx, void **out) {
    op_data *d = calloc(1, sizeof *d);
    assert_non_null(d);
    int64_t shape[2] = {4, 60}, w_shape[2] = {60, 60}, n[1] = {60};
    assert_int_equal(spk_tensor_create(ctx, 2, shape, &d->x), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 2, shape, &d->y), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 2, w_shape, &d->w), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 1, n, &d->gamma), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 1, n, &d->beta), SPK_OK);
    test_fill_random(d->host, 4 * 60, 3);
    assert_int_equal(spk_tensor_upload(d->x, d->host, 4 * 60), SPK_OK);
    float w[60 * 60];
    test_fill_random(w, 60 * 60, 4);
    assert_int_equal(spk_tensor_upload(d->w, w, 60 * 60), SPK_OK);
    assert_int_equal(spk_tensor_upload(d->gamma, w, 60), SPK_OK);
    assert_int_equal(spk_tensor_upload(d->beta, w + 60, 60), SPK_OK);
    *out = d;
}

static void cleanup_tensors(void *data) {
    op_data *d = data;
    if (!d) return;
    spk_model_destroy(d->model);
    spk_tensor_destroy(d->x), spk_tensor_destroy(d->y), spk_tensor_destroy(d->w);
    spk_tensor_destroy(d->gamma), spk_tensor_destroy(d->beta);
    free(d);
}

static void prepare_nothing(spk_context *ctx, void **out) {
    (void)ctx;
    *out = calloc(1, sizeof(op_data));
}

static spk_status step_tensor_create(spk_context *ctx, void *data) {
    op_data *d = data;
    int64_t shape[2] = {4, 60};
    return spk_tensor_create(ctx, 2, shape, &d->x);
}

static spk_status step_softpick(spk_context *ctx, void *data) {
    op_data *d = data;
    return spk_softpick(ctx, d->x, -1, d->y);
}

static spk_status step_matmul(spk_context *ctx, void *data) {
    op_data *d = data;
    spk_matmul_desc desc = {.bias = d->gamma, .activation = SPK_ACTIVATION_GELU};
    return spk_matmul(ctx, d->x, d->w, &desc, d->y);
}

static spk_status step_layer_norm(spk_context *ctx, void *data) {
    op_data *d = data;
    return spk_layer_norm(ctx, d->x, d->gamma, d->beta, NULL, d->y);
}

static spk_status step_model_create(spk_context *ctx, void *data) {
    op_data *d = data;
    return spk_model_create_from_safetensors(ctx, test_data_path(GOLDEN "weights.safetensors"), NULL, &d->model);
}

/* 16-bit weights and F16 activations (where the device stores them): the typed tensors, their
 * views and the images in the kernels' dtype, and a forward through the 16-bit variants. */
static spk_status step_half_model(spk_context *ctx, void *data) {
    op_data *d = data;
    spk_model_config overrides = {.weights_dtype = SPK_DTYPE_F16,
                                  .activation_dtype = ctx->caps.storage16 ? SPK_DTYPE_F16 : SPK_DTYPE_F32};
    spk_status s = spk_model_create_from_safetensors(ctx, test_data_path(GOLDEN "weights.safetensors"), &overrides,
                                                     &d->model);
    float y[32];
    if (s == SPK_OK) s = spk_model_forward(d->model, d->host, 1, 12, y);
    return s;
}

static void prepare_model(spk_context *ctx, void **out) {
    prepare_nothing(ctx, out);
    assert_int_equal(step_model_create(ctx, *out), SPK_OK);
}

static spk_status step_load(spk_context *ctx, void *data) {
    (void)ctx;
    op_data *d = data;
    return spk_model_load_safetensors(d->model, test_data_path(GOLDEN "weights.safetensors"));
}

static spk_status step_forward(spk_context *ctx, void *data) {
    (void)ctx;
    op_data *d = data;
    float x[2 * 9 * 20], y[2 * 32];
    test_fill_random(x, 2 * 9 * 20, 8);
    return spk_model_forward(d->model, x, 2, 9, y);
}

static spk_status step_analyze(spk_context *ctx, void *data) {
    (void)ctx;
    op_data *d = data;
    float x[2 * 9 * 20];
    spk_head_analysis heads[2 * 4];
    spk_layer_analysis layers[2];
    test_fill_random(x, 2 * 9 * 20, 8);
    return spk_model_analyze(d->model, x, 2, 9, heads, layers);
}

/* The self-test's erf line: its tensors, uploads, dispatch and reference under injection (on the
 * caller's context alone, so that the walk is the same every run). */
static spk_status step_selftest(spk_context *ctx, void *data) {
    (void)data;
    spk_selftest_desc desc = {.only = "erf", .threads = 1};
    spk_selftest_report report;
    return spk_selftest(ctx, &desc, &report);
}

/* The self-test's training lines (two models, their training steps, the optimizer): every 64th point. */
static spk_status step_selftest_train(spk_context *ctx, void *data) {
    (void)data;
    spk_selftest_desc desc = {.only = "train", .threads = 1};
    spk_selftest_report report;
    return spk_selftest(ctx, &desc, &report);
}

/* The self-test's further context, made and destroyed (matching no op, it runs nothing): a context
 * it cannot make leaves the work to the caller's. */
static spk_status step_selftest_contexts(spk_context *ctx, void *data) {
    (void)data;
    spk_selftest_desc desc = {.only = "no such op", .threads = 2};
    spk_selftest_report report;
    return spk_selftest(ctx, &desc, &report);
}

/* A small model with a head: its first training step makes the gradients, the kept activations
 * and the optimizer's moments, records forward, loss, backward and update. */
static void prepare_layers(spk_context *ctx, void **out, int layers) {
    prepare_nothing(ctx, out);
    op_data *d = *out;
    spk_model_config c = spk_model_config_default(8);
    c.hidden_size = 8, c.num_heads = 2, c.num_layers = layers, c.num_outputs = 3, c.window_size = 4;
    assert_int_equal(spk_model_create(ctx, &c, &d->model), SPK_OK);
    assert_int_equal(spk_model_init_random(d->model, 1), SPK_OK);
}

static void prepare_small_model(spk_context *ctx, void **out) { prepare_layers(ctx, out, 1); }

static spk_status step_train(spk_context *ctx, void *data) {
    (void)ctx;
    op_data *d = data;
    float x[2 * 4 * 8], t[2] = {0, 2};
    test_fill_random(x, 2 * 4 * 8, 8);
    spk_optimizer_desc opt = spk_optimizer_defaults(SPK_OPTIMIZER_ADAMW);
    opt.clip_norm = 1.0f;
    return spk_model_train_step(d->model, x, 2, 4, SPK_LOSS_CROSS_ENTROPY, t, &opt, NULL);
}

/* A loss of the caller's own: the training forward, then the backward from dL/dy. */
static spk_status step_own_loss(spk_context *ctx, void *data) {
    (void)ctx;
    op_data *d = data;
    float x[2 * 4 * 8], y[2 * 3];
    test_fill_random(x, 2 * 4 * 8, 8);
    spk_status s = spk_model_forward_train(d->model, x, 2, 4, y);
    return s == SPK_OK ? spk_model_backward(d->model, y) : s;
}

/* The same through staging buffers (a device whose memory the host cannot map). */
static void prepare_small_model_staged(spk_context *ctx, void **out) {
    ctx->force_staging = true;
    prepare_small_model(ctx, out);
}

/* Data-parallel on one rank (its reduction leaves the sums as they are), through staging, a
 * bucket per layer of a 2-layer model. */
static void prepare_two_layers_staged(spk_context *ctx, void **out) {
    ctx->force_staging = true;
    prepare_layers(ctx, out, 2);
}

static spk_status reduce_alone(void *user, float *data, size_t count) {
    (void)user, (void)data, (void)count;
    return SPK_OK;
}

static spk_status step_data_parallel(spk_context *ctx, void *data) {
    op_data *d = data;
    spk_data_parallel dp = {.global_batch = 2, .reduce = reduce_alone, .bucket_bytes = 64}; /* a bucket per layer */
    spk_status s = spk_model_set_data_parallel(d->model, &dp);
    return s == SPK_OK ? step_train(ctx, data) : s;
}

/* Checkpoints written and the optimizer state read back. */
static void prepare_trained_model(spk_context *ctx, void **out) {
    prepare_small_model(ctx, out);
    assert_int_equal(step_train(ctx, *out), SPK_OK);
}

static spk_status step_checkpoint(spk_context *ctx, void *data) {
    (void)ctx;
    op_data *d = data;
    char path[512];
    snprintf(path, sizeof path, "%s/fault_state.safetensors", SOFTPICK_TEST_OUTPUT);
    spk_status s = spk_model_save_state(d->model, path);
    if (s == SPK_OK) s = spk_model_load_state(d->model, path);
    return s;
}

static spk_status step_backward_ops(spk_context *ctx, void *data) {
    op_data *d = data;
    int64_t shape[2] = {4, 60};
    spk_tensor *da = NULL;
    spk_status s = spk_tensor_create(ctx, 2, shape, &da);
    spk_matmul_grads g = {.da = da, .dbias = d->gamma};
    if (s == SPK_OK) s = spk_matmul_backward(ctx, d->x, d->w, NULL, d->y, &g);
    if (s == SPK_OK) s = spk_softpick_backward(ctx, d->x, d->y, -1, da);
    spk_tensor_destroy(da);
    return s;
}

/* The other normalizers: the op along rows and columns and its backward (a maxima pass first),
 * and attention's forward (keeping the row statistics) and backward with rectified softpick. */
static spk_status step_normalizers(spk_context *ctx, void *data) {
    op_data *d = data;
    int64_t shape[2] = {4, 60}, qkv[3] = {1, 4, 60}, rs[3] = {1, 2, 4};
    spk_tensor *dx = NULL, *q = NULL, *o = NULL, *r = NULL, *g[3] = {NULL, NULL, NULL};
    spk_status s = spk_tensor_create(ctx, 2, shape, &dx);
    if (s == SPK_OK) s = spk_normalize(ctx, d->x, -1, SPK_NORMALIZER_SOFTMAX, d->y);
    if (s == SPK_OK) s = spk_normalize(ctx, d->x, 0, SPK_NORMALIZER_RECTIFIED_SOFTPICK, d->y);
    if (s == SPK_OK) s = spk_normalize_backward(ctx, d->x, d->y, -1, SPK_NORMALIZER_SOFTMAX, dx);
    spk_attention_desc desc = {.num_heads = 2, .causal = true, .normalizer = SPK_NORMALIZER_RECTIFIED_SOFTPICK};
    if (s == SPK_OK) s = spk_tensor_create(ctx, 3, qkv, &q);
    if (s == SPK_OK) s = spk_tensor_create(ctx, 3, qkv, &o);
    if (s == SPK_OK) s = spk_tensor_create(ctx, 3, rs, &r);
    for (int i = 0; i < 3 && s == SPK_OK; i++) s = spk_tensor_create(ctx, 3, qkv, &g[i]);
    if (s == SPK_OK) s = spk_tensor_upload(q, d->host, 4 * 60);
    if (s == SPK_OK) s = spk_attention_train(ctx, &desc, q, q, q, o, r);
    spk_attention_grads grads = {g[0], g[1], g[2]};
    if (s == SPK_OK) s = spk_attention_backward(ctx, &desc, q, q, q, o, r, q, &grads);
    spk_tensor_destroy(dx), spk_tensor_destroy(q), spk_tensor_destroy(o), spk_tensor_destroy(r);
    for (int i = 0; i < 3; i++) spk_tensor_destroy(g[i]);
    return s;
}

/* Tuning a small model: each problem's rule measured (the budget allows no more), the file written. */
static spk_status step_tune(spk_context *ctx, void *data) {
    (void)data;
    char path[512];
    snprintf(path, sizeof path, "%s/fault_tuning.txt", SOFTPICK_TEST_OUTPUT);
    static const int64_t batches[] = {2};
    spk_model_config c = spk_model_config_default(8);
    c.hidden_size = 8, c.num_heads = 2, c.num_layers = 1, c.window_size = 4;
    spk_tune_desc d = {.config = c, .batches = batches, .batch_count = 1, .budget_seconds = 1e-6, .repeats = 1,
                       .path = path};
    spk_tune_report report;
    return spk_tune(ctx, &d, &report);
}

static void prepare_tuning_file(spk_context *ctx, void **out) {
    prepare_nothing(ctx, out);
    assert_int_equal(step_tune(ctx, *out), SPK_OK);
}

/* A context that loads the tuning file step_tune wrote. */
static spk_status step_tuned_context(spk_context *ctx, void *data) {
    (void)ctx, (void)data;
    char path[512];
    snprintf(path, sizeof path, "%s/fault_tuning.txt", SOFTPICK_TEST_OUTPUT);
    spk_context_desc desc = {.validation = true, .log = test_log_callback, .tuning_path = path};
    spk_context *tuned = NULL;
    g_log.last[0] = '\0';
    spk_status s = spk_context_create(&desc, &tuned);
    spk_context_destroy(tuned);
    return s == SPK_OK ? s : spk__fail(ctx, s, "tuned context: %s", g_log.last);
}

static const scenario g_scenarios[] = {
    {"tensor creation", prepare_nothing, step_tensor_create, cleanup_tensors, 0},
    {"spk_softpick", prepare_tensors, step_softpick, cleanup_tensors, 0},
    {"spk_matmul", prepare_tensors, step_matmul, cleanup_tensors, 0},
    {"spk_layer_norm", prepare_tensors, step_layer_norm, cleanup_tensors, 0},
    {"model creation from safetensors", prepare_nothing, step_model_create, cleanup_tensors, 0},
    {"safetensors load", prepare_model, step_load, cleanup_tensors, 0},
    {"forward pass", prepare_model, step_forward, cleanup_tensors, 0},
    {"the paper's measurements (spk_model_analyze)", prepare_model, step_analyze, cleanup_tensors, 0},
    {"model with f16 weights and activations: creation and forward", prepare_nothing, step_half_model, cleanup_tensors, 0},
    {"self-test (erf)", prepare_nothing, step_selftest, cleanup_tensors, 0},
    {"self-test on a further context", prepare_nothing, step_selftest_contexts, cleanup_tensors, 0},
    {"self-test (training)", prepare_nothing, step_selftest_train, cleanup_tensors, 1},
    {"matmul and softpick backward", prepare_tensors, step_backward_ops, cleanup_tensors, 1},
    {"rectified softpick and softmax: the op and attention, forward and backward", prepare_tensors, step_normalizers,
     cleanup_tensors, 1},
    {"training step (first: makes gradients, activations, moments)", prepare_small_model, step_train, cleanup_tensors, 1},
    {"training step through staging buffers", prepare_small_model_staged, step_train, cleanup_tensors, 1},
    {"data-parallel training step in buckets, through staging buffers", prepare_two_layers_staged, step_data_parallel,
     cleanup_tensors, 1},
    {"training forward and backward from dL/dy", prepare_small_model, step_own_loss, cleanup_tensors, 1},
    {"training step replayed", prepare_trained_model, step_train, cleanup_tensors, 1},
    {"optimizer state saved and loaded", prepare_trained_model, step_checkpoint, cleanup_tensors, 1},
    {"tuning a small model and writing the file", prepare_nothing, step_tune, cleanup_tensors, 2},
    {"a context loading a tuning file", prepare_tuning_file, step_tuned_context, cleanup_tensors, 2},
};

/* After a failure the context must still work: a softpick of known data, checked. */
static void check_context_works(spk_context *ctx) {
    int64_t shape[1] = {5};
    float x[5] = {1, -2, 3, -4, 0}, y[5];
    spk_tensor *t = NULL;
    assert_int_equal(spk_tensor_create(ctx, 1, shape, &t), SPK_OK);
    assert_int_equal(spk_tensor_upload(t, x, 5), SPK_OK);
    spk_status s = spk_softpick(ctx, t, 0, t);
    if (s != SPK_OK) fail_msg("the context does not work after the failure: %s", spk_context_last_error(ctx));
    assert_int_equal(spk_tensor_download(t, y, 5), SPK_OK);
    for (int i = 0; i < 5; i++) assert_true(fabsf(y[i] - x[i] / 11.0f) < 1e-6f);
    spk_tensor_destroy(t);
}

/* One injection point: the scenario on a fresh context with its n-th fallible call failing. */
static void run_point(const scenario *sc, uint64_t n) {
    spk_context *ctx = test_context(NULL);
    void *data = NULL;
    sc->prepare(ctx, &data);
    spk__fault_arm(n);
    spk_status s = sc->step(ctx, data);
    uint64_t calls = spk__fault_calls();
    spk__fault_arm(0);
    if (calls < n) { /* not reached (the census ran another way): nothing failed */
        if (s != SPK_OK) fail_msg("%s: call %llu not reached, yet %s", sc->name, (unsigned long long)n,
                                  spk_context_last_error(ctx));
    } else if (s == SPK_OK) {
        /* a failure the library absorbed (a fallback path) */
    } else if (s == SPK_ERROR_DEVICE_LOST) {
        spk_tensor *t = NULL;
        int64_t shape[1] = {4};
        assert_int_equal(spk_tensor_create(ctx, 1, shape, &t), SPK_ERROR_DEVICE_LOST);
        assert_non_null(strstr(spk_context_last_error(ctx), "lost"));
    } else if (!spk_context_last_error(ctx)[0]) {
        fail_msg("%s, call %llu: status %s without a message", sc->name, (unsigned long long)n, spk_status_string(s));
    }
    sc->cleanup(data);
    if (s != SPK_ERROR_DEVICE_LOST) check_context_works(ctx);
    spk_context_destroy(ctx);
    test_assert_no_validation();
}

/* The scenario once unarmed, recording where each fallible call comes from (src/fault.c); then
 * a failure at each call from a place no earlier call came from: the first pipeline a loop makes,
 * not the hundredth made by the same lines. Returns the points walked and, in *calls, the calls
 * the scenario makes. */
static uint64_t run_scenario(const scenario *sc, uint64_t *calls) {
    spk_context *ctx = test_context(NULL);
    void *data = NULL;
    sc->prepare(ctx, &data);
    spk__fault_census();
    spk_status s = sc->step(ctx, data);
    *calls = spk__fault_calls();
    uint64_t *sites = calloc(*calls + 1, sizeof *sites);
    assert_non_null(sites);
    for (uint64_t n = 1; n <= *calls; n++) sites[n - 1] = spk__fault_site(n);
    spk__fault_arm(0);
    if (s != SPK_OK) fail_msg("%s: unarmed run failed: %s", sc->name, spk_context_last_error(ctx));
    sc->cleanup(data);
    check_context_works(ctx);
    spk_context_destroy(ctx);
    test_assert_no_validation();
    uint64_t points = 0;
    for (uint64_t n = 1; n <= *calls; n++) {
        bool seen = false;
        for (uint64_t i = 0; i + 1 < n && !seen && sites[n - 1]; i++) seen = sites[i] == sites[n - 1];
        if (seen) continue;
        run_point(sc, n);
        points++;
    }
    free(sites);
    return points;
}

static void context_creation(void **state) {
    (void)state;
    spk_context_destroy(test_context(NULL)); /* skips (or fails in CI) without a device */
    uint64_t points = 0;
    for (uint64_t n = 1;; n++) {
        spk_context_desc desc = {.validation = true, .log = test_log_callback};
        spk_context *ctx = NULL;
        g_log.last[0] = '\0';
        spk__fault_arm(n);
        spk_status s = spk_context_create(&desc, &ctx);
        uint64_t calls = spk__fault_calls();
        spk__fault_arm(0);
        if (calls < n) {
            assert_int_equal(s, SPK_OK);
            spk_context_destroy(ctx);
            break;
        }
        points++;
        if (s == SPK_OK) {
            check_context_works(ctx);
            spk_context_destroy(ctx);
        } else {
            assert_null(ctx);
            if (!g_log.last[0]) fail_msg("context creation, call %llu: no message", (unsigned long long)n);
        }
        test_assert_no_validation();
    }
    print_message("context creation: %llu injection points\n", (unsigned long long)points);
}

/* This process's share of the scenarios: those of part g_part, or all (-1). */
static size_t g_part = (size_t)-1;

static void operations(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof g_scenarios / sizeof *g_scenarios; i++) {
        if (g_part != (size_t)-1 && g_scenarios[i].part != g_part) continue;
        double t0 = spk__now_seconds();
        uint64_t calls, points = run_scenario(&g_scenarios[i], &calls);
        print_message("%s: %llu fallible calls, %llu injection points, %.1f s\n", g_scenarios[i].name,
                      (unsigned long long)calls, (unsigned long long)points, spk__now_seconds() - t0);
    }
}

/* test_fault [PART]: the scenarios of one part (context creation with part 0), else all. */
int main(int argc, char **argv) {
    if (argc == 2) g_part = strtoul(argv[1], NULL, 10);
    if (argc > 2 || (argc == 2 && g_part > 2)) {
        fprintf(stderr, "usage: test_fault [PART] with PART 0, 1 or 2\n");
        return 2;
    }
    const struct CMUnitTest first[] = {
        cmocka_unit_test(context_creation),
        cmocka_unit_test(operations),
    };
    const struct CMUnitTest others[] = {
        cmocka_unit_test(operations),
    };
    if (g_part == 0 || g_part == (size_t)-1) return cmocka_run_group_tests(first, NULL, NULL);
    return cmocka_run_group_tests(others, NULL, NULL);
}
