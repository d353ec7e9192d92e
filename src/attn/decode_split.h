/* Split-KV (flash decoding): the keys of one work item are cut into `splits` ranges
 * processed independently; each range yields a normalised partial output and its LSE,
 * and the partials are merged exactly. Shared by the tiled driver (flash_cpu.c). */
#ifndef FI_ATTN_DECODE_SPLIT_H
#define FI_ATTN_DECODE_SPLIT_H

#include <stdint.h>

#include "flexinfer.h"

/* The split count for `work_items` independent tiles of `kv_blocks` key tiles each on
 * `threads` threads (the occupancy rule of flash decoding, see docs/attention-cpu.md). */
int fi_attn_split_heuristic(int64_t work_items, int64_t kv_blocks, int threads);

/* Merges `splits` partial results of one output row: o_parts [splits][dim] (each
 * normalised by its own softmax sum) and lse_parts [splits] (-inf for an empty split,
 * whose weight is then 0). Writes out[dim] and *lse (-inf, and out = 0, when every
 * split is empty). */
void fi_attn_split_combine(const float *o_parts, const float *lse_parts, int splits, int64_t dim,
                           float *out, float *lse);

/* Work shape of a problem as fi_attn_forward schedules it (flash_cpu.c): number of
 * (sequence, head group, query tile) items, key tiles of the longest sequence, threads. */
fi_status fi_flash_work_shape(const fi_attn_params *p, int64_t *work_items, int64_t *kv_blocks,
                              int *threads, fi_error *err);

#endif
