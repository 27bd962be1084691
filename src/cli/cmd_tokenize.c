/* krasis tokenize -t TOKENIZER (--text S | --file F) [--ids] [--special]
 * krasis detokenize -t TOKENIZER IDS...
 * Text <-> ids with a model's tokenizer, for checking krasis against other implementations. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mapfile.h"
#include "cli/commands.h"
#include "tokenizer/tokenizer.h"

#define TOKENIZE_USAGE "usage: krasis tokenize -t TOKENIZER (--text S | --file F) [--ids] [--special]\n"
#define DETOKENIZE_USAGE "usage: krasis detokenize -t TOKENIZER IDS...\n"

/* Prints a piece's bytes with control bytes, backslash and invalid UTF-8 escaped, so a line stays one line. */
static void print_escaped(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c == '\\')
            fputs("\\\\", stdout);
        else if (c < 0x20 || c == 0x7F)
            printf("\\x%02x", c);
        else if (c >= 0x80) {
            /* keep complete UTF-8 sequences, escape stray bytes */
            int need = c >= 0xF0 && c <= 0xF4 ? 3 : c >= 0xE0 ? 2 : c >= 0xC2 && c < 0xE0 ? 1 : -1;
            bool ok = need > 0;
            for (int k = 1; ok && k <= need; k++)
                ok = i + (size_t)k < n && ((unsigned char)s[i + k] & 0xC0) == 0x80;
            if (ok) {
                fwrite(s + i, 1, (size_t)need + 1, stdout);
                i += (size_t)need;
            } else
                printf("\\x%02x", c);
        } else
            putchar(c);
    }
}

int kr_cmd_tokenize(int argc, char **argv) {
    const char *tpath = NULL, *text = NULL, *file = NULL;
    bool ids_only = false, special = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-t") == 0 && i + 1 < argc)
            tpath = argv[++i];
        else if (strcmp(argv[i], "--text") == 0 && i + 1 < argc)
            text = argv[++i];
        else if (strcmp(argv[i], "--file") == 0 && i + 1 < argc)
            file = argv[++i];
        else if (strcmp(argv[i], "--ids") == 0)
            ids_only = true;
        else if (strcmp(argv[i], "--special") == 0)
            special = true;
        else {
            fprintf(stderr, "krasis tokenize: unexpected argument '%s'\n" TOKENIZE_USAGE, argv[i]);
            return 2;
        }
    }
    if (!tpath || (!text) == (!file)) {
        fprintf(stderr, TOKENIZE_USAGE);
        return 2;
    }
    char *data = NULL;
    size_t len = text ? strlen(text) : 0;
    if (file && kr_read_file(file, &data, &len) != KR_OK)
        return kr_cli_fail();
    kr_tokenizer *tok;
    if (kr_tokenizer_load(tpath, &tok) != KR_OK) {
        free(data);
        return kr_cli_fail();
    }
    int32_t *ids;
    size_t n;
    /* Special tokens written in the text are recognised only with --special, like BOS is added only then. */
    kr_encode_options opt = {.add_special = special, .parse_special = special};
    kr_status s = kr_tokenizer_encode(tok, file ? data : text, len, opt, &ids, &n);
    free(data);
    if (s != KR_OK) {
        kr_tokenizer_free(tok);
        return kr_cli_fail();
    }
    for (size_t i = 0; i < n; i++) {
        if (ids_only) {
            printf(i ? " %d" : "%d", ids[i]);
            continue;
        }
        size_t bl;
        const char *b = kr_tokenizer_token_bytes(tok, ids[i], &bl);
        printf("%d\t", ids[i]);
        print_escaped(b, bl);
        putchar('\n');
    }
    if (ids_only)
        putchar('\n');
    free(ids);
    kr_tokenizer_free(tok);
    return 0;
}

int kr_cmd_detokenize(int argc, char **argv) {
    const char *tpath = NULL;
    size_t n = 0, cap = (size_t)argc + 1;
    int32_t *ids = calloc(cap, sizeof *ids);
    if (!ids) {
        fprintf(stderr, "krasis detokenize: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
            tpath = argv[++i];
            continue;
        }
        /* ids may be given as separate arguments or one comma/space separated list */
        for (char *p = argv[i]; *p;) {
            if (*p == ',' || *p == ' ') {
                p++;
                continue;
            }
            char *end;
            errno = 0;
            long long v = strtoll(p, &end, 10);
            if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',' && *end != ' ')) {
                fprintf(stderr, "krasis detokenize: '%s' is not a token id\n" DETOKENIZE_USAGE, argv[i]);
                free(ids);
                return 2;
            }
            if (n == cap) { /* a list holds more ids than there are arguments */
                int32_t *g = realloc(ids, cap * 2 * sizeof *g);
                if (!g) {
                    free(ids);
                    fprintf(stderr, "krasis detokenize: out of memory\n");
                    return 1;
                }
                ids = g;
                cap *= 2;
            }
            ids[n++] = (int32_t)v;
            p = end;
        }
    }
    if (!tpath) {
        fprintf(stderr, DETOKENIZE_USAGE);
        free(ids);
        return 2;
    }
    kr_tokenizer *tok;
    char *text = NULL;
    if (kr_tokenizer_load(tpath, &tok) != KR_OK) {
        free(ids);
        return kr_cli_fail();
    }
    kr_status s = kr_tokenizer_decode(tok, ids, n, false, &text);
    kr_tokenizer_free(tok);
    free(ids);
    if (s != KR_OK)
        return kr_cli_fail();
    fputs(text, stdout);
    putchar('\n');
    free(text);
    return 0;
}
