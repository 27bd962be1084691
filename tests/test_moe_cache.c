/* The GPU expert cache file (backend/cuda/moe_cache.h), on the CPU: for INT4 and INT8 at group sizes
 * 32/64/128 it is built once from the CPU quantization and then mapped (not rebuilt), every layer block
 * is 4 KiB aligned and byte-for-byte kr_gpu_qlayout_pack of the same kr_qmatrix (w13 then down, experts
 * back to back per piece, zero padding); when the CPU quantization has other bits/gs the experts are
 * quantized from the float rows at the requested ones; a wrong magic, a changed header field, a damaged
 * hash, a truncated file, another config hash or another shape is reported naming the file and the
 * field, and the file is rebuilt, never loaded. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/cpu/quant.h"
#include "backend/cuda/moe_cache.h"
#include "backend/cuda/moe_layout.h"
#include "test.h"
#include "tmpdir.h"

static kr_status rows(void *ctx, int l, int e, int which, int64_t row, float *out) {
    const kr_ecache_key *k = ctx;
    int64_t n = which == 2 ? k->inter : k->hidden;
    for (int64_t j = 0; j < n; j++)
        out[j] = (float)(((l * 31 + e * 17 + which * 7 + row * 3 + j * 5) % 23) - 11) * 0.01f * (1 + (row % 3));
    return KR_OK;
}

/* the CPU quantization of every expert (what kr_ecache would hold), owning its storage */
typedef struct {
    kr_qexpert *ex;
    int n;
} cpu_quant;

static void cpu_quantize(const kr_ecache_key *k, int bits, int gs, cpu_quant *c) {
    c->n = k->n_layers * k->n_experts;
    c->ex = calloc((size_t)c->n, sizeof *c->ex);
    float *r = malloc((size_t)(k->hidden + k->inter) * 2 * sizeof *r);
    for (int i = 0; i < c->n; i++) {
        kr_qexpert *e = &c->ex[i];
        e->inter = k->inter;
        kr_qmatrix_shape(&e->w13, 2 * k->inter, k->hidden, bits, gs);
        kr_qmatrix_shape(&e->down, k->hidden, k->inter, bits, gs);
        e->w13.q = malloc((size_t)kr_qmatrix_qbytes(&e->w13));
        e->w13.s = malloc((size_t)kr_qmatrix_sbytes(&e->w13));
        e->down.q = malloc((size_t)kr_qmatrix_qbytes(&e->down));
        e->down.s = malloc((size_t)kr_qmatrix_sbytes(&e->down));
        int l = i / k->n_experts, x = i % k->n_experts;
        for (int64_t j = 0; j < k->inter; j++) {
            rows((void *)k, l, x, 0, j, r);
            rows((void *)k, l, x, 1, j, r + k->hidden);
            kr_qexpert_quantize_w13_row(e, j, r, r + k->hidden);
        }
        for (int64_t d = 0; d < k->hidden; d++) {
            rows((void *)k, l, x, 2, d, r);
            kr_quantize_row(&e->down, d, r);
        }
    }
    free(r);
}

static void cpu_free(cpu_quant *c) {
    for (int i = 0; i < c->n; i++) {
        free((void *)c->ex[i].w13.q);
        free((void *)c->ex[i].w13.s);
        free((void *)c->ex[i].down.q);
        free((void *)c->ex[i].down.s);
    }
    free(c->ex);
}

