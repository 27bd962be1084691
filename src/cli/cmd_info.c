/* krasis info MODEL: what a checkpoint is and what it needs, without running it. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "krasis.h"
#include "weights/ggml_quants.h"
#include "weights/gguf_set.h"

static void human(double bytes, char *buf, size_t cap) {
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        u++;
    }
    snprintf(buf, cap, u ? "%.2f %s" : "%.0f %s", bytes, unit[u]);
}

static void count_str(double n, char *buf, size_t cap) {
    if (n >= 1e9)
        snprintf(buf, cap, "%.2f B", n / 1e9);
    else if (n >= 1e6)
        snprintf(buf, cap, "%.2f M", n / 1e6);
    else if (n >= 1e3)
        snprintf(buf, cap, "%.1f K", n / 1e3);
    else
        snprintf(buf, cap, "%.0f", n);
}

static const char *router_name(const kr_router_config *rc) {
    if (rc->scoring == KR_SCORE_SIGMOID)
        return rc->n_group > 1 ? "sigmoid + bias, group-limited (top-2 sum)" : "sigmoid + bias";
    return rc->group_rule == KR_GROUP_MAX && rc->n_group > 1 ? "softmax, group-limited (max)" : "softmax";
}

static void print_info(const char *dir, const kr_model *m) {
    const kr_hparams *hp = &m->hp;
    char a[64], b[64];
    int moe_layers = 0;
    for (int l = 0; l < hp->n_layers; l++)
        moe_layers += hp->layer_is_moe[l];
    printf("model        %s\n", dir);
    printf("family       %s (model_type %s%s%s)\n", kr_family_name(hp->family), hp->outer_model_type,
           strcmp(hp->outer_model_type, hp->model_type) ? ", text model " : "",
           strcmp(hp->outer_model_type, hp->model_type) ? hp->model_type : "");
    printf("layers       %lld (%lld dense, %d MoE)", (long long)hp->n_layers, (long long)hp->n_layers - moe_layers,
           moe_layers);
    if (hp->nextn_layers)
        printf(", %lld MTP layer%s in the checkpoint not run", (long long)hp->nextn_layers,
               hp->nextn_layers > 1 ? "s" : "");
    printf("\nhidden       %lld, vocab %lld, rms_norm_eps %g%s\n", (long long)hp->hidden, (long long)hp->vocab,
           hp->rms_eps, hp->tie_embeddings ? ", tied embeddings" : "");
    if (hp->family == KR_FAMILY_DEEPSEEK2)
        printf("attention    MLA, %lld heads, q_lora_rank %s, kv_lora_rank %lld, qk_nope %lld + qk_rope %lld, v %lld\n",
               (long long)hp->n_heads, hp->q_lora_rank ? (snprintf(a, sizeof a, "%lld", (long long)hp->q_lora_rank), a) : "null (q_proj)", (long long)hp->kv_lora_rank,
               (long long)hp->qk_nope_dim, (long long)hp->qk_rope_dim, (long long)hp->v_head_dim);
    else
        printf("attention    GQA, %lld query / %lld kv heads of %lld%s%s\n", (long long)hp->n_heads,
               (long long)hp->n_kv_heads, (long long)hp->head_dim, hp->qk_norm ? ", q/k norm" : "",
               hp->attention_bias ? ", qkv bias" : "");
    printf("rope         %s, %d dims, theta %g", hp->rope.interleaved ? "interleaved" : "neox", hp->rope.dim,
           hp->rope.theta);
    if (hp->rope.yarn)
        printf(", YaRN factor %g (original %lld, beta %g/%g, attention factor %g)", hp->rope.factor,
               (long long)hp->rope.original_max_pos, hp->rope.beta_fast, hp->rope.beta_slow, hp->rope.attention_factor);
    printf("; softmax scale %.6g\n", hp->attn_scale);
    if (moe_layers)
        printf("experts      %d routed (top-%d, %s%s, scale %g), %lld shared, expert ffn %lld; dense ffn %lld\n",
               hp->router.n_experts, hp->router.top_k, router_name(&hp->router),
               hp->router.normalize ? ", renormalized" : "", hp->router.scale, (long long)hp->n_shared,
               (long long)hp->moe_intermediate, (long long)hp->intermediate);
    else
        printf("ffn          dense, intermediate %lld\n", (long long)hp->intermediate);

    const kr_model_stats *st = &m->stats;
    double active = (double)(st->params_total - st->params_routed);
    if (hp->router.n_experts)
        active += (double)st->params_routed * hp->router.top_k / hp->router.n_experts;
    count_str((double)st->params_total, a, sizeof a);
    count_str(active, b, sizeof b);
    printf("parameters   %s total, %s active per token\n", a, b);
    printf("weights     ");
    for (int t = 0; t < KR_DT_COUNT; t++)
        if (st->bytes_by_dtype[t]) {
            human((double)st->bytes_by_dtype[t], a, sizeof a);
            printf(" %s %s", kr_dtype_name(t), a);
        }
    for (uint32_t t = 0; t < 64; t++) /* GGUF block types */
        if (st->bytes_by_ggml[t]) {
            human((double)st->bytes_by_ggml[t], a, sizeof a);
            printf(" %s %s", kr_ggml_info(t).name ? kr_ggml_info(t).name : "?", a);
        }
    human((double)st->bytes_total, a, sizeof a);
    int files = m->gguf ? m->gguf->n : m->st.n_files;
    printf(" (total %s in %d file%s)\n", a, files, files == 1 ? "" : "s");
    int64_t ctx = hp->max_pos > 0 && hp->max_pos < 4096 ? hp->max_pos : 4096;
    human((double)kr_kv_cache_bytes_per_token(m), b, sizeof b);
    human((double)st->bytes_total + (double)kr_kv_cache_bytes_per_token(m) * (double)ctx, a, sizeof a);
    printf("memory       KV cache %s per token (f32); RAM needed at %lld tokens of context: %s "
           "(weights are mapped, not copied)\n",
           b, (long long)ctx, a);
}

int kr_cmd_info(int argc, char **argv) {
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: krasis info MODEL\n");
        return 2;
    }
    kr_model *m;
    if (kr_model_open(argv[1], &m) != KR_OK)
        return kr_cli_fail();
    print_info(argv[1], m);
    kr_model_close(m);
    return 0;
}
