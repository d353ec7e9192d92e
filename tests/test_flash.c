/* Tiled flash attention (fi_attn_forward) against the naive double-precision
 * reference (fi_attn_reference) on random inputs, for every SIMD path the machine has
 * (FI_SIMD=scalar|avx2|avx512) and 1 or 2 threads.
 *
 * Tolerances. Inputs are identical for both sides (f16/bf16 are converted exactly),
 * so differences come only from f32 arithmetic: a D-term f32 dot product of O(1)
 * entries carries an absolute error of about D * 6e-8 * |q||k| / sqrt(D) ~ 1e-6 in the
 * logit, exp and the running sums add a few ulp, and the output is a convex average
 * of V entries (|v| < ~5). So |out - ref| <= 1e-4 + 1e-4 |ref| holds with ample
 * margin (the largest error observed is printed), and LSE (= max + log sum) within
 * 1e-4 + 1e-5 |ref|. The 1e4-logit test widens this, see there. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "flash_case.h"

#define OUT_ATOL 1e-4
#define OUT_RTOL 1e-4
#define LSE_ATOL 1e-4
#define LSE_RTOL 1e-5

static double g_worst; /* largest normalised error seen, reported at the end */

/* Runs case c on every SIMD level and thread count in `threads` and checks it. */
static void check_case_tol(const flash_case *c, fi_test_rng *rng, double out_atol, double out_rtol) {
    flash_data d;
    char desc[512];
    if (!flash_data_make(&d, c, rng)) {
        flash_describe(c, desc, sizeof desc);
        fail_msg("could not build case: %s", desc);
    }
    const char *levels[3];
    const int n_levels = flash_simd_levels(levels);
    for (int li = 0; li < n_levels; li++) {
        setenv("FI_SIMD", levels[li], 1);
        for (int64_t i = 0; i < d.out_n; i++) d.out[i] = NAN;
        for (int64_t i = 0; i < d.lse_n; i++) d.lse[i] = NAN;
        fi_error err = {0};
        flash_describe(c, desc, sizeof desc);
        if (fi_attn_forward(&d.p, &err) != FI_OK) fail_msg("forward failed (%s): %s", desc, err.msg);
        const double eo = flash_error(d.out, d.ref_out, d.out_n, out_atol, out_rtol);
        const double el = flash_error(d.lse, d.ref_lse, d.lse_n, LSE_ATOL, LSE_RTOL);
        if (eo > 1.0 || el > 1.0) {
            /* Locate the first offender for the message. */
            int64_t at = -1;
            for (int64_t i = 0; i < d.out_n && at < 0; i++)
                if (flash_error(d.out + i, d.ref_out + i, 1, out_atol, out_rtol) > 1.0) at = i;
            int64_t lat = -1;
            for (int64_t i = 0; i < d.lse_n && lat < 0; i++)
                if (flash_error(d.lse + i, d.ref_lse + i, 1, LSE_ATOL, LSE_RTOL) > 1.0) lat = i;
            fail_msg("%s: out err %.3g (first at %lld: %.8g vs %.8g), lse err %.3g (first at %lld: %.8g vs %.8g)",
                     desc, eo, (long long)at, at >= 0 ? d.out[at] : 0.0, at >= 0 ? d.ref_out[at] : 0.0, el,
                     (long long)lat, lat >= 0 ? d.lse[lat] : 0.0, lat >= 0 ? d.ref_lse[lat] : 0.0);
        }
        if (eo > g_worst) g_worst = eo;
    }
    unsetenv("FI_SIMD");
    flash_data_free(&d);
}

static void check_case(const flash_case *c, fi_test_rng *rng) { check_case_tol(c, rng, OUT_ATOL, OUT_RTOL); }

