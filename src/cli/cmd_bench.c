/* krasis bench: decode and prefill speed against the machine's own read-bandwidth roofline.
 *   -m MODEL                real weights through the whole forward pass (quantized per the flags)
 *   --synthetic CONFIG.json random weights at the config's real shapes, built directly in the quantized
 *                           layout in memory: the routed + shared expert FFN of every MoE layer, which is
 *                           what decode time is made of (attention, router and lm_head are not run)
 * Decode tok/s is the median over --decode steps; prefill tok/s the median over 3 runs of --prefill tokens.
 * --depth N (with -m): the decode steps run after an untimed N-token prompt, i.e. over an N-token cache
 * (llama-bench's -d), which is where attention's share of a step shows.
 * Bytes per token count the expert bytes read (quantized values + scales) for the routed top-k and the
 * shared experts; achieved GB/s = bytes per token x decode tok/s; roofline % = that over read_bw. */
#define _GNU_SOURCE
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "backend/cpu/isa.h"
#include "backend/cpu/membw.h"
#include "backend/cpu/moe.h"
#include "backend/cpu/threadpool.h"
#include "cli/commands.h"
#ifdef KRASIS_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#include "cli/quant_options.h"
#include "model/config.h"
#include "model/model.h"

static const char *usage =
    "usage: krasis bench (-m MODEL | --synthetic CONFIG.json) [--threads N] [--decode N] [--prefill N]\n"
    "                    [--depth N] [--expert-bits 4|8] [--group-size G] [--json]\n" KR_QUANT_USAGE;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* CPU seconds all processes spent busy, from /proc/stat (-1 when unreadable) */
static double busy_seconds(void) {
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[8] = {0};
    int n = f ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) : 0;
    if (f)
        fclose(f);
    if (n != 8)
        return -1;
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static double own_cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static int64_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* ---------------------------------------------------------------- synthetic layers */

typedef struct {
    kr_qmoe q;
    kr_qexpert *experts; /* [E + 1], the last is the shared one */
    uint8_t *mem;
    size_t bytes;
} synth_layer;

typedef struct {
    synth_layer *layers;
    int n;
} fill_job;

static void fill_region(void *ctx, int w, int n) {
    fill_job *j = ctx;
    for (int l = 0; l < j->n; l++) {
        synth_layer *L = &j->layers[l];
        size_t words = L->bytes / 8, a = words * (size_t)w / (size_t)n, b = words * (size_t)(w + 1) / (size_t)n;
        uint64_t s = 0x9E3779B97F4A7C15ull ^ ((uint64_t)l << 32) ^ (uint64_t)(w + 1);
        uint64_t *p = (uint64_t *)L->mem;
        for (size_t i = a; i < b; i++)
            p[i] = rng_next(&s);
    }
}

/* Carves one expert's four pieces out of mem at *off; scales are set to small positive values. */
static void carve(kr_qexpert *e, int64_t inter, int64_t D, int bits, int gs, uint8_t *mem, size_t *off, int write_scales) {
    e->inter = inter;
    kr_qmatrix_shape(&e->w13, 2 * inter, D, bits, gs);
    kr_qmatrix_shape(&e->down, D, inter, bits, gs);
    kr_qmatrix *ms[2] = {&e->w13, &e->down};
    for (int i = 0; i < 2; i++) {
        if (mem)
            ms[i]->q = mem + *off;
        *off += (size_t)(kr_qmatrix_qbytes(ms[i]) + 63) / 64 * 64;
        if (mem) {
            ms[i]->s = (const float *)(mem + *off);
            if (write_scales)
                for (int64_t k = 0; k < ms[i]->rows * ms[i]->groups; k++)
                    ((float *)ms[i]->s)[k] = 1e-3f;
        }
        *off += (size_t)(kr_qmatrix_sbytes(ms[i]) + 63) / 64 * 64;
    }
}

typedef struct {
    double decode_tok_s, prefill_tok_s, bytes_per_token, achieved_gbs, read_bw_gbs, roofline_pct;
    double gb_weights;
    double other_load_pct; /* CPU time other processes used during the run, % of all CPUs */
    int threads;
    int64_t context; /* -m: tokens in the cache after the decode steps (--depth + --decode) */
} result;

