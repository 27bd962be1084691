/* krasis perplexity -m MODEL -f FILE [--ctx N] [--stride S]
 * Sliding-window perplexity as the usual tools compute it (Hugging Face's perplexity guide): windows of
 * ctx tokens start every stride tokens; each scores only the tokens the previous window did not, with all
 * the window's earlier tokens as context; the file's first token is never scored. The text is tokenized
 * as a whole with the tokenizer's special tokens (BOS) added. Prints progress to stderr, the result to stdout. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mapfile.h"
#include "cli/commands.h"
#include "cli/gen_options.h"

static const char *usage = "usage: krasis perplexity -m MODEL -f FILE [--ctx N] [--stride S] [--tokenizer PATH]\n"
                           "  defaults: --ctx 512 (at most max_position_embeddings), --stride ctx/2\n";

#define CHUNK 256 /* positions per forward call: bounds the logits buffer at CHUNK x vocab */

static double log_softmax_at(const float *logits, int64_t V, int32_t target) {
    float mx = logits[0];
    for (int64_t i = 1; i < V; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int64_t i = 0; i < V; i++)
        sum += exp((double)logits[i] - mx);
    return (double)logits[target] - mx - log(sum);
}

/* Adds the negative log-likelihood of the window ids[begin, end) scoring targets j >= first. */
static kr_status score_window(kr_model *m, kr_kv_cache *kv, const int32_t *ids, size_t begin, size_t end, size_t first,
                              float *logits, double *nll, int64_t *count) {
    int64_t V = m->hp.vocab;
    kr_kv_cache_reset(kv);
    for (size_t c = begin; c < end; c += CHUNK) {
        size_t len = end - c < CHUNK ? end - c : CHUNK;
        KR_TRY(kr_forward(m, kv, ids + c, (int64_t)len, true, logits));
        for (size_t i = 0; i < len; i++) {
            size_t j = c + i + 1; /* the token predicted at position c + i */
            if (j < end && j >= first) {
                *nll -= log_softmax_at(logits + i * V, V, ids[j]);
                (*count)++;
            }
        }
    }
    return KR_OK;
}

int kr_cmd_perplexity(int argc, char **argv) {
    kr_gen_options o;
    int rc = kr_gen_options_parse(argc, argv, usage, &o);
    if (rc)
        return rc;
    if (!o.file) {
        fprintf(stderr, "krasis: perplexity needs -f FILE\n%s", usage);
        return 2;
    }
    kr_model *m = NULL;
    kr_tokenizer *tok = NULL;
    kr_kv_cache *kv = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    size_t n = 0, len = 0;
    if (kr_model_open(o.model, &m) != KR_OK || kr_model_quantize(m, &o.quant) != KR_OK || kr_tokenizer_load(o.tokenizer ? o.tokenizer : kr_model_source(m), &tok) != KR_OK ||
        kr_kv_cache_create(m, &kv) != KR_OK || kr_read_file(o.file, &text, &len) != KR_OK ||
        kr_tokenizer_encode(tok, text, len, (kr_encode_options){.add_special = true}, &ids, &n) != KR_OK) {
        rc = kr_cli_fail();
        goto done;
    }
    int64_t ctx = o.ctx ? o.ctx : 512;
    if (m->hp.max_pos > 0 && ctx > m->hp.max_pos) {
        if (o.ctx) {
            kr_fail(KR_ERR_ARG, "--ctx %lld exceeds the model's max_position_embeddings %lld", (long long)ctx,
                    (long long)m->hp.max_pos);
            rc = kr_cli_fail();
            goto done;
        }
        ctx = m->hp.max_pos;
    }
    int64_t stride = o.stride ? o.stride : (ctx > 1 ? ctx / 2 : 1);
    if (stride > ctx) {
        kr_fail(KR_ERR_ARG, "--stride %lld is larger than --ctx %lld", (long long)stride, (long long)ctx);
        rc = kr_cli_fail();
        goto done;
    }
    if (n < 2) {
        kr_fail(KR_ERR_ARG, "%s: %zu token%s, nothing to score", o.file, n, n == 1 ? "" : "s");
        rc = kr_cli_fail();
        goto done;
    }
    logits = malloc((size_t)CHUNK * (size_t)m->hp.vocab * sizeof *logits);
    if (!logits) {
        kr_fail(KR_ERR_NOMEM, "out of memory");
        rc = kr_cli_fail();
        goto done;
    }
    size_t windows = 1 + (n > (size_t)ctx ? (n - (size_t)ctx + (size_t)stride - 1) / (size_t)stride : 0);
    double nll = 0;
    int64_t count = 0;
    size_t prev_end = 0, w = 0;
    for (size_t begin = 0; begin < n; begin += (size_t)stride) {
        size_t end = begin + (size_t)ctx < n ? begin + (size_t)ctx : n;
        if (score_window(m, kv, ids, begin, end, prev_end > begin + 1 ? prev_end : begin + 1, logits, &nll, &count) !=
            KR_OK) {
            rc = kr_cli_fail();
            goto done;
        }
        prev_end = end;
        fprintf(stderr, "\rperplexity: window %zu/%zu, %lld tokens scored, ppl %.4f", ++w, windows, (long long)count,
                exp(nll / (double)count));
        if (end == n)
            break;
    }
    fprintf(stderr, "\n");
    printf("perplexity %.4f over %lld tokens (ctx %lld, stride %lld, file %s)\n", exp(nll / (double)count),
           (long long)count, (long long)ctx, (long long)stride, o.file);
done:
    free(logits);
    free(ids);
    free(text);
    kr_kv_cache_free(kv);
    kr_tokenizer_free(tok);
    kr_model_close(m);
    return rc;
}
