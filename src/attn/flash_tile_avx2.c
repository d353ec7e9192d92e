/* AVX2 + FMA microkernels (16 ymm registers). Register blocking:
 *   QK^T (packed K^T): 4 query rows x 16 keys = 8 ymm accumulators.
 *   QK^T (row-major K, few rows): one key against up to 4 rows, reduced horizontally.
 *   P.V: 4 rows x 16 output columns = 8 ymm accumulators, seeded with alpha * O.
 * exp uses the same polynomial as the AVX-512 path (see flash_tile_avx512.c). */
#include <immintrin.h>
#include <math.h>

#include "attn/flash_tile.h"
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

ALWAYS_INLINE float hsum256(__m256 v) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

ALWAYS_INLINE float hmax256(__m256 v) {
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    x = _mm_max_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

ALWAYS_INLINE void qk_block(const float *q, int64_t ldq, const int nr, const float *kt, int64_t ldkt,
                            int64_t dimp, float *s, int64_t lds) {
    __m256 acc[4][2];
    #pragma GCC unroll 16
    for (int r = 0; r < nr; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t c = 0; c < dimp; c++) {
        const __m256 k0 = _mm256_loadu_ps(kt + c * ldkt), k1 = _mm256_loadu_ps(kt + c * ldkt + 8);
        #pragma GCC unroll 16
        for (int r = 0; r < nr; r++) {
            const __m256 b = _mm256_broadcast_ss(q + r * ldq + c);
            acc[r][0] = _mm256_fmadd_ps(b, k0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(b, k1, acc[r][1]);
        }
    }
    #pragma GCC unroll 16
    for (int r = 0; r < nr; r++) {
        _mm256_storeu_ps(s + r * lds, acc[r][0]);
        _mm256_storeu_ps(s + r * lds + 8, acc[r][1]);
    }
}

static void qk_packed(const float *q, int64_t ldq, int64_t rows, const float *kt, int64_t ldkt,
                      int64_t nkp, int64_t dimp, float *s, int64_t lds) {
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4)
        for (int64_t j = 0; j < nkp; j += 16) qk_block(q + r * ldq, ldq, 4, kt + j, ldkt, dimp, s + r * lds + j, lds);
    for (; r < rows; r++)
        for (int64_t j = 0; j < nkp; j += 16) qk_block(q + r * ldq, ldq, 1, kt + j, ldkt, dimp, s + r * lds + j, lds);
}

ALWAYS_INLINE void qk_rows_block(const float *q, int64_t ldq, const int nr, const float *k, int64_t ldk,
                                 int64_t nk, int64_t dimp, float *s, int64_t lds) {
    for (int64_t j = 0; j < nk; j++) {
        __m256 acc[4];
        #pragma GCC unroll 16
        for (int r = 0; r < nr; r++) acc[r] = _mm256_setzero_ps();
        const float *krow = k + j * ldk;
        for (int64_t c = 0; c < dimp; c += 8) {
            const __m256 kv = _mm256_loadu_ps(krow + c);
            #pragma GCC unroll 16
            for (int r = 0; r < nr; r++) acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(q + r * ldq + c), kv, acc[r]);
        }
        #pragma GCC unroll 16
        for (int r = 0; r < nr; r++) s[r * lds + j] = hsum256(acc[r]);
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
        __m256 vmax = _mm256_set1_ps(m[r]);
        for (int64_t j = 0; j < nkp; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(srow + j));
        const float mx = hmax256(vmax);
        if (mx == -INFINITY) { /* nothing kept yet: avoid -inf - -inf */
            for (int64_t j = 0; j < nkp; j += 8) _mm256_storeu_ps(srow + j, _mm256_setzero_ps());
            alpha[r] = 1.0f;
            continue;
        }
        const __m256 vm = _mm256_set1_ps(mx);
        __m256 vsum = _mm256_setzero_ps();
        for (int64_t j = 0; j < nkp; j += 8) {
            const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(srow + j), vm));
            _mm256_storeu_ps(srow + j, e);
            vsum = _mm256_add_ps(vsum, e);
        }
        const float a = m[r] == mx ? 1.0f : expf(m[r] - mx);
        alpha[r] = a;
        l[r] = l[r] * a + hsum256(vsum);
        m[r] = mx;
    }
}

ALWAYS_INLINE void pv_block(const float *p, int64_t ldp, const int nr, int64_t nk, const float *v,
                            int64_t ldv, const float *alpha, float *o, int64_t ldo) {
    __m256 acc[4][2];
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
            const __m256 b = _mm256_broadcast_ss(p + r * ldp + j);
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

static void pv(const float *p, int64_t ldp, int64_t rows, int64_t nk, const float *v, int64_t ldv,
               int64_t dimp, const float *alpha, float *o, int64_t ldo) {
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4)
        for (int64_t c = 0; c < dimp; c += 16) pv_block(p + r * ldp, ldp, 4, nk, v + c, ldv, alpha + r, o + r * ldo + c, ldo);
    for (; r < rows; r++)
        for (int64_t c = 0; c < dimp; c += 16) pv_block(p + r * ldp, ldp, 1, nk, v + c, ldv, alpha + r, o + r * ldo + c, ldo);
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
    .qk_packed = qk_packed, .qk_rows = qk_rows, .softmax = softmax, .pv = pv,
    .load_scaled = load_scaled};
