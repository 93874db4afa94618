/* The tool under mpirun (label "mpi"): data-parallel training on 2 and 3 ranks against one
 * process with the same global batch (7 samples: divisible by neither), AdamW (lr 1e-3) with
 * clipping, dropout and shuffling, the losses within 1e-6 relative and the weights within 1e-5 (the tool
 * itself checks at the end that every rank holds the same bits); a run resumed across rank
 * counts; ranks that disagree refused without a hang; batch inference on 2 ranks byte for byte
 * one process's; Python's Model.fit over mpi4py against the tool. Lavapipe with one thread per
 * rank. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"

enum { N = 12, SEQ = 5, EMBED = 6, CLASSES = 3, STEPS = 10 };

static char g_dir[64];

#define MPIRUN "timeout 120 mpirun --allow-run-as-root --oversubscribe -x LP_NUM_THREADS=1 "

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/softpick_mpi_XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    float x[N * SEQ * EMBED], t[N];
    test_fill_random(x, N * SEQ * EMBED, 3);
    for (int i = 0; i < N; i++) t[i] = (float)((i * 7) % CLASSES);
    char path[128];
    int64_t xs[3] = {N, SEQ, EMBED};
    snprintf(path, sizeof path, "%s/x.npy", g_dir);
    if (spk_npy_write(path, 3, xs, x, NULL, 0) != SPK_OK) return -1;
    /* Class indices as integers (<i4): written by hand, the library writes floats. */
    snprintf(path, sizeof path, "%s/t.npy", g_dir);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    char header[118];
    snprintf(header, sizeof header, "{'descr': '<i4', 'fortran_order': False, 'shape': (%d,), }", N);
    fprintf(f, "\x93NUMPY\x01%c%c%c%-117s\n", 0, 118, 0, header);
    for (int i = 0; i < N; i++) {
        int32_t v = (int32_t)t[i];
        fwrite(&v, sizeof v, 1, f);
    }
    fclose(f);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Runs a shell command; returns its exit status. */
static int sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

/* `softpick train` on `ranks` (0: one process, no mpirun) into <name>.safetensors, its log in <name>.log. */
static int train(int ranks, const char *name, int steps, const char *extra) {
    char launcher[256] = "";
    if (ranks) snprintf(launcher, sizeof launcher, MPIRUN "-np %d ", ranks);
    return sh("%s%s train --init-seed 5 --embed %d --hidden 8 --heads 2 --layers 2 --window %d --outputs %d "
              "--input %s/x.npy --target %s/t.npy --loss cross-entropy --batch-size 7 --steps %d --lr 0.001 "
              "--clip-norm 0.5 --dropout 0.2 --seed 3 --shuffle --log-every 1 --output %s/%s.safetensors %s "
              ">%s/%s.log 2>&1",
              launcher, SOFTPICK_CLI, EMBED, SEQ, CLASSES, g_dir, g_dir, steps, g_dir, name, extra, g_dir, name);
}

/* The losses a log printed ("step N  loss L"), in order; returns how many. */
static int losses(const char *name, double *out, int max) {
    char path[128], line[512];
    snprintf(path, sizeof path, "%s/%s.log", g_dir, name);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int n = 0;
    long step;
    double v;
    while (n < max && fgets(line, sizeof line, f)) {
        const char *at = strstr(line, "step ");
        while (at && n < max) {
            if (sscanf(at, "step %ld  loss %lf", &step, &v) == 2) out[n++] = v;
            at = strstr(at + 5, "step ");
        }
    }
    fclose(f);
    return n;
}

/* Every parameter of two weights files: the largest difference, and of values. */
static double weights_diff(const char *a, const char *b, double *scale) {
    spk_context *ctx = test_shared_context();
    char pa[128], pb[128];
    snprintf(pa, sizeof pa, "%s/%s.safetensors", g_dir, a);
    snprintf(pb, sizeof pb, "%s/%s.safetensors", g_dir, b);
    spk_model *ma = NULL, *mb = NULL;
    assert_int_equal(spk_model_create_from_safetensors(ctx, pa, NULL, &ma), SPK_OK);
    assert_int_equal(spk_model_create_from_safetensors(ctx, pb, NULL, &mb), SPK_OK);
    int64_t n = test_model_values(ma, false, NULL);
    float *wa = test_alloc_floats(n), *wb = test_alloc_floats(n);
    assert_int_equal(test_model_values(ma, false, wa), n);
    assert_int_equal(test_model_values(mb, false, wb), n);
    double worst = 0;
    *scale = 0;
    for (int64_t j = 0; j < n; j++) worst = fmax(worst, fabs(wa[j] - wb[j])), *scale = fmax(*scale, fabs(wa[j]));
    free(wa), free(wb);
    spk_model_destroy(ma), spk_model_destroy(mb);
    return worst;
}

static void check_same(const char *a, const char *b, int steps) {
    double la[64], lb[64], scale;
    assert_int_equal(losses(a, la, 64), steps);
    assert_int_equal(losses(b, lb, 64), steps);
    double worst_loss = 0;
    int at = 0;
    for (int i = 0; i < steps; i++)
        if (fabs(la[i] - lb[i]) / fabs(la[i]) > worst_loss) worst_loss = fabs(la[i] - lb[i]) / fabs(la[i]), at = i;
    double worst = weights_diff(a, b, &scale);
    printf("%s against %s: losses within %.2g relative (step %d: %.9g and %.9g), weights within %.2g (largest %.3g)\n",
           b, a, worst_loss, at + 1, la[at], lb[at], worst, scale);
    if (!(worst_loss <= 1e-6) || !(worst <= 1e-5 * fmax(1.0, scale))) fail_msg("%s differs from %s", b, a);
}

