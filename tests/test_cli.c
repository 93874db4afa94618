/* The softpick tool as a user runs it: exit status, one clear line on stderr for every error,
 * and results checked against the float64 reference. */
#define _POSIX_C_SOURCE 200809L /* popen, mkdtemp */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "safetensors.h"

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
    /* --kind softmax along the middle axis, against float64 per column; an unknown kind is one line. */
    int lines;
    snprintf(args, sizeof args, "softpick --axis 1 --kind softmax %s %s", in, out);
    assert_int_equal(run_cli(args, &lines, line, sizeof line), 0);
    spk_array y;
    assert_int_equal(spk_npy_read(out, &y, NULL, 0), SPK_OK);
    double col[40], w[40], worst = 0;
    for (int o = 0; o < 3; o++)
        for (int k = 0; k < 7; k++) {
            for (int j = 0; j < 40; j++) col[j] = x[(o * 40 + j) * 7 + k];
            ref_normalize(SPK_NORMALIZER_SOFTMAX, col, 40, w);
            for (int j = 0; j < 40; j++) worst = fmax(worst, fabs(w[j] - y.data[(o * 40 + j) * 7 + k]) / w[j]);
        }
    spk_array_free(&y);
    if (!(worst <= 1e-5)) fail_msg("softpick --kind softmax: relative error %.3g", worst);
    snprintf(args, sizeof args, "softpick --kind soft %s %s", in, out);
    assert_int_not_equal(run_cli(args, &lines, line, sizeof line), 0);
    assert_int_equal(lines, 1);
    assert_non_null(strstr(line, "rectified-softpick"));
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

/* max |y - expected| / max |expected| between two NPY files of one shape. */
static double npy_rel_error(const char *path, const char *expected_path) {
    spk_array y, expected;
    assert_int_equal(spk_npy_read(path, &y, NULL, 0), SPK_OK);
    assert_int_equal(spk_npy_read(expected_path, &expected, NULL, 0), SPK_OK);
    assert_int_equal(y.ndim, expected.ndim);
    assert_memory_equal(y.shape, expected.shape, (size_t)y.ndim * sizeof *y.shape);
    double max_err = 0, max_ref = 0;
    for (int64_t j = 0; j < y.count; j++) {
        double err = fabs((double)y.data[j] - expected.data[j]);
        if (!(err <= max_err)) max_err = err;
        if (fabs(expected.data[j]) > max_ref) max_ref = fabs(expected.data[j]);
    }
    spk_array_free(&y), spk_array_free(&expected);
    return max_err / max_ref;
}

