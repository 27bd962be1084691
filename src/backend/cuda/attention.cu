/* Causal attention, two kernels behind kr_cuda_attention.
 *
 * flash_kernel (bf16 q/k/v, tensor cores, sm_80+): FlashAttention-2's scheme with mma.sync m16n8k16.
 * A block of 4 warps owns 64 query rows of one head, each warp 16 rows; it walks the keys in tiles of
 * 64 (only up to its last row: causal), S = Q K^T lands in registers in the mma accumulator layout,
 * which is also the A-operand layout of the next mma, so P never leaves registers; the running max and
 * sum rescale the output accumulators per tile (online softmax). K and V tiles come in by cp.async
 * (V's copy overlaps the S product) and V is read transposed by ldmatrix.trans.
 *
 * (flash_kernel lives in attention_flash.cu; this file has the split kernel and the dispatch.)
 *
 * split_kernel (any dtype incl. FP8 with scales, any dims up to 576/512): decode and the rest. A block
 * takes up to 8 query heads of one kv head (GQA heads share each K/V tile they load) and a slice of the
 * keys; lane j scores key j of a 32-key tile, the 32 scores update a running max/sum and each lane's
 * slice of the output. Slices (splits) run in parallel over a long cache and a second kernel merges
 * their (max, sum, output) triples. */
#include <math.h>

#include "backend/cuda/cuda_attention.h"
#include "backend/cuda/attention_internal.cuh"
#include "backend/cuda/cuda_internal.cuh"

static int force_split;
extern "C" void kr_cuda_attention_force_split(int on) { force_split = on; }

/* ---------------------------------------------------------------- element access for the split kernel */

template <int DT> __device__ __forceinline__ float ld_el(const void *p, int64_t i);
template <> __device__ __forceinline__ float ld_el<KR_CU_F32>(const void *p, int64_t i) { return ((const float *)p)[i]; }
template <> __device__ __forceinline__ float ld_el<KR_CU_BF16>(const void *p, int64_t i) {
    return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}
template <> __device__ __forceinline__ float ld_el<KR_CU_FP8>(const void *p, int64_t i) {
    return (float)((const __nv_fp8_e4m3 *)p)[i];
}
/* ---------------------------------------------------------------- split-key kernel */

enum { SK_WARPS = 4, SK_HPW = 2, SK_HEADS = SK_WARPS * SK_HPW, SK_KT = 32, SK_KTP = SK_KT + 1 };

/* One tile of SK_KT rows (keys tile .. tile + SK_KT - 1, zero past s1) into shared floats, row stride
 * `stride`. vec: rows are 16-byte aligned and dim fills whole 16-byte chunks, so each thread issues up
 * to 8 independent 16-byte loads before it converts any (the decode kernel is bound by these loads). */
template <int DT, bool TR>
__device__ __forceinline__ void load_tile(float *S, int stride, const char *base, int64_t token_stride, int dim,
                                          int64_t tile, int64_t s1, const float *scale, int64_t scale_stride,
                                          int64_t head, int vec) {
    constexpr int EL = DT == KR_CU_F32 ? 4 : DT == KR_CU_BF16 ? 2 : 1, EPC = 16 / EL, U = 8;
    if (vec) {
        const int cpr = dim / EPC, total = SK_KT * cpr;
        for (int b0 = 0; b0 < total; b0 += U * (int)blockDim.x) {
            uint4 buf[U];
#pragma unroll
            for (int u = 0; u < U; u++) {
                int c = b0 + u * (int)blockDim.x + (int)threadIdx.x;
                buf[u] = make_uint4(0, 0, 0, 0);
                if (c < total) {
                    int j = c / cpr;
                    if (tile + j < s1)
                        buf[u] = __ldg((const uint4 *)(base + ((tile + j) * token_stride + (int64_t)(c % cpr) * EPC) * EL));
                }
            }
#pragma unroll
            for (int u = 0; u < U; u++) {
                int c = b0 + u * (int)blockDim.x + (int)threadIdx.x;
                if (c >= total)
                    break;
                int j = c / cpr, d = (c % cpr) * EPC;
                float sc = 1.0f;
                if (DT == KR_CU_FP8 && tile + j < s1)
                    sc = scale[(tile + j) * scale_stride + head];
                const unsigned char *raw = (const unsigned char *)&buf[u];
#pragma unroll
                for (int e = 0; e < EPC; e++)
                    S[TR ? (d + e) * SK_KTP + j : j * stride + d + e] = ld_el<DT>(raw, e) * sc;
            }
        }
        return;
    }
    for (int i = threadIdx.x; i < SK_KT * dim; i += blockDim.x) {
        int j = i / dim, d = i % dim;
        int64_t key = tile + j;
        float v = 0;
        if (key < s1) {
            v = ld_el<DT>(base, key * token_stride + d);
            if (DT == KR_CU_FP8)
                v *= scale[key * scale_stride + head];
        }
        S[TR ? d * SK_KTP + j : j * stride + d] = v;
    }
}

