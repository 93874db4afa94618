/* A strict safetensors reader (internal): 8-byte little-endian header length, a JSON header, raw
 * data. Written for hostile files: every length, offset and shape is checked before use. */
#ifndef SOFTPICK_SAFETENSORS_H
#define SOFTPICK_SAFETENSORS_H

#include "internal.h"

typedef struct spk__st_tensor {
    char *name;
    spk_dtype dtype;
    int ndim; /* 0..SPK_MAX_RANK */
    int64_t shape[SPK_MAX_RANK];
    uint64_t count;      /* elements */
    uint64_t begin, end; /* byte range within the data section, checked */
} spk__st_tensor;

typedef struct spk__st_metadata {
    char *key, *value;
} spk__st_metadata;

typedef struct spk__safetensors {
    unsigned char *bytes; /* the whole file, owned */
    size_t size;
    const unsigned char *data; /* the data section: bytes + 8 + header length */
    uint64_t data_size;
    spk__st_tensor *tensors;
    uint32_t tensor_count;
    spk__st_metadata *metadata;
    uint32_t metadata_count;
} spk__safetensors;

/* Reads and validates a file; on failure `out` is empty and `error` says why (naming the tensor). */
spk_status spk__safetensors_read(const char *path, spk__safetensors *out, char *error, size_t error_size);
/* As spk__safetensors_read on bytes in memory, which are copied. */
spk_status spk__safetensors_parse(const void *bytes, size_t size, spk__safetensors *out, char *error,
                                  size_t error_size);
void spk__safetensors_free(spk__safetensors *st);
const spk__st_tensor *spk__safetensors_find(const spk__safetensors *st, const char *name);
/* The metadata value of `key`, or NULL. */
const char *spk__safetensors_metadata(const spk__safetensors *st, const char *key);
/* Converts a tensor's data to float32 into `out` (t->count floats). */
void spk__safetensors_to_f32(const spk__safetensors *st, const spk__st_tensor *t, float *out);

/* One tensor to write: float32, row-major. */
typedef struct spk__st_output {
    const char *name;
    int ndim;
    int64_t shape[2];
    const float *data;
} spk__st_output;

/* Writes F32 tensors and string metadata (`metadata` holds metadata_count key, value pairs) as a
 * safetensors file, through a temporary file renamed into place: no partial file on failure. */
spk_status spk__safetensors_write(const char *path, const char *const *metadata, uint32_t metadata_count,
                                  const spk__st_output *tensors, uint32_t count, char *error, size_t error_size);

#endif
