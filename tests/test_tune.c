/* Tuning (src/tune.c, src/tuning.c): the tuning file round-trips and a foreign, stale or damaged
 * one is ignored with a warning; a deliberately wrong candidate never wins; a table that picks
 * other candidates than the rules for every problem of a model gives the rules' results; spk_tune
 * measures a small model end to end and its choices are used by later contexts. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tune.h"
#include "tune_cases.h"

static void tmp_path(char *out, size_t size, const char *name) {
    snprintf(out, size, "%s/tune_%s.txt", SOFTPICK_TEST_OUTPUT, name);
    remove(out);
}

static spk_context *context_on(const char *path) {
    spk_context_desc desc = {.tuning_path = path};
    return test_context(&desc);
}

/* A few entries of every family, with parameters the device can run. */
static uint32_t sample_entries(spk_context *ctx, spk__tune_entry *e) {
    uint32_t n = 0, list[SPK__TUNE_MAX_CANDIDATES][SPK__TUNE_PARAMS];
    for (uint32_t f = 0; f < SPK__TUNE_FAMILY_COUNT; f++) {
        uint32_t count = spk__tune_families[f]->candidates(ctx, list, SPK__TUNE_MAX_CANDIDATES);
        assert_true(count >= 1);
        e[n] = (spk__tune_entry){.key = {f, 5, {64, 256, 1024, 1}}};
        memcpy(e[n++].params, list[count - 1], sizeof list[0]);
    }
    return n;
}

static void file_round_trip(void **state) {
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "round_trip");
    spk_context *ctx = context_on(path);
    uint32_t entries = 99;
    assert_string_equal(spk_context_tuning_path(ctx, &entries), path);
    assert_int_equal(entries, 0); /* no file yet: the rules */
    spk__tune_entry e[SPK__TUNE_FAMILY_COUNT];
    uint32_t n = sample_entries(ctx, e);
    assert_int_equal(spk__tuning_save(ctx, path, e, n), SPK_OK);
    spk_context_destroy(ctx);

    int warnings = g_log.warnings;
    ctx = context_on(path);
    spk_context_tuning_path(ctx, &entries);
    assert_int_equal(entries, n);
    assert_int_equal(g_log.warnings, warnings);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t params[SPK__TUNE_PARAMS];
        spk__tune_problem inside = e[i].key; /* any problem of the class finds it */
        inside.size[0] = 33, inside.size[2] = 1000;
        assert_true(spk__tuned(ctx, &inside, params));
        assert_memory_equal(params, e[i].params, sizeof params);
        inside.variant = 6;
        assert_false(spk__tuned(ctx, &inside, params));
    }
    spk_context_destroy(ctx);
    test_assert_no_validation();
}

/* Rewrites the file with one line replaced and the checksum made right again (or left stale). */
static void rewrite(const char *path, const char *prefix, const char *line, bool fix_checksum) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char text[16384], out[16384];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    size_t o = 0;
    for (char *l = strtok(text, "\n"); l; l = strtok(NULL, "\n")) {
        if (strncmp(l, "checksum ", 9) == 0) break;
        o += (size_t)snprintf(out + o, sizeof out - o, "%s\n", strncmp(l, prefix, strlen(prefix)) == 0 ? line : l);
    }
    uint64_t sum = spk__fnv1a((const unsigned char *)out, o);
    snprintf(out + o, sizeof out - o, "checksum %016llx\n", (unsigned long long)(fix_checksum ? sum : sum ^ 1));
    f = fopen(path, "wb");
    assert_non_null(f);
    fputs(out, f);
    fclose(f);
}

