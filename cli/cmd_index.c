/* cmd_index.c: `semipaint index`: build, inspect, query, append to and benchmark the retrieval database; measure descriptors. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/models.h"
#include "imaging/img.h"
#include "imaging/plan.h"
#include "model/nn.h"
#include "retrieval/rt.h"
#include "retrieval/rt_index.h"
#include "imaging/telea.h"

#define IDX_DEFAULT_SIZE 256            /* index build: side of the stored images without --size */
#define IDX_MIN_SIZE 16                 /* --size range (a descriptor may refuse a size: thumb32 needs */
#define IDX_MAX_SIZE 1024               /* 32 px, VGG a multiple of 16); 1024: a 3 MiB store row */
#define IDX_MAX_PIXELS (100L * 1000 * 1000) /* refuse larger inputs before decoding */
#define IDX_DEFAULT_DESC "thumb16"

/* ---- options: each subcommand has its own struct and table, and takes only its own ---- */

/* The network that computes a VGG descriptor: options of every subcommand that may load one. */
typedef struct {
    const char *weights; /* --weights: vgg16_features weights */
    nn_device device;    /* --device */
    int threads;         /* --threads: CPU threads, 0 = all */
    const char *weights_key; /* how messages name `weights` (not an option): NULL = "--weights" */
} idx_net_opts;

/* --model NAME [-c FILE]: a model family of the configuration gives the database (docs/cli.md). */
typedef struct {
    const char *model, *config;
} idx_family_opts;

/* index build */
typedef struct {
    idx_net_opts net;
    idx_family_opts fam;
    const char *images, *out, *descriptor, *factory;
    long batch, limit;
    int size; /* --size: side of the stored square images; 0 = not given */
    int force;
    double lock_wait; /* --lock-wait seconds; < 0: the library's default */
} build_opts;

/* index query, add and bench: a database (and images) given as positional arguments. */
typedef struct {
    idx_net_opts net;
    idx_family_opts fam;
    long k, nq, seed;
    long nprobe, ef;  /* search parameters; 0 = the index's own */
    double lock_wait; /* add: < 0 = the library's default */
    /* set by --model (not options): */
    const char *db_key;     /* how messages name the database: NULL = "DB" */
    const char *descriptor; /* the family's descriptor when not auto (else the database's) */
    int family_nprobe;      /* the family's nprobe, applied as semipaintd does when --nprobe is not given; 0 = none */
} db_opts;

/* index info */
typedef struct {
    idx_family_opts fam;
} info_opts;

/* index bench-synthetic */
typedef struct {
    long n, nq, dim, clusters, train, seed;
    const char *factory, *nprobe;
    double spread;
} synth_opts;

/* index eval-descriptors */
typedef struct {
    idx_net_opts net;
    idx_family_opts fam;
    const char *db, *queries, *masks, *descs, *coarse, *fill;
    long limit, seed;
} evald_opts;

#define IDX_MAX_POS 4096 /* images of one `index add` */
#define IDX_BIG (double)(1L << 40)

static int parse_device(const char *v, void *f) { return nn_device_parse(v, f); }

/* The options of idx_net_opts inside options struct T. */
#define NET_OPTS(T)                                                                                          \
    {"--weights", NULL, CLI_STR, offsetof(T, net.weights), 0, 0, NULL, NULL},                              \
    {"--device", NULL, CLI_FN, offsetof(T, net.device), 0, 0, parse_device, "auto, cpu or cuda"},          \
    {"--threads", NULL, CLI_INT, offsetof(T, net.threads), 0, 1024, NULL, NULL}
#define OPT_K(T) {"-k", "--k", CLI_LONG, offsetof(T, k), 1, 4096, NULL, NULL}
/* --model NAME and -c FILE inside options struct T. */
#define FAMILY_OPTS(T)                                                                                       \
    {"--model", NULL, CLI_STR, offsetof(T, fam.model), 0, 0, NULL, NULL},                                  \
    {"--config", "-c", CLI_STR, offsetof(T, fam.config), 0, 0, NULL, NULL}

static const cli_opt build_table[] = {
    {"--images", NULL, CLI_STR, offsetof(build_opts, images), 0, 0, NULL, NULL},
    {"--out", NULL, CLI_STR, offsetof(build_opts, out), 0, 0, NULL, NULL},
    {"--descriptor", NULL, CLI_STR, offsetof(build_opts, descriptor), 0, 0, NULL, NULL},
    {"--factory", NULL, CLI_STR, offsetof(build_opts, factory), 0, 0, NULL, NULL},
    {"--batch", NULL, CLI_LONG, offsetof(build_opts, batch), 1, 4096, NULL, NULL},
    {"--limit", NULL, CLI_LONG, offsetof(build_opts, limit), 1, IDX_BIG, NULL, NULL},
    {"--size", NULL, CLI_INT, offsetof(build_opts, size), IDX_MIN_SIZE, IDX_MAX_SIZE, NULL, NULL},
    {"--force", NULL, CLI_FLAG, offsetof(build_opts, force), 0, 0, NULL, NULL},
    {"--lock-wait", NULL, CLI_DOUBLE, offsetof(build_opts, lock_wait), 0, 86400, NULL, NULL},
    NET_OPTS(build_opts),
    FAMILY_OPTS(build_opts),
};
static const cli_opt info_table[] = {
    FAMILY_OPTS(info_opts),
};
static const cli_opt query_table[] = {
    OPT_K(db_opts),
    {"--nprobe", NULL, CLI_LONG, offsetof(db_opts, nprobe), 1, 1 << 20, NULL, NULL},
    {"--ef", NULL, CLI_LONG, offsetof(db_opts, ef), 1, 1 << 20, NULL, NULL},
    NET_OPTS(db_opts),
    FAMILY_OPTS(db_opts),
};
static const cli_opt add_table[] = {
    {"--lock-wait", NULL, CLI_DOUBLE, offsetof(db_opts, lock_wait), 0, 86400, NULL, NULL},
    NET_OPTS(db_opts),
    FAMILY_OPTS(db_opts),
};
static const cli_opt bench_table[] = {
    {"--nq", NULL, CLI_LONG, offsetof(db_opts, nq), 1, IDX_BIG, NULL, NULL},
    OPT_K(db_opts),
    {"--nprobe", NULL, CLI_LONG, offsetof(db_opts, nprobe), 1, 1 << 20, NULL, NULL},
    {"--ef", NULL, CLI_LONG, offsetof(db_opts, ef), 1, 1 << 20, NULL, NULL},
    {"--seed", NULL, CLI_LONG, offsetof(db_opts, seed), 0, IDX_BIG, NULL, NULL},
    NET_OPTS(db_opts),
    FAMILY_OPTS(db_opts),
};
static const cli_opt synth_table[] = {
    {"--n", NULL, CLI_LONG, offsetof(synth_opts, n), 1, IDX_BIG, NULL, NULL},
    {"--dim", NULL, CLI_LONG, offsetof(synth_opts, dim), 1, 65536, NULL, NULL},
    {"--factory", NULL, CLI_STR, offsetof(synth_opts, factory), 0, 0, NULL, NULL},
    {"--nprobe", NULL, CLI_STR, offsetof(synth_opts, nprobe), 0, 0, NULL, NULL},
    {"--nq", NULL, CLI_LONG, offsetof(synth_opts, nq), 1, IDX_BIG, NULL, NULL},
    {"--clusters", NULL, CLI_LONG, offsetof(synth_opts, clusters), 0, IDX_BIG, NULL, NULL},
    {"--spread", NULL, CLI_DOUBLE, offsetof(synth_opts, spread), 0, 1e6, NULL, NULL},
    {"--train", NULL, CLI_LONG, offsetof(synth_opts, train), 1, IDX_BIG, NULL, NULL},
    {"--seed", NULL, CLI_LONG, offsetof(synth_opts, seed), 0, IDX_BIG, NULL, NULL},
};
static const cli_opt evald_table[] = {
    {"--db", NULL, CLI_STR, offsetof(evald_opts, db), 0, 0, NULL, NULL},
    {"--queries", NULL, CLI_STR, offsetof(evald_opts, queries), 0, 0, NULL, NULL},
    {"--masks", NULL, CLI_STR, offsetof(evald_opts, masks), 0, 0, NULL, NULL},
    {"--descriptors", NULL, CLI_STR, offsetof(evald_opts, descs), 0, 0, NULL, NULL},
    {"--coarse", NULL, CLI_STR, offsetof(evald_opts, coarse), 0, 0, NULL, NULL},
    {"--fill", NULL, CLI_STR, offsetof(evald_opts, fill), 0, 0, NULL, NULL},
    {"--limit", NULL, CLI_LONG, offsetof(evald_opts, limit), 1, IDX_BIG, NULL, NULL},
    {"--seed", NULL, CLI_LONG, offsetof(evald_opts, seed), 0, IDX_BIG, NULL, NULL},
    NET_OPTS(evald_opts),
    FAMILY_OPTS(evald_opts),
};
#define NOPTS(t) ((int)(sizeof t / sizeof t[0]))

