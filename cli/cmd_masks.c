/* cmd_masks.c: `semipaint masks`: writes QD-IMD hole masks as PNG files and prints their hole-ratio histogram. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "imaging/img.h"
#include "imaging/qdimd.h"

#define MASKS_DEFAULT_NDJSON "../shared/data/quickdraw/simplified"

static void masks_usage(FILE *f) {
    qd_params d;
    qd_params_default(&d);
    fprintf(f,
            "usage: semipaint masks --out DIR [options]\n"
            "Draws QD-IMD hole masks (Iskakov 2018, Algorithm 1) from Quick Draw strokes and writes\n"
            "DIR/qdimd_NNNNN.png (8-bit grey, 255 = hole, 0 = keep), then prints a hole-ratio histogram.\n"
            "Mask i depends only on (seed, i) and the options, the same on every machine.\n\n"
            "  --out DIR            output folder (created)\n"
            "  --ndjson DIR         Quick Draw \"simplified\" *.ndjson folder [%s]\n"
            "  --count N            number of masks [1000]\n"
            "  --start I            index of the first mask [0]\n"
            "  --size S             mask side in pixels [%d]\n"
            "  --seed N             random seed [%" PRIu64 "]\n"
            "  --strokes-mean M     strokes per mask ~ N(M, STD), rounded, at least 1 [%g]\n"
            "  --strokes-std STD    [%g]\n"
            "  --width-min W        line width in px ~ U(min, max) [%g]\n"
            "  --width-max W        [%g]\n"
            "  --scale-min R        upscale before the centre crop ~ U(min, max) [%g]\n"
            "  --scale-max R        [%g]\n"
            "  --whole-drawings     draw whole drawings instead of single strokes\n",
            MASKS_DEFAULT_NDJSON, d.size, d.seed, d.strokes_mean, d.strokes_std, d.width_min, d.width_max,
            d.scale_min, d.scale_max);
}

static int parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno) return -1;
    *out = v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (*s == '-') return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end || errno) return -1;
    *out = v;
    return 0;
}

/* mkdir -p */
static sp_status make_dirs(const char *dir) {
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

/* Writes `im` as PNG through a temporary file and a rename, without fsync: thousands of small
 * files are cheap to regenerate, and an fsync each would take most of the time. */
static sp_status write_png(const img_u8 *im, const char *path) {
    uint8_t *buf = NULL;
    size_t len = 0;
    sp_status st = img_encode(im, IMG_FMT_PNG, 0, &buf, &len);
    if (st) return sp_err_wrap(st, "%s", path);
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(buf);
        return sp_err(SP_ERR_IO, "%s: %s", tmp, strerror(errno));
    }
    size_t w = fwrite(buf, 1, len, f);
    free(buf);
    if (fclose(f) != 0 || w != len) {
        st = sp_err(SP_ERR_IO, "%s: write failed", tmp);
        remove(tmp);
        return st;
    }
    if (rename(tmp, path) != 0) {
        st = sp_err(SP_ERR_IO, "rename %s: %s", tmp, strerror(errno));
        remove(tmp);
        return st;
    }
    return SP_OK;
}

/* Histogram buckets of the hole ratio, as in the paper's tables (plus one below 1%). */
enum { NBUCKETS = 8 };
static const char *const bucket_names[NBUCKETS] = {"<0.01",     "[0.01,0.1]", "(0.1,0.2]", "(0.2,0.3]",
                                                   "(0.3,0.4]", "(0.4,0.5]",  "(0.5,0.6]", ">0.6"};
static int bucket_of(double r) {
    if (r < 0.01) return 0;
    for (int b = 1; b <= 6; b++)
        if (r <= 0.1 * b) return b;
    return 7;
}

