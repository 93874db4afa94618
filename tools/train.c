/* softpick grad and softpick train (SPEC.md section 6): gradients and training on files. */
#define _POSIX_C_SOURCE 200809L /* isatty, fileno */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static bool parse_loss(const char *text, spk_loss_kind *loss) {
    if (text && strcmp(text, "mse") == 0) *loss = SPK_LOSS_MSE;
    else if (text && strcmp(text, "cross-entropy") == 0) *loss = SPK_LOSS_CROSS_ENTROPY;
    else return cli_fail("--loss must be mse or cross-entropy, got '%s'", text ? text : ""), false;
    return true;
}

static bool parse_float(const char *text, double min, const char *what, float *out) {
    char *end;
    double v = text ? strtod(text, &end) : 0;
    if (!text || !*text || *end || !(v >= min) || isinf(v))
        return cli_fail("%s must be a finite number >= %g, got '%s'", what, min, text ? text : ""), false;
    *out = (float)v;
    return true;
}

/* Reads the input ([n, seq, embed], or one [seq, embed] sequence; `header_only`: its shape alone,
 * x->data NULL) and the targets, and checks the targets against the model: mse floats of the
 * output's shape, cross-entropy integer class indices of its shape less the last axis. */
static bool read_data(const char *input, const char *target, spk_loss_kind loss, spk_model *model, bool header_only,
                      spk_array *x, spk_array *t) {
    char error[256];
    memset(t, 0, sizeof *t);
    int64_t rows = 0;
    spk_status read = header_only ? spk_npy_read_rows(input, NULL, 0, x, &rows, error, sizeof error)
                                  : spk_npy_read(input, x, error, sizeof error);
    if (read != SPK_OK) return cli_fail("%s: %s", input, error), false;
    if (header_only) { /* the whole array's shape and count, as a full read gives */
        x->shape[0] = rows, x->count = 1;
        for (int i = 0; i < x->ndim; i++) x->count *= x->shape[i];
    }
    if (x->ndim == 2) x->shape[2] = x->shape[1], x->shape[1] = x->shape[0], x->shape[0] = 1, x->ndim = 3;
    const spk_model_config *c = spk_model_get_config(model);
    if (x->ndim != 3 || x->shape[2] != c->embed_dim || x->count == 0)
        return cli_fail("%s: the input must be [n, seq_len, %d]", input, c->embed_dim), false;
    if (spk_npy_read(target, t, error, sizeof error) != SPK_OK) return cli_fail("%s: %s", target, error), false;
    int ndim;
    int64_t shape[3];
    spk_model_output_shape(model, x->shape[0], x->shape[1], &ndim, shape);
    int want_ndim = loss == SPK_LOSS_MSE ? ndim : ndim - 1;
    bool shape_ok = t->ndim == want_ndim && memcmp(t->shape, shape, (size_t)want_ndim * sizeof *shape) == 0;
    if (loss == SPK_LOSS_CROSS_ENTROPY && !t->integer)
        return cli_fail("%s: cross-entropy targets must be integer class indices (<i4 or <i8)", target), false;
    if (loss == SPK_LOSS_MSE && t->integer) return cli_fail("%s: mse targets must be floats (<f4 or <f8)", target), false;
    if (!shape_ok) {
        char want[64] = "";
        for (int i = 0; i < want_ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? ", " : "", (long long)shape[i]);
        return cli_fail("%s: the targets must have shape [%s] for this model and loss", target, want), false;
    }
    int64_t classes = spk_model_output_size(c);
    for (int64_t i = 0; i < t->count; i++) {
        float v = t->data[i];
        if (isnan(v)) return cli_fail("%s: target %lld is NaN", target, (long long)i), false;
        if (loss == SPK_LOSS_CROSS_ENTROPY && !(v >= 0 && v < (float)classes))
            return cli_fail("%s: class index %lld at %lld is outside [0, %lld)", target, (long long)v, (long long)i,
                            (long long)classes), false;
    }
    return true;
}

