/* Prometheus exposition: counters end in _total, gauges are the current value; tokens/s are both the
 * last request's and the average over the server's life (tokens / seconds spent). */
#include "server/metrics.h"

#include <stdio.h>
#include <stdlib.h>

void kr_metrics_init(kr_metrics *m, int64_t kv_capacity) {
    *m = (kr_metrics){.kv_capacity = kv_capacity};
    pthread_mutex_init(&m->mu, NULL);
}

void kr_metrics_destroy(kr_metrics *m) { pthread_mutex_destroy(&m->mu); }

void kr_metrics_request(kr_metrics *m, int status) {
    pthread_mutex_lock(&m->mu);
    m->requests++;
    if (status >= 500)
        m->errors_5xx++;
    else if (status >= 400)
        m->errors_4xx++;
    pthread_mutex_unlock(&m->mu);
}

void kr_metrics_running(kr_metrics *m, int delta) {
    pthread_mutex_lock(&m->mu);
    m->running += delta;
    pthread_mutex_unlock(&m->mu);
}

void kr_metrics_generation(kr_metrics *m, const kr_gen_stats *st, int64_t kv_used) {
    pthread_mutex_lock(&m->mu);
    int64_t fresh = st->prefilled_tokens; /* a prefill cancelled part way ran fewer than prompt - cached */
    m->completed += st->finish != KR_FINISH_CANCELLED;
    m->cancelled += st->finish == KR_FINISH_CANCELLED;
    m->prompt_tokens += (uint64_t)st->prompt_tokens;
    m->cached_tokens += (uint64_t)st->cached_tokens;
    m->generated_tokens += (uint64_t)st->generated_tokens;
    m->prefilled_tokens += (uint64_t)fresh;
    m->prefill_s += st->prefill_s;
    m->decode_s += st->decode_s;
    if (st->prefill_s > 0)
        m->last_prefill_tps = (double)fresh / st->prefill_s;
    if (st->decode_s > 0 && st->generated_tokens > 1)
        m->last_decode_tps = (double)(st->generated_tokens - 1) / st->decode_s;
    m->kv_used = kv_used;
    pthread_mutex_unlock(&m->mu);
}

char *kr_metrics_render(kr_metrics *m, size_t queue_depth) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    pthread_mutex_lock(&m->mu);
#define C(name, help, v) fprintf(f, "# HELP krasis_" name " " help "\n# TYPE krasis_" name " counter\nkrasis_" name " %llu\n", (unsigned long long)(v))
#define G(name, help, fmt, v) fprintf(f, "# HELP krasis_" name " " help "\n# TYPE krasis_" name " gauge\nkrasis_" name " " fmt "\n", v)
    C("requests_total", "HTTP requests answered.", m->requests);
    C("request_errors_4xx_total", "Requests answered with a 4xx status.", m->errors_4xx);
    C("request_errors_5xx_total", "Requests answered with a 5xx status.", m->errors_5xx);
    C("generations_completed_total", "Generations that ran to a stop or a length limit.", m->completed);
    C("generations_cancelled_total", "Generations stopped because the client went away.", m->cancelled);
    C("prompt_tokens_total", "Prompt tokens received.", m->prompt_tokens);
    C("prompt_tokens_cached_total", "Prompt tokens served from the prefix cache.", m->cached_tokens);
    C("generation_tokens_total", "Tokens generated.", m->generated_tokens);
    G("prefill_tokens_per_second", "Prefill speed of the last request.", "%.3f", m->last_prefill_tps);
    G("decode_tokens_per_second", "Decode speed of the last request.", "%.3f", m->last_decode_tps);
    G("prefill_tokens_per_second_avg", "Prefill speed over the server's life.", "%.3f",
      m->prefill_s > 0 ? (double)m->prefilled_tokens / m->prefill_s : 0.0);
    G("decode_tokens_per_second_avg", "Decode speed over the server's life.", "%.3f",
      m->decode_s > 0 ? (double)m->generated_tokens / m->decode_s : 0.0);
    G("queue_depth", "Requests waiting for the engine.", "%zu", queue_depth);
    G("requests_running", "Requests the engine is working on.", "%lld", (long long)m->running);
    G("kv_cache_tokens_used", "Tokens held in the KV cache.", "%lld", (long long)m->kv_used);
    G("kv_cache_tokens_capacity", "Tokens the KV cache can hold.", "%lld", (long long)m->kv_capacity);
    G("kv_cache_usage_ratio", "Fraction of the KV cache in use.", "%.4f",
      m->kv_capacity ? (double)m->kv_used / (double)m->kv_capacity : 0.0);
#undef C
#undef G
    pthread_mutex_unlock(&m->mu);
    fclose(f);
    return buf;
}
