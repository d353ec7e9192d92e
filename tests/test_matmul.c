/* Matmul against a double-precision reference computed on the DEQUANTIZED
 * weights (fi_quant_dequantize_row, checked independently in test_quant) and
 * the ORIGINAL f32 activations, for every weight type x every SIMD path the
 * machine has (FI_SIMD) x n_tokens {1, 3, 17, 64} x rows {1, 15, 577} x cols
 * {32, 576, 1536}.
 *
 * Tolerance, per output y[t, r]:
 *   quantized weights: activations are rounded to int8 blocks with step
 *     d = amax/127 per (token, block), so |x - d q| <= d/2 and
 *     |error| <= sum_c |W[r,c]| * d(t, c) / 2            (activation rounding)
 *   every type, f32 arithmetic: |error| <= g * sum_c |W[r,c] x[t,c]| (+ the same
 *     on the quantized terms), g = 2 (cols/8 + 64) 2^-24, a bound for sums of
 *     cols/8 terms per SIMD lane followed by a short reduction tree and one
 *     scale product per block.
 * A second, tight check compares with the double reference on the activations
 * as rounded (d*q from fi_quant_act_quantize) with only the f32 bound g above,
 * so an error of one quantization unit in a block is caught.
 * Also: row slices equal the full call bit for bit, thread count does not
 * change a bit, y_stride padding is never written, packed rows dequantize to
 * the file's rows, and bad shapes/types are refused with a message. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/cpu.h"
#include "core/dtype.h"
#include "model/matmul.h"
#include "test_support.h"

static const uint32_t k_types[] = {FI_GGML_F32, FI_GGML_F16, FI_GGML_BF16, FI_GGML_Q4_0, FI_GGML_Q4_1, FI_GGML_Q8_0};
#define N_TYPES (sizeof k_types / sizeof k_types[0])
static const char *k_levels[] = {"scalar", "avx2", "avx512"};

static bool is_quant(uint32_t t) { return t == FI_GGML_Q4_0 || t == FI_GGML_Q4_1 || t == FI_GGML_Q8_0; }

/* Random weights in the file layout of `type`: realistic scales (f16 d in
 * [0.002, 0.05], m in [-0.2, 0.2]) and uniformly random quants. */
static uint8_t *random_weights(fi_test_rng *rng, uint32_t type, int64_t rows, int64_t cols) {
    size_t row_bytes = fi_ggml_row_size(type, cols), bytes = row_bytes * (size_t)rows;
    uint8_t *data = malloc(bytes);
    for (size_t k = 0; k < bytes; k++) data[k] = (uint8_t)fi_test_rng_int(rng, 256);
    if (is_quant(type)) {
        size_t blk = fi_ggml_block_bytes(type);
        for (size_t off = 0; off < bytes; off += blk) {
            uint16_t d = fi_f32_to_f16((float)fi_test_rng_uniform(rng, 0.002, 0.05));
            memcpy(data + off, &d, 2);
            if (type == FI_GGML_Q4_1) {
                uint16_t m = fi_f32_to_f16((float)fi_test_rng_uniform(rng, -0.2, 0.2));
                memcpy(data + off + 2, &m, 2);
            }
        }
    } else {
        for (int64_t i = 0; i < rows * cols; i++) {
            float v = (float)(0.1 * fi_test_rng_normal(rng));
            if (type == FI_GGML_F32) memcpy(data + 4 * i, &v, 4);
            else {
                uint16_t h = type == FI_GGML_F16 ? fi_f32_to_f16(v) : fi_f32_to_bf16(v);
                memcpy(data + 2 * i, &h, 2);
            }
        }
    }
    return data;
}

typedef struct ref_result {
    double *y;    /* [n_tokens, rows] */
    double *tol;  /* [n_tokens, rows] */
    double *yq;   /* on the int8-rounded activations d*q (quantized types), else = y */
    double *tolq; /* f32 arithmetic only */
} ref_result;

