/* The generation loop (see generate.h). */
#include "decode/generate.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static fi_status session_eval(void *self, const int32_t *tokens, size_t n, float *logits, fi_error *err) {
    return fi_session_eval(self, tokens, n, logits, false, err);
}
static int64_t session_n_past(void *self) { return fi_session_n_past(self); }
static void session_truncate(void *self, int64_t n) { fi_session_truncate(self, n); }

fi_logits_source fi_logits_source_session(fi_session *s, const fi_model *m) {
    fi_logits_source src = {.self = s, .eval = session_eval, .n_past = session_n_past,
                            .truncate = session_truncate, .n_vocab = fi_model_n_vocab(m),
                            .n_ctx = fi_session_n_ctx(s)};
    return src;
}

/* ---------------------------------------------------------------- stop strings */

fi_status fi_stop_matcher_push(fi_stop_matcher *m, const char *text, size_t len, fi_error *err) {
    if (m->len + len + 1 > m->cap) {
        size_t cap = (m->len + len + 1) * 2;
        char *b = realloc(m->buf, cap);
        if (!b) return fi_error_set(err, FI_ERR_NOMEM, "generate: out of memory");
        m->buf = b;
        m->cap = cap;
    }
    memcpy(m->buf + m->len, text, len);
    m->len += len;
    m->buf[m->len] = '\0';
    return FI_OK;
}

