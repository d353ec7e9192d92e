/*
 * flexinfer — CUDA backend (built with -DFI_CUDA=ON).
 *
 * The GPU path consumes the same problem description as the CPU path
 * (fi_attn_params: shapes, GQA, varlen, paged K/V, mask expression, segments,
 * q_offset, score modifiers, block mask) and the same block-mask CSR lists.
 *
 * Supported on the GPU: head dims 64 and 128; built-in masks (full, causal,
 * window, prefix, chunked, document, generated and & | ! of them); built-in score
 * modifiers (softcap, alibi; up to 4 steps). C callbacks (fi_mask_from_callback,
 * fi_score_mod_from_callback) cannot run on the GPU: FI_ERR_UNSUPPORTED.
 * Queries with q_len == 1 (and no varlen) go to the split-KV decode kernel
 * (num_splits: 0 automatic from the SM count and the work, n forces n); every other
 * problem to the tensor-core prefill kernel. p->threads and p->block_q/block_kv
 * are ignored: the kernels' own tile sizes define the block mask they use (a
 * prebuilt p->block_mask is used when its block sizes and lengths match).
 */
#ifndef FLEXINFER_CUDA_H
#define FLEXINFER_CUDA_H

#include "flexinfer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Host-pointer API (the CLI and tests): every pointer in *p is host memory.
 * q/k/v (or the pages) may be f32, f16 or bf16; they are uploaded as bf16 when all
 * inputs are bf16, as f16 when all are f16, otherwise as f16 (or as bf16 when
 * some |x| exceeds the f16 range). Output and LSE are f32 host arrays as on the CPU. */
fi_status fi_cuda_attn_forward(const fi_attn_params *p, fi_error *err);

/* Device-pointer API (benchmarks, engines): q/k/v data (or k_pages/v_pages) are
 * DEVICE pointers, all bf16 or all f16, 16-byte aligned, with strides that are
 * multiples of 8 elements; out/lse are DEVICE f32 arrays laid out as on the CPU.
 * Index arrays (cu_seqlens_*, page_table, seq_lens, mask segments) and the block
 * mask are HOST arrays: the plan uploads them once. A plan holds the pointers of
 * *p; running it again recomputes the same problem (e.g. with new data in place). */
typedef struct fi_cuda_attn_plan fi_cuda_attn_plan;
fi_status fi_cuda_attn_plan_create(const fi_attn_params *p, fi_cuda_attn_plan **out, fi_error *err);
/* Enqueues the kernels on `stream` (a cudaStream_t; NULL for the default stream). */
fi_status fi_cuda_attn_plan_run(const fi_cuda_attn_plan *plan, void *stream, fi_error *err);
void fi_cuda_attn_plan_free(fi_cuda_attn_plan *plan);
/* Facts about a plan: "prefill" or "decode", and the split count used. */
const char *fi_cuda_attn_plan_kernel(const fi_cuda_attn_plan *plan);
int fi_cuda_attn_plan_splits(const fi_cuda_attn_plan *plan);

/* create + run + synchronise + free. */
fi_status fi_cuda_attn_forward_device(const fi_attn_params *p, fi_error *err);

/* True when a CUDA device is usable; fills err with the reason otherwise. */
bool fi_cuda_available(fi_error *err);

#ifdef __cplusplus
}
#endif
#endif /* FLEXINFER_CUDA_H */
