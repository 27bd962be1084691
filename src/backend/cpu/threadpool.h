/* The CPU thread pool: one pinned worker per physical core (never two SMT siblings: they share the
 * load ports the kernels saturate), woken per parallel region, with a barrier inside a region.
 * Waiting spins for about a millisecond (a decode step's regions are microseconds apart), then sleeps
 * on a futex, so an idle pool costs nothing. The caller is worker 0; regions never allocate.
 * This pool is one of the few pieces of global state: one process, one set of cores. */
#ifndef KR_BACKEND_CPU_THREADPOOL_H
#define KR_BACKEND_CPU_THREADPOOL_H

#include "base/status.h"

typedef void (*kr_pool_fn)(void *ctx, int worker, int n_workers);

/* Starts the pool with n workers (0: one per physical core this process may run on). If a pool of
 * another size runs it is stopped first. Not thread-safe against concurrent kr_pool_run. */
kr_status kr_pool_init(int n);
/* Workers of the pool (starting a default pool on first use). */
int kr_pool_threads(void);
/* NUMA (numa.h): the number of distinct nodes the workers run on (1 on a one-node machine), the
 * node index (< kr_pool_nodes()) of worker w, and the OS node id of node index i. */
int kr_pool_nodes(void);
int kr_pool_worker_node(int w);
int kr_pool_node_os(int i);
/* Runs fn(ctx, w, n) on every worker w < n (the caller as w = 0) and returns when all have returned. */
void kr_pool_run(kr_pool_fn fn, void *ctx);
/* Regions of less work than this (multiply-adds, roughly) run on the caller alone: waking the workers
 * costs microseconds, and on a busy machine one descheduled worker stalls a region for a timeslice,
 * which for a small model's many small matmuls costs far more than it saves. */
#define KR_POOL_MIN_WORK (1 << 18)
/* kr_pool_run, or fn(ctx, 0, 1) on the caller when work < KR_POOL_MIN_WORK. fn must not use
 * kr_pool_barrier. */
void kr_pool_run_work(kr_pool_fn fn, void *ctx, double work);
/* Inside fn: returns when every worker of the region has called it. */
void kr_pool_barrier(void);
void kr_pool_shutdown(void);
/* Pins the calling thread (worker 0) to the first physical core. Not done by kr_pool_init because
 * threads the caller creates later would inherit the one-core mask; benchmarks call it. */
void kr_pool_pin_caller(void);

/* Logical CPU ids, one per physical core in this process's affinity mask; returns the count (<= max).
 * *logical gets the number of logical CPUs in the mask. */
int kr_physical_cores(int *cpus, int max, int *logical);

#endif
