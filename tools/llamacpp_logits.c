/*
 * llamacpp_logits: llama.cpp's logits for a fixed token sequence, written as .npy.
 *
 * A reference tool (not part of krasis): built by tools/make_llamacpp_fixtures.py against the
 * libllama built from the llama-cpp-python sdist in third_party/ (see tests/fixtures_gguf/README.md).
 * It uses only llama.h's public API: load the GGUF, make a context, decode the tokens with
 * logits requested for every position, write float32 [T, n_vocab] in NumPy's .npy v1.0 format.
 *
 *   llamacpp_logits MODEL.gguf OUT.npy --tokens 5,17,42,... [--threads N] [--split P]
 *                   [--kv f32|f16] [--flash-attn 0|1]
 *
 * --split P: decode the first P tokens as one batch, then the others one at a time (exercises
 *            llama.cpp's KV-cache decode path; 0 = everything in one batch, the default).
 * --kv:      KV-cache type (default f32, so that only the weight format separates llama.cpp
 *            from the float32 Hugging Face reference).
 * --flash-attn: default 0 (plain attention; llama.cpp's CPU flash attention rounds through F16).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

static void quiet_log(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level >= GGML_LOG_LEVEL_WARN) fputs(text, stderr);
}

static int parse_tokens(const char *s, llama_token **out, int *n_out) {
    int cap = 16, n = 0;
    llama_token *v = malloc(sizeof *v * (size_t)cap);
    if (!v) return -1;
    const char *p = s;
    while (*p) {
        char *end = NULL;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > 0x7fffffffL) {
            free(v);
            return -1;
        }
        if (n == cap) {
            cap *= 2;
            llama_token *nv = realloc(v, sizeof *v * (size_t)cap);
            if (!nv) {
                free(v);
                return -1;
            }
            v = nv;
        }
        v[n++] = (llama_token)x;
        p = end;
        if (*p == ',') p++;
        else if (*p) {
            free(v);
            return -1;
        }
    }
    *out = v;
    *n_out = n;
    return n > 0 ? 0 : -1;
}

/* NumPy .npy v1.0: magic, header length (u16 LE), dict padded with spaces to a multiple of 64, '\n'. */
static int write_npy(const char *path, const float *data, int rows, int cols) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "llamacpp_logits: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    char dict[128];
    int dl = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", rows, cols);
    int total = 10 + dl + 1;
    int pad = (64 - total % 64) % 64;
    unsigned short hl = (unsigned short)(dl + pad + 1);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    unsigned char hlb[2] = {(unsigned char)(hl & 0xff), (unsigned char)(hl >> 8)};
    fwrite(hlb, 1, 2, f);
    fwrite(dict, 1, (size_t)dl, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    size_t n = (size_t)rows * (size_t)cols;
    int ok = fwrite(data, sizeof(float), n, f) == n;
    if (fclose(f) != 0) ok = 0;
    if (!ok) fprintf(stderr, "llamacpp_logits: short write to %s\n", path);
    return ok ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf OUT.npy --tokens a,b,c [--threads N] [--split P] "
                        "[--kv f32|f16] [--flash-attn 0|1]\n", argv[0]);
        return 2;
    }
    const char *model_path = argv[1], *out_path = argv[2];
    llama_token *toks = NULL;
    int n_tok = 0, threads = 1, split = 0, flash = 0;
    enum ggml_type kv_type = GGML_TYPE_F32;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "llamacpp_logits: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--tokens")) {
            if (parse_tokens(v, &toks, &n_tok)) {
                fprintf(stderr, "llamacpp_logits: bad --tokens '%s' (want comma-separated ids)\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--threads")) {
            threads = atoi(v);
        } else if (!strcmp(a, "--split")) {
            split = atoi(v);
        } else if (!strcmp(a, "--flash-attn")) {
            flash = atoi(v);
        } else if (!strcmp(a, "--kv")) {
            if (!strcmp(v, "f32")) kv_type = GGML_TYPE_F32;
            else if (!strcmp(v, "f16")) kv_type = GGML_TYPE_F16;
            else {
                fprintf(stderr, "llamacpp_logits: bad --kv '%s' (f32 or f16)\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "llamacpp_logits: unknown option %s\n", a);
            return 2;
        }
    }
    if (!toks) {
        fprintf(stderr, "llamacpp_logits: --tokens is required\n");
        return 2;
    }
    if (threads < 1 || split < 0 || split > n_tok) {
        fprintf(stderr, "llamacpp_logits: bad --threads %d or --split %d (n_tokens %d)\n", threads, split, n_tok);
        return 2;
    }

    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(model_path, mp);
    if (!model) {
        fprintf(stderr, "llamacpp_logits: llama.cpp could not load %s\n", model_path);
        return 1;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int n_vocab = llama_vocab_n_tokens(vocab);
    for (int i = 0; i < n_tok; i++) {
        if (toks[i] >= n_vocab) {
            fprintf(stderr, "llamacpp_logits: token %d = %d is outside the vocabulary (%d)\n", i, toks[i], n_vocab);
            return 2;
        }
    }

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(n_tok < 64 ? 64 : n_tok);
    cp.n_batch = cp.n_ctx;
    cp.n_ubatch = cp.n_ctx;
    cp.n_seq_max = 1;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.type_k = kv_type;
    cp.type_v = kv_type;
    cp.flash_attn_type = flash ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "llamacpp_logits: could not create a llama.cpp context for %s\n", model_path);
        return 1;
    }

    float *out = malloc(sizeof(float) * (size_t)n_tok * (size_t)n_vocab);
    struct llama_batch batch = llama_batch_init(n_tok, 0, 1);
    if (!out) return 1;
    /* chunks: [0, first) as one batch, then single tokens */
    int first = split > 0 ? split : n_tok;
    int pos = 0;
    while (pos < n_tok) {
        int len = pos == 0 ? first : 1;
        batch.n_tokens = len;
        for (int j = 0; j < len; j++) {
            batch.token[j] = toks[pos + j];
            batch.pos[j] = pos + j;
            batch.n_seq_id[j] = 1;
            batch.seq_id[j][0] = 0;
            batch.logits[j] = 1;
        }
        int rc = llama_decode(ctx, batch);
        if (rc != 0) {
            fprintf(stderr, "llamacpp_logits: llama_decode failed (%d) at position %d\n", rc, pos);
            return 1;
        }
        for (int j = 0; j < len; j++) {
            const float *lg = llama_get_logits_ith(ctx, j);
            if (!lg) {
                fprintf(stderr, "llamacpp_logits: no logits for position %d\n", pos + j);
                return 1;
            }
            memcpy(out + (size_t)(pos + j) * (size_t)n_vocab, lg, sizeof(float) * (size_t)n_vocab);
        }
        pos += len;
    }
    int rc = write_npy(out_path, out, n_tok, n_vocab);
    llama_batch_free(batch);
    free(out);
    free(toks);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return rc ? 1 : 0;
}