int cmd_masks(int argc, char **argv) {
    qd_params p;
    qd_params_default(&p);
    uint64_t count = 1000, start = 0, size = (uint64_t)p.size;
    const char *ndjson = MASKS_DEFAULT_NDJSON, *outdir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            masks_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--whole-drawings")) {
            p.whole_drawings = 1;
            continue;
        }
        if (strncmp(a, "--", 2)) {
            fprintf(stderr, "semipaint masks: unexpected argument '%s'\n", a);
            masks_usage(stderr);
            return 2;
        }
        char name[64];
        const char *val, *eq = strchr(a, '=');
        if (eq) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - a), a);
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
            if (i + 1 >= argc) {
                fprintf(stderr, "semipaint masks: %s needs a value\n", a);
                return 2;
            }
            val = argv[++i];
        }
        int bad = 0;
        if (!strcmp(name, "--out")) outdir = val;
        else if (!strcmp(name, "--ndjson")) ndjson = val;
        else if (!strcmp(name, "--count")) bad = parse_u64(val, &count) || count < 1 || count > 100000000;
        else if (!strcmp(name, "--start")) bad = parse_u64(val, &start);
        else if (!strcmp(name, "--size")) bad = parse_u64(val, &size) || size > 8192;
        else if (!strcmp(name, "--seed")) bad = parse_u64(val, &p.seed);
        else if (!strcmp(name, "--strokes-mean")) bad = parse_double(val, &p.strokes_mean);
        else if (!strcmp(name, "--strokes-std")) bad = parse_double(val, &p.strokes_std);
        else if (!strcmp(name, "--width-min")) bad = parse_double(val, &p.width_min);
        else if (!strcmp(name, "--width-max")) bad = parse_double(val, &p.width_max);
        else if (!strcmp(name, "--scale-min")) bad = parse_double(val, &p.scale_min);
        else if (!strcmp(name, "--scale-max")) bad = parse_double(val, &p.scale_max);
        else {
            fprintf(stderr, "semipaint masks: unknown option '%s'\n", name);
            masks_usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "semipaint masks: bad value '%s' for %s\n", val, name);
            return 2;
        }
    }
    p.size = (int)size;
    if (!outdir) {
        fprintf(stderr, "semipaint masks: --out DIR is required\n");
        masks_usage(stderr);
        return 2;
    }
    if (qd_params_check(&p)) {
        fprintf(stderr, "semipaint masks: %s\n", sp_err_msg());
        return 2;
    }

    int rc = 1;
    qd_source *src = NULL;
    img_u8 im = {p.size, p.size, 1, NULL};
    long hist[NBUCKETS] = {0};
    double ratio_sum = 0;
    if (make_dirs(outdir)) goto fail;
    double t0 = sp_now();
    if (qd_source_new(ndjson, &src)) goto fail;
    fprintf(stderr, "masks: %ld drawings, %ld strokes from %s in %.2f s\n", qd_source_drawings(src),
            qd_source_strokes(src), ndjson, sp_now() - t0);
    im.px = malloc((size_t)p.size * p.size);
    if (!im.px) {
        sp_err(SP_ERR_NOMEM, "out of memory");
        goto fail;
    }
    sp_progress prog;
    sp_progress_init(&prog, "masks", (long)count);
    t0 = sp_now();
    for (uint64_t i = 0; i < count; i++) {
        uint64_t idx = start + i;
        if (qd_generate(&p, src, idx, im.px)) goto fail;
        double r = qd_hole_ratio(im.px, (size_t)p.size * p.size);
        hist[bucket_of(r)]++;
        ratio_sum += r;
        char path[4200];
        snprintf(path, sizeof path, "%s/qdimd_%05" PRIu64 ".png", outdir, idx);
        if (write_png(&im, path)) goto fail;
        sp_progress_update(&prog, (long)(i + 1));
    }
    sp_progress_finish(&prog);
    double dt = sp_now() - t0;
    printf("%" PRIu64 " masks %dx%d in %s (%.1f masks/s), mean hole ratio %.3f\n", count, p.size, p.size, outdir,
           (double)count / (dt > 0 ? dt : 1e-9), ratio_sum / (double)count);
    printf("%-12s %8s %7s\n", "hole ratio", "masks", "share");
    for (int b = 0; b < NBUCKETS; b++) {
        if (b == 0 && hist[0] == 0) continue;
        printf("%-12s %8ld %6.1f%%\n", bucket_names[b], hist[b], 100.0 * hist[b] / (double)count);
    }
    rc = 0;
fail:
    if (rc) fprintf(stderr, "semipaint masks: %s\n", sp_err_msg());
    free(im.px);
    qd_source_free(src);
    return rc;
}
