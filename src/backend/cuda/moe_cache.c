/* GPU expert cache files: build (pack or quantize + write + fsync + rename), validate, map (moe_cache.h). */
#define _GNU_SOURCE
#include "backend/cuda/moe_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend/cpu/quant.h"
#include "backend/cuda/moe_layout.h"

#define PAGE 4096
static const char MAGIC[8] = {'K', 'R', 'X', 'G', 'P', 'U', '1', 0};

typedef struct {
    char magic[8];
    uint32_t version, quantizer_version, layout_version;
    uint32_t bits, gs;
    uint32_t n_layers, n_experts;
    uint32_t pad;
    uint64_t hidden, inter;
    uint64_t config_hash;
    uint64_t layer_bytes;
    uint64_t piece_off[4];
    uint64_t table_offset, data_offset, file_size;
    uint64_t check; /* FNV-1a of this header (check = 0) and the table */
} header;

static uint64_t align_up(uint64_t x) { return (x + PAGE - 1) / PAGE * PAGE; }

void kr_gcache_file_name(int bits, int gs, char *buf, size_t n) { snprintf(buf, n, "experts_marlin_int%d_g%d.bin", bits, gs); }

kr_status kr_gpu_moe_geom_make(int n_experts, int64_t hidden, int64_t inter, int bits, int gs, kr_gpu_moe_geom *g) {
    memset(g, 0, sizeof *g);
    if (n_experts <= 0 || n_experts > KR_GPU_MOE_MAX_EXPERTS)
        return kr_fail(KR_ERR_ARG, "GPU experts: n_experts = %d (must be 1..%d)", n_experts, KR_GPU_MOE_MAX_EXPERTS);
    kr_status s = kr_gpu_qlayout_check(2 * inter, hidden, bits, gs);
    if (s == KR_OK)
        s = kr_gpu_qlayout_check(hidden, inter, bits, gs);
    if (s != KR_OK)
        return kr_error_prefix(s, "GPU experts of hidden %lld, inter %lld", (long long)hidden, (long long)inter);
    g->n_experts = n_experts, g->hidden = hidden, g->inter = inter, g->bits = bits, g->gs = gs;
    g->expert_bytes[0] = (uint64_t)kr_gpu_qlayout_qbytes(2 * inter, hidden, bits);
    g->expert_bytes[1] = (uint64_t)kr_gpu_qlayout_sbytes(2 * inter, hidden, gs);
    g->expert_bytes[2] = (uint64_t)kr_gpu_qlayout_qbytes(hidden, inter, bits);
    g->expert_bytes[3] = (uint64_t)kr_gpu_qlayout_sbytes(hidden, inter, gs);
    uint64_t off = 0;
    for (int j = 0; j < 4; j++) {
        g->off[j] = off;
        off += align_up(g->expert_bytes[j] * (uint64_t)n_experts);
    }
    g->layer_bytes = off;
    return KR_OK;
}

void kr_gpu_moe_geom_bind(const kr_gpu_moe_geom *g, const void *base, kr_gpu_moe_layer *out) {
    const uint8_t *b = base;
    *out = (kr_gpu_moe_layer){g->n_experts, g->hidden, g->inter, g->bits, g->gs,
                              b + g->off[0], (const uint16_t *)(b + g->off[1]),
                              b + g->off[2], (const uint16_t *)(b + g->off[3])};
}

static kr_status fill_header(const kr_ecache_key *k, header *h, kr_gpu_moe_geom *g) {
    KR_TRY(kr_gpu_moe_geom_make(k->n_experts, k->hidden, k->inter, k->bits, k->gs, g));
    memset(h, 0, sizeof *h);
    memcpy(h->magic, MAGIC, 8);
    h->version = KR_GCACHE_VERSION;
    h->quantizer_version = KR_QUANTIZER_VERSION;
    h->layout_version = KR_GCACHE_LAYOUT_VERSION;
    h->bits = (uint32_t)k->bits;
    h->gs = (uint32_t)k->gs;
    h->n_layers = (uint32_t)k->n_layers;
    h->n_experts = (uint32_t)k->n_experts;
    h->hidden = (uint64_t)k->hidden;
    h->inter = (uint64_t)k->inter;
    h->config_hash = k->config_hash;
    h->layer_bytes = g->layer_bytes;
    memcpy(h->piece_off, g->off, sizeof h->piece_off);
    h->table_offset = PAGE;
    h->data_offset = align_up(PAGE + (uint64_t)k->n_layers * 8);
    h->file_size = h->data_offset + (uint64_t)k->n_layers * g->layer_bytes;
    return KR_OK;
}

