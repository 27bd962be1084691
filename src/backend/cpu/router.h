/* MoE routing: from the router's logits for one token to the chosen experts and their weights.
 * Covers softmax top-k (Qwen3, DeepSeek-V2 greedy), group-limited greedy (DeepSeek-V2), and sigmoid with
 * a selection-only bias and top-2-sum groups (DeepSeek-V3 noaux_tc, Kimi-K2, GLM-4.5). */
#ifndef KR_BACKEND_CPU_ROUTER_H
#define KR_BACKEND_CPU_ROUTER_H

#include "model/config.h"

/* logits[n_experts]; bias[n_experts] or NULL; writes idx[top_k] (best first) and weights[top_k].
 * scratch: 4 * n_experts floats. */
void kr_route(const kr_router_config *rc, const float *logits, const float *bias, int *idx, float *weights,
              float *scratch);

#endif
