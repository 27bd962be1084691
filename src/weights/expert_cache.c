/* Expert cache files: build (quantize + write + fsync + rename), validate, map (see expert_cache.h). */
#define _GNU_SOURCE
#include "weights/expert_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend/cpu/quant.h"

#define PAGE 4096
static const char MAGIC[8] = {'K', 'R', 'X', 'C', 'P', 'U', '1', 0};

typedef struct {
    char magic[8];
    uint32_t version, quantizer_version;
    uint32_t bits, gs;
    uint32_t n_layers, n_experts;
    uint64_t hidden, inter;
    uint64_t config_hash;
    uint64_t n_entries;
    uint64_t table_offset, data_offset, file_size;
    uint64_t check; /* FNV-1a of this header (check = 0) and the table */
} header;

typedef struct {
    uint32_t layer, expert;
    uint64_t off[4]; /* w13 values, w13 scales, down values, down scales */
} tentry;

static uint64_t align_up(uint64_t x) { return (x + PAGE - 1) / PAGE * PAGE; }

uint64_t kr_fnv1a(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

void kr_ecache_file_name(int bits, int gs, char *buf, size_t n) { snprintf(buf, n, "experts_cpu_int%d_g%d.bin", bits, gs); }

kr_status kr_mkdirs(const char *path) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return kr_fail(KR_ERR_IO, "cannot create directory %s: %s", tmp, strerror(errno));
            *p = c;
            if (!c)
                break;
        }
    }
    return KR_OK;
}

/* the four matrices of one expert, shapes only */
static void shapes(const kr_ecache_key *k, kr_qexpert *e) {
    e->inter = k->inter;
    kr_qmatrix_shape(&e->w13, 2 * k->inter, k->hidden, k->bits, k->gs);
    kr_qmatrix_shape(&e->down, k->hidden, k->inter, k->bits, k->gs);
}

static uint64_t piece_sizes(const kr_qexpert *e, uint64_t sz[4]) {
    sz[0] = (uint64_t)kr_qmatrix_qbytes(&e->w13);
    sz[1] = (uint64_t)kr_qmatrix_sbytes(&e->w13);
    sz[2] = (uint64_t)kr_qmatrix_qbytes(&e->down);
    sz[3] = (uint64_t)kr_qmatrix_sbytes(&e->down);
    return align_up(sz[0]) + align_up(sz[1]) + align_up(sz[2]) + align_up(sz[3]);
}

static void fill_header(const kr_ecache_key *k, header *h) {
    memset(h, 0, sizeof *h);
    memcpy(h->magic, MAGIC, 8);
    h->version = KR_ECACHE_VERSION;
    h->quantizer_version = KR_QUANTIZER_VERSION;
    h->bits = (uint32_t)k->bits;
    h->gs = (uint32_t)k->gs;
    h->n_layers = (uint32_t)k->n_layers;
    h->n_experts = (uint32_t)k->n_experts;
    h->hidden = (uint64_t)k->hidden;
    h->inter = (uint64_t)k->inter;
    h->config_hash = k->config_hash;
    h->n_entries = (uint64_t)k->n_layers * (uint64_t)k->n_experts;
    h->table_offset = PAGE;
    h->data_offset = align_up(PAGE + h->n_entries * sizeof(tentry));
}

static uint64_t header_check(const header *h, const tentry *t) {
    header c = *h;
    c.check = 0;
    return kr_fnv1a(kr_fnv1a(KR_FNV_INIT, &c, sizeof c), t, (size_t)h->n_entries * sizeof *t);
}

