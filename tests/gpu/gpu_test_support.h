/* Shared by the GPU test programs: the error bounds of docs/cuda.md, the switch to
 * small shapes (FI_GPU_TEST_SMALL=1, for compute-sanitizer runs), the "is there a
 * GPU" check that turns into a skip, and random 16-bit inputs. */
#ifndef FI_GPU_TEST_SUPPORT_H
#define FI_GPU_TEST_SUPPORT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

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

#endif