static void ranks_against_one(void **state) {
    (void)state;
    assert_int_equal(train(0, "one", STEPS, ""), 0);
    assert_int_equal(train(2, "two", STEPS, ""), 0);
    assert_int_equal(train(3, "three", STEPS, ""), 0);
    check_same("one", "two", STEPS);
    check_same("one", "three", STEPS);
}

/* 3 steps on 2 ranks, then 2 more on 3 ranks from its checkpoint: 5 steps on one process. */
static void resume_across_rank_counts(void **state) {
    (void)state;
    char extra[512];
    assert_int_equal(train(0, "five", 5, ""), 0);
    snprintf(extra, sizeof extra, "--state %s/s.safetensors --checkpoint-every 2", g_dir);
    assert_int_equal(train(2, "first3", 3, extra), 0);
    snprintf(extra, sizeof extra, "--resume %s/s.safetensors", g_dir);
    /* the resumed run takes its weights from the first's output */
    assert_int_equal(sh(MPIRUN "-np 3 %s train --weights %s/first3.safetensors --input %s/x.npy --target %s/t.npy "
                        "--loss cross-entropy --batch-size 7 --steps 2 --lr 0.001 --clip-norm 0.5 --dropout 0.2 --seed 3 "
                        "--shuffle --log-every 1 --resume %s/s.safetensors --output %s/then2.safetensors >%s/then2.log 2>&1",
                        SOFTPICK_CLI, g_dir, g_dir, g_dir, g_dir, g_dir, g_dir),
                     0);
    double scale, worst = weights_diff("five", "then2", &scale);
    double l5[8], l3[8], l2[8];
    assert_int_equal(losses("five", l5, 8), 5);
    assert_int_equal(losses("first3", l3, 8), 3);
    assert_int_equal(losses("then2", l2, 8), 2);
    double worst_loss = 0;
    for (int i = 0; i < 5; i++) worst_loss = fmax(worst_loss, fabs((i < 3 ? l3[i] : l2[i - 3]) - l5[i]) / fabs(l5[i]));
    printf("3 steps on 2 ranks + 2 on 3 against 5 on one: losses within %.2g, weights within %.2g\n", worst_loss, worst);
    if (!(worst_loss <= 1e-6) || !(worst <= 1e-5 * fmax(1.0, scale))) fail_msg("the resumed run differs");
}

/* Two ranks started with different learning rates (mpirun's colon syntax): refused by both, at
 * once, with the reason; no rank left waiting. */
static void disagreeing_ranks_refused(void **state) {
    (void)state;
    const char *common = "train --init-seed 5 --embed 6 --hidden 8 --heads 2 --layers 1 --window 5 --outputs 3 "
                         "--loss cross-entropy --batch-size 4 --steps 2";
    int rc = sh(MPIRUN "-np 1 %s %s --input %s/x.npy --target %s/t.npy --output %s/bad.safetensors --lr 0.01 : "
                "-np 1 %s %s --input %s/x.npy --target %s/t.npy --output %s/bad.safetensors --lr 0.02 >%s/bad.log 2>&1",
                SOFTPICK_CLI, common, g_dir, g_dir, g_dir, SOFTPICK_CLI, common, g_dir, g_dir, g_dir, g_dir);
    char path[128], line[512];
    snprintf(path, sizeof path, "%s/bad.log", g_dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    bool said = false;
    while (fgets(line, sizeof line, f)) said = said || strstr(line, "the ranks disagree on the arguments");
    fclose(f);
    if (rc == 0 || rc == 124 || !said) fail_msg("exit %d (124: a hang), the reason %s", rc, said ? "given" : "missing");
}

/* Batch inference split over 2 ranks: the same file, byte for byte. */
static void run_on_two_ranks(void **state) {
    (void)state;
    assert_int_equal(sh("%s run --weights %s/one.safetensors --input %s/x.npy --output %s/y1.npy", SOFTPICK_CLI, g_dir,
                        g_dir, g_dir),
                     0);
    assert_int_equal(sh(MPIRUN "-np 2 %s run --weights %s/one.safetensors --input %s/x.npy --output %s/y2.npy",
                        SOFTPICK_CLI, g_dir, g_dir, g_dir),
                     0);
    assert_int_equal(sh("cmp %s/y1.npy %s/y2.npy", g_dir, g_dir), 0);
}

/* examples/python/train_mpi.py (Model.fit with an mpi4py communicator) on 2 ranks: the CLI's run. */
static void python_fit_equals_the_cli(void **state) {
    (void)state;
    assert_int_equal(sh(MPIRUN "-np 2 -x SOFTPICK_LIBRARY=%s -x PYTHONPATH=%s $([ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3) %s --input %s/x.npy "
                        "--target %s/t.npy --hidden 8 --heads 2 --layers 2 --outputs 3 --init-seed 5 --batch-size 7 "
                        "--steps 10 --lr 0.001 --clip-norm 0.5 --dropout 0.2 --seed 3 --shuffle "
                        "--output %s/python.safetensors >%s/python.log 2>&1",
                        SOFTPICK_LIBRARY_FILE, SOFTPICK_PYTHON_DIR, SOFTPICK_TRAIN_MPI, g_dir, g_dir, g_dir, g_dir),
                     0);
    check_same("two", "python", STEPS);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ranks_against_one),
        cmocka_unit_test(resume_across_rank_counts),
        cmocka_unit_test(disagreeing_ranks_refused),
        cmocka_unit_test(run_on_two_ranks),
        cmocka_unit_test(python_fit_equals_the_cli),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    test_teardown_shared_context(NULL);
    return rc;
}