static void test_head_dims_and_tiles(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("head_dims_and_tiles"));
    const int64_t dims[] = {32, 64, 80, 96, 128, 256, 40, 7};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        /* N = 300 with tile 64 and 97 (and mixed), Lq != Lk, GQA 1 / 3 / 8. */
        const flash_case a = {.batch = 1, .hq = 3, .hkv = 1, .lq = 300, .lk = 300, .dim = dims[i],
                              .block_q = 64, .block_kv = 64, .threads = 2};
        check_case(&a, &rng);
        const flash_case b = {.batch = 2, .hq = 2, .hkv = 2, .lq = 77, .lk = 300, .dim = dims[i],
                              .block_q = 97, .block_kv = 97, .threads = 1, .mask = "causal", .q_offset = 223};
        check_case(&b, &rng);
        const flash_case c = {.batch = 1, .hq = 8, .hkv = 1, .lq = 45, .lk = 131, .dim = dims[i],
                              .block_q = 16, .block_kv = 97, .threads = 2};
        check_case(&c, &rng);
    }
    /* Default tiles, more rows than keys and odd sizes. */
    const flash_case e = {.batch = 1, .hq = 6, .hkv = 2, .lq = 300, .lk = 33, .dim = 64, .threads = 2};
    check_case(&e, &rng);
    const flash_case f = {.batch = 1, .hq = 1, .hkv = 1, .lq = 1, .lk = 1, .dim = 16, .threads = 1};
    check_case(&f, &rng);
    /* Default tiles without GQA (one head per item: the taller query tile where the SIMD
     * level has one), dense and with interval-masked PARTIAL tiles. */
    const flash_case g = {.batch = 1, .hq = 2, .hkv = 2, .lq = 300, .lk = 300, .dim = 128, .threads = 2};
    check_case(&g, &rng);
    const flash_case h = {.batch = 2, .hq = 2, .hkv = 2, .lq = 270, .lk = 330, .dim = 64, .q_offset = 60,
                          .mask = "causal & window:100", .threads = 2};
    check_case(&h, &rng);
}

static bool cb_mask(int64_t b, int64_t h, int64_t q, int64_t kv, void *ctx) {
    (void)ctx;
    return ((q * 7 + kv * 3 + b + h) % 5) != 0 && kv <= q + 20;
}

static bool cb_mask_sparse(int64_t b, int64_t h, int64_t q, int64_t kv, void *ctx) {
    (void)ctx, (void)b, (void)h;
    return (q / 50 + kv / 40) % 3 == 0 || kv == q;
}

static void test_masks(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("masks"));
    const char *masks[] = {"full", "causal", "window:17", "window:128", "prefix:100", "chunked:50",
                           "document", "generated", "causal & (document | generated)", "!causal",
                           "causal & window:64", "prefix:40 | chunked:70", "!(document & causal)",
                           "document & !generated", "!full", "window:1"};
    const int tiles[][2] = {{64, 64}, {97, 97}, {64, 97}, {32, 128}};
    /* Two of the four tile shapes per mask, rotating, so every pairing appears. */
    for (size_t i = 0; i < sizeof masks / sizeof masks[0]; i++)
        for (size_t t = i % 2; t < sizeof tiles / sizeof tiles[0]; t += 2) {
            const flash_case c = {.batch = 2, .hq = 2, .hkv = 1, .lq = 300, .lk = 300, .dim = 16,
                                  .mask = masks[i], .block_q = tiles[t][0], .block_kv = tiles[t][1],
                                  .threads = 2, .segments_per_batch = (t & 1)};
            check_case(&c, &rng);
        }
    /* Lq != Lk with a query offset (decode / append), shared and per-batch segments. */
    for (size_t i = 0; i < sizeof masks / sizeof masks[0]; i++) {
        const flash_case c = {.batch = 2, .hq = 3, .hkv = 1, .lq = 90, .lk = 300, .dim = 16, .mask = masks[i],
                              .q_offset = 210, .block_q = 64, .block_kv = 97, .threads = 2,
                              .segments_per_batch = i & 1};
        check_case(&c, &rng);
    }
    /* C callbacks, alone and combined; one reads the head (per-head tile lists). */
    const flash_case cb1 = {.batch = 2, .hq = 4, .hkv = 2, .lq = 300, .lk = 250, .dim = 32,
                            .mask_fn = cb_mask, .mask_fn_per_head = true, .block_q = 64, .block_kv = 97, .threads = 2};
    check_case(&cb1, &rng);
    const flash_case cb2 = {.batch = 1, .hq = 3, .hkv = 3, .lq = 300, .lk = 300, .dim = 64,
                            .mask = "causal", .mask_fn = cb_mask_sparse, .block_q = 64, .block_kv = 64, .threads = 2};
    check_case(&cb2, &rng);
    /* A per-head callback makes every head its own unit: default tiles then are the tall ones. */
    const flash_case cb3 = {.batch = 1, .hq = 4, .hkv = 2, .lq = 300, .lk = 260, .dim = 32,
                            .mask_fn = cb_mask, .mask_fn_per_head = true, .threads = 2};
    check_case(&cb3, &rng);
}

