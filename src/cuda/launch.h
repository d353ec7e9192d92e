/* Kernel launchers (one translation unit per kernel family) used by dispatch.cu. */
#ifndef FI_CUDA_LAUNCH_H
#define FI_CUDA_LAUNCH_H

#include <cuda_runtime.h>

#include "cuda/kernel_params.h"

/* Key block of the decode kernel (the block mask's block_kv for decode). */
#define FI_CUDA_DECODE_BLOCK_KV 64
/* Query rows per CTA of the prefill kernel (the block mask's block_q). */
#define FI_CUDA_FLASH_BLOCK_Q 128

/* Key block of the prefill kernel for head dim `dim` (the block mask's block_kv). */
int fi_cuda_flash_block_kv(int dim);

/* Prefill: grid (n_q_blocks, Hq, batch). transform: score modifiers or scale <= 0. */
cudaError_t fi_cuda_launch_flash(const fi_cuda_attn_kparams &p, int dim, bool bf16, bool transform,
                                 cudaStream_t stream);

cudaError_t fi_cuda_launch_flash_bf16(const fi_cuda_attn_kparams &p, int dim, bool transform,
                                      cudaStream_t stream);
cudaError_t fi_cuda_launch_flash_f16(const fi_cuda_attn_kparams &p, int dim, bool transform,
                                     cudaStream_t stream);

/* Keys per block of the Hopper prefill kernel (the block mask's block_kv when it runs). */
#define FI_CUDA_WGMMA_BLOCK_KV 128

/* Hopper (sm_90a, wgmma) prefill: same contract and grid as fi_cuda_launch_flash
 * without score modifiers (scale > 0), key blocks of FI_CUDA_WGMMA_BLOCK_KV; only
 * for devices of compute capability 9.0. */
cudaError_t fi_cuda_launch_flash_wgmma(const fi_cuda_attn_kparams &p, int dim, bool bf16, cudaStream_t stream);
cudaError_t fi_cuda_launch_flash_wgmma_bf16(const fi_cuda_attn_kparams &p, int dim, cudaStream_t stream);
cudaError_t fi_cuda_launch_flash_wgmma_f16(const fi_cuda_attn_kparams &p, int dim, cudaStream_t stream);

/* Decode (q_len 1), split over p.num_splits, p.heads_per_cta in {1, 2, 4, 8}. */
cudaError_t fi_cuda_launch_decode(const fi_cuda_attn_kparams &p, int dim, bool bf16,
                                  cudaStream_t stream);

/* Resident decode CTAs per SM (for the split heuristic). Also raises the decode
 * kernel's dynamic shared-memory limit: call it before the first decode launch. */
int fi_cuda_decode_ctas_per_sm(int dim, bool bf16, int heads_per_cta);

#endif
