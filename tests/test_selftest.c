/* spk_selftest: every line passes on this device with validation on, every op family and the
 * variants this device uses are covered, the filter and the argument checks work; the float64
 * references it compares against are checked against values worked out by hand, and its error
 * measure fails on an unwritten (NaN-poisoned) output. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "reference.h"

typedef struct lines {
    int count, used, backward_used;
    char ops[64][32];
    int op_used[64], op_count;
} lines;

static void collect(const spk_selftest_result *r, void *user) {
    lines *l = user;
    l->count++;
    l->used += r->used;
    l->backward_used += r->used && strncmp(r->variant, "backward", 8) == 0;
    if (r->outcome == SPK_SELFTEST_FAIL) print_error("FAIL %s / %s: %s\n", r->op, r->variant, r->reason);
    if (r->outcome == SPK_SELFTEST_PASS) {
        assert_true(r->max_error <= r->bound);
        assert_true(r->shapes[0] != '\0');
        assert_string_equal(r->reason, "");
    } else {
        assert_true(r->reason[0] != '\0'); /* skipped or failed: says why */
    }
    if (r->outcome == SPK_SELFTEST_SKIPPED) assert_false(r->used); /* what it cannot run, it does not use */
    int i = 0;
    while (i < l->op_count && strcmp(l->ops[i], r->op) != 0) i++;
    if (i == l->op_count) snprintf(l->ops[l->op_count++], sizeof l->ops[0], "%s", r->op);
    l->op_used[i] += r->used;
}

static void everything_passes(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    lines l = {0};
    spk_selftest_desc desc = {.on_result = collect, .user_data = &l};
    spk_selftest_report report;
    assert_int_equal(spk_selftest(ctx, &desc, &report), SPK_OK);
    assert_int_equal(report.failed, 0);
    assert_int_equal((int)(report.passed + report.skipped), l.count);
    assert_true(report.passed >= 20);
    static const char *families[] = {"softpick", "matmul", "layer norm", "erf", "gelu", "attention", "model", "loss", "train"};
    assert_int_equal(l.op_count, 9);
    /* Every family with a backward has a backward line of the variant this device uses (attention
     * one per normalizer). */
    assert_int_equal(l.backward_used, 5 + 2);
    for (int f = 0; f < 9; f++) {
        int i = 0;
        while (i < l.op_count && strcmp(l.ops[i], families[f]) != 0) i++;
        if (i == l.op_count) fail_msg("no line for %s", families[f]);
        if (l.op_used[i] == 0) fail_msg("no %s line is the variant this device uses", families[f]);
    }
    test_assert_no_validation();
}

static void only_filters(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    lines l = {0};
    spk_selftest_desc desc = {.on_result = collect, .user_data = &l, .only = "gelu"};
    spk_selftest_report report;
    assert_int_equal(spk_selftest(ctx, &desc, &report), SPK_OK);
    assert_int_equal(report.passed, 2); /* the forward and the backward */
    assert_int_equal(l.count, 2);
    assert_int_equal(l.op_count, 1);
    assert_string_equal(l.ops[0], "gelu");
    desc.only = "no such op";
    assert_int_equal(spk_selftest(ctx, &desc, &report), SPK_OK);
    assert_int_equal(report.passed + report.failed + report.skipped, 0);
    test_assert_no_validation();
}

/* Every line a part makes, in order, with its outcome and error bit for bit. */
typedef struct line_log {
    int count;
    char text[64][200];
} line_log;

static void record(const spk_selftest_result *r, void *user) {
    line_log *l = user;
    if (l->count < 64)
        snprintf(l->text[l->count++], sizeof l->text[0], "%s|%s|%d|%d|%a|%s", r->op, r->variant, r->used,
                 (int)r->outcome, r->max_error, r->shapes);
}

/* On more contexts at once the parts make the same lines, reported in the same order: the
 * softpick lines come from three parts (forward, 16-bit, backward). */
