/* GGUF tensors: a file written by the gguf Python package (tests/reference/gguf, from
 * tools/make_gguf_reference.py) reads back with ggml-order dimensions and dequantizes to the package's
 * values exactly; lying or truncated copies of it are refused with a message naming what is wrong. */
#include <math.h>

#include "base/mapfile.h"
#include "test.h"
#include "tmpdir.h"
#include "weights/ggml_quants.h"
#include "weights/gguf.h"

static const struct {
    const char *name;
    uint32_t type;
    int n_dims;
    int64_t ne[3];
} expected[] = {
    {"token_embd.weight", KR_GGML_F16, 2, {64, 6, 1}},
    {"output_norm.weight", KR_GGML_F32, 1, {64, 1, 1}},
    {"blk.0.attn_q.weight", KR_GGML_Q8_0, 2, {64, 32, 1}},
    {"blk.0.ffn_up_exps.weight", KR_GGML_Q4_0, 3, {64, 16, 2}},
    {"blk.0.ffn_down_exps.weight", KR_GGML_Q6_K, 3, {256, 4, 2}},
    {"blk.0.attn_k.weight", KR_GGML_Q4_K, 2, {256, 3, 1}},
    {"blk.0.attn_v.weight", KR_GGML_BF16, 2, {32, 5, 1}},
};

static void check_values(const kr_gguf_tensor *t, const char *name) {
    char rel[256], path[1024];
    snprintf(rel, sizeof rel, "tests/reference/gguf/%s.f32", name);
    char *want;
    size_t n;
    if (kr_read_file(test_path(rel, path, sizeof path), &want, &n) != KR_OK) {
        CHECK(0, "%s", kr_error());
        return;
    }
    int64_t numel = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    CHECK(n == (size_t)numel * 4, "%s: %zu reference bytes for %lld elements", name, n, (long long)numel);
    float *got = malloc((size_t)numel * sizeof *got);
    kr_ggml_dequantize(t->type, t->data, numel, got);
    int64_t bad = 0;
    for (int64_t i = 0; i < numel && n == (size_t)numel * 4; i++) {
        float w;
        memcpy(&w, want + 4 * i, 4);
        bad += got[i] != w;
    }
    CHECK(bad == 0, "%s: %lld values differ from the gguf package's", name, (long long)bad);
    free(got);
    free(want);
}

/* a copy of tiny.gguf with `patch` applied at offset `at` (or truncated to `truncate_to` bytes) */
static const char *broken_copy(const char *dir, const char *src, size_t at, const void *patch, size_t n,
                               size_t truncate_to) {
    static char out[700];
    char *bytes;
    size_t size;
    if (kr_read_file(src, &bytes, &size) != KR_OK)
        exit(2);
    if (patch && at + n <= size)
        memcpy(bytes + at, patch, n);
    snprintf(out, sizeof out, "%s/broken.gguf", dir);
    test_write(out, bytes, truncate_to ? truncate_to : size);
    free(bytes);
    return out;
}

static void expect_error(const char *what, const char *path, const char *needle) {
    kr_gguf *g;
    kr_status s = kr_gguf_open(path, &g);
    CHECK(s != KR_OK, "%s: opened", what);
    if (s == KR_OK)
        kr_gguf_close(g);
    else
        CHECK(strstr(kr_error(), needle) && strstr(kr_error(), "broken.gguf"), "%s: message '%s' lacks '%s'", what,
              kr_error(), needle);
}

/* offset of a tensor info's fields: after its name come n_dims (4), ne (8 each), type (4), offset (8) */
static size_t info_field(const char *src, const char *name, int n_dims, int field) {
    char *bytes;
    size_t size;
    if (kr_read_file(src, &bytes, &size) != KR_OK)
        exit(2);
    char *hit = memmem(bytes, size, name, strlen(name));
    size_t at = hit ? (size_t)(hit - bytes) + strlen(name) : 0;
    free(bytes);
    return field == 0 ? at + 4 : field == 1 ? at + 4 + 8 * (size_t)n_dims : at + 4 + 8 * (size_t)n_dims + 4;
}

