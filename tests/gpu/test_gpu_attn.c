/* GPU attention against the double-precision CPU reference (fi_attn_reference):
 * every mask primitive and combinations, GQA ratios 1/4/8, uneven lengths, fully
 * masked rows, LSE, score modifiers, varlen, paged K/V (prefill and split-KV
 * decode with automatic and forced split counts), f32 host inputs, bad input.
 * Inputs are drawn as bf16/f16 values, so both sides see identical numbers and the
 * bounds measure only the kernels' arithmetic (16-bit P in P V, f32 sums).
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

#include "core/dtype.h"
#include "flexinfer.h"
#include "flexinfer_cuda.h"
#include "gpu_test_support.h"
#include "test_support.h"


typedef struct cmp_result {
    double max_o, max_lse;
    int64_t bad_inf, non_finite;
} cmp_result;

static cmp_result compare(const float *o, const float *ro, const float *l, const float *rl,
                          int64_t rows, int64_t d) {
    cmp_result c = {0};
    for (int64_t i = 0; i < rows * d; i++) {
        if (!isfinite(o[i])) c.non_finite++;
        else if (fabs(o[i] - ro[i]) > c.max_o) c.max_o = fabs(o[i] - ro[i]);
    }
    for (int64_t i = 0; i < rows; i++) {
        if (isinf(rl[i]) || isinf(l[i])) {
            if (!(isinf(rl[i]) && isinf(l[i]) && rl[i] < 0 && l[i] < 0)) c.bad_inf++;
        } else if (isnan(l[i])) {
            c.non_finite++;
        } else if (fabs(l[i] - rl[i]) > c.max_lse) {
            c.max_lse = fabs(l[i] - rl[i]);
        }
    }
    return c;
}

/* Runs GPU and reference on p (out/lse of p are ignored) and checks the bounds. */
static void check_problem(const fi_attn_params *p0, int64_t rows, int64_t d, fi_dtype t,
                          const char *what) {
    float *o, *ro, *l, *rl;
    gpu_test_run_host(p0, rows, d, what, &o, &ro, &l, &rl);
    cmp_result c = compare(o, ro, l, rl, rows, d);
    const double bound = t == FI_DTYPE_BF16 ? BOUND_O_BF16 : BOUND_O_F16;
    printf("  %-60s max|dO| %.2e  max|dLSE| %.2e%s\n", what, c.max_o, c.max_lse,
           c.bad_inf || c.non_finite ? "  (inf/NaN mismatch)" : "");
    assert_int_equal(c.non_finite, 0);
    assert_int_equal(c.bad_inf, 0);
    assert_true(c.max_o <= bound);
    assert_true(c.max_lse <= BOUND_LSE);
    free(o), free(ro), free(l), free(rl);
}

/* Segment ids in runs (documents), with a few negative ("generated") stretches. */
static int32_t *make_segments(int64_t n, int64_t batch, fi_test_rng *r) {
    int32_t *s = malloc((size_t)(n * batch) * 4);
    assert_non_null(s);
    for (int64_t b = 0; b < batch; b++) {
        int32_t id = 0;
        for (int64_t i = 0; i < n; i++) {
            if (fi_test_rng_int(r, 60) == 0) id++;
            s[b * n + i] = fi_test_rng_int(r, 97) == 0 ? -1 : id;
            if (i > 0 && s[b * n + i - 1] < 0 && fi_test_rng_int(r, 4)) s[b * n + i] = -1;
        }
    }
    return s;
}

/* Segment rows for the kernels' interval fast path (documents as runs of keys):
 * SEG_SORTED ascending ids, SEG_SORTED_GEN the same after a leading run of -1
 * (generated), SEG_DESCENDING contiguous runs with falling ids (not sorted: the
 * kernels must fall back to the per-element program). Run lengths vary from 1 up. */
enum { SEG_RANDOM = 0, SEG_SORTED, SEG_SORTED_GEN, SEG_DESCENDING };

