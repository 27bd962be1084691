/* Router variants on inputs whose answers can be worked out by hand. */
#include <math.h>

#include "backend/cpu/router.h"
#include "test.h"

static void route(const kr_router_config *rc, const float *logits, const float *bias, int *idx, float *w) {
    float scratch[64];
    kr_route(rc, logits, bias, idx, w, scratch);
}

int main(void) {
    int idx[4];
    float w[4];

    /* softmax top-2 (Qwen3 / DeepSeek-V2 greedy): p = [1, 2, 4, 1] / 8 */
    float l1[4] = {0, logf(2), logf(4), 0};
    kr_router_config soft = {.n_experts = 4, .top_k = 2, .scoring = KR_SCORE_SOFTMAX, .n_group = 1,
                             .topk_group = 1, .scale = 1};
    route(&soft, l1, NULL, idx, w);
    CHECK(idx[0] == 2 && idx[1] == 1, "top-2 = %d %d", idx[0], idx[1]);
    CHECK_NEAR(w[0], 0.5, 1e-6);
    CHECK_NEAR(w[1], 0.25, 1e-6);

    /* renormalized over the chosen two: 4/6 and 2/6; scaling applies after */
    soft.normalize = true;
    soft.scale = 3;
    route(&soft, l1, NULL, idx, w);
    CHECK_NEAR(w[0], 3 * 4.0 / 6, 1e-6);
    CHECK_NEAR(w[1], 3 * 2.0 / 6, 1e-6);

    /* group-limited greedy (DeepSeek-V2): p = [3, 1, 2, 2] / 8 in groups {0,1} {2,3}; group max 3/8 vs 2/8
     * keeps group 0 only, so the second expert is 1 (p 1/8) although 2 and 3 score higher */
    float l2[4] = {logf(3), 0, logf(2), logf(2)};
    kr_router_config glg = {.n_experts = 4, .top_k = 2, .scoring = KR_SCORE_SOFTMAX, .group_rule = KR_GROUP_MAX,
                            .n_group = 2, .topk_group = 1, .scale = 1};
    route(&glg, l2, NULL, idx, w);
    CHECK(idx[0] == 0 && idx[1] == 1, "group-limited = %d %d", idx[0], idx[1]);
    CHECK_NEAR(w[0], 3.0 / 8, 1e-6);
    CHECK_NEAR(w[1], 1.0 / 8, 1e-6);

    /* noaux_tc (DeepSeek-V3): sigmoid(0) = 0.5 everywhere; bias makes choice [0.9, 0.1, 0.6, 0.6].
     * Group by top-2 sum: 1.0 vs 1.2 keeps group 1 (the max rule would keep group 0). Weights are the
     * unbiased 0.5s, renormalized to 0.5 each, times 2.5. */
    float zero[4] = {0, 0, 0, 0}, bias[4] = {0.4f, -0.4f, 0.1f, 0.1f};
    kr_router_config v3 = {.n_experts = 4, .top_k = 2, .scoring = KR_SCORE_SIGMOID, .use_bias = true,
                           .group_rule = KR_GROUP_TOP2_SUM, .n_group = 2, .topk_group = 1, .normalize = true,
                           .norm_eps = 1e-20f, .scale = 2.5f};
    route(&v3, zero, bias, idx, w);
    CHECK(idx[0] == 2 && idx[1] == 3, "noaux_tc = %d %d", idx[0], idx[1]);
    CHECK_NEAR(w[0], 1.25, 1e-6);
    CHECK_NEAR(w[1], 1.25, 1e-6);
    v3.group_rule = KR_GROUP_MAX;
    route(&v3, zero, bias, idx, w);
    CHECK(idx[0] == 0, "max rule picks group 0: %d", idx[0]);

    /* the bias chooses but does not weigh: sigmoid [0.731, 0.5, 0.5], bias lifts expert 1 */
    float l3[3] = {1, 0, 0}, b3[3] = {0, 0.5f, 0};
    kr_router_config k1 = {.n_experts = 3, .top_k = 1, .scoring = KR_SCORE_SIGMOID, .use_bias = true,
                           .n_group = 1, .topk_group = 1, .scale = 1};
    route(&k1, l3, b3, idx, w);
    CHECK(idx[0] == 1, "biased choice = %d", idx[0]);
    CHECK_NEAR(w[0], 0.5, 1e-6);

    /* n_group 1 (Kimi-K2, GLM): no masking at all */
    v3.n_group = 1;
    v3.topk_group = 1;
    v3.group_rule = KR_GROUP_TOP2_SUM;
    route(&v3, zero, bias, idx, w);
    CHECK(idx[0] == 0 && idx[1] == 2, "ungrouped = %d %d", idx[0], idx[1]);
    return test_summary("test_router");
}
