/* Options and set-up shared by `flexinfer run` and `flexinfer chat`. */
#include "gen_common.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "model/gguf.h"

void gen_options_init(gen_options *o) {
    memset(o, 0, sizeof *o);
    o->model = NULL;
    o->n_predict = 256;
    o->sp = fi_sampler_default_params();
    o->n_ctx = 0;
    o->n_batch = 256;
}

void gen_options_usage(FILE *f) {
    fprintf(f,
            "  -m MODEL               GGUF file (default " GEN_DEFAULT_MODEL ")\n"
            "  -n N                   tokens to generate (default 256; -1: until the context is full)\n"
            "  --temp T               temperature (default 0.8; 0 = greedy)\n"
            "  --top-k K              keep the K most likely tokens (default 40; 0 = off)\n"
            "  --top-p P              nucleus sampling (default 0.95; 1 = off)\n"
            "  --min-p P              drop tokens below P x the best one's probability (default 0.05)\n"
            "  --repeat-penalty R     penalise recent tokens (default 1 = off)\n"
            "  --presence-penalty P   subtract P from recent tokens' logits (default 0)\n"
            "  --frequency-penalty F  subtract F x count from recent tokens' logits (default 0)\n"
            "  --repeat-last-n N      tokens the penalties look at (default 64; -1 = all)\n"
            "  --seed S               random seed (default: from the clock; printed with --verbose)\n"
            "  -t THREADS             threads (default: all cores)\n"
            "  -c CTX                 context size in tokens (default min(model's, 4096))\n"
            "  -b BATCH               prompt tokens per forward pass (default 256)\n"
            "  --system TEXT          system message (chat)\n"
            "  --chat-template NAME   chatml, llama3, llama2, gemma (default: from the model)\n"
            "  --stop STR             stop when STR is generated (repeatable)\n"
            "  --kv-f16               keep the KV cache in f16 (default f32)\n"
            "  --verbose              timings and memory on stderr\n");
}

static int need_value(int argc, char **argv, int i, const char *cmd) {
    if (i + 1 >= argc) {
        fprintf(stderr, "flexinfer %s: option %s needs a value\n", cmd, argv[i]);
        return -1;
    }
    return 0;
}

static int parse_long(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

static int parse_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

int gen_options_parse(gen_options *o, int argc, char **argv, int *i, const char *cmd) {
    const char *a = argv[*i];
    long lv;
    float fv;
#define VALUE()                                                  \
    do {                                                         \
        if (need_value(argc, argv, *i, cmd)) return -1;          \
        (*i)++;                                                  \
    } while (0)
#define BAD()                                                                               \
    do {                                                                                    \
        fprintf(stderr, "flexinfer %s: bad value '%s' for %s\n", cmd, argv[*i], a);         \
        return -1;                                                                          \
    } while (0)
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) { VALUE(); o->model = argv[*i]; }
    else if (!strcmp(a, "-n")) { VALUE(); if (parse_long(argv[*i], &lv) || lv < -1) BAD(); o->n_predict = lv; }
    else if (!strcmp(a, "--temp")) { VALUE(); if (parse_float(argv[*i], &fv) || fv < 0) BAD(); o->sp.temp = fv; }
    else if (!strcmp(a, "--top-k")) { VALUE(); if (parse_long(argv[*i], &lv) || lv < 0 || lv > 1 << 24) BAD(); o->sp.top_k = (int32_t)lv; }
    else if (!strcmp(a, "--top-p")) { VALUE(); if (parse_float(argv[*i], &fv) || fv <= 0 || fv > 1) BAD(); o->sp.top_p = fv; }
    else if (!strcmp(a, "--min-p")) { VALUE(); if (parse_float(argv[*i], &fv) || fv < 0 || fv > 1) BAD(); o->sp.min_p = fv; }
    else if (!strcmp(a, "--repeat-penalty")) { VALUE(); if (parse_float(argv[*i], &fv) || fv <= 0) BAD(); o->sp.repeat_penalty = fv; }
    else if (!strcmp(a, "--presence-penalty")) { VALUE(); if (parse_float(argv[*i], &fv)) BAD(); o->sp.presence_penalty = fv; }
    else if (!strcmp(a, "--frequency-penalty")) { VALUE(); if (parse_float(argv[*i], &fv)) BAD(); o->sp.frequency_penalty = fv; }
    else if (!strcmp(a, "--repeat-last-n")) { VALUE(); if (parse_long(argv[*i], &lv) || lv < -1 || lv > 1 << 20) BAD(); o->sp.penalty_last_n = (int32_t)lv; }
    else if (!strcmp(a, "--seed")) {
        VALUE();
        char *end;
        errno = 0;
        unsigned long long v = strtoull(argv[*i], &end, 10);
        if (errno || end == argv[*i] || *end || argv[*i][0] == '-') BAD();
        o->sp.seed = v;
        o->seed_given = true;
    }
    else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { VALUE(); if (parse_long(argv[*i], &lv) || lv < 1 || lv > 256) BAD(); o->threads = (int)lv; }
    else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) { VALUE(); if (parse_long(argv[*i], &lv) || lv < 1 || lv > 1 << 22) BAD(); o->n_ctx = lv; }
    else if (!strcmp(a, "-b") || !strcmp(a, "--batch-size")) { VALUE(); if (parse_long(argv[*i], &lv) || lv < 1 || lv > 1 << 16) BAD(); o->n_batch = lv; }
    else if (!strcmp(a, "--system")) { VALUE(); o->system = argv[*i]; }
    else if (!strcmp(a, "--chat-template")) { VALUE(); o->chat_template = argv[*i]; }
    else if (!strcmp(a, "--stop")) {
        VALUE();
        if (o->n_stop >= GEN_MAX_STOP) { fprintf(stderr, "flexinfer %s: at most %d --stop strings\n", cmd, GEN_MAX_STOP); return -1; }
        if (!argv[*i][0]) BAD();
        o->stop[o->n_stop++] = argv[*i];
    }
    else if (!strcmp(a, "--kv-f16")) o->kv_f16 = true;
    else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) o->verbose = true;
    else return 0;
