/* libFuzzer harness: the safetensors reader (header JSON, offsets, shapes, dtypes) and the model
 * configuration read from its metadata, on arbitrary bytes. */
#include <stdlib.h>

#include "model.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    spk__safetensors st;
    char error[512];
    if (spk__safetensors_parse(data, size, &st, error, sizeof error) != SPK_OK) {
        if (!error[0]) __builtin_trap(); /* every failure carries a message */
        return 0;
    }
    /* Convert every tensor: offsets and sizes were checked, so this must stay in bounds. */
    for (uint32_t i = 0; i < st.tensor_count; i++) {
        float *out = malloc(st.tensors[i].count * sizeof *out + 1);
        if (out) spk__safetensors_to_f32(&st, &st.tensors[i], out);
        free(out);
    }
    spk_model_config c;
    if (spk__model_config_from_safetensors(&st, &c, error, sizeof error) == SPK_OK)
        (void)spk_model_config_check(&c, error, sizeof error);
    spk__safetensors_free(&st);
    return 0;
}
