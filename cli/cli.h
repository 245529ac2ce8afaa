/* cli.h: the subcommands of the `semipaint` command-line tool, one function each, and the helpers they share. */
#ifndef CLI_H
#define CLI_H

#include "common/sp.h"

/* Each subcommand takes the arguments after its own name (argv[0] is the subcommand's name),
 * prints its result on stdout and errors on stderr, and returns the process exit status
 * (0 success, 1 failure, 2 usage error). */
int cmd_weights(int argc, char **argv); /* weights info FILE */
int cmd_bench(int argc, char **argv);   /* bench [--vs-torch] ... */
int cmd_masks(int argc, char **argv);   /* masks --out DIR [--count N] ... (QD-IMD) */
int cmd_index(int argc, char **argv);   /* index build|info|query|add|bench|... (retrieval database) */
int cmd_eval(int argc, char **argv);    /* eval --images DIR --masks DIR --out DIR ... (the paper's Table 1) */
int cmd_inpaint(int argc, char **argv); /* inpaint --image FILE|DIR --mask FILE|DIR --out FILE|DIR ... (offline) */

/* ---- helpers they share (cli_util.c) ---- */

/* Parses a base-10 integer in [lo, hi] into *out; 0 on success, -1 otherwise. */
int cli_parse_int(const char *s, int lo, int hi, int *out);
/* 1 when `name` ends in .jpg, .jpeg or .png (any case). */
int cli_is_image_name(const char *name);
/* The JPEG and PNG files directly in `dir` (names starting with '.' skipped), sorted by name:
 * *names are malloc'ed base names, *n of them (0 for none). Errors name the folder. */
sp_status cli_list_images(const char *dir, char ***names, long *n);
/* Frees what cli_list_images returned; NULL is a no-op. */
void cli_free_names(char **names, long n);

#endif
