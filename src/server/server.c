/* Routing and the request life cycle on a connection thread:
 *   first call      route, method, API key, Content-Length against the limit (errors answered at once)
 *   upload calls    the body is collected (past the limit it is dropped and the answer is 413)
 *   last call       parse -> job -> queue (full: 503) -> wait for the engine's status -> response
 * Non-streaming answers wait for the whole body; streaming ones are a chunked response whose reader
 * blocks on the job. While waiting, the thread looks at its socket every 50 ms: a client that has
 * closed it cancels the job, which the engine sees at the next token. */
#define _GNU_SOURCE /* POLLRDHUP */
#include "server/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define WAIT_SLICE_MS 50

struct kr_server {
    kr_server_config c;
    struct MHD_Daemon *d;
    int port;
    long created;
};

typedef enum { R_HEALTH, R_METRICS, R_MODELS, R_MODEL, R_CHAT, R_COMPLETIONS } route;

typedef struct {
    route r;
    char *body;
    size_t len, cap;
    bool too_big;
} conn;

typedef struct {
    kr_job *j;
    struct MHD_Connection *c;
} stream;

static enum MHD_Result reply(kr_server *s, struct MHD_Connection *c, int status, const char *type, const char *body,
                             size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    kr_metrics_request(s->c.metrics, status);
    return ok;
}

static enum MHD_Result reply_json(kr_server *s, struct MHD_Connection *c, int status, json_t *o) {
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    enum MHD_Result r = body ? reply(s, c, status, "application/json", body, strlen(body)) : MHD_NO;
    free(body);
    return r;
}

static enum MHD_Result reply_error(kr_server *s, struct MHD_Connection *c, const kr_oai_error *e) {
    char *body = kr_oai_error_body(e);
    enum MHD_Result r = body ? reply(s, c, e->status, "application/json", body, strlen(body)) : MHD_NO;
    free(body);
    return r;
}

static enum MHD_Result fail(kr_server *s, struct MHD_Connection *c, int status, const char *param, const char *code,
                            const char *msg) {
    kr_oai_error e;
    kr_oai_error_set(&e, status, param, code, "%s", msg);
    return reply_error(s, c, &e);
}

