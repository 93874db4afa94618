/* Pipelines: the embedded SPIR-V, one cached pipeline per (shader, specialization) variant, and a
 * VkPipelineCache that persists to a file which is verified before the driver ever sees it. */
#include "internal.h"
#include "fault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shaders_all.h"

#define SPK__SHADER_WITH(var, bindings, texel_inputs) \
    const spk__shader spk__shader_##var = {#var, spk_spirv_##var, sizeof(spk_spirv_##var), bindings, texel_inputs}
#define SPK__SHADER(var, bindings) SPK__SHADER_WITH(var, bindings, 0)
SPK__SHADER(softpick_rows_f1, 3);
SPK__SHADER(softpick_rows_f4, 3);
SPK__SHADER(softpick_cols_f1, 3);
SPK__SHADER(softpick_cols_f4, 3);
SPK__SHADER_WITH(softpick_rows_texel_f1, 3, 1);
SPK__SHADER_WITH(softpick_rows_texel_f4, 3, 1);
SPK__SHADER_WITH(softpick_cols_texel_f1, 3, 1);
SPK__SHADER_WITH(softpick_cols_texel_f4, 3, 1);
SPK__SHADER(softpick_rows_s16_f1, 3);
SPK__SHADER(softpick_rows_s16_f4, 3);
SPK__SHADER(softpick_cols_s16_f1, 3);
SPK__SHADER(softpick_cols_s16_f4, 3);
SPK__SHADER_WITH(softpick_rows_texel_s16_f1, 3, 1);
SPK__SHADER_WITH(softpick_rows_texel_s16_f4, 3, 1);
SPK__SHADER_WITH(softpick_cols_texel_s16_f1, 3, 1);
SPK__SHADER_WITH(softpick_cols_texel_s16_f4, 3, 1);
SPK__SHADER(softpick_rows_backward_f1, 4);
SPK__SHADER(softpick_rows_backward_f4, 4);
SPK__SHADER(softpick_cols_backward_f1, 4);
SPK__SHADER(softpick_cols_backward_f4, 4);
SPK__SHADER_WITH(softpick_rows_backward_texel_f1, 4, 2);
SPK__SHADER_WITH(softpick_rows_backward_texel_f4, 4, 2);
SPK__SHADER_WITH(softpick_cols_backward_texel_f1, 4, 2);
SPK__SHADER_WITH(softpick_cols_backward_texel_f4, 4, 2);
SPK__SHADER(copy_f4, 2);
SPK__SHADER_WITH(copy_texel_f4, 2, 1);
SPK__SHADER(fma_peak, 2);
SPK__SHADER(unary, 3);
SPK__SHADER_WITH(unary_texel, 3, 2);
SPK__SHADER(loss, 5);
SPK__SHADER(analyze, 2);
SPK__SHADER(analyze_s16, 2);
SPK__SHADER(optimizer, 6);
SPK__SHADER_WITH(optimizer_texel, 8, 4);
SPK__SHADER(dropout, 4);
SPK__SHADER_WITH(dropout_texel, 4, 2);
SPK__SHADER(column_sums, 5);
SPK__SHADER_WITH(column_sums_texel, 5, 2);
SPK__SHADER(matmul, 6);
SPK__SHADER(matmul_s16, 6);
SPK__SHADER(matmul_shuffle, 6);
SPK__SHADER(matmul_shuffle_s16, 6);
SPK__SHADER_WITH(matmul_shuffle_texel, 6, 2);
SPK__SHADER_WITH(matmul_shuffle_texel_s16, 6, 2);
SPK__SHADER_WITH(matmul_shuffle_texel_bf16, 6, 2);
SPK__SHADER_WITH(matmul_shuffle_texel_bf16_s16, 6, 2);
SPK__SHADER(layer_norm_f1, 5);
SPK__SHADER(layer_norm_f4, 5);
SPK__SHADER_WITH(layer_norm_texel_f1, 5, 3);
SPK__SHADER_WITH(layer_norm_texel_f4, 5, 3);
SPK__SHADER(layer_norm_s16_f1, 5);
SPK__SHADER(layer_norm_s16_f4, 5);
SPK__SHADER_WITH(layer_norm_texel_s16_f1, 5, 3);
SPK__SHADER_WITH(layer_norm_texel_s16_f4, 5, 3);
SPK__SHADER(layer_norm_backward_f1, 7);
SPK__SHADER(layer_norm_backward_f4, 7);
SPK__SHADER_WITH(layer_norm_backward_texel_f1, 7, 3);
SPK__SHADER_WITH(layer_norm_backward_texel_f4, 7, 3);
SPK__SHADER(attention, 5);
SPK__SHADER(attention_shuffle, 5);
SPK__SHADER_WITH(attention_shuffle_texel, 5, 3);
SPK__SHADER(attention_s16, 5);
SPK__SHADER(attention_shuffle_s16, 5);
SPK__SHADER_WITH(attention_shuffle_texel_s16, 5, 3);
SPK__SHADER(attention_backward_q, 8);
SPK__SHADER_WITH(attention_backward_q_texel, 8, 4);
SPK__SHADER(attention_backward_q_shared, 8);
SPK__SHADER(attention_backward_kv, 8);
SPK__SHADER_WITH(attention_backward_kv_texel, 8, 4);
SPK__SHADER(attention_backward_kv_shared, 8);

