/* flexinfer chat: an interactive multi-turn chat. The conversation stays in the KV cache: each
 * turn re-renders the conversation with the chat template, keeps the cached tokens it shares with
 * the cache and evaluates only the rest (the new turn). /reset starts over, /quit or Ctrl-D ends. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "decode/generate.h"
#include "gen_common.h"
#include "model/chat_template.h"
#include "model/llama.h"
#include "model/tokenizer.h"

static void usage(FILE *f) {
    fprintf(f, "usage: flexinfer chat [-m MODEL] [options]\n"
               "  type a message and Enter; /reset forgets the conversation, /quit or Ctrl-D ends\n");
    gen_options_usage(f);
}

typedef struct text_buf {
    char *data;
    size_t len, cap;
} text_buf;

static bool buf_add(text_buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *d = realloc(b->data, cap);
        if (!d) return false;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

static bool emit_reply(const char *text, size_t len, void *ctx) {
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return buf_add(ctx, text, len);
}

typedef struct conversation {
    fi_chat_message *msgs;
    char **owned; /* contents we allocated, parallel to msgs */
    size_t n, cap;
} conversation;

static bool conv_add(conversation *c, const char *role, const char *content) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        fi_chat_message *m = realloc(c->msgs, cap * sizeof *m);
        if (!m) return false;
        c->msgs = m;
        char **o = realloc(c->owned, cap * sizeof *o);
        if (!o) return false;
        c->owned = o;
        c->cap = cap;
    }
    char *copy = strdup(content);
    if (!copy) return false;
    c->owned[c->n] = copy;
    c->msgs[c->n++] = (fi_chat_message){role, copy};
    return true;
}

static void conv_truncate(conversation *c, size_t n) {
    while (c->n > n) free(c->owned[--c->n]);
}

static void conv_free(conversation *c) {
    conv_truncate(c, 0);
    free(c->msgs);
    free(c->owned);
}

