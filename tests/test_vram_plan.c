/* The VRAM planner (backend/cuda/vram_plan.c): component sizes re-derived by hand from the configs,
 * KV bytes per token, the expert-mode choice and its budget invariant, refusal when nothing fits,
 * --vram parsing, `krasis plan`'s exit codes and messages, and the GPU line of `krasis check`. Needs no GPU. */
#include <jansson.h>

#include "backend/cuda/vram_plan.h"
#include "cli_run.h"
#include "config_load.h"
#include "test.h"

static kr_vram_request request(int64_t gib, int fp8) {
    kr_vram_request rq;
    memset(&rq, 0, sizeof rq);
    rq.vram_bytes = gib << 30;
    rq.qc.routed_bits = 4;
    rq.qc.group_size = 128;
    rq.kv_fp8 = fp8;
    return rq;
}

static void invariant(const kr_vram_plan *p, const kr_vram_request *rq, const char *what) {
    int64_t experts = p->expert_layers_resident == p->moe_layers ? p->routed_total
                                                                  : p->expert_layers_resident * p->routed_layer;
    int64_t used = p->nonexpert + p->workspace + p->reserve + experts + p->kv_bytes;
    CHECK(used + p->unused == rq->vram_bytes && p->unused >= 0, "%s: the parts add up to %lld + %lld unused, not %lld",
          what, (long long)used, (long long)p->unused, (long long)rq->vram_bytes);
}

