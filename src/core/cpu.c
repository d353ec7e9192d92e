#include "core/cpu.h"

#include <stdlib.h>
#include <string.h>

static fi_cpu_features detect(void) {
    fi_cpu_features f = {0};
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    f.avx2 = __builtin_cpu_supports("avx2");
    f.fma = __builtin_cpu_supports("fma");
    f.avx512f = __builtin_cpu_supports("avx512f");
    f.avx512bw = __builtin_cpu_supports("avx512bw");
    f.avx512dq = __builtin_cpu_supports("avx512dq");
    f.avx512vl = __builtin_cpu_supports("avx512vl");
    f.avx512vnni = __builtin_cpu_supports("avx512vnni");
#if defined(__GNUC__) && __GNUC__ >= 12
    f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
#endif
    /* F16C is implied by every AVX2 part we target. */
    f.f16c = f.avx2;
#endif
    return f;
}

const fi_cpu_features *fi_cpu_get(void) {
    /* Computed on every call into a static: detection is pure, so a race only
     * writes the same bytes twice. */
    static fi_cpu_features features;
    static volatile int ready;
    if (!ready) {
        features = detect();
        ready = 1;
    }
    return &features;
}

fi_simd_level fi_cpu_simd_level(void) {
    const fi_cpu_features *f = fi_cpu_get();
    fi_simd_level level = FI_SIMD_SCALAR;
    if (f->avx2 && f->fma) level = FI_SIMD_AVX2;
    if (level == FI_SIMD_AVX2 && f->avx512f && f->avx512bw && f->avx512dq && f->avx512vl)
        level = FI_SIMD_AVX512;
    const char *cap = getenv("FI_SIMD");
    if (cap) {
        fi_simd_level want = level;
        if (strcmp(cap, "scalar") == 0) want = FI_SIMD_SCALAR;
        else if (strcmp(cap, "avx2") == 0) want = FI_SIMD_AVX2;
        if (want < level) level = want;
    }
    return level;
}

const char *fi_simd_level_name(fi_simd_level l) {
    switch (l) {
    case FI_SIMD_AVX2: return "avx2";
    case FI_SIMD_AVX512: return "avx512";
    default: return "scalar";
    }
}
