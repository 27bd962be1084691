/* Sampler: each filter and penalty on distributions small enough to work out by hand, greedy, and
 * seeded draws (reproducible, and following the distribution). */
#include <math.h>
#include <stdlib.h>

#include "engine/sampler.h"
#include "test.h"

static const float P[4] = {0.5f, 0.3f, 0.15f, 0.05f};

static kr_sampler_params plain(void) {
    return (kr_sampler_params){.temperature = 1, .top_p = 1, .repetition_penalty = 1};
}

/* probs of the 4-token distribution P under params, with history h */
static void probs_of(kr_sampler_params p, const int32_t *h, size_t nh, float *out) {
    float logits[4];
    for (int i = 0; i < 4; i++)
        logits[i] = logf(P[i]);
    kr_sampler *s;
    if (kr_sampler_create(&p, 4, &s) != KR_OK) {
        CHECK(0, "create: %s", kr_error());
        return;
    }
    kr_sampler_probs(s, logits, h, nh, 0, out);
    kr_sampler_free(s);
}

static void expect(const char *what, const float *got, double a, double b, double c, double d) {
    double want[4] = {a, b, c, d};
    for (int i = 0; i < 4; i++)
        CHECK(fabs(got[i] - want[i]) < 1e-5, "%s: p[%d] = %.6f, want %.6f", what, i, got[i], want[i]);
}

static int by_logit_then_id(const void *a, const void *b) {
    const float *x = *(const float *const *)a, *y = *(const float *const *)b;
    if (*x != *y)
        return *x > *y ? -1 : 1;
    return x < y ? -1 : x > y; /* same array: lower address = lower id */
}

/* top_k over a real-sized vocabulary with many ties: exactly the k best by (logit, then lower id) keep
 * probability, in the proportions softmax gives them */
static void top_k_large(void) {
    enum { V = 5000, K = 37 };
    static float logits[V], got[V];
    static const float *order[V];
    for (int i = 0; i < V; i++) {
        logits[i] = (float)((i * 7919) % 113) * 0.05f; /* 113 distinct values: ~44 ties each */
        order[i] = &logits[i];
    }
    qsort(order, V, sizeof *order, by_logit_then_id);
    kr_sampler_params p = plain();
    p.top_k = K;
    kr_sampler *s;
    if (kr_sampler_create(&p, V, &s) != KR_OK) {
        CHECK(0, "create: %s", kr_error());
        return;
    }
    kr_sampler_probs(s, logits, NULL, 0, 0, got);
    kr_sampler_free(s);
    double z = 0;
    for (int r = 0; r < K; r++)
        z += exp(*order[r] - *order[0]);
    int bad = 0;
    for (int r = 0; r < V; r++) {
        size_t id = (size_t)(order[r] - logits);
        double want = r < K ? exp(*order[r] - *order[0]) / z : 0;
        bad += fabs(got[id] - want) > 1e-6;
    }
    CHECK(bad == 0, "top_k %d of %d: %d probabilities differ from the sorted reference", K, V, bad);
}

