/* NPY files: a strict reader for hostile input and a float32 writer. Every length is checked
 * against the bytes actually present before anything is read. Hosts are assumed little-endian
 * (every platform the library targets). */
#include "internal.h"
#include "fault.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A cursor over the header dictionary, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } */
typedef struct spk__cursor {
    const char *p, *end;
} spk__cursor;

static void spk__skip_space(spk__cursor *c) {
    while (c->p < c->end && isspace((unsigned char)*c->p)) c->p++;
}

static bool spk__accept(spk__cursor *c, char ch) {
    spk__skip_space(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* A quoted string ('...' or "...") copied into out (truncated to out_size); false if malformed. */
static bool spk__parse_string(spk__cursor *c, char *out, size_t out_size) {
    spk__skip_space(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return false;
    char quote = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != quote) {
        if (n + 1 < out_size) out[n++] = *c->p;
        c->p++;
    }
    if (c->p >= c->end) return false;
    c->p++;
    out[n] = '\0';
    return true;
}

static bool spk__parse_word(spk__cursor *c, const char *word) {
    spk__skip_space(c);
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) return false;
    c->p += n;
    return true;
}

/* A shape tuple: (), (5,), (3, 4) ... Rejects negative or oversized dimensions and > 8 dims. */
static bool spk__parse_shape(spk__cursor *c, spk_array *a, const char **why) {
    *why = "malformed shape tuple";
    if (!spk__accept(c, '(')) return false;
    a->ndim = 0;
    for (;;) {
        spk__skip_space(c);
        if (spk__accept(c, ')')) return true;
        if (c->p >= c->end || !isdigit((unsigned char)*c->p)) return false;
        uint64_t v = 0;
        while (c->p < c->end && isdigit((unsigned char)*c->p)) {
            v = v * 10 + (uint64_t)(*c->p++ - '0');
            if (v > (uint64_t)INT64_MAX / 10) {
                *why = "shape dimension too large";
                return false;
            }
        }
        if (a->ndim == SPK_MAX_RANK) {
            *why = "more than 8 dimensions";
            return false;
        }
        a->shape[a->ndim++] = (int64_t)v;
        if (!spk__accept(c, ',')) {
            if (!spk__accept(c, ')')) return false;
            return true;
        }
    }
}

/* An NPY header: the array's shape (count elements) and where its data starts. */
typedef struct spk__npy_header {
    spk_array shape; /* ndim, shape, count, integer; no data */
    size_t item, data_start;
} spk__npy_header;

/* Parses the header at the start of `bytes` (`size` of them: at least the header). */
static spk_status spk__npy_header_parse(const unsigned char *b, size_t size, spk__npy_header *h, char *error,
                                        size_t error_size) {
    if (size < 10 || memcmp(b, "\x93NUMPY", 6) != 0)
        return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "not an NPY file (bad magic)");
    unsigned major = b[6];
    size_t header_len, header_start;
    if (major == 1) {
        header_len = (size_t)b[8] | (size_t)b[9] << 8;
        header_start = 10;
    } else if (major == 2 || major == 3) {
        if (size < 12) return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "truncated NPY header");
        header_len = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        header_start = 12;
    } else {
        return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "unsupported NPY version %u.%u", major, b[7]);
    }
    if (header_len > size - header_start)
        return spk__error_message(error, error_size, SPK_ERROR_FORMAT,
                              "truncated NPY header (%zu bytes declared, %zu present)", header_len,
                              size - header_start);

    spk__cursor c = {(const char *)b + header_start, (const char *)b + header_start + header_len};
    char descr[16] = "";
    int fortran = -1;
    bool have_shape = false;
    const char *why = "malformed header dictionary";
    spk_array a = {0};
    if (!spk__accept(&c, '{'))
        return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "NPY header is not a dictionary");
    while (!spk__accept(&c, '}')) {
        char key[32];
        if (!spk__parse_string(&c, key, sizeof key) || !spk__accept(&c, ':'))
            return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "NPY header: %s", why);
        if (strcmp(key, "descr") == 0) {
            if (!spk__parse_string(&c, descr, sizeof descr))
                return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "NPY header: descr is not a string");
        } else if (strcmp(key, "fortran_order") == 0) {
            if (spk__parse_word(&c, "True")) fortran = 1;
            else if (spk__parse_word(&c, "False")) fortran = 0;
            else
                return spk__error_message(error, error_size, SPK_ERROR_FORMAT,
                                      "NPY header: fortran_order is not True or False");
        } else if (strcmp(key, "shape") == 0) {
            if (!spk__parse_shape(&c, &a, &why))
                return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "NPY header: %s", why);
            have_shape = true;
        } else {
            return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "NPY header: unexpected key '%s'", key);
        }
        if (!spk__accept(&c, ',')) {
            if (!spk__accept(&c, '}'))
                return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "NPY header: %s", why);
            break;
        }
    }
    if (!descr[0] || fortran < 0 || !have_shape)
        return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "NPY header lacks descr, fortran_order or shape");
    if (fortran)
        return spk__error_message(error, error_size, SPK_ERROR_FORMAT,
                              "Fortran-ordered NPY arrays are not supported; save with C order");
    size_t item;
    bool integer = descr[1] == 'i';
    if (strcmp(descr, "<f4") == 0 || strcmp(descr, "<i4") == 0) item = 4;
    else if (strcmp(descr, "<f8") == 0 || strcmp(descr, "<i8") == 0) item = 8;
    else
        return spk__error_message(error, error_size, SPK_ERROR_FORMAT,
                              "unsupported NPY dtype '%s' (expected little-endian float32 '<f4' or float64 '<f8', or "
                              "int32 '<i4' or int64 '<i8' class indices)",
                              descr);

    uint64_t count = 1;
    for (int i = 0; i < a.ndim; i++)
        if (spk__mul_overflows(count, (uint64_t)a.shape[i], &count))
            return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "NPY shape's element count overflows");
    if (a.ndim == 0) { /* a scalar */
        a.ndim = 1;
        a.shape[0] = 1;
    }
    uint64_t data_bytes;
    if (spk__mul_overflows(count, item, &data_bytes) || data_bytes > SIZE_MAX)
        return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "NPY data size overflows");
    a.count = (int64_t)count;
    a.integer = integer;
    *h = (spk__npy_header){a, item, header_start + header_len};
    return SPK_OK;
}