int cli_grad(int argc, char **argv) {
    const char *weights = NULL, *input = NULL, *target = NULL, *loss_text = NULL, *mode_text = "last", *output = NULL;
    const char *attention = NULL;
    cli_option options[] = {{"weights", &weights}, {"input", &input},   {"target", &target},      {"loss", &loss_text},
                            {"output-mode", &mode_text}, {"output", &output}, {"attention", &attention}};
    cli_args args;
    if (!cli_parse(argc, argv, options, 7, &args)) return 1;
    if (!weights || !input || !target || !loss_text || !output || args.positional_count)
        return cli_fail("usage: softpick grad --weights W.safetensors --input X.npy --target T.npy "
                        "--loss mse|cross-entropy [--output-mode last|all|mean] [--attention A] --output G.safetensors");
    spk_model_config over = {0};
    spk_loss_kind loss;
    if (!cli_parse_mode(mode_text, &over.output_mode) || !parse_loss(loss_text, &loss) ||
        !cli_parse_attention(attention, &over.attention))
        return 1;
    spk_context *ctx = cli_context(&args, NULL);
    if (!ctx) return 1;
    spk_model *model = NULL;
    spk_array x = {0}, t = {0};
    int rc = 0;
    float value = 0;
    if (spk_model_create_from_safetensors(ctx, weights, &over, &model) != SPK_OK)
        rc = cli_fail("%s", spk_context_last_error(ctx));
    else if (!cli_check_attention(attention, model))
        rc = 1;
    else if (!read_data(input, target, loss, model, false, &x, &t))
        rc = 1;
    else if (spk_model_grad(model, x.data, x.shape[0], x.shape[1], loss, t.data, &value) != SPK_OK ||
             spk_model_save_gradients(model, output) != SPK_OK)
        rc = cli_fail("%s", spk_context_last_error(ctx));
    else
        printf("loss %.9g\n", value);
    spk_array_free(&x), spk_array_free(&t);
    spk_model_destroy(model);
    spk_context_destroy(ctx);
    return rc;
}

/* splitmix64, for --shuffle's permutations. */
static uint64_t mix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The samples of step i (counted over the whole run): (i * B + j) mod n, or with shuffling the
 * epoch's permutation (drawn from the seed and the epoch) at those positions. */
static void batch_indices(int64_t step, int64_t batch, int64_t n, bool shuffle, uint64_t seed, int64_t *perm,
                          int64_t *epoch_of_perm, int64_t *out) {
    for (int64_t j = 0; j < batch; j++) {
        int64_t k = step * batch + j, epoch = k / n, pos = k % n;
        if (shuffle && epoch != *epoch_of_perm) {
            uint64_t s = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(epoch + 1));
            for (int64_t i = 0; i < n; i++) perm[i] = i;
            for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
                int64_t r = (int64_t)(mix(&s) % (uint64_t)(i + 1)), tmp = perm[i];
                perm[i] = perm[r], perm[r] = tmp;
            }
            *epoch_of_perm = epoch;
        }
        out[j] = shuffle ? perm[pos] : pos;
    }
}

/* A digest of every parameter's bits (0 when one cannot be read). */
static uint64_t weights_digest(spk_model *model) {
    uint64_t h = 0;
    for (int i = 0; i < spk_model_parameter_count(model); i++) {
        char name[128];
        int ndim;
        int64_t shape[2];
        spk_model_parameter_info(model, i, name, sizeof name, &ndim, shape);
        int64_t n = ndim == 2 ? shape[0] * shape[1] : shape[0];
        float *w = malloc((size_t)n * sizeof *w);
        if (!w || spk_model_get_parameter(model, name, w, n) != SPK_OK) {
            free(w);
            return 0;
        }
        h = cli_dist_digest(h, w, (size_t)n * sizeof *w);
        free(w);
    }
    return h;
}

