/* Portable kernels: the reference structure the SIMD paths follow (same
 * packed layout, same per-block formulas). */
#include <string.h>

#include "core/dtype.h"
#include "model/matmul_kernels.h"

static inline float load_f16(const uint8_t *p) { return fi_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

static float dot_quant_row(const fi_matmul_weight *w, int64_t r, fi_quant_act_row x) {
    int slot = (int)(r % FI_MM_GROUP);
    const uint8_t *grp = fi_mm_group_ptr(w, r / FI_MM_GROUP);
    float acc = 0.0f;
    for (int64_t b = 0; b < w->nb; b++) {
        const uint8_t *blk = grp + (size_t)b * w->block_stride, *q = blk + w->header_bytes;
        const int8_t *xq = x.q + b * 32;
        float dw = load_f16(blk + 2 * slot), dx = x.d[b];
        int32_t dot = 0;
        if (w->type == FI_GGML_Q8_0) {
            for (int j = 0; j < 32; j++) dot += (int8_t)q[fi_mm_q8_byte(slot, j)] * xq[j];
            acc += (dw * dx) * (float)dot;
            continue;
        }
        for (int j = 0; j < 16; j++) {
            uint8_t byte = q[fi_mm_q4_byte(slot, j)];
            dot += (byte & 0x0f) * xq[j] + (byte >> 4) * xq[j + 16];
        }
        if (w->type == FI_GGML_Q4_0) {
            acc += (dw * dx) * (float)(dot - 8 * x.sum[b]);
        } else {
            float m = load_f16(blk + 16 + 2 * slot);
            acc += (dw * dx) * (float)dot;
            acc += m * (dx * (float)x.sum[b]);
        }
    }
    return acc;
}

static inline float load_weight(uint32_t type, const uint8_t *row, int64_t c) {
    switch (type) {
    case FI_GGML_F16: return load_f16(row + 2 * c);
    case FI_GGML_BF16: return fi_bf16_to_f32((uint16_t)(row[2 * c] | row[2 * c + 1] << 8));
    default: {
        float v;
        memcpy(&v, row + 4 * c, 4);
        return v;
    }
    }
}

static float dot_float_row(const fi_matmul_weight *w, int64_t r, const float *x) {
    const uint8_t *row = w->data + (size_t)r * fi_ggml_row_size(w->type, w->cols);
    float lane[8] = {0};
    int64_t c = 0;
    for (; c + 8 <= w->cols; c += 8)
        for (int k = 0; k < 8; k++) lane[k] += load_weight(w->type, row, c + k) * x[c + k];
    float acc = ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
    for (; c < w->cols; c++) acc += load_weight(w->type, row, c) * x[c];
    return acc;
}

void fi_mm_rows_scalar(const fi_matmul_weight *w, const void *act, int64_t n_tokens, float *y,
                       int64_t y_stride, int64_t row_begin, int64_t row_end) {
    bool quantized = w->nb > 0;
    for (int64_t t = 0; t < n_tokens; t++) {
        const uint8_t *xt = (const uint8_t *)act + (size_t)t * w->act_token_bytes;
        float *yt = y + (size_t)t * (size_t)y_stride;
        if (quantized) {
            fi_quant_act_row x = fi_quant_act_row_view((void *)xt, w->cols);
            for (int64_t r = row_begin; r < row_end; r++) yt[r] = dot_quant_row(w, r, x);
        } else {
            for (int64_t r = row_begin; r < row_end; r++) yt[r] = dot_float_row(w, r, (const float *)xt);
        }
    }
}
