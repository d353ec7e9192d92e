/* Run-time compiled mask/score expressions (NVRTC) against the double-precision CPU
 * reference driven by equivalent C callbacks: an arithmetic mask, a document mask
 * through a user int array, a per-head bias from a float array under a tanh softcap,
 * expressions combined with the built-in mask language, GQA, q_offset, fully masked
 * rows and problems, q_len 1, varlen with a mask that depends on sequence and head, compile errors (also without a GPU), the in-memory
 * kernel cache (a second plan does not recompile) and the on-disk cache.
 * FI_GPU_TEST_SMALL=1 shrinks the shapes; FI_TEST_KERNEL_CACHE=DIR keeps compiled
 * kernels between runs (e.g. the compute-sanitizer pass). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <cuda_runtime_api.h>

#include "core/dtype.h"
#include "cuda/nvrtc_program.h"
#include "flexinfer.h"
#include "flexinfer_cuda.h"
#include "gpu_test_support.h"
#include "test_support.h"


/* ---- the CPU side of each expression ------------------------------------------ */

typedef struct expr_ctx {
    const int32_t *doc;
    int64_t doc_len;
    const float *bias;
    const int32_t *lim;
} expr_ctx;

/* "(q - kv) % 3 != 0 && kv <= q" */
static bool mask_mod3(int64_t b, int64_t h, int64_t q, int64_t kv, void *ctx) {
    (void)b, (void)h, (void)ctx;
    return (q - kv) % 3 != 0 && kv <= q;
}

/* "doc[q] == doc[kv] && kv <= q" (the GPU reads 0 outside the array) */
static int32_t doc_at(const expr_ctx *c, int64_t i) { return i >= 0 && i < c->doc_len ? c->doc[i] : 0; }
static bool mask_doc(int64_t b, int64_t h, int64_t q, int64_t kv, void *ctx) {
    (void)b, (void)h;
    const expr_ctx *c = ctx;
    return doc_at(c, q) == doc_at(c, kv) && kv <= q;
}

/* "(kv & 7) != 3" */
static bool mask_kv7(int64_t b, int64_t h, int64_t q, int64_t kv, void *ctx) {
    (void)b, (void)h, (void)q, (void)ctx;
    return (kv & 7) != 3;
}

/* "q % 5 != 0 && kv <= q && kv >= lim[0]" */
static bool mask_rows5(int64_t b, int64_t h, int64_t q, int64_t kv, void *ctx) {
    (void)b, (void)h;
    const expr_ctx *c = ctx;
    return q % 5 != 0 && kv <= q && kv >= c->lim[0];
}

/* "(b + h + kv) % 4 != 0 && kv <= q + 3 * b": differs per sequence and head */
static bool mask_bh(int64_t b, int64_t h, int64_t q, int64_t kv, void *ctx) {
    (void)ctx;
    return (b + h + kv) % 4 != 0 && kv <= q + 3 * b;
}

/* "20.f * tanhf((score + bias[h]) / 20.f)" */
static float score_bias_cap(float s, int64_t b, int64_t h, int64_t q, int64_t kv, void *ctx) {
    (void)b, (void)q, (void)kv;
    const expr_ctx *c = ctx;
    return (float)(20.0 * tanh(((double)s + c->bias[h]) / 20.0));
}

/* ---- running one problem both ways ---------------------------------------------- */