static float cb_score(float s, int64_t b, int64_t h, int64_t q, int64_t kv, void *ctx) {
    (void)ctx;
    return s * 0.5f + (float)((q - kv + 3 * h + b) % 7) * 0.25f;
}

static void test_score_mods_and_dtypes(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("score_mods_and_dtypes"));
    const char *mods[] = {"softcap:5", "alibi", "softcap:20,alibi"};
    for (size_t i = 0; i < 3; i++) {
        const flash_case c = {.batch = 1, .hq = 3, .hkv = 1, .lq = 300, .lk = 300, .dim = 32, .mask = "causal",
                              .score_mod = mods[i], .block_q = 97, .block_kv = 64, .threads = 2, .magnitude = 2.0};
        check_case(&c, &rng);
    }
    const flash_case cbm = {.batch = 2, .hq = 2, .hkv = 1, .lq = 100, .lk = 300, .dim = 32, .score_fn = cb_score,
                            .mask = "window:100", .q_offset = 200, .block_q = 64, .block_kv = 64, .threads = 2};
    check_case(&cbm, &rng);
    const fi_dtype types[] = {FI_DTYPE_F16, FI_DTYPE_BF16};
    for (int t = 0; t < 2; t++)
        for (int s = 0; s < 2; s++) {
            const flash_case c = {.batch = 2, .hq = 4, .hkv = 1, .lq = 200, .lk = 200, .dim = 80,
                                  .dtype = types[t], .mask = s ? "causal & (document | generated)" : NULL,
                                  .q_offset = s ? 0 : 5, .block_q = 64, .block_kv = 97, .threads = 2, .strided = s};
            check_case(&c, &rng);
        }
    /* Strided f32 views. */
    const flash_case st = {.batch = 2, .hq = 3, .hkv = 3, .lq = 130, .lk = 140, .dim = 96, .mask = "causal",
                           .q_offset = 10, .block_q = 64, .block_kv = 64, .threads = 2, .strided = true};
    check_case(&st, &rng);
    /* Explicit scale. */
    flash_data d;
    const flash_case sc = {.batch = 1, .hq = 2, .hkv = 1, .lq = 70, .lk = 90, .dim = 64, .threads = 1};
    assert_true(flash_data_make(&d, &sc, &rng));
    d.p.scale = 0.37f;
    fi_attn_params rp = d.p;
    rp.out = d.ref_out, rp.lse = d.ref_lse;
    assert_int_equal(fi_attn_reference(&rp, NULL), FI_OK);
    assert_int_equal(fi_attn_forward(&d.p, NULL), FI_OK);
    assert_true(flash_error(d.out, d.ref_out, d.out_n, OUT_ATOL, OUT_RTOL) <= 1.0);
    assert_true(flash_error(d.lse, d.ref_lse, d.lse_n, LSE_ATOL, LSE_RTOL) <= 1.0);
    flash_data_free(&d);
}

/* Logits of magnitude ~1e4: the softmax is then nearly one-hot. An f32 logit of size S
 * carries an absolute error up to ~S * D * 6e-8, about 0.04 for S = 1e4 and D = 64 and
 * 0.15 at 4 sigma. That moves a near-tie's weights by as much, and V entries are
 * ~N(0,1): |out - ref| <= 5e-2. LSE follows the largest kept logit, whose size need not
 * be near the LSE value (a row may keep only a few small logits), so its bound is
 * absolute: 0.2. The test is mainly about no overflow and no NaN. */
