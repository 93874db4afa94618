/* safetensors: a strict reader. The JSON header is parsed by a small recursive-descent parser that
 * accepts exactly the header's grammar (an object of tensor entries and an optional string-to-
 * string __metadata__ object), with every read bounds-checked. Hosts are little-endian. */
#include "safetensors.h"
#include "fault.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPK__ST_MAX_HEADER ((uint64_t)100 << 20) /* the reference implementation's limit */

typedef struct spk__json {
    const char *p, *end;
    char *error;
    size_t error_size;
} spk__json;

#define SPK__JSON_FAIL(j, ...) spk__error_message((j)->error, (j)->error_size, SPK_ERROR_FORMAT, "safetensors header: " __VA_ARGS__)

static void spk__json_space(spk__json *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static bool spk__json_accept(spk__json *j, char ch) {
    spk__json_space(j);
    if (j->p < j->end && *j->p == ch) {
        j->p++;
        return true;
    }
    return false;
}

static int spk__hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A JSON string, unescaped to UTF-8 into a malloc'd string. */
static spk_status spk__json_string(spk__json *j, char **out) {
    *out = NULL;
    spk__json_space(j);
    if (j->p >= j->end || *j->p != '"') return SPK__JSON_FAIL(j, "expected a string");
    j->p++;
    const char *start = j->p;
    while (j->p < j->end && *j->p != '"') j->p += (*j->p == '\\' && j->p + 1 < j->end) ? 2 : 1;
    if (j->p >= j->end) return SPK__JSON_FAIL(j, "unterminated string");
    size_t raw = (size_t)(j->p - start);
    j->p++;
    char *s = spk__malloc(raw + 1); /* unescaping never lengthens: \uXXXX (6 bytes) is at most 3 */
    if (!s) return SPK_ERROR_OUT_OF_HOST_MEMORY;
    size_t n = 0;
    for (const char *c = start; c < start + raw; c++) {
        if ((unsigned char)*c < 0x20) {
            free(s);
            return SPK__JSON_FAIL(j, "control character in a string");
        }
        if (*c != '\\') {
            s[n++] = *c;
            continue;
        }
        c++;
        switch (*c) {
        case '"': case '\\': case '/': s[n++] = *c; break;
        case 'b': s[n++] = '\b'; break;
        case 'f': s[n++] = '\f'; break;
        case 'n': s[n++] = '\n'; break;
        case 'r': s[n++] = '\r'; break;
        case 't': s[n++] = '\t'; break;
        case 'u': {
            uint32_t cp = 0;
            for (int i = 1; i <= 4; i++) {
                int h = c + i < start + raw ? spk__hex(c[i]) : -1;
                if (h < 0) {
                    free(s);
                    return SPK__JSON_FAIL(j, "bad \\u escape");
                }
                cp = cp * 16 + (uint32_t)h;
            }
            c += 4;
            /* Surrogates (pairs or not) are not needed by tensor names; refuse them plainly. */
            if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) {
                free(s);
                return SPK__JSON_FAIL(j, "unsupported \\u escape");
            }
            if (cp < 0x80) {
                s[n++] = (char)cp;
            } else if (cp < 0x800) {
                s[n++] = (char)(0xC0 | (cp >> 6));
                s[n++] = (char)(0x80 | (cp & 0x3F));
            } else {
                s[n++] = (char)(0xE0 | (cp >> 12));
                s[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                s[n++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default:
            free(s);
            return SPK__JSON_FAIL(j, "bad escape in a string");
        }
    }
    s[n] = '\0';
    *out = s;
    return SPK_OK;
}

/* A non-negative JSON integer that fits in 63 bits. */
static spk_status spk__json_uint(spk__json *j, uint64_t *out) {
    spk__json_space(j);
    uint64_t v = 0;
    const char *start = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        if (v > (UINT64_MAX >> 1) / 10) return SPK__JSON_FAIL(j, "integer too large");
        v = v * 10 + (uint64_t)(*j->p++ - '0');
    }
    if (j->p == start) return SPK__JSON_FAIL(j, "expected a non-negative integer");
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
        return SPK__JSON_FAIL(j, "expected an integer");
    *out = v;
    return SPK_OK;
}

/* [n, n, ...] of at most `max` non-negative integers. */
static spk_status spk__json_uint_array(spk__json *j, uint64_t *values, int max, int *count, const char *what) {
    *count = 0;
    if (!spk__json_accept(j, '[')) return SPK__JSON_FAIL(j, "%s must be an array", what);
    if (spk__json_accept(j, ']')) return SPK_OK;
    do {
        if (*count == max) return SPK__JSON_FAIL(j, "%s has more than %d entries", what, max);
        spk_status s = spk__json_uint(j, &values[(*count)++]);
        if (s != SPK_OK) return s;
    } while (spk__json_accept(j, ','));
    if (!spk__json_accept(j, ']')) return SPK__JSON_FAIL(j, "%s: expected ',' or ']'", what);
    return SPK_OK;
}

static spk_status spk__parse_metadata(spk__json *j, spk__safetensors *st) {
    if (!spk__json_accept(j, '{')) return SPK__JSON_FAIL(j, "__metadata__ must be an object");
    if (spk__json_accept(j, '}')) return SPK_OK;
    uint32_t capacity = 0;
    do {
        if (!spk__grow((void **)&st->metadata, &capacity, st->metadata_count + 1, sizeof *st->metadata))
            return SPK_ERROR_OUT_OF_HOST_MEMORY;
        spk__st_metadata *m = &st->metadata[st->metadata_count];
        *m = (spk__st_metadata){0};
        spk_status s = spk__json_string(j, &m->key);
        if (s == SPK_OK) st->metadata_count++;
        if (s == SPK_OK && !spk__json_accept(j, ':')) s = SPK__JSON_FAIL(j, "expected ':' in __metadata__");
        if (s == SPK_OK) s = spk__json_string(j, &m->value);
        if (s != SPK_OK) return s == SPK_ERROR_FORMAT ? SPK__JSON_FAIL(j, "__metadata__ values must be strings") : s;
    } while (spk__json_accept(j, ','));
    if (!spk__json_accept(j, '}')) return SPK__JSON_FAIL(j, "__metadata__: expected ',' or '}'");
    return SPK_OK;
}

static spk_status spk__parse_dtype(spk__json *j, spk__st_tensor *t) {
    char *name;
    spk_status s = spk__json_string(j, &name);
    if (s != SPK_OK) return s;
    static const struct {
        const char *name;
        spk_dtype dtype;
    } known[] = {{"F32", SPK_DTYPE_F32}, {"F16", SPK_DTYPE_F16}, {"BF16", SPK_DTYPE_BF16}};
    s = SPK__JSON_FAIL(j, "tensor '%s' has unsupported dtype '%.32s' (F32, F16 and BF16 are read)", t->name, name);
    for (size_t i = 0; i < SPK__ARRAY_LEN(known); i++)
        if (strcmp(name, known[i].name) == 0) t->dtype = known[i].dtype, s = SPK_OK;
    free(name);
    return s;
}

/* One tensor entry: {"dtype": ..., "shape": [...], "data_offsets": [begin, end]} in any order. */
static spk_status spk__parse_tensor(spk__json *j, spk__st_tensor *t) {
    if (!spk__json_accept(j, '{')) return SPK__JSON_FAIL(j, "tensor '%s' must be an object", t->name);
    bool seen_dtype = false, seen_shape = false, seen_offsets = false;
    do {
        char *key;
        spk_status s = spk__json_string(j, &key);
        if (s != SPK_OK) return s;
        if (!spk__json_accept(j, ':')) s = SPK__JSON_FAIL(j, "tensor '%s': expected ':'", t->name);
        bool *seen = NULL;
        if (s == SPK_OK && strcmp(key, "dtype") == 0) {
            seen = &seen_dtype;
            s = spk__parse_dtype(j, t);
        } else if (s == SPK_OK && strcmp(key, "shape") == 0) {
            seen = &seen_shape;
            uint64_t dims[SPK_MAX_RANK];
            s = spk__json_uint_array(j, dims, SPK_MAX_RANK, &t->ndim, "shape");
            for (int i = 0; i < t->ndim; i++) t->shape[i] = (int64_t)dims[i];
        } else if (s == SPK_OK && strcmp(key, "data_offsets") == 0) {
            seen = &seen_offsets;
            uint64_t offsets[2];
            int n = 0;
            s = spk__json_uint_array(j, offsets, 2, &n, "data_offsets");
            if (s == SPK_OK && n != 2) s = SPK__JSON_FAIL(j, "tensor '%s': data_offsets needs 2 entries", t->name);
            if (s == SPK_OK) t->begin = offsets[0], t->end = offsets[1];
        } else if (s == SPK_OK) {
            s = SPK__JSON_FAIL(j, "tensor '%s' has an unknown field '%.32s'", t->name, key);
        }
        if (s == SPK_OK && *seen) s = SPK__JSON_FAIL(j, "tensor '%s' repeats field '%s'", t->name, key);
        if (s == SPK_OK) *seen = true;
        free(key);
        if (s != SPK_OK) return s;
    } while (spk__json_accept(j, ','));
    if (!spk__json_accept(j, '}')) return SPK__JSON_FAIL(j, "tensor '%s': expected ',' or '}'", t->name);
    if (!seen_dtype || !seen_shape || !seen_offsets)
        return SPK__JSON_FAIL(j, "tensor '%s' lacks %s", t->name,
                              !seen_dtype ? "dtype" : !seen_shape ? "shape" : "data_offsets");
    return SPK_OK;
}

static int spk__compare_begin(const void *a, const void *b) {
    const spk__st_tensor *x = *(const spk__st_tensor *const *)a, *y = *(const spk__st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Sizes against shapes and dtypes, ranges against the data section, and no two ranges overlap. */
static spk_status spk__check_ranges(spk__safetensors *st, char *error, size_t error_size) {
    for (uint32_t i = 0; i < st->tensor_count; i++) {
        spk__st_tensor *t = &st->tensors[i];
        uint64_t count = 1, bytes;
        for (int d = 0; d < t->ndim; d++)
            if (spk__mul_overflows(count, (uint64_t)t->shape[d], &count))
                return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "tensor '%s': element count overflows", t->name);
        t->count = count;
        if (spk__mul_overflows(count, spk_dtype_size(t->dtype), &bytes))
            return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "tensor '%s': byte size overflows", t->name);
        if (t->begin > t->end || t->end > st->data_size)
            return spk__error_message(error, error_size, SPK_ERROR_FORMAT,
                                 "tensor '%s': data_offsets [%llu, %llu] fall outside the %llu bytes of data", t->name,
                                 (unsigned long long)t->begin, (unsigned long long)t->end,
                                 (unsigned long long)st->data_size);
        if (t->end - t->begin != bytes)
            return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "tensor '%s': data_offsets span %llu bytes, its shape needs %llu",
                                 t->name, (unsigned long long)(t->end - t->begin), (unsigned long long)bytes);
    }
    if (st->tensor_count < 2) return SPK_OK;
    spk__st_tensor **order = spk__malloc(st->tensor_count * sizeof *order);
    if (!order) return SPK_ERROR_OUT_OF_HOST_MEMORY;
    for (uint32_t i = 0; i < st->tensor_count; i++) order[i] = &st->tensors[i];
    qsort(order, st->tensor_count, sizeof *order, spk__compare_begin);
    spk_status s = SPK_OK;
    for (uint32_t i = 1; i < st->tensor_count && s == SPK_OK; i++)
        if (order[i]->begin < order[i - 1]->end)
            s = spk__error_message(error, error_size, SPK_ERROR_FORMAT, "tensors '%s' and '%s' overlap in the data section",
                              order[i - 1]->name, order[i]->name);
    free(order);
    return s;
}

static spk_status spk__parse_header(spk__safetensors *st, const char *header, size_t size, char *error,
                                    size_t error_size) {
    spk__json j = {header, header + size, error, error_size};
    uint32_t capacity = 0;
    if (!spk__json_accept(&j, '{')) return SPK__JSON_FAIL(&j, "expected a JSON object");
    if (spk__json_accept(&j, '}')) return SPK_OK;
    bool seen_metadata = false;
    do {
        char *name;
        spk_status s = spk__json_string(&j, &name);
        if (s != SPK_OK) return s;
        if (!spk__json_accept(&j, ':')) {
            s = SPK__JSON_FAIL(&j, "expected ':' after '%.64s'", name);
            free(name);
            return s;
        }
        if (strcmp(name, "__metadata__") == 0) {
            free(name);
            if (seen_metadata) return SPK__JSON_FAIL(&j, "__metadata__ appears twice");
            seen_metadata = true;
            s = spk__parse_metadata(&j, st);
            if (s != SPK_OK) return s;
            continue;
        }
        if (spk__safetensors_find(st, name)) {
            s = SPK__JSON_FAIL(&j, "tensor '%.64s' appears twice", name);
            free(name);
            return s;
        }
        if (!spk__grow((void **)&st->tensors, &capacity, st->tensor_count + 1, sizeof *st->tensors)) {
            free(name);
            return SPK_ERROR_OUT_OF_HOST_MEMORY;
        }
        spk__st_tensor *t = &st->tensors[st->tensor_count++];
        *t = (spk__st_tensor){.name = name};
        s = spk__parse_tensor(&j, t);
        if (s != SPK_OK) return s;
    } while (spk__json_accept(&j, ','));
    if (!spk__json_accept(&j, '}')) return SPK__JSON_FAIL(&j, "expected ',' or '}'");
    spk__json_space(&j);
    if (j.p != j.end) return SPK__JSON_FAIL(&j, "trailing bytes after the header object");
    return SPK_OK;
}

static spk_status spk__safetensors_load(spk__safetensors *st, char *error, size_t error_size) {
    if (st->size < 8) return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "safetensors file of %zu bytes is truncated", st->size);
    uint64_t header_size = 0;
    for (int i = 7; i >= 0; i--) header_size = header_size << 8 | st->bytes[i];
    if (header_size > st->size - 8)
        return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "safetensors header length %llu runs past the end of the %zu-byte file",
                             (unsigned long long)header_size, st->size);
    if (header_size > SPK__ST_MAX_HEADER)
        return spk__error_message(error, error_size, SPK_ERROR_FORMAT, "safetensors header of %llu bytes is too large",
                             (unsigned long long)header_size);
    st->data = st->bytes + 8 + header_size;
    st->data_size = st->size - 8 - header_size;
    spk_status s = spk__parse_header(st, (const char *)st->bytes + 8, (size_t)header_size, error, error_size);
    if (s == SPK_OK) s = spk__check_ranges(st, error, error_size);
    return s;
}

