/* cmd_inpaint.c: `semipaint inpaint`: files or directories inpainted offline with the daemon's configuration, models and pipeline. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "core/config.h"
#include "imaging/img.h"
#include "core/engine.h"
#include "imaging/plan.h"
#include "imaging/telea.h"

extern char **environ;

#define IP_MAX_CROPS 256 /* crops of one image; beyond, one crop around all holes (as the daemon does) */

typedef enum { IP_SIM = 0, IP_COARSE, IP_TELEA } ip_method;
typedef enum { IP_FMT_INPUT = 0, IP_FMT_PNG, IP_FMT_JPEG } ip_format;

typedef struct {
    const char *image, *mask, *out, *config, *db;
    ip_method method;
    ip_format format;
    int quality, threads;
} ip_opts;

/* What one run needs: the engine (NULL for telea) and the crop buffers. */
typedef struct {
    const ip_opts *o;
    cfg_config cfg;
    core_engine *engine;
    core_runner runner;
    int s, k, max_batch;
    float *x, *m, *y;
    int64_t *ids;
    float *scores;
    long crops;
} ip_ctx;

static void ip_usage(FILE *f) {
    fprintf(f,
            "usage: semipaint inpaint --image FILE|DIR --mask FILE|DIR --out FILE|DIR [options]\n"
            "Inpaints images offline the way semipaintd answers POST /v1/inpaint: the same configuration\n"
            "(models, database, crop strategy; -c FILE and SEMIPAINT_* variables), crops and pipeline.\n"
            "With directories, each image (.jpg, .jpeg, .png, sorted by name) takes the mask of the same\n"
            "file stem from --mask DIR (a.jpg <- a.png) and is written to --out DIR/STEM.EXT. The mask has\n"
            "the image's size; white (luminance > 127) marks the hole. Pixels outside the hole are kept\n"
            "(bit for bit in PNG output).\n\n"
            "  --image FILE|DIR     image, or folder of images\n"
            "  --mask FILE|DIR      mask, or folder of masks matched by file stem\n"
            "  --out FILE|DIR       result (.png, .jpg or .jpeg), or folder (created)\n"
            "  -c, --config FILE    semipaintd configuration [config/semipaintd.yaml when present, else the\n"
            "                       defaults]\n"
            "  --db DIR|none        retrieval database, overriding retrieval.database; none = Sim-0\n"
            "  --method sim|coarse|telea  [sim]\n"
            "  --format input|png|jpeg    format of folder output [input: the image's own]\n"
            "  --quality N          JPEG quality 1-100 [inpaint.jpeg_quality]\n"
            "  --threads N          CPU threads, overriding model.cpu_threads\n"
            "Exit status: 0 when every image was written, 1 when any failed (each failure is named on\n"
            "stderr and the others are still done), 2 for a usage error.\n");
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The file name without folder and extension, into `out`. */
static void stem_of(const char *path, char *out, size_t n) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(out, n, "%s", b);
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = 0;
}

/* Runs crops [0, n) of x/m through the engine in batches of at most max_batch, each padded to a
 * power of two (or max_batch) by repeating its last crop, as the daemon's executor does. */
static sp_status run_crops(ip_ctx *c, int n) {
    const size_t s2 = (size_t)c->s * c->s;
    nn_method meth = c->o->method == IP_COARSE ? NN_METHOD_COARSE : NN_METHOD_SIM;
    for (int b0 = 0; b0 < n; b0 += c->max_batch) {
        int nb = n - b0 < c->max_batch ? n - b0 : c->max_batch, padded = 1;
        while (padded < nb) padded *= 2;
        if (padded > c->max_batch) padded = c->max_batch;
        for (int i = nb; i < padded; i++) { /* the buffers hold IP_MAX_CROPS + max_batch crops */
            memcpy(c->x + (size_t)(b0 + i) * 3 * s2, c->x + (size_t)(b0 + nb - 1) * 3 * s2, 3 * s2 * sizeof(float));
            memcpy(c->m + (size_t)(b0 + i) * s2, c->m + (size_t)(b0 + nb - 1) * s2, s2 * sizeof(float));
        }
        sp_status st = c->runner.run(c->runner.ctx, padded, c->x + (size_t)b0 * 3 * s2, c->m + (size_t)b0 * s2, meth,
                                     c->y + (size_t)b0 * 3 * s2, c->k ? c->ids + (size_t)b0 * c->k : NULL,
                                     c->k ? c->scores + (size_t)b0 * c->k : NULL, NULL);
        if (st) return st;
    }
    return SP_OK;
}

