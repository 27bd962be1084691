/* krasis: command-line entry point; dispatches to one subcommand. */
#include <stdio.h>
#include <string.h>

#include "base/status.h"
#include "cli/commands.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *usage;
} commands[] = {
    {"info", kr_cmd_info, "info MODEL                      family, shapes, parameters, memory"},
    {"logits", kr_cmd_logits, "logits MODEL --ids 1,2,3 [--all-positions] --out FILE.npy   float32 logits"},
};

int kr_cli_fail(void) {
    fprintf(stderr, "krasis: %s\n", kr_error());
    return 1;
}

static void usage(FILE *to) {
    fprintf(to, "usage: krasis <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(to, "  krasis %s\n", commands[i].usage);
    fprintf(to, "\nMODEL is a Hugging Face model directory (config.json + *.safetensors).\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("krasis 0.1.0\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "krasis: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
