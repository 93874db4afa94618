/* softpick run, analyze and demo: the model on files, and on an embedded default. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *mode_name(spk_output_mode mode) {
    return mode == SPK_OUTPUT_ALL ? "all" : mode == SPK_OUTPUT_MEAN ? "mean" : "last";
}

/* The model of a weights file (with the overrides, and --attention checked against it) and an
 * input of its embed_dim, [batch, seq_len, embed_dim] (a 2-D input is one sequence), on a context
 * for --device; prints the error and returns false on failure, having freed everything. With
 * `part` (not NULL), under mpirun, only this rank's share of the samples: part[0] the first,
 * part[1] the whole batch's count. */
static bool load_model_input(const cli_args *args, const char *weights, const spk_model_config *overrides,
                             const char *attention, const char *input, spk_array *x, spk_context **ctx,
                             spk_model **model, int64_t part[2]) {
    char error[256];
    const cli_dist *d = cli_dist_get();
    spk_array head = {0};
    int64_t *rows = NULL;
    spk_status read = part && d->size > 1 ? spk_npy_read_rows(input, NULL, 0, &head, &part[1], error, sizeof error)
                                          : spk_npy_read(input, x, error, sizeof error);
    if (read == SPK_OK && part && d->size > 1 && head.ndim == 3) {
        int64_t first = d->rank * part[1] / d->size, share = (d->rank + 1) * part[1] / d->size - first;
        rows = malloc((size_t)(share ? share : 1) * sizeof *rows);
        for (int64_t i = 0; rows && i < share; i++) rows[i] = first + i;
        read = rows ? spk_npy_read_rows(input, rows, share, x, NULL, error, sizeof error) : SPK_ERROR_OUT_OF_HOST_MEMORY;
        part[0] = first;
        free(rows);
    } else if (read == SPK_OK && part && d->size > 1) { /* one sequence: the last rank's share */
        read = spk_npy_read(input, x, error, sizeof error);
    }
    if (read != SPK_OK) return !cli_fail("%s: %s", input, read == SPK_ERROR_OUT_OF_HOST_MEMORY ? "out of host memory" : error);
    if (part && (d->size == 1 || head.ndim != 3)) part[0] = 0, part[1] = x->ndim == 3 ? x->shape[0] : 1;
    if (x->ndim == 2) { /* one sequence: [seq_len, embed_dim] */
        x->shape[2] = x->shape[1], x->shape[1] = x->shape[0], x->shape[0] = 1, x->ndim = 3;
        if (part && d->size > 1 && d->rank != d->size - 1) x->shape[0] = 0; /* its share is none */
    }
    bool ok = x->ndim == 3 || cli_fail("%s: the input must be [batch, seq_len, embed_dim]", input);
    *ctx = ok ? cli_context(args, NULL) : NULL;
    *model = NULL;
    ok = ok && *ctx;
    if (ok && spk_model_create_from_safetensors(*ctx, weights, overrides, model) != SPK_OK)
        ok = cli_fail("%s", spk_context_last_error(*ctx)) == 0;
    ok = ok && cli_check_attention(attention, *model);
    if (ok && x->shape[2] != spk_model_get_config(*model)->embed_dim)
        ok = cli_fail("%s: the input's last dimension is %lld, the model's embed_dim is %d", input,
                      (long long)x->shape[2], spk_model_get_config(*model)->embed_dim) == 0;
    if (!ok) {
        spk_model_destroy(*model);
        spk_context_destroy(*ctx);
        spk_array_free(x);
    }
    return ok;
}

