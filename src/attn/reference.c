/* Naive O(Lq * Lk) attention in double precision: the independent reference that
 * tests and `flexinfer attn --check` compare the tiled kernels against. Two passes
 * per row (max, then sum) — deliberately not an online softmax. */
#include <math.h>
#include <stdlib.h>

#include "attn/problem.h"
#include "core/dtype.h"
#include "core/error.h"

fi_status fi_attn_reference(const fi_attn_params *p, fi_error *err) {
    fi_attn_problem pr;
    fi_status st = fi_attn_problem_init(&pr, p, err);
    if (st) return st;
    const int64_t d = pr.dim;
    double *scores = NULL, *acc = malloc((size_t)d * sizeof *acc);
    int64_t max_kv = 0;
    for (int64_t b = 0; b < pr.n_batch; b++)
        if (fi_attn_kv_len(&pr, b) > max_kv) max_kv = fi_attn_kv_len(&pr, b);
    scores = malloc((size_t)(max_kv > 0 ? max_kv : 1) * sizeof *scores);
    if (!acc || !scores) {
        free(acc);
        free(scores);
        return fi_error_set(err, FI_ERR_NOMEM, "reference attention: out of memory");
    }
    for (int64_t b = 0; b < pr.n_batch; b++) {
        const int64_t lq = fi_attn_q_len(&pr, b), lk = fi_attn_kv_len(&pr, b);
        for (int64_t h = 0; h < pr.hq; h++) {
            const int64_t hk = h / pr.group;
            for (int64_t i = 0; i < lq; i++) {
                const int64_t qpos = pr.mask_in.q_offset + i;
                const void *qrow = fi_attn_q_row(&pr, b, h, i);
                double mx = -INFINITY;
                for (int64_t j = 0; j < lk; j++) {
                    if (p->mask && !fi_mask_keep(p->mask, &pr.mask_in, b, h, qpos, j)) {
                        scores[j] = -INFINITY;
                        continue;
                    }
                    const void *krow = fi_attn_kv_row(&pr, false, b, hk, j);
                    double s = 0;
                    for (int64_t c = 0; c < d; c++)
                        s += (double)fi_load_f32(qrow, p->q.dtype, c) *
                             (double)fi_load_f32(krow, pr.kv_dtype, c);
                    s *= pr.scale;
                    if (p->score_mod)
                        s = fi_score_mod_apply(p->score_mod, (float)s, b, h, pr.hq, qpos, j);
                    scores[j] = s;
                    if (s > mx) mx = s;
                }
                for (int64_t c = 0; c < d; c++) acc[c] = 0;
                double sum = 0;
                if (mx != -INFINITY) {
                    for (int64_t j = 0; j < lk; j++) {
                        if (scores[j] == -INFINITY) continue;
                        double w = exp(scores[j] - mx);
                        sum += w;
                        const void *vrow = fi_attn_kv_row(&pr, true, b, hk, j);
                        for (int64_t c = 0; c < d; c++) acc[c] += w * (double)fi_load_f32(vrow, pr.kv_dtype, c);
                    }
                }
                float *out = p->out + fi_attn_out_index(&pr, b, h, i) * d;
                for (int64_t c = 0; c < d; c++) out[c] = sum > 0 ? (float)(acc[c] / sum) : 0.0f;
                if (p->lse) p->lse[fi_attn_out_index(&pr, b, h, i)] = sum > 0 ? (float)(mx + log(sum)) : -INFINITY;
            }
        }
    }
    free(acc);
    free(scores);
    return FI_OK;
}
