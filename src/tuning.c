/* The tuning table: kernel choices spk_tune measured on this device, looked up by problem class,
 * and the file that keeps them.
 *
 * The file is text, one line per entry after a header that names what the choices are valid for:
 *
 *     softpick-tuning 1
 *     library 0.2.0
 *     device 10005 0 5800006 <pipelineCacheUUID in hex>
 *     candidates 3f9a...                    (spk__tune_candidates_checksum)
 *     matmul 3 1 2048 1024 256 1 16 ...     (family, variant, 4 sizes of the class, 8 parameters)
 *     checksum 8c1e...                      (FNV-1a of every byte before this line)
 *
 * A file for another device, driver, library or candidate set, or a damaged one, is ignored with
 * a warning (the rules apply), like the pipeline cache. */
#include "tuning.h"
#include "fault.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SPK__TUNING_FORMAT 1
#define SPK__TUNING_LINE 512

const char *const spk__tune_family_names[SPK__TUNE_FAMILY_COUNT] = {
    "matmul", "attention", "attention-backward", "layer-norm", "layer-norm-backward", "column-sums", "softpick",
    "optimizer", "loss"};

spk__tune_problem spk__tune_class(const spk__tune_problem *p) {
    spk__tune_problem c = *p;
    for (int i = 0; i < 4; i++) c.size[i] = spk__pow2_at_least(p->size[i]);
    return c;
}

static bool spk__tune_same(const spk__tune_problem *a, const spk__tune_problem *b) {
    return a->family == b->family && a->variant == b->variant && !memcmp(a->size, b->size, sizeof a->size);
}

static void spk__tune_collect_problem(spk__tune_collect *c, const spk__tune_problem *p) {
    for (uint32_t i = 0; i < c->count; i++)
        if (spk__tune_same(&c->problems[i], p)) {
            c->counts[i]++;
            c->forwards[i] |= c->forward;
            return;
        }
    uint32_t capacity = c->capacity, capacity2 = c->capacity;
    if (!spk__grow((void **)&c->problems, &capacity, c->count + 1, sizeof *c->problems) ||
        !spk__grow((void **)&c->forwards, &capacity2, c->count + 1, sizeof *c->forwards) ||
        !spk__grow((void **)&c->counts, &c->capacity, c->count + 1, sizeof *c->counts)) {
        c->failed = true;
        return;
    }
    c->problems[c->count] = *p;
    c->forwards[c->count] = c->forward;
    c->counts[c->count++] = 1;
}

bool spk__tuned(spk_context *ctx, const spk__tune_problem *p, uint32_t params[SPK__TUNE_PARAMS]) {
    if (ctx->collect) spk__tune_collect_problem(ctx->collect, p);
    spk__tune_problem c = spk__tune_class(p);
    for (uint32_t i = 0; i < ctx->tuned_count; i++)
        if (spk__tune_same(&ctx->tuned[i].key, &c)) {
            memcpy(params, ctx->tuned[i].params, sizeof ctx->tuned[i].params);
            return true;
        }
    return false;
}

/* ---- the file ------------------------------------------------------------------------------ */

bool spk__tuning_default_path(const spk_context *ctx, char *out, size_t size) {
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    const VkPhysicalDeviceProperties *p = &ctx->caps.props;
    int n;
    if (xdg && xdg[0])
        n = snprintf(out, size, "%s/softpick/tuning-%04x-%04x.txt", xdg, p->vendorID, p->deviceID);
    else if (home && home[0])
        n = snprintf(out, size, "%s/.cache/softpick/tuning-%04x-%04x.txt", home, p->vendorID, p->deviceID);
    else
        return false;
    return n > 0 && (size_t)n < size;
}