int cli_run(int argc, char **argv) {
    const char *weights = NULL, *input = NULL, *output = NULL, *mode_text = "last";
    const char *heads = NULL, *layers = NULL, *hidden = NULL, *embed = NULL, *window = NULL, *dtype = NULL;
    const char *act_dtype = NULL, *attention = NULL;
    cli_option options[] = {{"weights", &weights},         {"input", &input},   {"output", &output},
                            {"output-mode", &mode_text},   {"heads", &heads},   {"layers", &layers},
                            {"hidden", &hidden},           {"embed", &embed},   {"window", &window},
                            {"weights-dtype", &dtype},     {"activation-dtype", &act_dtype},
                            {"attention", &attention}};
    cli_args args;
    if (!cli_parse(argc, argv, options, (int)(sizeof options / sizeof *options), &args)) return 1;
    if (!weights || !input || !output || args.positional_count)
        return cli_fail("usage: softpick run --weights W.safetensors --input X.npy --output Y.npy "
                        "[--output-mode last|all|mean] [--weights-dtype f32|f16|bf16] [--activation-dtype f32|f16] "
                        "[--heads N] [--layers N] [--hidden N] [--attention softpick|rectified-softpick|softmax]");
    spk_model_config overrides = {0};
    if (!cli_parse_mode(mode_text, &overrides.output_mode)) return 1;
    if (!cli_parse_dtypes(dtype, act_dtype, &overrides)) return 1;
    if (!cli_parse_sizes(heads, layers, hidden, embed, window, &overrides)) return 1;
    if (!cli_parse_attention(attention, &overrides.attention)) return 1;

    spk_array x;
    spk_context *ctx;
    spk_model *model;
    /* Under mpirun each rank reads and runs its share of the samples, and rank 0 writes them all. */
    int64_t part[2];
    if (!load_model_input(&args, weights, &overrides, attention, input, &x, &ctx, &model, part)) return 1;
    char error[256];
    float *y = NULL;
    int ndim = 0, rc = 0;
    const cli_dist *d = cli_dist_get();
    int64_t shape[3], mine = part[0], share = x.shape[0];
    int64_t n = spk_model_output_shape(model, part[1], x.shape[1], &ndim, shape);
    int64_t per = n > 0 ? n / part[1] : 0;
    y = n > 0 ? malloc((size_t)n * sizeof *y) : NULL;
    if (!y) rc = cli_fail("the input is empty or too large");
    else if (share && spk_model_forward(model, x.data, share, x.shape[1], y + mine * per) != SPK_OK)
        rc = cli_fail("%s", spk_context_last_error(ctx));
    if (!cli_dist_all(!rc)) rc = 1;
    if (!rc) cli_dist_gather(y + mine * per, share * per, y);
    if (!rc && d->rank == 0 && spk_npy_write(output, ndim, shape, y, error, sizeof error) != SPK_OK)
        rc = cli_fail("%s", error);
    free(y);
    spk_model_destroy(model);
    spk_context_destroy(ctx);
    spk_array_free(&x);
    return rc;
}

