/* AVX2 + FMA + F16C kernels. Quantized weights: 8 interleaved rows per pass,
 * one row per 32-bit lane, u8 x s8 products (maddubs) against 4 broadcast
 * activation bytes, so a block's 8 row sums need no horizontal adds; then one
 * f32 FMA per block for all 8 rows. Tokens are processed in tiles of 4 so each
 * unpacked weight block is reused from registers (prefill is then
 * compute-bound, not load-bound); a single token (decode) prefetches the
 * packed stream ahead instead. Float weights: see rows_float. */
#include <immintrin.h>
#include <string.h>

#include "model/matmul_kernels.h"

#define INLINE static inline __attribute__((always_inline))
#define TILE_T 4
/* Single-token products prefetch the packed weights this far ahead of the
 * block being read (2-4 KiB measured best on an AVX2 EPYC: 11 -> 12-15 GB/s). */
#define PF_BYTES 2048

typedef struct act_ptrs {
    const int8_t *q;
    const float *d;
    const int32_t *sum;
} act_ptrs;

INLINE act_ptrs act_at(const fi_matmul_weight *w, const void *act, int64_t t) {
    const uint8_t *base = (const uint8_t *)act + (size_t)t * w->act_token_bytes;
    act_ptrs p;
    p.q = (const int8_t *)base;
    p.d = (const float *)(base + (size_t)w->nb * 32);
    p.sum = (const int32_t *)(base + (size_t)w->nb * 36);
    return p;
}

/* acc[t] (8 rows of group g) for tokens t0 .. t0+T-1. */
INLINE void group_tokens(const fi_matmul_weight *w, const uint8_t *grp, const void *act, int64_t t0, int T,
                         const uint32_t type, __m256 acc[TILE_T], const uint8_t *pf_end) {
    const __m256i ones = _mm256_set1_epi16(1), low4 = _mm256_set1_epi8(0x0f);
    act_ptrs x[TILE_T];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        x[t] = act_at(w, act, t0 + t);
        acc[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < w->nb; b++) {
        const uint8_t *blk = grp + (size_t)b * w->block_stride;
        const uint8_t *q = blk + w->header_bytes;
        if (pf_end) /* single token: keep reads in flight ahead of the stream */
            for (size_t o = 0; o < w->block_stride; o += 64)
                if ((size_t)(pf_end - blk) > PF_BYTES + o) _mm_prefetch((const char *)blk + PF_BYTES + o, _MM_HINT_T0);
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk));
        if (type == FI_GGML_Q8_0) {
            /* u8 x s8 needs an unsigned operand: |w| times x carrying w's sign.
             * Each product pair is <= 2 * 128 * 127 < 32768, but two are not, so
             * every step widens to int32. */
            __m256i wq[8], wa[8];
#pragma GCC unroll 8
            for (int s = 0; s < 8; s++) {
                wq[s] = _mm256_loadu_si256((const __m256i *)(q + 32 * s));
                wa[s] = _mm256_abs_epi8(wq[s]);
            }
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                const int8_t *xb = x[t].q + 32 * b;
                __m256i dot = _mm256_setzero_si256();
#pragma GCC unroll 8
                for (int s = 0; s < 8; s++) {
                    int32_t x4;
                    memcpy(&x4, xb + 4 * s, 4);
                    const __m256i xs = _mm256_sign_epi8(_mm256_set1_epi32(x4), wq[s]);
                    dot = _mm256_add_epi32(dot, _mm256_madd_epi16(_mm256_maddubs_epi16(wa[s], xs), ones));
                }
                const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(x[t].d[b]));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[t]);
            }
            continue;
        }
        /* w[s]: elements 4s..4s+3 of the 8 rows, one row per 32-bit lane. */
        __m256i wv[8];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(q + 32 * c));
            wv[c] = _mm256_and_si256(raw, low4);
            wv[c + 4] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
        }
        const __m256 mw = type == FI_GGML_Q4_1 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16)))
                                               : _mm256_setzero_ps();
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const int8_t *xb = x[t].q + 32 * b;
            int32_t x4;
            /* 8 products of <= 2 * 15 * 127 per int16 lane stay below 32767. */
            memcpy(&x4, xb, 4);
            __m256i s16 = _mm256_maddubs_epi16(wv[0], _mm256_set1_epi32(x4));