int main(int argc, char **argv) {
    /* Qwen3-30B-A3B: GQA 32 x 128 query, 4 x 128 kv, hidden 2048, 48 layers, 128 experts of 768 */
    kr_hparams q3 = load_config("configs/Qwen3-30B-A3B.json");
    kr_vram_request rq = request(16, 1);
    kr_vram_plan p;
    CHECK(kr_vram_plan_make(&q3, &rq, &p) == KR_OK, "qwen3 in 16 GiB: %s", kr_error());
    int64_t attn = 48 * 2 * (2048LL * 4096 + 2 * 2048LL * 512 + 4096LL * 2048 + 2 * 128);
    CHECK(p.attention == attn, "qwen3 attention %lld, expected %lld", (long long)p.attention, (long long)attn);
    CHECK(p.lm_head == 151936LL * 2048 * 2, "qwen3 lm_head %lld", (long long)p.lm_head);
    int64_t layer = 128LL * 3 * 2048 * 768 / 2 + 128LL * 3 * 2048 * 768 / 128 * 4; /* int4 + a float per 128 */
    CHECK(p.routed_layer == layer, "qwen3 routed layer %lld, expected %lld", (long long)p.routed_layer, (long long)layer);
    CHECK(p.kv_per_token == 48 * 4 * (256 + 8), "qwen3 fp8 KV %lld bytes/token", (long long)p.kv_per_token);
    CHECK(p.expert_layers_resident > 0 && p.expert_layers_resident < 48, "qwen3 in 16 GiB is layer-grouped: %s",
          p.expert_mode);
    CHECK(p.kv_tokens >= 32768, "the 32K target context is kept: %lld", (long long)p.kv_tokens);
    invariant(&p, &rq, "qwen3 16G");
    rq = request(80, 0);
    CHECK(kr_vram_plan_make(&q3, &rq, &p) == KR_OK && p.expert_layers_resident == 48, "qwen3 in 80 GiB: persistent");
    CHECK(p.kv_per_token == 48 * 4 * 256 * 2 && p.kv_tokens == 40960, "bf16 KV %lld bytes/token, %lld tokens (max_pos)",
          (long long)p.kv_per_token, (long long)p.kv_tokens);
    invariant(&p, &rq, "qwen3 80G");
    kr_hparams_free(&q3);

    /* DeepSeek-V2-Lite: MLA latent 512 + 64 rope per layer and token */
    kr_hparams ds = load_config("configs/DeepSeek-V2-Lite.json");
    rq = request(24, 0);
    CHECK(kr_vram_plan_make(&ds, &rq, &p) == KR_OK, "dsv2-lite in 24 GiB: %s", kr_error());
    CHECK(p.kv_per_token == 27 * 576 * 2, "MLA bf16 KV %lld bytes/token", (long long)p.kv_per_token);
    CHECK(p.moe_layers == 26 && p.expert_layers_resident == 26, "26 MoE layers, all resident: %s", p.expert_mode);
    int64_t mla = 2048LL * 16 * 192 + 2048LL * 576 + 512 + 512LL * 16 * 256 + 16LL * 128 * 2048;
    CHECK(p.attention == 27 * 2 * mla, "dsv2-lite attention %lld, expected %lld", (long long)p.attention,
          (long long)(27 * 2 * mla));
    CHECK(p.shared == 26LL * 2 * 2 * 3 * 2048 * 1408, "two shared experts a layer in bf16: %lld", (long long)p.shared);
    invariant(&p, &rq, "dsv2-lite 24G");
    rq = request(3, 1);
    CHECK(kr_vram_plan_make(&ds, &rq, &p) == KR_OK && p.expert_layers_resident == 0, "dsv2-lite in 3 GiB: %s",
          p.expert_mode);
    CHECK(strstr(p.expert_mode, "CPU") != NULL, "experts stay on the CPU: %s", p.expert_mode);
    invariant(&p, &rq, "dsv2-lite 3G");
    kr_hparams_free(&ds);

    /* DeepSeek-V3 does not fit 16 GiB even without its experts */
    kr_hparams v3 = load_config("configs/DeepSeek-V3.json");
    rq = request(16, 1);
    CHECK(kr_vram_plan_make(&v3, &rq, &p) == KR_ERR_ARG, "deepseek-v3 in 16 GiB is refused");
    CHECK(strstr(kr_error(), "nothing fits in 16.00 GiB") && strstr(kr_error(), "non-expert weights"),
          "the refusal gives the numbers: %s", kr_error());
    rq.qc.attention_bits = rq.qc.shared_bits = rq.qc.dense_bits = rq.qc.lm_head_bits = 4;
    rq.vram_bytes = 24LL << 30;
    CHECK(kr_vram_plan_make(&v3, &rq, &p) == KR_OK, "deepseek-v3 with int4 non-experts fits 24 GiB: %s", kr_error());
    invariant(&p, &rq, "v3 24G int4");
    kr_hparams_free(&v3);

    CHECK(kr_parse_size("16G") == 16LL << 30, "16G");
    CHECK(kr_parse_size("24GiB") == 24LL << 30, "24GiB");
    CHECK(kr_parse_size("24gb") == 24LL << 30, "24gb");
    CHECK(kr_parse_size("8000M") == 8000LL << 20, "8000M");
    CHECK(kr_parse_size("1.5T") == 3LL << 39, "1.5T");
    CHECK(kr_parse_size("123456") == 123456, "plain bytes");
    CHECK(kr_parse_size("banana") == 0 && kr_parse_size("16X") == 0 && kr_parse_size("-1G") == 0 &&
              kr_parse_size("16Gx") == 0 && kr_parse_size("") == 0 && kr_parse_size("nan") == 0 &&
              kr_parse_size("inf") == 0 && kr_parse_size("nanG") == 0,
          "bad sizes are refused");

    if (argc > 1) {
        char out[8192], cfg[1024], args[2048];
        test_path("configs/Qwen3-30B-A3B.json", cfg, sizeof cfg);
        snprintf(args, sizeof args, "--synthetic %s --vram 16G", cfg);
        CHECK(run_plan(argv[1], args, out, sizeof out) == 0 && strstr(out, "verdict: fits"), "plan prints a fit: %s", out);
        CHECK(strstr(out, "50688 bytes/token"), "and the KV bytes per token: %s", out);
        snprintf(args, sizeof args, "--synthetic %s --vram banana", cfg);
        CHECK(run_plan(argv[1], args, out, sizeof out) == 2 && strstr(out, "--vram banana"), "bad --vram: %s", out);
        snprintf(args, sizeof args, "--synthetic %s --vram 16G --kv-dtype fp16", cfg);
        CHECK(run_plan(argv[1], args, out, sizeof out) == 2 && strstr(out, "--kv-dtype fp16"), "bad --kv-dtype: %s", out);
        test_path("configs/DeepSeek-V3.json", cfg, sizeof cfg);
        snprintf(args, sizeof args, "--synthetic %s --vram 16G", cfg);
        CHECK(run_plan(argv[1], args, out, sizeof out) == 1 && strstr(out, "nothing fits"), "refusal: %s", out);
        snprintf(args, sizeof args, "--synthetic /nonexistent/config.json --vram 16G");
        CHECK(run_plan(argv[1], args, out, sizeof out) == 1 && strstr(out, "/nonexistent/config.json"),
              "a missing config is named: %s", out);
    }
    if (argc > 1) { /* krasis check reports the GPU side: a device line, or the "no GPU" verdict */
        char cmd[1100], out[16384];
        snprintf(cmd, sizeof cmd, "%s check 2>&1", argv[1]);
        run_capture(cmd, out, sizeof out);
        CHECK(strstr(out, "] GPU ") != NULL, "krasis check has a GPU line: %s", out);
        CHECK(strstr(out, "no GPU") || strstr(out, "compute capability") || strstr(out, "without CUDA"),
              "and says what it found: %s", out);
    }
    return test_summary("test_vram_plan");
}