/* ---- the pipeline cache file -------------------------------------------------------------
 * Layout: "SPKPCACH" | u64 payload size | u64 FNV-1a hash of the payload | payload, where the
 * payload is vkGetPipelineCacheData's output. The hash catches damaged files; the payload's own
 * header (VkPipelineCacheHeaderVersionOne) is checked against this device, so a file from another
 * GPU or driver version is ignored instead of handed to the driver. */

static const char spk__cache_magic[8] = {'S', 'P', 'K', 'P', 'C', 'A', 'C', 'H'};
enum { SPK__CACHE_PREFIX = 24 };

#define SPK__SPIRV_HASH(name) h = spk__fnv1a_more(h, (const unsigned char *)spk_spirv_##name, sizeof spk_spirv_##name);
uint64_t spk__spirv_hash(void) {
    uint64_t h = spk__fnv1a(NULL, 0);
    SPK_SPIRV_ALL(SPK__SPIRV_HASH)
    return h;
}

static uint32_t spk__le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t spk__le64(const unsigned char *p) { return spk__le32(p) | (uint64_t)spk__le32(p + 4) << 32; }
static void spk__put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Returns the payload inside `file` if it is intact and made by this device, else NULL with a
 * reason. */
static const unsigned char *spk__cache_payload(spk_context *ctx, const unsigned char *file, size_t size,
                                               size_t *payload_size, const char **why) {
    if (size < SPK__CACHE_PREFIX || memcmp(file, spk__cache_magic, 8) != 0) {
        *why = "not a softpick pipeline cache";
        return NULL;
    }
    uint64_t n = spk__le64(file + 8);
    if (n != size - SPK__CACHE_PREFIX) {
        *why = "truncated or oversized";
        return NULL;
    }
    const unsigned char *p = file + SPK__CACHE_PREFIX;
    if (spk__fnv1a(p, n) != spk__le64(file + 16)) {
        *why = "checksum mismatch (damaged file)";
        return NULL;
    }
    const VkPhysicalDeviceProperties *props = &ctx->caps.props;
    if (n < 16 + VK_UUID_SIZE || spk__le32(p) < 16 + VK_UUID_SIZE || spk__le32(p) > n ||
        spk__le32(p + 4) != VK_PIPELINE_CACHE_HEADER_VERSION_ONE) {
        *why = "unknown Vulkan pipeline cache header";
        return NULL;
    }
    if (spk__le32(p + 8) != props->vendorID || spk__le32(p + 12) != props->deviceID ||
        memcmp(p + 16, props->pipelineCacheUUID, VK_UUID_SIZE) != 0) {
        *why = "written for another device or driver version";
        return NULL;
    }
    *payload_size = n;
    return p;
}

