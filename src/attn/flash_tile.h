/* Per-tile microkernels of the CPU flash attention (one set per SIMD level).
 *
 * Every buffer is f32 and padded by the driver: head dims to FI_FLASH_DIM_ALIGN with
 * zeros (so padded columns add nothing to dot products and produce zero outputs), key
 * counts of score rows to FI_FLASH_KEY_ALIGN (the driver sets padded scores to -inf).
 * The *_avx2 / *_avx512 variants may only be called after fi_cpu_simd_level() said so. */
#ifndef FI_ATTN_FLASH_TILE_H
#define FI_ATTN_FLASH_TILE_H

#include <stdint.h>

#include "flexinfer.h"

#define FI_FLASH_DIM_ALIGN 16
#define FI_FLASH_KEY_ALIGN 16

typedef struct fi_flash_tile_ops {
    /* S[r][j] = sum_c Q[r][c] * Kt[c][j] for r < rows, j < nkp (Kt: keys contiguous). */
    void (*qk_packed)(const float *q, int64_t ldq, int64_t rows, const float *kt, int64_t ldkt,
                      int64_t nkp, int64_t dimp, float *s, int64_t lds);
    /* The same from row-major K (K[j][c]); better when there are only a few query rows
     * (decode), since it needs no transposed copy of the tile. */
    void (*qk_rows)(const float *q, int64_t ldq, int64_t rows, const float *k, int64_t ldk,
                    int64_t nk, int64_t dimp, float *s, int64_t lds);
    /* Online softmax step over one score tile, in place (S becomes P):
     *   m_new = max(m, rowmax(S)); alpha = exp(m - m_new); P = exp(S - m_new);
     *   l = l * alpha + rowsum(P); m = m_new.
     * A row whose m_new is -inf (all keys so far masked) gets P = 0 and alpha = 1. */
    void (*softmax)(float *s, int64_t lds, int64_t rows, int64_t nkp, float *m, float *l,
                    float *alpha);
    /* O[r] = alpha[r] * O[r] + sum_{j < nk} P[r][j] * V[j] over dimp columns. */
    void (*pv)(const float *p, int64_t ldp, int64_t rows, int64_t nk, const float *v, int64_t ldv,
               int64_t dimp, const float *alpha, float *o, int64_t ldo);
    /* dst[i] = scale * src[i] for i < n, converting from the input type. */
    void (*load_scaled)(const void *src, fi_dtype t, float scale, float *dst, int64_t n);
} fi_flash_tile_ops;

extern const fi_flash_tile_ops fi_flash_tile_scalar;
extern const fi_flash_tile_ops fi_flash_tile_avx2;
extern const fi_flash_tile_ops fi_flash_tile_avx512;

/* The ops for the current run-time SIMD level (reads FI_SIMD every call). */
const fi_flash_tile_ops *fi_flash_tile_select(void);

#endif
