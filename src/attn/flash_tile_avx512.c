/* AVX-512 microkernels. Register blocking:
 *   QK^T (packed K^T): 8 query rows x 32 keys = 16 zmm accumulators; per head-dim step
 *   two key vectors are loaded and each query element is broadcast once.
 *   QK^T (row-major K, few rows): one key against up to 4 rows, reduced horizontally.
 *   P.V: 4 rows x 64 output columns = 16 zmm accumulators, seeded with alpha * O.
 * exp is the polynomial of fi_flash_exp512 below. */
#include <immintrin.h>
#include <math.h>

#include "attn/flash_tile.h"
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

ALWAYS_INLINE void qk_block(const float *q, int64_t ldq, const int nr, const int nz, const float *kt,
                            int64_t ldkt, int64_t dimp, float *s, int64_t lds) {
    __m512 acc[8][2];
    #pragma GCC unroll 16
    for (int r = 0; r < nr; r++)
        #pragma GCC unroll 16
        for (int z = 0; z < nz; z++) acc[r][z] = _mm512_setzero_ps();
    for (int64_t c = 0; c < dimp; c++) {
        __m512 k[2];
        #pragma GCC unroll 16
        for (int z = 0; z < nz; z++) k[z] = _mm512_loadu_ps(kt + c * ldkt + 16 * z);
        #pragma GCC unroll 16
        for (int r = 0; r < nr; r++) {
            const __m512 b = _mm512_set1_ps(q[r * ldq + c]);
            #pragma GCC unroll 16
            for (int z = 0; z < nz; z++) acc[r][z] = _mm512_fmadd_ps(b, k[z], acc[r][z]);
        }
    }
    #pragma GCC unroll 16
    for (int r = 0; r < nr; r++)
        #pragma GCC unroll 16
        for (int z = 0; z < nz; z++) _mm512_storeu_ps(s + r * lds + 16 * z, acc[r][z]);
}

static void qk_packed(const float *q, int64_t ldq, int64_t rows, const float *kt, int64_t ldkt,
                      int64_t nkp, int64_t dimp, float *s, int64_t lds) {
    int64_t r = 0;
    for (; r + 8 <= rows; r += 8) {
        int64_t j = 0;
        for (; j + 32 <= nkp; j += 32) qk_block(q + r * ldq, ldq, 8, 2, kt + j, ldkt, dimp, s + r * lds + j, lds);
        if (j < nkp) qk_block(q + r * ldq, ldq, 8, 1, kt + j, ldkt, dimp, s + r * lds + j, lds);
    }
    for (; r < rows; r++) {
        int64_t j = 0;
        for (; j + 32 <= nkp; j += 32) qk_block(q + r * ldq, ldq, 1, 2, kt + j, ldkt, dimp, s + r * lds + j, lds);
        if (j < nkp) qk_block(q + r * ldq, ldq, 1, 1, kt + j, ldkt, dimp, s + r * lds + j, lds);
    }
}

ALWAYS_INLINE void qk_rows_block(const float *q, int64_t ldq, const int nr, const float *k, int64_t ldk,
                                 int64_t nk, int64_t dimp, float *s, int64_t lds) {
    for (int64_t j = 0; j < nk; j++) {
        __m512 acc[4];
        #pragma GCC unroll 16
        for (int r = 0; r < nr; r++) acc[r] = _mm512_setzero_ps();
        const float *krow = k + j * ldk;
        for (int64_t c = 0; c < dimp; c += 16) {
            const __m512 kv = _mm512_loadu_ps(krow + c);
            #pragma GCC unroll 16
            for (int r = 0; r < nr; r++) acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(q + r * ldq + c), kv, acc[r]);
        }
        #pragma GCC unroll 16
        for (int r = 0; r < nr; r++) s[r * lds + j] = _mm512_reduce_add_ps(acc[r]);
    }
}