template <int DT, int NV>
__global__ void __launch_bounds__(SK_WARPS * 32)
    split_kernel(kr_cuda_attn a, int splits, int chunks, int alias, int vec, float *ws) {
    extern __shared__ float sm[];
    /* keys transposed (Kt[d][j], rows of SK_KTP: lane j reads its key's dims conflict-free and each warp
     * reads a dim once for both its heads); values row-major; queries as float4-readable rows */
    const int qk = (int)a.qk_dim, vd = (int)a.v_dim, vs = vd + 1;
    float *Kt = sm, *Vs = Kt + qk * SK_KTP;
    float *Qs = Vs + (alias ? 0 : SK_KT * vs);
    Qs += (4 - ((Qs - sm) & 3)) & 3;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int split = blockIdx.x, kvh = blockIdx.y / chunks, chunk = blockIdx.y % chunks;
    const int64_t t = blockIdx.z;
    const int G = (int)(a.n_heads / a.n_kv_heads), h0 = kvh * G + chunk * SK_HEADS;
    const int nh = min(SK_HEADS, G - chunk * SK_HEADS);
    const int hl0 = warp * SK_HPW, nmine = max(0, min(SK_HPW, nh - hl0)); /* this warp's heads */
    const int64_t n = a.pos0 + t + 1;
    const int64_t per = ((n + splits - 1) / splits + SK_KT - 1) / SK_KT * SK_KT;
    const int64_t s0 = split * per, s1 = min(n, s0 + per);

    for (int i = tid; i < SK_HEADS * qk; i += blockDim.x) /* rows past nh are zero: finite, discarded scores */
        Qs[i] = i / qk < nh ? ld_act(a.q.ptr, a.q.dt, t * a.q.token_stride + (int64_t)(h0 + i / qk) * a.q.head_stride + i % qk)
                            : 0.0f;
    const char *kbase = (const char *)a.k.ptr, *vbase = (const char *)a.v.ptr;
    const size_t el = DT == KR_CU_F32 ? 4 : DT == KR_CU_BF16 ? 2 : 1;
    kbase += (size_t)kvh * a.k.head_stride * el;
    vbase += (size_t)kvh * a.v.head_stride * el;

    float m[SK_HPW], l[SK_HPW], o[SK_HPW][NV];
#pragma unroll
    for (int hh = 0; hh < SK_HPW; hh++) {
        m[hh] = -INFINITY;
        l[hh] = 0;
#pragma unroll
        for (int c = 0; c < NV; c++)
            o[hh][c] = 0;
    }
    const bool q4 = (qk & 3) == 0;
    for (int64_t tile = s0; tile < s1; tile += SK_KT) {
        __syncthreads();
        load_tile<DT, true>(Kt, 0, kbase, a.k.token_stride, qk, tile, s1, a.k.scale, a.k.scale_stride, kvh, vec);
        if (!alias)
            load_tile<DT, false>(Vs, vs, vbase, a.v.token_stride, vd, tile, s1, a.v.scale, a.v.scale_stride, kvh, vec);
        __syncthreads();
        if (nmine == 0)
            continue; /* the same for the whole warp; the barriers above are still met */
        const int64_t key = tile + lane;
        const int nvalid = (int)min((int64_t)SK_KT, s1 - tile);
        float acc[SK_HPW];
#pragma unroll
        for (int hh = 0; hh < SK_HPW; hh++)
            acc[hh] = 0;
        const float *kc = Kt + lane;
        int d = 0;
        if (q4)
            for (; d + 4 <= qk; d += 4) {
                const float k0 = kc[d * SK_KTP], k1 = kc[(d + 1) * SK_KTP], k2 = kc[(d + 2) * SK_KTP],
                            k3 = kc[(d + 3) * SK_KTP];
#pragma unroll
                for (int hh = 0; hh < SK_HPW; hh++) {
                    const float4 q = *(const float4 *)(Qs + (hl0 + hh) * qk + d);
                    acc[hh] += (q.x * k0 + q.y * k1) + (q.z * k2 + q.w * k3);
                }
            }
        for (; d < qk; d++) {
            const float k = kc[d * SK_KTP];
#pragma unroll
            for (int hh = 0; hh < SK_HPW; hh++)
                acc[hh] += Qs[(hl0 + hh) * qk + d] * k;
        }
        float p[SK_HPW];
#pragma unroll
        for (int hh = 0; hh < SK_HPW; hh++) {
            const float sc = key < s1 ? a.scale * acc[hh] : -INFINITY;
            const float mnew = fmaxf(m[hh], kr_warp_max(sc)); /* finite: the tile has a valid key */
            const float corr = expf(m[hh] - mnew);
            p[hh] = key < s1 ? expf(sc - mnew) : 0.0f;
            l[hh] = l[hh] * corr + kr_warp_sum(p[hh]);
            m[hh] = mnew;
#pragma unroll
            for (int c = 0; c < NV; c++)
                o[hh][c] *= corr;
        }
        for (int j = 0; j < nvalid; j++) {
            float pj[SK_HPW];
#pragma unroll
            for (int hh = 0; hh < SK_HPW; hh++)
                pj[hh] = __shfl_sync(0xffffffffu, p[hh], j);
#pragma unroll
            for (int c = 0; c < NV; c++) {
                const int dv = lane + 32 * c;
                if (dv < vd) {
                    /* MLA: the value is the key row's first vd dims, read from the transposed tile */
                    const float v = alias ? Kt[dv * SK_KTP + j] : Vs[j * vs + dv];
#pragma unroll
                    for (int hh = 0; hh < SK_HPW; hh++)
                        o[hh][c] += pj[hh] * v;
                }
            }
        }
    }
#pragma unroll
    for (int hh = 0; hh < SK_HPW; hh++) {
        const int hl = warp * SK_HPW + hh;
        if (hl >= nh)
            break;
        const int64_t h = h0 + hl;
        if (splits == 1) {
            const float inv = 1.0f / l[hh];
#pragma unroll
            for (int c = 0; c < NV; c++)
                if (lane + 32 * c < vd)
                    st_act((void *)a.out.ptr, a.out.dt, t * a.out.token_stride + h * a.out.head_stride + lane + 32 * c,
                           o[hh][c] * inv);
        } else {
            float *w = ws + ((t * a.n_heads + h) * splits + split) * (int64_t)(vd + 2);
            if (lane == 0) {
                w[0] = m[hh];
                w[1] = l[hh];
            }
#pragma unroll
            for (int c = 0; c < NV; c++)
                if (lane + 32 * c < vd)
                    w[2 + lane + 32 * c] = o[hh][c];
        }
    }
}

