/* softpick bench train: a training step of the default model split into its phases, beside the
 * inference forward and the FMA peak measured in the same run, and the device memory it holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "cli.h"
#include "internal.h"
#include "model.h"

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

int bench_train(spk_context *ctx, int repeats) {
    ceilings c;
    if (measure_ceilings(ctx, repeats, &c)) return 1;
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
    free(x), free(t), free(y);
    spk_model_destroy(m);
    return 0;
}
