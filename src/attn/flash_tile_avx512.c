/* AVX-512 microkernels. Register blocking:
 *   S^T = K Q^T: 8 keys x 32 query rows = 16 zmm accumulators; per head-dim step two
 *   Q^T vectors are loaded and each key element is broadcast once.
 *   QK (row-major Q, few rows, decode): the AVX2 kernel of flash_tile_rows_avx2.h, whose
 *   scores are bitwise those of the Q^T kernel (row invariance).
 *   softmax: 16 rows per zmm, down the key axis.
 *   P.V: 4 rows x 64 output columns = 16 zmm accumulators, seeded with alpha * O.
 * exp is the polynomial of fi_flash_exp512 below. */
#include <immintrin.h>
#include <math.h>

#include "attn/flash_tile.h"
#include "attn/flash_tile_rows_avx2.h"
#include "core/dtype.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* exp(x) for x in float: x = n ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2),
 * exp(r) by its Taylor polynomial of degree 7 (truncation < 6e-9 relative), then the
 * exponent n is put in directly. Relative error ~2 ulp (< 2.5e-7). Inputs below -87
 * (including -inf) give exactly 0; the softmax only feeds x <= 0. */
ALWAYS_INLINE __m512 fi_flash_exp512(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.0f);
    const __mmask16 keep = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(88.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723212e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mul_ps(keep, p, _mm512_castsi512_ps(e));
}

/* S^T[j0 + kk][r0 + 16 z] for nkk keys x nz row vectors; K elements broadcast, Q^T loaded. */
ALWAYS_INLINE void qk_block(const float *qt, int64_t ldqt, const int nz, const float *k, int64_t ldk,
                            const int nkk, int64_t dimp, float *st, int64_t lds) {
    __m512 acc[8][2];
#pragma GCC unroll 16
    for (int kk = 0; kk < nkk; kk++)
#pragma GCC unroll 16
        for (int z = 0; z < nz; z++) acc[kk][z] = _mm512_setzero_ps();
    for (int64_t c = 0; c < dimp; c++) {
        __m512 qv[2];
#pragma GCC unroll 16
        for (int z = 0; z < nz; z++) qv[z] = _mm512_loadu_ps(qt + c * ldqt + 16 * z);
#pragma GCC unroll 16
        for (int kk = 0; kk < nkk; kk++) {
            const __m512 b = _mm512_set1_ps(k[kk * ldk + c]);
#pragma GCC unroll 16
            for (int z = 0; z < nz; z++) acc[kk][z] = _mm512_fmadd_ps(b, qv[z], acc[kk][z]);
        }
    }
#pragma GCC unroll 16
    for (int kk = 0; kk < nkk; kk++)
#pragma GCC unroll 16
        for (int z = 0; z < nz; z++) _mm512_storeu_ps(st + kk * lds + 16 * z, acc[kk][z]);
}

static void qk(const float *qt, int64_t ldqt, int64_t rowsp, const float *k, int64_t ldk, int64_t nk,
               int64_t dimp, float *st, int64_t lds) {
    for (int64_t r = 0; r < rowsp; r += 32) {
        const bool two = rowsp - r >= 32;
        int64_t j = 0;
        for (; j + 8 <= nk; j += 8) {
            if (two) qk_block(qt + r, ldqt, 2, k + j * ldk, ldk, 8, dimp, st + j * lds + r, lds);
            else qk_block(qt + r, ldqt, 1, k + j * ldk, ldk, 8, dimp, st + j * lds + r, lds);
        }
        for (; j < nk; j++) {
            if (two) qk_block(qt + r, ldqt, 2, k + j * ldk, ldk, 1, dimp, st + j * lds + r, lds);
            else qk_block(qt + r, ldqt, 1, k + j * ldk, ldk, 1, dimp, st + j * lds + r, lds);
        }
    }
}

