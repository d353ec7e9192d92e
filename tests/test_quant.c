/* GGML type table and dequantization against an independent per-element
 * formula (the f16 scale decoded here with ldexp in double, the block layout
 * re-derived from the ggml description), on random blocks including special
 * scales (zero, negative zero, subnormal, largest finite, inf, NaN); and the
 * int8 activation quantization's round-trip error bound. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/quant.h"
#include "test_support.h"

/* IEEE binary16 decoded from its definition. */
static double half_value(uint16_t h) {
    int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
    double v;
    if (exp == 0) v = ldexp((double)mant, -24);
    else if (exp == 31) v = mant ? NAN : INFINITY;
    else v = ldexp(1.0 + mant / 1024.0, exp - 15);
    return sign ? -v : v;
}

static double bf16_value(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void assert_same_float(float got, double want, const char *what, int64_t i) {
    float w = (float)want;
    if (isnan(w) && isnan(got)) return;
    if (memcmp(&got, &w, sizeof got) != 0) fail_msg("%s element %lld: got %.9g, expected %.9g", what, (long long)i, got, w);
}

static const uint16_t k_special_scales[] = {0x0000, 0x8000, 0x0001, 0x03ff, 0x7bff, 0xfbff, 0x3c00, 0x7c00, 0x7e00};

static uint16_t random_scale(fi_test_rng *r) {
    if (fi_test_rng_int(r, 4) == 0)
        return k_special_scales[fi_test_rng_int(r, sizeof k_special_scales / sizeof k_special_scales[0])];
    return (uint16_t)fi_test_rng_int(r, 65536);
}

static void test_type_table(void **state) {
    (void)state;
    assert_string_equal(fi_ggml_type_name(FI_GGML_Q4_1), "Q4_1");
    assert_string_equal(fi_ggml_type_name(FI_GGML_BF16), "BF16");
    assert_string_equal(fi_ggml_type_name(12), "unknown");
    assert_true(fi_ggml_type_supported(FI_GGML_F32) && fi_ggml_type_supported(FI_GGML_F16) &&
                fi_ggml_type_supported(FI_GGML_BF16) && fi_ggml_type_supported(FI_GGML_Q4_0) &&
                fi_ggml_type_supported(FI_GGML_Q4_1) && fi_ggml_type_supported(FI_GGML_Q8_0));
    assert_false(fi_ggml_type_supported(FI_GGML_Q8_1));
    assert_false(fi_ggml_type_supported(12)); /* Q4_K: a later issue */
    assert_false(fi_ggml_type_supported(1000));
    /* Block bytes from the layouts: f16 d (+ f16 m) + packed quants. */
    assert_int_equal(fi_ggml_row_size(FI_GGML_Q4_0, 576), 18 * 18);
    assert_int_equal(fi_ggml_row_size(FI_GGML_Q4_1, 576), 18 * 20);
    assert_int_equal(fi_ggml_row_size(FI_GGML_Q8_0, 1536), 48 * 34);
    assert_int_equal(fi_ggml_row_size(FI_GGML_Q8_1, 64), 2 * 36);
    assert_int_equal(fi_ggml_row_size(FI_GGML_F16, 7), 14);
    assert_int_equal(fi_ggml_row_size(FI_GGML_BF16, 3), 6);
    assert_int_equal(fi_ggml_row_size(FI_GGML_F32, 5), 20);
    assert_int_equal(fi_ggml_row_size(FI_GGML_Q4_0, 33), 0);
    assert_int_equal(fi_ggml_row_size(FI_GGML_Q4_0, -32), 0);
    assert_int_equal(fi_ggml_row_size(77, 32), 0);
    assert_int_equal(fi_ggml_block_size(FI_GGML_Q8_0), 32);
    assert_int_equal(fi_ggml_block_size(FI_GGML_F16), 1);
}

/* Expected value of element i of a ggml row, straight from the documented layout. */
static double expected_element(uint32_t type, const uint8_t *row, int64_t i) {
    int64_t b = i / 32, j = i % 32;
    switch (type) {
    case FI_GGML_F32: {
        float f;
        memcpy(&f, row + 4 * i, 4);
        return f;
    }
    case FI_GGML_F16: return half_value((uint16_t)(row[2 * i] | row[2 * i + 1] << 8));
    case FI_GGML_BF16: return bf16_value((uint16_t)(row[2 * i] | row[2 * i + 1] << 8));
    case FI_GGML_Q4_0: {
        const uint8_t *blk = row + 18 * b;
        int q = j < 16 ? (blk[2 + j] & 15) : (blk[2 + j - 16] >> 4);
        return half_value((uint16_t)(blk[0] | blk[1] << 8)) * (q - 8);
    }
    case FI_GGML_Q4_1: {
        const uint8_t *blk = row + 20 * b;
        int q = j < 16 ? (blk[4 + j] & 15) : (blk[4 + j - 16] >> 4);
        /* q*d + m is exact in double for f16 d, m; one rounding to f32 follows. */
        return half_value((uint16_t)(blk[0] | blk[1] << 8)) * q + half_value((uint16_t)(blk[2] | blk[3] << 8));
    }
    case FI_GGML_Q8_0: {
        const uint8_t *blk = row + 34 * b;
        return half_value((uint16_t)(blk[0] | blk[1] << 8)) * (int8_t)blk[2 + j];
    }
    }
    return NAN;
}

static void test_dequantize_random(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("dequantize_random"));
    const uint32_t types[] = {FI_GGML_F32, FI_GGML_F16, FI_GGML_BF16, FI_GGML_Q4_0, FI_GGML_Q4_1, FI_GGML_Q8_0};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        uint32_t type = types[ti];
        for (int iter = 0; iter < 50; iter++) {
            int64_t n = 32 * (1 + fi_test_rng_int(&rng, 20));
            size_t bytes = fi_ggml_row_size(type, n);
            uint8_t *row = malloc(bytes);
            float *out = malloc((size_t)n * sizeof(float));
            for (size_t k = 0; k < bytes; k++) row[k] = (uint8_t)fi_test_rng_int(&rng, 256);
            /* Scales: random bit patterns mixed with the special ones. */
            size_t blk = fi_ggml_block_bytes(type);
            if (fi_ggml_block_size(type) == 32)
                for (int64_t b = 0; b < n / 32; b++) {
                    uint16_t d = random_scale(&rng), m = random_scale(&rng);
                    memcpy(row + b * blk, &d, 2);
                    if (type == FI_GGML_Q4_1) memcpy(row + b * blk + 2, &m, 2);
                }
            fi_error err = {0};
            assert_int_equal(fi_quant_dequantize_row(type, row, out, n, &err), FI_OK);
            for (int64_t i = 0; i < n; i++)
                assert_same_float(out[i], expected_element(type, row, i), fi_ggml_type_name(type), i);
            free(row);
            free(out);
        }
    }
}

