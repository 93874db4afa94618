/* Data-parallel training (spk_model_set_data_parallel) without MPI: N "ranks" as N threads, each
 * with a context and a model of its own, whose reduction is an all-reduce through shared memory
 * (every rank's buffer summed in rank order, so each gets the same bits). Against one process on
 * the whole batch: the losses within 1e-6 and the weights within 1e-5 after 10 AdamW steps with
 * clipping and dropout, a global batch not divisible by the ranks included; every rank's weights
 * identical bit for bit; buckets reduced as the backward finishes them, through staging too;
 * spk_model_grad's gradients; the errors. */
#define _POSIX_C_SOURCE 200809L /* pthread_barrier_t */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "internal.h"

enum { EMBED = 6, SEQ = 5, OUTPUTS = 3, STEPS = 10, MAX_RANKS = 3, GLOBAL = 7 };

typedef struct world {
    int ranks;
    size_t bucket_bytes; /* spk_data_parallel's: 0, or buckets reduced as the backward finishes them */
    int reductions;      /* rank 0's calls of reduce, over the run */
    pthread_barrier_t barrier;
    float *slots[MAX_RANKS];
    size_t count;
} world;

typedef struct rank {
    world *w;
    int index;
    bool grad_only; /* spk_model_grad once instead of training */
    bool staged;    /* the gradients through a staging buffer (as where device memory is not host-visible) */
    spk_status status;
    float losses[STEPS];
    float *weights; /* every parameter (or gradient), in spk_model_parameter_info's order */
} rank;

/* The all-reduce: each rank offers its buffer, then every rank sums them all in rank order. */
static spk_status reduce(void *user, float *data, size_t count) {
    rank *r = user;
    world *w = r->w;
    w->slots[r->index] = data;
    w->count = count;
    if (r->index == 0) w->reductions++;
    pthread_barrier_wait(&w->barrier);
    float *sum = malloc(count * sizeof *sum);
    for (size_t i = 0; sum && i < count; i++) {
        sum[i] = 0.0f;
        for (int k = 0; k < w->ranks; k++) sum[i] += w->slots[k][i];
    }
    pthread_barrier_wait(&w->barrier); /* every rank has read every buffer */
    if (sum) memcpy(data, sum, count * sizeof *sum);
    free(sum);
    return sum ? SPK_OK : SPK_ERROR_OUT_OF_HOST_MEMORY;
}

/* Step s's global batch: samples and class targets of their own. */
static void batch_of(int step, float *x, float *t) {
    test_fill_random(x, GLOBAL * SEQ * EMBED, 100 + (uint64_t)step);
    for (int i = 0; i < GLOBAL; i++) t[i] = (float)((step * 5 + i * 2) % OUTPUTS);
}

static void *run_rank(void *arg) {
    rank *r = arg;
    int ranks = r->w ? r->w->ranks : 1;
    int64_t first = (int64_t)r->index * GLOBAL / ranks, batch = (int64_t)(r->index + 1) * GLOBAL / ranks - first;
    spk_context *ctx = test_context(NULL);
    ctx->force_staging = r->staged;
    spk_model_config c = spk_model_config_default(EMBED);
    c.hidden_size = 8, c.num_heads = 2, c.num_layers = 2, c.window_size = SEQ, c.num_outputs = OUTPUTS, c.dropout = 0.2f;
    spk_model *m = NULL;
    spk_status s = spk_model_create(ctx, &c, &m);
    if (s == SPK_OK) s = spk_model_init_random(m, 9);
    if (s == SPK_OK) s = spk_model_set_dropout(m, c.dropout, 4);
    spk_data_parallel dp = {.global_batch = GLOBAL, .first_sample = first, .reduce = reduce, .user = r,
                            .bucket_bytes = r->w ? r->w->bucket_bytes : 0};
    if (s == SPK_OK && r->w) s = spk_model_set_data_parallel(m, &dp);
    spk_optimizer_desc opt = spk_optimizer_defaults(SPK_OPTIMIZER_ADAMW);
    opt.lr = 1e-2f, opt.clip_norm = 0.5f;
    float x[GLOBAL * SEQ * EMBED], t[GLOBAL];
    for (int step = 0; step < (r->grad_only ? 1 : STEPS) && s == SPK_OK; step++) {
        batch_of(step, x, t);
        const float *xs = x + first * SEQ * EMBED, *ts = t + first;
        s = r->grad_only ? spk_model_grad(m, xs, batch, SEQ, SPK_LOSS_CROSS_ENTROPY, ts, &r->losses[step])
                         : spk_model_train_step(m, xs, batch, SEQ, SPK_LOSS_CROSS_ENTROPY, ts, &opt, &r->losses[step]);
    }
    if (s == SPK_OK) r->weights = malloc((size_t)test_model_values(m, false, NULL) * sizeof *r->weights);
    if (s == SPK_OK && (!r->weights || test_model_values(m, r->grad_only, r->weights) < 0)) s = SPK_ERROR_OUT_OF_HOST_MEMORY;
    if (s != SPK_OK) fprintf(stderr, "rank %d: %s\n", r->index, spk_context_last_error(ctx));
    r->status = s;
    spk_model_destroy(m);
    spk_context_destroy(ctx);
    return NULL;
}

