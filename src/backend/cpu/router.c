/* Router variants, following transformers' DeepseekV2TopkRouter, DeepseekV3TopkRouter (also GLM-4.5)
 * and Qwen3MoeSparseMoeBlock. Ties go to the lower expert index. */
#include "backend/cpu/router.h"

#include <math.h>

#include "backend/cpu/ops.h"

/* index of the largest v[i] with taken[i] == 0 */
static int argmax_free(const float *v, const float *taken, int n) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (taken[i] == 0 && (best < 0 || v[i] > v[best]))
            best = i;
    return best;
}

/* Masks (sets to -inf) the experts of every group outside the topk_group best groups. */
static void limit_groups(const kr_router_config *rc, float *choice, float *gscore, float *gtaken) {
    int per = rc->n_experts / rc->n_group;
    for (int g = 0; g < rc->n_group; g++) {
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
        gscore[g] = rc->group_rule == KR_GROUP_MAX ? best : best + second;
        gtaken[g] = 0;
    }
    for (int k = 0; k < rc->topk_group; k++)
        gtaken[argmax_free(gscore, gtaken, rc->n_group)] = 1;
    for (int g = 0; g < rc->n_group; g++)
        if (!gtaken[g])
            for (int e = 0; e < per; e++)
                choice[g * per + e] = -INFINITY;
}

void kr_route(const kr_router_config *rc, const float *logits, const float *bias, int *idx, float *weights,
              float *scratch) {
    int E = rc->n_experts;
    float *score = scratch, *choice = scratch + E, *taken = scratch + 2 * E;
    for (int e = 0; e < E; e++)
        score[e] = logits[e];
    if (rc->scoring == KR_SCORE_SOFTMAX)
        kr_softmax(score, E);
    else
        for (int e = 0; e < E; e++)
            score[e] = 1.0f / (1.0f + expf(-score[e]));
    for (int e = 0; e < E; e++)
        choice[e] = score[e] + (rc->use_bias && bias ? bias[e] : 0.0f);
    if (rc->group_rule != KR_GROUP_NONE && rc->n_group > 1) {
        /* group scores and flags reuse `taken`'s storage before it serves the top-k below */
        limit_groups(rc, choice, taken, taken + rc->n_group);
    }
    for (int e = 0; e < E; e++)
        taken[e] = 0;
    float sum = 0;
    for (int k = 0; k < rc->top_k; k++) {
        int best = argmax_free(choice, taken, E);
        taken[best] = 1;
        idx[k] = best;
        weights[k] = score[best]; /* the unbiased score: the bias only chooses */
        sum += weights[k];
    }
    for (int k = 0; k < rc->top_k; k++) {
        if (rc->normalize)
            weights[k] /= sum + rc->norm_eps;
        weights[k] *= rc->scale;
    }
}
