/* softpick selftest: spk_selftest's table, one line per (op, variant), and a verdict. */
#include <stdio.h>

#include "cli.h"

static const char *outcome_text(spk_selftest_outcome o) {
    return o == SPK_SELFTEST_PASS ? "PASS" : o == SPK_SELFTEST_FAIL ? "FAIL" : "skipped";
}

static void print_line(const spk_selftest_result *r, void *user) {
    (void)user;
    printf("%-10s %-66s %-4s %10.2e %7.0e  %-7s  %s%s%s\n", r->op, r->variant, r->used ? "yes" : "-", r->max_error,
           r->bound, outcome_text(r->outcome), r->shapes, r->reason[0] ? "  -- " : "", r->reason);
    fflush(stdout);
}

int cli_selftest(int argc, char **argv) {
    const char *only = NULL, *threads_text = NULL;
    cli_option options[] = {{"only", &only}, {"threads", &threads_text}};
    cli_args args;
    if (!cli_parse(argc, argv, options, 2, &args)) return 1;
    if (args.positional_count) return cli_fail("usage: softpick selftest [--only OP] [--threads N] [--device D]");
    long threads = 0;
    if (threads_text && !cli_int(threads_text, 1, 4, "--threads", &threads)) return 1;
    double start = cli_now_ms();
    spk_context *ctx = cli_context(&args, NULL);
    if (!ctx) return 1;
    spk_device_info info;
    spk_context_device_info(ctx, &info);
    printf("device: %s (%s, %s), subgroup %u%s\n\n", info.name, spk_device_type_string(info.type), info.driver,
           info.subgroup_size, info.subgroup_arithmetic ? "" : ", no subgroup arithmetic");
    printf("%-10s %-66s %-4s %10s %7s  %-7s  %s\n", "op", "variant", "used", "max error", "bound", "result",
           "shapes covered");
    spk_selftest_desc desc = {.on_result = print_line, .only = only, .threads = (uint32_t)threads};
    spk_selftest_report report;
    spk_status status = spk_selftest(ctx, &desc, &report);
    int rc = 0;
    if (status != SPK_OK) rc = cli_fail("selftest stopped: %s", spk_context_last_error(ctx));
    spk_context_destroy(ctx);
    uint32_t total = report.passed + report.failed + report.skipped;
    if (total == 0 && rc == 0) return cli_fail("selftest: no op matches --only '%s'", only ? only : "");
    printf("\nselftest: %s: %u passed, %u failed, %u skipped of %u in %.1f s on %s\n",
           report.failed || rc ? "FAIL" : "PASS", report.passed, report.failed, report.skipped, total,
           (cli_now_ms() - start) / 1e3, info.name);
    if (report.failed)
        printf("please report the FAIL lines with this table and `softpick devices` (see the README)\n");
    return report.failed || rc ? 1 : 0;
}
