/* cmd_route.c: `semipaint route`: model=auto's router on files or folders: each family's probability, the chosen family and its Telea gate, or the features as JSON lines for training/fit_router.py. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "core/config.h"
#include "core/request.h"
#include "core/route.h"
#include "imaging/img.h"

#define RT_DEFAULT_ROUTER "weights/router.safetensors"

typedef struct {
    const char *image, *mask, *router, *dump;
    int size; /* the gate's working size; 0 = the router's size for the chosen class */
} rt_opts;

/* What a run needs, and its totals. */
typedef struct {
    const rt_opts *o;
    cfg_config cfg;
    core_router *router; /* NULL with --router none */
    int dsize;           /* the domain working size */
    FILE *dump;
    long images, per_class[CORE_ROUTE_MAX_CLASSES], nets;
    double prep_ms, domain_ms, gate_ms;
} rt_ctx;

static void route_usage(FILE *f) {
    fprintf(f,
            "usage: semipaint route --image FILE|DIR --mask FILE|DIR [--size S] [--router FILE|none] [--dump FILE.jsonl]\n"
            "model=auto's router, on files or folders: prepares each image with its mask as semipaintd\n"
            "would (the default crop strategy and margin), at the router's domain size for the family\n"
            "decision and at the family's working size for its gate, and prints each family's\n"
            "probability, the chosen family, the gate's probability that the family's networks beat\n"
            "Telea, and what the request would use (nets when it reaches the family's threshold, else\n"
            "telea). With folders, image a.jpg takes the mask a.png (or .jpg, .jpeg, .webp) of --mask DIR.\n\n"
            "  --image FILE|DIR     image, or folder of images (.jpg, .jpeg, .png, .webp, sorted by name)\n"
            "  --mask FILE|DIR      mask of the image's size (white, luminance > 127, is the hole), or folder\n"
            "  --size S             working size of the gate's crops, 16..4096 [the router's size for the\n"
            "                       chosen family (metadata size.FAMILY), else its domain size]\n"
            "  --router FILE|none   router weights [" RT_DEFAULT_ROUTER "]; none (with --dump): the\n"
            "                       domain features only, at 256 px\n"
            "  --dump FILE.jsonl    instead of the table, one JSON object per image: the domain features of\n"
            "                       each crop, the probabilities, and each family's gate features\n"
            "                       (what training/fit_router.py fits on)\n"
            "Exit status: 0 when every image was routed, 1 when any failed (named on stderr; the others\n"
            "are still done), 2 for a usage error.\n");
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* `s` as a JSON string (quotes, backslashes and control characters escaped). */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

/* n floats as a JSON array, each printed so that it reads back as the same float. */
static void json_floats(FILE *f, const float *v, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, "%s%.9g", i ? "," : "", (double)v[i]);
    fputc(']', f);
}

/* Prepares `im` (copied; the caller keeps it) with `mask` for the networks at working size s, as
 * semipaintd's request path does. Errors name the image. */
static sp_status prepare(rt_ctx *c, const img_u8 *im, const img_u8 *mask, int s, const char *name, core_request *r) {
    img_u8 copy;
    core_fault fault;
    sp_status st = img_convert(im, im->c, &copy);
    if (st) return sp_err_wrap(st, "%s", name);
    st = core_request_prepare(r, &c->cfg, s, 0, CORE_METHOD_SIM, &copy, mask, CORE_MASK_LUMA, &fault);
    img_free(&copy);
    if (st) sp_err_wrap(st, "%s", name);
    return st;
}

/* The domain features of every crop of `r` into the dump, as "domain" (one array per crop) and
 * "domain_holes" (each crop's hole pixels). */
static void dump_domain(rt_ctx *c, const core_request *r) {
    const size_t s2 = (size_t)r->s * r->s;
    float feat[CORE_ROUTE_DOMAIN_NFEAT];
    fprintf(c->dump, ",\"domain_size\":%d,\"domain_crops\":%d,\"domain\":[", r->s, r->plan.n);
    for (int i = 0; i < r->plan.n; i++) {
        core_router_domain_features(r->s, r->x + 3 * s2 * i, r->m + s2 * i, feat);
        if (i) fputc(',', c->dump);
        json_floats(c->dump, feat, CORE_ROUTE_DOMAIN_NFEAT);
    }
    fprintf(c->dump, "],\"domain_holes\":[");
    for (int i = 0; i < r->plan.n; i++) {
        long h = 0;
        for (size_t j = 0; j < s2; j++) h += r->m[s2 * i + j] < 0.5f;
        fprintf(c->dump, "%s%ld", i ? "," : "", h);
    }
    fputc(']', c->dump);
}