static void test_run_and_demo(void **state) {
    (void)state;
    if (!have_device()) skip();
    const char *cases[] = {"golden/model-e20-h32-n4-l2/", "golden/model-e48-h48-n3-l3/"};
    char weights[512], input[512], expected_path[512], out[128], args[2048], line[512];
    snprintf(out, sizeof out, "%s/y.npy", g_dir);
    /* With 16-bit weights the output moves by the rounding of the weights (the model's own bound,
     * against float64 on the rounded weights, is test_model's): a loose check that it still is the
     * model's output. */
    const char *dtypes[] = {"f32", "f16", "bf16", "f16 --activation-dtype f16"};
    const double bounds[] = {1e-3, 1e-2, 3e-2, 1e-2};
    /* F16 activations need storageBuffer16BitAccess (SwiftShader has none): the CLI refuses them. */
    spk_device_info info;
    uint32_t count = 1;
    bool storage16 = spk_list_devices(&info, 1, &count) == SPK_OK && count >= 1 && info.storage_16bit;
    for (int c = 0; c < (storage16 ? 8 : 6); c++) {
        int i = c % 2, d = c / 2;
        snprintf(weights, sizeof weights, "%s/%sweights.safetensors", SOFTPICK_TEST_DATA, cases[i]);
        snprintf(input, sizeof input, "%s/%sinput.npy", SOFTPICK_TEST_DATA, cases[i]);
        snprintf(expected_path, sizeof expected_path, "%s/%sexpected.npy", SOFTPICK_TEST_DATA, cases[i]);
        snprintf(args, sizeof args, "run --weights %s --input %s --output %s --weights-dtype %s", weights, input, out,
                 dtypes[d]);
        int lines;
        assert_int_equal(run_cli(args, &lines, line, sizeof line), 0);
        assert_int_equal(lines, 0);
        double err = npy_rel_error(out, expected_path);
        print_message("%s %s weights: error %.2e against the golden output\n", cases[i], dtypes[d], err);
        if (!(err <= bounds[d])) fail_msg("%s %s: error %.3g", cases[i], dtypes[d], err);
    }
    /* The normalizer from the file's metadata (softmax, scores near 190); --attention: an unknown
     * one, and softpick over the file's softmax (the zero of the overrides), each one clear line. */
    const char *normalized = "golden/model-e24-h32-n2-l2-softmax-large-scores/";
    const char *bad_attention[2][2] = {{"soft", "rectified-softpick"}, {"softpick", "says attention softmax"}};
    char nw[512], ni[512], ne[512];
    snprintf(nw, sizeof nw, "%s/%sweights.safetensors", SOFTPICK_TEST_DATA, normalized);
    snprintf(ni, sizeof ni, "%s/%sinput.npy", SOFTPICK_TEST_DATA, normalized);
    snprintf(ne, sizeof ne, "%s/%sexpected.npy", SOFTPICK_TEST_DATA, normalized);
    for (int i = 0; i < 3; i++) {
        snprintf(args, sizeof args, "run --weights %s --input %s --output %s%s%s", nw, ni, out,
                 i ? " --attention " : "", i ? bad_attention[i - 1][0] : "");
        int lines, rc = run_cli(args, &lines, line, sizeof line);
        if (i == 0) {
            assert_int_equal(rc, 0);
            double err = npy_rel_error(out, ne);
            if (!(err <= 1e-3)) fail_msg("%s: error %.3g", normalized, err);
        } else if (rc == 0 || lines != 1 || !strstr(line, bad_attention[i - 1][1])) {
            fail_msg("'%s': exit %d, %d lines, first '%s'", args, rc, lines, line);
        }
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
    assert_non_null(strstr(text, "stored as f32"));
    assert_int_equal(run_cli("demo --weights-dtype bf16", &lines, line, sizeof line), 0);
    read_stdout(text, sizeof text);
    assert_non_null(strstr(text, "stored as bf16"));
    assert_non_null(strstr(text, "memory:  weights 9.08 MiB")); /* 4.72 M kernel weights in 2 bytes, 20 K floats */
    if (storage16) {
        assert_int_equal(run_cli("demo --activation-dtype f16", &lines, line, sizeof line), 0);
        read_stdout(text, sizeof text);
        assert_non_null(strstr(text, "(f16) on the device"));
    } else { /* refused in one line naming the feature */
        assert_int_not_equal(run_cli("demo --activation-dtype f16", &lines, line, sizeof line), 0);
        assert_non_null(strstr(line, "storageBuffer16BitAccess"));
    }
    assert_int_not_equal(run_cli("demo --activation-dtype bf16", &lines, line, sizeof line), 0);
    assert_non_null(strstr(line, "--activation-dtype must be f32 or f16"));
    assert_int_not_equal(run_cli("demo --weights-dtype fp8", &lines, line, sizeof line), 0);
    assert_non_null(strstr(line, "--weights-dtype must be f32, f16 or bf16"));
}

/* softpick selftest: the table and a verdict, exit 0; --only narrows it; nothing matching is an
 * error. */
/* softpick analyze: one line per layer and head and per layer, rectified softpick's exact zeros
 * (about half of its causal weights in the golden model), and one clear line for each error. */
static void test_analyze_command(void **state) {
    (void)state;
    if (!have_device()) skip();
    const char *dir = "golden/model-e20-h32-n4-l2-rectified/";
    char weights[512], input[512], args[2048], line[512], out_path[256];
    snprintf(weights, sizeof weights, "%s/%sweights.safetensors", SOFTPICK_TEST_DATA, dir);
    snprintf(input, sizeof input, "%s/%sinput.npy", SOFTPICK_TEST_DATA, dir);
    snprintf(args, sizeof args, "analyze --weights %s --input %s", weights, input);
    int lines;
    assert_int_equal(run_cli(args, &lines, line, sizeof line), 0);
    assert_int_equal(lines, 0);
    snprintf(out_path, sizeof out_path, "%s/stdout.txt", g_dir);
    FILE *f = fopen(out_path, "r");
    assert_non_null(f);
    int head_rows = 0, layer_rows = 0, l, h;
    double sink, sparsity, row_sum, first, kurtosis, max_abs;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%d %d %lf %lf %lf %lf", &l, &h, &sink, &sparsity, &row_sum, &first) == 6) {
            head_rows++;
            if (!(sparsity > 0.3 && sparsity < 0.7 && row_sum > 0.5 && row_sum <= 1.0)) fail_msg("head line '%s'", line);
        } else if (sscanf(line, "%d %lf %lf", &l, &kurtosis, &max_abs) == 3) {
            layer_rows++;
            if (!(kurtosis >= 1.0 && max_abs > 0)) fail_msg("layer line '%s'", line);
        }
    }
    fclose(f);
    assert_int_equal(head_rows, 2 * 4);
    assert_int_equal(layer_rows, 2);
    const char *bad[][2] = {
        {"analyze --weights %s", "usage"},
        {"analyze --weights %s --input %s --attention soft", "rectified-softpick"},
        {"analyze --weights %s --input %s --attention softpick", "says attention rectified-softpick"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(args, sizeof args, bad[i][0], weights, input);
        int rc = run_cli(args, &lines, line, sizeof line);
        if (rc == 0 || lines != 1 || !strstr(line, bad[i][1]))
            fail_msg("'%s': exit %d, %d lines, first '%s'", args, rc, lines, line);
    }
}

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