static void foreign_stale_or_damaged_files_are_ignored(void **state) {
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "ignored");
    static const struct {
        const char *prefix, *line, *why;
        bool fix;
    } cases[] = {
        {"device ", "device 1002 73bf 1 00000000000000000000000000000000", "another device", true},
        {"library ", "library 0.0.1", "library version", true},
        {"candidates ", "candidates 0123456789abcdef", "candidate set", true},
        {"matmul ", "matmul 5 64 256 1024 1 1 8 0 0 1 0 2", "damaged", false},
        {"layer-norm ", "layer-norm 5 64 256 1024", "malformed entry", true},
        {"softpick-tuning", "softpick-tuning 99", "not a softpick tuning file", true},
        {"matmul ", "matmul 5 64 256 1024 1 1 8 0 0 1 0 2 99999999999", "malformed entry", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        spk_context *ctx = context_on(path);
        spk__tune_entry e[SPK__TUNE_FAMILY_COUNT];
        uint32_t n = sample_entries(ctx, e);
        assert_int_equal(spk__tuning_save(ctx, path, e, n), SPK_OK);
        spk_context_destroy(ctx);
        rewrite(path, cases[i].prefix, cases[i].line, cases[i].fix);
        int warnings = g_log.warnings;
        ctx = context_on(path);
        uint32_t entries = 99;
        spk_context_tuning_path(ctx, &entries);
        assert_int_equal(entries, 0);
        assert_int_equal(g_log.warnings, warnings + 1);
        if (!strstr(g_log.last, cases[i].why)) fail_msg("case %zu: warning '%s' lacks '%s'", i, g_log.last, cases[i].why);
        spk_context_destroy(ctx);
    }
    /* Not a tuning file at all, and an empty one. */
    FILE *f = fopen(path, "wb");
    fputs("hello\n", f);
    fclose(f);
    int warnings = g_log.warnings;
    spk_context *ctx = context_on(path);
    assert_int_equal(g_log.warnings, warnings + 1);
    spk_context_destroy(ctx);
    test_assert_no_validation();
}

/* The small model these tests tune: every family, a few problems, quick under validation. */
static spk_tune_desc small_model(void) {
    static const int64_t batches[] = {1, 3};
    spk_model_config c = spk_model_config_default(8);
    c.hidden_size = 16, c.num_heads = 2, c.num_layers = 1, c.window_size = 8;
    return (spk_tune_desc){.config = c, .batches = batches, .batch_count = 2, .budget_seconds = 8, .repeats = 1};
}

typedef struct seen {
    char sabotaged[128];
    int matmul_results, reached, excluded_named, sabotaged_won;
    int families[SPK__TUNE_FAMILY_COUNT];
} seen;

static void note_progress(const char *family, const char *problem, const char *candidate, uint32_t index,
                          uint32_t count, double candidate_ns, double best_ns, void *user) {
    (void)problem, (void)count, (void)best_ns;
    assert_true(candidate_ns >= 0 && index >= 1 && index <= count);
    seen *s = user;
    if (strcmp(family, "matmul") == 0 && index == 2) snprintf(s->sabotaged, sizeof s->sabotaged, "%s", candidate);
}

static void note_result(const spk_tune_result *r, void *user) {
    seen *s = user;
    for (int f = 0; f < SPK__TUNE_FAMILY_COUNT; f++)
        if (strcmp(r->family, spk__tune_family_names[f]) == 0) s->families[f]++;
    assert_true(r->tried >= 1 && r->tried + r->excluded <= r->candidates);
    assert_true(r->winner_ns > 0 && r->winner_ns <= r->rule_ns);
    if (strcmp(r->family, "matmul") != 0) return;
    s->matmul_results++;
    s->reached += r->tried + r->excluded >= 2; /* the budget reached the planted candidate */
    if (strncmp(r->excluded_why, s->sabotaged, strlen(s->sabotaged)) == 0 && strstr(r->excluded_why, "error"))
        s->excluded_named++;
    if (strcmp(r->winner, s->sabotaged) == 0) s->sabotaged_won++;
}

