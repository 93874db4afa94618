/* spk_tune: finds the problems a model's recordings use, measures every candidate of each
 * problem's kernel family on this device within a time budget, and keeps the fastest that matched
 * the float64 reference.
 *
 * Per problem the rule's candidate runs first, then the others of its kind, then the other kinds.
 * A candidate is run once with its outputs poisoned (NaN) and compared with the reference: a wrong
 * one is excluded; a right one is timed `repeats` times on GPU timestamps and its median kept. The
 * first candidate of a kind that runs 4x slower than the best so far prunes the rest of its kind
 * (on a CPU driver the shared-memory tiles are 100x off; on a GPU the shuffle kernel may be). A
 * winner replaces the rule only when 3% faster and faster by more than the rule's own spread over its
 * repeats: tuning never trades the rule for noise. */
#include "tune_cases.h"
#include "fault.h"
#include "tune.h"
#include "reference.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPK__TUNE_MARGIN 0.97 /* a winner must take at most this share of the rule's time */
#define SPK__TUNE_PRUNE 4.0   /* a kind whose first candidate is this much slower is pruned */

uint64_t spk__tune_candidates_checksum(const spk_context *ctx) {
    uint32_t list[SPK__TUNE_MAX_CANDIDATES][SPK__TUNE_PARAMS];
    uint64_t h = spk__spirv_hash();
    for (int f = 0; f < SPK__TUNE_FAMILY_COUNT; f++) {
        uint32_t n = spk__tune_families[f]->candidates(ctx, list, SPK__TUNE_MAX_CANDIDATES);
        h = spk__fnv1a_more(h, (const unsigned char *)list, n * sizeof list[0]);
        h = spk__fnv1a_more(h, (const unsigned char *)&n, sizeof n);
    }
    return h;
}

/* ---- finding the problems ------------------------------------------------------------------ */

/* The softpick op on the model's attention scores, [batch, heads, seq, seq], along the keys
 * (rows) and the queries (columns), forward and backward: the unfused path's problems. */
static spk_status spk__tune_collect_softpick(spk_context *ctx, int64_t batch, const spk_tune_desc *d) {
    int64_t seq = d->config.window_size, shape[4] = {batch, d->config.num_heads, seq, seq};
    spk_tensor *x = NULL, *dy = NULL, *y = NULL;
    spk_status s = spk_tensor_create(ctx, 4, shape, &x);
    if (s == SPK_OK) s = spk_tensor_create(ctx, 4, shape, &dy);
    if (s == SPK_OK) s = spk_tensor_create(ctx, 4, shape, &y);
    for (int axis = 3; axis >= 2 && s == SPK_OK; axis--) {
        s = spk_softpick(ctx, x, axis, y);
        if (s == SPK_OK && !d->inference_only) s = spk_softpick_backward(ctx, x, dy, axis, y);
    }
    spk_tensor_destroy(x), spk_tensor_destroy(dy), spk_tensor_destroy(y);
    return s;
}

/* Runs the model's forward at each batch (and a training step) with the context collecting every
 * problem its recordings look up. */
static spk_status spk__tune_collect_model(spk_context *ctx, const spk_tune_desc *d, spk__tune_collect *col) {
    spk_model *m = NULL;
    spk_status s = spk_model_create(ctx, &d->config, &m);
    if (s == SPK_OK) s = spk_model_init_random(m, 1);
    ctx->collect = col;
    for (uint32_t i = 0; s == SPK_OK && i < d->batch_count; i++) {
        int64_t batch = d->batches[i], seq = d->config.window_size, shape[3];
        int ndim;
        int64_t out_count = spk_model_output_shape(m, batch, seq, &ndim, shape);
        size_t in_count = (size_t)(batch * seq * d->config.embed_dim);
        float *x = spk__calloc(in_count ? in_count : 1, sizeof *x), *y = spk__calloc((size_t)out_count + 1, sizeof *y);
        if (!x || !y) s = spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
        col->forward = i < 64 ? 1ull << i : 0;
        if (s == SPK_OK) s = spk_model_forward(m, x, batch, seq, y);
        col->forward = 0;
        spk_optimizer_desc opt = spk_optimizer_defaults(SPK_OPTIMIZER_ADAMW);
        if (s == SPK_OK && !d->inference_only) s = spk_model_train_step(m, x, batch, seq, SPK_LOSS_MSE, y, &opt, NULL);
        if (s == SPK_OK) s = spk__tune_collect_softpick(ctx, batch, d);
        free(x), free(y);
    }
    ctx->collect = NULL;
    spk_model_destroy(m);
    if (s == SPK_OK && col->failed) s = spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    return s;
}

