/* The pipeline split of the VRAM planner (kr_pp_plan_make, `krasis plan --pp N`) on the real
 * Qwen3-235B-A22B config: the per-stage sums against the single-GPU totals, the splits of --pp 2/3/4 on
 * 16 and 24 GiB cards derived by hand below (and checked optimal by brute force over every split), the
 * routed experts' mode per stage, refusals naming the stage and what is missing, and the CLI's table
 * and exit codes. Needs no GPU.
 *
 * Hand derivation, Qwen3-235B-A22B (hidden 4096, 64 x 128 query heads, 4 x 128 kv heads, q/k norms,
 * 94 MoE layers of 128 experts x 1536, top 8, vocab 151936, max_pos 40960), BF16 non-experts, INT4
 * experts at group 128, FP8 KV, default target context min(40960, 32768) = 32768, 4096-token chunks:
 *   attention a layer   4096*8192 + 2*4096*512 + 8192*4096 + 2*128 = 71,303,424 params = 142,606,848 B
 *   + 2 norms 16,384 B + router 128*4096*2 + 128*4 = 1,049,088 B          -> weights 143,672,320 B a layer
 *   KV: 4 heads * (128 + 128 + 2 scales * 4) = 1056 B a token and layer   -> 34,603,008 B at 32768
 *   a layer: c = 178,275,328 B; every stage: workspace 514,409,984 + reserve 536,870,912 = F = 1,051,280,896
 *   the last stage also: lm_head 151936*4096*2 + final norm 8192 = X = 1,244,667,904 (X/c = 6.98 layers)
 *   routed experts a layer: 128*3*4096*1536 / 2 + that / 128 * 4 = 1,283,457,024 B (94 layers: 120.6 GB,
 *   more than 4 x 24 GiB: the split never counts them here)
 * --pp 2, equal cards: stage 1 gets X/(2c) = 3.5 layers fewer: 50 | 44 (51 | 43 makes stage 0 the larger)
 * --pp 2, 16G + 24G: (n c + F)/16 = ((94 - n) c + F + X)/24 at n = 39.2: n = 39 (n = 40 puts 0.476 on GPU 0)
 * --pp 3, 16G: 33 | 34 | 27 (max 34 c; 34 | 33 | 27 and 34 | 34 | 26 tie, the earliest cuts are kept)
 * --pp 4, 24G: 25 | 25 | 25 | 19 (the last at 19 c + X = 25.98 c < 26 c; unique)
 * Experts per stage from what is left: 16 GiB - (50 c + F) = 7,214,821,888 B = 2.81 double-buffered
 * pairs of layers -> grouped by 2 (4 layers in VRAM); 24 GiB - (50 c + F) = 15,804,756,480 -> 6.16 -> 6. */
#include <jansson.h>
#include <math.h>

#include "backend/cuda/vram_plan.h"
#include "cli_run.h"
#include "config_load.h"
#include "test.h"

static const int64_t GiB = 1LL << 30;
static const int64_t C_LAYER = 143672320LL + 34603008LL, F_STAGE = 514409984LL + 536870912LL,
                     X_LAST = 1244659712LL + 8192LL, ROUTED = 1283457024LL;

static kr_vram_request request(void) {
    kr_vram_request rq;
    memset(&rq, 0, sizeof rq);
    rq.qc.routed_bits = 4;
    rq.qc.group_size = 128;
    rq.kv_fp8 = 1;
    return rq;
}

/* every stage's parts add up to its GPU; the stages cover the layers in order; their weights and KV
 * add up to the single-GPU planner's totals */
static void invariants(const kr_hparams *hp, const kr_vram_request *rq, const kr_pp_plan *p, const char *what) {
    kr_vram_request one = *rq;
    one.vram_bytes = 1LL << 50; /* anything: only the component sums are used */
    kr_vram_plan t;
    CHECK(kr_vram_plan_make(hp, &one, &t) == KR_OK, "%s: single-GPU plan: %s", what, kr_error());
    int64_t w = 0, kv = 0;
    int next = 0;
    for (int s = 0; s < p->n_stages; s++) {
        const kr_pp_stage *st = &p->stage[s];
        CHECK(st->first == next && st->last > st->first, "%s: stage %d is layers [%d, %d) after %d", what, s,
              st->first, st->last, next);
        next = st->last;
        w += st->weights;
        kv += st->kv_bytes;
        int64_t used = st->weights + st->kv_bytes + st->workspace + st->reserve + st->experts;
        CHECK(used + st->free_bytes == st->vram_bytes, "%s: stage %d adds up to %lld + %lld free, not %lld", what, s,
              (long long)used, (long long)st->free_bytes, (long long)st->vram_bytes);
        CHECK(st->workspace == t.workspace && st->reserve == t.reserve, "%s: stage %d workspace/reserve", what, s);
    }
    CHECK(next == hp->n_layers, "%s: the stages end at layer %d of %d", what, next, (int)hp->n_layers);
    CHECK(w == t.nonexpert, "%s: stage weights add up to %lld, the single-GPU total is %lld", what, (long long)w,
          (long long)t.nonexpert);
    CHECK(kv == p->kv_tokens * t.kv_per_token, "%s: stage KV adds up to %lld, expected %lld", what, (long long)kv,
          (long long)(p->kv_tokens * t.kv_per_token));
}

