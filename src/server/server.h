/* The HTTP side of `krasis serve`: libmicrohttpd with a thread per connection, routing, the API key,
 * body size limits, and the hand-over of requests to the engine through the queue. A connection
 * thread only ever waits on its own job, so a slow or vanished client never holds up another. */
#ifndef KR_SERVER_SERVER_H
#define KR_SERVER_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "server/metrics.h"
#include "server/queue.h"

typedef struct {
    const char *host;    /* an IPv4 or IPv6 address, or "localhost" */
    int port;            /* 0: any free port (see kr_server_port) */
    const char *api_key; /* NULL: none */
    size_t max_body;     /* bytes */
    const char *model_name;
    int64_t ctx;
    kr_queue *queue;
    kr_metrics *metrics;
} kr_server_config;

typedef struct kr_server kr_server;

kr_status kr_server_start(const kr_server_config *c, kr_server **out);
int kr_server_port(const kr_server *s);
void kr_server_stop(kr_server *s);

#endif
