/* Every ISA level this machine supports against the scalar reference on random, ragged shapes
 * (levels it lacks are skipped, saying so): rows_dot for INT4/INT8 weights at every group size,
 * the activation quantizer bit for bit, read_sum; then the thread pool (barrier and region order) and
 * the quantized MoE at 1 and 2 threads against a float reference built from the dequantized weights. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/isa.h"
#include "backend/cpu/moe.h"
#include "backend/cpu/threadpool.h"
#include "test.h"


static unsigned long long rng = 0x2545F4914F6CDD1Dull;
static float frand(void) { return test_frand(&rng); }

typedef struct {
    kr_qmatrix m;
    uint8_t *qb;
    float *sb;
} owned_q;

static void make_q(owned_q *o, int64_t rows, int64_t cols, int bits, int gs, float amp) {
    kr_qmatrix_shape(&o->m, rows, cols, bits, gs);
    o->qb = malloc((size_t)kr_qmatrix_qbytes(&o->m));
    o->sb = malloc((size_t)kr_qmatrix_sbytes(&o->m));
    o->m.q = o->qb;
    o->m.s = o->sb;
    float *x = malloc((size_t)cols * sizeof *x);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < cols; j++)
            x[j] = amp * frand();
        kr_quantize_row(&o->m, r, x);
    }
    free(x);
}
static void free_q(owned_q *o) {
    free(o->qb);
    free(o->sb);
}

typedef struct {
    int8_t *q;
    float *s, *c;
    kr_qvec v;
} owned_act;

static void make_act(owned_act *a, const kr_kernels *k, const float *x, int64_t n, int gs) {
    int64_t g = (n + gs - 1) / gs;
    a->q = malloc((size_t)(g * gs));
    a->s = malloc((size_t)g * sizeof(float));
    a->c = malloc((size_t)g * sizeof(float));
    k->quantize_act(x, n, gs, a->q, a->s, a->c);
    a->v = (kr_qvec){a->q, a->s, a->c};
}
static void free_act(owned_act *a) {
    free(a->q);
    free(a->s);
    free(a->c);
}

static void test_level(const kr_kernels *k) {
    const kr_kernels *ref = &kr_kernels_scalar;
    static const int64_t shapes[][2] = {{1, 32}, {2, 64}, {3, 96}, {5, 100}, {17, 257}, {64, 2048}, {9, 1408}, {4, 7}};
    int checked = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
        for (int bits = 4; bits <= 8; bits += 4)
            for (int gs = 32; gs <= 128; gs *= 2) {
                int64_t rows = shapes[si][0], cols = shapes[si][1];
                owned_q w;
                make_q(&w, rows, cols, bits, gs, 0.05f);
                float *x = malloc((size_t)cols * sizeof *x);
                for (int64_t j = 0; j < cols; j++)
                    x[j] = frand() * (j % 7 ? 1.0f : 8.0f);
                owned_act a, ar;
                make_act(&a, k, x, cols, gs);
                make_act(&ar, ref, x, cols, gs);
                int64_t groups = (cols + gs - 1) / gs;
                CHECK(!memcmp(a.q, ar.q, (size_t)(groups * gs)) && !memcmp(a.s, ar.s, (size_t)groups * 4) &&
                          !memcmp(a.c, ar.c, (size_t)groups * 4),
                      "%s quantize_act differs from scalar (n %lld, gs %d)", k->name, (long long)cols, gs);
                float *y = malloc((size_t)rows * sizeof *y), *yr = malloc((size_t)rows * sizeof *yr);
                /* an odd start row and count exercise the kernels' row tails */
                int64_t r0 = rows > 2 ? 1 : 0, nr = rows - r0;
                k->rows_dot(&w.m, r0, nr, &ar.v, y);
                ref->rows_dot(&w.m, r0, nr, &ar.v, yr);
                double ymax = 0, yerr = 0;
                for (int64_t i = 0; i < nr; i++) {
                    ymax = fabs(yr[i]) > ymax ? fabs(yr[i]) : ymax;
                    yerr = fabs(y[i] - yr[i]) > yerr ? fabs(y[i] - yr[i]) : yerr;
                }
                if (getenv("KR_TEST_VERBOSE") && k != ref)
                    printf("rows_dot %s int%d gs %d [%lld x %lld]: worst error %.2e of the largest value\n", k->name, bits, gs,
                           (long long)rows, (long long)cols, ymax > 0 ? yerr / ymax : yerr);
                for (int64_t i = 0; i < nr; i++) {
                    /* the bound: float rounding over |terms|, never a wrong integer */
                    double mag = 0;
                    for (int64_t g = 0; g < groups; g++)
                        mag += fabs(w.m.s[(r0 + i) * groups + g] * ar.s[g]) * 127.0 * 8 * gs;
                    CHECK(fabs(y[i] - yr[i]) <= 1e-6 * mag + 1e-30, "%s int%d gs %d [%lld x %lld] row %lld: %g vs %g",
                          k->name, bits, gs, (long long)rows, (long long)cols, (long long)(r0 + i), y[i], yr[i]);
                }
                /* tile_dot: nt tokens at once, each value bit-identical to rows_dot of that token alone */
                owned_act at[KR_TILE_TOKENS];
                kr_qvec av[KR_TILE_TOKENS];
                for (int t = 0; t < KR_TILE_TOKENS; t++) {
                    for (int64_t j = 0; j < cols; j++)
                        x[j] = frand() * (j % (5 + t) ? 1.0f : 6.0f);
                    make_act(&at[t], k, x, cols, gs);
                    av[t] = at[t].v;
                }
                int64_t ys = nr + 3;
                float *yt = malloc((size_t)(KR_TILE_TOKENS * ys) * sizeof *yt);
                for (int nt = 1; nt <= KR_TILE_TOKENS; nt++) {
                    for (int64_t i = 0; i < KR_TILE_TOKENS * ys; i++)
                        yt[i] = NAN;
                    k->tile_dot(&w.m, r0, nr, av, nt, yt, ys);
                    for (int t = 0; t < nt; t++) {
                        k->rows_dot(&w.m, r0, nr, &av[t], y);
                        CHECK(!memcmp(yt + t * ys, y, (size_t)nr * sizeof *y),
                              "%s tile_dot int%d gs %d [%lld x %lld] nt %d token %d differs from rows_dot", k->name, bits,
                              gs, (long long)rows, (long long)cols, nt, t);
                    }
                }
                free(yt);
                for (int t = 0; t < KR_TILE_TOKENS; t++)
                    free_act(&at[t]);
                checked++;
                free(y);
                free(yr);
                free(x);
                free_act(&a);
                free_act(&ar);
                free_q(&w);
            }
    uint8_t *buf = aligned_alloc(64, 1 << 16);
    for (int i = 0; i < 1 << 16; i++)
        buf[i] = (uint8_t)(i * 131 + 7);
    uint64_t s1 = k->read_sum(buf, 1 << 16);
    buf[12345] ^= 1;
    CHECK(k->read_sum(buf, 1 << 16) != s1, "%s read_sum ignores a byte", k->name);
    free(buf);
    printf("test_kernels: %s: %d shape/bits/gs cases match scalar\n", k->name, checked);
}