/* the largest used fraction of a split into stages of len[0..n) layers */
static double split_worst(const int *len, int n, const int64_t *vram) {
    double worst = 0;
    for (int s = 0; s < n; s++) {
        double r = (double)(len[s] * C_LAYER + F_STAGE + (s == n - 1 ? X_LAST : 0)) / (double)vram[s];
        worst = r > worst ? r : worst;
    }
    return worst;
}

/* ... of the best split, by trying every one (n = 2 or 3) */
static double brute_force(int L, int n, const int64_t *vram) {
    double best = 1e300;
    for (int a = 1; a < L; a++) {
        if (n == 2) {
            int len[2] = {a, L - a};
            best = fmin(best, split_worst(len, 2, vram));
        }
        for (int b = a + 1; n == 3 && b < L; b++) {
            int len[3] = {a, b - a, L - b};
            best = fmin(best, split_worst(len, 3, vram));
        }
    }
    return best;
}

static double worst_of(const kr_pp_plan *p) {
    double w = 0;
    for (int s = 0; s < p->n_stages; s++) {
        const kr_pp_stage *st = &p->stage[s];
        double r = (double)(st->weights + st->kv_bytes + st->workspace + st->reserve) / (double)st->vram_bytes;
        w = r > w ? r : w;
    }
    return w;
}

static void expect_split(const kr_pp_plan *p, const int *cuts, const char *what) {
    for (int s = 0; s < p->n_stages; s++)
        CHECK(p->stage[s].first == cuts[s] && p->stage[s].last == cuts[s + 1],
              "%s: stage %d is [%d, %d), expected [%d, %d)", what, s, p->stage[s].first, p->stage[s].last, cuts[s],
              cuts[s + 1]);
}