size_t fi_stop_matcher_ready(fi_stop_matcher *m, bool final) {
    size_t first = m->len;
    for (size_t i = 0; i < m->n_stop; i++) {
        size_t sl = strlen(m->stop[i]);
        if (sl == 0 || sl > m->len) continue;
        for (size_t p = 0; p + sl <= m->len && p < first; p++)
            if (memcmp(m->buf + p, m->stop[i], sl) == 0) {
                first = p;
                break;
            }
    }
    if (first < m->len) {
        m->hit = true;
        return first;
    }
    if (final) return m->len;
    /* Hold back the longest tail that is a proper prefix of a stop string. */
    size_t hold = 0;
    for (size_t i = 0; i < m->n_stop; i++) {
        size_t sl = strlen(m->stop[i]);
        for (size_t k = sl > 1 ? sl - 1 : 0; k > hold; k--)
            if (k <= m->len && memcmp(m->buf + m->len - k, m->stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return m->len - hold;
}

void fi_stop_matcher_consume(fi_stop_matcher *m, size_t n) {
    if (n > m->len) n = m->len;
    memmove(m->buf, m->buf + n, m->len - n);
    m->len -= n;
    if (m->buf) m->buf[m->len] = '\0';
}

void fi_stop_matcher_free(fi_stop_matcher *m) {
    free(m->buf);
    m->buf = NULL;
    m->len = m->cap = 0;
}

/* ---------------------------------------------------------------- loop */

static bool flush_ready(fi_stop_matcher *sm, bool final, fi_emit_fn emit, void *ctx) {
    size_t n = fi_stop_matcher_ready(sm, final);
    bool go = true;
    if (n > 0 && emit) go = emit(sm->buf, n, ctx);
    fi_stop_matcher_consume(sm, n);
    if (sm->hit) sm->len = 0; /* drop the stop string and what follows */
    return go;
}

fi_status fi_generate(const fi_logits_source *src, fi_sampler *smp, const fi_tokenizer *tok,
                      const int32_t *prompt, size_t n_prompt, const fi_generate_params *gp,
                      float *logits, fi_emit_fn emit, void *emit_ctx, fi_generate_stats *stats,
                      fi_error *err) {
    fi_generate_stats st = {0};
    st.n_prompt = (int64_t)n_prompt;
    if (stats) *stats = st;
    int64_t n_past = src->n_past(src->self);
    if (n_prompt == 0) return fi_error_set(err, FI_ERR_INVALID, "generate: empty prompt");
    int64_t need = n_past + (int64_t)n_prompt + (gp->max_tokens > 0 ? gp->max_tokens : 0);
    if (need > src->n_ctx) {
        if (n_past > 0)
            return fi_error_set(err, FI_ERR_INVALID,
                                "conversation of %lld tokens plus a turn of %zu tokens plus -n %lld exceeds the context of %lld (-c); /reset or raise -c",
                                (long long)n_past, n_prompt, (long long)gp->max_tokens, (long long)src->n_ctx);
        return fi_error_set(err, FI_ERR_INVALID, "prompt of %zu tokens plus -n %lld exceeds the context of %lld (-c)",
                            n_prompt, (long long)(gp->max_tokens > 0 ? gp->max_tokens : 0), (long long)src->n_ctx);
    }
    for (size_t i = 0; i < n_prompt; i++) fi_sampler_accept(smp, prompt[i]);

    double t0 = now_ms();
    size_t chunk = gp->prefill_chunk > 0 ? (size_t)gp->prefill_chunk : n_prompt;
    for (size_t done = 0; done < n_prompt;) {
        size_t c = n_prompt - done < chunk ? n_prompt - done : chunk;
        fi_status s = src->eval(src->self, prompt + done, c, logits, err);
        if (s != FI_OK) {
            src->truncate(src->self, n_past);
            return s;
        }
        done += c;
        if (gp->progress) gp->progress((int64_t)done, (int64_t)n_prompt, gp->progress_ctx);
    }
    st.prefill_ms = now_ms() - t0;

    fi_stop_matcher sm = {.stop = gp->stop, .n_stop = gp->n_stop};
    fi_detok dt;
    memset(&dt, 0, sizeof dt);
    char piece[512];
    fi_status status = FI_OK;
    double t1 = now_ms();
    for (;;) {
        if (gp->max_tokens >= 0 && st.n_generated >= gp->max_tokens) {
            st.reason = FI_STOP_MAX_TOKENS;
            break;
        }
        int32_t id = fi_sampler_sample(smp, logits);
        if (gp->stop_at_eog && tok && fi_tokenizer_is_eog(tok, id)) {
            st.reason = FI_STOP_EOG;
            break;
        }
        if (gp->tokens_out && (size_t)st.n_generated < gp->tokens_out_cap)
            gp->tokens_out[st.n_generated] = id;
        st.n_generated++;
        fi_sampler_accept(smp, id);
        size_t n = tok ? fi_detok_push(&dt, tok, id, piece, sizeof piece) : 0;
        if ((status = fi_stop_matcher_push(&sm, piece, n, err)) != FI_OK) break;
        if (!flush_ready(&sm, false, emit, emit_ctx)) {
            st.reason = FI_STOP_CALLER;
            break;
        }
        if (sm.hit) {
            st.reason = FI_STOP_STRING;
            break;
        }
        if (src->n_past(src->self) >= src->n_ctx) {
            st.reason = FI_STOP_CONTEXT;
            break;
        }
        bool last = gp->max_tokens >= 0 && st.n_generated >= gp->max_tokens;
        if (last) { /* its logits would never be used: keep the token out of the cache */
            st.reason = FI_STOP_MAX_TOKENS;
            break;
        }
        if ((status = src->eval(src->self, &id, 1, logits, err)) != FI_OK) break;
    }
    if (status == FI_OK && tok && st.reason != FI_STOP_STRING && st.reason != FI_STOP_CALLER) {
        size_t n = fi_detok_flush(&dt, piece, sizeof piece);
        if ((status = fi_stop_matcher_push(&sm, piece, n, err)) == FI_OK) {
            flush_ready(&sm, true, emit, emit_ctx);
            if (sm.hit) st.reason = FI_STOP_STRING;
        }
    }
    st.decode_ms = now_ms() - t1;
    fi_stop_matcher_free(&sm);
    if (stats) *stats = st;
    return status;
}