/* block-wide reduction (max or sum) of one float per thread; every thread gets the result */
template <bool MAX> __device__ float block_reduce(float v, float *red) {
    v = MAX ? kr_warp_max(v) : kr_warp_sum(v);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    __syncthreads(); /* red may still be read from a previous call */
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : (MAX ? -INFINITY : 0.0f);
    return MAX ? kr_warp_max(v) : kr_warp_sum(v);
}

/* merges the splits of one (token, head): weights exp(m_s - max m), computed once per split into shared
 * memory; the output dims then sum over the splits with independent (pipelined) loads */
__global__ void combine_kernel(kr_cuda_attn a, int splits, const float *ws) {
    extern __shared__ float wgt[]; /* [splits + 4]: the compiler may read the remainder loop's tail as one vector */
    __shared__ float red[32];
    const int64_t th = blockIdx.x, t = th / a.n_heads, h = th % a.n_heads;
    const int vd = (int)a.v_dim, st = vd + 2;
    const float *w = ws + th * splits * (int64_t)st;
    float mx = -INFINITY;
    for (int s = threadIdx.x; s < splits; s += blockDim.x)
        mx = fmaxf(mx, w[s * st]);
    mx = block_reduce<true>(mx, red);
    float L = 0;
    for (int s = threadIdx.x; s < splits; s += blockDim.x) {
        const float ms = w[s * st], e = ms == -INFINITY ? 0.0f : expf(ms - mx);
        wgt[s] = e;
        L += e * w[s * st + 1];
    }
    if (threadIdx.x < 4)
        wgt[splits + threadIdx.x] = 0;
    L = block_reduce<false>(L, red); /* its barriers also publish wgt */
    for (int d = threadIdx.x; d < vd; d += blockDim.x) {
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0; /* four independent chains: four loads in flight */
        int s = 0;
        for (; s + 4 <= splits; s += 4) {
            a0 += w[s * st + 2 + d] * wgt[s];
            a1 += w[(s + 1) * st + 2 + d] * wgt[s + 1];
            a2 += w[(s + 2) * st + 2 + d] * wgt[s + 2];
            a3 += w[(s + 3) * st + 2 + d] * wgt[s + 3];
        }
        for (; s < splits; s++)
            a0 += w[s * st + 2 + d] * wgt[s];
        st_act((void *)a.out.ptr, a.out.dt, t * a.out.token_stride + h * a.out.head_stride + d,
               ((a0 + a1) + (a2 + a3)) / L);
    }
}

