/* Block-mask internals shared with the kernels: row addressing with broadcasting. */
#ifndef FI_ATTN_BLOCK_MASK_H
#define FI_ATTN_BLOCK_MASK_H

#include "flexinfer.h"

/* Index of the (b, h, q_block) row in kv_num_blocks / full_kv_num_blocks; the
 * row's kv_indices start at row * n_kv_blocks. b and h broadcast when the mask
 * has batch or heads 1. */
static inline int64_t fi_block_mask_row(const fi_block_mask *bm, int64_t b, int64_t h,
                                        int64_t q_block) {
    const int64_t bb = bm->batch == 1 ? 0 : b, hh = bm->heads == 1 ? 0 : h;
    return (bb * bm->heads + hh) * bm->n_q_blocks + q_block;
}

/* Number of valid rows / columns in a (possibly short, last) block. */
static inline int64_t fi_block_mask_q_rows(const fi_block_mask *bm, int64_t q_block) {
    const int64_t start = q_block * bm->block_q, end = start + bm->block_q;
    return (end < bm->q_len ? end : bm->q_len) - start;
}
static inline int64_t fi_block_mask_kv_cols(const fi_block_mask *bm, int64_t kv_block) {
    const int64_t start = kv_block * bm->block_kv, end = start + bm->block_kv;
    return (end < bm->kv_len ? end : bm->kv_len) - start;
}

#endif
