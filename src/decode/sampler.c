/* Token sampling: penalties, top-k, top-p, min-p, temperature, seeded draw (see sampler.h). */
#include "decode/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

struct fi_sampler {
    fi_sampler_params p;
    int64_t n_vocab;
    fi_rng rng;
    fi_token_logit *cand; /* [n_vocab] */
    float *work;          /* [n_vocab] penalised logits */
    int32_t *counts;      /* [n_vocab], kept zero between calls */
    int32_t *hist;        /* ring of the last `hist_cap` tokens, or a growing array when unbounded */
    size_t hist_cap, hist_len, hist_head;
    int32_t *hist_lin;    /* linearised history for the penalty pass */
};

int fi_token_logit_cmp(const void *a, const void *b) {
    const fi_token_logit *x = a, *y = b;
    if (x->logit > y->logit) return -1;
    if (x->logit < y->logit) return 1;
    return (x->id > y->id) - (x->id < y->id);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void fi_rng_seed(fi_rng *r, uint64_t seed) {
    uint64_t z = seed;
    for (int i = 0; i < 4; i++) { /* splitmix64 */
        z += 0x9e3779b97f4a7c15ull;
        uint64_t t = z;
        t = (t ^ (t >> 30)) * 0xbf58476d1ce4e5b9ull;
        t = (t ^ (t >> 27)) * 0x94d049bb133111ebull;
        r->s[i] = t ^ (t >> 31);
    }
}

uint64_t fi_rng_next(fi_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double fi_rng_uniform(fi_rng *r) { return (double)(fi_rng_next(r) >> 11) * 0x1.0p-53; }

void fi_sampler_penalize(float *logits, int64_t n_vocab, const int32_t *history, size_t n_history,
                         float repeat, float presence, float frequency, int32_t *counts) {
    for (size_t i = 0; i < n_history; i++)
        if (history[i] >= 0 && history[i] < n_vocab) counts[history[i]]++;
    for (size_t i = 0; i < n_history; i++) {
        int32_t t = history[i];
        if (t < 0 || t >= n_vocab || counts[t] == 0) continue; /* 0: already handled */
        int32_t c = counts[t];
        float l = logits[t];
        l = l <= 0 ? l * repeat : l / repeat;
        l -= (float)c * frequency + presence;
        logits[t] = l;
        counts[t] = 0;
    }
}

/* Min-heap on the comparison order (root = worst kept). */
static inline bool worse(const fi_token_logit *a, const fi_token_logit *b) {
    return fi_token_logit_cmp(a, b) > 0;
}

static void sift_down(fi_token_logit *h, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && worse(&h[l], &h[w])) w = l;
        if (r < n && worse(&h[r], &h[w])) w = r;
        if (w == i) return;
        fi_token_logit t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

size_t fi_sampler_top_k(fi_token_logit *c, size_t n, int32_t k) {
    if (k <= 0 || (size_t)k >= n) {
        qsort(c, n, sizeof *c, fi_token_logit_cmp);
        return n;
    }
    size_t kk = (size_t)k;
    for (size_t i = kk / 2; i-- > 0;) sift_down(c, kk, i);
    for (size_t i = kk; i < n; i++)
        if (worse(&c[0], &c[i])) {
            c[0] = c[i];
            sift_down(c, kk, 0);
        }
    qsort(c, kk, sizeof *c, fi_token_logit_cmp);
    return kk;
}

size_t fi_sampler_top_p(const fi_token_logit *c, size_t n, float p) {
    if (n == 0 || p >= 1.0f) return n;
    double z = 0;
    for (size_t i = 0; i < n; i++) z += exp((double)c[i].logit - c[0].logit);
    double cum = 0;
    for (size_t i = 0; i < n; i++) {
        cum += exp((double)c[i].logit - c[0].logit) / z;
        if (cum >= (double)p) return i + 1;
    }
    return n;
}

size_t fi_sampler_min_p(const fi_token_logit *c, size_t n, float min_p) {
    if (n == 0 || min_p <= 0.0f) return n;
    double cut = (double)c[0].logit + log((double)min_p);
    size_t k = 1;
    while (k < n && (double)c[k].logit >= cut) k++;
    return k;
}

fi_sampler_params fi_sampler_default_params(void) {
    fi_sampler_params p = {.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                           .repeat_penalty = 1.0f, .presence_penalty = 0.0f,
                           .frequency_penalty = 0.0f, .penalty_last_n = 64, .seed = 0};
    return p;
}

fi_status fi_sampler_create(const fi_sampler_params *p, int64_t n_vocab, fi_sampler **out,
                            fi_error *err) {
    *out = NULL;
    if (n_vocab <= 0) return fi_error_set(err, FI_ERR_INVALID, "sampler: empty vocabulary");
    if (!(p->temp >= 0) || !(p->top_p > 0 && p->top_p <= 1) || !(p->min_p >= 0 && p->min_p <= 1) ||
        !(p->repeat_penalty > 0) || p->penalty_last_n < -1 || !isfinite(p->presence_penalty) ||
        !isfinite(p->frequency_penalty) || p->top_k < 0)
        return fi_error_set(err, FI_ERR_INVALID,
                            "sampler: parameters out of range (temp >= 0, top-k >= 0, 0 < top-p <= 1, "
                            "0 <= min-p <= 1, repeat-penalty > 0, penalty window >= -1)");
    fi_sampler *s = calloc(1, sizeof *s);
    if (!s) return fi_error_set(err, FI_ERR_NOMEM, "sampler: out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->work = malloc((size_t)n_vocab * sizeof *s->work);
    s->counts = calloc((size_t)n_vocab, sizeof *s->counts);
    s->hist_cap = p->penalty_last_n >= 0 ? (size_t)p->penalty_last_n : 1024;
    s->hist = malloc((s->hist_cap ? s->hist_cap : 1) * sizeof(int32_t));
    s->hist_lin = malloc((s->hist_cap ? s->hist_cap : 1) * sizeof(int32_t));
    if (!s->cand || !s->work || !s->counts || !s->hist || !s->hist_lin) {
        fi_sampler_free(s);
        return fi_error_set(err, FI_ERR_NOMEM, "sampler: out of memory");
    }
    fi_rng_seed(&s->rng, p->seed);
    *out = s;
    return FI_OK;
}

void fi_sampler_free(fi_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s->work);
    free(s->counts);
    free(s->hist);
    free(s->hist_lin);
    free(s);
}

void fi_sampler_reset(fi_sampler *s) {
    s->hist_len = s->hist_head = 0;
    fi_rng_seed(&s->rng, s->p.seed);
}

void fi_sampler_accept(fi_sampler *s, int32_t token) {
    if (s->p.penalty_last_n == -1 && s->hist_len == s->hist_cap) { /* unbounded: grow */
        size_t cap = s->hist_cap * 2;
        int32_t *h = malloc(cap * sizeof *h), *l = realloc(s->hist_lin, cap * sizeof *l);
        if (!h || !l) {
            free(h);
            if (l) s->hist_lin = l;
        } else {
            for (size_t i = 0; i < s->hist_len; i++) h[i] = s->hist[(s->hist_head + i) % s->hist_cap];
            free(s->hist);
            s->hist = h;
            s->hist_lin = l;
            s->hist_head = 0;
            s->hist_cap = cap;
        }
    }
    if (s->hist_cap == 0) return;
    if (s->hist_len < s->hist_cap) {
        s->hist[(s->hist_head + s->hist_len) % s->hist_cap] = token;
        s->hist_len++;
    } else {
        s->hist[s->hist_head] = token;
        s->hist_head = (s->hist_head + 1) % s->hist_cap;
    }
}

int32_t fi_sampler_sample(fi_sampler *s, const float *logits) {
    const fi_sampler_params *p = &s->p;
    const int64_t V = s->n_vocab;
    const float *l = logits;
    bool penalise = s->hist_len > 0 &&
                    (p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f);
    if (penalise) {
        memcpy(s->work, logits, (size_t)V * sizeof(float));
        for (size_t i = 0; i < s->hist_len; i++) s->hist_lin[i] = s->hist[(s->hist_head + i) % s->hist_cap];
        fi_sampler_penalize(s->work, V, s->hist_lin, s->hist_len, p->repeat_penalty,
                            p->presence_penalty, p->frequency_penalty, s->counts);
        l = s->work;
    }
    if (p->temp <= 0.0f) { /* greedy: first maximum */
        int32_t best = 0;
        for (int64_t i = 1; i < V; i++)
            if (l[i] > l[best]) best = (int32_t)i;
        return best;
    }
    for (int64_t i = 0; i < V; i++) s->cand[i] = (fi_token_logit){(int32_t)i, l[i]};
    size_t n = fi_sampler_top_k(s->cand, (size_t)V, p->top_k);
    n = fi_sampler_top_p(s->cand, n, p->top_p);
    n = fi_sampler_min_p(s->cand, n, p->min_p);
    /* temperature + draw */
    double z = 0;
    for (size_t i = 0; i < n; i++) z += exp(((double)s->cand[i].logit - s->cand[0].logit) / p->temp);
    double u = fi_rng_uniform(&s->rng) * z, cum = 0;
    for (size_t i = 0; i < n; i++) {
        cum += exp(((double)s->cand[i].logit - s->cand[0].logit) / p->temp);
        if (u < cum) return s->cand[i].id;
    }
    return s->cand[n - 1].id;
}