/* ---------------------------------------------------------------- dispatch */


/* flash dims handled: 0 when none */
static int flash_variant(const kr_cuda_attn *a) {
    if (force_split || a->T < 16)
        return 0;
    if (a->q.dt != KR_CU_BF16 || a->k.dt != KR_CU_BF16 || a->v.dt != KR_CU_BF16)
        return 0;
    if (!aligned16(a->q.ptr) || !aligned16(a->k.ptr) || !aligned16(a->v.ptr))
        return 0;
    int64_t strides[] = {a->q.token_stride, a->q.head_stride, a->k.token_stride,
                         a->k.head_stride, a->v.token_stride, a->v.head_stride};
    for (int i = 0; i < 6; i++)
        if (strides[i] % 8)
            return 0;
    if (a->qk_dim == 128 && a->v_dim == 128)
        return 1;
    if (a->qk_dim == 192 && a->v_dim == 128)
        return 2;
    if (a->qk_dim == 64 && a->v_dim == 64)
        return 3;
    return 0;
}

/* Device attributes, read once per device: a decode step calls attention once per layer, and the
 * attribute queries would otherwise sit between the GPU's kernels. (A cache of read-only facts.) */
enum { MAX_DEVICES = 64 };
static int cached_sms[MAX_DEVICES], cached_optin[MAX_DEVICES];

