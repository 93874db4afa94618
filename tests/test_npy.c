#define _POSIX_C_SOURCE 200809L /* mkstemp */
/* The NPY reader and writer: valid files, every malformed kind, round trips. No GPU needed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* Builds an NPY image: magic, version, header (padded as numpy pads), then `data_bytes` of data. */
static size_t make_npy(unsigned char *out, int major, const char *header, const void *data, size_t data_bytes) {
    size_t prefix = major == 1 ? 10 : 12;
    size_t len = strlen(header);
    size_t padded = (prefix + len + 1 + 63) / 64 * 64 - prefix;
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (unsigned char)major;
    out[7] = 0;
    if (major == 1) {
        out[8] = (unsigned char)(padded & 0xff);
        out[9] = (unsigned char)(padded >> 8);
    } else {
        for (int i = 0; i < 4; i++) out[8 + i] = (unsigned char)(padded >> (8 * i));
    }
    memcpy(out + prefix, header, len);
    memset(out + prefix + len, ' ', padded - len - 1);
    out[prefix + padded - 1] = '\n';
    memcpy(out + prefix + padded, data, data_bytes);
    return prefix + padded + data_bytes;
}

static unsigned char g_buf[1 << 16];

static spk_status parse(const char *header, int major, const void *data, size_t bytes, spk_array *a, char *err) {
    size_t n = make_npy(g_buf, major, header, data, bytes);
    return spk_npy_parse(g_buf, n, a, err, 256);
}