static int fail(const char *what) {
    fprintf(stderr, "semipaint index %s: %s\n", what, sp_err_msg());
    return 1;
}

/* ---- models: backend, VGG-16, descriptor (core/models.h) ---- */

typedef struct {
    core_models cm;
    int open; /* cm holds the backend options */
} idx_models;

static void models_free(idx_models *m) {
    core_models_close(&m->cm);
    m->open = 0;
}

/* The backend options of `o` into `m` with no network loaded yet: the backend is made when the
 * first network is (a descriptor without weights needs none). */
static sp_status models_init(idx_models *m, const idx_net_opts *o, const char *coarse, const char *coarse_key) {
    if (m->open) return SP_OK;
    core_models_opts mo = {.device = o->device, .threads = o->threads, .coarse = coarse, .coarse_key = coarse_key};
    sp_status st = core_models_open(&mo, &m->cm);
    m->open = st == SP_OK;
    return st;
}

/* Creates descriptor `name`, loading the VGG-16 weights (--weights, or --model's) when it needs them. */
static sp_status models_descriptor(idx_models *m, const idx_net_opts *o, const char *name) {
    sp_status st = models_init(m, o, NULL, NULL);
    return st ? st : core_models_descriptor(&m->cm, name, o->weights, o->weights_key ? o->weights_key : "--weights");
}

/* ---- --model NAME [-c FILE]: the database (and for build its size and descriptor) of a family ---- */

/* A family --model named, and how messages name its database key. */
typedef struct {
    cli_family fam;
    char db_key[96], weights_key[96];
    char descriptor[128]; /* build: the descriptor an existing database was built with */
} idx_family;

/* The usage error `what` of `spec`: printed as cli_parse prints its own, with the usage. Returns 2. */
static int usage_fail(const cli_spec *spec, const char *what) {
    fprintf(stderr, "%s: %s\n\n", spec->cmd, what);
    spec->usage(stderr);
    return 2;
}

/* --model NAME [-c FILE] of index subcommand `spec` (fo). Without --model, -c is a usage error
 * and nothing else changes. With it, *fam is the configuration's family NAME (cli_family_load)
 * and *db its database, which must be configured; `given`, a database the command line named too
 * (`given_as`: "DB", "--out", "--db"), is then a usage error, and so is a --weights other than the
 * family's descriptor_weights, which `net` (when not NULL) takes when it has none. Returns -1 to
 * go on, else the exit status after printing why: 2 for usage errors and an unknown family, 1
 * when the configuration cannot be loaded or configures no database for the family. */
static int family_db(const cli_spec *spec, const idx_family_opts *fo, const char *given, const char *given_as,
                     idx_net_opts *net, idx_family *fam, const char **db) {
    if (!fo->model) {
        if (fo->config) return usage_fail(spec, "-c/--config is read only with --model");
        return -1;
    }
    int rc = cli_family_load(spec->cmd, fo->config, fo->model, &fam->fam);
    if (rc) return rc;
    const cfg_family *f = &fam->fam.f;
    char why[2400];
    cli_family_key(&fam->fam, "database", fam->db_key, sizeof fam->db_key);
    cli_family_key(&fam->fam, "descriptor_weights", fam->weights_key, sizeof fam->weights_key);
    if (given) {
        snprintf(why, sizeof why, "%s %s and --model are exclusive: --model %s names the database %s (%s)", given_as,
                 given, f->name, f->database[0] ? f->database : "(none)", fam->db_key);
        return usage_fail(spec, why);
    }
    if (!f->database[0]) {
        fprintf(stderr, "%s: --model %s: %s is empty in %s: the family has no database\n", spec->cmd, f->name,
                fam->db_key, fam->fam.config);
        return 1;
    }
    if (net && f->descriptor_weights[0]) {
        if (net->weights && strcmp(net->weights, f->descriptor_weights)) {
            snprintf(why, sizeof why, "--weights %s differs from --model %s's %s %s", net->weights, f->name,
                     fam->weights_key, f->descriptor_weights);
            return usage_fail(spec, why);
        }
        if (!net->weights) {
            net->weights = f->descriptor_weights;
            net->weights_key = fam->weights_key;
        }
    }
    *db = f->database;
    fprintf(stderr, "%s: model family %s of %s: database %s (%s)\n", spec->cmd, f->name, fam->fam.config, *db,
            fam->db_key);
    return -1;
}

/* The settings of query, add and bench that --model's family gives besides the database: how
 * messages name it, its descriptor when not auto, its nprobe. */
static void family_db_opts(const idx_family *fam, db_opts *o) {
    const cfg_family *f = &fam->fam.f;
    o->db_key = fam->db_key;
    if (f->descriptor[0] && strcmp(f->descriptor, "auto")) o->descriptor = f->descriptor;
    o->family_nprobe = f->nprobe;
}

/* ---- image loading ---- */

/* Loads, centre-crops and resizes one image to s x s: rgb (s*s*3) and, unless NULL, chw (3,s,s). */
static sp_status load_square(const char *path, int s, uint8_t *rgb, float *chw) {
    img_u8 im = {0}, sq = {0};
    sp_status st = img_load(path, IDX_MAX_PIXELS, &im);
    /* An RGB image already at the working size is its own centre crop. */
    const int as_is = st == SP_OK && im.w == s && im.h == s && im.c == 3;
    if (st == SP_OK && !as_is) st = img_square(&im, s, &sq);
    if (st == SP_OK) {
        const img_u8 *src = as_is ? &im : &sq;
        memcpy(rgb, src->px, (size_t)s * s * 3);
        if (chw) img_to_chw(src, chw);
    }
    img_free(&im);
    img_free(&sq);
    return st;
}

/* Loads paths[0..n) in parallel into s x s rgb/chw slots; ok[i] = 1 on success, else msgs[i] says why. */
static void load_batch(char *const *paths, int n, int s, uint8_t *rgb, float *chw, int *ok, char (*msgs)[512]) {
    const size_t row = (size_t)s * s * 3;
#pragma omp parallel for schedule(dynamic)
    for (int i = 0; i < n; i++) {
        sp_status st = load_square(paths[i], s, rgb + i * row, chw ? chw + i * row : NULL);
        ok[i] = st == SP_OK;
        if (!ok[i]) snprintf(msgs[i], sizeof msgs[i], "%s", sp_err_msg());
    }
}

/* ---- index build ---- */

static void build_usage(FILE *f) {
    fprintf(f,
            "usage: semipaint index build --images DIR (--out DB | --model NAME [-c FILE]) [options]\n"
            "Decodes the JPEG and PNG files of DIR (sorted by name), centre-crops and resizes them to\n"
            "S x S (--size), computes their descriptors in batches and writes the database directory DB.\n\n"
            "  --model NAME       build the database of this model family of the configuration instead of\n"
            "                     --out (exclusive with it): its database, at its nets' working size, with\n"
            "                     its descriptor (auto: an existing database's, else the default) and\n"
            "                     descriptor_weights; a --size, --descriptor or --weights that differs is\n"
            "                     a usage error\n"
            "  -c, --config FILE  the configuration --model reads [" CLI_DEFAULT_CONFIG "]\n"
            "  --size S           side of the stored square images, %d..%d: the working size of the\n"
            "                     networks that will use DB [%d; with --model, the family's]\n"
            "  --descriptor NAME  one of: %s [%s]\n"
            "  --weights FILE     vgg16_features weights (for vgg16_features:*)\n"
            "  --factory F        FAISS index factory string: Flat (exact), IVF1024,Flat, HNSW32, ... [Flat]\n"
            "  --batch N          images per descriptor batch [32]\n"
            "  --limit N          use only the first N images\n"
            "  --device D         auto, cpu or cuda, for the VGG descriptor [auto]\n"
            "  --threads N        CPU threads for the network (0 = all) [0]\n"
            "  --force            replace DB if it exists, as a whole, once the new one is complete\n"
            "  --lock-wait S      with --force: how long to wait for an append to DB (by the daemon or\n"
            "                     `index add`) to finish before replacing it; the build fails, leaving DB\n"
            "                     as it was, when the wait runs out [%.0f]\n",
            IDX_MIN_SIZE, IDX_MAX_SIZE, IDX_DEFAULT_SIZE, rt_descriptor_names(), IDX_DEFAULT_DESC,
            RT_DB_BUILD_LOCK_WAIT_S);
}

/* One batch handed to the store writer: written by a thread of its own while the next batch
 * decodes (the store's writes wait on the disk, decoding on the CPU). */
typedef struct {
    rt_db_builder *b;
    int n;
    uint8_t *rgb;
    float *desc;
    const char **names;
    sp_status st;
    char msg[512];
    double seconds;
} store_job;

