/* Linked into every test executable and into the CLI built for the tests.
 *
 * LeakSanitizer checks at exit, after the Vulkan loader has unloaded the validation layer and the
 * driver, so their own leftovers would show as leaks of unknown modules that no suppression can
 * name. Keeping them loaded lets tests/lsan.supp attribute them (a library that is absent, such
 * as lavapipe on a GPU machine, is simply not pinned). ThreadSanitizer needs the same of every
 * library its suppressions name (tests/tsan.supp): the loader opens and closes every Mesa driver. */
#define _GNU_SOURCE /* RTLD_NODELETE */
#include <dlfcn.h>

__attribute__((constructor)) static void keep_vulkan_modules_loaded(void) {
    dlopen("libVkLayer_khronos_validation.so", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    static const char *const drivers[] = {"libvulkan_lvp.so", "libvulkan_intel.so", "libvulkan_intel_hasvk.so",
                                          "libvulkan_radeon.so", "libLLVM-15.so.1"};
    for (unsigned i = 0; i < sizeof drivers / sizeof *drivers; i++)
        dlopen(drivers[i], RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
}
