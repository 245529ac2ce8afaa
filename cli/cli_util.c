/* cli_util.c: helpers the `semipaint` subcommands share: numbers, the table-driven option parser, folders of images. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "cli/cli.h"

int cli_parse_int(const char *s, int lo, int hi, int *out) {
    long v;
    if (cli_parse_long(s, lo, hi, &v)) return -1;
    *out = (int)v;
    return 0;
}

int cli_parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int cli_parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (*s == '-' || *s == '+') return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end || errno) return -1;
    *out = v;
    return 0;
}

int cli_parse_double(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

/* ---- options ---- */

/* The option of `spec` spelled `name` (len bytes), or NULL. */
static const cli_opt *find_opt(const cli_spec *spec, const char *name, size_t len) {
    for (int i = 0; i < spec->nopts; i++) {
        const cli_opt *o = &spec->opts[i];
        if ((strlen(o->name) == len && !strncmp(o->name, name, len)) ||
            (o->alias && strlen(o->alias) == len && !strncmp(o->alias, name, len)))
            return o;
    }
    return NULL;
}

/* Stores `v` into `o`'s field of `dst`; 0, or -1 after printing why the value is bad. */
static int store(const cli_spec *spec, const cli_opt *o, const char *v, char *dst) {
    void *f = dst + o->off;
    int bad = 0;
    const char *expect = "";
    char range[128];
    switch (o->kind) {
    case CLI_FLAG: *(int *)f = 1; return 0;
    case CLI_STR: *(const char **)f = v; return 0;
    case CLI_INT: bad = cli_parse_int(v, (int)o->lo, (int)o->hi, f); break;
    case CLI_LONG: bad = cli_parse_long(v, (long)o->lo, (long)o->hi, f); break;
    case CLI_U64: {
        uint64_t u;
        bad = cli_parse_u64(v, &u) || (double)u < o->lo || (double)u > o->hi;
        if (!bad) *(uint64_t *)f = u;
        break;
    }
    case CLI_DOUBLE: bad = cli_parse_double(v, o->lo, o->hi, f); break;
    case CLI_FN: bad = o->fn(v, f) != 0; expect = o->expect; break;
    }
    if (!bad) return 0;
    if (o->kind == CLI_DOUBLE)
        snprintf(range, sizeof range, "a number in [%g, %g]", o->lo, o->hi);
    else if (o->kind != CLI_FN)
        snprintf(range, sizeof range, "an integer in [%.0f, %.0f]", o->lo, o->hi);
    fprintf(stderr, "%s: %s %s: expected %s\n", spec->cmd, o->name, v, o->kind == CLI_FN ? expect : range);
    return -1;
}

/* A usage error: the message, then the command's usage, on stderr; returns 2. */
static int usage_error(const cli_spec *spec) {
    if (spec->usage) {
        fputc('\n', stderr);
        spec->usage(stderr);
    }
    return 2;
}

int cli_parse(const cli_spec *spec, int argc, char **argv, void *dst, const char **pos, int *npos) {
    int np = 0;
    if (npos) *npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            if (spec->usage) spec->usage(stdout);
            return 0;
        }
        if (a[0] != '-' || !a[1]) { /* a positional argument ("-" is one too) */
            if (np == spec->max_pos) {
                if (spec->max_pos == 0)
                    fprintf(stderr, "%s: unexpected argument '%s' (this command takes none)\n", spec->cmd, a);
                else
                    fprintf(stderr, "%s: unexpected argument '%s' (this command takes at most %d)\n", spec->cmd, a,
                            spec->max_pos);
                return usage_error(spec);
            }
            pos[np++] = a;
            if (npos) *npos = np;
            continue;
        }
        const char *eq = !strncmp(a, "--", 2) ? strchr(a, '=') : NULL;
        const size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const cli_opt *o = find_opt(spec, a, len);
        if (!o) {
            fprintf(stderr, "%s: %.*s is not an option of this command\n", spec->cmd, (int)len, a);
            return usage_error(spec);
        }
        const char *v = NULL;
        if (o->kind == CLI_FLAG) {
            if (eq) {
                fprintf(stderr, "%s: %s takes no value\n", spec->cmd, o->name);
                return usage_error(spec);
            }
        } else if (eq) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            fprintf(stderr, "%s: %s needs a value\n", spec->cmd, o->name);
            return usage_error(spec);
        }
        if (store(spec, o, v, dst)) return 2;
    }
    if (np < spec->min_pos) {
        fprintf(stderr, "%s: %s\n", spec->cmd, np ? "too few arguments" : "missing arguments");
        return usage_error(spec);
    }
    return -1;
}

/* ---- files ---- */

sp_status cli_make_dirs(const char *dir) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) return sp_err(SP_ERR_INVALID, "%s: path too long", dir);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) return sp_err(SP_ERR_IO, "mkdir %s: %s", buf, strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return sp_err(SP_ERR_IO, "%s: not a folder", dir);
    return SP_OK;
}

const char *cli_base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

int cli_is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png") ||
                   !strcasecmp(dot, ".webp"));
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

int cli_find_mask(const char *dir, const char *name, char *out, size_t n) {
    static const char *const ext[] = {".png", ".jpg", ".jpeg", ".webp", ".PNG", ".JPG", ".JPEG", ".WEBP"};
    char stem[1024];
    snprintf(stem, sizeof stem, "%s", cli_base_name(name));
    char *dot = strrchr(stem, '.');
    if (dot && dot != stem) *dot = 0;
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        if (snprintf(out, n, "%s/%s%s", dir, stem, ext[i]) >= (int)n) return 0;
        struct stat st;
        if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) return 1;
    }
    return 0;
}

/* ---- --model NAME [-c FILE] ---- */

int cli_family_load(const char *cmd, const char *config, const char *name, cli_family *out) {
    extern char **environ;
    const char *path = config ? config : CLI_DEFAULT_CONFIG;
    memset(out, 0, sizeof *out);
    snprintf(out->config, sizeof out->config, "%s", path);
    cfg_config *c = malloc(sizeof *c);
    cfg_family *fams = malloc(CFG_MAX_FAMILIES * sizeof *fams);
    int rc = 1;
    if (!c || !fams) {
        fprintf(stderr, "%s: --model %s: out of memory\n", cmd, name);
    } else if (cfg_load(c, path, environ)) {
        fprintf(stderr, "%s: --model %s: %s\n", cmd, name, sp_err_msg());
    } else {
        int n = cfg_families(c, fams);
        out->nfamilies = n;
        rc = 2;
        for (int i = 0; i < n && rc; i++)
            if (!strcmp(fams[i].name, name)) {
                out->index = i;
                out->f = fams[i];
                rc = 0;
            }
        if (rc) {
            fprintf(stderr, "%s: --model %s: %s has no such family; it has:", cmd, name, path);
            for (int i = 0; i < n; i++) fprintf(stderr, " %s", fams[i].name);
            fprintf(stderr, "\n");
        }
    }
    free(c);
    free(fams);
    return rc;
}

const char *cli_family_key(const cli_family *f, const char *key, char *buf, size_t cap) {
    return cfg_family_key(f->index, f->f.name, key, buf, cap);
}
