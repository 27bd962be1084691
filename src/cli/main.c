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
    {"run", kr_cmd_run, "run -m MODEL -p PROMPT [-n N] [--chat] [sampling]   stream a continuation"},
    {"chat", kr_cmd_chat, "chat -m MODEL [--system S]           interactive chat through the chat template"},
    {"perplexity", kr_cmd_perplexity, "perplexity -m MODEL -f FILE [--ctx N] [--stride S]   sliding-window perplexity"},
    {"tokenize", kr_cmd_tokenize, "tokenize -t TOKENIZER (--text S | --file F) [--ids] [--special]"},
    {"detokenize", kr_cmd_detokenize, "detokenize -t TOKENIZER IDS...      ids back to text"},
    {"template", kr_cmd_template, "template --template FILE.jinja|MODEL --messages FILE.json [...]   render a chat prompt"},
    {"serve", kr_cmd_serve, "serve -m MODEL [--host H] [--port P] [--api-key K]   OpenAI-compatible HTTP server"},
    {"info", kr_cmd_info, "info MODEL                          family, shapes, parameters, memory"},
    {"bench", kr_cmd_bench, "bench (-m MODEL | --synthetic CONFIG.json) [--threads N] [--expert-bits 4|8] [--json]   decode/prefill speed vs roofline"},
    {"check", kr_cmd_check, "check [-m MODEL]                    system report: SIMD, cores, NUMA, THP, memory"},
    {"plan", kr_cmd_plan, "plan (-m MODEL | --synthetic CONFIG.json) [--vram 16G] [--kv-dtype fp8|bf16]   VRAM plan for one GPU"},
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
    fprintf(to, "\nMODEL is a Hugging Face model directory (config.json, *.safetensors, tokenizer files).\n"
                "Run a command with --help for its options.\n");
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