static void test_large_logits(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("large_logits"));
    const char *masks[] = {NULL, "causal", "document"};
    for (int i = 0; i < 3; i++) {
        const flash_case c = {.batch = 1, .hq = 2, .hkv = 1, .lq = 300, .lk = 300, .dim = 64, .mask = masks[i],
                              .magnitude = 100.0, .block_q = 64, .block_kv = 97, .threads = 2};
        flash_data d;
        assert_true(flash_data_make(&d, &c, &rng));
        double maxlse = 0;
        for (int64_t k = 0; k < d.lse_n; k++)
            if (isfinite(d.ref_lse[k]) && fabs(d.ref_lse[k]) > maxlse) maxlse = fabs(d.ref_lse[k]);
        assert_true(maxlse > 5e3); /* the test really reaches 1e4-scale logits */
        const char *levels[3];
        const int n = flash_simd_levels(levels);
        for (int li = 0; li < n; li++) {
            setenv("FI_SIMD", levels[li], 1);
            assert_int_equal(fi_attn_forward(&d.p, NULL), FI_OK);
            const double eo = flash_error(d.out, d.ref_out, d.out_n, 5e-2, 0);
            const double el = flash_error(d.lse, d.ref_lse, d.lse_n, 0.2, 0);
            if (eo > 1.0 || el > 1.0) {
                int64_t at = 0;
                for (int64_t r = 0; r < d.lse_n; r++)
                    if (fabs((double)d.lse[r] - d.ref_lse[r]) > fabs((double)d.lse[at] - d.ref_lse[at])) at = r;
                fail_msg("1e4 logits (%s, mask %s): out %.3g lse %.3g (worst LSE %.8g vs %.8g)", levels[li],
                         masks[i] ? masks[i] : "none", eo, el, d.lse[at], d.ref_lse[at]);
            }
        }
        unsetenv("FI_SIMD");
        flash_data_free(&d);
    }
}

/* Every tile PARTIAL, so fully masked tiles are really visited: a row whose first
 * tiles are all masked must recover when later keys are kept, and a row with no key
 * must give O = 0 exactly and LSE = -inf. */
static void test_masked_rows_and_all_partial(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("masked_rows_and_all_partial"));
    const char *masks[] = {"!prefix:150", "window:3 & prefix:50", "!causal", "!full", "document & generated"};
    for (int i = 0; i < 5; i++) {
        const flash_case c = {.batch = 1, .hq = 2, .hkv = 1, .lq = 200, .lk = 300, .dim = 32, .mask = masks[i],
                              .block_q = 64, .block_kv = 32, .threads = 2};
        flash_data d;
        assert_true(flash_data_make(&d, &c, &rng));
        /* A hand-made block mask listing every tile as PARTIAL. */
        const int64_t nqb = (c.lq + 63) / 64, nkb = (c.lk + 31) / 32;
        int32_t *num = calloc((size_t)nqb, sizeof *num), *idx = malloc((size_t)(nqb * nkb) * sizeof *idx);
        int32_t *fnum = calloc((size_t)nqb, sizeof *fnum), *fidx = calloc((size_t)(nqb * nkb), sizeof *fidx);
        for (int64_t qb = 0; qb < nqb; qb++) {
            num[qb] = (int32_t)nkb;
            for (int64_t kb = 0; kb < nkb; kb++) idx[qb * nkb + kb] = (int32_t)kb;
        }
        fi_block_mask bm = {.q_len = c.lq, .kv_len = c.lk, .q_offset = 0, .block_q = 64, .block_kv = 32,
                            .n_q_blocks = nqb, .n_kv_blocks = nkb, .batch = 1, .heads = 1, .kv_num_blocks = num,
                            .kv_indices = idx, .full_kv_num_blocks = fnum, .full_kv_indices = fidx};
        for (int pass = 0; pass < 2; pass++) {
            d.p.block_mask = pass ? &bm : NULL;
            const char *levels[3];
            const int n = flash_simd_levels(levels);
            for (int li = 0; li < n; li++) {
                setenv("FI_SIMD", levels[li], 1);
                assert_int_equal(fi_attn_forward(&d.p, NULL), FI_OK);
                if (flash_error(d.out, d.ref_out, d.out_n, OUT_ATOL, OUT_RTOL) > 1.0 ||
                    flash_error(d.lse, d.ref_lse, d.lse_n, LSE_ATOL, LSE_RTOL) > 1.0)
                    fail_msg("mask %s, %s, block mask %s: mismatch", masks[i], levels[li], pass ? "all partial" : "built");
                for (int64_t r = 0; r < d.lse_n; r++)
                    if (d.ref_lse[r] == -INFINITY)
                        for (int64_t k = 0; k < c.dim; k++) assert_true(d.out[r * c.dim + k] == 0.0f);
            }
            unsetenv("FI_SIMD");
        }
        free(num), free(idx), free(fnum), free(fidx);
        flash_data_free(&d);
    }
}