static void *store_job_run(void *arg) {
    store_job *j = arg;
    double t0 = sp_now();
    j->st = rt_db_builder_add(j->b, j->n, j->rgb, j->desc, j->names);
    if (j->st) snprintf(j->msg, sizeof j->msg, "%s", sp_err_msg());
    j->seconds = sp_now() - t0;
    return NULL;
}

/* index build, its options parsed. */
static int run_build(const build_opts *o) {
    if (!o->images || !o->out) {
        fprintf(stderr, "semipaint index build: --images and --out are required\n\n");
        build_usage(stderr);
        return 2;
    }
    idx_models m = {0};
    rt_db_builder *b = NULL;
    char **files = NULL, **paths = NULL;
    long nfiles = 0, nlisted = 0;
    uint8_t *rgb[2] = {NULL, NULL};
    float *chw = NULL, *desc[2] = {NULL, NULL};
    const char **names[2] = {NULL, NULL};
    int *ok = NULL;
    char(*msgs)[512] = NULL;
    store_job job[2];
    pthread_t writer;
    int writing = -1; /* the buffer set the writer thread holds, or -1 */
    int rc = 1;
    sp_status st;
    const char *dname = o->descriptor ? o->descriptor : IDX_DEFAULT_DESC;
    if ((st = models_descriptor(&m, &o->net, dname))) goto done;
    if ((st = cli_list_images(o->images, &files, &nlisted))) goto done;
    nfiles = o->limit && nlisted > o->limit ? o->limit : nlisted;
    if (nfiles == 0) {
        st = sp_err(SP_ERR_INVALID, "%s: no .jpg, .jpeg, .png or .webp files", o->images);
        goto done;
    }
    const int s = o->size ? o->size : IDX_DEFAULT_SIZE;
    if ((st = rt_db_builder_new(o->out, m.cm.desc, o->factory ? o->factory : "Flat", s, o->force, &b))) goto done;
    if (o->lock_wait >= 0) rt_db_builder_set_lock_wait(b, o->lock_wait);
    const int bs = (int)o->batch, dim = rt_descriptor_dim(m.cm.desc);
    const size_t row = (size_t)s * s * 3;
    chw = malloc(bs * row * sizeof *chw);
    ok = calloc(bs, sizeof *ok);
    msgs = calloc(bs, sizeof *msgs);
    paths = calloc(bs, sizeof *paths);
    int nomem = !chw || !ok || !msgs || !paths;
    for (int k = 0; k < 2; k++) {
        rgb[k] = malloc(bs * row);
        desc[k] = malloc((size_t)bs * dim * sizeof *desc[k]);
        names[k] = malloc(bs * sizeof *names[k]);
        nomem |= !rgb[k] || !desc[k] || !names[k];
    }
    for (int i = 0; !nomem && i < bs; i++) nomem |= !(paths[i] = malloc(4096));
    if (nomem) {
        st = sp_err(SP_ERR_NOMEM, "batch of %d images", bs);
        goto done;
    }
    fprintf(stderr, "index build: %ld images from %s at %dx%d, descriptor %s (dim %d), factory %s\n", nfiles,
            o->images, s, s, dname, dim, o->factory ? o->factory : "Flat");
    sp_progress pr;
    sp_progress_init(&pr, "index build", nfiles);
    double t_load = 0, t_desc = 0, t_wait = 0, t_write = 0, t0 = sp_now();
    long skipped = 0;
    for (long at = 0, k = 0; at < nfiles; at += bs, k ^= 1) {
        int n = (int)(nfiles - at < bs ? nfiles - at : bs);
        for (int i = 0; i < n; i++) snprintf(paths[i], 4096, "%s/%s", o->images, files[at + i]);
        double t1 = sp_now();
        load_batch(paths, n, s, rgb[k], chw, ok, msgs);
        /* Compact the batch to the images that decoded. */
        int good = 0;
        for (int i = 0; i < n; i++) {
            if (!ok[i]) {
                fprintf(stderr, "%sindex build: skipping %s\n", pr.tty ? "\n" : "", msgs[i]);
                skipped++;
                continue;
            }
            if (good != i) {
                memcpy(rgb[k] + good * row, rgb[k] + i * row, row);
                memcpy(chw + good * row, chw + i * row, row * sizeof *chw);
            }
            names[k][good++] = files[at + i];
        }
        double t2 = sp_now();
        if ((st = rt_descriptor_compute(m.cm.desc, good, s, chw, desc[k]))) goto done;
        double t3 = sp_now();
        if (writing >= 0) { /* the previous batch's writer, on the other buffer set */
            pthread_join(writer, NULL);
            t_write += job[writing].seconds;
            int w = writing;
            writing = -1;
            if ((st = job[w].st)) {
                st = sp_err(st, "%s", job[w].msg);
                goto done;
            }
        }
        double t4 = sp_now();
        job[k] = (store_job){b, good, rgb[k], desc[k], names[k], SP_OK, "", 0};
        if (pthread_create(&writer, NULL, store_job_run, &job[k]) != 0) {
            store_job_run(&job[k]); /* no thread to be had: write it here */
            if ((st = job[k].st)) {
                st = sp_err(st, "%s", job[k].msg);
                goto done;
            }
        } else {
            writing = (int)k;
        }
        t_load += t2 - t1;
        t_desc += t3 - t2;
        t_wait += t4 - t3;
        sp_progress_update(&pr, at + n);
    }
    if (writing >= 0) {
        double t4 = sp_now();
        pthread_join(writer, NULL);
        t_wait += sp_now() - t4;
        t_write += job[writing].seconds;
        int w = writing;
        writing = -1;
        if ((st = job[w].st)) {
            st = sp_err(st, "%s", job[w].msg);
            goto done;
        }
    }
    sp_progress_finish(&pr);
    double t5 = sp_now();
    if ((st = rt_db_builder_finish(b))) goto done;
    double t_index = sp_now() - t5, total = sp_now() - t0;
    long count = rt_db_builder_count(b);
    printf("built %s: %ld images (%ld skipped) at %dx%d, descriptor %s, dim %d, factory %s\n", o->out, count, skipped,
           s, s, dname, dim, o->factory ? o->factory : "Flat");
    printf("time %.1f s: decode+resize %.1f s, descriptor %.1f s (%.2f ms/image), store writes %.1f s (overlapped; "
           "waited %.1f s), index+commit %.1f s\n",
           total, t_load, t_desc, count ? t_desc * 1e3 / count : 0, t_write, t_wait, t_index);
    rc = 0;
done:
    if (writing >= 0) pthread_join(writer, NULL);
    if (rc) fail("build");
    rt_db_builder_free(b);
    if (paths)
        for (int i = 0; i < o->batch; i++) free(paths[i]);
    free(paths);
    cli_free_names(files, nlisted);
    for (int k = 0; k < 2; k++) {
        free(rgb[k]);
        free(desc[k]);
        free(names[k]);
    }
    free(chw);
    free(ok);
    free(msgs);
    models_free(&m);
    return rc;
}

/* ---- index info / query / add ---- */

static void info_usage(FILE *f) {
    fprintf(f, "usage: semipaint index info DB | --model NAME [-c FILE]\n"
               "The database's images, descriptor, weights, index and first and last source names.\n"
               "--model NAME: the database of that model family of the configuration -c FILE\n"
               "[" CLI_DEFAULT_CONFIG "] instead of DB.\n");
}

/* index info DB */
static int run_info(const char *dir) {
    rt_db *db = NULL;
    if (rt_db_open(dir, NULL, 0, &db)) return fail("info");
    long n = rt_db_count(db);
    printf("database    %s\n", dir);
    printf("images      %ld (%dx%d RGB, %.1f MiB in the store)\n", n, rt_db_size(db), rt_db_size(db),
           (double)n * rt_db_size(db) * rt_db_size(db) * 3 / (1 << 20));
    printf("descriptor  %s (dim %d)\n", rt_db_descriptor(db), rt_db_dim(db));
    printf("weights     %s\n", rt_db_weights_sha256(db)[0] ? rt_db_weights_sha256(db) : "(none)");
    printf("index       %s, inner product, generation %ld\n", rt_db_factory(db), rt_db_generation(db));
    if (n > 0) printf("first/last  %s .. %s\n", rt_db_source_name(db, 0), rt_db_source_name(db, n - 1));
    rt_db_close(db);
    return 0;
}

/* Opens DB with the descriptor its manifest names (loading --weights when it is VGG) and o's search
 * parameters. The caller works at the database's own image size, rt_db_size(*db). */
