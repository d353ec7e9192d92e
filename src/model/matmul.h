/* Matrix-vector and matrix-matrix products with GGML-typed weights:
 * y[t, r] = sum_c W[r, c] * x[t, c].
 *
 * Usage from a persistent thread team (one OpenMP parallel region per forward):
 *   act = scratch of fi_matmul_act_size(w, n_tokens) bytes (64-byte aligned);
 *   each thread: fi_matmul_quantize_act(w, x, n, act, its token range);  barrier;
 *   each thread: fi_matmul_rows(w, act, n, y, stride, its row range);    barrier.
 * fi_matmul_rows is a pure slice: no allocation, no threads, and every output
 * element is computed the same way whatever the slice, so results do not
 * depend on how rows are split (bit-identical across thread counts).
 *
 * Weights are repacked at load into an owned copy (Q4_0 / Q4_1 / Q8_0: 8 rows
 * interleaved per block; F32 / F16 / BF16: panels of 16 rows, column-major;
 * the same byte count as the file, padded to whole groups), so the caller's
 * `data` is not used after fi_matmul_weight_create returns. */
#ifndef FI_MODEL_MATMUL_H
#define FI_MODEL_MATMUL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flexinfer.h"
#include "model/quant.h"

/* A weight matrix W [rows, cols] (GGUF ne0 = cols, ne1 = rows). */
typedef struct fi_matmul_weight fi_matmul_weight;

/* type: a ggml type id (fi_ggml_type_supported); cols must be a multiple of
 * the type's block size. May repack into an owned copy. The SIMD path
 * (fi_cpu_simd_level, capped by FI_SIMD) is chosen here, once, for every later
 * call on this weight. */
fi_status fi_matmul_weight_create(uint32_t type, const void *data, int64_t rows, int64_t cols,
                                  fi_matmul_weight **out, fi_error *err);
void fi_matmul_weight_free(fi_matmul_weight *w);

int64_t fi_matmul_weight_rows(const fi_matmul_weight *w);
int64_t fi_matmul_weight_cols(const fi_matmul_weight *w);
uint32_t fi_matmul_weight_type(const fi_matmul_weight *w);
/* Bytes this object owns (the repacked copy). */
size_t fi_matmul_weight_owned_bytes(const fi_matmul_weight *w);
/* Bytes of weights one full product streams (for GB/s figures). */
size_t fi_matmul_weight_stream_bytes(const fi_matmul_weight *w);
/* Row ranges that start and end at multiples of this are computed without
 * wasted work (rows are processed in interleaved groups); any split is correct. */
int64_t fi_matmul_row_granule(const fi_matmul_weight *w);
/* Dequantizes row r of the weight into dst[cols] (exact), from the packed copy. */
void fi_matmul_weight_row(const fi_matmul_weight *w, int64_t r, float *dst);

/* Activations are quantized once per matmul into a scratch buffer (size from
 * fi_matmul_act_size; the buffer should be 64-byte aligned). */
size_t fi_matmul_act_size(const fi_matmul_weight *w, int64_t n_tokens);
/* True when activations prepared for `a` are valid input for `b` (same cols and
 * the same activation format: Q4_0 / Q4_1 / Q8_0 share one int8 format, F32 /
 * F16 / BF16 share f32), so q/k/v or gate/up quantize their input once. */
bool fi_matmul_act_shareable(const fi_matmul_weight *a, const fi_matmul_weight *b);
/* Prepares tokens [token_begin, token_end) of x [n_tokens, cols] (row stride
 * cols) into act. */
void fi_matmul_quantize_act(const fi_matmul_weight *w, const float *x, int64_t n_tokens, void *act,
                            int64_t token_begin, int64_t token_end);
/* y[t, r] = sum_c W[r, c] * x[t, c] for r in [row_begin, row_end): a pure slice so the caller's
 * persistent thread team splits rows without a fork/join per op. y has row stride y_stride (floats). */
void fi_matmul_rows(const fi_matmul_weight *w, const void *act, int64_t n_tokens, float *y, int64_t y_stride,
                    int64_t row_begin, int64_t row_end);
/* Convenience: quantize + all rows with its own OpenMP team (threads <= 0: OpenMP default).
 * y has row stride rows. */
fi_status fi_matmul(const fi_matmul_weight *w, const float *x, int64_t n_tokens, float *y, int threads,
                    fi_error *err);

#endif
