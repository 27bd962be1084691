/* Thread-local error message storage for kr_status failures. */
#include "base/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define KR_ERROR_CAP 2048
static _Thread_local char error_message[KR_ERROR_CAP];

kr_status kr_fail(kr_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    return code;
}

kr_status kr_error_prefix(kr_status code, const char *fmt, ...) {
    char prefix[KR_ERROR_CAP], old[KR_ERROR_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, error_message, sizeof old);
    snprintf(error_message, sizeof error_message, "%s: %s", prefix, old);
    return code;
}

const char *kr_error(void) { return error_message; }

const char *kr_status_name(kr_status code) {
    switch (code) {
    case KR_OK: return "ok";
    case KR_ERR_IO: return "I/O error";
    case KR_ERR_FORMAT: return "format error";
    case KR_ERR_UNSUPPORTED: return "unsupported";
    case KR_ERR_ARG: return "bad argument";
    case KR_ERR_NOMEM: return "out of memory";
    }
    return "unknown error";
}
