/* A checkpoint with the real shapes of DeepSeek-V2-Lite (27 layers, 64 experts, 15.7 B parameters,
 * 31 GB of BF16) loads and runs one token within a few GB of memory: weights are mapped, never copied
 * or expanded to float32, and a token reads only the experts it routes to.
 * The file is sparse: norms, router and one embedding row are written, everything else reads as zero. */
#include <fcntl.h>
#include <math.h>
#include <sys/resource.h>

#include "base/fp.h"
#include "model/model.h"
#include "test.h"
#include "tmpdir.h"

#define LAYERS 27
#define D 2048
#define H 16
#define C 512
#define DR 64
#define DN 128
#define DV 128
#define E 64
#define IE 1408
#define INTER 10944
#define VOCAB 102400
#define TOKEN 4242

static const char *config =
    "{\"model_type\": \"deepseek_v2\", \"vocab_size\": 102400, \"hidden_size\": 2048, \"num_hidden_layers\": 27,"
    " \"num_attention_heads\": 16, \"num_key_value_heads\": 16, \"q_lora_rank\": null, \"kv_lora_rank\": 512,"
    " \"qk_nope_head_dim\": 128, \"qk_rope_head_dim\": 64, \"v_head_dim\": 128, \"intermediate_size\": 10944,"
    " \"moe_intermediate_size\": 1408, \"n_routed_experts\": 64, \"n_shared_experts\": 2, \"num_experts_per_tok\": 6,"
    " \"first_k_dense_replace\": 1, \"moe_layer_freq\": 1, \"topk_method\": \"greedy\", \"n_group\": 1,"
    " \"topk_group\": 1, \"scoring_func\": \"softmax\", \"norm_topk_prob\": false, \"routed_scaling_factor\": 1.0,"
    " \"max_position_embeddings\": 163840, \"rope_theta\": 10000, \"rms_norm_eps\": 1e-06,"
    " \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 40, \"original_max_position_embeddings\": 4096,"
    " \"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 0.707, \"mscale_all_dim\": 0.707},"
    " \"tie_word_embeddings\": false, \"bos_token_id\": 100000, \"eos_token_id\": 100001}";

typedef struct {
    char name[96];
    int64_t rows, cols; /* cols 0: a vector */
    uint64_t offset;
} entry;

static entry entries[LAYERS * (12 + 3 * (E + 1)) + 8];
static int n_entries;
static uint64_t data_size;

static entry *add(const char *name, int64_t rows, int64_t cols) {
    entry *e = &entries[n_entries++];
    snprintf(e->name, sizeof e->name, "%s", name);
    e->rows = rows;
    e->cols = cols;
    e->offset = data_size;
    data_size += (uint64_t)(rows * (cols ? cols : 1)) * 2;
    return e;
}

static void add_mlp(const char *base, int64_t inter) {
    char n[96];
    snprintf(n, sizeof n, "%s.gate_proj.weight", base);
    add(n, inter, D);
    snprintf(n, sizeof n, "%s.up_proj.weight", base);
    add(n, inter, D);
    snprintf(n, sizeof n, "%s.down_proj.weight", base);
    add(n, D, inter);
}

/* fills a tensor with bf16 values from f(i) */
static void fill(int fd, uint64_t base, const entry *e, int64_t first, int64_t count, float (*f)(int64_t)) {
    uint16_t *buf = malloc((size_t)count * 2);
    for (int64_t i = 0; i < count; i++)
        buf[i] = kr_f32_to_bf16(f(first + i));
    if (pwrite(fd, buf, (size_t)count * 2, (off_t)(base + e->offset + (uint64_t)first * 2)) != count * 2)
        perror("pwrite");
    free(buf);
}