#pragma GCC unroll 7
            for (int s = 1; s < 8; s++) {
                memcpy(&x4, xb + 4 * s, 4);
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(wv[s], _mm256_set1_epi32(x4)));
            }
            __m256i dot = _mm256_madd_epi16(s16, ones);
            const float dx = x[t].d[b];
            const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(dx));
            if (type == FI_GGML_Q4_0) {
                dot = _mm256_sub_epi32(dot, _mm256_set1_epi32(8 * x[t].sum[b]));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[t]);
            } else {
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[t]);
                acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(dx * (float)x[t].sum[b]), acc[t]);
            }
        }
    }
}

INLINE void store_group(__m256 acc, float *yt, int64_t g, int64_t row_begin, int64_t row_end) {
    int64_t r0 = g * FI_MM_GROUP;
    if (r0 >= row_begin && r0 + FI_MM_GROUP <= row_end) {
        _mm256_storeu_ps(yt + r0, acc);
        return;
    }
    float tmp[8];
    _mm256_storeu_ps(tmp, acc);
    for (int i = 0; i < 8; i++)
        if (r0 + i >= row_begin && r0 + i < row_end) yt[r0 + i] = tmp[i];
}

/* Tokens are taken in chunks whose activations stay in L1 (~24 KiB) while
 * every group of the slice passes over them; a group's weights come from L1/L2. */
INLINE void rows_quant_type(const fi_matmul_weight *w, const void *act, int64_t n_tokens, float *y,
                            int64_t y_stride, int64_t row_begin, int64_t row_end, const uint32_t type) {
    int64_t chunk = ((int64_t)(24 * 1024) / (int64_t)w->act_token_bytes) & ~(int64_t)(TILE_T - 1);
    if (chunk < TILE_T) chunk = TILE_T;
    const uint8_t *slice_end = fi_mm_group_ptr(w, (row_end + FI_MM_GROUP - 1) / FI_MM_GROUP);
    for (int64_t c0 = 0; c0 < n_tokens; c0 += chunk) {
        const int64_t c1 = c0 + chunk < n_tokens ? c0 + chunk : n_tokens;
        for (int64_t g = row_begin / FI_MM_GROUP; g * FI_MM_GROUP < row_end; g++) {
            const uint8_t *grp = fi_mm_group_ptr(w, g);
            int64_t t = c0;
            __m256 acc[TILE_T];
            for (; t + TILE_T <= c1; t += TILE_T) {
                group_tokens(w, grp, act, t, TILE_T, type, acc, NULL);
                for (int k = 0; k < TILE_T; k++) store_group(acc[k], y + (t + k) * y_stride, g, row_begin, row_end);
            }
            if (n_tokens == 1) {
                group_tokens(w, grp, act, t, 1, type, acc, slice_end);
                store_group(acc[0], y, g, row_begin, row_end);
                continue;
            }
            for (; t < c1; t++) {
                group_tokens(w, grp, act, t, 1, type, acc, NULL);
                store_group(acc[0], y + t * y_stride, g, row_begin, row_end);
            }
        }
    }
}

static void rows_quant(const fi_matmul_weight *w, const void *act, int64_t n_tokens, float *y, int64_t y_stride,
                       int64_t row_begin, int64_t row_end) {
    switch (w->type) { /* one specialised copy per type */
    case FI_GGML_Q4_0: rows_quant_type(w, act, n_tokens, y, y_stride, row_begin, row_end, FI_GGML_Q4_0); break;
    case FI_GGML_Q4_1: rows_quant_type(w, act, n_tokens, y, y_stride, row_begin, row_end, FI_GGML_Q4_1); break;
    default: rows_quant_type(w, act, n_tokens, y, y_stride, row_begin, row_end, FI_GGML_Q8_0); break;
    }
}

