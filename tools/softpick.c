/* softpick: the command-line tool (SPEC.md section 5). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "usage: softpick <command> [options]\n"
    "\n"
    "commands:\n"
    "  devices                              list Vulkan devices\n"
    "  softpick [--axis N] IN.npy OUT.npy   y = x / (1 + sum |x|) along an axis (default -1)\n"
    "      [--kind softpick|rectified-softpick|softmax]  or another normalizer (-inf: masked)\n"
    "  run --weights W.safetensors --input X.npy --output Y.npy [--output-mode last|all|mean]\n"
    "      [--heads N] [--layers N] [--hidden N] [--embed N] [--window N]\n"
    "      [--weights-dtype f32|f16|bf16] [--activation-dtype f32|f16]\n"
    "      [--attention softpick|rectified-softpick|softmax] (default: the file's, else softpick)\n"
    "                                       the transformer on [batch, seq_len, embed_dim] input\n"
    "  analyze --weights W.safetensors --input X.npy [--attention A] [--activation-dtype f32|f16]\n"
    "                                       the softpick paper's measurements per layer and head: attention\n"
    "                                       sink rate, sparsity, row sums; the hidden states' kurtosis, max\n"
    "  demo [--weights-dtype D] [--activation-dtype D] [--attention A]\n"
    "                                       the transformer on an embedded default (no files)\n"
    "  demo train                           a student learns a random teacher's classes, on the device\n"
    "  grad --weights W --input X.npy --target T.npy --loss mse|cross-entropy --output G.safetensors\n"
    "      [--output-mode last|all|mean] [--attention A]\n"
    "                                       dL/dparameter over the whole input (dropout off); prints the loss\n"
    "  train (--weights W | --init-seed S --embed N [--hidden N --heads N --layers N --window N]) [--outputs N]\n"
    "      --input X.npy --target T.npy --loss mse|cross-entropy --output W2.safetensors [--steps N]\n"
    "      [--batch-size B] [--lr F] [--optimizer adamw|sgd] [--weight-decay F] [--beta1 F] [--beta2 F]\n"
    "      [--eps F] [--clip-norm F] [--dropout F] [--seed S] [--shuffle] [--output-mode M]\n"
    "      [--state S.safetensors] [--resume S.safetensors] [--log-every K] [--attention A]\n"
    "                                       trains on the device (SPEC.md section 6)\n"
    "  selftest [--only OP] [--threads N]   every kernel this device can run, against float64 references\n"
    "  tune [--weights W | --embed N --hidden N --heads N --layers N --window N] [--batch B[,B...]]\n"
    "      [--budget SECONDS] [--repeats N] [--inference-only 1] [--output FILE] [--verbose 1]\n"
    "                                       measure every kernel candidate at a model's shapes, keep the fastest\n"
    "  bench [softpick|matmul|layernorm|attention|model|train|soak] [--repeats N] [--variants 1] [--forwards N]\n"
    "      [--tuned 1] (model, train: the tuning file's choices beside the rules)\n"
    "      [--weights-dtype f32|f16|bf16] (model, matmul) [--activation-dtype f32|f16] (model, softpick,\n"
    "      layernorm: beside float32 in the same run) [--attention A] (model: beside softpick; attention,\n"
    "      train: every normalizer always)\n"
    "                                       throughput beside ceilings measured in the same run\n"
    "\n"
    "every command takes --device INDEX|NAME-SUBSTRING (or SOFTPICK_DEVICE in the environment)\n";

static void quiet(spk_log_level level, const char *message, void *user) { (void)level, (void)message, (void)user; }

static int cmd_devices(int argc, char **argv) {
    cli_args args;
    if (!cli_parse(argc, argv, NULL, 0, &args)) return 1;
    if (args.positional_count) return cli_fail("devices takes no arguments");
    uint32_t count = 0;
    spk_status status = spk_list_devices(NULL, 0, &count);
    spk_device_info *infos = count ? calloc(count, sizeof *infos) : NULL;
    if (status == SPK_OK && count && !infos) status = SPK_ERROR_OUT_OF_HOST_MEMORY;
    if (status == SPK_OK && count) status = spk_list_devices(infos, count, &count);
    if (status != SPK_OK && status != SPK_ERROR_NO_DEVICE) {
        free(infos);
        return cli_fail("cannot list devices: %s", spk_status_string(status));
    }
    if (count == 0) {
        free(infos);
        return cli_fail("no Vulkan devices found (no driver; for a CPU driver install mesa-vulkan-drivers)");
    }
    printf("%-5s  %-40s  %-14s  %-7s  %-8s  %-26s  %-12s  %s\n", "index", "name", "type", "vulkan", "subgroup",
           "16-bit reads", "tuned", "driver");
    for (uint32_t i = 0; i < count; i++) {
        const spk_device_info *d = &infos[i];
        char version[16], half[32];
        snprintf(version, sizeof version, "%u.%u", d->api_version >> 22, (d->api_version >> 12) & 0x3ffu);
        snprintf(half, sizeof half, "%s%s%s", d->storage_16bit ? "storage16" : "words",
                 d->texel_f16 ? ", texel f16" : "", d->texel_bf16 ? ", bf16" : "");
        /* Whether a context on it loads a tuning file (`softpick tune`), and how many choices. */
        char tuned[32] = "-", index[16];
        snprintf(index, sizeof index, "%u", d->index);
        spk_context_desc desc = {.device = index, .log = quiet};
        spk_context *ctx = NULL;
        uint32_t entries = 0;
        if (d->usable && spk_context_create(&desc, &ctx) == SPK_OK && spk_context_tuning_path(ctx, &entries) && entries)
            snprintf(tuned, sizeof tuned, "yes (%u)", entries);
        spk_context_destroy(ctx);
        printf("%-5u  %-40s  %-14s  %-7s  %-8u  %-26s  %-12s  %s%s\n", d->index, d->name,
               spk_device_type_string(d->type), version, d->subgroup_size, half, tuned, d->driver[0] ? d->driver : "-",
               d->usable ? "" : "  (unusable: needs Vulkan 1.1)");
    }
    free(infos);
    return 0;
}