static int32_t *make_segment_runs(int64_t n, int64_t batch, int style, fi_test_rng *r) {
    int32_t *s = malloc((size_t)(n * batch) * 4);
    assert_non_null(s);
    for (int64_t b = 0; b < batch; b++) {
        int64_t i = 0;
        if (style == SEG_SORTED_GEN)
            for (int64_t g = fi_test_rng_int(r, n / 3 + 1); i < g; i++) s[b * n + i] = -1;
        int32_t id = style == SEG_DESCENDING ? 1000 : 0;
        while (i < n) {
            /* Mostly long documents (several key blocks), sometimes very short ones. */
            int64_t len = fi_test_rng_int(r, 4) ? 1 + fi_test_rng_int(r, 200) : 1 + fi_test_rng_int(r, 3);
            for (; len > 0 && i < n; len--, i++) s[b * n + i] = id;
            id += style == SEG_DESCENDING ? -1 - (int32_t)fi_test_rng_int(r, 3) : 1 + (int32_t)fi_test_rng_int(r, 3);
        }
    }
    return s;
}

typedef struct dense_case {
    const char *mask, *score;
    int64_t b, hq, hkv, lq, lk, d, q_offset;
    fi_dtype t;
    int per_batch_segments;
    int seg_style; /* SEG_*; SEG_RANDOM: make_segments */
} dense_case;

static void run_dense(const dense_case *dc, fi_test_rng *r) {
    const int64_t nq = dc->b * dc->hq * dc->lq * dc->d, nk = dc->b * dc->hkv * dc->lk * dc->d;
    uint16_t *q = malloc((size_t)nq * 2), *k = malloc((size_t)nk * 2), *v = malloc((size_t)nk * 2);
    assert_non_null(q), assert_non_null(k), assert_non_null(v);
    gpu_test_fill16(q, nq, dc->t, r, 1.0), gpu_test_fill16(k, nk, dc->t, r, 1.0), gpu_test_fill16(v, nk, dc->t, r, 1.0);
    fi_error err = {0};
    fi_mask *m = NULL;
    fi_score_mod *sm = NULL;
    assert_int_equal(fi_mask_parse(dc->mask, &m, &err), FI_OK);
    if (dc->score) assert_int_equal(fi_score_mod_parse(dc->score, &sm, &err), FI_OK);
    const int64_t seg_len = (dc->lk > dc->q_offset + dc->lq ? dc->lk : dc->q_offset + dc->lq);
    const int64_t seg_b = dc->per_batch_segments ? dc->b : 0;
    int32_t *seg = dc->seg_style == SEG_RANDOM ? make_segments(seg_len, seg_b ? seg_b : 1, r)
                                               : make_segment_runs(seg_len, seg_b ? seg_b : 1, dc->seg_style, r);
    fi_mask_inputs in = {.segments = seg, .segments_len = seg_len, .segments_batch = seg_b,
                         .q_offset = dc->q_offset};
    fi_attn_params p = {
        .q = fi_attn_tensor_contiguous(q, dc->t, dc->b, dc->hq, dc->lq, dc->d),
        .k = fi_attn_tensor_contiguous(k, dc->t, dc->b, dc->hkv, dc->lk, dc->d),
        .v = fi_attn_tensor_contiguous(v, dc->t, dc->b, dc->hkv, dc->lk, dc->d),
        .mask = m, .mask_in = &in, .score_mod = sm};
    char what[160];
    static const char *seg_names[] = {"", " seg:sorted", " seg:gen+sorted", " seg:descending"};
    snprintf(what, sizeof what, "%s%s%s B%lld Hq%lld/%lld Lq%lld Lk%lld D%lld off%lld %s%s", dc->mask,
             dc->score ? " + " : "", dc->score ? dc->score : "", (long long)dc->b, (long long)dc->hq,
             (long long)dc->hkv, (long long)dc->lq, (long long)dc->lk, (long long)dc->d,
             (long long)dc->q_offset, fi_dtype_name(dc->t), seg_names[dc->seg_style]);
    check_problem(&p, dc->b * dc->hq * dc->lq, dc->d, dc->t, what);
    fi_mask_free(m), fi_score_mod_free(sm);
    free(seg), free(q), free(k), free(v);
}