/* ---- F32 / F16 / BF16 weights with f32 activations ---- */

INLINE __m256 load_w8(uint32_t type, const uint8_t *row, int64_t c) {
    if (type == FI_GGML_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * c)));
    if (type == FI_GGML_BF16)
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(row + 2 * c))), 16));
    return _mm256_loadu_ps((const float *)(row + 4 * c));
}

INLINE float load_w1(uint32_t type, const uint8_t *row, int64_t c) {
    uint16_t h;
    memcpy(&h, row + 2 * c, 2);
    if (type == FI_GGML_F16) return _cvtsh_ss(h);
    if (type == FI_GGML_BF16) {
        uint32_t bits = (uint32_t)h << 16;
        float f;
        memcpy(&f, &bits, 4);
        return f;
    }
    float f;
    memcpy(&f, row + 4 * c, 4);
    return f;
}

INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); /* l0+l4 ... */
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Every (row, token) sum has one order whatever the tile: one 8-lane f32
 * accumulator over the columns in ascending steps of 8, then hsum8, then the
 * scalar tail. So results do not depend on the slice, the batch or the tile. */
#define FLOAT_MAX_R 8
#define FLOAT_MAX_T 3

/* R rows x T tokens of dot products. pf > 0: while streaming the rows, also
 * prefetch the bytes pf further on (the next tile of rows), one line per row
 * and 64 bytes, so single-token products keep enough reads in flight to run at
 * memory bandwidth instead of waiting on the hardware prefetcher. */
INLINE void float_tile(const fi_matmul_weight *w, const void *act, int64_t r, int R, int64_t t0, int T, float *y,
                       int64_t y_stride, size_t pf, const uint32_t type) {
    const size_t row_bytes = fi_ggml_row_size(type, w->cols), esz = type == FI_GGML_F32 ? 4 : 2;
    const int64_t cols = w->cols, c8 = cols & ~(int64_t)7, c32 = cols & ~(int64_t)31;
    const uint8_t *rows[FLOAT_MAX_R];
    const float *x[FLOAT_MAX_T];
    __m256 acc[FLOAT_MAX_R][FLOAT_MAX_T];
#pragma GCC unroll 8
    for (int k = 0; k < R; k++) rows[k] = w->data + (size_t)(r + k) * row_bytes;
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) x[t] = (const float *)((const uint8_t *)act + (size_t)(t0 + t) * w->act_token_bytes);
#pragma GCC unroll 8
    for (int k = 0; k < R; k++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) acc[k][t] = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c < c32; c += 32) {
        if (pf) {
#pragma GCC unroll 8
            for (int k = 0; k < R; k++) {
                const char *p = (const char *)rows[k] + pf + (size_t)c * esz;
                _mm_prefetch(p, _MM_HINT_T0);
                if (esz == 4) _mm_prefetch(p + 64, _MM_HINT_T0);
            }
        }
#pragma GCC unroll 4
        for (int64_t cc = c; cc < c + 32; cc += 8)
#pragma GCC unroll 8
            for (int k = 0; k < R; k++) {
                const __m256 wv = load_w8(type, rows[k], cc);
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) acc[k][t] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[t] + cc), acc[k][t]);
            }
    }
    for (; c < c8; c += 8) {
#pragma GCC unroll 8
        for (int k = 0; k < R; k++) {
            const __m256 wv = load_w8(type, rows[k], c);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) acc[k][t] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[t] + c), acc[k][t]);
        }
    }
#pragma GCC unroll 8
    for (int k = 0; k < R; k++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            float s = hsum8(acc[k][t]);
            for (int64_t cc = c8; cc < cols; cc++) s += load_w1(type, rows[k], cc) * x[t][cc];
            y[(t0 + t) * y_stride + r + k] = s;
        }
}

