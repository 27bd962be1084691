/* Read-bandwidth probe (membw.h). The buffer is written once first so every page is backed (reads of
 * never-touched anonymous memory would all hit the shared zero page and measure the cache). */
#include "backend/cpu/membw.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "backend/cpu/isa.h"
#include "backend/cpu/threadpool.h"

typedef struct {
    uint8_t *buf;
    size_t n;
    int write;
    uint64_t sink[256];
} probe;

static void region(void *ctx, int w, int n) {
    probe *p = ctx;
    size_t chunk = p->n / (size_t)n / 128 * 128, off = chunk * (size_t)w;
    if (w == n - 1)
        chunk = (p->n - off) / 128 * 128;
    if (p->write)
        memset(p->buf + off, w + 1, chunk);
    else
        p->sink[w & 255] += kr_kernels_get()->read_sum(p->buf + off, chunk);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

kr_status kr_read_bandwidth(size_t bytes, int passes, double *gbs) {
    const size_t huge = 2u << 20;
    bytes = (bytes + huge - 1) / huge * huge;
    probe *p = calloc(1, sizeof *p);
    if (!p)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    p->buf = aligned_alloc(huge, bytes);
    if (!p->buf) {
        free(p);
        return kr_fail(KR_ERR_NOMEM, "cannot allocate %zu MB for the bandwidth probe", bytes >> 20);
    }
    madvise(p->buf, bytes, MADV_HUGEPAGE);
    p->n = bytes;
    p->write = 1;
    kr_pool_run(region, p);
    p->write = 0;
    double best = 0;
    for (int i = 0; i < passes; i++) {
        double t0 = now_s();
        kr_pool_run(region, p);
        double r = (double)bytes / (now_s() - t0) / 1e9;
        best = r > best ? r : best;
    }
    free(p->buf);
    free(p);
    *gbs = best;
    return KR_OK;
}
