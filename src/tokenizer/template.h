/* Chat templates: an interpreter for the subset of Jinja2 that real chat templates use, producing
 * byte-for-byte what Python's jinja2 renders (with the settings transformers uses: trim_blocks and
 * lstrip_blocks on, keep_trailing_newline off... as transformers' apply_chat_template configures it).
 * A template that uses something unsupported fails with an error naming the construct and its line. */
#ifndef KR_TOKENIZER_TEMPLATE_H
#define KR_TOKENIZER_TEMPLATE_H

#include <jansson.h>

#include "base/status.h"

typedef struct kr_template kr_template;

/* Parses template source; `name` (a file name) is used in errors: "NAME:LINE: ...". */
kr_status kr_template_parse(const char *source, const char *name, kr_template **out);
void kr_template_free(kr_template *t);

/* Renders with the variables of `context` (a JSON object: messages, tools, add_generation_prompt,
 * bos_token, eos_token, any template kwargs such as enable_thinking). *out is malloc'd. */
kr_status kr_template_render(const kr_template *t, const json_t *context, char **out);

#endif