static void qk_rows(const float *q, int64_t ldq, int64_t rows, const float *k, int64_t ldk,
                    int64_t nk, int64_t dimp, float *s, int64_t lds) {
    for (int64_t r = 0; r < rows; r += 4) {
        const float *qr = q + r * ldq;
        float *sr = s + r * lds;
        switch (rows - r >= 4 ? 4 : rows - r) {
        case 4: qk_rows_block(qr, ldq, 4, k, ldk, nk, dimp, sr, lds); break;
        case 3: qk_rows_block(qr, ldq, 3, k, ldk, nk, dimp, sr, lds); break;
        case 2: qk_rows_block(qr, ldq, 2, k, ldk, nk, dimp, sr, lds); break;
        default: qk_rows_block(qr, ldq, 1, k, ldk, nk, dimp, sr, lds); break;
        }
    }
}

static void softmax(float *s, int64_t lds, int64_t rows, int64_t nkp, float *m, float *l,
                    float *alpha) {
    for (int64_t r = 0; r < rows; r++) {
        float *srow = s + r * lds;
        __m512 vmax = _mm512_set1_ps(m[r]);
        for (int64_t j = 0; j < nkp; j += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(srow + j));
        const float mx = _mm512_reduce_max_ps(vmax);
        if (mx == -INFINITY) { /* nothing kept yet: avoid -inf - -inf */
            for (int64_t j = 0; j < nkp; j += 16) _mm512_storeu_ps(srow + j, _mm512_setzero_ps());
            alpha[r] = 1.0f;
            continue;
        }
        const __m512 vm = _mm512_set1_ps(mx);
        __m512 vsum = _mm512_setzero_ps();
        for (int64_t j = 0; j < nkp; j += 16) {
            const __m512 e = fi_flash_exp512(_mm512_sub_ps(_mm512_loadu_ps(srow + j), vm));
            _mm512_storeu_ps(srow + j, e);
            vsum = _mm512_add_ps(vsum, e);
        }
        const float a = m[r] == mx ? 1.0f : expf(m[r] - mx);
        alpha[r] = a;
        l[r] = l[r] * a + _mm512_reduce_add_ps(vsum);
        m[r] = mx;
    }
}

ALWAYS_INLINE void pv_block(const float *p, int64_t ldp, const int nr, int64_t nk, const float *v,
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
            const __m512 b = _mm512_set1_ps(p[r * ldp + j]);
            #pragma GCC unroll 16
            for (int z = 0; z < nz; z++) acc[r][z] = _mm512_fmadd_ps(b, vv[z], acc[r][z]);
        }
    }
    #pragma GCC unroll 16
    for (int r = 0; r < nr; r++)
        #pragma GCC unroll 16
        for (int z = 0; z < nz; z++) _mm512_storeu_ps(o + r * ldo + 16 * z, acc[r][z]);
}

ALWAYS_INLINE void pv_rows(const float *p, int64_t ldp, const int nr, int64_t nk, const float *v,
                           int64_t ldv, int64_t dimp, const float *alpha, float *o, int64_t ldo) {
    int64_t c = 0;
    for (; c + 64 <= dimp; c += 64) pv_block(p, ldp, nr, nk, v + c, ldv, 4, alpha, o + c, ldo);
    switch ((dimp - c) / 16) {
    case 3: pv_block(p, ldp, nr, nk, v + c, ldv, 3, alpha, o + c, ldo); break;
    case 2: pv_block(p, ldp, nr, nk, v + c, ldv, 2, alpha, o + c, ldo); break;
    case 1: pv_block(p, ldp, nr, nk, v + c, ldv, 1, alpha, o + c, ldo); break;
    default: break;
    }
}

static void pv(const float *p, int64_t ldp, int64_t rows, int64_t nk, const float *v, int64_t ldv,
               int64_t dimp, const float *alpha, float *o, int64_t ldo) {
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) pv_rows(p + r * ldp, ldp, 4, nk, v, ldv, dimp, alpha + r, o + r * ldo, ldo);
    for (; r < rows; r++) pv_rows(p + r * ldp, ldp, 1, nk, v, ldv, dimp, alpha + r, o + r * ldo, ldo);
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
    .qk_packed = qk_packed, .qk_rows = qk_rows, .softmax = softmax, .pv = pv,
    .load_scaled = load_scaled};