static void test_masks(void **state) {
    (void)state;
    if (!gpu_test_present()) skip();
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("test_masks"));
    static const char *masks[] = {
        "full", "causal", "window:37", "prefix:50", "chunked:64", "document", "generated",
        "causal & (document | generated)", "!causal", "causal & window:100",
        "window:1 & !causal", /* every row fully masked */
        "prefix:3 & !full | causal & chunked:100",
    };
    static const int64_t gqa[3][2] = {{4, 4}, {8, 2}, {8, 1}};
    const int small = gpu_test_small_shapes();
    const int64_t lq = small ? 70 : 300, lk = small ? 133 : 517;
    int i = 0;
    for (size_t mi = 0; mi < sizeof masks / sizeof *masks; mi++) {
        for (int di = 0; di < 2; di++, i++) {
            dense_case dc = {.mask = masks[mi], .b = 2, .hq = gqa[i % 3][0], .hkv = gqa[i % 3][1],
                             .lq = lq, .lk = lk, .d = di ? 64 : 128,
                             .q_offset = (i % 4 == 1) ? lk - lq : 0,
                             .t = (i % 2) ? FI_DTYPE_F16 : FI_DTYPE_BF16,
                             .per_batch_segments = i % 3 == 2};
            run_dense(&dc, &r);
        }
    }
}

/* PARTIAL blocks through the per-row key intervals: every built-in primitive, their
 * AND, OR/NOT forms that stay one interval (and ones that do not, which fall back to
 * the per-element program), window edges (1, the tile sizes and one off), uneven
 * lengths and offsets, document runs with sorted ids (with and without a generated
 * prefix, shared and per sequence) and unsorted ids (fallback). */
static void test_mask_intervals(void **state) {
    (void)state;
    if (!gpu_test_present()) skip();
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("test_mask_intervals"));
    static const struct {
        const char *mask;
        int seg_style;
    } cases[] = {
        {"causal", 0}, {"window:1", 0}, {"window:63", 0}, {"window:64", 0}, {"window:65", 0},
        {"window:128", 0}, {"window:129", 0}, {"causal & window:100", 0}, {"prefix:77", 0},
        {"prefix:1", 0}, {"chunked:50", 0}, {"chunked:128", 0}, {"chunked:1", 0},
        {"causal & chunked:96", 0}, {"!causal", 0}, {"!prefix:70", 0}, {"prefix:40 | causal", 0},
        {"causal & !window:20", 0},   /* interval: keys <= q - 20 */
        {"window:5 | prefix:3", 0},   /* two pieces for most rows: fallback */
        {"!window:10", 0},            /* two pieces: fallback */
        {"full & causal & !full | prefix:33", 0},
        {"document", SEG_SORTED}, {"causal & document", SEG_SORTED}, {"document & window:40", SEG_SORTED},
        {"generated", SEG_SORTED_GEN}, {"causal & (document | generated)", SEG_SORTED_GEN},
        {"document | generated", SEG_SORTED_GEN}, {"document", SEG_DESCENDING},
        {"causal & document", SEG_DESCENDING},
    };
    static const int64_t shapes[][3] = {/* lq, lk, q_offset */
                                        {300, 517, 0}, {517, 517, 0}, {190, 450, 260}, {129, 65, 0}};
    const int small = gpu_test_small_shapes();
    int i = 0;
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        for (int si = 0; si < (small ? 1 : 2); si++, i++) {
            const int shape = small ? (int)(ci % 4) : (i % 4);
            dense_case dc = {.mask = cases[ci].mask, .b = 2, .hq = 4, .hkv = i % 3 == 0 ? 4 : 1,
                             .lq = shapes[shape][0], .lk = shapes[shape][1], .q_offset = shapes[shape][2],
                             .d = i % 2 ? 64 : 128, .t = (i / 2) % 2 ? FI_DTYPE_F16 : FI_DTYPE_BF16,
                             .per_batch_segments = i % 3 == 1, .seg_style = cases[ci].seg_style};
            if (small) dc.lq = dc.lq > 140 ? 140 : dc.lq, dc.lk = dc.lk > 200 ? 200 : dc.lk;
            if (dc.q_offset) dc.q_offset = dc.lk > dc.lq ? dc.lk - dc.lq : 0; /* queries end with the keys */
            run_dense(&dc, &r);
        }
    }
    /* Long segment rows: the kernels' search for runs that reach past a CTA's rows
     * takes three rounds over 20000 positions. */
    static const char *long_masks[] = {"causal & document", "document & window:700"};
    for (int mi = 0; mi < 2; mi++) {
        dense_case dc = {.mask = long_masks[mi], .b = 1, .hq = 2, .hkv = 1, .lq = small ? 70 : 300,
                         .lk = small ? 3000 : 20000, .d = 64, .t = FI_DTYPE_BF16, .seg_style = SEG_SORTED};
        dc.q_offset = dc.lk - dc.lq - 5 * mi;
        run_dense(&dc, &r);
    }
}

