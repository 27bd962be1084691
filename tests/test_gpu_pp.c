/* Pipeline parallelism on one GPU (model/gpu_model.c, --pp N): the layers split into stages that all
 * run on device 0 (the same device listed twice or three times), each with its own stream, cuBLASLt
 * handle, weights, KV cache layers, buffers and expert residency, the residual stream handed from stage
 * to stage by the device copy the peer path uses (cudaMemcpyPeerAsync) and, forced, through pinned host
 * memory. The kernels and their order are those of one stage, so the logits must equal the one-stage
 * GPU forward's to float32 rounding: every row's largest difference <= 1e-4 of its largest |logit| (seen
 * on one stage vs one stage: 0), and greedy tokens equal. Models: an MLA fixture (dsv2_lite), a GQA one
 * (qwen3_moe) and the demo model (models/tiny-moe), with float weights and hybrid experts, and the demo
 * with INT8 experts in VRAM (persistent, grouped:2: each stage its own residency) and 4-token prompt
 * chunks. Also the refusals of bad --pp / --gpus values that need a GPU to reach. KRASIS_PP_DEVICES=0,1
 * puts the stages on those devices instead (peer copies between GPUs). Exits 77 without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_backend.h"
#include "model/model.h"
#include "model_run.h"
#include "ref_check.h"
#include "test.h"
#include "tmpdir.h"

/* Experts on the CPU are deterministic, so stages must not change a logit beyond float noise. Experts on
 * the GPU sum each token's expert outputs with atomics in whatever order the blocks finish, and a one-ulp
 * f32 difference can flip a bf16 rounding of the hidden state (2^-8), compounding over six layers. */
#define PP_TOL 1e-4
#define PP_TOL_GPU_EXPERTS 2e-3

static char cache_dir[512];

/* KRASIS_PP_DEVICES=0,1 (a machine with several GPUs): the stages' devices, cycled; else all on 0 */
static int pp_devices[KR_GPU_MAX_STAGES], n_pp_devices;

/* stages 0 / 1: one stage as without --pp; n > 1: n stages (on device 0 unless KRASIS_PP_DEVICES);
 * bounce: through host memory */
static kr_quant_config config(int expert_bits, const char *mode, int stages, bool bounce) {
    kr_quant_config qc = {.group_size = 32, .threads = 2, .cache_dir = cache_dir, .routed_bits = expert_bits};
    qc.gpu = (kr_gpu_config){.on = true, .experts_cpu = !strcmp(mode, "cpu"), .experts_min_tokens = 1,
                             .prefill_chunk = 4, .n_stages = stages > 1 ? stages : 0,
                             .n_devices = stages > 1 ? stages : 0, .pp_host_bounce = bounce};
    if (!qc.gpu.experts_cpu && kr_expert_mode_parse(mode, &qc.gpu.experts) != KR_OK)
        CHECK(0, "%s", kr_error());
    for (int s = 0; stages > 1 && n_pp_devices && s < stages; s++)
        qc.gpu.devices[s] = pp_devices[s % n_pp_devices];
    return qc;
}

/* The logits of `stages` stages (direct or bounced hand-off) against one stage's, same quantization. */
static void pp_vs_one(const char *path, const int32_t *prompt, int np, const int32_t *dec, int nd, int expert_bits,
                      const char *mode, int stages, bool bounce) {
    kr_quant_config q1 = config(expert_bits, mode, 1, false), qn = config(expert_bits, mode, stages, bounce);
    kr_model *a = open_model(path, &q1), *b = a ? open_model(path, &qn) : NULL;
    if (b) {
        int64_t V = a->hp.vocab, rows = np + nd;
        float *la = malloc((size_t)(rows * V) * sizeof(float)), *lb = malloc((size_t)(rows * V) * sizeof(float));
        kr_status s = run_logits(a, prompt, np, dec, nd, la);
        CHECK(s == KR_OK, "%s: one stage: %s", path, kr_error());
        kr_status t = run_logits(b, prompt, np, dec, nd, lb);
        CHECK(t == KR_OK, "%s: %d stages: %s", path, stages, kr_error());
        int worst_row = 0;
        double worst = s == KR_OK && t == KR_OK ? rows_rel_err(lb, la, rows, V, &worst_row) : 0;
        double tol = strcmp(mode, "cpu") ? PP_TOL_GPU_EXPERTS : PP_TOL;
        CHECK(worst <= tol, "%s, experts %s (INT%d), %d stages%s: row %d's largest difference is %.3g of its "
              "largest logit (max %g)", path, mode, expert_bits, stages, bounce ? " through host memory" : "",
              worst_row, worst, tol);
        printf("%s, experts %s (INT%d), --pp %d%s: largest relative difference %.3g over %lld rows\n", path, mode,
               expert_bits, stages, bounce ? " (host bounce)" : "", worst, (long long)rows);
        free(la);
        free(lb);
    }
    kr_model_close(b);
    kr_model_close(a);
}

