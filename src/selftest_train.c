/* The self-test's training lines: a small model's gradients through the training step's own
 * kernels (the kept gelu', dropout's masks applied by the layer norm backward, every backward
 * pass) against central differences of the float64 reference, and the optimizer's update against
 * its float64 formula from the same gradients. */
#include "selftest.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model.h"
#include "reference.h"

enum { ST_BATCH = 2, ST_SEQ = 5, ST_EMBED = 6, ST_LAYERS = 2, ST_TENSORS = 2 + 12 * ST_LAYERS + 2 };

/* Whether the line still runs: nothing failed, nothing fatal. */
static bool spk__st_going(const spk__selftest *st) {
    return st->r.outcome == SPK_SELFTEST_PASS && st->fatal == SPK_OK;
}

/* A model of ST_LAYERS blocks with random parameters, their host copies in `values` (in
 * spk__weights_list's order), and the float64 reference over those copies. */
typedef struct spk__st_train_model {
    spk_model *m;
    spk_tensor *params[ST_TENSORS];
    float *values[ST_TENSORS];
    uint32_t count;
    int64_t total, largest; /* elements of all the parameters, of the largest tensor */
    spk__ref_layer layers[ST_LAYERS];
    spk__ref_model ref;
} spk__st_train_model;

static bool spk__st_train_model_make(spk__selftest *st, spk__st_buffers *b, spk_output_mode mode,
                                     spk__st_train_model *t) {
    spk_model_config c = spk_model_config_default(ST_EMBED);
    c.hidden_size = 8, c.num_heads = 2, c.num_layers = ST_LAYERS, c.window_size = ST_SEQ, c.output_mode = mode;
    *t = (spk__st_train_model){0};
    if (!spk__st_ran(st, spk_model_create(st->ctx, &c, &t->m), "model")) return false;
    t->count = spk__weights_list(&t->m->w, ST_LAYERS, t->params);
    for (uint32_t i = 0; i < t->count; i++) {
        int64_t n = t->params[i]->count;
        t->total += n;
        if (n > t->largest) t->largest = n;
    }
    float *all = spk__st_alloc(st, b, t->total, sizeof *all);
    if (!all) return false;
    for (uint32_t i = 0; i < t->count; i++) {
        spk_tensor *p = t->params[i];
        t->values[i] = all, all += p->count;
        /* Kernels near Glorot's scale; norm gains around 1 and biases away from 0, so that every
         * gradient matters. */
        spk__st_random(st, t->values[i], p->count, p->ndim == 2 ? 0.4f : 0.2f);
        for (int64_t j = 0; p->ndim == 1 && j < p->count; j++) t->values[i][j] += j % 2 ? 1.0f : 0.0f;
        if (!spk__st_ran(st, spk_tensor_upload(p, t->values[i], p->count), "parameters")) return false;
    }
    /* The host copies in the reference's layout (spk__weights_list: projection, 12 per block, final norm). */
    float **v = t->values;
    t->ref = (spk__ref_model){.cfg = c, .in_kernel = v[0], .in_bias = v[1], .layers = t->layers,
                              .final_gamma = v[2 + 12 * ST_LAYERS], .final_beta = v[3 + 12 * ST_LAYERS]};
    for (int l = 0; l < ST_LAYERS; l++) {
        float **p = v + 2 + 12 * l;
        t->layers[l] = (spk__ref_layer){p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11]};
    }
    return true;
}

/* The mean squared error over every output, in float64. */
static double spk__st_ref_mse(const spk__ref_model *r, const float *x, const float *target, int64_t n, double *y) {
    if (!spk__ref_model_forward(r, x, ST_BATCH, ST_SEQ, y)) return NAN;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (y[i] - target[i]) * (y[i] - target[i]);
    return sum / (double)n;
}

/* Each tensor's gradient at 4 elements against central differences of the float64 loss: max
 * |difference| over max(|gradient|) of the tensor. */
static void spk__st_train_check(spk__selftest *st, spk__st_train_model *t, const float *x, const float *target,
                                const char *text) {
    int ndim;
    int64_t shape[3], n = spk_model_output_shape(t->m, ST_BATCH, ST_SEQ, &ndim, shape);
    spk__st_buffers b = {0};
    double *y = spk__st_alloc(st, &b, n, sizeof *y);
    float *g = spk__st_alloc(st, &b, t->largest, sizeof *g);
    spk_tensor *grads[ST_TENSORS];
    spk__weights_list(&t->m->train->grad, ST_LAYERS, grads);
    for (uint32_t i = 0; g && i < t->count && spk__st_going(st); i++) {
        int64_t count = t->params[i]->count;
        if (!spk__st_ran(st, spk_tensor_download(grads[i], g, count), text)) break;
        double scale = 0, err = 0;
        for (int64_t j = 0; j < count; j++) scale = fmax(scale, fabs(g[j]));
        const int64_t samples[4] = {0, count / 3, (2 * count) / 3, count - 1};
        for (int k = 0; k < 4; k++) {
            float *v = &t->values[i][samples[k]], saved = *v, up = saved + 1e-3f, down = saved - 1e-3f;
            *v = up;
            double l_up = spk__st_ref_mse(&t->ref, x, target, n, y);
            *v = down;
            double l_down = spk__st_ref_mse(&t->ref, x, target, n, y);
            *v = saved;
            double fd = (l_up - l_down) / ((double)up - (double)down);
            err = fmax(err, fabs(fd - g[samples[k]])), scale = fmax(scale, fabs(fd));
        }
        err /= scale > 0 ? scale : 1;
        if (!(err <= st->r.max_error)) st->r.max_error = err;
        if (!(err <= st->r.bound)) spk__st_fail(st, "%s: tensor %u: error %.3g exceeds %.0e", text, i, err, st->r.bound);
    }
    spk__st_shape(st, text);
    spk__st_free(&b);
}