/* every byte of every layer block equals the packer's output on the same qmatrices (padding zero) */
static void check_exact(const kr_gcache *c, const cpu_quant *q, const char *what) {
    const kr_gpu_moe_geom *g = &c->geom;
    const kr_ecache_key *k = &c->key;
    uint8_t *want = calloc(1, (size_t)g->layer_bytes);
    int bad_layers = 0;
    for (int l = 0; l < k->n_layers; l++) {
        memset(want, 0, (size_t)g->layer_bytes);
        for (int e = 0; e < k->n_experts; e++) {
            const kr_qexpert *x = &q->ex[l * k->n_experts + e];
            CHECK(kr_gpu_qlayout_pack(&x->w13, want + g->off[0] + e * g->expert_bytes[0],
                                      (uint16_t *)(want + g->off[1] + e * g->expert_bytes[1])) == KR_OK, "pack w13");
            CHECK(kr_gpu_qlayout_pack(&x->down, want + g->off[2] + e * g->expert_bytes[2],
                                      (uint16_t *)(want + g->off[3] + e * g->expert_bytes[3])) == KR_OK, "pack down");
        }
        CHECK(((uintptr_t)c->layer[l] & 4095) == 0, "%s: layer %d block not 4 KiB aligned", what, l);
        bad_layers += memcmp(want, c->layer[l], (size_t)g->layer_bytes) != 0;
        /* the bound view points into the block at the piece offsets */
        kr_gpu_moe_layer L;
        kr_gcache_layer(c, l, &L);
        CHECK(L.w13_q == c->layer[l] && (const uint8_t *)L.down_s == c->layer[l] + g->off[3] && L.n_experts == k->n_experts &&
                  L.bits == k->bits && L.gs == k->gs && L.hidden == k->hidden && L.inter == k->inter,
              "%s: kr_gcache_layer view of layer %d", what, l);
    }
    CHECK(bad_layers == 0, "%s: %d layer blocks differ from kr_gpu_qlayout_pack", what, bad_layers);
    free(want);
}

static void poke(const char *path, long off, const void *bytes, size_t n) {
    int fd = open(path, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, bytes, n, off) == (ssize_t)n, "poke %s", path);
    close(fd);
}

/* validate names the file and the field; open rebuilds it and the new file is exact */
static void expect_rebuild(const char *path, const kr_ecache_key *key, const kr_gcache_source *src, const cpu_quant *q,
                           const char *what, const char *field) {
    kr_status v = kr_gcache_validate(path, key);
    CHECK(v != KR_OK && strstr(kr_error(), path) && strstr(kr_error(), field),
          "%s: validate should name %s and '%s', said '%s'", what, path, field, v == KR_OK ? "ok" : kr_error());
    kr_gcache c;
    CHECK(kr_gcache_open(path, key, src, &c) == KR_OK, "%s: open: %s", what, kr_error());
    CHECK(c.rebuilt, "%s: a bad cache was loaded instead of rebuilt", what);
    check_exact(&c, q, what);
    kr_gcache_close(&c);
    CHECK(kr_gcache_validate(path, key) == KR_OK, "%s: rebuilt file does not validate: %s", what, kr_error());
}

