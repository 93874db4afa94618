/* The softpick paper's measurements of a forward (spk_model_analyze): the model's own forward,
 * each layer followed by two passes of shaders/analyze.comp (its attention rows, its output's
 * moments), reduced here in float64. */
#include "model.h"
#include "fault.h"

#include <math.h>
#include <stdlib.h>

#define SPK__SINK_EPSILON 0.3 /* the paper's: a head sinks when its mean weight on the first key exceeds it */
#define SPK__ROW_VALUES 3     /* per attention row: first key's weight, exact zeros, sum |w| */
#define SPK__MOMENT_VALUES 5  /* per hidden row: mean, M2, M3, M4, max |x| */

typedef struct spk__analysis_run {
    spk_model *m;
    const spk_tensor *input;
    spk_tensor *output, *rows, *moments; /* rows, moments: every layer's, one after the other */
    int64_t batch, seq;
    int64_t row_stride, moment_stride;   /* floats from one layer's part to the next (aligned) */
} spk__analysis_run;

/* n floats rounded up to the alignment every tensor's offset has (the allocator's). */
static int64_t spk__aligned_floats(const spk_context *ctx, int64_t n) {
    int64_t align = (int64_t)(ctx->allocator.alignment / sizeof(float));
    return (n + align - 1) / align * align;
}

/* One pass of analyze.comp over `count` rows of `in`, writing to `out`. */
static spk_status spk__record_analyze(spk_context *ctx, uint32_t mode, const spk_tensor *in, spk__buffer_ref out,
                                      uint32_t count, uint32_t seq, uint32_t heads, uint32_t dim, spk_normalizer norm) {
    struct {
        uint32_t count, seq, heads, dim;
        float scale;
    } push = {count, seq, heads, dim, (float)(1.0 / sqrt((double)dim))};
    bool s16 = in->dtype == SPK_DTYPE_F16;
    uint32_t spec[4] = {64, mode, s16, (uint32_t)norm};
    spk__dispatch_desc d = {.bindings = {in->ref, out}, .written_mask = 0x2, .push = &push, .push_size = sizeof push};
    spk_status s = spk__grid(ctx, (count + 63) / 64, d.groups);
    if (s == SPK_OK) s = spk__pipeline_get(ctx, s16 ? &spk__shader_analyze_s16 : &spk__shader_analyze, spec, 4, 0, &d.pipeline);
    if (s == SPK_OK) s = spk__dispatch(ctx, &d);
    return s;
}

/* The model's probe: layer l's attention rows and output moments into their part of the results. */
static spk_status spk__analyze_layer(spk_model *m, void *user, int l, const spk_tensor *qkv, const spk_tensor *x) {
    const spk__analysis_run *a = user;
    const spk_model_config *c = &m->cfg;
    uint32_t heads = (uint32_t)c->num_heads, rows = (uint32_t)(a->batch * a->seq), queries = rows * heads;
    spk__buffer_ref att = {a->rows->ref.buffer, a->rows->ref.offset + (VkDeviceSize)(l * a->row_stride) * sizeof(float),
                           (VkDeviceSize)queries * SPK__ROW_VALUES * sizeof(float)};
    spk__buffer_ref mom = {a->moments->ref.buffer,
                           a->moments->ref.offset + (VkDeviceSize)(l * a->moment_stride) * sizeof(float),
                           (VkDeviceSize)rows * SPK__MOMENT_VALUES * sizeof(float)};
    spk_status s = spk__record_analyze(m->ctx, 0, qkv, att, queries, (uint32_t)a->seq, heads,
                                       (uint32_t)(c->hidden_size / c->num_heads), c->attention);
    if (s == SPK_OK) s = spk__record_analyze(m->ctx, 1, x, mom, rows, 0, 0, (uint32_t)c->hidden_size, c->attention);
    return s;
}

static spk_status spk__analyze_record(spk_context *ctx, const void *arg) {
    (void)ctx;
    const spk__analysis_run *a = arg;
    spk__model_probe probe = {spk__analyze_layer, (void *)a};
    return spk__model_record(a->m, a->input, a->batch, a->seq, a->output, NULL, &probe);
}

/* Layer l's heads from its attention rows ([batch, heads, seq] rows of SPK__ROW_VALUES). */
static void spk__reduce_heads(const spk_model_config *c, const float *rows, int64_t batch, int64_t seq,
                              spk_head_analysis *out) {
    for (int h = 0; h < c->num_heads; h++) {
        double sinks = 0, zeros = 0, abs_sum = 0, first = 0;
        for (int64_t b = 0; b < batch; b++) {
            const float *r = rows + ((b * c->num_heads + h) * seq) * SPK__ROW_VALUES;
            double sample_first = 0;
            for (int64_t i = 0; i < seq; i++, r += SPK__ROW_VALUES)
                sample_first += r[0], zeros += r[1], abs_sum += r[2];
            first += sample_first;
            sinks += sample_first / (double)seq > SPK__SINK_EPSILON;
        }
        double queries = (double)batch * (double)seq;
        out[h] = (spk_head_analysis){sinks / (double)batch, zeros / (queries * (double)(seq + 1) / 2.0),
                                     abs_sum / queries, first / queries};
    }
}

