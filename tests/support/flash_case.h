/* Random attention problems for the flash-attention tests: builds inputs of any
 * dtype / layout, runs the double-precision reference, compares outputs.
 * Header-only (static functions) so each test program takes what it needs. */
#ifndef FI_TEST_FLASH_CASE_H
#define FI_TEST_FLASH_CASE_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/mask.h"
#include "core/cpu.h"
#include "core/dtype.h"
#include "flexinfer.h"
#include "test_support.h"

typedef struct flash_case {
    int64_t batch, hq, hkv, lq, lk, dim;
    fi_dtype dtype;
    const char *mask;       /* mask language, or NULL */
    fi_mask_fn mask_fn;     /* callback mask, AND-ed with `mask` when both are set */
    bool mask_fn_per_head;
    const char *score_mod;  /* or NULL */
    fi_score_fn score_fn;   /* callback score mod (used when score_mod is NULL) */
    int64_t q_offset;
    int block_q, block_kv, threads, splits;
    double magnitude;       /* std of q and k entries (1 when 0) */
    bool strided;           /* q/k/v stored as [B, L, H, D] (head-interleaved) */
    bool segments_per_batch;
} flash_case;

typedef struct flash_data {
    flash_case c;
    void *q, *k, *v;
    int32_t *segments;
    fi_mask_inputs in;
    fi_mask *mask;
    fi_score_mod *mod;
    fi_attn_params p;
    float *out, *lse, *ref_out, *ref_lse;
    int64_t out_n, lse_n;
} flash_data;

static inline void flash_fill(void *dst, fi_dtype t, int64_t n, double scale, fi_test_rng *rng) {
    for (int64_t i = 0; i < n; i++) {
        const float x = (float)(scale * fi_test_rng_normal(rng));
        if (t == FI_DTYPE_F16) ((uint16_t *)dst)[i] = fi_f32_to_f16(x);
        else if (t == FI_DTYPE_BF16) ((uint16_t *)dst)[i] = fi_f32_to_bf16(x);
        else ((float *)dst)[i] = x;
    }
}

static inline fi_attn_tensor flash_view(const void *data, fi_dtype t, int64_t b, int64_t h, int64_t l, int64_t d,
                                 bool strided) {
    if (!strided) return fi_attn_tensor_contiguous(data, t, b, h, l, d);
    /* [B, L, H, D] storage with a row pitch of d + 3 elements: every stride differs from the dense one. */
    const int64_t pitch = d + 3;
    return (fi_attn_tensor){.data = data, .dtype = t, .batch = b, .heads = h, .len = l, .dim = d,
                            .stride_batch = l * h * pitch, .stride_head = pitch, .stride_len = h * pitch};
}

/* Random segment ids: runs of 1..40 positions, ids increasing, about 1 run in 6 negative ("generated"). */
static inline void flash_segments(int32_t *seg, int64_t n, fi_test_rng *rng) {
    int32_t id = 0;
    for (int64_t i = 0; i < n;) {
        const int64_t run = 1 + fi_test_rng_int(rng, 40);
        const int32_t v = fi_test_rng_int(rng, 6) == 0 ? -1 - id : id;
        for (int64_t j = 0; j < run && i < n; j++, i++) seg[i] = v;
        id++;
    }
}

static inline void flash_data_free(flash_data *d) {
    free(d->q), free(d->k), free(d->v), free(d->segments);
    free(d->out), free(d->lse), free(d->ref_out), free(d->ref_lse);
    fi_mask_free(d->mask);
    fi_score_mod_free(d->mod);
    memset(d, 0, sizeof *d);
}

