/* AVX2 + FMA SwiGLU: the same arithmetic as fi_llama_swiglu (llama.c), 8 lanes per step (the
 * exponential in two halves of 4 doubles, fi_llama_exp's steps), so both produce identical bytes. */
#include <immintrin.h>
#include <stdint.h>

#include "model/llama.h"

static inline __m128 exp4(__m128 t) {
    static const double coef[12] = FI_LLAMA_EXP_COEFS;
    const __m256d x = _mm256_min_pd(_mm256_max_pd(_mm256_cvtps_pd(t), _mm256_set1_pd(FI_LLAMA_EXP_LO)),
                                    _mm256_set1_pd(FI_LLAMA_EXP_HI));
    const __m256d n = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(FI_LLAMA_LOG2E)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = _mm256_fnmadd_pd(n, _mm256_set1_pd(FI_LLAMA_LN2_HI), x);
    r = _mm256_fnmadd_pd(n, _mm256_set1_pd(FI_LLAMA_LN2_LO), r);
    __m256d p = _mm256_set1_pd(coef[11]);
#pragma GCC unroll 11
    for (int k = 10; k >= 0; k--) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(coef[k]));
    /* 2^n: n + 1023 into the exponent field (n is within [-150, 128]) */
    const __m256i e = _mm256_slli_epi64(
        _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n)), _mm256_set1_epi64x(1023)), 52);
    return _mm256_cvtpd_ps(_mm256_mul_pd(p, _mm256_castsi256_pd(e)));
}

void fi_llama_swiglu_avx2(float *g, const float *u, int64_t n) {
    int64_t i = 0;
    const __m256 one = _mm256_set1_ps(1.0f), neg = _mm256_set1_ps(-0.0f);
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i), t = _mm256_xor_ps(x, neg);
        const __m256 e = _mm256_set_m128(exp4(_mm256_extractf128_ps(t, 1)), exp4(_mm256_castps256_ps128(t)));
        const __m256 silu = _mm256_div_ps(x, _mm256_add_ps(one, e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
    }
    if (i < n) fi_llama_swiglu(g + i, u + i, n - i);
}