/* The header lines: what a file must say to be taken on this context. */
static int spk__tuning_header(const spk_context *ctx, char *out, size_t size) {
    const VkPhysicalDeviceProperties *p = &ctx->caps.props;
    char uuid[2 * VK_UUID_SIZE + 1];
    for (uint32_t i = 0; i < VK_UUID_SIZE; i++) snprintf(uuid + 2 * i, 3, "%02x", p->pipelineCacheUUID[i]);
    return snprintf(out, size, "softpick-tuning %d\nlibrary %s\ndevice %x %x %x %s\ncandidates %016" PRIx64 "\n",
                    SPK__TUNING_FORMAT, SPK_VERSION, p->vendorID, p->deviceID, p->driverVersion, uuid,
                    spk__tune_candidates_checksum(ctx));
}

static int spk__tune_family_of(const char *name) {
    for (int f = 0; f < SPK__TUNE_FAMILY_COUNT; f++)
        if (strcmp(name, spk__tune_family_names[f]) == 0) return f;
    return -1;
}

/* One entry line; false when it is not one. */
static bool spk__tuning_parse_entry(const char *line, spk__tune_entry *e) {
    char family[32];
    unsigned long long v[1 + 4 + SPK__TUNE_PARAMS];
    int used = 0;
    if (sscanf(line, "%31s %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu%n", family, &v[0], &v[1],
               &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11], &v[12], &used) != 14 ||
        line[used] != '\0')
        return false;
    int f = spk__tune_family_of(family);
    if (f < 0 || v[0] > UINT32_MAX) return false;
    *e = (spk__tune_entry){.key = {.family = (uint32_t)f, .variant = (uint32_t)v[0]}};
    for (int i = 0; i < 4; i++) e->key.size[i] = v[1 + i];
    for (int i = 0; i < SPK__TUNE_PARAMS; i++) {
        if (v[5 + i] > UINT32_MAX) return false;
        e->params[i] = (uint32_t)v[5 + i];
    }
    return true;
}

/* Parses a whole file (NUL-terminated) into the context's entries, or says why not. */
static const char *spk__tuning_parse(spk_context *ctx, const char *text, size_t size) {
    const char *sum = NULL;
    for (const char *p = text; (p = strstr(p, "checksum ")) != NULL; p++)
        if (p == text || p[-1] == '\n') sum = p;
    uint64_t stated = 0;
    if (!sum || sscanf(sum, "checksum %" SCNx64, &stated) != 1) return "not a softpick tuning file";
    if (stated != spk__fnv1a((const unsigned char *)text, (size_t)(sum - text))) return "checksum mismatch (damaged file)";
    char header[SPK__TUNING_LINE];
    int n = spk__tuning_header(ctx, header, sizeof header);
    if (n <= 0 || (size_t)n >= sizeof header) return "header too long";
    /* The header's lines in turn: format, library, device and driver, candidate set. */
    static const char *const mismatch[4] = {"not a softpick tuning file of this format",
                                            "written by another library version",
                                            "written for another device or driver version",
                                            "written for another candidate set (the kernels changed)"};
    const char *want = header, *have = text;
    for (int i = 0; i < 4; i++) {
        const char *end = strchr(want, '\n');
        size_t len = (size_t)(end - want) + 1;
        if ((size_t)(have - text) + len > size || strncmp(have, want, len) != 0) return mismatch[i];
        want += len, have += len;
    }
    uint32_t count = 0, capacity = 0;
    spk__tune_entry *entries = NULL;
    for (const char *line = text + n; line < sum;) {
        const char *end = memchr(line, '\n', (size_t)(sum - line));
        if (!end || end - line >= SPK__TUNING_LINE) {
            free(entries);
            return "malformed entry";
        }
        char buf[SPK__TUNING_LINE];
        memcpy(buf, line, (size_t)(end - line));
        buf[end - line] = '\0';
        line = end + 1;
        if (!spk__grow((void **)&entries, &capacity, count + 1, sizeof *entries)) {
            free(entries);
            return "out of host memory";
        }
        if (!spk__tuning_parse_entry(buf, &entries[count++])) {
            free(entries);
            return "malformed entry";
        }
    }
    free(ctx->tuned);
    ctx->tuned = entries;
    ctx->tuned_count = count;
    return NULL;
}

