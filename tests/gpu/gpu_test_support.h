/* Shared by the GPU test programs: the error bounds of docs/cuda.md, the switch to
 * small shapes (FI_GPU_TEST_SMALL=1, for compute-sanitizer runs), the "is there a
 * GPU" check that turns into a skip, and random 16-bit inputs. */
#ifndef FI_GPU_TEST_SUPPORT_H
#define FI_GPU_TEST_SUPPORT_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "core/dtype.h"
#include "flexinfer.h"
#include "flexinfer_cuda.h"
#include "test_support.h"

/* Max |O_gpu - O_ref| over elements with V ~ N(0, 1) (P is rounded to the input type
 * before P·V, sums are f32), and |LSE_gpu - LSE_ref|. */
#define BOUND_O_BF16 2.5e-2
#define BOUND_O_F16 5e-3
#define BOUND_LSE 2e-3

static inline int gpu_test_small_shapes(void) {
    const char *s = getenv("FI_GPU_TEST_SMALL");
    return s && *s && *s != '0';
}

/* 1 when a CUDA device can be used; otherwise prints why, and the caller skips. */
static inline int gpu_test_present(void) {
    fi_error err = {0};
    if (fi_cuda_available(&err)) return 1;
    printf("skipping: %s\n", err.msg);
    return 0;
}

/* n values ~ N(0, sigma^2) rounded to bf16 or f16. */
static inline void gpu_test_fill16(uint16_t *x, int64_t n, fi_dtype t, fi_test_rng *r, double sigma) {
    for (int64_t i = 0; i < n; i++) {
        const float v = (float)(sigma * fi_test_rng_normal(r));
        x[i] = t == FI_DTYPE_BF16 ? fi_f32_to_bf16(v) : fi_f32_to_f16(v);
    }
}

/* Runs the reference and the host-memory GPU entry point on p0 (its out/lse are
 * ignored): *ro/*rl get the reference, *o/*l the GPU result, poisoned with NaN first so
 * that an element the GPU never writes shows. The caller compares and frees all four. */
static inline void gpu_test_run_host(const fi_attn_params *p0, int64_t rows, int64_t d, const char *what,
                                     float **o, float **ro, float **l, float **rl) {
    *o = malloc((size_t)(rows * d) * 4), *ro = malloc((size_t)(rows * d) * 4);
    *l = malloc((size_t)rows * 4), *rl = malloc((size_t)rows * 4);
    assert_non_null(*o), assert_non_null(*ro), assert_non_null(*l), assert_non_null(*rl);
    for (int64_t i = 0; i < rows * d; i++) (*o)[i] = NAN;
    for (int64_t i = 0; i < rows; i++) (*l)[i] = NAN;
    fi_attn_params p = *p0;
    fi_error err = {0};
    p.out = *ro, p.lse = *rl;
    assert_int_equal(fi_attn_reference(&p, &err), FI_OK);
    p.out = *o, p.lse = *l;
    const fi_status st = fi_cuda_attn_forward(&p, &err);
    if (st) printf("%s: %s\n", what, err.msg);
    assert_int_equal(st, FI_OK);
}

#endif