static spk_status spk__create_pipeline_cache(spk_context *ctx, const char *path) {
    unsigned char *file = NULL;
    size_t file_size = 0, payload_size = 0;
    const unsigned char *payload = NULL;
    if (path && *path) {
        ctx->pipeline_cache_path = spk__malloc(strlen(path) + 1);
        if (!ctx->pipeline_cache_path) return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
        strcpy(ctx->pipeline_cache_path, path);
        file = spk__read_file(path, &file_size);
        const char *why = NULL;
        if (file) payload = spk__cache_payload(ctx, file, file_size, &payload_size, &why);
        if (file && !payload)
            spk__log(ctx->log, ctx->log_user_data, SPK_LOG_WARNING,
                     "ignoring pipeline cache %s: %s; it will be rewritten", path, why);
    }
    VkPipelineCacheCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
        .initialDataSize = payload ? payload_size : 0,
        .pInitialData = payload,
    };
    VkResult r = SPK__VK(VK_ERROR_OUT_OF_HOST_MEMORY, ctx->vk.vkCreatePipelineCache(ctx->device, &info, NULL, &ctx->pipeline_cache));
    free(file);
    if (r != VK_SUCCESS) {
        ctx->pipeline_cache = VK_NULL_HANDLE;
        return spk__fail_vk(ctx, r, "vkCreatePipelineCache");
    }
    return SPK_OK;
}

/* Writes the cache through a temporary file and a rename, so a crash never leaves half a file. */
static void spk__save_pipeline_cache(spk_context *ctx) {
    const char *path = ctx->pipeline_cache_path;
    size_t n = 0;
    if (!path || ctx->vk.vkGetPipelineCacheData(ctx->device, ctx->pipeline_cache, &n, NULL) != VK_SUCCESS)
        return;
    unsigned char *data = spk__malloc(SPK__CACHE_PREFIX + n);
    size_t tmp_len = strlen(path) + 5;
    char *tmp = spk__malloc(tmp_len);
    bool ok = data && tmp &&
              ctx->vk.vkGetPipelineCacheData(ctx->device, ctx->pipeline_cache, &n, data + SPK__CACHE_PREFIX) ==
                  VK_SUCCESS;
    if (ok) {
        memcpy(data, spk__cache_magic, 8);
        spk__put64(data + 8, n);
        spk__put64(data + 16, spk__fnv1a(data + SPK__CACHE_PREFIX, n));
        snprintf(tmp, tmp_len, "%s.tmp", path);
        FILE *f = fopen(tmp, "wb");
        ok = f && fwrite(data, 1, SPK__CACHE_PREFIX + n, f) == SPK__CACHE_PREFIX + n;
        if (f && fclose(f) != 0) ok = false;
        if (ok) ok = rename(tmp, path) == 0;
        if (!ok) remove(tmp);
    }
    if (!ok)
        spk__log(ctx->log, ctx->log_user_data, SPK_LOG_WARNING, "could not save the pipeline cache to %s", path);
    free(tmp);
    free(data);
}

/* ---- layouts and pipelines ---------------------------------------------------------------- */

spk_status spk__pipelines_init(spk_context *ctx, const char *cache_path) {
    const char *log = getenv("SOFTPICK_LOG_PIPELINES");
    ctx->log_pipelines = log && *log && strcmp(log, "0") != 0;
    return spk__create_pipeline_cache(ctx, cache_path);
}

/* The set layout (and pipeline layout) for `n` bindings of which the first `texel` are uniform
 * texel buffers and the rest storage buffers, made on first use: every shader binds buffers at
 * bindings 0..n-1 and takes its shapes as push constants. */
