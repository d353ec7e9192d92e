/* Compiled masks: an expression tree over built-in primitives and C callbacks.
 * The element test lives here; the analytic block classifier in block_mask.c and
 * the parser of the mask language in mask_parse.c. */
#ifndef FI_ATTN_MASK_H
#define FI_ATTN_MASK_H

#include "flexinfer.h"

typedef enum fi_mask_op {
    FI_MASK_FULL,      /* always */
    FI_MASK_CAUSAL,    /* kv <= q */
    FI_MASK_WINDOW,    /* |q - kv| < param */
    FI_MASK_PREFIX,    /* kv < param */
    FI_MASK_CHUNKED,   /* q / param == kv / param */
    FI_MASK_DOCUMENT,  /* seg[q] == seg[kv] */
    FI_MASK_GENERATED, /* seg[q] < 0 */
    FI_MASK_CALLBACK,  /* fn(b, h, q, kv, ctx) */
    FI_MASK_AND,
    FI_MASK_OR,
    FI_MASK_NOT,
} fi_mask_op;

struct fi_mask {
    fi_mask_op op;
    int64_t param;
    fi_mask *lhs, *rhs; /* AND/OR use both, NOT uses lhs */
    fi_mask_fn fn;
    void *ctx;
    bool depends_on_head;
};

/* Allocates a leaf node (param used by window/prefix/chunked). */
fi_status fi_mask_new_leaf(fi_mask_op op, int64_t param, fi_mask **out, fi_error *err);

/* Segment id of logical position pos for batch b (inputs validated beforehand). */
static inline int32_t fi_mask_segment(const fi_mask_inputs *in, int64_t b, int64_t pos) {
    const int32_t *row = in->segments_batch ? in->segments + b * in->segments_len : in->segments;
    return row[pos];
}

/* True when any node of the tree is a callback whose result may vary with the head. */
bool fi_mask_depends_on_head(const fi_mask *m);
/* True when the tree contains a callback (blocks then need a scan). */
bool fi_mask_has_callback(const fi_mask *m);
/* Writes the expression back in the mask language (callbacks as "<callback>"). */
void fi_mask_format(const fi_mask *m, char *buf, size_t size);

#endif
