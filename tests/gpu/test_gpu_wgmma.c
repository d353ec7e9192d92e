/* The Hopper prefill kernel (src/cuda/flash_fwd_wgmma.cuh) at its own edges, and the
 * portable kernel on the same cases: every case runs twice against the
 * double-precision CPU reference, once as dispatched (the wgmma kernel on a compute
 * capability 9.0 device) and once with FI_CUDA_WGMMA=0. The edges: 128-key blocks
 * with a ragged last block (Lk not a multiple of 128, Lk < 128), query blocks of two
 * 64-row warpgroups with Lq < 64 or 64 < Lq < 128, long key loops through the 3-stage
 * ring, EMPTY/FULL/PARTIAL mixes at 128 x 128 tiles, every key masked (and score
 * modifiers, which dispatch keeps on the portable kernel). Inputs are drawn as bf16/f16 values (the reference sees the same numbers).
 * FI_GPU_TEST_SMALL=1 keeps only the small shapes (compute-sanitizer runs). */
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

static int device_is_hopper(void) {
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    return major == 9 && minor == 0;
}

typedef struct edge_case {
    const char *mask, *score;
    int64_t hq, hkv, lq, lk, d, q_offset;
    fi_dtype t;
} edge_case;

/* The kernel a plan for p would run (the plan is built, never run). */
static const char *planned_kernel(const fi_attn_params *p) {
    fi_cuda_attn_plan *plan = NULL;
    fi_error err = {0};
    static char name[32];
    const fi_status st = fi_cuda_attn_plan_create(p, &plan, &err);
    if (st) printf("plan: %s\n", err.msg);
    assert_int_equal(st, FI_OK);
    snprintf(name, sizeof name, "%s", fi_cuda_attn_plan_kernel(plan));
    fi_cuda_attn_plan_free(plan);
    return name;
}

/* GPU vs reference for one kernel choice; returns after asserting the bounds. */
static void check_once(fi_attn_params p, const float *ro, const float *rl, int64_t rows, int64_t d,
                       fi_dtype t, const char *what, const char *kernel) {
    float *o = malloc((size_t)(rows * d) * 4), *l = malloc((size_t)rows * 4);
    assert_non_null(o), assert_non_null(l);
    for (int64_t i = 0; i < rows * d; i++) o[i] = NAN; /* poison: every element must be written */
    for (int64_t i = 0; i < rows; i++) l[i] = NAN;
    p.out = o, p.lse = l;
    fi_error err = {0};
    fi_status st = fi_cuda_attn_forward(&p, &err);
    if (st) printf("%s: %s\n", what, err.msg);
    assert_int_equal(st, FI_OK);
    double max_o = 0, max_lse = 0;
    int64_t bad = 0;
    for (int64_t i = 0; i < rows * d; i++) {
        if (!isfinite(o[i])) bad++;
        else if (fabs(o[i] - ro[i]) > max_o) max_o = fabs(o[i] - ro[i]);
    }
    for (int64_t i = 0; i < rows; i++) {
        if (isinf(rl[i]) || isinf(l[i])) {
            if (!(isinf(rl[i]) && isinf(l[i]) && rl[i] < 0 && l[i] < 0)) bad++;
        } else if (isnan(l[i])) {
            bad++;
        } else if (fabs(l[i] - rl[i]) > max_lse) {
            max_lse = fabs(l[i] - rl[i]);
        }
    }
    printf("  %-13s %-58s max|dO| %.2e  max|dLSE| %.2e%s\n", kernel, what, max_o, max_lse,
           bad ? "  (inf/NaN mismatch)" : "");
    assert_int_equal(bad, 0);
    assert_true(max_o <= (t == FI_DTYPE_BF16 ? BOUND_O_BF16 : BOUND_O_F16));
    assert_true(max_lse <= BOUND_LSE);
    free(o), free(l);
}