static ref_result reference(uint32_t type, const uint8_t *data, int64_t rows, int64_t cols, const float *x,
                            int64_t n_tokens) {
    size_t n_out = (size_t)(n_tokens * rows);
    ref_result r = {calloc(n_out, sizeof(double)), calloc(n_out, sizeof(double)), calloc(n_out, sizeof(double)),
                    calloc(n_out, sizeof(double))};
    /* The activations as the kernels see them (fi_quant_act_quantize is checked in test_quant). */
    double *xq = malloc((size_t)(n_tokens * cols) * sizeof(double));
    /* Q4_1's offset term m * s uses s = f16(d * sum) (ggml's Q8_1 block), not d16 * sum: the
     * difference per (token, block), times the block's m, is added to the tight reference. */
    double *q41_off = calloc((size_t)(n_tokens * (cols / 32 + 1)), sizeof(double));
    for (int64_t t = 0; t < n_tokens; t++) {
        if (!is_quant(type)) {
            for (int64_t c = 0; c < cols; c++) xq[t * cols + c] = x[t * cols + c];
            continue;
        }
        void *buf = aligned_alloc(64, fi_quant_act_row_bytes(cols));
        fi_quant_act_row row = fi_quant_act_row_view(buf, cols);
        fi_quant_act_quantize(x + t * cols, cols, row);
        for (int64_t c = 0; c < cols; c++) xq[t * cols + c] = (double)row.d[c / 32] * row.q[c];
        for (int64_t b = 0; b < cols / 32; b++)
            q41_off[t * (cols / 32) + b] = (double)row.s[b] - (double)row.d[b] * row.sum[b];
        free(buf);
    }
    float *wrow = malloc((size_t)cols * sizeof(float));
    double *step = calloc((size_t)(n_tokens * cols), sizeof(double)); /* d(t, c); 0 for float types */
    for (int64_t t = 0; t < n_tokens; t++)
        for (int64_t b = 0; b < cols / 32; b++) {
            double amax = 0;
            for (int j = 0; j < 32; j++) amax = fmax(amax, fabs(x[t * cols + b * 32 + j]));
            for (int j = 0; j < 32; j++) step[t * cols + b * 32 + j] = is_quant(type) ? amax / 127.0 : 0.0;
        }
    const double g = 2.0 * ((double)cols / 8 + 64) * ldexp(1.0, -24);
    for (int64_t rr = 0; rr < rows; rr++) {
        assert_int_equal(fi_quant_dequantize_row(type, data + (size_t)rr * fi_ggml_row_size(type, cols), wrow, cols, NULL),
                         FI_OK);
        for (int64_t t = 0; t < n_tokens; t++) {
            double s = 0, mag = 0, qerr = 0, sq = 0, magq = 0;
            for (int64_t c = 0; c < cols; c++) {
                double wxq = (double)wrow[c] * xq[t * cols + c];
                sq += wxq;
                magq += fabs(wxq);
                double wx = (double)wrow[c] * x[t * cols + c];
                s += wx;
                mag += fabs(wx);
                qerr += fabs((double)wrow[c]) * step[t * cols + c] * 0.5;
            }
            r.y[t * rows + rr] = s;
            r.tol[t * rows + rr] = qerr * (1 + 1e-5) + g * (mag + qerr) + 1e-30;
            if (type == FI_GGML_Q4_1)
                for (int64_t b = 0; b < cols / 32; b++) {
                    uint16_t mh;
                    memcpy(&mh, data + (size_t)rr * fi_ggml_row_size(type, cols) + (size_t)b * 20 + 2, 2);
                    sq += (double)fi_f16_to_f32(mh) * q41_off[t * (cols / 32) + b];
                }
            r.yq[t * rows + rr] = sq;
            r.tolq[t * rows + rr] = g * magq + 1e-30;
        }
    }
    free(step);
    free(wrow);
    free(xq);
    free(q41_off);
    return r;
}

