/* flexinfer logits: teacher-forced next-token logits of a token sequence, written as .npy
 * ([n_tokens, n_vocab] f32) with the token ids beside it (<out>.tokens.npy, int32) — what the
 * agreement tests compare with other engines. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "core/npy.h"
#include "gen_common.h"
#include "model/llama.h"
#include "model/tokenizer.h"

static void usage(FILE *f) {
    fprintf(f, "usage: flexinfer logits [-m MODEL] (--text FILE | --tokens \"1 2 3\") --out L.npy [-t THREADS] [-b BATCH] [--no-bos]\n"
               "                        [--dump DIR]\n"
               "  writes L.npy [n_tokens, n_vocab] f32 (row i: logits after token i) and L.tokens.npy (int32 ids)\n"
               "  --dump DIR: also every stage of the first chunk (>= 2 tokens) as DIR/<stage>-<layer>.npy [n, width]\n"
               "              (ggml's names: attn_norm, Qcur, Kcur (after RoPE), Vcur, kqv_out, ffn_inp, ffn_norm,\n"
               "              ffn_swiglu, l_out; embd.npy, result_norm.npy), to compare engines layer by layer\n");
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
        if (n + 1 == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

typedef struct dump_state {
    const char *dir;
    int chunk; /* chunks seen: only the first is written */
    bool failed;
    fi_error err;
} dump_state;

static void dump_stage(void *user, const char *name, int64_t layer, const float *data, int64_t rows, int64_t cols) {
    dump_state *d = user;
    if (!strcmp(name, "embd")) d->chunk++;
    if (d->chunk != 1 || d->failed) return;
    char path[4096];
    if (layer >= 0) snprintf(path, sizeof path, "%s/%s-%lld.npy", d->dir, name, (long long)layer);
    else snprintf(path, sizeof path, "%s/%s.npy", d->dir, name);
    int64_t shape[2] = {rows, cols};
    if (fi_npy_write(path, FI_NPY_F32, 2, shape, data, &d->err) != FI_OK) d->failed = true;
}

static int parse_tokens(const char *s, int32_t **out, size_t *n) {
    size_t cap = 64;
    int32_t *ids = malloc(cap * sizeof *ids);
    *n = 0;
    while (ids) {
        while (*s == ' ' || *s == ',' || *s == '\n' || *s == '\t') s++;
        if (!*s) break;
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || v < 0 || v > INT32_MAX) {
            free(ids);
            return -1;
        }
        if (*n == cap) {
            int32_t *ni = realloc(ids, cap * 2 * sizeof *ids);
            if (!ni) break;
            ids = ni;
            cap *= 2;
        }
        ids[(*n)++] = (int32_t)v;
        s = end;
    }
    if (!ids) return -1;
    *out = ids;
    return 0;
}