/* Validates a mapped file against key; on success the experts are bound. */
static kr_status bind(const kr_mapped_file *f, const kr_ecache_key *k, kr_qexpert *ex) {
    const char *p = f->path;
    header want, h;
    fill_header(k, &want);
    if (f->size < PAGE)
        return kr_fail(KR_ERR_FORMAT, "%s: %zu bytes, shorter than its header page", p, f->size);
    memcpy(&h, f->data, sizeof h);
    if (memcmp(h.magic, MAGIC, 8))
        return kr_fail(KR_ERR_FORMAT, "%s: wrong magic (not a krasis CPU expert cache)", p);
    if (h.version != want.version || h.quantizer_version != want.quantizer_version)
        return kr_fail(KR_ERR_FORMAT, "%s: format %u / quantizer %u, this krasis writes %u / %u", p, h.version,
                       h.quantizer_version, want.version, want.quantizer_version);
    if (h.bits != want.bits || h.gs != want.gs || h.n_layers != want.n_layers || h.n_experts != want.n_experts ||
        h.hidden != want.hidden || h.inter != want.inter)
        return kr_fail(KR_ERR_FORMAT, "%s: int%u g%u, %u layers x %u experts of [%llu, %llu]; the model needs int%u g%u, %u x %u of [%llu, %llu]",
                       p, h.bits, h.gs, h.n_layers, h.n_experts, (unsigned long long)h.hidden, (unsigned long long)h.inter,
                       want.bits, want.gs, want.n_layers, want.n_experts, (unsigned long long)want.hidden,
                       (unsigned long long)want.inter);
    if (h.config_hash != want.config_hash)
        return kr_fail(KR_ERR_FORMAT, "%s: built from another config.json or GGUF file (hash %016llx, now %016llx)", p,
                       (unsigned long long)h.config_hash, (unsigned long long)want.config_hash);
    if (h.n_entries != want.n_entries || h.table_offset != want.table_offset || h.data_offset != want.data_offset)
        return kr_fail(KR_ERR_FORMAT, "%s: corrupt header (table layout)", p);
    if (h.file_size != f->size)
        return kr_fail(KR_ERR_FORMAT, "%s: %zu bytes, its header says %llu (truncated or grown)", p, f->size,
                       (unsigned long long)h.file_size);
    if (h.data_offset > f->size)
        return kr_fail(KR_ERR_FORMAT, "%s: offset table runs past the end", p);
    const tentry *t = (const tentry *)(f->data + h.table_offset);
    if (header_check(&h, t) != h.check)
        return kr_fail(KR_ERR_FORMAT, "%s: header or offset table hash mismatch (corrupt)", p);
    for (uint64_t i = 0; i < h.n_entries; i++) {
        kr_qexpert *e = &ex[i];
        shapes(k, e);
        uint64_t sz[4];
        piece_sizes(e, sz);
        if (t[i].layer != i / h.n_experts || t[i].expert != i % h.n_experts)
            return kr_fail(KR_ERR_FORMAT, "%s: offset table entry %llu is out of order", p, (unsigned long long)i);
        for (int j = 0; j < 4; j++)
            if (t[i].off[j] % PAGE || t[i].off[j] < h.data_offset || t[i].off[j] + sz[j] > f->size)
                return kr_fail(KR_ERR_FORMAT, "%s: entry %llu points outside the data", p, (unsigned long long)i);
        e->w13.q = f->data + t[i].off[0];
        e->w13.s = (const float *)(f->data + t[i].off[1]);
        e->down.q = f->data + t[i].off[2];
        e->down.s = (const float *)(f->data + t[i].off[3]);
    }
    return KR_OK;
}

kr_status kr_ecache_validate(const char *path, const kr_ecache_key *key) {
    kr_mapped_file f;
    KR_TRY(kr_map_file(path, &f));
    kr_qexpert *ex = calloc((size_t)key->n_layers * (size_t)key->n_experts + 1, sizeof *ex);
    kr_status s = ex ? bind(&f, key, ex) : kr_fail(KR_ERR_NOMEM, "out of memory");
    free(ex);
    kr_unmap_file(&f);
    return s;
}

double kr_ecache_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

kr_status kr_ecache_write_all(int fd, const void *p, size_t n, const char *path) {
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return kr_fail(KR_ERR_IO, "writing %s: %s", path, w < 0 ? strerror(errno) : "short write");
        b += w;
        n -= (size_t)w;
    }
    return KR_OK;
}

