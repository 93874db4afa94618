/* softpick bench attention | model: the fused attention kernel against the unfused reference,
 * and the whole forward at the default configuration, beside the device's FMA peak. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention_plan.h"
#include "bench.h"
#include "bench_common.h"
#include "internal.h"
#include "cli.h"
#include "model.h"
#include "softpick_plan.h"

/* ---- attention -------------------------------------------------------------------------- */

typedef struct attention_run {
    spk__attention_args args;
    spk_tensor *scores; /* unfused only */
} attention_run;

static spk_status record_fused(spk_context *ctx, const void *arg) {
    const attention_run *r = arg;
    spk__buffer_ref none = {0};
    return spk__record_attention(ctx, NULL, &r->args, SPK__ATTENTION_FUSED, none);
}

/* The unfused reference: scores stored ([batch, heads, seq, seq], future ones zero or, for the
 * exponential normalizers, -inf), the normalizer over each row, then the product with v. */
static spk_status record_unfused(spk_context *ctx, const void *arg) {
    const attention_run *r = arg;
    spk__buffer_ref s = spk__tensor_ref(r->scores);
    spk_status status = spk__record_attention(ctx, NULL, &r->args, SPK__ATTENTION_SCORES, s);
    if (status == SPK_OK) status = spk__record_normalize(ctx, NULL, r->scores, -1, r->args.norm, r->scores);
    if (status == SPK_OK) status = spk__record_attention(ctx, NULL, &r->args, SPK__ATTENTION_PRODUCT, s);
    return status;
}

int bench_attention(spk_context *ctx, int repeats) {
    ceilings c;
    if (measure_ceilings(ctx, repeats, &c)) return 1;
    const int64_t hidden = 256, heads = 4;
    static const int64_t cases[][2] = {{32, 60}, {1, 512}, {1, 2048}}; /* batch, seq */
    printf("causal softpick attention, %lld heads of %lld (hidden %lld); GFLOP/s count the causal half "
           "(4 * head_dim per query-key pair and head); then rectified softpick and softmax: fused ms (x softpick's "
           "fused), unfused ms\n",
           (long long)heads, (long long)(hidden / heads), (long long)hidden);
    printf("%-7s %-5s %11s %11s %9s %13s %9s %26s %26s\n", "batch", "seq", "fused ms", "unfused ms", "speedup",
           "fused GFLOP/s", "x FMA", "rectified", "softmax");
    int rc = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases && rc == 0; i++) {
        int64_t batch = cases[i][0], seq = cases[i][1];
        int64_t shape[3] = {batch, seq, hidden}, s_shape[4] = {batch, heads, seq, seq};
        spk_tensor *q = NULL, *k = NULL, *v = NULL, *o = NULL, *scores = NULL;
        spk_status s = spk_tensor_create(ctx, 3, shape, &q);
        if (s == SPK_OK) s = spk_tensor_create(ctx, 3, shape, &k);
        if (s == SPK_OK) s = spk_tensor_create(ctx, 3, shape, &v);
        if (s == SPK_OK) s = spk_tensor_create(ctx, 3, shape, &o);
        if (s == SPK_OK) s = spk_tensor_create(ctx, 4, s_shape, &scores);
        int64_t n = batch * seq * hidden;
        float *host = s == SPK_OK ? malloc((size_t)n * sizeof *host) : NULL;
        if (host) {
            fill_random(host, n);
            s = spk_tensor_upload(q, host, n);
            if (s == SPK_OK) s = spk_tensor_upload(k, host, n);
            if (s == SPK_OK) s = spk_tensor_upload(v, host, n);
        }
        if (s != SPK_OK || !host) {
            rc = cli_fail("bench attention setup failed: %s", spk_context_last_error(ctx));
        } else {
            uint32_t h = (uint32_t)hidden;
            attention_run r = {{{q->ref, h, 0, q->views, SPK_DTYPE_F32}, {k->ref, h, 0, k->views, SPK_DTYPE_F32},
                                {v->ref, h, 0, v->views, SPK_DTYPE_F32}, {o->ref, h, 0, NULL, SPK_DTYPE_F32}, (uint32_t)batch, (uint32_t)seq, (uint32_t)heads,
                                (uint32_t)(hidden / heads), true, {0}, SPK_NORMALIZER_SOFTPICK},
                               scores};
            recorded_run f = {ctx, record_fused, &r}, u = {ctx, record_unfused, &r};
            uint64_t fused = median_ns(run_recorded, &f, repeats), unfused = median_ns(run_recorded, &u, repeats);
            uint64_t other[2], other_unfused[2]; /* rectified softpick and softmax */
            for (int n = 0; n < 2; n++) {
                r.args.norm = (spk_normalizer)(n + 1);
                other[n] = median_ns(run_recorded, &f, repeats);
                other_unfused[n] = median_ns(run_recorded, &u, repeats);
            }
            r.args.norm = SPK_NORMALIZER_SOFTPICK;
            double flops = 4.0 * (double)hidden * (double)batch * (double)seq * (double)(seq + 1) / 2.0;
            double gflops = fused ? flops / (double)fused : 0;
            printf("%-7lld %-5lld %11.3f %11.3f %8.2fx %13.2f %8.2fx", (long long)batch, (long long)seq, fused / 1e6,
                   unfused / 1e6, fused ? (double)unfused / (double)fused : 0, gflops,
                   c.fma_gflops > 0 ? gflops / c.fma_gflops : 0);
            for (int n = 0; n < 2; n++) {
                printf(" %9.3f %5.2fx %9.3f", other[n] / 1e6, fused ? (double)other[n] / (double)fused : 0,
                       other_unfused[n] / 1e6);
                if (!other[n] || !other_unfused[n]) fused = 0;
            }
            printf("\n");
            if (!fused || !unfused) rc = cli_fail("attention run failed: %s", spk_context_last_error(ctx));
        }
        free(host);
        spk_tensor_destroy(q), spk_tensor_destroy(k), spk_tensor_destroy(v), spk_tensor_destroy(o);
        spk_tensor_destroy(scores);
    }
    return rc;
}

