/* Fuzzes a whole GGUF model load (weights/gguf_set.c, model/gguf_config.c, model/gguf_bind.c): any input
 * opens as a model or fails with a message; an accepted model runs one token through the forward pass
 * without reading outside the file (shape checks tie every tensor read to the metadata). */
#include "fuzz_file_input.h"
#include "model/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kr_model *m;
    if (kr_model_open(fuzz_input_path(data, size), &m) != KR_OK)
        return 0;
    kr_kv_cache *kv;
    /* a forward's scratch grows with the shapes; keep the fuzzer fast on accepted inputs */
    if (m->hp.vocab * m->hp.hidden <= (1 << 20) && kr_kv_cache_create(m, &kv) == KR_OK) {
        float *logits = malloc((size_t)m->hp.vocab * sizeof *logits);
        int32_t id = 0;
        if (logits)
            (void)kr_forward(m, kv, &id, 1, false, logits);
        free(logits);
        kr_kv_cache_free(kv);
    }
    kr_model_close(m);
    return 0;
}