static void wrong_candidate_never_wins(void **state) {
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "sabotage");
    spk_context *ctx = context_on(path);
    seen s = {0};
    spk_tune_desc d = small_model();
    d.on_progress = note_progress, d.on_result = note_result, d.user_data = &s;
    spk__tune_testing testing = {.sabotage_family = SPK__TUNE_MATMUL, .sabotage_candidate = 1};
    spk_tune_report report;
    spk_status st = spk__tune(ctx, &d, &report, &testing);
    if (st != SPK_OK) fail_msg("tune: %s", spk_context_last_error(ctx));
    assert_true(s.sabotaged[0]);
    assert_true(s.matmul_results >= 4 && s.reached >= 4);
    /* Zeros in no time: excluded on every matmul problem it was tried on, named with its error,
     * never kept. */
    assert_int_equal(s.excluded_named, s.reached);
    assert_int_equal(s.sabotaged_won, 0);
    assert_true(report.excluded >= (uint32_t)s.reached);
    for (int f = 0; f < SPK__TUNE_FAMILY_COUNT; f++)
        if (!s.families[f]) fail_msg("family %s was not tuned", spk__tune_family_names[f]);
    spk_context_destroy(ctx);
    test_assert_no_validation();
}

/* Attention's candidates with the exponential normalizers: each checked against the float64
 * reference of its own normalizer (and the row statistics the training forward keeps), none
 * excluded. */
typedef struct attention_seen {
    int results, tried, excluded;
    char why[256];
} attention_seen;

static void note_attention(const spk_tune_result *r, void *user) {
    attention_seen *s = user;
    if (strncmp(r->family, "attention", 9) != 0) return;
    s->results++, s->tried += (int)r->tried, s->excluded += (int)r->excluded;
    if (r->excluded) snprintf(s->why, sizeof s->why, "%s", r->excluded_why);
}

static void attention_normalizers_tune(void **state) {
    (void)state;
    for (int norm = SPK_NORMALIZER_RECTIFIED_SOFTPICK; norm <= SPK_NORMALIZER_SOFTMAX; norm++) {
        spk_context *ctx = context_on("");
        attention_seen s = {0};
        spk_tune_desc d = small_model();
        d.config.attention = (spk_normalizer)norm;
        d.on_result = note_attention, d.user_data = &s;
        spk_tune_report report;
        if (spk_tune(ctx, &d, &report) != SPK_OK) fail_msg("tune: %s", spk_context_last_error(ctx));
        if (s.excluded) fail_msg("%s: %d attention candidates excluded: %s", spk_normalizer_name((spk_normalizer)norm),
                                 s.excluded, s.why);
        assert_true(s.results >= 2 && s.tried > s.results); /* forward and backward, more than the rules */
        spk_context_destroy(ctx);
    }
    test_assert_no_validation();
}

/* softpick and its backward along the keys and the queries of [batch, heads, seq, seq] scores:
 * the four results appended to out. */
static void softpick_outputs(spk_context *ctx, const spk_tune_desc *d, int64_t batch, float *out) {
    int64_t seq = d->config.window_size, shape[4] = {batch, d->config.num_heads, seq, seq};
    int64_t n = batch * d->config.num_heads * seq * seq;
    float *host = test_alloc_floats(2 * n);
    test_fill_random(host, 2 * n, 5);
    spk_tensor *x = test_tensor(ctx, 4, shape, host), *dy = test_tensor(ctx, 4, shape, host + n), *y = NULL;
    assert_int_equal(spk_tensor_create(ctx, 4, shape, &y), SPK_OK);
    for (int axis = 3, k = 0; axis >= 2; axis--, k += 2) {
        assert_int_equal(spk_softpick(ctx, x, axis, y), SPK_OK);
        assert_int_equal(spk_tensor_download(y, out + k * n, n), SPK_OK);
        assert_int_equal(spk_softpick_backward(ctx, x, dy, axis, y), SPK_OK);
        assert_int_equal(spk_tensor_download(y, out + (k + 1) * n, n), SPK_OK);
    }
    spk_tensor_destroy(x), spk_tensor_destroy(dy), spk_tensor_destroy(y);
    free(host);
}

/* Where the whole forward runs no faster on the kept choices, its problems keep their rules: only
 * the training step's choices stay in the file. */
