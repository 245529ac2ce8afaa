/* cli.h: the subcommands of the `semipaint` command-line tool, one function each, and the helpers they share. */
#ifndef CLI_H
#define CLI_H

#include <stdint.h>
#include <stdio.h>

#include "common/sp.h"
#include "core/config.h"

/* Each subcommand takes the arguments after its own name (argv[0] is the subcommand's name),
 * prints its result on stdout and errors on stderr, and returns the process exit status
 * (0 success, 1 failure, 2 usage error). */
int cmd_weights(int argc, char **argv); /* weights info FILE */
int cmd_bench(int argc, char **argv);   /* bench [--vs-torch | --model NAME] ... */
int cmd_masks(int argc, char **argv);   /* masks --out DIR [--count N] ... (QD-IMD) */
int cmd_index(int argc, char **argv);   /* index build|info|query|add|bench|... (retrieval database, or --model NAME's) */
int cmd_eval(int argc, char **argv);    /* eval --images DIR --masks DIR --out DIR ... (the paper's Table 1) */
int cmd_inpaint(int argc, char **argv); /* inpaint --image FILE|DIR --mask FILE|DIR --out FILE|DIR ... (offline) */
int cmd_route(int argc, char **argv);   /* route --image FILE|DIR --mask FILE|DIR ... (model=auto's router) */

/* ---- helpers they share (cli_util.c) ---- */

/* Parses a base-10 integer in [lo, hi] into *out; 0 on success, -1 otherwise. */
int cli_parse_int(const char *s, int lo, int hi, int *out);
/* The same for a long. */
int cli_parse_long(const char *s, long lo, long hi, long *out);
/* Parses a base-10 unsigned 64-bit integer (no sign) into *out; 0 on success, -1 otherwise. */
int cli_parse_u64(const char *s, uint64_t *out);
/* Parses a number (strtod's forms) in [lo, hi] into *out; 0 on success, -1 otherwise (NaN too). */
int cli_parse_double(const char *s, double lo, double hi, double *out);

/* ---- options: each command declares its own, so that no command takes another's ---- */

/* How an option's value is stored in the command's options struct, at `off`. */
typedef enum {
    CLI_FLAG,   /* no value: sets an int to 1 */
    CLI_STR,    /* const char *, pointing into argv */
    CLI_INT,    /* int in [lo, hi] (cli_parse_int) */
    CLI_LONG,   /* long in [lo, hi] (cli_parse_long) */
    CLI_U64,    /* uint64_t in [lo, hi] (cli_parse_u64) */
    CLI_DOUBLE, /* double in [lo, hi] (cli_parse_double) */
    CLI_FN,     /* fn(value, field): 0, or -1 for a bad value */
} cli_kind;

/* One option of a command. */
typedef struct {
    const char *name;  /* "--images" */
    const char *alias; /* another spelling ("-k"), or NULL */
    cli_kind kind;
    size_t off;        /* offsetof its field in the command's options struct */
    double lo, hi;     /* CLI_INT, CLI_LONG, CLI_U64, CLI_DOUBLE: the accepted range */
    int (*fn)(const char *value, void *field); /* CLI_FN */
    const char *expect; /* CLI_FN: the values it takes, for the error message ("on or off") */
} cli_opt;

/* A command's options, positional arguments and usage. */
typedef struct {
    const char *cmd;      /* "semipaint index build": how messages name the command */
    const cli_opt *opts;  /* its options */
    int nopts;
    int min_pos, max_pos; /* how many positional arguments it takes */
    void (*usage)(FILE *f); /* prints its usage */
} cli_spec;

/* Parses argv[1..argc) (argv[0] is the command's name) into the options struct `dst` and the
 * positional arguments into pos[0..*npos) (pos holds spec->max_pos; NULL when it is 0). An option
 * takes its value from the next argument or after '=' ("--count=10"); options and positional
 * arguments may come in any order; "-h" or "--help" prints the usage on stdout. Fields of options
 * not given keep what `dst` held. Returns -1 to go on, otherwise the exit status the command is
 * to return: 0 after --help, 2 after a usage error (an option the command does not take, a
 * missing or bad value, too few or too many positional arguments), printed on stderr as
 * "CMD: what", followed by the command's usage. */
int cli_parse(const cli_spec *spec, int argc, char **argv, void *dst, const char **pos, int *npos);

/* mkdir -p: creates `dir` and its missing parents; fails, naming the folder, when it cannot or
 * when `dir` exists and is not a folder. */
sp_status cli_make_dirs(const char *dir);
/* The part of `path` after its last '/'. */
const char *cli_base_name(const char *path);
/* 1 when `name` ends in .jpg, .jpeg, .png or .webp (any case). */
int cli_is_image_name(const char *name);
/* The JPEG and PNG files directly in `dir` (names starting with '.' skipped), sorted by name:
 * *names are malloc'ed base names, *n of them (0 for none). Errors name the folder. */
sp_status cli_list_images(const char *dir, char ***names, long *n);
/* Frees what cli_list_images returned; NULL is a no-op. */
void cli_free_names(char **names, long n);
/* The mask of image file `name` (any folder and extension) in folder `dir`: the first of DIR/STEM.png,
 * .jpg, .jpeg, .webp (then the same in upper case) that is a regular file, into `out` (n bytes);
 * 0 when there is none. */
int cli_find_mask(const char *dir, const char *name, char *out, size_t n);

/* ---- --model NAME [-c FILE]: a model family of the configuration (docs/cli.md) ---- */

/* The default configuration file of --model. */
#define CLI_DEFAULT_CONFIG "config/semipaintd.yaml"

/* One family of a configuration, as --model found it. */
typedef struct {
    char config[CFG_PATH_MAX]; /* the file read */
    int index;                 /* in cfg_families' order: 0 = model.family's (model.* and retrieval.*) */
    int nfamilies;             /* families the configuration has */
    cfg_family f;              /* its keys: paths as the configuration gives them */
} cli_family;

/* Loads the configuration `config` (NULL: CLI_DEFAULT_CONFIG) with the environment's SEMIPAINT_*
 * overrides (cfg_load, as semipaintd does) and copies its family `name` into *out. Returns 0, or
 * the exit status after printing why on stderr as "CMD: --model NAME: ...": 1 when the
 * configuration cannot be loaded, 2 (a usage error) when it has no family `name`, the message then
 * naming the file and the families it has. */
int cli_family_load(const char *cmd, const char *config, const char *name, cli_family *out);

/* How messages name key `key` ("coarse", "database", ...) of family `f`: "model.coarse",
 * "retrieval.database" for the first family, "families.NAME.KEY" for the others (cfg_family_key),
 * written into `buf` (cap bytes); returns buf. */
const char *cli_family_key(const cli_family *f, const char *key, char *buf, size_t cap);

#endif
