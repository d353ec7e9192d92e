/* Device side of run-time compiled expressions, compiled only by NVRTC (the text
 * is embedded into the library at build time, see nvrtc_program.cu). The program
 * that NVRTC sees is:
 *
 *   prelude (FI_EXPR_HAS_MASK / FI_EXPR_HAS_SCORE, FI_EXPR_ARRAYS(p))
 *   #include "cuda/nvrtc_kernels.cuh"   <- this file: hooks, prefill kernel, classifier
 *   fi_user_mask / fi_user_score        <- bodies holding the user's expressions
 *
 * The hooks are declared before flash_fwd_kernel.cuh is included, so the prefill
 * template calls the user's functions; their bodies come last. */
#ifndef FI_CUDA_NVRTC_KERNELS_CUH
#define FI_CUDA_NVRTC_KERNELS_CUH

#include "cuda/kernel_params.h"

/* Read-only user arrays: out-of-range indices read 0 instead of faulting. The load
 * is unconditional (element 0 for an out-of-range index; every array has at least
 * 16 bytes) and the result selected, so the unrolled score loop stays branch-free. */
struct fi_user_i32 {
    const int32_t *d;
    int64_t n;
    __device__ __forceinline__ fi_user_i32(const fi_cuda_attn_kparams &p, int i)
        : d((const int32_t *)p.user_data[i]), n(p.user_len[i]) {}
    __device__ __forceinline__ int32_t operator[](int64_t i) const {
        const bool in = i >= 0 && i < n;
        const int32_t v = __ldg(d + (in ? i : 0));
        return in ? v : 0;
    }
};
struct fi_user_f32 {
    const float *d;
    int64_t n;
    __device__ __forceinline__ fi_user_f32(const fi_cuda_attn_kparams &p, int i)
        : d((const float *)p.user_data[i]), n(p.user_len[i]) {}
    __device__ __forceinline__ float operator[](int64_t i) const {
        const bool in = i >= 0 && i < n;
        const float v = __ldg(d + (in ? i : 0));
        return in ? v : 0.f;
    }
};

#ifdef FI_EXPR_HAS_MASK
/* Positions are 32-bit here (plans check the range): integer division and modulo
 * in expressions then cost a few instructions instead of a 64-bit division routine. */
__device__ __forceinline__ bool fi_user_mask(const fi_cuda_attn_kparams &p, int b, int h, int q, int kv);
#define FI_DEV_USER_MASK(p, b, h, q, kv) fi_user_mask(p, b, h, (int)(q), (int)(kv))
#endif
#ifdef FI_EXPR_HAS_SCORE
__device__ __forceinline__ float fi_user_score(const fi_cuda_attn_kparams &p, float score, int b, int h,
                                               int q, int kv);
#define FI_DEV_USER_SCORE(p, s, b, h, q, kv) fi_user_score(p, s, b, h, (int)(q), (int)(kv))
#endif

#include "cuda/flash_fwd_kernel.cuh"

/* Tile classifier: one CTA per (kv block x, q block y, b * hq + h z) evaluates the
 * whole mask (mask program AND expression) on every in-range element and writes
 * 0 EMPTY, 1 PARTIAL, 2 FULL (the fi_block_kind values) to cls[z][y][x]. */
extern "C" __global__ void fi_expr_classify(const __grid_constant__ fi_cuda_attn_kparams p, int8_t *cls) {
    const int kvb = blockIdx.x, qb = blockIdx.y;
    const int h = blockIdx.z % p.hq, b = blockIdx.z / p.hq;
    const int64_t q_len = fi_dev_q_len(p, b), kv_len = fi_dev_kv_len(p, b);
    const int64_t q0 = (int64_t)qb * p.block_q, kv0 = (int64_t)kvb * p.block_kv;
    const int32_t *seg = p.segments ? fi_dev_segments(p, b) : nullptr;
    int any_keep = 0, any_drop = 0;
    const int n = p.block_q * p.block_kv;
    for (int idx = threadIdx.x; idx < n; idx += blockDim.x) {
        const int64_t q = q0 + idx / p.block_kv, kv = kv0 + idx % p.block_kv;
        if (q >= q_len || kv >= kv_len) continue;
        const int64_t qpos = p.q_offset + q;
        const bool keep = fi_dev_mask_keep(p, seg, seg ? seg[qpos] : 0, qpos, kv) &&
                          FI_DEV_USER_MASK(p, b, h, qpos, kv);
        any_keep |= keep;
        any_drop |= !keep;
    }
    any_keep = __syncthreads_or(any_keep);
    any_drop = __syncthreads_or(any_drop);
    if (threadIdx.x == 0)
        cls[((int64_t)blockIdx.z * gridDim.y + qb) * gridDim.x + kvb] = (int8_t)(any_keep ? (any_drop ? 1 : 2) : 0);
}

#endif