/* Routes one image with its mask: prints its line, or writes its dump line. Errors name the file. */
static sp_status route_one(rt_ctx *c, const char *img_path, const char *mask_path) {
    img_u8 im = {0}, mask = {0};
    core_request rd = {0}, rg = {0};
    const long max_px = c->cfg.server.max_image_pixels;
    sp_status st = img_load(img_path, max_px, &im);
    if (st) return st;
    if ((st = img_load(mask_path, max_px, &mask))) goto done;
    if (mask.w != im.w || mask.h != im.h) {
        st = sp_err(SP_ERR_INVALID, "%s is %dx%d but its image %s is %dx%d", mask_path, mask.w, mask.h, img_path, im.w,
                    im.h);
        goto done;
    }
    double t0 = sp_now();
    if ((st = prepare(c, &im, &mask, c->dsize, img_path, &rd))) goto done;
    double t1 = sp_now();
    const core_router *R = c->router;
    const int nc = R ? core_router_nclasses(R) : 0;
    float p[CORE_ROUTE_MAX_CLASSES] = {0};
    int cls = -1;
    if (R) {
        if ((st = core_router_domain(R, rd.plan.n, rd.s, rd.x, rd.m, p))) goto done;
        cls = core_router_choose(R, p);
    }
    double t2 = sp_now();
    c->prep_ms += (t1 - t0) * 1e3;
    c->domain_ms += (t2 - t1) * 1e3;
    c->images++;
    if (cls >= 0) c->per_class[cls]++;

    /* the gate, at the family's working size */
    int gs = c->o->size ? c->o->size : R && core_router_gate_size(R, cls) ? core_router_gate_size(R, cls) : c->dsize;
    const core_request *g = &rd;
    if (R && gs != rd.s) {
        double t3 = sp_now();
        if ((st = prepare(c, &im, &mask, gs, img_path, &rg))) goto done;
        c->prep_ms += (sp_now() - t3) * 1e3;
        g = &rg;
    }
    core_route_feat f[CORE_ROUTE_MAX_CLASSES];
    float gp[CORE_ROUTE_MAX_CLASSES] = {0};
    if (R) {
        double t4 = sp_now();
        if ((st = core_route_features(g, p[cls], &f[cls]))) goto done;
        gp[cls] = core_router_gate(R, cls, &f[cls]);
        c->gate_ms += (sp_now() - t4) * 1e3;
        for (int i = 0; c->dump && i < nc; i++) {
            if (i == cls) continue;
            if ((st = core_route_features(g, p[i], &f[i]))) goto done;
            gp[i] = core_router_gate(R, i, &f[i]);
        }
    }
    const int nets = R && core_router_use_nets(R, cls, &f[cls]);
    c->nets += nets;
    if (c->dump) {
        FILE *d = c->dump;
        fputs("{\"image\":", d);
        json_str(d, cli_base_name(img_path));
        fputs(",\"mask\":", d);
        json_str(d, cli_base_name(mask_path));
        fprintf(d, ",\"w\":%d,\"h\":%d,\"holes\":%ld", rd.im.w, rd.im.h, rd.holes);
        dump_domain(c, &rd);
        if (R) {
            fputs(",\"p\":", d);
            json_floats(d, p, nc);
            fputs(",\"class\":", d);
            json_str(d, core_router_class(R, cls));
            fprintf(d, ",\"size\":%d,\"crops\":%d,\"gate\":{", g->s, g->plan.n);
            for (int i = 0; i < nc; i++) {
                fprintf(d, "%s", i ? "," : "");
                json_str(d, core_router_class(R, i));
                fputc(':', d);
                json_floats(d, f[i].v, CORE_ROUTE_NFEAT);
            }
            fputs("},\"gate_p\":", d);
            json_floats(d, gp, nc);
            fprintf(d, ",\"nets\":%s", nets ? "true" : "false");
        }
        fputs("}\n", d);
        if (ferror(d)) st = sp_err(SP_ERR_IO, "%s: write failed", c->o->dump);
    } else {
        printf("%-32s", cli_base_name(img_path));
        for (int i = 0; i < nc; i++) printf(" %9.4f", (double)p[i]);
        printf("  %-9s %6.3f  %s\n", core_router_class(R, cls), (double)gp[cls], nets ? "nets" : "telea");
    }
done:
    core_request_free(&rd);
    core_request_free(&rg);
    img_free(&im);
    img_free(&mask);
    return st;
}

/* The table's header line. */
static void print_header(const rt_ctx *c) {
    printf("%-32s", "image");
    for (int i = 0; i < core_router_nclasses(c->router); i++) printf(" %9s", core_router_class(c->router, i));
    printf("  %-9s %6s  %s\n", "family", "gate", "use");
}

