/* spk_softpick_attention against a float64 reference: sequence lengths, head counts and head
 * dimensions over the grid, causal and not; causality; batch independence; the unfused
 * reference path the benchmark compares against; error paths. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention_plan.h"
#include "harness.h"
#include "softpick_plan.h"

/* float64 attention of one batch row: q, k, v, out are [seq, hidden]. */
static void ref_attention(const float *q, const float *k, const float *v, int64_t seq, int64_t heads,
                          int64_t head_dim, bool causal, double *out) {
    int64_t hidden = heads * head_dim;
    double *s = malloc((size_t)seq * sizeof *s);
    assert_non_null(s);
    for (int64_t h = 0; h < heads; h++) {
        for (int64_t i = 0; i < seq; i++) {
            double den = 1.0;
            for (int64_t j = 0; j < seq; j++) {
                double dot = 0;
                for (int64_t d = 0; d < head_dim; d++)
                    dot += (double)q[i * hidden + h * head_dim + d] * k[j * hidden + h * head_dim + d];
                s[j] = causal && j > i ? 0.0 : dot / sqrt((double)head_dim);
                den += fabs(s[j]);
            }
            for (int64_t d = 0; d < head_dim; d++) {
                double acc = 0;
                for (int64_t j = 0; j < seq; j++) acc += s[j] / den * v[j * hidden + h * head_dim + d];
                out[i * hidden + h * head_dim + d] = acc;
            }
        }
    }
    free(s);
}

typedef struct attention_data {
    int64_t shape[3];
    float *q, *k, *v, *out;
    spk_tensor *tq, *tk, *tv, *tout;
} attention_data;

static spk_dtype g_dtype; /* F16 activations: q, k, v and the output stored in 16 bits */

static void data_init(spk_context *ctx, attention_data *a, int64_t batch, int64_t seq, int64_t hidden,
                      uint64_t seed) {
    *a = (attention_data){.shape = {batch, seq, hidden}};
    int64_t n = batch * seq * hidden;
    a->q = test_alloc_floats(n), a->k = test_alloc_floats(n), a->v = test_alloc_floats(n);
    a->out = test_alloc_floats(n);
    /* Scaled up so that the |s| sums, not the 1, dominate the denominators. */
    test_fill_random(a->q, n, seed);
    test_fill_random(a->k, n, seed + 1);
    test_fill_random(a->v, n, seed + 2);
    for (int64_t i = 0; i < n; i++) a->q[i] *= 3.0f;
    test_round_to(g_dtype, a->q, n), test_round_to(g_dtype, a->k, n), test_round_to(g_dtype, a->v, n);
    assert_int_equal(spk_tensor_create_typed(ctx, g_dtype, 3, a->shape, &a->tq), SPK_OK);
    assert_int_equal(spk_tensor_create_typed(ctx, g_dtype, 3, a->shape, &a->tk), SPK_OK);
    assert_int_equal(spk_tensor_create_typed(ctx, g_dtype, 3, a->shape, &a->tv), SPK_OK);
    assert_int_equal(spk_tensor_create_typed(ctx, g_dtype, 3, a->shape, &a->tout), SPK_OK);
}

static void data_upload(attention_data *a) {
    int64_t n = a->shape[0] * a->shape[1] * a->shape[2];
    assert_int_equal(spk_tensor_upload(a->tq, a->q, n), SPK_OK);
    assert_int_equal(spk_tensor_upload(a->tk, a->k, n), SPK_OK);
    assert_int_equal(spk_tensor_upload(a->tv, a->v, n), SPK_OK);
    test_poison(a->tout);
}

static void data_run(spk_context *ctx, attention_data *a, int heads, bool causal) {
    data_upload(a);
    spk_status s = spk_softpick_attention(ctx, a->tq, a->tk, a->tv, heads, causal, a->tout);
    if (s != SPK_OK) fail_msg("attention failed: %s", spk_context_last_error(ctx));
    int64_t n = a->shape[0] * a->shape[1] * a->shape[2];
    assert_int_equal(spk_tensor_download(a->tout, a->out, n), SPK_OK);
}

