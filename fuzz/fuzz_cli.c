/* libFuzzer harness: the command-line tool's argument parsing. The input is split at NUL bytes
 * into arguments, parsed with the options of `softpick run`, and every option value then goes
 * through the integer parser, as the tool does. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* cli.c creates contexts for the commands; parsing never gets there, and the harness links no
 * device code. */
spk_status spk_context_create(const spk_context_desc *desc, spk_context **out) {
    (void)desc;
    *out = NULL;
    return SPK_ERROR_NO_DEVICE;
}

const spk_model_config *spk_model_get_config(const spk_model *model) {
    (void)model;
    return NULL;
}

spk_status spk_list_devices(spk_device_info *infos, uint32_t capacity, uint32_t *count) {
    (void)infos, (void)capacity;
    *count = 0;
    return SPK_ERROR_NO_DEVICE;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char buffer[4096];
    if (size >= sizeof buffer) return 0;
    memcpy(buffer, data, size);
    buffer[size] = '\0';
    char *argv[32];
    int argc = 0;
    for (size_t i = 0; i <= size && argc < 32;) {
        argv[argc++] = buffer + i;
        i += strlen(buffer + i) + 1;
    }
    const char *weights = NULL, *input = NULL, *output = NULL, *mode = NULL, *heads = NULL, *axis = NULL;
    cli_option options[] = {{"weights", &weights}, {"input", &input}, {"output", &output},
                            {"output-mode", &mode}, {"heads", &heads}, {"axis", &axis}};
    cli_args args;
    /* stderr is where the tool's one-line errors go; keep the fuzzer's output readable */
    FILE *saved = stderr;
    stderr = fopen("/dev/null", "w");
    if (cli_parse(argc, argv, options, 6, &args)) {
        long v;
        const char *values[] = {weights, input, output, mode, heads, axis, args.device};
        for (int i = 0; i < 7; i++)
            if (values[i]) cli_int(values[i], -8, 1 << 20, "value", &v);
    }
    fclose(stderr);
    stderr = saved;
    return 0;
}
