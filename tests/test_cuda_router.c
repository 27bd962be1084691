/* The GPU router against backend/cpu/router.c on every variant krasis runs (Qwen3 softmax top-k,
 * DeepSeek-V2 greedy and group-limited, DeepSeek-V3/Kimi-K2/GLM-4.5 sigmoid with bias and top-2-sum
 * groups): the expert ids must be identical, the weights equal to rounding; also logits with exact ties. */
#include "backend/cpu/router.h"
#include "backend/cuda/cuda_router.h"
#include "cuda_test.h"

static unsigned long long seed = 0xfeedface12345678ull;

static void run(const char *name, kr_router_config rc, int64_t T, int ties) {
    int E = rc.n_experts, K = rc.top_k;
    float *logits = rand_vec(T * E, 4.0f, &seed), *bias = rand_vec(E, 0.5f, &seed);
    if (ties) /* few distinct values: exact ties everywhere, which both sides break to the lower index */
        for (int64_t i = 0; i < T * E; i++)
            logits[i] = roundf(logits[i]);
    int *idx = malloc((size_t)(T * K) * sizeof *idx);
    float *w = malloc((size_t)(T * K) * sizeof *w), *scratch = malloc((size_t)(4 * E) * sizeof *scratch);
    for (int64_t t = 0; t < T; t++)
        kr_route(&rc, logits + t * E, rc.use_bias ? bias : NULL, idx + t * K, w + t * K, scratch);
    float *dl = dev_upload(logits, (size_t)(T * E) * 4), *db = rc.use_bias ? dev_upload(bias, (size_t)E * 4) : NULL;
    int32_t *didx = dev_alloc((size_t)(T * K) * 4);
    float *dw = dev_alloc((size_t)(T * K) * 4);
    CK(kr_cuda_memset(didx, 0xff, (size_t)(T * K) * 4, NULL));
    CK(kr_cuda_fill_nan(dw, KR_CU_F32, T * K, NULL));
    kr_cuda_router_params p = kr_cuda_router_params_from(&rc);
    CK(kr_cuda_route(&p, dl, db, didx, dw, T, NULL));
    CK(kr_cuda_device_sync());
    int32_t *gidx = malloc((size_t)(T * K) * 4);
    float *gw = malloc((size_t)(T * K) * 4);
    dev_download(gidx, didx, (size_t)(T * K) * 4);
    dev_download(gw, dw, (size_t)(T * K) * 4);
    int64_t id_bad = 0, first = -1;
    for (int64_t i = 0; i < T * K; i++)
        if (gidx[i] != idx[i]) {
            id_bad++;
            if (first < 0)
                first = i;
        }
    CHECK(id_bad == 0, "%s: %lld of %lld expert ids differ (first at token %lld: gpu %d, cpu %d)", name,
          (long long)id_bad, (long long)(T * K), (long long)(first / K), first >= 0 ? gidx[first] : 0,
          first >= 0 ? idx[first] : 0);
    CHECK_REL(gw, w, T * K, 1e-6, "%s weights", name);
    kr_cuda_free(dl), kr_cuda_free(db), kr_cuda_free(didx), kr_cuda_free(dw);
    free(logits), free(bias), free(idx), free(w), free(scratch), free(gidx), free(gw);
}

int main(void) {
    cuda_test_require_device("test_cuda_router");
    kr_router_config qwen3 = {.n_experts = 128, .top_k = 8, .scoring = KR_SCORE_SOFTMAX, .group_rule = KR_GROUP_NONE,
                              .n_group = 1, .topk_group = 1, .normalize = true, .norm_eps = 0, .scale = 1};
    kr_router_config dsv2_lite = {.n_experts = 64, .top_k = 6, .scoring = KR_SCORE_SOFTMAX,
                                  .group_rule = KR_GROUP_NONE, .n_group = 1, .topk_group = 1, .scale = 1};
    kr_router_config dsv2 = {.n_experts = 160, .top_k = 6, .scoring = KR_SCORE_SOFTMAX, .group_rule = KR_GROUP_MAX,
                             .n_group = 8, .topk_group = 3, .scale = 16};
    kr_router_config dsv3 = {.n_experts = 256, .top_k = 8, .scoring = KR_SCORE_SIGMOID, .use_bias = true,
                             .group_rule = KR_GROUP_TOP2_SUM, .n_group = 8, .topk_group = 4, .normalize = true,
                             .norm_eps = 1e-20f, .scale = 2.5f};
    kr_router_config kimi = {.n_experts = 384, .top_k = 8, .scoring = KR_SCORE_SIGMOID, .use_bias = true,
                             .group_rule = KR_GROUP_TOP2_SUM, .n_group = 1, .topk_group = 1, .normalize = true,
                             .norm_eps = 1e-20f, .scale = 2.827f};
    kr_router_config glm = {.n_experts = 128, .top_k = 8, .scoring = KR_SCORE_SIGMOID, .use_bias = true,
                            .group_rule = KR_GROUP_TOP2_SUM, .n_group = 1, .topk_group = 1, .normalize = true,
                            .norm_eps = 1e-20f, .scale = 1};
    kr_router_config wide = {.n_experts = 1024, .top_k = 16, .scoring = KR_SCORE_SOFTMAX, .n_group = 1,
                             .topk_group = 1, .normalize = true, .scale = 1};
    run("qwen3 softmax top-8 of 128", qwen3, 2000, 0);
    run("deepseek-v2-lite greedy top-6 of 64", dsv2_lite, 2000, 0);
    run("deepseek-v2 group max, 3 of 8 groups", dsv2, 2000, 0);
    run("deepseek-v3 sigmoid+bias, top-2-sum groups", dsv3, 2000, 0);
    run("kimi-k2 sigmoid+bias, 384 experts", kimi, 1000, 0);
    run("glm-4.5 sigmoid+bias", glm, 1000, 0);
    run("1024 experts top-16", wide, 300, 0);
    run("qwen3 with tied logits", qwen3, 1000, 1);
    run("deepseek-v3 with tied logits", dsv3, 1000, 1);
    run("deepseek-v2 group max with tied logits", dsv2, 1000, 1);
    run("one token", dsv3, 1, 0);
    kr_cuda_router_params bad = kr_cuda_router_params_from(&qwen3);
    bad.n_experts = 2000;
    CHECK(kr_cuda_route(&bad, NULL, NULL, NULL, NULL, 1, NULL) == KR_ERR_UNSUPPORTED, "2000 experts refused");
    CHECK(strstr(kr_error(), "2000 experts") != NULL, "error names the count: %s", kr_error());
    return test_summary("test_cuda_router");
}