/* softpick tune on a small model: a report line per problem, the file written and then used (the
 * devices table says so); bad options refused in one line. */
static void test_tune_command(void **state) {
    (void)state;
    if (!have_device()) skip();
    int lines;
    char line[512], text[65536], args[1024], env[512];
    snprintf(args, sizeof args, "tune --embed 8 --hidden 16 --heads 2 --layers 1 --window 8 --batch 3 --budget 2 "
                                "--repeats 1 --output %s/tuning.txt", g_dir);
    assert_int_equal(run_cli(args, &lines, line, sizeof line), 0);
    read_stdout(text, sizeof text);
    assert_non_null(strstr(text, "rule ms"));
    assert_non_null(strstr(text, "matmul              24x48x16 +bias"));
    static const char *const families[] = {"attention-backward", "layer-norm ", "layer-norm-backward", "column-sums",
                                           "softpick ", "optimizer", "loss"};
    for (size_t i = 0; i < sizeof families / sizeof *families; i++)
        if (!strstr(text, families[i])) fail_msg("no %s in the report", families[i]);
    assert_non_null(strstr(text, "tune: "));
    assert_non_null(strstr(text, "tuning.txt"));
    snprintf(env, sizeof env, "SOFTPICK_TUNING=%s/tuning.txt", g_dir);
    assert_int_equal(run_cli_env(env, "devices", &lines, line, sizeof line), 0);
    read_stdout(text, sizeof text);
    assert_non_null(strstr(text, "tuned"));
    const char *bad[] = {"tune --budget -1", "tune --batch 0", "tune --heads 3", "tune extra", "tune --repeats 0"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_not_equal(run_cli(bad[i], &lines, line, sizeof line), 0);
        if (lines != 1) fail_msg("'%s': %d lines on stderr, first '%s'", bad[i], lines, line);
    }
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

/* Writes an int64 NPY of `n` values with a 1-D or 2-D shape. */
static void write_i8(const char *path, int ndim, const int64_t *shape, const int64_t *values, int64_t n) {
    char header[128];
    int len = ndim == 1 ? snprintf(header, sizeof header, "{'descr': '<i8', 'fortran_order': False, 'shape': (%lld,), }",
                                   (long long)shape[0])
                        : snprintf(header, sizeof header, "{'descr': '<i8', 'fortran_order': False, 'shape': (%lld, %lld), }",
                                   (long long)shape[0], (long long)shape[1]);
    while ((10 + len + 1) % 64) header[len++] = ' ';
    header[len++] = '\n';
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)len, 0};
    fwrite(pre, 1, 10, f), fwrite(header, 1, (size_t)len, f), fwrite(values, 8, (size_t)n, f);
    fclose(f);
}

