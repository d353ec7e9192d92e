/* Split-KV decode (q_len 1) on the GPU against the double-precision CPU reference
 * (fi_attn_reference): GQA ratios 1/4/8/16 (one to two head groups per CTA),
 * head dims 64/128, bf16/f16, key counts that are not multiples of the 16-key
 * tile or the 64-key block, paged caches with page sizes 1..33 and shuffled
 * pages, forced split counts from 1 to more splits than key blocks, masks that
 * make PARTIAL and EMPTY blocks, score modifiers, LSE, and dense K/V in a
 * [B, L, H, D] layout through the device-pointer API (strides != contiguous), one
 * plan run repeatedly (split arrival counters re-armed; automatic split count).
 * FI_GPU_TEST_SMALL=1 shrinks every shape (for compute-sanitizer runs). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cuda_runtime.h>

#include "core/dtype.h"
#include "flexinfer.h"
#include "flexinfer_cuda.h"
#include "gpu_test_support.h"
#include "test_support.h"


static uint16_t *random16(int64_t n, fi_dtype t, fi_test_rng *r) {
    uint16_t *x = malloc((size_t)(n ? n : 1) * 2);
    assert_non_null(x);
    gpu_test_fill16(x, n, t, r, 1.0);
    return x;
}

/* Compares o/l against the reference ro/rl: finite where expected, -inf LSE
 * exactly where the reference has it, and within the bounds. */
static void expect_close(const float *o, const float *ro, const float *l, const float *rl,
                         int64_t rows, int64_t d, fi_dtype t, const char *what) {
    double max_o = 0, max_l = 0;
    int64_t bad = 0;
    for (int64_t i = 0; i < rows * d; i++) {
        if (!isfinite(o[i])) bad++;
        else if (fabs((double)o[i] - ro[i]) > max_o) max_o = fabs((double)o[i] - ro[i]);
    }
    for (int64_t i = 0; i < rows; i++) {
        if (isinf(rl[i]) || isinf(l[i])) {
            if (!(isinf(rl[i]) && rl[i] < 0 && isinf(l[i]) && l[i] < 0)) bad++;
        } else if (!isfinite(l[i])) {
            bad++;
        } else if (fabs((double)l[i] - rl[i]) > max_l) {
            max_l = fabs((double)l[i] - rl[i]);
        }
    }
    printf("  %-64s max|dO| %.2e  max|dLSE| %.2e%s\n", what, max_o, max_l, bad ? "  (inf/NaN mismatch)" : "");
    assert_int_equal(bad, 0);
    assert_true(max_o <= (t == FI_DTYPE_BF16 ? BOUND_O_BF16 : BOUND_O_F16));
    assert_true(max_l <= BOUND_LSE);
}

/* Runs the host API and the reference on p and compares. */
static void check_host(const fi_attn_params *p0, int64_t rows, int64_t d, fi_dtype t, const char *what) {
    float *o, *ro, *l, *rl;
    gpu_test_run_host(p0, rows, d, what, &o, &ro, &l, &rl);
    expect_close(o, ro, l, rl, rows, d, t, what);
    free(o), free(ro), free(l), free(rl);
}

typedef struct paged_case {
    int64_t b, hq, hkv, d, page_size;
    int splits;
    const char *mask, *score;
    fi_dtype t;
} paged_case;