static void data_free(attention_data *a) {
    spk_tensor_destroy(a->tq), spk_tensor_destroy(a->tk), spk_tensor_destroy(a->tv), spk_tensor_destroy(a->tout);
    free(a->q), free(a->k), free(a->v), free(a->out);
}

/* max |out - ref| / max |ref| over the whole batch. */
static double data_error(const attention_data *a, int heads, bool causal) {
    int64_t seq = a->shape[1], hidden = a->shape[2], row = seq * hidden;
    double *ref = malloc((size_t)row * sizeof *ref);
    assert_non_null(ref);
    double max_err = 0, max_ref = 0;
    for (int64_t b = 0; b < a->shape[0]; b++) {
        ref_attention(a->q + b * row, a->k + b * row, a->v + b * row, seq, heads, hidden / heads, causal, ref);
        for (int64_t i = 0; i < row; i++) {
            double err = fabs(ref[i] - a->out[b * row + i]);
            if (!(err <= max_err)) max_err = err;
            if (fabs(ref[i]) > max_ref) max_ref = fabs(ref[i]);
        }
    }
    free(ref);
    return max_err / (max_ref > 0 ? max_ref : 1);
}

static void grid(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    static const int64_t seqs[] = {1, 2, 17, 60, 61, 300};
    static const int heads_list[] = {1, 3, 4, 8};
    static const int64_t dims[] = {1, 8, 16, 33, 64, 128};
    int cases = 0;
    for (size_t si = 0; si < sizeof seqs / sizeof *seqs; si++)
        for (size_t di = 0; di < sizeof dims / sizeof *dims; di++)
            for (int causal = 0; causal < 2; causal++) {
                /* Every head count with every sequence length and head dimension over the grid,
                 * without the full product (the float64 reference is the slow part). */
                int heads = heads_list[(si + di + (size_t)causal) % 4];
                if (seqs[si] == 300 && dims[di] == 128 && heads == 8) heads = 4;
                attention_data a;
                data_init(ctx, &a, 2, seqs[si], heads * dims[di], 100 + (uint64_t)cases);
                data_run(ctx, &a, heads, causal);
                double err = data_error(&a, heads, causal);
                if (!(err <= 1e-5))
                    fail_msg("seq %lld heads %d head_dim %lld causal %d: error %.3g", (long long)seqs[si], heads,
                             (long long)dims[di], causal, err);
                data_free(&a);
                cases++;
            }
    test_assert_no_validation();
}

static void every_head_count_at_seq_60(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    static const int heads_list[] = {1, 3, 4, 8};
    for (size_t i = 0; i < 4; i++) {
        attention_data a;
        data_init(ctx, &a, 3, 60, heads_list[i] * 16, 7 + i);
        data_run(ctx, &a, heads_list[i], true);
        double err = data_error(&a, heads_list[i], true);
        if (!(err <= 1e-5)) fail_msg("heads %d: error %.3g", heads_list[i], err);
        data_free(&a);
    }
    test_assert_no_validation();
}

static void head_dim_256(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    attention_data a;
    data_init(ctx, &a, 1, 70, 512, 9);
    data_run(ctx, &a, 2, true);
    double err = data_error(&a, 2, true);
    if (!(err <= 1e-5)) fail_msg("head_dim 256: error %.3g", err);
    data_free(&a);
    test_assert_no_validation();
}

/* Changing keys and values after position i leaves rows 0..i unchanged, bit for bit; every later
 * row changes. */