static spk_status spk__layouts_get(spk_context *ctx, uint32_t texel, uint32_t n) {
    VkDescriptorSetLayout *set_layout = &ctx->set_layouts[texel][n];
    VkPipelineLayout *layout = &ctx->pipeline_layouts[texel][n];
    if (*layout) return SPK_OK;
    if (!*set_layout) {
        VkDescriptorSetLayoutBinding bindings[SPK__MAX_BINDINGS];
        for (uint32_t i = 0; i < n; i++)
            bindings[i] = (VkDescriptorSetLayoutBinding){
                .binding = i,
                .descriptorType = i < texel ? VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER : VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                .descriptorCount = 1,
                .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
            };
        VkDescriptorSetLayoutCreateInfo set_info = {
            .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
            .bindingCount = n,
            .pBindings = bindings,
        };
        VkResult r = SPK__VK(VK_ERROR_OUT_OF_HOST_MEMORY, ctx->vk.vkCreateDescriptorSetLayout(ctx->device, &set_info, NULL, set_layout));
        if (r != VK_SUCCESS) {
            *set_layout = VK_NULL_HANDLE;
            return spk__fail_vk(ctx, r, "vkCreateDescriptorSetLayout");
        }
    }
    VkPushConstantRange push = {VK_SHADER_STAGE_COMPUTE_BIT, 0, SPK__PUSH_BYTES};
    VkPipelineLayoutCreateInfo layout_info = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
        .setLayoutCount = 1,
        .pSetLayouts = set_layout,
        .pushConstantRangeCount = 1,
        .pPushConstantRanges = &push,
    };
    VkResult r = SPK__VK(VK_ERROR_OUT_OF_HOST_MEMORY, ctx->vk.vkCreatePipelineLayout(ctx->device, &layout_info, NULL, layout));
    if (r != VK_SUCCESS) {
        *layout = VK_NULL_HANDLE;
        return spk__fail_vk(ctx, r, "vkCreatePipelineLayout");
    }
    return SPK_OK;
}

void spk__pipelines_destroy(spk_context *ctx) {
    for (uint32_t i = 0; i < ctx->pipeline_count; i++) {
        ctx->vk.vkDestroyPipeline(ctx->device, ctx->pipelines[i]->pipeline, NULL);
        free(ctx->pipelines[i]);
    }
    free(ctx->pipelines);
    ctx->pipelines = NULL;
    ctx->pipeline_count = ctx->pipeline_capacity = 0;
    for (uint32_t texel = 0; texel <= SPK__MAX_TEXEL_INPUTS; texel++)
        for (uint32_t n = 1; n <= SPK__MAX_BINDINGS; n++) {
            VkPipelineLayout *layout = &ctx->pipeline_layouts[texel][n];
            VkDescriptorSetLayout *set_layout = &ctx->set_layouts[texel][n];
            if (*layout) ctx->vk.vkDestroyPipelineLayout(ctx->device, *layout, NULL);
            if (*set_layout) ctx->vk.vkDestroyDescriptorSetLayout(ctx->device, *set_layout, NULL);
            *layout = VK_NULL_HANDLE;
            *set_layout = VK_NULL_HANDLE;
        }
    if (ctx->pipeline_cache) {
        spk__save_pipeline_cache(ctx);
        ctx->vk.vkDestroyPipelineCache(ctx->device, ctx->pipeline_cache, NULL);
        ctx->pipeline_cache = VK_NULL_HANDLE;
    }
    free(ctx->pipeline_cache_path);
    ctx->pipeline_cache_path = NULL;
}

