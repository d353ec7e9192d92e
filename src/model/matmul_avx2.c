/* AVX2 + FMA + F16C kernels. Quantized weights: 8 interleaved rows per pass,
 * one row per 32-bit lane, u8 x s8 products (maddubs) against 4 broadcast
 * activation bytes, so a block's 8 row sums need no horizontal adds; then one
 * f32 FMA per block for all 8 rows. Tokens are processed in tiles of 4 so each
 * unpacked weight block is reused from registers (prefill is then
 * compute-bound, not load-bound); a single token (decode) prefetches the
 * packed stream ahead instead. Float weights: panels of 16 rows, see
 * rows_float_type. */
#include <immintrin.h>
#include <stdbool.h>
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
                acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(x[t].s[b]), acc[t]);
            }
        }
    }
}

/* One token (decode), Q4_0 / Q8_0: the arithmetic of group_tokens with T = 1
 * (so results match the batched path bit for bit) in a lean loop: decode is
 * bound by instruction throughput close to memory speed, so the prefetches are
 * unconditional up to the last block whose look-ahead stays inside the slice
 * (pf_blocks), a fixed count per block (one per 64 bytes, rounded up). */
INLINE __m256 decode_group(const fi_matmul_weight *w, const uint8_t *grp, act_ptrs x, int64_t pf_blocks,
                           const uint32_t type) {
    const __m256i ones = _mm256_set1_epi16(1), low4 = _mm256_set1_epi8(0x0f);
    const size_t stride = type == FI_GGML_Q8_0 ? 16 + 256 : 16 + 128, header = 16;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < w->nb; b++) {
        const uint8_t *blk = grp + (size_t)b * stride, *q = blk + header;
        if (b < pf_blocks)
#pragma GCC unroll 5
            for (size_t o = 0; o < stride; o += 64) _mm_prefetch((const char *)blk + PF_BYTES + o, _MM_HINT_T0);
        const int8_t *xb = x.q + 32 * b;
        __m256i dot;
        if (type == FI_GGML_Q8_0) {
            dot = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int s = 0; s < 8; s++) {
                int32_t x4;
                memcpy(&x4, xb + 4 * s, 4);
                const __m256i wq = _mm256_loadu_si256((const __m256i *)(q + 32 * s));
                const __m256i xs = _mm256_sign_epi8(_mm256_set1_epi32(x4), wq);
                dot = _mm256_add_epi32(dot, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(wq), xs), ones));
            }
        } else {
            __m256i s16 = _mm256_setzero_si256();
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                int32_t lo, hi;
                memcpy(&lo, xb + 4 * c, 4);
                memcpy(&hi, xb + 16 + 4 * c, 4);
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(q + 32 * c));
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(_mm256_and_si256(raw, low4), _mm256_set1_epi32(lo)));
                s16 = _mm256_add_epi16(
                    s16, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 4), low4), _mm256_set1_epi32(hi)));
            }
            dot = _mm256_sub_epi32(_mm256_madd_epi16(s16, ones), _mm256_set1_epi32(8 * x.sum[b]));
        }
        const __m256 scale =
            _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk)), _mm256_set1_ps(x.d[b]));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc);
    }
    return acc;
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
            if (n_tokens == 1 && type != FI_GGML_Q4_1) {
                /* blocks of this group whose prefetch (PF_BYTES + one block ahead) stays in the slice */
                const int64_t room = (int64_t)(slice_end - grp) - PF_BYTES - (int64_t)w->block_stride;
                const int64_t pf_blocks = room < 0 ? 0 : room / (int64_t)w->block_stride + 1;
                store_group(decode_group(w, grp, act_at(w, act, 0), pf_blocks, type), y, g, row_begin, row_end);
                continue;
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

/* ---- F32 / F16 / BF16 weights in panels of 16 rows (matmul_kernels.h) ---- */

/* 8 consecutive panel elements (one column of 8 rows) as f32. */
INLINE __m256 load_w8(uint32_t type, const uint8_t *p) {
    if (type == FI_GGML_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    if (type == FI_GGML_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    return _mm256_loadu_ps((const float *)p);
}

/* Decode prefetches each panel's stream this far ahead of the column being read. */
#define PF_FLOAT_BYTES 1024
/* Panels a single-token product streams at once: 2 accumulators each, so 4
 * panels keep 8 independent FMA chains in flight. */
#define DEC_PANELS 4

/* One token, NP panels starting at `pan`: out[16 q + i] = y of row i of panel q. */
INLINE void panels_one(const uint8_t *pan, size_t panel_bytes, const float *x, int64_t cols, int NP, float *out,
                       const uint32_t type) {
    const size_t es = type == FI_GGML_F32 ? 4 : 2, step = FI_MM_PANEL * es;
    __m256 tot[DEC_PANELS][2];
#pragma GCC unroll 4
    for (int q = 0; q < NP; q++) tot[q][0] = tot[q][1] = _mm256_setzero_ps(); /* set by the first block */
    for (int64_t c0 = 0; c0 < cols; c0 += FI_MM_KBLOCK) {
        const int64_t c1 = c0 + FI_MM_KBLOCK < cols ? c0 + FI_MM_KBLOCK : cols;
        __m256 acc[DEC_PANELS][2];
#pragma GCC unroll 4
        for (int q = 0; q < NP; q++) acc[q][0] = acc[q][1] = _mm256_setzero_ps();
        for (int64_t c = c0; c < c1; c++) {
            const uint8_t *wc = pan + (size_t)c * step;
            if ((c & (64 / (int64_t)step - 1)) == 0) /* once per cache line of each stream */
#pragma GCC unroll 4
                for (int q = 0; q < NP; q++) _mm_prefetch((const char *)wc + q * panel_bytes + PF_FLOAT_BYTES, _MM_HINT_T0);
            const __m256 xb = _mm256_broadcast_ss(x + c);
#pragma GCC unroll 4
            for (int q = 0; q < NP; q++) {
                acc[q][0] = _mm256_fmadd_ps(load_w8(type, wc + q * panel_bytes), xb, acc[q][0]);
                acc[q][1] = _mm256_fmadd_ps(load_w8(type, wc + q * panel_bytes + 8 * es), xb, acc[q][1]);
            }
        }
#pragma GCC unroll 4
        for (int q = 0; q < NP; q++)
            for (int h = 0; h < 2; h++) tot[q][h] = c0 == 0 ? acc[q][h] : _mm256_add_ps(tot[q][h], acc[q][h]);
    }
#pragma GCC unroll 4
    for (int q = 0; q < NP; q++) {
        _mm256_storeu_ps(out + 16 * q, tot[q][0]);
        _mm256_storeu_ps(out + 16 * q + 8, tot[q][1]);
    }
}

/* Copies rows [r0, r0 + n) of panel-ordered results src[16 * panels] into y, keeping to [row_begin, row_end). */
INLINE void store_rows(const float *src, int64_t r0, int64_t n, float *y, int64_t row_begin, int64_t row_end) {
    int64_t a = r0 > row_begin ? r0 : row_begin, b = r0 + n < row_end ? r0 + n : row_end;
    if (b > a) memcpy(y + a, src + (a - r0), (size_t)(b - a) * sizeof(float));
}

INLINE void rows_float_one(const fi_matmul_weight *w, const float *x, float *y, int64_t row_begin, int64_t row_end,
                           const uint32_t type) {
    const size_t panel_bytes = FI_MM_PANEL * (size_t)w->cols * (type == FI_GGML_F32 ? 4 : 2);
    float out[FI_MM_PANEL * DEC_PANELS];
    const int64_t p_end = (row_end + FI_MM_PANEL - 1) / FI_MM_PANEL;
    for (int64_t p = row_begin / FI_MM_PANEL; p < p_end; p += DEC_PANELS) {
        const int np = p_end - p < DEC_PANELS ? (int)(p_end - p) : DEC_PANELS;
        const uint8_t *pan = fi_mm_panel_ptr(w, p);
        switch (np) { /* constant panel counts: accumulators stay in registers */
        case 4: panels_one(pan, panel_bytes, x, w->cols, 4, out, type); break;
        case 3: panels_one(pan, panel_bytes, x, w->cols, 3, out, type); break;
        case 2: panels_one(pan, panel_bytes, x, w->cols, 2, out, type); break;
        default: panels_one(pan, panel_bytes, x, w->cols, 1, out, type); break;
        }
        store_rows(out, p * FI_MM_PANEL, (int64_t)np * FI_MM_PANEL, y, row_begin, row_end);
    }
}

/* Several tokens: a register-blocked product of MICRO_T tokens x 16 rows (12
 * accumulators). Per column: 2 weight loads (converted to f32 in registers,
 * off the FMA ports), MICRO_T broadcasts, 2 * MICRO_T FMAs. The panel's column
 * block (2 KiB of f16) stays in L1 for every token tile of the chunk. Block
 * sums go to cbuf (chunk x 16 floats, L1) in the order of matmul_kernels.h. */
#define MICRO_T 6
#define CHUNK_MAX 96

INLINE void micro_tile(const uint8_t *wp, int64_t kn, const float *x, int64_t x_stride, int T, float *cb, bool first,
                       const uint32_t type) {
    const size_t es = type == FI_GGML_F32 ? 4 : 2;
    __m256 acc[MICRO_T][2];
#pragma GCC unroll 6
    for (int t = 0; t < T; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < kn; k++) {
        const __m256 w0 = load_w8(type, wp + (size_t)k * FI_MM_PANEL * es),
                     w1 = load_w8(type, wp + (size_t)k * FI_MM_PANEL * es + 8 * es);
#pragma GCC unroll 6
        for (int t = 0; t < T; t++) {
            const __m256 xb = _mm256_broadcast_ss(x + t * x_stride + k);
            acc[t][0] = _mm256_fmadd_ps(w0, xb, acc[t][0]);
            acc[t][1] = _mm256_fmadd_ps(w1, xb, acc[t][1]);
        }
    }
#pragma GCC unroll 6
    for (int t = 0; t < T; t++) {
        float *c = cb + 16 * t;
        if (first) {
            _mm256_store_ps(c, acc[t][0]);
            _mm256_store_ps(c + 8, acc[t][1]);
        } else {
            _mm256_store_ps(c, _mm256_add_ps(_mm256_load_ps(c), acc[t][0]));
            _mm256_store_ps(c + 8, _mm256_add_ps(_mm256_load_ps(c + 8), acc[t][1]));
        }
    }
}

INLINE void rows_float_type(const fi_matmul_weight *w, const void *act, int64_t n_tokens, float *y, int64_t y_stride,
                            int64_t row_begin, int64_t row_end, const uint32_t type) {
    const float *x = (const float *)act;
    const int64_t cols = w->cols;
    if (n_tokens == 1) {
        rows_float_one(w, x, y, row_begin, row_end, type);
        return;
    }
    const size_t es = type == FI_GGML_F32 ? 4 : 2;
    /* Token chunks whose activations stay in L2 (~192 KiB) while the slice's panels pass over them. */
    int64_t chunk = ((int64_t)(192 * 1024) / (cols * 4)) / MICRO_T * MICRO_T;
    if (chunk < MICRO_T) chunk = MICRO_T;
    if (chunk > CHUNK_MAX) chunk = CHUNK_MAX;
    _Alignas(32) float cbuf[CHUNK_MAX * FI_MM_PANEL];
    for (int64_t t0 = 0; t0 < n_tokens; t0 += chunk) {
        const int64_t t1 = t0 + chunk < n_tokens ? t0 + chunk : n_tokens;
        for (int64_t p = row_begin / FI_MM_PANEL; p * FI_MM_PANEL < row_end; p++) {
            const uint8_t *pan = fi_mm_panel_ptr(w, p);
            for (int64_t k0 = 0; k0 < cols; k0 += FI_MM_KBLOCK) {
                const int64_t kn = k0 + FI_MM_KBLOCK < cols ? FI_MM_KBLOCK : cols - k0;
                const uint8_t *wp = pan + (size_t)k0 * FI_MM_PANEL * es;
                const float *xk = x + k0;
                float *cb = cbuf;
                int64_t t = t0;
                for (; t + MICRO_T <= t1; t += MICRO_T, cb += 16 * MICRO_T)
                    micro_tile(wp, kn, xk + t * cols, cols, MICRO_T, cb, k0 == 0, type);
                switch (t1 - t) { /* constant tile heights for the tail */
                case 5: micro_tile(wp, kn, xk + t * cols, cols, 5, cb, k0 == 0, type); break;
                case 4: micro_tile(wp, kn, xk + t * cols, cols, 4, cb, k0 == 0, type); break;
                case 3: micro_tile(wp, kn, xk + t * cols, cols, 3, cb, k0 == 0, type); break;
                case 2: micro_tile(wp, kn, xk + t * cols, cols, 2, cb, k0 == 0, type); break;
                case 1: micro_tile(wp, kn, xk + t * cols, cols, 1, cb, k0 == 0, type); break;
                default: break;
                }
            }
            for (int64_t t = t0; t < t1; t++)
                store_rows(cbuf + 16 * (t - t0), p * FI_MM_PANEL, FI_MM_PANEL, y + t * y_stride, row_begin, row_end);
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
