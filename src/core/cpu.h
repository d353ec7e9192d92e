/* Run-time CPU feature detection: kernels pick their SIMD path from this. */
#ifndef FI_CORE_CPU_H
#define FI_CORE_CPU_H

#include <stdbool.h>

typedef struct fi_cpu_features {
    bool avx2, fma, f16c;
    bool avx512f, avx512bw, avx512dq, avx512vl, avx512vnni, avx512bf16;
} fi_cpu_features;

/* Detected once (thread-safe, idempotent). The environment variable FI_SIMD
 * ("scalar", "avx2", "avx512") caps the level, for tests of every path. */
const fi_cpu_features *fi_cpu_get(void);

typedef enum fi_simd_level { FI_SIMD_SCALAR = 0, FI_SIMD_AVX2 = 1, FI_SIMD_AVX512 = 2 } fi_simd_level;
fi_simd_level fi_cpu_simd_level(void);
const char *fi_simd_level_name(fi_simd_level l);

#endif
