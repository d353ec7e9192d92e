/* Split-KV decoding and paged K/V.
 *   - forced split counts (including more splits than key tiles, so some splits are
 *     empty) against the unsplit kernel and the double reference;
 *   - the automatic split count is sane (splits only when items cannot fill threads);
 *   - paged K/V gives results BIT-IDENTICAL (memcmp) to the same keys stored dense, for
 *     page sizes that divide the tile size and sizes that do not, shuffled page tables,
 *     GQA, masks, f16, threads and splits.
 * Tolerances as in test_flash.c: f32 accumulation against double, |err| <= 1e-4 (1 + |ref|). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "flash_case.h"

static void run_ok(const fi_attn_params *p, const char *what) {
    fi_error err = {0};
    if (fi_attn_forward(p, &err) != FI_OK) fail_msg("%s: %s", what, err.msg);
}

static void test_split_vs_unsplit(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("split_vs_unsplit"));
    const struct {
        int64_t lq, lk, hq, hkv;
        const char *mask;
        int64_t q_offset;
    } shapes[] = {
        {1, 1000, 8, 2, NULL, 0},         {1, 1000, 4, 4, "causal", 999},  {3, 700, 6, 2, "causal", 500},
        {1, 1000, 8, 8, "window:200", 999}, {4, 333, 3, 1, "document", 329}, {1, 64, 2, 1, NULL, 0},
        {1, 700, 4, 1, "!prefix:600", 699},
    };
    const int splits[] = {2, 3, 7, 16, 40}; /* 1000 / 64 -> 16 key tiles: 40 leaves empty splits */
    const char *levels[3];
    const int nl = flash_simd_levels(levels);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const flash_case c = {.batch = 2, .hq = shapes[si].hq, .hkv = shapes[si].hkv, .lq = shapes[si].lq,
                              .lk = shapes[si].lk, .dim = 64, .mask = shapes[si].mask,
                              .q_offset = shapes[si].q_offset, .block_q = 64, .block_kv = 64, .threads = 2,
                              .splits = 1};
        flash_data d;
        assert_true(flash_data_make(&d, &c, &rng));
        float *one = malloc((size_t)d.out_n * sizeof(float)), *one_lse = malloc((size_t)d.lse_n * sizeof(float));
        for (int li = 0; li < nl; li++) {
            setenv("FI_SIMD", levels[li], 1);
            d.p.num_splits = 1;
            run_ok(&d.p, "unsplit");
            memcpy(one, d.out, (size_t)d.out_n * sizeof(float));
            memcpy(one_lse, d.lse, (size_t)d.lse_n * sizeof(float));
            assert_true(flash_error(one, d.ref_out, d.out_n, 1e-4, 1e-4) <= 1.0);
            for (size_t k = 0; k < sizeof splits / sizeof splits[0]; k++) {
                d.p.num_splits = splits[k];
                for (int th = 1; th <= 2; th++) {
                    d.p.threads = th;
                    run_ok(&d.p, "split");
                    const double e_ref = flash_error(d.out, d.ref_out, d.out_n, 1e-4, 1e-4);
                    const double e_one = flash_error(d.out, one, d.out_n, 1e-5, 1e-5);
                    const double l_ref = flash_error(d.lse, d.ref_lse, d.lse_n, 1e-4, 1e-5);
                    const double l_one = flash_error(d.lse, one_lse, d.lse_n, 1e-5, 1e-6);
                    if (e_ref > 1 || e_one > 1 || l_ref > 1 || l_one > 1)
                        fail_msg("shape %zu (Lq %lld Lk %lld mask %s) splits %d threads %d %s: out vs ref %.3g, "
                                 "vs unsplit %.3g, lse vs ref %.3g, vs unsplit %.3g",
                                 si, (long long)c.lq, (long long)c.lk, c.mask ? c.mask : "none", splits[k], th,
                                 levels[li], e_ref, e_one, l_ref, l_one);
                }
            }
            d.p.threads = 2;
        }
        unsetenv("FI_SIMD");
        free(one), free(one_lse);
        flash_data_free(&d);
    }
}

