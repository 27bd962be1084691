/* Tokenizers: text <-> token ids, exactly as the reference implementations do it.
 * Sources: a Hugging Face tokenizer.json (BPE model: added/special tokens, normalizers, pre-tokenizers,
 * byte-level BPE, byte fallback, ByteLevel decoder), a tiktoken.model (Kimi-K2) with its special tokens
 * from tokenizer_config.json, or a GGUF file's tokenizer.ggml.* keys. tokenizer_config.json (and
 * generation_config.json) next to the tokenizer give BOS/EOS handling and the chat template. */
#ifndef KR_TOKENIZER_TOKENIZER_H
#define KR_TOKENIZER_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct kr_tokenizer kr_tokenizer;

/* path: a model directory (tokenizer.json, or tiktoken.model, plus tokenizer_config.json), a
 * tokenizer.json, a tiktoken.model, or a .gguf file. */
kr_status kr_tokenizer_load(const char *path, kr_tokenizer **out);
void kr_tokenizer_free(kr_tokenizer *tok);

typedef struct {
    bool add_special;   /* add BOS (and whatever the tokenizer's post-processor adds) as tokenizer_config says */
    bool parse_special; /* recognise special/added tokens written in the text (true for chat prompts) */
} kr_encode_options;

/* Encodes UTF-8 text (len bytes). Invalid UTF-8 is an error naming the byte offset.
 * *ids is malloc'd; the caller frees it. */
kr_status kr_tokenizer_encode(const kr_tokenizer *tok, const char *text, size_t len, kr_encode_options opt,
                              int32_t **ids, size_t *n);

/* Decodes ids to text (malloc'd, NUL-terminated) as the reference decoder does; skip_special drops
 * special tokens. Bytes that do not form valid UTF-8 become U+FFFD, as Hugging Face does. */
kr_status kr_tokenizer_decode(const kr_tokenizer *tok, const int32_t *ids, size_t n, bool skip_special,
                              char **text);

int64_t kr_tokenizer_vocab_size(const kr_tokenizer *tok);
/* The raw bytes a token stands for (after the byte-level mapping is undone); NULL for an invalid id. */
const char *kr_tokenizer_token_bytes(const kr_tokenizer *tok, int32_t id, size_t *len);
/* The token's string as the vocabulary spells it (e.g. "Ġthe"); NULL for an invalid id. */
const char *kr_tokenizer_piece(const kr_tokenizer *tok, int32_t id);
bool kr_tokenizer_is_special(const kr_tokenizer *tok, int32_t id);
/* Id of a token given by its exact vocabulary string (special or not); -1 when absent. */
int32_t kr_tokenizer_lookup(const kr_tokenizer *tok, const char *piece);

int32_t kr_tokenizer_bos(const kr_tokenizer *tok); /* -1 when none */
/* End-of-generation ids: eos_token of tokenizer_config.json plus generation_config.json's eos_token_id
 * list (deduplicated). */
size_t kr_tokenizer_eos(const kr_tokenizer *tok, const int32_t **ids);
/* Strings for the template's bos_token / eos_token ("" when none). */
const char *kr_tokenizer_bos_text(const kr_tokenizer *tok);
const char *kr_tokenizer_eos_text(const kr_tokenizer *tok);
/* tokenizer_config.json's chat_template (or GGUF tokenizer.chat_template); NULL when none. */
const char *kr_tokenizer_chat_template(const kr_tokenizer *tok);

/* Streaming detokenizer: feed ids one at a time, get back the text that is complete so far. Never emits
 * a partial UTF-8 sequence: incomplete bytes are held until the next token completes them (or flush). */
typedef struct kr_detok kr_detok;
kr_status kr_detok_create(const kr_tokenizer *tok, bool skip_special, kr_detok **out);
/* *text points into the stream's buffer, valid until the next call; *len may be 0. */
kr_status kr_detok_push(kr_detok *d, int32_t id, const char **text, size_t *len);
/* Emits whatever is held back (invalid bytes as U+FFFD). */
kr_status kr_detok_flush(kr_detok *d, const char **text, size_t *len);
void kr_detok_free(kr_detok *d);

#endif
