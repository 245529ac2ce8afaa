/* cmd_inpaint.c: `semipaint inpaint`: files or directories inpainted offline with the daemon's configuration, models and pipeline. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "core/config.h"
#include "imaging/img.h"
#include "core/engine.h"
#include "core/exec.h"
#include "core/request.h"

extern char **environ;

typedef enum { IP_SIM = 0, IP_COARSE, IP_TELEA } ip_method;
typedef enum { IP_FMT_INPUT = 0, IP_FMT_PNG, IP_FMT_JPEG, IP_FMT_WEBP } ip_format;

#define IP_MAX_REFS 8 /* as semipaintd's SRV_MAX_REFERENCES */

/* --reference FILE and --reference-id N, each repeatable (exclusive with each other). */
typedef struct {
    const char *files[IP_MAX_REFS];
    int nfiles;
    int64_t ids[IP_MAX_REFS];
    int nids;
} ip_refs;

typedef struct {
    const char *image, *mask, *out, *config, *db, *model, *report;
    ip_refs refs;
    ip_method method;
    ip_format format;
    int quality, threads;
    int mask_from_alpha; /* no --mask: the image's alpha is the mask (alpha 0 = hole) */
} ip_opts;

/* What one run needs: the engine and its executor (NULL for telea), as semipaintd has them. */
typedef struct {
    const ip_opts *o;
    cfg_config cfg;
    core_engine *engine;
    core_exec *exec;
    int fam;        /* --model's family, -1 = auto */
    long crops;
    long served[CFG_MAX_FAMILIES][2]; /* images per family: by its nets, by Telea (auto's gate) */
    FILE *report;   /* --report: one CSV line per image written */
} ip_ctx;