static void test_dequantize_hand_block(void **state) {
    (void)state;
    /* Q4_0 block, d = 0.5 (0x3800): byte j = 0x9 low, 0x2 high -> elems j: (9-8)/2, j+16: (2-8)/2. */
    uint8_t blk[18] = {0x00, 0x38};
    for (int j = 0; j < 16; j++) blk[2 + j] = 0x29;
    float out[32];
    assert_int_equal(fi_quant_dequantize_row(FI_GGML_Q4_0, blk, out, 32, NULL), FI_OK);
    for (int j = 0; j < 16; j++) {
        assert_true(out[j] == 0.5f);
        assert_true(out[j + 16] == -3.0f);
    }
    /* Q4_1: d = 2 (0x4000), m = -1 (0xbc00), byte 0xf0: low 0 -> -1, high 15 -> 29. */
    uint8_t b1[20] = {0x00, 0x40, 0x00, 0xbc};
    for (int j = 0; j < 16; j++) b1[4 + j] = 0xf0;
    assert_int_equal(fi_quant_dequantize_row(FI_GGML_Q4_1, b1, out, 32, NULL), FI_OK);
    assert_true(out[0] == -1.0f && out[16] == 29.0f);
}

static void test_dequantize_errors(void **state) {
    (void)state;
    uint8_t buf[64] = {0};
    float out[64];
    fi_error err = {0};
    assert_int_equal(fi_quant_dequantize_row(FI_GGML_Q8_1, buf, out, 32, &err), FI_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "Q4_1")); /* the message lists what is supported */
    assert_int_equal(fi_quant_dequantize_row(14, buf, out, 32, &err), FI_ERR_UNSUPPORTED);
    assert_int_equal(fi_quant_dequantize_row(FI_GGML_Q4_0, buf, out, 31, &err), FI_ERR_INVALID);
    assert_non_null(strstr(err.msg, "31"));
}

/* Nearest f16 value of a non-negative v (ties to even), by its exponent: 11 significant bits,
 * subnormal spacing 2^-24 below 2^-14. v stays far below the f16 maximum here. */
static double ref_round_to_f16(double v) {
    if (v == 0) return 0;
    int e;
    frexp(v, &e); /* v = m * 2^e, m in [0.5, 1): the leading bit is 2^(e-1) */
    double quantum = e - 1 < -14 ? ldexp(1.0, -24) : ldexp(1.0, e - 1 - 10);
    return nearbyint(v / quantum) * quantum;
}

