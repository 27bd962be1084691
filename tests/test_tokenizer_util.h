/* Helpers shared by the tokenizer tests: locating ../shared/data, reading files, comparing id lists. */
#ifndef KR_TEST_TOKENIZER_UTIL_H
#define KR_TEST_TOKENIZER_UTIL_H

#include <stdint.h>
#include <sys/stat.h>

#include "base/mapfile.h"
#include "test.h"
#include "tokenizer/tokenizer.h"

#define SHARED_DATA KRASIS_SOURCE_DIR "/../shared/data"

static inline int shared_data_present(void) {
    struct stat st;
    if (stat(SHARED_DATA, &st) == 0 && S_ISDIR(st.st_mode))
        return 1;
    printf("SKIP: ../shared/data missing\n");
    return 0;
}

static inline char *slurp(const char *path, size_t *len) {
    char *s = NULL;
    size_t n = 0;
    if (kr_read_file(path, &s, &n) != KR_OK) {
        CHECK(0, "cannot read %s: %s", path, kr_error());
        return NULL;
    }
    if (len)
        *len = n;
    return s;
}

static inline kr_tokenizer *load_tok(const char *path) {
    kr_tokenizer *t = NULL;
    kr_status s = kr_tokenizer_load(path, &t);
    CHECK(s == KR_OK, "load %s: %s", path, kr_error());
    return s == KR_OK ? t : NULL;
}

/* Parses integers separated by anything that is not a digit. Returns the count; *out is malloc'd. */
static inline size_t parse_ids(const char *s, const char *end, int32_t **out) {
    size_t cap = 16, n = 0;
    int32_t *v = malloc(cap * sizeof *v);
    while (s < end) {
        if (*s < '0' || *s > '9') {
            s++;
            continue;
        }
        long x = 0;
        while (s < end && *s >= '0' && *s <= '9')
            x = x * 10 + (*s++ - '0');
        if (n == cap)
            v = realloc(v, (cap *= 2) * sizeof *v);
        v[n++] = (int32_t)x;
    }
    *out = v;
    return n;
}

/* Encodes text and compares with want; prints both on a mismatch. Returns 1 when equal. */
static inline int check_encode(const kr_tokenizer *t, const char *what, const char *text, size_t len,
                               const int32_t *want, size_t nwant, kr_encode_options opt) {
    int32_t *ids = NULL;
    size_t n = 0;
    kr_status s = kr_tokenizer_encode(t, text, len, opt, &ids, &n);
    CHECK(s == KR_OK, "%s: encode failed: %s", what, kr_error());
    int ok = s == KR_OK && n == nwant && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    if (!ok && s == KR_OK) {
        fprintf(stderr, "%s: text \"%.*s\"\n  got :", what, (int)(len > 200 ? 200 : len), text);
        for (size_t i = 0; i < n && i < 60; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n  want:");
        for (size_t i = 0; i < nwant && i < 60; i++)
            fprintf(stderr, " %d", want[i]);
        fprintf(stderr, "\n");
    }
    CHECK(ok || s != KR_OK, "%s: ids differ (got %zu, want %zu)", what, n, nwant);
    free(ids);
    return ok;
}

#endif