typedef struct expr_case {
    const char *what;
    const char *builtin_mask; /* NULL: none */
    fi_mask_fn mask_fn;       /* CPU side of x.mask_expr */
    fi_score_fn score_fn;     /* CPU side of x.score_expr */
    int64_t b, hq, hkv, lq, lk, d, q_offset;
    fi_dtype t;
} expr_case;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* Returns the number of fully masked rows seen (LSE -inf on both sides). */
static int64_t run_case(const expr_case *c, const fi_cuda_expr *x, expr_ctx *ctx, fi_cuda_kernel_cache *cache,
                        fi_test_rng *r) {
    const int64_t nq = c->b * c->hq * c->lq * c->d, nk = c->b * c->hkv * c->lk * c->d;
    const int64_t rows = c->b * c->hq * c->lq;
    uint16_t *q = malloc((size_t)nq * 2), *k = malloc((size_t)nk * 2), *v = malloc((size_t)nk * 2);
    float *o = malloc((size_t)nq * 4), *ro = malloc((size_t)nq * 4), *l = malloc((size_t)rows * 4),
          *rl = malloc((size_t)rows * 4);
    assert_true(q && k && v && o && ro && l && rl);
    gpu_test_fill16(q, nq, c->t, r, 1.0), gpu_test_fill16(k, nk, c->t, r, 1.0), gpu_test_fill16(v, nk, c->t, r, 1.0);
    for (int64_t i = 0; i < nq; i++) o[i] = NAN; /* every element must be written */
    for (int64_t i = 0; i < rows; i++) l[i] = NAN;
    fi_error err = {0};
    fi_mask *builtin = NULL, *cb = NULL, *both = NULL;
    fi_score_mod *sm = NULL;
    if (c->builtin_mask) assert_int_equal(fi_mask_parse(c->builtin_mask, &builtin, &err), FI_OK);
    fi_mask_inputs in = {.q_offset = c->q_offset};
    fi_attn_params p = {.q = fi_attn_tensor_contiguous(q, c->t, c->b, c->hq, c->lq, c->d),
                        .k = fi_attn_tensor_contiguous(k, c->t, c->b, c->hkv, c->lk, c->d),
                        .v = fi_attn_tensor_contiguous(v, c->t, c->b, c->hkv, c->lk, c->d),
                        .mask_in = &in};
    /* Reference: built-in mask AND the callback, score callback. */
    if (c->mask_fn) {
        assert_int_equal(fi_mask_from_callback(c->mask_fn, ctx, false, &cb, &err), FI_OK);
        if (builtin) {
            fi_mask *copy = NULL;
            assert_int_equal(fi_mask_parse(c->builtin_mask, &copy, &err), FI_OK);
            assert_int_equal(fi_mask_and(copy, cb, &both, &err), FI_OK);
            cb = NULL;
        }
    }
    if (c->score_fn) assert_int_equal(fi_score_mod_from_callback(c->score_fn, ctx, &sm, &err), FI_OK);
    p.mask = both ? both : cb ? cb : builtin;
    p.score_mod = sm;
    p.out = ro, p.lse = rl;
    assert_int_equal(fi_attn_reference(&p, &err), FI_OK);

    /* GPU: built-in mask plus the expressions. */
    p.mask = builtin, p.score_mod = NULL;
    p.out = o, p.lse = l;
    const double t0 = now_ms();
    const fi_status st = fi_cuda_attn_forward_expr(&p, x, cache, &err);
    const double ms = now_ms() - t0;
    if (st) printf("%s: %s\n", c->what, err.msg);
    assert_int_equal(st, FI_OK);

    double max_o = 0, max_lse = 0;
    int64_t bad = 0, masked_rows = 0;
    for (int64_t i = 0; i < nq; i++) {
        if (!isfinite(o[i])) bad++;
        else if (fabs(o[i] - ro[i]) > max_o) max_o = fabs(o[i] - ro[i]);
    }
    for (int64_t i = 0; i < rows; i++) {
        if (isinf(rl[i]) || isinf(l[i])) {
            if (isinf(rl[i]) && isinf(l[i]) && rl[i] < 0 && l[i] < 0) masked_rows++;
            else bad++;
        } else if (isnan(l[i])) {
            bad++;
        } else if (fabs(l[i] - rl[i]) > max_lse) {
            max_lse = fabs(l[i] - rl[i]);
        }
    }
    printf("  %-58s max|dO| %.2e  max|dLSE| %.2e  masked rows %lld  (%.0f ms)%s\n", c->what, max_o, max_lse,
           (long long)masked_rows, ms, bad ? "  (inf/NaN mismatch)" : "");
    assert_int_equal(bad, 0);
    assert_true(max_o <= (c->t == FI_DTYPE_BF16 ? BOUND_O_BF16 : BOUND_O_F16));
    assert_true(max_lse <= BOUND_LSE);
    fi_mask_free(builtin), fi_mask_free(both), fi_mask_free(cb), fi_score_mod_free(sm);
    free(q), free(k), free(v), free(o), free(ro), free(l), free(rl);
    return masked_rows;
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_arith_mask(void **state) {
    if (!gpu_test_present()) skip();
    fi_cuda_kernel_cache *cache = *state;
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("test_arith_mask"));
    const int64_t l = gpu_test_small_shapes() ? 150 : 333;
    fi_cuda_expr x = {.mask_expr = "(q - kv) % 3 != 0 && kv <= q"};
    expr_case c1 = {"(q-kv)%3!=0 && kv<=q, GQA 8/2", NULL, mask_mod3, NULL, 2, 8, 2, l, l, 128, 0, FI_DTYPE_BF16};
    run_case(&c1, &x, NULL, cache, &r);
    /* Same kernel, with the built-in language ANDed in and a q offset. */
    expr_case c2 = {"... & window:100, q_offset 40, GQA 4/1", "window:100", mask_mod3, NULL, 1, 4, 1, l - 40, l,
                    128, 40, FI_DTYPE_BF16};
    run_case(&c2, &x, NULL, cache, &r);
}