spk_status spk__safetensors_parse(const void *bytes, size_t size, spk__safetensors *out, char *error,
                                  size_t error_size) {
    *out = (spk__safetensors){0};
    if (error && error_size) error[0] = '\0';
    out->bytes = spk__malloc(size ? size : 1);
    if (!out->bytes) return spk__error_message(error, error_size, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    if (size) memcpy(out->bytes, bytes, size);
    out->size = size;
    spk_status s = spk__safetensors_load(out, error, error_size);
    if (s == SPK_ERROR_OUT_OF_HOST_MEMORY) spk__error_message(error, error_size, SPK_ERROR_FORMAT, "out of host memory");
    if (s != SPK_OK) spk__safetensors_free(out);
    return s;
}

spk_status spk__safetensors_read(const char *path, spk__safetensors *out, char *error, size_t error_size) {
    *out = (spk__safetensors){0};
    if (error && error_size) error[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f) return spk__error_message(error, error_size, SPK_ERROR_IO, "cannot open '%s'", path);
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    spk_status s = SPK_OK;
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        s = SPK_ERROR_IO;
        spk__error_message(error, error_size, SPK_ERROR_FORMAT, "cannot read '%s'", path);
    } else if (!(out->bytes = spk__malloc((size_t)size + 1))) {
        s = SPK_ERROR_OUT_OF_HOST_MEMORY;
        spk__error_message(error, error_size, SPK_ERROR_FORMAT, "out of host memory reading '%s'", path);
    } else if (fread(out->bytes, 1, (size_t)size, f) != (size_t)size) {
        s = SPK_ERROR_IO;
        spk__error_message(error, error_size, SPK_ERROR_FORMAT, "cannot read '%s'", path);
    }
    fclose(f);
    out->size = (size_t)size;
    if (s == SPK_OK) s = spk__safetensors_load(out, error, error_size);
    if (s == SPK_ERROR_OUT_OF_HOST_MEMORY) spk__error_message(error, error_size, SPK_ERROR_FORMAT, "out of host memory");
    if (s != SPK_OK) spk__safetensors_free(out);
    return s;
}

