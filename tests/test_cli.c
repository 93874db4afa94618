/* The softpick tool as a user runs it: exit status, one clear line on stderr for every error,
 * and results checked against the float64 reference. */
#define _POSIX_C_SOURCE 200809L /* popen, mkdtemp */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static char g_dir[64];

static int setup(void **state) {
    (void)state;
    strcpy(g_dir, "/tmp/softpick_cli_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Runs the tool with `args`; returns its exit status and stderr's lines (count and first). */
static int run_cli_env(const char *env, const char *args, int *stderr_lines, char *first_line, size_t first_size) {
    char cmd[1024], err_path[128];
    snprintf(err_path, sizeof err_path, "%s/stderr.txt", g_dir);
    snprintf(cmd, sizeof cmd, "%s %s %s >%s/stdout.txt 2>%s", env, SOFTPICK_CLI, args, g_dir, err_path);
    int rc = system(cmd);
    FILE *f = fopen(err_path, "r");
    assert_non_null(f);
    char line[1024];
    *stderr_lines = 0;
    if (first_size) first_line[0] = '\0';
    while (fgets(line, sizeof line, f)) {
        if (*stderr_lines == 0 && first_size) {
            size_t n = strlen(line) < first_size - 1 ? strlen(line) : first_size - 1;
            memcpy(first_line, line, n);
            first_line[n] = '\0';
        }
        (*stderr_lines)++;
    }
    fclose(f);
    return rc;
}

static int run_cli(const char *args, int *stderr_lines, char *first_line, size_t first_size) {
    return run_cli_env("", args, stderr_lines, first_line, first_size);
}

static bool have_device(void) {
    uint32_t count = 0;
    if (spk_list_devices(NULL, 0, &count) == SPK_OK && count > 0) return true;
    if (getenv("CI")) fail_msg("no Vulkan device in CI");
    return false;
}

static void test_softpick_command(void **state) {
    (void)state;
    if (!have_device()) skip();
    char in[128], out[128], args[512], line[512];
    snprintf(in, sizeof in, "%s/in.npy", g_dir);
    snprintf(out, sizeof out, "%s/out.npy", g_dir);
    int64_t shape[3] = {3, 40, 7};
    float x[3 * 40 * 7];
    double ref[3 * 40 * 7];
    test_fill_random(x, 3 * 40 * 7, 17);
    assert_int_equal(spk_npy_write(in, 3, shape, x, NULL, 0), SPK_OK);
    for (int axis = -3; axis < 3; axis++) {
        int lines;
        snprintf(args, sizeof args, "softpick --axis %d %s %s", axis, in, out);
        assert_int_equal(run_cli(args, &lines, line, sizeof line), 0);
        assert_int_equal(lines, 0);
        spk_array y;
        assert_int_equal(spk_npy_read(out, &y, NULL, 0), SPK_OK);
        assert_int_equal(y.ndim, 3);
        assert_memory_equal(y.shape, shape, sizeof shape);
        ref_softpick(x, ref, 3, shape, axis);
        assert_true(ref_row_error(y.data, ref, 3, shape, axis) <= 1e-5);
        spk_array_free(&y);
    }
    int lines;
    assert_int_equal(run_cli("devices", &lines, line, sizeof line), 0);
}

/* softpick run reproduces the golden cases (1e-3 relative); demo runs and prints its output. */
/* Reads what the last command printed to stdout. */
static void read_stdout(char *text, size_t size) {
    char path[128];
    snprintf(path, sizeof path, "%s/stdout.txt", g_dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, size - 1, f);
    fclose(f);
    text[n] = '\0';
}

static void test_run_and_demo(void **state) {
    (void)state;
    if (!have_device()) skip();
    const char *cases[] = {"golden/model-e20-h32-n4-l2/", "golden/model-e48-h48-n3-l3/"};
    char weights[512], input[512], expected_path[512], out[128], args[2048], line[512];
    snprintf(out, sizeof out, "%s/y.npy", g_dir);
    for (int i = 0; i < 2; i++) {
        snprintf(weights, sizeof weights, "%s/%sweights.safetensors", SOFTPICK_TEST_DATA, cases[i]);
        snprintf(input, sizeof input, "%s/%sinput.npy", SOFTPICK_TEST_DATA, cases[i]);
        snprintf(expected_path, sizeof expected_path, "%s/%sexpected.npy", SOFTPICK_TEST_DATA, cases[i]);
        snprintf(args, sizeof args, "run --weights %s --input %s --output %s", weights, input, out);
        int lines;
        assert_int_equal(run_cli(args, &lines, line, sizeof line), 0);
        assert_int_equal(lines, 0);
        spk_array y, expected;
        assert_int_equal(spk_npy_read(out, &y, NULL, 0), SPK_OK);
        assert_int_equal(spk_npy_read(expected_path, &expected, NULL, 0), SPK_OK);
        assert_int_equal(y.ndim, 2);
        assert_memory_equal(y.shape, expected.shape, 2 * sizeof *y.shape);
        double max_err = 0, max_ref = 0;
        for (int64_t j = 0; j < y.count; j++) {
            double err = fabs((double)y.data[j] - expected.data[j]);
            if (!(err <= max_err)) max_err = err;
            if (fabs(expected.data[j]) > max_ref) max_ref = fabs(expected.data[j]);
        }
        if (!(max_err / max_ref <= 1e-3)) fail_msg("%s: error %.3g", cases[i], max_err / max_ref);
        spk_array_free(&y), spk_array_free(&expected);
    }
    /* --output-mode all gives [batch, seq, hidden]; a bad override is one clear line */
    snprintf(args, sizeof args, "run --weights %s --input %s --output %s --output-mode all", weights, input, out);
    int lines;
    assert_int_equal(run_cli(args, &lines, line, sizeof line), 0);
    spk_array y;
    assert_int_equal(spk_npy_read(out, &y, NULL, 0), SPK_OK);
    assert_int_equal(y.ndim, 3);
    assert_int_equal(y.shape[1], 33);
    assert_int_equal(y.shape[2], 48);
    spk_array_free(&y);
    snprintf(args, sizeof args, "run --weights %s --input %s --output %s --heads 5", weights, input, out);
    assert_int_not_equal(run_cli(args, &lines, line, sizeof line), 0);
    assert_int_equal(lines, 1);
    assert_non_null(strstr(line, "not divisible"));
    snprintf(args, sizeof args, "run --weights %s --input %s --output %s", input, input, out);
    assert_int_not_equal(run_cli(args, &lines, line, sizeof line), 0);
    assert_int_equal(lines, 1);

    assert_int_equal(run_cli("demo", &lines, line, sizeof line), 0);
    assert_int_equal(lines, 0);
    char text[4096];
    read_stdout(text, sizeof text);
    assert_non_null(strstr(text, "output:  [4, 256]"));
    assert_non_null(strstr(text, "hidden_size 256, num_heads 4, num_layers 6"));
    assert_non_null(strstr(text, "forward:"));
}

/* softpick selftest: the table and a verdict, exit 0; --only narrows it; nothing matching is an
 * error. */
static void test_selftest_command(void **state) {
    (void)state;
    if (!have_device()) skip();
    int lines;
    char line[512], text[8192];
    assert_int_equal(run_cli("selftest --only erf", &lines, line, sizeof line), 0);
    assert_int_equal(lines, 0);
    read_stdout(text, sizeof text);
    assert_non_null(strstr(text, "max error"));
    assert_non_null(strstr(text, "erf        elementwise"));
    assert_non_null(strstr(text, "selftest: PASS: 1 passed, 0 failed, 0 skipped of 1"));
    assert_int_not_equal(run_cli("selftest --only nothing", &lines, line, sizeof line), 0);
    assert_int_equal(lines, 1);
    assert_non_null(strstr(line, "no op matches"));
    assert_int_not_equal(run_cli("selftest extra", &lines, line, sizeof line), 0);
    assert_non_null(strstr(line, "usage"));
}

/* Every error: non-zero exit, exactly one line on stderr, naming the problem. */
static void test_errors_print_one_line(void **state) {
    (void)state;
    char bad[128], out[128], good[128], args[512], line[512];
    snprintf(bad, sizeof bad, "%s/bad.npy", g_dir);
    snprintf(good, sizeof good, "%s/good.npy", g_dir);
    snprintf(out, sizeof out, "%s/out.npy", g_dir);
    FILE *f = fopen(bad, "wb");
    assert_non_null(f);
    fputs("\x93NUMPY\x01\x00\x40\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1000,), }", f);
    fclose(f);
    int64_t shape[2] = {2, 2};
    float x[4] = {1, 2, 3, 4};
    assert_int_equal(spk_npy_write(good, 2, shape, x, NULL, 0), SPK_OK);

    bool device = have_device();
    struct {
        const char *fmt, *expect;
        bool needs_device;
    } cases[] = {
        {"softpick %s %s", "bad.npy", false},
        {"softpick %s/missing.npy %s", "cannot open", false},
        {"softpick --axis 2 %s/good.npy %s", "axis", false},
        {"softpick --axis x %s/good.npy %s", "--axis", false},
        {"softpick --bogus 1 %s/good.npy %s", "unknown option", false},
        {"softpick %s/good.npy", "usage", false},
        {"frobnicate %s %s", "unknown command", false},
        {"softpick --device no-such-gpu %s/good.npy %s", "no-such-gpu", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].needs_device && !device) continue;
        const char *first = strstr(cases[i].fmt, "%s/") ? g_dir : bad;
        snprintf(args, sizeof args, cases[i].fmt, first, out);
        int lines;
        int rc = run_cli(args, &lines, line, sizeof line);
        if (rc == 0 || lines != 1 || !strstr(line, cases[i].expect) || strncmp(line, "softpick: ", 10) != 0)
            fail_msg("'%s': exit %d, %d stderr lines, first '%s' (expected one line with '%s')", args, rc, lines, line,
                     cases[i].expect);
    }

    /* No Vulkan driver at all. */
    const char *no_driver = "VK_DRIVER_FILES=/nonexistent/icd.json VK_ICD_FILENAMES=/nonexistent/icd.json";
    snprintf(args, sizeof args, "softpick %s %s", good, out);
    const char *commands[] = {args, "devices"};
    for (int i = 0; i < 2; i++) {
        int lines;
        int rc = run_cli_env(no_driver, commands[i], &lines, line, sizeof line);
        if (rc == 0 || lines != 1 || !strstr(line, "driver"))
            fail_msg("'%s' without drivers: exit %d, %d stderr lines, first '%s'", commands[i], rc, lines, line);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_softpick_command),
        cmocka_unit_test(test_run_and_demo),
        cmocka_unit_test(test_selftest_command),
        cmocka_unit_test(test_errors_print_one_line),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