/* ---- model ------------------------------------------------------------------------------ */

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Dense and attention FLOPs of one forward (norms and epilogues are not counted). */
static double model_flops(const spk_model_config *c, int64_t batch, int64_t seq) {
    double rows = (double)(batch * seq), h = c->hidden_size;
    double dense = 2.0 * rows * 12.0 * h * h * c->num_layers;
    if (c->embed_dim != c->hidden_size) dense += 2.0 * rows * c->embed_dim * h;
    double attention = 4.0 * h * (double)batch * (double)seq * (double)(seq + 1) / 2.0 * c->num_layers;
    return dense + attention;
}

/* A dispatch's own cost: 65 against 1 back-to-back copies of 256 floats in one command buffer,
 * per extra dispatch (ns; 0 on failure). */
static double dispatch_cost_ns(spk_context *ctx, int repeats) {
    int64_t n = 256;
    spk_tensor *a = NULL, *b = NULL;
    double cost = 0;
    if (spk_tensor_create(ctx, 1, &n, &a) == SPK_OK && spk_tensor_create(ctx, 1, &n, &b) == SPK_OK) {
        spk__dispatches_args one = {a, b, 1}, many = {a, b, 65};
        recorded_run r1 = {ctx, spk__record_dispatches, &one}, r65 = {ctx, spk__record_dispatches, &many};
        uint64_t t1 = median_ns(run_recorded, &r1, repeats), t65 = median_ns(run_recorded, &r65, repeats);
        cost = t1 && t65 > t1 ? (double)(t65 - t1) / 64.0 : 0;
    }
    spk_tensor_destroy(a), spk_tensor_destroy(b);
    return cost;
}

/* Medians of `repeats` forwards after 3 warm-up ones: host wall time and GPU time (ns); for a
 * model with `profile` set, also of the sum of its per-dispatch times, the dispatch count, and
 * the kernel time by shader summed over the repeats (names[] their shaders). */
enum { MAX_SHADERS = 8 };
typedef struct forward_times {
    double latency, gpu, kernels;
    uint32_t dispatches;
    const char *names[MAX_SHADERS];
    double by_shader[MAX_SHADERS];
} forward_times;

