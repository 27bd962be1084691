/* kr_attend_batch (head blocks over shared rows, online softmax, split windows merged) against the
 * one-query reference kr_attend, at every SIMD level this machine runs and with 1, 2 and 3 workers:
 * MLA-style shared rows, GQA groups, plain multi-head; decode over long windows (split and merged),
 * prefill with and without a cached prefix; head counts and widths that are not multiples of the
 * kernels' tiles. Also the scalar block kernels against loops written here. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/attention.h"
#include "backend/cpu/isa.h"
#include "backend/cpu/threadpool.h"
#include "test.h"

typedef struct {
    const char *name;
    int64_t H, kv_heads, qk_dim, v_dim, T, pos0;
    int shared; /* MLA: every head reads the same [qk_dim] rows, the values their first v_dim floats */
} attn_case;

static const attn_case cases[] = {
    {"MLA decode, long window", 16, 1, 576, 512, 1, 1500, 1},
    {"MLA decode, short window", 16, 1, 576, 512, 1, 40, 1},
    {"MLA prefill after a prefix", 16, 1, 576, 512, 5, 300, 1},
    {"MLA ragged (6 heads, 13 wide)", 6, 1, 13, 9, 3, 700, 1},
    {"GQA decode (32 / 4 of 128)", 32, 4, 128, 128, 1, 2100, 0},
    {"GQA decode, 2 kv heads: split with 3 workers", 16, 2, 64, 64, 1, 1500, 0},
    {"GQA prefill from empty", 8, 2, 64, 64, 9, 0, 0},
    {"GQA ragged (10 / 2, 20 wide)", 10, 2, 20, 20, 2, 600, 0},
    {"multi-head decode", 4, 4, 32, 32, 1, 1000, 0},
    {"one head, one position", 1, 1, 8, 8, 1, 0, 0},
};

/* softmax(scale q.k) v in double precision: the exact answer both float paths are measured against */
static void attend_exact(const float *q, int64_t qk, const float *k, const float *v, int64_t stride, int64_t vd,
                         int64_t n, double scale, double *w, double *out) {
    double mx = -INFINITY, sum = 0;
    for (int64_t s = 0; s < n; s++) {
        double d = 0;
        for (int64_t i = 0; i < qk; i++)
            d += (double)q[i] * k[s * stride + i];
        w[s] = scale * d;
        mx = w[s] > mx ? w[s] : mx;
    }
    for (int64_t s = 0; s < n; s++)
        sum += (w[s] = exp(w[s] - mx));
    for (int64_t d = 0; d < vd; d++) {
        double acc = 0;
        for (int64_t s = 0; s < n; s++)
            acc += w[s] * v[s * stride + d];
        out[d] = acc / sum;
    }
}

static void run_case(const attn_case *c, unsigned long long seed) {
    int64_t n = c->pos0 + c->T, group = c->shared ? 1 : c->H / c->kv_heads;
    int64_t row = c->shared ? c->qk_dim : c->kv_heads * c->qk_dim; /* floats per cached position */
    float *k = malloc((size_t)(n * row) * sizeof *k), *v = c->shared ? k : malloc((size_t)(n * row) * sizeof *v);
    float *q = malloc((size_t)(c->T * c->H * c->qk_dim) * sizeof *q);
    float *out = malloc((size_t)(c->T * c->H * c->v_dim) * sizeof *out), *ref = malloc((size_t)n * sizeof *ref);
    float *want = malloc((size_t)c->v_dim * sizeof *want);
    for (int64_t i = 0; i < n * row; i++)
        k[i] = 2 * test_frand(&seed) - 1;
    if (v != k)
        for (int64_t i = 0; i < n * row; i++)
            v[i] = 2 * test_frand(&seed) - 1;
    for (int64_t i = 0; i < c->T * c->H * c->qk_dim; i++)
        q[i] = 4 * test_frand(&seed) - 2; /* sharp enough that the maximum moves between key blocks */
    for (int64_t i = 0; i < c->T * c->H * c->v_dim; i++)
        out[i] = NAN; /* poisoned: every output must be written */
    int64_t k_head = c->shared ? 0 : c->qk_dim;
    kr_attention_batch b = {.q = q, .q_t = c->H * c->qk_dim, .q_h = c->qk_dim, .qk_dim = c->qk_dim, .k = k, .v = v,
                            .k_stride = row, .v_stride = row, .k_head = k_head, .v_head = k_head, .v_dim = c->v_dim,
                            .T = c->T, .H = c->H, .group = group, .pos0 = c->pos0, .scale = 0.3f, .out = out,
                            .o_t = c->H * c->v_dim, .o_h = c->v_dim};
    float *scratch = malloc((size_t)kr_attention_scratch(&b) * sizeof *scratch);
    kr_attend_batch(&b, scratch);
    /* error against the exact value, in units of the largest |v| (outputs are convex combinations of
     * values), for the batch and for the one-query float reference alike: the batch may sum in another
     * order, but it must be as close to exact as kr_attend is */
    double worst = 0, worst_ref = 0;
    double *w = malloc((size_t)n * sizeof *w), *exact = malloc((size_t)c->v_dim * sizeof *exact);
    for (int64_t t = 0; t < c->T; t++)
        for (int64_t h = 0; h < c->H; h++) {
            int64_t g = h / group;
            const float *qh = q + (t * c->H + h) * c->qk_dim;
            attend_exact(qh, c->qk_dim, k + g * k_head, v + g * k_head, row, c->v_dim, c->pos0 + t + 1, 0.3, w, exact);
            kr_attend(qh, c->qk_dim, k + g * k_head, row, v + g * k_head, row, c->v_dim, c->pos0 + t + 1, 0.3f, ref, want);
            const float *got = out + (t * c->H + h) * c->v_dim;
            for (int64_t d = 0; d < c->v_dim; d++) {
                worst = isnan(got[d]) ? INFINITY : fmax(worst, fabs(got[d] - exact[d]));
                worst_ref = fmax(worst_ref, fabs(want[d] - exact[d]));
            }
        }
    CHECK(worst <= 1e-3 && worst <= 4 * worst_ref + 1e-6, "%s, %s, %d workers: error %.3g (kr_attend's %.3g)",
          c->name, kr_kernels_get()->name, kr_pool_threads(), worst, worst_ref);
    free(w);
    free(exact);
    free(k);
    if (v != k)
        free(v);
    free(q);
    free(out);
    free(ref);
    free(want);
    free(scratch);
}

