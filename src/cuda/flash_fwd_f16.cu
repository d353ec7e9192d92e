/* Prefill kernel instances for f16 inputs. */
#include "cuda/flash_fwd_launch.cuh"

cudaError_t fi_cuda_launch_flash_f16(const fi_cuda_attn_kparams &p, int dim, bool transform,
                                     cudaStream_t stream) {
    return fi_flash_launch_t<__half>(p, dim, transform, stream);
}