static void test_gqa_and_lengths(void **state) {
    (void)state;
    if (!gpu_test_present()) skip();
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("test_gqa_and_lengths"));
    static const int64_t gqa[3][2] = {{8, 8}, {8, 2}, {16, 2}};
    static const int64_t lens[][2] = {{1, 1}, {127, 129}, {128, 64}, {257, 1000}, {33, 7}};
    const int n_lens = gpu_test_small_shapes() ? 3 : 5;
    for (int g = 0; g < 3; g++)
        for (int li = 0; li < n_lens; li++) {
            dense_case dc = {.mask = li % 2 ? "causal" : "full", .b = 1, .hq = gqa[g][0],
                             .hkv = gqa[g][1], .lq = lens[li][0], .lk = lens[li][1],
                             .d = li % 2 ? 64 : 128, .t = FI_DTYPE_BF16};
            if (dc.lq > 1) run_dense(&dc, &r); /* Lq = 1 is the decode path (test_decode) */
        }
}

static void test_score_mods(void **state) {
    (void)state;
    if (!gpu_test_present()) skip();
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("test_score_mods"));
    const int64_t l = gpu_test_small_shapes() ? 90 : 260;
    static const char *mods[] = {"softcap:5", "alibi", "softcap:30,alibi"};
    for (int i = 0; i < 3; i++) {
        dense_case dc = {.mask = i == 1 ? "full" : "causal", .score = mods[i], .b = 1, .hq = 8,
                         .hkv = 2, .lq = l, .lk = l + 13, .d = i == 2 ? 64 : 128,
                         .t = i == 1 ? FI_DTYPE_F16 : FI_DTYPE_BF16};
        run_dense(&dc, &r);
    }
}

static void test_varlen(void **state) {
    (void)state;
    if (!gpu_test_present()) skip();
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("test_varlen"));
    const int32_t cq[] = {0, 100, 101, 358, 358}, ck[] = {0, 100, 140, 440, 460};
    const int64_t hq = 8, hkv = 2, d = 128, tq = cq[4], tk = ck[4];
    static const char *masks[] = {"causal", "document", "full", "window:50"};
    for (int mi = 0; mi < 4; mi++) {
        const fi_dtype t = mi % 2 ? FI_DTYPE_F16 : FI_DTYPE_BF16;
        uint16_t *q = malloc((size_t)(hq * tq * d) * 2), *k = malloc((size_t)(hkv * tk * d) * 2),
                 *v = malloc((size_t)(hkv * tk * d) * 2);
        gpu_test_fill16(q, hq * tq * d, t, &r, 1.0), gpu_test_fill16(k, hkv * tk * d, t, &r, 1.0), gpu_test_fill16(v, hkv * tk * d, t, &r, 1.0);
        int32_t *seg = make_segments(300, 4, &r);
        fi_mask_inputs in = {.segments = seg, .segments_len = 300, .segments_batch = 4};
        fi_mask *m = NULL;
        fi_error err = {0};
        assert_int_equal(fi_mask_parse(masks[mi], &m, &err), FI_OK);
        fi_attn_params p = {.q = fi_attn_tensor_contiguous(q, t, 1, hq, tq, d),
                            .k = fi_attn_tensor_contiguous(k, t, 1, hkv, tk, d),
                            .v = fi_attn_tensor_contiguous(v, t, 1, hkv, tk, d),
                            .mask = m, .mask_in = &in, .cu_seqlens_q = cq, .cu_seqlens_k = ck,
                            .n_seqs = 4};
        char what[96];
        snprintf(what, sizeof what, "varlen 4 seqs (one empty) %s %s", masks[mi], fi_dtype_name(t));
        check_problem(&p, hq * tq, d, t, what);
        fi_mask_free(m);
        free(seg), free(q), free(k), free(v);
    }
}