static int run_synthetic(const char *cfg_path, const kr_quant_config *qc, int n_decode, int n_prefill, int json,
                         result *r, char *what, size_t what_n) {
    json_error_t jerr;
    json_t *cfg = json_load_file(cfg_path, 0, &jerr);
    if (!cfg) {
        fprintf(stderr, "krasis bench: %s:%d: %s\n", cfg_path, jerr.line, jerr.text);
        return 1;
    }
    kr_hparams hp;
    kr_status st = kr_hparams_from_json(cfg, cfg_path, &hp);
    json_decref(cfg);
    if (st != KR_OK)
        return kr_cli_fail();
    int bits = qc->routed_bits ? qc->routed_bits : 4, gs = qc->group_size;
    int E = hp.router.n_experts, K = hp.router.top_k, n_moe = 0;
    for (int l = 0; l < hp.n_layers; l++)
        n_moe += hp.layer_is_moe[l] != 0;
    int64_t D = hp.hidden, inter = hp.moe_intermediate, sh_inter = hp.moe_intermediate * hp.n_shared;
    size_t per_layer = 0;
    kr_qexpert tmp;
    for (int e = 0; e < E; e++)
        carve(&tmp, inter, D, bits, gs, NULL, &per_layer, 0);
    if (sh_inter)
        carve(&tmp, sh_inter, D, qc->shared_bits ? qc->shared_bits : bits, gs, NULL, &per_layer, 0);
    double need = (double)per_layer * n_moe;
    int64_t avail = mem_available();
    snprintf(what, what_n, "%s (%s), %d MoE layers x %d experts (top-%d, %lld shared), int%d g%d experts", cfg_path,
             hp.model_type, n_moe, E, K, (long long)hp.n_shared, bits, gs);
    if (avail > 0 && need > 0.9 * (double)avail) {
        fprintf(stderr,
                "krasis bench: %s: the experts need %.1f GB in int%d g%d; this machine has %.1f GB available: does not fit, "
                "refusing%s\n",
                cfg_path, need / 1e9, bits, gs, (double)avail / 1e9,
                bits == 8 ? " (try --expert-bits 4)" : " (a smaller config, or a machine with more RAM)");
        kr_hparams_free(&hp);
        return 1;
    }
    if (!json)
        fprintf(stderr, "krasis bench: building %.2f GB of random int%d g%d experts in memory...\n", need / 1e9, bits, gs);
    synth_layer *layers = calloc((size_t)n_moe, sizeof *layers);
    int rc = 1;
    for (int l = 0; layers && l < n_moe; l++) {
        synth_layer *L = &layers[l];
        L->bytes = (per_layer + (2u << 20) - 1) / (2u << 20) * (2u << 20);
        L->mem = aligned_alloc(2u << 20, L->bytes);
        L->experts = calloc((size_t)E + 1, sizeof *L->experts);
        if (!L->mem || !L->experts) {
            fprintf(stderr, "krasis bench: out of memory building layer %d of %d\n", l, n_moe);
            goto out;
        }
        madvise(L->mem, L->bytes, MADV_HUGEPAGE);
    }
    fill_job fj = {layers, n_moe};
    kr_pool_run(fill_region, &fj);
    for (int l = 0; l < n_moe; l++) {
        synth_layer *L = &layers[l];
        size_t off = 0;
        for (int e = 0; e < E; e++)
            carve(&L->experts[e], inter, D, bits, gs, L->mem, &off, 1);
        if (sh_inter)
            carve(&L->experts[E], sh_inter, D, qc->shared_bits ? qc->shared_bits : bits, gs, L->mem, &off, 1);
        kr_qmoe_place(L->experts, E);
        L->q = (kr_qmoe){D, gs, E, L->experts, sh_inter ? &L->experts[E] : NULL};
    }
    r->gb_weights = need / 1e9;
    r->bytes_per_token = (double)n_moe * ((double)K * (double)kr_qexpert_bytes(&layers[0].experts[0]) +
                                          (sh_inter ? (double)kr_qexpert_bytes(&layers[0].experts[E]) : 0));
    int64_t T = n_prefill > 1 ? n_prefill : 1;
    float *x = malloc((size_t)(T * D) * sizeof *x), *out = malloc((size_t)(T * D) * sizeof *out);
    float *w = malloc((size_t)(T * K) * sizeof *w);
    int *idx = malloc((size_t)(T * K) * sizeof *idx);
    double *times = malloc((size_t)(n_decode + 3) * sizeof *times);
    kr_qmoe_ws *ws = NULL;
    if (!x || !out || !w || !idx || !times || kr_qmoe_ws_reserve(&ws, &layers[0].q, T, K) != KR_OK) {
        fprintf(stderr, "krasis bench: out of memory\n");
        goto out2;
    }
    uint64_t s = 12345;
    for (int64_t i = 0; i < T * D; i++)
        x[i] = (float)((int)(rng_next(&s) % 2001) - 1000) * 1e-3f;
    for (int64_t i = 0; i < T * K; i++)
        w[i] = 1.0f / (float)K;
    /* random distinct experts per token and layer: every step reads fresh weights, as real routing does */
#define ROUTE(ntok)                                                       \
    for (int64_t t = 0; t < (ntok); t++)                                  \
        for (int k = 0; k < K; k++) {                                     \
            int e, dup;                                                   \
            do {                                                          \
                e = (int)(rng_next(&s) % (uint64_t)E);                    \
                dup = 0;                                                  \
                for (int j = 0; j < k; j++)                               \
                    dup |= idx[t * K + j] == e;                           \
            } while (dup);                                                \
            idx[t * K + k] = e;                                           \
        }
    for (int it = -2; it < n_decode; it++) { /* two warm-up steps */
        double t0 = now_s(), route_t = 0;
        for (int l = 0; l < n_moe; l++) {
            double r0 = now_s();
            ROUTE(1);
            route_t += now_s() - r0;
            kr_qmoe_forward(&layers[l].q, ws, x, 1, idx, w, K, out);
        }
        if (it >= 0)
            times[it] = now_s() - t0 - route_t;
    }
    r->decode_tok_s = 1.0 / median(times, n_decode);
    if (n_prefill > 0) {
        for (int rep = 0; rep < 3; rep++) {
            double tt = 0;
            for (int l = 0; l < n_moe; l++) {
                ROUTE(T);
                double t0 = now_s();
                kr_qmoe_forward(&layers[l].q, ws, x, T, idx, w, K, out);
                tt += now_s() - t0;
            }
            times[rep] = tt;
        }
        r->prefill_tok_s = (double)T / median(times, 3);
    }
#undef ROUTE
    rc = 0;
out2:
    kr_qmoe_ws_free(ws);
    free(x);
    free(out);
    free(w);
    free(idx);
    free(times);
out:
    for (int l = 0; layers && l < n_moe; l++) {
        free(layers[l].mem);
        free(layers[l].experts);
    }
    free(layers);
    kr_hparams_free(&hp);
    return rc;
}