static void causality(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    const int64_t seq = 61, hidden = 32, i = 40;
    attention_data a;
    data_init(ctx, &a, 1, seq, hidden, 21);
    data_run(ctx, &a, 4, true);
    float *before = test_alloc_floats(seq * hidden);
    memcpy(before, a.out, (size_t)(seq * hidden) * sizeof(float));
    for (int64_t j = (i + 1) * hidden; j < seq * hidden; j++) a.k[j] = -a.k[j] * 2.0f, a.v[j] += 1.0f;
    data_run(ctx, &a, 4, true);
    assert_memory_equal(before, a.out, (size_t)((i + 1) * hidden) * sizeof(float));
    for (int64_t t = i + 1; t < seq; t++)
        assert_memory_not_equal(before + t * hidden, a.out + t * hidden, (size_t)hidden * sizeof(float));
    free(before);
    data_free(&a);
    test_assert_no_validation();
}

/* Each batch row's result is the same alone as within a batch of 33. */
static void batch_rows_independent(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    const int64_t seq = 17, hidden = 24, row = seq * hidden;
    attention_data all, one;
    data_init(ctx, &all, 33, seq, hidden, 31);
    data_run(ctx, &all, 3, true);
    data_init(ctx, &one, 1, seq, hidden, 99);
    for (int64_t b = 0; b < 33; b += 8) {
        memcpy(one.q, all.q + b * row, (size_t)row * sizeof(float));
        memcpy(one.k, all.k + b * row, (size_t)row * sizeof(float));
        memcpy(one.v, all.v + b * row, (size_t)row * sizeof(float));
        data_run(ctx, &one, 3, true);
        assert_memory_equal(one.out, all.out + b * row, (size_t)row * sizeof(float));
    }
    data_free(&all);
    data_free(&one);
    test_assert_no_validation();
}

typedef struct unfused_args {
    const spk__attention_args *args;
    const spk_tensor *scores;
    const spk__attention_tuning *tuning;
} unfused_args;

static spk_status record_unfused(spk_context *ctx, const void *arg) {
    const unfused_args *u = arg;
    spk_status s = spk__record_attention(ctx, u->tuning, u->args, SPK__ATTENTION_SCORES, u->scores->ref);
    if (s == SPK_OK) s = spk__record_softpick(ctx, NULL, u->scores, -1, (spk_tensor *)u->scores);
    if (s == SPK_OK) s = spk__record_attention(ctx, u->tuning, u->args, SPK__ATTENTION_PRODUCT, u->scores->ref);
    return s;
}

static spk_status record_fused(spk_context *ctx, const void *arg) {
    const unfused_args *u = arg;
    spk__buffer_ref none = {0};
    return spk__record_attention(ctx, u->tuning, u->args, SPK__ATTENTION_FUSED, none);
}

/* The benchmark's unfused reference (scores stored, softpick, product) computes the same. */
static void unfused_reference_path(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    const int64_t seq = 45, heads = 2, hidden = 32;
    attention_data a;
    data_init(ctx, &a, 2, seq, hidden, 41);
    data_upload(&a);
    int64_t s_shape[4] = {2, heads, seq, seq};
    spk_tensor *scores = NULL;
    assert_int_equal(spk_tensor_create(ctx, 4, s_shape, &scores), SPK_OK);
    uint32_t h = (uint32_t)hidden;
    spk__attention_args args = {
        .q = {spk__tensor_ref(a.tq), h, 0, NULL, SPK_DTYPE_F32}, .k = {spk__tensor_ref(a.tk), h, 0, NULL, SPK_DTYPE_F32}, .v = {spk__tensor_ref(a.tv), h, 0, NULL, SPK_DTYPE_F32},
        .out = {spk__tensor_ref(a.tout), h, 0, NULL, SPK_DTYPE_F32}, .batch = 2, .seq = (uint32_t)seq, .heads = (uint32_t)heads,
        .head_dim = (uint32_t)(hidden / heads), .causal = true,
    };
    spk__attention_tuning tunings[2];
    spk__attention_tuning_tiles(ctx, args.head_dim, args.seq, &tunings[0]);
    spk__attention_tuning_shuffle(ctx, false, &tunings[1]);
    for (int t = 0; t < (spk__attention_shuffle_supported(ctx) ? 2 : 1); t++) {
        test_poison(a.tout);
        unfused_args u = {&args, scores, &tunings[t]};
        assert_int_equal(spk__run_sync(ctx, record_unfused, &u), SPK_OK);
        assert_int_equal(spk_tensor_download(a.tout, a.out, 2 * seq * hidden), SPK_OK);
        double err = data_error(&a, (int)heads, true);
        if (!(err <= 1e-5)) fail_msg("unfused (shuffle %d): error %.3g", tunings[t].shuffle, err);
    }
    spk_tensor_destroy(scores);
    data_free(&a);
    test_assert_no_validation();
}