int cli_train(int argc, char **argv) {
    const char *weights = NULL, *init_seed = NULL, *embed = NULL, *hidden = NULL, *heads = NULL, *layers = NULL;
    const char *window = NULL, *outputs = NULL, *input = NULL, *target = NULL, *loss_text = NULL, *output = NULL;
    const char *steps_text = "100", *batch_text = NULL, *lr = NULL, *optimizer = "adamw", *wd = NULL, *beta1 = NULL;
    const char *beta2 = NULL, *eps = NULL, *clip = "0", *dropout = NULL, *seed_text = "0", *mode_text = "last";
    const char *state_path = NULL, *resume = NULL, *log_every_text = "10", *attention = NULL, *every_text = NULL;
    const char *bucket_text = "0";
    bool shuffle = false;
    /* --shuffle is the one flag without a value. */
    char *rest[64];
    int rest_count = 0;
    for (int i = 0; i < argc && rest_count < 64; i++) {
        if (strcmp(argv[i], "--shuffle") == 0) shuffle = true;
        else rest[rest_count++] = argv[i];
    }
    cli_option options[] = {
        {"weights", &weights}, {"init-seed", &init_seed}, {"embed", &embed},       {"hidden", &hidden},
        {"heads", &heads},     {"layers", &layers},       {"window", &window},     {"outputs", &outputs},
        {"input", &input},     {"target", &target},       {"loss", &loss_text},    {"output", &output},
        {"steps", &steps_text}, {"batch-size", &batch_text}, {"lr", &lr},          {"optimizer", &optimizer},
        {"weight-decay", &wd}, {"beta1", &beta1},         {"beta2", &beta2},       {"eps", &eps},
        {"clip-norm", &clip},  {"dropout", &dropout},     {"seed", &seed_text},    {"output-mode", &mode_text},
        {"state", &state_path}, {"resume", &resume},      {"log-every", &log_every_text}, {"attention", &attention},
        {"checkpoint-every", &every_text}, {"bucket-mib", &bucket_text},
    };
    cli_args args;
    if (!cli_parse(rest_count, rest, options, (int)(sizeof options / sizeof *options), &args)) return 1;
    if ((!weights == !init_seed) || (init_seed && !embed) || !input || !target || !loss_text || !output ||
        args.positional_count)
        return cli_fail("usage: softpick train (--weights W.safetensors | --init-seed S --embed N [--hidden N --heads N "
                        "--layers N --window N]) [--outputs N] --input X.npy --target T.npy --loss mse|cross-entropy "
                        "--output W2.safetensors [--steps N] [--batch-size B] [--lr F] [--optimizer adamw|sgd] "
                        "[--weight-decay F] [--beta1 F] [--beta2 F] [--eps F] [--clip-norm F] [--dropout F] [--seed S] "
                        "[--shuffle] [--output-mode M] [--state S.safetensors] [--resume S.safetensors] [--log-every K] "
                        "[--checkpoint-every K] [--bucket-mib F] [--attention softpick|rectified-softpick|softmax]");
    spk_model_config cfg = {0};
    spk_loss_kind loss;
    long v, steps, log_every, seed, every = 0;
    if (!cli_parse_mode(mode_text, &cfg.output_mode) || !parse_loss(loss_text, &loss) ||
        !cli_parse_attention(attention, &cfg.attention))
        return 1;
    if (!cli_int(steps_text, 0, 1L << 30, "--steps", &steps) || !cli_int(log_every_text, 1, 1L << 30, "--log-every", &log_every) ||
        !cli_int(seed_text, 0, 1L << 62, "--seed", &seed) ||
        (every_text && !cli_int(every_text, 1, 1L << 30, "--checkpoint-every", &every)))
        return 1;
    if (every && !state_path) return cli_fail("--checkpoint-every needs --state (a checkpoint is the weights and the optimizer state)");
    const char *size_texts[] = {embed, hidden, heads, layers, window, outputs};
    int *size_fields[] = {&cfg.embed_dim, &cfg.hidden_size, &cfg.num_heads, &cfg.num_layers, &cfg.window_size, &cfg.num_outputs};
    const char *size_names[] = {"--embed", "--hidden", "--heads", "--layers", "--window", "--outputs"};
    for (int i = 0; i < 6; i++) {
        if (!size_texts[i]) continue;
        if (!cli_int(size_texts[i], 1, 1 << 20, size_names[i], &v)) return 1;
        *size_fields[i] = (int)v;
    }
    spk_optimizer_kind kind;
    if (strcmp(optimizer, "adamw") == 0) kind = SPK_OPTIMIZER_ADAMW;
    else if (strcmp(optimizer, "sgd") == 0) kind = SPK_OPTIMIZER_SGD;
    else return cli_fail("--optimizer must be adamw or sgd, got '%s'", optimizer);
    spk_optimizer_desc opt = spk_optimizer_defaults(kind);
    const char *float_texts[] = {lr, wd, beta1, beta2, eps, clip};
    float *float_fields[] = {&opt.lr, &opt.weight_decay, &opt.beta1, &opt.beta2, &opt.eps, &opt.clip_norm};
    const char *float_names[] = {"--lr", "--weight-decay", "--beta1", "--beta2", "--eps", "--clip-norm"};
    for (int i = 0; i < 6; i++)
        if (float_texts[i] && !parse_float(float_texts[i], 0.0, float_names[i], float_fields[i])) return 1;
    float dropout_rate = -1, bucket_mib = 0;
    if (dropout && !parse_float(dropout, 0.0, "--dropout", &dropout_rate)) return 1;
    if (!parse_float(bucket_text, 0.0, "--bucket-mib", &bucket_mib)) return 1;

    spk_context *ctx = cli_context(&args, NULL);
    if (!ctx) return 1;
    spk_model *model = NULL;
    spk_status s;
    if (weights) {
        s = spk_model_create_from_safetensors(ctx, weights, &cfg, &model);
    } else {
        spk_model_config c = spk_model_config_default(cfg.embed_dim);
        if (cfg.hidden_size) c.hidden_size = cfg.hidden_size;
        if (cfg.num_heads) c.num_heads = cfg.num_heads;
        if (cfg.num_layers) c.num_layers = cfg.num_layers;
        if (cfg.window_size) c.window_size = cfg.window_size;
        c.num_outputs = cfg.num_outputs;
        c.output_mode = cfg.output_mode;
        c.attention = cfg.attention;
        if (!cli_int(init_seed, 0, 1L << 62, "--init-seed", &v)) {
            spk_context_destroy(ctx);
            return 1;
        }
        s = spk_model_create(ctx, &c, &model);
        if (s == SPK_OK) s = spk_model_init_random(model, (uint64_t)v);
    }
    if (s == SPK_OK && weights && !cli_check_attention(attention, model)) {
        spk_model_destroy(model);
        spk_context_destroy(ctx);
        return 1;
    }
    if (s == SPK_OK)
        s = spk_model_set_dropout(model, dropout_rate >= 0 ? dropout_rate : spk_model_get_config(model)->dropout, (uint64_t)seed);
    if (s == SPK_OK && resume) s = spk_model_load_state(model, resume);
    int rc = s == SPK_OK ? 0 : cli_fail("%s", spk_context_last_error(ctx));
    spk_array x = {0}, t = {0};
    /* Under mpirun each rank reads only its rows of each step's batch from the input file. */
    const cli_dist *d = cli_dist_get();
    if (!rc && !read_data(input, target, loss, model, d->size > 1, &x, &t)) rc = 1;
    int64_t n = x.shape[0], seq = x.shape[1], per_in = seq * x.shape[2], per_t = n ? t.count / n : 0;
    long batch = n < 32 ? (long)n : 32;
    if (!rc && batch_text && !cli_int(batch_text, 1, 1L << 30, "--batch-size", &batch)) rc = 1;
    if (!rc && batch > n) rc = cli_fail("--batch-size %ld is larger than the data (%lld samples)", batch, (long long)n);
    int64_t first = 0;
    if (!rc && spk_model_get_step(model, &first) != SPK_OK) rc = cli_fail("%s", spk_context_last_error(ctx));
    /* Under mpirun: each rank takes its rows of every step's global batch, the ranks agree on
     * everything first, and rank 0 alone prints and writes. */
    if (!rc && batch < d->size) rc = cli_fail("--batch-size %ld is smaller than the %d ranks", batch, d->size);
    int64_t mine = d->rank * (int64_t)batch / d->size, share = (d->rank + 1) * (int64_t)batch / d->size - mine;
    spk_data_parallel dp = {.global_batch = batch, .first_sample = mine, .reduce = cli_dist_reduce,
                            .bucket_bytes = (size_t)(bucket_mib * 1048576.0)};
    if (!rc && d->size > 1 && spk_model_set_data_parallel(model, &dp) != SPK_OK)
        rc = cli_fail("%s", spk_context_last_error(ctx));
    if (!cli_dist_all(!rc)) {
        rc = 1;
    } else if (d->size > 1) {
        const char *what[] = {"the arguments", "the model", "the data", "the starting step"};
        uint64_t digests[4] = {0, 0, 0, 0};
        for (int i = 0; i < argc; i++) digests[0] = cli_dist_digest(digests[0], argv[i], strlen(argv[i]) + 1);
        digests[1] = cli_dist_digest(0, spk_model_get_config(model), sizeof(spk_model_config));
        digests[2] = cli_dist_digest(0, x.shape, sizeof x.shape);
        digests[2] = cli_dist_digest(cli_dist_digest(digests[2], t.shape, sizeof t.shape), t.data, (size_t)t.count * sizeof *t.data);
        digests[3] = cli_dist_digest(0, &first, sizeof first);
        int differs = cli_dist_differs(digests, 4);
        if (differs >= 0) rc = d->rank == 0 ? cli_fail("the ranks disagree on %s", what[differs]) : 1;
    }
    float *bx = rc ? NULL : malloc((size_t)(share * per_in) * sizeof *bx);
    float *bt = rc ? NULL : malloc((size_t)(share * per_t) * sizeof *bt);
    int64_t *perm = rc ? NULL : malloc((size_t)n * sizeof *perm), *idx = rc ? NULL : malloc((size_t)batch * sizeof *idx);
    if (!rc && (!bx || !bt || !perm || !idx)) rc = cli_fail("out of host memory"), cli_dist_abort(1);
    bool tty = isatty(fileno(stdout)) && d->rank == 0;
    int64_t perm_epoch = -1;
    double t_log = cli_now_ms();
    float value = NAN; /* the last loss read */
    for (long i = 0; i < steps && !rc; i++) {
        int64_t step = first + i;
        batch_indices(step, batch, n, shuffle, (uint64_t)seed, perm, &perm_epoch, idx);
        spk_array rows = {0};
        char error[256];
        if (!x.data && spk_npy_read_rows(input, idx + mine, share, &rows, NULL, error, sizeof error) != SPK_OK) {
            rc = cli_fail("%s: %s", input, error);
            cli_dist_abort(rc);
            break;
        }
        for (int64_t j = 0; j < share; j++) {
            memcpy(bx + j * per_in, x.data ? x.data + idx[mine + j] * per_in : rows.data + j * per_in,
                   (size_t)per_in * sizeof *bx);
            memcpy(bt + j * per_t, t.data + idx[mine + j] * per_t, (size_t)per_t * sizeof *bt);
        }
        spk_array_free(&rows);
        /* The loss is read back only on the steps that print it (every step's, under mpirun: the
         * reduction has it anyway). */
        bool log = ((i + 1) % log_every == 0 || i + 1 == steps) && d->rank == 0;
        if (spk_model_train_step(model, bx, share, seq, loss, bt, &opt, log ? &value : NULL) != SPK_OK) {
            rc = cli_fail("step %lld: %s", (long long)step, spk_context_last_error(ctx));
            cli_dist_abort(rc);
            break;
        }
        if (every && (i + 1) % every == 0 && i + 1 < steps && d->rank == 0 &&
            (spk_model_save_safetensors(model, output) != SPK_OK || spk_model_save_state(model, state_path) != SPK_OK)) {
            rc = cli_fail("checkpoint at step %lld: %s", (long long)step + 1, spk_context_last_error(ctx));
            cli_dist_abort(rc);
            break;
        }
        if (log) {
            double now = cli_now_ms(), per_step = (now - t_log) / (double)((i % log_every) + 1);
            t_log = now;
            if (tty) printf("\r\033[K");
            printf("step %lld  loss %.9g  %.1f ms/step  %.1f sequences/s\n", (long long)step + 1, value, per_step,
                   (double)batch * 1e3 / per_step);
        }
        if (tty) { /* a live progress bar, redrawn in place */
            int width = 30, done = (int)((double)(i + 1) / (double)steps * width);
            printf("\r[%.*s%*s] %ld/%ld", done, "==============================", width - done, "", i + 1, steps);
            if (!isnan(value)) printf("  loss %.5g", value); /* as last logged */
            fflush(stdout);
        }
    }
    if (tty && steps) printf("\r\033[K");
    /* Every rank applied the same update to the same weights: checked, bit for bit. */
    uint64_t digest = !rc && d->size > 1 ? weights_digest(model) : 0;
    if (!rc && d->size > 1 && cli_dist_differs(&digest, 1) >= 0)
        rc = d->rank == 0 ? cli_fail("the ranks' weights differ after training (a bug: please report it)") : 1;
    if (!rc && d->rank == 0 && spk_model_save_safetensors(model, output) != SPK_OK)
        rc = cli_fail("%s", spk_context_last_error(ctx));
    if (!rc && d->rank == 0 && state_path && spk_model_save_state(model, state_path) != SPK_OK)
        rc = cli_fail("%s", spk_context_last_error(ctx));
    free(bx), free(bt), free(perm), free(idx);
    spk_array_free(&x), spk_array_free(&t);
    spk_model_destroy(model);
    spk_context_destroy(ctx);
    return rc;
}