/* Paged decode; sequence lengths vary per sequence (one empty, one of a single key). */
static void run_paged(const paged_case *c, fi_test_rng *r) {
    const int64_t long_len = gpu_test_small_shapes() ? 200 : 1500;
    int32_t *lens = malloc((size_t)c->b * 4);
    assert_non_null(lens);
    int64_t max_len = 0;
    for (int64_t i = 0; i < c->b; i++) {
        lens[i] = i == 1 ? 0 : i == 2 ? 1 : (int32_t)(long_len - 37 * i + fi_test_rng_int(r, 20));
        if (lens[i] > max_len) max_len = lens[i];
    }
    const int64_t max_pages = (max_len + c->page_size - 1) / c->page_size;
    const int64_t n_pages = c->b * max_pages + 5;
    int32_t *perm = malloc((size_t)n_pages * 4), *table = malloc((size_t)(c->b * max_pages + 1) * 4);
    assert_non_null(perm), assert_non_null(table);
    for (int64_t i = 0; i < n_pages; i++) perm[i] = (int32_t)i;
    for (int64_t i = n_pages - 1; i > 0; i--) {
        const int64_t j = fi_test_rng_int(r, i + 1);
        const int32_t x = perm[i];
        perm[i] = perm[j], perm[j] = x;
    }
    memcpy(table, perm, (size_t)(c->b * max_pages) * 4);
    const int64_t pool = n_pages * c->hkv * c->page_size * c->d;
    uint16_t *kp = random16(pool, c->t, r), *vp = random16(pool, c->t, r);
    uint16_t *q = random16(c->b * c->hq * c->d, c->t, r);
    fi_paged_kv pk = {.k_pages = kp, .v_pages = vp, .dtype = c->t, .n_pages = n_pages,
                      .page_size = c->page_size, .heads = c->hkv, .dim = c->d, .page_table = table,
                      .max_pages_per_seq = max_pages, .seq_lens = lens};
    /* The query sits inside the cache so that causal / window masks cut it. */
    const int64_t q_offset = max_len > 1 ? max_len / 2 + 3 : 0, seg_len = max_len + q_offset + 1;
    int32_t *seg = malloc((size_t)seg_len * 4);
    assert_non_null(seg);
    for (int64_t i = 0, id = 0; i < seg_len; i++) {
        if (fi_test_rng_int(r, 90) == 0) id++;
        seg[i] = fi_test_rng_int(r, 50) == 0 ? -1 : (int32_t)id;
    }
    fi_mask_inputs in = {.segments = seg, .segments_len = seg_len, .q_offset = q_offset};
    fi_mask *m = NULL;
    fi_score_mod *sm = NULL;
    fi_error err = {0};
    assert_int_equal(fi_mask_parse(c->mask, &m, &err), FI_OK);
    if (c->score) assert_int_equal(fi_score_mod_parse(c->score, &sm, &err), FI_OK);
    fi_attn_params p = {.q = fi_attn_tensor_contiguous(q, c->t, c->b, c->hq, 1, c->d), .paged_kv = &pk,
                        .mask = m, .mask_in = &in, .score_mod = sm, .num_splits = c->splits};
    char what[160];
    snprintf(what, sizeof what, "paged B%lld Hq%lld/%lld D%lld page%lld splits%d %s%s%s %s",
             (long long)c->b, (long long)c->hq, (long long)c->hkv, (long long)c->d,
             (long long)c->page_size, c->splits, c->mask, c->score ? " + " : "",
             c->score ? c->score : "", fi_dtype_name(c->t));
    check_host(&p, c->b * c->hq, c->d, c->t, what);
    fi_mask_free(m), fi_score_mod_free(sm);
    free(lens), free(perm), free(table), free(kp), free(vp), free(q), free(seg);
}

static void test_decode_paged(void **state) {
    (void)state;
    if (!gpu_test_present()) skip();
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("test_decode_paged"));
    const fi_dtype bf = FI_DTYPE_BF16, f16 = FI_DTYPE_F16;
    const paged_case cases[] = {
        {4, 32, 8, 128, 16, 0, "full", NULL, bf},      /* the benchmark's layout, automatic splits */
        {4, 32, 8, 128, 16, 1, "full", NULL, f16},     /* one split: no combine */
        {3, 8, 8, 64, 1, 3, "causal", NULL, bf},       /* MHA, one key per page */
        {3, 16, 2, 128, 5, 7, "window:100", NULL, f16}, /* 8 heads per CTA */
        {3, 16, 1, 64, 33, 0, "document | generated", NULL, bf}, /* 16 heads: two CTAs per KV head */
        {4, 32, 8, 128, 16, 300, "causal & window:700", NULL, bf}, /* more splits than blocks */
        {3, 32, 8, 64, 7, 2, "full", "softcap:5", f16},
        {3, 8, 2, 128, 16, 0, "causal", "alibi", bf},
        {3, 32, 8, 128, 16, 0, "prefix:0", NULL, bf}, /* every key masked: O = 0, LSE = -inf */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_paged(&cases[i], &r);
}

/* Dense decode through the device API with K/V stored [B, L, Hkv, D] (a head
 * stride of D, a row stride of Hkv·D) and q [B, 1, Hq, D]. */
