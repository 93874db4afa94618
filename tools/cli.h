/* Shared pieces of the softpick command-line tool. */
#ifndef SOFTPICK_CLI_H
#define SOFTPICK_CLI_H

#include "softpick/softpick.h"

/* Options common to every subcommand, and the positional arguments left after them. */
typedef struct cli_args {
    const char *device;
    const char *positional[8];
    int positional_count;
} cli_args;

/* One option a subcommand accepts: "--name VALUE" or "--name=VALUE". */
typedef struct cli_option {
    const char *name;
    const char **value;
} cli_option;

/* Parses argv into `args` and the given options; prints one line to stderr and returns false on
 * an unknown option, a missing value or too many positional arguments. */
bool cli_parse(int argc, char **argv, const cli_option *options, int option_count, cli_args *args);
/* Parses a decimal integer in [min, max]; prints the error naming `what` on failure. */
bool cli_int(const char *text, long min, long max, const char *what, long *out);
/* Creates a context for the --device choice; prints the error on failure. */
spk_context *cli_context(const cli_args *args, const char *pipeline_cache);
/* Parses --output-mode's last, all or mean; prints the error on failure. */
bool cli_parse_mode(const char *text, spk_output_mode *mode);
/* Parses --weights-dtype's f32, f16 or bf16 and --activation-dtype's f32 or f16 (NULL: f32) into
 * a configuration; prints the error on failure. */
/* --attention softpick|rectified-softpick|softmax (NULL: leaves *out). A model loaded with it
 * takes it over its file's key, except softpick, the zero of the overrides: cli_check_attention
 * refuses a --attention the loaded model does not have, with one line. */
bool cli_parse_attention(const char *text, spk_normalizer *out);
bool cli_check_attention(const char *text, const spk_model *model);
bool cli_parse_dtypes(const char *weights, const char *activations, spk_model_config *config);
/* Sets the model sizes given as --heads, --layers, --hidden, --embed, --window (NULL: left as they
 * are), each in 1 .. 2^20; prints the error on failure. */
bool cli_parse_sizes(const char *heads, const char *layers, const char *hidden, const char *embed, const char *window,
                     spk_model_config *config);
/* Host wall time in milliseconds (a monotonic clock). */
double cli_now_ms(void);
/* Prints "softpick: <message>" to stderr; returns 1 (the exit status for errors). */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- dist.c: the processes of a run (MPI ranks under mpirun when built with MPI) ---- */
typedef struct cli_dist {
    int rank, size, local_rank; /* local_rank: among the ranks on this machine (its device) */
} cli_dist;
/* Starts MPI when the process runs under mpirun with more than one rank; prints the error and
 * returns false when that is asked of a build without MPI. */
bool cli_dist_init(int *argc, char ***argv);
/* Ends MPI with the exit status: a failure every rank agreed on (cli_dist_all, cli_dist_differs)
 * ends normally, any other ends the whole job. */
void cli_dist_finish(int rc);
const cli_dist *cli_dist_get(void);
/* Ends every rank of the job (mpirun's behaviour for a rank that dies); returns when alone. */
void cli_dist_abort(int rc);
/* The all-reduce of spk_data_parallel: sums `count` floats over the ranks, in place. */
spk_status cli_dist_reduce(void *user, float *data, size_t count);
/* Whether `ok` holds on every rank (each rank learns the same answer). */
bool cli_dist_all(bool ok);
/* FNV-1a over bytes, continuing from h (0: start); the first of `digests` that differs between
 * ranks (-1: none), the same answer on every rank. */
uint64_t cli_dist_digest(uint64_t h, const void *bytes, size_t n);
int cli_dist_differs(const uint64_t *digests, int count);
/* Rank 0 receives every rank's `count` floats in rank order into `all` (alone: a copy). */
void cli_dist_gather(const float *mine, int64_t count, float *all);

int cli_bench(int argc, char **argv);
int cli_run(int argc, char **argv);
int cli_analyze(int argc, char **argv);
int cli_demo(int argc, char **argv);
int cli_selftest(int argc, char **argv);
int cli_tune(int argc, char **argv);
int cli_grad(int argc, char **argv);
int cli_train(int argc, char **argv);
/* softpick demo train: the training twin of softpick demo. */
int cli_demo_train(const cli_args *args);

#endif
