#include "model/quant.h"

#include <math.h>
#include <string.h>

#include "core/cpu.h"
#include "core/dtype.h"
#include "core/error.h"

typedef struct type_info {
    uint32_t id;
    const char *name;
    int64_t block;
    size_t bytes;
    bool weight; /* accepted as a weight type */
} type_info;

static const type_info k_types[] = {
    {FI_GGML_F32, "F32", 1, 4, true},       {FI_GGML_F16, "F16", 1, 2, true},
    {FI_GGML_Q4_0, "Q4_0", 32, 18, true},   {FI_GGML_Q4_1, "Q4_1", 32, 20, true},
    {FI_GGML_Q8_0, "Q8_0", 32, 34, true},   {FI_GGML_Q8_1, "Q8_1", 32, 36, false},
    {FI_GGML_BF16, "BF16", 1, 2, true},
};

static const type_info *find_type(uint32_t type) {
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
        if (k_types[i].id == type) return &k_types[i];
    return NULL;
}

const char *fi_ggml_type_name(uint32_t type) {
    const type_info *t = find_type(type);
    return t ? t->name : "unknown";
}

bool fi_ggml_type_supported(uint32_t type) {
    const type_info *t = find_type(type);
    return t && t->weight;
}

const char *fi_ggml_supported_list(void) { return "F32, F16, BF16, Q4_0, Q4_1, Q8_0"; }

int64_t fi_ggml_block_size(uint32_t type) {
    const type_info *t = find_type(type);
    return t ? t->block : 0;
}

size_t fi_ggml_block_bytes(uint32_t type) {
    const type_info *t = find_type(type);
    return t ? t->bytes : 0;
}

size_t fi_ggml_row_size(uint32_t type, int64_t n) {
    const type_info *t = find_type(type);
    if (!t || n < 0 || n % t->block != 0) return 0;
    return (size_t)(n / t->block) * t->bytes;
}

static uint16_t read_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

fi_status fi_quant_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n, fi_error *err) {
    const type_info *t = find_type(type);
    if (!t || !t->weight)
        return fi_error_set(err, FI_ERR_UNSUPPORTED, "tensor type %s (%u) is not supported (supported: %s)",
                            fi_ggml_type_name(type), type, fi_ggml_supported_list());
    if (n < 0 || n % t->block != 0)
        return fi_error_set(err, FI_ERR_INVALID, "%s row of %lld elements is not a multiple of the block size %lld",
                            t->name, (long long)n, (long long)t->block);
    const uint8_t *p = src;
    switch (type) {
    case FI_GGML_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case FI_GGML_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = fi_f16_to_f32(read_u16(p + 2 * i));
        break;
    case FI_GGML_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = fi_bf16_to_f32(read_u16(p + 2 * i));
        break;
    case FI_GGML_Q4_0:
        for (int64_t b = 0; b < n / 32; b++, p += 18, dst += 32) {
            float d = fi_f16_to_f32(read_u16(p));
            for (int j = 0; j < 16; j++) {
                dst[j] = d * (float)((p[2 + j] & 0x0f) - 8);
                dst[j + 16] = d * (float)((p[2 + j] >> 4) - 8);
            }
        }
        break;
    case FI_GGML_Q4_1:
        for (int64_t b = 0; b < n / 32; b++, p += 20, dst += 32) {
            float d = fi_f16_to_f32(read_u16(p)), m = fi_f16_to_f32(read_u16(p + 2));
            for (int j = 0; j < 16; j++) {
                /* ggml computes q*d + m in f32: one rounding, like this expression. */
                dst[j] = (float)(p[4 + j] & 0x0f) * d + m;
                dst[j + 16] = (float)(p[4 + j] >> 4) * d + m;
            }
        }
        break;
    case FI_GGML_Q8_0:
        for (int64_t b = 0; b < n / 32; b++, p += 34, dst += 32) {
            float d = fi_f16_to_f32(read_u16(p));
            for (int j = 0; j < 32; j++) dst[j] = d * (float)(int8_t)p[2 + j];
        }
        break;
    }
    return FI_OK;
}

size_t fi_quant_act_row_bytes(int64_t n) {
    size_t nb = (size_t)(n / 32);
    size_t bytes = nb * 32 + nb * sizeof(float) + nb * sizeof(int32_t) + nb * sizeof(float);
    return (bytes + 63) & ~(size_t)63;
}

fi_quant_act_row fi_quant_act_row_view(void *base, int64_t n) {
    size_t nb = (size_t)(n / 32);
    fi_quant_act_row r;
    r.q = base;
    r.d = (float *)((char *)base + nb * 32);
    r.sum = (int32_t *)((char *)base + nb * 32 + nb * sizeof(float));
    r.s = (float *)((char *)base + nb * 32 + nb * sizeof(float) + nb * sizeof(int32_t));
    return r;
}

void fi_quant_act_quantize_avx2(const float *x, int64_t n, fi_quant_act_row row); /* quant_avx2.c */

void fi_quant_act_quantize(const float *x, int64_t n, fi_quant_act_row row) {
    fi_quant_act_quantize_level(x, n, row, fi_cpu_simd_level());
}

void fi_quant_act_quantize_level(const float *x, int64_t n, fi_quant_act_row row, fi_simd_level level) {
    if (level >= FI_SIMD_AVX2) {
        fi_quant_act_quantize_avx2(x, n, row);
        return;
    }
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + b * 32;
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xb[j]));
        float d = amax / 127.0f;
        /* 127 / amax, not 1 / d: they differ in the last bit for some amax, and ggml uses this. */
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < 32; j++) {
            /* nearbyintf: round half to even, as the SIMD conversions do. */
            float f = nearbyintf(xb[j] * id);
            /* Clamp before converting: NaN or inf input must not reach an int cast. */
            int v = f != f ? 0 : f >= 127.0f ? 127 : f <= -127.0f ? -127 : (int)f;
            row.q[b * 32 + j] = (int8_t)v;
            sum += v;
        }
        row.d[b] = fi_f16_to_f32(fi_f32_to_f16(d));
        row.sum[b] = sum;
        row.s[b] = fi_f16_to_f32(fi_f32_to_f16(d * (float)sum));
    }
}
