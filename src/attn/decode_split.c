/* Split-KV: choosing the split count and merging partial (O, LSE) pairs. */
#include "attn/decode_split.h"

#include <math.h>

#include "attn/problem.h"

int fi_attn_split_heuristic(int64_t work_items, int64_t kv_blocks, int threads) {
    /* Splitting only pays when the items alone cannot keep every thread busy and
     * the keys are long enough that each split still streams several tiles. */
    if (threads <= 1 || work_items <= 0 || kv_blocks < 4) return 1;
    if ((double)work_items >= 0.8 * threads && work_items % threads == 0) return 1;
    int64_t max_splits = kv_blocks / 2; /* at least two key tiles per split */
    if (max_splits > 64) max_splits = 64;
    if (max_splits > 4 * (int64_t)threads) max_splits = 4 * (int64_t)threads;
    if (max_splits < 1) return 1;
    /* Occupancy of the last round of items: w / ceil(w) with w = items * s / threads.
     * Take the smallest s within 85% of the best (fewer splits = less merging). */
    double eff[65], best = 0;
    for (int64_t s = 1; s <= max_splits; s++) {
        const double w = (double)work_items * (double)s / threads;
        eff[s] = w / ceil(w);
        if (eff[s] > best) best = eff[s];
    }
    for (int64_t s = 1; s <= max_splits; s++)
        if (eff[s] >= 0.85 * best) return (int)s;
    return 1;
}

void fi_attn_split_combine(const float *o_parts, const float *lse_parts, int splits, int64_t dim,
                           float *out, float *lse) {
    float mx = -INFINITY;
    for (int s = 0; s < splits; s++)
        if (lse_parts[s] > mx) mx = lse_parts[s];
    if (mx == -INFINITY) { /* every split empty: guard -inf - -inf */
        for (int64_t c = 0; c < dim; c++) out[c] = 0.0f;
        *lse = -INFINITY;
        return;
    }
    double total = 0;
    double acc[FI_ATTN_MAX_DIM];
    for (int64_t c = 0; c < dim; c++) acc[c] = 0;
    for (int s = 0; s < splits; s++) {
        if (lse_parts[s] == -INFINITY) continue; /* empty split: weight 0 */
        const double w = exp((double)lse_parts[s] - (double)mx);
        total += w;
        const float *o = o_parts + (int64_t)s * dim;
        for (int64_t c = 0; c < dim; c++) acc[c] += w * (double)o[c];
    }
    for (int64_t c = 0; c < dim; c++) out[c] = (float)(acc[c] / total);
    *lse = (float)((double)mx + log(total));
}

int fi_attn_auto_splits(const fi_attn_params *p) {
    int64_t items = 0, kv_blocks = 0;
    int threads = 1;
    if (!p || fi_flash_work_shape(p, &items, &kv_blocks, &threads, NULL) != FI_OK) return 1;
    return fi_attn_split_heuristic(items, kv_blocks, threads);
}
