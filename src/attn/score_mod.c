#include "attn/score_mod.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

/* A chain longer than this is certainly a mistake, and the cap keeps parsing bounded. */
#define FI_SCORE_MOD_MAX_STEPS 64

static fi_score_mod *score_mod_alloc(int n_steps) {
    fi_score_mod *s = calloc(1, sizeof *s + (size_t)n_steps * sizeof s->steps[0]);
    if (s) s->n_steps = n_steps;
    return s;
}

double fi_score_mod_alibi_slope(int64_t h, int64_t n_heads) {
    if (n_heads <= 0 || h < 0 || h >= n_heads) return 0.0;
    int64_t m = 1;
    while (m * 2 <= n_heads) m *= 2;
    if (h < m) return exp2(-8.0 * (double)(h + 1) / (double)m);
    int64_t k = h - m;
    return exp2(-8.0 * (double)(2 * k + 1) / (double)(2 * m));
}

bool fi_score_mod_depends_on_head(const fi_score_mod *s) {
    if (!s) return false;
    for (int i = 0; i < s->n_steps; i++)
        if (s->steps[i].kind != FI_SCORE_SOFTCAP) return true;
    return false;
}

float fi_score_mod_apply(const fi_score_mod *s, float score, int64_t b, int64_t h, int64_t n_heads,
                         int64_t q_idx, int64_t kv_idx) {
    if (!s) return score;
    double x = score;
    for (int i = 0; i < s->n_steps; i++) {
        const fi_score_step *st = &s->steps[i];
        switch (st->kind) {
        case FI_SCORE_SOFTCAP: x = st->cap * tanh(x / st->cap); break;
        case FI_SCORE_ALIBI:
            x += fi_score_mod_alibi_slope(h, n_heads) * (double)(kv_idx - q_idx);
            break;
        case FI_SCORE_CALLBACK: x = st->fn((float)x, b, h, q_idx, kv_idx, st->ctx); break;
        }
    }
    return (float)x;
}

fi_status fi_score_mod_from_callback(fi_score_fn fn, void *ctx, fi_score_mod **out, fi_error *err) {
    if (!out) return fi_error_set(err, FI_ERR_INVALID, "score mod: no output pointer");
    *out = NULL;
    if (!fn) return fi_error_set(err, FI_ERR_INVALID, "score mod: callback is NULL");
    fi_score_mod *s = score_mod_alloc(1);
    if (!s) return fi_error_set(err, FI_ERR_NOMEM, "score mod: out of memory");
    s->steps[0] = (fi_score_step){.kind = FI_SCORE_CALLBACK, .fn = fn, .ctx = ctx};
    *out = s;
    return FI_OK;
}

void fi_score_mod_free(fi_score_mod *s) { free(s); }

/* ---- parser: item (',' item)*, item := name [':' number] ----------------- */

typedef struct score_parser {
    const char *src;
    size_t pos;
    fi_error *err;
} score_parser;

static fi_status score_parse_error(score_parser *p, size_t at, const char *what) {
    return fi_error_set(p->err, FI_ERR_INVALID, "score mod expression, column %zu: %s", at + 1, what);
}

static void score_skip_space(score_parser *p) {
    while (p->src[p->pos] && isspace((unsigned char)p->src[p->pos])) p->pos++;
}

/* A positive, finite real number (softcap's C). */
static fi_status score_parse_cap(score_parser *p, double *out) {
    score_skip_space(p);
    const char *start = p->src + p->pos;
    size_t at = p->pos;
    if (!(isdigit((unsigned char)*start) || (*start == '.' && isdigit((unsigned char)start[1]))))
        return score_parse_error(p, at, "expected a positive number after 'softcap:' (e.g. softcap:30)");
    char *end = NULL;
    errno = 0;
    double v = strtod(start, &end);
    /* strtod also accepts hex, inf and nan; none of them start with a plain digit run
     * except hex ("0x..."), which we refuse for clarity. */
    if (end - start > 1 && (start[1] == 'x' || start[1] == 'X'))
        return score_parse_error(p, at, "expected a decimal number after 'softcap:'");
    if (errno == ERANGE || !isfinite(v))
        return score_parse_error(p, at, "softcap value is out of range");
    if (!(v > 0)) return score_parse_error(p, at, "softcap value must be > 0");
    p->pos += (size_t)(end - start);
    *out = v;
    return FI_OK;
}

fi_status fi_score_mod_parse(const char *expr, fi_score_mod **out, fi_error *err) {
    if (!out) return fi_error_set(err, FI_ERR_INVALID, "score mod: no output pointer");
    *out = NULL;
    if (!expr) return fi_error_set(err, FI_ERR_INVALID, "score mod expression is missing");
    score_parser p = {.src = expr, .pos = 0, .err = err};
    fi_score_step steps[FI_SCORE_MOD_MAX_STEPS];
    int n = 0;
    score_skip_space(&p);
    if (!expr[p.pos])
        return score_parse_error(&p, p.pos, "expected a score modifier (softcap:C or alibi) but the expression is empty");
    for (;;) {
        score_skip_space(&p);
        size_t at = p.pos;
        size_t len = 0;
        while (isalnum((unsigned char)expr[at + len]) || expr[at + len] == '_') len++;
        if (len == 0) {
            if (!expr[at]) return score_parse_error(&p, at, "expected a score modifier (softcap:C or alibi) at the end");
            char msg[96];
            snprintf(msg, sizeof msg, "expected a score modifier (softcap:C or alibi), found '%c'", expr[at]);
            return score_parse_error(&p, at, msg);
        }
        if (n == FI_SCORE_MOD_MAX_STEPS) return score_parse_error(&p, at, "too many score modifiers (at most 64)");
        p.pos += len;
        fi_score_step st = {0};
        if (len == 7 && strncmp(expr + at, "softcap", 7) == 0) {
            score_skip_space(&p);
            if (expr[p.pos] != ':')
                return score_parse_error(&p, p.pos, "expected ':' and a number after 'softcap' (e.g. softcap:30)");
            p.pos++;
            st.kind = FI_SCORE_SOFTCAP;
            fi_status s = score_parse_cap(&p, &st.cap);
            if (s) return s;
        } else if (len == 5 && strncmp(expr + at, "alibi", 5) == 0) {
            score_skip_space(&p);
            if (expr[p.pos] == ':') return score_parse_error(&p, p.pos, "'alibi' takes no parameter");
            st.kind = FI_SCORE_ALIBI;
        } else {
            char msg[160];
            snprintf(msg, sizeof msg, "unknown score modifier '%.*s' (expected softcap:C or alibi)",
                     (int)(len > 40 ? 40 : len), expr + at);
            return score_parse_error(&p, at, msg);
        }
        steps[n++] = st;
        score_skip_space(&p);
        if (!expr[p.pos]) break;
        if (expr[p.pos] != ',') {
            char msg[96];
            snprintf(msg, sizeof msg, "expected ',' or the end after a score modifier, found '%c'", expr[p.pos]);
            return score_parse_error(&p, p.pos, msg);
        }
        p.pos++;
    }
    fi_score_mod *s = score_mod_alloc(n);
    if (!s) return fi_error_set(err, FI_ERR_NOMEM, "score mod: out of memory");
    memcpy(s->steps, steps, (size_t)n * sizeof steps[0]);
    *out = s;
    return FI_OK;
}
