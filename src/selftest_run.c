/* spk_selftest: runs the self-test's parts (selftest.h) and reports their lines in order.
 *
 * Most of a first self-test is the driver compiling a few hundred pipeline variants; lavapipe
 * compiles each at its first dispatch, on its device's queue thread, one at a time. So where the
 * library made the context, the parts run on `threads` contexts of the same device at once (the
 * caller's, on the calling thread, and more made like it on threads of their own), each taking the
 * next part as it finishes one. The calling thread reports the lines of finished parts in part
 * order between its own parts, and the rest at the end. A part that runs out of memory or loses
 * the device on a further context runs again on the caller's, so that an error status always
 * describes the caller's context. */
#include "internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "fault.h"
#include "selftest.h"

/* In the order of their lines: the forward kernels and the model, 16-bit storage, the backward,
 * the training step. */
static void (*const spk__st_parts[])(spk__selftest *) = {
    spk__st_softpick, spk__st_matmul, spk__st_layer_norm, spk__st_unary, spk__st_attention, spk__st_model_f32,
    spk__st_softpick_half, spk__st_matmul_half, spk__st_layer_norm_half, spk__st_attention_half, spk__st_model_half,
    spk__st_softpick_backward, spk__st_matmul_backward, spk__st_gelu_backward, spk__st_layer_norm_backward,
    spk__st_attention_backward, spk__st_losses, spk__st_training,
};
#define SPK__ST_PARTS SPK__ARRAY_LEN(spk__st_parts)
#define SPK__ST_MAX_THREADS 4

typedef struct spk__st_run {
    pthread_mutex_t lock;
    size_t next;    /* the next part to start */
    size_t emitted; /* parts reported so far */
    bool done[SPK__ST_PARTS];
    bool again[SPK__ST_PARTS]; /* failed on a further context: to be run on the caller's */
    spk__selftest parts[SPK__ST_PARTS];
    atomic_bool stop; /* a part ran out of memory or lost its device on the caller's context */
    spk_context *ctx; /* the caller's */
    const spk_selftest_desc *desc;
    spk_selftest_report *report;
} spk__st_run;

/* Reports the lines of the finished parts not yet reported, in part order (the calling thread only). */
static void spk__st_emit_ready(spk__st_run *run) {
    for (;;) {
        pthread_mutex_lock(&run->lock);
        bool ready = run->emitted < SPK__ST_PARTS && run->done[run->emitted];
        pthread_mutex_unlock(&run->lock);
        if (!ready) return;
        spk__selftest *st = &run->parts[run->emitted++];
        for (uint32_t i = 0; i < st->line_count; i++) {
            spk__st_line *l = &st->lines[i];
            l->r.op = l->op;
            l->r.variant = l->variant;
            l->r.shapes = l->shapes;
            l->r.reason = l->reason;
            if (l->r.outcome == SPK_SELFTEST_PASS) run->report->passed++;
            else if (l->r.outcome == SPK_SELFTEST_FAIL) run->report->failed++;
            else run->report->skipped++;
            if (run->desc->on_result) run->desc->on_result(&l->r, run->desc->user_data);
        }
    }
}

/* Part i, not yet run (its random data depends on i alone: the same lines on any context). */
static void spk__st_part_init(spk__st_run *run, size_t i) {
    run->parts[i] = (spk__selftest){.desc = run->desc, .stop = &run->stop, .seed = 0x5E1F7E57ull + i * 0x9E3779B97F4A7C15ull};
}

/* Runs part i on ctx. A part that runs out of memory or loses the device on a further context is
 * left to the caller's (false: stop using this context); on the caller's, it stops the test. */
static bool spk__st_run_part(spk__st_run *run, size_t i, spk_context *ctx) {
    spk__selftest *st = &run->parts[i];
    st->ctx = ctx;
    spk__st_parts[i](st);
    bool again = st->fatal != SPK_OK && ctx != run->ctx;
    if (again) {
        free(st->lines);
        spk__st_part_init(run, i);
    } else if (st->fatal != SPK_OK) {
        atomic_store(&run->stop, true);
    }
    pthread_mutex_lock(&run->lock);
    run->again[i] = again;
    run->done[i] = !again;
    pthread_mutex_unlock(&run->lock);
    return !again;
}

/* Runs parts on `ctx` until none is left to start; with `emit`, reports what is ready after each. */
static void spk__st_work(spk__st_run *run, spk_context *ctx, bool emit) {
    for (;;) {
        pthread_mutex_lock(&run->lock);
        size_t i = run->next++;
        pthread_mutex_unlock(&run->lock);
        if (i >= SPK__ST_PARTS || !spk__st_run_part(run, i, ctx)) return;
        if (emit) spk__st_emit_ready(run);
    }
}

