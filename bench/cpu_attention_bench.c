/* CPU decode attention over a long cache: one decode token of one layer (kr_attend_batch) at the shapes of
 * DeepSeek-V2-Lite (MLA absorbed: 16 heads over one shared [512 latent | 64 rope] row per position) and
 * Qwen3-30B-A3B (GQA: 32 query heads over 4 KV heads of 128), at several context lengths. Prints ms per
 * layer, the cache bytes per second (each cached byte counted once) and that as a share of the machine's
 * read bandwidth (a decode step must read the whole window once), and the multiply-add rate: MLA's 16
 * heads over one row make it compute-bound (2 x 16 x 1088 FLOP per 2304-byte row), GQA's 8 per group
 * nearly so.
 *   cpu_attention_bench [--threads N] [--ctx 1024,4096,16384] [--repeats R] */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cpu/attention.h"
#include "backend/cpu/membw.h"
#include "backend/cpu/threadpool.h"

typedef struct {
    const char *name;
    int64_t heads, kv_heads, qk_dim, v_dim;
} shape;

/* MLA (kv_heads 1): one [576] row per position, the values its first 512 floats. GQA: separate key and
 * value caches, head-major as krasis keeps them (model.h). */
static const shape shapes[] = {
    {"DeepSeek-V2-Lite MLA (16 heads, shared 576-float row)", 16, 1, 576, 512},
    {"Qwen3-30B-A3B GQA (32 q / 4 kv heads of 128)", 32, 4, 128, 128},
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int threads = 0, repeats = 7;
    const char *ctx_list = "1024,4096,16384";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            ctx_list = argv[++i];
        else if (!strcmp(argv[i], "--repeats") && i + 1 < argc)
            repeats = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--threads N] [--ctx 1024,4096] [--repeats R]\n", argv[0]);
            return 2;
        }
    }
    if (kr_pool_init(threads) != KR_OK || repeats < 1 || repeats > 100) {
        fprintf(stderr, "cpu_attention_bench: bad --threads or --repeats\n");
        return 2;
    }
    double bw = 0;
    if (kr_read_bandwidth((size_t)1 << 30, 5, &bw) != KR_OK)
        return 1;
    printf("threads %d, read bandwidth %.1f GB/s\n", kr_pool_threads(), bw);
    printf("%-55s %7s %9s %8s %9s %8s\n", "shape", "ctx", "ms/layer", "GB/s", "roofline", "GFLOP/s");
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const shape *sh = &shapes[si];
        char list[256];
        snprintf(list, sizeof list, "%s", ctx_list);
        for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
            int64_t ctx = atoll(tok);
            if (ctx < 1 || ctx > (1 << 20)) {
                fprintf(stderr, "cpu_attention_bench: --ctx value %s out of range\n", tok);
                return 2;
            }
            bool mla = sh->kv_heads == 1;
            /* keys, then (GQA) values: each cached float is read once per step */
            size_t cache_floats = (size_t)ctx * (size_t)(sh->kv_heads * sh->qk_dim) * (mla ? 1 : 2);
            float *cache = malloc(cache_floats * sizeof *cache);
            float *q = malloc((size_t)(sh->heads * sh->qk_dim) * sizeof *q);
            float *out = malloc((size_t)(sh->heads * sh->v_dim) * sizeof *out);
            if (!cache || !q || !out) {
                fprintf(stderr, "cpu_attention_bench: out of memory at ctx %lld\n", (long long)ctx);
                return 1;
            }
            srand(1);
            for (size_t i = 0; i < cache_floats; i++)
                cache[i] = (float)rand() / RAND_MAX - 0.5f;
            for (int64_t i = 0; i < sh->heads * sh->qk_dim; i++)
                q[i] = (float)rand() / RAND_MAX - 0.5f;
            kr_attention_batch b = {.q = q, .q_t = sh->heads * sh->qk_dim, .q_h = sh->qk_dim, .qk_dim = sh->qk_dim,
                                    .k = cache, .v = mla ? cache : cache + cache_floats / 2,
                                    .k_stride = sh->qk_dim, .v_stride = sh->qk_dim,
                                    .k_head = mla ? 0 : ctx * sh->qk_dim, .v_head = mla ? 0 : ctx * sh->v_dim,
                                    .v_dim = sh->v_dim, .T = 1, .H = sh->heads,
                                    .group = mla ? 1 : sh->heads / sh->kv_heads, .pos0 = ctx - 1, .scale = 0.05f,
                                    .out = out, .o_t = sh->heads * sh->v_dim, .o_h = sh->v_dim};
            float *scores = malloc((size_t)kr_attention_scratch(&b) * sizeof *scores);
            if (!scores) {
                fprintf(stderr, "cpu_attention_bench: out of memory at ctx %lld\n", (long long)ctx);
                return 1;
            }
            double t[100];
            kr_attend_batch(&b, scores); /* warm */
            for (int r = 0; r < repeats; r++) {
                double t0 = now_s();
                kr_attend_batch(&b, scores);
                t[r] = now_s() - t0;
            }
            qsort(t, (size_t)repeats, sizeof *t, cmp_double);
            double med = t[repeats / 2], gbs = (double)cache_floats * sizeof(float) / med / 1e9;
            double gflops = 2.0 * (double)sh->heads * (double)ctx * (double)(sh->qk_dim + sh->v_dim) / med / 1e9;
            printf("%-55s %7lld %9.3f %8.1f %8.1f%% %8.1f\n", sh->name, (long long)ctx, med * 1e3, gbs, 100 * gbs / bw,
                   gflops);
            free(cache);
            free(q);
            free(out);
            free(scores);
        }
    }
    kr_pool_shutdown();
    return 0;
}