/* max |a - b| / max |b| over every tensor of two safetensors files with the same names. */
static double files_error(const char *got_path, const char *want_path) {
    spk__safetensors got, want;
    char error[256];
    if (spk__safetensors_read(got_path, &got, error, sizeof error) != SPK_OK) fail_msg("%s", error);
    if (spk__safetensors_read(want_path, &want, error, sizeof error) != SPK_OK) fail_msg("%s", error);
    assert_int_equal(got.tensor_count, want.tensor_count);
    double worst = 0;
    for (uint32_t i = 0; i < want.tensor_count; i++) {
        const spk__st_tensor *w = &want.tensors[i], *g = spk__safetensors_find(&got, w->name);
        assert_non_null(g);
        assert_int_equal(g->count, w->count);
        float *a = test_alloc_floats((int64_t)w->count), *b = test_alloc_floats((int64_t)w->count);
        spk__safetensors_to_f32(&got, g, a), spk__safetensors_to_f32(&want, w, b);
        double err = 0, scale = 0;
        for (uint64_t j = 0; j < w->count; j++) err = fmax(err, fabs((double)a[j] - b[j])), scale = fmax(scale, fabs(b[j]));
        worst = fmax(worst, err / (scale > 0 ? scale : 1));
        free(a), free(b);
    }
    spk__safetensors_free(&got), spk__safetensors_free(&want);
    return worst;
}

/* softpick grad and softpick train on the golden training case: the loss, the gradients and the
 * weights after 3 AdamW steps as the float64 run has them; 3 + 2 resumed steps equal 5; hostile
 * targets refused with one line and no output file. */
