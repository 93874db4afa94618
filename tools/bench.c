/* softpick bench: throughput beside ceilings measured in the same run on the same device.
 * Every figure is the median GPU time (timestamp queries) of `repeats` runs after warm-up runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "bench_common.h"
#include "cli.h"
#include "matmul_plan.h"


typedef struct softpick_run {
    spk_context *ctx;
    spk_tensor *x, *y;
    int axis;
    const spk__softpick_tuning *tuning;
} softpick_run;

static spk_status run_softpick(void *arg, uint64_t *ns) {
    softpick_run *r = arg;
    spk_status status = spk__softpick_tuned(r->ctx, r->tuning, r->x, r->axis, r->y);
    *ns = spk_context_last_gpu_time_ns(r->ctx);
    return status;
}

typedef struct bench_case {
    const char *name;
    int64_t shape[2];
    int axis;
} bench_case;

static int bench_softpick(spk_context *ctx, int repeats, int64_t elements, bool variants, spk_dtype act) {
    int64_t shape[1] = {elements};
    copy_run copy = {ctx, NULL, NULL, {0}};
    spk_status status = spk_tensor_create(ctx, 1, shape, &copy.src);
    if (status == SPK_OK) status = spk_tensor_create(ctx, 1, shape, &copy.dst);
    float *host = status == SPK_OK ? malloc((size_t)elements * sizeof *host) : NULL;
    if (status == SPK_OK && !host) status = SPK_ERROR_OUT_OF_HOST_MEMORY;
    if (status == SPK_OK) {
        fill_random(host, elements);
        status = spk_tensor_upload(copy.src, host, elements);
    }
    if (status != SPK_OK) {
        free(host);
        spk_tensor_destroy(copy.src);
        spk_tensor_destroy(copy.dst);
        return cli_fail("bench setup failed: %s", spk_context_last_error(ctx));
    }
    uint64_t bytes = 2 * (uint64_t)elements * sizeof(float); /* read once + written once */
    uint64_t copy_shader_ns, copy_texel_ns, copy_buffer_ns;
    char best[2][64];
    time_copies(&copy, repeats, &copy_shader_ns, &copy_texel_ns, &copy_buffer_ns, best);
    double copy_shader = gbps(bytes, copy_shader_ns), copy_buffer = gbps(bytes, copy_buffer_ns);
    double copy_texel = gbps(bytes, copy_texel_ns);
    printf("ceilings over %lld floats (%.0f MiB read + written), best of %d runs and of the variants:\n",
           (long long)elements, (double)bytes / 2 / (1 << 20), repeats < 5 ? 5 : repeats);
    printf("  vec4 copy shader   %8.3f ms  %7.2f GB/s  (%s)\n", copy_shader_ns / 1e6, copy_shader, best[0]);
    printf("  same, texel reads  %8.3f ms  %7.2f GB/s  (%s)\n", copy_texel_ns / 1e6, copy_texel, best[1]);
    printf("  vkCmdCopyBuffer    %8.3f ms  %7.2f GB/s\n\n", copy_buffer_ns / 1e6, copy_buffer);
    spk_tensor_destroy(copy.src);
    spk_tensor_destroy(copy.dst);

    int64_t rows60 = elements / 60;
    const bench_case cases[] = {
        {"rows of 1024, last axis", {elements / 1024, 1024}, -1},
        {"rows of 60, last axis", {rows60, 60}, -1},
        {"[N, 2], axis 0", {elements / 2, 2}, 0},
        {"[N, 60], axis 0", {rows60, 60}, 0},
    };
    printf("%-26s %-18s %9s %9s %11s %11s %11s  %s\n", "case", "shape", "ms", "GB/s", "x copy-sh", "x texel-cp",
           "x copy-buf", "variant");
    int rc = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0] && rc == 0; c++) {
        const bench_case *bc = &cases[c];
        softpick_run run = {ctx, NULL, NULL, bc->axis, NULL};
        status = spk_tensor_create(ctx, 2, bc->shape, &run.x);
        if (status == SPK_OK) status = spk_tensor_create(ctx, 2, bc->shape, &run.y);
        if (status == SPK_OK) status = spk_tensor_upload(run.x, host, bc->shape[0] * bc->shape[1]);
        if (status != SPK_OK) {
            rc = cli_fail("bench case failed: %s", spk_context_last_error(ctx));
        } else {
            spk__softpick_tuning tunings[12];
            const char *labels[12];
            int n = 0;
            spk__softpick_plan_defaults(ctx, &tunings[n]);
            labels[n++] = "default";
            if (variants) {
                static const uint32_t groups[] = {1, 8, 32, 64};
                static const char *group_labels[] = {"1 inv/row", "8 inv/row", "32 inv/row", "64 inv/row"};
                for (int g = 0; g < 4 && bc->axis == -1; g++) {
                    tunings[n] = tunings[0];
                    tunings[n].force_group = groups[g];
                    labels[n++] = group_labels[g];
                }
                if (bc->axis == -1) {
                    tunings[n] = tunings[0];
                    tunings[n].cache_max = 0;
                    labels[n++] = "x read twice";
                }
                if (bc->axis == 0) {
                    tunings[n] = tunings[0];
                    tunings[n].interleave_columns = !tunings[0].interleave_columns;
                    labels[n] = tunings[n].interleave_columns ? "interleaved" : "blocked";
                    n++;
                }
                static const uint64_t targets[] = {1024, 16384, 262144};
                static const char *target_labels[] = {"1K invocations", "16K invocations", "256K invocations"};
                for (int k = 0; k < 3; k++) {
                    tunings[n] = tunings[0];
                    tunings[n].target_invocations = targets[k];
                    labels[n++] = target_labels[k];
                }
            }
            char shape_text[40];
            snprintf(shape_text, sizeof shape_text, "[%lld, %lld]", (long long)bc->shape[0], (long long)bc->shape[1]);
            uint64_t case_bytes = 2 * (uint64_t)(bc->shape[0] * bc->shape[1]) * sizeof(float), f32_ns = 0;
            for (int v = 0; v < n; v++) {
                run.tuning = &tunings[v];
                uint64_t ns = median_ns(run_softpick, &run, repeats);
                double g = gbps(case_bytes, ns);
                if (v == 0) f32_ns = ns;
                printf("%-26s %-18s %9.3f %9.2f %11.2f %11.2f %11.2f  %s\n", v == 0 ? bc->name : "",
                       v == 0 ? shape_text : "", ns / 1e6, g, copy_shader > 0 ? g / copy_shader : 0,
                       copy_texel > 0 ? g / copy_texel : 0, copy_buffer > 0 ? g / copy_buffer : 0, labels[v]);
            }
            /* The default kernel again with x and y stored in 16 bits: half the bytes. */
            if (act != SPK_DTYPE_F32) {
                softpick_run half = {ctx, NULL, NULL, bc->axis, &tunings[0]};
                status = spk_tensor_create_typed(ctx, act, 2, bc->shape, &half.x);
                if (status == SPK_OK) status = spk_tensor_create_typed(ctx, act, 2, bc->shape, &half.y);
                if (status == SPK_OK) status = spk_tensor_upload(half.x, host, bc->shape[0] * bc->shape[1]);
                uint64_t ns = status == SPK_OK ? median_ns(run_softpick, &half, repeats) : 0;
                double g = gbps(case_bytes / 2, ns);
                if (!ns) rc = cli_fail("bench case failed: %s", spk_context_last_error(ctx));
                else
                    printf("%-26s %-18s %9.3f %9.2f %11.2f %11.2f %11.2f  default, x and y %s: %.2fx f32's speed\n",
                           "", "", ns / 1e6, g, copy_shader > 0 ? g / copy_shader : 0, copy_texel > 0 ? g / copy_texel : 0,
                           copy_buffer > 0 ? g / copy_buffer : 0, spk_dtype_name(act), (double)f32_ns / (double)ns);
                spk_tensor_destroy(half.x), spk_tensor_destroy(half.y);
            }
        }
        spk_tensor_destroy(run.x);
        spk_tensor_destroy(run.y);
    }
    free(host);
    return rc;
}

