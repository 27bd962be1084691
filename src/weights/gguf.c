/* GGUF reader. Layout (little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv, then n_kv
 * times {string key, u32 type, value}; string = u64 length + bytes; array = u32 element type, u64 count,
 * elements. Then n_tensors tensor infos {string name, u32 n_dims, u64 ne[n_dims], u32 ggml type,
 * u64 offset}, padding to general.alignment (default 32), and the data section the offsets point into.
 * Every length is checked against the bytes left in the file before anything is read. */
#include "weights/gguf.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/mapfile.h"
#include "weights/ggml_quants.h"

struct kr_gguf {
    kr_mapped_file file;
    uint32_t version;
    uint64_t n_tensors;
    size_t n_kv;
    kr_gguf_kv *kvs;
    size_t tensor_info_offset;
    kr_gguf_tensor *tensors; /* [n_tensors] */
    json_t *tensor_index;    /* name -> index into tensors */
};

/* A bounds-checked cursor over the mapping. */
typedef struct {
    const uint8_t *p, *end, *base;
    const char *path;
} cursor;

static size_t left(const cursor *c) { return (size_t)(c->end - c->p); }

static kr_status need(const cursor *c, uint64_t n, const char *what) {
    if (n > left(c))
        return kr_fail(KR_ERR_FORMAT, "%s: truncated GGUF: %s needs %" PRIu64 " bytes at offset %zu but only %zu remain",
                       c->path, what, n, (size_t)(c->p - c->base), left(c));
    return KR_OK;
}

static kr_status rd_u32(cursor *c, uint32_t *v, const char *what) {
    KR_TRY(need(c, 4, what));
    memcpy(v, c->p, 4);
    c->p += 4;
    return KR_OK;
}

static kr_status rd_u64(cursor *c, uint64_t *v, const char *what) {
    KR_TRY(need(c, 8, what));
    memcpy(v, c->p, 8);
    c->p += 8;
    return KR_OK;
}

static kr_status rd_str(cursor *c, kr_gguf_str *s, const char *what) {
    uint64_t n;
    KR_TRY(rd_u64(c, &n, what));
    KR_TRY(need(c, n, what));
    s->ptr = (const char *)c->p;
    s->len = (size_t)n;
    c->p += n;
    return KR_OK;
}

static size_t scalar_size(kr_gguf_type t) {
    switch (t) {
    case KR_GGUF_UINT8: case KR_GGUF_INT8: case KR_GGUF_BOOL: return 1;
    case KR_GGUF_UINT16: case KR_GGUF_INT16: return 2;
    case KR_GGUF_UINT32: case KR_GGUF_INT32: case KR_GGUF_FLOAT32: return 4;
    case KR_GGUF_UINT64: case KR_GGUF_INT64: case KR_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

const char *kr_gguf_type_name(kr_gguf_type t) {
    static const char *const names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                        "bool", "string", "array", "uint64", "int64", "float64"};
    return (unsigned)t < sizeof names / sizeof *names ? names[t] : "unknown";
}

static kr_status read_value(cursor *c, kr_gguf_kv *kv, const char *key) {
    char what[160];
    snprintf(what, sizeof what, "value of '%s'", key);
    kv->n = 1;
    kv->data = c->p;
    if (kv->type == KR_GGUF_STRING) {
        kr_gguf_str s;
        return rd_str(c, &s, what);
    }
    if (kv->type != KR_GGUF_ARRAY) {
        size_t sz = scalar_size(kv->type);
        if (!sz)
            return kr_fail(KR_ERR_FORMAT, "%s: key '%s' has unknown value type %u", c->path, key, (unsigned)kv->type);
        KR_TRY(need(c, sz, what));
        c->p += sz;
        return KR_OK;
    }
    uint32_t et;
    uint64_t n;
    KR_TRY(rd_u32(c, &et, what));
    KR_TRY(rd_u64(c, &n, what));
    kv->elem_type = (kr_gguf_type)et;
    kv->n = n;
    kv->data = c->p;
    if (et == KR_GGUF_STRING) {
        /* Each string takes at least its 8-byte length: reject absurd counts before allocating. */
        if (n > left(c) / 8)
            return kr_fail(KR_ERR_FORMAT, "%s: array '%s' claims %" PRIu64 " strings but only %zu bytes remain",
                           c->path, key, n, left(c));
        kv->str_offs = malloc((n ? n : 1) * sizeof *kv->str_offs);
        if (!kv->str_offs)
            return kr_fail(KR_ERR_NOMEM, "%s: out of memory for array '%s'", c->path, key);
        for (uint64_t i = 0; i < n; i++) {
            kr_gguf_str s;
            kv->str_offs[i] = (uint64_t)(c->p - kv->data);
            KR_TRY(rd_str(c, &s, what));
        }
        return KR_OK;
    }
    size_t sz = scalar_size((kr_gguf_type)et);
    if (!sz) /* nested arrays do not occur in practice and would need a recursive index */
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: array '%s' has element type %s (%u), not supported", c->path, key,
                       kr_gguf_type_name((kr_gguf_type)et), et);
    if (n > left(c) / sz)
        return kr_fail(KR_ERR_FORMAT, "%s: array '%s' claims %" PRIu64 " elements of %zu bytes but only %zu bytes remain",
                       c->path, key, n, sz, left(c));
    c->p += n * sz;
    return KR_OK;
}