static spk_status time_forwards(spk_model *m, const float *x, int64_t batch, int64_t seq, float *y, int repeats,
                                forward_times *out) {
    spk_context *ctx = m->ctx;
    double *wall = calloc((size_t)repeats, sizeof *wall), *gpu = calloc((size_t)repeats, sizeof *gpu);
    double *kernels = calloc((size_t)repeats, sizeof *kernels);
    uint64_t *times = calloc(SPK__MODEL_PROFILE_DISPATCHES, sizeof *times);
    const char **shaders = calloc(SPK__MODEL_PROFILE_DISPATCHES, sizeof *shaders);
    spk_status s = wall && gpu && kernels && times && shaders ? SPK_OK : SPK_ERROR_OUT_OF_HOST_MEMORY;
    *out = (forward_times){0};
    for (int w = 0; w < 3 && s == SPK_OK; w++) s = spk_model_forward(m, x, batch, seq, y);
    for (int r = 0; r < repeats && s == SPK_OK; r++) {
        double t0 = cli_now_ms();
        s = spk_model_forward(m, x, batch, seq, y);
        wall[r] = (cli_now_ms() - t0) * 1e6; /* ns, as the GPU times */
        gpu[r] = (double)spk_context_last_gpu_time_ns(ctx);
        uint32_t count = spk__model_dispatch_times(m, times, shaders, SPK__MODEL_PROFILE_DISPATCHES);
        out->dispatches = count;
        for (uint32_t d = 0; d < count; d++) {
            kernels[r] += (double)times[d];
            int n = 0;
            while (n < MAX_SHADERS - 1 && out->names[n] && strcmp(out->names[n], shaders[d]) != 0) n++;
            out->names[n] = out->names[n] ? out->names[n] : shaders[d];
            out->by_shader[n] += (double)times[d];
        }
    }
    if (s == SPK_OK) {
        qsort(wall, (size_t)repeats, sizeof *wall, compare_double);
        qsort(gpu, (size_t)repeats, sizeof *gpu, compare_double);
        qsort(kernels, (size_t)repeats, sizeof *kernels, compare_double);
        out->latency = wall[repeats / 2], out->gpu = gpu[repeats / 2], out->kernels = kernels[repeats / 2];
    }
    free(wall), free(gpu), free(kernels), free(times), free(shaders);
    return s;
}

/* The forward at batches 1 and 32 with the dense kernels stored as `dtype`: one table row each.
 * Latency and GPU time come from a model without per-dispatch timestamps (what a user gets); the
 * split by kernel from a twin that times every dispatch (the timestamps themselves cost about
 * 50 us per dispatch on lavapipe, so that run is slower and its kernel times include them). */