static uint64_t header_check(const header *h, const uint64_t *t) {
    header c = *h;
    c.check = 0;
    return kr_fnv1a(kr_fnv1a(KR_FNV_INIT, &c, sizeof c), t, (size_t)h->n_layers * sizeof *t);
}

/* a field of the file differs from what the model needs: name both */
#define FIELD(name, fmt, got, want)                                                                           \
    do {                                                                                                      \
        if ((got) != (want))                                                                                  \
            return kr_fail(KR_ERR_FORMAT, "%s: header field %s is " fmt ", the model needs " fmt, p, name, got, \
                           want);                                                                             \
    } while (0)

/* Validates a mapped file against key; on success layer[] points at the blocks. */
static kr_status bind(const kr_mapped_file *f, const kr_ecache_key *k, const uint8_t **layer) {
    const char *p = f->path;
    header want, h;
    kr_gpu_moe_geom g;
    KR_TRY(fill_header(k, &want, &g));
    if (f->size < PAGE)
        return kr_fail(KR_ERR_FORMAT, "%s: file_size %zu bytes, shorter than its header page", p, f->size);
    memcpy(&h, f->data, sizeof h);
    if (memcmp(h.magic, MAGIC, 8))
        return kr_fail(KR_ERR_FORMAT, "%s: header field magic is wrong (not a krasis GPU expert cache)", p);
    FIELD("version", "%u", h.version, want.version);
    FIELD("quantizer_version", "%u", h.quantizer_version, want.quantizer_version);
    FIELD("layout_version", "%u", h.layout_version, want.layout_version);
    FIELD("bits", "%u", h.bits, want.bits);
    FIELD("gs", "%u", h.gs, want.gs);
    FIELD("n_layers", "%u", h.n_layers, want.n_layers);
    FIELD("n_experts", "%u", h.n_experts, want.n_experts);
    FIELD("hidden", "%llu", (unsigned long long)h.hidden, (unsigned long long)want.hidden);
    FIELD("inter", "%llu", (unsigned long long)h.inter, (unsigned long long)want.inter);
    if (h.config_hash != want.config_hash)
        return kr_fail(KR_ERR_FORMAT, "%s: header field config_hash is %016llx: built from another config.json or GGUF file"
                       " (now %016llx)", p, (unsigned long long)h.config_hash, (unsigned long long)want.config_hash);
    FIELD("layer_bytes", "%llu", (unsigned long long)h.layer_bytes, (unsigned long long)want.layer_bytes);
    for (int j = 0; j < 4; j++)
        FIELD("piece_off", "%llu", (unsigned long long)h.piece_off[j], (unsigned long long)want.piece_off[j]);
    FIELD("table_offset", "%llu", (unsigned long long)h.table_offset, (unsigned long long)want.table_offset);
    FIELD("data_offset", "%llu", (unsigned long long)h.data_offset, (unsigned long long)want.data_offset);
    if (h.file_size != f->size || h.file_size != want.file_size)
        return kr_fail(KR_ERR_FORMAT, "%s: file_size: the file has %zu bytes, its header says %llu, the model needs %llu"
                       " (truncated or grown)", p, f->size, (unsigned long long)h.file_size,
                       (unsigned long long)want.file_size);
    const uint64_t *t = (const uint64_t *)(f->data + h.table_offset);
    if (header_check(&h, t) != h.check)
        return kr_fail(KR_ERR_FORMAT, "%s: header field check: hash of header and offset table does not match (corrupt)", p);
    for (uint32_t l = 0; l < h.n_layers; l++) {
        if (t[l] != h.data_offset + l * h.layer_bytes)
            return kr_fail(KR_ERR_FORMAT, "%s: offset table entry %u is %llu, not %llu", p, l, (unsigned long long)t[l],
                           (unsigned long long)(h.data_offset + l * h.layer_bytes));
        layer[l] = f->data + t[l];
    }
    return KR_OK;
}

kr_status kr_gcache_validate(const char *path, const kr_ecache_key *key) {
    kr_mapped_file f;
    KR_TRY(kr_map_file(path, &f));
    const uint8_t **layer = calloc((size_t)key->n_layers + 1, sizeof *layer);
    kr_status s = layer ? bind(&f, key, layer) : kr_fail(KR_ERR_NOMEM, "out of memory");
    free(layer);
    kr_unmap_file(&f);
    return s;
}