/* One tensor info; its data pointer is set once the data section's start is known. */
static kr_status parse_tensor_info(cursor *c, kr_gguf_tensor *t, uint64_t i) {
    KR_TRY(rd_str(c, &t->name, "tensor name"));
    uint32_t n_dims;
    KR_TRY(rd_u32(c, &n_dims, "tensor dimension count"));
    int nl = (int)(t->name.len < 120 ? t->name.len : 120);
    if (n_dims < 1 || n_dims > 4)
        return kr_fail(KR_ERR_FORMAT, "%s: tensor %" PRIu64 " '%.*s' has %u dimensions (1 to 4 allowed)", c->path, i, nl,
                       t->name.ptr, n_dims);
    t->n_dims = (int)n_dims;
    uint64_t numel = 1;
    for (int d = 0; d < 4; d++) {
        uint64_t ne = 1;
        if (d < t->n_dims)
            KR_TRY(rd_u64(c, &ne, "tensor dimension"));
        if (ne > (uint64_t)INT64_MAX || (ne && numel > UINT64_MAX / ne / 64))
            return kr_fail(KR_ERR_FORMAT, "%s: tensor '%.*s' has absurd dimensions", c->path, nl, t->name.ptr);
        t->ne[d] = (int64_t)ne;
        numel *= ne;
    }
    KR_TRY(rd_u32(c, &t->type, "tensor type"));
    KR_TRY(rd_u64(c, &t->offset, "tensor offset"));
    kr_ggml_type_info ti = kr_ggml_info(t->type);
    if (!ti.name)
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: tensor '%.*s' has unknown ggml type %u", c->path, nl, t->name.ptr, t->type);
    if (t->ne[0] % ti.block_elems)
        return kr_fail(KR_ERR_FORMAT, "%s: tensor '%.*s': row length %" PRId64 " is not a multiple of the %s block (%u)",
                       c->path, nl, t->name.ptr, t->ne[0], ti.name, ti.block_elems);
    t->nbytes = (size_t)(numel / ti.block_elems * ti.block_bytes);
    return KR_OK;
}

