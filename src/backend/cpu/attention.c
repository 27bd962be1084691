/* Attention over the cached window on the CPU: kr_attend, the one-query reference, and kr_attend_batch,
 * every query of a layer's call through the SIMD kernels and the thread pool. */
#include "backend/cpu/attention.h"

#include <math.h>
#include <string.h>

#include "backend/cpu/isa.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/threadpool.h"

void kr_attend(const float *q, int64_t qk_dim, const float *k, int64_t k_stride, const float *v, int64_t v_stride,
               int64_t v_dim, int64_t n, float scale, float *scores, float *out) {
    for (int64_t s = 0; s < n; s++)
        scores[s] = scale * kr_dot(q, k + s * k_stride, qk_dim);
    kr_softmax(scores, n);
    memset(out, 0, (size_t)v_dim * sizeof *out);
    for (int64_t s = 0; s < n; s++) {
        const float *vs = v + s * v_stride;
        float p = scores[s];
        for (int64_t d = 0; d < v_dim; d++)
            out[d] += p * vs[d];
    }
}

/* The batch runs as work items of (position t, set of heads sharing one key/value set, block of up to
 * KR_ATTN_HEADS of those heads, a range of the window's keys). A block's heads go over the keys together,
 * KR_ATTN_KEYS rows at a time with a running max and sum (online softmax): each cached row is read from
 * memory once per block and used for scores and values while it is in L2, not once per head and pass
 * (MLA's 16 heads share one latent row, GQA's groups one key head). When there are fewer items than
 * workers (decode), the window is split too and the pieces are merged after (flash-decoding). */
#define KR_ATTN_HEADS 16
#define KR_ATTN_KEYS 64
#define KR_ATTN_MIN_SPLIT 256 /* keys per piece at least: below that the merge costs more than it saves */

typedef struct {
    int64_t share;  /* heads that read the same keys and values */
    int64_t hb;     /* heads per block */
    int64_t blocks; /* blocks per set of sharing heads */
    int64_t base;   /* items before splitting the window */
    int64_t splits; /* pieces per window: base * splits < 2 * workers when > 1 */
    int workers;
} attn_plan;

static attn_plan plan_of(const kr_attention_batch *b) {
    attn_plan p = {.workers = kr_pool_threads()};
    p.share = b->k_head == 0 && b->v_head == 0 ? b->H : b->group;
    p.hb = p.share < KR_ATTN_HEADS ? p.share : KR_ATTN_HEADS;
    p.blocks = (p.share + p.hb - 1) / p.hb;
    p.base = b->T * (b->H / p.share) * p.blocks;
    p.splits = 1;
    int64_t most = (b->pos0 + 1) / KR_ATTN_MIN_SPLIT; /* the shortest window's */
    if (p.base > 0 && p.base < p.workers && most > 1) {
        int64_t want = (p.workers + p.base - 1) / p.base;
        p.splits = want < most ? want : most;
    }
    return p;
}

/* per worker: one block's scores; then the merge buffer, per (item, piece): the block's heads' maxima,
 * sums and unnormalized outputs. Sized by shapes alone (the bound on base * splits), so the scratch of a
 * decode step never grows with the window. */
static int64_t part_stride(const attn_plan *p, int64_t v_dim) { return p->hb * (v_dim + 2); }

int64_t kr_attention_scratch(const kr_attention_batch *b) {
    attn_plan p = plan_of(b);
    return (int64_t)p.workers * p.hb * KR_ATTN_KEYS + 2 * (int64_t)p.workers * part_stride(&p, b->v_dim);
}

typedef struct {
    const kr_attention_batch *b;
    attn_plan p;
    float *scores, *partial;
    const kr_kernels *k;
} batch_job;

/* rows [r0, r1) of n floats, stride apart, towards L2: the next block's rows are asked for while this one
 * computes (measured: ~10 % on GQA at 16K before the cache became head-major, neutral to MLA) */
static void prefetch_rows(const float *base, int64_t stride, int64_t r0, int64_t r1, int64_t n) {
    for (int64_t r = r0; r < r1; r++)
        for (int64_t i = 0; i < n; i += 16) /* one 64-byte line */
            __builtin_prefetch(base + r * stride + i, 0, 2);
}

/* Heads h0 .. h0 + nh of position t over keys [s0, s1): the running max m, sum l and unnormalized
 * output o (os floats apart) of the softmax-weighted values. */