/* Paged K/V: pages shuffled in the pool; decode (Lq = 1) and paged prefill. */
static void run_paged(fi_test_rng *r, int64_t lq, int64_t page_size, int splits, const char *mask,
                      int64_t d, fi_dtype t) {
    const int64_t b = 3, hq = 32, hkv = 8;
    int32_t seq_lens[3] = {gpu_test_small_shapes() ? 300 : 2000, 1, 0};
    if (lq > 1) seq_lens[2] = 150;
    const int64_t max_pages = (seq_lens[0] + page_size - 1) / page_size;
    const int64_t n_pages = b * max_pages + 3;
    int32_t *table = malloc((size_t)(b * max_pages) * 4);
    int32_t *perm = malloc((size_t)n_pages * 4);
    for (int64_t i = 0; i < n_pages; i++) perm[i] = (int32_t)i;
    for (int64_t i = n_pages - 1; i > 0; i--) {
        int64_t j = fi_test_rng_int(r, i + 1);
        int32_t x = perm[i];
        perm[i] = perm[j], perm[j] = x;
    }
    for (int64_t i = 0; i < b * max_pages; i++) table[i] = perm[i];
    const int64_t pool = n_pages * hkv * page_size * d;
    uint16_t *kp = malloc((size_t)pool * 2), *vp = malloc((size_t)pool * 2), *q = malloc((size_t)(b * hq * lq * d) * 2);
    gpu_test_fill16(kp, pool, t, r, 1.0), gpu_test_fill16(vp, pool, t, r, 1.0), gpu_test_fill16(q, b * hq * lq * d, t, r, 1.0);
    fi_paged_kv pk = {.k_pages = kp, .v_pages = vp, .dtype = t, .n_pages = n_pages,
                      .page_size = page_size, .heads = hkv, .dim = d, .page_table = table,
                      .max_pages_per_seq = max_pages, .seq_lens = seq_lens};
    const int64_t q_offset = lq == 1 ? seq_lens[0] - 1 : 40;
    int32_t *seg = make_segments(seq_lens[0] + lq + q_offset, 1, r);
    fi_mask_inputs in = {.segments = seg, .segments_len = seq_lens[0] + lq + q_offset, .q_offset = q_offset};
    fi_mask *m = NULL;
    fi_error err = {0};
    assert_int_equal(fi_mask_parse(mask, &m, &err), FI_OK);
    fi_attn_params p = {.q = fi_attn_tensor_contiguous(q, t, b, hq, lq, d), .paged_kv = &pk,
                        .mask = m, .mask_in = &in, .num_splits = splits};
    char what[128];
    snprintf(what, sizeof what, "paged Lq%lld page%lld splits%d %s D%lld %s", (long long)lq,
             (long long)page_size, splits, mask, (long long)d, fi_dtype_name(t));
    check_problem(&p, b * hq * lq, d, t, what);
    fi_mask_free(m);
    free(seg), free(table), free(perm), free(kp), free(vp), free(q);
}