int main(int argc, char **argv) {
    kr_hparams hp = load_config("configs/Qwen3-235B-A22B.json");
    kr_vram_request rq = request();
    kr_pp_plan p;
    int64_t v16[4] = {16 * GiB, 16 * GiB, 16 * GiB, 16 * GiB}, v24[4] = {24 * GiB, 24 * GiB, 24 * GiB, 24 * GiB};

    /* --pp 2, 16 GiB each */
    CHECK(kr_pp_plan_make(&hp, &rq, 2, v16, &p) == KR_OK, "235B --pp 2 16G: %s", kr_error());
    expect_split(&p, (const int[]){0, 50, 94}, "235B --pp 2 16G");
    CHECK(p.kv_tokens == 32768 && p.kv_per_token_layer == 1056, "KV: %lld tokens, %lld bytes a token and layer",
          (long long)p.kv_tokens, (long long)p.kv_per_token_layer);
    CHECK(p.stage[0].weights == 50 * 143672320LL && p.stage[1].weights == 44 * 143672320LL + X_LAST,
          "stage weights %lld, %lld", (long long)p.stage[0].weights, (long long)p.stage[1].weights);
    CHECK(p.stage[0].kv_bytes == 50 * 34603008LL && p.stage[1].kv_bytes == 44 * 34603008LL, "stage KV %lld, %lld",
          (long long)p.stage[0].kv_bytes, (long long)p.stage[1].kv_bytes);
    CHECK(!p.experts_balanced, "120 GB of experts are not balanced into 32 GiB");
    CHECK(p.stage[0].expert_layers_resident == 4 && p.stage[0].experts == 4 * ROUTED &&
              strstr(p.stage[0].expert_mode, "2 layers at a time"),
          "stage 0 experts: %lld layers, %s", (long long)p.stage[0].expert_layers_resident, p.stage[0].expert_mode);
    CHECK(p.stage[0].free_bytes == 16 * GiB - 50 * C_LAYER - F_STAGE - 4 * ROUTED, "stage 0 free %lld",
          (long long)p.stage[0].free_bytes);
    CHECK(p.stage[1].expert_layers_resident == 4, "stage 1 experts: %s", p.stage[1].expert_mode);
    CHECK(fabs(worst_of(&p) - brute_force(94, 2, v16)) < 1e-12, "--pp 2 16G is the best split: %.9f vs %.9f",
          worst_of(&p), brute_force(94, 2, v16));
    invariants(&hp, &rq, &p, "235B --pp 2 16G");

    /* --pp 2, 24 GiB each: the same split, 6 double-buffered pairs of expert layers per stage */
    CHECK(kr_pp_plan_make(&hp, &rq, 2, v24, &p) == KR_OK, "235B --pp 2 24G: %s", kr_error());
    expect_split(&p, (const int[]){0, 50, 94}, "235B --pp 2 24G");
    CHECK(p.stage[0].expert_layers_resident == 12 && p.stage[1].expert_layers_resident == 12,
          "24G stages: %s / %s", p.stage[0].expert_mode, p.stage[1].expert_mode);
    invariants(&hp, &rq, &p, "235B --pp 2 24G");

    /* --pp 2 on a 16 GiB and a 24 GiB card: more layers on the larger */
    int64_t mixed[2] = {16 * GiB, 24 * GiB};
    CHECK(kr_pp_plan_make(&hp, &rq, 2, mixed, &p) == KR_OK, "235B 16G,24G: %s", kr_error());
    expect_split(&p, (const int[]){0, 39, 94}, "235B 16G,24G");
    CHECK(fabs(worst_of(&p) - brute_force(94, 2, mixed)) < 1e-12, "16G,24G is the best split");
    invariants(&hp, &rq, &p, "235B 16G,24G");

    /* --pp 3, 16 GiB */
    CHECK(kr_pp_plan_make(&hp, &rq, 3, v16, &p) == KR_OK, "235B --pp 3 16G: %s", kr_error());
    expect_split(&p, (const int[]){0, 33, 67, 94}, "235B --pp 3 16G");
    CHECK(fabs(worst_of(&p) - (double)(34 * C_LAYER + F_STAGE) / (double)(16 * GiB)) < 1e-12 &&
              fabs(worst_of(&p) - brute_force(94, 3, v16)) < 1e-12,
          "--pp 3: the fullest stage holds 34 layers (%.9f, brute force %.9f)", worst_of(&p), brute_force(94, 3, v16));
    invariants(&hp, &rq, &p, "235B --pp 3 16G");

    /* --pp 4, 24 GiB */
    CHECK(kr_pp_plan_make(&hp, &rq, 4, v24, &p) == KR_OK, "235B --pp 4 24G: %s", kr_error());
    expect_split(&p, (const int[]){0, 25, 50, 75, 94}, "235B --pp 4 24G");
    CHECK(p.stage[3].weights == 19 * 143672320LL + X_LAST, "the last stage has lm_head: %lld",
          (long long)p.stage[3].weights);
    invariants(&hp, &rq, &p, "235B --pp 4 24G");

    /* does not fit: --pp 2 on 8 GiB cards; both stages are named with what they miss */
    int64_t v8[2] = {8 * GiB, 8 * GiB};
    CHECK(kr_pp_plan_make(&hp, &rq, 2, v8, &p) == KR_ERR_ARG, "235B --pp 2 8G is refused");
    const char *e = kr_error();
    CHECK(strstr(e, "stage 0 (8.00 GiB, layers [0, 50)) needs 9.28 GiB") && strstr(e, "1.28 GiB missing") &&
              strstr(e, "stage 1 (8.00 GiB, layers [50, 94)) needs 9.44 GiB") && strstr(e, "1.44 GiB missing"),
          "the refusal names the stages and what they miss: %s", e);
    CHECK(p.n_stages == 2 && p.stage[1].free_bytes == 8 * GiB - 44 * C_LAYER - F_STAGE - X_LAST,
          "the refused plan still has its table: stage 1 free %lld", (long long)p.stage[1].free_bytes);
    /* one stage short: 16G + 8G */
    int64_t v16_8[2] = {16 * GiB, 8 * GiB};
    CHECK(kr_pp_plan_make(&hp, &rq, 2, v16_8, &p) == KR_OK, "16G,8G fits with more layers on the first: %s",
          kr_error());
    CHECK(p.stage[0].last > 60, "16G,8G: the 16 GiB card takes %d layers", p.stage[0].last);
    CHECK(kr_pp_plan_make(&hp, &rq, 17, v16, &p) == KR_ERR_ARG && strstr(kr_error(), "--pp 17"),
          "more stages than the most: %s", kr_error());
    kr_hparams_free(&hp);
    kr_hparams demo = load_config("models/tiny-moe/config.json"); /* 6 layers */
    int64_t v1[8] = {GiB, GiB, GiB, GiB, GiB, GiB, GiB, GiB};
    CHECK(kr_pp_plan_make(&demo, &rq, 7, v1, &p) == KR_ERR_ARG && strstr(kr_error(), "only 6 layers"),
          "more stages than layers: %s", kr_error());
    CHECK(kr_pp_plan_make(&demo, &rq, 6, v1, &p) == KR_OK, "one layer a stage: %s", kr_error());
    for (int s = 0; s < 6; s++)
        CHECK(p.stage[s].first == s && p.stage[s].last == s + 1, "demo --pp 6: stage %d is [%d, %d)", s,
              p.stage[s].first, p.stage[s].last);
    invariants(&demo, &rq, &p, "demo --pp 6");
    kr_hparams_free(&demo);

    /* the experts balanced too when they all fit: Qwen3-30B-A3B (48 layers of ~0.16 GB INT4 experts) */
    kr_hparams q3 = load_config("configs/Qwen3-30B-A3B.json");
    CHECK(kr_pp_plan_make(&q3, &rq, 2, v16, &p) == KR_OK, "30B --pp 2 16G: %s", kr_error());
    CHECK(p.experts_balanced && p.stage[0].expert_layers_resident == p.stage[0].moe_layers &&
              p.stage[1].expert_layers_resident == p.stage[1].moe_layers && strstr(p.stage[1].expert_mode, "persistent"),
          "30B in 2 x 16 GiB: all experts resident on both stages (%s / %s)", p.stage[0].expert_mode,
          p.stage[1].expert_mode);
    invariants(&q3, &rq, &p, "30B --pp 2 16G");
    rq.experts_cpu = true; /* --expert-mode cpu: the split and the stages leave the experts out */
    CHECK(kr_pp_plan_make(&q3, &rq, 2, v16, &p) == KR_OK && !p.experts_balanced && p.stage[0].experts == 0 &&
              p.stage[1].experts == 0 && strstr(p.stage[1].expert_mode, "CPU"),
          "30B, experts on the CPU: %s / %s", p.stage[0].expert_mode, p.stage[1].expert_mode);
    invariants(&q3, &rq, &p, "30B --pp 2 16G, experts on the CPU");
    rq.experts_cpu = false;
    kr_hparams_free(&q3);

    if (argc > 1) {
        char out[8192], cfg[1024], args[2048];
        test_path("configs/Qwen3-235B-A22B.json", cfg, sizeof cfg);
        snprintf(args, sizeof args, "--synthetic %s --pp 2 --vram 16G", cfg);
        CHECK(run_plan(argv[1], args, out, sizeof out) == 0 && strstr(out, "[0, 50)") && strstr(out, "[50, 94)") &&
                  strstr(out, "verdict: fits") && strstr(out, "2 pipeline stages"),
              "plan --pp 2 prints the stages: %s", out);
        snprintf(args, sizeof args, "--synthetic %s --vram 16G,24G", cfg);
        CHECK(run_plan(argv[1], args, out, sizeof out) == 0 && strstr(out, "[0, 39)") && strstr(out, "24.00"),
              "two sizes imply --pp 2: %s", out);
        snprintf(args, sizeof args, "--synthetic %s --pp 2 --vram 8G", cfg);
        CHECK(run_plan(argv[1], args, out, sizeof out) == 1 && strstr(out, "verdict: does not fit") &&
                  strstr(out, "1.44 GiB missing"),
              "plan --pp 2 8G is refused with the numbers: %s", out);
        snprintf(args, sizeof args, "--synthetic %s --pp 2 --vram 16G,16G,16G", cfg);
        CHECK(run_plan(argv[1], args, out, sizeof out) == 2 && strstr(out, "--vram 16G,16G,16G"),
              "three sizes for two stages: %s", out);
        snprintf(args, sizeof args, "--synthetic %s --vram 16G,banana", cfg);
        CHECK(run_plan(argv[1], args, out, sizeof out) == 2 && strstr(out, "--vram 16G,banana"), "a bad size: %s", out);
        snprintf(args, sizeof args, "--synthetic %s --pp 0 --vram 16G", cfg);
        CHECK(run_plan(argv[1], args, out, sizeof out) == 2 && strstr(out, "--pp"), "--pp 0: %s", out);
        snprintf(args, sizeof args, "--synthetic %s --gpus 0,x --vram 16G", cfg);
        CHECK(run_plan(argv[1], args, out, sizeof out) == 2 && strstr(out, "--gpus"), "--gpus 0,x: %s", out);
    }
    return test_summary("test_pp_plan");
}