static void softmax(float *st, int64_t lds, int64_t rowsp, int64_t nk, float *m, float *l, float *alpha) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (int64_t r = 0; r < rowsp; r += 16) {
        const __m512 mo = _mm512_loadu_ps(m + r);
        __m512 mx = mo;
        for (int64_t j = 0; j < nk; j++) mx = _mm512_max_ps(mx, _mm512_loadu_ps(st + j * lds + r));
        /* Rows with nothing kept yet use 0 in the exponent: exp(-inf - 0) = 0. */
        const __m512 ms = _mm512_mask_mov_ps(mx, _mm512_cmp_ps_mask(mx, ninf, _CMP_EQ_OQ), _mm512_setzero_ps());
        __m512 sum = _mm512_setzero_ps();
        for (int64_t j = 0; j < nk; j++) {
            const __m512 e = fi_flash_exp512(_mm512_sub_ps(_mm512_loadu_ps(st + j * lds + r), ms));
            _mm512_storeu_ps(st + j * lds + r, e);
            sum = _mm512_add_ps(sum, e);
        }
        const __m512 a = fi_flash_exp512(_mm512_sub_ps(mo, ms));
        _mm512_storeu_ps(alpha + r, a);
        _mm512_storeu_ps(l + r, _mm512_fmadd_ps(_mm512_loadu_ps(l + r), a, sum));
        _mm512_storeu_ps(m + r, mx);
    }
}

ALWAYS_INLINE void pv_block(const float *pt, int64_t ldp, const int nr, int64_t nk, const float *v,
                            int64_t ldv, const int nz, const float *alpha, float *o, int64_t ldo) {
    __m512 acc[4][4];
#pragma GCC unroll 16
    for (int r = 0; r < nr; r++) {
        const __m512 a = _mm512_set1_ps(alpha[r]);
#pragma GCC unroll 16
        for (int z = 0; z < nz; z++) acc[r][z] = _mm512_mul_ps(a, _mm512_loadu_ps(o + r * ldo + 16 * z));
    }
    for (int64_t j = 0; j < nk; j++) {
        __m512 vv[4];
#pragma GCC unroll 16
        for (int z = 0; z < nz; z++) vv[z] = _mm512_loadu_ps(v + j * ldv + 16 * z);
#pragma GCC unroll 16
        for (int r = 0; r < nr; r++) {
            const __m512 b = _mm512_set1_ps(pt[j * ldp + r]);
#pragma GCC unroll 16
            for (int z = 0; z < nz; z++) acc[r][z] = _mm512_fmadd_ps(b, vv[z], acc[r][z]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 16
        for (int z = 0; z < nz; z++) _mm512_storeu_ps(o + r * ldo + 16 * z, acc[r][z]);
}

ALWAYS_INLINE void pv_rows(const float *pt, int64_t ldp, const int nr, int64_t nk, const float *v,
                           int64_t ldv, int64_t dimp, const float *alpha, float *o, int64_t ldo) {
    int64_t c = 0;
    for (; c + 64 <= dimp; c += 64) pv_block(pt, ldp, nr, nk, v + c, ldv, 4, alpha, o + c, ldo);
    switch ((dimp - c) / 16) {
    case 3: pv_block(pt, ldp, nr, nk, v + c, ldv, 3, alpha, o + c, ldo); break;
    case 2: pv_block(pt, ldp, nr, nk, v + c, ldv, 2, alpha, o + c, ldo); break;
    case 1: pv_block(pt, ldp, nr, nk, v + c, ldv, 1, alpha, o + c, ldo); break;
    default: break;
    }
}

static void pv(const float *pt, int64_t ldp, int64_t rows, int64_t nk, const float *v, int64_t ldv,
               int64_t dimp, const float *alpha, float *o, int64_t ldo) {
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) pv_rows(pt + r, ldp, 4, nk, v, ldv, dimp, alpha + r, o + r * ldo, ldo);
    for (; r < rows; r++) pv_rows(pt + r, ldp, 1, nk, v, ldv, dimp, alpha + r, o + r * ldo, ldo);
}

static void load_scaled(const void *src, fi_dtype t, float scale, float *dst, int64_t n) {
    const __m512 vs = _mm512_set1_ps(scale);
    int64_t i = 0;
    switch (t) {
    case FI_DTYPE_F16:
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(dst + i, _mm512_mul_ps(vs, _mm512_cvtph_ps(_mm256_loadu_si256(
                                                           (const __m256i *)((const uint16_t *)src + i)))));
        break;
    case FI_DTYPE_BF16:
        for (; i + 16 <= n; i += 16) {
            const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)src + i)));
            _mm512_storeu_ps(dst + i, _mm512_mul_ps(vs, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16))));
        }
        break;
    default:
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_mul_ps(vs, _mm512_loadu_ps((const float *)src + i)));
        break;
    }
    for (; i < n; i++) dst[i] = scale * fi_load_f32(src, t, i);
}

const fi_flash_tile_ops fi_flash_tile_avx512 = {
    .qk = qk, .qk_rows = fi_rows_qk, .softmax = softmax, .pv = pv,
    .load_scaled = load_scaled};