static int bench_model_dtype(spk_context *ctx, int repeats, const ceilings *c, double dispatch_ns, spk_dtype dtype,
                             spk_dtype act_dtype, bool tuned, spk_normalizer norm, double f32_latency[2]) {
    spk_model_config cfg = spk_model_config_default(256);
    cfg.weights_dtype = dtype;
    cfg.activation_dtype = act_dtype;
    cfg.attention = norm;
    char label[40];
    snprintf(label, sizeof label, "%s/%s%s%s%s", spk_dtype_name(dtype), spk_dtype_name(act_dtype), tuned ? " tuned" : "",
             norm ? " " : "", norm ? spk_normalizer_name(norm) : "");
    /* The rules' row records its models with the context's tuned choices hidden. */
    uint32_t tuned_count = ctx->tuned_count;
    if (!tuned) ctx->tuned_count = 0;
    spk_model *m = NULL, *profiled = NULL;
    spk_status s = spk_model_create(ctx, &cfg, &m);
    if (s == SPK_OK) s = spk_model_init_random(m, 1);
    if (s == SPK_OK) s = spk_model_create(ctx, &cfg, &profiled);
    if (s == SPK_OK) s = spk_model_init_random(profiled, 1);
    if (s != SPK_OK) {
        spk_model_destroy(m), spk_model_destroy(profiled);
        ctx->tuned_count = tuned_count;
        return cli_fail("bench model setup failed: %s", spk_context_last_error(ctx));
    }
    profiled->profile = true;
    static const int64_t batches[] = {1, 32};
    int rc = 0;
    int64_t seq = cfg.window_size;
    for (size_t i = 0; i < 2 && rc == 0; i++) {
        int64_t batch = batches[i], n_in = batch * seq * cfg.embed_dim;
        float *x = malloc((size_t)n_in * sizeof *x), *y = malloc((size_t)(batch * cfg.hidden_size) * sizeof *y);
        forward_times plain, prof;
        s = x && y ? SPK_OK : SPK_ERROR_OUT_OF_HOST_MEMORY;
        if (s == SPK_OK) fill_random(x, n_in);
        if (s == SPK_OK) s = time_forwards(m, x, batch, seq, y, repeats, &plain);
        if (s == SPK_OK) s = time_forwards(profiled, x, batch, seq, y, repeats, &prof);
        if (s != SPK_OK) {
            rc = cli_fail("forward failed: %s", spk_context_last_error(ctx));
        } else {
            double lat = plain.latency, g = plain.gpu, k = prof.kernels;
            double gflops = g > 0 ? model_flops(&cfg, batch, seq) / g : 0;
            if (dtype == SPK_DTYPE_F32 && act_dtype == SPK_DTYPE_F32 && !tuned && !norm) f32_latency[i] = lat;
            printf("%-26s %-6lld %12.2f %9.2f %11.2f %10.1f %12.2f %8.2fx %14.1f%% %8.2fx\n", label,
                   (long long)batch, lat / 1e6, g / 1e6, k / 1e6, (double)batch * 1e9 / lat, gflops,
                   c->fma_gflops > 0 ? gflops / c->fma_gflops : 0,
                   prof.latency > 0 ? 100.0 * (1.0 - k / prof.latency) : 0, lat > 0 ? f32_latency[i] / lat : 0);
            double total = 0;
            for (int n = 0; n < MAX_SHADERS; n++) total += prof.by_shader[n];
            printf("       kernel time by shader:");
            for (int n = 0; n < MAX_SHADERS && prof.names[n]; n++)
                printf(" %s %.1f%%", prof.names[n], total > 0 ? 100.0 * prof.by_shader[n] / total : 0);
            double cost = (lat - g) + prof.dispatches * dispatch_ns;
            printf("\n       profiled latency %.2f ms; outside kernels by dispatch count: host %.2f ms + %u "
                   "dispatches x %.1f us = %.2f ms, %.1f%% of the latency\n",
                   prof.latency / 1e6, (lat - g) / 1e6, prof.dispatches, dispatch_ns / 1e3, cost / 1e6,
                   lat > 0 ? 100.0 * cost / lat : 0);
        }
        free(x), free(y);
    }
    spk_model_memory_info mem;
    spk_model_memory(m, &mem);
    printf("          device memory, %s: weights %.2f MiB, activations %.2f MiB (batch 32)\n", label,
           (double)mem.weights / (1 << 20), (double)mem.activations / (1 << 20));
    spk_model_destroy(m), spk_model_destroy(profiled);
    ctx->tuned_count = tuned_count;
    return rc;
}

