/* Placeholder until the 'mask' command lands; replaced by its implementation. */
#include <stdio.h>

#include "commands.h"

int cmd_mask(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "flexinfer mask: not built yet\n");
    return 1;
}
