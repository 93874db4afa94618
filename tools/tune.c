/* softpick tune: spk_tune's report, one line per problem (the rule's choice and time, the kept
 * choice and time, candidates tried and excluded), with progress on a terminal. */
#define _POSIX_C_SOURCE 200809L /* isatty, fileno */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

typedef struct tune_output {
    bool tty, verbose;
} tune_output;

/* On a terminal one line that changes; with --verbose every candidate's time on stdout. */
static void on_progress(const char *family, const char *problem, const char *candidate, uint32_t index, uint32_t count,
                        double candidate_ns, double best_ns, void *user) {
    const tune_output *o = user;
    if (o->verbose)
        printf("    %s %s %3u/%-3u %10.3f ms  %s\n", family, problem, index, count, candidate_ns / 1e6,
               candidate_ns > 0 ? candidate : "(excluded or pruned)");
    if (o->tty)
        fprintf(stderr, "\r\033[K%s %s: %u/%u %s, best %.3f ms", family, problem, index, count, candidate,
                best_ns / 1e6);
}

static void on_result(const spk_tune_result *r, void *user) {
    if (((const tune_output *)user)->tty) fprintf(stderr, "\r\033[K");
    double speedup = r->winner_ns > 0 ? r->rule_ns / r->winner_ns : 0;
    printf("%-19s %-40s %4u  %10.3f  %10.3f  %6.2fx  %3u/%-3u %3u  %s%s%s%s\n", r->family, r->problem, r->uses,
           r->rule_ns / 1e6, r->winner_ns / 1e6, speedup, r->tried, r->candidates, r->excluded,
           strcmp(r->winner, r->rule) == 0 ? "rule: " : "", r->winner, r->excluded_why[0] ? "  -- excluded: " : "",
           r->excluded_why);
    fflush(stdout);
}

int cli_tune(int argc, char **argv) {
    const char *weights = NULL, *budget_text = NULL, *repeats_text = NULL, *batch_text = NULL, *inference = NULL;
    const char *heads = NULL, *layers = NULL, *hidden = NULL, *embed = NULL, *window = NULL, *output = NULL;
    const char *verbose = NULL;
    cli_option options[] = {{"weights", &weights}, {"budget", &budget_text}, {"repeats", &repeats_text},
                            {"batch", &batch_text}, {"inference-only", &inference}, {"heads", &heads},
                            {"layers", &layers},   {"hidden", &hidden},      {"embed", &embed},
                            {"window", &window},   {"output", &output},         {"verbose", &verbose}};
    cli_args args;
    if (!cli_parse(argc, argv, options, (int)(sizeof options / sizeof *options), &args)) return 1;
    if (args.positional_count)
        return cli_fail("usage: softpick tune [--weights W | --embed N --hidden N --heads N --layers N --window N] "
                        "[--batch B[,B...]] [--budget SECONDS] [--repeats N] [--inference-only 1] [--output FILE] [--verbose 1]");
    spk_tune_desc desc = {0};
    long v;
    if (budget_text) {
        char *end;
        desc.budget_seconds = strtod(budget_text, &end);
        if (*end || !(desc.budget_seconds > 0 && desc.budget_seconds < 1e6))
            return cli_fail("--budget must be a positive number of seconds, got '%s'", budget_text);
    }
    if (repeats_text && !cli_int(repeats_text, 1, 64, "--repeats", &v)) return 1;
    desc.repeats = repeats_text ? (uint32_t)v : 0;
    if (inference && !cli_int(inference, 0, 1, "--inference-only", &v)) return 1;
    desc.inference_only = inference && v;
    if (verbose && !cli_int(verbose, 0, 1, "--verbose", &v)) return 1;
    bool every_candidate = verbose && v;
    int64_t batches[8];
    if (batch_text) { /* "--batch 32" tunes 1 and 32, "--batch 4,64" those two */
        uint32_t n = 0;
        char copy[128];
        snprintf(copy, sizeof copy, "%s", batch_text);
        if (!strchr(copy, ',')) batches[n++] = 1;
        for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
            if (n == 8) return cli_fail("--batch takes at most 8 sizes");
            if (!cli_int(tok, 1, 1 << 16, "--batch", &v)) return 1;
            batches[n++] = v;
        }
        desc.batches = batches, desc.batch_count = n;
    }
    /* --output is the file the context loads, merges into and writes (as SOFTPICK_TUNING would). */
    if (output && setenv("SOFTPICK_TUNING", output, 1) != 0) return cli_fail("cannot set SOFTPICK_TUNING");
    spk_context *ctx = cli_context(&args, NULL);
    if (!ctx) return 1;
    spk_model_config config = spk_model_config_default(256);
    if (weights) {
        spk_model *m = NULL;
        if (spk_model_create_from_safetensors(ctx, weights, NULL, &m) != SPK_OK) {
            int rc = cli_fail("%s: %s", weights, spk_context_last_error(ctx));
            spk_context_destroy(ctx);
            return rc;
        }
        config = *spk_model_get_config(m);
        spk_model_destroy(m);
    }
    if (!cli_parse_sizes(heads, layers, hidden, embed, window, &config)) {
        spk_context_destroy(ctx);
        return 1;
    }
    desc.config = config;
    tune_output out = {isatty(fileno(stderr)), every_candidate};
    desc.on_result = on_result;
    desc.on_progress = on_progress;
    desc.user_data = &out;
    spk_device_info info;
    spk_context_device_info(ctx, &info);
    printf("device: %s (%s, %s), subgroup %u\nmodel: embed %d, hidden %d, %d heads, %d layers, seq %d%s\n\n", info.name,
           spk_device_type_string(info.type), info.driver, info.subgroup_size, config.embed_dim, config.hidden_size,
           config.num_heads, config.num_layers, config.window_size, desc.inference_only ? ", inference only" : "");
    printf("%-19s %-40s %4s  %10s  %10s  %7s  %-7s %3s  %s\n", "family", "problem", "uses", "rule ms", "tuned ms",
           "speedup", "tried", "bad", "kept (median of repeats, GPU timestamps)");
    spk_tune_report report;
    spk_status status = spk_tune(ctx, &desc, &report);
    int rc = 0;
    uint32_t entries = 0;
    const char *path = spk_context_tuning_path(ctx, &entries);
    if (status != SPK_OK) rc = cli_fail("tune stopped: %s", spk_context_last_error(ctx));
    else
        printf("\ntune: %u problems, %u improved, %u candidates timed, %u excluded, in %.1f s; the model's kernels "
               "%.2f -> %.2f ms (%.2fx) by the sum of uses x median; %u choices dropped where the whole forward "
               "ran no faster on them\n%u choices saved to %s\n",
               report.problems, report.improved, report.tried, report.excluded, report.seconds, report.rule_ns / 1e6,
               report.tuned_ns / 1e6, report.tuned_ns > 0 ? report.rule_ns / report.tuned_ns : 0.0, report.dropped,
               entries, path[0] ? path : "(nowhere: no tuning file; set SOFTPICK_TUNING or --output)");
    spk_context_destroy(ctx);
    return rc;
}