/* ---------------------------------------------------------------- pool */

typedef struct {
    int phase_hits[2][64];
    int errors;
} pool_ctx;

static void pool_fn(void *ctx, int w, int n) {
    pool_ctx *c = ctx;
    __atomic_fetch_add(&c->phase_hits[0][w], 1, __ATOMIC_SEQ_CST);
    kr_pool_barrier();
    /* after the barrier every worker must have finished phase 0 of this region */
    for (int i = 0; i < n; i++)
        if (__atomic_load_n(&c->phase_hits[0][i], __ATOMIC_SEQ_CST) != __atomic_load_n(&c->phase_hits[0][w], __ATOMIC_SEQ_CST))
            __atomic_fetch_add(&c->errors, 1, __ATOMIC_SEQ_CST);
    kr_pool_barrier();
    c->phase_hits[1][w]++;
}

static void test_pool(int n) {
    CHECK(kr_pool_init(n) == KR_OK, "pool init: %s", kr_error());
    pool_ctx c;
    memset(&c, 0, sizeof c);
    for (int it = 0; it < 20000; it++)
        kr_pool_run(pool_fn, &c);
    CHECK(c.errors == 0, "barrier let a worker through early (%d times)", c.errors);
    for (int w = 0; w < kr_pool_threads(); w++)
        CHECK(c.phase_hits[1][w] == 20000, "worker %d ran %d of 20000 regions", w, c.phase_hits[1][w]);
}