static int cmd_softpick(int argc, char **argv) {
    const char *axis_text = "-1", *kind = NULL;
    cli_option options[] = {{"axis", &axis_text}, {"kind", &kind}};
    cli_args args;
    if (!cli_parse(argc, argv, options, 2, &args)) return 1;
    if (args.positional_count != 2)
        return cli_fail("usage: softpick softpick [--axis N] [--kind softpick|rectified-softpick|softmax] IN.npy OUT.npy");
    long axis;
    spk_normalizer norm = SPK_NORMALIZER_SOFTPICK;
    if (!cli_int(axis_text, -SPK_MAX_RANK, SPK_MAX_RANK - 1, "--axis", &axis)) return 1;
    if (kind && spk_normalizer_parse(kind, &norm) != SPK_OK)
        return cli_fail("--kind must be softpick, rectified-softpick or softmax, got '%s'", kind);

    char error[256];
    spk_array in;
    if (spk_npy_read(args.positional[0], &in, error, sizeof error) != SPK_OK)
        return cli_fail("%s: %s", args.positional[0], error);
    if (axis < -in.ndim || axis >= in.ndim) {
        int ndim = in.ndim;
        spk_array_free(&in);
        return cli_fail("--axis %ld is out of range for a rank-%d array", axis, ndim);
    }
    spk_context *ctx = cli_context(&args, NULL);
    if (!ctx) {
        spk_array_free(&in);
        return 1;
    }
    spk_tensor *x = NULL;
    spk_status status = spk_tensor_create(ctx, in.ndim, in.shape, &x);
    if (status == SPK_OK) status = spk_tensor_upload(x, in.data, in.count);
    if (status == SPK_OK) status = spk_normalize(ctx, x, (int)axis, norm, x);
    if (status == SPK_OK) status = spk_tensor_download(x, in.data, in.count);
    int rc = 0;
    if (status != SPK_OK) rc = cli_fail("%s", spk_context_last_error(ctx));
    else if (spk_npy_write(args.positional[1], in.ndim, in.shape, in.data, error, sizeof error) != SPK_OK)
        rc = cli_fail("%s", error);
    spk_tensor_destroy(x);
    spk_context_destroy(ctx);
    spk_array_free(&in);
    return rc;
}

static int dispatch(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 1 : 0;
    }
    const char *command = argv[1];
    /* Under mpirun: training and batch inference split across the ranks; nothing else does. */
    bool spread = strcmp(command, "train") == 0 || strcmp(command, "run") == 0 ||
                  (strcmp(command, "bench") == 0 && argc > 2 && strcmp(argv[2], "train") == 0);
    if (cli_dist_get()->size > 1 && !spread)
        return cli_dist_get()->rank == 0 ? cli_fail("%s runs as one process; under mpirun only train, run and bench train do", command) : 1;
    if (strcmp(command, "devices") == 0) return cmd_devices(argc - 2, argv + 2);
    if (strcmp(command, "softpick") == 0) return cmd_softpick(argc - 2, argv + 2);
    if (strcmp(command, "run") == 0) return cli_run(argc - 2, argv + 2);
    if (strcmp(command, "analyze") == 0) return cli_analyze(argc - 2, argv + 2);
    if (strcmp(command, "demo") == 0) return cli_demo(argc - 2, argv + 2);
    if (strcmp(command, "selftest") == 0) return cli_selftest(argc - 2, argv + 2);
    if (strcmp(command, "tune") == 0) return cli_tune(argc - 2, argv + 2);
    if (strcmp(command, "grad") == 0) return cli_grad(argc - 2, argv + 2);
    if (strcmp(command, "train") == 0) return cli_train(argc - 2, argv + 2);
    if (strcmp(command, "bench") == 0) return cli_bench(argc - 2, argv + 2);
    cli_fail("unknown command '%s' (try softpick --help)", command);
    return 1;
}

int main(int argc, char **argv) {
    if (!cli_dist_init(&argc, &argv)) return 1;
    int rc = dispatch(argc, argv);
    cli_dist_finish(rc);
    return rc;
}
