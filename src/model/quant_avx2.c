/* AVX2 activation quantization: the same arithmetic as the portable loop in
 * quant.c (max |x|, d = amax/127, id = 127/amax, round-half-even of x*id, NaN -> 0,
 * clamp to +-127), so both produce identical bytes. */
#include <immintrin.h>

#include "core/dtype.h"
#include "model/quant.h"

void fi_quant_act_quantize_avx2(const float *x, int64_t n, fi_quant_act_row row);

void fi_quant_act_quantize_avx2(const float *x, int64_t n, fi_quant_act_row row) {
    const __m256 sign = _mm256_set1_ps(-0.0f), hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + b * 32;
        __m256 v[4];
        __m256 m = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(xb + 8 * k);
            /* max_ps returns the second operand when one is NaN: m stays a number, like fmaxf. */
            m = _mm256_max_ps(_mm256_andnot_ps(sign, v[k]), m);
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const __m256 idv = _mm256_set1_ps(id);
        __m256i q[4], sum = _mm256_setzero_si256();
        for (int k = 0; k < 4; k++) {
            __m256 f = _mm256_round_ps(_mm256_mul_ps(v[k], idv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            f = _mm256_and_ps(f, _mm256_cmp_ps(f, f, _CMP_ORD_Q)); /* NaN -> 0 */
            f = _mm256_max_ps(_mm256_min_ps(f, hi), lo);
            q[k] = _mm256_cvtps_epi32(f);
            sum = _mm256_add_epi32(sum, q[k]);
        }
        /* packs work per 128-bit lane; the final permute restores element order. */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        p = _mm256_permutevar8x32_epi32(p, order);
        _mm256_storeu_si256((__m256i *)(row.q + b * 32), p);
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        row.d[b] = fi_f16_to_f32(fi_f32_to_f16(d));
        row.sum[b] = _mm_cvtsi128_si32(s4);
        row.s[b] = fi_f16_to_f32(fi_f32_to_f16(d * (float)row.sum[b]));
    }
}