/* ---------------------------------------------------------------- MoE */

static void ref_expert(const kr_qexpert *e, const float *x, int64_t D, float *out, float wt) {
    float *row = malloc((size_t)(D > e->inter ? D : e->inter) * sizeof *row), *h = malloc((size_t)e->inter * sizeof *h);
    for (int64_t i = 0; i < e->inter; i++) {
        kr_dequantize_row(&e->w13, 2 * i, row);
        double g = 0, u = 0;
        for (int64_t j = 0; j < D; j++)
            g += row[j] * x[j];
        kr_dequantize_row(&e->w13, 2 * i + 1, row);
        for (int64_t j = 0; j < D; j++)
            u += row[j] * x[j];
        h[i] = (float)(g / (1 + exp(-g)) * u);
    }
    for (int64_t d = 0; d < D; d++) {
        kr_dequantize_row(&e->down, d, row);
        double s = 0;
        for (int64_t i = 0; i < e->inter; i++)
            s += row[i] * h[i];
        out[d] += wt * (float)s;
    }
    free(row);
    free(h);
}

static void test_moe(int bits, int gs, int64_t D, int64_t inter, int E, int K, int64_t T) {
    kr_qexpert *ex = calloc((size_t)E + 1, sizeof *ex);
    owned_q *own = calloc(2 * ((size_t)E + 1), sizeof *own);
    for (int e = 0; e <= E; e++) {
        ex[e].inter = e == E ? 2 * inter + 3 : inter; /* the shared expert: another (ragged) size */
        make_q(&own[2 * e], 2 * ex[e].inter, D, bits, gs, 0.1f);
        make_q(&own[2 * e + 1], D, ex[e].inter, bits, gs, 0.1f);
        ex[e].w13 = own[2 * e].m;
        ex[e].down = own[2 * e + 1].m;
    }
    kr_qmoe q = {D, gs, E, ex, &ex[E]};
    float *x = malloc((size_t)(T * D) * sizeof *x), *w = malloc((size_t)(T * K) * sizeof *w);
    int *idx = malloc((size_t)(T * K) * sizeof *idx);
    for (int64_t i = 0; i < T * D; i++)
        x[i] = frand();
    for (int64_t t = 0; t < T; t++)
        for (int k = 0; k < K; k++) {
            idx[t * K + k] = (int)((t * 7 + k * 3) % E);
            w[t * K + k] = 0.25f + 0.1f * k;
        }
    float *ref = calloc((size_t)(T * D), sizeof *ref), *out = malloc((size_t)(T * D) * sizeof *out),
          *out0 = malloc((size_t)(T * D) * sizeof *out0), *out1 = malloc((size_t)(T * D) * sizeof *out1);
    for (int64_t t = 0; t < T; t++) {
        for (int k = 0; k < K; k++)
            ref_expert(&ex[idx[t * K + k]], x + t * D, D, ref + t * D, w[t * K + k]);
        ref_expert(&ex[E], x + t * D, D, ref + t * D, 1.0f);
    }
    kr_qmoe_ws *ws = NULL;
    kr_pool_init(2); /* reserve for the largest pool: under KRASIS_FAKE_NUMA its 2 workers are 2 nodes */
    kr_qmoe_place(ex, E);
    CHECK(kr_qmoe_ws_reserve(&ws, &q, T, K) == KR_OK, "reserve");
    int first = 1;
    for (int isa = 0; isa < KR_ISA_COUNT; isa++) {
        if (!kr_kernels_for((kr_isa)isa))
            continue;
        kr_kernels_force((kr_isa)isa);
        for (int n = 1; n <= 2; n++) {
            kr_pool_init(n);
            int fake = getenv("KRASIS_FAKE_NUMA") ? atoi(getenv("KRASIS_FAKE_NUMA")) : 0;
            if (fake > 1)
                CHECK(kr_pool_nodes() == (n < fake ? n : fake), "%d workers under KRASIS_FAKE_NUMA=%d: %d nodes", n,
                      fake, kr_pool_nodes());
            CHECK(kr_qmoe_forward(&q, ws, x, T, idx, w, K, out) == KR_OK, "forward: %s", kr_error());
            double cs = test_cosine(out, ref, T * D);
            /* INT8 activations on top of quantized weights: close to the float math on those weights */
            CHECK(cs > 0.999, "moe int%d gs %d %s threads %d: cosine %.6f vs float", bits, gs, isa ? "simd" : "scalar", n, cs);
            if (first) {
                memcpy(out0, out, (size_t)(T * D) * sizeof *out);
            } else if (n == 2 && kr_pool_nodes() == 1) {
                /* the work split never changes the arithmetic: 2 workers give the 1-worker result exactly */
                CHECK(!memcmp(out, out1, (size_t)(T * D) * sizeof *out), "moe int%d gs %d %s: 2 threads differ from 1",
                      bits, gs, kr_kernels_get()->name);
            } else {
                /* another level (or another node split) sums floats in another order; where that moves one
                 * intermediate activation across an INT8 rounding boundary, every output of that token moves
                 * by about one INT8 step of it times a down weight: ~1e-4 of the largest output (measured on
                 * an Intel host: 1.4e-4 for 1 of 36 configurations). A wrong kernel is off by whole values. */
                double amax = 0, worst = 0;
                for (int64_t i = 0; i < T * D; i++)
                    amax = fabs(out0[i]) > amax ? fabs(out0[i]) : amax;
                for (int64_t i = 0; i < T * D; i++)
                    worst = fabs(out[i] - out0[i]) / amax > worst ? fabs(out[i] - out0[i]) / amax : worst;
                if (getenv("KR_TEST_VERBOSE"))
                    printf("moe int%d gs %d T %lld %s threads %d vs scalar: worst difference %.2e of the largest output\n",
                           bits, gs, (long long)T, kr_kernels_get()->name, n, worst);
                CHECK(worst <= 2e-3, "moe int%d gs %d %s threads %d: outputs differ from scalar by %.2e of the largest",
                      bits, gs, kr_kernels_get()->name, n, worst);
            }
            if (n == 1)
                memcpy(out1, out, (size_t)(T * D) * sizeof *out);
            first = 0;
        }
    }
    kr_qmoe_ws_free(ws);
    for (int e = 0; e < 2 * (E + 1); e++)
        free_q(&own[e]);
    free(own);
    free(ex);
    free(x);
    free(w);
    free(idx);
    free(ref);
    free(out);
    free(out0);
    free(out1);
}

