/* Quantized MoE forward over the thread pool (see moe.h for the phases and the work split). */
#include "backend/cpu/moe.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/isa.h"
#include "backend/cpu/numa.h"
#include "backend/cpu/threadpool.h"

typedef struct {
    const kr_qexpert *ex;
    int64_t start, n; /* its slots */
    int node;         /* node index of its weights (< the call's nodes) */
} entry;

/* NUMA nodes the scheduler tells apart; more are folded onto these */
#define KR_QMOE_MAX_NODES 8

struct kr_qmoe_ws {
    int64_t cap_T, cap_S, hidden, max_inter;
    int K, gs, cap_E;
    int64_t dp, dg, ip, ig; /* padded hidden / groups, padded inter / groups */
    int8_t *xq, *hq;
    float *xs, *xc, *hs, *hc;
    int64_t *slot_tok;
    float *slot_w;
    int64_t *fill;
    entry *entries;
    /* the current call, read by the workers */
    const kr_qmoe *q;
    const kr_kernels *k;
    const float *x;
    float *out;
    int64_t T;
    int n_entries;
    /* work counters of the current region, one pair per node: units are taken one by one, so a worker
     * slowed down by something else on its core (another process, an interrupt) simply takes fewer */
    /* NUMA (nodes > 1): entries are ordered by node; node q owns units [unit0[q], unit0[q+1]) and
     * entries [ent0[q], ent0[q+1]), and accumulates its down projections into part[q - 1] (q >= 1) */
    int nodes, part_nodes;
    int64_t unit0[KR_QMOE_MAX_NODES + 1];
    int ent0[KR_QMOE_MAX_NODES + 1];
    _Atomic int64_t node_unit[KR_QMOE_MAX_NODES], node_chunk[KR_QMOE_MAX_NODES];
    float *part;
    entry *sorted;
};

static int64_t max_inter(const kr_qmoe *q) {
    int64_t m = q->shared ? q->shared->inter : 0;
    for (int e = 0; e < q->n_experts; e++)
        m = q->experts[e].inter > m ? q->experts[e].inter : m;
    return m;
}

static void ws_release(kr_qmoe_ws *ws) {
    free(ws->xq);
    free(ws->hq);
    free(ws->xs);
    free(ws->xc);
    free(ws->hs);
    free(ws->hc);
    free(ws->slot_tok);
    free(ws->slot_w);
    free(ws->fill);
    free(ws->entries);
    free(ws->sorted);
    free(ws->part);
}

void kr_qmoe_ws_free(kr_qmoe_ws *ws) {
    if (!ws)
        return;
    ws_release(ws);
    free(ws);
}

kr_status kr_qmoe_ws_reserve(kr_qmoe_ws **wsp, const kr_qmoe *q, int64_t T, int K) {
    kr_qmoe_ws *ws = *wsp;
    int64_t mi = max_inter(q);
    int want_nodes = kr_pool_nodes() < KR_QMOE_MAX_NODES ? kr_pool_nodes() : KR_QMOE_MAX_NODES;
    if (ws && T <= ws->cap_T && K <= ws->K && q->hidden <= ws->hidden && mi <= ws->max_inter && q->gs == ws->gs &&
        q->n_experts <= ws->cap_E && want_nodes <= ws->part_nodes)
        return KR_OK;
    if (!ws) {
        ws = calloc(1, sizeof *ws);
        if (!ws)
            return kr_fail(KR_ERR_NOMEM, "out of memory for the MoE workspace");
        *wsp = ws;
    } else {
        /* grow to cover both the old and the new request */
        T = T > ws->cap_T ? T : ws->cap_T;
        K = K > ws->K ? K : ws->K;
        mi = mi > ws->max_inter ? mi : ws->max_inter;
        ws_release(ws);
    }
    int64_t hidden = q->hidden > ws->hidden ? q->hidden : ws->hidden;
    int cap_E = q->n_experts > ws->cap_E ? q->n_experts : ws->cap_E;
    memset(ws, 0, sizeof *ws);
    ws->cap_T = T;
    ws->K = K;
    ws->gs = q->gs;
    ws->hidden = hidden;
    ws->max_inter = mi;
    ws->cap_E = cap_E;
    ws->dg = (hidden + q->gs - 1) / q->gs;
    ws->dp = ws->dg * q->gs;
    ws->ig = (mi + q->gs - 1) / q->gs;
    ws->ip = ws->ig * q->gs;
    ws->cap_S = T * (K + 1);
    size_t S = (size_t)ws->cap_S;
    ws->xq = malloc((size_t)(T * ws->dp));
    ws->xs = malloc((size_t)(T * ws->dg) * sizeof(float));
    ws->xc = malloc((size_t)(T * ws->dg) * sizeof(float));
    ws->hq = malloc(S * (size_t)ws->ip);
    ws->hs = malloc(S * (size_t)ws->ig * sizeof(float));
    ws->hc = malloc(S * (size_t)ws->ig * sizeof(float));
    ws->slot_tok = malloc(S * sizeof *ws->slot_tok);
    ws->slot_w = malloc(S * sizeof *ws->slot_w);
    ws->fill = malloc(((size_t)cap_E + 1) * sizeof *ws->fill);
    ws->entries = malloc(((size_t)cap_E + 1) * sizeof *ws->entries);
    ws->sorted = malloc(((size_t)cap_E + 1) * sizeof *ws->sorted);
    int nodes = kr_pool_nodes();
    ws->part_nodes = nodes < KR_QMOE_MAX_NODES ? nodes : KR_QMOE_MAX_NODES;
    if (ws->part_nodes > 1)
        ws->part = malloc((size_t)(ws->part_nodes - 1) * (size_t)(T * hidden) * sizeof(float));
    if (!ws->xq || !ws->xs || !ws->xc || !ws->hq || !ws->hs || !ws->hc || !ws->slot_tok || !ws->slot_w || !ws->fill ||
        !ws->entries || !ws->sorted || (ws->part_nodes > 1 && !ws->part)) {
        kr_qmoe_ws_free(ws);
        *wsp = NULL;
        return kr_fail(KR_ERR_NOMEM, "out of memory for the MoE workspace (%lld tokens)", (long long)T);
    }
    return KR_OK;
}