/* The first AdamW step and an SGD step (each with clipping at half the gradients' norm) against
 * their float64 formulas from the gradients the model holds, relative to the larger of the weight
 * before and after. */
static void spk__st_train_optimizer(spk__selftest *st, spk__st_train_model *t) {
    spk__st_buffers b = {0};
    float *g[ST_TENSORS], *after = spk__st_alloc(st, &b, t->largest, sizeof *after);
    float *all = spk__st_alloc(st, &b, t->total, sizeof *all);
    spk_tensor *grads[ST_TENSORS];
    spk__weights_list(&t->m->train->grad, ST_LAYERS, grads);
    double sumsq = 0;
    for (uint32_t i = 0; all && i < t->count; i++) {
        g[i] = all, all += grads[i]->count;
        if (!spk__st_ran(st, spk_tensor_download(grads[i], g[i], grads[i]->count), "gradients")) break;
        for (int64_t j = 0; j < grads[i]->count; j++) sumsq += (double)g[i][j] * g[i][j];
    }
    for (int algo = 0; algo < 2 && after && spk__st_going(st); algo++) {
        spk_optimizer_desc opt = spk_optimizer_defaults(algo ? SPK_OPTIMIZER_SGD : SPK_OPTIMIZER_ADAMW);
        opt.lr = 0.05f, opt.weight_decay = 0.1f, opt.clip_norm = 0.5f * (float)sqrt(sumsq);
        double coef = fmin(1.0, opt.clip_norm / (sqrt(sumsq) + 1e-6));
        const char *text = algo ? "SGD" : "AdamW";
        if (!spk__st_ran(st, spk_model_step(t->m, &opt), text)) break;
        for (uint32_t i = 0; i < t->count && spk__st_going(st); i++) {
            int64_t count = t->params[i]->count;
            if (!spk__st_ran(st, spk_tensor_download(t->params[i], after, count), text)) break;
            double err = 0;
            for (int64_t j = 0; j < count; j++) {
                double w = t->values[i][j], want = spk__ref_optimizer_first_step(&opt, w, g[i][j] * coef);
                /* relative to the operands: w - step cancels where the step is about w */
                err = fmax(err, fabs(after[j] - want) / fmax(fmax(fabs(want), fabs(w)), 1e-3));
                t->values[i][j] = after[j]; /* the next step starts here */
            }
            if (!(err <= st->r.max_error)) st->r.max_error = err;
            if (!(err <= st->r.bound)) spk__st_fail(st, "%s: tensor %u: error %.3g exceeds %.0e", text, i, err, st->r.bound);
        }
        spk__st_shape(st, text);
    }
    spk__st_free(&b);
}

void spk__st_training(spk__selftest *st) {
    if (!spk__st_wanted(st, "train")) return;
    float x[ST_BATCH * ST_SEQ * ST_EMBED], target[ST_BATCH * ST_SEQ * 8];
    spk__st_random(st, x, SPK__ARRAY_LEN(x), 1.0f);
    spk__st_random(st, target, SPK__ARRAY_LEN(target), 1.0f);
    spk_optimizer_desc sgd = spk_optimizer_defaults(SPK_OPTIMIZER_SGD);
    static const char *modes[] = {"last", "all"};
    spk__st_begin(st, "train", 1e-4,
                  "model gradients with dropout 0.5 (training forward, mse, backward), float64 central differences");
    st->r.used = true;
    spk__st_train_model t[2] = {0};
    spk__st_buffers b[2] = {0};
    for (int mode = 0; mode < 2 && spk__st_going(st); mode++) {
        /* The masks of step 0: the training step's phases without its optimizer (SPEC.md 6). */
        if (!spk__st_train_model_make(st, &b[mode], (spk_output_mode)mode, &t[mode]) ||
            !spk__st_ran(st, spk_model_set_dropout(t[mode].m, 0.5f, st->seed), modes[mode]) ||
            !spk__st_ran(st, spk__train_phases(t[mode].m, x, ST_BATCH, ST_SEQ, SPK_LOSS_MSE, target, &sgd,
                                               SPK__PHASE_BACKWARD, NULL), modes[mode]))
            break;
        t[mode].ref.dropout = 0.5f, t[mode].ref.seed = st->seed, t[mode].ref.step = 0;
        char text[32];
        snprintf(text, sizeof text, "mode %s", modes[mode]);
        spk__st_train_check(st, &t[mode], x, target, text);
    }
    spk__st_end(st, NULL);
    bool have = t[1].m && spk__st_going(st);
    if (st->fatal == SPK_OK) {
        spk__st_begin(st, "train", 2e-5, "optimizer: AdamW's first step, then SGD, global-norm clipping, against float64");
        st->r.used = true;
        if (have) spk__st_train_optimizer(st, &t[1]);
        spk__st_end(st, have ? NULL : "the gradients' line did not pass");
    }
    for (int mode = 0; mode < 2; mode++) spk_model_destroy(t[mode].m), spk__st_free(&b[mode]);
}
