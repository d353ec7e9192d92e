/* The mask language: a recursive-descent parser over
 *   or    := and ('|' and)*
 *   and   := unary ('&' unary)*
 *   unary := '!' unary | '(' or ')' | primitive
 *   primitive := full | causal | document | generated
 *              | window ':' INT | prefix ':' INT | chunked ':' INT
 * so '!' binds tighter than '&', which binds tighter than '|'. Whitespace may appear
 * between any two tokens. Every error names the 1-based column and what was expected. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "attn/mask.h"
#include "core/error.h"

/* Bounds the recursion of the parser and of every later walk over the tree. */
#define FI_MASK_MAX_DEPTH 256

#define FI_MASK_PRIMITIVES "full, causal, window:W, prefix:N, chunked:C, document, generated"

typedef struct mask_parser {
    const char *src;
    size_t pos;
    fi_error *err;
} mask_parser;

static fi_status parse_error(mask_parser *p, size_t at, const char *fmt, const char *arg) {
    char what[400];
    snprintf(what, sizeof what, fmt, arg ? arg : "");
    return fi_error_set(p->err, FI_ERR_INVALID, "mask expression, column %zu: %s", at + 1, what);
}

static void skip_space(mask_parser *p) {
    while (p->src[p->pos] && isspace((unsigned char)p->src[p->pos])) p->pos++;
}