static void test_document_array(void **state) {
    if (!gpu_test_present()) skip();
    fi_cuda_kernel_cache *cache = *state;
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("test_document_array"));
    const int64_t l = gpu_test_small_shapes() ? 200 : 700;
    int32_t *doc = malloc((size_t)l * 4);
    int32_t id = 0;
    for (int64_t i = 0; i < l; i++) {
        if (fi_test_rng_int(&r, 90) == 0) id++;
        doc[i] = id;
    }
    expr_ctx ctx = {.doc = doc, .doc_len = l};
    fi_cuda_expr x = {.mask_expr = "doc[q] == doc[kv] && kv <= q", .n_arrays = 1};
    x.arrays[0] = (fi_cuda_expr_array){"doc", FI_CUDA_ARRAY_INT32, l, doc};
    expr_case c1 = {"document via doc[] && causal, D64 f16", NULL, mask_doc, NULL, 1, 4, 4, l, l, 64, 0,
                    FI_DTYPE_F16};
    run_case(&c1, &x, &ctx, cache, &r);
    /* q_len 1 (decode shape) runs the compiled prefill kernel too. */
    expr_case c2 = {"document via doc[], Lq 1 at the end", NULL, mask_doc, NULL, 2, 8, 2, 1, l, 64, l - 1,
                    FI_DTYPE_F16};
    run_case(&c2, &x, &ctx, cache, &r);
    free(doc);
}

static void test_score_bias_softcap(void **state) {
    if (!gpu_test_present()) skip();
    fi_cuda_kernel_cache *cache = *state;
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("test_score_bias_softcap"));
    const int64_t hq = 8, l = gpu_test_small_shapes() ? 140 : 300;
    float bias[8];
    for (int i = 0; i < 8; i++) bias[i] = (float)fi_test_rng_uniform(&r, -3.0, 3.0);
    expr_ctx ctx = {.bias = bias};
    fi_cuda_expr x = {.mask_expr = "(kv & 7) != 3", .score_expr = "20.f * tanhf((score + bias[h]) / 20.f)",
                      .n_arrays = 1};
    x.arrays[0] = (fi_cuda_expr_array){"bias", FI_CUDA_ARRAY_FLOAT32, hq, bias};
    expr_case c = {"causal & (kv&7)!=3, softcap(score+bias[h]), GQA 8/2", "causal", mask_kv7, score_bias_cap,
                   2, hq, 2, l, l + 21, 128, 21, FI_DTYPE_BF16};
    run_case(&c, &x, &ctx, cache, &r);
}