static sp_status open_db_with_descriptor(const db_opts *o, const char *dir, int writable, idx_models *m, rt_db **db) {
    char name[128];
    sp_status st = SP_OK;
    if (o->descriptor) /* --model's family names one: the database must have been built with it */
        snprintf(name, sizeof name, "%s", o->descriptor);
    else if ((st = rt_db_peek_descriptor(dir, name, sizeof name)))
        return st;
    if ((st = models_descriptor(m, &o->net, name))) return st;
    if ((st = core_models_open_db(&m->cm, dir, o->db_key ? o->db_key : "DB", writable, db))) return st;
    if (o->nprobe && (st = rt_db_set_search_param(*db, "nprobe", (double)o->nprobe))) return st;
    if (!o->nprobe && o->family_nprobe) /* as semipaintd: indexes without cells ignore it */
        (void)rt_db_set_search_param(*db, "nprobe", (double)o->family_nprobe);
    if (o->ef && (st = rt_db_set_search_param(*db, "efSearch", (double)o->ef))) return st;
    return SP_OK;
}

static void query_usage(FILE *f) {
    fprintf(f, "usage: semipaint index query DB IMAGE [-k N] [--nprobe N] [--ef N] [--weights VGG] [--device D]\n"
               "                            [--threads N]\n"
               "       semipaint index query --model NAME [-c FILE] IMAGE [options]\n"
               "The k [5] nearest database images to IMAGE (cut and scaled to the database's image size):\n"
               "rank, id, cosine score and source name. --model NAME: the database of that model family of\n"
               "the configuration [" CLI_DEFAULT_CONFIG "] instead of DB, with its descriptor,\n"
               "descriptor_weights and nprobe, as semipaintd searches it.\n");
}

/* index query DB IMAGE */
static int run_query(const db_opts *o, const char *const *pos) {
    idx_models m = {0};
    rt_db *db = NULL;
    uint8_t *rgb = NULL;
    float *chw = NULL, *desc = NULL, *sc = malloc(o->k * sizeof *sc);
    int64_t *ids = malloc(o->k * sizeof *ids);
    int rc = 1;
    sp_status st = SP_OK;
    if (!sc || !ids) {
        st = sp_err(SP_ERR_NOMEM, "query");
        goto done;
    }
    if ((st = open_db_with_descriptor(o, pos[0], 0, &m, &db))) goto done;
    const int s = rt_db_size(db); /* the query is cut and scaled as the stored images were */
    const size_t row = (size_t)s * s * 3;
    rgb = malloc(row);
    chw = malloc(row * sizeof *chw);
    desc = malloc((size_t)rt_descriptor_dim(m.cm.desc) * sizeof *desc);
    if (!rgb || !chw || !desc) {
        st = sp_err(SP_ERR_NOMEM, "query");
        goto done;
    }
    if ((st = load_square(pos[1], s, rgb, chw))) goto done;
    double t0 = sp_now();
    if ((st = rt_descriptor_compute(m.cm.desc, 1, s, chw, desc))) goto done;
    double t1 = sp_now();
    if ((st = rt_db_search(db, 1, desc, (int)o->k, ids, sc))) goto done;
    double t2 = sp_now();
    printf("%-5s %-8s %-9s %s\n", "rank", "id", "score", "name");
    for (int i = 0; i < o->k; i++) {
        if (ids[i] < 0) break;
        printf("%-5d %-8lld %-9.6f %s\n", i + 1, (long long)ids[i], sc[i], rt_db_source_name(db, ids[i]));
    }
    fprintf(stderr, "descriptor %.2f ms, search %.3f ms over %ld images\n", (t1 - t0) * 1e3, (t2 - t1) * 1e3,
            rt_db_count(db));
    rc = 0;
done:
    if (rc) fail("query");
    rt_db_close(db);
    models_free(&m);
    free(rgb);
    free(chw);
    free(desc);
    free(sc);
    free(ids);
    return rc;
}

static void add_usage(FILE *f) {
    fprintf(f, "usage: semipaint index add DB IMAGE... [--lock-wait S] [--weights VGG] [--device D] [--threads N]\n"
               "       semipaint index add --model NAME [-c FILE] IMAGE... [options]\n"
               "Appends the images, cut and scaled to the database's image size, durably and in one commit:\n"
               "after a crash the database holds all or none of them.\n"
               "Waits up to S seconds [%.0f] for another process writing DB to finish.\n"
               "--model NAME: the database of that model family of the configuration\n"
               "[" CLI_DEFAULT_CONFIG "] instead of DB (every argument is then an image).\n",
            RT_DB_LOCK_WAIT_S);
}

/* index add DB IMAGE...: npos positional arguments. */
static int run_add(const db_opts *o, const char *const *pos, int npos) {
    idx_models m = {0};
    rt_db *db = NULL;
    const int n = npos - 1;
    uint8_t *rgb = NULL;
    float *chw = NULL, *desc = NULL;
    int64_t *ids = malloc(n * sizeof *ids);
    const char **names = malloc(n * sizeof *names);
    int rc = 1;
    sp_status st = SP_OK;
    if (!ids || !names) {
        st = sp_err(SP_ERR_NOMEM, "%d images", n);
        goto done;
    }
    if ((st = open_db_with_descriptor(o, pos[0], 1, &m, &db))) goto done;
    if (o->lock_wait >= 0) rt_db_set_lock_wait(db, o->lock_wait);
    const int dim = rt_descriptor_dim(m.cm.desc), s = rt_db_size(db); /* stored at the database's size */
    const size_t row = (size_t)s * s * 3;
    rgb = malloc(n * row);
    chw = malloc(row * sizeof *chw);
    desc = malloc((size_t)n * dim * sizeof *desc);
    if (!rgb || !chw || !desc) {
        st = sp_err(SP_ERR_NOMEM, "%d images", n);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        if ((st = load_square(pos[1 + i], s, rgb + i * row, chw))) goto done;
        if ((st = rt_descriptor_compute(m.cm.desc, 1, s, chw, desc + (size_t)i * dim))) goto done;
        names[i] = cli_base_name(pos[1 + i]);
    }
    double t0 = sp_now();
    if ((st = rt_db_add(db, n, rgb, desc, names, ids))) goto done;
    for (int i = 0; i < n; i++) printf("%lld %s\n", (long long)ids[i], names[i]);
    fprintf(stderr, "added %d images in %.1f ms; the database holds %ld\n", n, (sp_now() - t0) * 1e3, rt_db_count(db));
    rc = 0;
done:
    if (rc) fail("add");
    rt_db_close(db);
    models_free(&m);
    free(rgb);
    free(chw);
    free(desc);
    free(ids);
    free(names);
    return rc;
}

/* ---- benchmarks ---- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Resident memory of this process in bytes (from /proc/self/statm; 0 when unknown). */
static size_t rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

typedef sp_status (*search_fn)(void *ctx, int n, const float *q, int k, int64_t *ids, float *sc);

/* Times nq queries at batch size `batch`: prints median, p90 and p99 per batch and per query. */
static sp_status time_search(const char *label, search_fn fn, void *ctx, long nq, int dim, const float *q, int k,
                             int batch) {
    long nb = nq / batch;
    if (nb <= 0) return SP_OK;
    double *t = malloc(nb * sizeof *t);
    int64_t *ids = malloc((size_t)batch * k * sizeof *ids);
    float *sc = malloc((size_t)batch * k * sizeof *sc);
    sp_status st = SP_OK;
    if (!t || !ids || !sc) st = sp_err(SP_ERR_NOMEM, "bench");
    for (long i = 0; i < nb && st == SP_OK; i++) {
        double t0 = sp_now();
        st = fn(ctx, batch, q + (size_t)i * batch * dim, k, ids, sc);
        t[i] = (sp_now() - t0) * 1e3;
    }
    if (st == SP_OK) {
        qsort(t, nb, sizeof *t, cmp_double);
        double sum = 0;
        for (long i = 0; i < nb; i++) sum += t[i];
        printf("%-28s batch %-2d  median %8.3f ms  p90 %8.3f  p99 %8.3f  mean %8.3f  (%.3f ms/query, %ld batches)\n",
               label, batch, t[nb / 2], t[nb * 9 / 10], t[nb * 99 / 100], sum / nb, t[nb / 2] / batch, nb);
    }
    free(t);
    free(ids);
    free(sc);
    return st;
}

static sp_status db_search_fn(void *ctx, int n, const float *q, int k, int64_t *ids, float *sc) {
    return rt_db_search(ctx, n, q, k, ids, sc);
}
static sp_status ix_search_fn(void *ctx, int n, const float *q, int k, int64_t *ids, float *sc) {
    return rt_index_search(ctx, n, q, k, sc, ids);
}

static void bench_usage(FILE *f) {
    fprintf(f, "usage: semipaint index bench DB [--nq N] [-k K] [--nprobe N] [--ef N] [--seed N] [--weights VGG]\n"
               "                            [--device D] [--threads N]\n"
               "       semipaint index bench --model NAME [-c FILE] [options]\n"
               "Search latency at batch 1 and 8 with the descriptors of nq [1000] stored images (picked by the\n"
               "seed [1]) as queries, k [5] neighbours each. --model NAME: the database of that model family\n"
               "of the configuration [" CLI_DEFAULT_CONFIG "] instead of DB, as for query.\n");
}

