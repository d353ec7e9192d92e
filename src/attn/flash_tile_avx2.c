/* AVX2 + FMA microkernels (16 ymm registers). Register blocking:
 *   S^T = K Q^T: 6 keys x 16 query rows = 12 ymm accumulators.
 *   QK (row-major Q, few rows, decode): 16 keys transposed once, x 4 rows = 8 accumulators
 *   (flash_tile_rows_avx2.h; same FMA chain per score as the Q^T kernel).
 *   softmax: 8 rows per ymm, down the key axis.
 *   P.V: 6 rows x 16 output columns = 12 ymm accumulators, seeded with alpha * O.
 * exp uses the same polynomial as the AVX-512 path (see flash_tile_avx512.c). */
#include <immintrin.h>
#include <math.h>

#include "attn/flash_tile.h"
#include "attn/flash_tile_rows_avx2.h"
#include "core/dtype.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* exp(x): Cody-Waite reduction to |r| <= ln2/2, Taylor degree 7, exponent inserted;
 * ~2 ulp relative; x < -87 (including -inf) gives exactly 0. */
ALWAYS_INLINE __m256 exp256(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    const __m256 keep = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860682030941723212e-6f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(keep, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/* S^T[j0 + kk][r0 .. r0 + 15] for nkk <= 6 keys: 12 accumulators + 2 Q^T vectors + 1
 * broadcast = 15 of the 16 ymm registers; per head-dim step 2 loads and nkk broadcasts
 * feed 2 nkk FMAs, and 12 independent chains cover the FMA latency (4 cycles x 2 pipes).
 * Each score is one FMA chain over c = 0 .. dimp - 1 whatever nkk is (row invariance,
 * see flash_tile_rows_avx2.h). */
ALWAYS_INLINE void qk_block(const float *qt, int64_t ldqt, const float *k, int64_t ldk, const int nkk,
                            int64_t dimp, float *st, int64_t lds) {
    __m256 acc[6][2];
#pragma GCC unroll 16
    for (int kk = 0; kk < nkk; kk++) acc[kk][0] = acc[kk][1] = _mm256_setzero_ps();
    for (int64_t c = 0; c < dimp; c++) {
        const __m256 q0 = _mm256_loadu_ps(qt + c * ldqt), q1 = _mm256_loadu_ps(qt + c * ldqt + 8);
#pragma GCC unroll 16
        for (int kk = 0; kk < nkk; kk++) {
            const __m256 b = _mm256_broadcast_ss(k + kk * ldk + c);
            acc[kk][0] = _mm256_fmadd_ps(b, q0, acc[kk][0]);
            acc[kk][1] = _mm256_fmadd_ps(b, q1, acc[kk][1]);
        }
    }
#pragma GCC unroll 16
    for (int kk = 0; kk < nkk; kk++) {
        _mm256_storeu_ps(st + kk * lds, acc[kk][0]);
        _mm256_storeu_ps(st + kk * lds + 8, acc[kk][1]);
    }
}

/* S^T[j0 + kk][r0 .. r0 + 31] for nkk <= 3 keys: 12 accumulators, 4 Q^T loads and nkk
 * broadcasts per head-dim step (half the broadcasts of the 16-row block per FMA; on
 * Zen 3 a broadcast competes with the FMAs for an FP pipe). Same chain per score. */
ALWAYS_INLINE void qk_block32(const float *qt, int64_t ldqt, const float *k, int64_t ldk, const int nkk,
                              int64_t dimp, float *st, int64_t lds) {
    __m256 acc[3][4];
#pragma GCC unroll 16
    for (int kk = 0; kk < nkk; kk++) acc[kk][0] = acc[kk][1] = acc[kk][2] = acc[kk][3] = _mm256_setzero_ps();
    for (int64_t c = 0; c < dimp; c++) {
        const float *qc = qt + c * ldqt;
        const __m256 q0 = _mm256_loadu_ps(qc), q1 = _mm256_loadu_ps(qc + 8);
        const __m256 q2 = _mm256_loadu_ps(qc + 16), q3 = _mm256_loadu_ps(qc + 24);
#pragma GCC unroll 16
        for (int kk = 0; kk < nkk; kk++) {
            const __m256 b = _mm256_broadcast_ss(k + kk * ldk + c);
            acc[kk][0] = _mm256_fmadd_ps(b, q0, acc[kk][0]);
            acc[kk][1] = _mm256_fmadd_ps(b, q1, acc[kk][1]);
            acc[kk][2] = _mm256_fmadd_ps(b, q2, acc[kk][2]);
            acc[kk][3] = _mm256_fmadd_ps(b, q3, acc[kk][3]);
        }
    }
#pragma GCC unroll 16
    for (int kk = 0; kk < nkk; kk++)
#pragma GCC unroll 4
        for (int z = 0; z < 4; z++) _mm256_storeu_ps(st + kk * lds + 8 * z, acc[kk][z]);
}

static void qk(const float *qt, int64_t ldqt, int64_t rowsp, const float *k, int64_t ldk, int64_t nk,
               int64_t dimp, float *st, int64_t lds) {
    int64_t r = 0;
    for (; r + 32 <= rowsp; r += 32) {
        int64_t j = 0;
        for (; j + 3 <= nk; j += 3) qk_block32(qt + r, ldqt, k + j * ldk, ldk, 3, dimp, st + j * lds + r, lds);
        if (nk - j == 2) qk_block32(qt + r, ldqt, k + j * ldk, ldk, 2, dimp, st + j * lds + r, lds);
        if (nk - j == 1) qk_block32(qt + r, ldqt, k + j * ldk, ldk, 1, dimp, st + j * lds + r, lds);
    }
    for (; r < rowsp; r += 16) {
        int64_t j = 0;
        for (; j + 6 <= nk; j += 6) qk_block(qt + r, ldqt, k + j * ldk, ldk, 6, dimp, st + j * lds + r, lds);
        const float *kj = k + j * ldk;
        float *sj = st + j * lds + r;
        switch (nk - j) {
        case 5: qk_block(qt + r, ldqt, kj, ldk, 5, dimp, sj, lds); break;
        case 4: qk_block(qt + r, ldqt, kj, ldk, 4, dimp, sj, lds); break;
        case 3: qk_block(qt + r, ldqt, kj, ldk, 3, dimp, sj, lds); break;
        case 2: qk_block(qt + r, ldqt, kj, ldk, 2, dimp, sj, lds); break;
        case 1: qk_block(qt + r, ldqt, kj, ldk, 1, dimp, sj, lds); break;
        default: break;
        }
    }
}

static void softmax(float *st, int64_t lds, int64_t rowsp, int64_t nk, float *m, float *l, float *alpha) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    for (int64_t r = 0; r < rowsp; r += 8) {
        const __m256 mo = _mm256_loadu_ps(m + r);
        __m256 mx = mo;
        for (int64_t j = 0; j < nk; j++) mx = _mm256_max_ps(mx, _mm256_loadu_ps(st + j * lds + r));
        /* Rows with nothing kept yet use 0 in the exponent: exp(-inf - 0) = 0. */
        const __m256 ms = _mm256_blendv_ps(mx, _mm256_setzero_ps(), _mm256_cmp_ps(mx, ninf, _CMP_EQ_OQ));
        __m256 sum = _mm256_setzero_ps();
        for (int64_t j = 0; j < nk; j++) {
            const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(st + j * lds + r), ms));
            _mm256_storeu_ps(st + j * lds + r, e);
            sum = _mm256_add_ps(sum, e);
        }
        const __m256 a = exp256(_mm256_sub_ps(mo, ms));
        _mm256_storeu_ps(alpha + r, a);
        _mm256_storeu_ps(l + r, _mm256_fmadd_ps(_mm256_loadu_ps(l + r), a, sum));
        _mm256_storeu_ps(m + r, mx);
    }
}