static bool is_word_start(char c) { return isalpha((unsigned char)c) || c == '_'; }
static bool is_word_char(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* Copies the token at `at` for a message: a word, or a single character. */
static const char *token_at(const mask_parser *p, size_t at, char *buf, size_t size) {
    size_t len = 0;
    if (is_word_char(p->src[at]))
        while (is_word_char(p->src[at + len])) len++;
    else /* one character; a UTF-8 sequence whole, so the message stays valid text */
        for (len = 1; ((unsigned char)p->src[at + len] & 0xC0) == 0x80; len++) {}
    if (len > 40) len = 40;
    snprintf(buf, size, "%.*s", (int)len, p->src + at);
    return buf;
}

static fi_status parse_or(mask_parser *p, int depth, fi_mask **out, int *height);

typedef struct primitive {
    const char *name;
    fi_mask_op op;
    bool has_param;
    int64_t min_param;
    const char *param_name;
} primitive;

static const primitive primitives[] = {
    {"full", FI_MASK_FULL, false, 0, NULL},
    {"causal", FI_MASK_CAUSAL, false, 0, NULL},
    {"window", FI_MASK_WINDOW, true, 1, "window size"},
    {"prefix", FI_MASK_PREFIX, true, 0, "prefix length"},
    {"chunked", FI_MASK_CHUNKED, true, 1, "chunk size"},
    {"document", FI_MASK_DOCUMENT, false, 0, NULL},
    {"generated", FI_MASK_GENERATED, false, 0, NULL},
};

/* A non-negative decimal integer that fits in int64. */
static fi_status parse_param(mask_parser *p, const primitive *prim, int64_t *out) {
    char after[32];
    snprintf(after, sizeof after, "%s:", prim->name);
    skip_space(p);
    const size_t at = p->pos;
    if (!isdigit((unsigned char)p->src[at])) return parse_error(p, at, "expected a number after '%s'", after);
    int64_t v = 0;
    bool overflow = false;
    while (isdigit((unsigned char)p->src[p->pos])) {
        const int d = p->src[p->pos] - '0';
        if (v > (INT64_MAX - d) / 10) overflow = true;
        else v = v * 10 + d;
        p->pos++;
    }
    if (is_word_char(p->src[p->pos]) || p->src[p->pos] == '.')
        return parse_error(p, at, "malformed number after '%s' (expected a whole number)", after);
    if (overflow) return parse_error(p, at, "the number after '%s' does not fit in 64 bits", after);
    if (v < prim->min_param) {
        char what[96];
        snprintf(what, sizeof what, "%s must be >= %lld, got %lld", prim->param_name,
                 (long long)prim->min_param, (long long)v);
        return parse_error(p, at, "%s", what);
    }
    *out = v;
    return FI_OK;
}

static fi_status parse_primitive(mask_parser *p, fi_mask **out) {
    const size_t at = p->pos;
    size_t len = 0;
    while (is_word_char(p->src[at + len])) len++;
    p->pos += len;
    const primitive *prim = NULL;
    for (size_t i = 0; i < sizeof primitives / sizeof primitives[0]; i++)
        if (strlen(primitives[i].name) == len && strncmp(primitives[i].name, p->src + at, len) == 0)
            prim = &primitives[i];
    if (!prim) {
        char word[48];
        return parse_error(p, at, "unknown primitive '%s' (expected one of " FI_MASK_PRIMITIVES ")",
                           token_at(p, at, word, sizeof word));
    }
    int64_t param = 0;
    skip_space(p);
    if (prim->has_param) {
        if (p->src[p->pos] != ':') {
            char msg[96];
            snprintf(msg, sizeof msg, "expected ':' and a number after '%s' (e.g. %s:%s)", prim->name,
                     prim->name, prim->op == FI_MASK_PREFIX ? "16" : "1024");
            return parse_error(p, p->pos, "%s", msg);
        }
        p->pos++;
        fi_status st = parse_param(p, prim, &param);
        if (st) return st;
    } else if (p->src[p->pos] == ':') {
        return parse_error(p, p->pos, "'%s' takes no parameter", prim->name);
    }
    return fi_mask_new_leaf(prim->op, param, out, p->err);
}

static fi_status parse_unary(mask_parser *p, int depth, fi_mask **out, int *height) {
    skip_space(p);
    const size_t at = p->pos;
    const char c = p->src[at];
    if (depth > FI_MASK_MAX_DEPTH) return parse_error(p, at, "expression nested too deeply (more than %s levels)", "256");
    if (c == '!') {
        p->pos++;
        fi_mask *inner = NULL;
        fi_status st = parse_unary(p, depth + 1, &inner, height);
        if (st) return st;
        if (++*height > FI_MASK_MAX_DEPTH) {
            fi_mask_free(inner);
            return parse_error(p, at, "expression nested too deeply (more than %s levels)", "256");
        }
        return fi_mask_not(inner, out, p->err);
    }
    if (c == '(') {
        p->pos++;
        fi_status st = parse_or(p, depth + 1, out, height);
        if (st) return st;
        skip_space(p);
        if (p->src[p->pos] == ')') {
            p->pos++;
            return FI_OK;
        }
        fi_mask_free(*out);
        *out = NULL;
        char msg[128];
        if (!p->src[p->pos]) {
            snprintf(msg, sizeof msg, "expected ')' to close the '(' at column %zu", at + 1);
            return parse_error(p, p->pos, "%s", msg);
        }
        char tok[48];
        snprintf(msg, sizeof msg, "expected '&', '|' or ')' to close the '(' at column %zu, found '%s'", at + 1,
                 token_at(p, p->pos, tok, sizeof tok));
        return parse_error(p, p->pos, "%s", msg);
    }
    if (is_word_start(c)) {
        *height = 1;
        return parse_primitive(p, out);
    }
    if (!c) {
        if (at == 0 || strspn(p->src, " \t\r\n\v\f") == at)
            return parse_error(p, at, "expected a primitive (one of " FI_MASK_PRIMITIVES "), but the expression is empty%s", "");
        return parse_error(p, at, "expected a primitive, '!' or '(' at the end of the expression%s", "");
    }
    char tok[48];
    return parse_error(p, at, "unexpected '%s' (expected a primitive, '!' or '(')", token_at(p, at, tok, sizeof tok));
}

/* Left-associative chains of one binary operator over `next`. */
static fi_status parse_chain(mask_parser *p, int depth, char op_char, fi_mask **out, int *height,
                             fi_status (*next)(mask_parser *, int, fi_mask **, int *)) {
    fi_status st = next(p, depth, out, height);
    if (st) return st;
    for (;;) {
        skip_space(p);
        if (p->src[p->pos] != op_char) return FI_OK;
        const size_t at = p->pos++;
        fi_mask *rhs = NULL;
        int rhs_height = 0;
        if ((st = next(p, depth, &rhs, &rhs_height))) {
            fi_mask_free(*out);
            *out = NULL;
            return st;
        }
        *height = 1 + (*height > rhs_height ? *height : rhs_height);
        if (*height > FI_MASK_MAX_DEPTH) {
            fi_mask_free(*out);
            fi_mask_free(rhs);
            *out = NULL;
            return parse_error(p, at, "expression nested too deeply (more than %s levels)", "256");
        }
        st = op_char == '&' ? fi_mask_and(*out, rhs, out, p->err) : fi_mask_or(*out, rhs, out, p->err);
        if (st) {
            *out = NULL;
            return st;
        }
    }
}

static fi_status parse_and(mask_parser *p, int depth, fi_mask **out, int *height) {
    return parse_chain(p, depth, '&', out, height, parse_unary);
}

static fi_status parse_or(mask_parser *p, int depth, fi_mask **out, int *height) {
    return parse_chain(p, depth, '|', out, height, parse_and);
}

fi_status fi_mask_parse(const char *expr, fi_mask **out, fi_error *err) {
    if (!out) return fi_error_set(err, FI_ERR_INVALID, "mask: no output pointer");
    *out = NULL;
    if (!expr) return fi_error_set(err, FI_ERR_INVALID, "mask expression is missing");
    mask_parser p = {.src = expr, .pos = 0, .err = err};
    fi_mask *m = NULL;
    int height = 0;
    fi_status st = parse_or(&p, 0, &m, &height);
    if (st) return st;
    skip_space(&p);
    if (expr[p.pos]) {
        fi_mask_free(m);
        char tok[48];
        if (expr[p.pos] == ')') return parse_error(&p, p.pos, "unexpected ')' without a matching '('%s", "");
        return parse_error(&p, p.pos, "unexpected '%s' after a complete expression (expected '&', '|' or the end)",
                           token_at(&p, p.pos, tok, sizeof tok));
    }
    *out = m;
    return FI_OK;
}
