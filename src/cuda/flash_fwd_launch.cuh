/* Launcher template of the prefill kernel, instantiated per element type in
 * flash_fwd_bf16.cu and flash_fwd_f16.cu (two translation units build in parallel). */
#ifndef FI_CUDA_FLASH_FWD_LAUNCH_CUH
#define FI_CUDA_FLASH_FWD_LAUNCH_CUH

#include "cuda/flash_fwd_kernel.cuh"
#include "cuda/launch.h"

template <int D, typename T, bool kTransform>
static cudaError_t fi_flash_launch(const fi_cuda_attn_kparams &p, cudaStream_t stream) {
    constexpr int BN = fi_flash_tile<D>::BN;
    constexpr int smem = fi_flash_smem_bytes<D, BN, T>();
    auto kernel = fi_flash_fwd_kernel<D, T, kTransform>;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) return e;
    const dim3 grid(p.n_q_blocks, p.hq, p.batch), block(FI_FLASH_WARPS * 32);
    kernel<<<grid, block, smem, stream>>>(p);
    return cudaGetLastError();
}

template <typename T>
static cudaError_t fi_flash_launch_t(const fi_cuda_attn_kparams &p, int dim, bool transform,
                                     cudaStream_t stream) {
    if (dim == 64) return transform ? fi_flash_launch<64, T, true>(p, stream) : fi_flash_launch<64, T, false>(p, stream);
    if (dim == 128) return transform ? fi_flash_launch<128, T, true>(p, stream) : fi_flash_launch<128, T, false>(p, stream);
    return cudaErrorInvalidValue;
}

#endif
