/* The kernels' launch arithmetic for every subgroup size a device may report (4 to 128, most of
 * which no machine here can emulate), on CPU and GPU devices with small and large limits, without
 * a device: workgroup sizes, groups per row, reductions over whole subgroups, shared-memory use
 * and shuffle widths all stay within what the shaders and Vulkan allow. */
#include <string.h>

#include "attention_plan.h"
#include "harness.h"
#include "layer_norm_plan.h"
#include "matmul_plan.h"
#include "softpick_plan.h"

/* A context as device selection would fill it, with no device behind it. */
static void fake_device(spk_context *ctx, uint32_t sg, bool cpu, uint32_t max_invocations, uint32_t shared_bytes) {
    memset(ctx, 0, sizeof *ctx);
    spk__device_caps *c = &ctx->caps;
    c->props.deviceType = cpu ? VK_PHYSICAL_DEVICE_TYPE_CPU : VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU;
    VkPhysicalDeviceLimits *l = &c->props.limits;
    l->maxComputeWorkGroupInvocations = max_invocations;
    l->maxComputeWorkGroupSize[0] = max_invocations, l->maxComputeWorkGroupSize[1] = max_invocations;
    l->maxComputeWorkGroupSize[2] = 64;
    l->maxComputeWorkGroupCount[0] = l->maxComputeWorkGroupCount[1] = l->maxComputeWorkGroupCount[2] = 65535;
    l->maxComputeSharedMemorySize = shared_bytes;
    c->min_subgroup_size = c->max_subgroup_size = sg;
    c->subgroup.subgroupSize = sg;
    c->subgroup_arithmetic = c->subgroup_shuffle = c->subgroup_size_control = true;
    c->texel_buffers = cpu;
    ctx->reduction = SPK_REDUCTION_SUBGROUP;
}

static bool pow2(uint32_t v) { return v && (v & (v - 1)) == 0; }

static void check_softpick(const spk_context *ctx) {
    uint32_t sg = ctx->caps.max_subgroup_size;
    spk__softpick_tuning t;
    spk__softpick_plan_defaults(ctx, &t);
    assert_true(t.workgroup <= ctx->caps.props.limits.maxComputeWorkGroupInvocations || t.workgroup == sg);
    assert_true(pow2(t.workgroup));
    static const uint64_t lengths[] = {1, 2, 7, 33, 64, 257, 1024, 4097, 65536, 1048577};
    static const uint64_t outers[] = {1, 3, 100, 70000};
    for (size_t i = 0; i < sizeof lengths / sizeof *lengths; i++)
        for (size_t o = 0; o < sizeof outers / sizeof *outers; o++)
            for (uint64_t inner = 1; inner <= 8; inner *= 2) {
                spk__softpick_plan_t p;
                spk__softpick_plan(ctx, &t, outers[o], lengths[i], inner, true, &p);
                assert_true(p.segments >= 1);
                assert_true((uint64_t)p.segments * p.seg_len >= p.len);
                if (!p.strided) {
                    assert_true(p.group == 1 || p.group == sg || p.group == p.workgroup);
                    assert_int_equal(p.workgroup % p.group, 0);
                    if (p.use_subgroup) assert_int_equal(p.group % sg, 0); /* whole subgroups */
                    if (p.cache) assert_true(pow2(p.cache) && p.cache <= 32);
                    assert_true(p.workgroups * (p.workgroup / p.group) >= p.items);
                } else {
                    assert_true(p.workgroups * p.workgroup >= p.items);
                }
            }
}

static void check_layer_norm(const spk_context *ctx) {
    uint32_t sg = ctx->caps.max_subgroup_size;
    spk__layer_norm_tuning t;
    spk__layer_norm_tuning_defaults(ctx, &t);
    assert_true(pow2(t.workgroup) && t.workgroup % sg == 0);
    for (uint64_t len = 1; len <= 8192; len = len * 3 + 1) {
        uint32_t g = spk__layer_norm_group(ctx, &t, len);
        assert_true(g == 1 || g == sg || g == t.workgroup);
        assert_int_equal(t.workgroup % g, 0);
    }
}

static void check_matmul(const spk_context *ctx) {
    const VkPhysicalDeviceLimits *l = &ctx->caps.props.limits;
    spk__matmul_tuning t;
    spk__matmul_tuning_defaults(ctx, &t);
    if (t.shuffle) {
        assert_int_equal(t.wg_x % ctx->caps.max_subgroup_size, 0);
    } else {
        assert_true(t.wg_x * t.wg_y <= l->maxComputeWorkGroupInvocations);
        if (t.shared)
            assert_true(t.bk * (t.wg_y * t.tm + t.wg_x * t.tn) * sizeof(float) <= l->maxComputeSharedMemorySize);
    }
    spk__matmul_tuning_tiles(ctx, &t);
    assert_true(t.wg_x * t.wg_y <= l->maxComputeWorkGroupInvocations && t.bk >= 1);
    assert_true(t.bk * (t.wg_y * t.tm + t.wg_x * t.tn) * sizeof(float) <= l->maxComputeSharedMemorySize);
}

static void check_attention(const spk_context *ctx) {
    const VkPhysicalDeviceLimits *l = &ctx->caps.props.limits;
    uint32_t sg = ctx->caps.max_subgroup_size;
    static const uint32_t dims[] = {1, 7, 16, 64, 128, 256};
    static const uint32_t seqs[] = {1, 7, 60, 257, 4096};
    for (size_t d = 0; d < sizeof dims / sizeof *dims; d++)
        for (size_t s = 0; s < sizeof seqs / sizeof *seqs; s++) {
            spk__attention_tuning t;
            spk__attention_tuning_tiles(ctx, dims[d], seqs[s], &t);
            /* an invocation per query sums its row: queries <= workgroup; the tiles fit */
            assert_true(t.queries <= t.workgroup && t.workgroup <= l->maxComputeWorkGroupInvocations);
            uint64_t floats = (uint64_t)t.queries * dims[d] + (uint64_t)t.keys * (dims[d] + 1) +
                              (uint64_t)t.keys * dims[d] + (uint64_t)t.queries * t.keys + t.queries;
            assert_true(floats * sizeof(float) <= l->maxComputeSharedMemorySize);
            spk__attention_tuning_defaults(ctx, dims[d], seqs[s], &t);
            if (t.shuffle) assert_true(spk__attention_shuffle_supported(ctx));
        }
    if (spk__attention_shuffle_supported(ctx)) {
        spk__attention_tuning t;
        spk__attention_tuning_shuffle(ctx, true, &t);
        assert_int_equal(t.workgroup % sg, 0);
        assert_true(t.workgroup <= l->maxComputeWorkGroupInvocations || t.workgroup == sg);
    }
}

static void every_subgroup_size(void **state) {
    (void)state;
    static const uint32_t invocations[] = {128, 256, 1024};
    static const uint32_t shared[] = {16384, 32768, 49152};
    spk_context ctx;
    for (uint32_t sg = 4; sg <= 128; sg *= 2)
        for (int cpu = 0; cpu < 2; cpu++)
            for (int i = 0; i < 3; i++) {
                fake_device(&ctx, sg, cpu, invocations[i], shared[i]);
                check_softpick(&ctx);
                check_layer_norm(&ctx);
                check_matmul(&ctx);
                check_attention(&ctx);
            }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(every_subgroup_size)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
