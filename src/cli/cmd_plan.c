/* krasis plan (-m MODEL | --synthetic CONFIG.json) [--vram 16G[,24G...]] [--pp N] [--kv-dtype fp8|bf16]
 *             [--ctx N] [--prefill-chunk N] [quantization flags]
 * The VRAM plan for one GPU: resident non-expert weights, workspace, KV cache capacity and the routed
 * experts' mode; with --pp N (or several --vram sizes) the split of the layers into pipeline stages,
 * one per GPU, with each stage's weights, KV cache, experts and free memory. Arithmetic only (backend/cuda/vram_plan.c); without --vram it asks the first GPU for its
 * free memory, and with no GPU it says so. Exit 1 with the numbers when nothing fits. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/vram_plan.h"
#include "cli/commands.h"
#include "cli/quant_options.h"
#include "model/config.h"
#ifdef KRASIS_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

static const char usage[] =
    "usage: krasis plan (-m MODEL | --synthetic CONFIG.json) [--vram SIZE[,SIZE...]] [--pp N] [--kv-dtype fp8|bf16]\n"
    "                   [--ctx N] [--prefill-chunk N] [quantization flags]\n"
    "  --vram SIZE          GPU memory to plan for (16G, 24GiB, 80000M); default: the first GPU's free memory\n"
    "                       with --pp N: one size for every GPU, or one per GPU (16G,24G)\n"
    "  --pp N               split the layers into N pipeline stages, one per GPU (several sizes imply it)\n"
    "  --kv-dtype fp8|bf16  KV cache storage (default fp8: E4M3 with a scale per token and head)\n"
    "  --ctx N              context the KV cache must hold before experts get VRAM (default min(max_pos, 32768))\n"
    "  --prefill-chunk N    tokens per prefill chunk, which sizes the workspace (default 4096)\n" KR_QUANT_USAGE;

static double gib(int64_t b) { return (double)b / 1073741824.0; }

static kr_status load_config(const char *path_in, kr_hparams *hp) {
    char path[4096];
    snprintf(path, sizeof path, "%s", path_in);
    size_t n = strlen(path);
    if (n < 5 || strcmp(path + n - 5, ".json"))
        snprintf(path + n, sizeof path - n, "/config.json");
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j)
        return kr_fail(KR_ERR_IO, "%s: %s (line %d)", path, err.text, err.line);
    kr_status s = kr_hparams_from_json(j, path, hp);
    json_decref(j);
    return s;
}

static const char *bits_name(int bits) { return bits == 4 ? "int4" : bits == 8 ? "int8" : "bf16"; }

/* "16G" or "16G,24G,...": up to max sizes into out; the count, or 0 on a bad list */
static int parse_sizes(const char *s, int64_t *out, int max) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    int n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (n == max || (out[n] = kr_parse_size(t)) <= 0)
            return 0;
        n++;
    }
    return n;
}

/* the per-stage table of --pp; returns the exit code */
static int print_pp(const char *model, const kr_hparams *hp, const kr_vram_request *rq, int n, const int64_t *vram,
                    const char *gpu) {
    kr_pp_plan p;
    kr_status s = kr_pp_plan_make(hp, rq, n, vram, &p);
    if (p.n_stages == 0)
        return kr_cli_fail();
    printf("krasis plan: %s (%s), %d pipeline stages%s, KV cache %s for %lld tokens (%lld bytes/token/layer)\n",
           model, hp->model_type, n, gpu, rq->kv_fp8 ? "fp8_e4m3" : "bf16", (long long)p.kv_tokens,
           (long long)p.kv_per_token_layer);
    printf("  %-5s %8s  %-11s %9s %8s %9s %10s %8s  %s\n", "stage", "VRAM GiB", "layers", "weights", "KV", "experts",
           "work+res", "free", "routed experts");
    for (int i = 0; i < n; i++) {
        const kr_pp_stage *t = &p.stage[i];
        char layers[32];
        snprintf(layers, sizeof layers, "[%d, %d)", t->first, t->last);
        printf("  %-5d %8.2f  %-11s %9.3f %8.3f %9.3f %10.3f %8.3f  %s\n", i, gib(t->vram_bytes), layers,
               gib(t->weights), gib(t->kv_bytes), gib(t->experts), gib(t->workspace + t->reserve),
               gib(t->free_bytes), t->expert_mode);
    }
    printf("  (GiB; weights: non-expert at the quantization flags' bits, the last stage with the final norm and\n"
           "   lm_head; the embedding stays in host RAM; split %s)\n",
           p.experts_balanced ? "balancing the routed experts too (all resident)"
                              : "balancing weights + KV; the routed experts take what each GPU has left");
    if (s != KR_OK) {
        printf("verdict: does not fit\n");
        return kr_cli_fail();
    }
    printf("verdict: fits (KV capacity %lld tokens on every stage)\n", (long long)p.kv_tokens);
    return 0;
}

