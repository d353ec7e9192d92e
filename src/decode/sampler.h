/* Token sampling (public API: fi_sampler_* in include/flexinfer.h). The stages are exposed here so
 * tests can check each against a naive implementation.
 *
 * Chain, as llama.cpp's default: penalties -> top-k -> top-p -> min-p -> temperature -> draw.
 * Filters see the penalised logits at temperature 1; temperature only shapes the final draw. */
#ifndef FI_DECODE_SAMPLER_H
#define FI_DECODE_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "flexinfer.h"

typedef struct fi_token_logit {
    int32_t id;
    float logit;
} fi_token_logit;

/* Order used everywhere: higher logit first, lower id first on ties (deterministic). */
int fi_token_logit_cmp(const void *a, const void *b);

/* Penalties over `history` (the last tokens of the sequence): for each distinct token with count c,
 * logit /= repeat (logit > 0) or *= repeat (logit <= 0), then logit -= c * frequency + presence.
 * `counts` is caller scratch of n_vocab zeros, returned zeroed. */
void fi_sampler_penalize(float *logits, int64_t n_vocab, const int32_t *history, size_t n_history,
                         float repeat, float presence, float frequency, int32_t *counts);
/* Keeps the k best of c[0..n) sorted in the order above; returns the new count (k <= 0: all, sorted). */
size_t fi_sampler_top_k(fi_token_logit *c, size_t n, int32_t k);
/* c sorted: keeps the shortest prefix whose probability mass reaches p (at least one). */
size_t fi_sampler_top_p(const fi_token_logit *c, size_t n, float p);
/* c sorted: keeps tokens with probability >= min_p * the best one's (at least one). */
size_t fi_sampler_min_p(const fi_token_logit *c, size_t n, float min_p);

/* The generator: xoshiro256** seeded through splitmix64. */
typedef struct fi_rng { uint64_t s[4]; } fi_rng;
void fi_rng_seed(fi_rng *r, uint64_t seed);
uint64_t fi_rng_next(fi_rng *r);
double fi_rng_uniform(fi_rng *r); /* [0, 1) */

#endif /* FI_DECODE_SAMPLER_H */
