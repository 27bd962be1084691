/* `krasis bench` from the command line: bad token counts and flag combinations are refused with exit
 * status 2 and a message naming the flag and the value; a small run on the demo model prints one JSON
 * object with the fields the issue names, and --depth reaches it. argv[1] is the krasis binary. */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli_run.h"
#include "test.h"
#include "tmpdir.h"

static int bench(const char *krasis, const char *args, char *out, size_t n) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s bench %s 2>&1", krasis, args);
    return run_capture(cmd, out, n);
}

/* the JSON object of a --json run: its own line, after whatever went to stderr first (the expert cache's
 * progress bar on a machine that has not built it yet) */
static json_t *bench_json(const char *out) {
    const char *line = out[0] == '{' ? out : strstr(out, "\n{");
    return line ? json_loads(line + (line[0] == '\n'), 0, NULL) : NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_bench_cli KRASIS_BINARY\n");
        return 2;
    }
    char demo[1800], out[16384], args[2048], cache[512];
    /* a cache of its own: the first run builds the demo's expert cache (and prints its progress) */
    snprintf(demo, sizeof demo, "-m %s/models/tiny-moe --cache-dir %s", KRASIS_SOURCE_DIR,
             test_tmpdir(cache, sizeof cache));
    static const struct {
        const char *args, *needle;
    } bad[] = {
        {"--decode 0", "--decode: '0' is not a token count from 1"},
        {"--decode abc", "--decode: 'abc'"},
        {"--prefill -3", "--prefill: '-3'"},
        {"--depth 12x", "--depth: '12x'"},
        {"--depth 2000000", "--depth: '2000000'"},
        {"--depth", "--depth: '(missing)'"},
        {"", "give one of -m MODEL and --synthetic"},
        {"--synthetic configs/DeepSeek-V2-Lite.json --depth 16", "--depth needs -m MODEL"},
        {"--frobnicate", "unexpected argument '--frobnicate'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        /* the model flag first where the case is not about it, so the refusal is the flag's own */
        bool own_model = !*bad[i].args || strstr(bad[i].args, "--synthetic");
        snprintf(args, sizeof args, "%s %s", own_model ? "" : demo, bad[i].args);
        int rc = bench(argv[1], args, out, sizeof out);
        CHECK(rc == 2 && strstr(out, bad[i].needle), "bench '%s': exit %d (want 2), output lacks \"%s\":\n%s",
              bad[i].args, rc, bad[i].needle, out);
    }
    snprintf(args, sizeof args, "%s --threads 1 --prefill 8 --decode 3 --depth 40 --json", demo);
    int rc = bench(argv[1], args, out, sizeof out);
    json_t *j = rc == 0 ? bench_json(out) : NULL;
    CHECK(j, "bench on the demo model: exit %d, output is not one JSON object:\n%s", rc, out);
    static const char *fields[] = {"decode_tok_s", "prefill_tok_s", "bytes_per_token", "achieved_gbs", "read_bw_gbs",
                                   "roofline_pct", "threads", "isa", "expert_bits", "group_size", "depth"};
    for (size_t i = 0; j && i < sizeof fields / sizeof *fields; i++)
        CHECK(json_object_get(j, fields[i]), "bench --json lacks \"%s\": %s", fields[i], out);
    if (j) {
        CHECK(json_number_value(json_object_get(j, "decode_tok_s")) > 0, "decode_tok_s not positive: %s", out);
        CHECK(json_integer_value(json_object_get(j, "depth")) == 40, "depth is not the 40 asked for: %s", out);
        /* the decode steps really ran over the 40-token cache: 40 + 3 tokens in it at the end */
        CHECK(json_integer_value(json_object_get(j, "context")) == 43, "context is not 40 + 3: %s", out);
        CHECK(json_integer_value(json_object_get(j, "threads")) == 1, "threads is not 1: %s", out);
    }
    json_decref(j);
    /* without --depth the decode steps start from an empty cache, whatever --prefill ran before them */
    snprintf(args, sizeof args, "%s --threads 1 --prefill 8 --decode 3 --json", demo);
    rc = bench(argv[1], args, out, sizeof out);
    j = rc == 0 ? bench_json(out) : NULL;
    CHECK(j && json_integer_value(json_object_get(j, "context")) == 3, "bench without --depth: context is not 3 "
          "(exit %d): %s", rc, out);
    json_decref(j);
    snprintf(args, sizeof args, "rm -rf '%s'", cache);
    CHECK(system(args) == 0, "removing %s", cache);
    return test_summary("test_bench_cli");
}
