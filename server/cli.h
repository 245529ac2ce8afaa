/* cli.h: the subcommands of the `semipaint` command-line tool, one function each. */
#ifndef CLI_H
#define CLI_H

/* Each subcommand takes the arguments after its own name (argv[0] is the subcommand's name),
 * prints its result on stdout and errors on stderr, and returns the process exit status
 * (0 success, 1 failure, 2 usage error). */
int cmd_weights(int argc, char **argv); /* weights info FILE */
int cmd_bench(int argc, char **argv);   /* bench [--vs-torch] ... */
int cmd_masks(int argc, char **argv);   /* masks --out DIR [--count N] ... (QD-IMD) */
int cmd_index(int argc, char **argv);   /* index build|info|query|add|bench|... (retrieval database) */
int cmd_eval(int argc, char **argv);    /* eval --images DIR --masks DIR --out DIR ... (the paper's Table 1) */
int cmd_inpaint(int argc, char **argv); /* inpaint --image FILE|DIR --mask FILE|DIR --out FILE|DIR ... (offline) */

#endif
