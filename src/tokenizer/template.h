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

/* Added by the template module: builds the render context as transformers' apply_chat_template does,
 * so that a caller with OpenAI-style messages gets the prompt Python would give. `messages` (an array
 * of objects) is copied with null fields dropped and the reasoning aliases filled (a message with
 * reasoning_content, thinking or reasoning gets both `thinking` and `reasoning_content`); `tools` (NULL:
 * none) becomes `tools` (null when absent), `documents` is null, then add_generation_prompt, bos_token /
 * eos_token (NULL: left undefined, as for a tokenizer without one), and `kwargs` (NULL or an object)
 * on top of everything. *out is a new reference. */
kr_status kr_template_chat_context(const json_t *messages, const json_t *tools, int add_generation_prompt,
                                   const json_t *kwargs, const char *bos_token, const char *eos_token, json_t **out);

#endif
