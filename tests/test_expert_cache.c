/* Expert cache files: built once and then mapped; a wrong magic, a wrong size, a damaged offset table
 * or another config hash is detected, reported and rebuilt, never loaded. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weights/expert_cache.h"
#include "test.h"


static kr_status rows(void *ctx, int l, int e, int which, int64_t row, float *out) {
    const kr_ecache_key *k = ctx;
    int64_t n = which == 2 ? k->inter : k->hidden;
    for (int64_t j = 0; j < n; j++)
        out[j] = (float)(((l * 31 + e * 17 + which * 7 + row * 3 + j) % 23) - 11) * 0.01f;
    return KR_OK;
}

/* checks the mapped values against a fresh quantization of the same rows */
static void check_content(const kr_ecache *c) {
    const kr_ecache_key *k = &c->key;
    float *r = malloc((size_t)(k->hidden + k->inter) * sizeof *r), *d = malloc((size_t)(k->hidden + k->inter) * sizeof *d);
    for (int l = 0; l < k->n_layers; l++)
        for (int e = 0; e < k->n_experts; e++) {
            const kr_qexpert *x = &c->experts[l * k->n_experts + e];
            rows((void *)k, l, e, 1, 5, r);
            kr_dequantize_row(&x->w13, 11, d); /* up row 5 */
            for (int64_t j = 0; j < k->hidden; j++)
                CHECK(d[j] - r[j] < 0.01f && r[j] - d[j] < 0.01f, "w13 value of layer %d expert %d", l, e);
            rows((void *)k, l, e, 2, k->hidden - 1, r);
            kr_dequantize_row(&x->down, k->hidden - 1, d);
            for (int64_t j = 0; j < k->inter; j++)
                CHECK(d[j] - r[j] < 0.01f && r[j] - d[j] < 0.01f, "down value of layer %d expert %d", l, e);
        }
    free(r);
    free(d);
}

static void poke(const char *path, long off, const void *bytes, size_t n) {
    int fd = open(path, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, bytes, n, off) == (ssize_t)n, "poke %s", path);
    close(fd);
}

static void expect_rebuild(const char *path, kr_ecache_key *key, const char *what, const char *msg_part) {
    kr_status v = kr_ecache_validate(path, key);
    CHECK(v != KR_OK && strstr(kr_error(), msg_part), "%s: validate said '%s'", what, v == KR_OK ? "ok" : kr_error());
    kr_ecache c;
    CHECK(kr_ecache_open(path, key, rows, key, &c) == KR_OK, "%s: open: %s", what, kr_error());
    CHECK(c.rebuilt, "%s: a bad cache was loaded instead of rebuilt", what);
    check_content(&c);
    kr_ecache_close(&c);
    CHECK(kr_ecache_validate(path, key) == KR_OK, "%s: rebuilt file does not validate: %s", what, kr_error());
}

int main(void) {
    char dir[] = "/tmp/krasis-test-ecache-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    for (int bits = 4; bits <= 8; bits += 4) {
        kr_ecache_key key = {bits, 32, 2, 3, 64, 96, 0x1234};
        char name[64], path[256];
        kr_ecache_file_name(bits, 32, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        kr_ecache c;
        CHECK(kr_ecache_open(path, &key, rows, &key, &c) == KR_OK && c.rebuilt, "first open builds: %s", kr_error());
        check_content(&c);
        kr_ecache_close(&c);
        CHECK(kr_ecache_open(path, &key, rows, &key, &c) == KR_OK && !c.rebuilt, "second open maps");
        CHECK(((uintptr_t)c.experts[0].w13.q & 4095) == 0, "data not 4 KiB aligned");
        check_content(&c);
        kr_ecache_close(&c);

        poke(path, 0, "XXXX", 4);
        expect_rebuild(path, &key, "wrong magic", "magic");

        CHECK(truncate(path, 4096 * 5) == 0, "truncate");
        expect_rebuild(path, &key, "truncated", "bytes");

        poke(path, 4096 + 8, "\x01\x02\x03", 3); /* inside the offset table */
        expect_rebuild(path, &key, "damaged table", "hash mismatch");

        key.config_hash = 0x5678; /* config.json changed */
        expect_rebuild(path, &key, "config hash", "another config.json");

        kr_ecache_key other = key;
        other.inter = 128;
        CHECK(kr_ecache_validate(path, &other) != KR_OK && strstr(kr_error(), "the model needs"), "shape mismatch: %s", kr_error());
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "note: could not remove %s\n", dir);
    return test_summary("test_expert_cache");
}