static void test_quantize_act_round_trip(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("quantize_act_round_trip"));
    for (int iter = 0; iter < 200; iter++) {
        int64_t nb = 1 + fi_test_rng_int(&rng, 48), n = nb * 32;
        float *x = malloc((size_t)n * sizeof(float));
        double scale = pow(10.0, fi_test_rng_uniform(&rng, -6, 4));
        for (int64_t i = 0; i < n; i++) x[i] = (float)(scale * fi_test_rng_normal(&rng));
        if (iter % 5 == 0) memset(x, 0, 32 * sizeof(float)); /* an all-zero block */
        size_t bytes = fi_quant_act_row_bytes(n);
        assert_true(bytes % 64 == 0 && bytes >= (size_t)nb * 40);
        void *buf = aligned_alloc(64, bytes);
        fi_quant_act_row row = fi_quant_act_row_view(buf, n);
        fi_quant_act_quantize(x, n, row);
        for (int64_t b = 0; b < nb; b++) {
            double amax = 0;
            int32_t sum = 0, qmax = 0;
            for (int j = 0; j < 32; j++) amax = fmax(amax, fabs(x[b * 32 + j]));
            double d = (double)((float)amax / 127.0f);
            /* The stored scale is d rounded to f16 (ggml's block layout); q uses the unrounded d. */
            double d16 = ref_round_to_f16(d);
            assert_true(row.d[b] == d16);
            /* Bound: half a step from rounding (f32 x*id adds ~1e-7 relative), plus |q| <= 127 times
             * the f16 rounding error of the scale. */
            double bound = d * 0.5 * (1 + 1e-5) + 127.0 * fabs(d - d16) + 1e-37;
            for (int j = 0; j < 32; j++) {
                int q = row.q[b * 32 + j];
                assert_true(q >= -127 && q <= 127);
                /* ggml's rounding: x * (127 / amax) in f32, half to even (not x * (1 / d)). */
                if (amax != 0) assert_int_equal(q, (int)nearbyintf(x[b * 32 + j] * (127.0f / (float)amax)));
                sum += q;
                qmax = abs(q) > qmax ? abs(q) : qmax;
                double err = fabs((double)x[b * 32 + j] - (double)row.d[b] * q);
                if (!(err <= bound))
                    fail_msg("block %lld elem %d: x=%.9g d=%.9g q=%d err=%.3g > bound %.3g", (long long)b, j,
                             x[b * 32 + j], row.d[b], q, err, bound);
            }
            assert_int_equal(row.sum[b], sum);
            /* Q8_1's offset: the f32 product of the UNROUNDED scale and the sum, rounded to f16. */
            float s32 = ((float)amax / 127.0f) * (float)sum;
            double s_want = fabs(s32) >= 65520.0 ? INFINITY : ref_round_to_f16(fabs((double)s32)); /* f16 overflow */
            assert_true(row.s[b] == (s32 < 0 ? -s_want : s_want));
            if (amax == 0) assert_true(row.d[b] == 0.0f && qmax == 0);
            else if (d >= 1e-30) assert_int_equal(qmax, 127); /* the largest element maps to +-127 */
        }
        free(buf);
        free(x);
    }
}

static void test_quantize_act_nonfinite(void **state) {
    (void)state;
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)j;
    x[3] = NAN;
    x[5] = INFINITY;
    void *buf = aligned_alloc(64, fi_quant_act_row_bytes(32));
    fi_quant_act_row row = fi_quant_act_row_view(buf, 32);
    fi_quant_act_quantize(x, 32, row); /* must not crash or trap; values are unspecified */
    for (int j = 0; j < 32; j++) assert_true(row.q[j] >= -127 && row.q[j] <= 127);
    free(buf);
}

/* Every SIMD path must produce the same bytes (so results never depend on the path's quantizer). */
static void test_quantize_act_paths_identical(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("quantize_act_paths_identical"));
    const char *levels[] = {"scalar", "avx2", "avx512"};
    const int64_t n = 32 * 40;
    float *x = malloc(n * sizeof(float));
    for (int iter = 0; iter < 50; iter++) {
        for (int64_t i = 0; i < n; i++) x[i] = (float)(pow(10.0, fi_test_rng_uniform(&rng, -8, 6)) * fi_test_rng_normal(&rng));
        for (int k = 0; k < 8; k++) x[fi_test_rng_int(&rng, n)] = (float)(fi_test_rng_int(&rng, 255) - 127); /* ties */
        x[fi_test_rng_int(&rng, n)] = NAN;
        x[fi_test_rng_int(&rng, n)] = -INFINITY;
        memset(x + 32 * fi_test_rng_int(&rng, 40), 0, 32 * sizeof(float));
        void *ref = aligned_alloc(64, fi_quant_act_row_bytes(n)), *got = aligned_alloc(64, fi_quant_act_row_bytes(n));
        memset(ref, 0, fi_quant_act_row_bytes(n));
        setenv("FI_SIMD", "scalar", 1);
        fi_quant_act_quantize(x, n, fi_quant_act_row_view(ref, n));
        for (int l = 1; l < 3; l++) {
            memset(got, 0, fi_quant_act_row_bytes(n));
            setenv("FI_SIMD", levels[l], 1);
            fi_quant_act_quantize(x, n, fi_quant_act_row_view(got, n));
            if (memcmp(ref, got, fi_quant_act_row_bytes(n)) != 0) fail_msg("%s quantizer differs from scalar", levels[l]);
        }
        unsetenv("FI_SIMD");
        free(ref);
        free(got);
    }
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_table),
        cmocka_unit_test(test_dequantize_random),
        cmocka_unit_test(test_dequantize_hand_block),
        cmocka_unit_test(test_dequantize_errors),
        cmocka_unit_test(test_quantize_act_round_trip),
        cmocka_unit_test(test_quantize_act_nonfinite),
        cmocka_unit_test(test_quantize_act_paths_identical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
