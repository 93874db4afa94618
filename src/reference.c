/* float64 references (reference.h): plain loops, written for clarity, not speed. */
#include "reference.h"
#include "fault.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double spk__ref_error(const float *y, const double *ref, int64_t n) {
    double max_err = 0, max_ref = 0;
    bool nan = false;
    for (int64_t i = 0; i < n; i++) {
        double err = fabs((double)y[i] - ref[i]);
        nan = nan || isnan(err);
        if (err > max_err) max_err = err;
        if (fabs(ref[i]) > max_ref) max_ref = fabs(ref[i]);
    }
    return nan ? NAN : max_err / (max_ref > 0 ? max_ref : 1.0);
}

void spk__ref_softpick(const float *x, int64_t outer, int64_t n, int64_t inner, double *y) {
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const float *xs = x + o * n * inner + i;
            double sum = 0;
            for (int64_t j = 0; j < n; j++) sum += fabs((double)xs[j * inner]);
            for (int64_t j = 0; j < n; j++) y[o * n * inner + j * inner + i] = xs[j * inner] / (1.0 + sum);
        }
}

void spk__ref_random(uint64_t *seed, float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) {
        uint64_t z = (*seed += 0x9E3779B97F4A7C15ull); /* splitmix64 */
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        x[i] = (float)(((double)((z ^ (z >> 31)) >> 11) * 0x1p-53 * 2.0 - 1.0) * scale);
    }
}

double spk__ref_gelu_grad(double x) { return 0.5 * (1.0 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) * 0.3989422804014327; /* phi(x) */ }

double spk__ref_gelu(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }

void spk__ref_matmul(const float *a, const float *b, const float *bias, bool gelu, const float *residual,
                     int64_t batch, int64_t m, int64_t n, int64_t k, bool shared_b, double *c) {
    for (int64_t p = 0; p < batch; p++) {
        const float *ap = a + p * m * k, *bp = b + (shared_b ? 0 : p * k * n);
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double acc = bias ? bias[j] : 0.0;
                for (int64_t l = 0; l < k; l++) acc += (double)ap[i * k + l] * bp[l * n + j];
                if (gelu) acc = spk__ref_gelu(acc);
                int64_t at = (p * m + i) * n + j;
                c[at] = acc + (residual ? residual[at] : 0.0);
            }
    }
}

/* Rows held in doubles (the model's activations) are normalized by this one. */
static void spk__ref_norm64(const double *x, const float *gamma, const float *beta, int64_t rows, int64_t n,
                            double epsilon, double *y) {
    for (int64_t r = 0; r < rows; r++) {
        const double *xr = x + r * n;
        double mean = 0, var = 0;
        for (int64_t j = 0; j < n; j++) mean += xr[j];
        mean /= (double)n;
        for (int64_t j = 0; j < n; j++) var += (xr[j] - mean) * (xr[j] - mean);
        var /= (double)n;
        double inv = 1.0 / sqrt(var + epsilon);
        for (int64_t j = 0; j < n; j++) y[r * n + j] = (xr[j] - mean) * inv * gamma[j] + beta[j];
    }
}

void spk__ref_layer_norm(const float *x, const float *gamma, const float *beta, int64_t rows, int64_t n,
                         double epsilon, double *y) {
    for (int64_t i = 0; i < rows * n; i++) y[i] = x[i];
    spk__ref_norm64(y, gamma, beta, rows, n, epsilon, y);
}

double spk__ref_normalize(spk_normalizer norm, const double *s, int64_t n, double *y) {
    double m = -INFINITY, sum = 0;
    for (int64_t j = 0; j < n; j++) m = fmax(m, s[j]);
    if (norm == SPK_NORMALIZER_SOFTPICK) {
        for (int64_t j = 0; j < n; j++) sum += fabs(s[j]);
        for (int64_t j = 0; j < n; j++) y[j] = s[j] / (1.0 + sum);
        return 1.0 + sum;
    }
    /* Rectified softpick at M = max(m, 0): the same weights (no term is positive when m <= 0),
     * and e^-M stays finite. */
    double big = norm == SPK_NORMALIZER_SOFTMAX ? m : fmax(m, 0.0), em = exp(-big);
    /* e^(s - M) - e^-M as e^-M expm1(s) near s = 0, where the difference cancels */
#define SPK__TERM(x) (norm == SPK_NORMALIZER_SOFTMAX ? exp((x) - big) : fabs(x) < 0.5 ? em * expm1(x) : exp((x) - big) - em)
    for (int64_t j = 0; j < n; j++) sum += fabs(SPK__TERM(s[j]));
    if (norm == SPK_NORMALIZER_RECTIFIED_SOFTPICK) sum += 1e-6;
    for (int64_t j = 0; j < n; j++) y[j] = fmax(SPK__TERM(s[j]), 0.0) / sum;
#undef SPK__TERM
    return big + log(sum);
}