static void test_fully_masked(void **state) {
    if (!gpu_test_present()) skip();
    fi_cuda_kernel_cache *cache = *state;
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("test_fully_masked"));
    const int64_t l = gpu_test_small_shapes() ? 130 : 260;
    int32_t lim = 0;
    expr_ctx ctx = {.lim = &lim};
    fi_cuda_expr x = {.mask_expr = "q % 5 != 0 && kv <= q && kv >= lim[0]", .n_arrays = 1};
    x.arrays[0] = (fi_cuda_expr_array){"lim", FI_CUDA_ARRAY_INT32, 1, &lim};
    expr_case c = {"q%5!=0 && causal: every 5th row fully masked", NULL, mask_rows5, NULL, 1, 2, 2, l, l, 64, 0,
                   FI_DTYPE_BF16};
    const int64_t rows = run_case(&c, &x, &ctx, cache, &r);
    assert_int_equal(rows, 2 * ((l + 4) / 5)); /* rows 0, 5, 10, ... of both heads */
    /* Every key masked: all tiles EMPTY, O = 0, LSE = -inf everywhere (same kernel). */
    lim = 1 << 30;
    c.what = "everything masked (lim[0] huge)";
    assert_int_equal(run_case(&c, &x, &ctx, cache, &r), 2 * l);
}

/* Varlen (b is the sequence) with a mask that depends on b and h: the tile lists are
 * per sequence and head. */
static void test_varlen_heads(void **state) {
    if (!gpu_test_present()) skip();
    fi_cuda_kernel_cache *cache = *state;
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("test_varlen_heads"));
    const int32_t cq[] = {0, 150, 150, 410}, ck[] = {0, 170, 200, 470};
    const int64_t hq = 4, hkv = 2, d = 128, tq = cq[3], tk = ck[3];
    const fi_dtype t = FI_DTYPE_BF16;
    uint16_t *q = malloc((size_t)(hq * tq * d) * 2), *k = malloc((size_t)(hkv * tk * d) * 2),
             *v = malloc((size_t)(hkv * tk * d) * 2);
    float *o = malloc((size_t)(hq * tq * d) * 4), *ro = malloc((size_t)(hq * tq * d) * 4);
    float *l = malloc((size_t)(hq * tq) * 4), *rl = malloc((size_t)(hq * tq) * 4);
    assert_true(q && k && v && o && ro && l && rl);
    gpu_test_fill16(q, hq * tq * d, t, &r, 1.0), gpu_test_fill16(k, hkv * tk * d, t, &r, 1.0),
        gpu_test_fill16(v, hkv * tk * d, t, &r, 1.0);
    for (int64_t i = 0; i < hq * tq * d; i++) o[i] = NAN;
    fi_error err = {0};
    fi_mask *cb = NULL;
    assert_int_equal(fi_mask_from_callback(mask_bh, NULL, true, &cb, &err), FI_OK);
    fi_attn_params p = {.q = fi_attn_tensor_contiguous(q, t, 1, hq, tq, d),
                        .k = fi_attn_tensor_contiguous(k, t, 1, hkv, tk, d),
                        .v = fi_attn_tensor_contiguous(v, t, 1, hkv, tk, d),
                        .mask = cb, .cu_seqlens_q = cq, .cu_seqlens_k = ck, .n_seqs = 3, .out = ro, .lse = rl};
    assert_int_equal(fi_attn_reference(&p, &err), FI_OK);
    fi_cuda_expr x = {.mask_expr = "(b + h + kv) % 4 != 0 && kv <= q + 3 * b"};
    p.mask = NULL, p.out = o, p.lse = l;
    const fi_status st = fi_cuda_attn_forward_expr(&p, &x, cache, &err);
    if (st) printf("varlen: %s\n", err.msg);
    assert_int_equal(st, FI_OK);
    double max_o = 0, max_lse = 0;
    int64_t bad = 0;
    for (int64_t i = 0; i < hq * tq * d; i++) {
        if (!isfinite(o[i])) bad++;
        else if (fabs(o[i] - ro[i]) > max_o) max_o = fabs(o[i] - ro[i]);
    }
    for (int64_t i = 0; i < hq * tq; i++) {
        if (isinf(rl[i]) || isinf(l[i])) bad += !(isinf(rl[i]) && isinf(l[i]));
        else if (fabs(l[i] - rl[i]) > max_lse) max_lse = fabs(l[i] - rl[i]);
    }
    printf("  %-58s max|dO| %.2e  max|dLSE| %.2e\n", "varlen 3 seqs (one empty), mask over b and h", max_o, max_lse);
    assert_int_equal(bad, 0);
    assert_true(max_o <= BOUND_O_BF16);
    assert_true(max_lse <= BOUND_LSE);
    fi_mask_free(cb);
    free(q), free(k), free(v), free(o), free(ro), free(l), free(rl);
}

