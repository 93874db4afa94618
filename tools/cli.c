/* Argument parsing (the options every command shares: modes, dtypes, sizes, normalizers),
 * context creation and the clock for the softpick tool. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double cli_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int cli_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const cli_dist *d = cli_dist_get();
    if (d->size > 1) fprintf(stderr, "softpick (rank %d of %d): ", d->rank, d->size);
    else fputs("softpick: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

bool cli_parse(int argc, char **argv, const cli_option *options, int option_count, cli_args *args) {
    memset(args, 0, sizeof *args);
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            if (args->positional_count == (int)(sizeof args->positional / sizeof args->positional[0])) {
                cli_fail("too many arguments");
                return false;
            }
            args->positional[args->positional_count++] = arg;
            continue;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const char **target = NULL;
        if (name_len == 6 && strncmp(name, "device", 6) == 0) target = &args->device;
        for (int k = 0; k < option_count && !target; k++)
            if (strlen(options[k].name) == name_len && strncmp(name, options[k].name, name_len) == 0)
                target = options[k].value;
        if (!target) {
            cli_fail("unknown option '%s'", arg);
            return false;
        }
        if (eq) {
            *target = eq + 1;
        } else if (i + 1 < argc) {
            *target = argv[++i];
        } else {
            cli_fail("option '%s' needs a value", arg);
            return false;
        }
    }
    return true;
}

bool cli_int(const char *text, long min, long max, const char *what, long *out) {
    char *end;
    errno = 0;
    long v = text ? strtol(text, &end, 10) : 0;
    if (!text || !*text || *end || errno || v < min || v > max) {
        cli_fail("%s must be an integer in [%ld, %ld], got '%s'", what, min, max, text ? text : "");
        return false;
    }
    *out = v;
    return true;
}

static void cli_log(spk_log_level level, const char *message, void *user) {
    (void)user;
    fprintf(stderr, "softpick: %s: %s\n",
            level == SPK_LOG_ERROR ? "error" : level == SPK_LOG_WARNING ? "warning" : "info", message);
}

spk_context *cli_context(const cli_args *args, const char *pipeline_cache) {
    spk_context_desc desc = {.device = args->device, .pipeline_cache_path = pipeline_cache, .log = cli_log};
    /* Under mpirun each rank takes the device of its place on the machine (--device or
     * SOFTPICK_DEVICE still choose). */
    char index[16];
    uint32_t count = 0;
    const cli_dist *d = cli_dist_get();
    if (!desc.device && !getenv("SOFTPICK_DEVICE") && d->size > 1 && spk_list_devices(NULL, 0, &count) == SPK_OK &&
        count > 0) {
        snprintf(index, sizeof index, "%u", (unsigned)d->local_rank % count);
        desc.device = index;
    }
    spk_context *ctx = NULL;
    /* The library reports creation errors through the log callback (there is no context yet). */
    spk_context_create(&desc, &ctx);
    return ctx;
}

bool cli_parse_mode(const char *text, spk_output_mode *mode) {
    static const char *const names[] = {"last", "all", "mean"};
    for (int i = 0; i < 3; i++)
        if (strcmp(text, names[i]) == 0) {
            *mode = (spk_output_mode)i;
            return true;
        }
    cli_fail("--output-mode must be last, all or mean, got '%s'", text);
    return false;
}

bool cli_parse_attention(const char *text, spk_normalizer *out) {
    if (!text || spk_normalizer_parse(text, out) == SPK_OK) return true;
    cli_fail("--attention must be softpick, rectified-softpick or softmax, got '%s'", text);
    return false;
}

bool cli_check_attention(const char *text, const spk_model *model) {
    spk_normalizer have = spk_model_get_config(model)->attention;
    if (!text || strcmp(text, spk_normalizer_name(have)) == 0) return true;
    cli_fail("--attention %s: the weights file's metadata says attention %s, and softpick cannot override it", text,
             spk_normalizer_name(have));
    return false;
}

bool cli_parse_dtypes(const char *weights, const char *activations, spk_model_config *config) {
    config->weights_dtype = config->activation_dtype = SPK_DTYPE_F32;
    if (weights && spk_dtype_from_name(weights, &config->weights_dtype) != SPK_OK) {
        cli_fail("--weights-dtype must be f32, f16 or bf16, got '%s'", weights);
        return false;
    }
    if (activations && (spk_dtype_from_name(activations, &config->activation_dtype) != SPK_OK ||
                        config->activation_dtype == SPK_DTYPE_BF16)) {
        cli_fail("--activation-dtype must be f32 or f16, got '%s'", activations);
        return false;
    }
    return true;
}

bool cli_parse_sizes(const char *heads, const char *layers, const char *hidden, const char *embed, const char *window,
                     spk_model_config *config) {
    const char *texts[] = {heads, layers, hidden, embed, window};
    int *fields[] = {&config->num_heads, &config->num_layers, &config->hidden_size, &config->embed_dim,
                     &config->window_size};
    const char *names[] = {"--heads", "--layers", "--hidden", "--embed", "--window"};
    long v;
    for (int i = 0; i < 5; i++) {
        if (!texts[i]) continue;
        if (!cli_int(texts[i], 1, 1 << 20, names[i], &v)) return false;
        *fields[i] = (int)v;
    }
    return true;
}