static int device_attr(int *cache, cudaDeviceAttr attr) {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess)
        return 0;
    if (dev < MAX_DEVICES && cache[dev])
        return cache[dev];
    if (cudaDeviceGetAttribute(&n, attr, dev) != cudaSuccess)
        return 0;
    if (dev < MAX_DEVICES)
        cache[dev] = n;
    return n;
}

static int sm_count(void) {
    int n = device_attr(cached_sms, cudaDevAttrMultiProcessorCount);
    return n > 0 ? n : 1;
}

static int head_chunks(const kr_cuda_attn *a) {
    int64_t G = a->n_heads / a->n_kv_heads;
    return (int)((G + SK_HEADS - 1) / SK_HEADS);
}

static int choose_splits(const kr_cuda_attn *a) {
    int64_t blocks = a->T * a->n_kv_heads * head_chunks(a);
    int64_t want = (8 * (int64_t)sm_count() + blocks - 1) / blocks;
    int64_t by_len = (a->pos0 + a->T + 127) / 128; /* at least 128 keys a split */
    int64_t s = want < by_len ? want : by_len;
    return (int)(s < 1 ? 1 : s > 256 ? 256 : s);
}

static bool v_aliases_k(const kr_cuda_attn *a) {
    return a->v.ptr == a->k.ptr && a->v.dt == a->k.dt && a->v.token_stride == a->k.token_stride &&
           a->v.head_stride == a->k.head_stride && a->v_dim <= a->qk_dim;
}

extern "C" const char *kr_cuda_attention_path(const kr_cuda_attn *a) {
    return flash_variant(a) ? "flash_mma" : "split_kv";
}

extern "C" size_t kr_cuda_attention_ws_bytes(const kr_cuda_attn *a) {
    if (flash_variant(a))
        return 0;
    int splits = choose_splits(a);
    return splits == 1 ? 0 : (size_t)(a->T * a->n_heads) * splits * (size_t)(a->v_dim + 2) * sizeof(float);
}

/* whether every K/V row the split kernel reads starts on 16 bytes and spans whole 16-byte chunks */
static int vectorizable(const kr_cuda_attn *a, int dt) {
    int64_t epc = 16 / (int64_t)kr_cuda_dtype_size((kr_cuda_dtype)dt);
    return aligned16(a->k.ptr) && aligned16(a->v.ptr) && a->qk_dim % epc == 0 && a->v_dim % epc == 0 &&
           a->k.token_stride % epc == 0 && a->k.head_stride % epc == 0 && a->v.token_stride % epc == 0 &&
           a->v.head_stride % epc == 0;
}

template <int DT, int NV>
static kr_status launch_split_nv(const kr_cuda_attn *a, int splits, float *ws, cudaStream_t s) {
    int alias = v_aliases_k(a);
    int qk = (int)a->qk_dim, vd = (int)a->v_dim;
    size_t smem = ((size_t)qk * SK_KTP + (alias ? 0 : (size_t)SK_KT * (vd + 1)) + 3 + (size_t)SK_HEADS * qk) * sizeof(float);
    int optin = device_attr(cached_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin);
    if (smem > (size_t)optin)
        return kr_fail(KR_ERR_UNSUPPORTED,
                       "attention with qk_dim %d, v_dim %d needs %zu bytes of shared memory a block; this GPU allows %d",
                       qk, vd, smem, optin);
    static int given[KR_SMEM_DEVICES];
    KR_TRY(ensure_smem(split_kernel<DT, NV>, smem, given));
    int chunks = head_chunks(a);
    dim3 grid((unsigned)splits, (unsigned)(a->n_kv_heads * chunks), (unsigned)a->T);
    split_kernel<DT, NV><<<grid, SK_WARPS * 32, smem, s>>>(*a, splits, chunks, alias, vectorizable(a, DT), ws);
    KR_CU_LAUNCHED("split-key attention");
    if (splits > 1) {
        combine_kernel<<<(unsigned)(a->T * a->n_heads), 128, (size_t)(splits + 4) * sizeof(float), s>>>(*a, splits, ws);
        KR_CU_LAUNCHED("attention combine");
    }
    return KR_OK;
}