/* A rough count of a problem's work, to share the budget. */
static double spk__tune_work(const spk__tune_problem *p, uint32_t uses) {
    double s0 = (double)p->size[0], s1 = (double)p->size[1], s2 = (double)p->size[2], s3 = (double)p->size[3];
    double w = p->family == SPK__TUNE_MATMUL ? 2 * s0 * s1 * s2 * s3
             : p->family == SPK__TUNE_ATTENTION ? 2 * s0 * s1 * s1 * s2 * s3
             : p->family == SPK__TUNE_ATTENTION_BACKWARD ? 4 * s0 * s1 * s1 * s2 * s3
             : p->family == SPK__TUNE_SOFTPICK ? 8 * s0 * s1 * s2
             : p->family == SPK__TUNE_OPTIMIZER ? 16 * s0
             : 8 * s0 * s1; /* layer norm, its backward, column sums, losses */
    return w * uses;
}

/* ---- measuring one problem ----------------------------------------------------------------- */

typedef struct spk__tune_run {
    spk_context *ctx;
    const spk_tune_desc *desc;
    const spk__tune_testing *testing;
    uint32_t (*list)[SPK__TUNE_PARAMS]; /* the family's candidates, the rule's first */
    uint32_t count;
    double deadline;
    spk_tune_result r;
    double rule_spread; /* the rule's interquartile range over its repeats */
    char problem[128], rule[128], winner[128], why[256];
    uint32_t winner_params[SPK__TUNE_PARAMS];
} spk__tune_run;

/* One run of the case's candidate: its GPU time (host time without timestamps) in *ns. */
static spk_status spk__tune_time(spk__tune_case *c, const spk__tune_family_ops *ops, double *ns) {
    double t0 = spk__now_seconds();
    spk_status s = spk__run_sync(c->ctx, ops->record, c);
    uint64_t gpu = spk_context_last_gpu_time_ns(c->ctx);
    *ns = gpu ? (double)gpu : 1e9 * (spk__now_seconds() - t0);
    return s;
}

/* Runs the candidate once on NaN-poisoned outputs: its largest error against the reference. */
static spk_status spk__tune_check(spk__tune_case *c, const spk__tune_family_ops *ops, double *error, double *ns) {
    spk_status s = SPK_OK;
    for (int i = 0; i < SPK__TUNE_MAX_OUTPUTS && s == SPK_OK; i++) {
        if (!c->out[i]) continue;
        for (int64_t j = 0; j < c->out[i]->count; j++) c->got[j] = NAN;
        s = spk_tensor_upload(c->out[i], c->got, c->out[i]->count);
    }
    c->checking = true;
    if (s == SPK_OK) s = spk__tune_time(c, ops, ns);
    c->checking = false;
    *error = 0.0;
    for (int i = 0; i < SPK__TUNE_MAX_OUTPUTS && s == SPK_OK; i++) {
        if (!c->out[i]) continue;
        s = spk_tensor_download(c->out[i], c->got, c->out[i]->count);
        double e = s == SPK_OK ? spk__ref_error(c->got, c->ref[i], c->out[i]->count) : 0.0;
        if (!(e <= *error)) *error = e; /* NaN sticks */
    }
    return s;
}

