/* cmd_masks.c: `semipaint masks`: writes QD-IMD hole masks as PNG files and prints their hole-ratio histogram. */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* What `semipaint masks` is asked for. */
typedef struct {
    qd_params p;
    uint64_t count, start;
    const char *ndjson, *out;
} masks_opts;

#define MO(f) offsetof(masks_opts, f)
static const cli_opt masks_opts_table[] = {
    {"--out", NULL, CLI_STR, MO(out), 0, 0, NULL, NULL},
    {"--ndjson", NULL, CLI_STR, MO(ndjson), 0, 0, NULL, NULL},
    {"--count", NULL, CLI_U64, MO(count), 1, 100000000, NULL, NULL},
    {"--start", NULL, CLI_U64, MO(start), 0, (double)UINT64_MAX, NULL, NULL},
    {"--size", NULL, CLI_INT, MO(p.size), 8, 8192, NULL, NULL},
    {"--seed", NULL, CLI_U64, MO(p.seed), 0, (double)UINT64_MAX, NULL, NULL},
    {"--strokes-mean", NULL, CLI_DOUBLE, MO(p.strokes_mean), 0, 1000, NULL, NULL},
    {"--strokes-std", NULL, CLI_DOUBLE, MO(p.strokes_std), 0, 1000, NULL, NULL},
    {"--width-min", NULL, CLI_DOUBLE, MO(p.width_min), 0, 1000, NULL, NULL},
    {"--width-max", NULL, CLI_DOUBLE, MO(p.width_max), 0, 1000, NULL, NULL},
    {"--scale-min", NULL, CLI_DOUBLE, MO(p.scale_min), 0, 100, NULL, NULL},
    {"--scale-max", NULL, CLI_DOUBLE, MO(p.scale_max), 0, 100, NULL, NULL},
    {"--whole-drawings", NULL, CLI_FLAG, MO(p.whole_drawings), 0, 0, NULL, NULL},
};

int cmd_masks(int argc, char **argv) {
    masks_opts o = {.count = 1000, .ndjson = MASKS_DEFAULT_NDJSON};
    qd_params_default(&o.p);
    const cli_spec spec = {"semipaint masks", masks_opts_table, sizeof masks_opts_table / sizeof masks_opts_table[0],
                           0, 0, masks_usage};
    int prc = cli_parse(&spec, argc, argv, &o, NULL, NULL);
    if (prc >= 0) return prc;
    if (!o.out) {
        fprintf(stderr, "semipaint masks: --out DIR is required\n\n");
        masks_usage(stderr);
        return 2;
    }
    if (qd_params_check(&o.p)) {
        fprintf(stderr, "semipaint masks: %s\n", sp_err_msg());
        return 2;
    }
    const qd_params p = o.p;
    const uint64_t count = o.count, start = o.start;
    const char *ndjson = o.ndjson, *outdir = o.out;

    int rc = 1;
    qd_source *src = NULL;
    img_u8 im = {p.size, p.size, 1, NULL};
    long hist[NBUCKETS] = {0};
    double ratio_sum = 0;
    if (cli_make_dirs(outdir)) goto fail;
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
