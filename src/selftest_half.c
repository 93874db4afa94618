/* The self-test's 16-bit lines: every kernel with its operands stored in F16 or BF16, through
 * every tier the device has, against the float64 references on the stored values. Weights (the
 * matmul's B and bias): texel views where the kernel reads them, else 16-bit storage buffers and
 * 32-bit words. F16 activations (loaded and stored as float16_t, or read through F16 texel
 * views): softpick, the matmul, layer norm, attention and the model. */
#include "selftest.h"

#include <string.h>

#include "attention_plan.h"
#include "layer_norm_plan.h"
#include "softpick_plan.h"

/* The bound of a kernel whose output is stored in `ad`: an F16 output rounds once more (2^-11). */
static double spk__st_bound(spk_dtype ad) { return ad == SPK_DTYPE_F16 ? 1e-3 : 1e-5; }

static const char *const spk__no_storage16 = "device has no storageBuffer16BitAccess";

/* Why an F16-activation line cannot run here (NULL: it can): stores need 16-bit storage, texel
 * reads R16_SFLOAT views. */
static const char *spk__st_f16_why(const spk_context *ctx, bool texel) {
    if (!ctx->caps.storage16) return spk__no_storage16;
    if (texel && !(ctx->caps.texel_buffers && ctx->caps.texel_f16)) return "device has no R16_SFLOAT uniform texel buffers";
    return NULL;
}

void spk__st_matmul_half(spk__selftest *st) {
    if (!spk__st_wanted(st, "matmul")) return;
    spk_context *ctx = st->ctx;
    const spk__device_caps *caps = &ctx->caps;
    spk__matmul_tuning defaults, kernels[4];
    spk__matmul_tuning_defaults(ctx, &defaults);
    spk__st_matmul_kernels(ctx, kernels);
    bool shuffles = caps->subgroup_shuffle && caps->min_subgroup_size == caps->max_subgroup_size;
    /* Rows of whole vec4s and not; the last with F16 activations adds a batched B. */
    static const int64_t shapes[][5] = {{1, 7, 33, 257, 1}, {1, 4, 64, 64, 1}, {2, 7, 9, 33, 0}};
    bool context_words = ctx->half_words;
    for (int kernel = 0; kernel < 4; kernel++) {
        bool texel = kernel == 3;
        const char *kernel_why = NULL;
        if (kernel >= 2 && !shuffles) kernel_why = "device has no subgroup shuffles of one fixed size";
        if (texel && !kernels[3].texel) kernel_why = "device has no float uniform texel buffers";
        /* 16-bit weights with float32 activations, in each tier; then F16 activations. */
        for (int line = 0; line < 5 && st->fatal == SPK_OK; line++) {
            bool act = line == 4, words = line % 2 == 1;
            spk_dtype wd = act ? SPK_DTYPE_F16 : line < 2 ? SPK_DTYPE_F16 : SPK_DTYPE_BF16;
            spk_dtype ad = act ? SPK_DTYPE_F16 : SPK_DTYPE_F32;
            if (texel && words && !act) continue; /* texel views convert in the fetch, whatever the tier */
            const char *tier = texel ? "texel view" : act || !words ? "16-bit storage" : "32-bit words";
            if (act)
                spk__st_begin(st, "matmul", spk__st_bound(ad), "%s, f16 A, B, bias, C and residual (%s), GELU",
                              spk__st_matmul_kernel_names[kernel], tier);
            else
                spk__st_begin(st, "matmul", spk__st_bound(ad), "%s, %s B and bias (%s), GELU, + residual",
                              spk__st_matmul_kernel_names[kernel], spk_dtype_name(wd), tier);
            st->r.used = memcmp(&kernels[kernel], &defaults, sizeof defaults) == 0 && (texel || act || words == context_words);
            const char *why = kernel_why;
            if (!why && texel && !(wd == SPK_DTYPE_F16 ? caps->texel_f16 : caps->texel_u16))
                why = wd == SPK_DTYPE_F16 ? "device has no R16_SFLOAT uniform texel buffers"
                                          : "device has no R16_UINT uniform texel buffers";
            if (!why && (act || (!texel && !words)) && !caps->storage16) why = spk__no_storage16;
            ctx->half_words = !act && words;
            for (size_t s = 0; !why && s < SPK__ARRAY_LEN(shapes) - !act && st->fatal == SPK_OK; s++)
                spk__st_matmul_case(st, &kernels[kernel], wd, ad, 3, shapes[s][0], shapes[s][1], shapes[s][2],
                                    shapes[s][3], shapes[s][4] != 0);
            ctx->half_words = context_words;
            spk__st_end(st, why);
        }
    }
}