/* Builds inputs and parameters for case c; returns false (with a message) on failure. */
static inline bool flash_data_make(flash_data *d, const flash_case *c, fi_test_rng *rng) {
    memset(d, 0, sizeof *d);
    d->c = *c;
    const double mag = c->magnitude > 0 ? c->magnitude : 1.0;
    const size_t es = fi_dtype_size(c->dtype);
    const int64_t pitch = c->strided ? c->dim + 3 : c->dim;
    const int64_t nq = c->batch * c->hq * c->lq * pitch, nk = c->batch * c->hkv * c->lk * pitch;
    d->q = malloc((size_t)(nq + 1) * es);
    d->k = malloc((size_t)(nk + 1) * es);
    d->v = malloc((size_t)(nk + 1) * es);
    flash_fill(d->q, c->dtype, nq, mag, rng);
    flash_fill(d->k, c->dtype, nk, mag, rng);
    flash_fill(d->v, c->dtype, nk, 1.0, rng);
    fi_error err = {0};
    if (c->mask && fi_mask_parse(c->mask, &d->mask, &err) != FI_OK) {
        printf("mask '%s': %s\n", c->mask, err.msg);
        return false;
    }
    if (c->mask_fn) {
        fi_mask *cb = NULL;
        if (fi_mask_from_callback(c->mask_fn, NULL, c->mask_fn_per_head, &cb, &err) != FI_OK) return false;
        if (d->mask) {
            fi_mask *both = NULL;
            if (fi_mask_and(d->mask, cb, &both, &err) != FI_OK) return false;
            d->mask = both;
        } else {
            d->mask = cb;
        }
    }
    if (c->score_mod && fi_score_mod_parse(c->score_mod, &d->mod, &err) != FI_OK) {
        printf("score mod '%s': %s\n", c->score_mod, err.msg);
        return false;
    }
    if (!c->score_mod && c->score_fn && fi_score_mod_from_callback(c->score_fn, NULL, &d->mod, &err) != FI_OK)
        return false;
    const int64_t seg_len = c->lk > c->q_offset + c->lq ? c->lk : c->q_offset + c->lq;
    const int64_t seg_rows = c->segments_per_batch ? c->batch : 1;
    d->segments = malloc((size_t)(seg_len * seg_rows + 1) * sizeof(int32_t));
    for (int64_t b = 0; b < seg_rows; b++) flash_segments(d->segments + b * seg_len, seg_len, rng);
    d->in = (fi_mask_inputs){.segments = d->segments, .segments_len = seg_len,
                             .segments_batch = c->segments_per_batch ? c->batch : 0, .q_offset = c->q_offset};
    d->out_n = c->batch * c->hq * c->lq * c->dim;
    d->lse_n = c->batch * c->hq * c->lq;
    d->out = malloc((size_t)(d->out_n + 1) * sizeof(float));
    d->ref_out = malloc((size_t)(d->out_n + 1) * sizeof(float));
    d->lse = malloc((size_t)(d->lse_n + 1) * sizeof(float));
    d->ref_lse = malloc((size_t)(d->lse_n + 1) * sizeof(float));
    d->p = (fi_attn_params){
        .q = flash_view(d->q, c->dtype, c->batch, c->hq, c->lq, c->dim, c->strided),
        .k = flash_view(d->k, c->dtype, c->batch, c->hkv, c->lk, c->dim, c->strided),
        .v = flash_view(d->v, c->dtype, c->batch, c->hkv, c->lk, c->dim, c->strided),
        .out = d->out, .lse = d->lse, .mask = d->mask, .mask_in = &d->in, .score_mod = d->mod,
        .threads = c->threads, .num_splits = c->splits, .block_q = c->block_q, .block_kv = c->block_kv};
    fi_attn_params rp = d->p;
    rp.out = d->ref_out;
    rp.lse = d->ref_lse;
    if (fi_attn_reference(&rp, &err) != FI_OK) {
        printf("reference failed: %s\n", err.msg);
        return false;
    }
    return true;
}

static inline void flash_describe(const flash_case *c, char *buf, size_t n) {
    snprintf(buf, n,
             "B%lld Hq%lld Hkv%lld Lq%lld Lk%lld D%lld %s mask='%s'%s mod='%s'%s qoff%lld tiles %dx%d "
             "threads %d splits %d mag %g%s simd=%s",
             (long long)c->batch, (long long)c->hq, (long long)c->hkv, (long long)c->lq, (long long)c->lk,
             (long long)c->dim, fi_dtype_name(c->dtype), c->mask ? c->mask : "", c->mask_fn ? "+callback" : "",
             c->score_mod ? c->score_mod : "", c->score_fn ? "+callback" : "", (long long)c->q_offset,
             c->block_q, c->block_kv, c->threads, c->splits, c->magnitude, c->strided ? " strided" : "",
             fi_simd_level_name(fi_cpu_simd_level()));
}

/* Max over elements of |got - want| / (atol + rtol |want|); <= 1 passes. LSE: -inf must match -inf
 * exactly; finite values compare with the same rule. Any NaN fails. */
static inline double flash_error(const float *got, const float *want, int64_t n, double atol, double rtol) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(got[i])) return INFINITY;
        if (isinf(want[i]) || isinf(got[i])) {
            if (got[i] != want[i]) return INFINITY;
            continue;
        }
        const double e = fabs((double)got[i] - (double)want[i]) / (atol + rtol * fabs((double)want[i]));
        if (e > worst) worst = e;
    }
    return worst;
}

/* The SIMD levels this machine can run, for loops that set FI_SIMD. */
static inline int flash_simd_levels(const char **names) {
    unsetenv("FI_SIMD");
    const fi_simd_level top = fi_cpu_simd_level();
    int n = 0;
    names[n++] = "scalar";
    if (top >= FI_SIMD_AVX2) names[n++] = "avx2";
    if (top >= FI_SIMD_AVX512) names[n++] = "avx512";
    return n;
}

#endif
