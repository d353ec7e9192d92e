/* Score modifiers: a short program of steps (softcap, ALiBi, C callbacks) applied
 * left to right to each scaled score before the softmax. The struct is visible so
 * kernels can specialise the common steps instead of calling fi_score_mod_apply
 * per element. */
#ifndef FI_ATTN_SCORE_MOD_H
#define FI_ATTN_SCORE_MOD_H

#include "flexinfer.h"

typedef enum fi_score_step_kind {
    FI_SCORE_SOFTCAP,  /* cap * tanh(s / cap) */
    FI_SCORE_ALIBI,    /* s + slope(h, n_heads) * (kv - q) */
    FI_SCORE_CALLBACK, /* fn(s, b, h, q, kv, ctx) */
} fi_score_step_kind;

typedef struct fi_score_step {
    fi_score_step_kind kind;
    double cap;
    fi_score_fn fn;
    void *ctx;
} fi_score_step;

struct fi_score_mod {
    int n_steps;
    fi_score_step steps[];
};

/* Standard ALiBi slope of query head h out of n_heads (Press et al.):
 *   n a power of two: slope_h = 2^(-8 (h + 1) / n);
 *   otherwise, with m the largest power of two below n, heads 0..m-1 take the slopes
 *   of m heads, and heads m..n-1 take every other slope of 2m heads, starting with the
 *   first: slope_{m+k} = 2^(-8 (2k + 1) / (2m)). */
double fi_score_mod_alibi_slope(int64_t h, int64_t n_heads);

/* True when some step reads the head (ALiBi or a callback). */
bool fi_score_mod_depends_on_head(const fi_score_mod *s);

#endif
