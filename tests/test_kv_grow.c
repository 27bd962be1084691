/* The CPU KV cache growing while it holds tokens: a prompt run in three forwards (40, 50 and 60 tokens:
 * the cache grows from 64 to 128 with 40 held, then to 256 with 90) gives the logits of the same prompt
 * run in one forward (reserved once, nothing moved), at every position. GQA caches are head-major, so
 * growth moves each head's rows to its new place; MLA's single rows move as a block. Float path. */
#include <stdlib.h>

#include "model/model.h"
#include "model_run.h"
#include "ref_check.h"
#include "test.h"

enum { NP = 150 };

static void check_model(const char *rel) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", KRASIS_SOURCE_DIR, rel);
    kr_quant_config qc = {.group_size = 128, .threads = 2};
    kr_model *m = open_model(path, &qc);
    if (!m)
        return;
    int64_t V = m->hp.vocab;
    int32_t ids[NP];
    for (int i = 0; i < NP; i++)
        ids[i] = (int32_t)((7 + i * 37) % V);
    float *one = malloc((size_t)(NP * V) * sizeof(float)), *parts = malloc((size_t)(NP * V) * sizeof(float));
    kr_kv_cache *a = NULL, *b = NULL;
    kr_status s = kr_kv_cache_create(m, &a);
    if (s == KR_OK)
        s = kr_forward(m, a, ids, NP, true, one);
    if (s == KR_OK)
        s = kr_kv_cache_create(m, &b);
    static const int piece[] = {40, 50, 60};
    for (int i = 0, at = 0; s == KR_OK && i < 3; at += piece[i], i++)
        s = kr_forward(m, b, ids + at, piece[i], true, parts + (int64_t)at * V);
    CHECK(s == KR_OK, "%s: %s", rel, kr_error());
    CHECK(s != KR_OK || b->cap == 256, "%s: cache capacity %lld after 150 tokens (want 256: two growths)", rel,
          (long long)b->cap);
    double worst = 0;
    for (int r = 0; s == KR_OK && r < NP; r++) {
        int64_t ga, gb;
        double e = row_rel_err(parts + (int64_t)r * V, one + (int64_t)r * V, V, &gb, &ga);
        worst = e > worst || e != e ? e : worst;
    }
    CHECK(s != KR_OK || worst <= 1e-5, "%s: prompt in 3 forwards vs 1: largest difference %.3g of the row's largest "
          "logit", rel, worst);
    printf("%s: 3 forwards vs 1, largest relative difference %.3g\n", rel, worst);
    kr_kv_cache_free(a);
    kr_kv_cache_free(b);
    free(one);
    free(parts);
    kr_model_close(m);
}

int main(void) {
    check_model("tests/fixtures/qwen3_moe");
    check_model("tests/fixtures/glm4_moe_qknorm");
    check_model("tests/fixtures/dsv2_lite");
    return test_summary("test_kv_grow");
}