static void choices_the_model_does_not_confirm_are_dropped(void **state) {
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "model_loses");
    spk_context *ctx = context_on(path);
    spk_tune_desc d = small_model();
    d.budget_seconds = 4;
    spk_tune_report kept, dropped;
    spk__tune_testing testing = {.sabotage_family = -1, .model_check = +1};
    assert_int_equal(spk__tune(ctx, &d, &kept, &testing), SPK_OK);
    uint32_t all = ctx->tuned_count;
    testing.model_check = -1;
    spk_context_destroy(ctx);
    remove(path);
    ctx = context_on(path);
    assert_int_equal(spk__tune(ctx, &d, &dropped, &testing), SPK_OK);
    print_message("%u choices kept; %u dropped when the forward loses, %u left of %u improved\n", all, dropped.dropped,
                  ctx->tuned_count, dropped.improved);
    assert_int_equal(kept.dropped, 0u);
    /* The check that matters is the loop below: no inference-only choice left. (Under a loaded
     * machine, AddressSanitizer's, the budget may reach no such problem: nothing to drop.) */
    /* No choice left for a problem only the inference forward has (attention without r kept,
     * layer norm without its statistics: the training forward keeps both). */
    for (uint32_t e = 0; e < ctx->tuned_count; e++) {
        const spk__tune_problem *k = &ctx->tuned[e].key;
        if ((k->family == SPK__TUNE_ATTENTION && !(k->variant & 2)) || (k->family == SPK__TUNE_LAYER_NORM && !(k->variant & 1)))
            fail_msg("the inference forward's %s kept a choice after the model lost", spk__tune_family_names[k->family]);
    }
    spk_context_destroy(ctx);
    test_assert_no_validation();
}

/* Runs the small model's forward and training gradients on ctx, and the softpick op on its
 * scores' shape, returning them all (malloc'd). */
static float *model_outputs(spk_context *ctx, const spk_tune_desc *d, int64_t batch, int64_t *count) {
    spk_model *m = NULL;
    assert_int_equal(spk_model_create(ctx, &d->config, &m), SPK_OK);
    assert_int_equal(spk_model_init_random(m, 7), SPK_OK);
    int64_t seq = d->config.window_size, n_in = batch * seq * d->config.embed_dim, shape[3];
    int ndim;
    int64_t n_out = spk_model_output_shape(m, batch, seq, &ndim, shape);
    const char *grad = "softpick_block_1_ffn_up.kernel";
    int64_t n_grad = (int64_t)d->config.hidden_size * 4 * d->config.hidden_size;
    int64_t n_scores = batch * d->config.num_heads * seq * seq;
    float *x = test_alloc_floats(n_in), *y = test_alloc_floats(n_out + n_grad + 4 * n_scores), *t = test_alloc_floats(n_out);
    test_fill_random(x, n_in, 3);
    test_fill_random(t, n_out, 4);
    assert_int_equal(spk_model_forward(m, x, batch, seq, y), SPK_OK);
    assert_int_equal(spk_model_grad(m, x, batch, seq, SPK_LOSS_MSE, t, NULL), SPK_OK);
    assert_int_equal(spk_model_get_gradient(m, grad, y + n_out, n_grad), SPK_OK);
    spk_model_destroy(m);
    softpick_outputs(ctx, d, batch, y + n_out + n_grad);
    free(x), free(t);
    *count = n_out + n_grad + 4 * n_scores;
    return y;
}

/* Whether a candidate is for a problem's orientation (softpick's rows or columns). */
static bool fits(const spk__tune_problem *p, const uint32_t params[SPK__TUNE_PARAMS]) {
    return p->family != SPK__TUNE_SOFTPICK || (params[5] != 0) == ((p->variant & 2) != 0);
}

/* Every problem of the model tuned to a candidate other than its rule's: the last of another
 * kernel shape (of the same shape where the family has one). */
