/* softpick bench train: a training step of the default model split into its phases, beside the
 * inference forward and the FMA peak measured in the same run, and the device memory it holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "cli.h"
#include "internal.h"
#include "attention_plan.h"
#include "matmul_plan.h"
#include "model.h"
#include "softpick_plan.h"

typedef struct train_run {
    spk_model *m;
    const float *x, *t;
    int64_t batch, seq;
    const spk_optimizer_desc *opt;
    spk__train_phase upto;
    bool inference;
    float *y;
} train_run;

static spk_status run_phase(void *arg, uint64_t *ns) {
    train_run *r = arg;
    spk_status s = r->inference ? spk_model_forward(r->m, r->x, r->batch, r->seq, r->y)
                                : spk__train_phases(r->m, r->x, r->batch, r->seq, SPK_LOSS_CROSS_ENTROPY, r->t, r->opt,
                                                    r->upto, NULL);
    *ns = spk_context_last_gpu_time_ns(r->m->ctx);
    return s;
}

/* Dense and attention FLOPs of one forward (as bench model counts them), with the head. */
static double forward_flops(const spk_model_config *c, int64_t batch, int64_t seq) {
    double rows = (double)(batch * seq), h = c->hidden_size;
    double dense = 2.0 * rows * 12.0 * h * h * c->num_layers + 2.0 * (double)batch * h * c->num_outputs;
    if (c->embed_dim != c->hidden_size) dense += 2.0 * rows * c->embed_dim * h;
    return dense + 4.0 * h * (double)batch * (double)seq * (double)(seq + 1) / 2.0 * c->num_layers;
}

/* ---- attention backward: fused against unfused ------------------------------------------- */

typedef struct attention_backward_run {
    spk__attention_backward_args args;
    /* The unfused backward's tensors, heads first ([batch * heads, seq, head_dim] and
     * [batch * heads, seq, seq]): the forward's scores s and p = softpick(s), then dP = dO V^T,
     * dS = softpick'(s, dP), dQ = dS K, dK = dS^T Q, dV = P^T dO. */
    spk__attention_args forward;
    spk_tensor *q, *k, *v, *dout, *dq, *dk, *dv, *s, *p, *dp, *ds;
} attention_backward_run;

static spk_status record_fused_backward(spk_context *ctx, const void *arg) {
    return spk__record_attention_backward(ctx, &((const attention_backward_run *)arg)->args, NULL);
}

/* The scores are recomputed as a backward through stored scores would keep them from its
 * forward: the table's unfused time counts only the backward's own passes (a mask on dS is left
 * out, and the 1/sqrt(d) scale folded away: both in the unfused path's favour). */
static spk_status record_unfused_backward(spk_context *ctx, const void *arg) {
    const attention_backward_run *r = arg;
    spk_status s = spk__record_matmul_da(ctx, NULL, r->dout, r->v, NULL, false, r->dp);
    if (s == SPK_OK) s = spk__record_softpick_backward(ctx, NULL, r->s, r->dp, -1, r->ds);
    if (s == SPK_OK) s = spk__record_matmul(ctx, NULL, r->ds, r->k, NULL, r->dq);
    if (s == SPK_OK) s = spk__record_matmul_db(ctx, NULL, r->ds, r->q, false, r->dk);
    if (s == SPK_OK) s = spk__record_matmul_db(ctx, NULL, r->p, r->dout, false, r->dv);
    return s;
}

static spk_status record_unfused_forward(spk_context *ctx, const void *arg) {
    const attention_backward_run *r = arg;
    spk_status s = spk__record_attention(ctx, NULL, &r->forward, SPK__ATTENTION_SCORES, r->s->ref);
    if (s == SPK_OK) s = spk__record_softpick(ctx, NULL, r->s, -1, r->p);
    return s;
}

static spk_status record_fused_forward(spk_context *ctx, const void *arg) {
    return spk__record_attention(ctx, NULL, &((const attention_backward_run *)arg)->forward, SPK__ATTENTION_FUSED,
                                 (spk__buffer_ref){0});
}

/* Causal attention's backward at the default model's heads (4 of 64) at batch 32 x seq 60, and
 * at seq 512 and 2048: the fused kernels against the unfused path through [seq, seq] tensors. */
