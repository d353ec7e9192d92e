/* Internal to the matmul: the weight object and the per-ISA kernels. */
#ifndef FI_MODEL_MATMUL_KERNELS_H
#define FI_MODEL_MATMUL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "model/matmul.h"

/* Quantized weights are repacked in groups of FI_MM_GROUP rows. For group g and
 * block b (32 columns) the packed block holds:
 *   d[8] f16 scales (row order), for Q4_1 then m[8] f16 minimums,
 *   Q4_0/Q4_1: 4 chunks of 32 bytes; chunk c holds, for row k = 0..7 at bytes
 *              4k..4k+3, the row's ggml nibble bytes 4c..4c+3. So the low nibbles
 *              of chunk c are elements 4c..4c+3 of the 8 rows and the high nibbles
 *              elements 16+4c..16+4c+3: one u8 x s8 multiply against 4 broadcast
 *              activation bytes yields per-row sums with no horizontal adds;
 *   Q8_0: 8 chunks of 32 int8; chunk s holds elements 4s..4s+3 of row k at
 *              bytes 4k..4k+3 (the same one-row-per-32-bit-lane order).
 * Rows past the end of the matrix are zero (scale 0). The byte count equals the
 * file's, padded to whole groups. */
#define FI_MM_GROUP 8

/* F32 / F16 / BF16 weights are repacked at load into panels of FI_MM_PANEL
 * rows, column-major inside the panel: panel p holds, for c = 0..cols-1, the
 * FI_MM_PANEL values W[16p + i, c] (i = 0..15) at element 16c + i, in the
 * file's element type (rows past the end are zero). One aligned load then
 * gives the same column of 8 rows, one row per SIMD lane, so a product needs
 * no horizontal sums and one decode pass streams contiguous memory.
 *
 * Every output y[t, r] is computed in one order, whatever the kernel, tile,
 * slice or batch: per block of FI_MM_KBLOCK columns a running sum
 * s = fma(W[r, c], x[t, c], s) from s = 0 over ascending c, and
 * y = ((blk_0 + blk_1) + blk_2) + ... over the blocks. Short blocks keep the
 * rounding error of a long row near that of a 8-lane dot product. */
#define FI_MM_PANEL 16
#define FI_MM_KBLOCK 64

struct fi_matmul_weight {
    uint32_t type;
    int64_t rows, cols;
    int64_t nb;                /* blocks of 32 per row (quantized types) */
    const uint8_t *data;       /* the packed copy (groups or panels, see above) */
    uint8_t *owned;            /* the packed copy this object owns (== data) */
    size_t owned_bytes;
    size_t block_stride;       /* bytes of one packed block of 8 rows */
    size_t header_bytes;       /* scale bytes at the start of a packed block */
    size_t act_token_bytes;    /* bytes of one token in the act buffer */
    fi_simd_level simd;        /* fi_cpu_simd_level() at creation: read once, not per call (getenv) */
};

/* Byte of packed Q4 quants holding element j of row slot k; high nibble if j >= 16. */
static inline int fi_mm_q4_byte(int k, int j) { return 32 * ((j % 16) / 4) + 4 * k + j % 4; }

/* Byte of packed Q8 quants holding element j of row slot k. */
static inline int fi_mm_q8_byte(int k, int j) { return 32 * (j / 4) + 4 * k + j % 4; }

/* Bytes of one element of a float weight type (F32: 4, F16 / BF16: 2). */
static inline size_t fi_mm_float_esize(uint32_t type) { return type == FI_GGML_F32 ? 4 : 2; }

/* Start of float panel p (FI_MM_PANEL rows x cols elements). */
static inline const uint8_t *fi_mm_panel_ptr(const fi_matmul_weight *w, int64_t p) {
    return w->data + (size_t)p * FI_MM_PANEL * (size_t)w->cols * fi_mm_float_esize(w->type);
}

static inline const uint8_t *fi_mm_group_ptr(const fi_matmul_weight *w, int64_t g) {
    return w->data + (size_t)g * (size_t)w->nb * w->block_stride;
}

/* Kernels: same contract as fi_matmul_rows. */
void fi_mm_rows_scalar(const fi_matmul_weight *w, const void *act, int64_t n_tokens, float *y,
                       int64_t y_stride, int64_t row_begin, int64_t row_end);
void fi_mm_rows_avx2(const fi_matmul_weight *w, const void *act, int64_t n_tokens, float *y,
                     int64_t y_stride, int64_t row_begin, int64_t row_end);
void fi_mm_rows_avx512(const fi_matmul_weight *w, const void *act, int64_t n_tokens, float *y,
                       int64_t y_stride, int64_t row_begin, int64_t row_end);

#endif
