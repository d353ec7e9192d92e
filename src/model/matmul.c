#include "model/matmul.h"

#include <stdlib.h>
#include <omp.h>
#include <string.h>

#include "core/cpu.h"
#include "core/dtype.h"
#include "core/error.h"
#include "model/matmul_kernels.h"

static bool is_quantized(uint32_t type) {
    return type == FI_GGML_Q4_0 || type == FI_GGML_Q4_1 || type == FI_GGML_Q8_0;
}

static size_t header_bytes_of(uint32_t type) { return type == FI_GGML_Q4_1 ? 32 : 16; }
static size_t quant_bytes_of(uint32_t type) { return type == FI_GGML_Q8_0 ? 256 : 128; }

/* Copies one ggml block of row `slot` of a group into the packed block. */
static void pack_block(uint32_t type, const uint8_t *src, uint8_t *dst, int slot) {
    uint8_t *q = dst + header_bytes_of(type);
    memcpy(dst + 2 * slot, src, 2); /* d */
    switch (type) {
    case FI_GGML_Q4_0:
        for (int j = 0; j < 16; j++) q[fi_mm_q4_byte(slot, j)] = src[2 + j];
        break;
    case FI_GGML_Q4_1:
        memcpy(dst + 16 + 2 * slot, src + 2, 2); /* m */
        for (int j = 0; j < 16; j++) q[fi_mm_q4_byte(slot, j)] = src[4 + j];
        break;
    case FI_GGML_Q8_0:
        for (int j = 0; j < 32; j++) q[fi_mm_q8_byte(slot, j)] = src[2 + j];
        break;
    }
}

fi_status fi_matmul_weight_create(uint32_t type, const void *data, int64_t rows, int64_t cols,
                                  fi_matmul_weight **out, fi_error *err) {
    *out = NULL;
    if (!fi_ggml_type_supported(type))
        return fi_error_set(err, FI_ERR_UNSUPPORTED, "matmul: weight type %s (%u) is not supported (supported: %s)",
                            fi_ggml_type_name(type), type, fi_ggml_supported_list());
    if (rows <= 0 || cols <= 0 || rows > ((int64_t)1 << 40) || cols > ((int64_t)1 << 32))
        return fi_error_set(err, FI_ERR_INVALID, "matmul: bad weight shape [%lld, %lld]", (long long)rows,
                            (long long)cols);
    if (cols % fi_ggml_block_size(type) != 0)
        return fi_error_set(err, FI_ERR_INVALID, "matmul: %s weight has %lld columns, not a multiple of %lld",
                            fi_ggml_type_name(type), (long long)cols, (long long)fi_ggml_block_size(type));
    if (!data) return fi_error_set(err, FI_ERR_INVALID, "matmul: weight data is NULL");
    /* Bound the byte count (plus group / panel padding) well inside size_t. */
    if ((uint64_t)rows + FI_MM_PANEL > ((uint64_t)1 << 50) / fi_ggml_row_size(type, cols))
        return fi_error_set(err, FI_ERR_INVALID, "matmul: weight [%lld, %lld] is too large", (long long)rows,
                            (long long)cols);
    fi_matmul_weight *w = calloc(1, sizeof *w);
    if (!w) return fi_error_set(err, FI_ERR_NOMEM, "matmul: out of memory");
    w->type = type;
    w->simd = fi_cpu_simd_level();
    w->rows = rows;
    w->cols = cols;
    if (!is_quantized(type)) {
        w->act_token_bytes = (size_t)cols * sizeof(float);
        const size_t es = fi_mm_float_esize(type);
        const int64_t panels = (rows + FI_MM_PANEL - 1) / FI_MM_PANEL;
        const size_t bytes = (size_t)panels * FI_MM_PANEL * (size_t)cols * es;
        w->owned = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        if (!w->owned) {
            free(w);
            return fi_error_set(err, FI_ERR_NOMEM, "matmul: out of memory repacking a %lld x %lld %s weight (%zu bytes)",
                                (long long)rows, (long long)cols, fi_ggml_type_name(type), bytes);
        }
        w->owned_bytes = bytes;
        w->data = w->owned;
        /* Panel p, element (c, i) = W[16p + i, c]; the padding rows of the last panel are zero. */
        const size_t panel_bytes = FI_MM_PANEL * (size_t)cols * es;
        if (rows % FI_MM_PANEL) memset(w->owned + (size_t)(panels - 1) * panel_bytes, 0, panel_bytes);
        for (int64_t p = 0; p < panels; p++) {
            const int64_t r0 = p * FI_MM_PANEL, n = rows - r0 < FI_MM_PANEL ? rows - r0 : FI_MM_PANEL;
            uint8_t *dst = w->owned + (size_t)p * panel_bytes;
            for (int64_t i = 0; i < n; i++) {
                const uint8_t *src = (const uint8_t *)data + (size_t)(r0 + i) * (size_t)cols * es;
                if (es == 2)
                    for (int64_t c = 0; c < cols; c++) memcpy(dst + (size_t)(FI_MM_PANEL * c + i) * 2, src + 2 * c, 2);
                else
                    for (int64_t c = 0; c < cols; c++) memcpy(dst + (size_t)(FI_MM_PANEL * c + i) * 4, src + 4 * c, 4);
            }
        }
        *out = w;
        return FI_OK;
    }
    w->nb = cols / 32;
    w->header_bytes = header_bytes_of(type);
    w->block_stride = w->header_bytes + quant_bytes_of(type);
    w->act_token_bytes = fi_quant_act_row_bytes(cols);
    int64_t groups = (rows + FI_MM_GROUP - 1) / FI_MM_GROUP;
    size_t bytes = (size_t)groups * (size_t)w->nb * w->block_stride;
    /* 64-byte alignment keeps the quant chunks of most shapes cache-line aligned. */
    w->owned = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!w->owned) {
        free(w);
        return fi_error_set(err, FI_ERR_NOMEM, "matmul: out of memory repacking a %lld x %lld %s weight (%zu bytes)",
                            (long long)rows, (long long)cols, fi_ggml_type_name(type), bytes);
    }
    memset(w->owned, 0, bytes);
    w->owned_bytes = bytes;
    w->data = w->owned;
    size_t src_row = fi_ggml_row_size(type, cols), src_block = fi_ggml_block_bytes(type);
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *src = (const uint8_t *)data + (size_t)r * src_row;
        uint8_t *grp = w->owned + (size_t)(r / FI_MM_GROUP) * (size_t)w->nb * w->block_stride;
        for (int64_t b = 0; b < w->nb; b++)
            pack_block(type, src + (size_t)b * src_block, grp + (size_t)b * w->block_stride, (int)(r % FI_MM_GROUP));
    }
    *out = w;
    return FI_OK;
}

