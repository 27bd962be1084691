/* Typed access to JSON objects (jansson) with errors that name the file and the field.
 * Each getter returns KR_OK and stores the value, or KR_ERR_FORMAT with "FILE: field 'K' must be ...".
 * "opt" getters leave *out untouched (the caller's default) when the key is absent or null. */
#ifndef KR_BASE_JSON_H
#define KR_BASE_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"

/* Parses a JSON document held in memory; `what` names it in errors (a path, "header of X"). */
/* "an object", "an array", "a string", "an integer", "a number", "a boolean" or "null": for messages */
const char *kr_json_type_name(const json_t *v);
kr_status kr_json_parse(const char *text, size_t len, const char *what, json_t **out);
kr_status kr_json_load_file(const char *path, json_t **out);

kr_status kr_json_req_int(const json_t *obj, const char *key, const char *where, int64_t *out);
kr_status kr_json_opt_int(const json_t *obj, const char *key, const char *where, int64_t *out);
kr_status kr_json_req_num(const json_t *obj, const char *key, const char *where, double *out);
kr_status kr_json_opt_num(const json_t *obj, const char *key, const char *where, double *out);
kr_status kr_json_opt_bool(const json_t *obj, const char *key, const char *where, bool *out);
/* *out points into obj (valid while obj lives). */
kr_status kr_json_req_str(const json_t *obj, const char *key, const char *where, const char **out);
kr_status kr_json_opt_str(const json_t *obj, const char *key, const char *where, const char **out);
/* An object, or NULL when absent or null. */
kr_status kr_json_opt_obj(const json_t *obj, const char *key, const char *where, json_t **out);

#endif
