/* NUMA topology and page placement through libnuma (see numa.h). */
#define _GNU_SOURCE
#include "backend/cpu/numa.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#ifdef KRASIS_HAVE_NUMA
#include <numa.h>
#include <numaif.h>
#endif

int kr_numa_fake_nodes(void) {
    const char *v = getenv("KRASIS_FAKE_NUMA");
    int n = v ? atoi(v) : 0;
    return n > 1 && n <= 64 ? n : 0;
}

int kr_numa_system_nodes(void) {
#ifdef KRASIS_HAVE_NUMA
    if (numa_available() >= 0) {
        int n = numa_num_configured_nodes();
        return n > 0 ? n : 1;
    }
#endif
    return 1;
}

int kr_numa_node_of_cpu(int cpu) {
#ifdef KRASIS_HAVE_NUMA
    if (numa_available() >= 0) {
        int n = numa_node_of_cpu(cpu);
        return n >= 0 ? n : 0;
    }
#endif
    (void)cpu;
    return 0;
}

long long kr_numa_node_bytes(int node, long long *free_bytes) {
#ifdef KRASIS_HAVE_NUMA
    if (numa_available() >= 0)
        return numa_node_size64(node, free_bytes);
#endif
    (void)node;
    if (free_bytes)
        *free_bytes = 0;
    return 0;
}

void kr_numa_place(const void *p, size_t len, int node) {
#ifdef KRASIS_HAVE_NUMA
    if (!p || !len || kr_numa_system_nodes() < 2 || node < 0 || node >= 64)
        return;
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(page - 1);
    uintptr_t end = ((uintptr_t)p + len + (uintptr_t)page - 1) & ~(uintptr_t)(page - 1);
    unsigned long mask = 1UL << node;
    /* pages already faulted in move; pages faulted later follow the policy */
    (void)mbind((void *)a, end - a, MPOL_BIND, &mask, sizeof mask * 8, MPOL_MF_MOVE);
#else
    (void)p;
    (void)len;
    (void)node;
#endif
}
