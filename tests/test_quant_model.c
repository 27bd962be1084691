/* Quality of the quantized path on real model files: INT8 experts (routed + shared), and every
 * component INT8 (attention projections, dense MLPs and lm_head too), keep every fixture's logits within
 * cosine 0.999 of float32, and the demo model's greedy continuation of its reference prompt is token for
 * token the one transformers produced in both configurations. The expert caches go to a temporary
 * directory.
 * Routing is discontinuous: these tiny random models have top-k / group decisions whose float32 margin
 * is well below INT8's ~1% noise (measured: the dsv3_fp8 position 4 group scores differ by 0.5%), and
 * which way such a near-tie falls is luck (on other token ids the float path re-routes as often as the
 * fully quantized one). So kr_route is wrapped (-Wl,--wrap=kr_route, perf.cmake) to record each run's
 * decisions: a position is compared (cosine >= 0.999) up to the first one where the quantized run chose
 * other experts than float32; that one and the positions after it (which attend to it) are not, and at
 * most 1 of the 6 x MoE-layers decisions may differ. Without a re-route this is the plain whole-sequence
 * check. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/cpu/router.h"
#include "model/model.h"
#include "test.h"

/* the routing trace: every kr_route call's expert set, in call order (layer by layer, token by token) */
enum { TRACE_CAP = 4096 };
static int trace[TRACE_CAP], trace_n;
void __real_kr_route(const kr_router_config *rc, const float *logits, const float *bias, int *idx, float *weights,
                     float *scratch);
void __wrap_kr_route(const kr_router_config *rc, const float *logits, const float *bias, int *idx, float *weights,
                     float *scratch) {
    __real_kr_route(rc, logits, bias, idx, weights, scratch);
    unsigned long long set = 0; /* n_experts <= 64 in the fixtures; larger ones hash the same way */
    for (int k = 0; k < rc->top_k; k++)
        set |= 1ull << (idx[k] & 63);
    if (trace_n + 2 <= TRACE_CAP) {
        trace[trace_n++] = (int)(set & 0x7fffffff);
        trace[trace_n++] = (int)(set >> 31);
    }
}


static kr_status logits_of(kr_model *m, const int32_t *ids, int64_t n, float *out) {
    kr_kv_cache *kv;
    KR_TRY(kr_kv_cache_create(m, &kv));
    kr_status s = kr_forward(m, kv, ids, n, true, out);
    kr_kv_cache_free(kv);
    return s;
}

static void fixture(const char *name, const char *label, kr_quant_config qc) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/%s", KRASIS_SOURCE_DIR, name);
    kr_model *m;
    kr_status st = kr_model_open(dir, &m);
    CHECK(st == KR_OK, "%s: %s", name, kr_error());
    if (st != KR_OK)
        return;
    int32_t ids[6];
    for (int i = 0; i < 6; i++)
        ids[i] = (int32_t)((7 + 13 * i) % m->hp.vocab);
    int64_t V = m->hp.vocab;
    float *ref = malloc((size_t)(6 * V) * sizeof *ref), *q = malloc((size_t)(6 * V) * sizeof *q);
    static int tref[TRACE_CAP];
    trace_n = 0;
    st = logits_of(m, ids, 6, ref);
    int nref = trace_n;
    memcpy(tref, trace, (size_t)nref * sizeof *tref);
    if (st == KR_OK)
        st = kr_model_quantize(m, &qc);
    trace_n = 0;
    if (st == KR_OK)
        st = logits_of(m, ids, 6, q);
    CHECK(st == KR_OK, "%s: %s", name, kr_error());
    CHECK(st != KR_OK || trace_n == nref, "%s %s: %d routing decisions, float32 made %d", name, label, trace_n / 2,
          nref / 2);
    if (st == KR_OK && trace_n == nref) {
        int first = 6, differ = 0; /* decisions are (layer, token) in call order: token = index % 6 */
        for (int i = 0; i < nref; i += 2)
            if (tref[i] != trace[i] || tref[i + 1] != trace[i + 1]) {
                differ++;
                first = i / 2 % 6 < first ? i / 2 % 6 : first;
            }
        CHECK(differ <= 1, "%s %s: %d of %d routing decisions differ from float32", name, label, differ, nref / 2);
        double cs = first > 0 ? test_cosine(ref, q, first * V) : 1;
        printf("test_quant_model: %-18s %s: cosine %.6f vs float32", name, label, cs);
        if (first < 6)
            printf(" (positions 0..%d; position %d re-routed at a near-tie)", first - 1, first);
        printf("\n");
        CHECK(cs >= 0.999, "%s %s: cosine %.6f < 0.999", name, label, cs);
    }
    free(ref);
    free(q);
    kr_model_close(m);
}

