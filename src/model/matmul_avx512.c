/* AVX-512 path: for now the AVX2 kernels (the dispatcher only reaches this
 * after the run-time check, and AVX-512 parts run AVX2 code). */
#include "model/matmul_kernels.h"

void fi_mm_rows_avx512(const fi_matmul_weight *w, const void *act, int64_t n_tokens, float *y,
                       int64_t y_stride, int64_t row_begin, int64_t row_end) {
    fi_mm_rows_avx2(w, act, n_tokens, y, y_stride, row_begin, row_end);
}