static fi_matmul_weight *make_weight(uint32_t type, const uint8_t *data, int64_t rows, int64_t cols) {
    fi_matmul_weight *w = NULL;
    fi_error err = {0};
    if (fi_matmul_weight_create(type, data, rows, cols, &w, &err) != FI_OK) fail_msg("create: %s", err.msg);
    return w;
}

static float *run_rows(const fi_matmul_weight *w, const float *x, int64_t n_tokens, int64_t y_stride,
                       const int64_t *splits, int n_splits) {
    int64_t rows = fi_matmul_weight_rows(w);
    void *act = aligned_alloc(64, (fi_matmul_act_size(w, n_tokens) + 63) & ~(size_t)63);
    /* quantize in two token ranges, like two threads would */
    fi_matmul_quantize_act(w, x, n_tokens, act, 0, n_tokens / 2);
    fi_matmul_quantize_act(w, x, n_tokens, act, n_tokens / 2, n_tokens);
    float *y = malloc((size_t)(n_tokens * y_stride) * sizeof(float));
    for (int64_t i = 0; i < n_tokens * y_stride; i++) y[i] = -12345.0f; /* canary */
    int64_t begin = 0;
    for (int s = 0; s <= n_splits; s++) {
        int64_t end = s < n_splits ? splits[s] : rows;
        fi_matmul_rows(w, act, n_tokens, y, y_stride, begin, end);
        begin = end;
    }
    free(act);
    return y;
}

static void check_case(fi_test_rng *rng, uint32_t type, int64_t rows, int64_t cols, int64_t n_tokens,
                       const char *const *levels, int n_levels) {
    uint8_t *data = random_weights(rng, type, rows, cols);
    float *x = malloc((size_t)(n_tokens * cols) * sizeof(float));
    for (int64_t t = 0; t < n_tokens; t++) {
        double scale = pow(10.0, fi_test_rng_uniform(rng, -2, 1)); /* tokens of different magnitude */
        for (int64_t c = 0; c < cols; c++) x[t * cols + c] = (float)(scale * fi_test_rng_normal(rng));
    }
    ref_result ref = reference(type, data, rows, cols, x, n_tokens);
    int64_t y_stride = rows + 3;
    for (int li = 0; li < n_levels; li++) {
        setenv("FI_SIMD", levels[li], 1); /* a weight takes its SIMD path at creation */
        fi_matmul_weight *w = make_weight(type, data, rows, cols);
        float *y = run_rows(w, x, n_tokens, y_stride, NULL, 0);
        for (int64_t t = 0; t < n_tokens; t++) {
            for (int64_t r = 0; r < rows; r++) {
                double got = y[t * y_stride + r], want = ref.y[t * rows + r], tol = ref.tol[t * rows + r];
                if (!(fabs(got - want) <= tol))
                    fail_msg("%s %s rows=%lld cols=%lld n_tokens=%lld: y[%lld,%lld] = %.9g, reference %.9g, "
                             "|diff| %.3g > tol %.3g",
                             fi_ggml_type_name(type), levels[li], (long long)rows, (long long)cols, (long long)n_tokens,
                             (long long)t, (long long)r, got, want, fabs(got - want), tol);
                want = ref.yq[t * rows + r];
                tol = ref.tolq[t * rows + r];
                if (!(fabs(got - want) <= tol))
                    fail_msg("%s %s rows=%lld cols=%lld n_tokens=%lld: y[%lld,%lld] = %.9g, reference on the int8 "
                             "activations %.9g, |diff| %.3g > tol %.3g",
                             fi_ggml_type_name(type), levels[li], (long long)rows, (long long)cols, (long long)n_tokens,
                             (long long)t, (long long)r, got, want, fabs(got - want), tol);
            }
            for (int64_t r = rows; r < y_stride; r++) assert_true(y[t * y_stride + r] == -12345.0f);
        }
        /* Slices, cut inside interleaved groups, must reproduce the full call bit for bit. */
        int64_t splits[3] = {rows / 3, rows / 3 + (rows > 10 ? 5 : 0), rows - rows / 4};
        if (splits[1] > splits[2]) splits[1] = splits[2];
        float *ys = run_rows(w, x, n_tokens, y_stride, splits, 3);
        if (memcmp(y, ys, (size_t)(n_tokens * y_stride) * sizeof(float)) != 0)
            fail_msg("%s %s rows=%lld cols=%lld n=%lld: sliced call differs from the full call", fi_ggml_type_name(type),
                     levels[li], (long long)rows, (long long)cols, (long long)n_tokens);
        free(ys);
        free(y);
        fi_matmul_weight_free(w);
    }
    unsetenv("FI_SIMD");
    free(ref.y);
    free(ref.tol);
    free(ref.yq);
    free(ref.tolq);
    free(x);
    free(data);
}