static void test_grad_and_train(void **state) {
    (void)state;
    if (!have_device()) return;
    const char *dir = test_data_path("golden/train-e12-h16-n2-l2-o3-xent-last");
    char d[300], args[4096], line[512], path[1024], want[1024];
    snprintf(d, sizeof d, "%s", dir);
    int lines;
    snprintf(args, sizeof args, "grad --weights %s/weights.safetensors --input %s/input.npy --target %s/target.npy "
             "--loss cross-entropy --output %s/g.safetensors", d, d, d, g_dir);
    assert_int_equal(run_cli(args, &lines, line, sizeof line), 0);
    snprintf(path, sizeof path, "%s/stdout.txt", g_dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    double loss = 0;
    assert_int_equal(fscanf(f, "loss %lf", &loss), 1);
    fclose(f);
    assert_true(fabs(loss - 1.1832637) < 1e-5);
    snprintf(path, sizeof path, "%s/g.safetensors", g_dir);
    snprintf(want, sizeof want, "%s/expected_gradients.safetensors", d);
    assert_true(files_error(path, want) <= 1e-4);

    const char *common = "--input %s/input.npy --target %s/target.npy --loss cross-entropy --lr 0.01 --log-every 1";
    char common_args[1536];
    snprintf(common_args, sizeof common_args, common, d, d);
    snprintf(args, sizeof args, "train --weights %s/weights.safetensors %s --steps 3 --output %s/w3.safetensors "
             "--state %s/s3.safetensors", d, common_args, g_dir, g_dir);
    assert_int_equal(run_cli(args, &lines, line, sizeof line), 0);
    snprintf(path, sizeof path, "%s/w3.safetensors", g_dir);
    snprintf(want, sizeof want, "%s/expected_adamw_3_steps.safetensors", d);
    assert_true(files_error(path, want) <= 1e-4);
    /* Resume: 3 + 2 steps against 5. */
    snprintf(args, sizeof args, "train --weights %s/w3.safetensors --resume %s/s3.safetensors %s --steps 2 "
             "--output %s/w5r.safetensors", g_dir, g_dir, common_args, g_dir);
    assert_int_equal(run_cli(args, &lines, line, sizeof line), 0);
    snprintf(args, sizeof args, "train --weights %s/weights.safetensors %s --steps 5 --output %s/w5.safetensors", d,
             common_args, g_dir);
    assert_int_equal(run_cli(args, &lines, line, sizeof line), 0);
    snprintf(path, sizeof path, "%s/w5r.safetensors", g_dir);
    snprintf(want, sizeof want, "%s/w5.safetensors", g_dir);
    assert_true(files_error(path, want) == 0.0);

    /* Hostile targets: out of range, wrong shape, wrong dtype, NaN; a batch larger than the data. */
    int64_t shape3[1] = {3}, shape2[1] = {2}, bad_class[3] = {0, 3, 1};
    snprintf(path, sizeof path, "%s/bad_class.npy", g_dir);
    write_i8(path, 1, shape3, bad_class, 3);
    snprintf(path, sizeof path, "%s/short.npy", g_dir);
    write_i8(path, 1, shape2, bad_class, 2);
    int64_t classes[3] = {0, 1, 2};
    snprintf(path, sizeof path, "%s/classes.npy", g_dir);
    write_i8(path, 1, shape3, classes, 3);
    float nan_t[3 * 3] = {0, 0, NAN, 0, 0, 0, 0, 0, 0};
    int64_t t_shape[2] = {3, 3};
    snprintf(path, sizeof path, "%s/nan.npy", g_dir);
    assert_int_equal(spk_npy_write(path, 2, t_shape, nan_t, NULL, 0), SPK_OK);
    struct {
        const char *target, *loss, *extra, *expect;
    } cases[] = {
        {"bad_class.npy", "cross-entropy", "", "outside [0, 3)"},
        {"short.npy", "cross-entropy", "", "shape [3]"},
        {"nan.npy", "cross-entropy", "", "integer class indices"},
        {"nan.npy", "mse", "", "NaN"},
        {"bad_class.npy", "mse", "", "floats"},
        {"classes.npy", "cross-entropy", "--batch-size 4", "larger than the data"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(args, sizeof args, "train --weights %s/weights.safetensors --input %s/input.npy --target %s/%s --loss %s "
                 "%s --output %s/hostile.safetensors", d, d, g_dir, cases[i].target, cases[i].loss, cases[i].extra, g_dir);
        int rc = run_cli(args, &lines, line, sizeof line);
        if (rc == 0 || lines != 1 || !strstr(line, cases[i].expect))
            fail_msg("'%s': exit %d, %d stderr lines, first '%s' (expected '%s')", args, rc, lines, line, cases[i].expect);
        snprintf(path, sizeof path, "%s/hostile.safetensors", g_dir);
        assert_null(fopen(path, "rb")); /* no partial output */
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_softpick_command),
        cmocka_unit_test(test_run_and_demo),
        cmocka_unit_test(test_analyze_command),
        cmocka_unit_test(test_selftest_command),
        cmocka_unit_test(test_tune_command),
        cmocka_unit_test(test_errors_print_one_line),
        cmocka_unit_test(test_grad_and_train),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
