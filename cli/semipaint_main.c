/* semipaint_main.c: entry point of the `semipaint` command-line tool; dispatches to subcommands. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} command;

static const command commands[] = {
    {"inpaint", cmd_inpaint, "inpaint --image F --mask F --out F  inpaint files or folders offline, as the daemon would"},
    {"weights", cmd_weights, "weights info FILE        architecture, shapes, parameters and sha256 of a weights file"},
    {"bench", cmd_bench, "bench [--vs-torch] ...   time each network and the whole pipeline"},
    {"masks", cmd_masks, "masks --out DIR ...      draw QD-IMD hole masks from Quick Draw strokes"},
    {"index", cmd_index, "index SUBCOMMAND ...     the retrieval database: build, info, query, add, bench"},
    {"eval", cmd_eval, "eval --images DIR --masks DIR --out DIR  the paper's Table 1, Figure 1 and section 5.6 check"},
    {"route", cmd_route, "route --image F --mask F   model=auto's choice: family probabilities and the Telea gate"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: semipaint COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) fprintf(f, "  %s\n", commands[i].help);
    fprintf(f, "\n'semipaint COMMAND --help' describes a command.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("semipaint %s\n", SP_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "semipaint: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
