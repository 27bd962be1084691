/* Fuzzes the safetensors header parser and validator: any input must open cleanly or fail with a
 * message, never read out of bounds; an accepted file's tensors must lie inside it. */
#include <string.h>

#include "fuzz_file_input.h"
#include "weights/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kr_safetensors st;
    if (kr_st_open(fuzz_input_path(data, size), &st) != KR_OK)
        return 0;
    for (int i = 0; i < st.n_tensors; i++) {
        const kr_tensor *t = &st.tensors[i];
        const kr_mapped_file *f = &st.files[t->file];
        if (t->nbytes && (t->data < f->data || t->data + t->nbytes > f->data + f->size))
            abort(); /* the validator let a tensor outside its file through */
        if (t->nbytes) {
            volatile uint8_t sink = t->data[0] ^ t->data[t->nbytes - 1];
            (void)sink;
        }
    }
    kr_st_close(&st);
    return 0;
}