static int spk__tune_compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One candidate: checked against the reference, then (unless its kind is pruned) timed. *median
 * is its median time, 0 when it was excluded or pruned; *best and the winner follow it. */
static spk_status spk__tune_candidate(spk__tune_run *run, spk__tune_case *c, uint32_t i, bool pruned[16],
                                      bool seen[16], const char *name, double *best, double *median) {
    const spk__tune_family_ops *ops = spk__tune_families[c->problem.family];
    uint32_t kind = ops->kind(run->list[i]) & 15, repeats = run->desc->repeats < 64 ? run->desc->repeats : 64;
    double times[64], error, first;
    *median = 0.0;
    c->params = run->list[i];
    c->sabotage = run->testing && run->testing->sabotage_family == (int)c->problem.family &&
                  run->testing->sabotage_candidate == i;
    spk_status s = spk__tune_check(c, ops, &error, &first);
    if (s == SPK_ERROR_UNSUPPORTED || s == SPK_ERROR_TOO_LARGE) { /* not for this shape here */
        run->r.candidates--;
        return SPK_OK;
    }
    if (s != SPK_OK) return s;
    if (!(error <= ops->bound)) {
        if (!run->why[0]) snprintf(run->why, sizeof run->why, "%s: error %.3g (bound %.0e)", name, error, ops->bound);
        run->r.excluded++;
        return SPK_OK;
    }
    run->r.tried++;
    if (!seen[kind] && i > 0 && first > SPK__TUNE_PRUNE * *best) pruned[kind] = true;
    seen[kind] = true;
    if (pruned[kind]) return SPK_OK;
    for (uint32_t k = 0; k < repeats && s == SPK_OK; k++) s = spk__tune_time(c, ops, &times[k]);
    if (s != SPK_OK) return s;
    qsort(times, repeats, sizeof *times, spk__tune_compare);
    *median = times[repeats / 2];
    if (i == 0) run->rule_spread = times[3 * repeats / 4] - times[repeats / 4];
    if (*median < *best) {
        *best = *median;
        memcpy(run->winner_params, run->list[i], sizeof run->winner_params);
        snprintf(run->winner, sizeof run->winner, "%s", name);
    }
    return SPK_OK;
}

/* Measures every candidate of one problem (the rule's always), until the deadline. */
static spk_status spk__tune_measure(spk__tune_run *run, spk__tune_case *c) {
    const spk__tune_family_ops *ops = spk__tune_families[c->problem.family];
    const spk_tune_desc *d = run->desc;
    double best = INFINITY, rule_ns = NAN;
    bool pruned[16] = {false}, seen[16] = {false};
    run->r.winner = run->winner;
    run->winner[0] = run->why[0] = '\0';
    run->rule_spread = 0.0;
    for (uint32_t i = 0; i < run->count; i++) {
        if (i > 0 && spk__now_seconds() > run->deadline) break;
        if (pruned[ops->kind(run->list[i]) & 15]) continue;
        char name[128];
        ops->describe(run->list[i], name, sizeof name);
        double median;
        spk_status s = spk__tune_candidate(run, c, i, pruned, seen, name, &best, &median);
        if (s != SPK_OK) return s;
        if (i == 0 && median > 0) rule_ns = median;
        if (d->on_progress)
            d->on_progress(run->r.family, run->problem, name, i + 1, run->count, median, isfinite(best) ? best : 0.0,
                           d->user_data);
    }
    /* The rule stays unless a candidate beats it by the margin and by more than the rule's own
     * spread over its repeats (the interquartile range), or the rule itself failed. */
    bool keep_rule = isfinite(rule_ns) && !(best < SPK__TUNE_MARGIN * rule_ns - run->rule_spread);
    if (keep_rule) {
        best = rule_ns;
        memcpy(run->winner_params, run->list[0], sizeof run->winner_params);
        snprintf(run->winner, sizeof run->winner, "%s", run->rule);
    }
    run->r.rule_ns = rule_ns;
    run->r.winner_ns = isfinite(best) ? best : NAN;
    return SPK_OK;
}

