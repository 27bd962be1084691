/* A GGUF model as one or more files: a single .gguf, or the shards of a split model
 * (name-00001-of-0000N.gguf, llama.cpp's gguf-split layout: shard 1 holds the metadata, every shard
 * holds some of the tensors, each carries split.no / split.count). Opening checks that the set is whole
 * and consistent and gives every tensor one name across the shards. */
#ifndef KR_WEIGHTS_GGUF_SET_H
#define KR_WEIGHTS_GGUF_SET_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "weights/gguf.h"

typedef struct kr_gguf_set {
    int n;            /* shards (1 for a single file) */
    kr_gguf **shards; /* [n]; shards[0] holds the model's metadata */
    uint64_t n_tensors;
    /* Identifies the file(s): FNV-1a of every shard's size, header and metadata and its tensor infos
     * (names, types, shapes, offsets). A different GGUF, even under the same name, gets another value. */
    uint64_t identity;
    uint64_t total_bytes; /* of all shards */
} kr_gguf_set;

/* True when path is a regular file starting with the GGUF magic. */
bool kr_is_gguf_file(const char *path);

/* path: a .gguf file, or any shard of a split model. */
kr_status kr_gguf_set_open(const char *path, kr_gguf_set *out);
void kr_gguf_set_close(kr_gguf_set *s);

/* The metadata (shard 1). */
static inline const kr_gguf *kr_gguf_set_meta(const kr_gguf_set *s) { return s->shards[0]; }

/* NULL when absent; *shard (may be NULL) gets the index of the file holding it. */
const kr_gguf_tensor *kr_gguf_set_find(const kr_gguf_set *s, const char *name, int *shard);

#endif
