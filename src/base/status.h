/* Status codes and error messages.
 * A function that can fail returns kr_status; on failure it has left a message (what, where, why)
 * that the caller can read with kr_error() or extend with kr_error_prefix(). The message lives in a
 * thread-local buffer, like errno, so independent threads never see each other's errors. */
#ifndef KR_BASE_STATUS_H
#define KR_BASE_STATUS_H

typedef enum {
    KR_OK = 0,
    KR_ERR_IO,          /* a file could not be opened, read, mapped or written */
    KR_ERR_FORMAT,      /* a file's contents are malformed or inconsistent */
    KR_ERR_UNSUPPORTED, /* well-formed input that krasis does not implement */
    KR_ERR_ARG,         /* a bad argument from the user (CLI flag, API parameter) */
    KR_ERR_NOMEM,       /* an allocation failed */
} kr_status;

/* Sets the message and returns code, so a failure is one line: return kr_fail(KR_ERR_IO, "...", ...). */
kr_status kr_fail(kr_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Puts "prefix: " in front of the current message (adds context on the way up). Returns code. */
kr_status kr_error_prefix(kr_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

const char *kr_error(void);
const char *kr_status_name(kr_status code);

/* Evaluate an expression returning kr_status and return from the caller on failure. */
#define KR_TRY(expr)                  \
    do {                              \
        kr_status kr_try_s_ = (expr); \
        if (kr_try_s_ != KR_OK)       \
            return kr_try_s_;         \
    } while (0)

#endif