/* O rows r .. r + nr - 1 (nr <= 6), 16 columns: 12 accumulators seeded with alpha * O,
 * 2 V loads and nr broadcasts of P per key. The chain per output element (alpha * O,
 * then one FMA per key in key order) is the same for every nr (row invariance). */
ALWAYS_INLINE void pv_block(const float *pt, int64_t ldp, const int nr, int64_t nk, const float *v,
                            int64_t ldv, const float *alpha, float *o, int64_t ldo) {
    __m256 acc[6][2];
#pragma GCC unroll 16
    for (int r = 0; r < nr; r++) {
        const __m256 a = _mm256_set1_ps(alpha[r]);
        acc[r][0] = _mm256_mul_ps(a, _mm256_loadu_ps(o + r * ldo));
        acc[r][1] = _mm256_mul_ps(a, _mm256_loadu_ps(o + r * ldo + 8));
    }
    for (int64_t j = 0; j < nk; j++) {
        const __m256 v0 = _mm256_loadu_ps(v + j * ldv), v1 = _mm256_loadu_ps(v + j * ldv + 8);
#pragma GCC unroll 16
        for (int r = 0; r < nr; r++) {
            const __m256 b = _mm256_broadcast_ss(pt + j * ldp + r);
            acc[r][0] = _mm256_fmadd_ps(b, v0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(b, v1, acc[r][1]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < nr; r++) {
        _mm256_storeu_ps(o + r * ldo, acc[r][0]);
        _mm256_storeu_ps(o + r * ldo + 8, acc[r][1]);
    }
}

/* O rows r .. r + nr - 1 (nr <= 3), 32 columns: 12 accumulators, 4 V loads and nr
 * broadcasts of P per key (half the broadcasts per FMA of pv_block). Same chain. */
ALWAYS_INLINE void pv_block32(const float *pt, int64_t ldp, const int nr, int64_t nk, const float *v,
                              int64_t ldv, const float *alpha, float *o, int64_t ldo, const bool pf) {
    __m256 acc[3][4];
#pragma GCC unroll 16
    for (int r = 0; r < nr; r++) {
        const __m256 a = _mm256_set1_ps(alpha[r]);
#pragma GCC unroll 4
        for (int z = 0; z < 4; z++) acc[r][z] = _mm256_mul_ps(a, _mm256_loadu_ps(o + r * ldo + 8 * z));
    }
    for (int64_t j = 0; j < nk; j++) {
        const float *vj = v + j * ldv;
        if (pf) { /* these columns of the same key one tile on (see fi_rows_qk) */
            const uintptr_t next = (uintptr_t)vj + (uintptr_t)(nk * ldv) * sizeof(float); /* may lie past V */
            _mm_prefetch((const char *)next, _MM_HINT_T0);
            _mm_prefetch((const char *)(next + 16 * sizeof(float)), _MM_HINT_T0);
        }
        const __m256 v0 = _mm256_loadu_ps(vj), v1 = _mm256_loadu_ps(vj + 8);
        const __m256 v2 = _mm256_loadu_ps(vj + 16), v3 = _mm256_loadu_ps(vj + 24);
#pragma GCC unroll 16
        for (int r = 0; r < nr; r++) {
            const __m256 b = _mm256_broadcast_ss(pt + j * ldp + r);
            acc[r][0] = _mm256_fmadd_ps(b, v0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(b, v1, acc[r][1]);
            acc[r][2] = _mm256_fmadd_ps(b, v2, acc[r][2]);
            acc[r][3] = _mm256_fmadd_ps(b, v3, acc[r][3]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int z = 0; z < 4; z++) _mm256_storeu_ps(o + r * ldo + 8 * z, acc[r][z]);
}

/* 32-column blocks with nr <= 3 rows where they fit, then 16-column blocks. */
ALWAYS_INLINE void pv_rows3(const float *pt, int64_t ldp, const int nr, int64_t nk, const float *v, int64_t ldv,
                            int64_t dimp, const float *alpha, float *o, int64_t ldo, const bool pf) {
    int64_t c = 0;
    for (; c + 32 <= dimp; c += 32) pv_block32(pt, ldp, nr, nk, v + c, ldv, alpha, o + c, ldo, pf);
    if (c < dimp) pv_block(pt, ldp, nr, nk, v + c, ldv, alpha, o + c, ldo);
}

static void pv(const float *pt, int64_t ldp, int64_t rows, int64_t nk, const float *v, int64_t ldv,
               int64_t dimp, const float *alpha, float *o, int64_t ldo) {
    /* Few rows (decode): V is streamed, not reused; ask for the next tile's V during the
     * first pass. Many rows: the driver's per-tile prefetch suffices. */
    if (rows < 16) {
        int64_t r = 0;
        for (; r + 3 <= rows; r += 3)
            pv_rows3(pt + r, ldp, 3, nk, v, ldv, dimp, alpha + r, o + r * ldo, ldo, r == 0);
        if (rows - r == 2) pv_rows3(pt + r, ldp, 2, nk, v, ldv, dimp, alpha + r, o + r * ldo, ldo, r == 0);
        if (rows - r == 1) pv_rows3(pt + r, ldp, 1, nk, v, ldv, dimp, alpha + r, o + r * ldo, ldo, r == 0);
        return;
    }
    int64_t r = 0;
    for (; r + 3 <= rows; r += 3) pv_rows3(pt + r, ldp, 3, nk, v, ldv, dimp, alpha + r, o + r * ldo, ldo, false);
    if (rows - r == 2) pv_rows3(pt + r, ldp, 2, nk, v, ldv, dimp, alpha + r, o + r * ldo, ldo, false);
    if (rows - r == 1) pv_rows3(pt + r, ldp, 1, nk, v, ldv, dimp, alpha + r, o + r * ldo, ldo, false);
}

static void load_scaled(const void *src, fi_dtype t, float scale, float *dst, int64_t n) {
    const __m256 vs = _mm256_set1_ps(scale);
    int64_t i = 0;
    switch (t) {
    case FI_DTYPE_F16:
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_mul_ps(vs, _mm256_cvtph_ps(_mm_loadu_si128(
                                                           (const __m128i *)((const uint16_t *)src + i)))));
        break;
    case FI_DTYPE_BF16:
        for (; i + 8 <= n; i += 8) {
            const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)src + i)));
            _mm256_storeu_ps(dst + i, _mm256_mul_ps(vs, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16))));
        }
        break;
    default:
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_mul_ps(vs, _mm256_loadu_ps((const float *)src + i)));
        break;
    }
    for (; i < n; i++) dst[i] = scale * fi_load_f32(src, t, i);
}

const fi_flash_tile_ops fi_flash_tile_avx2 = {
    .qk = qk, .qk_rows = fi_rows_qk, .softmax = softmax, .pv = pv,
    .load_scaled = load_scaled, .softmax_row_step = 8};