void spk__tuning_replace(spk_context *ctx, spk__tune_entry *entries, uint32_t count) {
    pthread_mutex_lock(&ctx->lock); /* recordings on other threads read the table under it */
    free(ctx->tuned);
    ctx->tuned = entries;
    ctx->tuned_count = count;
    pthread_mutex_unlock(&ctx->lock);
}

spk_status spk__tuning_init(spk_context *ctx, const char *path) {
    char fallback[1024];
    if (!path) path = getenv("SOFTPICK_TUNING");
    if (!path) path = spk__tuning_default_path(ctx, fallback, sizeof fallback) ? fallback : "";
    if (!path[0]) return SPK_OK;
    ctx->tuning_path = spk__malloc(strlen(path) + 1);
    if (!ctx->tuning_path) return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    strcpy(ctx->tuning_path, path);
    size_t size = 0;
    unsigned char *file = spk__read_file(path, &size);
    if (!file) return SPK_OK; /* none yet: the rules */
    char *text = spk__malloc(size + 1);
    const char *why = text ? NULL : "out of host memory";
    if (text) {
        memcpy(text, file, size);
        text[size] = '\0';
        why = strlen(text) != size ? "not a softpick tuning file" : spk__tuning_parse(ctx, text, size);
    }
    if (why) spk__log(ctx->log, ctx->log_user_data, SPK_LOG_WARNING, "ignoring tuning file %s: %s", path, why);
    free(text);
    free(file);
    return SPK_OK;
}

void spk__tuning_destroy(spk_context *ctx) {
    free(ctx->tuned);
    ctx->tuned = NULL;
    ctx->tuned_count = 0;
    free(ctx->tuning_path);
    ctx->tuning_path = NULL;
}

/* mkdir -p of the directories above `path`. */
static void spk__make_parents(const char *path) {
    char dir[1024];
    size_t n = strlen(path);
    if (n >= sizeof dir) return;
    memcpy(dir, path, n + 1);
    for (char *p = dir + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(dir, 0755) != 0 && errno != EEXIST) return;
            *p = '/';
        }
}

spk_status spk__tuning_save(spk_context *ctx, const char *path, const spk__tune_entry *entries, uint32_t count) {
    /* The header, one line per entry and the checksum line. */
    size_t cap = SPK__TUNING_LINE * ((size_t)count + 2);
    char *text = spk__malloc(cap), *tmp = spk__malloc(strlen(path) + 5);
    spk__tune_entry *copy = count ? spk__malloc(count * sizeof *copy) : NULL;
    if (!text || !tmp || (count && !copy)) {
        free(text), free(tmp), free(copy);
        return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    }
    size_t n = (size_t)spk__tuning_header(ctx, text, cap);
    for (uint32_t i = 0; i < count; i++) {
        const spk__tune_entry *e = &entries[i];
        n += (size_t)snprintf(text + n, cap - n, "%s %u %llu %llu %llu %llu", spk__tune_family_names[e->key.family],
                              e->key.variant, (unsigned long long)e->key.size[0], (unsigned long long)e->key.size[1],
                              (unsigned long long)e->key.size[2], (unsigned long long)e->key.size[3]);
        for (int j = 0; j < SPK__TUNE_PARAMS; j++) n += (size_t)snprintf(text + n, cap - n, " %u", e->params[j]);
        n += (size_t)snprintf(text + n, cap - n, "\n");
    }
    n += (size_t)snprintf(text + n, cap - n, "checksum %016" PRIx64 "\n", spk__fnv1a((unsigned char *)text, n));
    spk__make_parents(path);
    sprintf(tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    bool ok = f && fwrite(text, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = false;
    if (ok) ok = rename(tmp, path) == 0;
    if (!ok) remove(tmp);
    free(text);
    free(tmp);
    if (!ok) {
        free(copy);
        return spk__fail(ctx, SPK_ERROR_IO, "cannot write the tuning file %s", path);
    }
    if (count) memcpy(copy, entries, count * sizeof *copy);
    spk__tuning_replace(ctx, copy, count);
    return SPK_OK;
}
