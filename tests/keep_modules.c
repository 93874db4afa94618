/* Linked into every test executable and into the CLI built for the tests.
 *
 * LeakSanitizer checks at exit, after the Vulkan loader has unloaded the validation layer and the
 * driver, so their own leftovers would show as leaks of unknown modules that no suppression can
 * name. Keeping them loaded lets tests/lsan.supp attribute them (a library that is absent, such
 * as lavapipe on a GPU machine, is simply not pinned). */
#define _GNU_SOURCE /* RTLD_NODELETE */
#include <dlfcn.h>

__attribute__((constructor)) static void keep_vulkan_modules_loaded(void) {
    dlopen("libVkLayer_khronos_validation.so", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    dlopen("libvulkan_lvp.so", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
}
