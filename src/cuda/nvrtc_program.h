/* Run-time compiled mask/score expressions for the prefill kernel: validation,
 * source generation, NVRTC compilation, the kernel cache, GPU tile
 * classification and launches through the driver API (nvrtc_program.cu). */
#ifndef FI_CUDA_NVRTC_PROGRAM_H
#define FI_CUDA_NVRTC_PROGRAM_H

#include <cuda_runtime.h>

#include "cuda/kernel_params.h"
#include "flexinfer_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The expression part of one plan: the kernels (borrowed from a cache) and the
 * device buffers it uploaded (user arrays, block-mask lists). */
typedef struct fi_nvrtc_plan fi_nvrtc_plan;

/* Validates x, finds or compiles the kernels for (x, dim, element type, transform,
 * GPU) in cache (NULL: a private one owned by the result), uploads the user arrays
 * and points kp->user_data at them. kp->n_ops must already hold the mask program. */
fi_status fi_nvrtc_plan_create(const fi_cuda_expr *x, fi_cuda_kernel_cache *cache, int dim, bool bf16,
                               bool transform, fi_cuda_attn_kparams *kp, fi_nvrtc_plan **out,
                               fi_error *err);
bool fi_nvrtc_plan_has_mask(const fi_nvrtc_plan *np);
/* Block mask of the whole mask (program AND expression), classified on the GPU for
 * tiles bq x bkv; fills kp's block-mask fields with per-(batch, head) lists. Needs
 * kp's geometry, index arrays and mask program. */
fi_status fi_nvrtc_plan_block_mask(fi_nvrtc_plan *np, fi_cuda_attn_kparams *kp, int64_t max_q,
                                   int64_t max_kv, int32_t bq, int32_t bkv, fi_error *err);
/* Enqueues the compiled prefill kernel. */
fi_status fi_nvrtc_plan_launch(const fi_nvrtc_plan *np, const fi_cuda_attn_kparams *kp, cudaStream_t stream,
                               fi_error *err);
void fi_nvrtc_plan_free(fi_nvrtc_plan *np);

/* Compiles x for compute capability cc (e.g. 90) without a GPU or a cache and
 * reports the CUBIN size: the expression checks of tests and tools. */
fi_status fi_nvrtc_compile_check(const fi_cuda_expr *x, int dim, bool bf16, bool transform, int cc,
                                 size_t *cubin_size, fi_error *err);

#ifdef __cplusplus
}
#endif

#endif
