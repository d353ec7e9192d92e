/* flexinfer — the one command-line tool. Dispatches to a subcommand. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"run", cmd_run, "generate text from a prompt with a GGUF model"},
    {"chat", cmd_chat, "interactive multi-turn chat"},
    {"tokenize", cmd_tokenize, "print the token ids and pieces of a text"},
    {"info", cmd_info, "print a GGUF model's metadata and tensors"},
    {"logits", cmd_logits, "write teacher-forced next-token logits of a text as .npy"},
    {"attn", cmd_attn, "run flash attention on .npy arrays"},
    {"mask", cmd_mask, "draw a mask expression and its block map"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: flexinfer <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'flexinfer <command> --help' describes a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "flexinfer: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