/* A layer's kurtosis and largest |value| from its rows' moments, merged with Pebay's pairwise
 * update (Pebay 2008, "Formulas for robust, one-pass parallel computation of covariances and
 * arbitrary-order statistical moments", eq. 3.1): rows of `n` values each. */
static spk_layer_analysis spk__reduce_moments(const float *rows, int64_t count, double n) {
    double na = 0, mean = 0, m2 = 0, m3 = 0, m4 = 0, largest = 0;
    for (int64_t i = 0; i < count; i++, rows += SPK__MOMENT_VALUES) {
        double nb = n, total = na + nb, delta = rows[0] - mean, d_n = delta / total;
        double b2 = rows[1], b3 = rows[2], b4 = rows[3];
        m4 += b4 + delta * d_n * d_n * d_n * na * nb * (na * na - na * nb + nb * nb) +
              6.0 * d_n * d_n * (na * na * b2 + nb * nb * m2) + 4.0 * d_n * (na * b3 - nb * m3);
        m3 += b3 + delta * d_n * d_n * na * nb * (na - nb) + 3.0 * d_n * (na * b2 - nb * m2);
        m2 += b2 + delta * d_n * na * nb;
        mean += d_n * nb;
        na = total;
        if (rows[4] > largest) largest = rows[4];
    }
    return (spk_layer_analysis){m2 > 0 ? m4 * na / (m2 * m2) : 0.0, largest};
}

spk_status spk_model_analyze(spk_model *m, const float *input, int64_t batch, int64_t seq_len,
                             spk_head_analysis *heads, spk_layer_analysis *layers) {
    if (!m) return SPK_ERROR_INVALID_ARGUMENT;
    spk_context *ctx = m->ctx;
    const spk_model_config *c = &m->cfg;
    if (!input || !heads || !layers)
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "analyze: input, heads or layers is NULL");
    spk_status s = spk__check_forward_size(m, batch, seq_len);
    if (s != SPK_OK) return s;
    int64_t in_shape[3] = {batch, seq_len, c->embed_dim}, out_shape[3];
    int64_t rows = batch * seq_len, queries = rows * c->num_heads;
    spk__analysis_run a = {m, NULL, NULL, NULL, NULL, batch, seq_len, spk__aligned_floats(ctx, queries * SPK__ROW_VALUES),
                           spk__aligned_floats(ctx, rows * SPK__MOMENT_VALUES)};
    int64_t row_count = c->num_layers * a.row_stride, moment_count = c->num_layers * a.moment_stride;
    int out_ndim;
    spk_model_output_shape(m, batch, seq_len, &out_ndim, out_shape);
    spk_tensor *in = NULL;
    float *host = NULL;
    s = spk_tensor_create(ctx, 3, in_shape, &in);
    if (s == SPK_OK) s = spk_tensor_create(ctx, out_ndim, out_shape, &a.output);
    if (s == SPK_OK) s = spk_tensor_create(ctx, 1, &row_count, &a.rows);
    if (s == SPK_OK) s = spk_tensor_create(ctx, 1, &moment_count, &a.moments);
    if (s == SPK_OK) s = spk_tensor_upload(in, input, in->count);
    if (s == SPK_OK) s = spk__forward_tensors_prepare(m, in, a.output);
    a.input = in;
    if (s == SPK_OK) s = spk__run_sync(ctx, spk__analyze_record, &a);
    if (s == SPK_OK && !(host = spk__malloc((size_t)(row_count > moment_count ? row_count : moment_count) * sizeof *host)))
        s = spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    if (s == SPK_OK) s = spk_tensor_download(a.rows, host, row_count);
    for (int l = 0; s == SPK_OK && l < c->num_layers; l++)
        spk__reduce_heads(c, host + l * a.row_stride, batch, seq_len, heads + l * c->num_heads);
    if (s == SPK_OK) s = spk_tensor_download(a.moments, host, moment_count);
    for (int l = 0; s == SPK_OK && l < c->num_layers; l++)
        layers[l] = spk__reduce_moments(host + l * a.moment_stride, rows, (double)c->hidden_size);
    free(host);
    spk_tensor_destroy(in);
    spk_tensor_destroy(a.output);
    spk_tensor_destroy(a.rows);
    spk_tensor_destroy(a.moments);
    return s;
}
