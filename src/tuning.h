/* Kernel choices measured on this device (spk_tune), kept in a tuning file and consulted by the
 * ops before their rules. Internal.
 *
 * A problem is one kernel family's work: a variant word (what changes the kernel's code: epilogue,
 * transposes, storage types, alignment) and up to four sizes. Its class rounds every size up to a
 * power of two; a tuned entry holds the parameters of the winning candidate for one class, in
 * the family's own packing (spk__*_tuning_pack / _unpack). */
#ifndef SOFTPICK_TUNING_H
#define SOFTPICK_TUNING_H

#include "internal.h"

typedef enum spk__tune_family {
    SPK__TUNE_MATMUL = 0,         /* sizes: batch, M, N, K (matmul_plan.h: spk__matmul_variant) */
    SPK__TUNE_ATTENTION,          /* batch, seq, heads, head_dim; variant: causal | keep r << 1 | dtypes */
    SPK__TUNE_ATTENTION_BACKWARD, /* batch, seq, heads, head_dim; variant: causal */
    SPK__TUNE_LAYER_NORM,         /* rows, n; variant: stats kept | dtypes */
    SPK__TUNE_LAYER_NORM_BACKWARD, /* rows, n (dx's pass); variant: 0 */
    SPK__TUNE_COLUMN_SUMS,        /* rows, n; variant: what is summed (column_sums.comp's MODE) */
    SPK__TUNE_SOFTPICK,           /* outer, n, inner; variant: backward | strided << 1 | s16 << 2 */
    SPK__TUNE_OPTIMIZER,          /* elements; variant: the optimizer's kind */
    SPK__TUNE_LOSS,               /* rows, n; variant: the loss's kind */
    SPK__TUNE_FAMILY_COUNT,
} spk__tune_family;

extern const char *const spk__tune_family_names[SPK__TUNE_FAMILY_COUNT];

#define SPK__TUNE_PARAMS 8

typedef struct spk__tune_problem {
    uint32_t family, variant;
    uint64_t size[4];
} spk__tune_problem;

typedef struct spk__tune_entry {
    spk__tune_problem key; /* a class: sizes rounded up to powers of two */
    uint32_t params[SPK__TUNE_PARAMS];
} spk__tune_entry;

/* Problems met while ctx->collect is set (spk_tune's discovery of a model's shapes). */
typedef struct spk__tune_collect {
    spk__tune_problem *problems;
    uint32_t *counts;   /* times each was recorded */
    uint64_t *forwards; /* bit i: the model's forward at spk_tune's batch i records it */
    uint64_t forward;   /* the bit of the forward being collected now (0: something else) */
    uint32_t count, capacity;
    bool failed;        /* out of host memory: the list is incomplete */
} spk__tune_collect;

/* The class of a problem. */
spk__tune_problem spk__tune_class(const spk__tune_problem *p);
/* The tuned parameters for p's class, if the context has them (and collects p when collecting).
 * Each family checks what it unpacks and takes its rule where that does not fit the device. */
bool spk__tuned(spk_context *ctx, const spk__tune_problem *p, uint32_t params[SPK__TUNE_PARAMS]);

/* The context's tuning file: `path` (NULL: SOFTPICK_TUNING, else the default path; "": none) is
 * loaded if it exists and was written for this device, driver, library and candidate set; any
 * other is ignored with a warning. */
spk_status spk__tuning_init(spk_context *ctx, const char *path);
void spk__tuning_destroy(spk_context *ctx);
/* The default file of this device: $XDG_CACHE_HOME/softpick/ (else ~/.cache/softpick/), named by
 * the vendor and device IDs; false when neither variable is set. */
bool spk__tuning_default_path(const spk_context *ctx, char *out, size_t size);
/* Replaces the context's entries (copied) and writes them to `path` through a temporary file and a
 * rename (creating the file's directory); `candidates` is the candidate set's checksum. */
spk_status spk__tuning_save(spk_context *ctx, const char *path, const spk__tune_entry *entries, uint32_t count);
/* Makes `entries` (malloc'd, taken over) the context's table, under its lock. */
void spk__tuning_replace(spk_context *ctx, spk__tune_entry *entries, uint32_t count);
/* The checksum of everything that decides which candidates exist and what they compute: the
 * families' candidate lists for this device and every kernel's SPIR-V (tune.c). */
uint64_t spk__tune_candidates_checksum(const spk_context *ctx);

#endif
