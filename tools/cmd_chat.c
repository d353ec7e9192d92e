/* Placeholder until the 'chat' command lands; replaced by its implementation. */
#include <stdio.h>

#include "commands.h"

int cmd_chat(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "flexinfer chat: not built yet\n");
    return 1;
}