/* The SIMD levels this machine really runs (FI_SIMD=avx512 on an AVX2 machine is AVX2). */
static int machine_levels(const char **out) {
    int n = 0;
    fi_simd_level seen[3];
    for (int i = 0; i < 3; i++) {
        setenv("FI_SIMD", k_levels[i], 1);
        fi_simd_level l = fi_cpu_simd_level();
        bool dup = false;
        for (int k = 0; k < n; k++) dup |= seen[k] == l;
        if (!dup) {
            seen[n] = l;
            out[n++] = k_levels[i];
        }
    }
    unsetenv("FI_SIMD");
    printf("SIMD paths tested:");
    for (int k = 0; k < n; k++) printf(" %s", out[k]);
    printf("\n");
    return n;
}

static void test_matmul_vs_reference(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("matmul_vs_reference"));
    const char *levels[3];
    int n_levels = machine_levels(levels);
    const int64_t row_set[] = {1, 15, 577}, col_set[] = {32, 576, 1536}, tok_set[] = {1, 3, 17, 64};
    for (size_t ti = 0; ti < N_TYPES; ti++)
        for (int ri = 0; ri < 3; ri++)
            for (int ci = 0; ci < 3; ci++)
                for (int ki = 0; ki < 4; ki++) {
#if defined(__SANITIZE_ADDRESS__)
                    /* Unoptimised sanitizer builds check memory safety on the smaller
                     * shapes; the release run covers the whole matrix. */
                    if (row_set[ri] * col_set[ci] * tok_set[ki] > 577 * 576 * 3) continue;
#endif
                    check_case(&rng, k_types[ti], row_set[ri], col_set[ci], tok_set[ki], levels, n_levels);
                }
}

static void test_odd_float_cols(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("odd_float_cols"));
    const char *levels[3];
    int n_levels = machine_levels(levels);
    const int64_t cols[] = {1, 7, 9, 45, 100};
    for (int ti = 0; ti < 3; ti++)
        for (int ci = 0; ci < 5; ci++) check_case(&rng, k_types[ti], 13, cols[ci], 5, levels, n_levels);
}

static void test_thread_count_invariance(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("thread_count_invariance"));
    const char *levels[3];
    int n_levels = machine_levels(levels);
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        int64_t rows = 203, cols = 576, n = 9;
        uint8_t *data = random_weights(&rng, k_types[ti], rows, cols);
        float *x = malloc((size_t)(n * cols) * sizeof(float));
        for (int64_t i = 0; i < n * cols; i++) x[i] = (float)fi_test_rng_normal(&rng);
        float *y1 = malloc((size_t)(n * rows) * sizeof(float)), *y2 = malloc((size_t)(n * rows) * sizeof(float));
        for (int li = 0; li < n_levels; li++) {
            setenv("FI_SIMD", levels[li], 1);
            fi_matmul_weight *w = make_weight(k_types[ti], data, rows, cols);
            fi_error err = {0};
            assert_int_equal(fi_matmul(w, x, n, y1, 1, &err), FI_OK);
            assert_int_equal(fi_matmul(w, x, n, y2, 2, &err), FI_OK);
            if (memcmp(y1, y2, (size_t)(n * rows) * sizeof(float)) != 0)
                fail_msg("%s %s: 1 and 2 threads differ", fi_ggml_type_name(k_types[ti]), levels[li]);
            assert_int_equal(fi_matmul(w, x, n, y2, 3, &err), FI_OK);
            assert_memory_equal(y1, y2, (size_t)(n * rows) * sizeof(float));
            /* A token's result does not depend on the batch it came in. */
            for (int64_t t = 0; t < n; t++) {
                float one[203];
                assert_int_equal(fi_matmul(w, x + t * cols, 1, one, 2, &err), FI_OK);
                if (memcmp(one, y1 + t * rows, sizeof one) != 0)
                    fail_msg("%s %s: token %lld alone differs from in a batch", fi_ggml_type_name(k_types[ti]),
                             levels[li], (long long)t);
            }
            fi_matmul_weight_free(w);
        }
        unsetenv("FI_SIMD");
        free(y1);
        free(y2);
        free(x);
        free(data);
    }
}