/* `ranks` threads against one process alone (a rank without a world). */
static void check_ranks(int ranks, bool grad_only, bool staged, size_t bucket_bytes) {
    rank alone = {.index = 0, .grad_only = grad_only};
    run_rank(&alone);
    assert_int_equal(alone.status, SPK_OK);
    world w = {.ranks = ranks, .bucket_bytes = bucket_bytes};
    pthread_barrier_init(&w.barrier, NULL, (unsigned)ranks);
    rank r[MAX_RANKS];
    pthread_t threads[MAX_RANKS];
    for (int k = 0; k < ranks; k++) {
        r[k] = (rank){.w = &w, .index = k, .grad_only = grad_only, .staged = staged};
        assert_int_equal(pthread_create(&threads[k], NULL, run_rank, &r[k]), 0);
    }
    for (int k = 0; k < ranks; k++) pthread_join(threads[k], NULL);
    pthread_barrier_destroy(&w.barrier);
    int64_t n = 0;
    {
        spk_context *ctx = test_shared_context();
        spk_model_config c = spk_model_config_default(EMBED);
        c.hidden_size = 8, c.num_heads = 2, c.num_layers = 2, c.num_outputs = OUTPUTS;
        spk_model *m = NULL;
        assert_int_equal(spk_model_create(ctx, &c, &m), SPK_OK);
        n = test_model_values(m, false, NULL);
        spk_model_destroy(m);
    }
    double worst_loss = 0, worst = 0, scale = 0;
    for (int k = 0; k < ranks; k++) {
        assert_int_equal(r[k].status, SPK_OK);
        for (int step = 0; step < (grad_only ? 1 : STEPS); step++) {
            assert_true(r[k].losses[step] == r[0].losses[step]); /* every rank logs the same loss */
            worst_loss = fmax(worst_loss, fabs(r[k].losses[step] - alone.losses[step]) / fabs(alone.losses[step]));
        }
        assert_memory_equal(r[k].weights, r[0].weights, (size_t)n * sizeof(float));
    }
    for (int64_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs(r[0].weights[i] - alone.weights[i]));
        scale = fmax(scale, fabs(alone.weights[i]));
    }
    /* Buckets of one layer at least: the two layers' and the loss's reductions per step. */
    int calls = grad_only ? 1 : STEPS;
    assert_int_equal(w.reductions, bucket_bytes ? 3 * calls : 2 * calls);
    printf("%d ranks%s%s (global batch %d), %s: loss within %.2g relative, %s within %.2g (largest %.3g)\n", ranks,
           staged ? " through staging" : "", bucket_bytes ? ", a bucket per layer" : "", GLOBAL, grad_only ? "spk_model_grad" : "10 AdamW steps, clipping 0.5, dropout 0.2", worst_loss,
           grad_only ? "gradients" : "weights", worst, scale);
    if (!(worst_loss <= 1e-6)) fail_msg("loss off by %.3g relative", worst_loss);
    if (!(worst <= 1e-5 * fmax(1.0, scale))) fail_msg("off by %.3g", worst);
    for (int k = 0; k < ranks; k++) free(r[k].weights);
    free(alone.weights);
    test_assert_no_validation();
}

static void two_ranks(void **state) {
    (void)state;
    check_ranks(2, false, false, 0);
}

static void three_ranks_uneven(void **state) {
    (void)state;
    check_ranks(3, false, true, 64);
}

static void two_ranks_buckets(void **state) {
    (void)state;
    check_ranks(2, false, false, 64);
}

static void gradients(void **state) {
    (void)state;
    check_ranks(3, true, false, 64);
}

static spk_status never(void *user, float *data, size_t count) {
    (void)user, (void)data, (void)count;
    return SPK_ERROR_DEVICE_LOST;
}

static void errors(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    spk_model_config c = spk_model_config_default(EMBED);
    c.hidden_size = 8, c.num_heads = 2, c.num_layers = 1, c.num_outputs = OUTPUTS;
    spk_model *m = NULL;
    assert_int_equal(spk_model_create(ctx, &c, &m), SPK_OK);
    assert_int_equal(spk_model_init_random(m, 1), SPK_OK);
    spk_data_parallel bad[] = {{.global_batch = -1, .reduce = never}, {.global_batch = 4, .first_sample = 4, .reduce = never},
                               {.global_batch = 4, .first_sample = -1, .reduce = never}, {.global_batch = 4}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(spk_model_set_data_parallel(m, &bad[i]), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_model_set_data_parallel(NULL, NULL), SPK_ERROR_INVALID_ARGUMENT);
    float x[4 * SEQ * EMBED] = {0}, t[4] = {0, 1, 2, 0}, loss = 0;
    spk_data_parallel dp = {.global_batch = 4, .first_sample = 2, .reduce = never};
    assert_int_equal(spk_model_set_data_parallel(m, &dp), SPK_OK);
    assert_int_equal(spk_model_grad(m, x, 3, SEQ, SPK_LOSS_CROSS_ENTROPY, t, &loss), SPK_ERROR_SHAPE);
    assert_non_null(strstr(spk_context_last_error(ctx), "past the global batch"));
    /* A failing reduction fails the step with its status, and the model goes on alone after. */
    spk_optimizer_desc opt = spk_optimizer_defaults(SPK_OPTIMIZER_SGD);
    assert_int_equal(spk_model_train_step(m, x, 2, SEQ, SPK_LOSS_CROSS_ENTROPY, t, &opt, &loss), SPK_ERROR_DEVICE_LOST);
    assert_non_null(strstr(spk_context_last_error(ctx), "reduction failed"));
    assert_int_equal(spk_model_set_data_parallel(m, NULL), SPK_OK);
    assert_int_equal(spk_model_train_step(m, x, 4, SEQ, SPK_LOSS_CROSS_ENTROPY, t, &opt, &loss), SPK_OK);
    assert_true(isfinite(loss));
    spk_model_destroy(m);
    test_assert_no_validation();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(errors),
        cmocka_unit_test(two_ranks),
        cmocka_unit_test(two_ranks_buckets),
        cmocka_unit_test(three_ranks_uneven),
        cmocka_unit_test(gradients),
    };
    return cmocka_run_group_tests(tests, NULL, test_teardown_shared_context);
}