static kr_status write_at(int fd, uint64_t off, const void *p, size_t n, const char *path) {
    if (lseek(fd, (off_t)off, SEEK_SET) < 0)
        return kr_fail(KR_ERR_IO, "seeking in %s: %s", path, strerror(errno));
    return kr_ecache_write_all(fd, p, n, path);
}

/* Expert e of layer l as a CPU quantization with the key's bits/gs: the source's own when it matches,
 * else quantized here from float rows into own (whose storage is allocated by the caller). */
static kr_status expert_q(const kr_ecache_key *k, const kr_gcache_source *src, bool from_cpu, int l, int e,
                          kr_qexpert *own, float *row, const kr_qexpert **out) {
    if (from_cpu) {
        *out = &src->experts[(size_t)l * (size_t)k->n_experts + (size_t)e];
        return KR_OK;
    }
    for (int64_t i = 0; i < k->inter; i++) {
        KR_TRY(src->rows(src->ctx, l, e, 0, i, row));
        KR_TRY(src->rows(src->ctx, l, e, 1, i, row + k->hidden));
        kr_qexpert_quantize_w13_row(own, i, row, row + k->hidden);
    }
    for (int64_t d = 0; d < k->hidden; d++) {
        KR_TRY(src->rows(src->ctx, l, e, 2, d, row));
        kr_quantize_row(&own->down, d, row);
    }
    *out = own;
    return KR_OK;
}

static bool cpu_matches(const kr_ecache_key *k, const kr_gcache_source *src) {
    if (!src->experts)
        return false;
    const kr_qexpert *e = &src->experts[0];
    return e->w13.bits == k->bits && e->w13.gs == k->gs && e->down.bits == k->bits && e->down.gs == k->gs &&
           e->w13.rows == 2 * k->inter && e->w13.cols == k->hidden && e->down.rows == k->hidden &&
           e->down.cols == k->inter;
}

static kr_status build(const char *path, const kr_ecache_key *k, const kr_gcache_source *src, bool *from_cpu) {
    header h;
    kr_gpu_moe_geom g;
    KR_TRY(fill_header(k, &h, &g));
    *from_cpu = cpu_matches(k, src);
    if (!*from_cpu && !src->rows)
        return kr_fail(KR_ERR_ARG, "building %s: the CPU quantization is not int%d g%d and no float rows were given", path,
                       k->bits, k->gs);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    uint64_t *t = calloc((size_t)k->n_layers + 1, sizeof *t);
    uint8_t *page = calloc(1, (size_t)h.data_offset);
    uint8_t *pq13 = malloc((size_t)g.expert_bytes[0]), *pqd = malloc((size_t)g.expert_bytes[2]);
    uint16_t *ps13 = malloc((size_t)g.expert_bytes[1]), *psd = malloc((size_t)g.expert_bytes[3]);
    float *row = malloc((size_t)(k->hidden > k->inter ? k->hidden : k->inter) * 2 * sizeof *row);
    kr_qexpert own;
    memset(&own, 0, sizeof own);
    own.inter = k->inter;
    kr_qmatrix_shape(&own.w13, 2 * k->inter, k->hidden, k->bits, k->gs);
    kr_qmatrix_shape(&own.down, k->hidden, k->inter, k->bits, k->gs);
    void *own_mem[4] = {NULL, NULL, NULL, NULL};
    if (!*from_cpu) {
        own_mem[0] = malloc((size_t)kr_qmatrix_qbytes(&own.w13));
        own_mem[1] = malloc((size_t)kr_qmatrix_sbytes(&own.w13));
        own_mem[2] = malloc((size_t)kr_qmatrix_qbytes(&own.down));
        own_mem[3] = malloc((size_t)kr_qmatrix_sbytes(&own.down));
        own.w13.q = own_mem[0], own.w13.s = own_mem[1], own.down.q = own_mem[2], own.down.s = own_mem[3];
    }
    kr_status s = KR_OK;
    if (!t || !page || !pq13 || !pqd || !ps13 || !psd || !row || (!*from_cpu && (!own_mem[0] || !own_mem[1] ||
                                                                                 !own_mem[2] || !own_mem[3])))
        s = kr_fail(KR_ERR_NOMEM, "out of memory building %s", path);
    int fd = s == KR_OK ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644) : -1;
    if (s == KR_OK && fd < 0)
        s = kr_fail(KR_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    /* the padding between pieces stays a hole: reads as zeros, costs no disk */
    if (s == KR_OK && ftruncate(fd, (off_t)h.file_size) != 0)
        s = kr_fail(KR_ERR_IO, "sizing %s to %llu bytes: %s", tmp, (unsigned long long)h.file_size, strerror(errno));
    if (s == KR_OK) {
        for (int l = 0; l < k->n_layers; l++)
            t[l] = h.data_offset + (uint64_t)l * g.layer_bytes;
        h.check = header_check(&h, t);
        memcpy(page, &h, sizeof h);
        memcpy(page + PAGE, t, (size_t)k->n_layers * sizeof *t);
        s = write_at(fd, 0, page, (size_t)h.data_offset, tmp);
    }
    fprintf(stderr, "krasis: GPU expert cache %s: %s\n", path,
            *from_cpu ? "packing the CPU quantization" : "quantizing from the float weights");
    double t0 = kr_ecache_now();
    uint64_t written = 0;
    for (int l = 0; l < k->n_layers && s == KR_OK; l++) {
        uint64_t base = h.data_offset + (uint64_t)l * g.layer_bytes;
        for (int e = 0; e < k->n_experts && s == KR_OK; e++) {
            const kr_qexpert *q = NULL;
            s = expert_q(k, src, *from_cpu, l, e, &own, row, &q);
            if (s == KR_OK)
                s = kr_gpu_qlayout_pack(&q->w13, pq13, ps13);
            if (s == KR_OK)
                s = kr_gpu_qlayout_pack(&q->down, pqd, psd);
            const void *piece[4] = {pq13, ps13, pqd, psd};
            for (int j = 0; j < 4 && s == KR_OK; j++)
                s = write_at(fd, base + g.off[j] + (uint64_t)e * g.expert_bytes[j], piece[j], (size_t)g.expert_bytes[j],
                             tmp);
        }
        written += g.layer_bytes;
        if (s == KR_OK)
            kr_ecache_progress("GPU expert cache", l + 1, k->n_layers, written, t0);
    }
    fprintf(stderr, "\n");
    if (fd >= 0)
        s = kr_ecache_commit(fd, tmp, path, s);
    free(t);
    free(page);
    free(pq13);
    free(pqd);
    free(ps13);
    free(psd);
    free(row);
    for (int j = 0; j < 4; j++)
        free(own_mem[j]);
    return s;
}

