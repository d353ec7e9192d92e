/* Split-KV decoding (one query row per sequence) over dense or paged K/V.
 *
 * Decode is bound by reading K and V once, so the kernel is built for memory
 * throughput rather than tensor cores: one CTA handles one (sequence, KV head,
 * split) and the `heads_per_cta` query heads that share that KV head (GQA without
 * copies: each K/V row is read once for all of them). Each key row is read by
 * D/8 lanes with 16-byte loads; several rows per lane are in flight before their
 * first use. Every (warp, row slot) keeps its own online-softmax state; the slots
 * are merged through shared memory, and the splits by fi_decode_combine_kernel
 * from their (O, LSE) pairs: an empty split has LSE = -inf and weight 0.
 *
 * The key range of a split is a slice of the block-mask lists (PARTIAL then FULL),
 * so EMPTY key blocks are never read; PARTIAL blocks evaluate the mask program. */
#include "cuda/launch.h"
#include "cuda/device_common.cuh"

#define FI_DECODE_WARPS 4

__device__ __forceinline__ void fi_unpack8(const uint4 &u, float *x, bool bf16) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 v = bf16 ? fi_mma<__nv_bfloat16>::unpack(w[i]) : fi_mma<__half>::unpack(w[i]);
        x[2 * i] = v.x;
        x[2 * i + 1] = v.y;
    }
}

/* K and V row pointers of key j with one page-table lookup and 32-bit index
 * arithmetic (64-bit division per row would dominate this memory-bound loop). */
template <typename T, int D>
__device__ __forceinline__ void fi_decode_rows(const fi_cuda_attn_kparams &p, int b, int hk, int32_t j,
                                               const T *&kp, const T *&vp) {
    if (p.paged) {
        const int32_t ps = (int32_t)p.page_size;
        const int32_t page = __ldg(p.page_table + (int64_t)b * p.max_pages + j / ps);
        const int64_t off = (((int64_t)page * p.hkv + hk) * ps + j % ps) * D;
        kp = reinterpret_cast<const T *>(p.k_pages) + off;
        vp = reinterpret_cast<const T *>(p.v_pages) + off;
    } else {
        kp = fi_dev_kv_row<T>(p, false, b, hk, j, D);
        vp = fi_dev_kv_row<T>(p, true, b, hk, j, D);
    }
}