static void test_compile_errors(void **state) {
    (void)state;
    fi_error err = {0};
    size_t size = 0;
    /* Compiles without a GPU: the checks run wherever NVRTC is installed. */
    fi_cuda_expr bad = {.mask_expr = "q >= kvv"};
    assert_int_equal(fi_nvrtc_compile_check(&bad, 64, true, false, 90, &size, &err), FI_ERR_INVALID);
    printf("  compile error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "kvv"));
    assert_non_null(strstr(err.msg, "mask-expr"));
    fi_cuda_expr bad_score = {.score_expr = "score * bias[h]"};
    assert_int_equal(fi_nvrtc_compile_check(&bad_score, 64, true, true, 90, &size, &err), FI_ERR_INVALID);
    assert_non_null(strstr(err.msg, "bias"));
    fi_cuda_expr stmt = {.mask_expr = "1; }"};
    assert_int_equal(fi_nvrtc_compile_check(&stmt, 64, true, false, 90, &size, &err), FI_ERR_INVALID);
    assert_non_null(strstr(err.msg, "';'"));
    fi_cuda_expr paren = {.mask_expr = "(q > kv"};
    assert_int_equal(fi_nvrtc_compile_check(&paren, 64, true, false, 90, &size, &err), FI_ERR_INVALID);
    fi_cuda_expr none = {0};
    assert_int_equal(fi_nvrtc_compile_check(&none, 64, true, false, 90, &size, &err), FI_ERR_INVALID);
    int32_t a = 0;
    fi_cuda_expr badname = {.mask_expr = "kv <= q", .n_arrays = 1};
    badname.arrays[0] = (fi_cuda_expr_array){"q", FI_CUDA_ARRAY_INT32, 1, &a};
    assert_int_equal(fi_nvrtc_compile_check(&badname, 64, true, false, 90, &size, &err), FI_ERR_INVALID);
    badname.arrays[0].name = "2x";
    assert_int_equal(fi_nvrtc_compile_check(&badname, 64, true, false, 90, &size, &err), FI_ERR_INVALID);
    badname.arrays[0].name = "ok_name";
    badname.arrays[0].data = NULL;
    assert_int_equal(fi_nvrtc_compile_check(&badname, 64, true, false, 90, &size, &err), FI_ERR_INVALID);

    if (!gpu_test_present()) return;
    /* Through the public API: a clear status, no crash, output untouched. */
    uint16_t buf[2 * 64] = {0};
    float out[2 * 64];
    fi_attn_params p = {.q = fi_attn_tensor_contiguous(buf, FI_DTYPE_BF16, 1, 1, 2, 64),
                        .k = fi_attn_tensor_contiguous(buf, FI_DTYPE_BF16, 1, 1, 2, 64),
                        .v = fi_attn_tensor_contiguous(buf, FI_DTYPE_BF16, 1, 1, 2, 64), .out = out};
    assert_int_equal(fi_cuda_attn_forward_expr(&p, &bad, NULL, &err), FI_ERR_INVALID);
    assert_non_null(strstr(err.msg, "kvv"));
}

/* Plans with the same expression share one compiled module; the disk cache serves a
 * fresh cache object without compiling. */
static void test_cache(void **state) {
    (void)state;
    if (!gpu_test_present()) skip();
    fi_error err = {0};
    char dir[] = "/tmp/fi_kernel_cache_XXXXXX";
    assert_non_null(mkdtemp(dir));
    fi_cuda_kernel_cache *cache = NULL;
    assert_int_equal(fi_cuda_kernel_cache_create(dir, &cache, &err), FI_OK);
    const int64_t l = 96, d = 64;
    uint16_t *q = calloc((size_t)(l * d), 2);
    void *dq = NULL;
    float *dout = NULL;
    /* Device API: plans own nothing of the inputs. */
    assert_int_equal(cudaMalloc(&dq, (size_t)(l * d) * 2), 0);
    assert_int_equal(cudaMalloc((void **)&dout, (size_t)(l * d) * 4), 0);
    fi_attn_params p = {.q = fi_attn_tensor_contiguous(dq, FI_DTYPE_BF16, 1, 1, l, d),
                        .k = fi_attn_tensor_contiguous(dq, FI_DTYPE_BF16, 1, 1, l, d),
                        .v = fi_attn_tensor_contiguous(dq, FI_DTYPE_BF16, 1, 1, l, d), .out = dout};
    fi_cuda_expr x = {.mask_expr = "kv <= q + 7"};
    fi_cuda_attn_plan *p1 = NULL, *p2 = NULL, *p3 = NULL;
    double t0 = now_ms();
    assert_int_equal(fi_cuda_attn_plan_create_expr(&p, &x, cache, &p1, &err), FI_OK);
    const double ms_compile = now_ms() - t0;
    fi_cuda_kernel_cache_stats s = fi_cuda_kernel_cache_get_stats(cache);
    assert_int_equal(s.compiles, 1);
    assert_int_equal(s.memory_hits, 0);
    t0 = now_ms();
    assert_int_equal(fi_cuda_attn_plan_create_expr(&p, &x, cache, &p2, &err), FI_OK);
    const double ms_hit = now_ms() - t0;
    s = fi_cuda_kernel_cache_get_stats(cache);
    assert_int_equal(s.compiles, 1);
    assert_int_equal(s.memory_hits, 1);
    assert_int_equal(fi_cuda_attn_plan_run(p1, NULL, &err), FI_OK);
    assert_int_equal(fi_cuda_attn_plan_run(p2, NULL, &err), FI_OK);
    fi_cuda_attn_plan_free(p1);
    fi_cuda_attn_plan_free(p2);
    fi_cuda_kernel_cache_free(cache);

    /* A new cache on the same directory loads the kernel instead of compiling. */
    assert_int_equal(fi_cuda_kernel_cache_create(dir, &cache, &err), FI_OK);
    t0 = now_ms();
    assert_int_equal(fi_cuda_attn_plan_create_expr(&p, &x, cache, &p3, &err), FI_OK);
    const double ms_disk = now_ms() - t0;
    printf("  plan with compile %.0f ms, from memory %.1f ms, from disk %.1f ms\n", ms_compile, ms_hit, ms_disk);
    s = fi_cuda_kernel_cache_get_stats(cache);
    assert_int_equal(s.compiles, 0);
    assert_int_equal(s.disk_hits, 1);
    assert_int_equal(fi_cuda_attn_plan_run(p3, NULL, &err), FI_OK);
    fi_cuda_attn_plan_free(p3);
    fi_cuda_kernel_cache_free(cache);
    assert_int_equal(fi_cuda_kernel_cache_create("/nonexistent/dir", &cache, &err), FI_ERR_IO);

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    cudaFree(dq), cudaFree(dout);
    free(q);
}

/* FI_EXPR_TIMING=1: kernel times of expression plans next to the built-in
 * equivalents (B1 H32 L4096 D128 bf16, CUDA events, median of 10 runs after 3). Prints
 * only: timings are not asserted. */
static double plan_ms(const fi_attn_params *p, const fi_cuda_expr *x, fi_cuda_kernel_cache *cache) {
    fi_error err = {0};
    fi_cuda_attn_plan *plan = NULL;
    assert_int_equal(fi_cuda_attn_plan_create_expr(p, x, cache, &plan, &err), FI_OK);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    double ms[10];
    for (int i = 0; i < 13; i++) {
        cudaEventRecord(e0, NULL);
        assert_int_equal(fi_cuda_attn_plan_run(plan, NULL, &err), FI_OK);
        cudaEventRecord(e1, NULL);
        cudaEventSynchronize(e1);
        float t = 0;
        cudaEventElapsedTime(&t, e0, e1);
        if (i >= 3) ms[i - 3] = t;
    }
    for (int i = 0; i < 10; i++) /* insertion sort for the median */
        for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) {
            const double tmp = ms[j];
            ms[j] = ms[j - 1], ms[j - 1] = tmp;
        }
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    fi_cuda_attn_plan_free(plan);
    return 0.5 * (ms[4] + ms[5]);
}

