/* GGML tensor types: the type table, row sizes, exact dequantization, and the
 * int8 activation blocks the quantized matmul kernels consume.
 * Layouts follow ggml (little-endian): every quantized type stores blocks of
 * 32 elements, each with an f16 scale (and an f16 minimum for Q4_1). */
#ifndef FI_MODEL_QUANT_H
#define FI_MODEL_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/cpu.h"
#include "flexinfer.h"

typedef enum fi_ggml_type {
    FI_GGML_F32 = 0,
    FI_GGML_F16 = 1,
    FI_GGML_Q4_0 = 2,
    FI_GGML_Q4_1 = 3,
    FI_GGML_Q8_0 = 8,
    FI_GGML_Q8_1 = 9,
    FI_GGML_BF16 = 30,
} fi_ggml_type; /* ids as GGUF stores them */

#define FI_QK 32 /* elements per block of every quantized type here */

/* "Q4_1", ...; "unknown" for ids outside the table. */
const char *fi_ggml_type_name(uint32_t type);
/* True for the types the matmul and dequantizer accept as weights
 * (F32, F16, BF16, Q4_0, Q4_1, Q8_0). Q8_1 is known (for names/sizes) only. */
bool fi_ggml_type_supported(uint32_t type);
/* Comma-separated list of supported type names, for error messages. */
const char *fi_ggml_supported_list(void);
/* Elements per block (1 for float types); 0 for unknown types. */
int64_t fi_ggml_block_size(uint32_t type);
/* Bytes of one block (element size for float types); 0 for unknown types. */
size_t fi_ggml_block_bytes(uint32_t type);
/* Bytes of n elements; 0 if the type is unknown or n is not a multiple of the
 * block size (or negative). */
size_t fi_ggml_row_size(uint32_t type, int64_t n);

/* Converts n elements of src (of the given type) to f32, exactly: every
 * weight value of these formats is representable in f32. n must be a
 * multiple of the block size. */
fi_status fi_quant_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n, fi_error *err);

/* ---- Activation quantization (what the integer kernels consume) ----
 * One token's activations of n = nb * 32 floats become nb blocks: int8 q[32]
 * with a per-block scale d = amax / 127 rounded to f16 precision as ggml stores
 * it (q = round-half-even(x * 127 / amax), from the unrounded scale, as ggml
 * does), the integer sum of q (for Q4_0's exact offset term) and s = d * sum
 * with the UNROUNDED d, rounded to f16 (ggml's Q8_1 block; Q4_1's offset term
 * m * s uses it, see docs/numerics.md). x[i] ~= d * q[i], within half a step
 * plus the f16 rounding of d times |q[i]|. */
typedef struct fi_quant_act_row {
    int8_t *q;    /* [nb * 32] */
    float *d;     /* [nb] */
    int32_t *sum; /* [nb] */
    float *s;     /* [nb]: f16(d * sum), d unrounded */
} fi_quant_act_row;

/* Bytes of one token's quantized activation row (64-byte multiple). */
size_t fi_quant_act_row_bytes(int64_t n);
/* Carves the three arrays out of a buffer of fi_quant_act_row_bytes(n) bytes
 * (64-byte aligned base keeps q aligned). */
fi_quant_act_row fi_quant_act_row_view(void *base, int64_t n);
/* Quantizes n floats (n a multiple of 32) into a view. Rounds to nearest even,
 * so every SIMD path produces the same bytes. */
void fi_quant_act_quantize(const float *x, int64_t n, fi_quant_act_row row);
/* The same with the SIMD level given (one fi_cpu_simd_level() returned, e.g.
 * cached by a matmul weight at creation): saves the FI_SIMD look-up per call. */
void fi_quant_act_quantize_level(const float *x, int64_t n, fi_quant_act_row row, fi_simd_level level);

#endif