typedef struct matmul_run {
    spk_context *ctx;
    spk_tensor *a, *b, *c, *bias;
    const spk__matmul_tuning *tuning;
} matmul_run;

static spk_status run_matmul(void *arg, uint64_t *ns) {
    matmul_run *r = arg;
    spk_matmul_desc desc = {.bias = r->bias};
    spk_status status = spk__matmul_tuned(r->ctx, r->tuning, r->a, r->b, &desc, r->c);
    *ns = spk_context_last_gpu_time_ns(r->ctx);
    return status;
}

static int bench_matmul(spk_context *ctx, int repeats, bool variants, const char *only, spk_dtype weights_dtype) {
    ceilings c;
    if (measure_ceilings(ctx, repeats, &c)) return 1;
    int64_t shapes[][3] = {{1024, 1024, 1024}, {2048, 2048, 2048}, {60, 256, 256},   {60, 1024, 256},
                           {60, 256, 1024},    {1920, 256, 256},   {1920, 1024, 256}, {1920, 256, 1024}};
    size_t shape_count = sizeof shapes / sizeof shapes[0];
    if (only) {
        long long m, n, k;
        if (sscanf(only, "%lldx%lldx%lld", &m, &n, &k) != 3 || m < 1 || n < 1 || k < 1 || m > 2048 || n > 2048 ||
            k > 2048)
            return cli_fail("--shape must be MxNxK with each in [1, 2048], got '%s'", only);
        shapes[0][0] = m, shapes[0][1] = n, shapes[0][2] = k;
        shape_count = 1;
    }
    printf("%-20s %9s %9s %9s %9s  %s\n", "M x N x K (+bias)", "ms", "GFLOP/s", "x FMA", "B MiB", "variant");
    int rc = 0;
    float *host = malloc((size_t)2048 * 2048 * sizeof *host);
    if (!host) return cli_fail("out of host memory");
    fill_random(host, 2048 * 2048);
    for (size_t s = 0; s < shape_count && rc == 0; s++) {
        int64_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        int64_t as[2] = {m, k}, bs[2] = {k, n}, cs[2] = {m, n}, ns[1] = {n};
        matmul_run r = {ctx, NULL, NULL, NULL, NULL, NULL};
        spk_status st = spk_tensor_create(ctx, 2, as, &r.a);
        if (st == SPK_OK) st = spk_tensor_create(ctx, 2, bs, &r.b);
        if (st == SPK_OK) st = spk_tensor_create(ctx, 2, cs, &r.c);
        if (st == SPK_OK) st = spk_tensor_create(ctx, 1, ns, &r.bias);
        if (st == SPK_OK) st = spk_tensor_upload(r.a, host, m * k);
        if (st == SPK_OK) st = spk_tensor_upload(r.b, host, k * n);
        if (st == SPK_OK) st = spk_tensor_upload(r.bias, host, n);
        if (st != SPK_OK) rc = cli_fail("bench case failed: %s", spk_context_last_error(ctx));
        enum { MAX_VARIANTS = 16 };
        spk__matmul_tuning t[MAX_VARIANTS];
        char labels[MAX_VARIANTS][48];
        int nt = 0;
        spk__matmul_tuning_defaults(ctx, &t[nt]);
        snprintf(labels[nt++], sizeof labels[0], "default");
        if (variants) {
            /* The shuffle kernel through texel views and through storage buffers, by block: row
             * sets, rows per set as a share of the subgroup (1, 1/2, 1/4), column groups. */
            uint32_t sg = ctx->caps.max_subgroup_size;
            static const uint32_t blocks[][3] = {{1, 1, 1}, {2, 1, 1}, {4, 1, 1}, {8, 1, 1}, {2, 1, 2}, {4, 1, 2},
                                                 {2, 2, 1}, {4, 2, 1}, {8, 4, 1}, {4, 2, 2}};
            for (int texel = 1; texel >= 0; texel--)
                for (size_t v = 0; v < sizeof blocks / sizeof blocks[0] && nt < MAX_VARIANTS; v++) {
                    uint32_t rows = sg / blocks[v][1];
                    if ((!texel && v != 3 && v != 5) || rows < 2) continue;
                    t[nt] = (spk__matmul_tuning){.wg_x = sg, .tm = rows == sg ? 0 : rows, .shuffle = true,
                                                 .row_sets = blocks[v][0], .tn = blocks[v][2], .texel = texel};
                    snprintf(labels[nt++], sizeof labels[0], "shuffle %s, %u rows x %u cols",
                             texel ? "texel" : "storage", blocks[v][0] * rows, blocks[v][2] * sg * 4);
                }
            if (nt < MAX_VARIANTS) {
                spk__matmul_tuning_tiles(ctx, &t[nt]);
                snprintf(labels[nt++], sizeof labels[0], "shared-memory tiles");
            }
        }
        char name[40];
        snprintf(name, sizeof name, "%lld x %lld x %lld", (long long)m, (long long)n, (long long)k);
        double flops = 2.0 * (double)m * (double)n * (double)k;
        uint64_t f32_time = 0;
        for (int v = 0; v < nt && rc == 0; v++) {
            r.tuning = &t[v];
            uint64_t time = median_ns(run_matmul, &r, repeats);
            double gflops = time ? flops / (double)time : 0;
            if (v == 0) f32_time = time;
            printf("%-20s %9.3f %9.2f %9.2f %9.2f  %s\n", v ? "" : name, time / 1e6, gflops,
                   c.fma_gflops > 0 ? gflops / c.fma_gflops : 0, (double)r.b->ref.size / (1 << 20), labels[v]);
        }
        /* The default kernel again with B stored in 16 bits. */
        if (rc == 0 && weights_dtype != SPK_DTYPE_F32) {
            spk_tensor *b32 = r.b;
            r.b = NULL;
            st = spk_tensor_create_typed(ctx, weights_dtype, 2, bs, &r.b);
            if (st == SPK_OK) st = spk_tensor_upload(r.b, host, k * n);
            r.tuning = &t[0];
            uint64_t time = st == SPK_OK ? median_ns(run_matmul, &r, repeats) : 0;
            double gflops = time ? flops / (double)time : 0;
            if (!time) rc = cli_fail("bench case failed: %s", spk_context_last_error(ctx));
            else
                printf("%-20s %9.3f %9.2f %9.2f %9.2f  default, B %s: %.2fx f32's speed\n", "", time / 1e6, gflops,
                       c.fma_gflops > 0 ? gflops / c.fma_gflops : 0, (double)r.b->ref.size / (1 << 20),
                       spk_dtype_name(weights_dtype), (double)f32_time / (double)time);
            spk_tensor_destroy(b32);
        }
        spk_tensor_destroy(r.a), spk_tensor_destroy(r.b), spk_tensor_destroy(r.c), spk_tensor_destroy(r.bias);
    }
    free(host);
    return rc;
}

