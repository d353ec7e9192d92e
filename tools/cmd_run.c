/* Placeholder until the 'run' command lands; replaced by its implementation. */
#include <stdio.h>

#include "commands.h"

int cmd_run(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "flexinfer run: not built yet\n");
    return 1;
}
