/* cli_util.c: helpers the `semipaint` subcommands share: integer options and folders of images. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"

int cli_parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

int cli_is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png"));
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

sp_status cli_list_images(const char *dir, char ***names, long *n) {
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return sp_err(SP_ERR_IO, "%s: %s", dir, strerror(errno));
    long cap = 0, cnt = 0;
    char **v = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !cli_is_image_name(e->d_name)) continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 256;
            char **nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) break;
            v = nv;
        }
        if (!(v[cnt] = strdup(e->d_name))) break;
        cnt++;
    }
    closedir(d);
    if (e) {
        cli_free_names(v, cnt);
        return sp_err(SP_ERR_NOMEM, "listing %s", dir);
    }
    if (cnt) qsort(v, (size_t)cnt, sizeof *v, cmp_str);
    *names = v;
    *n = cnt;
    return SP_OK;
}

void cli_free_names(char **v, long n) {
    for (long i = 0; v && i < n; i++) free(v[i]);
    free(v);
}