static void test_auto_splits(void **state) {
    (void)state;
    static float dummy[16];
    fi_attn_params p = {.q = fi_attn_tensor_contiguous(dummy, FI_DTYPE_F32, 1, 1, 1, 128),
                        .k = fi_attn_tensor_contiguous(dummy, FI_DTYPE_F32, 1, 1, 32768, 128),
                        .v = fi_attn_tensor_contiguous(dummy, FI_DTYPE_F32, 1, 1, 32768, 128),
                        .out = dummy, .threads = 2};
    /* One head decoding 32k keys on 2 threads: one item, so split (but not absurdly). */
    int s = fi_attn_auto_splits(&p);
    assert_true(s >= 2 && s <= 64);
    assert_true(s % 2 == 0); /* every thread gets the same number of splits */
    /* One thread: nothing to gain. */
    p.threads = 1;
    assert_int_equal(fi_attn_auto_splits(&p), 1);
    /* Hq 32 / Hkv 8 decode on 2 threads: 8 group items already balance 2 threads. */
    p.threads = 2;
    p.q.heads = 32, p.k.heads = p.v.heads = 8;
    assert_int_equal(fi_attn_auto_splits(&p), 1);
    /* Three items on 2 threads: splitting balances them. */
    p.q.heads = 3, p.k.heads = p.v.heads = 3;
    assert_true(fi_attn_auto_splits(&p) >= 2);
    /* Long prefill: many query tiles, no split. */
    p.q = fi_attn_tensor_contiguous(dummy, FI_DTYPE_F32, 1, 8, 4096, 128);
    p.k = p.v = fi_attn_tensor_contiguous(dummy, FI_DTYPE_F32, 1, 8, 4096, 128);
    assert_int_equal(fi_attn_auto_splits(&p), 1);
    /* Short keys (fewer than 4 tiles): no split. */
    p.q = fi_attn_tensor_contiguous(dummy, FI_DTYPE_F32, 1, 1, 1, 128);
    p.k = p.v = fi_attn_tensor_contiguous(dummy, FI_DTYPE_F32, 1, 1, 100, 128);
    assert_int_equal(fi_attn_auto_splits(&p), 1);
    /* Bad problems answer 1 rather than crash. */
    p.q.heads = 3, p.k.heads = p.v.heads = 2;
    assert_int_equal(fi_attn_auto_splits(&p), 1);
    assert_int_equal(fi_attn_auto_splits(NULL), 1);
}

