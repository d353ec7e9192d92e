/* Placeholder until the 'attn' command lands; replaced by its implementation. */
#include <stdio.h>

#include "commands.h"

int cmd_attn(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "flexinfer attn: not built yet\n");
    return 1;
}