static void ip_usage(FILE *f) {
    fprintf(f,
            "usage: semipaint inpaint --image FILE|DIR (--mask FILE|DIR | --mask-from-alpha) --out FILE|DIR [options]\n"
            "Inpaints images offline the way semipaintd answers POST /v1/inpaint: the same configuration\n"
            "(models, database, crop strategy; -c FILE and SEMIPAINT_* variables), crops and pipeline.\n"
            "With directories, each image (.jpg, .jpeg, .png, .webp, sorted by name) takes the mask of the\n"
            "same file stem from --mask DIR (a.jpg <- a.png) and is written to --out DIR/STEM.EXT. The mask\n"
            "has the image's size; white (luminance > 127) marks the hole. Pixels outside the hole are kept\n"
            "(bit for bit in PNG output, and WebP at --quality 100, which is lossless).\n\n"
            "  --image FILE|DIR     image, or folder of images\n"
            "  --mask FILE|DIR      mask, or folder of masks matched by file stem\n"
            "  --mask-from-alpha    no mask: the image's fully transparent pixels (alpha 0) are the hole;\n"
            "                       they come out opaque, every other pixel as it was\n"
            "  --out FILE|DIR       result (.png, .jpg, .jpeg or .webp), or folder (created)\n"
            "  -c, --config FILE    semipaintd configuration [config/semipaintd.yaml when present, else the\n"
            "                       defaults]\n"
            "  --db DIR|none        retrieval database, overriding retrieval.database; none = Sim-0\n"
            "  --model NAME|auto    model family (model.family or one of the families section) [auto: the\n"
            "                       one model.router chooses for each image, as the daemon does]\n"
            "  --report FILE        a CSV line per image written: image, model, method, requested, p_model,\n"
            "                       p_nets (what served it and, for auto, why)\n"
            "  --method sim|coarse|telea  [sim]\n"
            "  --format input|png|jpeg|webp  format of folder output [input: the image's own]\n"
            "  --quality N          JPEG and WebP quality 1-100 (WebP 100 = lossless) [inpaint.jpeg_quality]\n"
            "  --threads N          CPU threads, overriding model.cpu_threads\n"
            "  --reference FILE     a reference image (repeatable, up to the model's K): Sim-K paints from it\n"
            "                       instead of the retrieved neighbours; fewer than K: the last repeats\n"
            "  --reference-id N     a database image as the reference (repeatable; exclusive with --reference)\n"
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

/* The --reference images (loaded from their files) or --reference-id rows (from the database) made
 * the neighbours of every crop of `r`, as semipaintd does with `reference` / `reference_id`
 * (core_request_set_refs). Errors name the file or id at fault. */
static sp_status set_refs(ip_ctx *c, core_request *r) {
    const ip_refs *rf = &c->o->refs;
    int n = rf->nfiles ? rf->nfiles : rf->nids;
    if (n == 0) return SP_OK;
    img_u8 ims[IP_MAX_REFS] = {{0}};
    int64_t ids[IP_MAX_REFS];
    sp_status st = SP_OK;
    if (core_engine_k(c->engine, r->family) == 0)
        st = sp_err(SP_ERR_INVALID, "model family %s runs Sim-0 (no database): it takes no references",
                    core_engine_family_name(c->engine, r->family));
    for (int i = 0; !st && i < n; i++) {
        if (rf->nfiles) {
            ids[i] = -1;
            if ((st = img_load(rf->files[i], c->cfg.server.max_image_pixels, &ims[i]))) {
                char why[512];
                snprintf(why, sizeof why, "%s", sp_err_msg());
                st = sp_err(st, "--reference %s: %s", rf->files[i], why);
            }
        } else {
            ids[i] = rf->ids[i];
            st = core_engine_image(c->engine, r->family, ids[i], &ims[i]);
        }
    }
    if (!st) st = core_request_set_refs(r, n, ims, ids);
    for (int i = 0; i < n; i++) img_free(&ims[i]);
    return st;
}

/* Inpaints one image file with its mask file (NULL: the image's alpha is the mask) into
 * `out_path`, through the request path the daemon uses (core/request.h: the same hole map, plan,
 * executor batches and paste-back). Errors name the file at fault. */
static sp_status inpaint_one(ip_ctx *c, const char *img_path, const char *mask_path, const char *out_path) {
    img_u8 im = {0}, mask = {0};
    core_request r = {0};
    long max_px = c->cfg.server.max_image_pixels;
    sp_status st = img_load(img_path, max_px, &im);
    if (st) return st;
    if (mask_path && (st = img_load(mask_path, max_px, &mask))) goto done;
    core_method m = c->o->method == IP_TELEA ? CORE_METHOD_TELEA : c->o->method == IP_COARSE ? CORE_METHOD_COARSE
                                                                                             : CORE_METHOD_SIM;
    core_fault fault;
    int iw = im.w, ih = im.h;
    char why[512];
    core_route route = {0};
    const int has_refs = c->o->refs.nfiles || c->o->refs.nids;
    if (m == CORE_METHOD_TELEA) /* no engine is loaded for telea */
        st = core_request_prepare(&r, &c->cfg, 0, 0, m, &im, mask_path ? &mask : NULL, CORE_MASK_LUMA, &fault);
    else
        st = core_request_prepare_for(&r, &c->cfg, c->engine, core_engine_router(c->engine),
                                      c->fam < 0 && c->o->refs.nids ? 0 : c->fam, /* ids: the first family's rows */
                                      m, has_refs, &im,
                                      mask_path ? &mask : NULL, CORE_MASK_LUMA, &fault, &route);
    if (st) {
        snprintf(why, sizeof why, "%s", sp_err_msg()); /* sp_err writes the buffer sp_err_msg reads */
        if (fault == CORE_FAULT_MASK_SIZE)
            sp_err(st, "%s is %dx%d but its image %s is %dx%d", mask_path, mask.w, mask.h, img_path, iw, ih);
        else sp_err(st, "%s: %s", fault == CORE_FAULT_NONE || !mask_path ? img_path : mask_path, why);
        goto done;
    }
    if ((st = set_refs(c, &r))) {
        snprintf(why, sizeof why, "%s", sp_err_msg());
        sp_err(st, "%s: %s", img_path, why);
        goto done;
    }
    if ((st = core_request_run(&r, c->exec, 0))) {
        snprintf(why, sizeof why, "%s", sp_err_msg());
        sp_err(st, "%s: %s", img_path, why);
        goto done;
    }
    c->crops += r.method == CORE_METHOD_TELEA ? 0 : r.plan.n;
    if (c->engine) c->served[route.family][r.method == CORE_METHOD_TELEA]++;
    if (c->report) {
        static const char *const mname[] = {"sim", "coarse", "telea"}; /* core_method order */
        fprintf(c->report, "%s,%s,%s,%s,%.4f,%.4f\n", img_path,
                c->engine ? core_engine_family_name(c->engine, route.family) : "", mname[r.method],
                route.routed ? "auto" : "named", route.p_family, route.p_nets);
    }
    st = img_save(&r.im, out_path, c->o->quality ? c->o->quality : c->cfg.inpaint.jpeg_quality);
done:
    core_request_free(&r);
    img_free(&im);
    img_free(&mask);
    return st;
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
    if (o->method == IP_TELEA) {
        if (o->model) fprintf(stderr, "semipaint inpaint: --model is ignored with --method telea\n");
        return 0;
    }
    if (core_engine_new(&c->cfg, &c->engine)) {
        fprintf(stderr, "semipaint inpaint: %s\n", sp_err_msg());
        if (!o->db && c->cfg.retrieval.database[0])
            fprintf(stderr, "semipaint inpaint: the configuration's database is %s; --db DIR names another, --db "
                            "none runs Sim-0 without one\n", c->cfg.retrieval.database);
        return 1;
    }
    core_runner runner = core_engine_runner(c->engine);
    c->fam = -1;
    if (o->model && strcmp(o->model, "auto") && (c->fam = core_engine_family_index(c->engine, o->model)) < 0) {
        fprintf(stderr, "semipaint inpaint: --model %s: the configuration has no such family; it has:", o->model);
        for (int i = 0; i < core_engine_nfamilies(c->engine); i++)
            fprintf(stderr, " %s", core_engine_family_name(c->engine, i));
        fprintf(stderr, " (or auto)\n");
        return 2;
    }
    /* the daemon's executor, batching and crop budget, so that the pixels are the daemon's */
    if (core_exec_new(&runner, c->cfg.batching.max_batch, c->cfg.batching.max_delay_ms, c->cfg.batching.queue_capacity,
                      NULL, &c->exec)) {
        fprintf(stderr, "semipaint inpaint: %s\n", sp_err_msg());
        return 1;
    }
    for (int i = 0; i < core_engine_nfamilies(c->engine); i++)
        fprintf(stderr, "semipaint inpaint: model family %s: working size %d, %s\n", core_engine_family_name(c->engine, i),
                core_engine_size(c->engine, i), core_engine_k(c->engine, i) ? "Sim-K with its database" : "Sim-0 (no database)");
    fprintf(stderr, "semipaint inpaint: %s backend, --model %s\n", core_engine_backend(c->engine),
            c->fam < 0 ? "auto" : core_engine_family_name(c->engine, c->fam));
    return 0;
}

static void ip_teardown(ip_ctx *c) {
    core_exec_free(c->exec);
    core_engine_free(c->engine);
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
        fprintf(stderr, "semipaint inpaint: %s: no .jpg, .jpeg, .png or .webp files\n", o->image);
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
        const char *ext = o->format == IP_FMT_PNG    ? ".png"
                          : o->format == IP_FMT_JPEG ? ".jpg"
                          : o->format == IP_FMT_WEBP ? ".webp"
                                                     : strrchr(names[i], '.');
        snprintf(out_path, sizeof out_path, "%s/%s%s", o->out, stem, ext);
        if (o->mask_from_alpha) {
            if (inpaint_one(c, img_path, NULL, out_path)) {
                fprintf(stderr, "semipaint inpaint: %s\n", sp_err_msg());
                failed++;
            } else {
                done++;
            }
        } else if (!cli_find_mask(o->mask, names[i], mask_path, sizeof mask_path)) {
            fprintf(stderr, "semipaint inpaint: %s: no mask %s/%s.png (or .jpg, .jpeg, .webp)\n", img_path, o->mask, stem);
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
    for (int i = 0; c->engine && i < core_engine_nfamilies(c->engine); i++)
        if (c->served[i][0] || c->served[i][1])
            printf("model %s: %ld images by its networks, %ld by Telea\n", core_engine_family_name(c->engine, i),
                   c->served[i][0], c->served[i][1]);
    cli_free_names(names, n);
    return failed ? 1 : 0;
}

/* --method sim|coarse|telea */
static int parse_method(const char *v, void *f) {
    static const char *const names[] = {"sim", "coarse", "telea"}; /* ip_method order */
    for (int i = 0; i < 3; i++)
        if (!strcmp(v, names[i])) {
            *(ip_method *)f = (ip_method)i;
            return 0;
        }
    return -1;
}

/* --format input|png|jpeg|webp (jpg too) */
static int parse_format(const char *v, void *f) {
    if (!strcmp(v, "input")) *(ip_format *)f = IP_FMT_INPUT;
    else if (!strcmp(v, "png")) *(ip_format *)f = IP_FMT_PNG;
    else if (!strcmp(v, "jpeg") || !strcmp(v, "jpg")) *(ip_format *)f = IP_FMT_JPEG;
    else if (!strcmp(v, "webp")) *(ip_format *)f = IP_FMT_WEBP;
    else return -1;
    return 0;
}

/* --reference FILE (repeatable) */
static int add_reference(const char *v, void *f) {
    ip_refs *r = f;
    if (r->nfiles >= IP_MAX_REFS || !*v) return -1;
    r->files[r->nfiles++] = v;
    return 0;
}

/* --reference-id N (repeatable) */
static int add_reference_id(const char *v, void *f) {
    ip_refs *r = f;
    long id;
    if (r->nids >= IP_MAX_REFS || cli_parse_long(v, 0, 1L << 53, &id)) return -1;
    r->ids[r->nids++] = id;
    return 0;
}

#define IO(f) offsetof(ip_opts, f)
static const cli_opt inpaint_table[] = {
    {"--image", NULL, CLI_STR, IO(image), 0, 0, NULL, NULL},
    {"--mask", NULL, CLI_STR, IO(mask), 0, 0, NULL, NULL},
    {"--out", NULL, CLI_STR, IO(out), 0, 0, NULL, NULL},
    {"--config", "-c", CLI_STR, IO(config), 0, 0, NULL, NULL},
    {"--db", NULL, CLI_STR, IO(db), 0, 0, NULL, NULL},
    {"--model", NULL, CLI_STR, IO(model), 0, 0, NULL, NULL},
    {"--report", NULL, CLI_STR, IO(report), 0, 0, NULL, NULL},
    {"--method", NULL, CLI_FN, IO(method), 0, 0, parse_method, "sim, coarse or telea"},
    {"--format", NULL, CLI_FN, IO(format), 0, 0, parse_format, "input, png, jpeg or webp"},
    {"--mask-from-alpha", NULL, CLI_FLAG, IO(mask_from_alpha), 0, 0, NULL, NULL},
    {"--quality", NULL, CLI_INT, IO(quality), 1, 100, NULL, NULL},
    {"--threads", NULL, CLI_INT, IO(threads), 0, 1024, NULL, NULL},
    {"--reference", NULL, CLI_FN, IO(refs), 0, 0, add_reference, "an image file (at most 8)"},
    {"--reference-id", NULL, CLI_FN, IO(refs), 0, 0, add_reference_id, "a database id >= 0 (at most 8)"},
};

int cmd_inpaint(int argc, char **argv) {
    ip_opts o = {.threads = -1};
    const cli_spec spec = {"semipaint inpaint", inpaint_table, sizeof inpaint_table / sizeof inpaint_table[0], 0, 0,
                           ip_usage};
    int prc = cli_parse(&spec, argc, argv, &o, NULL, NULL);
    if (prc >= 0) return prc;
    if (!o.image || (!o.mask && !o.mask_from_alpha) || !o.out) {
        fprintf(stderr, "semipaint inpaint: --image, --mask (or --mask-from-alpha) and --out are required\n");
        ip_usage(stderr);
        return 2;
    }
    if (o.mask && o.mask_from_alpha) {
        fprintf(stderr, "semipaint inpaint: --mask and --mask-from-alpha are exclusive\n");
        return 2;
    }
    if (o.refs.nfiles && o.refs.nids) {
        fprintf(stderr, "semipaint inpaint: --reference and --reference-id are exclusive\n");
        return 2;
    }
    if ((o.refs.nfiles || o.refs.nids) && o.method != IP_SIM) {
        fprintf(stderr, "semipaint inpaint: references are used only by --method sim\n");
        return 2;
    }
    int dirs = is_dir(o.image);
    if (!o.mask_from_alpha && dirs != is_dir(o.mask)) {
        fprintf(stderr, "semipaint inpaint: --image and --mask must both be files or both be folders\n");
        return 2;
    }
    if (!dirs && !cli_is_image_name(o.out)) {
        fprintf(stderr, "semipaint inpaint: --out %s: the file name must end in .png, .jpg, .jpeg or .webp\n", o.out);
        return 2;
    }
    ip_ctx c = {.o = &o};
    if (o.report) {
        if (!(c.report = fopen(o.report, "w"))) {
            fprintf(stderr, "semipaint inpaint: --report %s: %s\n", o.report, strerror(errno));
            return 1;
        }
        fprintf(c.report, "image,model,method,requested,p_model,p_nets\n");
    }
    int rc = ip_setup(&c);
    if (rc == 0) {
        if (dirs) {
            rc = run_dirs(&c);
        } else if (inpaint_one(&c, o.image, o.mask, o.out)) {
            fprintf(stderr, "semipaint inpaint: %s\n", sp_err_msg());
            rc = 1;
        } else {
            printf("inpainted %s into %s (%ld crops)\n", o.image, o.out, c.crops);
            for (int i = 0; c.engine && i < core_engine_nfamilies(c.engine); i++)
                if (c.served[i][0] || c.served[i][1])
                    printf("model %s, %s\n", core_engine_family_name(c.engine, i), c.served[i][1] ? "telea" : "networks");
        }
    }
    ip_teardown(&c);
    if (c.report && fclose(c.report) && !rc) {
        fprintf(stderr, "semipaint inpaint: --report %s: %s\n", o.report, strerror(errno));
        rc = 1;
    }
    return rc;
}