template <int D, int GC, typename T>
__global__ void __launch_bounds__(FI_DECODE_WARPS * 32)
    fi_decode_kernel(const __grid_constant__ fi_cuda_attn_kparams p) {
    constexpr int LPR = D / 8;                /* lanes per key row */
    constexpr int RPW = 32 / LPR;             /* rows per warp step */
    constexpr int SLOTS = FI_DECODE_WARPS * RPW;
    constexpr int BK = FI_CUDA_DECODE_BLOCK_KV;
    constexpr int U = BK / SLOTS;             /* keys per slot per block */
    constexpr int US = GC >= 8 ? 2 : 4; /* keys per slot per step (two steps in flight) */
    constexpr bool kBf16 = fi_is_bf16<T>::value;
    static_assert(U % US == 0, "key block must split evenly");

    const int split = blockIdx.x, b = blockIdx.z;
    const int chunks = p.group / GC;
    const int hk = blockIdx.y / chunks, h0 = hk * p.group + (blockIdx.y % chunks) * GC;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int slot = warp * RPW + lane / LPR, dl = lane % LPR;
    const int64_t kv_len = fi_dev_kv_len(p, b);
    const int64_t qpos = p.q_offset;
    const bool transform = p.n_steps > 0;

    /* Queries, pre-scaled: base-2 logits come straight out of the dot product
     * unless score modifiers need the natural-scale score first. */
    float qf[GC][8];
#pragma unroll
    for (int g = 0; g < GC; g++) {
        const T *qrow = reinterpret_cast<const T *>(p.q) + fi_dev_q_offset(p, b, h0 + g, 0) + dl * 8;
        fi_unpack8(*reinterpret_cast<const uint4 *>(qrow), qf[g], kBf16);
        const float sc = transform ? p.scale : p.scale_log2;
#pragma unroll
        for (int e = 0; e < 8; e++) qf[g][e] *= sc;
    }

    const int64_t bm_row = fi_dev_bm_row(p, b, h0, 0);
    const int32_t *part = p.kv_idx + bm_row * p.n_kv_blocks;
    const int32_t *full = p.full_idx + bm_row * p.n_kv_blocks;
    int n_part = p.kv_num[bm_row], n_full = p.full_num[bm_row];
    while (n_part > 0 && (int64_t)part[n_part - 1] * BK >= kv_len) n_part--;
    while (n_full > 0 && (int64_t)full[n_full - 1] * BK >= kv_len) n_full--;
    const int64_t n_entries = n_part + n_full;
    const int64_t e0 = n_entries * split / p.num_splits, e1 = n_entries * (split + 1) / p.num_splits;

    const int32_t *seg = p.segments ? fi_dev_segments(p, b) : nullptr;
    const int32_t seg_q = seg ? seg[qpos] : 0;

    float m_run[GC], l_run[GC], acc[GC][8];
#pragma unroll
    for (int g = 0; g < GC; g++) {
        m_run[g] = -INFINITY;
        l_run[g] = 0.f;
#pragma unroll
        for (int e = 0; e < 8; e++) acc[g][e] = 0.f;
    }

    /* Steps of US rows per slot, flattened over the split's key blocks; the loads
     * of step t + 1 are issued before step t is computed, so each lane always has
     * a step of K/V rows in flight while it does the math. */
    constexpr int SPB = U / US; /* steps per key block */
    const int64_t n_steps = (e1 - e0) * SPB;
    auto step_rows = [&](int64_t t, int64_t *js) {
        const int64_t e = e0 + t / SPB;
        const int64_t kv0 = (int64_t)(e < n_part ? part[e] : full[e - n_part]) * BK;
        const int u0 = (int)(t % SPB) * US;
#pragma unroll
        for (int u = 0; u < US; u++) js[u] = kv0 + (int64_t)(u0 + u) * SLOTS + slot;
    };
    auto issue = [&](const int64_t *js, uint4 *kr, uint4 *vr) {
#pragma unroll
        for (int u = 0; u < US; u++) {
            if (js[u] < kv_len) {
                const T *kp, *vp;
                fi_decode_rows<T, D>(p, b, hk, (int32_t)js[u], kp, vp);
                kr[u] = __ldg(reinterpret_cast<const uint4 *>(kp + dl * 8));
                vr[u] = __ldg(reinterpret_cast<const uint4 *>(vp + dl * 8));
            } else {
                kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
            }
        }
    };
    uint4 kr[US], vr[US];
    int64_t js[US];
    if (n_steps > 0) {
        step_rows(0, js);
        issue(js, kr, vr);
    }
    for (int64_t t = 0; t < n_steps; t++) {
        const bool partial = e0 + t / SPB < n_part;
        uint4 kn[US], vn[US];
        int64_t jn[US];
        if (t + 1 < n_steps) {
            step_rows(t + 1, jn);
            issue(jn, kn, vn);
        }
        {
            float s[GC][US];
#pragma unroll
            for (int u = 0; u < US; u++) {
                float k8[8];
                fi_unpack8(kr[u], k8, kBf16);
#pragma unroll
                for (int g = 0; g < GC; g++) {
                    float d = 0.f;
#pragma unroll
                    for (int c = 0; c < 8; c++) d = fmaf(qf[g][c], k8[c], d);
#pragma unroll
                    for (int off = LPR / 2; off > 0; off >>= 1) d += __shfl_xor_sync(0xffffffffu, d, off);
                    s[g][u] = d;
                }
                bool keep = js[u] < kv_len;
                if (partial && keep) keep = fi_dev_mask_keep(p, seg, seg_q, qpos, js[u]);
#pragma unroll
                for (int g = 0; g < GC; g++) {
                    float x = s[g][u];
                    if (transform) x = fi_dev_score_mod(p, x, h0 + g, qpos, js[u]) * FI_LOG2E;
                    s[g][u] = keep ? x : -INFINITY;
                }
            }
#pragma unroll
            for (int g = 0; g < GC; g++) {
                float mx = s[g][0];
#pragma unroll
                for (int u = 1; u < US; u++) mx = fmaxf(mx, s[g][u]);
                const float m_new = fmaxf(m_run[g], mx);
                const float m_use = m_new == -INFINITY ? 0.f : m_new;
                const float alpha = fi_ex2(m_run[g] - m_use);
                m_run[g] = m_new;
                l_run[g] *= alpha;
#pragma unroll
                for (int c = 0; c < 8; c++) acc[g][c] *= alpha;
#pragma unroll
                for (int u = 0; u < US; u++) {
                    const float pr = fi_ex2(s[g][u] - m_use);
                    l_run[g] += pr;
                    float v8[8];
                    fi_unpack8(vr[u], v8, kBf16);
#pragma unroll
                    for (int c = 0; c < 8; c++) acc[g][c] = fmaf(pr, v8[c], acc[g][c]);
                }
            }
        }
        if (t + 1 < n_steps) {
#pragma unroll
            for (int u = 0; u < US; u++) kr[u] = kn[u], vr[u] = vn[u], js[u] = jn[u];
        }
    }

    /* Merge the row slots of this CTA. */
    __shared__ float sm_m[SLOTS][GC], sm_l[SLOTS][GC];
    __shared__ float sm_o[SLOTS][GC][D];
#pragma unroll
    for (int g = 0; g < GC; g++) {
        if (dl == 0) {
            sm_m[slot][g] = m_run[g];
            sm_l[slot][g] = l_run[g];
        }
#pragma unroll
        for (int c = 0; c < 8; c++) sm_o[slot][g][dl * 8 + c] = acc[g][c];
    }
    __syncthreads();
    for (int idx = tid; idx < GC * D; idx += FI_DECODE_WARPS * 32) {
        const int g = idx / D, d = idx % D, h = h0 + g;
        float M = -INFINITY;
        for (int s = 0; s < SLOTS; s++) M = fmaxf(M, sm_m[s][g]);
        const float M_use = M == -INFINITY ? 0.f : M;
        float L = 0.f, O = 0.f;
        for (int s = 0; s < SLOTS; s++) {
            const float w = exp2f(sm_m[s][g] - M_use);
            L += sm_l[s][g] * w;
            O += sm_o[s][g][d] * w;
        }
        const float out = L > 0.f ? O / L : 0.f;
        const float lse = L > 0.f ? (M + log2f(L)) * FI_LN2 : -INFINITY;
        if (p.num_splits == 1) {
            const int64_t orow = fi_dev_out_row(p, b, h, 0);
            p.out[orow * D + d] = out;
            if (p.lse && d == 0) p.lse[orow] = lse;
        } else {
            const int64_t w = ((int64_t)split * p.batch + b) * p.hq + h;
            p.ws_o[w * D + d] = out;
            if (d == 0) p.ws_lse[w] = lse;
        }
    }
}

