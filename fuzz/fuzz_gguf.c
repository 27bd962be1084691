/* Fuzzes the GGUF reader: any input opens cleanly or fails with a message; every key, array element and
 * tensor byte of an accepted file can be read without leaving the file. */
#include "fuzz_file_input.h"
#include "weights/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kr_gguf *g;
    if (kr_gguf_open(fuzz_input_path(data, size), &g) != KR_OK)
        return 0;
    volatile uint64_t sink = 0;
    for (size_t i = 0; i < kr_gguf_n_kv(g); i++) {
        const kr_gguf_kv *kv = kr_gguf_kv_at(g, i);
        sink += kv->key.len ? (uint8_t)kv->key.ptr[kv->key.len - 1] : 0;
        if (kv->type != KR_GGUF_ARRAY)
            continue;
        for (uint64_t k = 0; k < kv->n && k < 4096; k++) {
            if (kv->elem_type == KR_GGUF_STRING) {
                kr_gguf_str s = kr_gguf_arr_str(kv, k);
                sink += s.len ? (uint8_t)s.ptr[s.len - 1] : 0;
            } else if (kv->elem_type != KR_GGUF_ARRAY) {
                sink += kr_gguf_arr_num(kv, k) != 0; /* touches the element */
            }
        }
    }
    for (uint64_t i = 0; i < kr_gguf_n_tensors(g); i++) {
        const kr_gguf_tensor *t = kr_gguf_tensor_at(g, i);
        if (t->nbytes)
            sink += t->data[0] ^ t->data[t->nbytes - 1]; /* inside the file, or ASan says so */
    }
    (void)sink;
    kr_gguf_close(g);
    return 0;
}