/* One token (decode): tiles of 8 rows give 8 independent FMA chains, and the
 * next tile is prefetched while this one streams (never past row_end, so a
 * thread does not pull in its neighbour's slice); two tiles ahead measured
 * best on an AVX2 EPYC. */
INLINE void rows_float_one(const fi_matmul_weight *w, const void *act, float *y, int64_t row_begin, int64_t row_end,
                           const uint32_t type) {
    const size_t row_bytes = fi_ggml_row_size(w->type, w->cols);
    int64_t r = row_begin;
    for (; r + 8 <= row_end; r += 8) {
        const size_t pf = r + 24 <= row_end ? 16 * row_bytes : 0; /* two tiles ahead */
        if (pf)
            float_tile(w, act, r, 8, 0, 1, y, 0, pf, type);
        else
            float_tile(w, act, r, 8, 0, 1, y, 0, 0, type);
    }
    for (; r + 4 <= row_end; r += 4) float_tile(w, act, r, 4, 0, 1, y, 0, 0, type);
    for (; r < row_end; r++) float_tile(w, act, r, 1, 0, 1, y, 0, 0, type);
}

/* Several tokens (prefill): token chunks keep the activations in L2 (~192 KiB)
 * while the slice's rows stream past them. Tiles of 4 rows x 3 tokens: 12
 * accumulators, each converted weight vector reused for 3 tokens, each row
 * reused from L1 across the chunk. */
INLINE void rows_float_type(const fi_matmul_weight *w, const void *act, int64_t n_tokens, float *y, int64_t y_stride,
                            int64_t row_begin, int64_t row_end, const uint32_t type) {
    if (n_tokens == 1) {
        rows_float_one(w, act, y, row_begin, row_end, type);
        return;
    }
    int64_t chunk = ((int64_t)(192 * 1024) / (int64_t)w->act_token_bytes) / 3 * 3;
    if (chunk < 3) chunk = 3;
    for (int64_t c0 = 0; c0 < n_tokens; c0 += chunk) {
        const int64_t c1 = c0 + chunk < n_tokens ? c0 + chunk : n_tokens;
        int64_t r = row_begin;
        for (; r + 4 <= row_end; r += 4) {
            int64_t t = c0;
            for (; t + 3 <= c1; t += 3) float_tile(w, act, r, 4, t, 3, y, y_stride, 0, type);
            if (c1 - t == 2) float_tile(w, act, r, 4, t, 2, y, y_stride, 0, type);
            else if (c1 - t == 1) float_tile(w, act, r, 4, t, 1, y, y_stride, 0, type);
        }
        for (; r < row_end; r++) {
            int64_t t = c0;
            for (; t + 3 <= c1; t += 3) float_tile(w, act, r, 1, t, 3, y, y_stride, 0, type);
            for (; t < c1; t++) float_tile(w, act, r, 1, t, 1, y, y_stride, 0, type);
        }
    }
}

static void rows_float(const fi_matmul_weight *w, const void *act, int64_t n_tokens, float *y, int64_t y_stride,
                       int64_t row_begin, int64_t row_end) {
    switch (w->type) { /* one specialised copy per type: no type tests in the inner loops */
    case FI_GGML_F16: rows_float_type(w, act, n_tokens, y, y_stride, row_begin, row_end, FI_GGML_F16); break;
    case FI_GGML_BF16: rows_float_type(w, act, n_tokens, y, y_stride, row_begin, row_end, FI_GGML_BF16); break;
    default: rows_float_type(w, act, n_tokens, y, y_stride, row_begin, row_end, FI_GGML_F32); break;
    }
}

void fi_mm_rows_avx2(const fi_matmul_weight *w, const void *act, int64_t n_tokens, float *y, int64_t y_stride,
                     int64_t row_begin, int64_t row_end) {
    if (w->nb > 0)
        rows_quant(w, act, n_tokens, y, y_stride, row_begin, row_end);
    else
        rows_float(w, act, n_tokens, y, y_stride, row_begin, row_end);
}