static spk_status spk__pipeline_build(spk_context *ctx, spk__pipeline *p) {
    VkShaderModuleCreateInfo module_info = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
        .codeSize = p->shader->code_size,
        .pCode = p->shader->code,
    };
    VkShaderModule module;
    VkResult r = SPK__VK(VK_ERROR_OUT_OF_HOST_MEMORY, ctx->vk.vkCreateShaderModule(ctx->device, &module_info, NULL, &module));
    if (r != VK_SUCCESS) return spk__fail_vk(ctx, r, "vkCreateShaderModule");

    VkSpecializationMapEntry entries[SPK__MAX_SPEC];
    for (uint32_t i = 0; i < p->spec_count; i++)
        entries[i] = (VkSpecializationMapEntry){i, i * sizeof(uint32_t), sizeof(uint32_t)};
    VkSpecializationInfo spec = {p->spec_count, entries, p->spec_count * sizeof(uint32_t), p->spec};
    VkComputePipelineCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage =
            {
                .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                .flags = (p->flags & SPK__PIPELINE_FULL_SUBGROUPS)
                             ? VK_PIPELINE_SHADER_STAGE_CREATE_REQUIRE_FULL_SUBGROUPS_BIT
                             : 0,
                .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                .module = module,
                .pName = "main",
                .pSpecializationInfo = &spec,
            },
        .layout = p->layout,
    };
    struct timespec t0, t1;
    timespec_get(&t0, TIME_UTC);
    r = SPK__VK(VK_ERROR_OUT_OF_HOST_MEMORY, ctx->vk.vkCreateComputePipelines(ctx->device, ctx->pipeline_cache, 1, &info, NULL, &p->pipeline));
    timespec_get(&t1, TIME_UTC);
    ctx->vk.vkDestroyShaderModule(ctx->device, module, NULL);
    uint64_t ns = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000u + (uint64_t)t1.tv_nsec - (uint64_t)t0.tv_nsec;
    if (ctx->log_pipelines) {
        char spec_text[SPK__MAX_SPEC * 11 + 1] = "", *at = spec_text;
        for (uint32_t i = 0; i < p->spec_count; i++) at += sprintf(at, " %u", p->spec[i]);
        spk__log(ctx->log, ctx->log_user_data, SPK_LOG_INFO, "pipeline %s [%s ] built in %.1f ms",
                 p->shader->name, spec_text, (double)ns / 1e6);
    }
    if (r != VK_SUCCESS) {
        p->pipeline = VK_NULL_HANDLE;
        return spk__fail_vk(ctx, r, "vkCreateComputePipelines");
    }
    spk__set_debug_name(ctx, VK_OBJECT_TYPE_PIPELINE, (uint64_t)p->pipeline, p->shader->name);
    return SPK_OK;
}

spk_status spk__pipeline_get(spk_context *ctx, const spk__shader *shader, const uint32_t *spec,
                             uint32_t spec_count, uint32_t flags, const spk__pipeline **out) {
    *out = NULL;
    if (!ctx->caps.subgroup_size_control) flags &= ~(uint32_t)SPK__PIPELINE_FULL_SUBGROUPS;
    for (uint32_t i = 0; i < ctx->pipeline_count; i++) {
        spk__pipeline *p = ctx->pipelines[i];
        if (p->shader == shader && p->spec_count == spec_count && p->flags == flags &&
            memcmp(p->spec, spec, spec_count * sizeof *spec) == 0) {
            *out = p;
            return SPK_OK;
        }
    }
    if (!spk__grow((void **)&ctx->pipelines, &ctx->pipeline_capacity, ctx->pipeline_count + 1,
                   sizeof *ctx->pipelines))
        return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    /* Each pipeline is its own allocation so pointers handed out stay valid as the list grows. */
    spk__pipeline *p = spk__calloc(1, sizeof *p);
    if (!p) return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    p->shader = shader;
    memcpy(p->spec, spec, spec_count * sizeof *spec);
    p->spec_count = spec_count;
    p->flags = flags;
    spk_status status = spk__layouts_get(ctx, shader->texel_inputs, shader->binding_count);
    p->set_layout = ctx->set_layouts[shader->texel_inputs][shader->binding_count];
    p->layout = ctx->pipeline_layouts[shader->texel_inputs][shader->binding_count];
    if (status == SPK_OK) status = spk__pipeline_build(ctx, p);
    if (status != SPK_OK) {
        free(p);
        return status;
    }
    ctx->pipelines[ctx->pipeline_count++] = p;
    *out = p;
    return SPK_OK;
}
