/* Server counters for GET /metrics, in Prometheus' text format. Updated by the connection threads
 * (requests, statuses) and the engine thread (tokens, speeds, KV use); one mutex guards them. */
#ifndef KR_SERVER_METRICS_H
#define KR_SERVER_METRICS_H

#include <pthread.h>
#include <stdint.h>

#include "engine/session.h"

typedef struct {
    pthread_mutex_t mu;
    uint64_t requests, errors_4xx, errors_5xx, completed, cancelled;
    uint64_t prompt_tokens, cached_tokens, generated_tokens;
    uint64_t prefilled_tokens; /* prompt tokens actually run (prefill speed's numerator) */
    double prefill_s, decode_s;          /* totals, for the averages */
    double last_prefill_tps, last_decode_tps;
    int64_t kv_used, kv_capacity, running;
} kr_metrics;

void kr_metrics_init(kr_metrics *m, int64_t kv_capacity);
void kr_metrics_destroy(kr_metrics *m);
void kr_metrics_request(kr_metrics *m, int status);
void kr_metrics_running(kr_metrics *m, int delta);
void kr_metrics_generation(kr_metrics *m, const kr_gen_stats *st, int64_t kv_used);
/* The text body, malloc'd. */
char *kr_metrics_render(kr_metrics *m, size_t queue_depth);

#endif