/* Inputs uniform in [-1, 1) from a seed (xorshift64*). */
static void fill_uniform(float *x, int64_t n, uint64_t seed) {
    uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        state ^= state >> 12, state ^= state << 25, state ^= state >> 27;
        x[i] = (float)((double)((state * 0x2545F4914F6CDD1Dull) >> 11) * 0x1p-52 - 1.0);
    }
}

/* The classes of a teacher model: the argmax of its logits, one per sequence. */
static spk_status label(spk_model *teacher, const float *x, int64_t n, int64_t seq, int classes, float *labels,
                        float *logits) {
    spk_status s = spk_model_forward(teacher, x, n, seq, logits);
    for (int64_t i = 0; s == SPK_OK && i < n; i++) {
        int best = 0;
        for (int c = 1; c < classes; c++)
            if (logits[i * classes + c] > logits[i * classes + best]) best = c;
        labels[i] = (float)best;
    }
    return s;
}

/* The fraction of sequences whose argmax logit is their label. */
static double accuracy(const float *logits, const float *labels, int64_t n, int classes) {
    int64_t right = 0;
    for (int64_t i = 0; i < n; i++) {
        int best = 0;
        for (int c = 1; c < classes; c++)
            if (logits[i * classes + c] > logits[i * classes + best]) best = c;
        right += best == (int)labels[i];
    }
    return (double)right / (double)n;
}

