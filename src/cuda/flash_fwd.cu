/* Instantiations and launcher of the prefill kernel (flash_fwd_kernel.cuh). */
#include "cuda/flash_fwd_kernel.cuh"
#include "cuda/launch.h"

int fi_cuda_flash_block_kv(int dim) { return dim <= 64 ? fi_flash_tile<64>::BN : fi_flash_tile<128>::BN; }

template <int D, typename T, bool kTransform>
static cudaError_t launch(const fi_cuda_attn_kparams &p, cudaStream_t stream) {
    constexpr int BN = fi_flash_tile<D>::BN;
    constexpr int smem = fi_flash_smem_bytes<D, BN, T>();
    auto kernel = fi_flash_fwd_kernel<D, T, kTransform>;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) return e;
    const dim3 grid(p.n_q_blocks, p.hq, p.batch), block(FI_FLASH_WARPS * 32);
    kernel<<<grid, block, smem, stream>>>(p);
    return cudaGetLastError();
}

template <int D, typename T>
static cudaError_t launch_t(const fi_cuda_attn_kparams &p, bool transform, cudaStream_t stream) {
    return transform ? launch<D, T, true>(p, stream) : launch<D, T, false>(p, stream);
}

cudaError_t fi_cuda_launch_flash(const fi_cuda_attn_kparams &p, int dim, bool bf16, bool transform,
                                 cudaStream_t stream) {
    if (dim == 64) return bf16 ? launch_t<64, __nv_bfloat16>(p, transform, stream)
                               : launch_t<64, __half>(p, transform, stream);
    if (dim == 128) return bf16 ? launch_t<128, __nv_bfloat16>(p, transform, stream)
                                : launch_t<128, __half>(p, transform, stream);
    return cudaErrorInvalidValue;
}