static int bench_attention_backward(spk_context *ctx, int repeats, const ceilings *c) {
    const int64_t hidden = 256, heads = 4, hd = hidden / heads;
    static const int64_t cases[][2] = {{32, 60}, {1, 512}, {1, 2048}};
    printf("causal softpick attention backward, %lld heads of %lld: fused (a dQ pass and a dK/dV pass, scores "
           "recomputed) against unfused (dP = dO V^T, softpick backward, three matmuls through [seq, seq] tensors); "
           "GFLOP/s count 8 * head_dim per causal query-key pair and head\n",
           (long long)heads, (long long)hd);
    printf("%-7s %-5s %11s %11s %9s %13s %9s %14s %16s %16s\n", "batch", "seq", "fused ms", "unfused ms", "speedup",
           "fused GFLOP/s", "x FMA", "unfused MiB", "rectified", "softmax");
    int rc = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases && rc == 0; i++) {
        int64_t batch = cases[i][0], seq = cases[i][1], bh = batch * heads;
        int64_t shape[3] = {batch, seq, hidden}, r_shape[3] = {batch, heads, seq};
        int64_t head_shape[3] = {bh, seq, hd}, square[3] = {bh, seq, seq};
        spk_tensor *t[9] = {0}, *hm[7] = {0}, *sq[4] = {0}; /* q k v o dout dq dk dv | r d */
        spk_status s = SPK_OK;
        for (int j = 0; j < 8 && s == SPK_OK; j++) s = spk_tensor_create(ctx, 3, shape, &t[j]);
        if (s == SPK_OK) s = spk_tensor_create(ctx, 3, r_shape, &t[8]);
        spk_tensor *d = NULL;
        if (s == SPK_OK) s = spk_tensor_create(ctx, 3, r_shape, &d);
        for (int j = 0; j < 7 && s == SPK_OK; j++) s = spk_tensor_create(ctx, 3, head_shape, &hm[j]);
        for (int j = 0; j < 4 && s == SPK_OK; j++) s = spk_tensor_create(ctx, 3, square, &sq[j]);
        int64_t n = batch * seq * hidden;
        float *host = s == SPK_OK ? malloc((size_t)n * sizeof *host) : NULL;
        if (host) {
            fill_random(host, n);
            for (int j = 0; j < 5 && s == SPK_OK; j++) s = spk_tensor_upload(t[j], host, n);
            for (int j = 0; j < 4 && s == SPK_OK; j++) s = spk_tensor_upload(hm[j], host, n);
        }
        uint32_t h = (uint32_t)hidden;
        attention_backward_run r = {0};
        r.args = (spk__attention_backward_args){
            .q = {t[0]->ref, h, 0, t[0]->views, SPK_DTYPE_F32}, .k = {t[1]->ref, h, 0, t[1]->views, SPK_DTYPE_F32}, .v = {t[2]->ref, h, 0, t[2]->views, SPK_DTYPE_F32},
            .o = {t[3]->ref, h, 0, NULL, SPK_DTYPE_F32},        .dout = {t[4]->ref, h, 0, t[4]->views, SPK_DTYPE_F32},
            .dq = {t[5]->ref, h, 0, NULL, SPK_DTYPE_F32},       .dk = {t[6]->ref, h, 0, NULL, SPK_DTYPE_F32},          .dv = {t[7]->ref, h, 0, NULL, SPK_DTYPE_F32},
            .r = t[8]->ref, .d = d->ref, .batch = (uint32_t)batch, .seq = (uint32_t)seq, .heads = (uint32_t)heads,
            .head_dim = (uint32_t)hd, .causal = true};
        r.forward = (spk__attention_args){r.args.q, r.args.k, r.args.v, r.args.o, (uint32_t)batch, (uint32_t)seq,
                                          (uint32_t)heads, (uint32_t)hd, true, t[8]->ref, SPK_NORMALIZER_SOFTPICK};
        r.q = hm[0], r.k = hm[1], r.v = hm[2], r.dout = hm[3], r.dq = hm[4], r.dk = hm[5], r.dv = hm[6];
        r.s = sq[0], r.p = sq[1], r.dp = sq[2], r.ds = sq[3];
        /* Each path's forward once: the fused one keeps o and r, the unfused one s and p. */
        if (s == SPK_OK && host) s = spk__run_sync(ctx, record_fused_forward, &r);
        if (s == SPK_OK && host) s = spk__run_sync(ctx, record_unfused_forward, &r);
        recorded_run f = {ctx, record_fused_backward, &r}, u = {ctx, record_unfused_backward, &r};
        uint64_t fused = s == SPK_OK && host ? median_ns(run_recorded, &f, repeats) : 0;
        uint64_t unfused = fused ? median_ns(run_recorded, &u, repeats) : 0;
        uint64_t other[2] = {0, 0}; /* the fused backward with rectified softpick and softmax */
        for (int nf = 0; nf < 2 && unfused; nf++) {
            r.forward.norm = r.args.norm = (spk_normalizer)(nf + 1);
            if (spk__run_sync(ctx, record_fused_forward, &r) == SPK_OK) other[nf] = median_ns(run_recorded, &f, repeats);
        }
        r.forward.norm = r.args.norm = SPK_NORMALIZER_SOFTPICK;
        if (!fused || !unfused || !other[0] || !other[1]) {
            rc = cli_fail("attention backward run failed: %s", spk_context_last_error(ctx));
        } else {
            double flops = 8.0 * (double)hidden * (double)batch * (double)seq * (double)(seq + 1) / 2.0;
            double gflops = flops / (double)fused;
            printf("%-7lld %-5lld %11.3f %11.3f %8.2fx %13.2f %8.2fx %14.1f %9.3f %5.2fx %9.3f %5.2fx\n", (long long)batch,
                   (long long)seq, fused / 1e6, unfused / 1e6, (double)unfused / (double)fused, gflops,
                   c->fma_gflops > 0 ? gflops / c->fma_gflops : 0, 4.0 * (double)(bh * seq * seq) * 4 / (1 << 20),
                   other[0] / 1e6, (double)other[0] / (double)fused, other[1] / 1e6, (double)other[1] / (double)fused);
        }
        free(host);
        for (int j = 0; j < 9; j++) spk_tensor_destroy(t[j]);
        for (int j = 0; j < 7; j++) spk_tensor_destroy(hm[j]);
        for (int j = 0; j < 4; j++) spk_tensor_destroy(sq[j]);
        spk_tensor_destroy(d);
    }
    return rc;
}