typedef struct spk__st_worker {
    spk__st_run *run;
    spk_context *ctx;
    pthread_t thread;
    bool started;
} spk__st_worker;

static void *spk__st_thread(void *arg) {
    spk__st_worker *w = arg;
    spk__st_work(w->run, w->ctx, false);
    return NULL;
}

/* Another context on ctx's device with ctx's choices (reduction, 16-bit reads, validation, log);
 * NULL if it cannot be made (the self-test then runs on fewer). */
static spk_context *spk__st_context_like(const spk_context *ctx) {
    char device[16];
    snprintf(device, sizeof device, "%u", ctx->device_index);
    spk_context_desc desc = {
        .device = device,
        .pipeline_cache_path = "", /* none: the caller's file is the caller's context's */
        .validation = ctx->messenger != VK_NULL_HANDLE,
        .reduction = ctx->reduction,
        .half_storage = ctx->half_words ? SPK_HALF_STORAGE_WORDS : SPK_HALF_STORAGE_AUTO,
        .log = ctx->log,
        .log_user_data = ctx->log_user_data,
    };
    spk_context *like = NULL;
    if (spk_context_create(&desc, &like) != SPK_OK) return NULL;
    like->force_staging = ctx->force_staging;
    return like;
}

static uint32_t spk__st_threads(const spk_context *ctx, const spk_selftest_desc *desc) {
    if (ctx->external) return 1; /* no device of our own to make more contexts on */
    if (desc->threads) return desc->threads < SPK__ST_MAX_THREADS ? desc->threads : SPK__ST_MAX_THREADS;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return cores < 1 ? 1 : cores < SPK__ST_MAX_THREADS ? (uint32_t)cores : SPK__ST_MAX_THREADS;
}

spk_status spk_selftest(spk_context *ctx, const spk_selftest_desc *desc, spk_selftest_report *report) {
    if (!report) return ctx ? spk__fail(ctx, SPK_ERROR_INVALID_ARGUMENT, "spk_selftest needs a report") : SPK_ERROR_INVALID_ARGUMENT;
    *report = (spk_selftest_report){0};
    if (!ctx) return SPK_ERROR_INVALID_ARGUMENT;
    spk_status status = spk__check_alive(ctx);
    if (status != SPK_OK) return status;
    static const spk_selftest_desc none = {0};
    spk__st_run *run = spk__calloc(1, sizeof *run);
    if (!run) return spk__fail(ctx, SPK_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    run->ctx = ctx;
    run->desc = desc ? desc : &none;
    run->report = report;
    atomic_init(&run->stop, false);
    pthread_mutex_init(&run->lock, NULL);
    for (size_t i = 0; i < SPK__ST_PARTS; i++) spk__st_part_init(run, i);

    /* The calling thread works on the caller's context and reports lines between its parts; each
     * further context or thread that cannot be had leaves its share to the rest. */
    spk__st_worker workers[SPK__ST_MAX_THREADS] = {{0}};
    uint32_t threads = spk__st_threads(ctx, run->desc);
    for (uint32_t i = 1; i < threads; i++) {
        workers[i] = (spk__st_worker){.run = run, .ctx = spk__st_context_like(ctx)};
        workers[i].started = workers[i].ctx && pthread_create(&workers[i].thread, NULL, spk__st_thread, &workers[i]) == 0;
    }
    spk__st_work(run, ctx, true);
    for (uint32_t i = 1; i < threads; i++) {
        if (workers[i].started) pthread_join(workers[i].thread, NULL);
        spk_context_destroy(workers[i].ctx);
    }
    for (size_t i = 0; i < SPK__ST_PARTS; i++)
        if (run->again[i]) {
            spk__st_run_part(run, i, ctx);
            spk__st_emit_ready(run);
        }
    spk__st_emit_ready(run);

    const char *why = "";
    for (size_t i = 0; i < SPK__ST_PARTS; i++) {
        if (status == SPK_OK && run->parts[i].fatal != SPK_OK) {
            status = run->parts[i].fatal;
            why = run->parts[i].reason;
        }
        free(run->parts[i].lines);
    }
    pthread_mutex_destroy(&run->lock);
    if (status != SPK_OK) status = spk__fail(ctx, status, "the self-test stopped: %s%s%s", spk_status_string(status), *why ? ": " : "", why);
    free(run);
    return status;
}
