#include "attn/mask.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

fi_status fi_mask_new_leaf(fi_mask_op op, int64_t param, fi_mask **out, fi_error *err) {
    fi_mask *m = calloc(1, sizeof *m);
    if (!m) return fi_error_set(err, FI_ERR_NOMEM, "mask: out of memory");
    m->op = op;
    m->param = param;
    *out = m;
    return FI_OK;
}

fi_status fi_mask_from_callback(fi_mask_fn fn, void *ctx, bool depends_on_head, fi_mask **out,
                                fi_error *err) {
    if (!fn) return fi_error_set(err, FI_ERR_INVALID, "mask: callback is NULL");
    fi_status st = fi_mask_new_leaf(FI_MASK_CALLBACK, 0, out, err);
    if (st) return st;
    (*out)->fn = fn;
    (*out)->ctx = ctx;
    (*out)->depends_on_head = depends_on_head;
    return FI_OK;
}

static fi_status combine(fi_mask_op op, fi_mask *a, fi_mask *b, fi_mask **out, fi_error *err) {
    if (!a || (op != FI_MASK_NOT && !b)) {
        fi_mask_free(a);
        fi_mask_free(b);
        return fi_error_set(err, FI_ERR_INVALID, "mask: missing operand");
    }
    fi_mask *m = calloc(1, sizeof *m);
    if (!m) {
        fi_mask_free(a);
        fi_mask_free(b);
        return fi_error_set(err, FI_ERR_NOMEM, "mask: out of memory");
    }
    m->op = op;
    m->lhs = a;
    m->rhs = b;
    *out = m;
    return FI_OK;
}

fi_status fi_mask_and(fi_mask *a, fi_mask *b, fi_mask **out, fi_error *err) {
    return combine(FI_MASK_AND, a, b, out, err);
}
fi_status fi_mask_or(fi_mask *a, fi_mask *b, fi_mask **out, fi_error *err) {
    return combine(FI_MASK_OR, a, b, out, err);
}
fi_status fi_mask_not(fi_mask *a, fi_mask **out, fi_error *err) {
    return combine(FI_MASK_NOT, a, NULL, out, err);
}

void fi_mask_free(fi_mask *m) {
    if (!m) return;
    fi_mask_free(m->lhs);
    fi_mask_free(m->rhs);
    free(m);
}

bool fi_mask_needs_segments(const fi_mask *m) {
    if (!m) return false;
    if (m->op == FI_MASK_DOCUMENT || m->op == FI_MASK_GENERATED) return true;
    return fi_mask_needs_segments(m->lhs) || fi_mask_needs_segments(m->rhs);
}

bool fi_mask_depends_on_head(const fi_mask *m) {
    if (!m) return false;
    if (m->op == FI_MASK_CALLBACK) return m->depends_on_head;
    return fi_mask_depends_on_head(m->lhs) || fi_mask_depends_on_head(m->rhs);
}

bool fi_mask_has_callback(const fi_mask *m) {
    if (!m) return false;
    if (m->op == FI_MASK_CALLBACK) return true;
    return fi_mask_has_callback(m->lhs) || fi_mask_has_callback(m->rhs);
}

bool fi_mask_keep(const fi_mask *m, const fi_mask_inputs *in, int64_t b, int64_t h, int64_t q,
                  int64_t kv) {
    if (!m) return true;
    switch (m->op) {
    case FI_MASK_FULL: return true;
    case FI_MASK_CAUSAL: return kv <= q;
    case FI_MASK_WINDOW: return (q > kv ? q - kv : kv - q) < m->param;
    case FI_MASK_PREFIX: return kv < m->param;
    case FI_MASK_CHUNKED: return q / m->param == kv / m->param;
    case FI_MASK_DOCUMENT: return fi_mask_segment(in, b, q) == fi_mask_segment(in, b, kv);
    case FI_MASK_GENERATED: return fi_mask_segment(in, b, q) < 0;
    case FI_MASK_CALLBACK: return m->fn(b, h, q, kv, m->ctx);
    case FI_MASK_AND: return fi_mask_keep(m->lhs, in, b, h, q, kv) && fi_mask_keep(m->rhs, in, b, h, q, kv);
    case FI_MASK_OR: return fi_mask_keep(m->lhs, in, b, h, q, kv) || fi_mask_keep(m->rhs, in, b, h, q, kv);
    case FI_MASK_NOT: return !fi_mask_keep(m->lhs, in, b, h, q, kv);
    }
    return false;
}

fi_status fi_mask_validate_inputs(const fi_mask *m, const fi_mask_inputs *in, int64_t batch,
                                  int64_t q_len, int64_t kv_len, fi_error *err) {
    if (!m || !fi_mask_needs_segments(m)) return FI_OK;
    if (!in || !in->segments)
        return fi_error_set(err, FI_ERR_INVALID,
                            "mask uses 'document' or 'generated' but no segment ids were given (--segments)");
    if (in->q_offset < 0) return fi_error_set(err, FI_ERR_INVALID, "q_offset must be >= 0");
    int64_t need = kv_len > in->q_offset + q_len ? kv_len : in->q_offset + q_len;
    if (in->segments_len < need)
        return fi_error_set(err, FI_ERR_INVALID,
                            "segment ids cover %lld positions but the problem needs %lld "
                            "(keys: %lld, queries end at %lld)",
                            (long long)in->segments_len, (long long)need, (long long)kv_len,
                            (long long)(in->q_offset + q_len));
    if (in->segments_batch != 0 && in->segments_batch != batch)
        return fi_error_set(err, FI_ERR_INVALID, "segment ids have batch %lld but the problem has batch %lld",
                            (long long)in->segments_batch, (long long)batch);
    return FI_OK;
}

static const char *op_name(fi_mask_op op) {
    switch (op) {
    case FI_MASK_FULL: return "full";
    case FI_MASK_CAUSAL: return "causal";
    case FI_MASK_WINDOW: return "window";
    case FI_MASK_PREFIX: return "prefix";
    case FI_MASK_CHUNKED: return "chunked";
    case FI_MASK_DOCUMENT: return "document";
    case FI_MASK_GENERATED: return "generated";
    case FI_MASK_CALLBACK: return "<callback>";
    default: return "?";
    }
}

static size_t format_into(const fi_mask *m, char *buf, size_t size, size_t pos) {
#define APPEND(...) \
    pos += (size_t)snprintf(buf + (pos < size ? pos : size), pos < size ? size - pos : 0, __VA_ARGS__)
    switch (m->op) {
    case FI_MASK_AND:
    case FI_MASK_OR:
        APPEND("(");
        pos = format_into(m->lhs, buf, size, pos);
        APPEND(m->op == FI_MASK_AND ? " & " : " | ");
        pos = format_into(m->rhs, buf, size, pos);
        APPEND(")");
        break;
    case FI_MASK_NOT:
        APPEND("!");
        pos = format_into(m->lhs, buf, size, pos);
        break;
    case FI_MASK_WINDOW:
    case FI_MASK_PREFIX:
    case FI_MASK_CHUNKED: APPEND("%s:%lld", op_name(m->op), (long long)m->param); break;
    default: APPEND("%s", op_name(m->op)); break;
    }
#undef APPEND
    return pos;
}

void fi_mask_format(const fi_mask *m, char *buf, size_t size) {
    if (size == 0) return;
    buf[0] = '\0';
    if (!m) {
        snprintf(buf, size, "full");
        return;
    }
    format_into(m, buf, size, 0);
}