static kr_status parse_tensor_infos(kr_gguf *g, cursor *c) {
    /* a tensor info takes at least 8 (name length) + 4 + 8 + 4 + 8 bytes */
    if (g->n_tensors > left(c) / 32)
        return kr_fail(KR_ERR_FORMAT, "%s: header claims %" PRIu64 " tensors but only %zu bytes remain", c->path,
                       g->n_tensors, left(c));
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    g->tensor_index = json_object();
    if (!g->tensors || !g->tensor_index)
        return kr_fail(KR_ERR_NOMEM, "%s: out of memory for the tensor table", c->path);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        kr_gguf_tensor *t = &g->tensors[i];
        KR_TRY(parse_tensor_info(c, t, i));
        if (json_object_getn(g->tensor_index, t->name.ptr, t->name.len))
            return kr_fail(KR_ERR_FORMAT, "%s: tensor '%.*s' appears twice", c->path, (int)t->name.len, t->name.ptr);
        json_object_setn_new(g->tensor_index, t->name.ptr, t->name.len, json_integer((json_int_t)i));
    }
    int64_t align = 32;
    KR_TRY(kr_gguf_opt_int(g, "general.alignment", &align));
    if (align <= 0 || align > (1 << 20) || (align & (align - 1)))
        return kr_fail(KR_ERR_FORMAT, "%s: general.alignment %" PRId64 " is not a power of two", c->path, align);
    size_t pos = (size_t)(c->p - g->file.data);
    size_t data_start = (pos + (size_t)align - 1) / (size_t)align * (size_t)align;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        kr_gguf_tensor *t = &g->tensors[i];
        int nl = (int)(t->name.len < 120 ? t->name.len : 120);
        if (t->offset % (uint64_t)align)
            return kr_fail(KR_ERR_FORMAT, "%s: tensor '%.*s' offset %" PRIu64 " is not aligned to %" PRId64, c->path, nl,
                           t->name.ptr, t->offset, align);
        if (data_start > g->file.size || t->offset > g->file.size - data_start ||
            t->nbytes > g->file.size - data_start - t->offset)
            return kr_fail(KR_ERR_FORMAT,
                           "%s: tensor '%.*s' data [%" PRIu64 ", +%zu) lies past the end of the file (%zu bytes; "
                           "truncated?)",
                           c->path, nl, t->name.ptr, (uint64_t)data_start + t->offset, t->nbytes, g->file.size);
        t->data = g->file.data + data_start + t->offset;
    }
    return KR_OK;
}

static kr_status parse(kr_gguf *g) {
    /* checked first: an empty file has no mapping to point into */
    if (g->file.size < 4 || memcmp(g->file.data, "GGUF", 4) != 0)
        return kr_fail(KR_ERR_FORMAT, "%s: not a GGUF file (magic is not 'GGUF')", g->file.path);
    cursor c = {g->file.data, g->file.data + g->file.size, g->file.data, g->file.path};
    uint32_t magic;
    uint64_t n_kv;
    KR_TRY(rd_u32(&c, &magic, "magic"));
    KR_TRY(rd_u32(&c, &g->version, "version"));
    if (g->version != 2 && g->version != 3)
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: GGUF version %u is not supported (only 2 and 3)", c.path, g->version);
    KR_TRY(rd_u64(&c, &g->n_tensors, "tensor count"));
    KR_TRY(rd_u64(&c, &n_kv, "metadata count"));
    /* A key/value takes at least 8 (key length) + 4 (type) + 1 bytes. */
    if (n_kv > left(&c) / 13)
        return kr_fail(KR_ERR_FORMAT, "%s: header claims %" PRIu64 " metadata entries but only %zu bytes remain",
                       c.path, n_kv, left(&c));
    g->kvs = calloc(n_kv ? n_kv : 1, sizeof *g->kvs);
    if (!g->kvs)
        return kr_fail(KR_ERR_NOMEM, "%s: out of memory for metadata", c.path);
    for (uint64_t i = 0; i < n_kv; i++) {
        kr_gguf_kv *kv = &g->kvs[i];
        uint32_t type;
        KR_TRY(rd_str(&c, &kv->key, "metadata key"));
        g->n_kv = (size_t)i + 1; /* so close() frees what was allocated so far */
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)(kv->key.len < 120 ? kv->key.len : 120), kv->key.ptr);
        KR_TRY(rd_u32(&c, &type, "metadata type"));
        kv->type = (kr_gguf_type)type;
        KR_TRY(read_value(&c, kv, key));
    }
    g->n_kv = (size_t)n_kv;
    g->tensor_info_offset = (size_t)(c.p - g->file.data);
    return parse_tensor_infos(g, &c);
}

kr_status kr_gguf_open(const char *path, kr_gguf **out) {
    *out = NULL;
    kr_gguf *g = calloc(1, sizeof *g);
    if (!g)
        return kr_fail(KR_ERR_NOMEM, "%s: out of memory", path);
    kr_status s = kr_map_file(path, &g->file);
    if (s == KR_OK)
        s = parse(g);
    if (s != KR_OK) {
        kr_gguf_close(g);
        return s;
    }
    *out = g;
    return KR_OK;
}

void kr_gguf_close(kr_gguf *g) {
    if (!g)
        return;
    for (size_t i = 0; i < g->n_kv; i++)
        free(g->kvs[i].str_offs);
    free(g->kvs);
    free(g->tensors);
    json_decref(g->tensor_index);
    kr_unmap_file(&g->file);
    free(g);
}

