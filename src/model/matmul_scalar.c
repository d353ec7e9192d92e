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
            acc += m * x.s[b];
        }
    }
    return acc;
}

static inline float load_weight(uint32_t type, const uint8_t *p) {
    switch (type) {
    case FI_GGML_F16: return load_f16(p);
    case FI_GGML_BF16: return fi_bf16_to_f32((uint16_t)(p[0] | p[1] << 8));
    default: {
        float v;
        memcpy(&v, p, 4);
        return v;
    }
    }
}

/* The order of matmul_kernels.h: running sums over blocks of FI_MM_KBLOCK
 * columns, then the block sums in order (here without fused multiply-adds). */
static float dot_float_row(const fi_matmul_weight *w, int64_t r, const float *x) {
    const size_t es = fi_mm_float_esize(w->type), step = FI_MM_PANEL * es;
    const uint8_t *p = fi_mm_panel_ptr(w, r / FI_MM_PANEL) + (size_t)(r % FI_MM_PANEL) * es;
    float acc = 0.0f;
    for (int64_t c0 = 0; c0 < w->cols; c0 += FI_MM_KBLOCK) {
        const int64_t c1 = c0 + FI_MM_KBLOCK < w->cols ? c0 + FI_MM_KBLOCK : w->cols;
        float blk = 0.0f;
        for (int64_t c = c0; c < c1; c++) blk += load_weight(w->type, p + (size_t)c * step) * x[c];
        acc = c0 == 0 ? blk : acc + blk;
    }
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