static void attend_block(const batch_job *j, float *sc, int64_t t, int64_t h0, int64_t nh, int64_t s0, int64_t s1,
                         float *m, float *l, float *o, int64_t os) {
    const kr_attention_batch *b = j->b;
    const kr_kernels *k = j->k;
    int64_t g = h0 / b->group;
    const float *kb = b->k + g * b->k_head, *vb = b->v + g * b->v_head, *q = b->q + t * b->q_t + h0 * b->q_h;
    for (int64_t h = 0; h < nh; h++) {
        m[h] = -INFINITY;
        l[h] = 0;
        memset(o + h * os, 0, (size_t)b->v_dim * sizeof *o);
    }
    for (int64_t c = s0; c < s1; c += KR_ATTN_KEYS) {
        int nk = (int)(c + KR_ATTN_KEYS < s1 ? KR_ATTN_KEYS : s1 - c);
        /* the scores in pieces of 16 keys, each asking for 16 rows of the next block: a whole block's
         * prefetches at once overflow the miss queues and are dropped */
        for (int j = 0; j < nk; j += 16) {
            int64_t p0 = c + KR_ATTN_KEYS + j, p1 = p0 + 16 < s1 ? p0 + 16 : s1;
            prefetch_rows(kb, b->k_stride, p0, p1, b->qk_dim);
            if (vb != kb) /* MLA's values are the same rows */
                prefetch_rows(vb, b->v_stride, p0, p1, b->v_dim);
            k->attn_scores(q, b->q_h, (int)nh, kb + (c + j) * b->k_stride, b->k_stride, nk - j < 16 ? nk - j : 16,
                           b->qk_dim, b->scale, sc + j, KR_ATTN_KEYS);
        }
        for (int64_t h = 0; h < nh; h++) {
            float *row = sc + h * KR_ATTN_KEYS, mx = m[h];
            for (int i = 0; i < nk; i++)
                mx = row[i] > mx ? row[i] : mx;
            if (mx > m[h] && m[h] > -INFINITY) { /* a new maximum: rescale what is summed so far */
                float f = expf(m[h] - mx);
                l[h] *= f;
                for (int64_t d = 0; d < b->v_dim; d++)
                    o[h * os + d] *= f;
            }
            m[h] = mx;
            l[h] += k->exp_sum(row, nk, mx);
        }
        k->attn_values(sc, KR_ATTN_KEYS, (int)nh, vb + c * b->v_stride, b->v_stride, nk, b->v_dim, o, os);
    }
}

/* the item's heads, the first and how many */
static void item_heads(const kr_attention_batch *b, const attn_plan *p, int64_t item, int64_t *t, int64_t *h0,
                       int64_t *nh) {
    int64_t sets_blocks = (b->H / p->share) * p->blocks, r = item % sets_blocks, blk = r % p->blocks;
    *t = item / sets_blocks;
    *h0 = r / p->blocks * p->share + blk * p->hb;
    *nh = p->share - blk * p->hb < p->hb ? p->share - blk * p->hb : p->hb;
}

static void batch_region(void *ctx, int w, int n) {
    const batch_job *j = ctx;
    const kr_attention_batch *b = j->b;
    const attn_plan *p = &j->p;
    int64_t total = p->base * p->splits;
    float *sc = j->scores + (size_t)w * (size_t)(p->hb * KR_ATTN_KEYS);
    /* items dealt round-robin: in a prompt the windows grow with the position, and contiguous ranges
     * would give the last worker the longest ones */
    for (int64_t i = w; i < total; i += n) {
        int64_t t, h0, nh, piece = i % p->splits;
        item_heads(b, p, i / p->splits, &t, &h0, &nh);
        int64_t win = b->pos0 + t + 1, s0 = win * piece / p->splits, s1 = win * (piece + 1) / p->splits;
        if (p->splits == 1) { /* the whole window: normalize into the output */
            float m[KR_ATTN_HEADS], l[KR_ATTN_HEADS], *o = b->out + t * b->o_t + h0 * b->o_h;
            attend_block(j, sc, t, h0, nh, s0, s1, m, l, o, b->o_h);
            for (int64_t h = 0; h < nh; h++)
                for (int64_t d = 0; d < b->v_dim; d++)
                    o[h * b->o_h + d] /= l[h];
        } else {
            float *part = j->partial + i * part_stride(p, b->v_dim);
            attend_block(j, sc, t, h0, nh, s0, s1, part, part + p->hb, part + 2 * p->hb, b->v_dim);
        }
    }
}

/* out = sum over pieces of exp(m_i - M) o_i / sum of exp(m_i - M) l_i, per (item, head) */
static void merge_region(void *ctx, int w, int n) {
    const batch_job *j = ctx;
    const kr_attention_batch *b = j->b;
    const attn_plan *p = &j->p;
    int64_t stride = part_stride(p, b->v_dim);
    for (int64_t item = p->base * w / n; item < p->base * (w + 1) / n; item++) {
        int64_t t, h0, nh;
        item_heads(b, p, item, &t, &h0, &nh);
        const float *parts = j->partial + item * p->splits * stride;
        for (int64_t h = 0; h < nh; h++) {
            float M = -INFINITY, L = 0, *o = b->out + t * b->o_t + (h0 + h) * b->o_h;
            for (int64_t i = 0; i < p->splits; i++)
                M = parts[i * stride + h] > M ? parts[i * stride + h] : M;
            memset(o, 0, (size_t)b->v_dim * sizeof *o);
            for (int64_t i = 0; i < p->splits; i++) {
                const float *part = parts + i * stride;
                float f = expf(part[h] - M);
                L += f * part[p->hb + h];
                j->k->attn_values(&f, 0, 1, part + 2 * p->hb + h * b->v_dim, 0, 1, b->v_dim, o, 0);
            }
            for (int64_t d = 0; d < b->v_dim; d++)
                o[d] /= L;
        }
    }
}

void kr_attend_batch(const kr_attention_batch *b, float *scratch) {
    if (b->T < 1)
        return;
    batch_job j = {b, plan_of(b), scratch, NULL, kr_kernels_get()};
    j.partial = j.p.splits > 1 ? scratch + (int64_t)j.p.workers * j.p.hb * KR_ATTN_KEYS : NULL;
    /* per query: the window's dot products and the weighted value sum */
    double span = (double)b->pos0 + (double)(b->T + 1) / 2;
    kr_pool_run_work(batch_region, &j, (double)(b->T * b->H) * span * (double)(b->qk_dim + b->v_dim));
    if (j.partial)
        kr_pool_run_work(merge_region, &j, (double)(b->T * b->H) * (double)(j.p.splits * b->v_dim));
}