static int run_model(const char *dir, const kr_quant_config *qc, int n_decode, int n_prefill, int depth, result *r,
                     char *what, size_t what_n) {
    kr_model *m = NULL;
    kr_kv_cache *kv = NULL;
    if (kr_model_open(dir, &m) != KR_OK || kr_model_quantize(m, qc) != KR_OK || kr_kv_cache_create(m, &kv) != KR_OK) {
        kr_kv_cache_free(kv);
        kr_model_close(m);
        return kr_cli_fail();
    }
    snprintf(what, what_n, "%s (%s), experts %s", dir, m->hp.model_type,
             qc->routed_bits ? (qc->routed_bits == 4 ? "int4" : "int8") : "as loaded (float32 path)");
    int64_t T = n_prefill > 0 ? n_prefill : 1, n_ids = T > depth ? T : depth;
    int32_t *ids = malloc((size_t)n_ids * sizeof *ids);
    float *logits = malloc((size_t)(m->hp.vocab) * sizeof *logits);
    double *times = malloc((size_t)(n_decode + 3) * sizeof *times);
    if (!ids || !logits || !times) {
        free(ids), free(logits), free(times);
        kr_kv_cache_free(kv);
        kr_model_close(m);
        fprintf(stderr, "krasis bench: out of memory\n");
        return 1;
    }
    for (int64_t i = 0; i < n_ids; i++)
        ids[i] = (int32_t)((i * 7919 + 13) % m->hp.vocab);
    kr_status s = KR_OK;
    for (int rep = 0; rep < 3 && s == KR_OK; rep++) {
        kr_kv_cache_reset(kv);
        double t0 = now_s();
        s = kr_forward(m, kv, ids, T, false, logits);
        times[rep] = now_s() - t0;
    }
    r->prefill_tok_s = (double)T / median(times, 3);
    /* the decode steps' context, untimed, in pieces of 512 (a prompt's scratch grows with its length) */
    kr_kv_cache_reset(kv);
    for (int64_t at = 0; s == KR_OK && at < depth; at += 512)
        s = kr_forward(m, kv, ids + at, depth - at < 512 ? depth - at : 512, false, logits);
    for (int it = 0; it < n_decode && s == KR_OK; it++) {
        int32_t id = (int32_t)((it * 31 + 5) % m->hp.vocab);
        double t0 = now_s();
        s = kr_forward(m, kv, &id, 1, false, logits);
        times[it] = now_s() - t0;
    }
    r->context = kv->len;
    if (s == KR_OK) {
        r->decode_tok_s = 1.0 / median(times, n_decode);
        /* expert bytes exactly; everything else the float path reads once per token, estimated from the
         * checkpoint: all non-routed weights except the embedding table (one row per token) */
        double routed_frac = m->stats.params_total ? (double)m->stats.params_routed / (double)m->stats.params_total : 0;
        double other = (double)m->stats.bytes_total * (1 - routed_frac) - (double)m->hp.vocab * m->hp.hidden * 2;
        double expert = (double)kr_model_expert_bytes_per_token(m);
        if (!expert)
            expert = (double)m->stats.bytes_total * routed_frac * m->hp.router.top_k / m->hp.router.n_experts;
        r->bytes_per_token = expert + (other > 0 ? other : 0);
    }
    free(ids);
    free(logits);
    free(times);
    kr_kv_cache_free(kv);
    kr_model_close(m);
    return s == KR_OK ? 0 : kr_cli_fail();
}