const kr_gguf_tensor *kr_gguf_tensor_at(const kr_gguf *g, uint64_t i) { return i < g->n_tensors ? &g->tensors[i] : NULL; }

const kr_gguf_tensor *kr_gguf_find_tensor(const kr_gguf *g, const char *name) {
    json_t *v = json_object_get(g->tensor_index, name);
    return v ? &g->tensors[json_integer_value(v)] : NULL;
}

const char *kr_gguf_path(const kr_gguf *g) { return g->file.path; }
uint32_t kr_gguf_version(const kr_gguf *g) { return g->version; }
uint64_t kr_gguf_n_tensors(const kr_gguf *g) { return g->n_tensors; }
size_t kr_gguf_tensor_info_offset(const kr_gguf *g) { return g->tensor_info_offset; }
const uint8_t *kr_gguf_data(const kr_gguf *g, size_t *size) {
    *size = g->file.size;
    return g->file.data;
}
size_t kr_gguf_n_kv(const kr_gguf *g) { return g->n_kv; }
const kr_gguf_kv *kr_gguf_kv_at(const kr_gguf *g, size_t i) { return i < g->n_kv ? &g->kvs[i] : NULL; }

const kr_gguf_kv *kr_gguf_find(const kr_gguf *g, const char *key) {
    size_t n = strlen(key);
    for (size_t i = 0; i < g->n_kv; i++)
        if (g->kvs[i].key.len == n && memcmp(g->kvs[i].key.ptr, key, n) == 0)
            return &g->kvs[i];
    return NULL;
}

static bool is_int_type(kr_gguf_type t) {
    return t <= KR_GGUF_INT32 || t == KR_GGUF_UINT64 || t == KR_GGUF_INT64 || t == KR_GGUF_BOOL;
}

/* Reads one integer-typed element; returns false when a uint64 does not fit int64. */
static bool load_int(kr_gguf_type t, const uint8_t *p, int64_t *out) {
    switch (t) {
    case KR_GGUF_UINT8: case KR_GGUF_BOOL: *out = *p; return true;
    case KR_GGUF_INT8: *out = (int8_t)*p; return true;
    case KR_GGUF_UINT16: { uint16_t v; memcpy(&v, p, 2); *out = v; return true; }
    case KR_GGUF_INT16: { int16_t v; memcpy(&v, p, 2); *out = v; return true; }
    case KR_GGUF_UINT32: { uint32_t v; memcpy(&v, p, 4); *out = v; return true; }
    case KR_GGUF_INT32: { int32_t v; memcpy(&v, p, 4); *out = v; return true; }
    case KR_GGUF_INT64: { int64_t v; memcpy(&v, p, 8); *out = v; return true; }
    case KR_GGUF_UINT64: { /* saturated (and reported false) past INT64_MAX, never wrapped negative */
        uint64_t v;
        memcpy(&v, p, 8);
        *out = v <= INT64_MAX ? (int64_t)v : INT64_MAX;
        return v <= INT64_MAX;
    }
    default: return false;
    }
}

static kr_status wrong(const kr_gguf *g, const kr_gguf_kv *kv, const char *key, const char *want) {
    return kr_fail(KR_ERR_FORMAT, "%s: key '%s' must be %s, not %s", g->file.path, key, want,
                   kr_gguf_type_name(kv->type));
}

static kr_status absent(const kr_gguf *g, const char *key) {
    return kr_fail(KR_ERR_FORMAT, "%s: required key '%s' is missing", g->file.path, key);
}

kr_status kr_gguf_opt_int(const kr_gguf *g, const char *key, int64_t *out) {
    const kr_gguf_kv *kv = kr_gguf_find(g, key);
    if (!kv)
        return KR_OK;
    if (kv->type == KR_GGUF_BOOL || !is_int_type(kv->type))
        return wrong(g, kv, key, "an integer");
    if (!load_int(kv->type, kv->data, out))
        return kr_fail(KR_ERR_FORMAT, "%s: key '%s' is out of range", g->file.path, key);
    return KR_OK;
}

kr_status kr_gguf_req_int(const kr_gguf *g, const char *key, int64_t *out) {
    if (!kr_gguf_find(g, key))
        return absent(g, key);
    return kr_gguf_opt_int(g, key, out);
}

