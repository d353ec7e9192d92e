/* Device helpers shared by the prefill and decode kernels: row addressing for
 * dense, varlen and paged K/V, the mask program, score modifiers, and thin
 * wrappers over cp.async / ldmatrix / mma.sync. */
#ifndef FI_CUDA_DEVICE_COMMON_CUH
#define FI_CUDA_DEVICE_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "cuda/kernel_params.h"

#define FI_LOG2E 1.4426950408889634f
#define FI_LN2 0.6931471805599453f

/* ---- problem geometry ---------------------------------------------------- */

__device__ __forceinline__ int64_t fi_dev_q_len(const fi_cuda_attn_kparams &p, int b) {
    return p.varlen ? (int64_t)(p.cu_q[b + 1] - p.cu_q[b]) : p.q_len;
}

__device__ __forceinline__ int64_t fi_dev_kv_len(const fi_cuda_attn_kparams &p, int b) {
    if (p.paged) return p.seq_lens[b];
    return p.varlen ? (int64_t)(p.cu_k[b + 1] - p.cu_k[b]) : p.kv_len;
}

/* Element offset of query row i (sequence b, head h). */
__device__ __forceinline__ int64_t fi_dev_q_offset(const fi_cuda_attn_kparams &p, int b, int h,
                                                    int64_t i) {
    if (p.varlen) return h * p.q_sh + ((int64_t)p.cu_q[b] + i) * p.q_sl;
    return b * p.q_sb + h * p.q_sh + i * p.q_sl;
}

/* Pointer to key (is_v false) or value row j of KV head hk of sequence b. */
template <typename T>
__device__ __forceinline__ const T *fi_dev_kv_row(const fi_cuda_attn_kparams &p, bool is_v, int b,
                                                  int hk, int64_t j, int dim) {
    if (p.paged) {
        const int64_t page = p.page_table[b * p.max_pages + j / p.page_size];
        const int64_t off = ((page * p.hkv + hk) * p.page_size + j % p.page_size) * dim;
        return (const T *)(is_v ? p.v_pages : p.k_pages) + off;
    }
    const T *base = (const T *)(is_v ? p.v : p.k);
    const int64_t sb = is_v ? p.v_sb : p.k_sb, sh = is_v ? p.v_sh : p.k_sh,
                  sl = is_v ? p.v_sl : p.k_sl;
    if (p.varlen) return base + hk * sh + ((int64_t)p.cu_k[b] + j) * sl;
    return base + b * sb + hk * sh + j * sl;
}

__device__ __forceinline__ int64_t fi_dev_out_row(const fi_cuda_attn_kparams &p, int b, int h,
                                                   int64_t i) {
    if (p.varlen) return (int64_t)h * p.q_total + p.cu_q[b] + i;
    return ((int64_t)b * p.hq + h) * p.q_total + i;
}

/* Row of the block-mask lists for (b, h, q block), with broadcasting. */
__device__ __forceinline__ int64_t fi_dev_bm_row(const fi_cuda_attn_kparams &p, int b, int h,
                                                  int qb) {
    const int64_t bb = p.bm_batch == 1 ? 0 : b, hh = p.bm_heads == 1 ? 0 : h;
    return (bb * p.bm_heads + hh) * p.n_q_blocks + qb;
}

/* ---- mask program ---------------------------------------------------------- */

__device__ __forceinline__ const int32_t *fi_dev_segments(const fi_cuda_attn_kparams &p, int b) {
    return p.seg_batch ? p.segments + (int64_t)b * p.seg_len : p.segments;
}

/* Evaluates the postfix mask program for logical positions (q, kv); seg is the
 * sequence's segment row (or NULL), seg_q the query's segment id (read once per row). */
