/* Hopper prefill kernel instances for f16 inputs (built for sm_90a only). */
#include "cuda/flash_fwd_wgmma.cuh"

cudaError_t fi_cuda_launch_flash_wgmma_f16(const fi_cuda_attn_kparams &p, int dim, cudaStream_t stream) {
    return fi_wg_launch_t<__half>(p, dim, stream);
}
