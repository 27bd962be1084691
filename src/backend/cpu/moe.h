/* The quantized MoE FFN on the CPU: routed experts (and the shared experts) as INT4/INT8 matrices,
 * run over the thread pool. Per layer one parallel region with three phases split by barriers:
 *   0. the T input rows are quantized to INT8 (split by token);
 *   1. w13 (gate and up rows interleaved: row 2i = gate_i, 2i+1 = up_i) in units of (expert, group of
 *      gs intermediate rows), all tokens of that expert: the units of all active experts are dealt to
 *      the workers one at a time from a shared counter, so expert-level and intra-expert parallelism
 *      happen at once and the split stays even when one core is slowed down; each unit ends in
 *      silu(g) * u and the INT8 quantization of that group of the hidden activation;
 *   2. down: chunks of 256 hidden rows dealt the same way; the worker holding a chunk owns those output
 *      rows for all experts, so accumulating w * down(h) needs no atomics.
 * On several NUMA nodes (numa.h) each node has its own queue of phase-1 units and phase-2 chunks over
 * the experts on that node; a worker drains its node's queues first, then helps the others. Phase 2
 * then accumulates each node's experts into a buffer of its own, and a phase 3 adds the buffers.
 * The workspace is sized once for the largest T and never reallocated for smaller ones: a decode step
 * allocates nothing. */
#ifndef KR_BACKEND_CPU_MOE_H
#define KR_BACKEND_CPU_MOE_H

#include <stdint.h>

#include "backend/cpu/quant.h"
#include "base/status.h"

typedef struct {
    int64_t inter;   /* intermediate size */
    kr_qmatrix w13;  /* [2 * inter, hidden], gate/up rows interleaved */
    kr_qmatrix down; /* [hidden, inter] */
    int node;        /* NUMA node index (threadpool.h) holding its pages; 0 on one node */
} kr_qexpert;

typedef struct {
    int64_t hidden;
    int gs;                 /* one group size for the layer: activations are quantized once */
    int n_experts;
    const kr_qexpert *experts; /* [n_experts] */
    const kr_qexpert *shared;  /* NULL, or the shared experts fused into one (weight 1 for every token) */
} kr_qmoe;

typedef struct kr_qmoe_ws kr_qmoe_ws;

/* Makes *ws (NULL: a new one) able to run layers like q with T tokens of K experts each. */
kr_status kr_qmoe_ws_reserve(kr_qmoe_ws **ws, const kr_qmoe *q, int64_t T, int K);
void kr_qmoe_ws_free(kr_qmoe_ws *ws);

/* out [T, hidden] = sum_k w[t, k] * expert_{idx[t, k]}(x_t) (+ shared(x_t)); x [T, hidden].
 * The workspace must have been reserved for at least T and K and for q's shapes. */
kr_status kr_qmoe_forward(const kr_qmoe *q, kr_qmoe_ws *ws, const float *x, int64_t T, const int *idx, const float *w,
                          int K, float *out);

/* NUMA placement of one layer's experts: expert e goes to node index e % kr_pool_nodes() (its pages
 * moved there) and gets .node set; the shared expert stays on node 0. A no-op on one node. Call after
 * kr_pool_init. */
void kr_qmoe_place(kr_qexpert *experts, int n_experts);

/* Bytes of expert weights (quantized values + scales) one forward reads for the given routing. */
int64_t kr_qexpert_bytes(const kr_qexpert *e);

/* Builds w13 and down of one expert from float rows: gate/up [inter, hidden], down [hidden, inter].
 * The matrices' q/s must point to writable storage of kr_qmatrix_qbytes / kr_qmatrix_sbytes. */
void kr_qexpert_quantize_w13_row(kr_qexpert *e, int64_t i, const float *gate_row, const float *up_row);

#endif
