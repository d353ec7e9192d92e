/* The CLI's subcommands; each lives in tools/cmd_<name>.c.
 * Exit codes: 0 success, 1 runtime failure, 2 bad input (usage, shapes, files). */
#ifndef FI_TOOLS_COMMANDS_H
#define FI_TOOLS_COMMANDS_H

int cmd_attn(int argc, char **argv);
int cmd_mask(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_logits(int argc, char **argv);

#endif
