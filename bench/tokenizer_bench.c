/* Encoding throughput of the Qwen3 tokenizer over ../shared/data/text on one thread: prints MB/s and
 * tokens/s (compare with tools/bench_hf_tokenizer.py). Usage: tokenizer_bench [TOKENIZER [FILE...]] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/mapfile.h"
#include "tokenizer/tokenizer.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const char *tpath = argc > 1 ? argv[1] : KRASIS_SOURCE_DIR "/../shared/data/tokenizers/qwen3/tokenizer.json";
    const char *defaults[] = {KRASIS_SOURCE_DIR "/../shared/data/text/tinyshakespeare.txt",
                              KRASIS_SOURCE_DIR "/../shared/data/text/pride_and_prejudice.txt"};
    const char **files = argc > 2 ? (const char **)argv + 2 : defaults;
    int n_files = argc > 2 ? argc - 2 : 2;
    kr_tokenizer *tok;
    if (kr_tokenizer_load(tpath, &tok) != KR_OK) {
        fprintf(stderr, "tokenizer_bench: %s\n", kr_error());
        return 1;
    }
    double total_bytes = 0, total_tokens = 0, total_time = 0;
    for (int f = 0; f < n_files; f++) {
        char *text;
        size_t len;
        if (kr_read_file(files[f], &text, &len) != KR_OK) {
            fprintf(stderr, "tokenizer_bench: %s\n", kr_error());
            kr_tokenizer_free(tok);
            return 1;
        }
        double best = 1e30;
        size_t n = 0;
        for (int rep = 0; rep < 3; rep++) { /* best of three: the first run also warms the caches */
            int32_t *ids;
            double t0 = now();
            if (kr_tokenizer_encode(tok, text, len, (kr_encode_options){0}, &ids, &n) != KR_OK) {
                fprintf(stderr, "tokenizer_bench: %s\n", kr_error());
                return 1;
            }
            double dt = now() - t0;
            free(ids);
            if (dt < best)
                best = dt;
        }
        printf("%-28s %9zu bytes %8zu tokens  %7.2f MB/s  %9.0f tokens/s  (whole file, one call)\n",
               strrchr(files[f], '/') + 1, len, n, len / best / 1e6, n / best);
        /* one call per line: what prompt-sized inputs cost, per-call setup included */
        double t0 = now();
        size_t nl = 0;
        for (size_t a = 0; a < len;) {
            const char *e = memchr(text + a, '\n', len - a);
            size_t b = e ? (size_t)(e - text) + 1 : len, m;
            int32_t *ids;
            if (kr_tokenizer_encode(tok, text + a, b - a, (kr_encode_options){0}, &ids, &m) != KR_OK) {
                fprintf(stderr, "tokenizer_bench: %s\n", kr_error());
                return 1;
            }
            free(ids);
            nl += m;
            a = b;
        }
        double dl = now() - t0;
        printf("%-28s %9zu bytes %8zu tokens  %7.2f MB/s  %9.0f tokens/s  (one call per line)\n", "", len, nl,
               len / dl / 1e6, nl / dl);
        total_bytes += (double)len;
        total_tokens += (double)n;
        total_time += best;
        free(text);
    }
    printf("krasis total: %.2f MB/s, %.0f tokens/s\n", total_bytes / total_time / 1e6, total_tokens / total_time);
    kr_tokenizer_free(tok);
    return 0;
}
