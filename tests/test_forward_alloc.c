/* No allocation per decoded token in the whole forward pass (attention, router, MoE, MLPs, lm_head):
 * every allocator entry point of this binary is wrapped (-Wl,--wrap, see perf.cmake) and counted. After
 * a prompt and one warm-up step, 24 decode steps must not allocate at all, on the float32 reference
 * path and with every component quantized, for an MLA model (the demo model) and a GQA one. */
#include <stdio.h>
#include <stdlib.h>

#include "alloc_counter.h"
#include "backend/cpu/threadpool.h"
#include "model/model.h"
#include "test.h"
#include "tmpdir.h"


enum { PROMPT = 8, STEPS = 24 };

static void run(const char *name, const char *dir, const kr_quant_config *qc) {
    kr_model *m = NULL;
    kr_kv_cache *kv = NULL;
    kr_status s = kr_model_open(dir, &m);
    if (s == KR_OK)
        s = kr_model_quantize(m, qc);
    if (s == KR_OK)
        s = kr_kv_cache_create(m, &kv);
    if (s == KR_OK)
        s = kr_kv_cache_reserve(kv, PROMPT + STEPS + 8);
    float *logits = s == KR_OK ? malloc((size_t)m->hp.vocab * sizeof *logits) : NULL;
    int32_t ids[PROMPT];
    for (int i = 0; s == KR_OK && i < PROMPT; i++)
        ids[i] = (int32_t)((5 + 11 * i) % m->hp.vocab);
    if (s == KR_OK)
        s = kr_forward(m, kv, ids, PROMPT, false, logits);
    int32_t next = 3;
    if (s == KR_OK)
        s = kr_forward(m, kv, &next, 1, false, logits); /* warm-up step: T = 1 buffers */
    long before = atomic_load(&n_alloc);
    for (int t = 0; s == KR_OK && t < STEPS; t++) {
        next = (int32_t)((next * 7 + t) % m->hp.vocab);
        s = kr_forward(m, kv, &next, 1, false, logits);
    }
    long got = atomic_load(&n_alloc) - before;
    CHECK(s == KR_OK, "%s: %s", name, kr_error());
    CHECK(got == 0, "%s: %ld allocations in %d decode steps (want 0)", name, got, STEPS);
    printf("test_forward_alloc: %-32s %ld allocations in %d decode steps\n", name, got, STEPS);
    free(logits);
    kr_kv_cache_free(kv);
    kr_model_close(m);
}

int main(void) {
    char tmp[256];
    if (!test_tmpdir(tmp, sizeof tmp))
        return 1;
    char demo[512], gqa[512], cache[600];
    snprintf(demo, sizeof demo, "%s/models/tiny-moe", KRASIS_SOURCE_DIR);
    snprintf(gqa, sizeof gqa, "%s/tests/fixtures/qwen3_moe", KRASIS_SOURCE_DIR);
    kr_quant_config f32 = {.group_size = 32, .threads = 2};
    kr_quant_config all = {.routed_bits = 4, .shared_bits = 8, .attention_bits = 8, .dense_bits = 8,
                           .lm_head_bits = 8, .group_size = 32, .threads = 2};
    kr_pool_init(2);
    run("demo (MLA) float32", demo, &f32);
    snprintf(cache, sizeof cache, "%s/demo", tmp);
    all.cache_dir = cache;
    run("demo (MLA) all quantized", demo, &all);
    run("qwen3_moe (GQA) float32", gqa, &f32);
    snprintf(cache, sizeof cache, "%s/qwen3", tmp);
    all.cache_dir = cache;
    run("qwen3_moe (GQA) all quantized", gqa, &all);
    kr_pool_shutdown();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "note: could not remove %s\n", tmp);
    return test_summary("test_forward_alloc");
}