void spk__st_softpick_half(spk__selftest *st) {
    if (!spk__st_wanted(st, "softpick")) return;
    spk_context *ctx = st->ctx;
    spk__softpick_tuning defaults;
    spk__softpick_plan_defaults(ctx, &defaults);
    static const int64_t cases[][2][3] = {{{3, 7, 1}, {3, 257, 1}}, {{3, 1024, 1}, {3, 4097, 1}},
                                          {{2, 7, 2}, {2, 257, 7}}, {{2, 33, 8}, {1, 2, 5}}};
    for (int strided = 0; strided < 2; strided++)
        for (int texel = 1; texel >= 0 && st->fatal == SPK_OK; texel--) {
            spk__softpick_tuning t = defaults;
            t.texel = texel;
            spk__st_begin(st, "softpick", spk__st_bound(SPK_DTYPE_F16), "%s, f16 x and y, this device's groups, %s",
                          strided ? "columns" : "rows", texel ? "texel reads" : "storage-buffer reads");
            st->r.used = texel == defaults.texel;
            const char *why = spk__st_f16_why(ctx, texel);
            for (int c = 0; !why && c < 4 && st->fatal == SPK_OK; c++) {
                const int64_t *s = cases[2 * strided + c / 2][c % 2];
                spk__st_softpick_case(st, &t, SPK_DTYPE_F16, s[0], s[1], s[2]);
            }
            spk__st_end(st, why);
        }
}

void spk__st_layer_norm_half(spk__selftest *st) {
    if (!spk__st_wanted(st, "layer norm")) return;
    spk_context *ctx = st->ctx;
    spk__layer_norm_tuning defaults;
    spk__layer_norm_tuning_defaults(ctx, &defaults);
    static const int64_t shapes[][2] = {{3, 7}, {3, 257}, {3, 1024}, {2048, 8}};
    for (int texel = 1; texel >= 0 && st->fatal == SPK_OK; texel--) {
        spk__layer_norm_tuning t = defaults;
        t.texel = texel;
        spk__st_begin(st, "layer norm", spk__st_bound(SPK_DTYPE_F16), "f16 x and y, this device's groups, %s",
                      texel ? "texel reads" : "storage-buffer reads");
        st->r.used = texel == defaults.texel;
        const char *why = spk__st_f16_why(ctx, texel);
        for (size_t s = 0; !why && s < SPK__ARRAY_LEN(shapes) && st->fatal == SPK_OK; s++)
            spk__st_layer_norm_case(st, &t, SPK_DTYPE_F16, shapes[s][0], shapes[s][1], 0.0f);
        spk__st_end(st, why);
    }
}

void spk__st_attention_half(spk__selftest *st) {
    if (!spk__st_wanted(st, "attention")) return;
    spk_context *ctx = st->ctx;
    static const int64_t cases[][3] = {{7, 3, 33}, {33, 4, 16}, {65, 2, 64}};
    for (int kernel = 0; kernel < 3 && st->fatal == SPK_OK; kernel++) {
        spk__st_begin(st, "attention", spk__st_bound(SPK_DTYPE_F16), "%s, f16 q, k, v and output",
                      spk__st_attention_kernel_names[kernel]);
        const char *why = spk__st_f16_why(ctx, kernel == 2);
        if (!why && kernel > 0 && !spk__attention_shuffle_supported(ctx))
            why = "device has no subgroup shuffles of one fixed size";
        for (size_t c = 0; !why && c < SPK__ARRAY_LEN(cases) && st->fatal == SPK_OK; c++)
            spk__st_attention_case(st, kernel, SPK_DTYPE_F16, SPK_NORMALIZER_SOFTPICK, cases[c][0], cases[c][1],
                                   cases[c][2], true);
        spk__st_end(st, why);
    }
}

/* The model with 16-bit weights, and with F16 activations too where the device stores them. */
void spk__st_model_half(spk__selftest *st) {
    spk__st_model(st, SPK_DTYPE_BF16, SPK_DTYPE_F32);
    if (st->ctx->caps.storage16) {
        spk__st_model(st, SPK_DTYPE_F16, SPK_DTYPE_F16);
    } else if (spk__st_wanted(st, "model")) {
        spk__st_begin(st, "model", 1e-2, "forward, output mode last, f16 weights, f16 activations");
        spk__st_end(st, spk__no_storage16);
    }
}