/* ---- the training step ------------------------------------------------------------------- */

/* The whole step of a fresh model of `cfg` (dropout 0.1, seed 1), as `r` runs it: the median GPU
 * ns, 0 on failure. */
static uint64_t bench_step(spk_context *ctx, int repeats, const spk_model_config *cfg, train_run r) {
    spk_status s = spk_model_create(ctx, cfg, &r.m);
    if (s == SPK_OK) s = spk_model_init_random(r.m, 1);
    if (s == SPK_OK) s = spk_model_set_dropout(r.m, 0.1f, 1);
    r.upto = SPK__PHASE_STEP, r.inference = false;
    uint64_t ns = s == SPK_OK ? median_ns(run_phase, &r, repeats) : 0;
    spk_model_destroy(r.m);
    return ns;
}

/* The whole step with the other normalizers, beside softpick's. */
static int bench_train_normalizers(spk_context *ctx, int repeats, const spk_model_config *cfg, train_run r,
                                   double softpick_ns) {
    for (int n = SPK_NORMALIZER_RECTIFIED_SOFTPICK; n <= SPK_NORMALIZER_SOFTMAX; n++) {
        spk_model_config c = *cfg;
        c.attention = (spk_normalizer)n;
        uint64_t ns = bench_step(ctx, repeats, &c, r);
        if (!ns) return cli_fail("bench train (%s) failed: %s", spk_normalizer_name(c.attention), spk_context_last_error(ctx));
        char label[64];
        snprintf(label, sizeof label, "step, %s", spk_normalizer_name(c.attention));
        printf("%-30s %10.2f  %.2fx softpick's step\n", label, (double)ns / 1e6, (double)ns / softpick_ns);
    }
    return 0;
}

/* The whole step again on a model recorded with the context's tuned choices. */
static int bench_train_tuned(spk_context *ctx, int repeats, const spk_model_config *cfg, train_run r, double rules_ns) {
    uint32_t entries;
    const char *path = spk_context_tuning_path(ctx, &entries);
    uint64_t tuned = bench_step(ctx, repeats, cfg, r);
    if (!tuned) return cli_fail("bench train (tuned) failed: %s", spk_context_last_error(ctx));
    printf("%-30s %10.2f  %.2fx the rules' step (%u choices from %s)\n", "step, tuned", (double)tuned / 1e6,
           rules_ns / (double)tuned, entries, path[0] ? path : "no tuning file");
    return 0;
}

