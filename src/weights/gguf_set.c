/* Split GGUF sets (gguf_set.h). */
#include "weights/gguf_set.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "weights/expert_cache.h"

bool kr_is_gguf_file(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return false;
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    char magic[4] = {0};
    size_t n = fread(magic, 1, 4, f);
    fclose(f);
    return n == 4 && memcmp(magic, "GGUF", 4) == 0;
}

/* "<prefix>-00002-of-00005.gguf" -> prefix length, shard number and count; false when not that form. */
static bool split_name(const char *path, size_t *prefix_len, int *no, int *count) {
    size_t n = strlen(path);
    const char *tail = "-00000-of-00000.gguf";
    size_t tl = strlen(tail);
    if (n < tl)
        return false;
    const char *p = path + n - tl;
    int a, b;
    char end[8];
    if (sscanf(p, "-%5d-of-%5d%6s", &a, &b, end) != 3 || strcmp(end, ".gguf") != 0)
        return false;
    for (size_t i = 1; i <= 5; i++)
        if (p[i] < '0' || p[i] > '9' || p[i + 9] < '0' || p[i + 9] > '9')
            return false;
    *prefix_len = (size_t)(p - path);
    *no = a;
    *count = b;
    return true;
}

static uint64_t hash_shard(uint64_t h, const kr_gguf *g) {
    size_t size;
    const uint8_t *data = kr_gguf_data(g, &size);
    uint64_t sz = size;
    h = kr_fnv1a(h, &sz, sizeof sz);
    h = kr_fnv1a(h, data, kr_gguf_tensor_info_offset(g)); /* header + every metadata key/value */
    for (uint64_t i = 0; i < kr_gguf_n_tensors(g); i++) {
        const kr_gguf_tensor *t = kr_gguf_tensor_at(g, i);
        h = kr_fnv1a(h, t->name.ptr, t->name.len);
        h = kr_fnv1a(h, &t->type, sizeof t->type);
        h = kr_fnv1a(h, t->ne, sizeof t->ne);
        h = kr_fnv1a(h, &t->offset, sizeof t->offset);
    }
    return h;
}

static kr_status split_keys(const kr_gguf *g, int64_t *no, int64_t *count) {
    *no = 0;
    *count = 1;
    KR_TRY(kr_gguf_opt_int(g, "split.no", no));
    KR_TRY(kr_gguf_opt_int(g, "split.count", count));
    if (*count < 1 || *count > 99999 || *no < 0 || *no >= *count)
        return kr_fail(KR_ERR_FORMAT, "%s: split.no %lld / split.count %lld are inconsistent", kr_gguf_path(g),
                       (long long)*no, (long long)*count);
    return KR_OK;
}

static kr_status open_set(const char *path, kr_gguf_set *s) {
    kr_gguf *first;
    KR_TRY(kr_gguf_open(path, &first));
    int64_t no, count;
    kr_status st = split_keys(first, &no, &count);
    size_t plen = 0;
    int name_no = 0, name_count = 0;
    bool named = split_name(path, &plen, &name_no, &name_count);
    if (st == KR_OK && named && name_count > 1 && (count != name_count || no != name_no - 1))
        st = kr_fail(KR_ERR_FORMAT, "%s: the file name says shard %d of %d, its metadata says shard %lld of %lld (split.no %lld, split.count %lld)",
                     path, name_no, name_count, (long long)no + 1, (long long)count, (long long)no, (long long)count);
    if (st == KR_OK && count > 1 && !named)
        st = kr_fail(KR_ERR_FORMAT, "%s: split.count is %lld but the file name is not of the form NAME-%05d-of-%05lld.gguf",
                     path, (long long)count, (int)no + 1, (long long)count);
    if (st != KR_OK) {
        kr_gguf_close(first);
        return st;
    }
    s->n = (int)count;
    s->shards = calloc((size_t)count, sizeof *s->shards);
    if (!s->shards) {
        kr_gguf_close(first);
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    }
    s->shards[no] = first;
    for (int i = 0; i < s->n; i++) {
        if (s->shards[i])
            continue;
        char shard[4200];
        snprintf(shard, sizeof shard, "%.*s-%05d-of-%05d.gguf", (int)plen, path, i + 1, s->n);
        struct stat sb;
        if (stat(shard, &sb) != 0)
            return kr_fail(KR_ERR_IO, "%s: shard %d of %d of this split model is missing (%s)", path, i + 1, s->n, shard);
        KR_TRY(kr_gguf_open(shard, &s->shards[i]));
        int64_t sno, scount;
        KR_TRY(split_keys(s->shards[i], &sno, &scount));
        if (scount != s->n || sno != i)
            return kr_fail(KR_ERR_FORMAT, "%s: split.no %lld of split.count %lld, but it is shard %d of the %d of %s",
                           shard, (long long)sno, (long long)scount, i + 1, s->n, path);
    }
    return KR_OK;
}

kr_status kr_gguf_set_open(const char *path, kr_gguf_set *out) {
    memset(out, 0, sizeof *out);
    kr_status st = open_set(path, out);
    if (st != KR_OK) {
        kr_gguf_set_close(out);
        return st;
    }
    uint64_t h = KR_FNV_INIT;
    for (int i = 0; i < out->n; i++) {
        const kr_gguf *g = out->shards[i];
        size_t size;
        kr_gguf_data(g, &size);
        out->total_bytes += size;
        out->n_tensors += kr_gguf_n_tensors(g);
        h = hash_shard(h, g);
        /* one name, one tensor, across all shards */
        for (uint64_t t = 0; t < kr_gguf_n_tensors(g); t++) {
            const kr_gguf_tensor *x = kr_gguf_tensor_at(g, t);
            char name[512];
            snprintf(name, sizeof name, "%.*s", (int)(x->name.len < 511 ? x->name.len : 511), x->name.ptr);
            for (int j = 0; j < i; j++)
                if (kr_gguf_find_tensor(out->shards[j], name)) {
                    st = kr_fail(KR_ERR_FORMAT, "%s: tensor '%s' is also in %s", kr_gguf_path(g), name,
                                 kr_gguf_path(out->shards[j]));
                    kr_gguf_set_close(out);
                    return st;
                }
        }
    }
    out->identity = h;
    int64_t expect = -1;
    st = kr_gguf_opt_int(out->shards[0], "split.tensors.count", &expect);
    if (st == KR_OK && expect >= 0 && (uint64_t)expect != out->n_tensors)
        st = kr_fail(KR_ERR_FORMAT, "%s: split.tensors.count is %lld but the %d shard%s hold %llu tensors", path,
                     (long long)expect, out->n, out->n == 1 ? "" : "s", (unsigned long long)out->n_tensors);
    if (st != KR_OK)
        kr_gguf_set_close(out);
    return st;
}

void kr_gguf_set_close(kr_gguf_set *s) {
    for (int i = 0; s->shards && i < s->n; i++)
        kr_gguf_close(s->shards[i]);
    free(s->shards);
    memset(s, 0, sizeof *s);
}

const kr_gguf_tensor *kr_gguf_set_find(const kr_gguf_set *s, const char *name, int *shard) {
    for (int i = 0; i < s->n; i++) {
        const kr_gguf_tensor *t = kr_gguf_find_tensor(s->shards[i], name);
        if (t) {
            if (shard)
                *shard = i;
            return t;
        }
    }
    return NULL;
}
