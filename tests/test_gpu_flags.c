/* The GPU flags every model command takes (cli/quant_options.c), from the command line: a bad value of
 * --kv-dtype, --expert-mode, --vram or --prefill-chunk is refused with exit status 2 and a message naming
 * the flag and the value; --gpu where it cannot run (a CPU-only build, no driver, no GPU) ends in exit
 * status 1 with a message saying why, and where it can, runs (exit 0). argv[1] is the krasis binary. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli_run.h"
#include "test.h"

/* krasis run on the demo model with extra arguments; stderr + stdout into out, the exit status back */
static int run(const char *krasis, const char *extra, char *out, size_t n) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s run -m %s/models/tiny-moe -p hi -n 1 %s 2>&1", krasis, KRASIS_SOURCE_DIR, extra);
    return run_capture(cmd, out, n);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_gpu_flags KRASIS_BINARY\n");
        return 2;
    }
    static const struct {
        const char *args, *needle;
    } bad[] = {
        {"--gpu --kv-dtype fp16", "--kv-dtype: 'fp16'"},
        {"--gpu --kv-dtype", "--kv-dtype: '(missing)'"},
        {"--gpu --expert-mode banana", "--expert-mode banana"},
        {"--gpu --expert-mode grouped:0", "--expert-mode grouped:0"},
        {"--gpu --vram lots", "--vram: 'lots'"},
        {"--gpu --vram -16G", "--vram: '-16G'"},
        {"--gpu --vram nan", "--vram: 'nan'"},
        {"--gpu --prefill-chunk 0", "--prefill-chunk: '0'"},
        {"--gpus 0,", "--gpus: '0,'"},
        {"--pp 0", "--pp: '0'"},
        {"--gpu --prefill-chunk 12x", "--prefill-chunk: '12x'"},
        {"--gpu --prefill-chunk 65536", "--prefill-chunk: '65536' is not a token count from 1 to 65535"},
    };
    char out[8192];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = run(argv[1], bad[i].args, out, sizeof out);
        CHECK(rc == 2 && strstr(out, bad[i].needle), "'%s': exit %d (want 2), output lacks \"%s\":\n%s", bad[i].args,
              rc, bad[i].needle, out);
    }
    int rc = run(argv[1], "--gpu --expert-mode cpu", out, sizeof out);
    bool why = strstr(out, "built without CUDA") || strstr(out, "no usable CUDA device");
    CHECK(rc == 0 || (rc == 1 && why), "--gpu: exit %d; either it runs or it says why it cannot:\n%s", rc, out);
    CHECK(!strstr(out, "Sanitizer") && !strstr(out, "runtime error"), "no sanitizer report:\n%s", out);
    printf("--gpu here: %s\n", rc == 0 ? "ran on the GPU" : "refused with a reason");
    return test_summary("test_gpu_flags");
}
