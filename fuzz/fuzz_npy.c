/* libFuzzer harness: the NPY reader on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "softpick/softpick.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    spk_array a;
    char error[256];
    if (spk_npy_parse(data, size, &a, error, sizeof error) == SPK_OK) {
        /* Touch every element: the count must match what was allocated. */
        volatile float sum = 0;
        for (int64_t i = 0; i < a.count; i++) sum += a.data[i];
        (void)sum;
        spk_array_free(&a);
    } else if (!memchr(error, '\0', sizeof error) || !error[0]) {
        __builtin_trap(); /* every failure carries a message */
    }
    return 0;
}