static kr_status build(const char *path, const kr_ecache_key *k, kr_ecache_rows_fn rows, kr_ecache_encode_fn encode,
                       void *ctx) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    header h;
    fill_header(k, &h);
    kr_qexpert e;
    shapes(k, &e);
    uint64_t sz[4], per = piece_sizes(&e, sz);
    tentry *t = calloc((size_t)h.n_entries + 1, sizeof *t);
    uint8_t *buf = calloc(1, (size_t)per);
    float *row = malloc((size_t)(k->hidden > k->inter ? k->hidden : k->inter) * 2 * sizeof *row);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    kr_status s = KR_OK;
    if (!t || !buf || !row)
        s = kr_fail(KR_ERR_NOMEM, "out of memory building %s", path);
    else if (fd < 0)
        s = kr_fail(KR_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    uint64_t off = h.data_offset;
    for (uint64_t i = 0; i < h.n_entries; i++) {
        t[i].layer = (uint32_t)(i / h.n_experts);
        t[i].expert = (uint32_t)(i % h.n_experts);
        for (int j = 0; j < 4; j++) {
            t[i].off[j] = off;
            off += align_up(sz[j]);
        }
    }
    h.file_size = off;
    h.check = header_check(&h, t);
    if (s == KR_OK) {
        uint8_t *page = calloc(1, (size_t)h.data_offset);
        if (!page)
            s = kr_fail(KR_ERR_NOMEM, "out of memory");
        else {
            memcpy(page, &h, sizeof h);
            memcpy(page + PAGE, t, (size_t)h.n_entries * sizeof *t);
            s = kr_ecache_write_all(fd, page, (size_t)h.data_offset, tmp);
            free(page);
        }
    }
    double t0 = kr_ecache_now();
    uint64_t written = 0;
    for (int l = 0; l < k->n_layers && s == KR_OK; l++) {
        for (int x = 0; x < k->n_experts && s == KR_OK; x++) {
            memset(buf, 0, (size_t)per);
            e.w13.q = buf;
            e.w13.s = (const float *)(buf + align_up(sz[0]));
            e.down.q = buf + align_up(sz[0]) + align_up(sz[1]);
            e.down.s = (const float *)(buf + align_up(sz[0]) + align_up(sz[1]) + align_up(sz[2]));
            for (int64_t i = 0; i < k->inter && s == KR_OK; i++) {
                if (encode && encode(ctx, l, x, 0, i, &e.w13, 2 * i) && encode(ctx, l, x, 1, i, &e.w13, 2 * i + 1))
                    continue; /* gate row 2i, up row 2i+1: the order kr_qexpert_quantize_w13_row writes */
                s = rows(ctx, l, x, 0, i, row);
                if (s == KR_OK)
                    s = rows(ctx, l, x, 1, i, row + k->hidden);
                if (s == KR_OK)
                    kr_qexpert_quantize_w13_row(&e, i, row, row + k->hidden);
            }
            for (int64_t d = 0; d < k->hidden && s == KR_OK; d++) {
                if (encode && encode(ctx, l, x, 2, d, &e.down, d))
                    continue;
                s = rows(ctx, l, x, 2, d, row);
                if (s == KR_OK)
                    kr_quantize_row(&e.down, d, row);
            }
            if (s == KR_OK)
                s = kr_ecache_write_all(fd, buf, (size_t)per, tmp);
            written += per;
        }
        kr_ecache_progress("expert cache", l + 1, k->n_layers, written, t0);
    }
    fprintf(stderr, "\n");
    s = kr_ecache_commit(fd, tmp, path, s);
    free(t);
    free(buf);
    free(row);
    return s;
}

void kr_ecache_progress(const char *what, int done, int total, uint64_t bytes, double t0) {
    double dt = kr_ecache_now() - t0, rate = bytes / 1e9 / (dt > 1e-9 ? dt : 1e-9);
    double eta = dt / done * (total - done);
    fprintf(stderr, "\rkrasis: building %s: layer %d/%d  %.2f GB/s  ETA %.0f s   ", what, done, total, rate, eta);
}

