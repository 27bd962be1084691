/* The krasis subcommands. Each returns the process exit status and prints its own errors. */
#ifndef KR_CLI_COMMANDS_H
#define KR_CLI_COMMANDS_H

int kr_cmd_info(int argc, char **argv);
int kr_cmd_logits(int argc, char **argv);
int kr_cmd_run(int argc, char **argv);
int kr_cmd_chat(int argc, char **argv);
int kr_cmd_perplexity(int argc, char **argv);
int kr_cmd_tokenize(int argc, char **argv);
int kr_cmd_detokenize(int argc, char **argv);
int kr_cmd_template(int argc, char **argv);
int kr_cmd_bench(int argc, char **argv);
int kr_cmd_check(int argc, char **argv);
int kr_cmd_serve(int argc, char **argv);
int kr_cmd_plan(int argc, char **argv);

/* Prints "krasis: <message>" for the current kr_error() to stderr and returns 1. */
int kr_cli_fail(void);

#endif