/* Varlen: packed sequences with per-sequence lengths; compared with the reference in
 * the same packed form and with each sequence run on its own. */
static void test_varlen(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("varlen"));
    const int64_t n_seqs = 5, hq = 4, hkv = 2, d = 64;
    int32_t cu_q[6] = {0}, cu_k[6] = {0};
    for (int64_t s = 0; s < n_seqs; s++) {
        const int64_t lk = 1 + fi_test_rng_int(&rng, 200);
        const int64_t lq = s == 2 ? 0 : 1 + fi_test_rng_int(&rng, lk); /* one sequence without queries */
        cu_q[s + 1] = cu_q[s] + (int32_t)lq;
        cu_k[s + 1] = cu_k[s] + (int32_t)lk;
    }
    const int64_t tq = cu_q[n_seqs], tk = cu_k[n_seqs];
    float *q = malloc((size_t)(hq * tq * d + 1) * sizeof(float)), *k = malloc((size_t)(hkv * tk * d) * sizeof(float));
    float *v = malloc((size_t)(hkv * tk * d) * sizeof(float));
    float *out = malloc((size_t)(hq * tq * d + 1) * sizeof(float)), *ref = malloc((size_t)(hq * tq * d + 1) * sizeof(float));
    float *lse = malloc((size_t)(hq * tq + 1) * sizeof(float)), *ref_lse = malloc((size_t)(hq * tq + 1) * sizeof(float));
    flash_fill(q, FI_DTYPE_F32, hq * tq * d, 1.0, &rng);
    flash_fill(k, FI_DTYPE_F32, hkv * tk * d, 1.0, &rng);
    flash_fill(v, FI_DTYPE_F32, hkv * tk * d, 1.0, &rng);
    int32_t seg[256];
    flash_segments(seg, 256, &rng);
    const fi_mask_inputs in = {.segments = seg, .segments_len = 256, .q_offset = 0};
    const char *masks[] = {NULL, "causal", "causal & (document | generated)", "window:30"};
    for (int mi = 0; mi < 4; mi++) {
        fi_mask *m = NULL;
        if (masks[mi]) assert_int_equal(fi_mask_parse(masks[mi], &m, NULL), FI_OK);
        fi_attn_params p = {.q = fi_attn_tensor_contiguous(q, FI_DTYPE_F32, 1, hq, tq, d),
                            .k = fi_attn_tensor_contiguous(k, FI_DTYPE_F32, 1, hkv, tk, d),
                            .v = fi_attn_tensor_contiguous(v, FI_DTYPE_F32, 1, hkv, tk, d),
                            .out = ref, .lse = ref_lse, .mask = m, .mask_in = &in,
                            .cu_seqlens_q = cu_q, .cu_seqlens_k = cu_k, .n_seqs = n_seqs,
                            .threads = 2, .num_splits = 1, .block_q = 32, .block_kv = 48};
        assert_int_equal(fi_attn_reference(&p, NULL), FI_OK);
        p.out = out, p.lse = lse;
        const char *levels[3];
        const int nl = flash_simd_levels(levels);
        for (int li = 0; li < nl; li++) {
            setenv("FI_SIMD", levels[li], 1);
            fi_error err = {0};
            if (fi_attn_forward(&p, &err) != FI_OK) fail_msg("varlen forward: %s", err.msg);
            if (flash_error(out, ref, hq * tq * d, OUT_ATOL, OUT_RTOL) > 1.0 ||
                flash_error(lse, ref_lse, hq * tq, LSE_ATOL, LSE_RTOL) > 1.0)
                fail_msg("varlen mask %s (%s): mismatch", masks[mi] ? masks[mi] : "none", levels[li]);
        }
        unsetenv("FI_SIMD");
        /* Each sequence alone as a strided [1, H, L, D] view of the packed arrays: identical bits. */
        for (int64_t s = 0; s < n_seqs; s++) {
            const int64_t lq = cu_q[s + 1] - cu_q[s], lk = cu_k[s + 1] - cu_k[s];
            if (lq == 0) continue;
            float *o1 = malloc((size_t)(hq * lq * d) * sizeof(float)), *l1 = malloc((size_t)(hq * lq) * sizeof(float));
            const fi_attn_tensor qv = {.data = q + cu_q[s] * d, .dtype = FI_DTYPE_F32, .batch = 1, .heads = hq, .len = lq,
                                       .dim = d, .stride_batch = 0, .stride_head = tq * d, .stride_len = d};
            const fi_attn_tensor kv = {.data = k + cu_k[s] * d, .dtype = FI_DTYPE_F32, .batch = 1, .heads = hkv, .len = lk,
                                       .dim = d, .stride_batch = 0, .stride_head = tk * d, .stride_len = d};
            fi_attn_tensor vv = kv;
            vv.data = v + cu_k[s] * d;
            /* The sequence index is the mask's batch index: shift segments so positions agree. */
            const fi_mask_inputs in1 = in;
            fi_attn_params p1 = {.q = qv, .k = kv, .v = vv, .out = o1, .lse = l1, .mask = m, .mask_in = &in1,
                                 .threads = 1, .num_splits = 1, .block_q = 32, .block_kv = 48};
            assert_int_equal(fi_attn_forward(&p1, NULL), FI_OK);
            for (int64_t h = 0; h < hq; h++) {
                assert_memory_equal(o1 + h * lq * d, out + (h * tq + cu_q[s]) * d, (size_t)(lq * d) * sizeof(float));
                assert_memory_equal(l1 + h * lq, lse + h * tq + cu_q[s], (size_t)lq * sizeof(float));
            }
            free(o1), free(l1);
        }
        fi_mask_free(m);
    }
    free(q), free(k), free(v), free(out), free(ref), free(lse), free(ref_lse);
}