void spk__ref_dscores(spk_normalizer norm, const double *s, const double *y, const double *dy, int64_t n,
                      double stat, double *ds) {
    double dd = 0;
    for (int64_t j = 0; j < n; j++) dd += y[j] * dy[j];
    for (int64_t j = 0; j < n; j++) {
        double sg = s[j] > 0 ? 1.0 : s[j] < 0 ? -1.0 : 0.0;
        if (norm == SPK_NORMALIZER_SOFTPICK) ds[j] = (dy[j] - sg * dd) / stat;
        else if (norm == SPK_NORMALIZER_SOFTMAX) ds[j] = y[j] * (dy[j] - dd);
        else ds[j] = exp(s[j] - stat) * ((s[j] > 0 ? dy[j] : 0.0) - sg * dd);
    }
}

/* Attention on doubles: rows of `stride` with the heads from column `off` of each; each row's
 * statistic into `stat` ([batch, heads, seq]) when not NULL. false when out of host memory. */
static bool spk__ref_attention64(const double *q, const double *k, const double *v, int64_t stride, int64_t batch,
                                 int64_t seq, int64_t heads, int64_t hd, bool causal, spk_normalizer norm, double *out,
                                 int64_t out_stride, double *stat) {
    double *s = spk__malloc((size_t)(2 * seq) * sizeof *s), *y = s + seq;
    if (!s) return false;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 0; i < seq; i++) {
                const double *qi = q + (b * seq + i) * stride + h * hd;
                double *o = out + (b * seq + i) * out_stride + h * hd;
                int64_t n = causal ? i + 1 : seq;
                for (int64_t j = 0; j < n; j++) {
                    const double *kj = k + (b * seq + j) * stride + h * hd;
                    double dot = 0;
                    for (int64_t d = 0; d < hd; d++) dot += qi[d] * kj[d];
                    s[j] = dot / sqrt((double)hd);
                }
                double st = spk__ref_normalize(norm, s, n, y);
                if (stat) stat[(b * heads + h) * seq + i] = st;
                for (int64_t d = 0; d < hd; d++) o[d] = 0;
                for (int64_t j = 0; j < n; j++) {
                    const double *vj = v + (b * seq + j) * stride + h * hd;
                    for (int64_t d = 0; d < hd; d++) o[d] += y[j] * vj[d];
                }
            }
    free(s);
    return true;
}

bool spk__ref_attention(const float *q, const float *k, const float *v, int64_t batch, int64_t seq, int64_t heads,
                        int64_t head_dim, bool causal, spk_normalizer norm, double *out, double *stat) {
    int64_t n = batch * seq * heads * head_dim;
    double *q64 = spk__malloc((size_t)(3 * n) * sizeof *q64);
    if (!q64) return false;
    for (int64_t i = 0; i < n; i++) q64[i] = q[i], q64[n + i] = k[i], q64[2 * n + i] = v[i];
    bool ok = spk__ref_attention64(q64, q64 + n, q64 + 2 * n, heads * head_dim, batch, seq, heads, head_dim, causal,
                                   norm, out, heads * head_dim, stat);
    free(q64);
    return ok;
}

/* y = act(x W + b), x [rows, in] in doubles. */
static void spk__ref_dense(const double *x, const float *w, const float *b, int64_t rows, int64_t in, int64_t out,
                           bool gelu, double *y) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < out; j++) {
            double acc = b[j];
            for (int64_t l = 0; l < in; l++) acc += x[r * in + l] * w[l * out + j];
            if (gelu) acc = spk__ref_gelu(acc);
            y[r * out + j] = acc;
        }
}

/* murmur3's 32-bit finalizer, as shaders/dropout.glsl chains it over (seed, step, site, index). */
static uint32_t spk__ref_mix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

/* x += dropout(y) over n elements at dropout site `site`: y kept with probability 1 - rate and
 * scaled by 1 / (1 - rate) as a float32, as the device scales it. */
static void spk__ref_add_dropped(const spk__ref_model *m, uint32_t site, const double *y, int64_t n, double *x) {
    double rate = m->dropout, threshold = rate * 4294967296.0;
    uint32_t t = threshold >= 4294967295.0 ? UINT32_MAX : (uint32_t)threshold;
    double scale = (float)(1.0 / (1.0 - rate));
    uint32_t h = spk__ref_mix32((uint32_t)m->seed ^ 0x9e3779b9u);
    h = spk__ref_mix32(h ^ (uint32_t)(m->seed >> 32));
    h = spk__ref_mix32(h ^ m->step);
    h = spk__ref_mix32(h ^ (site * 0x27d4eb2fu));
    for (int64_t i = 0; i < n; i++)
        if (rate <= 0 || spk__ref_mix32(h ^ (uint32_t)i) >= t) x[i] += rate > 0 ? y[i] * scale : y[i];
}