kr_status kr_gguf_opt_bool(const kr_gguf *g, const char *key, bool *out) {
    const kr_gguf_kv *kv = kr_gguf_find(g, key);
    if (!kv)
        return KR_OK;
    if (kv->type != KR_GGUF_BOOL)
        return wrong(g, kv, key, "a bool");
    *out = *kv->data != 0;
    return KR_OK;
}

kr_status kr_gguf_opt_str(const kr_gguf *g, const char *key, kr_gguf_str *out) {
    const kr_gguf_kv *kv = kr_gguf_find(g, key);
    if (!kv)
        return KR_OK;
    if (kv->type != KR_GGUF_STRING)
        return wrong(g, kv, key, "a string");
    uint64_t n;
    memcpy(&n, kv->data, 8);
    out->ptr = (const char *)kv->data + 8;
    out->len = (size_t)n;
    return KR_OK;
}

kr_status kr_gguf_req_str(const kr_gguf *g, const char *key, kr_gguf_str *out) {
    if (!kr_gguf_find(g, key))
        return absent(g, key);
    return kr_gguf_opt_str(g, key, out);
}

kr_status kr_gguf_opt_num(const kr_gguf *g, const char *key, double *out) {
    const kr_gguf_kv *kv = kr_gguf_find(g, key);
    if (!kv)
        return KR_OK;
    if (kv->type == KR_GGUF_FLOAT32) {
        float f;
        memcpy(&f, kv->data, 4);
        *out = f;
    } else if (kv->type == KR_GGUF_FLOAT64) {
        memcpy(out, kv->data, 8);
    } else if (is_int_type(kv->type) && kv->type != KR_GGUF_BOOL) {
        int64_t v;
        if (!load_int(kv->type, kv->data, &v))
            return kr_fail(KR_ERR_FORMAT, "%s: key '%s' is out of range", g->file.path, key);
        *out = (double)v;
    } else {
        return wrong(g, kv, key, "a number");
    }
    return KR_OK;
}

kr_status kr_gguf_opt_array(const kr_gguf *g, const char *key, kr_gguf_type elem, const kr_gguf_kv **out) {
    const kr_gguf_kv *kv = kr_gguf_find(g, key);
    *out = NULL;
    if (!kv)
        return KR_OK;
    if (kv->type != KR_GGUF_ARRAY)
        return wrong(g, kv, key, "an array");
    bool ok = kv->elem_type == elem || (is_int_type(elem) && elem != KR_GGUF_BOOL && is_int_type(kv->elem_type) &&
                                        kv->elem_type != KR_GGUF_BOOL);
    if (!ok)
        return kr_fail(KR_ERR_FORMAT, "%s: key '%s' must be an array of %s, not of %s", g->file.path, key,
                       kr_gguf_type_name(elem), kr_gguf_type_name(kv->elem_type));
    *out = kv;
    return KR_OK;
}

kr_status kr_gguf_req_array(const kr_gguf *g, const char *key, kr_gguf_type elem, const kr_gguf_kv **out) {
    if (!kr_gguf_find(g, key))
        return absent(g, key);
    return kr_gguf_opt_array(g, key, elem, out);
}

kr_gguf_str kr_gguf_arr_str(const kr_gguf_kv *kv, uint64_t i) {
    assert(kv->elem_type == KR_GGUF_STRING && i < kv->n);
    const uint8_t *p = kv->data + kv->str_offs[i];
    uint64_t n;
    memcpy(&n, p, 8);
    return (kr_gguf_str){(const char *)p + 8, (size_t)n};
}

int64_t kr_gguf_arr_int(const kr_gguf_kv *kv, uint64_t i) {
    assert(i < kv->n);
    int64_t v = 0;
    load_int(kv->elem_type, kv->data + i * scalar_size(kv->elem_type), &v);
    return v;
}

double kr_gguf_arr_num(const kr_gguf_kv *kv, uint64_t i) {
    assert(i < kv->n);
    const uint8_t *p = kv->data + i * scalar_size(kv->elem_type);
    if (kv->elem_type == KR_GGUF_FLOAT32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    if (kv->elem_type == KR_GGUF_FLOAT64) {
        double d;
        memcpy(&d, p, 8);
        return d;
    }
    return (double)kr_gguf_arr_int(kv, i);
}