int64_t kr_qexpert_bytes(const kr_qexpert *e) {
    return kr_qmatrix_qbytes(&e->w13) + kr_qmatrix_sbytes(&e->w13) + kr_qmatrix_qbytes(&e->down) +
           kr_qmatrix_sbytes(&e->down);
}

void kr_qexpert_quantize_w13_row(kr_qexpert *e, int64_t i, const float *gate_row, const float *up_row) {
    kr_quantize_row(&e->w13, 2 * i, gate_row);
    kr_quantize_row(&e->w13, 2 * i + 1, up_row);
}

static inline kr_qvec xvec(const kr_qmoe_ws *ws, int64_t t) {
    return (kr_qvec){ws->xq + t * ws->dp, ws->xs + t * ws->dg, ws->xc + t * ws->dg};
}
static inline kr_qvec hvec(const kr_qmoe_ws *ws, int64_t slot) {
    return (kr_qvec){ws->hq + slot * ws->ip, ws->hs + slot * ws->ig, ws->hc + slot * ws->ig};
}

/* Rows of one down-projection chunk: long enough for the kernel's prefetch stream to run ahead (each
 * chunk starts cold), short enough to deal 2048 hidden rows over 8+ workers. */
#ifndef KR_QMOE_DOWN_ROWS
#define KR_QMOE_DOWN_ROWS 256
#endif

/* up to this many tokens the caller quantizes the inputs before waking the workers */
#define KR_QMOE_SERIAL_QUANT 4

static inline int64_t share(int64_t total, int w, int n) { return total * w / n; }

/* phase 1 unit: intermediate rows [g*gs, g*gs + gs) of entry en, for all its tokens */
static void w13_unit(kr_qmoe_ws *ws, const entry *en, int64_t g) {
    const int gs = ws->gs;
    int64_t i0 = g * gs, ni = en->ex->inter - i0 < gs ? en->ex->inter - i0 : gs;
    float y[KR_TILE_TOKENS][256], h[128];
    for (int64_t s0 = 0; s0 < en->n; s0 += KR_TILE_TOKENS) {
        int nt = en->n - s0 < KR_TILE_TOKENS ? (int)(en->n - s0) : KR_TILE_TOKENS;
        kr_qvec a[KR_TILE_TOKENS];
        for (int t = 0; t < nt; t++)
            a[t] = xvec(ws, ws->slot_tok[en->start + s0 + t]);
        ws->k->tile_dot(&en->ex->w13, 2 * i0, 2 * ni, a, nt, y[0], 256);
        for (int t = 0; t < nt; t++) {
            int64_t slot = en->start + s0 + t;
            for (int64_t i = 0; i < ni; i++) {
                float gv = y[t][2 * i], uv = y[t][2 * i + 1];
                h[i] = gv / (1.0f + expf(-gv)) * uv;
            }
            ws->k->quantize_act(h, ni, gs, ws->hq + slot * ws->ip + i0, ws->hs + slot * ws->ig + g,
                                ws->hc + slot * ws->ig + g);
        }
    }
}

/* The entry that unit u (an index in entry order) belongs to, and the unit's group within it. */
static const entry *unit_entry(const kr_qmoe_ws *ws, int64_t u, int64_t *group) {
    int j = 0;
    int64_t groups;
    while (u >= (groups = (ws->entries[j].ex->inter + ws->gs - 1) / ws->gs)) {
        u -= groups;
        j++;
    }
    *group = u;
    return &ws->entries[j];
}

