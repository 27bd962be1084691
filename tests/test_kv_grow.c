/* The CPU KV cache growing while it holds tokens: a prompt run in three forwards (40, 50 and 60 tokens:
 * the cache grows from 64 to 128 with 40 held, then to 256 with 90) gives the logits of the same prompt
 * run in one forward (reserved once, nothing moved), at every position. GQA caches are head-major, so
 * growth moves each head's rows to its new place; MLA's single rows move as a block. Float path.
 * And a growth that runs out of memory part way (an allocation failed on purpose: layer 1's keys) fails
 * with a message and leaves a cache that still gives those logits when the prompt goes on. And the CPU's
 * prompt chunks (--prefill-chunk 16: one forward of 150 tokens in 10 passes) give the same logits too. */
#include <stdlib.h>
#include <string.h>

#include "alloc_counter.h"

#include "model/model.h"
#include "model_run.h"
#include "ref_check.h"
#include "test.h"

enum { NP = 150 };

static void check_model(const char *rel, bool fail_growth) {
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
    for (int i = 0, at = 0; s == KR_OK && i < 3; at += piece[i], i++) {
        if (i == 1 && fail_growth) { /* 40 tokens held: growing to 128 fails at layer 1, layer 0 has grown */
            atomic_store(&alloc_fail_at, atomic_load(&n_alloc) + (b->v_width ? 2 : 1) + 1);
            kr_status g = kr_kv_cache_reserve(b, 100);
            atomic_store(&alloc_fail_at, -1);
            CHECK(g == KR_ERR_NOMEM && strstr(kr_error(), "out of memory growing the KV cache"), "%s: a failed "
                  "growth: status %d, '%s'", rel, g, kr_error());
            CHECK(b->cap == 64 && b->layer_cap[0] == 128 && b->layer_cap[1] == 64, "%s: after a failed growth: cap "
                  "%lld, layers 0/1 at %lld/%lld (want 64, 128/64)", rel, (long long)b->cap,
                  (long long)b->layer_cap[0], (long long)b->layer_cap[1]);
        }
        s = kr_forward(m, b, ids + at, piece[i], true, parts + (int64_t)at * V);
    }
    CHECK(s == KR_OK, "%s: %s", rel, kr_error());
    CHECK(s != KR_OK || b->cap == 256, "%s: cache capacity %lld after 150 tokens (want 256: two growths)", rel,
          (long long)b->cap);
    int row;
    double worst = s == KR_OK ? rows_rel_err(parts, one, NP, V, &row) : 0;
    CHECK(s != KR_OK || worst <= 1e-5, "%s: prompt in 3 forwards vs 1: largest difference %.3g of the row's largest "
          "logit", rel, worst);
    printf("%s: 3 forwards vs 1%s, largest relative difference %.3g\n", rel,
           fail_growth ? " (after a failed growth)" : "", worst);
    kr_kv_cache_free(a);
    kr_kv_cache_free(b);
    free(one);
    free(parts);
    kr_model_close(m);
}

static void check_chunks(const char *rel) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", KRASIS_SOURCE_DIR, rel);
    kr_quant_config whole = {.group_size = 128, .threads = 2}, chunked = whole;
    chunked.gpu.prefill_chunk = 16;
    kr_model *a = open_model(path, &whole), *c = a ? open_model(path, &chunked) : NULL;
    if (!c) {
        kr_model_close(a);
        return;
    }
    int64_t V = a->hp.vocab;
    int32_t ids[NP];
    for (int i = 0; i < NP; i++)
        ids[i] = (int32_t)((3 + i * 53) % V);
    float *la = malloc((size_t)(NP * V) * sizeof(float)), *lc = malloc((size_t)(NP * V) * sizeof(float));
    float *last = malloc((size_t)V * sizeof(float));
    kr_kv_cache *ka = NULL, *kc = NULL;
    kr_status s = kr_kv_cache_create(a, &ka);
    if (s == KR_OK)
        s = kr_forward(a, ka, ids, NP, true, la);
    if (s == KR_OK)
        s = kr_kv_cache_create(c, &kc);
    if (s == KR_OK)
        s = kr_forward(c, kc, ids, NP, true, lc);
    if (s == KR_OK) { /* the last position only, as a prompt's prefill asks */
        kr_kv_cache_reset(kc);
        s = kr_forward(c, kc, ids, NP, false, last);
    }
    CHECK(s == KR_OK, "%s, chunks: %s", rel, kr_error());
    int row;
    double worst = s == KR_OK ? fmax(rows_rel_err(lc, la, NP, V, &row), /* and the last-only run's row */
                                     rows_rel_err(last, la + (int64_t)(NP - 1) * V, 1, V, &row))
                              : 0;
    CHECK(s != KR_OK || (worst <= 1e-5 && kc->len == NP), "%s: 150 tokens in chunks of 16 vs one pass: largest "
          "difference %.3g, cache length %lld", rel, worst, (long long)kc->len);
    /* it did run in chunks: the residual stream's scratch holds 16 positions, the one-pass model's 150 */
    size_t row_bytes = (size_t)c->hp.hidden * sizeof(float);
    CHECK(c->scratch.cap[KR_SLOT_X] >= 16 * row_bytes && c->scratch.cap[KR_SLOT_X] < 32 * row_bytes &&
              a->scratch.cap[KR_SLOT_X] >= NP * row_bytes,
          "%s: residual scratch %zu bytes chunked, %zu in one pass (rows of %zu)", rel, c->scratch.cap[KR_SLOT_X],
          a->scratch.cap[KR_SLOT_X], row_bytes);
    kr_kv_cache_free(ka);
    kr_kv_cache_free(kc);
    free(la);
    free(lc);
    free(last);
    kr_model_close(a);
    kr_model_close(c);
}

int main(void) {
    check_model("tests/fixtures/qwen3_moe", false);
    check_model("tests/fixtures/glm4_moe_qknorm", false);
    check_model("tests/fixtures/dsv2_lite", false);
    check_model("tests/fixtures/qwen3_moe", true);
    check_model("tests/fixtures/dsv2_lite", true);
    check_chunks("tests/fixtures/qwen3_moe");
    check_chunks("tests/fixtures/dsv2_lite");
    return test_summary("test_kv_grow");
}