static void one(const char *dir, int bits, int gs) {
    kr_ecache_key key = {bits, gs, 2, 3, 128, 128, 0x1234abcdull};
    char name[64], path[512], what[64];
    kr_gcache_file_name(bits, gs, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(what, sizeof what, "int%d g%d", bits, gs);
    CHECK(strstr(name, "experts_marlin_int") == name, "file name %s", name);
    cpu_quant q;
    cpu_quantize(&key, bits, gs, &q);
    kr_gcache_source src = {q.ex, rows, &key};

    kr_gcache c;
    CHECK(kr_gcache_open(path, &key, &src, &c) == KR_OK && c.rebuilt && c.from_cpu, "%s: first open builds from the CPU"
          " quantization: %s", what, kr_error());
    check_exact(&c, &q, what);
    kr_gcache_close(&c);
    CHECK(kr_gcache_open(path, &key, &src, &c) == KR_OK && !c.rebuilt, "%s: second open maps", what);
    check_exact(&c, &q, what);
    CHECK(c.map.size == 4096 * 2 + 2 * c.geom.layer_bytes, "%s: file size %zu", what, c.map.size);
    kr_gcache_close(&c);

    /* header field bits (offset 8 + 3*4 = 20) set to the other width */
    uint32_t other = bits == 4 ? 8 : 4;
    poke(path, 20, &other, 4);
    expect_rebuild(path, &key, &src, &q, what, "bits");
    /* format version (offset 8) */
    uint32_t v99 = 99;
    poke(path, 8, &v99, 4);
    expect_rebuild(path, &key, &src, &q, what, "version");
    poke(path, 0, "XXXX", 4);
    expect_rebuild(path, &key, &src, &q, what, "magic");
    /* one byte of the offset table: only the header hash sees it before the entries are read */
    uint8_t b = 0x5a;
    poke(path, 4096 + 3, &b, 1);
    expect_rebuild(path, &key, &src, &q, what, "check");
    CHECK(truncate(path, 4096 * 3) == 0, "truncate");
    expect_rebuild(path, &key, &src, &q, what, "file_size");

    /* another config.json: the config hash is named */
    kr_ecache_key k2 = key;
    k2.config_hash ^= 1;
    expect_rebuild(path, &k2, &src, &q, what, "config_hash");
    /* back to the first key: rebuilt again (the k2 file is stale for it) */
    CHECK(kr_gcache_open(path, &key, &src, &c) == KR_OK && c.rebuilt, "%s: hash back", what);
    kr_gcache_close(&c);

    /* another shape (more experts): named, rebuilt from rows since the CPU quantization has 3 experts */
    kr_ecache_key k3 = key;
    k3.n_experts = 4;
    cpu_quant q3;
    cpu_quantize(&k3, bits, gs, &q3);
    kr_gcache_source src3 = {q3.ex, rows, &k3};
    expect_rebuild(path, &k3, &src3, &q3, what, "n_experts");
    kr_ecache_key k4 = k3;
    k4.inter = 192;
    cpu_quant q4;
    cpu_quantize(&k4, bits, gs, &q4);
    kr_gcache_source src4 = {NULL, rows, &k4}; /* rows only */
    if (gs != 128) {
        expect_rebuild(path, &k4, &src4, &q4, what, "inter");
        CHECK(kr_gcache_open(path, &k4, &src4, &c) == KR_OK && !c.rebuilt && !c.from_cpu, "%s: rows-built reopens", what);
        kr_gcache_close(&c);
    } else { /* 192 is not a multiple of 128: refused with the field named, nothing built */
        CHECK(kr_gcache_open(path, &k4, &src4, &c) != KR_OK && strstr(kr_error(), "group size"), "%s: inter 192 at g128"
              " should be refused: %s", what, kr_error());
    }
    cpu_free(&q3);
    cpu_free(&q4);

    /* the CPU quantization at other bits/gs: the GPU cache's own choice wins, quantized from rows */
    int obits = bits == 4 ? 8 : 4, ogs = gs == 32 ? 128 : 32;
    cpu_quant oq;
    cpu_quantize(&key, obits, ogs, &oq);
    kr_gcache_source osrc = {oq.ex, rows, &key};
    unlink(path);
    CHECK(kr_gcache_open(path, &key, &osrc, &c) == KR_OK && c.rebuilt && !c.from_cpu, "%s: from rows when the CPU"
          " cache is int%d g%d: %s", what, obits, ogs, kr_error());
    check_exact(&c, &q, what); /* q: the same rows quantized at bits/gs */
    kr_gcache_close(&c);
    /* ... and without rows that is an error naming the file, not a silent mismatch */
    kr_gcache_source norows = {oq.ex, NULL, NULL};
    unlink(path);
    CHECK(kr_gcache_open(path, &key, &norows, &c) == KR_ERR_ARG && strstr(kr_error(), path), "%s: no rows: %s", what,
          kr_error());
    CHECK(access(path, F_OK) != 0, "%s: nothing left behind", what);
    cpu_free(&oq);
    cpu_free(&q);
}

int main(void) {
    char dir[512];
    if (!test_tmpdir(dir, sizeof dir))
        return 1;
    for (int bits = 4; bits <= 8; bits += 4)
        for (int gs = 32; gs <= 128; gs *= 2)
            one(dir, bits, gs);
    /* shapes the layout cannot hold are refused up front, naming the value */
    kr_gpu_moe_geom g;
    CHECK(kr_gpu_moe_geom_make(4, 100, 128, 4, 32, &g) == KR_ERR_ARG && strstr(kr_error(), "100"), "hidden 100: %s",
          kr_error());
    CHECK(kr_gpu_moe_geom_make(0, 128, 128, 4, 32, &g) == KR_ERR_ARG && strstr(kr_error(), "n_experts"), "0 experts");
    CHECK(kr_gpu_moe_geom_make(4, 128, 128, 3, 32, &g) == KR_ERR_ARG && strstr(kr_error(), "bits"), "3 bits");
    test_rmtree(dir);
    return test_summary("test_moe_cache");
}