/* Query latency over a built database (index bench DB): the queries are the descriptors of stored images. */
static int run_bench_db(const db_opts *o, const char *dir) {
    idx_models m = {0};
    rt_db *db = NULL;
    float *q = NULL, *chw = NULL;
    int rc = 1;
    sp_status st;
    if ((st = open_db_with_descriptor(o, dir, 0, &m, &db))) goto done;
    long count = rt_db_count(db), nq = o->nq;
    const int dim = rt_db_dim(db), s = rt_db_size(db);
    if (count == 0) {
        st = sp_err(SP_ERR_INVALID, "%s is empty", dir);
        goto done;
    }
    q = malloc((size_t)nq * dim * sizeof *q);
    chw = malloc((size_t)3 * s * s * sizeof *chw);
    if (!q || !chw) {
        st = sp_err(SP_ERR_NOMEM, "queries");
        goto done;
    }
    uint64_t r = (uint64_t)o->seed * 0x9E3779B97F4A7C15ull + 1;
    double t0 = sp_now();
    for (long i = 0; i < nq; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        if ((st = rt_db_image(db, (int64_t)(r % (uint64_t)count), chw))) goto done;
        if ((st = rt_descriptor_compute(m.cm.desc, 1, s, chw, q + (size_t)i * dim))) goto done;
    }
    printf("%s: %ld images, %s dim %d, %s; %ld queries (stored images), k = %ld; descriptor %.3f ms/image\n",
           dir, count, rt_db_descriptor(db), dim, rt_db_factory(db), nq, o->k, (sp_now() - t0) * 1e3 / nq);
    for (int pass = 0; pass < 2; pass++) /* the first pass warms caches and is not printed */
        for (int b = 1; b <= 8; b *= 8) {
            if (pass == 0) {
                int64_t id;
                float sc;
                for (int i = 0; i < 20; i++) rt_db_search(db, 1, q, 1, &id, &sc);
                continue;
            }
            if ((st = time_search("search", db_search_fn, db, nq, dim, q, (int)o->k, b))) goto done;
        }
    rc = 0;
done:
    if (rc) fail("bench");
    free(q);
    free(chw);
    rt_db_close(db);
    models_free(&m);
    return rc;
}