int kr_cmd_plan(int argc, char **argv) {
    const char *model = NULL, *vram_s = NULL;
    kr_vram_request rq;
    memset(&rq, 0, sizeof rq);
    kr_quant_defaults(&rq.qc);
    rq.qc.routed_bits = 4; /* the GPU expert cache is INT4 unless told otherwise */
    rq.kv_fp8 = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int q = 0;
        if ((!strcmp(a, "-m") || !strcmp(a, "--model") || !strcmp(a, "--synthetic")) && v)
            model = argv[++i];
        else if (!strcmp(a, "--vram") && v)
            vram_s = argv[++i];
        else if (!strcmp(a, "--kv-dtype") && v) {
            v = argv[++i];
            if (strcmp(v, "fp8") && strcmp(v, "bf16")) {
                fprintf(stderr, "krasis plan: --kv-dtype %s: expected fp8 or bf16\n", v);
                return 2;
            }
            rq.kv_fp8 = !strcmp(v, "fp8");
        } else if ((!strcmp(a, "--ctx") || !strcmp(a, "--prefill-chunk")) && v) {
            char *end;
            long long n = strtoll(argv[++i], &end, 10);
            if (*end || n < 1 || n > (1LL << 30)) {
                fprintf(stderr, "krasis plan: %s %s: expected a token count from 1 to 2^30\n", a, argv[i]);
                return 2;
            }
            if (!strcmp(a, "--ctx"))
                rq.ctx_target = n;
            else
                rq.prefill_chunk = n;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            return 0;
        } else if ((q = kr_quant_flag(argc, argv, &i, &rq.qc)) != 0) {
            if (q == 2)
                return 2;
        } else {
            fprintf(stderr, "krasis plan: unexpected argument '%s'\n%s", a, usage);
            return 2;
        }
    }
    if (!model) {
        fputs(usage, stderr);
        return 2;
    }
    char gpu[300] = "";
    int64_t vram[KR_PP_MAX_STAGES];
    int n_vram = vram_s ? parse_sizes(vram_s, vram, KR_PP_MAX_STAGES) : 0;
    int n_pp = rq.qc.gpu.n_stages ? rq.qc.gpu.n_stages : n_vram > 1 ? n_vram : 1;
    if (vram_s && (n_vram == 0 || (n_vram > 1 && n_vram != n_pp))) {
        fprintf(stderr, "krasis plan: --vram %s: expected a size such as 16G, 24GiB or 80000M, or one per pipeline"
                " stage (--pp %d)\n", vram_s, n_pp);
        return 2;
    }
    if (n_pp > 1) {
        for (int i = n_vram; vram_s && i < n_pp; i++)
            vram[i] = vram[0]; /* one size: every GPU */
#ifdef KRASIS_HAVE_CUDA
        for (int i = 0; !vram_s && i < n_pp; i++) {
            kr_cuda_device_info info;
            int dev = rq.qc.gpu.n_devices > i ? rq.qc.gpu.devices[i] : i;
            if (dev >= kr_cuda_device_count() || kr_cuda_device_query(dev, &info) != KR_OK) {
                fprintf(stderr, "krasis plan: --pp %d: no GPU %d here; give --vram SIZE[,SIZE...] to plan for it\n",
                        n_pp, dev);
                return 2;
            }
            vram[i] = (int64_t)info.free_bytes;
            snprintf(gpu, sizeof gpu, " (free memory of the GPUs)");
        }
#endif
        if (!vram_s && gpu[0] == 0) {
            fprintf(stderr, "krasis plan: no GPU found here; give --vram SIZE[,SIZE...] to plan for them\n");
            return 2;
        }
        kr_hparams hp;
        if (load_config(model, &hp) != KR_OK)
            return kr_cli_fail();
        int rc = print_pp(model, &hp, &rq, n_pp, vram, gpu);
        kr_hparams_free(&hp);
        return rc;
    }
    if (vram_s) {
        rq.vram_bytes = vram[0];
    } else {
#ifdef KRASIS_HAVE_CUDA
        kr_cuda_device_info info;
        if (kr_cuda_device_count() > 0 && kr_cuda_device_query(0, &info) == KR_OK) {
            rq.vram_bytes = (int64_t)info.free_bytes;
            snprintf(gpu, sizeof gpu, " (free memory of GPU 0, %s)", info.name);
        }
#endif
        if (rq.vram_bytes == 0) {
            fprintf(stderr, "krasis plan: no GPU found here; give --vram SIZE to plan for one\n");
            return 2;
        }
    }
    kr_hparams hp;
    if (load_config(model, &hp) != KR_OK)
        return kr_cli_fail();
    kr_vram_plan p;
    kr_status s = kr_vram_plan_make(&hp, &rq, &p);
    printf("krasis plan: %s (%s), %.2f GiB VRAM%s, KV cache %s\n", model, hp.model_type, gib(rq.vram_bytes), gpu,
           rq.kv_fp8 ? "fp8_e4m3" : "bf16");
    printf("  %-30s %10s  %s\n", "component", "GiB", "as");
    printf("  %-30s %10.3f  %s\n", "attention", gib(p.attention), bits_name(rq.qc.attention_bits));
    printf("  %-30s %10.3f  %s\n", "norms", gib(p.norms), "bf16");
    printf("  %-30s %10.3f  %s\n", "routers", gib(p.routers), "bf16 (+f32 bias)");
    printf("  %-30s %10.3f  %s\n", "shared experts", gib(p.shared), bits_name(rq.qc.shared_bits));
    printf("  %-30s %10.3f  %s\n", "dense MLP layers", gib(p.dense), bits_name(rq.qc.dense_bits));
    printf("  %-30s %10.3f  %s\n", "lm_head", gib(p.lm_head), bits_name(rq.qc.lm_head_bits));
    printf("  %-30s %10.3f\n", "= non-expert weights", gib(p.nonexpert));
    printf("  %-30s %10.3f  %lld-token chunks\n", "prefill workspace", gib(p.workspace),
           (long long)(rq.prefill_chunk ? rq.prefill_chunk : 4096));
    printf("  %-30s %10.3f\n", "CUDA context reserve", gib(p.reserve));
    printf("  %-30s %10.3f  %s, %lld layers x %.3f GiB (all: %.2f GiB)\n", "routed experts (GPU cache)",
           gib(p.expert_layers_resident * p.routed_layer), bits_name(rq.qc.routed_bits), (long long)p.moe_layers,
           gib(p.routed_layer), gib(p.routed_total));
    printf("  %-30s %10.3f  %lld bytes/token -> %lld tokens (max_pos %lld)\n", "KV cache", gib(p.kv_bytes),
           (long long)p.kv_per_token, (long long)p.kv_tokens, (long long)hp.max_pos);
    printf("  %-30s %10.3f\n", "unused", gib(p.unused));
    kr_hparams_free(&hp);
    if (s != KR_OK) {
        printf("verdict: does not fit\n");
        return kr_cli_fail();
    }
    printf("expert mode: %s\n", p.expert_mode);
    printf("verdict: fits (KV capacity %lld tokens)\n", (long long)p.kv_tokens);
    return 0;
}