int cmd_logits(int argc, char **argv) {
    gen_options o;
    gen_options_init(&o);
    const char *text_path = NULL, *tokens_arg = NULL, *out_path = NULL, *dump_dir = NULL;
    bool add_special = true;
    for (int i = 1; i < argc;) {
        int r = gen_options_parse(&o, argc, argv, &i, "logits");
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *a = argv[i];
        if ((!strcmp(a, "--text") || !strcmp(a, "--tokens") || !strcmp(a, "--out") || !strcmp(a, "--dump")) &&
            i + 1 >= argc) {
            fprintf(stderr, "flexinfer logits: option %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--text")) text_path = argv[i + 1], i += 2;
        else if (!strcmp(a, "--tokens")) tokens_arg = argv[i + 1], i += 2;
        else if (!strcmp(a, "--out")) out_path = argv[i + 1], i += 2;
        else if (!strcmp(a, "--dump")) dump_dir = argv[i + 1], i += 2;
        else if (!strcmp(a, "--no-bos")) add_special = false, i++;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "flexinfer logits: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!out_path || (!text_path == !tokens_arg)) {
        fprintf(stderr, "flexinfer logits: give --out and exactly one of --text / --tokens\n");
        usage(stderr);
        return 2;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    if (tokens_arg && parse_tokens(tokens_arg, &ids, &n)) {
        fprintf(stderr, "flexinfer logits: --tokens must be non-negative integers separated by spaces\n");
        return 2;
    }
    fi_model *model = NULL;
    fi_session *sess = NULL;
    float *logits = NULL;
    double load_ms;
    int rc = gen_load(&o, "logits", &model, &load_ms);
    if (rc) {
        free(ids);
        return rc;
    }
    fi_error err = {0};
    rc = 1;
    if (text_path) {
        size_t len = 0;
        char *text = read_file(text_path, &len);
        if (!text) {
            fprintf(stderr, "flexinfer logits: cannot read %s\n", text_path);
            rc = 2;
            goto done;
        }
        fi_status st = fi_tokenizer_encode(fi_llama_tokenizer(model), text, len, add_special, false, &ids, &n, &err);
        free(text);
        if (st != FI_OK) {
            fprintf(stderr, "flexinfer logits: %s\n", err.msg);
            goto done;
        }
    }
    if (n == 0) {
        fprintf(stderr, "flexinfer logits: no tokens\n");
        rc = 2;
        goto done;
    }
    int64_t V = fi_model_n_vocab(model);
    if (o.n_ctx == 0) o.n_ctx = (long)n;
    if ((long)n > o.n_ctx) {
        fprintf(stderr, "flexinfer logits: %zu tokens exceed the context of %ld (-c)\n", n, o.n_ctx);
        rc = 2;
        goto done;
    }
    fi_session_params p = fi_session_default_params();
    p.n_ctx = o.n_ctx;
    p.n_batch = o.n_batch;
    p.threads = o.threads;
    p.kv_dtype = o.kv_f16 ? FI_DTYPE_F16 : FI_DTYPE_F32;
    p.logits_all = true;
    if (fi_session_create(model, &p, &sess, &err) != FI_OK) {
        fprintf(stderr, "flexinfer logits: %s\n", err.msg);
        goto done;
    }
    logits = malloc(n * (size_t)V * sizeof(float));
    if (!logits) {
        fprintf(stderr, "flexinfer logits: out of memory for %zu x %lld logits\n", n, (long long)V);
        goto done;
    }
    dump_state dump = {.dir = dump_dir};
    if (dump_dir) fi_session_set_trace(sess, dump_stage, &dump);
    fi_status st = fi_session_eval(sess, ids, n, logits, true, &err);
    if (st != FI_OK) {
        fprintf(stderr, "flexinfer logits: %s\n", err.msg);
        rc = st == FI_ERR_INVALID ? 2 : 1;
        goto done;
    }
    if (dump.failed) {
        fprintf(stderr, "flexinfer logits: --dump: %s\n", dump.err.msg);
        goto done;
    }
    int64_t shape[2] = {(int64_t)n, V};
    if (fi_npy_write(out_path, FI_NPY_F32, 2, shape, logits, &err) != FI_OK) {
        fprintf(stderr, "flexinfer logits: %s\n", err.msg);
        goto done;
    }
    size_t pl = strlen(out_path);
    char *tok_path = malloc(pl + 16);
    if (!tok_path) goto done;
    size_t base = pl >= 4 && !strcmp(out_path + pl - 4, ".npy") ? pl - 4 : pl;
    memcpy(tok_path, out_path, base);
    strcpy(tok_path + base, ".tokens.npy");
    int64_t tshape[1] = {(int64_t)n};
    st = fi_npy_write(tok_path, FI_NPY_I32, 1, tshape, ids, &err);
    free(tok_path);
    if (st != FI_OK) {
        fprintf(stderr, "flexinfer logits: %s\n", err.msg);
        goto done;
    }
    rc = 0;
done:
    free(logits);
    free(ids);
    fi_session_free(sess);
    fi_model_free(model);
    return rc;
}