/* uint64 values past INT64_MAX: a scalar is refused by the integer getters, an array element saturates */
static void test_big_uint64(const char *dir) {
    unsigned char b[256];
    size_t n = 0;
#define PUT(v) (memcpy(b + n, &(v), sizeof(v)), n += sizeof(v))
    uint32_t version = 3, t_u64 = KR_GGUF_UINT64, t_arr = KR_GGUF_ARRAY;
    uint64_t n_tensors = 0, n_kv = 2, len_big = 3, len_arr = 3, count = 2;
    uint64_t big = (1ull << 63) + 5, one = 1, max = UINT64_MAX;
    memcpy(b, "GGUF", 4);
    n = 4;
    PUT(version), PUT(n_tensors), PUT(n_kv);
    PUT(len_big), memcpy(b + n, "big", 3), n += 3, PUT(t_u64), PUT(big);
    PUT(len_arr), memcpy(b + n, "arr", 3), n += 3, PUT(t_arr), PUT(t_u64), PUT(count), PUT(one), PUT(max);
#undef PUT
    char path[600];
    snprintf(path, sizeof path, "%s/big.gguf", dir);
    test_write(path, b, n);
    kr_gguf *g;
    CHECK(kr_gguf_open(path, &g) == KR_OK, "big uint64 file: %s", kr_error());
    if (!g)
        return;
    int64_t v = 0;
    CHECK(kr_gguf_req_int(g, "big", &v) == KR_ERR_FORMAT, "uint64 2^63 + 5 read as an int64");
    CHECK(strstr(kr_error(), "'big'") != NULL, "message names the key: %s", kr_error());
    const kr_gguf_kv *arr;
    CHECK(kr_gguf_req_array(g, "arr", KR_GGUF_UINT64, &arr) == KR_OK, "uint64 array: %s", kr_error());
    if (arr)
        CHECK(kr_gguf_arr_int(arr, 0) == 1 && kr_gguf_arr_int(arr, 1) == INT64_MAX, "elements %lld, %lld",
              (long long)kr_gguf_arr_int(arr, 0), (long long)kr_gguf_arr_int(arr, 1));
    kr_gguf_close(g);
}

int main(void) {
    char src[1024];
    test_path("tests/reference/gguf/tiny.gguf", src, sizeof src);
    kr_gguf *g;
    kr_status s = kr_gguf_open(src, &g);
    CHECK(s == KR_OK, "open: %s", kr_error());
    if (s != KR_OK)
        return test_summary("test_gguf");
    CHECK(kr_gguf_n_tensors(g) == 7, "%llu tensors", (unsigned long long)kr_gguf_n_tensors(g));
    for (size_t i = 0; i < sizeof expected / sizeof *expected; i++) {
        const kr_gguf_tensor *t = kr_gguf_find_tensor(g, expected[i].name);
        CHECK(t != NULL, "tensor %s found", expected[i].name);
        if (!t)
            continue;
        CHECK(t->type == expected[i].type && t->n_dims == expected[i].n_dims && t->ne[0] == expected[i].ne[0] &&
                  t->ne[1] == expected[i].ne[1] && t->ne[2] == expected[i].ne[2] && t->ne[3] == 1,
              "%s: type %u dims %d ne {%lld, %lld, %lld}", expected[i].name, t->type, t->n_dims, (long long)t->ne[0],
              (long long)t->ne[1], (long long)t->ne[2]);
        check_values(t, expected[i].name);
    }
    CHECK(kr_gguf_find_tensor(g, "nope") == NULL, "absent tensor");
    size_t file_size;
    kr_gguf_data(g, &file_size);
    kr_gguf_close(g);

    char dir[512];
    test_tmpdir(dir, sizeof dir);
    expect_error("bad magic", broken_copy(dir, src, 0, "GGUX", 4, 0), "not a GGUF file");
    uint32_t v4 = 4;
    expect_error("unsupported version", broken_copy(dir, src, 4, &v4, 4, 0), "GGUF version 4 is not supported");
    uint64_t huge = 1ull << 60;
    expect_error("absurd tensor count", broken_copy(dir, src, 8, &huge, 8, 0), "tensors but only");
    expect_error("truncated tensor data", broken_copy(dir, src, 0, NULL, 0, file_size - 100),
                 "'blk.0.attn_v.weight' data");
    uint64_t far = 1ull << 40;
    expect_error("offset past the end", broken_copy(dir, src, info_field(src, "blk.0.attn_v.weight", 2, 2), &far, 8, 0),
                 "lies past the end of the file");
    uint64_t odd = 7;
    expect_error("misaligned offset", broken_copy(dir, src, info_field(src, "output_norm.weight", 1, 2), &odd, 8, 0),
                 "is not aligned");
    uint32_t unknown = 77;
    expect_error("unknown quant type", broken_copy(dir, src, info_field(src, "blk.0.attn_q.weight", 2, 1), &unknown, 4, 0),
                 "unknown ggml type 77");
    uint64_t ragged = 48;
    expect_error("partial block", broken_copy(dir, src, info_field(src, "blk.0.attn_q.weight", 2, 0), &ragged, 8, 0),
                 "not a multiple of the Q8_0 block");
    uint32_t dims9 = 9;
    expect_error("too many dimensions", broken_copy(dir, src, info_field(src, "output_norm.weight", 1, 0) - 4, &dims9, 4, 0),
                 "has 9 dimensions");
    test_big_uint64(dir);
    test_rmtree(dir);
    return test_summary("test_gguf");
}
