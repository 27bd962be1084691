/* MoE routing on the GPU, one warp per token: the same choices as backend/cpu/router.c (softmax or
 * sigmoid scores, selection-only bias, group limiting by the best or the two best experts of a
 * group, top-k with ties to the lower index, normalisation and scaling). */
#ifndef KR_BACKEND_CUDA_ROUTER_H
#define KR_BACKEND_CUDA_ROUTER_H

#include "backend/cuda/cuda_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A copy of kr_router_config's fields with no jansson behind it (the .cu files never see config.h). */
typedef struct {
    int n_experts, top_k;
    int sigmoid;    /* 0: softmax scores, 1: sigmoid */
    int use_bias;
    int group_rule; /* 0 none, 1 group max, 2 group top-2 sum (kr_group_rule's values) */
    int n_group, topk_group;
    int normalize;
    float norm_eps, scale;
} kr_cuda_router_params;

/* Most experts kr_cuda_route takes (32 per lane of the token's warp). */
#define KR_CUDA_ROUTER_MAX_EXPERTS 1024

/* logits: [T, n_experts] f32; bias: [n_experts] f32 or NULL; idx: [T, top_k] int32 best first;
 * weights: [T, top_k] f32. */
kr_status kr_cuda_route(const kr_cuda_router_params *p, const float *logits, const float *bias, int32_t *idx,
                        float *weights, int64_t T, kr_cuda_stream s);

#ifdef __cplusplus
}
#endif

#ifndef __CUDACC__
#include "model/config.h"
static inline kr_cuda_router_params kr_cuda_router_params_from(const kr_router_config *rc) {
    kr_cuda_router_params p;
    p.n_experts = rc->n_experts;
    p.top_k = rc->top_k;
    p.sigmoid = rc->scoring == KR_SCORE_SIGMOID;
    p.use_bias = rc->use_bias;
    p.group_rule = (int)rc->group_rule;
    p.n_group = rc->n_group;
    p.topk_group = rc->topk_group;
    p.normalize = rc->normalize;
    p.norm_eps = rc->norm_eps;
    p.scale = rc->scale;
    return p;
}
#endif

#endif
