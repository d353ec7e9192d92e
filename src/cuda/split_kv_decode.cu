/* Split-KV decoding (one query row per sequence) over dense or paged K/V.
 *
 * Decode is bound by reading K and V once, so everything here serves memory
 * throughput: one CTA handles one (sequence, KV head, split) and the
 * `heads_per_cta` query heads that share that KV head (GQA without copies: each
 * K/V row is read once for all of them).
 *
 * Each warp runs its own pipeline, with no CTA barrier until the end: it copies
 * tiles of 16 key rows of K and V into its own shared-memory ring with cp.async
 * (whole rows per instruction, FI_DECODE_STAGES tiles in the ring, the page-table
 * lookup of the next tile issued a tile ahead), and computes a tile with tensor cores: the
 * query heads are the rows of an m16n8k16 MMA (padded to 16 with zero rows; the
 * tensor cores have far more throughput than decode needs, and this removes the
 * per-key shuffle reductions and the f32 unpacking of a CUDA-core loop). S = Q·Kᵀ
 * and O += P·V stay in registers in the MMA layouts, as in the prefill kernel.
 * Warps take the 16-key quarters of each 64-key block of the split; their
 * online-softmax states are merged through shared memory, and the splits by
 * fi_decode_combine_kernel from their (O, LSE) pairs: an empty split has
 * LSE = -inf and weight 0. (Merging in the last split CTA of each head group, found
 * with an arrival counter, measured 3-8% slower on the H100: that one CTA combines
 * serially what the combine kernel spreads over a CTA per head.)
 *
 * The key range of a split is a slice of the block-mask lists (PARTIAL then FULL),
 * so EMPTY key blocks are never read; PARTIAL blocks evaluate the mask program
 * once per key (one lane per key, shared through a ballot). */
#include "cuda/launch.h"
#include "cuda/device_common.cuh"

#define FI_DECODE_WARPS 4
#define FI_DECODE_TILE 16  /* key rows per warp tile (one MMA k-step of P·V) */
#ifndef FI_DECODE_PDL
#define FI_DECODE_PDL 1 /* launch the combine kernel as a programmatic dependent (sm_90) */
#endif
#ifndef FI_DECODE_MIN_CTAS
#define FI_DECODE_MIN_CTAS 2 /* resident CTAs per SM the register budget must allow */
#endif
/* 1: copy K/V (read once) with an L2 evict-first policy. Off: on the H100 it gained 6%
 * on B1 KV32768 with a flushed (dirty) L2 but lost 3.5% on B32 KV4096 and 1-2% on B8. */
#ifndef FI_DECODE_EVICT_FIRST
#define FI_DECODE_EVICT_FIRST 0
#endif
#ifndef FI_DECODE_STAGES
#define FI_DECODE_STAGES 3 /* tiles per warp in the ring: two in flight while one is computed */
#endif

static_assert(FI_DECODE_WARPS * FI_DECODE_TILE == FI_CUDA_DECODE_BLOCK_KV,
              "the warps of a CTA cover one key block");

/* Shared memory of one CTA: every warp's ring of K and V tiles. */
static constexpr size_t fi_decode_smem_bytes(int dim) {
    return (size_t)FI_DECODE_WARPS * FI_DECODE_STAGES * 2 * FI_DECODE_TILE * (size_t)dim * 2;
}

/* Byte offset of 16-byte chunk c of row r in a tile of rows of D 16-bit values:
 * chunks are XOR-swizzled by the row so that ldmatrix's eight rows hit eight
 * different bank groups. */
template <int D>
__device__ __forceinline__ uint32_t fi_decode_swz(int r, int c) {
    return (uint32_t)(r * D * 2 + ((c ^ (r & 7)) << 4));
}