/* The shared-memory tile kernel (the GPU default) and the storage-buffer shuffle kernel on a
 * sample of the grid, here too. */
static void tile_kernel(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    static const struct {
        int64_t seq, heads, dim;
    } cases[] = {{1, 1, 1}, {17, 3, 33}, {61, 4, 64}, {300, 8, 16}, {70, 2, 256}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        for (int causal = 0; causal < 2; causal++) {
            attention_data a;
            data_init(ctx, &a, 2, cases[i].seq, cases[i].heads * cases[i].dim, 60 + i);
            data_upload(&a);
            uint32_t h = (uint32_t)(cases[i].heads * cases[i].dim);
            spk__attention_args args = {
                .q = {spk__tensor_ref(a.tq), h, 0, NULL, SPK_DTYPE_F32}, .k = {spk__tensor_ref(a.tk), h, 0, NULL, SPK_DTYPE_F32},
                .v = {spk__tensor_ref(a.tv), h, 0, NULL, SPK_DTYPE_F32}, .out = {spk__tensor_ref(a.tout), h, 0, NULL, SPK_DTYPE_F32}, .batch = 2,
                .seq = (uint32_t)cases[i].seq, .heads = (uint32_t)cases[i].heads, .head_dim = (uint32_t)cases[i].dim,
                .causal = causal,
            };
            /* The tiles, and the shuffle kernel through storage buffers (these operands have no
             * texel views: the path wrapped application buffers take). */
            spk__attention_tuning kernels[2];
            spk__attention_tuning_tiles(ctx, args.head_dim, args.seq, &kernels[0]);
            spk__attention_tuning_shuffle(ctx, false, &kernels[1]);
            kernels[1].workgroup = ctx->caps.max_subgroup_size; /* one subgroup per workgroup too */
            /* (At head size 256 the shuffle kernel is head_dim_256's, through texel views: through
             * storage buffers it is the code tested here at 64, unrolled 4x further, 390k lines of
             * LLVM IR that Mesa 25 compiles in a minute.) */
            bool shuffle = spk__attention_shuffle_supported(ctx) && cases[i].dim < 256;
            for (int k = 0; k < (shuffle ? 2 : 1); k++) {
                test_poison(a.tout);
                unfused_args u = {&args, NULL, &kernels[k]};
                assert_int_equal(spk__run_sync(ctx, record_fused, &u), SPK_OK);
                assert_int_equal(spk_tensor_download(a.tout, a.out, 2 * cases[i].seq * h), SPK_OK);
                double err = data_error(&a, (int)cases[i].heads, causal);
                if (!(err <= 1e-5)) fail_msg("%s, case %zu causal %d: error %.3g", k ? "shuffle" : "tiles", i, causal, err);
            }
            data_free(&a);
        }
    test_assert_no_validation();
}

/* F16 activations: q, k, v and the output in 16 bits, on every kernel (the tiles, the shuffle
 * kernel through storage buffers and through texel views), against float64 on the stored q, k
 * and v; an F16 output rounds once more (bound 1e-3). */
static void half_activations(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    if (!ctx->caps.storage16) {
        attention_data a;
        g_dtype = SPK_DTYPE_F16;
        data_init(ctx, &a, 1, 4, 8, 1);
        g_dtype = SPK_DTYPE_F32;
        assert_int_equal(spk_softpick_attention(ctx, a.tq, a.tk, a.tv, 2, true, a.tout), SPK_ERROR_UNSUPPORTED);
        data_free(&a);
        return;
    }
    static const struct {
        int64_t seq, heads, dim;
    } cases[] = {{1, 1, 1}, {17, 3, 33}, {61, 4, 64}, {70, 2, 128}};
    double worst = 0;
    g_dtype = SPK_DTYPE_F16;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        attention_data a;
        data_init(ctx, &a, 2, cases[i].seq, cases[i].heads * cases[i].dim, 80 + i);
        data_upload(&a);
        uint32_t h = (uint32_t)(cases[i].heads * cases[i].dim);
        spk__attention_args args = {
            .q = {spk__tensor_ref(a.tq), h, 0, a.tq->views, SPK_DTYPE_F16},
            .k = {spk__tensor_ref(a.tk), h, 0, a.tk->views, SPK_DTYPE_F16},
            .v = {spk__tensor_ref(a.tv), h, 0, a.tv->views, SPK_DTYPE_F16},
            .out = {spk__tensor_ref(a.tout), h, 0, NULL, SPK_DTYPE_F16}, .batch = 2, .seq = (uint32_t)cases[i].seq,
            .heads = (uint32_t)cases[i].heads, .head_dim = (uint32_t)cases[i].dim, .causal = true,
        };
        spk__attention_tuning kernels[3];
        spk__attention_tuning_tiles(ctx, args.head_dim, args.seq, &kernels[0]);
        spk__attention_tuning_shuffle(ctx, false, &kernels[1]);
        spk__attention_tuning_shuffle(ctx, true, &kernels[2]);
        for (int k = 0; k < (spk__attention_shuffle_supported(ctx) ? 3 : 1); k++) {
            test_poison(a.tout);
            unfused_args u = {&args, NULL, &kernels[k]};
            assert_int_equal(spk__run_sync(ctx, record_fused, &u), SPK_OK);
            assert_int_equal(spk_tensor_download(a.tout, a.out, 2 * cases[i].seq * h), SPK_OK);
            double err = data_error(&a, (int)cases[i].heads, true);
            if (!(err <= 1e-3)) fail_msg("F16, kernel %d, case %zu: error %.3g", k, i, err);
            worst = err > worst ? err : worst;
        }
        data_run(ctx, &a, (int)cases[i].heads, true); /* the public op, on the device's default kernel */
        double err = data_error(&a, (int)cases[i].heads, true);
        if (!(err <= 1e-3)) fail_msg("F16, spk_softpick_attention, case %zu: error %.3g", i, err);
        data_free(&a);
    }
    g_dtype = SPK_DTYPE_F32;
    print_message("F16 activations: worst relative error %.2e (bound 1e-3)\n", worst);
    /* q, k and v share one dtype. */
    attention_data a;
    data_init(ctx, &a, 1, 4, 8, 1);
    spk_tensor *k16 = NULL;
    assert_int_equal(spk_tensor_create_typed(ctx, SPK_DTYPE_F16, 3, a.shape, &k16), SPK_OK);
    assert_int_equal(spk_softpick_attention(ctx, a.tq, k16, a.tv, 2, true, a.tout), SPK_ERROR_UNSUPPORTED);
    assert_non_null(strstr(spk_context_last_error(ctx), "k (q's dtype) is f16"));
    spk_tensor_destroy(k16);
    data_free(&a);
    test_assert_no_validation();
}

