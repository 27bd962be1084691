/* Counts every allocation of the test binary that includes it: the allocator entry points are wrapped
 * at link time (link the test with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=aligned_alloc,
 * --wrap=posix_memalign; see perf.cmake), so calls from the krasis library count too. Include once. */
#ifndef KR_TEST_ALLOC_COUNTER_H
#define KR_TEST_ALLOC_COUNTER_H

#include <stdatomic.h>
#include <stddef.h>

static atomic_long n_alloc;
/* the allocation numbered alloc_fail_at (counting from 1 as n_alloc does) returns NULL: tests of the
 * out-of-memory paths; -1 (default) never */
static atomic_long alloc_fail_at = -1;
static inline int alloc_should_fail(void) { return atomic_fetch_add(&n_alloc, 1) + 1 == atomic_load(&alloc_fail_at); }
void *__real_malloc(size_t n);
void *__real_calloc(size_t a, size_t b);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
int __real_posix_memalign(void **p, size_t a, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t a, size_t b);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_aligned_alloc(size_t a, size_t n);
int __wrap_posix_memalign(void **p, size_t a, size_t n);

void *__wrap_malloc(size_t n) {
    if (alloc_should_fail())
        return NULL;
    return __real_malloc(n);
}
void *__wrap_calloc(size_t a, size_t b) {
    if (alloc_should_fail())
        return NULL;
    return __real_calloc(a, b);
}
void *__wrap_realloc(void *p, size_t n) {
    if (alloc_should_fail())
        return NULL;
    return __real_realloc(p, n);
}
void *__wrap_aligned_alloc(size_t a, size_t n) {
    if (alloc_should_fail())
        return NULL;
    return __real_aligned_alloc(a, n);
}
int __wrap_posix_memalign(void **p, size_t a, size_t n) {
    if (alloc_should_fail())
        return 12; /* ENOMEM */
    return __real_posix_memalign(p, a, n);
}

#endif