void fi_matmul_weight_free(fi_matmul_weight *w) {
    if (!w) return;
    free(w->owned);
    free(w);
}

int64_t fi_matmul_weight_rows(const fi_matmul_weight *w) { return w->rows; }
int64_t fi_matmul_weight_cols(const fi_matmul_weight *w) { return w->cols; }
uint32_t fi_matmul_weight_type(const fi_matmul_weight *w) { return w->type; }
size_t fi_matmul_weight_owned_bytes(const fi_matmul_weight *w) { return w->owned_bytes; }
size_t fi_matmul_weight_stream_bytes(const fi_matmul_weight *w) {
    return (size_t)w->rows * fi_ggml_row_size(w->type, w->cols);
}
int64_t fi_matmul_row_granule(const fi_matmul_weight *w) { return is_quantized(w->type) ? FI_MM_GROUP : FI_MM_PANEL; }

void fi_matmul_weight_row(const fi_matmul_weight *w, int64_t r, float *dst) {
    if (!is_quantized(w->type)) {
        const size_t es = fi_mm_float_esize(w->type);
        const uint8_t *src = fi_mm_panel_ptr(w, r / FI_MM_PANEL) + (size_t)(r % FI_MM_PANEL) * es;
        for (int64_t c = 0; c < w->cols; c++, src += FI_MM_PANEL * es) {
            if (w->type == FI_GGML_F32) memcpy(&dst[c], src, 4);
            else {
                uint16_t h = (uint16_t)(src[0] | src[1] << 8);
                dst[c] = w->type == FI_GGML_F16 ? fi_f16_to_f32(h) : fi_bf16_to_f32(h);
            }
        }
        return;
    }
    int slot = (int)(r % FI_MM_GROUP);
    const uint8_t *grp = fi_mm_group_ptr(w, r / FI_MM_GROUP);
    for (int64_t b = 0; b < w->nb; b++, dst += 32) {
        const uint8_t *blk = grp + (size_t)b * w->block_stride, *q = blk + w->header_bytes;
        float d = fi_f16_to_f32((uint16_t)(blk[2 * slot] | blk[2 * slot + 1] << 8));
        if (w->type == FI_GGML_Q8_0) {
            for (int j = 0; j < 32; j++) dst[j] = d * (float)(int8_t)q[fi_mm_q8_byte(slot, j)];
            continue;
        }
        if (w->type == FI_GGML_Q4_0) {
            for (int j = 0; j < 16; j++) {
                uint8_t byte = q[fi_mm_q4_byte(slot, j)];
                dst[j] = d * (float)((byte & 0x0f) - 8);
                dst[j + 16] = d * (float)((byte >> 4) - 8);
            }
        } else {
            float m = fi_f16_to_f32((uint16_t)(blk[16 + 2 * slot] | blk[16 + 2 * slot + 1] << 8));
            for (int j = 0; j < 16; j++) {
                uint8_t byte = q[fi_mm_q4_byte(slot, j)];
                dst[j] = (float)(byte & 0x0f) * d + m;
                dst[j + 16] = (float)(byte >> 4) * d + m;
            }
        }
    }
}

