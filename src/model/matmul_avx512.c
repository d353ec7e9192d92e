/* AVX-512 path: the AVX2 kernels' structure (8 interleaved rows, one per
 * 32-bit lane, tiles of 4 tokens) with VNNI dot products (vpdpbusd on 256-bit
 * vectors through AVX512-VL): 4 u8 x s8 products summed into int32 in one
 * instruction, no int16 intermediates. Float weight types use the AVX2 code.
 * Parts without VNNI run the AVX2 kernels. */
#include <immintrin.h>
#include <string.h>

#include "core/cpu.h"
#include "model/matmul_kernels.h"

#define INLINE static inline __attribute__((always_inline))
#define TILE_T 4

typedef struct act_ptrs {
    const int8_t *q;
    const float *d;
    const int32_t *sum;
    const float *s; /* Q4_1 offsets: f16(d * sum), see quant.h */
} act_ptrs;

INLINE act_ptrs act_at(const fi_matmul_weight *w, const void *act, int64_t t) {
    const uint8_t *base = (const uint8_t *)act + (size_t)t * w->act_token_bytes;
    act_ptrs p;
    p.q = (const int8_t *)base;
    p.d = (const float *)(base + (size_t)w->nb * 32);
    p.sum = (const int32_t *)(base + (size_t)w->nb * 36);
    p.s = (const float *)(base + (size_t)w->nb * 40);
    return p;
}

/* acc[t] (8 rows of group g) for tokens t0 .. t0+T-1. */
INLINE void group_tokens(const fi_matmul_weight *w, const uint8_t *grp, const void *act, int64_t t0, int T,
                         const uint32_t type, __m256 acc[TILE_T]) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), flip = _mm256_set1_epi8((char)0x80);
    act_ptrs x[TILE_T];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        x[t] = act_at(w, act, t0 + t);
        acc[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < w->nb; b++) {
        const uint8_t *blk = grp + (size_t)b * w->block_stride;
        const uint8_t *q = blk + w->header_bytes;
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk));
        if (type == FI_GGML_Q8_0) {
            /* dpbusd multiplies u8 by s8: use w + 128 (w xor 0x80) and subtract 128 * sum(x). */
            __m256i wu[8];
#pragma GCC unroll 8
            for (int s = 0; s < 8; s++)
                wu[s] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(q + 32 * s)), flip);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                const int8_t *xb = x[t].q + 32 * b;
                __m256i dot = _mm256_set1_epi32(-128 * x[t].sum[b]);
#pragma GCC unroll 8
                for (int s = 0; s < 8; s++) {
                    int32_t x4;
                    memcpy(&x4, xb + 4 * s, 4);
                    dot = _mm256_dpbusd_epi32(dot, wu[s], _mm256_set1_epi32(x4));
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
            __m256i dot = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int s = 0; s < 8; s++) {
                int32_t x4;
                memcpy(&x4, xb + 4 * s, 4);
                dot = _mm256_dpbusd_epi32(dot, wv[s], _mm256_set1_epi32(x4));
            }
            const float dx = x[t].d[b];
            const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(dx));
            if (type == FI_GGML_Q4_0) {
                dot = _mm256_sub_epi32(dot, _mm256_set1_epi32(8 * x[t].sum[b]));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[t]);
            } else {
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[t]);
                acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(x[t].s[b]), acc[t]);
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
    for (int64_t c0 = 0; c0 < n_tokens; c0 += chunk) {
        const int64_t c1 = c0 + chunk < n_tokens ? c0 + chunk : n_tokens;
        for (int64_t g = row_begin / FI_MM_GROUP; g * FI_MM_GROUP < row_end; g++) {
            const uint8_t *grp = fi_mm_group_ptr(w, g);
            int64_t t = c0;
            __m256 acc[TILE_T];
            for (; t + TILE_T <= c1; t += TILE_T) {
                group_tokens(w, grp, act, t, TILE_T, type, acc);
                for (int k = 0; k < TILE_T; k++) store_group(acc[k], y + (t + k) * y_stride, g, row_begin, row_end);
            }
            for (; t < c1; t++) {
                group_tokens(w, grp, act, t, 1, type, acc);
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

void fi_mm_rows_avx512(const fi_matmul_weight *w, const void *act, int64_t n_tokens, float *y,
                       int64_t y_stride, int64_t row_begin, int64_t row_end) {
    if (w->nb > 0 && fi_cpu_get()->avx512vnni)
        rows_quant(w, act, n_tokens, y, y_stride, row_begin, row_end);
    else
        fi_mm_rows_avx2(w, act, n_tokens, y, y_stride, row_begin, row_end);
}
