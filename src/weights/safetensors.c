/* safetensors reader. Format: u64 little-endian header length N, N bytes of JSON
 * {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data buffer;
 * offsets are relative to the start of the data buffer. */
#include "weights/safetensors.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"

typedef struct {
    uint64_t begin, end;
    const char *name;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

static kr_status grow_tensors(kr_safetensors *st, size_t extra) {
    kr_tensor *t = realloc(st->tensors, (st->n_tensors + extra) * sizeof *t);
    if (!t)
        return kr_fail(KR_ERR_NOMEM, "out of memory for the tensor table");
    st->tensors = t;
    return KR_OK;
}

static kr_status parse_entry(const char *path, const char *name, json_t *e, uint64_t data_size, kr_tensor *t) {
    if (!json_is_object(e))
        return kr_fail(KR_ERR_FORMAT, "%s: header entry '%s' is not an object", path, name);
    const char *dtype;
    json_t *shape = json_object_get(e, "shape"), *offs = json_object_get(e, "data_offsets");
    char where[512];
    snprintf(where, sizeof where, "%s: tensor '%s'", path, name);
    KR_TRY(kr_json_req_str(e, "dtype", where, &dtype));
    if (!kr_dtype_from_name(dtype, &t->dtype))
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: unknown dtype '%s'", where, dtype);
    if (!json_is_array(shape) || json_array_size(shape) > KR_MAX_DIMS)
        return kr_fail(KR_ERR_FORMAT, "%s: 'shape' must be an array of at most %d integers", where, KR_MAX_DIMS);
    if (!json_is_array(offs) || json_array_size(offs) != 2)
        return kr_fail(KR_ERR_FORMAT, "%s: 'data_offsets' must be [begin, end]", where);
    t->name = name;
    t->ndim = (int)json_array_size(shape);
    uint64_t numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        json_t *d = json_array_get(shape, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return kr_fail(KR_ERR_FORMAT, "%s: shape entries must be non-negative integers", where);
        t->shape[i] = json_integer_value(d);
        if (t->shape[i] != 0 && numel > UINT64_MAX / (uint64_t)t->shape[i])
            return kr_fail(KR_ERR_FORMAT, "%s: shape overflows", where);
        numel *= (uint64_t)t->shape[i];
    }
    json_t *b = json_array_get(offs, 0), *en = json_array_get(offs, 1);
    if (!json_is_integer(b) || !json_is_integer(en) || json_integer_value(b) < 0 ||
        json_integer_value(en) < json_integer_value(b))
        return kr_fail(KR_ERR_FORMAT, "%s: 'data_offsets' must be integers with 0 <= begin <= end", where);
    uint64_t begin = (uint64_t)json_integer_value(b), end = (uint64_t)json_integer_value(en);
    if (end > data_size)
        return kr_fail(KR_ERR_FORMAT,
                       "%s: data_offsets [%" PRIu64 ", %" PRIu64 "] point outside the file (data section is %" PRIu64
                       " bytes; file truncated?)",
                       where, begin, end, data_size);
    uint64_t es = kr_dtype_size(t->dtype);
    if (numel > UINT64_MAX / es || numel * es != end - begin) {
        char sh[128];
        return kr_fail(KR_ERR_FORMAT, "%s: %s %s needs %" PRIu64 " bytes but data_offsets span %" PRIu64, where, dtype,
                       kr_shape_str(t->shape, t->ndim, sh, sizeof sh), numel * es, end - begin);
    }
    t->nbytes = (size_t)(end - begin);
    t->data = (const uint8_t *)(uintptr_t)begin; /* made absolute by the caller */
    return KR_OK;
}

/* Parses and validates one mapped file, appending its tensors. */
static kr_status load_file(kr_safetensors *st, int fi) {
    const kr_mapped_file *f = &st->files[fi];
    if (f->size < 8)
        return kr_fail(KR_ERR_FORMAT, "%s: file is %zu bytes, too short for a safetensors header", f->path, f->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | f->data[i];
    if (hlen > f->size - 8)
        return kr_fail(KR_ERR_FORMAT,
                       "%s: header length %" PRIu64 " exceeds the file size %zu (truncated or not safetensors)",
                       f->path, hlen, f->size);
    if (hlen > 100u << 20)
        return kr_fail(KR_ERR_FORMAT, "%s: header length %" PRIu64 " is larger than 100 MiB", f->path, hlen);
    char what[600];
    snprintf(what, sizeof what, "%s: header", f->path);
    json_t *h;
    KR_TRY(kr_json_parse((const char *)f->data + 8, (size_t)hlen, what, &h));
    st->headers[fi] = h;
    if (!json_is_object(h))
        return kr_fail(KR_ERR_FORMAT, "%s: header is not a JSON object", f->path);

    const uint8_t *data = f->data + 8 + hlen;
    uint64_t data_size = f->size - 8 - hlen;
    size_t n = json_object_size(h);
    KR_TRY(grow_tensors(st, n));
    span *spans = malloc((n + 1) * sizeof *spans);
    if (!spans)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    size_t ns = 0;
    const char *name;
    json_t *e;
    kr_status s = KR_OK;
    json_object_foreach(h, name, e) {
        if (strcmp(name, "__metadata__") == 0)
            continue;
        kr_tensor *t = &st->tensors[st->n_tensors];
        memset(t, 0, sizeof *t);
        s = parse_entry(f->path, name, e, data_size, t);
        if (s != KR_OK)
            break;
        uint64_t begin = (uint64_t)(uintptr_t)t->data;
        t->data = data + begin;
        t->file = fi;
        if (json_object_get(st->by_name, name)) {
            s = kr_fail(KR_ERR_FORMAT, "%s: tensor '%s' is also stored in %s", f->path, name,
                        st->files[st->tensors[json_integer_value(json_object_get(st->by_name, name))].file].path);
            break;
        }
        json_object_set_new(st->by_name, name, json_integer(st->n_tensors));
        st->n_tensors++;
        if (t->nbytes)
            spans[ns++] = (span){begin, begin + t->nbytes, name};
    }
    if (s == KR_OK) {
        qsort(spans, ns, sizeof *spans, span_cmp);
        for (size_t i = 1; i < ns; i++)
            if (spans[i].begin < spans[i - 1].end) {
                s = kr_fail(KR_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap in the data section", f->path,
                            spans[i - 1].name, spans[i].name);
                break;
            }
    }
    free(spans);
    return s;
}

static char *join_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static kr_status open_files(kr_safetensors *st, char **paths, int n) {
    st->files = calloc((size_t)n, sizeof *st->files);
    st->headers = calloc((size_t)n, sizeof *st->headers);
    st->by_name = json_object();
    if (!st->files || !st->headers || !st->by_name)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        KR_TRY(kr_map_file(paths[i], &st->files[i]));
        st->n_files = i + 1;
        KR_TRY(load_file(st, i));
    }
    return KR_OK;
}

/* Reads the index's weight_map: the distinct shard names in order of first appearance. */
static kr_status read_index(const char *dir, const char *index_path, json_t **index, char ***paths, int *n) {
    KR_TRY(kr_json_load_file(index_path, index));
    json_t *map = json_object_get(*index, "weight_map");
    if (!json_is_object(map))
        return kr_fail(KR_ERR_FORMAT, "%s: 'weight_map' must be an object of tensor name -> shard file", index_path);
    json_t *seen = json_object();
    *paths = calloc(json_object_size(map) + 1, sizeof **paths);
    if (!seen || !*paths) {
        json_decref(seen);
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    }
    const char *name;
    json_t *v;
    kr_status s = KR_OK;
    json_object_foreach(map, name, v) {
        if (!json_is_string(v)) {
            s = kr_fail(KR_ERR_FORMAT, "%s: weight_map['%s'] must be a file name", index_path, name);
            break;
        }
        const char *shard = json_string_value(v);
        if (strchr(shard, '/') || strcmp(shard, "..") == 0) {
            s = kr_fail(KR_ERR_FORMAT, "%s: shard name '%s' must be a plain file name", index_path, shard);
            break;
        }
        if (json_object_get(seen, shard))
            continue;
        json_object_set_new(seen, shard, json_true());
        char *p = join_path(dir, shard);
        if (!p) {
            s = kr_fail(KR_ERR_NOMEM, "out of memory");
            break;
        }
        (*paths)[(*n)++] = p;
        if (!kr_file_exists(p)) {
            s = kr_fail(KR_ERR_IO, "%s: shard '%s' (listed for tensor '%s') is missing", index_path, shard, name);
            break;
        }
    }
    json_decref(seen);
    return s;
}

/* Every tensor the index names must be in the shard it names. */
static kr_status check_index(const kr_safetensors *st, const json_t *index, const char *index_path) {
    json_t *map = json_object_get(index, "weight_map");
    const char *name;
    json_t *v;
    json_object_foreach(map, name, v) {
        const kr_tensor *t = kr_st_find(st, name);
        const char *shard = json_string_value(v);
        const char *file = t ? strrchr(st->files[t->file].path, '/') + 1 : NULL;
        if (!t || strcmp(file, shard) != 0)
            return kr_fail(KR_ERR_FORMAT, "%s: tensor '%s' is listed in shard '%s' but not stored there", index_path,
                           name, shard);
    }
    return KR_OK;
}

kr_status kr_st_open(const char *path, kr_safetensors *out) {
    memset(out, 0, sizeof *out);
    char *index_path = join_path(path, "model.safetensors.index.json");
    char *single = join_path(path, "model.safetensors");
    char **paths = NULL;
    int n = 0;
    json_t *index = NULL;
    kr_status s;
    if (!index_path || !single) {
        s = kr_fail(KR_ERR_NOMEM, "out of memory");
    } else if (kr_file_exists(index_path)) {
        s = read_index(path, index_path, &index, &paths, &n);
        if (s == KR_OK)
            s = open_files(out, paths, n);
        if (s == KR_OK)
            s = check_index(out, index, index_path);
    } else if (kr_file_exists(single)) {
        s = open_files(out, &single, 1);
    } else {
        /* a plain file path */
        char *p = (char *)path;
        s = open_files(out, &p, 1);
        if (s == KR_ERR_IO && !strstr(path, ".safetensors"))
            s = kr_fail(KR_ERR_IO, "%s: no model.safetensors or model.safetensors.index.json found", path);
    }
    for (int i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    free(index_path);
    free(single);
    json_decref(index);
    if (s != KR_OK)
        kr_st_close(out);
    return s;
}

void kr_st_close(kr_safetensors *st) {
    for (int i = 0; i < st->n_files; i++) {
        kr_unmap_file(&st->files[i]);
    }
    if (st->headers)
        for (int i = 0; i < st->n_files; i++)
            json_decref(st->headers[i]);
    free(st->files);
    free(st->headers);
    free(st->tensors);
    json_decref(st->by_name);
    memset(st, 0, sizeof *st);
}

const kr_tensor *kr_st_find(const kr_safetensors *st, const char *name) {
    json_t *v = json_object_get(st->by_name, name);
    return v ? &st->tensors[json_integer_value(v)] : NULL;
}

const char *kr_st_file_of(const kr_safetensors *st, const kr_tensor *t) { return st->files[t->file].path; }
