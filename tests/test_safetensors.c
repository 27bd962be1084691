/* safetensors reader: single and sharded checkpoints read correctly; every kind of broken or lying
 * file is refused with a message that names the file and what is wrong. */
#include <math.h>

#include "base/fp.h"
#include "test.h"
#include "tmpdir.h"
#include "weights/matrix.h"
#include "weights/safetensors.h"

static char dir[512];

static const char *at(const char *name) {
    static char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

/* Opens path and expects failure with `needle` (and the file's name) in the message. */
static void expect_error(const char *path, const char *needle, const char *file) {
    kr_safetensors st;
    kr_status s = kr_st_open(path, &st);
    CHECK(s != KR_OK, "%s: opened, expected an error containing '%s'", path, needle);
    if (s == KR_OK) {
        kr_st_close(&st);
        return;
    }
    CHECK(strstr(kr_error(), needle) != NULL, "message '%s' lacks '%s'", kr_error(), needle);
    CHECK(strstr(kr_error(), file) != NULL, "message '%s' does not name '%s'", kr_error(), file);
}

static void test_single(void) {
    /* a: F32 [2, 3] = 0..5 at [0, 24); b: BF16 [4] = 1, -2, 0.5, 3 at [24, 32) */
    unsigned char data[32];
    for (int i = 0; i < 6; i++) {
        float v = (float)i;
        memcpy(data + 4 * i, &v, 4);
    }
    uint16_t b[4] = {0x3f80, 0xc000, 0x3f00, 0x4040};
    memcpy(data + 24, b, 8);
    test_write_st(at("model.safetensors"),
                  "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                  "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]}}",
                  data, sizeof data);
    kr_safetensors st;
    kr_status s = kr_st_open(dir, &st);
    CHECK(s == KR_OK, "open dir: %s", kr_error());
    if (s != KR_OK)
        return;
    CHECK(st.n_tensors == 2 && st.n_files == 1, "%d tensors in %d files", st.n_tensors, st.n_files);
    const kr_tensor *a = kr_st_find(&st, "a"), *bt = kr_st_find(&st, "b");
    CHECK(a && a->dtype == KR_DT_F32 && a->ndim == 2 && a->shape[0] == 2 && a->shape[1] == 3, "tensor a");
    CHECK(bt && bt->dtype == KR_DT_BF16 && kr_tensor_numel(bt) == 4, "tensor b");
    CHECK(kr_st_find(&st, "__metadata__") == NULL && kr_st_find(&st, "c") == NULL, "absent names");
    if (a && bt) {
        kr_matrix m = {.rows = 2, .cols = 3, .dtype = a->dtype, .data = a->data};
        float row[3], v[4];
        kr_matrix_row(&m, 1, row);
        CHECK(row[0] == 3 && row[1] == 4 && row[2] == 5, "row 1 = %g %g %g", row[0], row[1], row[2]);
        kr_convert_to_f32(bt->dtype, bt->data, 4, v);
        CHECK(v[0] == 1 && v[1] == -2 && v[2] == 0.5f && v[3] == 3, "bf16 values");
    }
    kr_st_close(&st);
    /* a file path works as well as its directory */
    s = kr_st_open(at("model.safetensors"), &st);
    CHECK(s == KR_OK, "open file: %s", kr_error());
    if (s == KR_OK)
        kr_st_close(&st);
    unlink(at("model.safetensors"));
}

static void test_fp8_block_rows(void) {
    /* FP8 [3, 5] with 2x2 blocks: scale_inv [2, 3]; every stored value is 1.0 (0x38), so row r, column j
     * dequantizes to scale[r / 2][j / 2] */
    uint8_t w[15];
    memset(w, 0x38, sizeof w);
    float scale[6] = {1, 2, 3, 4, 5, 6};
    kr_matrix m = {.rows = 3, .cols = 5, .dtype = KR_DT_F8_E4M3, .data = w, .scale = (const uint8_t *)scale,
                   .scale_dtype = KR_DT_F32, .scale_cols = 3, .block_rows = 2, .block_cols = 2};
    float row[5];
    kr_matrix_row(&m, 1, row);
    CHECK(row[0] == 1 && row[1] == 1 && row[2] == 2 && row[3] == 2 && row[4] == 3, "fp8 row 1: %g %g %g %g %g",
          row[0], row[1], row[2], row[3], row[4]);
    kr_matrix_row(&m, 2, row);
    CHECK(row[0] == 4 && row[2] == 5 && row[4] == 6, "fp8 row 2 (ragged last block): %g %g %g", row[0], row[2],
          row[4]);
}