/* ---- backward ------------------------------------------------------------------------------- */

/* float64 backward of one batch row ([seq, hidden] each): r, then dq, dk, dv for output gradient g. */
static void ref_attention_backward(const float *q, const float *k, const float *v, const float *g, int64_t seq,
                                   int64_t heads, int64_t hd, bool causal, double *r, double *dq, double *dk,
                                   double *dv) {
    int64_t hidden = heads * hd;
    double *s = malloc((size_t)(seq * seq) * sizeof *s), *o = malloc((size_t)hd * sizeof *o);
    assert_non_null(s), assert_non_null(o);
    for (int64_t i = 0; i < seq * hidden; i++) dq[i] = dk[i] = dv[i] = 0;
    double scale = 1.0 / sqrt((double)hd);
    for (int64_t h = 0; h < heads; h++) {
        const int64_t c = h * hd;
        for (int64_t i = 0; i < seq; i++) {
            double den = 1.0;
            for (int64_t j = 0; j < seq; j++) {
                double dot = 0;
                for (int64_t d = 0; d < hd; d++) dot += (double)q[i * hidden + c + d] * k[j * hidden + c + d];
                s[i * seq + j] = causal && j > i ? 0.0 : dot * scale;
                den += fabs(s[i * seq + j]);
            }
            r[h * seq + i] = den;
        }
        for (int64_t i = 0; i < seq; i++) {
            double ri = r[h * seq + i], di = 0;
            for (int64_t d = 0; d < hd; d++) {
                o[d] = 0;
                for (int64_t j = 0; j < seq; j++) o[d] += s[i * seq + j] / ri * v[j * hidden + c + d];
                di += (double)g[i * hidden + c + d] * o[d];
            }
            for (int64_t j = 0; j < seq; j++) {
                if (causal && j > i) continue;
                double sij = s[i * seq + j], dp = 0, sg = sij > 0 ? 1.0 : sij < 0 ? -1.0 : 0.0;
                for (int64_t d = 0; d < hd; d++) dp += (double)g[i * hidden + c + d] * v[j * hidden + c + d];
                double ds = (dp - sg * di) / ri;
                for (int64_t d = 0; d < hd; d++) {
                    dq[i * hidden + c + d] += ds * k[j * hidden + c + d] * scale;
                    dk[j * hidden + c + d] += ds * q[i * hidden + c + d] * scale;
                    dv[j * hidden + c + d] += sij / ri * g[i * hidden + c + d];
                }
            }
        }
    }
    free(s), free(o);
}

