/* Internal representation shared by the tokenizer loaders (tokenizer.json, tiktoken, GGUF) and the
 * encoder/decoder in tokenizer.c. A loaded tokenizer is immutable: encode/decode take it const and keep
 * all per-call state (regex match data, word cache, BPE scratch) in a context of their own, so one
 * tokenizer can serve many threads. */
#ifndef KR_TOKENIZER_TOK_INTERNAL_H
#define KR_TOKENIZER_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "tokenizer/tokenizer.h"

typedef struct {
    char *piece;  /* as the vocabulary spells it; NULL for an id the vocabulary leaves unused */
    char *bytes;  /* what decoding it produces (byte-level mapping undone, <0xNN> resolved, ...) */
    uint32_t piece_len, bytes_len;
    bool special; /* an added token marked special (skipped by skip_special) */
    bool added;   /* an added token: matched in the text before pre-tokenization, never merged */
} tok_token;

/* Open-addressing index over the token table: slots hold (hash, id) and compare against the token's
 * piece or bytes, so the strings are stored once. */
typedef struct {
    uint64_t *slots; /* (hash32 << 32) | (id + 1); 0 = empty */
    size_t mask;
    size_t count;
    bool by_bytes;
} tok_index;

/* (left id, right id) -> (rank, merged id), for tokenizer.json / GGUF merges. */
typedef struct {
    uint64_t key;   /* ((uint64_t)left << 32 | right) + 1; 0 = empty */
    int32_t rank;
    int32_t merged;
} merge_slot;

typedef struct {
    merge_slot *slots;
    size_t mask;
    size_t count;
} merge_table;

typedef struct {
    int32_t id;
    const char *content; /* the token's piece */
    size_t len;
    bool special, normalized, lstrip, rstrip, single_word;
} tok_added;

enum { NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD, NORM_LOWERCASE, NORM_PREPEND, NORM_REPLACE };
typedef struct {
    int kind;
    char *a, *b; /* Prepend: a; Replace: a -> b */
    size_t alen, blen;
} tok_norm;

enum { PRE_SPLIT, PRE_DIGITS, PRE_PREFIX_SPACE };
enum { BEH_REMOVED, BEH_ISOLATED, BEH_MERGED_PREV, BEH_MERGED_NEXT, BEH_CONTIGUOUS };
typedef struct {
    int kind;
    pcre2_code *re;  /* PRE_SPLIT */
    int behavior;
    bool invert;
    bool individual; /* PRE_DIGITS */
} tok_pre;

enum { MODEL_BPE, MODEL_TIKTOKEN };

struct kr_tokenizer {
    char *path;
    int model;
    tok_token *tokens;
    int32_t n_tokens;
    tok_index by_piece, by_bytes; /* by_bytes: non-added tokens only (what BPE may produce) */
    merge_table merges;
    bool byte_level;    /* pieces are mapped through bytes_to_unicode before BPE */
    bool ignore_merges; /* a piece found whole in the vocabulary is one token */
    bool byte_fallback; /* unknown characters become <0xNN> tokens */
    int32_t unk_id;     /* -1 when none: unknown characters are dropped, as Hugging Face does */
    bool fuse_unk;
    int32_t byte_id[256];          /* byte-level: the token of each single byte */
    int32_t fallback_id[256];      /* byte_fallback: the <0xNN> tokens */
    uint32_t byte_to_cp[256];      /* GPT-2 bytes_to_unicode */
    int16_t cp_to_byte[324];       /* its inverse over code points < 324; -1 elsewhere */

    tok_added *added; /* sorted by first byte, then longest first */
    size_t n_added;
    uint32_t added_first[257]; /* added[added_first[b] .. added_first[b+1]) start with byte b */
    bool any_normalized_added, any_raw_added;

    tok_norm *norms;
    size_t n_norms;
    tok_pre *pres;
    size_t n_pres;
    int strip_leading; /* decoder: leading spaces removed from the whole text (Strip / Metaspace) */

    int32_t *prefix, *suffix; /* ids the post-processor adds with add_special */
    size_t n_prefix, n_suffix;
    bool have_template_post;  /* a TemplateProcessing post-processor set prefix/suffix */

    int32_t bos;
    int32_t *eos;
    size_t n_eos;
    char *bos_text, *eos_text, *chat_template;
};

/* tokenizer.c: building blocks used by the loaders. */
kr_status tok_alloc_tokens(kr_tokenizer *t, int32_t n);
kr_status tok_set_piece(kr_tokenizer *t, int32_t id, const char *piece, size_t len);
/* Sets bytes = piece with the byte-level mapping undone when every character is in the map (the
 * ByteLevel decoder's rule), else the raw piece. */
kr_status tok_bytes_from_bytelevel(kr_tokenizer *t, int32_t id);
kr_status tok_set_bytes(kr_tokenizer *t, int32_t id, const char *bytes, size_t len);
/* Builds by_piece, by_bytes, byte_id, fallback_id and the added-token table. Call after all tokens. */
kr_status tok_finish(kr_tokenizer *t);
kr_status tok_add_merge(kr_tokenizer *t, int32_t left, int32_t right, int32_t rank, int32_t merged);
int32_t tok_find_piece(const kr_tokenizer *t, const char *s, size_t len);
int32_t tok_find_bytes(const kr_tokenizer *t, const char *s, size_t len);
/* Compiles a regex (UTF | UCP, JIT). `what` names the pattern's origin in errors. */
kr_status tok_compile_regex(const char *pattern, size_t len, bool literal, const char *what, pcre2_code **out);
kr_status tok_push_split(kr_tokenizer *t, const char *pattern, int behavior, bool invert, const char *what);
kr_status tok_push_pre(kr_tokenizer *t, tok_pre p);
kr_status tok_push_norm(kr_tokenizer *t, tok_norm n);
kr_status tok_push_eos(kr_tokenizer *t, int32_t id);
/* Encodes code point cp as UTF-8 into out (4 bytes room); returns the length. */
int tok_utf8_put(uint32_t cp, char *out);
/* Reads tokenizer_config.json / generation_config.json in dir (either may be absent). */
kr_status tok_load_configs(kr_tokenizer *t, const char *dir);

/* The GPT-2 split regex (ByteLevel use_regex=true). */
#define TOK_GPT2_REGEX "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

/* Loaders (tok_hf.c, tok_vocab.c). They fill t; the caller frees it on failure. */
kr_status tok_load_hf(kr_tokenizer *t, const char *path);
kr_status tok_load_tiktoken(kr_tokenizer *t, const char *path);
kr_status tok_load_gguf(kr_tokenizer *t, const char *path);

#endif
