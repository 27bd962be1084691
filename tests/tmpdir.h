/* Scratch directories and file writers for tests that build (broken) checkpoints on the fly. */
#ifndef KR_TEST_TMPDIR_H
#define KR_TEST_TMPDIR_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline const char *test_tmpdir(char *buf, size_t cap) {
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(buf, cap, "%s/krasis-test-XXXXXX", base);
    return mkdtemp(buf);
}

static inline void test_write(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fwrite(data, 1, n, f);
    fclose(f);
}

/* A safetensors file: 8-byte little-endian header length, the header, then `data`. */
static inline void test_write_st(const char *path, const char *header, const void *data, size_t n) {
    size_t h = strlen(header);
    unsigned char len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)((uint64_t)h >> (8 * i));
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fwrite(len, 1, 8, f);
    fwrite(header, 1, h, f);
    if (n)
        fwrite(data, 1, n, f);
    fclose(f);
}

static inline void test_rmtree(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

#endif