/* Inpaints one image file with its mask file into `out_path`. Errors name the file at fault. */
static sp_status inpaint_one(ip_ctx *c, const char *img_path, const char *mask_path, const char *out_path) {
    img_u8 im = {0}, mask = {0};
    uint8_t *hole = NULL;
    img_plan plan = {0};
    long max_px = c->cfg.server.max_image_pixels;
    sp_status st = img_load(img_path, max_px, &im);
    if (st) return st;
    if ((st = img_load(mask_path, max_px, &mask))) goto done;
    if (mask.w != im.w || mask.h != im.h) {
        st = sp_err(SP_ERR_INVALID, "%s is %dx%d but its image %s is %dx%d", mask_path, mask.w, mask.h, img_path, im.w,
                    im.h);
        goto done;
    }
    if (!(hole = malloc((size_t)im.w * im.h))) {
        st = sp_err(SP_ERR_NOMEM, "%s: hole map", img_path);
        goto done;
    }
    if (img_hole_map(&mask, hole) == 0) {
        st = sp_err(SP_ERR_INVALID, "%s marks no pixel as hole (white, luminance > 127, is the hole)", mask_path);
        goto done;
    }
    if (im.c == 1) {
        img_u8 rgb;
        if ((st = img_convert(&im, 3, &rgb))) goto done;
        img_free(&im);
        im = rgb;
    }
    if (c->o->method == IP_TELEA) {
        if ((st = telea_inpaint(&im, hole, TELEA_DEFAULT_RADIUS))) {
            sp_err(st, "%s: %s", img_path, sp_err_msg());
            goto done;
        }
    } else {
        if ((st = img_plan_make(hole, im.w, im.h, c->s, cfg_plan_strategy(&c->cfg),
                                c->cfg.inpaint.crop_margin, IP_MAX_CROPS, &plan)))
            goto done;
        const size_t s2 = (size_t)c->s * c->s;
        for (int i = 0; i < plan.n; i++)
            if ((st = img_plan_input(&plan, i, &im, hole, c->x + (size_t)i * 3 * s2, c->m + (size_t)i * s2))) goto done;
        if ((st = run_crops(c, plan.n))) {
            sp_err(st, "%s: %s", img_path, sp_err_msg());
            goto done;
        }
        for (int i = 0; i < plan.n; i++)
            if ((st = img_plan_paste(&plan, i, c->y + (size_t)i * 3 * s2, &im, hole))) goto done;
        c->crops += plan.n;
    }
    st = img_save(&im, out_path, c->o->quality ? c->o->quality : c->cfg.inpaint.jpeg_quality);
done:
    img_plan_free(&plan);
    free(hole);
    img_free(&im);
    img_free(&mask);
    return st;
}

/* The mask of `stem` in folder `dir`: the first of STEM.png, STEM.jpg, STEM.jpeg, STEM.PNG, ...
 * that exists, into `out`; 0 when there is none. */
static int find_mask(const char *dir, const char *stem, char *out, size_t n) {
    static const char *const ext[] = {".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG"};
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        snprintf(out, n, "%s/%s%s", dir, stem, ext[i]);
        struct stat st;
        if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) return 1;
    }
    return 0;
}

/* Loads the configuration and the engine for `o`; prints the reason and returns 1 on failure. */
static int ip_setup(ip_ctx *c) {
    const ip_opts *o = c->o;
    const char *path = o->config;
    struct stat st;
    if (!path && stat("config/semipaintd.yaml", &st) == 0) path = "config/semipaintd.yaml";
    if (cfg_load(&c->cfg, path, environ)) {
        fprintf(stderr, "semipaint inpaint: configuration error: %s\n", sp_err_msg());
        return 1;
    }
    if (o->db)
        snprintf(c->cfg.retrieval.database, sizeof c->cfg.retrieval.database, "%s", strcmp(o->db, "none") ? o->db : "");
    if (o->threads >= 0) c->cfg.model.cpu_threads = o->threads;
    c->max_batch = c->cfg.batching.max_batch;
    if (o->method == IP_TELEA) return 0;
    if (core_engine_new(&c->cfg, &c->engine)) {
        fprintf(stderr, "semipaint inpaint: %s\n", sp_err_msg());
        if (!o->db && c->cfg.retrieval.database[0])
            fprintf(stderr, "semipaint inpaint: the configuration's database is %s; --db DIR names another, --db "
                            "none runs Sim-0 without one\n", c->cfg.retrieval.database);
        return 1;
    }
    c->runner = core_engine_runner(c->engine);
    c->s = core_engine_size(c->engine);
    c->k = core_engine_k(c->engine);
    const size_t s2 = (size_t)c->s * c->s, cap = (size_t)IP_MAX_CROPS + (size_t)c->max_batch;
    c->x = malloc(cap * 3 * s2 * sizeof(float));
    c->m = malloc(cap * s2 * sizeof(float));
    c->y = malloc(cap * 3 * s2 * sizeof(float));
    c->ids = c->k ? malloc(cap * (size_t)c->k * sizeof *c->ids) : NULL;
    c->scores = c->k ? malloc(cap * (size_t)c->k * sizeof *c->scores) : NULL;
    if (!c->x || !c->m || !c->y || (c->k && (!c->ids || !c->scores))) {
        fprintf(stderr, "semipaint inpaint: out of memory for %zu crops of %dx%d\n", cap, c->s, c->s);
        return 1;
    }
    fprintf(stderr, "semipaint inpaint: %s backend, working size %d, %s\n", core_engine_backend(c->engine), c->s,
            c->k ? "Sim-K with the database" : "Sim-0 (no database)");
    return 0;
}