static void run_edge(const edge_case *ec, fi_test_rng *r) {
    const int64_t nq = ec->hq * ec->lq * ec->d, nk = ec->hkv * ec->lk * ec->d, rows = ec->hq * ec->lq;
    uint16_t *q = malloc((size_t)nq * 2), *k = malloc((size_t)nk * 2), *v = malloc((size_t)nk * 2);
    float *ro = malloc((size_t)(rows * ec->d) * 4), *rl = malloc((size_t)rows * 4);
    assert_non_null(q), assert_non_null(k), assert_non_null(v), assert_non_null(ro), assert_non_null(rl);
    gpu_test_fill16(q, nq, ec->t, r, 1.0), gpu_test_fill16(k, nk, ec->t, r, 1.0), gpu_test_fill16(v, nk, ec->t, r, 1.0);
    /* Documents of 150 positions: block boundaries fall inside documents. */
    const int64_t seg_len = ec->lk > ec->q_offset + ec->lq ? ec->lk : ec->q_offset + ec->lq;
    int32_t *seg = malloc((size_t)seg_len * 4);
    assert_non_null(seg);
    for (int64_t i = 0; i < seg_len; i++) seg[i] = (int32_t)(i / 150);
    fi_mask_inputs in = {.segments = seg, .segments_len = seg_len, .q_offset = ec->q_offset};
    fi_error err = {0};
    fi_mask *m = NULL;
    fi_score_mod *sm = NULL;
    assert_int_equal(fi_mask_parse(ec->mask, &m, &err), FI_OK);
    if (ec->score) assert_int_equal(fi_score_mod_parse(ec->score, &sm, &err), FI_OK);
    fi_attn_params p = {.q = fi_attn_tensor_contiguous(q, ec->t, 1, ec->hq, ec->lq, ec->d),
                        .k = fi_attn_tensor_contiguous(k, ec->t, 1, ec->hkv, ec->lk, ec->d),
                        .v = fi_attn_tensor_contiguous(v, ec->t, 1, ec->hkv, ec->lk, ec->d),
                        .mask = m, .mask_in = &in, .score_mod = sm};
    char what[160];
    snprintf(what, sizeof what, "%s%s%s Hq%lld/%lld Lq%lld Lk%lld D%lld off%lld %s", ec->mask,
             ec->score ? " + " : "", ec->score ? ec->score : "", (long long)ec->hq, (long long)ec->hkv,
             (long long)ec->lq, (long long)ec->lk, (long long)ec->d, (long long)ec->q_offset,
             fi_dtype_name(ec->t));
    p.out = ro, p.lse = rl;
    assert_int_equal(fi_attn_reference(&p, &err), FI_OK);

    /* As dispatched: the Hopper kernel wherever the device has compute capability 9.0. */
    unsetenv("FI_CUDA_WGMMA");
    const char *kernel = planned_kernel(&p);
    /* Score modifiers stay on the portable kernel. */
    assert_string_equal(kernel, device_is_hopper() && !ec->score ? "prefill-wgmma" : "prefill");
    check_once(p, ro, rl, rows, ec->d, ec->t, what, kernel);
    /* Forced portable kernel. */
    setenv("FI_CUDA_WGMMA", "0", 1);
    kernel = planned_kernel(&p);
    assert_string_equal(kernel, "prefill");
    check_once(p, ro, rl, rows, ec->d, ec->t, what, kernel);
    unsetenv("FI_CUDA_WGMMA");

    fi_mask_free(m), fi_score_mod_free(sm);
    free(seg), free(q), free(k), free(v), free(ro), free(rl);
}

static void test_ragged_edges(void **state) {
    (void)state;
    if (!gpu_test_present()) skip();
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("test_ragged_edges"));
    static const edge_case cases[] = {
        {"full", NULL, 2, 2, 5, 200, 128, 0, FI_DTYPE_BF16},    /* Lq < 64, Lk = 128 + 72 */
        {"full", NULL, 4, 1, 63, 1, 64, 0, FI_DTYPE_F16},       /* one key */
        {"full", NULL, 2, 1, 64, 127, 128, 0, FI_DTYPE_F16},    /* one warpgroup's rows, Lk < 128 */
        {"causal", NULL, 4, 2, 65, 129, 64, 64, FI_DTYPE_BF16}, /* second warpgroup has 1 row */
        {"causal", NULL, 2, 2, 129, 129, 128, 0, FI_DTYPE_BF16},
        {"causal", NULL, 2, 1, 200, 1000, 128, 800, FI_DTYPE_F16}, /* bottom-right causal */
        {"full", NULL, 1, 1, 100, 256, 64, 0, FI_DTYPE_BF16},      /* Lk exactly two blocks */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_edge(&cases[i], &r);
}

static void test_block_mixes(void **state) {
    (void)state;
    if (!gpu_test_present()) skip();
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("test_block_mixes"));
    const int64_t l = gpu_test_small_shapes() ? 300 : 1100;
    const edge_case cases[] = {
        {"causal", NULL, 4, 2, l, l, 128, 0, FI_DTYPE_BF16}, /* long key loop: ring wraps */
        {"full", NULL, 2, 2, l, l + 37, 64, 0, FI_DTYPE_F16},
        {"window:100", NULL, 2, 1, l, l, 128, 0, FI_DTYPE_F16},   /* EMPTY blocks skipped */
        {"document", NULL, 2, 2, l, l, 64, 0, FI_DTYPE_BF16},     /* FULL inside documents */
        {"causal & window:300", NULL, 2, 2, l, l, 128, 0, FI_DTYPE_BF16},
        {"prefix:130 | causal", NULL, 2, 1, 300, 300, 64, 0, FI_DTYPE_BF16},
        {"prefix:0", NULL, 2, 2, 150, 300, 128, 0, FI_DTYPE_BF16}, /* every key masked */
        {"window:1 & !causal", NULL, 2, 2, 150, 150, 64, 0, FI_DTYPE_F16},
        {"causal", "softcap:20", 4, 1, 300, 333, 128, 0, FI_DTYPE_BF16},
        {"full", "alibi", 4, 2, 130, 260, 64, 0, FI_DTYPE_F16},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_edge(&cases[i], &r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ragged_edges),
        cmocka_unit_test(test_block_mixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