/* Kernels: 0 this device's default, 1 the shuffle kernel through storage buffers, 2 the exchange
 * through shared memory (devices without fixed-size subgroup shuffles). */
static void check_backward(spk_context *ctx, int kernel, int64_t batch, int64_t seq, int heads, int64_t hd, bool causal) {
    attention_data a;
    int64_t hidden = heads * hd, n = batch * seq * hidden, rs[3] = {batch, heads, seq};
    data_init(ctx, &a, batch, seq, hidden, (uint64_t)(seq * 13 + hd));
    data_upload(&a);
    float *g = test_alloc_floats(n), *got = test_alloc_floats(3 * n + batch * heads * seq), *again = test_alloc_floats(3 * n);
    test_fill_random(g, n, 5);
    spk_tensor *tr = NULL, *tg = NULL, *tdq = NULL, *tdk = NULL, *tdv = NULL;
    assert_int_equal(spk_tensor_create(ctx, 3, rs, &tr), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 3, a.shape, &tg), SPK_OK);
    assert_int_equal(spk_tensor_upload(tg, g, n), SPK_OK);
    spk_tensor **outs[3] = {&tdq, &tdk, &tdv};
    for (int i = 0; i < 3; i++) assert_int_equal(spk_tensor_create(ctx, 3, a.shape, outs[i]), SPK_OK), test_poison(*outs[i]);
    test_poison(tr);
    if (spk_softpick_attention_train(ctx, a.tq, a.tk, a.tv, heads, causal, a.tout, tr) != SPK_OK)
        fail_msg("%s", spk_context_last_error(ctx));
    spk_attention_grads grads = {tdq, tdk, tdv};
    spk__attention_tuning tuning;
    spk__attention_backward_tuning(ctx, false, kernel >= 2, &tuning);
    if (kernel == 3) tuning.workgroup = 4; /* the exchange in groups of 4 (see below) */
    spk_attention_desc desc = {.num_heads = heads, .causal = causal};
    for (int run = 0; run < 2; run++) {
        spk_status st = kernel == 0 ? spk_softpick_attention_backward(ctx, a.tq, a.tk, a.tv, a.tout, tr, tg, heads, causal, &grads)
                                    : spk__attention_backward_tuned(ctx, &tuning, &desc, a.tq, a.tk, a.tv, a.tout, tr,
                                                                    tg, &grads);
        if (st != SPK_OK) fail_msg("attention backward: %s", spk_context_last_error(ctx));
        float *dst = run ? again : got;
        for (int i = 0; i < 3; i++) assert_int_equal(spk_tensor_download(*outs[i], dst + i * n, n), SPK_OK);
    }
    /* Deterministic: the second run gives the same bits. */
    assert_memory_equal(got, again, (size_t)(3 * n) * sizeof *got);
    assert_int_equal(spk_tensor_download(tr, got + 3 * n, batch * heads * seq), SPK_OK);
    int64_t row = seq * hidden;
    double *want = malloc((size_t)(3 * n + batch * heads * seq) * sizeof *want);
    assert_non_null(want);
    for (int64_t b = 0; b < batch; b++)
        ref_attention_backward(a.q + b * row, a.k + b * row, a.v + b * row, g + b * row, seq, heads, hd, causal,
                               want + 3 * n + b * heads * seq, want + b * row, want + n + b * row, want + 2 * n + b * row);
    double e[4] = {test_rel_error(got, want, n), test_rel_error(got + n, want + n, n), test_rel_error(got + 2 * n, want + 2 * n, n),
                   test_rel_error(got + 3 * n, want + 3 * n, batch * heads * seq)};
    if (!(e[0] <= 2e-5 && e[1] <= 2e-5 && e[2] <= 2e-5 && e[3] <= 1e-5))
        fail_msg("attention backward (kernel %d) seq %lld heads %d head_dim %lld causal %d: dq %.3g dk %.3g dv %.3g r %.3g",
                 kernel, (long long)seq, heads, (long long)hd, causal, e[0], e[1], e[2], e[3]);
    spk_tensor_destroy(tr), spk_tensor_destroy(tg), spk_tensor_destroy(tdq), spk_tensor_destroy(tdk), spk_tensor_destroy(tdv);
    free(g), free(got), free(again), free(want);
    data_free(&a);
    test_assert_no_validation();
}