int bench_model(spk_context *ctx, int repeats, spk_dtype weights_dtype, spk_dtype activation_dtype, bool tuned,
                spk_normalizer attention) {
    ceilings c;
    if (measure_ceilings(ctx, repeats, &c)) return 1;
    spk_model_config cfg = spk_model_config_default(256);
    double dispatch_ns = dispatch_cost_ns(ctx, repeats);
    printf("a dispatch alone: %.1f us (65 against 1 back-to-back copies of 256 floats in one command buffer)\n\n",
           dispatch_ns / 1e3);
    printf("model: embed %d, hidden %d, %d heads, %d layers, seq %d, output last; latency = host wall time of "
           "spk_model_forward (upload, one submit, wait, download); GPU = timestamps around the command buffer; "
           "kernels = sum of per-dispatch timestamps, in a twin model that records them (outside kernels: its "
           "share of that twin's latency); types = storage of the dense kernels / of the activations (tuned: on the tuning file's choices; x f32: speedup over the rules' f32 row)\n",
           cfg.embed_dim, cfg.hidden_size, cfg.num_heads, cfg.num_layers, cfg.window_size);
    printf("%-26s %-6s %12s %9s %11s %10s %12s %9s %15s %9s\n", "types", "batch", "latency ms", "GPU ms", "kernels ms",
           "seq/s", "GFLOP/s GPU", "x FMA", "outside kernels", "x f32");
    double f32_latency[2] = {0, 0};
    int rc = bench_model_dtype(ctx, repeats, &c, dispatch_ns, SPK_DTYPE_F32, SPK_DTYPE_F32, false, 0, f32_latency);
    if (rc == 0 && attention) /* another normalizer beside the seed's, in the same run */
        rc = bench_model_dtype(ctx, repeats, &c, dispatch_ns, SPK_DTYPE_F32, SPK_DTYPE_F32, false, attention, f32_latency);
    if (rc == 0 && tuned) { /* the tuning file's choices beside the rules, in the same run */
        uint32_t entries;
        const char *path = spk_context_tuning_path(ctx, &entries);
        printf("          tuned: %u choices from %s\n", entries, path[0] ? path : "(no tuning file)");
        rc = bench_model_dtype(ctx, repeats, &c, dispatch_ns, SPK_DTYPE_F32, SPK_DTYPE_F32, true, 0, f32_latency);
    }
    if (rc == 0 && (weights_dtype != SPK_DTYPE_F32 || activation_dtype != SPK_DTYPE_F32))
        rc = bench_model_dtype(ctx, repeats, &c, dispatch_ns, weights_dtype, activation_dtype, tuned, 0, f32_latency);
    printf("(model FLOPs per forward: %.3f GFLOP at batch 1, %.3f at batch 32)\n", model_flops(&cfg, 1, cfg.window_size) / 1e9,
           model_flops(&cfg, 32, cfg.window_size) / 1e9);
    return rc;
}

/* ---- soak ------------------------------------------------------------------------------- */

/* Resident set size of this process in bytes (Linux), 0 if unknown. */
static uint64_t resident_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%llu %llu", &size, &resident) != 2) resident = 0;
        fclose(f);
    }
    return (uint64_t)resident * 4096u;
}

int bench_soak(spk_context *ctx, long forwards) {
    spk_model_config cfg = spk_model_config_default(256);
    spk_model *m = NULL;
    spk_status s = spk_model_create(ctx, &cfg, &m);
    if (s == SPK_OK) s = spk_model_init_random(m, 1);
    if (s != SPK_OK) return cli_fail("bench soak setup failed: %s", spk_context_last_error(ctx));
    int64_t seq = cfg.window_size, n_in = seq * cfg.embed_dim;
    float *x = malloc((size_t)n_in * sizeof *x), *y = malloc((size_t)cfg.hidden_size * sizeof *y);
    if (!x || !y) s = SPK_ERROR_OUT_OF_HOST_MEMORY;
    else fill_random(x, n_in);
    printf("soak: %ld forwards of the default model (embed 256, seq %lld, batch 1); host RSS and the device "
           "memory the library holds (allocated blocks / in use)\n",
           forwards, (long long)seq);
    printf("%-10s %12s %14s %12s %12s\n", "forwards", "host RSS MiB", "device MiB", "in use MiB", "last ms");
    long checkpoints[3] = {1, forwards / 2, forwards};
    int next = 0;
    double t0 = cli_now_ms();
    for (long i = 1; i <= forwards && s == SPK_OK; i++) {
        s = spk_model_forward(m, x, 1, seq, y);
        while (next < 3 && i == checkpoints[next]) {
            uint64_t allocated, used;
            spk__memory_in_use(ctx, &allocated, &used);
            printf("%-10ld %12.2f %14.2f %12.2f %12.2f\n", i, (double)resident_bytes() / (1 << 20),
                   (double)allocated / (1 << 20), (double)used / (1 << 20),
                   (double)spk_context_last_gpu_time_ns(ctx) / 1e6);
            fflush(stdout);
            next++;
        }
    }
    printf("(%.1f s in all)\n", (cli_now_ms() - t0) / 1e3);
    int rc = s == SPK_OK ? 0 : cli_fail("forward failed: %s", spk_context_last_error(ctx));
    free(x), free(y);
    spk_model_destroy(m);
    return rc;
}
