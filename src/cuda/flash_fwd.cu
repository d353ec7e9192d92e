/* Entry points of the prefill kernel (instances live in flash_fwd_{bf16,f16}.cu). */
#include "cuda/flash_fwd_kernel.cuh"
#include "cuda/launch.h"

int fi_cuda_flash_block_kv(int dim) { return dim <= 64 ? fi_flash_tile<64>::BN : fi_flash_tile<128>::BN; }

cudaError_t fi_cuda_launch_flash(const fi_cuda_attn_kparams &p, int dim, bool bf16, bool transform,
                                 cudaStream_t stream) {
    return bf16 ? fi_cuda_launch_flash_bf16(p, dim, transform, stream)
                : fi_cuda_launch_flash_f16(p, dim, transform, stream);
}