int cmd_chat(int argc, char **argv) {
    gen_options o;
    gen_options_init(&o);
    o.n_predict = 512;
    for (int i = 1; i < argc;) {
        int r = gen_options_parse(&o, argc, argv, &i, "chat");
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        fprintf(stderr, "flexinfer chat: unknown option '%s'\n", argv[i]);
        usage(stderr);
        return 2;
    }
    if (!o.seed_given) o.sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    fi_model *model = NULL;
    double load_ms;
    int rc = gen_load(&o, "chat", &model, &load_ms);
    if (rc) return rc;
    const fi_tokenizer *tok = fi_llama_tokenizer(model);
    fi_chat_template_kind kind;
    char *def_system = NULL;
    fi_session *sess = NULL;
    fi_sampler *smp = NULL;
    float *logits = NULL;
    int32_t *cached = NULL, *gen = NULL;
    size_t n_cached = 0;
    conversation conv = {0};
    char *line = NULL;
    size_t line_cap = 0;
    fi_error err = {0};
    if ((rc = gen_template(&o, model, "chat", &kind, &def_system))) goto done;
    rc = 1;
    if (gen_session(&o, model, "chat", &sess)) goto done;
    if (fi_sampler_create(&o.sp, fi_model_n_vocab(model), &smp, &err) != FI_OK) {
        fprintf(stderr, "flexinfer chat: %s\n", err.msg);
        rc = 2;
        goto done;
    }
    int64_t V = fi_model_n_vocab(model), n_ctx = fi_session_n_ctx(sess);
    size_t gen_cap = o.n_predict > 0 ? (size_t)o.n_predict : (size_t)n_ctx;
    logits = malloc((size_t)V * sizeof(float));
    cached = malloc((size_t)n_ctx * sizeof(int32_t));
    gen = malloc(gen_cap * sizeof(int32_t));
    if (!logits || !cached || !gen) goto done;
    const char *sys = o.system ? o.system : def_system;
    if (sys && !conv_add(&conv, "system", sys)) goto done;
    size_t base_msgs = conv.n;
    bool tty = isatty(STDIN_FILENO);
    if (tty) fprintf(stderr, "chat with %s — /reset forgets, /quit or Ctrl-D ends\n",
                     o.model ? o.model : GEN_DEFAULT_MODEL);
    fi_logits_source src = fi_logits_source_session(sess, model);
    for (;;) {
        if (tty) {
            printf("> ");
            fflush(stdout);
        }
        ssize_t got = getline(&line, &line_cap, stdin);
        if (got < 0) {
            if (tty) printf("\n"); /* Ctrl-D: leave the terminal on a fresh line */
            break;
        }
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = '\0';
        if (got == 0) continue;
        if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) break;
        if (!strcmp(line, "/reset")) {
            conv_truncate(&conv, base_msgs);
            fi_session_reset(sess);
            fi_sampler_reset(smp);
            n_cached = 0;
            fprintf(stderr, "(conversation reset)\n");
            continue;
        }
        if (!conv_add(&conv, "user", line)) goto done;
        char *text = NULL;
        int32_t *ids = NULL;
        size_t n_ids = 0;
        if (fi_chat_render(kind, conv.msgs, conv.n, true, &text, &err) != FI_OK ||
            fi_tokenizer_encode(tok, text, strlen(text), true, true, &ids, &n_ids, &err) != FI_OK) {
            fprintf(stderr, "flexinfer chat: %s\n", err.msg);
            free(text);
            conv_truncate(&conv, conv.n - 1);
            continue;
        }
        free(text);
        /* Keep the cached prefix the new rendering shares; evaluate the rest. */
        size_t common = 0;
        size_t n_past = (size_t)fi_session_n_past(sess);
        while (common < n_past && common < n_ids && cached[common] == ids[common]) common++;
        if (common == n_ids) common--; /* at least one token must be evaluated to get logits */
        fi_session_truncate(sess, (int64_t)common);
        fi_generate_params gp = {.max_tokens = o.n_predict, .stop = o.stop, .n_stop = (size_t)o.n_stop,
                                 .stop_at_eog = true, .tokens_out = gen, .tokens_out_cap = gen_cap};
        text_buf reply = {0};
        fi_generate_stats stats;
        fi_status st = fi_generate(&src, smp, tok, ids + common, n_ids - common, &gp, logits, emit_reply,
                                   &reply, &stats, &err);
        printf("\n");
        fflush(stdout);
        if (st != FI_OK) {
            fprintf(stderr, "flexinfer chat: %s\n", err.msg);
            conv_truncate(&conv, conv.n - 1);
            fi_session_truncate(sess, (int64_t)common);
            n_cached = common;
            free(ids);
            free(reply.data);
            continue;
        }
        /* The cache now holds the rendering plus the evaluated part of the reply. */
        memcpy(cached, ids, n_ids * sizeof(int32_t));
        size_t in_cache = (size_t)fi_session_n_past(sess);
        for (size_t i = n_ids; i < in_cache; i++) cached[i] = gen[i - n_ids];
        n_cached = in_cache;
        free(ids);
        if (!conv_add(&conv, "assistant", reply.data ? reply.data : "")) {
            free(reply.data);
            goto done;
        }
        free(reply.data);
        if (o.verbose)
            fprintf(stderr, "[prefill %lld tok %.1f tok/s, decode %lld tok %.1f tok/s, cache %zu/%lld]\n",
                    (long long)stats.n_prompt, stats.prefill_ms > 0 ? stats.n_prompt * 1e3 / stats.prefill_ms : 0,
                    (long long)stats.n_generated,
                    stats.decode_ms > 0 ? stats.n_generated * 1e3 / stats.decode_ms : 0, n_cached,
                    (long long)n_ctx);
    }
    (void)n_cached;
    rc = 0;
done:
    free(line);
    conv_free(&conv);
    free(logits);
    free(cached);
    free(gen);
    free(def_system);
    fi_sampler_free(smp);
    fi_session_free(sess);
    fi_model_free(model);
    return rc;
}