/* The family's candidates with the rule's first and the rest of its kind next. */
static uint32_t spk__tune_order(spk_context *ctx, const spk__tune_problem *p, uint32_t (*list)[SPK__TUNE_PARAMS]) {
    const spk__tune_family_ops *ops = spk__tune_families[p->family];
    uint32_t all[SPK__TUNE_MAX_CANDIDATES][SPK__TUNE_PARAMS];
    uint32_t n = ops->candidates(ctx, all, SPK__TUNE_MAX_CANDIDATES), count = 1;
    ops->rule(ctx, p, list[0]);
    uint32_t rule_kind = ops->kind(list[0]);
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t i = 0; i < n && count < SPK__TUNE_MAX_CANDIDATES; i++)
            if ((ops->kind(all[i]) == rule_kind) == (pass == 0) && memcmp(all[i], list[0], sizeof all[i]) != 0)
                memcpy(list[count++], all[i], sizeof all[i]);
    return count;
}

/* ---- the whole model, rules against the kept choices ---------------------------------------- */

/* The median GPU time of `repeats` forwards of m at one batch. */
static spk_status spk__tune_forward_ns(spk_context *ctx, spk_model *m, const float *x, float *y, int64_t batch,
                                       int64_t seq, uint32_t repeats, double *ns) {
    double times[64];
    spk_status s = SPK_OK;
    for (uint32_t r = 0; r < repeats && s == SPK_OK; r++) {
        s = spk_model_forward(m, x, batch, seq, y);
        times[r] = (double)spk_context_last_gpu_time_ns(ctx);
    }
    qsort(times, repeats, sizeof *times, spk__tune_compare);
    *ns = times[repeats / 2];
    return s;
}

/* Kernels timed alone can lose in the model (a small problem's choice within the noise of its
 * own runs, caches that the neighbouring kernels leave otherwise): the model's forward at each
 * batch runs on the rules and on the kept choices, twice `repeats` times interleaved, and where
 * the choices are not faster the entries of that forward's problems are dropped. */
static spk_status spk__tune_check_model(spk_context *ctx, const spk_tune_desc *d, const spk__tune_collect *col,
                                        spk__tune_entry *entries, uint32_t *count, spk_tune_report *report,
                                        const spk__tune_testing *testing) {
    spk__tune_entry *saved = ctx->tuned;
    uint32_t saved_count = ctx->tuned_count, repeats = d->repeats < 32 ? d->repeats : 32;
    spk_model *m[2] = {NULL, NULL}; /* on the rules, on the choices: each records its forwards once */
    spk_status s = SPK_OK;
    for (int k = 0; k < 2 && s == SPK_OK; k++) {
        s = spk_model_create(ctx, &d->config, &m[k]);
        if (s == SPK_OK) s = spk_model_init_random(m[k], 1);
    }
    for (uint32_t i = 0; i < d->batch_count && i < 64 && s == SPK_OK && *count; i++) {
        int64_t batch = d->batches[i], seq = d->config.window_size, shape[3];
        int ndim;
        int64_t out_count = spk_model_output_shape(m[0], batch, seq, &ndim, shape);
        size_t in_count = (size_t)(batch * seq * d->config.embed_dim);
        float *x = spk__calloc(in_count ? in_count : 1, sizeof *x), *y = spk__calloc((size_t)out_count + 1, sizeof *y);
        if (!x || !y) s = spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
        double ns[2] = {0.0, 0.0}, t;
        for (uint32_t round = 0; round < 2 && s == SPK_OK; round++)
            for (int k = 0; k < 2 && s == SPK_OK; k++) {
                ctx->tuned = k ? entries : NULL, ctx->tuned_count = k ? *count : 0;
                s = spk__tune_forward_ns(ctx, m[k], x, y, batch, seq, round ? repeats : 1, &t); /* round 0 records */
                ns[k] = t;
            }
        free(x), free(y);
        int forced = testing ? testing->model_check : 0;
        if (s != SPK_OK || forced > 0 || (ns[1] < ns[0] && forced == 0)) continue;
        uint32_t kept = 0; /* the choices lost in the model: this forward's problems keep their rules */
        for (uint32_t e = 0; e < *count; e++) {
            bool drop = false;
            for (uint32_t p = 0; p < col->count && !drop; p++) {
                spk__tune_problem key = spk__tune_class(&col->problems[p]);
                drop = (col->forwards[p] >> i & 1) && !memcmp(&key, &entries[e].key, sizeof key);
            }
            if (!drop) entries[kept++] = entries[e];
        }
        if (report) report->dropped += *count - kept;
        *count = kept;
    }
    ctx->tuned = saved, ctx->tuned_count = saved_count;
    spk_model_destroy(m[0]), spk_model_destroy(m[1]);
    return s;
}

