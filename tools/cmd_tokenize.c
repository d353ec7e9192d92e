/* Placeholder until the 'tokenize' command lands; replaced by its implementation. */
#include <stdio.h>

#include "commands.h"

int cmd_tokenize(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "flexinfer tokenize: not built yet\n");
    return 1;
}
