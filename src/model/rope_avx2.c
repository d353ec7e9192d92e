/* AVX2 + FMA RoPE rotation: the same arithmetic as fi_llama_rope_apply (llama.c), 4 pairs per
 * step, so both produce identical bytes: x0' = fma(x0, c, -(x1 * s)), x1' = fma(x0, s, x1 * c). */
#include <immintrin.h>
#include <math.h>

#include "model/llama.h"

void fi_llama_rope_apply_avx2(float *x, int64_t rope_dim, const float *cos_t, const float *sin_t) {
    const int64_t half = rope_dim / 2;
    int64_t i = 0;
    for (; i + 4 <= half; i += 4) {
        const __m128 c4 = _mm_loadu_ps(cos_t + i), s4 = _mm_loadu_ps(sin_t + i);
        /* (c0, c0, c1, c1, c2, c2, c3, c3): each angle for both elements of its pair */
        const __m256 c = _mm256_set_m128(_mm_unpackhi_ps(c4, c4), _mm_unpacklo_ps(c4, c4));
        const __m256 s = _mm256_set_m128(_mm_unpackhi_ps(s4, s4), _mm_unpacklo_ps(s4, s4));
        const __m256 a = _mm256_blend_ps(c, s, 0xaa);                                     /* c, s, ... */
        const __m256 b = _mm256_blend_ps(_mm256_xor_ps(s, _mm256_set1_ps(-0.0f)), c, 0xaa); /* -s, c, ... */
        const __m256 v = _mm256_loadu_ps(x + 2 * i);
        const __m256 r = _mm256_fmadd_ps(_mm256_moveldup_ps(v), a, _mm256_mul_ps(_mm256_movehdup_ps(v), b));
        _mm256_storeu_ps(x + 2 * i, r);
    }
    for (; i < half; i++) {
        const float x0 = x[2 * i], x1 = x[2 * i + 1];
        x[2 * i] = fmaf(x0, cos_t[i], -(x1 * sin_t[i]));
        x[2 * i + 1] = fmaf(x0, sin_t[i], x1 * cos_t[i]);
    }
}