static void backward_grid(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    static const struct {
        int64_t seq;
        int heads;
        int64_t hd;
    } cases[] = {{1, 2, 4}, {7, 1, 1}, {33, 3, 5}, {60, 4, 16}, {65, 2, 64}, {300, 1, 128}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        for (int causal = 0; causal < 2; causal++) check_backward(ctx, 0, 2, cases[i].seq, cases[i].heads, cases[i].hd, causal);
}

static void backward_every_kernel(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    /* Kernel 1 exchanges by shuffles, 2 through shared memory in the rule's groups of 16, 3 the
     * same code in groups of 4: a barrier per exchange unrolled 16 x D / 4 times makes 160-210k
     * lines of LLVM IR per pass on CPU drivers (2 minutes on Mesa 25), for devices that are GPUs. */
    for (int kernel = 1; kernel < 3; kernel++) {
        if (kernel == 1 && !spk__attention_shuffle_supported(ctx)) continue;
        check_backward(ctx, kernel, 2, 33, 3, 5, true);
        check_backward(ctx, kernel == 2 ? 3 : kernel, 1, 70, 2, 16, false);
    }
}

static void backward_errors(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    attention_data a;
    data_init(ctx, &a, 1, 4, 8, 1);
    int64_t rs[3] = {1, 2, 4}, bad_r[3] = {1, 4, 4};
    spk_tensor *r = NULL, *bad = NULL, *g = NULL;
    assert_int_equal(spk_tensor_create(ctx, 3, rs, &r), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 3, bad_r, &bad), SPK_OK);
    assert_int_equal(spk_tensor_create(ctx, 3, a.shape, &g), SPK_OK);
    assert_int_equal(spk_softpick_attention_train(ctx, a.tq, a.tk, a.tv, 2, true, a.tout, bad), SPK_ERROR_SHAPE);
    assert_int_equal(spk_softpick_attention_train(ctx, a.tq, a.tk, a.tv, 2, true, a.tout, a.tq), SPK_ERROR_SHAPE);
    spk_attention_grads grads = {g, g, g};
    assert_int_equal(spk_softpick_attention_backward(ctx, a.tq, a.tk, a.tv, a.tout, r, a.tq, 2, true, &grads),
                     SPK_ERROR_INVALID_ARGUMENT); /* the gradients overlap each other */
    grads = (spk_attention_grads){a.tq, g, NULL};
    assert_int_equal(spk_softpick_attention_backward(ctx, a.tq, a.tk, a.tv, a.tout, r, a.tk, 2, true, &grads),
                     SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_softpick_attention_backward(ctx, a.tq, a.tk, a.tv, a.tout, r, a.tk, 2, true, NULL),
                     SPK_ERROR_INVALID_ARGUMENT);
    spk_tensor_destroy(r), spk_tensor_destroy(bad), spk_tensor_destroy(g);
    data_free(&a);
    test_assert_no_validation();
}

