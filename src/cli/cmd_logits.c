/* krasis logits MODEL --ids 1,2,3 [--all-positions] --out FILE.npy
 * Runs the token ids through the model and writes float32 logits as .npy: [vocab] for the last position,
 * or [n, vocab] with --all-positions. The interface other implementations are compared through: stable. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/npy.h"
#include "cli/commands.h"
#include "cli/quant_options.h"
#include "krasis.h"

static kr_status parse_ids(const char *s, int32_t **ids, int64_t *n) {
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    *ids = malloc(cap * sizeof **ids);
    if (!*ids)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    *n = 0;
    const char *p = s;
    while (1) {
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end != ',' && *end != '\0'))
            return kr_fail(KR_ERR_ARG, "--ids: '%s' is not a comma-separated list of token ids", s);
        (*ids)[(*n)++] = (int32_t)v;
        if (*end == '\0')
            return KR_OK;
        p = end + 1;
    }
}

int kr_cmd_logits(int argc, char **argv) {
    const char *model = NULL, *ids_arg = NULL, *out = NULL;
    bool all = false;
    kr_quant_config qc;
    kr_quant_defaults(&qc);
    for (int i = 1; i < argc; i++) {
        int qrc = kr_quant_flag(argc, argv, &i, &qc);
        if (qrc == 2)
            return 2;
        if (qrc == 1)
            continue;
        if (strcmp(argv[i], "--ids") == 0 && i + 1 < argc)
            ids_arg = argv[++i];
        else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
            out = argv[++i];
        else if (strcmp(argv[i], "--all-positions") == 0)
            all = true;
        else if (argv[i][0] != '-' && !model)
            model = argv[i];
        else {
            fprintf(stderr, "krasis logits: unexpected argument '%s'\n", argv[i]);
            model = NULL;
            break;
        }
    }
    if (!model || !ids_arg || !out) {
        fprintf(stderr, "usage: krasis logits MODEL --ids 1,2,3 [--all-positions] --out FILE.npy\n");
        return 2;
    }
    int32_t *ids = NULL;
    int64_t n = 0;
    kr_model *m = NULL;
    kr_kv_cache *kv = NULL;
    float *logits = NULL;
    int rc = 0;
    if (parse_ids(ids_arg, &ids, &n) != KR_OK || kr_model_open(model, &m) != KR_OK || kr_model_quantize(m, &qc) != KR_OK ||
        kr_kv_cache_create(m, &kv) != KR_OK) {
        rc = kr_cli_fail();
        goto done;
    }
    int64_t rows = all ? n : 1;
    logits = malloc((size_t)(rows * m->hp.vocab) * sizeof *logits);
    if (!logits) {
        kr_fail(KR_ERR_NOMEM, "out of memory for the logits");
        rc = kr_cli_fail();
        goto done;
    }
    int64_t shape[2] = {rows, m->hp.vocab};
    if (kr_forward(m, kv, ids, n, all, logits) != KR_OK ||
        kr_npy_write_f32(out, logits, all ? 2 : 1, all ? shape : shape + 1) != KR_OK) {
        rc = kr_cli_fail();
        goto done;
    }
done:
    free(ids);
    free(logits);
    kr_kv_cache_free(kv);
    kr_model_close(m);
    return rc;
}
