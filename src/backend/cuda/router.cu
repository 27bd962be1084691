/* GPU router. Each token is one warp; expert e lives with lane e % 32. Scores and choices sit in
 * shared memory; the taken flags of top-k are a bit mask per lane. Every step that the CPU does in a
 * fixed order (the softmax sum, the group ranking, the weight sum) is done here in the same order by
 * one lane, so the expert ids agree exactly and the weights to rounding. */
#include "backend/cuda/cuda_internal.cuh"
#include "backend/cuda/cuda_router.h"

enum { WARPS = 4, MAX_GROUPS = 64 };

/* (v, i) beats (bv, bi) by the CPU's argmax_free rule: larger value, or the first free index seen */
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
    return i >= 0 && (bi < 0 || v > bv || (v == bv && i < bi));
}

/* index of the best free entry of v[0..n) for one warp; taken bit j of a lane = entry lane + 32 j */
__device__ int warp_argmax_free(const float *v, int n, unsigned taken_bits, int lane) {
    float bv = 0;
    int bi = -1;
    for (int j = 0, e = lane; e < n; j++, e += 32)
        if (!((taken_bits >> j) & 1u) && (bi < 0 || v[e] > bv)) {
            bv = v[e];
            bi = e;
        }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (better(ov, oi, bv, bi)) {
            bv = ov;
            bi = oi;
        }
    }
    return bi;
}

__global__ void route_kernel(kr_cuda_router_params p, const float *logits, const float *bias, int32_t *idx,
                             float *weights, int64_t T) {
    extern __shared__ float smem[];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t t = blockIdx.x * (int64_t)WARPS + warp;
    if (t >= T)
        return; /* whole warps leave together: no block-wide barrier below */
    int E = p.n_experts;
    float *score = smem + warp * (2 * E + 2 * MAX_GROUPS), *choice = score + E, *gscore = choice + E,
          *gtaken = gscore + MAX_GROUPS;
    const float *lg = logits + t * E;
    if (!p.sigmoid) {
        float m = -INFINITY;
        for (int e = lane; e < E; e += 32)
            m = fmaxf(m, lg[e]);
        m = kr_warp_max(m);
        for (int e = lane; e < E; e += 32)
            score[e] = expf(lg[e] - m);
        __syncwarp();
        if (lane == 0) {
            double sum = 0;
            for (int e = 0; e < E; e++)
                sum += score[e];
            gscore[0] = (float)(1.0 / sum);
        }
        __syncwarp();
        float inv = gscore[0];
        for (int e = lane; e < E; e += 32)
            score[e] *= inv;
    } else {
        for (int e = lane; e < E; e += 32)
            score[e] = 1.0f / (1.0f + expf(-lg[e]));
    }
    for (int e = lane; e < E; e += 32)
        choice[e] = score[e] + (p.use_bias && bias ? bias[e] : 0.0f);
    __syncwarp();
    if (p.group_rule != 0 && p.n_group > 1) {
        int per = E / p.n_group;
        for (int g = lane; g < p.n_group; g += 32) {
            const float *c = choice + g * per;
            float best = -INFINITY, second = -INFINITY;
            for (int e = 0; e < per; e++) {
                if (c[e] > best) {
                    second = best;
                    best = c[e];
                } else if (c[e] > second) {
                    second = c[e];
                }
            }
            gscore[g] = p.group_rule == 1 ? best : best + second;
            gtaken[g] = 0;
        }
        __syncwarp();
        if (lane == 0)
            for (int k = 0; k < p.topk_group; k++) {
                int best = -1;
                for (int g = 0; g < p.n_group; g++)
                    if (gtaken[g] == 0 && (best < 0 || gscore[g] > gscore[best]))
                        best = g;
                gtaken[best] = 1;
            }
        __syncwarp();
        for (int e = lane; e < E; e += 32)
            if (gtaken[e / per] == 0)
                choice[e] = -INFINITY;
        __syncwarp();
    }
    unsigned taken = 0;
    int32_t *ti = idx + t * p.top_k;
    float *tw = weights + t * p.top_k;
    for (int k = 0; k < p.top_k; k++) {
        int best = warp_argmax_free(choice, E, taken, lane);
        if (best % 32 == lane)
            taken |= 1u << (best / 32);
        if (lane == 0) {
            ti[k] = best;
            tw[k] = score[best]; /* the unbiased score: the bias only chooses */
        }
    }
    if (lane == 0) {
        float sum = 0;
        for (int k = 0; k < p.top_k; k++)
            sum += tw[k];
        for (int k = 0; k < p.top_k; k++) {
            float w = tw[k];
            if (p.normalize)
                w /= sum + p.norm_eps;
            tw[k] = w * p.scale;
        }
    }
}

extern "C" kr_status kr_cuda_route(const kr_cuda_router_params *p, const float *logits, const float *bias,
                                   int32_t *idx, float *weights, int64_t T, kr_cuda_stream s) {
    if (p->n_experts < 1 || p->n_experts > KR_CUDA_ROUTER_MAX_EXPERTS)
        return kr_fail(KR_ERR_UNSUPPORTED, "kr_cuda_route: %d experts (the GPU router takes 1 to %d)", p->n_experts,
                       KR_CUDA_ROUTER_MAX_EXPERTS);
    if (p->top_k < 1 || p->top_k > p->n_experts)
        return kr_fail(KR_ERR_ARG, "kr_cuda_route: top_k %d of %d experts", p->top_k, p->n_experts);
    if (p->group_rule != 0 && p->n_group > 1) {
        if (p->n_group > MAX_GROUPS || p->n_experts % p->n_group || p->topk_group < 1 || p->topk_group > p->n_group)
            return kr_fail(KR_ERR_UNSUPPORTED, "kr_cuda_route: %d groups (top %d) over %d experts", p->n_group,
                           p->topk_group, p->n_experts);
    }
    if (T == 0)
        return KR_OK;
    size_t smem = (size_t)WARPS * (2 * p->n_experts + 2 * MAX_GROUPS) * sizeof(float);
    if (smem > 48 * 1024)
        KR_CU(cudaFuncSetAttribute(route_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    route_kernel<<<kr_blocks(T, WARPS), WARPS * 32, smem, s>>>(*p, logits, bias, idx, weights, T);
    KR_CU_LAUNCHED("route");
    return KR_OK;
}