static void errors(void **state) {
    (void)state;
    spk_context *ctx = test_shared_context();
    attention_data a;
    data_init(ctx, &a, 1, 5, 12, 1);
    assert_int_equal(spk_softpick_attention(ctx, a.tq, a.tk, a.tv, 5, true, a.tout), SPK_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(spk_context_last_error(ctx), "divisible"));
    assert_int_equal(spk_softpick_attention(ctx, a.tq, a.tk, a.tv, 0, true, a.tout), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_softpick_attention(ctx, a.tq, a.tk, a.tv, 3, true, a.tq), SPK_ERROR_INVALID_ARGUMENT);
    assert_int_equal(spk_softpick_attention(ctx, NULL, a.tk, a.tv, 3, true, a.tout), SPK_ERROR_INVALID_ARGUMENT);
    int64_t other[3] = {1, 6, 12}, flat[2] = {5, 12}, wide[3] = {1, 2, 600};
    spk_tensor *t = NULL;
    assert_int_equal(spk_tensor_create(ctx, 3, other, &t), SPK_OK);
    assert_int_equal(spk_softpick_attention(ctx, a.tq, t, a.tv, 3, true, a.tout), SPK_ERROR_SHAPE);
    spk_tensor_destroy(t);
    assert_int_equal(spk_tensor_create(ctx, 2, flat, &t), SPK_OK);
    assert_int_equal(spk_softpick_attention(ctx, t, t, t, 3, true, a.tout), SPK_ERROR_SHAPE);
    spk_tensor_destroy(t);
    spk_tensor *w[4];
    for (int i = 0; i < 4; i++) assert_int_equal(spk_tensor_create(ctx, 3, wide, &w[i]), SPK_OK);
    assert_int_equal(spk_softpick_attention(ctx, w[0], w[1], w[2], 1, true, w[3]), SPK_ERROR_UNSUPPORTED);
    assert_non_null(strstr(spk_context_last_error(ctx), "head dimension"));
    for (int i = 0; i < 4; i++) spk_tensor_destroy(w[i]);
    data_free(&a);
    test_assert_no_validation();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(grid),
        cmocka_unit_test(every_head_count_at_seq_60),
        cmocka_unit_test(head_dim_256),
        cmocka_unit_test(causality),
        cmocka_unit_test(batch_rows_independent),
        cmocka_unit_test(unfused_reference_path),
        cmocka_unit_test(tile_kernel),
        cmocka_unit_test(half_activations),
        cmocka_unit_test(errors),
        cmocka_unit_test(backward_grid),
        cmocka_unit_test(backward_every_kernel),
        cmocka_unit_test(backward_errors),
    };
    return cmocka_run_group_tests(tests, NULL, test_teardown_shared_context);
}