#undef VALUE
#undef BAD
    (*i)++;
    return 1;
}

double gen_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

double gen_peak_rss_mib(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (double)ru.ru_maxrss / 1024.0;
}

bool gen_stderr_tty(void) { return isatty(STDERR_FILENO); }

int gen_load(const gen_options *o, const char *cmd, fi_model **model, double *load_ms) {
    const char *path = o->model ? o->model : GEN_DEFAULT_MODEL;
    if (!o->model && access(path, R_OK) != 0) {
        fprintf(stderr, "flexinfer %s: no -m given and the default model %s is missing; run scripts/get_model.sh\n",
                cmd, path);
        return 2;
    }
    if (gen_stderr_tty()) fprintf(stderr, "loading %s ...", path);
    double t0 = gen_now_ms();
    fi_error err = {0};
    fi_status st = fi_model_load(path, model, &err);
    if (gen_stderr_tty()) fprintf(stderr, "\r\033[K");
    if (st != FI_OK) {
        fprintf(stderr, "flexinfer %s: %s\n", cmd, err.msg);
        return st == FI_ERR_IO || st == FI_ERR_FORMAT || st == FI_ERR_UNSUPPORTED ? 2 : 1;
    }
    *load_ms = gen_now_ms() - t0;
    if (!fi_llama_tokenizer(*model)) {
        fprintf(stderr, "flexinfer %s: %s: %s\n", cmd, path, fi_llama_tokenizer_error(*model));
        fi_model_free(*model);
        *model = NULL;
        return 2;
    }
    return 0;
}

int gen_session(const gen_options *o, const fi_model *m, const char *cmd, fi_session **s) {
    fi_session_params p = fi_session_default_params();
    p.n_ctx = o->n_ctx;
    p.n_batch = o->n_batch;
    p.threads = o->threads;
    p.kv_dtype = o->kv_f16 ? FI_DTYPE_F16 : FI_DTYPE_F32;
    fi_error err = {0};
    if (fi_session_create(m, &p, s, &err) != FI_OK) {
        fprintf(stderr, "flexinfer %s: %s\n", cmd, err.msg);
        return 1;
    }
    return 0;
}

int gen_template(const gen_options *o, const fi_model *m, const char *cmd, fi_chat_template_kind *kind,
                 char **default_system) {
    fi_error err = {0};
    *default_system = NULL;
    fi_gguf_str js = {0};
    char *jinja = NULL;
    if (fi_gguf_get_str(fi_llama_gguf(m), "tokenizer.chat_template", &js)) {
        jinja = malloc(js.len + 1);
        if (!jinja) return 1;
        memcpy(jinja, js.data, js.len);
        jinja[js.len] = '\0';
    }
    fi_status st;
    if (o->chat_template) st = fi_chat_template_by_name(o->chat_template, kind, &err);
    else if (jinja) st = fi_chat_template_detect(jinja, kind, &err);
    else st = fi_chat_template_by_name("chatml", kind, &err);
    if (st != FI_OK) {
        fprintf(stderr, "flexinfer %s: %s\n", cmd, err.msg);
        free(jinja);
        return 2;
    }
    if (jinja) *default_system = fi_chat_default_system(jinja);
    free(jinja);
    return 0;
}