static void fixture(const char *name) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/%s", KRASIS_SOURCE_DIR, name);
    fixture_ref r;
    if (fixture_ref_load(dir, &r) != KR_OK) {
        CHECK(0, "%s: %s", name, kr_error());
        return;
    }
    pp_vs_one(dir, r.prompt, r.np, r.decode, r.nd, 0, "cpu", 2, false);
    pp_vs_one(dir, r.prompt, r.np, r.decode, r.nd, 0, "cpu", 2, true);
    pp_vs_one(dir, r.prompt, r.np, r.decode, r.nd, 0, "cpu", 3, false);
    fixture_ref_free(&r);
}

static void demo(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/tiny-moe", KRASIS_SOURCE_DIR);
    static const int32_t prompt[] = {1, 5, 9, 2, 7, 3, 11, 4, 6, 8}, dec[] = {12, 3, 17, 5};
    pp_vs_one(dir, prompt, 10, dec, 4, 0, "cpu", 2, false);
    pp_vs_one(dir, prompt, 10, dec, 4, 0, "cpu", 2, true);
    pp_vs_one(dir, prompt, 10, dec, 4, 8, "persistent", 2, false);
    /* chunked, not grouped:2: a stage of 3 MoE layers would run grouped:2 as persistent (2N >= layers);
     * chunked keeps the second stage (first MoE layer 2) chunked */
    pp_vs_one(dir, prompt, 10, dec, 4, 8, "chunked", 2, true);
    pp_vs_one(dir, prompt, 10, dec, 4, 8, "cpu", 3, false);

    /* greedy tokens: one stage, two, two through host memory */
    int32_t want[32], got[32];
    const int steps = 24;
    kr_quant_config q1 = config(0, "cpu", 1, false);
    kr_model *m = open_model(dir, &q1);
    kr_status s = m ? run_greedy(m, prompt, 10, steps, want) : KR_ERR_ARG;
    CHECK(s == KR_OK, "demo greedy, one stage: %s", kr_error());
    kr_model_close(m);
    for (int bounce = 0; s == KR_OK && bounce < 2; bounce++) {
        kr_quant_config q2 = config(0, "cpu", 2, bounce);
        m = open_model(dir, &q2);
        if (m && run_greedy(m, prompt, 10, steps, got) == KR_OK) {
            int same = 0;
            while (same < steps && got[same] == want[same])
                same++;
            CHECK(same == steps, "demo greedy, --pp 2%s: first %d of %d tokens equal one stage's",
                  bounce ? " through host memory" : "", same, steps);
        } else {
            CHECK(0, "demo greedy, --pp 2: %s", kr_error());
        }
        kr_model_close(m);
    }

    /* refusals that need a device to reach */
    kr_model *bad = NULL;
    kr_quant_config qb = config(0, "cpu", 2, false);
    qb.gpu.n_devices = 1;
    CHECK(kr_model_open(dir, &bad) == KR_OK, "open: %s", kr_error());
    CHECK(bad && kr_model_quantize(bad, &qb) != KR_OK && strstr(kr_error(), "--pp 2 with --gpus listing 1"),
          "--pp 2 --gpus 0 is refused: %s", kr_error());
    kr_model_close(bad);
    bad = NULL;
    qb = config(0, "cpu", 1, false);
    qb.gpu.n_devices = 1;
    qb.gpu.devices[0] = 200;
    CHECK(kr_model_open(dir, &bad) == KR_OK, "open: %s", kr_error());
    CHECK(bad && kr_model_quantize(bad, &qb) != KR_OK && strstr(kr_error(), "no CUDA device 200"),
          "--gpus 200 is refused: %s", kr_error());
    kr_model_close(bad);
    bad = NULL;
    qb = config(0, "cpu", 7, false); /* the demo has 6 layers */
    CHECK(kr_model_open(dir, &bad) == KR_OK, "open: %s", kr_error());
    CHECK(bad && kr_model_quantize(bad, &qb) != KR_OK && strstr(kr_error(), "only 6 layers"),
          "--pp 7 on 6 layers is refused: %s", kr_error());
    kr_model_close(bad);
}

int main(void) {
    if (kr_cuda_device_count() == 0) {
        printf("SKIP: no CUDA device (%s)\n", kr_cuda_no_device_reason());
        return 77;
    }
    for (const char *p = getenv("KRASIS_PP_DEVICES"); p && *p && n_pp_devices < KR_GPU_MAX_STAGES;) {
        char *end;
        pp_devices[n_pp_devices++] = (int)strtol(p, &end, 10);
        p = *end == ',' ? end + 1 : "";
    }
    if (n_pp_devices)
        printf("stages on devices from KRASIS_PP_DEVICES=%s\n", getenv("KRASIS_PP_DEVICES"));
    if (!test_tmpdir(cache_dir, sizeof cache_dir)) {
        perror("mkdtemp");
        return 1;
    }
    fixture("dsv2_lite");
    fixture("qwen3_moe");
    demo();
    test_rmtree(cache_dir);
    return test_summary("test_gpu_pp");
}