int kr_cmd_bench(int argc, char **argv) {
    const char *model = NULL, *synthetic = NULL;
    int n_decode = 32, n_prefill = 128, depth = 0, json = 0;
    kr_quant_config qc;
    kr_quant_defaults(&qc);
    qc.group_size = 32;
    int bits_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int q = kr_quant_flag(argc, argv, &i, &qc);
        if (q == 2)
            return 2;
        if (q == 1) {
            bits_given |= !strcmp(a, "--expert-bits");
            continue;
        }
        if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && v)
            model = argv[++i];
        else if (!strcmp(a, "--synthetic") && v)
            synthetic = argv[++i];
        else if (!strcmp(a, "--decode") || !strcmp(a, "--prefill") || !strcmp(a, "--depth")) {
            /* token counts: a typo must not become 0 (atoi) and silently change what is measured */
            char *end;
            long n = v ? strtol(v, &end, 10) : -1;
            if (!v || end == v || *end || n < (strcmp(a, "--decode") ? 0 : 1) || n > (1 << 20)) {
                fprintf(stderr, "krasis bench: %s: '%s' is not a token count from %d to 1048576\n", a,
                        v ? v : "(missing)", strcmp(a, "--decode") ? 0 : 1);
                return 2;
            }
            *(!strcmp(a, "--decode") ? &n_decode : !strcmp(a, "--prefill") ? &n_prefill : &depth) = (int)n;
            i++;
        } else if (!strcmp(a, "--json"))
            json = 1;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            return 0;
        } else {
            fprintf(stderr, "krasis bench: unexpected argument '%s'\n%s", a, usage);
            return 2;
        }
    }
    if (!model == !synthetic) {
        fprintf(stderr, "krasis bench: give one of -m MODEL and --synthetic CONFIG.json\n%s", usage);
        return 2;
    }
    if (synthetic && depth) {
        fprintf(stderr, "krasis bench: --depth needs -m MODEL (--synthetic runs no attention, so a cache changes "
                        "nothing)\n");
        return 2;
    }
    if (!bits_given)
        qc.routed_bits = 4;
    if (kr_pool_init(qc.threads) != KR_OK)
        return kr_cli_fail();
    kr_pool_pin_caller();
    result r = {0};
    r.threads = kr_pool_threads();
    /* measured first, on an unfragmented heap, with the same workers the kernels use */
    if (kr_read_bandwidth((size_t)1 << 30, 5, &r.read_bw_gbs) != KR_OK)
        return kr_cli_fail();
    char what[1024];
    double busy0 = busy_seconds(), own0 = own_cpu_seconds(), wall0 = now_s();
    int rc = synthetic ? run_synthetic(synthetic, &qc, n_decode, n_prefill, json, &r, what, sizeof what)
                       : run_model(model, &qc, n_decode, n_prefill, depth, &r, what, sizeof what);
    if (rc)
        return rc;
    double busy1 = busy_seconds(), own1 = own_cpu_seconds(), wall1 = now_s();
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (busy0 >= 0 && busy1 >= 0 && ncpu > 0) {
        double other = (busy1 - busy0) - (own1 - own0);
        r.other_load_pct = other > 0 ? 100 * other / ((wall1 - wall0) * (double)ncpu) : 0;
    }
    r.achieved_gbs = r.bytes_per_token * r.decode_tok_s / 1e9;
    r.roofline_pct = 100 * r.achieved_gbs / r.read_bw_gbs;
    const char *isa = kr_kernels_get()->name;
    char gpu[300] = "none"; /* the device of a --gpu run */