int cli_analyze(int argc, char **argv) {
    const char *weights = NULL, *input = NULL, *attention = NULL, *act_dtype = NULL;
    cli_option options[] = {{"weights", &weights}, {"input", &input}, {"attention", &attention},
                            {"activation-dtype", &act_dtype}};
    cli_args args;
    if (!cli_parse(argc, argv, options, 4, &args)) return 1;
    if (!weights || !input || args.positional_count)
        return cli_fail("usage: softpick analyze --weights W.safetensors --input X.npy "
                        "[--attention softpick|rectified-softpick|softmax] [--activation-dtype f32|f16]");
    spk_model_config overrides = {0};
    if (!cli_parse_dtypes(NULL, act_dtype, &overrides) || !cli_parse_attention(attention, &overrides.attention))
        return 1;
    spk_array x;
    spk_context *ctx;
    spk_model *model;
    if (!load_model_input(&args, weights, &overrides, attention, input, &x, &ctx, &model, NULL)) return 1;
    const spk_model_config *c = spk_model_get_config(model);
    spk_head_analysis *heads = calloc((size_t)(c->num_layers * c->num_heads), sizeof *heads);
    spk_layer_analysis *layers = calloc((size_t)c->num_layers, sizeof *layers);
    int rc = 0;
    if (!heads || !layers) rc = cli_fail("out of host memory");
    else if (spk_model_analyze(model, x.data, x.shape[0], x.shape[1], heads, layers) != SPK_OK)
        rc = cli_fail("%s", spk_context_last_error(ctx));
    if (!rc) {
        printf("attention %s, %d layers x %d heads, input [%lld, %lld, %lld]; per head (sink: mean weight on the "
               "first key > 0.3)\n",
               spk_normalizer_name(c->attention), c->num_layers, c->num_heads, (long long)x.shape[0],
               (long long)x.shape[1], (long long)x.shape[2]);
        printf("%5s  %4s  %9s  %9s  %12s  %12s\n", "layer", "head", "sink rate", "sparsity", "row sum |w|",
               "first key w");
        for (int l = 0; l < c->num_layers; l++)
            for (int h = 0; h < c->num_heads; h++) {
                const spk_head_analysis *a = &heads[l * c->num_heads + h];
                printf("%5d  %4d  %9.4f  %9.4f  %12.6f  %12.6f\n", l, h, a->sink_rate, a->sparsity, a->row_abs_sum,
                       a->first_key_weight);
            }
        printf("%5s  %12s  %14s\n", "layer", "kurtosis", "max |hidden|");
        for (int l = 0; l < c->num_layers; l++) printf("%5d  %12.4f  %14.6g\n", l, layers[l].kurtosis, layers[l].max_abs);
    }
    free(heads);
    free(layers);
    spk_model_destroy(model);
    spk_context_destroy(ctx);
    spk_array_free(&x);
    return rc;
}

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int cli_demo(int argc, char **argv) {
    cli_args args;
    const char *dtype = NULL, *act_dtype = NULL, *attention = NULL;
    cli_option options[] = {{"weights-dtype", &dtype}, {"activation-dtype", &act_dtype}, {"attention", &attention}};
    if (!cli_parse(argc, argv, options, 3, &args)) return 1;
    if (args.positional_count == 1 && strcmp(args.positional[0], "train") == 0) {
        if (dtype || act_dtype || attention)
            return cli_fail("demo train takes no --weights-dtype, --activation-dtype or --attention");
        return cli_demo_train(&args);
    }
    if (args.positional_count) return cli_fail("demo takes no arguments but 'train'");
    spk_model_config cfg = spk_model_config_default(256);
    if (!cli_parse_dtypes(dtype, act_dtype, &cfg) || !cli_parse_attention(attention, &cfg.attention)) return 1;
    spk_context *ctx = cli_context(&args, NULL);
    if (!ctx) return 1;
    spk_device_info info;
    spk_context_device_info(ctx, &info);

    const int64_t batch = 4, seq = 60, seed = 42;
    spk_model *model = NULL;
    spk_status s = spk_model_create(ctx, &cfg, &model);
    if (s == SPK_OK) s = spk_model_init_random(model, seed);
    int64_t n_in = batch * seq * cfg.embed_dim, shape[3];
    int ndim;
    int64_t n_out = model ? spk_model_output_shape(model, batch, seq, &ndim, shape) : 0;
    float *x = malloc((size_t)n_in * sizeof *x), *y = malloc((size_t)(n_out ? n_out : 1) * sizeof *y);
    if (s == SPK_OK && (!x || !y)) s = SPK_ERROR_OUT_OF_HOST_MEMORY;
    uint64_t state = (uint64_t)seed;
    for (int64_t i = 0; x && i < n_in; i++) { /* xorshift64*: inputs in [-1, 1) */
        state ^= state >> 12, state ^= state << 25, state ^= state >> 27;
        x[i] = (float)((double)((state * 0x2545F4914F6CDD1Dull) >> 11) * 0x1p-52 - 1.0);
    }
    enum { RUNS = 5 };
    double wall[RUNS];
    double gpu[RUNS];
    if (s == SPK_OK) s = spk_model_forward(model, x, batch, seq, y); /* records, builds pipelines */
    for (int i = 0; i < RUNS && s == SPK_OK; i++) {
        double t0 = cli_now_ms();
        s = spk_model_forward(model, x, batch, seq, y);
        wall[i] = cli_now_ms() - t0;
        gpu[i] = (double)spk_context_last_gpu_time_ns(ctx) / 1e6;
    }
    int rc = 0;
    if (s != SPK_OK) {
        rc = cli_fail("%s", spk_context_last_error(ctx));
    } else {
        qsort(wall, RUNS, sizeof *wall, compare_double);
        qsort(gpu, RUNS, sizeof *gpu, compare_double);
        printf("device:  %s (%s)\n", info.name, spk_device_type_string(info.type));
        printf("model:   embed_dim %d, hidden_size %d, num_heads %d, num_layers %d, window_size %d, dropout %.2g "
               "(not applied at inference), output %s, attention %s\n",
               cfg.embed_dim, cfg.hidden_size, cfg.num_heads, cfg.num_layers, cfg.window_size, cfg.dropout,
               mode_name(cfg.output_mode), spk_normalizer_name(cfg.attention));
        spk_model_memory_info mem;
        spk_model_memory(model, &mem);
        printf("weights: glorot-uniform, seed %lld, dense kernels stored as %s; input: [%lld, %lld, %d] uniform in "
               "[-1, 1), seed %lld\n",
               (long long)seed, spk_dtype_name(cfg.weights_dtype), (long long)batch, (long long)seq, cfg.embed_dim,
               (long long)seed);
        printf("memory:  weights %.2f MiB, activations %.2f MiB (%s) on the device\n", (double)mem.weights / (1 << 20),
               (double)mem.activations / (1 << 20), spk_dtype_name(cfg.activation_dtype));
        printf("output:  [%lld, %lld]\n", (long long)shape[0], (long long)shape[1]);
        for (int64_t b = 0; b < batch; b++) {
            printf("  [%lld]", (long long)b);
            for (int i = 0; i < 6; i++) printf(" %+.5f", y[b * shape[1] + i]);
            printf(" ...\n");
        }
        printf("forward: %.2f ms median of %d (GPU %.2f ms), %.1f sequences/s\n", wall[RUNS / 2], RUNS, gpu[RUNS / 2],
               (double)batch * 1e3 / wall[RUNS / 2]);
    }
    free(x);
    free(y);
    spk_model_destroy(model);
    spk_context_destroy(ctx);
    return rc;
}