static void test_sharded(void) {
    float x = 1.5f, y[2] = {2, 3};
    test_write_st(at("s-1.safetensors"), "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", &x, 4);
    test_write_st(at("s-2.safetensors"), "{\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", y, 8);
    const char *index = "{\"metadata\":{\"total_size\":12},\"weight_map\":{\"x\":\"s-1.safetensors\",\"y\":\"s-2.safetensors\"}}";
    test_write(at("model.safetensors.index.json"), index, strlen(index));
    kr_safetensors st;
    kr_status s = kr_st_open(dir, &st);
    CHECK(s == KR_OK, "sharded: %s", kr_error());
    if (s == KR_OK) {
        const kr_tensor *t = kr_st_find(&st, "y");
        CHECK(st.n_files == 2 && t && t->file == 1, "y lives in shard 2");
        CHECK(strstr(kr_st_file_of(&st, t), "s-2.safetensors") != NULL, "file of y");
        kr_st_close(&st);
    }
    /* the index names a tensor its shard does not hold */
    index = "{\"weight_map\":{\"x\":\"s-1.safetensors\",\"z\":\"s-2.safetensors\"}}";
    test_write(at("model.safetensors.index.json"), index, strlen(index));
    expect_error(dir, "'z' is listed in shard 's-2.safetensors' but not stored there", "index.json");
    /* a listed shard is missing */
    index = "{\"weight_map\":{\"x\":\"s-1.safetensors\",\"y\":\"s-3.safetensors\"}}";
    test_write(at("model.safetensors.index.json"), index, strlen(index));
    expect_error(dir, "shard 's-3.safetensors' (listed for tensor 'y') is missing", "index.json");
    /* the same tensor in two shards */
    test_write_st(at("s-2.safetensors"), "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", &x, 4);
    index = "{\"weight_map\":{\"x\":\"s-1.safetensors\",\"y\":\"s-2.safetensors\"}}";
    test_write(at("model.safetensors.index.json"), index, strlen(index));
    expect_error(dir, "tensor 'x' is also stored in", "s-2.safetensors");
    /* the index is not JSON / has no weight_map / escapes the directory */
    test_write(at("model.safetensors.index.json"), "{\"weight_map\":", 14);
    expect_error(dir, "not valid JSON", "model.safetensors.index.json");
    test_write(at("model.safetensors.index.json"), "{}", 2);
    expect_error(dir, "'weight_map' must be an object", "model.safetensors.index.json");
    index = "{\"weight_map\":{\"x\":\"../s-1.safetensors\"}}";
    test_write(at("model.safetensors.index.json"), index, strlen(index));
    expect_error(dir, "must be a plain file name", "model.safetensors.index.json");
    unlink(at("model.safetensors.index.json"));
    unlink(at("s-1.safetensors"));
    unlink(at("s-2.safetensors"));
}

static void test_bad_files(void) {
    unsigned char data[16] = {0};
    const char *p = at("bad.safetensors");
    test_write(p, "\x10\0\0", 3);
    expect_error(p, "too short for a safetensors header", "bad.safetensors");
    test_write(p, "\xff\xff\0\0\0\0\0\0{}", 10);
    expect_error(p, "exceeds the file size", "bad.safetensors");
    test_write_st(p, "{\"a\":", NULL, 0);
    expect_error(p, "header: not valid JSON", "bad.safetensors");
    test_write_st(p, "[1,2]", NULL, 0);
    expect_error(p, "header is not a JSON object", "bad.safetensors");
    /* truncated: the header promises 16 bytes, the file holds 8 */
    test_write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", data, 8);
    expect_error(p, "point outside the file", "bad.safetensors");
    test_write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,12]}}", data, 16);
    expect_error(p, "F32 [4] needs 16 bytes but data_offsets span 12", "bad.safetensors");
    test_write_st(p,
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                  data, 16);
    expect_error(p, "overlap", "bad.safetensors");
    test_write_st(p, "{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", data, 16);
    expect_error(p, "unknown dtype 'Q4'", "bad.safetensors");
    test_write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", data, 16);
    expect_error(p, "shape entries must be non-negative integers", "bad.safetensors");
    test_write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", data, 16);
    expect_error(p, "0 <= begin <= end", "bad.safetensors");
    test_write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", data, 16);
    expect_error(p, "'data_offsets' must be [begin, end]", "bad.safetensors");
    test_write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}", data, 16);
    expect_error(p, "overflows", "bad.safetensors");
    expect_error(at("absent.safetensors"), "cannot open", "absent.safetensors");
    expect_error(dir, "no model.safetensors or model.safetensors.index.json found", dir);
    unlink(p);
}

int main(void) {
    if (!test_tmpdir(dir, sizeof dir)) {
        perror("mkdtemp");
        return 2;
    }
    test_single();
    test_fp8_block_rows();
    test_sharded();
    test_bad_files();
    test_rmtree(dir);
    return test_summary("test_safetensors");
}
