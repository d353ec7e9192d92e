/* Placeholder until the 'info' command lands; replaced by its implementation. */
#include <stdio.h>

#include "commands.h"

int cmd_info(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "flexinfer info: not built yet\n");
    return 1;
}