/* kr_gcache_open's side of kr_cache_map_or_build */
typedef struct {
    const kr_ecache_key *key;
    const uint8_t **layer;
    const kr_gcache_source *src;
    const char *path;
    bool from_cpu;
} gcache_job;

static kr_status gcache_bind(void *ctx, const kr_mapped_file *map) {
    const gcache_job *j = ctx;
    return bind(map, j->key, j->layer);
}

static kr_status gcache_build(void *ctx) {
    gcache_job *j = ctx;
    return build(j->path, j->key, j->src, &j->from_cpu);
}

kr_status kr_gcache_open(const char *path, const kr_ecache_key *key, const kr_gcache_source *src, kr_gcache *out) {
    memset(out, 0, sizeof *out);
    out->key = *key;
    if (!kr_quant_valid(key->bits, key->gs))
        return kr_fail(KR_ERR_ARG, "GPU expert cache %s: int%d g%d is not a supported quantization", path, key->bits,
                       key->gs);
    if (key->n_layers <= 0)
        return kr_fail(KR_ERR_ARG, "GPU expert cache %s: n_layers = %d (no MoE layers)", path, key->n_layers);
    kr_status s = kr_gpu_moe_geom_make(key->n_experts, key->hidden, key->inter, key->bits, key->gs, &out->geom);
    if (s != KR_OK)
        return kr_error_prefix(s, "GPU expert cache %s", path);
    out->layer = calloc((size_t)key->n_layers + 1, sizeof *out->layer);
    if (!out->layer)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    gcache_job j = {key, out->layer, src, path, false};
    s = kr_cache_map_or_build(path, "GPU expert cache", gcache_bind, gcache_build, &j, &out->map, &out->rebuilt);
    if (s != KR_OK) {
        kr_gcache_close(out);
        return s;
    }
    out->from_cpu = j.from_cpu;
    /* copied layer by layer, start to end: read-ahead helps the first pass */
    madvise((void *)out->map.data, out->map.size, MADV_SEQUENTIAL);
    return KR_OK;
}

void kr_gcache_layer(const kr_gcache *c, int l, kr_gpu_moe_layer *out) { kr_gpu_moe_geom_bind(&c->geom, c->layer[l], out); }

void kr_gcache_close(kr_gcache *c) {
    kr_unmap_file(&c->map);
    free(c->layer);
    c->layer = NULL;
}