kr_status kr_ecache_commit(int fd, const char *tmp, const char *path, kr_status s) {
    if (s == KR_OK && fsync(fd) != 0)
        s = kr_fail(KR_ERR_IO, "fsync %s: %s", tmp, strerror(errno));
    if (fd >= 0 && close(fd) != 0 && s == KR_OK)
        s = kr_fail(KR_ERR_IO, "closing %s: %s", tmp, strerror(errno));
    if (s == KR_OK && rename(tmp, path) != 0)
        s = kr_fail(KR_ERR_IO, "renaming %s to %s: %s", tmp, path, strerror(errno));
    if (s != KR_OK)
        unlink(tmp);
    else {
        /* make the rename itself durable */
        char dir[4200];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash) {
            *slash = 0;
            int dfd = open(*dir ? dir : "/", O_RDONLY | O_DIRECTORY);
            if (dfd >= 0) {
                fsync(dfd);
                close(dfd);
            }
        }
    }
    return s;
}

kr_status kr_cache_map_or_build(const char *path, const char *what, kr_cache_bind_fn bind_fn,
                                kr_cache_build_fn build_fn, void *ctx, kr_mapped_file *map, bool *rebuilt) {
    *rebuilt = false;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (kr_file_exists(path)) {
            kr_status s = kr_map_file(path, map);
            if (s == KR_OK)
                s = bind_fn(ctx, map);
            if (s == KR_OK)
                return KR_OK;
            kr_unmap_file(map);
            if (attempt)
                return kr_error_prefix(s, "%s just built does not load", what);
            fprintf(stderr, "krasis: %s is stale or corrupt, rebuilding: %s\n", what, kr_error());
        } else {
            fprintf(stderr, "krasis: no %s at %s; building it (once)\n", what, path);
        }
        KR_TRY(build_fn(ctx));
        *rebuilt = true;
    }
    return kr_fail(KR_ERR_IO, "%s %s: cannot load", what, path);
}

/* kr_ecache_open_ex's side of kr_cache_map_or_build */
typedef struct {
    const kr_ecache_key *key;
    kr_qexpert *experts;
    kr_ecache_rows_fn rows;
    kr_ecache_encode_fn encode;
    void *ctx;
    const char *path;
} ecache_job;

static kr_status ecache_bind(void *ctx, const kr_mapped_file *map) {
    const ecache_job *j = ctx;
    return bind(map, j->key, j->experts);
}

static kr_status ecache_build(void *ctx) {
    const ecache_job *j = ctx;
    return build(j->path, j->key, j->rows, j->encode, j->ctx);
}

kr_status kr_ecache_open(const char *path, const kr_ecache_key *key, kr_ecache_rows_fn rows, void *ctx, kr_ecache *out) {
    return kr_ecache_open_ex(path, key, rows, NULL, ctx, out);
}

kr_status kr_ecache_open_ex(const char *path, const kr_ecache_key *key, kr_ecache_rows_fn rows,
                            kr_ecache_encode_fn encode, void *ctx, kr_ecache *out) {
    memset(out, 0, sizeof *out);
    out->key = *key;
    if (!kr_quant_valid(key->bits, key->gs))
        return kr_fail(KR_ERR_ARG, "expert cache: int%d g%d is not a supported quantization", key->bits, key->gs);
    out->experts = calloc((size_t)key->n_layers * (size_t)key->n_experts + 1, sizeof *out->experts);
    if (!out->experts)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    ecache_job j = {key, out->experts, rows, encode, ctx, path};
    kr_status s = kr_cache_map_or_build(path, "expert cache", ecache_bind, ecache_build, &j, &out->map, &out->rebuilt);
    if (s != KR_OK) {
        kr_ecache_close(out);
        return s;
    }
    /* weights are streamed once per token: huge pages cut TLB misses (DESIGN.md section 9) */
    madvise((void *)out->map.data, out->map.size, MADV_HUGEPAGE);
    /* on several NUMA nodes each layer's experts are dealt over the workers' nodes */
    for (int l = 0; l < key->n_layers; l++)
        kr_qmoe_place(out->experts + (size_t)l * (size_t)key->n_experts, key->n_experts);
    return KR_OK;
}

void kr_ecache_close(kr_ecache *c) {
    kr_unmap_file(&c->map);
    free(c->experts);
    c->experts = NULL;
}
