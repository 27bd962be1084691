/* Parsing of the quantization flags (quant_options.h). */
#include "cli/quant_options.h"

#include "backend/cuda/vram_plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kr_quant_defaults(kr_quant_config *qc) {
    memset(qc, 0, sizeof *qc);
    qc->group_size = 128;
}

static int int_value(const char *flag, const char *v, const int *allowed, int n, int *out) {
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (v && end != v && !*end)
        for (int i = 0; i < n; i++)
            if (allowed[i] == x || (allowed[i] < 0 && x >= 0 && x <= 4096)) {
                *out = (int)x;
                return 0;
            }
    fprintf(stderr, "krasis: %s: '%s' is not one of the allowed values\n", flag, v ? v : "(missing)");
    return 2;
}

/* --gpu, --kv-dtype, --expert-mode, --vram, --prefill-chunk: where and how the forward runs (kr_gpu_config) */
static int gpu_flag(const char *a, const char *v, kr_gpu_config *g) {
    if (!strcmp(a, "--kv-dtype")) {
        if (v && (!strcmp(v, "bf16") || !strcmp(v, "fp8"))) {
            g->kv_fp8 = !strcmp(v, "fp8");
            return 0;
        }
        fprintf(stderr, "krasis: --kv-dtype: '%s' is not bf16 or fp8\n", v ? v : "(missing)");
        return 2;
    }
    if (!strcmp(a, "--expert-mode")) {
        g->experts_cpu = v && !strcmp(v, "cpu");
        if (g->experts_cpu || kr_expert_mode_parse(v ? v : "", &g->experts) == KR_OK)
            return 0;
        fprintf(stderr, "krasis: %s (or cpu: routed experts on the CPU)\n", kr_error());
        return 2;
    }
    if (!strcmp(a, "--prefill-chunk")) {
        char *end;
        long long n = v ? strtoll(v, &end, 10) : 0;
        if (!v || *end || n < 1 || n > KR_GPU_MAX_PREFILL_CHUNK) {
            fprintf(stderr, "krasis: --prefill-chunk: '%s' is not a token count from 1 to %d\n", v ? v : "(missing)",
                    KR_GPU_MAX_PREFILL_CHUNK);
            return 2;
        }
        g->prefill_chunk = n;
        return 0;
    }
    int64_t bytes = v ? kr_parse_size(v) : -1;
    if (bytes <= 0) {
        fprintf(stderr, "krasis: --vram: '%s' is not a size such as 16G\n", v ? v : "(missing)");
        return 2;
    }
    g->vram_cap = bytes;
    return 0;
}

/* --pp N, --gpus 0,1,2: pipeline stages and their devices (either implies --gpu; counts are checked
 * against each other when the model is put on the GPUs) */
static int pp_flag(const char *a, const char *v, kr_gpu_config *g) {
    char *end;
    if (!strcmp(a, "--pp")) {
        long n = v ? strtol(v, &end, 10) : 0;
        if (!v || end == v || *end || n < 1 || n > KR_GPU_MAX_STAGES) {
            fprintf(stderr, "krasis: --pp: '%s' is not a stage count from 1 to %d\n", v ? v : "(missing)",
                    KR_GPU_MAX_STAGES);
            return 2;
        }
        g->n_stages = (int)n;
    } else {
        int n = 0;
        const char *p = v ? v : "";
        while (*p) {
            long d = strtol(p, &end, 10);
            if (end == p || d < 0 || d > 255 || (*end && *end != ',') || (*end == ',' && !end[1]) ||
                n == KR_GPU_MAX_STAGES) {
                fprintf(stderr, "krasis: --gpus: '%s' is not a list of up to %d CUDA device numbers such as 0,1,2\n",
                        v, KR_GPU_MAX_STAGES);
                return 2;
            }
            g->devices[n++] = (int)d;
            p = *end ? end + 1 : end;
        }
        if (n == 0) {
            fprintf(stderr, "krasis: --gpus: '%s' is not a list of CUDA device numbers such as 0,1,2\n",
                    v ? v : "(missing)");
            return 2;
        }
        g->n_devices = n;
    }
    g->on = true;
    return 0;
}

int kr_quant_flag(int argc, char **argv, int *i, kr_quant_config *qc) {
    const char *a = argv[*i], *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (!strcmp(a, "--gpu")) {
        qc->gpu.on = true;
        return 1;
    }
    static const int bits[] = {4, 8}, gs[] = {32, 64, 128}, any[] = {-1};
    int *dst = !strcmp(a, "--expert-bits")    ? &qc->routed_bits
               : !strcmp(a, "--shared-bits")  ? &qc->shared_bits
               : !strcmp(a, "--dense-bits")   ? &qc->dense_bits
               : !strcmp(a, "--lm-head-bits") ? &qc->lm_head_bits
               : !strcmp(a, "--attention-bits") ? &qc->attention_bits
                                              : NULL;
    int rc;
    if (dst)
        rc = int_value(a, v, bits, 2, dst);
    else if (!strcmp(a, "--group-size")) {
        rc = int_value(a, v, gs, 3, &qc->group_size);
        qc->group_size_given = true;
    }
    else if (!strcmp(a, "--threads"))
        rc = int_value(a, v, any, 1, &qc->threads);
    else if (!strcmp(a, "--cache-dir")) {
        if (!v) {
            fprintf(stderr, "krasis: --cache-dir needs a directory\n");
            return 2;
        }
        qc->cache_dir = v;
        rc = 0;
    } else if (!strcmp(a, "--quant-config")) {
        if (!v || kr_quant_config_load(v, qc) != KR_OK) {
            fprintf(stderr, "krasis: --quant-config: %s\n", v ? kr_error() : "needs a file");
            return 2;
        }
        rc = 0;
    } else if (!strcmp(a, "--kv-dtype") || !strcmp(a, "--expert-mode") || !strcmp(a, "--vram") ||
               !strcmp(a, "--prefill-chunk"))
        rc = gpu_flag(a, v, &qc->gpu);
    else if (!strcmp(a, "--pp") || !strcmp(a, "--gpus"))
        rc = pp_flag(a, v, &qc->gpu);
    else
        return 0;
    if (rc)
        return rc;
    (*i)++;
    return 1;
}