template <int D, typename T>
__global__ void __launch_bounds__(FI_DECODE_WARPS * 32, FI_DECODE_MIN_CTAS)
    fi_decode_kernel(const __grid_constant__ fi_cuda_attn_kparams p) {
    constexpr int BK = FI_CUDA_DECODE_BLOCK_KV, TILE = FI_DECODE_TILE, NS = FI_DECODE_STAGES;
    constexpr int KSTEPS = D / 16;                      /* MMA k-steps of Q·Kᵀ, pairs of dim tiles of P·V */
    constexpr uint32_t TILE_BYTES = TILE * D * 2;       /* one tensor's tile */
    extern __shared__ __align__(128) unsigned char fi_decode_smem[];

    const int split = blockIdx.x, b = blockIdx.z;
    const int gc = p.heads_per_cta, chunks = p.group / gc;
    const int hk = blockIdx.y / chunks, h0 = hk * p.group + (blockIdx.y % chunks) * gc;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int32_t kv_len = (int32_t)fi_dev_kv_len(p, b);
    const int64_t qpos = p.q_offset;
    const bool transform = p.n_steps > 0;

    /* Q as the MMA's A operand: row = query head (rows >= gc are zero), k = dim. */
    const int qr = lane >> 2, qc = (lane & 3) * 2;
    uint32_t qa[KSTEPS][4];
    {
        const uint32_t *q0 = qr < gc ? reinterpret_cast<const uint32_t *>(
                                           reinterpret_cast<const T *>(p.q) + fi_dev_q_offset(p, b, h0 + qr, 0))
                                     : nullptr;
        const uint32_t *q1 = qr + 8 < gc ? reinterpret_cast<const uint32_t *>(
                                               reinterpret_cast<const T *>(p.q) + fi_dev_q_offset(p, b, h0 + qr + 8, 0))
                                         : nullptr;
#pragma unroll
        for (int ks = 0; ks < KSTEPS; ks++) {
            const int w = (ks * 16 + qc) / 2;
            qa[ks][0] = q0 ? q0[w] : 0u;
            qa[ks][1] = q1 ? q1[w] : 0u;
            qa[ks][2] = q0 ? q0[w + 4] : 0u;
            qa[ks][3] = q1 ? q1[w + 4] : 0u;
        }
    }

    /* This split's slice of the block lists, without blocks past the sequence. */
    const int64_t bm_row = fi_dev_bm_row(p, b, h0, 0);
    const int32_t *part = p.kv_idx + bm_row * p.n_kv_blocks;
    const int32_t *full = p.full_idx + bm_row * p.n_kv_blocks;
    int n_part = p.kv_num[bm_row], n_full = p.full_num[bm_row];
    while (n_part > 0 && (int64_t)part[n_part - 1] * BK >= kv_len) n_part--;
    while (n_full > 0 && (int64_t)full[n_full - 1] * BK >= kv_len) n_full--;
    const int64_t n_entries = n_part + n_full;
    const int e0 = (int)(n_entries * split / p.num_splits);
    const int n_tiles = (int)(n_entries * (split + 1) / p.num_splits) - e0;
    auto block_of = [&](int i) -> int32_t {
        const int e = e0 + i;
        return e < n_part ? __ldg(part + e) : __ldg(full + (e - n_part));
    };

    const int32_t *seg = p.segments ? fi_dev_segments(p, b) : nullptr;
    const int32_t seg_q = seg ? seg[qpos] : 0;

    /* Copies. Lane r < 16 (and r + 16) resolves row r of a tile: its key and, for a
     * paged cache, its page, loaded a tile ahead so that the lookup's latency hides
     * behind the math. */
    const T *kbase = reinterpret_cast<const T *>(p.paged ? p.k_pages : p.k);
    const T *vbase = reinterpret_cast<const T *>(p.paged ? p.v_pages : p.v);
    const uint32_t ring = fi_smem_addr(fi_decode_smem) + (uint32_t)warp * NS * 2 * TILE_BYTES;
    int32_t nx_key = 0, nx_page = 0;
    auto lookup = [&](int i) {
        nx_key = block_of(i) * BK + warp * TILE + (lane & 15);
        if (p.paged && nx_key < kv_len)
            nx_page = __ldg(p.page_table + (int64_t)b * p.max_pages + nx_key / (int32_t)p.page_size);
    };
    /* cp.async: each instruction of the warp moves whole rows (D/8 lanes per row,
     * 512 contiguous bytes at D = 128), so the memory system sees full 128-byte
     * lines; the rows' offsets are shared by shuffles. (One bulk copy per row
     * through the copy engine, with mbarriers, measured 3-5% slower.) */
    constexpr int LPR = D / 8, RPI = 32 / LPR, CPL = D / 16; /* lanes per row, rows and copies per instruction */
    auto issue = [&](int stage) {
        const int32_t j = nx_key;
        long long koff = -1, voff = -1; /* element offsets of row lane & 15; -1: past the end */
        if (j < kv_len) {
            if (p.paged) {
                const int32_t ps = (int32_t)p.page_size;
                koff = voff = (((long long)nx_page * p.hkv + hk) * ps + j % ps) * D;
            } else {
                koff = b * p.k_sb + hk * p.k_sh + (long long)j * p.k_sl;
                voff = b * p.v_sb + hk * p.v_sh + (long long)j * p.v_sl;
            }
        }
        const uint32_t kd = ring + (uint32_t)stage * 2 * TILE_BYTES, vd = kd + TILE_BYTES;
        const int chunk = lane % LPR;
#if FI_DECODE_EVICT_FIRST
        const uint64_t policy = fi_l2_policy_evict_first();
#endif
#pragma unroll
        for (int c = 0; c < CPL; c++) {
            const int row = c * RPI + lane / LPR;
            const long long ko = __shfl_sync(0xffffffffu, koff, row);
            const long long vo = p.paged ? ko : __shfl_sync(0xffffffffu, voff, row);
            const bool ok = ko >= 0;
            const uint32_t o = fi_decode_swz<D>(row, chunk);
#if FI_DECODE_EVICT_FIRST
            fi_cp_async16_policy(kd + o, ok ? kbase + ko + chunk * 8 : kbase, ok ? 16 : 0, policy);
            fi_cp_async16_policy(vd + o, ok ? vbase + vo + chunk * 8 : vbase, ok ? 16 : 0, policy);
#else
            fi_cp_async16(kd + o, ok ? kbase + ko + chunk * 8 : kbase, ok ? 16 : 0);
            fi_cp_async16(vd + o, ok ? vbase + vo + chunk * 8 : vbase, ok ? 16 : 0);
#endif
        }
    };

    float o_acc[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) o_acc[n][0] = o_acc[n][1] = o_acc[n][2] = o_acc[n][3] = 0.f;
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f}; /* rows qr, qr + 8 */

    /* ldmatrix lane roles: matrix mi = lane / 8, row mr = lane % 8 within it. */
    const int mi = lane >> 3, mr = lane & 7;

    /* Pipeline fill: the list entries of the first NS tiles are loaded together, then
     * their pages together, so the fill costs two dependent loads rather than two per
     * tile. */
    {
        int32_t keys[NS], pages[NS];
#pragma unroll
        for (int i = 0; i < NS; i++) keys[i] = i < n_tiles ? block_of(i) * BK + warp * TILE + (lane & 15) : kv_len;
#pragma unroll
        for (int i = 0; i < NS; i++)
            pages[i] = p.paged && keys[i] < kv_len
                           ? __ldg(p.page_table + (int64_t)b * p.max_pages + keys[i] / (int32_t)p.page_size)
                           : 0;
#pragma unroll
        for (int i = 0; i < NS - 1; i++) {
            if (i < n_tiles) {
                nx_key = keys[i], nx_page = pages[i];
                issue(i);
            }
            fi_cp_async_commit();
        }
        nx_key = keys[NS - 1], nx_page = pages[NS - 1]; /* the lookup of tile NS - 1 */
    }
    for (int t = 0; t < n_tiles; t++) {
        {
            const int i = t + NS - 1;
            if (i < n_tiles) {
                issue(i % NS);
                if (i + 1 < n_tiles) lookup(i + 1);
            }
            fi_cp_async_commit();
        }
        fi_cp_async_wait<NS - 1>();
        __syncwarp();
        const uint32_t kt = ring + (uint32_t)(t % NS) * 2 * TILE_BYTES, vt = kt + TILE_BYTES;

        /* S = Q·Kᵀ for the tile's 16 keys (two n-tiles of 8). */
        float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
        for (int ks = 0; ks < KSTEPS; ks++) {
            uint32_t k0, k1, k2, k3;
            fi_ldmatrix_x4(kt + fi_decode_swz<D>((mi >> 1) * 8 + mr, ks * 2 + (mi & 1)), k0, k1, k2, k3);
            fi_mma<T>::run(s[0], qa[ks], k0, k1);
            fi_mma<T>::run(s[1], qa[ks], k2, k3);
        }

        /* Scale (base-2 logits), score modifiers, masks. */
        const int32_t kv0 = block_of(t) * BK + warp * TILE;
        const bool partial = e0 + t < n_part;
        uint32_t keep = 0xffffu;
        if (partial || kv0 + TILE > kv_len) {
            const int32_t j = kv0 + (lane & 15);
            const bool k = j < kv_len && (!partial || fi_dev_mask_keep(p, seg, seg_q, qpos, j));
            keep = __ballot_sync(0xffffffffu, k) & 0xffffu;
        }
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int col = n * 8 + qc + (e & 1);
                float x = s[n][e];
                if (transform) {
                    const int row = qr + (e >> 1) * 8;
                    x = fi_dev_score_mod(p, x * p.scale, h0 + (row < gc ? row : 0), qpos, kv0 + col) * FI_LOG2E;
                } else {
                    x *= p.scale_log2;
                }
                s[n][e] = (keep >> col) & 1u ? x : -INFINITY;
            }

        /* Online softmax per row; the row's four lanes agree on the maximum. */
        float alpha[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float mx = fmaxf(fmaxf(s[0][2 * h], s[0][2 * h + 1]), fmaxf(s[1][2 * h], s[1][2 * h + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float m_new = fmaxf(m_run[h], mx);
            const float m_use = m_new == -INFINITY ? 0.f : m_new;
            alpha[h] = fi_ex2(m_run[h] - m_use);
            m_run[h] = m_new;
            float sum = 0.f;
#pragma unroll
            for (int n = 0; n < 2; n++) {
                s[n][2 * h] = fi_ex2(s[n][2 * h] - m_use);
                s[n][2 * h + 1] = fi_ex2(s[n][2 * h + 1] - m_use);
                sum += s[n][2 * h] + s[n][2 * h + 1];
            }
            l_run[h] = l_run[h] * alpha[h] + sum; /* this lane's columns; summed over the quad at the end */
        }
        /* Rescaling is skipped while no row's maximum moved (the common case deep in a split). */
        if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                o_acc[n][0] *= alpha[0], o_acc[n][1] *= alpha[0];
                o_acc[n][2] *= alpha[1], o_acc[n][3] *= alpha[1];
            }
        }

        /* O += P·V: P (accumulator layout) is the A operand of one k-step of 16 keys. */
        uint32_t pa[4];
        pa[0] = fi_mma<T>::pack(s[0][0], s[0][1]);
        pa[1] = fi_mma<T>::pack(s[0][2], s[0][3]);
        pa[2] = fi_mma<T>::pack(s[1][0], s[1][1]);
        pa[3] = fi_mma<T>::pack(s[1][2], s[1][3]);
#pragma unroll
        for (int dp = 0; dp < D / 16; dp++) {
            uint32_t v0, v1, v2, v3;
            fi_ldmatrix_x4_trans(vt + fi_decode_swz<D>((mi & 1) * 8 + mr, dp * 2 + (mi >> 1)), v0, v1, v2, v3);
            fi_mma<T>::run(o_acc[2 * dp], pa, v0, v1);
            fi_mma<T>::run(o_acc[2 * dp + 1], pa, v2, v3);
        }
        __syncwarp(); /* the next iteration's copy overwrites the stage just read */
    }
    fi_cp_async_wait<0>();
    __syncwarp();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    /* The combine kernel may start launching: it waits for this grid's completion. */
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif

#pragma unroll
    for (int h = 0; h < 2; h++) {
        l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 1);
        l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 2);
    }

    /* Merge the warps of this CTA; each warp's state goes into its own (now idle)
     * part of the ring. */
    float *wm = reinterpret_cast<float *>(fi_decode_smem + (size_t)warp * NS * 2 * TILE_BYTES);
    float *wl = wm + 16, *wo = wm + 32; /* m[16], l[16], O[16][D] */
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int row = qr + 8 * h;
        if (row < gc) {
            if ((lane & 3) == 0) wm[row] = m_run[h], wl[row] = l_run[h];
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                wo[row * D + n * 8 + qc] = o_acc[n][2 * h];
                wo[row * D + n * 8 + qc + 1] = o_acc[n][2 * h + 1];
            }
        }
    }
    __syncthreads();
    for (int idx = tid; idx < gc * D; idx += FI_DECODE_WARPS * 32) {
        const int g = idx / D, d = idx % D, h = h0 + g;
        float mw[FI_DECODE_WARPS], M = -INFINITY;
#pragma unroll
        for (int w = 0; w < FI_DECODE_WARPS; w++) {
            mw[w] = reinterpret_cast<const float *>(fi_decode_smem + (size_t)w * NS * 2 * TILE_BYTES)[g];
            M = fmaxf(M, mw[w]);
        }
        const float M_use = M == -INFINITY ? 0.f : M;
        float L = 0.f, O = 0.f;
#pragma unroll
        for (int w = 0; w < FI_DECODE_WARPS; w++) {
            const float *ws = reinterpret_cast<const float *>(fi_decode_smem + (size_t)w * NS * 2 * TILE_BYTES);
            const float wt = fi_ex2(mw[w] - M_use);
            L += ws[16 + g] * wt;
            O += ws[32 + g * D + d] * wt;
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

/* Merges the splits' (O, LSE) pairs: weights exp(lse_i - max); all -inf -> O = 0.
 * One CTA of `dim` threads per (sequence, head), one output element per thread.
 * The splits go in chunks of FI_COMBINE_CHUNK whose loads are all issued at once
 * (one memory round trip per chunk; the weights are recomputed per thread, which
 * is cheaper than sharing them through a barrier), with online rescaling between
 * chunks. Launched as a programmatic dependent of the decode kernel on sm_90, so
 * its launch overlaps the decode kernel's tail; griddepcontrol.wait then waits for
 * that kernel's completion and memory. */
#define FI_COMBINE_CHUNK 32
__global__ void __launch_bounds__(128)
    fi_decode_combine_kernel(const __grid_constant__ fi_cuda_attn_kparams p, int dim) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
    const int h = blockIdx.x, b = blockIdx.y, d = threadIdx.x;
    const int64_t bh = (int64_t)b * p.hq + h, stride = (int64_t)p.batch * p.hq;
    const int ns = p.num_splits;
    const float *lse_in = p.ws_lse + bh, *o_in = p.ws_o + bh * dim + d;
    float M = -INFINITY, W = 0.f, O = 0.f;
    for (int s0 = 0; s0 < ns; s0 += FI_COMBINE_CHUNK) {
        float l[FI_COMBINE_CHUNK], o[FI_COMBINE_CHUNK];
#pragma unroll
        for (int i = 0; i < FI_COMBINE_CHUNK; i++) {
            const bool in = s0 + i < ns;
            l[i] = in ? lse_in[(int64_t)(s0 + i) * stride] : -INFINITY;
            o[i] = in ? o_in[(int64_t)(s0 + i) * stride * dim] : 0.f;
        }
        float m = M;
#pragma unroll
        for (int i = 0; i < FI_COMBINE_CHUNK; i++) m = fmaxf(m, l[i]);
        const float m_use = m == -INFINITY ? 0.f : m;
        const float r = __expf(M - m_use); /* 0 while nothing was kept */
        W *= r, O *= r;
#pragma unroll
        for (int i = 0; i < FI_COMBINE_CHUNK; i++) {
            /* An empty split holds O = 0 with weight 0. */
            const float w = __expf(l[i] - m_use);
            W += w;
            O = fmaf(w, o[i], O);
        }
        M = m;
    }
    const int64_t orow = fi_dev_out_row(p, b, h, 0);
    p.out[orow * dim + d] = W > 0.f ? O / W : 0.f;
    if (p.lse && d == 0) p.lse[orow] = W > 0.f ? M + logf(W) : -INFINITY;
}

template <int D, typename T>
static cudaError_t set_smem_limit() {
    return cudaFuncSetAttribute(fi_decode_kernel<D, T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)fi_decode_smem_bytes(D));
}

