/* Hopper prefill kernel instances for bf16 inputs (built for sm_90a only). */
#include "cuda/flash_fwd_wgmma.cuh"

cudaError_t fi_cuda_launch_flash_wgmma_bf16(const fi_cuda_attn_kparams &p, int dim, cudaStream_t stream) {
    return fi_wg_launch_t<__nv_bfloat16>(p, dim, stream);
}
