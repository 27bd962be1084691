/* NUMA: which node each pool worker runs on, and where expert weights live. On a machine with several
 * nodes the routed experts of every layer are dealt round-robin over the nodes the workers run on
 * (expert e -> worker node e % nodes), each expert's pages are moved to its node (no duplication), and
 * the MoE kernel gives each worker its own node's experts first (moe.c). With one node, or without
 * libnuma, everything here is a no-op and the MoE kernel runs exactly as without NUMA.
 *
 * KRASIS_FAKE_NUMA=N (tests) pretends worker w runs on node w % N without touching memory policy, so
 * the multi-node scheduling is exercised on a one-node machine. */
#ifndef KR_BACKEND_CPU_NUMA_H
#define KR_BACKEND_CPU_NUMA_H

#include <stddef.h>

/* Nodes of this machine (1 without libnuma or when the kernel has no NUMA support). */
int kr_numa_system_nodes(void);
/* The node of a logical CPU (0 when unknown). */
int kr_numa_node_of_cpu(int cpu);
/* Total and free bytes of node n; 0 when unknown. */
long long kr_numa_node_bytes(int node, long long *free_bytes);
/* Moves the pages of [p, p + len) to OS node `node` and binds future faults there; a no-op when the
 * system has one node. Failures are ignored: placement is an optimisation, never a correctness issue. */
void kr_numa_place(const void *p, size_t len, int node);
/* Whether KRASIS_FAKE_NUMA is in effect (then kr_numa_place must not be called with fake node ids). */
int kr_numa_fake_nodes(void);

#endif
