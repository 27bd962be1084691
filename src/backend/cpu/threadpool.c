/* Thread pool: generation counter to start a region, a counter to finish it, a sense-reversing
 * barrier inside it. All waits spin with `pause` for KR_SPIN_NS, then futex-sleep; a waker only makes
 * the futex syscall when someone sleeps. Memory order: every shared counter is seq_cst, which the
 * sleeper count relies on (a worker announces sleep, then futex_wait re-checks the word in the kernel). */
#define _GNU_SOURCE
#include "backend/cpu/threadpool.h"

#include "backend/cpu/numa.h"

#include <dirent.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define KR_SPIN_NS 1000000L
#define KR_MAX_CPUS 1024
#define KR_MAX_NODES 64

typedef struct {
    int n;
    pthread_t *th;
    kr_pool_fn fn;
    void *ctx;
    _Atomic uint32_t gen;      /* bumped to start a region */
    _Atomic int done;          /* helpers finished with the current region */
    _Atomic int stop;
    _Atomic uint32_t bar_gen;  /* bumped when a barrier opens */
    _Atomic int bar_count;
    _Atomic int sleepers;
    int cpus[KR_MAX_CPUS];
    int n_cpus;
    /* NUMA: worker w runs on node index node[w] < n_nodes, which is OS node os_node[node[w]] */
    int node[KR_MAX_CPUS];
    int n_nodes;
    int os_node[KR_MAX_NODES];
} kr_pool;

typedef struct {
    kr_pool *p;
    int id;
} worker_arg;

static kr_pool *g_pool;
static worker_arg *g_args;

static void futex_wait(_Atomic uint32_t *addr, uint32_t val) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}
static void futex_wake(_Atomic uint32_t *addr) { syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0); }

static inline void cpu_relax(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Waits until *word != old: spins first, then sleeps. */
static void wait_change(kr_pool *p, _Atomic uint32_t *word, uint32_t old) {
    int64_t t0 = 0;
    for (unsigned i = 0;; i++) {
        if (atomic_load(word) != old)
            return;
        cpu_relax();
        if ((i & 255) == 255) {
            int64_t t = now_ns();
            if (!t0)
                t0 = t;
            else if (t - t0 > KR_SPIN_NS)
                break;
        }
    }
    while (atomic_load(word) == old) {
        atomic_fetch_add(&p->sleepers, 1);
        futex_wait(word, old);
        atomic_fetch_sub(&p->sleepers, 1);
    }
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set); /* best effort: a container may forbid it */
}

static void *worker_main(void *arg) {
    worker_arg *wa = arg;
    kr_pool *p = wa->p;
    if (wa->id < p->n_cpus)
        pin(p->cpus[wa->id]);
    uint32_t seen = 0;
    for (;;) {
        wait_change(p, &p->gen, seen);
        seen = atomic_load(&p->gen);
        if (atomic_load(&p->stop))
            return NULL;
        p->fn(p->ctx, wa->id, p->n);
        atomic_fetch_add(&p->done, 1);
    }
}