/* The client has closed its end (a peek reads end of file, or the socket reports a hang-up). */
static bool client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return false;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0)
        return false;
    if (p.revents & (POLLHUP | POLLERR | POLLRDHUP))
        return true;
    char ch;
    ssize_t n = recv(ci->connect_fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static struct timespec deadline(int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    return ts;
}

/* Waits (j->mu held) for one slice or a signal; false when the client turned out to be gone. */
static bool wait_slice(kr_job *j, struct MHD_Connection *c) {
    struct timespec ts = deadline(WAIT_SLICE_MS);
    if (pthread_cond_timedwait(&j->cv, &j->mu, &ts) != ETIMEDOUT)
        return true;
    pthread_mutex_unlock(&j->mu);
    bool gone = client_gone(c);
    pthread_mutex_lock(&j->mu);
    if (gone) {
        j->cancelled = true;
        return false;
    }
    return true;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    stream *st = cls;
    kr_job *j = st->j;
    (void)pos;
    pthread_mutex_lock(&j->mu);
    while (j->pos == j->len && !j->done && !j->cancelled)
        if (!wait_slice(j, st->c))
            break;
    ssize_t n;
    if (j->pos < j->len && !j->cancelled) {
        size_t k = j->len - j->pos < max ? j->len - j->pos : max;
        memcpy(buf, j->out + j->pos, k);
        j->pos += k;
        if (j->pos == j->len) /* everything sent: reuse the buffer from the start */
            j->pos = j->len = 0;
        n = (ssize_t)k;
    } else {
        n = j->done && !j->cancelled ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
    }
    pthread_mutex_unlock(&j->mu);
    return n;
}

/* The response is gone (sent, or the connection closed): a generation still running is not wanted. */
static void stream_free(void *cls) {
    stream *st = cls;
    kr_job_cancel(st->j);
    kr_job_unref(st->j);
    free(st);
}

static enum MHD_Result run(kr_server *s, struct MHD_Connection *c, conn *k) {
    if (k->too_big) {
        char msg[128];
        snprintf(msg, sizeof msg, "the request body is larger than the limit of %zu bytes", s->c.max_body);
        return fail(s, c, 413, NULL, "request_too_large", msg);
    }
    kr_oai_request req;
    kr_oai_error e;
    if (!kr_oai_parse(k->r == R_CHAT ? KR_OAI_CHAT : KR_OAI_COMPLETION, k->body ? k->body : "", k->len, &req, &e)) {
        kr_oai_request_free(&req);
        return reply_error(s, c, &e);
    }
    bool streaming = req.stream;
    kr_job *j = kr_job_new(&req);
    if (!j) {
        kr_oai_request_free(&req);
        return fail(s, c, 500, NULL, NULL, "out of memory");
    }
    if (!kr_queue_push(s->c.queue, j)) {
        kr_job_unref(j);
        return fail(s, c, 503, NULL, "queue_full", "the server is busy: too many requests are waiting; retry later");
    }
    pthread_mutex_lock(&j->mu);
    while (!j->done && !(streaming && j->status) && !j->cancelled)
        if (!wait_slice(j, c))
            break;
    bool gone = j->cancelled;
    int status = j->status;
    pthread_mutex_unlock(&j->mu);
    if (gone) { /* nobody to answer; the engine drops the job */
        kr_job_unref(j);
        return MHD_NO;
    }
    enum MHD_Result ok;
    if (!streaming || status != 200) { /* done: the whole body is there */
        ok = reply(s, c, status, "application/json", j->out ? j->out : "", j->len);
        kr_job_unref(j);
        return ok;
    }
    stream *st = malloc(sizeof *st);
    struct MHD_Response *r =
        st ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, st, stream_free) : NULL;
    if (!r) {
        free(st);
        kr_job_cancel(j);
        kr_job_unref(j);
        return MHD_NO;
    }
    *st = (stream){.j = j, .c = c};
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    ok = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    kr_metrics_request(s->c.metrics, 200);
    return ok;
}

static enum MHD_Result get(kr_server *s, struct MHD_Connection *c, route r, const char *url) {
    if (r == R_HEALTH)
        return reply(s, c, 200, "application/json", "{\"status\":\"ok\"}", 15);
    if (r == R_METRICS) {
        char *text = kr_metrics_render(s->c.metrics, kr_queue_depth(s->c.queue));
        enum MHD_Result ok = text ? reply(s, c, 200, "text/plain; version=0.0.4", text, strlen(text)) : MHD_NO;
        free(text);
        return ok;
    }
    json_t *model = json_pack("{s:s, s:s, s:I, s:s, s:I}", "id", s->c.model_name, "object", "model", "created",
                              (json_int_t)s->created, "owned_by", "krasis", "max_model_len", (json_int_t)s->c.ctx);
    if (r == R_MODELS)
        return reply_json(s, c, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model));
    if (strcmp(url + strlen("/v1/models/"), s->c.model_name) == 0)
        return reply_json(s, c, 200, model);
    json_decref(model);
    char msg[300];
    snprintf(msg, sizeof msg, "The model '%.200s' does not exist", url + strlen("/v1/models/"));
    return fail(s, c, 404, "model", "model_not_found", msg);
}

static bool find_route(const char *url, route *r) {
    static const struct {
        const char *path;
        route r;
    } table[] = {{"/health", R_HEALTH}, {"/metrics", R_METRICS}, {"/v1/models", R_MODELS},
                 {"/v1/chat/completions", R_CHAT}, {"/v1/completions", R_COMPLETIONS}};
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        if (strcmp(url, table[i].path) == 0) {
            *r = table[i].r;
            return true;
        }
    if (strncmp(url, "/v1/models/", 11) == 0 && url[11]) {
        *r = R_MODEL;
        return true;
    }
    return false;
}

/* Compares without an early exit, so the time taken says nothing about the key. */
static bool same_key(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la; i++)
        d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return d == 0;
}