static void test_packed_rows_dequantize(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("packed_rows_dequantize"));
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        int64_t rows = 19, cols = 96;
        uint8_t *data = random_weights(&rng, k_types[ti], rows, cols);
        fi_matmul_weight *w = make_weight(k_types[ti], data, rows, cols);
        assert_int_equal(fi_matmul_weight_rows(w), rows);
        assert_int_equal(fi_matmul_weight_cols(w), cols);
        assert_int_equal(fi_matmul_weight_type(w), k_types[ti]);
        assert_int_equal(fi_matmul_weight_stream_bytes(w), rows * fi_ggml_row_size(k_types[ti], cols));
        float a[96], b[96];
        for (int64_t r = 0; r < rows; r++) {
            fi_matmul_weight_row(w, r, a);
            fi_quant_dequantize_row(k_types[ti], data + r * fi_ggml_row_size(k_types[ti], cols), b, cols, NULL);
            assert_memory_equal(a, b, sizeof a);
        }
        fi_matmul_weight_free(w);
        free(data);
    }
}

/* A weight keeps the SIMD path of its creation: FI_SIMD at call time changes nothing. */
static void test_simd_level_fixed_at_creation(void **state) {
    (void)state;
    const char *levels[3];
    if (machine_levels(levels) < 2) {
        printf("only the scalar path on this machine: nothing to compare\n");
        return;
    }
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("simd_level_fixed_at_creation"));
    int64_t rows = 16, cols = 576;
    uint8_t *data = random_weights(&rng, FI_GGML_F32, rows, cols);
    float *x = malloc((size_t)cols * sizeof(float)), y[4][16];
    for (int64_t c = 0; c < cols; c++) x[c] = (float)fi_test_rng_normal(&rng);
    setenv("FI_SIMD", "scalar", 1);
    fi_matmul_weight *ws = make_weight(FI_GGML_F32, data, rows, cols);
    unsetenv("FI_SIMD");
    fi_matmul_weight *wv = make_weight(FI_GGML_F32, data, rows, cols);
    fi_error err = {0};
    assert_int_equal(fi_matmul(ws, x, 1, y[0], 1, &err), FI_OK);
    assert_int_equal(fi_matmul(wv, x, 1, y[1], 1, &err), FI_OK);
    setenv("FI_SIMD", "scalar", 1);
    assert_int_equal(fi_matmul(ws, x, 1, y[2], 1, &err), FI_OK);
    assert_int_equal(fi_matmul(wv, x, 1, y[3], 1, &err), FI_OK);
    unsetenv("FI_SIMD");
    assert_memory_equal(y[0], y[2], sizeof y[0]);
    assert_memory_equal(y[1], y[3], sizeof y[1]);
    /* The two paths round differently (FMA, lane order), so a weight that followed
     * the environment instead would have been caught above. */
    assert_true(memcmp(y[0], y[1], sizeof y[0]) != 0);
    fi_matmul_weight_free(ws);
    fi_matmul_weight_free(wv);
    free(x);
    free(data);
}

