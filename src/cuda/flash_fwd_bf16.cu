/* Prefill kernel instances for bf16 inputs. */
#include "cuda/flash_fwd_launch.cuh"

cudaError_t fi_cuda_launch_flash_bf16(const fi_cuda_attn_kparams &p, int dim, bool transform,
                                      cudaStream_t stream) {
    return fi_flash_launch_t<__nv_bfloat16>(p, dim, transform, stream);
}
