/* jansson wrappers that turn type mismatches into kr_status errors naming file and field. */
#include "base/json.h"

#include <math.h>
#include <stdlib.h>

#include "base/mapfile.h"

kr_status kr_json_parse(const char *text, size_t len, const char *what, json_t **out) {
    json_error_t err;
    *out = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    if (!*out)
        return kr_fail(KR_ERR_FORMAT, "%s: not valid JSON: %s (line %d, column %d)", what, err.text, err.line,
                       err.column);
    return KR_OK;
}

kr_status kr_json_load_file(const char *path, json_t **out) {
    char *text;
    size_t len;
    KR_TRY(kr_read_file(path, &text, &len));
    kr_status s = kr_json_parse(text, len, path, out);
    free(text);
    if (s == KR_OK && !json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return kr_fail(KR_ERR_FORMAT, "%s: top level must be a JSON object", path);
    }
    return s;
}

const char *kr_json_type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

static kr_status missing(const char *key, const char *where) {
    return kr_fail(KR_ERR_FORMAT, "%s: required field '%s' is missing", where, key);
}

static kr_status wrong_type(const json_t *v, const char *key, const char *where, const char *want) {
    return kr_fail(KR_ERR_FORMAT, "%s: field '%s' must be %s, got %s", where, key, want, kr_json_type_name(v));
}

kr_status kr_json_opt_int(const json_t *obj, const char *key, const char *where, int64_t *out) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return KR_OK;
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return KR_OK;
    }
    /* 4096.0 written by some tools is still an integer */
    if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 9e15) {
        *out = (int64_t)json_real_value(v);
        return KR_OK;
    }
    return wrong_type(v, key, where, "an integer");
}

kr_status kr_json_req_int(const json_t *obj, const char *key, const char *where, int64_t *out) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return missing(key, where);
    return kr_json_opt_int(obj, key, where, out);
}

kr_status kr_json_opt_num(const json_t *obj, const char *key, const char *where, double *out) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return KR_OK;
    if (!json_is_number(v))
        return wrong_type(v, key, where, "a number");
    *out = json_number_value(v);
    return KR_OK;
}

kr_status kr_json_req_num(const json_t *obj, const char *key, const char *where, double *out) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return missing(key, where);
    return kr_json_opt_num(obj, key, where, out);
}

kr_status kr_json_opt_bool(const json_t *obj, const char *key, const char *where, bool *out) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return KR_OK;
    if (!json_is_boolean(v))
        return wrong_type(v, key, where, "true or false");
    *out = json_is_true(v);
    return KR_OK;
}

kr_status kr_json_opt_str(const json_t *obj, const char *key, const char *where, const char **out) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return KR_OK;
    if (!json_is_string(v))
        return wrong_type(v, key, where, "a string");
    *out = json_string_value(v);
    return KR_OK;
}

kr_status kr_json_req_str(const json_t *obj, const char *key, const char *where, const char **out) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return missing(key, where);
    return kr_json_opt_str(obj, key, where, out);
}

kr_status kr_json_opt_obj(const json_t *obj, const char *key, const char *where, json_t **out) {
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return KR_OK;
    if (!json_is_object(v))
        return wrong_type(v, key, where, "an object");
    *out = v;
    return KR_OK;
}
