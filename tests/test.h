/* A minimal test harness: CHECK records a failure and carries on; TEST_MAIN prints a summary and
 * returns non-zero when anything failed. Fixture paths are relative to KRASIS_SOURCE_DIR. */
#ifndef KR_TEST_H
#define KR_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_checks, test_failures;

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        test_checks++;                                                            \
        if (!(cond)) {                                                            \
            test_failures++;                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n    ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                         \
            fprintf(stderr, "\n");                                                \
        }                                                                         \
    } while (0)

#define CHECK_NEAR(a, b, tol) \
    CHECK(fabs((double)(a) - (double)(b)) <= (tol), "%s = %.9g, %s = %.9g (tol %g)", #a, (double)(a), #b, (double)(b), (double)(tol))

static inline int test_summary(const char *name) {
    printf("%s: %d checks, %d failed\n", name, test_checks, test_failures);
    return test_failures ? 1 : 0;
}

/* xorshift64: reproducible uniform floats in [-1, 1) from a caller-owned state */
static inline float test_frand(unsigned long long *state) {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return (float)((*state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* cosine similarity of two vectors (1 = same direction) */
static inline double test_cosine(const float *a, const float *b, int64_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (int64_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return ab / sqrt(aa * bb + 1e-300);
}

static inline const char *test_path(const char *rel, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s", KRASIS_SOURCE_DIR, rel);
    return buf;
}

#endif
