/* Broken model directories, each made from a good fixture with one thing wrong. Both the API and the
 * CLI (`krasis info`, `krasis logits`) must refuse each with one clear message naming the file, field or
 * tensor, and the CLI must exit with status 1, never crash. argv[1] is the krasis binary. */
#include <sys/wait.h>

#include "base/json.h"
#include "base/mapfile.h"
#include "model/model.h"
#include "test.h"
#include "tmpdir.h"

static char tmp[512];
static const char *krasis_bin;

static void sh(const char *fmt, const char *a, const char *b) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    if (system(cmd) != 0) {
        fprintf(stderr, "failed: %s\n", cmd);
        exit(2);
    }
}

/* A fresh copy of fixture `fx` at tmp/case; returns its path. */
static const char *copy_fixture(const char *fx) {
    static char dst[700];
    char src[1024];
    snprintf(src, sizeof src, "%s/tests/fixtures/%s", KRASIS_SOURCE_DIR, fx);
    snprintf(dst, sizeof dst, "%s/case", tmp);
    sh("rm -rf '%s' && mkdir -p '%s'", dst, dst);
    sh("cp -r '%s'/. '%s'", src, dst);
    return dst;
}

/* Sets (or, with value NULL, deletes) key in dir/file, inside the object `parent` when given. */
static void edit_json(const char *dir, const char *file, const char *parent, const char *key, json_t *value) {
    char path[800];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    json_t *doc;
    if (kr_json_load_file(path, &doc) != KR_OK) {
        fprintf(stderr, "%s\n", kr_error());
        exit(2);
    }
    json_t *obj = parent ? json_object_get(doc, parent) : doc;
    if (value)
        json_object_set_new(obj, key, value);
    else
        json_object_del(obj, key);
    json_dump_file(doc, path, JSON_INDENT(1));
    json_decref(doc);
}

static void edit_config(const char *dir, const char *key, json_t *value) {
    edit_json(dir, "config.json", NULL, key, value);
}

/* Rewrites dir/file's header through edit(header); the data section is kept byte for byte. */
static void edit_header(const char *dir, const char *file, void (*edit)(json_t *h, const char *arg), const char *arg) {
    char path[800];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    char *bytes;
    size_t n;
    if (kr_read_file(path, &bytes, &n) != KR_OK)
        exit(2);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | (unsigned char)bytes[i];
    json_t *h = json_loadb(bytes + 8, hlen, 0, NULL);
    edit(h, arg);
    char *text = json_dumps(h, JSON_COMPACT);
    test_write_st(path, text, bytes + 8 + hlen, n - 8 - hlen);
    free(text);
    free(bytes);
    json_decref(h);
}

static void del_tensor(json_t *h, const char *name) { json_object_del(h, name); }
static void transpose_tensor(json_t *h, const char *name) {
    json_t *shape = json_object_get(json_object_get(h, name), "shape");
    json_t *a = json_incref(json_array_get(shape, 0)), *b = json_incref(json_array_get(shape, 1));
    json_array_set_new(shape, 0, b);
    json_array_set_new(shape, 1, a);
}
static void retype_tensor(json_t *h, const char *name) {
    json_object_set_new(json_object_get(h, name), "dtype", json_string("I32"));
}
static void push_offsets_out(json_t *h, const char *name) {
    json_t *offs = json_object_get(json_object_get(h, name), "data_offsets");
    json_array_set_new(offs, 1, json_integer(json_integer_value(json_array_get(offs, 1)) + (1 << 30)));
}

/* Both the API and the CLI must fail on dir with `needle` in the message. */
static void expect_failure(const char *what, const char *dir, const char *needle) {
    kr_model *m;
    kr_status s = kr_model_open(dir, &m);
    CHECK(s != KR_OK, "%s: model opened; expected '%s'", what, needle);
    if (s == KR_OK) {
        kr_model_close(m);
    } else {
        CHECK(strstr(kr_error(), needle) != NULL, "%s: message '%s' lacks '%s'", what, kr_error(), needle);
    }
    char cmd[2048], errpath[700];
    snprintf(errpath, sizeof errpath, "%s/stderr.txt", tmp);
    snprintf(cmd, sizeof cmd, "'%s' info '%s' >/dev/null 2>'%s'", krasis_bin, dir, errpath);
    int st = system(cmd);
    char *err = NULL;
    kr_read_file(errpath, &err, NULL);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s: krasis info exit status %d (want 1)", what,
          WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    CHECK(err && strstr(err, needle) && strncmp(err, "krasis: ", 8) == 0, "%s: stderr '%s' lacks '%s'", what,
          err ? err : "", needle);
    CHECK(err && !strstr(err, "Sanitizer") && !strstr(err, "runtime error"), "%s: sanitizer report", what);
    free(err);
}