/* Takes the next item of node q's queue [0, total); -1 when it is empty. */
static int64_t take(_Atomic int64_t *next, int64_t total) {
    int64_t i = atomic_fetch_add_explicit(next, 1, memory_order_relaxed);
    return i < total ? i : -1;
}

/* Down rows [r, r + nr) of the entries [e0, e1) into dst ([T, D]), which the caller owns for those rows. */
static void down_chunk(kr_qmoe_ws *ws, int e0, int e1, int64_t r, int64_t nr, float *dst) {
    const int64_t D = ws->q->hidden;
    float y[KR_TILE_TOKENS][KR_QMOE_DOWN_ROWS];
    for (int64_t t = 0; t < ws->T; t++)
        memset(dst + t * D + r, 0, (size_t)nr * sizeof(float));
    for (int j = e0; j < e1; j++) {
        const entry *en = &ws->entries[j];
        for (int64_t s0 = 0; s0 < en->n; s0 += KR_TILE_TOKENS) {
            int nt = en->n - s0 < KR_TILE_TOKENS ? (int)(en->n - s0) : KR_TILE_TOKENS;
            kr_qvec a[KR_TILE_TOKENS];
            for (int t = 0; t < nt; t++)
                a[t] = hvec(ws, en->start + s0 + t);
            ws->k->tile_dot(&en->ex->down, r, nr, a, nt, y[0], KR_QMOE_DOWN_ROWS);
            for (int t = 0; t < nt; t++) {
                int64_t slot = en->start + s0 + t;
                float wt = ws->slot_w[slot], *o = dst + ws->slot_tok[slot] * D + r;
                for (int64_t i = 0; i < nr; i++)
                    o[i] += wt * y[t][i];
            }
        }
    }
}

static void region(void *ctx, int w, int n) {
    kr_qmoe_ws *ws = ctx;
    const int64_t D = ws->q->hidden, T = ws->T;
    const int gs = ws->gs, nodes = ws->nodes, home = kr_pool_worker_node(w) % nodes;

    /* phase 0: quantize the inputs (a few decode tokens were done by the caller: one barrier less) */
    if (T > KR_QMOE_SERIAL_QUANT) {
        for (int64_t t = share(T, w, n); t < share(T, w + 1, n); t++) {
            kr_qvec a = xvec(ws, t);
            ws->k->quantize_act(ws->x + t * D, D, gs, (int8_t *)a.q, (float *)a.s, (float *)a.c);
        }
        kr_pool_barrier();
    }

    /* phase 1: w13 units (entry, group of gs intermediate rows); the home node's queue first */
    for (int i = 0; i < nodes; i++) {
        int q = (home + i) % nodes;
        int64_t u;
        while ((u = take(&ws->node_unit[q], ws->unit0[q + 1] - ws->unit0[q])) >= 0) {
            int64_t g;
            const entry *en = unit_entry(ws, ws->unit0[q] + u, &g);
            w13_unit(ws, en, g);
        }
    }
    kr_pool_barrier();

    /* phase 2: chunks of KR_QMOE_DOWN_ROWS hidden rows of one node's experts; the worker that takes a
     * chunk owns those rows of that node's output, so accumulating needs no atomics */
    int64_t n_chunks = (D + KR_QMOE_DOWN_ROWS - 1) / KR_QMOE_DOWN_ROWS;
    for (int i = 0; i < nodes; i++) {
        int q = (home + i) % nodes;
        float *dst = q == 0 ? ws->out : ws->part + (size_t)(q - 1) * (size_t)(T * D);
        int64_t c;
        while ((c = take(&ws->node_chunk[q], n_chunks)) >= 0) {
            int64_t r = c * KR_QMOE_DOWN_ROWS, nr = D - r < KR_QMOE_DOWN_ROWS ? D - r : KR_QMOE_DOWN_ROWS;
            down_chunk(ws, ws->ent0[q], ws->ent0[q + 1], r, nr, dst);
        }
    }
    if (nodes == 1)
        return;

    /* phase 3: add the other nodes' outputs, split by rows */
    kr_pool_barrier();
    for (int64_t t = 0; t < T; t++)
        for (int64_t r = share(D, w, n); r < share(D, w + 1, n); r++)
            for (int q = 1; q < nodes; q++)
                ws->out[t * D + r] += ws->part[(size_t)(q - 1) * (size_t)(T * D) + (size_t)(t * D + r)];
}