static void demo_greedy(const char *label, kr_quant_config qc) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/models/tiny-moe", KRASIS_SOURCE_DIR);
    snprintf(path, sizeof path, "%s/reference.json", dir);
    json_t *ref = json_load_file(path, 0, NULL);
    kr_model *m;
    bool opened = ref && kr_model_open(dir, &m) == KR_OK;
    CHECK(opened, "demo model: %s", ref ? kr_error() : "no reference.json");
    if (!opened) {
        json_decref(ref);
        return;
    }
    json_t *g = json_array_get(json_object_get(ref, "greedy"), 0);
    json_t *pids = json_object_get(g, "prompt_ids"), *oids = json_object_get(g, "output_ids");
    kr_kv_cache *kv = NULL;
    float *logits = malloc((size_t)m->hp.vocab * sizeof *logits);
    kr_status s = kr_model_quantize(m, &qc);
    if (s == KR_OK)
        s = kr_kv_cache_create(m, &kv);
    size_t np = json_array_size(pids), no = json_array_size(oids);
    int32_t *ids = malloc((np + 1) * sizeof *ids);
    for (size_t i = 0; i < np; i++)
        ids[i] = (int32_t)json_integer_value(json_array_get(pids, i));
    int64_t n = (int64_t)np, same = 0;
    for (size_t t = 0; s == KR_OK && t < no; t++) {
        s = kr_forward(m, kv, ids, n, false, logits);
        int32_t best = 0;
        for (int64_t v = 1; v < m->hp.vocab; v++)
            best = logits[v] > logits[best] ? (int32_t)v : best;
        if (best != json_integer_value(json_array_get(oids, t)))
            break;
        same++;
        ids[0] = best;
        n = 1;
    }
    CHECK(s == KR_OK && same == (int64_t)no, "demo model %s: %s; %lld of %zu greedy tokens match transformers", label,
          s == KR_OK ? "ok" : kr_error(), (long long)same, no);
    printf("test_quant_model: demo model %s: %lld of %zu greedy tokens match transformers\n", label, (long long)same,
           no);
    free(ids);
    free(logits);
    kr_kv_cache_free(kv);
    kr_model_close(m);
    json_decref(ref);
}

int main(void) {
    char cache[] = "/tmp/krasis-test-qmodel-XXXXXX";
    if (!mkdtemp(cache)) {
        perror("mkdtemp");
        return 1;
    }
    static const char *fixtures[] = {"dsv2_lite", "dsv2_bias", "dsv2_qlora_group", "dsv3_fp8", "dsv3_group",
                                     "glm4_moe_qknorm", "glm4_moe_tied", "kimi_k2", "kimi_k25", "qwen3_moe",
                                     "qwen3_moe_yarn"};
    kr_quant_config experts = {.routed_bits = 8, .shared_bits = 8, .group_size = 32, .threads = 2};
    kr_quant_config all = experts;
    all.attention_bits = all.dense_bits = all.lm_head_bits = 8;
    char sub[600];
    for (size_t i = 0; i < sizeof fixtures / sizeof *fixtures; i++) {
        snprintf(sub, sizeof sub, "%s/%s", cache, fixtures[i]);
        experts.cache_dir = all.cache_dir = sub;
        fixture(fixtures[i], "INT8 g32 experts", experts);
        fixture(fixtures[i], "INT8 g32 everything", all);
    }
    snprintf(sub, sizeof sub, "%s/demo", cache);
    experts.cache_dir = all.cache_dir = sub;
    demo_greedy("INT8 g32 experts", experts);
    demo_greedy("INT8 g32 everything", all);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cache);
    if (system(cmd) != 0)
        fprintf(stderr, "note: could not remove %s\n", cache);
    return test_summary("test_quant_model");
}
