/* Options and set-up shared by `flexinfer run` and `flexinfer chat`. */
#ifndef FI_TOOLS_GEN_COMMON_H
#define FI_TOOLS_GEN_COMMON_H

#include <stdbool.h>
#include <stdio.h>

#include "flexinfer.h"
#include "model/chat_template.h"
#include "model/llama.h"

#define GEN_DEFAULT_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define GEN_MAX_STOP 16

typedef struct gen_options {
    const char *model;
    const char *prompt;
    long n_predict;     /* -n; -1 = until the context is full */
    fi_sampler_params sp;
    bool seed_given;
    int threads;
    long n_ctx, n_batch;
    bool chat, verbose, kv_f16;
    const char *system;
    const char *chat_template;
    const char *stop[GEN_MAX_STOP];
    int n_stop;
} gen_options;

void gen_options_init(gen_options *o);
/* Parses one option at argv[*i]; returns 1 if consumed (advancing *i past its value), 0 if not one
 * of the shared options, -1 after printing an error. */
int gen_options_parse(gen_options *o, int argc, char **argv, int *i, const char *cmd);
void gen_options_usage(FILE *f);

/* Loads the model (message + exit code 2 for a missing default model, 1 otherwise); prints progress
 * when stderr is a terminal. Returns 0 on success. */
int gen_load(const gen_options *o, const char *cmd, fi_model **model, double *load_ms);
int gen_session(const gen_options *o, const fi_model *m, const char *cmd, fi_session **s);
/* The chat template to use: --chat-template, else detected from the file; and its default system. */
int gen_template(const gen_options *o, const fi_model *m, const char *cmd, fi_chat_template_kind *kind,
                 char **default_system);

double gen_now_ms(void);
double gen_peak_rss_mib(void);
bool gen_stderr_tty(void);

#endif