/* Orders the entries by node (stable) and fills the per-node unit and entry ranges. */
static void by_node(kr_qmoe_ws *ws, int ne) {
    int nodes = ws->nodes;
    int count[KR_QMOE_MAX_NODES + 1] = {0};
    for (int j = 0; j < ne; j++) {
        int q = ws->entries[j].node;
        ws->entries[j].node = q >= 0 ? q % nodes : 0;
        count[ws->entries[j].node + 1]++;
    }
    ws->ent0[0] = 0;
    for (int q = 0; q < nodes; q++)
        ws->ent0[q + 1] = ws->ent0[q] + count[q + 1];
    int at[KR_QMOE_MAX_NODES];
    memcpy(at, ws->ent0, sizeof at);
    for (int j = 0; j < ne; j++)
        ws->sorted[at[ws->entries[j].node]++] = ws->entries[j];
    memcpy(ws->entries, ws->sorted, (size_t)ne * sizeof *ws->entries);
    ws->unit0[0] = 0;
    for (int q = 0, j = 0; q < nodes; q++) {
        ws->unit0[q + 1] = ws->unit0[q];
        for (; j < ws->ent0[q + 1]; j++)
            ws->unit0[q + 1] += (ws->entries[j].ex->inter + ws->gs - 1) / ws->gs;
    }
}

void kr_qmoe_place(kr_qexpert *experts, int n_experts) {
    int nodes = kr_pool_nodes();
    for (int e = 0; e < n_experts; e++) {
        kr_qexpert *x = &experts[e];
        x->node = nodes > 1 ? e % nodes : 0;
        if (nodes > 1 && !kr_numa_fake_nodes()) {
            int os = kr_pool_node_os(x->node);
            kr_numa_place(x->w13.q, (size_t)kr_qmatrix_qbytes(&x->w13), os);
            kr_numa_place(x->w13.s, (size_t)kr_qmatrix_sbytes(&x->w13), os);
            kr_numa_place(x->down.q, (size_t)kr_qmatrix_qbytes(&x->down), os);
            kr_numa_place(x->down.s, (size_t)kr_qmatrix_sbytes(&x->down), os);
        }
    }
}

kr_status kr_qmoe_forward(const kr_qmoe *q, kr_qmoe_ws *ws, const float *x, int64_t T, const int *idx, const float *w,
                          int K, float *out) {
    if (!ws || T > ws->cap_T || K > ws->K || q->hidden > ws->hidden || max_inter(q) > ws->max_inter ||
        q->gs != ws->gs || q->n_experts > ws->cap_E)
        return kr_fail(KR_ERR_ARG, "MoE workspace not reserved for %lld tokens of %d experts", (long long)T, K);
    if (q->gs > 128)
        return kr_fail(KR_ERR_ARG, "MoE group size %d > 128", q->gs);
    int E = q->n_experts;
    /* counting sort of the (token, k) slots by expert; the shared experts take the last T slots */
    memset(ws->fill, 0, ((size_t)E + 1) * sizeof *ws->fill);
    for (int64_t i = 0; i < T * K; i++) {
        if (idx[i] < 0 || idx[i] >= E)
            return kr_fail(KR_ERR_ARG, "routed expert %d is outside [0, %d)", idx[i], E);
        ws->fill[idx[i] + 1]++;
    }
    int ne = 0;
    int64_t pos = 0;
    for (int e = 0; e < E; e++) {
        int64_t c = ws->fill[e + 1];
        ws->fill[e] = pos; /* fill[e] becomes the next free slot of e */
        if (c)
            ws->entries[ne++] = (entry){&q->experts[e], pos, c, q->experts[e].node};
        pos += c;
    }
    for (int64_t t = 0; t < T; t++)
        for (int k = 0; k < K; k++) {
            int64_t at = ws->fill[idx[t * K + k]]++;
            ws->slot_tok[at] = t;
            ws->slot_w[at] = w[t * K + k];
        }
    if (q->shared) {
        ws->entries[ne++] = (entry){q->shared, pos, T, 0}; /* spread over nodes' pages: any node */
        for (int64_t t = 0; t < T; t++) {
            ws->slot_tok[pos + t] = t;
            ws->slot_w[pos + t] = 1.0f;
        }
    }
    ws->q = q;
    ws->k = kr_kernels_get();
    ws->x = x;
    ws->out = out;
    ws->T = T;
    ws->n_entries = ne;
    ws->nodes = kr_pool_nodes() < ws->part_nodes ? kr_pool_nodes() : ws->part_nodes;
    by_node(ws, ne);
    for (int qn = 0; qn < ws->nodes; qn++) {
        atomic_store(&ws->node_unit[qn], 0);
        atomic_store(&ws->node_chunk[qn], 0);
    }
    if (T <= KR_QMOE_SERIAL_QUANT)
        for (int64_t t = 0; t < T; t++) {
            kr_qvec a = xvec(ws, t);
            ws->k->quantize_act(x + t * q->hidden, q->hidden, q->gs, (int8_t *)a.q, (float *)a.s, (float *)a.c);
        }
    kr_pool_run(region, ws);
    return KR_OK;
}