typedef struct layer_norm_run {
    spk_context *ctx;
    spk_tensor *x, *gamma, *beta, *y;
} layer_norm_run;

static spk_status run_layer_norm(void *arg, uint64_t *ns) {
    layer_norm_run *r = arg;
    spk_status status = spk_layer_norm(r->ctx, r->x, r->gamma, r->beta, NULL, r->y);
    *ns = spk_context_last_gpu_time_ns(r->ctx);
    return status;
}

static int bench_layer_norm(spk_context *ctx, int repeats, spk_dtype act) {
    ceilings c;
    if (measure_ceilings(ctx, repeats, &c)) return 1;
    static const int64_t shapes[][2] = {{60, 256}, {1920, 256}, {1920, 1024}, {16384, 1024}, {65536, 256}};
    printf("x and y float32%s%s; GB/s count their bytes (gamma and beta, float32, stay cached)\n",
           act != SPK_DTYPE_F32 ? ", then " : "", act != SPK_DTYPE_F32 ? spk_dtype_name(act) : "");
    printf("%-16s %-5s %9s %9s %11s %13s %9s\n", "rows x n", "x, y", "ms", "GB/s", "x copy-sh", "x texel copy", "x f32");
    float *host = malloc((size_t)16384 * 1024 * sizeof *host);
    if (!host) return cli_fail("out of host memory");
    fill_random(host, 16384 * 1024);
    int rc = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0] && rc == 0; s++) {
        int64_t rows = shapes[s][0], n = shapes[s][1];
        int64_t xs[2] = {rows, n}, gs[1] = {n};
        uint64_t f32_time = 0;
        for (int half = 0; half < (act != SPK_DTYPE_F32 ? 2 : 1) && rc == 0; half++) {
            spk_dtype dt = half ? act : SPK_DTYPE_F32;
            layer_norm_run r = {ctx, NULL, NULL, NULL, NULL};
            spk_status st = spk_tensor_create_typed(ctx, dt, 2, xs, &r.x);
            if (st == SPK_OK) st = spk_tensor_create_typed(ctx, dt, 2, xs, &r.y);
            if (st == SPK_OK) st = spk_tensor_create(ctx, 1, gs, &r.gamma);
            if (st == SPK_OK) st = spk_tensor_create(ctx, 1, gs, &r.beta);
            if (st == SPK_OK) st = spk_tensor_upload(r.x, host, rows * n);
            if (st == SPK_OK) st = spk_tensor_upload(r.gamma, host, n);
            if (st == SPK_OK) st = spk_tensor_upload(r.beta, host, n);
            uint64_t time = st == SPK_OK ? median_ns(run_layer_norm, &r, repeats) : 0;
            if (!time) {
                rc = cli_fail("bench case failed: %s", spk_context_last_error(ctx));
            } else {
                if (!half) f32_time = time;
                double g = gbps(2 * (uint64_t)(rows * n) * spk_dtype_size(dt), time);
                char name[32];
                snprintf(name, sizeof name, "%lld x %lld", (long long)rows, (long long)n);
                printf("%-16s %-5s %9.3f %9.2f %11.2f %13.2f %8.2fx\n", half ? "" : name, spk_dtype_name(dt), time / 1e6, g,
                       c.copy_shader > 0 ? g / c.copy_shader : 0, c.copy_texel > 0 ? g / c.copy_texel : 0,
                       (double)f32_time / (double)time);
            }
            spk_tensor_destroy(r.x), spk_tensor_destroy(r.y), spk_tensor_destroy(r.gamma), spk_tensor_destroy(r.beta);
        }
    }
    free(host);
    return rc;
}

