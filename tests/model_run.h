/* Running a whole model from a test: open + quantize (the QuantConfig places it on the GPU or not),
 * logits of a prompt and of decode steps after it, greedy continuation. */
#ifndef KR_TEST_MODEL_RUN_H
#define KR_TEST_MODEL_RUN_H

#include <stdlib.h>

#include "model/model.h"
#include "test.h"

/* the model at path quantized / placed per qc; NULL (a failed check) when that fails */
static inline kr_model *open_model(const char *path, const kr_quant_config *qc) {
    kr_model *m = NULL;
    kr_status s = kr_model_open(path, &m);
    if (s == KR_OK)
        s = kr_model_quantize(m, qc);
    CHECK(s == KR_OK, "%s: open/quantize (gpu %d, %d stages, bounce %d, expert bits %d): %s", path, qc->gpu.on,
          qc->gpu.n_stages, qc->gpu.pp_host_bounce, qc->routed_bits, kr_error());
    if (s != KR_OK) {
        kr_model_close(m);
        return NULL;
    }
    return m;
}

/* prompt logits (all positions: the first `first` ids in one forward, the rest in a second, so the cache
 * holds tokens when it grows) then one decode step per id, into out [(np + nd) * vocab] */
static inline kr_status run_logits_parts(kr_model *m, const int32_t *prompt, int np, int first, const int32_t *dec,
                                         int nd, float *out) {
    kr_kv_cache *kv = NULL;
    int64_t V = m->hp.vocab;
    kr_status s = kr_kv_cache_create(m, &kv);
    if (s == KR_OK)
        s = kr_forward(m, kv, prompt, first, true, out);
    if (s == KR_OK && first < np)
        s = kr_forward(m, kv, prompt + first, np - first, true, out + (int64_t)first * V);
    for (int i = 0; s == KR_OK && i < nd; i++)
        s = kr_forward(m, kv, &dec[i], 1, false, out + (np + i) * V);
    kr_kv_cache_free(kv);
    return s;
}

static inline kr_status run_logits(kr_model *m, const int32_t *prompt, int np, const int32_t *dec, int nd, float *out) {
    return run_logits_parts(m, prompt, np, np, dec, nd, out);
}

static inline int argmax_f32(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return (int)best;
}

/* greedy continuation of prompt (n ids) for `steps` tokens, into out */
static inline kr_status run_greedy(kr_model *m, const int32_t *prompt, int n, int steps, int32_t *out) {
    kr_kv_cache *kv = NULL;
    float *logits = malloc((size_t)m->hp.vocab * sizeof(float));
    kr_status s = logits ? kr_kv_cache_create(m, &kv) : KR_ERR_NOMEM;
    if (s == KR_OK)
        s = kr_forward(m, kv, prompt, n, false, logits);
    for (int i = 0; s == KR_OK && i < steps; i++) {
        out[i] = argmax_f32(logits, m->hp.vocab);
        if (i + 1 < steps)
            s = kr_forward(m, kv, &out[i], 1, false, logits);
    }
    kr_kv_cache_free(kv);
    free(logits);
    return s;
}

#endif