/* the block kernels of one level against plain loops, on tile remainders (heads 1..9, keys 1..7, widths
 * around the 8-float chunks and the 24-float value tiles) */
static void test_block_kernels(const kr_kernels *kk) {
    unsigned long long seed = 5;
    enum { NH = 9, NK = 7, QS = 601, KS = 603, SS = 11, PS = 13, OS = 599 };
    static const int64_t widths[] = {1, 7, 8, 9, 23, 24, 25, 37, 64, 128, 512, 576};
    static float q[NH * QS], k[NK * KS], s[NH * SS], p[NH * PS], o[NH * OS], want[NH * OS];
    for (size_t i = 0; i < sizeof q / sizeof *q; i++)
        q[i] = test_frand(&seed) - 0.5f;
    for (size_t i = 0; i < sizeof k / sizeof *k; i++)
        k[i] = test_frand(&seed) - 0.5f;
    for (size_t i = 0; i < sizeof p / sizeof *p; i++)
        p[i] = test_frand(&seed);
    for (int nh = 1; nh <= NH; nh++)
        for (int nk = 1; nk <= NK; nk++)
            for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++) {
                int64_t d = widths[wi];
                kk->attn_scores(q, QS, nh, k, KS, nk, d, 0.5f, s, SS);
                for (size_t i = 0; i < sizeof o / sizeof *o; i++)
                    o[i] = want[i] = test_frand(&seed);
                kk->attn_values(p, PS, nh, k, KS, nk, d, o, OS);
                double worst = 0;
                for (int h = 0; h < nh; h++)
                    for (int j = 0; j < nk; j++) {
                        double dot = 0;
                        for (int64_t i = 0; i < d; i++)
                            dot += (double)q[h * QS + i] * k[j * KS + i];
                        worst = fmax(worst, fabs(s[h * SS + j] - 0.5 * dot) / (1 + fabs(dot)));
                        for (int64_t i = 0; i < d; i++)
                            want[h * OS + i] += p[h * PS + j] * k[j * KS + i];
                    }
                for (int h = 0; h < nh; h++)
                    for (int64_t i = 0; i < d; i++)
                        worst = fmax(worst, fabs((double)o[h * OS + i] - want[h * OS + i]) / (1 + fabs(want[h * OS + i])));
                CHECK(worst < 1e-5, "%s attn kernels, %d heads x %d keys x %lld: error %.3g", kk->name, nh, nk,
                      (long long)d, worst);
            }
}

/* exp_sum of one level against double exp: every element within 4 ulp (relative 5e-7), over arguments
 * from -87 to 0 and lengths around the 8-float vectors */
static void test_exp_sum(const kr_kernels *kk) {
    unsigned long long seed = 11;
    float x[40];
    double worst = 0, worst_sum = 0;
    for (int n = 1; n <= 40; n += 3) {
        float m = 3 * test_frand(&seed);
        double want_sum = 0;
        double want[40];
        for (int i = 0; i < n; i++) {
            x[i] = m - 87 * test_frand(&seed) * test_frand(&seed); /* many near m, some far below */
            want[i] = exp((double)(x[i] - m)); /* of the float difference, as the kernels see it */
            want_sum += want[i];
        }
        float sum = kk->exp_sum(x, n, m);
        for (int i = 0; i < n; i++)
            worst = fmax(worst, fabs(x[i] - want[i]) / want[i]);
        worst_sum = fmax(worst_sum, fabs(sum - want_sum) / want_sum);
    }
    CHECK(worst < 5e-7 && worst_sum < 1e-6, "%s exp_sum: worst relative error %.3g (sum %.3g)", kk->name, worst,
          worst_sum);
}

int main(void) {
    kr_isa best = kr_kernels_get()->isa;
    for (int isa = 0; isa < KR_ISA_COUNT; isa++) {
        const kr_kernels *kk = kr_kernels_for((kr_isa)isa);
        if (!kk)
            continue;
        test_block_kernels(kk);
        test_exp_sum(kk);
        kr_kernels_force((kr_isa)isa);
        for (int workers = 1; workers <= 3; workers++) {
            CHECK(kr_pool_init(workers) == KR_OK, "pool of %d: %s", workers, kr_error());
            for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
                run_case(&cases[i], 17 + i);
        }
    }
    kr_kernels_force(best);
    kr_pool_shutdown();
    return test_summary("test_attention");
}