bool spk__ref_model_forward(const spk__ref_model *m, const float *input, int64_t batch, int64_t seq, double *out) {
    int64_t h = m->cfg.hidden_size, e = m->cfg.embed_dim, rows = batch * seq, hd = h / m->cfg.num_heads;
    double *x = spk__malloc((size_t)(rows * h) * sizeof *x), *a = spk__malloc((size_t)(rows * h) * sizeof *a);
    double *qkv = spk__malloc((size_t)(rows * 3 * h) * sizeof *qkv), *f = spk__malloc((size_t)(rows * 4 * h) * sizeof *f);
    double *in = spk__malloc((size_t)(rows * e) * sizeof *in);
    bool ok = x && a && qkv && f && in;
    if (ok) {
        for (int64_t i = 0; i < rows * e; i++) in[i] = input[i];
        if (m->in_kernel) spk__ref_dense(in, m->in_kernel, m->in_bias, rows, e, h, false, x);
        else memcpy(x, in, (size_t)(rows * h) * sizeof *x);
        for (int l = 0; l < m->cfg.num_layers; l++) {
            const spk__ref_layer *L = &m->layers[l];
            spk__ref_norm64(x, L->attn_gamma, L->attn_beta, rows, h, 1e-5, a);
            spk__ref_dense(a, L->qkv_kernel, L->qkv_bias, rows, h, 3 * h, false, qkv);
            ok = spk__ref_attention64(qkv, qkv + h, qkv + 2 * h, 3 * h, batch, seq, m->cfg.num_heads, hd, true,
                                      m->cfg.attention, a, h, NULL);
            if (!ok) break;
            /* x += dropout(dense(o, out)); x += dropout(dense(gelu(dense(norm(x), up)), down)) */
            spk__ref_dense(a, L->out_kernel, L->out_bias, rows, h, h, false, f);
            spk__ref_add_dropped(m, 2 * (uint32_t)l, f, rows * h, x);
            spk__ref_norm64(x, L->ffn_gamma, L->ffn_beta, rows, h, 1e-5, a);
            spk__ref_dense(a, L->up_kernel, L->up_bias, rows, h, 4 * h, true, f);
            spk__ref_dense(f, L->down_kernel, L->down_bias, rows, 4 * h, h, false, a);
            spk__ref_add_dropped(m, 2 * (uint32_t)l + 1, a, rows * h, x);
            if (m->probe) m->probe(m->probe_user, l, qkv, x);
        }
    }
    if (ok) {
        spk__ref_norm64(x, m->final_gamma, m->final_beta, rows, h, 1e-5, a);
        /* The output positions (pooled into x), then the head if there is one. */
        double *pooled = m->head_kernel ? x : out;
        for (int64_t b = 0; b < batch; b++)
            for (int64_t j = 0; j < h; j++) {
                if (m->cfg.output_mode == SPK_OUTPUT_ALL) {
                    for (int64_t t = 0; t < seq; t++) pooled[(b * seq + t) * h + j] = a[(b * seq + t) * h + j];
                } else if (m->cfg.output_mode == SPK_OUTPUT_MEAN) {
                    double sum = 0;
                    for (int64_t t = 0; t < seq; t++) sum += a[(b * seq + t) * h + j];
                    pooled[b * h + j] = sum / (double)seq;
                } else {
                    pooled[b * h + j] = a[(b * seq + seq - 1) * h + j];
                }
            }
        int64_t out_rows = m->cfg.output_mode == SPK_OUTPUT_ALL ? rows : batch;
        if (m->head_kernel)
            spk__ref_dense(pooled, m->head_kernel, m->head_bias, out_rows, h, m->cfg.num_outputs, false, out);
    }
    free(x), free(a), free(qkv), free(f), free(in);
    return ok;
}

/* ---- backward ------------------------------------------------------------------------------ */

void spk__ref_softpick_backward(const float *x, const float *dy, int64_t outer, int64_t n, int64_t inner, double *dx) {
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const int64_t base = o * n * inner + i;
            double s = 0, t = 0;
            for (int64_t j = 0; j < n; j++) s += fabs((double)x[base + j * inner]);
            for (int64_t j = 0; j < n; j++) t += (double)dy[base + j * inner] * x[base + j * inner] / (1 + s);
            for (int64_t j = 0; j < n; j++) {
                double xv = x[base + j * inner];
                dx[base + j * inner] = ((double)dy[base + j * inner] - (xv > 0 ? t : xv < 0 ? -t : 0)) / (1 + s);
            }
        }
}

