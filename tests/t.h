/* t.h: a tiny test harness: CHECK macros that count failures, and helpers to find test data. */
#ifndef T_H
#define T_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int t_failures = 0, t_checks = 0;

/* Counts a check; on failure prints file, line and the expression, and carries on. */
#define CHECK(x)                                                                          \
    do {                                                                                  \
        t_checks++;                                                                       \
        if (!(x)) {                                                                       \
            t_failures++;                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #x);         \
        }                                                                                 \
    } while (0)

/* Like CHECK, with a printf-style explanation on failure. */
#define CHECKF(x, ...)                                                                    \
    do {                                                                                  \
        t_checks++;                                                                       \
        if (!(x)) {                                                                       \
            t_failures++;                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #x);         \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                          \
        }                                                                                 \
    } while (0)

/* Prints the pass/fail line and returns the exit status for main. */
static inline int t_done(const char *name) {
    printf("%s: %d checks, %d failed: %s\n", name, t_checks, t_failures, t_failures ? "FAIL" : "PASS");
    return t_failures ? 1 : 0;
}

/* 1 when `path` exists. */
static inline int t_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* The shared data folder (../shared/data, or $SEMIPAINT_DATA), or NULL with a skip message. */
static inline const char *t_data_dir(const char *test) {
    const char *d = getenv("SEMIPAINT_DATA");
    if (!d) d = "../shared/data";
    if (!t_exists(d)) {
        printf("%s: SKIP parts needing %s (folder absent)\n", test, d);
        return NULL;
    }
    return d;
}

#endif