int main(void) {
    top_k_large();
    float q[4];
    kr_sampler_params p = plain();
    probs_of(p, NULL, 0, q);
    expect("no filter", q, .5, .3, .15, .05);

    p.top_k = 2;
    probs_of(p, NULL, 0, q);
    expect("top_k 2", q, .625, .375, 0, 0);

    p = plain();
    p.top_p = 0.7f; /* .5 < .7 <= .8: two tokens */
    probs_of(p, NULL, 0, q);
    expect("top_p 0.7", q, .625, .375, 0, 0);
    p.top_p = 0.9f; /* .8 < .9 <= .95 */
    probs_of(p, NULL, 0, q);
    expect("top_p 0.9", q, .5 / .95, .3 / .95, .15 / .95, 0);

    p = plain();
    p.min_p = 0.4f; /* keeps p >= 0.2 */
    probs_of(p, NULL, 0, q);
    expect("min_p 0.4", q, .625, .375, 0, 0);

    p = plain();
    p.temperature = 2; /* p^(1/2), renormalized */
    probs_of(p, NULL, 0, q);
    double z = sqrt(.5) + sqrt(.3) + sqrt(.15) + sqrt(.05);
    expect("temperature 2", q, sqrt(.5) / z, sqrt(.3) / z, sqrt(.15) / z, sqrt(.05) / z);

    p = plain();
    p.repetition_penalty = 2; /* token 0's logit ln .5 < 0 is doubled: ln .25 */
    int32_t h0[] = {0, 0};
    probs_of(p, h0, 2, q);
    expect("repetition 2", q, .25 / .75, .3 / .75, .15 / .75, .05 / .75);

    p = plain();
    p.presence_penalty = 0.5f; /* token 1 seen twice: logit -= 0.5 + 0.25 * 2 = 1 */
    p.frequency_penalty = 0.25f;
    int32_t h1[] = {1, 1};
    probs_of(p, h1, 2, q);
    double s1 = .5 + .3 / M_E + .15 + .05;
    expect("presence+frequency", q, .5 / s1, .3 / M_E / s1, .15 / s1, .05 / s1);

    p = plain();
    p.repetition_penalty = 2;
    p.penalty_last_n = 1; /* only the last token (1) is in the window: ln .3 * 2 = ln .09 */
    int32_t h01[] = {0, 1};
    probs_of(p, h01, 2, q);
    expect("repetition window", q, .5 / .79, .09 / .79, .15 / .79, .05 / .79);

    /* greedy: argmax after penalties */
    p = plain();
    p.temperature = 0;
    probs_of(p, NULL, 0, q);
    expect("greedy", q, 1, 0, 0, 0);
    p.repetition_penalty = 3; /* ln .5 * 3 = ln .125 < ln .3 */
    probs_of(p, h0, 2, q);
    expect("greedy with penalty", q, 0, 1, 0, 0);

    /* seeded draws: reproducible and distributed as P */
    p = plain();
    p.seed = 1234;
    kr_sampler *a, *b;
    CHECK(kr_sampler_create(&p, 4, &a) == KR_OK && kr_sampler_create(&p, 4, &b) == KR_OK, "create");
    int counts[4] = {0}, same = 1;
    const int N = 20000;
    for (int i = 0; i < N; i++) {
        float la[4], lb[4];
        for (int k = 0; k < 4; k++)
            la[k] = lb[k] = logf(P[k]);
        int32_t x = kr_sampler_sample(a, la, NULL, 0, 0), y = kr_sampler_sample(b, lb, NULL, 0, 0);
        same &= x == y;
        counts[x]++;
    }
    CHECK(same, "the same seed gives the same draws");
    for (int k = 0; k < 4; k++) {
        double sigma = sqrt(N * P[k] * (1 - P[k]));
        CHECK(fabs(counts[k] - N * P[k]) < 4 * sigma, "token %d drawn %d times, expected %.0f +- %.0f", k, counts[k],
              N * P[k], sigma);
    }
    kr_sampler_free(a);
    kr_sampler_free(b);

    /* a tiny temperature is greedy in effect, not a NaN draw that falls through to the worst token */
    p = plain();
    p.temperature = 1e-30f;
    probs_of(p, NULL, 0, q);
    expect("temperature 1e-30", q, 1, 0, 0, 0);
    kr_sampler *t;
    CHECK(kr_sampler_create(&p, 4, &t) == KR_OK, "create");
    float lt[4] = {10, 1, 0.5f, NAN};
    CHECK(kr_sampler_sample(t, lt, NULL, 0, 0) == 0, "tiny temperature with a NaN logit draws the best token");
    kr_sampler_free(t);

    /* presence/frequency count generated tokens only: token 1 in the prompt is not penalized */
    p = plain();
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    float lp[4];
    for (int k = 0; k < 4; k++)
        lp[k] = logf(P[k]);
    CHECK(kr_sampler_create(&p, 4, &t) == KR_OK, "create");
    int32_t h2[] = {1, 1, 2};
    kr_sampler_probs(t, lp, h2, 3, 2, q); /* prompt = {1, 1}; generated = {2}: logit 2 -= 0.75 */
    double s3 = .5 + .3 + .15 * exp(-.75) + .05;
    expect("penalties skip the prompt", q, .5 / s3, .3 / s3, .15 * exp(-.75) / s3, .05 / s3);
    kr_sampler_free(t);

    /* bad parameters name themselves */
    kr_sampler_params bad = plain();
    bad.top_p = 1.5f;
    CHECK(kr_sampler_validate(&bad) != KR_OK && strstr(kr_error(), "top_p"), "top_p range: %s", kr_error());
    bad = plain();
    bad.temperature = -1;
    CHECK(kr_sampler_validate(&bad) != KR_OK && strstr(kr_error(), "temperature"), "temperature: %s", kr_error());
    bad = plain();
    bad.top_k = -3;
    CHECK(kr_sampler_validate(&bad) != KR_OK && strstr(kr_error(), "top_k"), "top_k: %s", kr_error());
    return test_summary("test_sampler");
}