template <int DT> static kr_status launch_split(const kr_cuda_attn *a, int splits, float *ws, cudaStream_t s) {
    int64_t nv = (a->v_dim + 31) / 32;
    if (nv <= 2)
        return launch_split_nv<DT, 2>(a, splits, ws, s);
    if (nv <= 4)
        return launch_split_nv<DT, 4>(a, splits, ws, s);
    if (nv <= 8)
        return launch_split_nv<DT, 8>(a, splits, ws, s);
    return launch_split_nv<DT, 16>(a, splits, ws, s);
}

extern "C" kr_status kr_cuda_attention(const kr_cuda_attn *a, void *ws, size_t ws_bytes, kr_cuda_stream s) {
    if (a->T < 0 || a->pos0 < 0 || a->n_heads < 1 || a->n_kv_heads < 1 || a->n_heads % a->n_kv_heads)
        return kr_fail(KR_ERR_ARG, "attention: %lld heads over %lld kv heads, T %lld, pos0 %lld", (long long)a->n_heads,
                       (long long)a->n_kv_heads, (long long)a->T, (long long)a->pos0);
    if (a->qk_dim < 1 || a->qk_dim > KR_CUDA_ATTN_MAX_QK || a->v_dim < 1 || a->v_dim > KR_CUDA_ATTN_MAX_V)
        return kr_fail(KR_ERR_UNSUPPORTED, "attention: qk_dim %lld / v_dim %lld (the GPU takes up to %d / %d)",
                       (long long)a->qk_dim, (long long)a->v_dim, KR_CUDA_ATTN_MAX_QK, KR_CUDA_ATTN_MAX_V);
    if ((a->q.dt != KR_CU_F32 && a->q.dt != KR_CU_BF16) || (a->out.dt != KR_CU_F32 && a->out.dt != KR_CU_BF16))
        return kr_fail(KR_ERR_ARG, "attention: q is %s and out %s (each must be f32 or bf16)",
                       kr_cuda_dtype_name(a->q.dt), kr_cuda_dtype_name(a->out.dt));
    if (a->k.dt != a->v.dt || a->k.dt == KR_CU_I8)
        return kr_fail(KR_ERR_ARG, "attention: keys %s and values %s (one type of f32, bf16, fp8_e4m3)",
                       kr_cuda_dtype_name(a->k.dt), kr_cuda_dtype_name(a->v.dt));
    if (a->k.dt == KR_CU_FP8 && (!a->k.scale || !a->v.scale))
        return kr_fail(KR_ERR_ARG, "attention: FP8 keys/values need their scales");
    if (a->T == 0)
        return KR_OK;
    if (a->T > 65535)
        if (!flash_variant(a))
            return kr_fail(KR_ERR_UNSUPPORTED, "attention: %lld queries in one call through the split-key kernel (at most 65535)",
                           (long long)a->T);
    switch (flash_variant(a)) {
    case 0: break;
    default: return kr_cuda_flash_attention(a, flash_variant(a), s);
    }
    int splits = choose_splits(a);
    size_t need = kr_cuda_attention_ws_bytes(a);
    if (need > ws_bytes || (need && !ws))
        return kr_fail(KR_ERR_ARG, "attention: workspace of %zu bytes given, %zu needed", ws_bytes, need);
    switch (a->k.dt) {
    case KR_CU_F32: return launch_split<KR_CU_F32>(a, splits, (float *)ws, s);
    case KR_CU_BF16: return launch_split<KR_CU_BF16>(a, splits, (float *)ws, s);
    case KR_CU_FP8: return launch_split<KR_CU_FP8>(a, splits, (float *)ws, s);
    default: return kr_fail(KR_ERR_ARG, "attention: key dtype %s", kr_cuda_dtype_name(a->k.dt));
    }
}