/* Copies dense K/V [B, Hkv, Lk, D] into a shuffled page pool and checks memcmp equality. */
static void paged_case(fi_test_rng *rng, fi_dtype t, int64_t batch, int64_t hq, int64_t hkv, int64_t lq,
                       int64_t max_lk, int64_t d, int64_t page, const char *mask, int bkv, int splits) {
    const size_t es = fi_dtype_size(t);
    int64_t lens[4];
    for (int64_t b = 0; b < batch; b++) lens[b] = b == 0 ? max_lk : 1 + fi_test_rng_int(rng, max_lk);
    const int64_t max_pages = (max_lk + page - 1) / page, n_pages = batch * max_pages + 3;
    /* Dense K/V hold max_lk rows per sequence; rows past lens[b] are unused filler. The
     * dense problem has one Lk for all sequences, so compare per sequence (batch 1). */
    char *k = malloc((size_t)(batch * hkv * max_lk * d) * es), *v = malloc((size_t)(batch * hkv * max_lk * d) * es);
    char *q = malloc((size_t)(batch * hq * lq * d) * es);
    flash_fill(k, t, batch * hkv * max_lk * d, 1.0, rng);
    flash_fill(v, t, batch * hkv * max_lk * d, 1.0, rng);
    flash_fill(q, t, batch * hq * lq * d, 1.0, rng);
    char *kp = calloc((size_t)(n_pages * hkv * page * d), es), *vp = calloc((size_t)(n_pages * hkv * page * d), es);
    int32_t *table = malloc((size_t)(batch * max_pages) * sizeof(int32_t)), *perm = malloc((size_t)n_pages * sizeof(int32_t));
    for (int64_t i = 0; i < n_pages; i++) perm[i] = (int32_t)i;
    for (int64_t i = n_pages - 1; i > 0; i--) { /* shuffle the pool */
        const int64_t j = fi_test_rng_int(rng, i + 1);
        const int32_t x = perm[i];
        perm[i] = perm[j], perm[j] = x;
    }
    int32_t seq_lens[4];
    for (int64_t b = 0; b < batch; b++) {
        seq_lens[b] = (int32_t)lens[b];
        for (int64_t pg = 0; pg < max_pages; pg++) table[b * max_pages + pg] = perm[b * max_pages + pg];
        for (int64_t h = 0; h < hkv; h++)
            for (int64_t j = 0; j < lens[b]; j++) {
                const int64_t pg = table[b * max_pages + j / page];
                const size_t dst = (size_t)(((pg * hkv + h) * page + j % page) * d) * es;
                const size_t src = (size_t)(((b * hkv + h) * max_lk + j) * d) * es;
                memcpy(kp + dst, k + src, (size_t)d * es);
                memcpy(vp + dst, v + src, (size_t)d * es);
            }
    }
    const fi_paged_kv pkv = {.k_pages = kp, .v_pages = vp, .dtype = t, .n_pages = n_pages, .page_size = page,
                             .heads = hkv, .dim = d, .page_table = table, .max_pages_per_seq = max_pages,
                             .seq_lens = seq_lens};
    fi_mask *m = NULL;
    if (mask) assert_int_equal(fi_mask_parse(mask, &m, NULL), FI_OK);
    int32_t seg[4096];
    flash_segments(seg, 4096, rng);
    const fi_mask_inputs in = {.segments = seg, .segments_len = 4096, .q_offset = max_lk - lq};
    float *out_p = malloc((size_t)(batch * hq * lq * d) * sizeof(float)), *lse_p = malloc((size_t)(batch * hq * lq) * sizeof(float));
    float *out_d = malloc((size_t)(hq * lq * d) * sizeof(float)), *lse_d = malloc((size_t)(hq * lq) * sizeof(float));
    fi_attn_params pp = {.q = fi_attn_tensor_contiguous(q, t, batch, hq, lq, d), .paged_kv = &pkv, .out = out_p,
                         .lse = lse_p, .mask = m, .mask_in = &in, .threads = 2, .num_splits = splits, .block_kv = bkv};
    run_ok(&pp, "paged");
    for (int64_t b = 0; b < batch; b++) {
        /* Sequence b alone, dense, with the same tiles and splits. */
        const fi_attn_tensor qv = {.data = q + (size_t)(b * hq * lq * d) * es, .dtype = t, .batch = 1, .heads = hq,
                                   .len = lq, .dim = d, .stride_batch = 0, .stride_head = lq * d, .stride_len = d};
        const fi_attn_tensor kv = {.data = k + (size_t)(b * hkv * max_lk * d) * es, .dtype = t, .batch = 1,
                                   .heads = hkv, .len = lens[b], .dim = d, .stride_batch = 0,
                                   .stride_head = max_lk * d, .stride_len = d};
        fi_attn_tensor vv = kv;
        vv.data = v + (size_t)(b * hkv * max_lk * d) * es;
        fi_attn_params pd = {.q = qv, .k = kv, .v = vv, .out = out_d, .lse = lse_d, .mask = m, .mask_in = &in,
                             .threads = 1, .num_splits = splits, .block_kv = bkv};
        /* Splits are per problem: the paged run (all sequences) and this one must agree on them. */
        if (splits == 0) pd.num_splits = fi_attn_auto_splits(&pp);
        /* The paged run sees segment row b only when per batch; shared here, so same as b = 0. */
        run_ok(&pd, "dense");
        const bool same = memcmp(out_d, out_p + b * hq * lq * d, (size_t)(hq * lq * d) * sizeof(float)) == 0 &&
                          memcmp(lse_d, lse_p + b * hq * lq, (size_t)(hq * lq) * sizeof(float)) == 0;
        if (!same)
            fail_msg("paged != dense (bits): %s page %lld tile %d splits %d mask %s seq %lld len %lld simd %s",
                     fi_dtype_name(t), (long long)page, bkv, splits, mask ? mask : "none", (long long)b,
                     (long long)lens[b], fi_simd_level_name(fi_cpu_simd_level()));
        /* And both are right. */
        float *ref = malloc((size_t)(hq * lq * d) * sizeof(float)), *ref_lse = malloc((size_t)(hq * lq) * sizeof(float));
        pd.out = ref, pd.lse = ref_lse;
        assert_int_equal(fi_attn_reference(&pd, NULL), FI_OK);
        assert_true(flash_error(out_d, ref, hq * lq * d, 1e-4, 1e-4) <= 1.0);
        assert_true(flash_error(lse_d, ref_lse, hq * lq, 1e-4, 1e-5) <= 1.0);
        free(ref), free(ref_lse);
    }
    fi_mask_free(m);
    free(k), free(v), free(q), free(kp), free(vp), free(table), free(perm);
    free(out_p), free(lse_p), free(out_d), free(lse_d);
}

static void test_paged_bit_identical(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("paged_bit_identical"));
    const char *levels[3];
    const int nl = flash_simd_levels(levels);
    for (int li = 0; li < nl; li++) {
        setenv("FI_SIMD", levels[li], 1);
        const int64_t pages[] = {16, 64, 24, 100, 7};
        for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
            paged_case(&rng, FI_DTYPE_F32, 3, 8, 2, 1, 500, 64, pages[i], NULL, 64, 1);
            paged_case(&rng, FI_DTYPE_F32, 2, 3, 1, 37, 300, 80, pages[i], "causal", 64, 1);
        }
        paged_case(&rng, FI_DTYPE_F16, 2, 4, 4, 5, 400, 128, 24, "causal & window:100", 97, 3);
        paged_case(&rng, FI_DTYPE_BF16, 3, 6, 2, 1, 700, 64, 16, NULL, 64, 0);
        paged_case(&rng, FI_DTYPE_F32, 2, 8, 1, 4, 900, 32, 33, "document | generated", 64, 40);
    }
    unsetenv("FI_SIMD");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_vs_unsplit),
        cmocka_unit_test(test_auto_splits),
        cmocka_unit_test(test_paged_bit_identical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
