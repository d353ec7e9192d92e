/* QK for a few row-major query rows (decode), AVX2 + FMA instructions, used by the
 * AVX-512 microkernels (include only from files compiled with -mavx2 -mfma). The AVX2
 * level has its own kernel with a different per-score chain (flash_tile_avx2.c).
 *
 * Row invariance: every score must come out bitwise the same whichever kernel computed
 * it, so that a query row gets the same result however many rows share its call. The
 * Q^T kernels compute each score as one FMA chain, acc = 0; acc = fma(k[c], q[c], acc)
 * for c = 0, 1, ..., dimp - 1. This kernel does exactly that chain too (no horizontal
 * reduction): a block of 16 keys is transposed once into kt[c][16] (8x8 in-register
 * transposes), then each query element is broadcast against 16 keys, so the SIMD lanes
 * run over keys and each lane is one sequential dot product. */
#ifndef FI_ATTN_FLASH_TILE_ROWS_AVX2_H
#define FI_ATTN_FLASH_TILE_ROWS_AVX2_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "attn/problem.h"

#define FI_ROWS_KEYS 16

/* Rows 0..7 (stride ld) of an 8x8 block into columns: out[c] = {row0[c], ..., row7[c]}. */
static inline __attribute__((always_inline)) void fi_rows_transpose8(const float *src, int64_t ld, float *dst,
                                                                     int64_t ldd) {
    __m256 r[8], t[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * ld);
    t[0] = _mm256_unpacklo_ps(r[0], r[1]);
    t[1] = _mm256_unpackhi_ps(r[0], r[1]);
    t[2] = _mm256_unpacklo_ps(r[2], r[3]);
    t[3] = _mm256_unpackhi_ps(r[2], r[3]);
    t[4] = _mm256_unpacklo_ps(r[4], r[5]);
    t[5] = _mm256_unpackhi_ps(r[4], r[5]);
    t[6] = _mm256_unpacklo_ps(r[6], r[7]);
    t[7] = _mm256_unpackhi_ps(r[6], r[7]);
    r[0] = _mm256_shuffle_ps(t[0], t[2], _MM_SHUFFLE(1, 0, 1, 0));
    r[1] = _mm256_shuffle_ps(t[0], t[2], _MM_SHUFFLE(3, 2, 3, 2));
    r[2] = _mm256_shuffle_ps(t[1], t[3], _MM_SHUFFLE(1, 0, 1, 0));
    r[3] = _mm256_shuffle_ps(t[1], t[3], _MM_SHUFFLE(3, 2, 3, 2));
    r[4] = _mm256_shuffle_ps(t[4], t[6], _MM_SHUFFLE(1, 0, 1, 0));
    r[5] = _mm256_shuffle_ps(t[4], t[6], _MM_SHUFFLE(3, 2, 3, 2));
    r[6] = _mm256_shuffle_ps(t[5], t[7], _MM_SHUFFLE(1, 0, 1, 0));
    r[7] = _mm256_shuffle_ps(t[5], t[7], _MM_SHUFFLE(3, 2, 3, 2));
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        _mm256_storeu_ps(dst + i * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(dst + (i + 4) * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
}

/* kt[c][jj] = k[jj][c] for 16 keys (rows of k, stride ldk) and c < dimp (a multiple of 8). */
static inline void fi_rows_transpose_keys(const float *k, int64_t ldk, int64_t dimp, float *kt) {
    for (int64_t c = 0; c < dimp; c += 8) {
        fi_rows_transpose8(k + c, ldk, kt + c * FI_ROWS_KEYS, FI_ROWS_KEYS);
        fi_rows_transpose8(k + 8 * ldk + c, ldk, kt + c * FI_ROWS_KEYS + 8, FI_ROWS_KEYS);
    }
}

/* Scores of nr rows (nr <= 4) against the 16 keys of kt; st[jj][r] for jj < nkeys. */
static inline __attribute__((always_inline)) void fi_rows_qk_block(const float *q, int64_t ldq, const int nr,
                                                                   const float *kt, int64_t dimp, int64_t nkeys,
                                                                   float *st, int64_t lds) {
    __m256 acc[4][2];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t c = 0; c < dimp; c++) {
        const __m256 k0 = _mm256_loadu_ps(kt + c * FI_ROWS_KEYS), k1 = _mm256_loadu_ps(kt + c * FI_ROWS_KEYS + 8);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const __m256 b = _mm256_broadcast_ss(q + r * ldq + c);
            acc[r][0] = _mm256_fmadd_ps(b, k0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(b, k1, acc[r][1]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        float s[FI_ROWS_KEYS];
        _mm256_storeu_ps(s, acc[r][0]);
        _mm256_storeu_ps(s + 8, acc[r][1]);
        for (int64_t jj = 0; jj < nkeys; jj++) st[jj * lds + r] = s[jj];
    }
}

/* The qk_rows operation of fi_flash_tile_ops (see flash_tile.h). */
static inline void fi_rows_qk(const float *q, int64_t ldq, int64_t rows, const float *k, int64_t ldk, int64_t nk,
                              int64_t dimp, float *st, int64_t lds) {
    float kt[FI_ATTN_MAX_DIM * FI_ROWS_KEYS] __attribute__((aligned(32)));
    float tail[FI_ROWS_KEYS * FI_ATTN_MAX_DIM] __attribute__((aligned(32)));
    for (int64_t j = 0; j < nk; j += FI_ROWS_KEYS) {
        const int64_t nkeys = nk - j < FI_ROWS_KEYS ? nk - j : FI_ROWS_KEYS;
        if (nkeys == FI_ROWS_KEYS) {
            fi_rows_transpose_keys(k + j * ldk, ldk, dimp, kt);
        } else { /* last keys: zero-padded copy, so no read past the tile */
            memset(tail, 0, sizeof(float) * (size_t)(FI_ROWS_KEYS * dimp));
            for (int64_t jj = 0; jj < nkeys; jj++) memcpy(tail + jj * dimp, k + (j + jj) * ldk, sizeof(float) * (size_t)dimp);
            fi_rows_transpose_keys(tail, dimp, dimp, kt);
        }
        /* The same keys one tile on, where K continues at this stride (dense K, or within
         * a page): requests spread over the tile keep the loads ahead of the strided
         * transposes; a wrong guess (next page) only wastes the requests. */
        const uintptr_t next = (uintptr_t)(k + j * ldk) + (uintptr_t)(nk * ldk) * sizeof(float);
        for (int64_t jj = 0; jj < FI_ROWS_KEYS; jj++)
            for (int64_t off = 0; off < dimp * (int64_t)sizeof(float); off += 64)
                _mm_prefetch((const char *)(next + (uintptr_t)(jj * ldk) * sizeof(float) + (uintptr_t)off), _MM_HINT_T0);
        float *sj = st + j * lds;
        int64_t r = 0;
        for (; r + 4 <= rows; r += 4) fi_rows_qk_block(q + r * ldq, ldq, 4, kt, dimp, nkeys, sj + r, lds);
        switch (rows - r) {
        case 3: fi_rows_qk_block(q + r * ldq, ldq, 3, kt, dimp, nkeys, sj + r, lds); break;
        case 2: fi_rows_qk_block(q + r * ldq, ldq, 2, kt, dimp, nkeys, sj + r, lds); break;
        case 1: fi_rows_qk_block(q + r * ldq, ldq, 1, kt, dimp, nkeys, sj + r, lds); break;
        default: break;
        }
    }
}

#endif