static void test_valid_float32_and_float64(void **state) {
    (void)state;
    float f[6] = {1, -2, 3.5f, 0, -0.25f, 1e30f};
    spk_array a;
    char err[256];
    assert_int_equal(parse("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 1, f, sizeof f, &a, err),
                     SPK_OK);
    assert_int_equal(a.ndim, 2);
    assert_int_equal(a.shape[0], 2);
    assert_int_equal(a.shape[1], 3);
    assert_int_equal(a.count, 6);
    assert_memory_equal(a.data, f, sizeof f);
    spk_array_free(&a);
    assert_null(a.data);

    /* Class indices: int32 and int64, converted exactly; beyond 2^24 refused. */
    int32_t i4[3] = {0, 7, -3};
    assert_int_equal(parse("{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", 1, i4, sizeof i4, &a, err), SPK_OK);
    assert_true(a.integer);
    for (int i = 0; i < 3; i++) assert_true(a.data[i] == (float)i4[i]);
    spk_array_free(&a);
    int64_t i8[2] = {16777216, 2};
    assert_int_equal(parse("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", 1, i8, sizeof i8, &a, err), SPK_OK);
    assert_true(a.integer && a.data[0] == 16777216.0f && a.data[1] == 2.0f);
    spk_array_free(&a);
    i8[0] = 16777217;
    assert_int_equal(parse("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", 1, i8, sizeof i8, &a, err),
                     SPK_ERROR_FORMAT);
    assert_non_null(strstr(err, "2^24"));

    double d[3] = {0.1, -1e-3, 12345.678};
    assert_int_equal(parse("{\"descr\":\"<f8\",\"fortran_order\":False,\"shape\":(3,)}", 2, d, sizeof d, &a, err),
                     SPK_OK);
    assert_int_equal(a.ndim, 1);
    for (int i = 0; i < 3; i++) assert_true(a.data[i] == (float)d[i]);
    spk_array_free(&a);

    /* A scalar comes back as one element of rank 1; an empty array is fine. */
    assert_int_equal(parse("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 1, f, 4, &a, err), SPK_OK);
    assert_int_equal(a.ndim, 1);
    assert_int_equal(a.count, 1);
    spk_array_free(&a);
    assert_int_equal(parse("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4), }", 1, f, 0, &a, err), SPK_OK);
    assert_int_equal(a.count, 0);
    spk_array_free(&a);
}

/* Each malformed file is refused with SPK_ERROR_FORMAT and a message naming the problem. */
static void test_malformed_files(void **state) {
    (void)state;
    float f[4] = {0};
    spk_array a;
    char err[256];
    static const struct {
        const char *header, *expect;
        size_t bytes;
    } cases[] = {
        {"{'descr': '<u4', 'fortran_order': False, 'shape': (4,), }", "dtype", 16},
        {"{'descr': '>i8', 'fortran_order': False, 'shape': (2,), }", "dtype", 16},
        {"{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }", "dtype", 16},
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (4,), }", "Fortran", 16},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", "truncated", 16},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", "trailing", 16},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4), }", "overflow", 16},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", "too large", 16},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", "8 dimensions", 16},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-4,), }", "shape", 16},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4, }", "shape", 16},
        {"{'descr': '<f4', 'fortran_order': Maybe, 'shape': (4,), }", "fortran_order", 16},
        {"{'descr': '<f4', 'shape': (4,), }", "lacks", 16},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'extra': 1}", "unexpected key", 16},
        {"{'descr: '<f4', 'fortran_order': False, 'shape': (4,), }", "header", 16},
        {"['descr', '<f4']", "dictionary", 16},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,) ", "header", 16},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        spk_status s = parse(cases[i].header, 1, f, cases[i].bytes, &a, err);
        if (s != SPK_ERROR_FORMAT || !strstr(err, cases[i].expect))
            fail_msg("case %zu (%s): status %d, message '%s', expected '%s'", i, cases[i].header, s, err,
                     cases[i].expect);
        assert_null(a.data);
    }

    /* Damage to the fixed prefix. */
    size_t n = make_npy(g_buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", f, 16);
    assert_int_equal(spk_npy_parse(g_buf, 5, &a, err, sizeof err), SPK_ERROR_FORMAT);
    assert_non_null(strstr(err, "magic"));
    g_buf[6] = 9;
    assert_int_equal(spk_npy_parse(g_buf, n, &a, err, sizeof err), SPK_ERROR_FORMAT);
    assert_non_null(strstr(err, "version"));
    g_buf[6] = 1;
    g_buf[8] = 0xff, g_buf[9] = 0xff; /* header length past the end */
    assert_int_equal(spk_npy_parse(g_buf, n, &a, err, sizeof err), SPK_ERROR_FORMAT);
    assert_non_null(strstr(err, "truncated"));
    g_buf[0] = 'X';
    assert_int_equal(spk_npy_parse(g_buf, n, &a, err, sizeof err), SPK_ERROR_FORMAT);
    /* Every truncation of a valid file fails cleanly (ASan checks nothing is read past the end). */
    n = make_npy(g_buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", f, 16);
    for (size_t cut = 0; cut < n; cut++) {
        unsigned char *copy = malloc(cut ? cut : 1);
        assert_non_null(copy);
        memcpy(copy, g_buf, cut);
        assert_int_equal(spk_npy_parse(copy, cut, &a, err, sizeof err), SPK_ERROR_FORMAT);
        free(copy);
    }
    assert_int_equal(spk_npy_parse(g_buf, n, NULL, err, sizeof err), SPK_ERROR_INVALID_ARGUMENT);
}

static void test_write_then_read(void **state) {
    (void)state;
    char path[] = "/tmp/softpick_test_npy_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    float data[2 * 3 * 5];
    test_fill_random(data, 30, 4);
    data[3] = NAN;
    data[4] = -INFINITY;
    char err[256];
    int64_t shapes[2][3] = {{2, 3, 5}, {30, 0, 0}};
    int ranks[2] = {3, 1};
    for (int s = 0; s < 2; s++) {
        assert_int_equal(spk_npy_write(path, ranks[s], shapes[s], data, err, sizeof err), SPK_OK);
        spk_array a;
        assert_int_equal(spk_npy_read(path, &a, err, sizeof err), SPK_OK);
        assert_int_equal(a.ndim, ranks[s]);
        for (int i = 0; i < ranks[s]; i++) assert_int_equal(a.shape[i], shapes[s][i]);
        assert_memory_equal(a.data, data, sizeof data);
        spk_array_free(&a);
    }
    remove(path);
    spk_array a;
    assert_int_equal(spk_npy_read(path, &a, err, sizeof err), SPK_ERROR_IO);
    assert_non_null(strstr(err, "cannot open"));
    int64_t bad[1] = {-1};
    assert_int_equal(spk_npy_write(path, 1, bad, data, err, sizeof err), SPK_ERROR_SHAPE);
    assert_int_equal(spk_npy_write("/nonexistent-dir/x.npy", 1, shapes[1], data, err, sizeof err), SPK_ERROR_IO);
}

/* spk_npy_read_rows: chosen rows in any order (float64 and int32 files converted as whole reads
 * convert them), the header alone, rows outside the file, a truncated file. */
static void test_read_rows(void **state) {
    (void)state;
    char path[] = "/tmp/softpick_test_npy_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    double d[4 * 3];
    for (int i = 0; i < 12; i++) d[i] = 0.5 * i - 2.0;
    int32_t c[4] = {3, 0, 2, 1};
    const char *headers[2] = {"{'descr': '<f8', 'fortran_order': False, 'shape': (4, 3), }",
                              "{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }"};
    const void *datas[2] = {d, c};
    size_t sizes[2] = {sizeof d, sizeof c};
    char err[256];
    for (int k = 0; k < 2; k++) {
        size_t n = make_npy(g_buf, 1 + k, headers[k], datas[k], sizes[k]);
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(g_buf, 1, n, f), n);
        fclose(f);
        int64_t rows[3] = {2, 0, 2}, file_rows = 0, per = k ? 1 : 3;
        spk_array a;
        assert_int_equal(spk_npy_read_rows(path, rows, 3, &a, &file_rows, err, sizeof err), SPK_OK);
        assert_int_equal(file_rows, 4);
        assert_int_equal(a.ndim, k ? 1 : 2);
        assert_int_equal(a.shape[0], 3);
        assert_int_equal(a.count, 3 * per);
        assert_true(a.integer == (k == 1));
        for (int r = 0; r < 3; r++)
            for (int j = 0; j < per; j++)
                assert_true(a.data[r * per + j] == (k ? (float)c[rows[r]] : (float)d[rows[r] * 3 + j]));
        spk_array_free(&a);
        assert_int_equal(spk_npy_read_rows(path, NULL, 0, &a, &file_rows, err, sizeof err), SPK_OK);
        assert_int_equal(a.count, 0);
        assert_null(a.data);
        int64_t outside[1] = {4};
        assert_int_equal(spk_npy_read_rows(path, outside, 1, &a, NULL, err, sizeof err), SPK_ERROR_SHAPE);
        /* a byte short */
        f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(g_buf, 1, n - 1, f), n - 1);
        fclose(f);
        assert_int_equal(spk_npy_read_rows(path, rows, 1, &a, NULL, err, sizeof err), SPK_ERROR_FORMAT);
        assert_non_null(strstr(err, "truncated"));
    }
    remove(path);
    spk_array a;
    assert_int_equal(spk_npy_read_rows(path, NULL, 0, &a, NULL, err, sizeof err), SPK_ERROR_IO);
    assert_int_equal(spk_npy_read_rows(NULL, NULL, 0, &a, NULL, err, sizeof err), SPK_ERROR_INVALID_ARGUMENT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_float32_and_float64),
        cmocka_unit_test(test_malformed_files),
        cmocka_unit_test(test_write_then_read),
        cmocka_unit_test(test_read_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