void spk__safetensors_free(spk__safetensors *st) {
    for (uint32_t i = 0; i < st->tensor_count; i++) free(st->tensors[i].name);
    for (uint32_t i = 0; i < st->metadata_count; i++) free(st->metadata[i].key), free(st->metadata[i].value);
    free(st->tensors);
    free(st->metadata);
    free(st->bytes);
    *st = (spk__safetensors){0};
}

const spk__st_tensor *spk__safetensors_find(const spk__safetensors *st, const char *name) {
    for (uint32_t i = 0; i < st->tensor_count; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

const char *spk__safetensors_metadata(const spk__safetensors *st, const char *key) {
    for (uint32_t i = 0; i < st->metadata_count; i++)
        if (strcmp(st->metadata[i].key, key) == 0) return st->metadata[i].value;
    return NULL;
}

void spk__safetensors_to_f32(const spk__safetensors *st, const spk__st_tensor *t, float *out) {
    spk_convert(st->data + t->begin, t->dtype, out, SPK_DTYPE_F32, t->count);
}

/* ---- writing ------------------------------------------------------------------------------ */

/* Appends `text` to a growing buffer; false when out of memory. */
static bool spk__append(char **buf, size_t *len, size_t *cap, const char *text) {
    size_t n = strlen(text);
    if (*len + n + 1 > *cap) {
        size_t want = (*cap ? *cap * 2 : 1024);
        while (want < *len + n + 1) want *= 2;
        char *grown = spk__realloc(*buf, want);
        if (!grown) return false;
        *buf = grown, *cap = want;
    }
    memcpy(*buf + *len, text, n + 1);
    *len += n;
    return true;
}

/* Appends a JSON string (quotes and backslashes escaped; control characters refused). */
static bool spk__append_json_string(char **buf, size_t *len, size_t *cap, const char *s) {
    bool ok = spk__append(buf, len, cap, "\"");
    for (; ok && *s; s++) {
        char c[3] = {*s, 0, 0};
        if (*s == '"' || *s == '\\') c[0] = '\\', c[1] = *s;
        else if ((unsigned char)*s < 0x20) return false;
        ok = spk__append(buf, len, cap, c);
    }
    return ok && spk__append(buf, len, cap, "\"");
}

spk_status spk__safetensors_write(const char *path, const char *const *metadata, uint32_t metadata_count,
                                  const spk__st_output *tensors, uint32_t count, char *error, size_t error_size) {
    char *header = NULL, num[96];
    size_t len = 0, cap = 0;
    bool ok = spk__append(&header, &len, &cap, "{");
    if (ok && metadata_count) {
        ok = spk__append(&header, &len, &cap, "\"__metadata__\":{");
        for (uint32_t i = 0; ok && i < metadata_count; i++) {
            ok = (!i || spk__append(&header, &len, &cap, ",")) &&
                 spk__append_json_string(&header, &len, &cap, metadata[2 * i]) && spk__append(&header, &len, &cap, ":") &&
                 spk__append_json_string(&header, &len, &cap, metadata[2 * i + 1]);
        }
        ok = ok && spk__append(&header, &len, &cap, "}");
    }
    uint64_t offset = 0;
    for (uint32_t i = 0; ok && i < count; i++) {
        const spk__st_output *t = &tensors[i];
        ok = spk__append(&header, &len, &cap, i || metadata_count ? "," : "") &&
             spk__append_json_string(&header, &len, &cap, t->name) &&
             spk__append(&header, &len, &cap, ":{\"dtype\":\"F32\",\"shape\":[");
        uint64_t elements = 1;
        for (int d = 0; ok && d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            elements *= (uint64_t)t->shape[d];
            ok = spk__append(&header, &len, &cap, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                 (unsigned long long)(offset + elements * 4));
        offset += elements * 4;
        ok = ok && spk__append(&header, &len, &cap, num);
    }
    /* The header padded with spaces to a multiple of 8, as the format's writers do. */
    ok = ok && spk__append(&header, &len, &cap, "}");
    while (ok && len % 8) ok = spk__append(&header, &len, &cap, " ");
    if (!ok) {
        free(header);
        return spk__error_message(error, error_size, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory writing %s", path);
    }
    /* Written to a temporary file, renamed into place when complete: a failed write leaves no
     * partial output. */
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        free(header);
        return spk__error_message(error, error_size, SPK_ERROR_IO, "path too long: %s", path);
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(header);
        return spk__error_message(error, error_size, SPK_ERROR_IO, "cannot write %s: %s", path, strerror(errno));
    }
    unsigned char size_le[8];
    for (int i = 0; i < 8; i++) size_le[i] = (unsigned char)((uint64_t)len >> (8 * i));
    ok = fwrite(size_le, 1, 8, f) == 8 && fwrite(header, 1, len, f) == len;
    for (uint32_t i = 0; ok && i < count; i++) {
        uint64_t elements = 1;
        for (int d = 0; d < tensors[i].ndim; d++) elements *= (uint64_t)tensors[i].shape[d];
        /* Little-endian float32, as the host stores it on every platform the library targets. */
        ok = fwrite(tensors[i].data, 4, (size_t)elements, f) == elements;
    }
    ok = fclose(f) == 0 && ok;
    free(header);
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return spk__error_message(error, error_size, SPK_ERROR_IO, "cannot write %s: %s", path, strerror(errno));
    }
    return SPK_OK;
}
