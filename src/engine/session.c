/* Generation loop. The session's `ids` mirror the KV cache: ids[0 .. kv->len) are the tokens whose keys
 * and values it holds, which is what makes prefix reuse across calls (multi-turn chat) safe. */
#include "engine/session.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/stop.h"

struct kr_session {
    kr_model *model;
    const kr_tokenizer *tok;
    kr_kv_cache *kv;
    int64_t max_ctx;
    int32_t *ids; /* [max_ctx]: the tokens in the cache, then this call's new ones */
    float *logits;
    float *raw; /* [vocab]: the logits before the sampler changes them, for logprobs */
    size_t out_start, out_len; /* last call's generated tokens inside ids */
    int32_t *unusable;         /* model ids the tokenizer has no token for (vocabularies are padded) */
    size_t n_unusable;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

kr_status kr_session_create(kr_model *m, const kr_tokenizer *tok, int64_t max_ctx, kr_session **out) {
    if (max_ctx < 0)
        return kr_fail(KR_ERR_ARG, "context size must be positive, got %lld", (long long)max_ctx);
    if (max_ctx == 0)
        max_ctx = m->hp.max_pos > 0 && m->hp.max_pos < 4096 ? m->hp.max_pos : 4096;
    if (m->hp.max_pos > 0 && max_ctx > m->hp.max_pos)
        return kr_fail(KR_ERR_ARG, "context size %lld exceeds the model's max_position_embeddings %lld",
                       (long long)max_ctx, (long long)m->hp.max_pos);
    if (kr_tokenizer_vocab_size(tok) > m->hp.vocab)
        return kr_fail(KR_ERR_ARG, "the tokenizer has %lld tokens but the model only %lld",
                       (long long)kr_tokenizer_vocab_size(tok), (long long)m->hp.vocab);
    kr_session *s = calloc(1, sizeof *s);
    if (!s)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    s->model = m;
    s->tok = tok;
    s->max_ctx = max_ctx;
    s->ids = malloc((size_t)max_ctx * sizeof *s->ids);
    s->logits = malloc((size_t)m->hp.vocab * sizeof *s->logits);
    s->raw = malloc((size_t)m->hp.vocab * sizeof *s->raw);
    kr_status st = s->ids && s->logits && s->raw ? kr_kv_cache_create(m, &s->kv) : kr_fail(KR_ERR_NOMEM, "out of memory");
    for (int32_t id = 0; st == KR_OK && id < m->hp.vocab; id++) {
        size_t len;
        if (kr_tokenizer_token_bytes(tok, id, &len))
            continue;
        int32_t *grown = realloc(s->unusable, (s->n_unusable + 1) * sizeof *grown);
        if (!grown)
            st = kr_fail(KR_ERR_NOMEM, "out of memory");
        else
            (s->unusable = grown)[s->n_unusable++] = id;
    }
    if (st != KR_OK) {
        kr_session_free(s);
        return st;
    }
    *out = s;
    return KR_OK;
}

void kr_session_free(kr_session *s) {
    if (!s)
        return;
    kr_kv_cache_free(s->kv);
    free(s->ids);
    free(s->logits);
    free(s->raw);
    free(s->unusable);
    free(s);
}

int64_t kr_session_max_ctx(const kr_session *s) { return s->max_ctx; }

int64_t kr_session_kv_len(const kr_session *s) { return s->kv->len; }

const int32_t *kr_session_last_output(const kr_session *s, size_t *n) {
    *n = s->out_len;
    return s->ids + s->out_start;
}

static bool is_eos(const kr_tokenizer *tok, int32_t id) {
    const int32_t *eos;
    size_t n = kr_tokenizer_eos(tok, &eos);
    for (size_t i = 0; i < n; i++)
        if (eos[i] == id)
            return true;
    return false;
}

/* Reuses the cached prefix and runs the rest of the prompt; leaves the last position's logits. On the CPU
 * the prompt goes in chunks with p->alive asked between them (*cancelled when it says no); on the GPU in
 * one call, so that a grouped expert residency moves each expert once per prompt. */
static kr_status prefill(kr_session *s, const int32_t *prompt, size_t n, const kr_gen_params *p, void *user,
                         kr_gen_stats *st, bool *cancelled) {
    size_t common = 0, cached = (size_t)s->kv->len;
    while (common < cached && common < n && s->ids[common] == prompt[common])
        common++;
    if (common == n) /* everything cached: run the last token again for its logits */
        common = n - 1;
    s->kv->len = (int64_t)common;
    memcpy(s->ids + common, prompt + common, (n - common) * sizeof *prompt);
    st->cached_tokens = (int64_t)common;
    double t0 = now();
    const kr_model *m = s->model;
    size_t step = m->gpu ? n - common : (size_t)(m->prefill_chunk > 0 ? m->prefill_chunk : KR_CPU_PREFILL_CHUNK);
    kr_status r = KR_OK;
    for (size_t at = common; r == KR_OK && at < n; at += step) {
        if (at > common && p->alive && !p->alive(user)) {
            *cancelled = true;
            break;
        }
        /* kr_forward leaves the cache as it was when it fails: the chunks before stay, and match ids */
        r = kr_forward(s->model, s->kv, prompt + at, (int64_t)(n - at < step ? n - at : step), false, s->logits);
    }
    st->prefill_s = now() - t0;
    st->prefilled_tokens = s->kv->len - (int64_t)common;
    return r;
}

/* Fills t from the raw logits: log-softmax, and the n most likely tokens by insertion (n <= 20). */
static void token_logprobs(const float *raw, int64_t vocab, int n, kr_token_info *t, int32_t *top_ids, float *top_lp) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < vocab; i++)
        mx = raw[i] > mx ? raw[i] : mx;
    double sum = 0;
    for (int64_t i = 0; i < vocab; i++)
        sum += exp((double)(raw[i] - mx));
    float lse = mx + (float)log(sum);
    t->logprob = raw[t->id] - lse;
    int k = 0;
    for (int64_t i = 0; i < vocab && n > 0; i++) {
        if (k == n && raw[i] <= top_lp[k - 1])
            continue;
        int j = k < n ? k++ : k - 1;
        while (j > 0 && top_lp[j - 1] < raw[i]) {
            top_lp[j] = top_lp[j - 1];
            top_ids[j] = top_ids[j - 1];
            j--;
        }
        top_lp[j] = raw[i];
        top_ids[j] = (int32_t)i;
    }
    for (int j = 0; j < k; j++)
        top_lp[j] -= lse;
    t->n_top = k;
    t->top_ids = top_ids;
    t->top_logprobs = top_lp;
}