/* Callers keep it out of unrolled loops: one inlined copy per kernel. */
__device__ __forceinline__ bool fi_dev_mask_keep(const fi_cuda_attn_kparams &p, const int32_t *seg,
                                                 int32_t seg_q, int64_t q, int64_t kv) {
    uint32_t stack = 0;
    for (int i = 0; i < p.n_ops; i++) {
        const int32_t op = p.ops[i].op;
        const int64_t a = p.ops[i].param;
        uint32_t v;
        switch (op) {
        case FI_CUDA_OP_FULL: v = 1; break;
        case FI_CUDA_OP_CAUSAL: v = kv <= q; break;
        case FI_CUDA_OP_WINDOW: v = (q - kv < a) && (kv - q < a); break;
        case FI_CUDA_OP_PREFIX: v = kv < a; break;
        case FI_CUDA_OP_CHUNKED: v = (q / a) == (kv / a); break;
        case FI_CUDA_OP_DOCUMENT: v = seg_q == seg[kv]; break;
        case FI_CUDA_OP_GENERATED: v = seg_q < 0; break;
        case FI_CUDA_OP_AND: {
            const uint32_t x = stack & 1u;
            stack >>= 1;
            stack = (stack & ~1u) | (stack & x);
            continue;
        }
        case FI_CUDA_OP_OR: {
            const uint32_t x = stack & 1u;
            stack >>= 1;
            stack |= x;
            continue;
        }
        case FI_CUDA_OP_NOT: stack ^= 1u; continue;
        default: v = 0; break;
        }
        stack = (stack << 1) | v;
    }
    return stack & 1u;
}

/* Hooks for run-time compiled expressions: the NVRTC build of the kernels
 * (nvrtc_program.cu) defines these before including this header; the nvcc-built
 * kernels keep the identities, so they are unchanged. FI_DEV_USER_MASK is ANDed
 * with the mask program; FI_DEV_USER_SCORE runs after the built-in modifiers. */
#ifndef FI_DEV_USER_MASK
#define FI_DEV_USER_MASK(p, b, h, q, kv) true
#endif
#ifndef FI_DEV_USER_SCORE
#define FI_DEV_USER_SCORE(p, s, b, h, q, kv) (s)
#endif

/* Applies the score modifiers to a scaled score. */
__device__ __forceinline__ float fi_dev_score_mod(const fi_cuda_attn_kparams &p, float s, int h,
                                                  int64_t q, int64_t kv) {
    for (int i = 0; i < p.n_steps; i++) {
        if (p.step_kind[i] == FI_CUDA_SCORE_SOFTCAP)
            s = p.step_cap[i] * tanhf(s / p.step_cap[i]);
        else
            s += p.alibi_slopes[h] * (float)(kv - q);
    }
    return s;
}

/* ---- PTX wrappers ----------------------------------------------------------- */

/* 2^x on the special-function unit; 2^-inf = +0. */
__device__ __forceinline__ float fi_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ uint32_t fi_smem_addr(const void *ptr) {
    return (uint32_t)__cvta_generic_to_shared(ptr);
}

/* 16-byte global->shared copy; src_bytes 0 zero-fills the destination. */
__device__ __forceinline__ void fi_cp_async16(uint32_t dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(src_bytes));
}
__device__ __forceinline__ void fi_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void fi_cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void fi_ldmatrix_x4(uint32_t addr, uint32_t &r0, uint32_t &r1,
                                               uint32_t &r2, uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}
__device__ __forceinline__ void fi_ldmatrix_x4_trans(uint32_t addr, uint32_t &r0, uint32_t &r1,
                                                     uint32_t &r2, uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

template <typename T> struct fi_is_bf16 { static constexpr bool value = false; };
template <> struct fi_is_bf16<__nv_bfloat16> { static constexpr bool value = true; };

template <typename T> struct fi_mma;

template <> struct fi_mma<__nv_bfloat16> {
    static __device__ __forceinline__ void run(float *d, const uint32_t *a, uint32_t b0,
                                               uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
    static __device__ __forceinline__ float2 unpack(uint32_t x) {
        __nv_bfloat162 v = *reinterpret_cast<__nv_bfloat162 *>(&x);
        return __bfloat1622float2(v);
    }
};

template <> struct fi_mma<__half> {
    static __device__ __forceinline__ void run(float *d, const uint32_t *a, uint32_t b0,
                                               uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
    static __device__ __forceinline__ float2 unpack(uint32_t x) {
        __half2 v = *reinterpret_cast<__half2 *>(&x);
        return __half22float2(v);
    }
};

#endif