static enum MHD_Result first_call(kr_server *s, struct MHD_Connection *c, conn *k, const char *url, const char *method) {
    if (!find_route(url, &k->r)) {
        char msg[300];
        snprintf(msg, sizeof msg, "Unknown route: %.10s %.200s", method, url);
        return fail(s, c, 404, NULL, "not_found", msg);
    }
    bool post = k->r == R_CHAT || k->r == R_COMPLETIONS;
    if (strcmp(method, post ? "POST" : "GET") != 0 && !(!post && strcmp(method, "HEAD") == 0)) {
        kr_oai_error e;
        kr_oai_error_set(&e, 405, NULL, "method_not_allowed", "Method %.10s is not allowed on %.200s; use %s", method, url,
                         post ? "POST" : "GET");
        char *body = kr_oai_error_body(&e);
        struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, post ? "POST" : "GET, HEAD");
        enum MHD_Result ok = MHD_queue_response(c, 405, r);
        MHD_destroy_response(r);
        kr_metrics_request(s->c.metrics, 405);
        return ok;
    }
    if (s->c.api_key && strncmp(url, "/v1/", 4) == 0) {
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (!auth || strncmp(auth, "Bearer ", 7) != 0 || !same_key(auth + 7, s->c.api_key))
            return fail(s, c, 401, NULL, "invalid_api_key",
                        auth ? "Incorrect API key provided" : "Missing API key: send 'Authorization: Bearer KEY'");
    }
    if (!post)
        return get(s, c, k->r, url);
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > s->c.max_body) {
        char msg[128];
        snprintf(msg, sizeof msg, "the request body is larger than the limit of %zu bytes", s->c.max_body);
        return fail(s, c, 413, NULL, "request_too_large", msg);
    }
    return MHD_YES; /* the body comes next */
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    kr_server *s = cls;
    (void)version;
    conn *k = *con_cls;
    if (!k) {
        if (!(k = calloc(1, sizeof *k)))
            return MHD_NO;
        *con_cls = k;
        return first_call(s, c, k, url, method);
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (k->too_big || k->len + n > s->c.max_body) {
            k->too_big = true;
            return MHD_YES;
        }
        if (k->len + n > k->cap) {
            size_t cap = k->cap ? k->cap : 1024;
            while (cap < k->len + n)
                cap *= 2;
            char *p = realloc(k->body, cap);
            if (!p)
                return MHD_NO;
            k->body = p;
            k->cap = cap;
        }
        memcpy(k->body + k->len, upload, n);
        k->len += n;
        return MHD_YES;
    }
    return run(s, c, k);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    conn *k = *con_cls;
    if (k) {
        free(k->body);
        free(k);
    }
    *con_cls = NULL;
}

kr_status kr_server_start(const kr_server_config *c, kr_server **out) {
    struct sockaddr_storage addr = {0};
    const char *host = strcmp(c->host, "localhost") == 0 ? "127.0.0.1" : c->host;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&addr;
    if (c->port < 0 || c->port > 65535)
        return kr_fail(KR_ERR_ARG, "--port must be in [0, 65535], got %d", c->port);
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)c->port);
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)c->port);
        flags |= MHD_USE_IPv6;
    } else {
        return kr_fail(KR_ERR_ARG, "--host '%s' is not an IPv4 or IPv6 address", c->host);
    }
    kr_server *s = calloc(1, sizeof *s);
    if (!s)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    s->c = *c;
    s->created = (long)time(NULL);
    s->d = MHD_start_daemon(flags, (uint16_t)c->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &addr,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_LIMIT, 512u,
                            MHD_OPTION_CONNECTION_TIMEOUT, 300u, MHD_OPTION_END);
    if (!s->d) {
        int err = errno;
        free(s);
        return kr_fail(KR_ERR_IO, "cannot listen on %s port %d: %s", c->host, c->port,
                       err ? strerror(err) : "libmicrohttpd refused to start");
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : c->port;
    *out = s;
    return KR_OK;
}

int kr_server_port(const kr_server *s) { return s->port; }

void kr_server_stop(kr_server *s) {
    if (!s)
        return;
    MHD_stop_daemon(s->d);
    free(s);
}