static float one(int64_t i) { return 1.0f; }
static float noise(int64_t i) { return (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f; }

int main(void) {
    char dir[512], path[700];
    if (!test_tmpdir(dir, sizeof dir))
        return 2;
    snprintf(path, sizeof path, "%s/config.json", dir);
    test_write(path, config, strlen(config));

    char n[96];
    entry *embed = add("model.embed_tokens.weight", VOCAB, D);
    entry *norms[2 * LAYERS + 1], *kv_norms[LAYERS], *routers[LAYERS];
    int nn = 0;
    for (int l = 0; l < LAYERS; l++) {
        snprintf(n, sizeof n, "model.layers.%d.input_layernorm.weight", l);
        norms[nn++] = add(n, D, 0);
        snprintf(n, sizeof n, "model.layers.%d.post_attention_layernorm.weight", l);
        norms[nn++] = add(n, D, 0);
        snprintf(n, sizeof n, "model.layers.%d.self_attn.q_proj.weight", l);
        add(n, H * (DN + DR), D);
        snprintf(n, sizeof n, "model.layers.%d.self_attn.kv_a_proj_with_mqa.weight", l);
        add(n, C + DR, D);
        snprintf(n, sizeof n, "model.layers.%d.self_attn.kv_a_layernorm.weight", l);
        kv_norms[l] = add(n, C, 0);
        snprintf(n, sizeof n, "model.layers.%d.self_attn.kv_b_proj.weight", l);
        add(n, H * (DN + DV), C);
        snprintf(n, sizeof n, "model.layers.%d.self_attn.o_proj.weight", l);
        add(n, D, H * DV);
        routers[l] = NULL;
        if (l == 0) {
            add_mlp("model.layers.0.mlp", INTER);
            continue;
        }
        snprintf(n, sizeof n, "model.layers.%d.mlp.gate.weight", l);
        routers[l] = add(n, E, D);
        for (int e = 0; e < E; e++) {
            snprintf(n, sizeof n, "model.layers.%d.mlp.experts.%d", l, e);
            add_mlp(n, IE);
        }
        snprintf(n, sizeof n, "model.layers.%d.mlp.shared_experts", l);
        add_mlp(n, 2 * IE);
    }
    norms[nn++] = add("model.norm.weight", D, 0);
    add("lm_head.weight", VOCAB, D);

    /* header */
    size_t cap = (size_t)n_entries * 160 + 64, len = 0;
    char *header = malloc(cap);
    len += (size_t)snprintf(header + len, cap - len, "{");
    for (int i = 0; i < n_entries; i++) {
        const entry *e = &entries[i];
        uint64_t bytes = (uint64_t)(e->rows * (e->cols ? e->cols : 1)) * 2;
        if (e->cols)
            len += (size_t)snprintf(header + len, cap - len, "%s\"%s\":{\"dtype\":\"BF16\",\"shape\":[%lld,%lld],\"data_offsets\":[%llu,%llu]}",
                                    i ? "," : "", e->name, (long long)e->rows, (long long)e->cols,
                                    (unsigned long long)e->offset, (unsigned long long)(e->offset + bytes));
        else
            len += (size_t)snprintf(header + len, cap - len, "%s\"%s\":{\"dtype\":\"BF16\",\"shape\":[%lld],\"data_offsets\":[%llu,%llu]}",
                                    i ? "," : "", e->name, (long long)e->rows, (unsigned long long)e->offset,
                                    (unsigned long long)(e->offset + bytes));
    }
    len += (size_t)snprintf(header + len, cap - len, "}");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    test_write_st(path, header, NULL, 0);
    int fd = open(path, O_RDWR);
    uint64_t base = 8 + len;
    CHECK(fd >= 0 && ftruncate(fd, (off_t)(base + data_size)) == 0, "sparse file of %llu bytes",
          (unsigned long long)(base + data_size));
    for (int i = 0; i < nn; i++)
        fill(fd, base, norms[i], 0, D, one);
    for (int l = 0; l < LAYERS; l++) {
        fill(fd, base, kv_norms[l], 0, C, one);
        if (routers[l])
            fill(fd, base, routers[l], 0, (int64_t)E * D, noise);
    }
    fill(fd, base, embed, (int64_t)TOKEN * D, D, noise);
    close(fd);
    free(header);

    kr_model *m;
    kr_status s = kr_model_open(dir, &m);
    CHECK(s == KR_OK, "open: %s", kr_error());
    if (s == KR_OK) {
        double total = (double)m->stats.params_total;
        CHECK(total > 15.6e9 && total < 15.8e9, "%.3g parameters, V2-Lite has 15.7 B", total);
        kr_kv_cache *kv;
        float *logits = malloc(VOCAB * sizeof *logits);
        int32_t id = TOKEN;
        CHECK(kr_kv_cache_create(m, &kv) == KR_OK, "kv");
        s = kr_forward(m, kv, &id, 1, false, logits);
        CHECK(s == KR_OK, "forward: %s", kr_error());
        int finite = 1;
        for (int i = 0; i < VOCAB; i++)
            finite &= isfinite(logits[i]);
        CHECK(finite, "logits are finite");
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        double peak_gb = (double)ru.ru_maxrss / (1024.0 * 1024.0);
        /* one token touches attention (0.75 GB), 8 of 66 expert MLPs per layer (3.6 GB), lm_head (0.4 GB) */
        CHECK(peak_gb < 8.0, "peak RSS %.2f GB for one token of a 31 GB checkpoint", peak_gb);
        printf("V2-Lite shape: %.2f B parameters, %.1f GB file, one token, peak RSS %.2f GB\n", total / 1e9,
               (double)(base + data_size) / 1e9, peak_gb);
        free(logits);
        kr_kv_cache_free(kv);
        kr_model_close(m);
    }
    test_rmtree(dir);
    return test_summary("test_large_shape");
}