static void ip_teardown(ip_ctx *c) {
    core_engine_free(c->engine);
    free(c->x);
    free(c->m);
    free(c->y);
    free(c->ids);
    free(c->scores);
}

/* Every image of folder o->image with its mask from folder o->mask into folder o->out. */
static int run_dirs(ip_ctx *c) {
    const ip_opts *o = c->o;
    long n = 0;
    int failed = 0, done = 0;
    char **names;
    if (cli_list_images(o->image, &names, &n)) {
        fprintf(stderr, "semipaint inpaint: %s\n", sp_err_msg());
        return 1;
    }
    if (n == 0) {
        fprintf(stderr, "semipaint inpaint: %s: no .jpg, .jpeg or .png files\n", o->image);
        cli_free_names(names, n);
        return 1;
    }
    if (mkdir(o->out, 0755) && errno != EEXIST) {
        fprintf(stderr, "semipaint inpaint: cannot create %s: %s\n", o->out, strerror(errno));
        cli_free_names(names, n);
        return 1;
    }
    sp_progress pr;
    sp_progress_init(&pr, "inpaint", n);
    double t0 = sp_now();
    for (long i = 0; i < n; i++) {
        char img_path[4096], mask_path[4096], out_path[4096], stem[1024];
        snprintf(img_path, sizeof img_path, "%s/%s", o->image, names[i]);
        stem_of(names[i], stem, sizeof stem);
        const char *ext = o->format == IP_FMT_PNG ? ".png" : o->format == IP_FMT_JPEG ? ".jpg" : strrchr(names[i], '.');
        snprintf(out_path, sizeof out_path, "%s/%s%s", o->out, stem, ext);
        if (!find_mask(o->mask, stem, mask_path, sizeof mask_path)) {
            fprintf(stderr, "semipaint inpaint: %s: no mask %s/%s.png (or .jpg, .jpeg)\n", img_path, o->mask, stem);
            failed++;
        } else if (inpaint_one(c, img_path, mask_path, out_path)) {
            fprintf(stderr, "semipaint inpaint: %s\n", sp_err_msg());
            failed++;
        } else {
            done++;
        }
        sp_progress_update(&pr, i + 1);
    }
    sp_progress_finish(&pr);
    printf("inpainted %d of %ld images (%ld crops) into %s in %.1f s; %d failed\n", done, n, c->crops, o->out,
           sp_now() - t0, failed);
    cli_free_names(names, n);
    return failed ? 1 : 0;
}

int cmd_inpaint(int argc, char **argv) {
    ip_opts o = {.threads = -1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            ip_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "semipaint inpaint: %s needs a value\n", a);
            ip_usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--image")) o.image = v;
        else if (!strcmp(a, "--mask")) o.mask = v;
        else if (!strcmp(a, "--out")) o.out = v;
        else if (!strcmp(a, "-c") || !strcmp(a, "--config")) o.config = v;
        else if (!strcmp(a, "--db")) o.db = v;
        else if (!strcmp(a, "--quality")) bad = cli_parse_int(v, 1, 100, &o.quality);
        else if (!strcmp(a, "--threads")) bad = cli_parse_int(v, 0, 1024, &o.threads);
        else if (!strcmp(a, "--method")) {
            if (!strcmp(v, "sim")) o.method = IP_SIM;
            else if (!strcmp(v, "coarse")) o.method = IP_COARSE;
            else if (!strcmp(v, "telea")) o.method = IP_TELEA;
            else bad = 1;
        } else if (!strcmp(a, "--format")) {
            if (!strcmp(v, "input")) o.format = IP_FMT_INPUT;
            else if (!strcmp(v, "png")) o.format = IP_FMT_PNG;
            else if (!strcmp(v, "jpeg") || !strcmp(v, "jpg")) o.format = IP_FMT_JPEG;
            else bad = 1;
        } else {
            fprintf(stderr, "semipaint inpaint: unknown option %s\n", a);
            ip_usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "semipaint inpaint: bad value '%s' for %s\n", v, a);
            return 2;
        }
    }
    if (!o.image || !o.mask || !o.out) {
        fprintf(stderr, "semipaint inpaint: --image, --mask and --out are required\n");
        ip_usage(stderr);
        return 2;
    }
    int dirs = is_dir(o.image);
    if (dirs != is_dir(o.mask)) {
        fprintf(stderr, "semipaint inpaint: --image and --mask must both be files or both be folders\n");
        return 2;
    }
    if (!dirs && !cli_is_image_name(o.out)) {
        fprintf(stderr, "semipaint inpaint: --out %s: the file name must end in .png, .jpg or .jpeg\n", o.out);
        return 2;
    }
    ip_ctx c = {.o = &o};
    int rc = ip_setup(&c);
    if (rc == 0) {
        if (dirs) {
            rc = run_dirs(&c);
        } else if (inpaint_one(&c, o.image, o.mask, o.out)) {
            fprintf(stderr, "semipaint inpaint: %s\n", sp_err_msg());
            rc = 1;
        } else {
            printf("inpainted %s into %s (%ld crops)\n", o.image, o.out, c.crops);
        }
    }
    ip_teardown(&c);
    return rc;
}