static void test_bad_input(void **state) {
    (void)state;
    float buf[4096] = {0}, out[4096];
    fi_error err = {0};
    fi_attn_params p = {.q = fi_attn_tensor_contiguous(buf, FI_DTYPE_F32, 1, 3, 4, 8),
                        .k = fi_attn_tensor_contiguous(buf, FI_DTYPE_F32, 1, 2, 4, 8),
                        .v = fi_attn_tensor_contiguous(buf, FI_DTYPE_F32, 1, 2, 4, 8), .out = out};
    assert_int_equal(fi_attn_forward(&p, &err), FI_ERR_INVALID); /* 3 % 2 != 0 */
    assert_non_null(strstr(err.msg, "multiple"));
    p.q = fi_attn_tensor_contiguous(buf, FI_DTYPE_F32, 1, 1, 2, 300);
    p.k = p.v = fi_attn_tensor_contiguous(buf, FI_DTYPE_F32, 1, 1, 2, 300);
    assert_int_equal(fi_attn_forward(&p, &err), FI_ERR_INVALID); /* D > 256 */
    p.q = p.k = p.v = fi_attn_tensor_contiguous(buf, FI_DTYPE_F32, 1, 1, 4, 8);
    p.block_q = -1;
    assert_int_equal(fi_attn_forward(&p, &err), FI_ERR_INVALID);
    p.block_q = 0;
    p.num_splits = -2;
    assert_int_equal(fi_attn_forward(&p, &err), FI_ERR_INVALID);
    p.num_splits = 100000;
    assert_int_equal(fi_attn_forward(&p, &err), FI_ERR_INVALID);
    p.num_splits = 0;
    /* A block mask of the wrong size. */
    int32_t z[4] = {0};
    fi_block_mask bm = {.q_len = 5, .kv_len = 4, .block_q = 4, .block_kv = 4, .n_q_blocks = 2, .n_kv_blocks = 1,
                        .batch = 1, .heads = 1, .kv_num_blocks = z, .kv_indices = z, .full_kv_num_blocks = z,
                        .full_kv_indices = z};
    p.block_mask = &bm;
    assert_int_equal(fi_attn_forward(&p, &err), FI_ERR_INVALID);
    assert_non_null(strstr(err.msg, "block mask"));
    p.block_mask = NULL;
    assert_int_equal(fi_attn_forward(&p, &err), FI_OK);
    assert_int_equal(fi_attn_forward(NULL, &err), FI_ERR_INVALID);
}

static int report(void **state) {
    (void)state;
    printf("largest normalised output error (1 = tolerance): %.3g\n", g_worst);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_dims_and_tiles),
        cmocka_unit_test(test_masks),
        cmocka_unit_test(test_score_mods_and_dtypes),
        cmocka_unit_test(test_large_logits),
        cmocka_unit_test(test_masked_rows_and_all_partial),
        cmocka_unit_test(test_varlen),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, report);
}
