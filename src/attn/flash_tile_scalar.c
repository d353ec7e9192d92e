/* Portable C microkernels (and the run-time choice between the SIMD variants).
 * They define the semantics the AVX2 / AVX-512 variants follow. */
#include <math.h>

#include "attn/flash_tile.h"
#include "core/cpu.h"
#include "core/dtype.h"

static void qk(const float *qt, int64_t ldqt, int64_t rowsp, const float *k, int64_t ldk, int64_t nk,
               int64_t dimp, float *st, int64_t lds) {
    for (int64_t j = 0; j < nk; j++) {
        float *srow = st + j * lds;
        for (int64_t r = 0; r < rowsp; r++) srow[r] = 0.0f;
        for (int64_t c = 0; c < dimp; c++) {
            const float kc = k[j * ldk + c];
            const float *qrow = qt + c * ldqt;
            for (int64_t r = 0; r < rowsp; r++) srow[r] += kc * qrow[r];
        }
    }
}

static void qk_rows(const float *q, int64_t ldq, int64_t rows, const float *k, int64_t ldk, int64_t nk,
                    int64_t dimp, float *st, int64_t lds) {
    for (int64_t j = 0; j < nk; j++)
        for (int64_t r = 0; r < rows; r++) {
            float acc = 0.0f;
            for (int64_t c = 0; c < dimp; c++) acc += q[r * ldq + c] * k[j * ldk + c];
            st[j * lds + r] = acc;
        }
}

static void softmax(float *st, int64_t lds, int64_t rowsp, int64_t nk, float *m, float *l, float *alpha) {
    for (int64_t r = 0; r < rowsp; r++) {
        float mx = m[r];
        for (int64_t j = 0; j < nk; j++) mx = st[j * lds + r] > mx ? st[j * lds + r] : mx;
        const float ms = mx == -INFINITY ? 0.0f : mx; /* no key kept yet: exp(-inf - 0) = 0 */
        float sum = 0.0f;
        for (int64_t j = 0; j < nk; j++) {
            const float e = expf(st[j * lds + r] - ms);
            st[j * lds + r] = e;
            sum += e;
        }
        const float a = expf(m[r] - ms); /* m[r] <= mx: a in [0, 1], exactly 1 if unchanged */
        alpha[r] = a;
        l[r] = l[r] * a + sum;
        m[r] = mx;
    }
}

static void pv(const float *pt, int64_t ldp, int64_t rows, int64_t nk, const float *v, int64_t ldv,
               int64_t dimp, const float *alpha, float *o, int64_t ldo) {
    for (int64_t r = 0; r < rows; r++) {
        float *orow = o + r * ldo;
        const float a = alpha[r];
        for (int64_t c = 0; c < dimp; c++) orow[c] *= a;
        for (int64_t j = 0; j < nk; j++) {
            const float pj = pt[j * ldp + r];
            const float *vrow = v + j * ldv;
            for (int64_t c = 0; c < dimp; c++) orow[c] += pj * vrow[c];
        }
    }
}

static void load_scaled(const void *src, fi_dtype t, float scale, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = scale * fi_load_f32(src, t, i);
}

const fi_flash_tile_ops fi_flash_tile_scalar = {
    .qk = qk, .qk_rows = qk_rows, .softmax = softmax, .pv = pv,
    .load_scaled = load_scaled};

const fi_flash_tile_ops *fi_flash_tile_select(void) {
#if defined(__x86_64__) || defined(__i386__)
    switch (fi_cpu_simd_level()) {
    case FI_SIMD_AVX512: return &fi_flash_tile_avx512;
    case FI_SIMD_AVX2: return &fi_flash_tile_avx2;
    default: break;
    }
#endif
    return &fi_flash_tile_scalar;
}