/* dot_f32 of every level against a double-precision sum, lengths around each level's block sizes */
static void test_dot(const kr_kernels *k) {
    static const int64_t lens[] = {1, 3, 8, 15, 16, 31, 32, 33, 63, 64, 65, 100, 576, 1000, 4099};
    unsigned long long seed = 99;
    float a[4099], b[4099];
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
        int64_t n = lens[li];
        double exact = 0, mag = 0;
        for (int64_t i = 0; i < n; i++) {
            a[i] = test_frand(&seed) * 2 - 1;
            b[i] = test_frand(&seed) * 2 - 1;
            exact += (double)a[i] * b[i];
            mag += fabs((double)a[i] * b[i]);
        }
        double got = k->dot_f32(a, b, n);
        CHECK(fabs(got - exact) <= 1e-6 * mag + 1e-30, "%s dot_f32 n %lld: %.9g, exact %.9g", k->name, (long long)n,
              got, exact);
    }
}

int main(void) {
    kr_isa best = kr_kernels_get()->isa;
    for (int isa = 0; isa < KR_ISA_COUNT; isa++)
        if (kr_kernels_for((kr_isa)isa))
            test_dot(kr_kernels_for((kr_isa)isa));
    for (int isa = 0; isa < KR_ISA_COUNT; isa++) {
        const kr_kernels *k = kr_kernels_for((kr_isa)isa);
        if (k)
            test_level(k);
        else
            printf("test_kernels: %s: SKIPPED (%s)\n", kr_isa_name((kr_isa)isa),
                   kr_cpu_has((kr_isa)isa) ? "not built into this binary" : "this CPU does not support it");
    }
    test_pool(2);
    test_pool(1);
    for (int bits = 4; bits <= 8; bits += 4) {
        test_moe(bits, 32, 96, 64, 6, 2, 1);
        test_moe(bits, 64, 200, 100, 5, 3, 7);
        test_moe(bits, 128, 256, 130, 4, 2, 3);
    }
    kr_kernels_force(best);
    kr_pool_shutdown();
    return test_summary("test_kernels");
}
