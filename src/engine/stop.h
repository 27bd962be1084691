/* Stop strings matched on the generated text, across token boundaries. Text that might be the start of
 * a stop string is held back until it is known not to be, so a stream never shows part of a stop string. */
#ifndef KR_ENGINE_STOP_H
#define KR_ENGINE_STOP_H

#include <stdbool.h>
#include <stddef.h>

#include "base/status.h"

typedef struct kr_stop kr_stop;

/* stops: n strings (copied); empty strings are ignored. */
kr_status kr_stop_create(const char *const *stops, size_t n, kr_stop **out);
void kr_stop_free(kr_stop *s);

/* Appends text; *emit, *emit_len is the text now safe to show (points into the matcher, valid until the
 * next call). Returns true when a stop string was completed: the emitted text then ends right before it. */
bool kr_stop_push(kr_stop *s, const char *text, size_t len, const char **emit, size_t *emit_len);

/* At the end of generation: the held-back text, which turned out not to be a stop string. */
void kr_stop_flush(kr_stop *s, const char **emit, size_t *emit_len);

#endif