static int read_int(const char *path) {
    FILE *f = fopen(path, "r");
    int v = -1;
    if (f) {
        if (fscanf(f, "%d", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

int kr_physical_cores(int *cpus, int max, int *logical) {
    cpu_set_t set;
    int n = 0, nl = 0;
    if (sched_getaffinity(0, sizeof set, &set) != 0) {
        CPU_ZERO(&set);
        CPU_SET(0, &set);
    }
    int seen_core[KR_MAX_CPUS], seen_pkg[KR_MAX_CPUS];
    for (int c = 0; c < CPU_SETSIZE && c < KR_MAX_CPUS; c++) {
        if (!CPU_ISSET(c, &set))
            continue;
        nl++;
        char path[128];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", c);
        int core = read_int(path);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", c);
        int pkg = read_int(path);
        int dup = 0;
        for (int i = 0; i < n && core >= 0; i++)
            dup |= seen_core[i] == core && seen_pkg[i] == pkg;
        if (dup || n >= max)
            continue;
        seen_core[n] = core;
        seen_pkg[n] = pkg;
        cpus[n++] = c;
    }
    if (logical)
        *logical = nl;
    return n;
}

void kr_pool_shutdown(void) {
    kr_pool *p = g_pool;
    if (!p)
        return;
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->gen, 1);
    futex_wake(&p->gen);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->th[i], NULL);
    free(p->th);
    free(g_args);
    free(p);
    g_pool = NULL;
    g_args = NULL;
}

/* Numbers the distinct nodes the workers run on 0, 1, ... in order of first appearance. Unpinned
 * workers (more than the physical cores) count as node 0's. */
static void assign_nodes(kr_pool *p) {
    int fake = kr_numa_fake_nodes();
    p->n_nodes = 0;
    for (int w = 0; w < p->n; w++) {
        int os = fake ? w % fake : w < p->n_cpus ? kr_numa_node_of_cpu(p->cpus[w]) : p->n_nodes ? p->os_node[0] : 0;
        int i = 0;
        while (i < p->n_nodes && p->os_node[i] != os)
            i++;
        if (i == p->n_nodes && p->n_nodes < KR_MAX_NODES)
            p->os_node[p->n_nodes++] = os;
        p->node[w] = i < p->n_nodes ? i : 0;
    }
}

kr_status kr_pool_init(int n) {
    int cpus[KR_MAX_CPUS];
    int ncpu = kr_physical_cores(cpus, KR_MAX_CPUS, NULL);
    if (n <= 0)
        n = ncpu > 0 ? ncpu : 1;
    if (n > KR_MAX_CPUS)
        return kr_fail(KR_ERR_ARG, "--threads %d: at most %d workers", n, KR_MAX_CPUS);
    if (g_pool && g_pool->n == n)
        return KR_OK;
    kr_pool_shutdown();
    kr_pool *p = calloc(1, sizeof *p);
    if (!p)
        return kr_fail(KR_ERR_NOMEM, "out of memory for the thread pool");
    p->n = n;
    /* more workers than physical cores (asked for explicitly) are left unpinned */
    p->n_cpus = n <= ncpu ? ncpu : 0;
    memcpy(p->cpus, cpus, sizeof(int) * (size_t)ncpu);
    assign_nodes(p);
    p->th = calloc((size_t)n, sizeof *p->th);
    g_args = calloc((size_t)n, sizeof *g_args);
    if (!p->th || !g_args) {
        free(p->th);
        free(p);
        free(g_args);
        g_args = NULL;
        return kr_fail(KR_ERR_NOMEM, "out of memory for the thread pool");
    }
    g_pool = p;
    for (int i = 1; i < n; i++) {
        g_args[i] = (worker_arg){p, i};
        if (pthread_create(&p->th[i], NULL, worker_main, &g_args[i]) != 0) {
            p->n = i; /* shut down the ones that started */
            kr_pool_shutdown();
            return kr_fail(KR_ERR_NOMEM, "cannot start worker thread %d of %d", i, n);
        }
    }
    return KR_OK;
}

void kr_pool_pin_caller(void) {
    if (g_pool && g_pool->n_cpus)
        pin(g_pool->cpus[0]);
}

int kr_pool_nodes(void) { return kr_pool_threads() > 0 && g_pool ? g_pool->n_nodes : 1; }
int kr_pool_worker_node(int w) { return g_pool && w >= 0 && w < g_pool->n ? g_pool->node[w] : 0; }
int kr_pool_node_os(int i) { return g_pool && i >= 0 && i < g_pool->n_nodes ? g_pool->os_node[i] : 0; }

int kr_pool_threads(void) {
    if (!g_pool && kr_pool_init(0) != KR_OK)
        return 1;
    return g_pool->n;
}

void kr_pool_run_work(kr_pool_fn fn, void *ctx, double work) {
    if (work < KR_POOL_MIN_WORK)
        fn(ctx, 0, 1);
    else
        kr_pool_run(fn, ctx);
}

void kr_pool_run(kr_pool_fn fn, void *ctx) {
    if (!g_pool && kr_pool_init(0) != KR_OK) {
        fn(ctx, 0, 1);
        return;
    }
    kr_pool *p = g_pool;
    if (p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->done, 0);
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->sleepers) > 0)
        futex_wake(&p->gen);
    fn(ctx, 0, p->n);
    int64_t t0 = 0;
    for (unsigned i = 0; atomic_load(&p->done) != p->n - 1; i++) {
        cpu_relax();
        if ((i & 1023) == 1023) {
            int64_t t = now_ns();
            if (!t0)
                t0 = t;
            else if (t - t0 > KR_SPIN_NS)
                sched_yield(); /* a worker was descheduled: give its core back */
        }
    }
}

void kr_pool_barrier(void) {
    kr_pool *p = g_pool;
    if (!p || p->n == 1)
        return;
    uint32_t g = atomic_load(&p->bar_gen);
    if (atomic_fetch_add(&p->bar_count, 1) + 1 == p->n) {
        atomic_store(&p->bar_count, 0);
        atomic_fetch_add(&p->bar_gen, 1);
        if (atomic_load(&p->sleepers) > 0)
            futex_wake(&p->bar_gen);
    } else {
        wait_change(p, &p->bar_gen, g);
    }
}