void spk__ref_matmul_grads(const float *a, const float *b, const float *dc, int64_t batch, int64_t m, int64_t n,
                           int64_t k, bool shared_b, double *da, double *db, double *dbias) {
    int64_t nb = shared_b ? 1 : batch;
    for (int64_t i = 0; i < batch * m * k; i++) da[i] = 0;
    for (int64_t i = 0; i < nb * k * n; i++) db[i] = 0;
    for (int64_t j = 0; j < n; j++) dbias[j] = 0;
    for (int64_t q = 0; q < batch; q++) {
        const float *bb = b + (shared_b ? 0 : q * k * n);
        double *dbb = db + (shared_b ? 0 : q * k * n);
        for (int64_t i = 0; i < m; i++) {
            const float *g = dc + (q * m + i) * n;
            for (int64_t p = 0; p < k; p++) {
                double acc = 0, ai = a[(q * m + i) * k + p];
                for (int64_t j = 0; j < n; j++) acc += (double)g[j] * bb[p * n + j], dbb[p * n + j] += ai * g[j];
                da[(q * m + i) * k + p] = acc;
            }
            for (int64_t j = 0; j < n; j++) dbias[j] += g[j];
        }
    }
}

void spk__ref_layer_norm_backward(const float *x, const float *gamma, const float *dy, int64_t rows, int64_t n,
                                  double epsilon, double *dx, double *dgamma, double *dbeta) {
    for (int64_t i = 0; i < n; i++) dgamma[i] = dbeta[i] = 0;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n, *g = dy + r * n;
        double mean = 0, var = 0, mg = 0, mgx = 0;
        for (int64_t i = 0; i < n; i++) mean += xr[i];
        mean /= (double)n;
        for (int64_t i = 0; i < n; i++) var += (xr[i] - mean) * (xr[i] - mean);
        double rstd = 1 / sqrt(var / (double)n + epsilon);
        for (int64_t i = 0; i < n; i++) {
            double xhat = (xr[i] - mean) * rstd;
            mg += (double)g[i] * gamma[i], mgx += (double)g[i] * gamma[i] * xhat;
            dgamma[i] += g[i] * xhat, dbeta[i] += g[i];
        }
        mg /= (double)n, mgx /= (double)n;
        for (int64_t i = 0; i < n; i++)
            dx[r * n + i] = rstd * ((double)g[i] * gamma[i] - mg - (xr[i] - mean) * rstd * mgx);
    }
}

bool spk__ref_attention_backward(const float *q, const float *k, const float *v, const float *dout, int64_t batch,
                                 int64_t seq, int64_t heads, int64_t hd, bool causal, spk_normalizer norm, double *dq,
                                 double *dk, double *dv) {
    int64_t hidden = heads * hd, n = batch * seq * hidden;
    double *s = spk__malloc((size_t)(4 * seq) * sizeof *s);
    if (!s) return false;
    double *y = s + seq, *dy = y + seq, *ds = dy + seq, scale = 1 / sqrt((double)hd);
    for (int64_t i = 0; i < n; i++) dq[i] = dk[i] = dv[i] = 0;
    for (int64_t bt = 0; bt < batch; bt++)
        for (int64_t h = 0; h < heads; h++) {
            const int64_t c = bt * seq * hidden + h * hd;
            for (int64_t i = 0; i < seq; i++) {
                int64_t live = causal ? i + 1 : seq;
                for (int64_t j = 0; j < live; j++) {
                    double dot = 0, dp = 0;
                    for (int64_t d = 0; d < hd; d++) {
                        dot += (double)q[c + i * hidden + d] * k[c + j * hidden + d];
                        dp += (double)dout[c + i * hidden + d] * v[c + j * hidden + d];
                    }
                    s[j] = dot * scale, dy[j] = dp;
                }
                double stat = spk__ref_normalize(norm, s, live, y);
                spk__ref_dscores(norm, s, y, dy, live, stat, ds);
                for (int64_t j = 0; j < live; j++)
                    for (int64_t d = 0; d < hd; d++) {
                        dq[c + i * hidden + d] += ds[j] * k[c + j * hidden + d] * scale;
                        dk[c + j * hidden + d] += ds[j] * q[c + i * hidden + d] * scale;
                        dv[c + j * hidden + d] += y[j] * dout[c + i * hidden + d];
                    }
            }
        }
    free(s);
    return true;
}

double spk__ref_optimizer_first_step(const spk_optimizer_desc *o, double w, double g) {
    if (o->kind == SPK_OPTIMIZER_SGD) return w - o->lr * (g + o->weight_decay * w);
    double m1 = (1 - o->beta1) * g, v1 = (1 - o->beta2) * g * g;
    return w * (1 - (double)o->lr * o->weight_decay) - o->lr / (1 - o->beta1) * m1 / (sqrt(v1) / sqrt(1 - o->beta2) + o->eps);
}