#define RO(f) offsetof(rt_opts, f)
static const cli_opt route_table[] = {
    {"--image", NULL, CLI_STR, RO(image), 0, 0, NULL, NULL},
    {"--mask", NULL, CLI_STR, RO(mask), 0, 0, NULL, NULL},
    {"--size", NULL, CLI_INT, RO(size), 16, 4096, NULL, NULL},
    {"--router", NULL, CLI_STR, RO(router), 0, 0, NULL, NULL},
    {"--dump", NULL, CLI_STR, RO(dump), 0, 0, NULL, NULL},
};

int cmd_route(int argc, char **argv) {
    rt_opts o = {.router = RT_DEFAULT_ROUTER};
    const cli_spec spec = {"semipaint route", route_table, sizeof route_table / sizeof route_table[0], 0, 0,
                           route_usage};
    int prc = cli_parse(&spec, argc, argv, &o, NULL, NULL);
    if (prc >= 0) return prc;
    if (!o.image || !o.mask) {
        fprintf(stderr, "semipaint route: --image and --mask are required\n");
        route_usage(stderr);
        return 2;
    }
    const int none = !strcmp(o.router, "none");
    if (none && !o.dump) {
        fprintf(stderr, "semipaint route: --router none needs --dump (without a router there is nothing to print)\n");
        return 2;
    }
    const int dirs = is_dir(o.image);
    if (dirs != is_dir(o.mask)) {
        fprintf(stderr, "semipaint route: --image and --mask must both be files or both be folders\n");
        return 2;
    }
    rt_ctx c = {.o = &o, .dsize = 256};
    cfg_defaults(&c.cfg);
    int rc = 1;
    char **names = NULL;
    long n = 1;
    if (!none) {
        if (core_router_load(o.router, &c.router)) {
            fprintf(stderr, "semipaint route: %s\n", sp_err_msg());
            return 1;
        }
        c.dsize = core_router_domain_size(c.router);
    }
    if (dirs && cli_list_images(o.image, &names, &n)) {
        fprintf(stderr, "semipaint route: %s\n", sp_err_msg());
        goto out;
    }
    if (n == 0) {
        fprintf(stderr, "semipaint route: %s: no .jpg, .jpeg, .png or .webp files\n", o.image);
        goto out;
    }
    if (o.dump && !(c.dump = fopen(o.dump, "w"))) {
        fprintf(stderr, "semipaint route: cannot write %s: %s\n", o.dump, strerror(errno));
        goto out;
    }
    if (!o.dump) print_header(&c);
    long failed = 0;
    sp_progress pr;
    if (o.dump) sp_progress_init(&pr, "route", n);
    for (long i = 0; i < n; i++) {
        char img_path[4096], mask_path[4096];
        if (!dirs) {
            snprintf(img_path, sizeof img_path, "%s", o.image);
            snprintf(mask_path, sizeof mask_path, "%s", o.mask);
        } else {
            snprintf(img_path, sizeof img_path, "%s/%s", o.image, names[i]);
            if (!cli_find_mask(o.mask, names[i], mask_path, sizeof mask_path)) {
                fprintf(stderr, "semipaint route: %s: no mask in %s with its stem (.png, .jpg, .jpeg, .webp)\n", img_path,
                        o.mask);
                failed++;
                continue;
            }
        }
        if (route_one(&c, img_path, mask_path)) {
            fprintf(stderr, "semipaint route: %s\n", sp_err_msg());
            failed++;
        }
        if (o.dump) sp_progress_update(&pr, i + 1);
    }
    if (o.dump) sp_progress_finish(&pr);
    if (c.dump && fclose(c.dump)) {
        fprintf(stderr, "semipaint route: %s: write failed\n", o.dump);
        failed++;
    }
    c.dump = NULL;
    const double k = c.images ? 1.0 / (double)c.images : 0;
    printf("routed %ld of %ld images", c.images, n);
    for (int i = 0; c.router && i < core_router_nclasses(c.router); i++)
        printf("%s %ld to %s", i ? "," : ":", c.per_class[i], core_router_class(c.router, i));
    if (c.router) printf("; nets for %ld, telea for %ld", c.nets, c.images - c.nets);
    printf("%s%s; %ld failed\n", o.dump ? "; features in " : "", o.dump ? o.dump : "", failed);
    printf("per image: prepare %.3f ms, domain %.3f ms, gate %.3f ms\n", c.prep_ms * k, c.domain_ms * k, c.gate_ms * k);
    rc = failed ? 1 : 0;
out:
    if (c.dump) fclose(c.dump);
    cli_free_names(names, dirs ? n : 0);
    core_router_free(c.router);
    return rc;
}
