/* Sampler. Candidates are (id, logit) pairs; each filter shrinks the candidate set, kept sorted by
 * logit once any filter needs order. The generator is splitmix64-seeded xoshiro256**: fast, and the same
 * seed gives the same draws on every machine. */
#include "engine/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t id;
    float logit;
} candidate;

struct kr_sampler {
    kr_sampler_params p;
    int64_t vocab;
    candidate *cand;
    float *prob;
    uint32_t *seen; /* per-token counts over the penalty window */
    uint64_t rng[4];
};

kr_sampler_params kr_sampler_defaults(void) {
    return (kr_sampler_params){.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                               .repetition_penalty = 1.0f, .penalty_last_n = 64, .seed = 0};
}

kr_status kr_sampler_validate(const kr_sampler_params *p) {
    if (!(p->temperature >= 0 && p->temperature <= 100))
        return kr_fail(KR_ERR_ARG, "temperature must be in [0, 100], got %g", p->temperature);
    if (p->top_k < 0)
        return kr_fail(KR_ERR_ARG, "top_k must be >= 0 (0 = off), got %d", p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return kr_fail(KR_ERR_ARG, "top_p must be in (0, 1], got %g", p->top_p);
    if (!(p->min_p >= 0 && p->min_p <= 1))
        return kr_fail(KR_ERR_ARG, "min_p must be in [0, 1], got %g", p->min_p);
    if (!(p->repetition_penalty > 0 && p->repetition_penalty <= 100))
        return kr_fail(KR_ERR_ARG, "repetition_penalty must be in (0, 100], got %g", p->repetition_penalty);
    if (!(fabsf(p->presence_penalty) <= 2))
        return kr_fail(KR_ERR_ARG, "presence_penalty must be in [-2, 2], got %g", p->presence_penalty);
    if (!(fabsf(p->frequency_penalty) <= 2))
        return kr_fail(KR_ERR_ARG, "frequency_penalty must be in [-2, 2], got %g", p->frequency_penalty);
    if (p->penalty_last_n < 0)
        return kr_fail(KR_ERR_ARG, "penalty_last_n must be >= 0 (0 = all), got %d", p->penalty_last_n);
    return KR_OK;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(uint64_t *s) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* uniform in [0, 1) with 53 random bits */
static double next_unit(uint64_t *s) { return (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0); }

kr_status kr_sampler_create(const kr_sampler_params *p, int64_t vocab, kr_sampler **out) {
    KR_TRY(kr_sampler_validate(p));
    kr_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    s->p = *p;
    s->vocab = vocab;
    s->cand = malloc((size_t)vocab * sizeof *s->cand);
    s->prob = malloc((size_t)vocab * sizeof *s->prob);
    s->seen = calloc((size_t)vocab, sizeof *s->seen);
    if (!s->cand || !s->prob || !s->seen) {
        kr_sampler_free(s);
        return kr_fail(KR_ERR_NOMEM, "out of memory for a sampler over %lld tokens", (long long)vocab);
    }
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    *out = s;
    return KR_OK;
}

void kr_sampler_free(kr_sampler *s) {
    if (!s)
        return;
    free(s->cand);
    free(s->prob);
    free(s->seen);
    free(s);
}

/* Repetition penalty (HF / llama.cpp): every distinct token of the last penalty_last_n tokens, prompt
 * included. Presence and frequency penalties (OpenAI): counts over the generated tokens only. */
static void apply_penalties(kr_sampler *s, float *logits, const int32_t *history, size_t n, size_t n_prompt) {
    const kr_sampler_params *p = &s->p;
    if (p->repetition_penalty != 1) {
        size_t first = p->penalty_last_n && n > (size_t)p->penalty_last_n ? n - (size_t)p->penalty_last_n : 0;
        for (size_t i = first; i < n; i++) {
            int32_t t = history[i];
            if (t < 0 || t >= s->vocab || s->seen[t])
                continue;
            s->seen[t] = 1;
            logits[t] = logits[t] > 0 ? logits[t] / p->repetition_penalty : logits[t] * p->repetition_penalty;
        }
        for (size_t i = first; i < n; i++)
            if (history[i] >= 0 && history[i] < s->vocab)
                s->seen[history[i]] = 0;
    }
    if (p->presence_penalty != 0 || p->frequency_penalty != 0) {
        for (size_t i = n_prompt; i < n; i++)
            if (history[i] >= 0 && history[i] < s->vocab)
                s->seen[history[i]]++;
        for (size_t i = n_prompt; i < n; i++) {
            int32_t t = history[i];
            if (t < 0 || t >= s->vocab || s->seen[t] == 0)
                continue; /* already penalized: the count is cleared on the first visit */
            logits[t] -= p->presence_penalty + p->frequency_penalty * (float)s->seen[t];
            s->seen[t] = 0;
        }
    }
}

static int by_logit_desc(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit > y->logit ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* x ranks before y: higher logit, then lower id (a total order: the result never depends on how the
 * candidates were selected) */
static bool before(const candidate *x, const candidate *y) {
    return x->logit > y->logit || (x->logit == y->logit && x->id < y->id);
}

/* Restores the heap c[0..k) (the worst candidate at the root) below position at. */
static void sift_down(candidate *c, size_t k, size_t at) {
    for (;;) {
        size_t w = at, l = 2 * at + 1, r = l + 1;
        if (l < k && before(&c[w], &c[l]))
            w = l;
        if (r < k && before(&c[w], &c[r]))
            w = r;
        if (w == at)
            return;
        candidate t = c[at];
        c[at] = c[w];
        c[w] = t;
        at = w;
    }
}

/* The k best of c[0..n) to c[0..k), sorted: a heap of the k best so far (the worst of them at its root),
 * O(n log k) instead of sorting the whole vocabulary for every token. */
static void top_k_select(candidate *c, size_t n, size_t k) {
    for (size_t i = k / 2; i-- > 0;)
        sift_down(c, k, i);
    for (size_t i = k; i < n; i++)
        if (before(&c[i], &c[0])) {
            c[0] = c[i];
            sift_down(c, k, 0);
        }
    qsort(c, k, sizeof *c, by_logit_desc);
}

/* NaN never wins: a comparison with NaN is false */
static int32_t argmax(const float *logits, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (logits[i] > logits[best] || isnan(logits[best]))
            best = i;
    return (int32_t)best;
}

/* Applies temperature and the truncations; leaves n kept candidates with probabilities in s->prob[0..n).
 * Logits are shifted by their maximum before the division, so any temperature > 0 stays finite; NaN
 * logits count as -inf. Without a truncation the candidates stay in id order (no sort needed). */
static size_t filter(kr_sampler *s, const float *logits) {
    const kr_sampler_params *p = &s->p;
    size_t n = (size_t)s->vocab;
    float max = -INFINITY;
    for (size_t i = 0; i < n; i++)
        max = logits[i] > max ? logits[i] : max;
    for (size_t i = 0; i < n; i++) {
        float l = isnan(logits[i]) ? -INFINITY : (logits[i] - max) / p->temperature;
        s->cand[i] = (candidate){(int32_t)i, l};
    }
    if (p->top_k > 0 && (size_t)p->top_k < n) {
        top_k_select(s->cand, n, (size_t)p->top_k);
        n = (size_t)p->top_k;
    } else if (p->top_p < 1 || p->min_p > 0) {
        qsort(s->cand, n, sizeof *s->cand, by_logit_desc);
    }
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        s->prob[i] = expf(s->cand[i].logit);
        sum += s->prob[i];
    }
    for (size_t i = 0; i < n; i++)
        s->prob[i] = (float)(s->prob[i] / sum);
    if (p->top_p < 1) { /* smallest prefix whose mass reaches top_p (at least one token) */
        double cum = 0;
        size_t keep = 0;
        while (keep < n && cum < p->top_p)
            cum += s->prob[keep++];
        n = keep;
    }
    if (p->min_p > 0) { /* drop tokens below min_p times the most likely one */
        size_t keep = 1;
        while (keep < n && s->prob[keep] >= p->min_p * s->prob[0])
            keep++;
        n = keep;
    }
    sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += s->prob[i];
    for (size_t i = 0; i < n; i++)
        s->prob[i] = (float)(s->prob[i] / sum);
    return n;
}

/* The draw: the first candidate whose cumulative probability passes r; rounding leftovers go to the
 * most likely kept candidate, never to the least likely one. */
static int32_t draw(kr_sampler *s, size_t n) {
    double r = next_unit(s->rng), cum = 0;
    size_t best = 0;
    for (size_t i = 0; i < n; i++) {
        cum += s->prob[i];
        if (r < cum)
            return s->cand[i].id;
        if (s->prob[i] > s->prob[best])
            best = i;
    }
    return s->cand[best].id;
}

int32_t kr_sampler_sample(kr_sampler *s, float *logits, const int32_t *history, size_t n_history, size_t n_prompt) {
    apply_penalties(s, logits, history, n_history, n_prompt);
    if (s->p.temperature == 0)
        return argmax(logits, s->vocab);
    return draw(s, filter(s, logits));
}

void kr_sampler_probs(kr_sampler *s, float *logits, const int32_t *history, size_t n_history, size_t n_prompt,
                      float *probs) {
    apply_penalties(s, logits, history, n_history, n_prompt);
    memset(probs, 0, (size_t)s->vocab * sizeof *probs);
    if (s->p.temperature == 0) {
        probs[argmax(logits, s->vocab)] = 1;
        return;
    }
    size_t n = filter(s, logits);
    for (size_t i = 0; i < n; i++)
        probs[s->cand[i].id] = s->prob[i];
}