static void expect_logits_failure(const char *what, const char *dir, const char *ids, const char *needle) {
    char cmd[2048], errpath[700];
    snprintf(errpath, sizeof errpath, "%s/stderr.txt", tmp);
    snprintf(cmd, sizeof cmd, "'%s' logits '%s' --ids '%s' --out '%s/out.npy' >/dev/null 2>'%s'", krasis_bin, dir, ids,
             tmp, errpath);
    int st = system(cmd);
    char *err = NULL;
    kr_read_file(errpath, &err, NULL);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s: exit status %d (want 1)", what,
          WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    CHECK(err && strstr(err, needle), "%s: stderr '%s' lacks '%s'", what, err ? err : "", needle);
    free(err);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_bad_model KRASIS_BINARY\n");
        return 2;
    }
    krasis_bin = argv[1];
    if (!test_tmpdir(tmp, sizeof tmp))
        return 2;
    const char *d;

    /* config.json */
    d = copy_fixture("dsv2_lite");
    sh("printf '{\"model_type\": \"deepseek_v2\",' > '%s/config.json'%s", d, "");
    expect_failure("config not JSON", d, "config.json: not valid JSON");
    d = copy_fixture("dsv2_lite");
    sh("rm '%s/config.json'%s", d, "");
    expect_failure("config missing", d, "config.json: cannot open");
    d = copy_fixture("qwen3_moe");
    edit_config(d, "hidden_size", json_string("64"));
    expect_failure("field of wrong type", d, "field 'hidden_size' must be an integer, got a string");
    d = copy_fixture("qwen3_moe");
    edit_config(d, "hidden_size", json_integer(1LL << 40));
    expect_failure("absurd size", d, "field 'hidden_size' is 1099511627776, larger than any model could use");
    d = copy_fixture("qwen3_moe");
    edit_config(d, "num_attention_heads", json_integer(0));
    expect_failure("zero heads", d, "field 'num_attention_heads' is 0, must be >= 1");
    d = copy_fixture("qwen3_moe");
    edit_config(d, "num_hidden_layers", NULL);
    expect_failure("required field missing", d, "required field 'num_hidden_layers' is missing");
    d = copy_fixture("glm4_moe_qknorm");
    edit_config(d, "use_qk_norm", json_integer(1));
    expect_failure("bool field of wrong type", d, "field 'use_qk_norm' must be true or false");
    d = copy_fixture("qwen3_moe");
    edit_config(d, "model_type", json_string("llama"));
    expect_failure("unknown model_type", d, "model_type 'llama' is not supported");
    d = copy_fixture("dsv2_lite");
    edit_config(d, "rope_scaling", json_pack("{s:s, s:f}", "type", "linear", "factor", 2.0));
    expect_failure("unsupported rope type", d, "rope type 'linear' is not supported");
    d = copy_fixture("dsv2_lite");
    edit_config(d, "topk_method", json_string("sinkhorn"));
    expect_failure("unsupported topk_method", d, "topk_method 'sinkhorn' is not supported");
    d = copy_fixture("dsv3_fp8");
    edit_config(d, "quantization_config", json_pack("{s:s}", "quant_method", "gptq"));
    expect_failure("unsupported quantization", d, "quant_method 'gptq' is not supported");
    d = copy_fixture("kimi_k25");
    edit_config(d, "text_config", NULL);
    expect_failure("kimi_k25 without text_config", d, "'kimi_k25' needs a 'text_config' object");
    d = copy_fixture("qwen3_moe");
    edit_config(d, "num_experts_per_tok", json_integer(9));
    expect_failure("top-k above the expert count", d, "num_experts_per_tok 9 exceeds num_experts 8");

    /* weights */
    d = copy_fixture("dsv2_lite");
    edit_header(d, "model.safetensors", del_tensor, "model.layers.1.mlp.experts.3.up_proj.weight");
    expect_failure("tensor missing", d, "tensor 'model.layers.1.mlp.experts.3.up_proj.weight' not found");
    d = copy_fixture("dsv2_lite");
    edit_header(d, "model.safetensors", transpose_tensor, "model.layers.0.self_attn.kv_b_proj.weight");
    expect_failure("tensor of wrong shape", d,
                   "'model.layers.0.self_attn.kv_b_proj.weight' has shape [32, 128], config.json implies [128, 32]");
    d = copy_fixture("qwen3_moe");
    edit_header(d, "model.safetensors", retype_tensor, "model.layers.2.self_attn.o_proj.weight");
    expect_failure("tensor of wrong dtype", d, "'model.layers.2.self_attn.o_proj.weight' has dtype I32");
    d = copy_fixture("qwen3_moe");
    edit_header(d, "model.safetensors", push_offsets_out, "model.norm.weight");
    expect_failure("offsets outside the file", d, "point outside the file");
    d = copy_fixture("dsv2_lite");
    sh("truncate -s 300000 '%s/model.safetensors'%s", d, "");
    expect_failure("truncated safetensors", d, "point outside the file");
    d = copy_fixture("glm4_moe_tied");
    sh("rm \"$(ls '%s'/model-00002-of-*.safetensors)\"%s", d, "");
    expect_failure("shard missing", d, "is missing");
    d = copy_fixture("dsv3_fp8");
    edit_header(d, "model-00001-of-00003.safetensors", del_tensor,
                "model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv");
    edit_json(d, "model.safetensors.index.json", "weight_map",
              "model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv", NULL);
    expect_failure("FP8 without its scale", d, "has no block scale");
    d = copy_fixture("qwen3_moe");
    sh("rm '%s/model.safetensors'%s", d, "");
    expect_failure("no weights", d, "no model.safetensors or model.safetensors.index.json found");
    expect_failure("no such directory", "/nonexistent/model", "/nonexistent/model/config.json: cannot open");

    /* bad CLI arguments */
    d = copy_fixture("qwen3_moe");
    expect_logits_failure("token id past the vocabulary", d, "1,2,300", "token id 300 at position 2 is outside the vocabulary [0, 300)");
    expect_logits_failure("malformed ids", d, "1,x", "--ids: '1,x' is not a comma-separated list of token ids");
    expect_logits_failure("negative id", d, "-1", "--ids");

    test_rmtree(tmp);
    return test_summary("test_bad_model");
}