static void tuned_results_equal_the_rules(void **state) {
    (void)state;
    spk_tune_desc d = small_model();
    spk_context *rules = context_on(""), *tuned = context_on("");
    int64_t n_rules, n_tuned;
    float *want = model_outputs(rules, &d, 3, &n_rules);
    spk__tune_collect col = {0};
    tuned->collect = &col;
    free(model_outputs(tuned, &d, 3, &n_tuned));
    tuned->collect = NULL;
    spk__tune_entry *e = calloc(col.count, sizeof *e);
    uint32_t list[SPK__TUNE_MAX_CANDIDATES][SPK__TUNE_PARAMS], rule[SPK__TUNE_PARAMS];
    for (uint32_t i = 0; i < col.count; i++) {
        const spk__tune_family_ops *ops = spk__tune_families[col.problems[i].family];
        uint32_t count = ops->candidates(tuned, list, SPK__TUNE_MAX_CANDIDATES), pick = count, other = count;
        ops->rule(tuned, &col.problems[i], rule);
        for (uint32_t j = 0; j < count; j++)
            if (fits(&col.problems[i], list[j]) && memcmp(list[j], rule, sizeof rule) != 0) {
                other = j;
                if (ops->kind(list[j]) != ops->kind(rule)) pick = j;
            }
        if (pick == count) pick = other;
        assert_true(pick < count);
        e[i].key = spk__tune_class(&col.problems[i]);
        memcpy(e[i].params, list[pick], sizeof list[0]);
    }
    tuned->tuned = e, tuned->tuned_count = col.count;
    float *got = model_outputs(tuned, &d, 3, &n_tuned);
    assert_int_equal(n_rules, n_tuned);
    /* The other kernel shapes ran: the tile matmul where the rules take shuffles, or the reverse. */
    bool tiles[2] = {false, false};
    spk_context *ctxs[2] = {rules, tuned};
    for (int c = 0; c < 2; c++)
        for (uint32_t i = 0; i < ctxs[c]->pipeline_count; i++)
            tiles[c] = tiles[c] || ctxs[c]->pipelines[i]->shader == &spk__shader_matmul;
    assert_true(tiles[0] != tiles[1]);
    double *ref = malloc((size_t)n_rules * sizeof *ref);
    for (int64_t i = 0; i < n_rules; i++) ref[i] = want[i];
    double err = test_rel_error(got, ref, n_rules);
    print_message("%u problems on other candidates: relative difference %.2e\n", col.count, err);
    assert_true(err <= 1e-4);
    free(ref), free(got), free(want), free(col.problems), free(col.counts), free(col.forwards);
    spk_context_destroy(tuned);
    spk_context_destroy(rules);
    test_assert_no_validation();
}

static void tune_bad_arguments(void **state) {
    (void)state;
    spk_context *ctx = context_on("");
    spk_tune_report report;
    assert_int_equal(spk_tune(NULL, NULL, &report), SPK_ERROR_INVALID_ARGUMENT);
    spk_tune_desc d = small_model();
    d.budget_seconds = -1;
    assert_int_equal(spk_tune(ctx, &d, &report), SPK_ERROR_INVALID_ARGUMENT);
    d = small_model();
    d.config.num_heads = 3;
    assert_int_equal(spk_tune(ctx, &d, &report), SPK_ERROR_INVALID_ARGUMENT);
    int64_t zero = 0;
    d = small_model();
    d.batches = &zero;
    assert_int_equal(spk_tune(ctx, &d, &report), SPK_ERROR_INVALID_ARGUMENT);
    /* A file's directory that is a file: the choices cannot be written. */
    char file[512], path[600];
    tmp_path(file, sizeof file, "not_a_directory");
    FILE *f = fopen(file, "wb");
    assert_non_null(f);
    fclose(f);
    snprintf(path, sizeof path, "%s/tuning.txt", file);
    d = small_model();
    d.path = path;
    d.budget_seconds = 1;
    assert_int_equal(spk_tune(ctx, &d, &report), SPK_ERROR_IO);
    assert_non_null(strstr(spk_context_last_error(ctx), "tuning file"));
    spk_context_destroy(ctx);
    test_assert_no_validation();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(file_round_trip),
        cmocka_unit_test(foreign_stale_or_damaged_files_are_ignored),
        cmocka_unit_test(wrong_candidate_never_wins),
        cmocka_unit_test(tuned_results_equal_the_rules),
        cmocka_unit_test(choices_the_model_does_not_confirm_are_dropped),
        cmocka_unit_test(tune_bad_arguments),
        cmocka_unit_test(attention_normalizers_tune),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
