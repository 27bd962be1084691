/* Running a krasis command line from a test: its stdout and stderr (the command should end in 2>&1)
 * into out, the exit status back (-1 when it did not exit normally). */
#ifndef KR_TEST_CLI_RUN_H
#define KR_TEST_CLI_RUN_H

#include <stdio.h>
#include <sys/wait.h>

static inline int run_capture(const char *cmd, char *out, size_t n) {
    FILE *f = popen(cmd, "r");
    size_t got = f ? fread(out, 1, n - 1, f) : 0;
    out[got] = 0;
    int st = f ? pclose(f) : -1;
    return st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* `krasis plan ARGS` */
static inline int run_plan(const char *krasis, const char *args, char *out, size_t n) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s plan %s 2>&1", krasis, args);
    return run_capture(cmd, out, n);
}

#endif
