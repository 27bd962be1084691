/* Exact re-encoding of GGUF blocks into krasis' INT4/INT8 layout (weights/ggml_requant.h):
 *   1. random Q4_0 / Q8_0 / Q5_0 / IQ4_NL rows: the re-encoded krasis row dequantizes to exactly (bit for bit) what
 *      ggml's dequantization of the source gives; a Q8_0 -128 code is clamped to -127 and counted;
 *   2. end to end: a Q4_0-expert GGUF opened with the default QuantConfig builds an INT4 g32 expert
 *      cache (following the file, no flags) whose every gate/up/down row equals the GGUF's row exactly;
 *      the Q8_0 one an INT8 g32 cache, also exact;
 *   3. the expert cache is keyed by the GGUF's identity (a different file never reuses it). */
#define _GNU_SOURCE /* memmem */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/quant.h"
#include "base/fp.h"
#include "model/gguf_model.h"
#include "test.h"
#include "tmpdir.h"
#include "weights/expert_cache.h"
#include "weights/ggml_quants.h"
#include "weights/ggml_requant.h"

/* a random normal f16 scale (bits), either sign: negative scales occur in files too */
static uint16_t rand_f16_scale(void) { return (uint16_t)((0x1C00 + rand() % 0x1800) | (rand() % 5 ? 0 : 0x8000)); }

static void check_random_rows(uint32_t type, int bits) {
    enum { COLS = 256, BLOCKS = COLS / 32 };
    size_t bb = kr_ggml_info(type).block_bytes;
    uint8_t src[BLOCKS * 34];
    float want[COLS], got[COLS];
    kr_qmatrix q;
    CHECK(kr_qmatrix_shape(&q, 1, COLS, bits, 32) == KR_OK, "shape");
    uint8_t *qb = calloc(1, (size_t)kr_qmatrix_qbytes(&q));
    float *sb = calloc(1, (size_t)kr_qmatrix_sbytes(&q));
    q.q = qb;
    q.s = sb;
    for (int trial = 0; trial < 50; trial++) {
        for (int b = 0; b < BLOCKS; b++) {
            uint16_t d = rand_f16_scale();
            memcpy(src + b * bb, &d, 2);
            for (size_t i = 2; i < bb; i++) {
                uint8_t v = (uint8_t)(rand() & 0xFF);
                if (type == KR_GGML_Q8_0 && v == 0x80)
                    v = 0x81; /* -128 is tested separately */
                src[b * bb + i] = v;
            }
        }
        kr_ggml_dequantize(type, src, COLS, want);
        int64_t c = kr_ggml_reencode_row(type, src, COLS, &q, 0);
        CHECK(c == 0, "type %u -> INT%d: %lld clamped", type, bits, (long long)c);
        kr_dequantize_row(&q, 0, got);
        CHECK(memcmp(want, got, sizeof want) == 0, "type %u -> INT%d g32: re-encoded row is not bit-exact", type, bits);
    }
    if (type == KR_GGML_Q8_0) {
        src[2 + 5] = 0x80; /* code -128 in block 0, column 5 */
        kr_ggml_dequantize(type, src, COLS, want);
        CHECK(kr_ggml_reencode_row(type, src, COLS, &q, 0) == 1, "one -128 code must be reported");
        kr_dequantize_row(&q, 0, got);
        float d = q.s[0];
        CHECK(got[5] == -127 * d && want[5] == -128 * d, "clamped value %g (source %g)", got[5], want[5]);
        got[5] = want[5];
        CHECK(memcmp(want, got, sizeof want) == 0, "only the clamped value may differ");
    }
    CHECK(kr_ggml_reencode_row(type, src, COLS, &(kr_qmatrix){.bits = bits, .gs = 64, .cols = COLS}, 0) == -1,
          "group size 64 is not an exact target");
    free(qb);
    free(sb);
}

static kr_status no_rows(void *ctx, int l, int e, int which, int64_t row, float *out) {
    (void)ctx, (void)l, (void)e, (void)which, (void)row, (void)out;
    return kr_fail(KR_ERR_ARG, "the cache must already exist");
}

