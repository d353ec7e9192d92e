/* Per-tile microkernels of the CPU flash attention (one set per SIMD level).
 *
 * Layout. Scores are kept transposed, S^T[key][row] (rows contiguous), so that the
 * query tile is transposed once per work item (Q^T[dim][row], where the level has a Q^T
 * kernel) and K and V tiles are read row-major, in place when possible: no K transpose
 * per tile. The online softmax then runs down the key axis with one SIMD lane per row.
 * Head dims are padded by the driver to FI_FLASH_DIM_ALIGN with zeros (padded columns
 * add nothing to dot products and give zero outputs); row counts of Q^T and S^T to
 * FI_FLASH_ROW_ALIGN (padded rows hold finite or -inf scores and are never stored).
 * The *_avx2 / *_avx512 variants may only be called after fi_cpu_simd_level() said so. */
#ifndef FI_ATTN_FLASH_TILE_H
#define FI_ATTN_FLASH_TILE_H

#include <stdbool.h>
#include <stdint.h>

#include "flexinfer.h"

#define FI_FLASH_DIM_ALIGN 16
#define FI_FLASH_ROW_ALIGN 16

typedef struct fi_flash_tile_ops {
    /* S^T[j][r] = sum_c Q^T[c][r] * K[j][c] for j < nk and r < rowsp (a multiple of
     * FI_FLASH_ROW_ALIGN); Q^T is [dimp][ldqt], K row-major [nk][ldk]. NULL when the level
     * has no Q^T kernel: the driver then uses qk_rows for every row count and never
     * builds Q^T. Every QK kernel of one level computes each score the same way. */
    void (*qk)(const float *qt, int64_t ldqt, int64_t rowsp, const float *k, int64_t ldk, int64_t nk,
               int64_t dimp, float *st, int64_t lds);
    /* The same from row-major Q [rows][ldq], for a few rows (decode) or, when qk is
     * NULL, for any number; writes S^T[j][r] for r < rows only. */
    void (*qk_rows)(const float *q, int64_t ldq, int64_t rows, const float *k, int64_t ldk, int64_t nk,
                    int64_t dimp, float *st, int64_t lds);
    /* Online softmax step over one S^T tile, in place (S^T becomes P^T), rows r < rowsp:
     *   m_new = max(m, max_j S[j][r]); alpha = exp(m - m_new); P = exp(S - m_new);
     *   l = l * alpha + sum_j P; m = m_new.
     * While m_new is -inf (no key kept yet) P = 0 and alpha = 0 (O and l are 0 then):
     * the exponent uses 0 in place of -inf, so -inf - -inf never happens. */
    void (*softmax)(float *st, int64_t lds, int64_t rowsp, int64_t nk, float *m, float *l, float *alpha);
    /* O[r] = alpha[r] * O[r] + sum_{j < nk} P^T[j][r] * V[j] over dimp columns, r < rows. */
    void (*pv)(const float *pt, int64_t ldp, int64_t rows, int64_t nk, const float *v, int64_t ldv,
               int64_t dimp, const float *alpha, float *o, int64_t ldo);
    /* dst[i] = scale * src[i] for i < n, converting from the input type. */
    void (*load_scaled)(const void *src, fi_dtype t, float scale, float *dst, int64_t n);
    /* softmax accepts any rowsp that is a multiple of this (0: FI_FLASH_ROW_ALIGN); the
     * few-row path then runs it over fewer padded rows. */
    int softmax_row_step;
    /* The many-row (16 or more) qk_rows and pv ask for the next tile's K and V themselves,
     * spread over their work, so the driver does not ask for it in one burst. */
    bool kernels_prefetch_many_rows;
    /* Default query tile when an item holds one head (Hq == Hkv, or a per-head mask);
     * 0: the driver's default. GQA items stack the group's heads and keep the default. */
    int block_q_one_head;
} fi_flash_tile_ops;

extern const fi_flash_tile_ops fi_flash_tile_scalar;
extern const fi_flash_tile_ops fi_flash_tile_avx2;
extern const fi_flash_tile_ops fi_flash_tile_avx512;

/* The ops for the current run-time SIMD level (reads FI_SIMD every call). */
const fi_flash_tile_ops *fi_flash_tile_select(void);

#endif