static bool emit_text(kr_emit_fn emit, void *user, const char *text, size_t len) {
    return len == 0 || !emit || emit(user, text, len);
}

kr_status kr_session_generate(kr_session *s, const int32_t *prompt, size_t n, const kr_gen_params *p, kr_emit_fn emit,
                              void *user, kr_gen_stats *st) {
    memset(st, 0, sizeof *st);
    s->out_start = s->out_len = 0;
    if (n == 0)
        return kr_fail(KR_ERR_ARG, "the prompt is empty");
    if ((int64_t)n >= s->max_ctx)
        return kr_fail(KR_ERR_ARG, "the prompt has %zu tokens; the context holds %lld (leave room to generate)", n,
                       (long long)s->max_ctx);
    if (p->max_tokens < 0)
        return kr_fail(KR_ERR_ARG, "max_tokens must be >= 0, got %lld", (long long)p->max_tokens);
    if (p->top_logprobs < 0 || p->top_logprobs > KR_MAX_TOP_LOGPROBS)
        return kr_fail(KR_ERR_ARG, "top_logprobs must be in [0, %d], got %d", KR_MAX_TOP_LOGPROBS, p->top_logprobs);
    st->prompt_tokens = (int64_t)n;
    kr_sampler *sampler = NULL;
    kr_detok *detok = NULL;
    kr_stop *stop = NULL;
    kr_status r = kr_sampler_create(&p->sampling, s->model->hp.vocab, &sampler);
    if (r == KR_OK)
        r = kr_detok_create(s->tok, true, &detok);
    if (r == KR_OK)
        r = kr_stop_create(p->stop, p->n_stop, &stop);
    bool cancelled = false;
    if (r == KR_OK)
        r = prefill(s, prompt, n, p, user, st, &cancelled);
    if (r != KR_OK)
        goto done;
    if (cancelled) {
        st->finish = KR_FINISH_CANCELLED;
        goto done;
    }

    s->out_start = n;
    size_t len = n; /* tokens in ids: the cache plus, after sampling, the newest token */
    bool stopped = false;
    double t0 = now();
    st->finish = KR_FINISH_LENGTH;
    while (1) {
        for (size_t i = 0; i < s->n_unusable; i++) /* never sample a token that cannot be shown */
            s->logits[s->unusable[i]] = -INFINITY;
        if (p->logprobs)
            memcpy(s->raw, s->logits, (size_t)s->model->hp.vocab * sizeof *s->raw);
        int32_t id = kr_sampler_sample(sampler, s->logits, s->ids, len, n);
        if (!p->ignore_eos && is_eos(s->tok, id)) {
            st->finish = KR_FINISH_STOP;
            break;
        }
        s->ids[len++] = id;
        s->out_len++;
        st->generated_tokens++;
        if (p->on_token) {
            int32_t top_ids[KR_MAX_TOP_LOGPROBS];
            float top_lp[KR_MAX_TOP_LOGPROBS];
            kr_token_info t = {.id = id};
            if (p->logprobs)
                token_logprobs(s->raw, s->model->hp.vocab, p->top_logprobs, &t, top_ids, top_lp);
            if (!p->on_token(user, &t)) {
                st->finish = KR_FINISH_CANCELLED;
                break;
            }
        }
        const char *text, *out;
        size_t tlen, olen;
        if ((r = kr_detok_push(detok, id, &text, &tlen)) != KR_OK)
            break;
        stopped = kr_stop_push(stop, text, tlen, &out, &olen);
        if (!emit_text(emit, user, out, olen)) {
            st->finish = KR_FINISH_CANCELLED;
            break;
        }
        if (stopped) {
            st->finish = KR_FINISH_STOP;
            break;
        }
        if ((p->max_tokens && st->generated_tokens >= p->max_tokens) || (int64_t)len >= s->max_ctx)
            break;
        if ((r = kr_forward(s->model, s->kv, &id, 1, false, s->logits)) != KR_OK)
            break;
    }
    st->decode_s = now() - t0;
    if (r == KR_OK && !stopped && st->finish != KR_FINISH_CANCELLED) {
        const char *text, *out;
        size_t tlen, olen;
        if ((r = kr_detok_flush(detok, &text, &tlen)) == KR_OK) {
            stopped = kr_stop_push(stop, text, tlen, &out, &olen);
            if (stopped)
                st->finish = KR_FINISH_STOP;
            if (emit_text(emit, user, out, olen) && !stopped) {
                kr_stop_flush(stop, &out, &olen);
                emit_text(emit, user, out, olen);
            }
        }
    }
done:
    kr_sampler_free(sampler);
    kr_detok_free(detok);
    kr_stop_free(stop);
    return r;
}