int cli_demo_train(const cli_args *args) {
    /* A randomly initialised teacher labels generated sequences with one of 4 classes; a student
     * of the same shape, initialised differently, learns them with AdamW on the device. */
    enum { CLASSES = 4, SEQ = 16, EMBED = 16, TRAIN = 8192, HELD_OUT = 512, BATCH = 32, STEPS = 1000, LOG = 100 };
    spk_context *ctx = cli_context(args, NULL);
    if (!ctx) return 1;
    spk_device_info info;
    spk_context_device_info(ctx, &info);
    spk_model_config c = spk_model_config_default(EMBED);
    c.hidden_size = 32, c.num_heads = 2, c.num_layers = 2, c.window_size = SEQ, c.num_outputs = CLASSES, c.dropout = 0;
    c.output_mode = SPK_OUTPUT_MEAN;
    spk_model *teacher = NULL, *student = NULL;
    int64_t n_all = TRAIN + HELD_OUT, per = SEQ * EMBED;
    float *x = malloc((size_t)(n_all * per) * sizeof *x), *labels = malloc((size_t)n_all * sizeof *labels);
    float *logits = malloc((size_t)(n_all * CLASSES) * sizeof *logits);
    spk_status s = !x || !labels || !logits ? SPK_ERROR_OUT_OF_HOST_MEMORY : SPK_OK;
    spk_model_config tc = c;
    tc.num_layers = 1; /* the teacher is the smaller: the student can represent it */
    if (s == SPK_OK) s = spk_model_create(ctx, &tc, &teacher);
    if (s == SPK_OK) s = spk_model_init_random(teacher, 7);
    if (s == SPK_OK) s = spk_model_create(ctx, &c, &student);
    if (s == SPK_OK) s = spk_model_init_random(student, 8);
    if (s == SPK_OK) fill_uniform(x, n_all * per, 42);
    if (s == SPK_OK) s = label(teacher, x, n_all, SEQ, CLASSES, labels, logits);
    int rc = 0;
    if (s == SPK_OK) {
        int64_t counts[CLASSES] = {0};
        for (int64_t i = 0; i < TRAIN; i++) counts[(int)labels[i]]++;
        int64_t majority = 0;
        for (int k = 0; k < CLASSES; k++) majority = counts[k] > majority ? counts[k] : majority;
        printf("device:  %s (%s)\n", info.name, spk_device_type_string(info.type));
        printf("task:    a random 1-layer teacher's %d classes (mean over positions) of [%d, %d] sequences: %d to train on, %d held out "
               "(the commonest class is %.0f%%)\n", CLASSES, SEQ, EMBED, TRAIN, HELD_OUT, 100.0 * (double)majority / TRAIN);
        printf("student: embed %d, hidden %d, %d heads, %d layers, %d-class head; AdamW lr 3e-3, batch %d, %d steps\n",
               EMBED, c.hidden_size, c.num_heads, c.num_layers, CLASSES, BATCH, STEPS);
        s = spk_model_forward(student, x + TRAIN * per, HELD_OUT, SEQ, logits);
        if (s == SPK_OK)
            printf("before:  held-out accuracy %.1f%%\n", 100.0 * accuracy(logits, labels + TRAIN, HELD_OUT, CLASSES));
    }
    spk_optimizer_desc opt = spk_optimizer_defaults(SPK_OPTIMIZER_ADAMW);
    opt.lr = 3e-3f;
    float bx[BATCH * SEQ * EMBED], bt[BATCH];
    double t0 = cli_now_ms();
    for (int step = 0; step < STEPS && s == SPK_OK; step++) {
        for (int j = 0; j < BATCH; j++) {
            int64_t k = ((int64_t)step * BATCH + j) % TRAIN;
            memcpy(bx + j * per, x + k * per, (size_t)per * sizeof *bx);
            bt[j] = labels[k];
        }
        float value; /* read back only on the steps that print it */
        bool log = step == 0 || (step + 1) % LOG == 0;
        s = spk_model_train_step(student, bx, BATCH, SEQ, SPK_LOSS_CROSS_ENTROPY, bt, &opt, log ? &value : NULL);
        if (s == SPK_OK && log) {
            printf("step %3d  loss %.4f\n", step + 1, value);
            fflush(stdout);
        }
    }
    double ms = cli_now_ms() - t0;
    if (s == SPK_OK) s = spk_model_forward(student, x, TRAIN, SEQ, logits);
    double train_acc = s == SPK_OK ? accuracy(logits, labels, TRAIN, CLASSES) : 0;
    if (s == SPK_OK) s = spk_model_forward(student, x + TRAIN * per, HELD_OUT, SEQ, logits);
    if (s == SPK_OK) {
        printf("after:   accuracy %.1f%% on the training set, %.1f%% held out\n", 100.0 * train_acc,
               100.0 * accuracy(logits, labels + TRAIN, HELD_OUT, CLASSES));
        printf("time:    %.2f s for %d steps, %.1f ms per step, %.0f sequences/s\n", ms / 1e3, STEPS, ms / STEPS,
               (double)STEPS * BATCH * 1e3 / ms);
    } else {
        rc = cli_fail("%s", s == SPK_ERROR_OUT_OF_HOST_MEMORY && !spk_context_last_error(ctx)[0] ? "out of host memory"
                                                                                                : spk_context_last_error(ctx));
    }
    free(x), free(labels), free(logits);
    spk_model_destroy(teacher), spk_model_destroy(student);
    spk_context_destroy(ctx);
    return rc;
}