size_t fi_matmul_act_size(const fi_matmul_weight *w, int64_t n_tokens) {
    return (size_t)n_tokens * w->act_token_bytes;
}

bool fi_matmul_act_shareable(const fi_matmul_weight *a, const fi_matmul_weight *b) {
    return a->cols == b->cols && is_quantized(a->type) == is_quantized(b->type);
}

void fi_matmul_quantize_act(const fi_matmul_weight *w, const float *x, int64_t n_tokens, void *act,
                            int64_t token_begin, int64_t token_end) {
    (void)n_tokens;
    for (int64_t t = token_begin; t < token_end; t++) {
        uint8_t *dst = (uint8_t *)act + (size_t)t * w->act_token_bytes;
        const float *xt = x + (size_t)t * (size_t)w->cols;
        if (is_quantized(w->type))
            fi_quant_act_quantize_level(xt, w->cols, fi_quant_act_row_view(dst, w->cols), w->simd);
        else
            memcpy(dst, xt, (size_t)w->cols * sizeof(float));
    }
}

void fi_matmul_rows(const fi_matmul_weight *w, const void *act, int64_t n_tokens, float *y, int64_t y_stride,
                    int64_t row_begin, int64_t row_end) {
    if (row_begin < 0) row_begin = 0;
    if (row_end > w->rows) row_end = w->rows;
    if (row_begin >= row_end || n_tokens <= 0) return;
    switch (w->simd) {
    case FI_SIMD_AVX512: fi_mm_rows_avx512(w, act, n_tokens, y, y_stride, row_begin, row_end); break;
    case FI_SIMD_AVX2: fi_mm_rows_avx2(w, act, n_tokens, y, y_stride, row_begin, row_end); break;
    default: fi_mm_rows_scalar(w, act, n_tokens, y, y_stride, row_begin, row_end); break;
    }
}

fi_status fi_matmul(const fi_matmul_weight *w, const float *x, int64_t n_tokens, float *y, int threads,
                    fi_error *err) {
    if (!w || !x || !y || n_tokens < 0) return fi_error_set(err, FI_ERR_INVALID, "matmul: bad arguments");
    if (n_tokens == 0) return FI_OK;
    size_t bytes = (fi_matmul_act_size(w, n_tokens) + 63) & ~(size_t)63;
    void *act = aligned_alloc(64, bytes);
    if (!act) return fi_error_set(err, FI_ERR_NOMEM, "matmul: out of memory for %zu activation bytes", bytes);
    int64_t granule = fi_matmul_row_granule(w);
    int64_t units = (w->rows + granule - 1) / granule;
#pragma omp parallel num_threads(threads > 0 ? threads : omp_get_max_threads())
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        fi_matmul_quantize_act(w, x, n_tokens, act, n_tokens * id / nt, n_tokens * (id + 1) / nt);
#pragma omp barrier
        int64_t u0 = units * id / nt, u1 = units * (id + 1) / nt;
        fi_matmul_rows(w, act, n_tokens, y, w->rows, u0 * granule, u1 * granule);
    }
    free(act);
    return FI_OK;
}