/* Deterministic normal deviates: xorshift64* and Box-Muller. */
static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}
static double rng_unit(uint64_t *s) { return ((rng_next(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
static void rng_normal(uint64_t *s, float *out, int n) {
    for (int i = 0; i < n; i += 2) {
        double u = rng_unit(s), v = rng_unit(s), r = sqrt(-2 * log(u));
        out[i] = (float)(r * cos(2 * M_PI * v));
        if (i + 1 < n) out[i + 1] = (float)(r * sin(2 * M_PI * v));
    }
}
static void normalise(float *v, int d) {
    double ss = 0;
    for (int i = 0; i < d; i++) ss += (double)v[i] * v[i];
    float inv = ss > 0 ? (float)(1 / sqrt(ss)) : 0;
    for (int i = 0; i < d; i++) v[i] *= inv;
}

/* Row i of the synthetic set: a unit vector near one of `clusters` random unit centres (the
 * centre plus isotropic noise of norm `spread`: at 1.5 a vector keeps cosine 0.55 with its centre
 * and about 0.3 with the others of its cluster; the larger the spread, the closer to uniform),
 * or uniform on the sphere when clusters = 0. */
static void synth_rows(long first, long n, int d, long clusters, const float *centres, uint64_t seed, float spread,
                       float *out) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        uint64_t s = (seed + (uint64_t)(first + i)) * 0x9E3779B97F4A7C15ull | 1;
        float *v = out + (size_t)i * d;
        rng_normal(&s, v, d);
        normalise(v, d);
        if (clusters > 0) {
            const float *c = centres + (size_t)(rng_next(&s) % (uint64_t)clusters) * d;
            for (int j = 0; j < d; j++) v[j] = c[j] + spread * v[j];
            normalise(v, d);
        }
    }
}

static void synth_usage(FILE *f) {
    fprintf(f, "usage: semipaint index bench-synthetic [--n N] [--dim D] [--factory F] [--nprobe LIST] [--nq N]\n"
               "                                      [--clusters C] [--spread S] [--train N] [--seed N]\n"
               "Build time, memory, latency and recall@1 and @10 of an approximate index against exact search on\n"
               "clustered synthetic vectors [n 1000000, dim 512, factory IVF1024,Flat, nq 1000, clusters n/100\n"
               "(0 = uniform on the sphere), spread 1.5, train 65536, seed 1]; --nprobe (efSearch for HNSW)\n"
               "takes a comma-separated list to sweep.\n");
}

/* The 1M synthetic-vector benchmark: build time, memory, latency at batch 1 and 8, and recall of
 * an approximate index against exact search. */
static int run_bench_synthetic(const synth_opts *o) {
    const long n = o->n, nq = o->nq, clusters = o->clusters >= 0 ? o->clusters : (o->n / 100 > 0 ? o->n / 100 : 1);
    const int d = (int)o->dim, k = 10;
    const char *factory = o->factory ? o->factory : "IVF1024,Flat";
    const float spread = (float)o->spread;
    float *x = NULL, *q = NULL, *centres = NULL, *gts = NULL, *as = NULL;
    int64_t *gt = NULL, *ai = NULL;
    rt_index *exact = NULL, *ix = NULL;
    int rc = 1;
    sp_status st = SP_OK;
    printf("synthetic: %ld vectors + %ld queries, dim %d, %s %ld clusters (noise %.2f); approximate index %s\n", n, nq,
           d, clusters ? "around" : "uniform on the sphere, no", clusters, spread, factory);
    x = malloc((size_t)n * d * sizeof *x);
    q = malloc((size_t)nq * d * sizeof *q);
    centres = malloc((size_t)(clusters ? clusters : 1) * d * sizeof *centres);
    gt = malloc((size_t)nq * k * sizeof *gt);
    gts = malloc((size_t)nq * k * sizeof *gts);
    ai = malloc((size_t)nq * k * sizeof *ai);
    as = malloc((size_t)nq * k * sizeof *as);
    if (!x || !q || !centres || !gt || !gts || !ai || !as) {
        st = sp_err(SP_ERR_NOMEM, "%ld x %d vectors", n, d);
        goto done;
    }
    double t0 = sp_now();
    synth_rows(0, clusters, d, 0, NULL, (uint64_t)o->seed * 7919, 0, centres);
    synth_rows(0, n, d, clusters, centres, (uint64_t)o->seed, spread, x);
    synth_rows(n, nq, d, clusters, centres, (uint64_t)o->seed, spread, q);
    printf("generated in %.1f s\n", sp_now() - t0);

    /* Exact search: the ground truth, and the baseline latency. */
    size_t m0 = rss_bytes();
    t0 = sp_now();
    if ((st = rt_index_new("Flat", d, &exact))) goto done;
    if ((st = rt_index_add(exact, n, x))) goto done;
    printf("%-28s build %7.1f s  memory +%.0f MiB (%.0f B/vector)\n", "Flat (exact)", sp_now() - t0,
           (double)(rss_bytes() - m0) / (1 << 20), (double)(rss_bytes() - m0) / n);
    t0 = sp_now();
    if ((st = rt_index_search(exact, nq, q, k, gts, gt))) goto done;
    printf("%-28s ground truth for %ld queries in %.1f s (batched)\n", "Flat (exact)", nq, sp_now() - t0);
    long nq_exact = nq < 64 ? nq : 64; /* exact search is slow at 1M: time fewer queries */
    if ((st = time_search("Flat (exact)", ix_search_fn, exact, nq_exact, d, q, k, 1))) goto done;
    if ((st = time_search("Flat (exact)", ix_search_fn, exact, nq_exact, d, q, k, 8))) goto done;
    rt_index_free(exact);
    exact = NULL;

    /* Approximate: train on a sample, add all, then sweep nprobe / efSearch. */
    m0 = rss_bytes();
    t0 = sp_now();
    if ((st = rt_index_new(factory, d, &ix))) goto done;
    long ntrain = o->train < n ? o->train : n;
    if (!rt_index_is_trained(ix) && (st = rt_index_train(ix, ntrain, x))) goto done;
    double t_train = sp_now() - t0;
    if ((st = rt_index_add(ix, n, x))) goto done;
    size_t mem = rss_bytes() - m0;
    printf("%-28s build %7.1f s (train on %ld: %.1f s)  memory +%.0f MiB (%.0f B/vector)\n", factory, sp_now() - t0,
           ntrain, t_train, (double)mem / (1 << 20), (double)mem / n);
    free(x);
    x = NULL;
    const char *pname = strstr(factory, "HNSW") ? "efSearch" : "nprobe";
    const char *sweep = o->nprobe ? o->nprobe : (strstr(factory, "HNSW") ? "16,32,64,128" : "1,4,16,64");
    char buf[256];
    snprintf(buf, sizeof buf, "%s", sweep);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (strstr(factory, "IVF") || strstr(factory, "HNSW"))
            if ((st = rt_index_set_param(ix, pname, atof(tok)))) goto done;
        if ((st = rt_index_search(ix, nq, q, k, as, ai))) goto done;
        long hit1 = 0, hit10 = 0;
        for (long i = 0; i < nq; i++) {
            hit1 += ai[i * k] == gt[i * k];
            for (int a = 0; a < k; a++)
                for (int b = 0; b < k; b++)
                    if (ai[i * k + a] == gt[i * k + b] && ai[i * k + a] >= 0) {
                        hit10++;
                        break;
                    }
        }
        char label[64];
        snprintf(label, sizeof label, "%s %s=%s", factory, pname, tok);
        printf("%-28s recall@1 %.4f  recall@10 %.4f\n", label, (double)hit1 / nq, (double)hit10 / (nq * k));
        const long nq_time = nq < 256 ? nq : 256;
        if ((st = time_search(label, ix_search_fn, ix, nq_time, d, q, k, 1))) goto done;
        if ((st = time_search(label, ix_search_fn, ix, nq_time, d, q, k, 8))) goto done;
    }
    printf("(recall@1: share of queries whose first result is the exact first; recall@10: share of the exact\n"
           " top 10 found in the approximate top 10. Latency: wall time per search call.)\n");
    rc = 0;
done:
    if (rc) fail("bench-synthetic");
    rt_index_free(exact);
    rt_index_free(ix);
    free(x);
    free(q);
    free(centres);
    free(gt);
    free(gts);
    free(ai);
    free(as);
    return rc;
}

/* ---- descriptor measurement ---- */

/* A cheap fill without a network (--fill pushpull): push-pull over a mask-weighted pyramid (each hole pixel takes
 * the average of the known pixels at the finest scale that has any), then a few Jacobi passes of
 * the Laplace equation inside the hole at every scale. img (3,s,s), keep (s,s) 1 = known. */
static void fill_pushpull(int s, const float *img, const float *keep, float *out) {
    if (s == 1) {
        for (int c = 0; c < 3; c++) out[c] = keep[0] > 0 ? img[c] : 0.5f;
        return;
    }
    const int h = (s + 1) / 2;
    float *ci = calloc((size_t)3 * h * h, sizeof *ci), *ck = calloc((size_t)h * h, sizeof *ck),
          *co = malloc((size_t)3 * h * h * sizeof *co);
    for (int y = 0; y < s; y++)
        for (int x = 0; x < s; x++) {
            float w = keep[y * s + x];
            int j = (y / 2) * h + x / 2;
            ck[j] += w;
            for (int c = 0; c < 3; c++) ci[c * h * h + j] += w * img[c * s * s + y * s + x];
        }
    for (int j = 0; j < h * h; j++) {
        for (int c = 0; c < 3; c++) ci[c * h * h + j] = ck[j] > 0 ? ci[c * h * h + j] / ck[j] : 0;
        ck[j] = ck[j] > 0;
    }
    fill_pushpull(h, ci, ck, co);
    for (int y = 0; y < s; y++)
        for (int x = 0; x < s; x++)
            for (int c = 0; c < 3; c++) {
                size_t i = (size_t)c * s * s + y * s + x;
                out[i] = keep[y * s + x] > 0 ? img[i] : co[c * h * h + (y / 2) * h + x / 2];
            }
    for (int it = 0; it < 4; it++)
        for (int y = 0; y < s; y++)
            for (int x = 0; x < s; x++) {
                if (keep[y * s + x] > 0) continue;
                for (int c = 0; c < 3; c++) {
                    const float *p = out + (size_t)c * s * s;
                    float a = 0;
                    int m = 0;
                    if (y > 0) a += p[(y - 1) * s + x], m++;
                    if (y + 1 < s) a += p[(y + 1) * s + x], m++;
                    if (x > 0) a += p[y * s + x - 1], m++;
                    if (x + 1 < s) a += p[y * s + x + 1], m++;
                    out[(size_t)c * s * s + y * s + x] = a / m;
                }
            }
    free(ci);
    free(ck);
    free(co);
}

/* Mask file -> keep (s,s): 0 in the hole of the mask scaled to s x s (img_hole_map_scaled: white,
 * luminance > 127, is the hole), 1 elsewhere. */
static sp_status load_mask(const char *path, int s, float *keep) {
    img_u8 im = {0};
    uint8_t *hole = malloc((size_t)s * s);
    sp_status st = hole ? img_load(path, IDX_MAX_PIXELS, &im) : sp_err(SP_ERR_NOMEM, "mask %s", path);
    if (st == SP_OK) st = img_hole_map_scaled(&im, s, s, hole, NULL);
    if (st == SP_OK)
        for (int i = 0; i < s * s; i++) keep[i] = hole[i] ? 0.0f : 1.0f;
    img_free(&im);
    free(hole);
    return st;
}

static void evald_usage(FILE *f) {
    fprintf(f,
            "usage: semipaint index eval-descriptors (--db DB | --model NAME [-c FILE]) --queries DIR --masks DIR\n"
            "                                        [options]\n"
            "For each descriptor: the share of queries whose top-1 neighbour found from the filled masked\n"
            "image equals the top-1 found from the ground truth, and the mean hole-region L1 of the\n"
            "neighbours (found from the fill, from the ground truth, and a random one) to the ground truth.\n\n"
            "  --db DB              the database (its stored images are the candidates)\n"
            "  --model NAME         instead of --db: the database of that model family of the configuration\n"
            "                       (and its descriptor_weights as --weights)\n"
            "  -c, --config FILE    the configuration --model reads [" CLI_DEFAULT_CONFIG "]\n"
            "  --queries DIR        query images (e.g. celebahq256/val), scaled to DB's image size\n"
            "  --masks DIR          hole masks (white = hole); query i gets mask i*M/N of the sorted M\n"
            "  --descriptors LIST   comma-separated [thumb8,thumb16,thumb16_zm,thumb32]\n"
            "  --coarse FILE        pconv_unet weights: the fill is the coarse network's, composited\n"
            "  --fill METHOD        without --coarse: telea (fast marching, radius 5) or pushpull [telea]\n"
            "  --weights FILE       vgg16_features weights (for vgg16_features:* in LIST)\n"
            "  --limit N            first N queries\n"
            "  --device D, --threads N, --seed N\n");
}

/* index eval-descriptors, its options parsed. */
static int run_eval_descriptors(const evald_opts *o) {
    if (!o->db || !o->queries || !o->masks) {
        fprintf(stderr, "semipaint index eval-descriptors: --db, --queries and --masks are required\n\n");
        evald_usage(stderr);
        return 2;
    }
    idx_models m = {0};
    rt_db *db = NULL;
    char **qf = NULL, **mf = NULL;
    long nqf = 0, nmf = 0;
    float *gt = NULL, *keep = NULL, *fill = NULL, *dbdesc = NULL, *qd = NULL, *fd = NULL, *nb = NULL;
    uint8_t *tmp = NULL;
    rt_index *ix = NULL;
    int64_t *rid = NULL;
    int rc = 1;
    sp_status st;
    if ((st = rt_db_open(o->db, NULL, 0, &db))) goto done;
    /* Queries, masks and fills at the database's own image size. */
    const int s = rt_db_size(db);
    const size_t plane = (size_t)s * s, img = 3 * plane;
    const long count = rt_db_count(db);
    if ((st = cli_list_images(o->queries, &qf, &nqf))) goto done;
    if ((st = cli_list_images(o->masks, &mf, &nmf))) goto done;
    const long nq = o->limit && nqf > o->limit ? o->limit : nqf;
    if (nq == 0 || nmf == 0 || count == 0) {
        st = sp_err(SP_ERR_INVALID, "need queries (%ld), masks (%ld) and database images (%ld)", nq, nmf, count);
        goto done;
    }
    gt = malloc(nq * img * sizeof *gt);
    fill = malloc(nq * img * sizeof *fill);
    keep = malloc(nq * plane * sizeof *keep);
    tmp = malloc(img);
    nb = malloc(img * sizeof *nb);
    rid = malloc(nq * sizeof *rid);
    if (!gt || !fill || !keep || !tmp || !nb || !rid) {
        st = sp_err(SP_ERR_NOMEM, "%ld queries", nq);
        goto done;
    }
    /* Queries, masks, fills. */
    double t0 = sp_now(), hole = 0;
    for (long i = 0; i < nq; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", o->queries, qf[i]);
        if ((st = load_square(p, s, tmp, gt + i * img))) goto done;
        snprintf(p, sizeof p, "%s/%s", o->masks, mf[i * nmf / nq]);
        if ((st = load_mask(p, s, keep + i * plane))) goto done;
        for (size_t j = 0; j < plane; j++) hole += 1 - keep[i * plane + j];
    }
    const char *fill_name = o->coarse ? o->coarse : o->fill ? o->fill : "telea";
    if (!o->coarse && strcmp(fill_name, "telea") && strcmp(fill_name, "pushpull")) {
        st = sp_err(SP_ERR_INVALID, "--fill %s: expected telea or pushpull", fill_name);
        goto done;
    }
    if (o->coarse) {
        if ((st = models_init(&m, &o->net, o->coarse, "--coarse"))) goto done;
        for (long i = 0; i < nq; i += 8) {
            int n = (int)(nq - i < 8 ? nq - i : 8);
            if ((st = nn_unet_forward(m.cm.coarse, n, s, s, gt + i * img, keep + i * plane, fill + i * img)))
                goto done;
            for (int j = 0; j < n; j++)
                for (size_t t = 0; t < img; t++) {
                    float v = fill[(i + j) * img + t];
                    fill[(i + j) * img + t] = v < 0 ? 0 : v > 1 ? 1 : v;
                }
        }
        nn_composite((int)nq, 3, s, s, gt, fill, keep, fill);
    } else if (!strcmp(fill_name, "pushpull")) {
#pragma omp parallel for schedule(dynamic)
        for (long i = 0; i < nq; i++) fill_pushpull(s, gt + i * img, keep + i * plane, fill + i * img);
    } else {
        int bad = 0;
#pragma omp parallel for schedule(dynamic) reduction(+ : bad)
        for (long i = 0; i < nq; i++) {
            img_u8 im = {0};
            uint8_t *hole = malloc(plane);
            if (!hole || img_alloc(&im, s, s, 3) != SP_OK) {
                bad++;
            } else {
                img_from_chw(gt + i * img, &im);
                for (size_t j = 0; j < plane; j++) hole[j] = keep[i * plane + j] == 0;
                if (telea_inpaint(&im, hole, TELEA_DEFAULT_RADIUS) != SP_OK) bad++;
                else img_to_chw(&im, fill + i * img);
            }
            img_free(&im);
            free(hole);
        }
        if (bad) {
            st = sp_err(SP_ERR_INVALID, "telea fill failed on %d queries (e.g. a mask that is all hole)", bad);
            goto done;
        }
    }
    /* How good is the fill itself (hole L1 to the ground truth)? */
    double fill_l1 = 0;
    for (long i = 0; i < nq; i++)
        for (size_t j = 0; j < plane; j++)
            if (keep[i * plane + j] == 0)
                for (int c = 0; c < 3; c++) fill_l1 += fabsf(fill[i * img + c * plane + j] - gt[i * img + c * plane + j]);
    const double holepx = hole > 0 ? hole : 1;
    printf("database %s: %ld images; %ld queries from %s; masks from %s (mean hole %.1f%%)\n", o->db, count, nq,
           o->queries, o->masks, 100 * hole / (nq * plane));
    printf("fill: %s, hole L1 of the fill itself %.4f; prepared in %.1f s\n\n", fill_name, fill_l1 / (3 * holepx),
           sp_now() - t0);
    uint64_t r = (uint64_t)o->seed * 0x9E3779B97F4A7C15ull | 1;
    for (long i = 0; i < nq; i++) rid[i] = (int64_t)(rng_next(&r) % (uint64_t)count);

    printf("| descriptor | dim | top-1 agreement (fill vs truth) | hole L1, neighbour from fill | from truth | random "
           "| descriptor ms/image |\n|---|---|---|---|---|---|---|\n");
    char list[512];
    snprintf(list, sizeof list, "%s", o->descs ? o->descs : "thumb8,thumb16,thumb16_zm,thumb32");
    char *save = NULL;
    for (char *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        if ((st = models_descriptor(&m, &o->net, name))) goto done;
        const int dim = rt_descriptor_dim(m.cm.desc);
        const int bs = 16;
        free(dbdesc);
        free(qd);
        free(fd);
        dbdesc = malloc((size_t)count * dim * sizeof *dbdesc);
        qd = malloc((size_t)nq * dim * sizeof *qd);
        fd = malloc((size_t)nq * dim * sizeof *fd);
        float *batch = malloc(bs * img * sizeof *batch);
        if (!dbdesc || !qd || !fd || !batch) {
            free(batch);
            st = sp_err(SP_ERR_NOMEM, "descriptors of %ld images", count);
            goto done;
        }
        sp_progress pr;
        sp_progress_init(&pr, name, count);
        double td = 0;
        for (long i = 0; i < count && st == SP_OK; i += bs) {
            int n = (int)(count - i < bs ? count - i : bs);
            for (int j = 0; j < n && st == SP_OK; j++) st = rt_db_image(db, i + j, batch + j * img);
            double a = sp_now();
            if (st == SP_OK) st = rt_descriptor_compute(m.cm.desc, n, s, batch, dbdesc + (size_t)i * dim);
            td += sp_now() - a;
            sp_progress_update(&pr, i + n);
        }
        sp_progress_finish(&pr);
        free(batch);
        if (st) goto done;
        for (long i = 0; i < nq && st == SP_OK; i += bs) {
            int n = (int)(nq - i < bs ? nq - i : bs);
            st = rt_descriptor_compute(m.cm.desc, n, s, gt + i * img, qd + (size_t)i * dim);
            if (st == SP_OK) st = rt_descriptor_compute(m.cm.desc, n, s, fill + i * img, fd + (size_t)i * dim);
        }
        if (st) goto done;
        rt_index_free(ix);
        ix = NULL;
        if ((st = rt_index_new("Flat", dim, &ix))) goto done;
        if ((st = rt_index_add(ix, count, dbdesc))) goto done;
        int64_t *ig = malloc(nq * sizeof *ig), *ifl = malloc(nq * sizeof *ifl);
        float *sg = malloc(nq * sizeof *sg), *sf = malloc(nq * sizeof *sf);
        if (!ig || !ifl || !sg || !sf) st = sp_err(SP_ERR_NOMEM, "search");
        if (st == SP_OK) st = rt_index_search(ix, nq, qd, 1, sg, ig);
        if (st == SP_OK) st = rt_index_search(ix, nq, fd, 1, sf, ifl);
        long agree = 0;
        double l1f = 0, l1g = 0, l1r = 0;
        for (long i = 0; i < nq && st == SP_OK; i++) {
            agree += ig[i] == ifl[i];
            const int64_t which[3] = {ifl[i], ig[i], rid[i]};
            double *acc[3] = {&l1f, &l1g, &l1r};
            for (int w = 0; w < 3 && st == SP_OK; w++) {
                if ((st = rt_db_image(db, which[w], nb))) break;
                double a = 0;
                for (size_t j = 0; j < plane; j++)
                    if (keep[i * plane + j] == 0)
                        for (int c = 0; c < 3; c++) a += fabsf(nb[c * plane + j] - gt[i * img + c * plane + j]);
                *acc[w] += a;
            }
        }
        free(ig);
        free(ifl);
        free(sg);
        free(sf);
        if (st) goto done;
        printf("| %s | %d | %.3f | %.4f | %.4f | %.4f | %.3f |\n", name, dim, (double)agree / nq, l1f / (3 * holepx),
               l1g / (3 * holepx), l1r / (3 * holepx), td * 1e3 / count);
        fflush(stdout);
    }
    printf("\n(hole L1: mean absolute difference over hole pixels and channels, images in [0,1].)\n");
    rc = 0;
done:
    if (rc) fail("eval-descriptors");
    rt_index_free(ix);
    rt_db_close(db);
    models_free(&m);
    cli_free_names(qf, nqf);
    cli_free_names(mf, nmf);
    free(gt);
    free(keep);
    free(fill);
    free(dbdesc);
    free(qd);
    free(fd);
    free(nb);
    free(tmp);
    free(rid);
    return rc;
}

/* ---- dispatch: each subcommand parses its own options ---- */

/* index build --model: the family's working size (its coarse net's), checked against --size, and
 * its descriptor, checked against --descriptor, into `o`. Returns -1 to go on, else the exit
 * status after printing why. */
static int build_family(const cli_spec *spec, idx_family *fam, const char *db, build_opts *o) {
    const cfg_family *f = &fam->fam.f;
    char kc[96], kd[96], why[2400], dwhy[1200];
    cli_family_key(&fam->fam, "coarse", kc, sizeof kc);
    cli_family_key(&fam->fam, "descriptor", kd, sizeof kd);
    if (!f->coarse[0]) {
        fprintf(stderr, "%s: --model %s: %s is empty in %s: the family has no working size\n", spec->cmd, f->name, kc,
                fam->fam.config);
        return 1;
    }
    idx_models m = {0};
    sp_status st = models_init(&m, &o->net, f->coarse, kc); /* the working size is the nets' own */
    const int s = m.cm.s;
    models_free(&m);
    if (st) return fail("build");
    if (o->size && o->size != s) {
        snprintf(why, sizeof why, "--size %d, but --model %s's nets work at %d (%s %s): its database must be %dx%d",
                 o->size, f->name, s, kc, f->coarse, s, s);
        return usage_fail(spec, why);
    }
    o->size = s;
    if (f->descriptor[0] && strcmp(f->descriptor, "auto")) {
        if (o->descriptor && strcmp(o->descriptor, f->descriptor)) {
            snprintf(why, sizeof why, "--descriptor %s differs from --model %s's %s %s", o->descriptor, f->name, kd,
                     f->descriptor);
            return usage_fail(spec, why);
        }
        o->descriptor = f->descriptor;
        snprintf(dwhy, sizeof dwhy, "%s", kd);
    } else if (o->descriptor) {
        snprintf(dwhy, sizeof dwhy, "--descriptor; %s is auto", kd);
    } else if (rt_db_peek_descriptor(db, fam->descriptor, sizeof fam->descriptor) == SP_OK) {
        o->descriptor = fam->descriptor; /* auto: the one the database was built with, kept */
        snprintf(dwhy, sizeof dwhy, "%s auto: the one %s was built with", kd, db);
    } else {
        snprintf(dwhy, sizeof dwhy, "%s auto and no database yet: the default", kd);
    }
    o->out = db;
    fprintf(stderr, "%s: model family %s: %dx%d (%s's working size), descriptor %s (%s)\n", spec->cmd, f->name, s, s,
            kc, o->descriptor ? o->descriptor : IDX_DEFAULT_DESC, dwhy);
    return -1;
}

static int sub_build(int argc, char **argv) {
    build_opts o = {.batch = 32, .lock_wait = -1};
    const cli_spec spec = {"semipaint index build", build_table, NOPTS(build_table), 0, 0, build_usage};
    int rc = cli_parse(&spec, argc, argv, &o, NULL, NULL);
    if (rc >= 0) return rc;
    if (o.fam.model && !o.images) return usage_fail(&spec, "--images is required");
    idx_family fam;
    const char *db = NULL;
    if ((rc = family_db(&spec, &o.fam, o.out, "--out", &o.net, &fam, &db)) >= 0) return rc;
    if (o.fam.model && (rc = build_family(&spec, &fam, db, &o)) >= 0) return rc;
    return run_build(&o);
}

static int sub_info(int argc, char **argv) {
    info_opts o = {{0}};
    const cli_spec spec = {"semipaint index info", info_table, NOPTS(info_table), 0, 1, info_usage};
    const char *pos[1];
    int npos, rc = cli_parse(&spec, argc, argv, &o, pos, &npos);
    if (rc >= 0) return rc;
    idx_family fam;
    const char *db = npos ? pos[0] : NULL;
    if ((rc = family_db(&spec, &o.fam, db, "DB", NULL, &fam, &db)) >= 0) return rc;
    if (!db) return usage_fail(&spec, "missing arguments");
    return run_info(db);
}

static int sub_query(int argc, char **argv) {
    db_opts o = {.k = 5, .lock_wait = -1};
    const cli_spec spec = {"semipaint index query", query_table, NOPTS(query_table), 1, 2, query_usage};
    const char *pos[2];
    int npos, rc = cli_parse(&spec, argc, argv, &o, pos, &npos);
    if (rc >= 0) return rc;
    idx_family fam;
    const char *db = npos == 2 ? pos[0] : NULL, *image = pos[npos - 1];
    if ((rc = family_db(&spec, &o.fam, db, "DB", &o.net, &fam, &db)) >= 0) return rc;
    if (!db) return usage_fail(&spec, "too few arguments");
    if (o.fam.model) family_db_opts(&fam, &o);
    const char *args[2] = {db, image};
    return run_query(&o, args);
}

/* 1 when `path` is a folder (a database, never an image). */
static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int sub_add(int argc, char **argv) {
    db_opts o = {.k = 5, .lock_wait = -1};
    const cli_spec spec = {"semipaint index add", add_table, NOPTS(add_table), 1, IDX_MAX_POS, add_usage};
    static const char *pos[IDX_MAX_POS + 1];
    int npos, rc = cli_parse(&spec, argc, argv, &o, pos + 1, &npos);
    if (rc >= 0) return rc;
    /* pos[1..npos] as given; with --model they are all images, and a folder among them is the
     * database given as well */
    idx_family fam;
    const char *db = !o.fam.model ? (npos >= 2 ? pos[1] : NULL) : is_dir(pos[1]) ? pos[1] : NULL;
    if ((rc = family_db(&spec, &o.fam, db, "DB", &o.net, &fam, &db)) >= 0) return rc;
    if (!db) return usage_fail(&spec, "too few arguments");
    if (!o.fam.model) return run_add(&o, pos + 1, npos);
    family_db_opts(&fam, &o);
    pos[0] = db;
    return run_add(&o, pos, npos + 1);
}

static int sub_bench(int argc, char **argv) {
    db_opts o = {.k = 5, .nq = 1000, .seed = 1, .lock_wait = -1};
    const cli_spec spec = {"semipaint index bench", bench_table, NOPTS(bench_table), 0, 1, bench_usage};
    const char *pos[1];
    int npos, rc = cli_parse(&spec, argc, argv, &o, pos, &npos);
    if (rc >= 0) return rc;
    idx_family fam;
    const char *db = npos ? pos[0] : NULL;
    if ((rc = family_db(&spec, &o.fam, db, "DB", &o.net, &fam, &db)) >= 0) return rc;
    if (!db) return usage_fail(&spec, "missing arguments");
    if (o.fam.model) family_db_opts(&fam, &o);
    return run_bench_db(&o, db);
}

static int sub_bench_synthetic(int argc, char **argv) {
    synth_opts o = {.n = 1000000, .nq = 1000, .dim = 512, .clusters = -1 /* n / 100 */, .train = 65536, .seed = 1,
                    .spread = 1.5};
    const cli_spec spec = {"semipaint index bench-synthetic", synth_table, NOPTS(synth_table), 0, 0, synth_usage};
    int rc = cli_parse(&spec, argc, argv, &o, NULL, NULL);
    return rc >= 0 ? rc : run_bench_synthetic(&o);
}

static int sub_eval_descriptors(int argc, char **argv) {
    evald_opts o = {.seed = 1};
    const cli_spec spec = {"semipaint index eval-descriptors", evald_table, NOPTS(evald_table), 0, 0, evald_usage};
    int rc = cli_parse(&spec, argc, argv, &o, NULL, NULL);
    if (rc >= 0) return rc;
    idx_family fam;
    if ((rc = family_db(&spec, &o.fam, o.db, "--db", &o.net, &fam, &o.db)) >= 0) return rc;
    return run_eval_descriptors(&o);
}

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
} subcommands[] = {
    {"build", sub_build}, {"info", sub_info}, {"query", sub_query}, {"add", sub_add}, {"bench", sub_bench},
    {"bench-synthetic", sub_bench_synthetic}, {"eval-descriptors", sub_eval_descriptors},
};