static void run_dense_device(int64_t b, int64_t hq, int64_t hkv, int64_t lk, int64_t d, fi_dtype t,
                             const char *mask, int splits, fi_test_rng *r) {
    const int64_t nk = b * lk * hkv * d, nq = b * hq * d;
    uint16_t *k = random16(nk, t, r), *v = random16(nk, t, r), *q = random16(nq, t, r);
    fi_attn_tensor kt = {k, t, b, hkv, lk, d, lk * hkv * d, d, hkv * d};
    fi_attn_tensor vt = {v, t, b, hkv, lk, d, lk * hkv * d, d, hkv * d};
    fi_attn_tensor qt = {q, t, b, hq, 1, d, hq * d, d, hq * d};
    fi_mask *m = NULL;
    fi_error err = {0};
    assert_int_equal(fi_mask_parse(mask, &m, &err), FI_OK);
    fi_mask_inputs in = {.q_offset = lk - 1 - lk / 3}; /* causal keeps two thirds */
    float *ro = malloc((size_t)nq * 4), *rl = malloc((size_t)(b * hq) * 4);
    float *o = malloc((size_t)nq * 4), *l = malloc((size_t)(b * hq) * 4);
    assert_non_null(ro), assert_non_null(rl), assert_non_null(o), assert_non_null(l);
    fi_attn_params p = {.q = qt, .k = kt, .v = vt, .out = ro, .lse = rl, .mask = m, .mask_in = &in,
                        .num_splits = splits};
    assert_int_equal(fi_attn_reference(&p, &err), FI_OK);

    void *dk, *dv, *dq, *dout, *dlse;
    assert_int_equal(cudaMalloc(&dk, (size_t)nk * 2), cudaSuccess);
    assert_int_equal(cudaMalloc(&dv, (size_t)nk * 2), cudaSuccess);
    assert_int_equal(cudaMalloc(&dq, (size_t)nq * 2), cudaSuccess);
    assert_int_equal(cudaMalloc(&dout, (size_t)nq * 4), cudaSuccess);
    assert_int_equal(cudaMalloc(&dlse, (size_t)(b * hq) * 4), cudaSuccess);
    assert_int_equal(cudaMemcpy(dk, k, (size_t)nk * 2, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(dv, v, (size_t)nk * 2, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(dq, q, (size_t)nq * 2, cudaMemcpyHostToDevice), cudaSuccess);
    p.k.data = dk, p.v.data = dv, p.q.data = dq, p.out = dout, p.lse = dlse;
    fi_status st = fi_cuda_attn_forward_device(&p, &err);
    if (st) printf("dense decode: %s\n", err.msg);
    assert_int_equal(st, FI_OK);
    assert_int_equal(cudaMemcpy(o, dout, (size_t)nq * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_int_equal(cudaMemcpy(l, dlse, (size_t)(b * hq) * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    char what[128];
    snprintf(what, sizeof what, "dense [B,L,H,D] B%lld Hq%lld/%lld Lk%lld D%lld splits%d %s %s",
             (long long)b, (long long)hq, (long long)hkv, (long long)lk, (long long)d, splits, mask,
             fi_dtype_name(t));
    expect_close(o, ro, l, rl, b * hq, d, t, what);
    cudaFree(dk), cudaFree(dv), cudaFree(dq), cudaFree(dout), cudaFree(dlse);
    fi_mask_free(m);
    free(k), free(v), free(q), free(ro), free(rl), free(o), free(l);
}

static void test_decode_dense(void **state) {
    (void)state;
    if (!gpu_test_present()) skip();
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("test_decode_dense"));
    const int64_t lk = gpu_test_small_shapes() ? 150 : 1111;
    run_dense_device(2, 32, 8, lk, 128, FI_DTYPE_BF16, "full", 0, &r);
    run_dense_device(2, 4, 4, lk, 64, FI_DTYPE_F16, "causal", 3, &r);
    run_dense_device(1, 16, 2, 17, 128, FI_DTYPE_F16, "full", 0, &r);
    run_dense_device(3, 8, 1, 1, 64, FI_DTYPE_BF16, "full", 1, &r); /* a single key */
}

/* One plan run several times: the splits' arrival counters must be re-armed by
 * every run (the output is poisoned with NaN before each run), and the automatic
 * split count of a single long sequence must use its key blocks (more than one
 * split, at most one per two key blocks). */
static void test_decode_plan_reuse(void **state) {
    (void)state;
    if (!gpu_test_present()) skip();
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("test_decode_plan_reuse"));
    const int64_t b = 1, hq = 32, hkv = 8, d = 128, lk = gpu_test_small_shapes() ? 1024 : 8192;
    const fi_dtype t = FI_DTYPE_BF16;
    const int64_t nk = b * hkv * lk * d, nq = b * hq * d;
    uint16_t *k = random16(nk, t, &r), *v = random16(nk, t, &r), *q = random16(nq, t, &r);
    float *ro = malloc((size_t)nq * 4), *rl = malloc((size_t)(b * hq) * 4);
    float *o = malloc((size_t)nq * 4), *l = malloc((size_t)(b * hq) * 4);
    assert_non_null(ro), assert_non_null(rl), assert_non_null(o), assert_non_null(l);
    void *dk, *dv, *dq, *dout, *dlse;
    assert_int_equal(cudaMalloc(&dk, (size_t)nk * 2), cudaSuccess);
    assert_int_equal(cudaMalloc(&dv, (size_t)nk * 2), cudaSuccess);
    assert_int_equal(cudaMalloc(&dq, (size_t)nq * 2), cudaSuccess);
    assert_int_equal(cudaMalloc(&dout, (size_t)nq * 4), cudaSuccess);
    assert_int_equal(cudaMalloc(&dlse, (size_t)(b * hq) * 4), cudaSuccess);
    assert_int_equal(cudaMemcpy(dk, k, (size_t)nk * 2, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(dv, v, (size_t)nk * 2, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(dq, q, (size_t)nq * 2, cudaMemcpyHostToDevice), cudaSuccess);
    static const char *masks[] = {"full", "causal & window:3000"};
    static const int splits[] = {0, 7};
    for (int c = 0; c < 2; c++) {
        fi_mask *m = NULL;
        fi_error err = {0};
        assert_int_equal(fi_mask_parse(masks[c], &m, &err), FI_OK);
        fi_mask_inputs in = {.q_offset = lk - 1};
        fi_attn_params p = {.q = fi_attn_tensor_contiguous(q, t, b, hq, 1, d),
                            .k = fi_attn_tensor_contiguous(k, t, b, hkv, lk, d),
                            .v = fi_attn_tensor_contiguous(v, t, b, hkv, lk, d),
                            .out = ro, .lse = rl, .mask = m, .mask_in = &in, .num_splits = splits[c]};
        assert_int_equal(fi_attn_reference(&p, &err), FI_OK);
        p.q.data = dq, p.k.data = dk, p.v.data = dv, p.out = dout, p.lse = dlse;
        fi_cuda_attn_plan *plan = NULL;
        fi_status st = fi_cuda_attn_plan_create(&p, &plan, &err);
        if (st) printf("plan: %s\n", err.msg);
        assert_int_equal(st, FI_OK);
        const int ns = fi_cuda_attn_plan_splits(plan);
        if (splits[c]) assert_int_equal(ns, splits[c]);
        else assert_true(ns > 1 && ns <= lk / 64 / 2);
        for (int run = 0; run < 3; run++) {
            assert_int_equal(cudaMemset(dout, 0xff, (size_t)nq * 4), cudaSuccess);
            assert_int_equal(cudaMemset(dlse, 0xff, (size_t)(b * hq) * 4), cudaSuccess);
            assert_int_equal(fi_cuda_attn_plan_run(plan, NULL, &err), FI_OK);
            assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
            assert_int_equal(cudaMemcpy(o, dout, (size_t)nq * 4, cudaMemcpyDeviceToHost), cudaSuccess);
            assert_int_equal(cudaMemcpy(l, dlse, (size_t)(b * hq) * 4, cudaMemcpyDeviceToHost), cudaSuccess);
            char what[128];
            snprintf(what, sizeof what, "plan reuse run %d: Lk%lld %s splits %d", run, (long long)lk, masks[c], ns);
            expect_close(o, ro, l, rl, b * hq, d, t, what);
        }
        fi_cuda_attn_plan_free(plan);
        fi_mask_free(m);
    }
    cudaFree(dk), cudaFree(dv), cudaFree(dq), cudaFree(dout), cudaFree(dlse);
    free(k), free(v), free(q), free(ro), free(rl), free(o), free(l);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_paged),
        cmocka_unit_test(test_decode_dense),
        cmocka_unit_test(test_decode_plan_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