/* ---- the whole tuning ---------------------------------------------------------------------- */

/* The index of a problem's class among the entries (count if absent). */
static uint32_t spk__tune_find(const spk__tune_entry *entries, uint32_t count, const spk__tune_problem *p) {
    spk__tune_problem key = spk__tune_class(p);
    uint32_t i = 0;
    while (i < count && memcmp(&entries[i].key, &key, sizeof key) != 0) i++;
    return i;
}

/* Adds or replaces the entry of a problem's class. */
static bool spk__tune_keep(spk__tune_entry **entries, uint32_t *count, uint32_t *capacity, const spk__tune_problem *p,
                           const uint32_t params[SPK__TUNE_PARAMS]) {
    spk__tune_problem key = spk__tune_class(p);
    uint32_t i = spk__tune_find(*entries, *count, p);
    if (i == *count && !spk__grow((void **)entries, capacity, *count + 1, sizeof **entries)) return false;
    if (i == *count) (*count)++;
    (*entries)[i].key = key;
    memcpy((*entries)[i].params, params, sizeof (*entries)[i].params);
    return true;
}

spk_status spk__tune(spk_context *ctx, const spk_tune_desc *desc_in, spk_tune_report *report,
                     const spk__tune_testing *testing) {
    if (report) *report = (spk_tune_report){0};
    if (!ctx) return SPK_ERROR_INVALID_ARGUMENT;
    spk_status s = spk__check_alive(ctx);
    if (s != SPK_OK) return s;
    double start = spk__now_seconds();
    spk_tune_desc d = {0};
    if (desc_in) d = *desc_in;
    static const int64_t default_batches[] = {1, 32};
    if (d.config.embed_dim == 0) d.config = spk_model_config_default(256);
    if (!d.batches) d.batches = default_batches, d.batch_count = 2;
    if (d.budget_seconds == 0) d.budget_seconds = 90;
    if (d.repeats == 0) d.repeats = 5;
    char error[256];
    if (spk_model_config_check(&d.config, error, sizeof error) != SPK_OK)
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "tune: %s", error);
    if (!(d.budget_seconds > 0) || d.batch_count == 0)
        return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "tune: the budget and the batch count must be positive");
    for (uint32_t i = 0; i < d.batch_count; i++)
        if (d.batches[i] <= 0) return spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "tune: batch sizes must be positive");

    spk__tune_collect col = {0};
    s = spk__tune_collect_model(ctx, &d, &col);
    /* Keep the problems this library tunes, in the order the model records them. */
    double total = 0.0;
    uint32_t n = 0;
    for (uint32_t i = 0; s == SPK_OK && i < col.count; i++)
        if (col.problems[i].family < SPK__TUNE_FAMILY_COUNT && spk__tune_families[col.problems[i].family]->tunable(&col.problems[i])) {
            col.problems[n] = col.problems[i], col.forwards[n] = col.forwards[i], col.counts[n++] = col.counts[i];
            total += spk__tune_work(&col.problems[i], col.counts[i]);
        }
    if (s == SPK_OK) col.count = n;
    uint32_t (*list)[SPK__TUNE_PARAMS] = spk__malloc(SPK__TUNE_MAX_CANDIDATES * sizeof *list);
    spk__tune_entry *entries = NULL;
    uint32_t entry_count = 0, entry_capacity = 0;
    if (s == SPK_OK && !list) s = spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (uint32_t i = 0; s == SPK_OK && i < ctx->tuned_count; i++) /* what the file held */
        if (!spk__tune_keep(&entries, &entry_count, &entry_capacity, &ctx->tuned[i].key, ctx->tuned[i].params))
            s = spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    spk__tune_run run = {.ctx = ctx, .desc = &d, .testing = testing, .list = list};
    double measure_start = spk__now_seconds(), share = 0.0;
    uint64_t seed = 0x5eed;
    for (uint32_t i = 0; s == SPK_OK && i < n; i++) {
        const spk__tune_problem *p = &col.problems[i];
        const spk__tune_family_ops *ops = spk__tune_families[p->family];
        /* Half the budget split evenly, half by work: every problem gets its rule and a few more. */
        share += d.budget_seconds * (0.5 / n + 0.5 * spk__tune_work(p, col.counts[i]) / total);
        run.deadline = measure_start + share;
        run.count = spk__tune_order(ctx, p, list);
        run.r = (spk_tune_result){.family = spk__tune_family_names[p->family], .problem = run.problem,
                                  .uses = col.counts[i], .rule = run.rule, .candidates = run.count,
                                  .excluded_why = run.why};
        ops->describe_problem(p, run.problem, sizeof run.problem);
        ops->describe(list[0], run.rule, sizeof run.rule);
        spk__tune_case c = {.ctx = ctx, .problem = *p};
        s = ops->open(&c, &seed);
        if (s == SPK_OK) s = spk__tune_measure(&run, &c);
        spk__tune_case_close(&c);
        if (s != SPK_OK) break;
        if (report) {
            report->problems++;
            report->tried += run.r.tried, report->excluded += run.r.excluded;
            report->rule_ns += run.r.rule_ns * run.r.uses, report->tuned_ns += run.r.winner_ns * run.r.uses;
        }
        bool improved = memcmp(run.winner_params, list[0], sizeof run.winner_params) != 0;
        if (report && improved) report->improved++;
        if (improved && !spk__tune_keep(&entries, &entry_count, &entry_capacity, p, run.winner_params))
            s = spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
        uint32_t old = spk__tune_find(entries, entry_count, p);
        if (!improved && old < entry_count) entries[old] = entries[--entry_count]; /* the rule won: the file forgets */
        if (d.on_result) d.on_result(&run.r, d.user_data);
    }
    if (s == SPK_OK) s = spk__tune_check_model(ctx, &d, &col, entries, &entry_count, report, testing);
    const char *path = d.path ? d.path : ctx->tuning_path;
    if (s == SPK_OK && path && path[0]) s = spk__tuning_save(ctx, path, entries, entry_count);
    else if (s == SPK_OK) {
        spk__tuning_replace(ctx, entries, entry_count);
        entries = NULL;
    }
    free(entries);
    free(list);
    free(col.problems);
    free(col.counts);
    free(col.forwards);
    if (report) report->seconds = spk__now_seconds() - start;
    return s;
}

spk_status spk_tune(spk_context *ctx, const spk_tune_desc *desc, spk_tune_report *report) {
    return spk__tune(ctx, desc, report, NULL);
}

const char *spk_context_tuning_path(const spk_context *ctx, uint32_t *entries) {
    if (entries) *entries = ctx ? ctx->tuned_count : 0;
    return ctx && ctx->tuning_path ? ctx->tuning_path : "";
}