int cli_bench(int argc, char **argv) {
    const char *repeats_text = "15", *elements_text = "16777216", *variants_text = "0", *shape = NULL;
    const char *forwards_text = "10000", *dtype_text = NULL, *act_text = NULL, *tuned_text = "0", *attention = NULL;
    cli_option options[] = {{"repeats", &repeats_text},   {"elements", &elements_text}, {"variants", &variants_text},
                            {"shape", &shape},            {"forwards", &forwards_text}, {"weights-dtype", &dtype_text},
                            {"activation-dtype", &act_text}, {"tuned", &tuned_text},    {"attention", &attention}};
    cli_args args;
    if (!cli_parse(argc, argv, options, 9, &args)) return 1;
    spk_model_config dtypes = {0};
    if (!cli_parse_dtypes(dtype_text, act_text, &dtypes) || !cli_parse_attention(attention, &dtypes.attention)) return 1;
    const char *what = args.positional_count ? args.positional[0] : "softpick";
    if (args.positional_count > 1 ||
        (strcmp(what, "softpick") != 0 && strcmp(what, "matmul") != 0 && strcmp(what, "layernorm") != 0 &&
         strcmp(what, "attention") != 0 && strcmp(what, "model") != 0 && strcmp(what, "soak") != 0 &&
         strcmp(what, "train") != 0))
        return cli_fail("bench: unknown benchmark '%s' (available: softpick, matmul, layernorm, attention, model, train, "
                        "soak)",
                        what);
    long repeats, elements, variants, forwards, tuned;
    if (!cli_int(repeats_text, 1, 10000, "--repeats", &repeats) || !cli_int(tuned_text, 0, 1, "--tuned", &tuned) ||
        !cli_int(elements_text, 4096, 1L << 30, "--elements", &elements) ||
        !cli_int(variants_text, 0, 1, "--variants", &variants) ||
        !cli_int(forwards_text, 2, 100000000, "--forwards", &forwards))
        return 1;
    elements = elements / 4096 * 4096;
    spk_context *ctx = cli_context(&args, NULL);
    if (!ctx) return 1;
    spk_device_info info;
    spk_context_device_info(ctx, &info);
    if (cli_dist_get()->rank == 0)
        printf("device: %s (%s, %s), subgroup %u, median of %ld runs after 3 warm-up runs, %s\n\n", info.name,
               spk_device_type_string(info.type), info.driver, info.subgroup_size, repeats,
               cli_dist_get()->size > 1 ? "on each of the ranks" : "GPU timestamps");
    int rc = 0;
    if (spk_context_last_gpu_time_ns(ctx) == 0 && !info.name[0]) rc = cli_fail("no device");
    if (strcmp(what, "matmul") == 0) rc = bench_matmul(ctx, (int)repeats, variants != 0, shape, dtypes.weights_dtype);
    else if (strcmp(what, "layernorm") == 0) rc = bench_layer_norm(ctx, (int)repeats, dtypes.activation_dtype);
    else if (strcmp(what, "attention") == 0) rc = bench_attention(ctx, (int)repeats);
    else if (strcmp(what, "model") == 0)
        rc = bench_model(ctx, (int)repeats, dtypes.weights_dtype, dtypes.activation_dtype, tuned != 0, dtypes.attention);
    else if (strcmp(what, "soak") == 0) rc = bench_soak(ctx, forwards);
    else if (strcmp(what, "train") == 0 && cli_dist_get()->size > 1) rc = bench_train_dist(ctx, (int)repeats);
    else if (strcmp(what, "train") == 0) rc = bench_train(ctx, (int)repeats, tuned != 0);
    else rc = bench_softpick(ctx, (int)repeats, elements, variants != 0, dtypes.activation_dtype);
    spk_context_destroy(ctx);
    return rc;
}