int bench_train(spk_context *ctx, int repeats, bool tuned) {
    ceilings c;
    if (measure_ceilings(ctx, repeats, &c)) return 1;
    /* The table below is the rules': the tuned choices are hidden while its models record. */
    uint32_t tuned_count = ctx->tuned_count;
    ctx->tuned_count = 0;
    spk_model_config cfg = spk_model_config_default(256);
    cfg.num_outputs = 4;
    const int64_t batch = 32, seq = cfg.window_size;
    spk_model *m = NULL;
    spk_status s = spk_model_create(ctx, &cfg, &m);
    if (s == SPK_OK) s = spk_model_init_random(m, 1);
    if (s == SPK_OK) s = spk_model_set_dropout(m, 0.1f, 1);
    int64_t n_in = batch * seq * cfg.embed_dim;
    float *x = malloc((size_t)n_in * sizeof *x), *t = malloc((size_t)batch * sizeof *t), *y = malloc(4 * (size_t)batch * sizeof *y);
    if (s == SPK_OK && (!x || !t || !y)) s = SPK_ERROR_OUT_OF_HOST_MEMORY;
    if (s == SPK_OK) {
        fill_random(x, n_in);
        for (int64_t i = 0; i < batch; i++) t[i] = (float)(i % 4);
    }
    spk_optimizer_desc opt = spk_optimizer_defaults(SPK_OPTIMIZER_ADAMW);
    printf("train: embed %d, hidden %d, %d heads, %d layers, seq %lld, a 4-class head, batch %lld, cross-entropy, "
           "AdamW, dropout 0.1; GPU time of each phase as the difference of one-submit runs that stop after it\n",
           cfg.embed_dim, cfg.hidden_size, cfg.num_heads, cfg.num_layers, (long long)seq, (long long)batch);
    uint64_t med[5] = {0};
    train_run r = {m, x, t, batch, seq, &opt, SPK__PHASE_FORWARD, true, y};
    if (s == SPK_OK) {
        med[4] = median_ns(run_phase, &r, repeats); /* the inference forward */
        r.inference = false;
        for (int p = SPK__PHASE_FORWARD; p <= SPK__PHASE_STEP && med[4]; p++) {
            r.upto = (spk__train_phase)p;
            med[p] = median_ns(run_phase, &r, repeats);
            if (!med[p]) break;
        }
    }
    if (s != SPK_OK || !med[4] || !med[SPK__PHASE_STEP]) {
        int rc = cli_fail("bench train failed: %s", spk_context_last_error(ctx));
        free(x), free(t), free(y);
        spk_model_destroy(m);
        ctx->tuned_count = tuned_count;
        return rc;
    }
    double f = forward_flops(&cfg, batch, seq);
    static const char *names[] = {"forward (keeping activations)", "loss", "backward", "zero + optimizer"};
    printf("%-30s %10s %8s\n", "phase", "GPU ms", "share");
    double step = (double)med[SPK__PHASE_STEP];
    for (int p = 0; p < 4; p++) {
        /* A phase shorter than the runs' noise can come out negative: shown as 0. */
        double ms = p == 0 ? (double)med[0] : med[p] > med[p - 1] ? (double)(med[p] - med[p - 1]) : 0.0;
        printf("%-30s %10.2f %7.1f%%\n", names[p], ms / 1e6, 100.0 * ms / step);
    }
    double step_gflops = 3.0 * f / step, fwd_gflops = f / (double)med[4];
    printf("%-30s %10.2f\n", "step", step / 1e6);
    printf("step: %.1f sequences/s, effective %.2f GFLOP/s (3x the forward's %.3f GFLOP), %.2fx the FMA peak; "
           "the inference forward: %.2f ms, %.2f GFLOP/s, %.2fx the FMA peak; step / forward efficiency %.2f\n",
           (double)batch * 1e9 / step, step_gflops, f / 1e9, c.fma_gflops > 0 ? step_gflops / c.fma_gflops : 0,
           (double)med[4] / 1e6, fwd_gflops, c.fma_gflops > 0 ? fwd_gflops / c.fma_gflops : 0,
           step_gflops / fwd_gflops);
    int rc = bench_train_normalizers(ctx, repeats, &cfg, r, step);
    /* Kernel time by shader over one profiled step. */
    enum { MAX = 2048, SHADERS = 24 };
    uint64_t *times = calloc(MAX, sizeof *times);
    const char **shaders = calloc(MAX, sizeof *shaders), *names_by[SHADERS] = {0};
    double by[SHADERS] = {0}, total = 0;
    m->profile = true;
    r.upto = SPK__PHASE_STEP;
    uint64_t ns;
    if (times && shaders && run_phase(&r, &ns) == SPK_OK) {
        uint32_t n = spk__train_dispatch_times(m, times, shaders, MAX);
        for (uint32_t d = 0; d < n; d++) {
            int k = 0;
            while (k < SHADERS - 1 && names_by[k] && strcmp(names_by[k], shaders[d]) != 0) k++;
            names_by[k] = names_by[k] ? names_by[k] : shaders[d];
            by[k] += (double)times[d], total += (double)times[d];
        }
        printf("kernel time of one step by shader (%u dispatches, %.1f ms):", n, total / 1e6);
        for (int k = 0; k < SHADERS && names_by[k]; k++) printf(" %s %.1f%%", names_by[k], 100.0 * by[k] / total);
        printf("\n");
    }
    free(times), free(shaders);
    uint64_t allocated, used;
    spk__memory_in_use(ctx, &allocated, &used);
    printf("device memory held by the library: %.1f MiB allocated, %.1f MiB in use (weights, gradients, moments, "
           "kept activations for %lld positions)\n",
           (double)allocated / (1 << 20), (double)used / (1 << 20), (long long)(batch * seq));
    spk_model_destroy(m);
    if (rc == 0) rc = bench_attention_backward(ctx, repeats, &c);
    ctx->tuned_count = tuned_count;
    if (rc == 0 && tuned) rc = bench_train_tuned(ctx, repeats, &cfg, r, step);
    free(x), free(t), free(y);
    return rc;
}