/* Activations prepared for one weight drive another of a shareable type to the same bits. */
static void test_act_shareable(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("act_shareable"));
    int64_t rows = 21, cols = 64, n = 5;
    float x[5 * 64], y1[5 * 21], y2[5 * 21];
    for (int i = 0; i < n * cols; i++) x[i] = (float)fi_test_rng_normal(&rng);
    fi_matmul_weight *w[N_TYPES];
    uint8_t *data[N_TYPES];
    for (size_t i = 0; i < N_TYPES; i++) {
        data[i] = random_weights(&rng, k_types[i], rows, cols);
        w[i] = make_weight(k_types[i], data[i], rows, cols);
    }
    void *own = aligned_alloc(64, 64 * 1024), *other = aligned_alloc(64, 64 * 1024);
    for (size_t a = 0; a < N_TYPES; a++)
        for (size_t b = 0; b < N_TYPES; b++) {
            bool expect = is_quant(k_types[a]) == is_quant(k_types[b]);
            assert_int_equal(fi_matmul_act_shareable(w[a], w[b]), expect);
            if (!expect) continue;
            fi_matmul_quantize_act(w[b], x, n, own, 0, n);
            fi_matmul_quantize_act(w[a], x, n, other, 0, n);
            fi_matmul_rows(w[b], own, n, y1, rows, 0, rows);
            fi_matmul_rows(w[b], other, n, y2, rows, 0, rows);
            assert_memory_equal(y1, y2, sizeof y1);
        }
    fi_matmul_weight *wide = make_weight(FI_GGML_Q4_0, data[3], rows / 2, 2 * cols);
    assert_false(fi_matmul_act_shareable(w[3], wide)); /* different cols */
    fi_matmul_weight_free(wide);
    for (size_t i = 0; i < N_TYPES; i++) {
        fi_matmul_weight_free(w[i]);
        free(data[i]);
    }
    free(own);
    free(other);
}

static void test_bad_input(void **state) {
    (void)state;
    uint8_t data[1024] = {0};
    fi_matmul_weight *w = (fi_matmul_weight *)1;
    fi_error err = {0};
    assert_int_equal(fi_matmul_weight_create(FI_GGML_Q8_1, data, 2, 32, &w, &err), FI_ERR_UNSUPPORTED);
    assert_null(w);
    assert_non_null(strstr(err.msg, "Q8_1"));
    assert_non_null(strstr(err.msg, "Q4_0")); /* lists the supported types */
    assert_int_equal(fi_matmul_weight_create(12, data, 2, 256, &w, &err), FI_ERR_UNSUPPORTED);
    assert_int_equal(fi_matmul_weight_create(FI_GGML_Q4_0, data, 2, 48, &w, &err), FI_ERR_INVALID);
    assert_non_null(strstr(err.msg, "48"));
    assert_int_equal(fi_matmul_weight_create(FI_GGML_F32, data, 0, 32, &w, &err), FI_ERR_INVALID);
    assert_int_equal(fi_matmul_weight_create(FI_GGML_F32, data, 2, -1, &w, &err), FI_ERR_INVALID);
    assert_int_equal(fi_matmul_weight_create(FI_GGML_F32, NULL, 2, 32, &w, &err), FI_ERR_INVALID);
    assert_int_equal(fi_matmul_weight_create(FI_GGML_Q8_0, data, (int64_t)1 << 40, (int64_t)1 << 20, &w, &err),
                     FI_ERR_INVALID); /* ~2^60 bytes: refused, never allocated */
    assert_non_null(strstr(err.msg, "too large"));
    fi_matmul_weight_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_vs_reference),
        cmocka_unit_test(test_odd_float_cols),
        cmocka_unit_test(test_thread_count_invariance),
        cmocka_unit_test(test_packed_rows_dequantize),
        cmocka_unit_test(test_simd_level_fixed_at_creation),
        cmocka_unit_test(test_act_shareable),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
