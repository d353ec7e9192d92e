#include "core/dtype.h"

size_t fi_dtype_size(fi_dtype t) {
    switch (t) {
    case FI_DTYPE_F16:
    case FI_DTYPE_BF16: return 2;
    default: return 4;
    }
}

const char *fi_dtype_name(fi_dtype t) {
    switch (t) {
    case FI_DTYPE_F16: return "f16";
    case FI_DTYPE_BF16: return "bf16";
    default: return "f32";
    }
}

void fi_convert_to_f32(const void *src, fi_dtype t, float *dst, int64_t n) {
    switch (t) {
    case FI_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = fi_f16_to_f32(((const uint16_t *)src)[i]);
        break;
    case FI_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = fi_bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    default: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    }
}