/* Converts `count` elements at src (the header's type) into floats; on failure says where. */
static spk_status spk__npy_convert(const spk__npy_header *h, const unsigned char *src, uint64_t count, float *out,
                                   char *error, size_t error_size) {
    if (h->shape.integer) {
        /* Class indices: exact in float32 up to 2^24. */
        for (uint64_t i = 0; i < count; i++) {
            int64_t v;
            if (h->item == 4) {
                int32_t v32;
                memcpy(&v32, src + 4 * i, 4);
                v = v32;
            } else {
                memcpy(&v, src + 8 * i, 8);
            }
            if (v > (1 << 24) || v < -(1 << 24))
                return spk__error_message(error, error_size, SPK_ERROR_FORMAT,
                                          "NPY integer %lld at %llu is beyond float32's exact range (2^24)",
                                          (long long)v, (unsigned long long)i);
            out[i] = (float)v;
        }
    } else if (h->item == 4) {
        memcpy(out, src, count * 4);
    } else {
        for (uint64_t i = 0; i < count; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            out[i] = (float)d;
        }
    }
    return SPK_OK;
}

spk_status spk_npy_parse(const void *bytes, size_t size, spk_array *out, char *error, size_t error_size) {
    if (!out) return spk__error_message(error, error_size, SPK_ERROR_INVALID_ARGUMENT, "output array is NULL");
    memset(out, 0, sizeof *out);
    if (!bytes && size) return spk__error_message(error, error_size, SPK_ERROR_INVALID_ARGUMENT, "data is NULL");
    spk__npy_header h;
    spk_status s = spk__npy_header_parse(bytes, size, &h, error, error_size);
    if (s != SPK_OK) return s;
    uint64_t data_bytes = (uint64_t)h.shape.count * h.item;
    if (data_bytes != size - h.data_start)
        return spk__error_message(error, error_size, SPK_ERROR_FORMAT,
                                  "NPY data is %zu bytes but the shape needs %llu (truncated or trailing bytes)",
                                  size - h.data_start, (unsigned long long)data_bytes);
    spk_array a = h.shape;
    a.data = spk__malloc(a.count ? (size_t)a.count * sizeof(float) : 1);
    if (!a.data) return spk__error_message(error, error_size, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    s = spk__npy_convert(&h, (const unsigned char *)bytes + h.data_start, (uint64_t)a.count, a.data, error, error_size);
    if (s != SPK_OK) {
        free(a.data);
        return s;
    }
    *out = a;
    return SPK_OK;
}

spk_status spk_npy_read(const char *path, spk_array *out, char *error, size_t error_size) {
    if (out) memset(out, 0, sizeof *out);
    if (!path || !out) return spk__error_message(error, error_size, SPK_ERROR_INVALID_ARGUMENT, "path or output is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) return spk__error_message(error, error_size, SPK_ERROR_IO, "cannot open %s: %s", path, strerror(errno));
    unsigned char *data = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return spk__error_message(error, error_size, SPK_ERROR_IO, "cannot read %s", path);
    }
    data = spk__malloc(n ? (size_t)n : 1);
    if (!data) {
        fclose(f);
        return spk__error_message(error, error_size, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory reading %s", path);
    }
    size_t got = fread(data, 1, (size_t)n, f);
    fclose(f);
    spk_status status;
    if (got != (size_t)n) status = spk__error_message(error, error_size, SPK_ERROR_IO, "cannot read %s", path);
    else status = spk_npy_parse(data, (size_t)n, out, error, error_size);
    free(data);
    return status;
}

spk_status spk_npy_read_rows(const char *path, const int64_t *rows, int64_t count, spk_array *out, int64_t *file_rows,
                             char *error, size_t error_size) {
    if (out) memset(out, 0, sizeof *out);
    if (!path || !out || count < 0 || (count && !rows))
        return spk__error_message(error, error_size, SPK_ERROR_INVALID_ARGUMENT, "path, rows or output is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) return spk__error_message(error, error_size, SPK_ERROR_IO, "cannot open %s: %s", path, strerror(errno));
    /* The header: its length from the first 12 bytes, then all of it. */
    unsigned char lead[12], *head = NULL, *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    size_t got = n >= 0 && fseek(f, 0, SEEK_SET) == 0 ? fread(lead, 1, sizeof lead, f) : 0;
    spk__npy_header h;
    spk_status s = got >= 10 ? SPK_OK : spk__error_message(error, error_size, SPK_ERROR_FORMAT, "%s: not an NPY file", path);
    size_t head_bytes = 0;
    if (s == SPK_OK) {
        size_t len = lead[6] == 1 ? ((size_t)lead[8] | (size_t)lead[9] << 8) + 10
                                  : ((size_t)lead[8] | (size_t)lead[9] << 8 | (size_t)lead[10] << 16 | (size_t)lead[11] << 24) + 12;
        head_bytes = len < (size_t)n ? len : (size_t)n;
        head = spk__malloc(head_bytes ? head_bytes : 1);
        if (!head) s = spk__error_message(error, error_size, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
        else if (fseek(f, 0, SEEK_SET) != 0 || fread(head, 1, head_bytes, f) != head_bytes)
            s = spk__error_message(error, error_size, SPK_ERROR_IO, "cannot read %s", path);
    }
    if (s == SPK_OK) s = spk__npy_header_parse(head, head_bytes, &h, error, error_size);
    int64_t total_rows = s == SPK_OK ? h.shape.shape[0] : 0;
    uint64_t row_elems = total_rows > 0 ? (uint64_t)h.shape.count / (uint64_t)total_rows : 0, row_bytes = row_elems * h.item;
    if (s == SPK_OK && (uint64_t)n != h.data_start + (uint64_t)h.shape.count * h.item)
        s = spk__error_message(error, error_size, SPK_ERROR_FORMAT, "%s: the data is truncated or has trailing bytes", path);
    for (int64_t i = 0; s == SPK_OK && i < count; i++)
        if (rows[i] < 0 || rows[i] >= total_rows)
            s = spk__error_message(error, error_size, SPK_ERROR_SHAPE, "%s: row %lld of %lld", path, (long long)rows[i],
                                   (long long)total_rows);
    spk_array a = s == SPK_OK ? h.shape : (spk_array){0};
    a.shape[0] = count, a.count = count * (int64_t)row_elems;
    if (s == SPK_OK && count) {
        a.data = spk__malloc((size_t)a.count * sizeof(float));
        buf = spk__malloc(row_bytes ? row_bytes : 1);
        if (!a.data || !buf) s = spk__error_message(error, error_size, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    }
    for (int64_t i = 0; s == SPK_OK && i < count; i++) {
        if (fseek(f, (long)(h.data_start + (uint64_t)rows[i] * row_bytes), SEEK_SET) != 0 || fread(buf, 1, row_bytes, f) != row_bytes)
            s = spk__error_message(error, error_size, SPK_ERROR_IO, "cannot read %s", path);
        else s = spk__npy_convert(&h, buf, row_elems, a.data + i * (int64_t)row_elems, error, error_size);
    }
    fclose(f);
    free(head), free(buf);
    if (s != SPK_OK) {
        free(a.data);
        return s;
    }
    if (file_rows) *file_rows = total_rows;
    *out = a;
    return SPK_OK;
}

spk_status spk_npy_write(const char *path, int ndim, const int64_t *shape, const float *data, char *error,
                         size_t error_size) {
    if (!path || !shape || ndim < 1 || ndim > SPK_MAX_RANK)
        return spk__error_message(error, error_size, SPK_ERROR_INVALID_ARGUMENT, "invalid path or shape for NPY output");
    uint64_t count = 1;
    char header[512];
    int len = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || spk__mul_overflows(count, (uint64_t)shape[i], &count))
            return spk__error_message(error, error_size, SPK_ERROR_SHAPE, "invalid shape for NPY output");
        len += snprintf(header + len, sizeof header - (size_t)len, "%lld%s", (long long)shape[i],
                        ndim == 1 ? "," : (i + 1 < ndim ? ", " : ""));
    }
    len += snprintf(header + len, sizeof header - (size_t)len, "), }");
    if (count && !data) return spk__error_message(error, error_size, SPK_ERROR_INVALID_ARGUMENT, "data is NULL");
    /* Pad with spaces so the data starts on a 64-byte boundary, as numpy does. */
    int total = 10 + len + 1;
    int padded = (total + 63) / 64 * 64;
    while (len < padded - 11) header[len++] = ' ';
    header[len++] = '\n';

    FILE *f = fopen(path, "wb");
    if (!f) return spk__error_message(error, error_size, SPK_ERROR_IO, "cannot create %s: %s", path, strerror(errno));
    unsigned char prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(len & 0xff),
                                (unsigned char)(len >> 8)};
    bool ok = fwrite(prefix, 1, 10, f) == 10 && fwrite(header, 1, (size_t)len, f) == (size_t)len &&
              fwrite(data, sizeof(float), count, f) == count;
    if (fclose(f) != 0) ok = false;
    if (!ok) return spk__error_message(error, error_size, SPK_ERROR_IO, "cannot write %s", path);
    return SPK_OK;
}

void spk_array_free(spk_array *array) {
    if (!array) return;
    free(array->data);
    memset(array, 0, sizeof *array);
}
