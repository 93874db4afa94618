/* Threads, as the header's rules allow them: several threads each with its own context running
 * model forwards at once, and several threads sharing one context (each with its own tensors and
 * model) while its lock serializes their work. Every result is checked; the tsan preset runs this
 * under ThreadSanitizer. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define THREADS 3
#define GOLDEN "golden/model-e20-h32-n4-l2/"

typedef struct job {
    spk_context *ctx; /* NULL: the thread makes its own */
    const char *weights; /* test_data_path's buffer is not for threads: resolved once */
    const float *x, *expected;
    int64_t batch, seq, out_count;
    int forwards;
    int failures;
    char message[256];
} job;

static void *run_forwards(void *arg) {
    job *j = arg;
    spk_context *ctx = j->ctx;
    if (!ctx) {
        spk_context_desc desc = {.validation = true, .log = test_log_callback};
        if (spk_context_create(&desc, &ctx) != SPK_OK) {
            j->failures++;
            return NULL;
        }
    }
    spk_model *m = NULL;
    spk_model_config overrides = {0};
    float *y = malloc((size_t)j->out_count * sizeof *y);
    if (spk_model_create_from_safetensors(ctx, j->weights, &overrides, &m) != SPK_OK ||
        !y) {
        j->failures++;
    } else {
        for (int i = 0; i < j->forwards; i++) {
            if (spk_model_forward(m, j->x, j->batch, j->seq, y) != SPK_OK) {
                j->failures++;
                break;
            }
            double max_err = 0, max_ref = 0;
            for (int64_t k = 0; k < j->out_count; k++) {
                max_err = fmax(max_err, fabs((double)y[k] - j->expected[k]));
                max_ref = fmax(max_ref, fabs((double)j->expected[k]));
            }
            if (!(max_err <= 1e-3 * max_ref)) j->failures++;
        }
    }
    free(y);
    spk_model_destroy(m);
    if (!j->ctx) spk_context_destroy(ctx);
    return NULL;
}

static void run_jobs(spk_context *shared) {
    char error[256];
    spk_array x, expected;
    assert_int_equal(spk_npy_read(test_data_path(GOLDEN "input.npy"), &x, error, sizeof error), SPK_OK);
    assert_int_equal(spk_npy_read(test_data_path(GOLDEN "expected.npy"), &expected, error, sizeof error), SPK_OK);
    char weights[512];
    snprintf(weights, sizeof weights, "%s", test_data_path(GOLDEN "weights.safetensors"));
    job jobs[THREADS];
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (job){shared, weights, x.data, expected.data, x.shape[0], x.shape[1], expected.count, 4, 0, ""};
        assert_int_equal(pthread_create(&threads[i], NULL, run_forwards, &jobs[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(jobs[i].failures, 0);
    }
    spk_array_free(&x);
    spk_array_free(&expected);
}

static void a_context_per_thread(void **state) {
    (void)state;
    spk_context_destroy(test_context(NULL)); /* skips (or fails in CI) without a device */
    run_jobs(NULL);
    test_assert_no_validation();
}

static void one_shared_context(void **state) {
    (void)state;
    spk_context *ctx = test_context(NULL);
    run_jobs(ctx);
    spk_context_destroy(ctx);
    test_assert_no_validation();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_context_per_thread),
        cmocka_unit_test(one_shared_context),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