/* Merges the splits' (O, LSE) pairs: weights exp(lse_i - max); all -inf -> O = 0. */
__global__ void fi_decode_combine_kernel(const __grid_constant__ fi_cuda_attn_kparams p, int dim) {
    const int b = blockIdx.x / p.hq, h = blockIdx.x % p.hq;
    const int64_t stride = (int64_t)p.batch * p.hq, base = (int64_t)b * p.hq + h;
    float M = -INFINITY;
    for (int s = 0; s < p.num_splits; s++) M = fmaxf(M, p.ws_lse[s * stride + base]);
    const float M_use = M == -INFINITY ? 0.f : M;
    float W = 0.f;
    for (int s = 0; s < p.num_splits; s++) W += __expf(p.ws_lse[s * stride + base] - M_use);
    const int64_t orow = fi_dev_out_row(p, b, h, 0);
    for (int d = threadIdx.x; d < dim; d += blockDim.x) {
        float o = 0.f;
        if (W > 0.f) {
            for (int s = 0; s < p.num_splits; s++) {
                const float w = __expf(p.ws_lse[s * stride + base] - M_use);
                if (w > 0.f) o += w * p.ws_o[(s * stride + base) * dim + d];
            }
            o /= W;
        }
        p.out[orow * dim + d] = o;
    }
    if (p.lse && threadIdx.x == 0) p.lse[orow] = W > 0.f ? M + logf(W) : -INFINITY;
}

template <int D, typename T>
static cudaError_t launch_gc(const fi_cuda_attn_kparams &p, int gc, cudaStream_t stream) {
    const dim3 grid(p.num_splits, p.hkv * (p.group / gc), p.batch), block(FI_DECODE_WARPS * 32);
    switch (gc) {
    case 1: fi_decode_kernel<D, 1, T><<<grid, block, 0, stream>>>(p); break;
    case 2: fi_decode_kernel<D, 2, T><<<grid, block, 0, stream>>>(p); break;
    case 4: fi_decode_kernel<D, 4, T><<<grid, block, 0, stream>>>(p); break;
    case 8: fi_decode_kernel<D, 8, T><<<grid, block, 0, stream>>>(p); break;
    default: return cudaErrorInvalidValue;
    }
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || p.num_splits == 1) return e;
    fi_decode_combine_kernel<<<p.batch * p.hq, 128, 0, stream>>>(p, D);
    return cudaGetLastError();
}

cudaError_t fi_cuda_launch_decode(const fi_cuda_attn_kparams &p, int dim, bool bf16,
                                  cudaStream_t stream) {
    if (dim == 64) return bf16 ? launch_gc<64, __nv_bfloat16>(p, p.heads_per_cta, stream)
                               : launch_gc<64, __half>(p, p.heads_per_cta, stream);
    if (dim == 128) return bf16 ? launch_gc<128, __nv_bfloat16>(p, p.heads_per_cta, stream)
                                : launch_gc<128, __half>(p, p.heads_per_cta, stream);
    return cudaErrorInvalidValue;
}

template <int D, typename T>
static const void *decode_kernel_ptr(int gc) {
    switch (gc) {
    case 1: return (const void *)fi_decode_kernel<D, 1, T>;
    case 2: return (const void *)fi_decode_kernel<D, 2, T>;
    case 4: return (const void *)fi_decode_kernel<D, 4, T>;
    default: return (const void *)fi_decode_kernel<D, 8, T>;
    }
}

int fi_cuda_decode_ctas_per_sm(int dim, bool bf16, int heads_per_cta) {
    const void *k = dim == 64 ? (bf16 ? decode_kernel_ptr<64, __nv_bfloat16>(heads_per_cta)
                                      : decode_kernel_ptr<64, __half>(heads_per_cta))
                              : (bf16 ? decode_kernel_ptr<128, __nv_bfloat16>(heads_per_cta)
                                      : decode_kernel_ptr<128, __half>(heads_per_cta));
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, FI_DECODE_WARPS * 32, 0) != cudaSuccess || n < 1)
        return 1;
    return n;
}