static void test_timing(void **state) {
    const char *on = getenv("FI_EXPR_TIMING");
    if (!on || !*on || *on == '0' || !gpu_test_present()) skip();
    fi_cuda_kernel_cache *cache = *state;
    const int64_t h = 32, l = 4096, d = 128, n = h * l * d;
    void *dq, *dk, *dv, *dout;
    assert_int_equal(cudaMalloc(&dq, (size_t)n * 2), 0);
    assert_int_equal(cudaMalloc(&dk, (size_t)n * 2), 0);
    assert_int_equal(cudaMalloc(&dv, (size_t)n * 2), 0);
    assert_int_equal(cudaMalloc(&dout, (size_t)n * 4), 0);
    cudaMemset(dq, 0, (size_t)n * 2), cudaMemset(dk, 0, (size_t)n * 2), cudaMemset(dv, 0, (size_t)n * 2);
    fi_attn_params p = {.q = fi_attn_tensor_contiguous(dq, FI_DTYPE_BF16, 1, h, l, d),
                        .k = fi_attn_tensor_contiguous(dk, FI_DTYPE_BF16, 1, h, l, d),
                        .v = fi_attn_tensor_contiguous(dv, FI_DTYPE_BF16, 1, h, l, d), .out = dout};
    fi_error err = {0};
    fi_mask *causal = NULL;
    fi_score_mod *cap = NULL;
    assert_int_equal(fi_mask_parse("causal", &causal, &err), FI_OK);
    assert_int_equal(fi_score_mod_parse("softcap:30", &cap, &err), FI_OK);
    const double causal_flops = 4.0 * (double)h * (double)l * (double)(l + 1) / 2 * (double)d;
    struct {
        const char *what;
        const fi_mask *mask;
        const fi_score_mod *score;
        fi_cuda_expr x;
        double flops;
    } rows[] = {
        {"built-in causal", causal, NULL, {0}, causal_flops},
        {"expression kv <= q", NULL, NULL, {.mask_expr = "kv <= q"}, causal_flops},
        {"causal & expression (q - kv) % 3 != 0", causal, NULL, {.mask_expr = "(q - kv) % 3 != 0"}, causal_flops * 2 / 3},
        {"built-in causal, softcap:30", causal, cap, {0}, causal_flops},
        {"causal, expression 30.f * tanhf(score / 30.f)", causal, NULL,
         {.score_expr = "30.f * tanhf(score / 30.f)"}, causal_flops},
    };
    printf("  B1 H%lld L%lld D%lld bf16 (median of 10 runs; GFLOP counts only kept pairs)\n", (long long)h, (long long)l,
           (long long)d);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        p.mask = rows[i].mask, p.score_mod = rows[i].score;
        const bool expr = rows[i].x.mask_expr || rows[i].x.score_expr;
        const double ms = plan_ms(&p, expr ? &rows[i].x : NULL, cache);
        printf("  %-48s %8.3f ms  %6.1f TFLOP/s\n", rows[i].what, ms, rows[i].flops / ms * 1e-9);
    }
    fi_mask_free(causal), fi_score_mod_free(cap);
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dout);
}

static int setup(void **state) {
    fi_error err = {0};
    fi_cuda_kernel_cache *cache = NULL;
    const char *dir = getenv("FI_TEST_KERNEL_CACHE");
    if (fi_cuda_kernel_cache_create(dir, &cache, &err)) {
        printf("kernel cache: %s\n", err.msg);
        return -1;
    }
    *state = cache;
    return 0;
}

static int teardown(void **state) {
    fi_cuda_kernel_cache *cache = *state;
    fi_cuda_kernel_cache_stats s = fi_cuda_kernel_cache_get_stats(cache);
    printf("kernel cache: %lld compiles, %lld memory hits, %lld disk hits\n", (long long)s.compiles,
           (long long)s.memory_hits, (long long)s.disk_hits);
    fi_cuda_kernel_cache_free(cache);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compile_errors),     cmocka_unit_test(test_arith_mask),
        cmocka_unit_test(test_document_array),     cmocka_unit_test(test_score_bias_softcap),
        cmocka_unit_test(test_fully_masked),       cmocka_unit_test(test_varlen_heads),
        cmocka_unit_test(test_cache),              cmocka_unit_test(test_timing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
