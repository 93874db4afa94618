/* How spk_softpick maps a tensor onto its kernels. Internal: the benchmark and the tests use it to
 * run each variant side by side. */
#ifndef SOFTPICK_SOFTPICK_PLAN_H
#define SOFTPICK_SOFTPICK_PLAN_H

#include "internal.h"
#include "tuning.h"

/* Per-device choices; spk__softpick_plan_defaults fills them from the device's properties. */
typedef struct spk__softpick_tuning {
    uint32_t workgroup;          /* invocations per workgroup */
    uint64_t target_invocations; /* split rows/columns into segments below this much parallelism */
    uint32_t min_row_segment;    /* shortest segment of a split row, in elements (or vec4s) */
    uint32_t min_column_segment; /* shortest segment of a split column, in rows */
    uint32_t short_row;          /* rows up to this many loads get one invocation each */
    uint32_t subgroup_row_max;   /* rows up to this many loads get one subgroup each (fixed sizes) */
    uint32_t cache_max;          /* loads an invocation may keep in registers (0: never) */
    bool interleave_columns;     /* column segments interleave rows (else contiguous blocks) */
    uint32_t force_group;        /* nonzero: invocations per row, overriding the above */
    bool texel;                  /* read x through its texel view where it has one */
} spk__softpick_tuning;

typedef struct spk__softpick_plan_t {
    bool strided;      /* softpick_cols (else softpick_rows) */
    bool use_subgroup; /* subgroup arithmetic in the row reduction */
    uint32_t vec;      /* 1 or 4 floats per load */
    uint32_t fold;     /* columns: 2 when two rows of a 2-wide tensor share a vec4 */
    uint32_t workgroup;
    uint32_t group;    /* rows: invocations per row segment */
    uint32_t cache;    /* rows: loads kept in registers per invocation (0: x is read twice) */
    uint32_t segments; /* per row or column; > 1 means a partial-sum pass first */
    uint32_t seg_len;  /* loads (rows) or rows (columns) per segment */
    uint64_t len;      /* rows: loads per row; columns: rows of the (possibly folded) column */
    uint64_t columns;  /* columns: columns of loads per outer index */
    uint64_t items;    /* row or column segments in all */
    uint64_t workgroups;
    uint64_t partials; /* floats of scratch for partial sums */
} spk__softpick_plan_t;

void spk__softpick_plan_defaults(const spk_context *ctx, spk__softpick_tuning *t);
/* The tuned problem of one softpick (tuning.h) and a tuning's parameters in the tuning file and
 * back: p[5] says which orientation a candidate is for (0 rows; 1 columns, contiguous segments; 2
 * interleaved) and p[7] is that orientation's shortest segment (false: parameters this device
 * cannot run, or for the other orientation). */
spk__tune_problem spk__softpick_problem(const spk_tensor *x, const spk_tensor *y, int axis, bool backward);
void spk__softpick_tuning_pack(const spk__softpick_tuning *t, bool strided, uint32_t p[SPK__TUNE_PARAMS]);
bool spk__softpick_tuning_unpack(const spk_context *ctx, const uint32_t p[SPK__TUNE_PARAMS], bool strided,
                                 spk__softpick_tuning *t);
void spk__softpick_plan(const spk_context *ctx, const spk__softpick_tuning *t, uint64_t outer, uint64_t n,
                        uint64_t inner, bool aligned16, spk__softpick_plan_t *plan);
/* spk_softpick with a given tuning (NULL: the defaults). */
spk_status spk__softpick_tuned(spk_context *ctx, const spk__softpick_tuning *tuning, const spk_tensor *x, int axis,
                               spk_tensor *y);
/* spk_softpick_backward with a given tuning (NULL: the defaults). */
spk_status spk__softpick_backward_tuned(spk_context *ctx, const spk__softpick_tuning *tuning, const spk_tensor *x,
                                        const spk_tensor *dy, int axis, spk_tensor *dx);
/* spk_normalize and spk_normalize_backward with a given tuning (NULL: the defaults). */
spk_status spk__normalize_tuned(spk_context *ctx, const spk__softpick_tuning *tuning, const spk_tensor *x, int axis,
                                spk_normalizer norm, spk_tensor *y);
spk_status spk__normalize_backward_tuned(spk_context *ctx, const spk__softpick_tuning *tuning, const spk_tensor *x,
                                         const spk_tensor *dy, int axis, spk_normalizer norm, spk_tensor *dx);
/* Records the op with a normalizer (the unfused attention path's); `tuning` NULL: the defaults. */
spk_status spk__record_normalize(spk_context *ctx, const spk__softpick_tuning *tuning, const spk_tensor *x, int axis,
                                 spk_normalizer norm, spk_tensor *y);
/* Records softpick into the context's current recording; `tuning` NULL means the defaults. */
spk_status spk__record_softpick(spk_context *ctx, const spk__softpick_tuning *tuning, const spk_tensor *x, int axis,
                                spk_tensor *y);
/* Records the backward (dx from x and dy; dx separate from both) likewise (the benchmark's
 * unfused attention backward). */
spk_status spk__record_softpick_backward(spk_context *ctx, const spk__softpick_tuning *tuning, const spk_tensor *x,
                                         const spk_tensor *dy, int axis, spk_tensor *dx);

#endif
