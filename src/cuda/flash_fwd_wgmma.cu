/* Entry point of the Hopper prefill kernel (instances in flash_fwd_wgmma_{bf16,f16}.cu). */
#include "cuda/launch.h"

cudaError_t fi_cuda_launch_flash_wgmma(const fi_cuda_attn_kparams &p, int dim, bool bf16, cudaStream_t stream) {
    return bf16 ? fi_cuda_launch_flash_wgmma_bf16(p, dim, stream) : fi_cuda_launch_flash_wgmma_f16(p, dim, stream);
}
