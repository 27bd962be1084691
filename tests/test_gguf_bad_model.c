/* Bad GGUF models get a clear error naming the file and what is wrong: a required metadata key missing,
 * an unsupported architecture, a tensor of the wrong shape, a missing tensor, and broken split sets (a
 * shard missing, a shard whose split.count disagrees, a file name that disagrees with its metadata).
 * Each case is a copy of a fixture GGUF with a few bytes changed in place (same lengths, so the file stays
 * well-formed and only the intended fact changes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/model.h"
#include "test.h"
#include "tmpdir.h"

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n);
    if (b && fread(b, 1, *n, f) != *n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    return b;
}

/* the single occurrence of s (with its GGUF u64 length prefix, so a longer name is never matched) */
static unsigned char *find_str(unsigned char *b, size_t n, const char *s) {
    size_t len = strlen(s);
    for (size_t i = 8; i + len <= n; i++)
        if (!memcmp(b + i, s, len)) {
            uint64_t l;
            memcpy(&l, b + i - 8, 8);
            if (l == len)
                return b + i;
        }
    return NULL;
}

/* opens path and expects failure with every needle in the message */
static void expect_error(const char *what, const char *path, const char *n1, const char *n2) {
    kr_model *m = NULL;
    kr_status s = kr_model_open(path, &m);
    CHECK(s != KR_OK, "%s: opened", what);
    if (s == KR_OK) {
        kr_model_close(m);
        return;
    }
    const char *e = kr_error();
    CHECK(strstr(e, n1) != NULL, "%s: message lacks '%s': %s", what, n1, e);
    CHECK(!n2 || strstr(e, n2) != NULL, "%s: message lacks '%s': %s", what, n2, e);
    printf("%-22s -> %s\n", what, e);
}

static void mutated(const char *dir, const char *name, const unsigned char *src, size_t n, const char *find,
                    size_t at, const void *bytes, size_t nb, char *out, size_t cap) {
    unsigned char *b = malloc(n);
    memcpy(b, src, n);
    unsigned char *p = find_str(b, n, find);
    CHECK(p != NULL, "'%s' not found in the fixture", find);
    if (p)
        memcpy(p + at, bytes, nb);
    snprintf(out, cap, "%s/%s", dir, name);
    test_write(out, b, n);
    free(b);
}

int main(void) {
    char dir[256], src[1024], path[512];
    CHECK(test_tmpdir(dir, sizeof dir) != NULL, "tmpdir");
    snprintf(src, sizeof src, "%s/tests/fixtures/gguf/qwen3_moe_q8_0/qwen3_moe_q8_0.gguf", KRASIS_SOURCE_DIR);
    size_t n;
    unsigned char *q = slurp(src, &n);
    CHECK(q != NULL, "read %s", src);
    if (!q)
        return test_summary("test_gguf_bad_model");

    mutated(dir, "nokey.gguf", q, n, "qwen3moe.embedding_length", 24, "X", 1, path, sizeof path);
    expect_error("missing required key", path, "required key 'qwen3moe.embedding_length' is missing", "nokey.gguf");

    mutated(dir, "arch.gguf", q, n, "qwen3moe", 7, "X", 1, path, sizeof path);
    expect_error("unsupported arch", path, "general.architecture 'qwen3moX' is not supported", "arch.gguf");

    /* blk.0.attn_q_norm.weight: n_dims (u32) then ne[0] (u64) = 16 -> 8 (fewer bytes, still in bounds) */
    uint64_t eight = 8;
    mutated(dir, "shape.gguf", q, n, "blk.0.attn_q_norm.weight", 24 + 4, &eight, 8, path, sizeof path);
    expect_error("wrong tensor shape", path, "tensor 'blk.0.attn_q_norm.weight' has ggml shape {8}", "implies {16}");

    mutated(dir, "missing.gguf", q, n, "blk.1.ffn_down_exps.weight", 25, "X", 1, path, sizeof path);
    expect_error("missing tensor", path, "tensor 'blk.1.ffn_down_exps.weight' not found", "missing.gguf");
    free(q);

    /* split sets, from the 2-shard GLM fixture */
    char s1[1024], s2[1024];
    snprintf(s1, sizeof s1, "%s/tests/fixtures/gguf/glm4_moe_f16/glm4_moe_f16-00001-of-00002.gguf", KRASIS_SOURCE_DIR);
    snprintf(s2, sizeof s2, "%s/tests/fixtures/gguf/glm4_moe_f16/glm4_moe_f16-00002-of-00002.gguf", KRASIS_SOURCE_DIR);
    size_t n1, n2;
    unsigned char *a = slurp(s1, &n1), *b = slurp(s2, &n2);
    CHECK(a && b, "read the split fixture");
    if (a && b) {
        snprintf(path, sizeof path, "%s/m-00001-of-00002.gguf", dir);
        test_write(path, a, n1);
        expect_error("missing shard", path, "shard 2 of 2", "is missing");

        /* shard 2 claims split.count 3: after the key, u32 type then the u16 value */
        char p2[512];
        uint16_t three = 3;
        mutated(dir, "m-00002-of-00002.gguf", b, n2, "split.count", 11 + 4, &three, 2, p2, sizeof p2);
        expect_error("mismatched split count", path, "m-00002-of-00002.gguf: split.no 1 of split.count 3", NULL);

        snprintf(path, sizeof path, "%s/m-00001-of-00003.gguf", dir);
        test_write(path, a, n1);
        expect_error("name vs split.count", path, "the file name says shard 1 of 3", "split.count 2)");
        unlink(path);
        snprintf(path, sizeof path, "%s/m-00001-of-00002.gguf", dir);
        unlink(path);
        unlink(p2);
    }
    free(a);
    free(b);
    const char *files[] = {"nokey.gguf", "arch.gguf", "shape.gguf", "missing.gguf"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    return test_summary("test_gguf_bad_model");
}