static void index_usage(FILE *f) {
    fprintf(f, "usage: semipaint index SUBCOMMAND ...\n\n"
               "  build --images DIR --out DB [--size S] [--descriptor NAME] [--weights VGG] [--factory F] [--batch N]\n"
               "        [--limit N] [--device D] [--threads N] [--force] [--lock-wait S]\n"
               "  build --images DIR --model NAME [-c FILE] [...]  a model family's database, at its working size\n"
               "  info DB                             manifest, count, descriptor and index of a database\n"
               "  query DB IMAGE [-k N]               the k nearest database images (id, cosine, source name)\n"
               "  add DB IMAGE... [--lock-wait S]     append images durably (all or none)\n"
               "  bench DB [--nq N] [-k K]            search latency at batch 1 and 8 over the database\n"
               "  bench-synthetic [--n N] [--dim D] [--factory F] [--nprobe LIST] [--nq N] [--clusters C (N/100)]\n"
               "                  [--spread S (1.5)] [--train N (65536)] [--seed N]\n"
               "                                      build time, memory, latency and recall on synthetic vectors\n"
               "  eval-descriptors --db DB --queries DIR --masks DIR [--descriptors LIST] [--coarse PCONV]\n"
               "                                      measure descriptors for retrieval from masked images\n\n"
               "build, info, query, add, bench and eval-descriptors take --model NAME [-c FILE] instead of the\n"
               "database: that of the configuration's model family NAME [" CLI_DEFAULT_CONFIG "].\n"
               "descriptors: %s\n'semipaint index SUBCOMMAND --help' describes a subcommand and its options.\n",
            rt_descriptor_names());
}

int cmd_index(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        index_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* long benchmarks: show each line as it comes */
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        if (!strcmp(argv[1], subcommands[i].name)) return subcommands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "semipaint index: unknown subcommand '%s'\n\n", argv[1]);
    index_usage(stderr);
    return 2;
}