static void test_decode(void **state) {
    (void)state;
    if (!gpu_test_present()) skip();
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("test_decode"));
    run_paged(&r, 1, 16, 0, "full", 128, FI_DTYPE_BF16);
    run_paged(&r, 1, 16, 1, "full", 128, FI_DTYPE_BF16);
    run_paged(&r, 1, 7, 5, "causal & window:300", 128, FI_DTYPE_F16);
    run_paged(&r, 1, 64, 0, "document | generated", 64, FI_DTYPE_BF16);
    run_paged(&r, 1, 3, 0, "prefix:0", 64, FI_DTYPE_F16); /* every key masked */
    run_paged(&r, 37, 16, 0, "causal", 128, FI_DTYPE_BF16);
    run_paged(&r, 130, 5, 0, "causal & window:64", 64, FI_DTYPE_F16);
}

static void test_f32_inputs(void **state) {
    (void)state;
    if (!gpu_test_present()) skip();
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("test_f32_inputs"));
    const int64_t hq = 4, l = 150, d = 64, n = hq * l * d;
    float *q = malloc((size_t)n * 4), *k = malloc((size_t)n * 4), *v = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++)
        q[i] = (float)fi_test_rng_normal(&r), k[i] = (float)fi_test_rng_normal(&r), v[i] = (float)fi_test_rng_normal(&r);
    fi_mask *m = NULL;
    fi_error err = {0};
    assert_int_equal(fi_mask_parse("causal", &m, &err), FI_OK);
    fi_attn_params p = {.q = fi_attn_tensor_contiguous(q, FI_DTYPE_F32, 1, hq, l, d),
                        .k = fi_attn_tensor_contiguous(k, FI_DTYPE_F32, 1, hq, l, d),
                        .v = fi_attn_tensor_contiguous(v, FI_DTYPE_F32, 1, hq, l, d), .mask = m};
    /* f32 inputs travel as f16: the f16 bound plus the inputs' own rounding. */
    check_problem(&p, hq * l, d, FI_DTYPE_BF16, "f32 host inputs (uploaded as f16)");
    fi_mask_free(m);
    free(q), free(k), free(v);
}

static bool keep_even(int64_t b, int64_t h, int64_t q, int64_t kv, void *ctx) {
    (void)b, (void)h, (void)q, (void)ctx;
    return kv % 2 == 0;
}

static void test_bad_input(void **state) {
    (void)state;
    if (!gpu_test_present()) skip();
    uint16_t buf[2 * 96 * 4] = {0};
    float out[2 * 96 * 4];
    fi_error err = {0};
    fi_attn_params p = {.q = fi_attn_tensor_contiguous(buf, FI_DTYPE_BF16, 1, 1, 4, 96),
                        .k = fi_attn_tensor_contiguous(buf, FI_DTYPE_BF16, 1, 1, 4, 96),
                        .v = fi_attn_tensor_contiguous(buf, FI_DTYPE_BF16, 1, 1, 4, 96), .out = out};
    assert_int_equal(fi_cuda_attn_forward(&p, &err), FI_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "head dim"));
    p.q = fi_attn_tensor_contiguous(buf, FI_DTYPE_BF16, 1, 3, 2, 64);
    p.k = p.v = fi_attn_tensor_contiguous(buf, FI_DTYPE_BF16, 1, 2, 2, 64);
    assert_int_equal(fi_cuda_attn_forward(&p, &err), FI_ERR_INVALID);
    p.k = p.v = p.q;
    fi_mask *m = NULL;
    assert_int_equal(fi_mask_from_callback(keep_even, NULL, false, &m, &err), FI_OK);
    p.mask = m;
    assert_int_equal(fi_cuda_attn_forward(&p, &err), FI_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "callback"));
    fi_mask_free(m);
    /* The device API refuses f32 device tensors. */
    p.mask = NULL;
    p.q = p.k = p.v = fi_attn_tensor_contiguous(buf, FI_DTYPE_F32, 1, 1, 2, 64);
    assert_int_equal(fi_cuda_attn_forward_device(&p, &err), FI_ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_masks),       cmocka_unit_test(test_mask_intervals),
        cmocka_unit_test(test_gqa_and_lengths),
        cmocka_unit_test(test_score_mods),  cmocka_unit_test(test_varlen),
        cmocka_unit_test(test_decode),      cmocka_unit_test(test_f32_inputs),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