template <int D, typename T>
static cudaError_t launch(const fi_cuda_attn_kparams &p, cudaStream_t stream) {
    const int gc = p.heads_per_cta;
    if (gc < 1 || gc > 16 || p.group % gc) return cudaErrorInvalidValue;
    /* The shared-memory limit was raised by fi_cuda_decode_ctas_per_sm when the plan was made. */
    const dim3 grid(p.num_splits, p.hkv * (p.group / gc), p.batch), block(FI_DECODE_WARPS * 32);
    fi_decode_kernel<D, T><<<grid, block, fi_decode_smem_bytes(D), stream>>>(p);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || p.num_splits == 1) return e;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(p.hq, p.batch);
    cfg.blockDim = dim3(D);
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    int dev = 0, major = 0;
    if (FI_DECODE_PDL && cudaGetDevice(&dev) == cudaSuccess &&
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 9) {
        cfg.attrs = attr;
        cfg.numAttrs = 1;
    }
    return cudaLaunchKernelEx(&cfg, fi_decode_combine_kernel, p, D);
}

cudaError_t fi_cuda_launch_decode(const fi_cuda_attn_kparams &p, int dim, bool bf16,
                                  cudaStream_t stream) {
    if (dim == 64) return bf16 ? launch<64, __nv_bfloat16>(p, stream) : launch<64, __half>(p, stream);
    if (dim == 128) return bf16 ? launch<128, __nv_bfloat16>(p, stream) : launch<128, __half>(p, stream);
    return cudaErrorInvalidValue;
}

template <int D, typename T>
static int ctas_per_sm() {
    int n = 0;
    if (set_smem_limit<D, T>() != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, fi_decode_kernel<D, T>, FI_DECODE_WARPS * 32,
                                                      fi_decode_smem_bytes(D)) != cudaSuccess ||
        n < 1)
        return 1;
    return n;
}

int fi_cuda_decode_ctas_per_sm(int dim, bool bf16, int heads_per_cta) {
    (void)heads_per_cta; /* one kernel for every head count */
    if (dim == 64) return bf16 ? ctas_per_sm<64, __nv_bfloat16>() : ctas_per_sm<64, __half>();
    return bf16 ? ctas_per_sm<128, __nv_bfloat16>() : ctas_per_sm<128, __half>();
}