static void check_cache(const char *variant, int bits) {
    char path[1024], dir[256];
    snprintf(path, sizeof path, "%s/tests/fixtures/gguf/%s/%s.gguf", KRASIS_SOURCE_DIR, variant, variant);
    CHECK(test_tmpdir(dir, sizeof dir) != NULL, "tmpdir");
    kr_model *m = NULL;
    kr_status s = kr_model_open(path, &m);
    CHECK(s == KR_OK, "%s: %s", variant, kr_error());
    if (s != KR_OK)
        return;
    kr_quant_config qc = {.group_size = 128, .cache_dir = dir, .threads = 2}; /* the CLI defaults, no flags */
    s = kr_model_quantize(m, &qc);
    CHECK(s == KR_OK, "%s: quantize: %s", variant, kr_error());
    CHECK(kr_model_expert_bytes_per_token(m) > 0, "%s: the experts must be quantized without --expert-bits", variant);
    int n_moe = 0;
    for (int l = 0; l < m->hp.n_layers; l++)
        n_moe += m->layers[l].moe;
    kr_ecache_key key = {bits, 32, n_moe, m->hp.router.n_experts, m->hp.hidden, m->hp.moe_intermediate, m->gguf->identity};
    char cpath[512], name[64];
    kr_ecache_file_name(bits, 32, name, sizeof name);
    snprintf(cpath, sizeof cpath, "%s/%s", dir, name);
    kr_ecache c;
    s = kr_ecache_open(cpath, &key, no_rows, NULL, &c);
    CHECK(s == KR_OK, "%s: expected cache %s keyed by the GGUF identity: %s", variant, cpath, kr_error());
    int64_t D = m->hp.hidden, I = m->hp.moe_intermediate, bad = 0, rows = 0;
    float *a = malloc((size_t)(D > I ? D : I) * sizeof *a), *b = malloc((size_t)(D > I ? D : I) * sizeof *b);
    for (int l = 0, slot = 0; s == KR_OK && l < m->hp.n_layers; l++) {
        if (!m->layers[l].moe)
            continue;
        for (int e = 0; e < m->hp.router.n_experts; e++) {
            const kr_mlp *w = &m->layers[l].experts[e];
            const kr_qexpert *q = &c.experts[slot * m->hp.router.n_experts + e];
            for (int64_t i = 0; i < I; i++)
                for (int which = 0; which < 2; which++, rows++) {
                    kr_matrix_row(which ? &w->up : &w->gate, i, a);
                    kr_dequantize_row(&q->w13, 2 * i + which, b);
                    bad += memcmp(a, b, (size_t)D * sizeof *a) != 0;
                }
            for (int64_t d = 0; d < D; d++, rows++) {
                kr_matrix_row(&w->down, d, a);
                kr_dequantize_row(&q->down, d, b);
                bad += memcmp(a, b, (size_t)I * sizeof *a) != 0;
            }
        }
        slot++;
    }
    CHECK(bad == 0, "%s: %lld of %lld cache rows differ from the GGUF's rows", variant, (long long)bad, (long long)rows);
    printf("%s: INT%d g32 expert cache, %lld rows bit-exact\n", variant, bits, (long long)rows);
    free(a);
    free(b);
    if (s == KR_OK)
        kr_ecache_close(&c);
    kr_model_close(m);
    unlink(cpath);
    rmdir(dir);
}

static kr_status quantize_into(const char *path, const char *dir, kr_model **m) {
    KR_TRY(kr_model_open(path, m));
    kr_quant_config qc = {.group_size = 128, .cache_dir = dir, .threads = 2};
    return kr_model_quantize(*m, &qc);
}

/* 3. the cache key holds the GGUF's identity: a different file with the same shapes (here: one byte of
 *    general.name changed) never loads the other's cache; it is rebuilt. */
static void check_identity(void) {
    char src[1024], dir[256], copy[512], cpath[512];
    snprintf(src, sizeof src, "%s/tests/fixtures/gguf/qwen3_moe_q8_0/qwen3_moe_q8_0.gguf", KRASIS_SOURCE_DIR);
    CHECK(test_tmpdir(dir, sizeof dir) != NULL, "tmpdir");
    FILE *f = fopen(src, "rb");
    CHECK(f != NULL, "%s", src);
    if (!f)
        return;
    fseek(f, 0, SEEK_END);
    size_t n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(n);
    CHECK(fread(b, 1, n, f) == n, "read");
    fclose(f);
    char *name = memmem(b, n, "qwen3_moe_q8_0", 14); /* general.name's value */
    CHECK(name != NULL, "general.name");
    if (name)
        name[0] = 'Q';
    snprintf(copy, sizeof copy, "%s/other.gguf", dir);
    test_write(copy, b, n);
    free(b);
    kr_model *a = NULL, *c = NULL;
    CHECK(quantize_into(src, dir, &a) == KR_OK, "%s", kr_error());
    CHECK(quantize_into(copy, dir, &c) == KR_OK, "%s", kr_error());
    if (a && c) {
        CHECK(a->gguf->identity != c->gguf->identity, "the two files must have different identities");
        int n_moe = 2;
        kr_ecache_key ka = {8, 32, n_moe, 8, a->hp.hidden, a->hp.moe_intermediate, a->gguf->identity};
        kr_ecache_key kc = ka;
        kc.config_hash = c->gguf->identity;
        kr_ecache_file_name(8, 32, cpath, sizeof cpath);
        char p[600];
        snprintf(p, sizeof p, "%s/%s", dir, cpath);
        CHECK(kr_ecache_validate(p, &kc) == KR_OK, "the cache must now be the second file's: %s", kr_error());
        CHECK(kr_ecache_validate(p, &ka) != KR_OK, "the first file's key must not load the second's cache");
        unlink(p);
    }
    kr_model_close(a);
    kr_model_close(c);
    unlink(copy);
    rmdir(dir);
}

int main(void) {
    srand(7);
    check_random_rows(KR_GGML_Q4_0, 4);
    check_random_rows(KR_GGML_Q4_0, 8);
    check_random_rows(KR_GGML_Q8_0, 8);
    check_random_rows(KR_GGML_Q5_0, 8);
    check_random_rows(KR_GGML_IQ4_NL, 8);
    CHECK(!kr_ggml_reencodes(KR_GGML_Q8_0, 4, 32) && !kr_ggml_reencodes(KR_GGML_Q4_K, 8, 32) &&
              !kr_ggml_reencodes(KR_GGML_Q4_1, 8, 32) && !kr_ggml_reencodes(KR_GGML_Q6_K, 8, 32) &&
              !kr_ggml_reencodes(KR_GGML_Q5_0, 4, 32),
          "only Q4_0 -> INT4/INT8 g32 and Q8_0 / Q5_0 / IQ4_NL -> INT8 g32 are exact");
    check_cache("qwen3_moe_q4_0", 4);
    check_cache("qwen3_moe_q8_0", 8);
    check_identity();
    return test_summary("test_gguf_requant");
}