#ifdef KRASIS_HAVE_CUDA
    kr_cuda_device_info info;
    if (qc.gpu.on && kr_cuda_device_query(0, &info) == KR_OK)
        snprintf(gpu, sizeof gpu, "%s", info.name);
#endif
    if (json) {
        printf("{\"gpu\": \"%s\", \"mode\": \"%s\", \"decode_tok_s\": %.4f, \"prefill_tok_s\": %.4f, \"bytes_per_token\": %.0f, "
               "\"achieved_gbs\": %.3f, \"read_bw_gbs\": %.3f, \"roofline_pct\": %.2f, \"threads\": %d, "
               "\"isa\": \"%s\", \"expert_bits\": %d, \"group_size\": %d, \"decode_steps\": %d, \"prefill_tokens\": %d, "
               "\"depth\": %d, \"context\": %lld, \"other_load_pct\": %.1f}\n",
               gpu, synthetic ? "synthetic" : "model", r.decode_tok_s, r.prefill_tok_s, r.bytes_per_token, r.achieved_gbs,
               r.read_bw_gbs, r.roofline_pct, r.threads, isa, qc.routed_bits, qc.group_size, n_decode, n_prefill,
               depth, (long long)r.context, r.other_load_pct);
        return 0;
    }
    printf("krasis bench: %s\n", what);
    if (synthetic)
        printf("  (synthetic: the expert FFN of every MoE layer, %.2f GB of weights; attention/router/lm_head not run)\n",
               r.gb_weights);
    printf("  %-26s %10d\n  %-26s %10s\n", "threads", r.threads, "isa", isa);
    if (qc.gpu.on)
        printf("  %-26s %s (bytes, GB/s and roofline below count the CPU's share only)\n", "gpu", gpu);
    printf("  %-26s %10.2f   (median of %d steps, over a %d-token cache)\n", "decode tok/s", r.decode_tok_s, n_decode,
           depth);
    printf("  %-26s %10.2f   (%d tokens, median of 3)\n", "prefill tok/s", r.prefill_tok_s, n_prefill);
    printf("  %-26s %10.1f MB\n", "bytes read per token", r.bytes_per_token / 1e6);
    printf("  %-26s %10.2f GB/s\n", "achieved", r.achieved_gbs);
    printf("  %-26s %10.2f GB/s  (all %d threads, best of 5 passes over 1 GiB)\n", "machine read bandwidth",
           r.read_bw_gbs, r.threads);
    printf("  %-26s %10.1f %%\n", "roofline", r.roofline_pct);
    if (r.other_load_pct > 10)
        printf("  warning: other processes used %.0f%% of the CPUs during this run; a worker sharing its core stalls\n"
               "  every barrier it is descheduled at, so these numbers understate this machine\n", r.other_load_pct);
    return 0;
}