static void threads_report_the_same_lines(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    static line_log one, three;
    spk_selftest_report report_one, report_three;
    spk_selftest_desc desc = {.on_result = record, .user_data = &one, .only = "softpick", .threads = 1};
    assert_int_equal(spk_selftest(ctx, &desc, &report_one), SPK_OK);
    desc.user_data = &three;
    desc.threads = 3;
    assert_int_equal(spk_selftest(ctx, &desc, &report_three), SPK_OK);
    assert_true(one.count > 3 && one.count < 64);
    assert_int_equal(one.count, three.count);
    for (int i = 0; i < one.count; i++) assert_string_equal(one.text[i], three.text[i]);
    assert_non_null(strstr(one.text[one.count - 1], "backward")); /* the backward part's line is last */
    assert_int_equal(report_one.passed, report_three.passed);
    assert_int_equal(report_one.passed + report_one.skipped, (uint32_t)one.count);
    test_assert_no_validation();
}

static void bad_arguments(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    spk_selftest_report report;
    assert_int_equal(spk_selftest(NULL, NULL, &report), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_selftest(ctx, NULL, NULL), SPK_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(spk_context_last_error(ctx), "report"));
}

/* The references against values worked out by hand. */
static void references(void **state) {
    (void)state;
    const float x[4] = {1, -2, 3, -4}; /* 1 + sum |x| = 11 */
    double y[4];
    spk__ref_softpick(x, 1, 4, 1, y);
    for (int i = 0; i < 4; i++) assert_true(fabs(y[i] - x[i] / 11.0) < 1e-15);
    spk__ref_softpick(x, 1, 2, 2, y); /* columns {1, 3} and {-2, -4}: denominators 5 and 7 */
    assert_true(fabs(y[0] - 1 / 5.0) < 1e-15 && fabs(y[2] - 3 / 5.0) < 1e-15);
    assert_true(fabs(y[1] + 2 / 7.0) < 1e-15 && fabs(y[3] + 4 / 7.0) < 1e-15);

    const float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8}, bias[2] = {1, -1}, res[4] = {0.5f, 0, 0, 0};
    double c[4];
    spk__ref_matmul(a, b, bias, false, res, 1, 2, 2, 2, true, c); /* [[19, 22], [43, 50]] + bias + res */
    assert_true(c[0] == 20.5 && c[1] == 21 && c[2] == 44 && c[3] == 49);
    assert_true(fabs(spk__ref_gelu(1.0) - 0.8413447460685429) < 1e-15);

    const float row[2] = {1, 3}, one[2] = {1, 1}, zero[2] = {0, 0};
    spk__ref_layer_norm(row, one, zero, 1, 2, 0.0, y); /* mean 2, variance 1 */
    assert_true(y[0] == -1 && y[1] == 1);

    /* One head of size 1, two positions, causal: s_00 = 2, s_10 = 1, s_11 = 2. */
    const float q[2] = {1, 1}, k[2] = {2, 1}, v[2] = {3, 5};
    assert_true(spk__ref_attention(q, k, v, 1, 2, 1, 1, true, SPK_NORMALIZER_SOFTPICK, y, NULL));
    assert_true(fabs(y[0] - 2 * 3 / 3.0) < 1e-15);
    assert_true(fabs(y[1] - (2 * 3 + 1 * 5) / 4.0) < 1e-15);
}

/* An output the device never wrote keeps its NaN poison: the error measure fails it. */
static void unwritten_output_fails(void **state) {
    (void)state;
    const float y[3] = {1, NAN, 3};
    const double ref[3] = {1, 2, 3};
    double err = spk__ref_error(y, ref, 3);
    assert_false(err <= 1e-5);
    const float close[3] = {1, 2, 3.00003f};
    err = spk__ref_error(close, ref, 3);
    assert_true(err > 9e-6 && err < 1.1e-5); /* relative to max |ref| = 3 */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(references),
        cmocka_unit_test(unwritten_output_fails),
        cmocka_unit_test(threads_report_the_same_lines),
        cmocka_unit_test(bad_arguments),
        cmocka_unit_test(only_filters),
        cmocka_unit_test(everything_passes),
    };
    return cmocka_run_group_tests(tests, NULL, test_teardown_shared_context);
}
