/* cmd_eval.c: `semipaint eval`: the paper's Table 1 (L1, PSNR, SSIM per hole-ratio bucket) for telea, coarse, Sim-0 and Sim-K, its Figure 1 grid and the section 5.6 neighbour check. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/config.h"
#include "core/models.h"
#include "imaging/img.h"
#include "imaging/plan.h"
#include "model/nn.h"
#include "retrieval/rt.h"
#include "imaging/telea.h"

#define EV_MAX_PIXELS (64L << 20)
#define EV_NBUCKETS 6      /* [0.01,0.1], (0.1,0.2], ..., (0.5,0.6] */
#define EV_PSNR_CAP 100.0  /* PSNR of an image equal to the original */
#define EV_MAX_FILES 1000000
#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* The columns of the tables: telea, coarse, sim0, simK, and the section 5.6 variants of simK (the
 * true image as its own reference, a random database image, noise). */
enum { M_TELEA = 0, M_COARSE, M_SIM0, M_SIMK, M_SIMK_TRUE, M_SIMK_RANDOM, M_SIMK_NOISE, M_COUNT };
static const char *const method_key[M_COUNT] = {"telea", "coarse", "sim0", "sim1", "sim1-true", "sim1-random",
                                                "sim1-noise"};
enum { Q_L1 = 0, Q_PSNR, Q_SSIM, Q_HOLE_L1, Q_COUNT };

typedef struct {
    const char *images, *masks, *out, *coarse, *sim0, *simk, *db, *desc_weights, *methods, *title;
    const char *model, *config; /* --model NAME of the configuration -c FILE: its weights and database */
    int per_image, limit, grid_rows, batch, threads, radius, blend;
    uint64_t seed;
} ev_opts;

typedef struct {
    long n;
    double sum[Q_COUNT], sumsq[Q_COUNT];
} ev_acc;

typedef struct {
    char **v;
    long n;
} ev_list;

static void ev_usage(FILE *f) {
    fprintf(f,
            "usage: semipaint eval --images DIR --masks DIR --out DIR [options]\n"
            "The paper's Table 1 (Iskakov 2018): L1 (%%), PSNR and SSIM of the composited image against the\n"
            "original, per hole-ratio bucket [0.01,0.1], (0.1,0.2], ..., (0.5,0.6], mean +- std, for telea,\n"
            "coarse (PConv), Sim-0 and Sim-K; the L1 over hole pixels by their distance to the nearest\n"
            "known pixel; a Figure 1 grid (original, masked, each method, the retrieved image); and the\n"
            "section 5.6 check (Sim-K with its retrieved neighbour, the true image as its own reference -\n"
            "an upper bound of what a caller-supplied reference is worth -, a random database image, noise).\n"
            "Writes DIR/report.md, DIR/grid.png and DIR/samples.csv.\n\n"
            "  --images DIR         evaluation images (JPEG/PNG, sorted by name; centre-cropped and scaled\n"
            "                       to the nets' size when they are not square at that size)\n"
            "  --masks DIR          hole masks (white = hole; scaled to the nets' size with area averaging,\n"
            "                       then luminance > 127 = hole); sample j of N*R gets mask j*M/(N*R) of the\n"
            "                       M sorted masks, so a folder sorted by hole ratio spreads over all buckets\n"
            "  --out DIR            report folder (created)\n"
            "  --model NAME         a model family of the configuration (model.family or the families\n"
            "                       section): its coarse, refine_fallback (sim0), refine (sim1) and\n"
            "                       database, unless the flags below name others\n"
            "  -c, --config FILE    the configuration --model reads [config/semipaintd.yaml]\n"
            "  --coarse FILE        pconv_unet weights [weights/pconv.safetensors]\n"
            "  --sim0 FILE          simk_unet k=0 weights [weights/sim0.safetensors]\n"
            "  --sim1 FILE          simk_unet k>=1 weights [weights/sim1.safetensors]\n"
            "  --db DIR             retrieval database for Sim-K (without it Sim-K is skipped)\n"
            "  --descriptor-weights FILE  vgg16_features weights, for a database with a VGG descriptor\n"
            "  --methods LIST       comma-separated of telea,coarse,sim0,sim1 [all four]\n"
            "  --masks-per-image R  masks per image [1]\n"
            "  --limit N            only the first N images [all]\n"
            "  --grid-rows N        rows of the Figure 1 grid [6]\n"
            "  --batch N            images per network call [8]\n"
            "  --threads N          CPU threads of the engine [2]\n"
            "  --radius N           telea radius [%d]\n"
            "  --blend on|off       apply each net's telea_blend (the border blend with Telea the server\n"
            "                       applies); off measures the networks alone [on]\n"
            "  --seed N             seed of the random neighbours and the noise [1]\n"
            "  --title TEXT         heading of the report\n",
            TELEA_DEFAULT_RADIUS);
}

/* ---- small helpers ---- */

/* Frees a list and empties it. */
static void list_free(ev_list *l) {
    for (long i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* The .jpg/.jpeg/.png files of `dir`, full paths, sorted by name; at least one. */
static sp_status list_images(const char *dir, ev_list *out) {
    char **names;
    long n;
    out->v = NULL;
    out->n = 0;
    sp_status st = cli_list_images(dir, &names, &n);
    if (st) return st;
    if (n == 0) st = sp_err(SP_ERR_INVALID, "%s: no .jpg, .jpeg, .png or .webp files", dir);
    else if (n > EV_MAX_FILES) st = sp_err(SP_ERR_LIMIT, "%s: more than %d images", dir, EV_MAX_FILES);
    else if (!(out->v = calloc((size_t)n, sizeof *out->v))) st = sp_err(SP_ERR_NOMEM, "file list of %s", dir);
    for (long i = 0; !st && i < n; i++) {
        size_t len = strlen(dir) + strlen(names[i]) + 2;
        if (!(out->v[i] = malloc(len))) {
            st = sp_err(SP_ERR_NOMEM, "file list of %s", dir);
            break;
        }
        snprintf(out->v[i], len, "%s/%s", dir, names[i]);
        out->n = i + 1;
    }
    cli_free_names(names, n);
    if (st) list_free(out);
    return st;
}

/* The next number of the splitmix64 stream whose state is *x. */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Loads an image as s x s RGB: as it is when it already is, else centre-cropped and scaled. */
static sp_status load_square(const char *path, int s, img_u8 *out) {
    img_u8 im = {0};
    sp_status st = img_load(path, EV_MAX_PIXELS, &im);
    if (st) return st;
    if (im.w == s && im.h == s && im.c == 3) {
        *out = im;
        return SP_OK;
    }
    st = img_square(&im, s, out);
    img_free(&im);
    return st ? sp_err_wrap(st, "%s", path) : SP_OK;
}

/* Loads a mask scaled to s x s (area averaging) into hole (s*s bytes, 1 = hole), the hole as the
 * daemon reads it (img_hole_map_scaled: luminance, times alpha, > 127). */
static sp_status load_mask(const char *path, int s, uint8_t *hole) {
    img_u8 im = {0};
    sp_status st = img_load(path, EV_MAX_PIXELS, &im);
    if (st == SP_OK) st = img_hole_map_scaled(&im, s, s, hole, NULL);
    img_free(&im);
    return st ? sp_err_wrap(st, "mask %s", path) : SP_OK;
}

/* ---- metrics ---- */

/* Bucket of a hole ratio: 0..5 for [0.01,0.1], (0.1,0.2], ..., (0.5,0.6]; -1 outside. */
static int bucket_of(double r) {
    if (r < 0.01 || r > 0.6) return -1;
    for (int b = 0; b < EV_NBUCKETS; b++)
        if (r <= 0.1 * (b + 1) + 1e-12) return b;
    return -1;
}

/* Separable 11-tap Gaussian (sigma 1.5) filter of a w x h plane, 'valid' part only:
 * out is (w-10) x (h-10). */
static void gauss_valid(const double *in, int w, int h, double *tmp, double *out) {
    static double g[11];
    static int ready;
    if (!ready) {
        double sum = 0;
        for (int i = 0; i < 11; i++) sum += g[i] = exp(-((i - 5) * (i - 5)) / (2 * 1.5 * 1.5));
        for (int i = 0; i < 11; i++) g[i] /= sum;
        ready = 1;
    }
    const int ow = w - 10, oh = h - 10;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < ow; x++) {
            double a = 0;
            for (int k = 0; k < 11; k++) a += g[k] * in[(size_t)y * w + x + k];
            tmp[(size_t)y * ow + x] = a;
        }
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            double a = 0;
            for (int k = 0; k < 11; k++) a += g[k] * tmp[(size_t)(y + k) * ow + x];
            out[(size_t)y * ow + x] = a;
        }
}

/* SSIM (Wang et al. 2004) of two s x s RGB byte images: Gaussian window 11x11, sigma 1.5,
 * K1 0.01, K2 0.03, L 255, population (co)variances, averaged over the positions whose window
 * lies inside the image and then over the three channels (scikit-image's structural_similarity
 * with gaussian_weights=True, use_sample_covariance=False, channel_axis=-1). `work` holds 8*s*s
 * doubles. */
static double ssim_rgb(const uint8_t *a, const uint8_t *b, int s, double *work) {
    const size_t n = (size_t)s * s;
    double *x = work, *y = x + n, *t = y + n, *mx = t + n, *my = mx + n, *sxx = my + n, *syy = sxx + n,
           *sxy = syy + n;
    const double c1 = (0.01 * 255) * (0.01 * 255), c2 = (0.03 * 255) * (0.03 * 255);
    const int o = s - 10;
    double total = 0;
    for (int c = 0; c < 3; c++) {
        for (size_t i = 0; i < n; i++) {
            x[i] = a[i * 3 + c];
            y[i] = b[i * 3 + c];
        }
        gauss_valid(x, s, s, t, mx);
        gauss_valid(y, s, s, t, my);
        for (size_t i = 0; i < n; i++) t[i] = x[i] * x[i];
        memcpy(sxx, t, n * sizeof *t);
        gauss_valid(sxx, s, s, t, sxx);
        for (size_t i = 0; i < n; i++) t[i] = y[i] * y[i];
        memcpy(syy, t, n * sizeof *t);
        gauss_valid(syy, s, s, t, syy);
        for (size_t i = 0; i < n; i++) t[i] = x[i] * y[i];
        memcpy(sxy, t, n * sizeof *t);
        gauss_valid(sxy, s, s, t, sxy);
        double sum = 0;
        for (size_t i = 0; i < (size_t)o * o; i++) {
            const double vx = sxx[i] - mx[i] * mx[i], vy = syy[i] - my[i] * my[i], cxy = sxy[i] - mx[i] * my[i];
            sum += ((2 * mx[i] * my[i] + c1) * (2 * cxy + c2)) /
                   ((mx[i] * mx[i] + my[i] * my[i] + c1) * (vx + vy + c2));
        }
        total += sum / ((double)o * o);
    }
    return total / 3;
}

/* Rings of hole pixels by their chessboard distance to the nearest known pixel: 1, 2, 3-4, 5-8,
 * 9-16, 17+ (a hole touching no known pixel at all is in the last ring). */
#define EV_NRINGS 6
static const char *const ring_name[EV_NRINGS] = {"1", "2", "3-4", "5-8", "9-16", "17+"};

/* Writes ring[i] (0..EV_NRINGS-1, 255 for a known pixel) of an s x s hole mask (1 = hole): the
 * chessboard distance by the two-pass chamfer transform (pixels outside the image count as hole). */
static void hole_rings(const uint8_t *hole, int s, int *dist, uint8_t *ring) {
    telea_hole_distance(hole, s, s, dist);
    for (int i = 0; i < s * s; i++) {
        int d = dist[i];
        ring[i] = d == 0 ? 255 : d == 1 ? 0 : d == 2 ? 1 : d <= 4 ? 2 : d <= 8 ? 3 : d <= 16 ? 4 : 5;
    }
}

/* L1 (% of 255), PSNR (dB, capped at EV_PSNR_CAP), SSIM and the L1 over hole pixels only; with
 * ring_err, also adds each hole pixel's absolute error (summed over RGB) to ring_err[its ring]. */
static void metrics(const uint8_t *out, const uint8_t *ref, const uint8_t *hole, const uint8_t *ring, int s,
                    double *work, double q[Q_COUNT], double ring_err[EV_NRINGS]) {
    const size_t n = (size_t)s * s;
    double l1 = 0, l2 = 0, hl1 = 0;
    long nh = 0;
    for (size_t i = 0; i < n; i++) {
        double h = 0;
        for (int c = 0; c < 3; c++) {
            const double d = (double)out[i * 3 + c] - ref[i * 3 + c];
            l1 += fabs(d);
            l2 += d * d;
            h += fabs(d);
        }
        if (hole[i]) {
            hl1 += h, nh++;
            if (ring_err) ring_err[ring[i]] += h;
        }
    }
    q[Q_L1] = 100.0 * l1 / (3.0 * n * 255.0);
    const double mse = l2 / (3.0 * n);
    q[Q_PSNR] = mse > 0 ? fmin(EV_PSNR_CAP, 10.0 * log10(255.0 * 255.0 / mse)) : EV_PSNR_CAP;
    q[Q_SSIM] = ssim_rgb(out, ref, s, work);
    q[Q_HOLE_L1] = nh ? 100.0 * hl1 / (3.0 * nh * 255.0) : 0;
}

/* Adds one sample's quantities to an accumulator. */
static void acc_add(ev_acc *a, const double q[Q_COUNT]) {
    a->n++;
    for (int i = 0; i < Q_COUNT; i++) {
        a->sum[i] += q[i];
        a->sumsq[i] += q[i] * q[i];
    }
}

/* Mean of quantity q; NaN without samples. */
static double acc_mean(const ev_acc *a, int q) { return a->n ? a->sum[q] / a->n : NAN; }

/* Sample standard deviation (n-1); 0 for a single sample. */
static double acc_std(const ev_acc *a, int q) {
    if (a->n < 2) return 0;
    double m = a->sum[q] / a->n, v = (a->sumsq[q] - a->n * m * m) / (a->n - 1);
    return v > 0 ? sqrt(v) : 0;
}

/* ---- the run ---- */

typedef struct {
    core_models cm;               /* backend, nets, descriptor (core/models.h) */
    nn_backend *be;               /* cm's, for short */
    nn_net *coarse, *sim0, *simk; /* cm's coarse, sim0 and refine */
    rt_db *db;
    rt_retriever retr;
    nn_retriever true_hook, random_hook, noise_hook; /* section 5.6: Sim-K fed the true image, a random
                                                      * image or noise */
    nn_pipeline *p0, *pk, *ptrue, *prandom, *pnoise;
    int k, s;
    uint64_t seed; /* --seed */
    long j0;       /* the first sample of the batch being run, for the section 5.6 hooks */
    const float *truth; /* the batch's original images (n,3,s,s), for the true-image hook */
} ev_models;

/* Frees what models_load loaded and zeroes `m`. */
static void models_free(ev_models *m) {
    nn_pipeline_free(m->pnoise);
    nn_pipeline_free(m->prandom);
    nn_pipeline_free(m->ptrue);
    nn_pipeline_free(m->pk);
    nn_pipeline_free(m->p0);
    rt_db_close(m->db);
    core_models_close(&m->cm);
    memset(m, 0, sizeof *m);
}

/* The section 5.6 retriever hooks: instead of the retrieved neighbours, K uniformly random
 * database images (ctx's noise = 0) or K images of uniform noise (1) per sample, drawn from a
 * stream seeded by --seed and the sample's number, so that every run gives the same. */
static sp_status fake_neighbours(ev_models *m, int noise, int n, int s, int64_t *ids, float *scores, float *nb) {
    const size_t isz = (size_t)3 * s * s;
    const int k = m->k;
    for (int i = 0; i < n; i++) {
        uint64_t rs = m->seed * 0x100000001B3ull + (uint64_t)(m->j0 + i) * 2 + (uint64_t)noise;
        for (int q = 0; q < k; q++) {
            float *dst = nb + ((size_t)i * k + q) * isz;
            scores[(size_t)i * k + q] = 0;
            if (!noise) {
                int64_t id = (int64_t)(splitmix64(&rs) % (uint64_t)rt_db_count(m->db));
                ids[(size_t)i * k + q] = id;
                sp_status st = rt_db_image(m->db, id, dst);
                if (st) return st;
            } else {
                ids[(size_t)i * k + q] = -1;
                for (size_t e = 0; e < isz; e++) dst[e] = (float)((splitmix64(&rs) >> 40) / 16777216.0);
            }
        }
    }
    return SP_OK;
}

/* The nn_retriever query of the random-image variant. */
static sp_status random_query(void *ctx, int n, int s, const float *comp, int64_t *ids, float *scores, float *nb,
                              double *dms, double *sms) {
    (void)comp;
    *dms = *sms = 0;
    return fake_neighbours(ctx, 0, n, s, ids, scores, nb);
}

/* The nn_retriever query of the true-image variant: each sample's own original (hole included) as
 * all K neighbours, id -1, score 1: what a perfect caller-supplied reference is worth. */
static sp_status true_query(void *ctx, int n, int s, const float *comp, int64_t *ids, float *scores, float *nb,
                            double *dms, double *sms) {
    (void)comp;
    ev_models *m = ctx;
    const size_t isz = (size_t)3 * s * s;
    *dms = *sms = 0;
    for (int i = 0; i < n; i++)
        for (int q = 0; q < m->k; q++) {
            memcpy(nb + ((size_t)i * m->k + q) * isz, m->truth + (size_t)i * isz, isz * sizeof(float));
            ids[(size_t)i * m->k + q] = -1;
            scores[(size_t)i * m->k + q] = 1;
        }
    return SP_OK;
}

/* The nn_retriever query of the noise variant. */
static sp_status noise_query(void *ctx, int n, int s, const float *comp, int64_t *ids, float *scores, float *nb,
                             double *dms, double *sms) {
    (void)comp;
    *dms = *sms = 0;
    return fake_neighbours(ctx, 1, n, s, ids, scores, nb);
}

/* Step 2: the backend and the networks the methods in want[] need (none for Telea alone: the
 * working size is then 256), and for Sim-K the database with its descriptor, assembled and
 * checked by core/models.h; the pipelines, each with --blend as the pipeline's blend option
 * (the service's code path): Sim-0's (coarse and sim0), Sim-K's and its section 5.6 variants'. */
static sp_status models_load(const ev_opts *o, const int want[M_COUNT], ev_models *m) {
    const int need_nets = want[M_COARSE] || want[M_SIM0] || want[M_SIMK];
    core_models_opts mo = {.device = NN_DEVICE_AUTO, .threads = o->threads, .backend_always = 1,
                           .coarse = need_nets ? o->coarse : NULL, .coarse_key = "--coarse",
                           .sim0 = need_nets ? o->sim0 : NULL, .sim0_key = "--sim0",
                           .refine = want[M_SIMK] ? o->simk : NULL, .refine_key = "--sim1",
                           .database = want[M_SIMK] ? o->db : NULL, .database_key = "--db",
                           .descriptor_weights = want[M_SIMK] ? o->desc_weights : NULL,
                           .descriptor_weights_key = "--descriptor-weights"};
    sp_status st = core_models_open(&mo, &m->cm);
    if (st) return st;
    m->be = m->cm.be;
    m->coarse = m->cm.coarse;
    m->sim0 = m->cm.sim0;
    m->simk = m->cm.refine;
    m->k = m->cm.k;
    m->seed = o->seed;
    m->s = need_nets ? m->cm.s : 256;
    if (!need_nets) return SP_OK;
    if ((st = core_models_pipeline(&m->cm, m->sim0, NULL, o->blend, &m->p0))) return st;
    if (!want[M_SIMK]) return SP_OK;
    if ((st = core_models_open_db(&m->cm, o->db, "--db", 0, &m->db))) return st;
    rt_retriever_init(&m->retr, m->db, m->cm.desc, m->k);
    m->true_hook = (nn_retriever){.k = m->k, .query = true_query, .ctx = m};
    m->random_hook = (nn_retriever){.k = m->k, .query = random_query, .ctx = m};
    m->noise_hook = (nn_retriever){.k = m->k, .query = noise_query, .ctx = m};
    if ((st = core_models_pipeline(&m->cm, m->simk, &m->retr.hook, o->blend, &m->pk))) return st;
    if ((st = core_models_pipeline(&m->cm, m->simk, &m->true_hook, o->blend, &m->ptrue))) return st;
    if ((st = core_models_pipeline(&m->cm, m->simk, &m->random_hook, o->blend, &m->prandom))) return st;
    return core_models_pipeline(&m->cm, m->simk, &m->noise_hook, o->blend, &m->pnoise);
}

/* One kept grid row: the images of every column. */
typedef struct {
    long sample;
    double ratio;
    img_u8 col[M_COUNT + 3]; /* original, masked, methods M_TELEA..M_SIMK, neighbour */
} ev_row;

/* A new s x s RGB image from planar floats (3,s,s) in [0,1]. */
static sp_status chw_to_img(const float *chw, int s, img_u8 *im) {
    sp_status st = img_alloc(im, s, s, 3);
    if (st == SP_OK) img_from_chw(chw, im);
    return st;
}

/* A new copy of `src`. */
static sp_status img_copy(const img_u8 *src, img_u8 *dst) {
    sp_status st = img_alloc(dst, src->w, src->h, src->c);
    if (st == SP_OK) memcpy(dst->px, src->px, (size_t)src->w * src->h * src->c);
    return st;
}

/* Writes a markdown table of quantity q: rows = methods, columns = buckets and "all". */
static void table(FILE *f, const char *title, int q, const int show[M_COUNT], ev_acc acc[M_COUNT][EV_NBUCKETS + 1],
                  int prec, int k) {
    static const char *const bname[EV_NBUCKETS + 1] = {"[0.01,0.1]", "(0.1,0.2]", "(0.2,0.3]", "(0.3,0.4]",
                                                       "(0.4,0.5]",  "(0.5,0.6]", "all"};
    fprintf(f, "\n**%s**\n\n| method |", title);
    for (int b = 0; b <= EV_NBUCKETS; b++) fprintf(f, " %s |", bname[b]);
    fprintf(f, "\n|---|");
    for (int b = 0; b <= EV_NBUCKETS; b++) fprintf(f, "---|");
    fprintf(f, "\n");
    for (int mth = 0; mth < M_COUNT; mth++) {
        if (!show[mth]) continue;
        char name[32];
        snprintf(name, sizeof name, "%s", method_key[mth]);
        if (mth >= M_SIMK && k != 1) {
            const char *rest = method_key[mth] + 4;
            snprintf(name, sizeof name, "sim%d%s", k, rest);
        }
        fprintf(f, "| %s |", name);
        for (int b = 0; b <= EV_NBUCKETS; b++) {
            if (!acc[mth][b].n)
                fprintf(f, " - |");
            else
                fprintf(f, " %.*f ± %.*f |", prec, acc_mean(&acc[mth][b], q), prec, acc_std(&acc[mth][b], q));
        }
        fprintf(f, "\n");
    }
}

/* Writes the Figure 1 grid to `path`: a row of s x s tiles per kept row, the columns cols_on[] selects. */
static sp_status write_grid(const char *path, ev_row *rows, int nrows, const int cols_on[M_COUNT + 3], int s) {
    int ncols = 0;
    for (int c = 0; c < M_COUNT + 3; c++) ncols += cols_on[c];
    img_u8 g = {0};
    sp_status st = img_alloc(&g, ncols * s, nrows * s, 3);
    if (st) return st;
    memset(g.px, 255, (size_t)g.w * g.h * 3);
    for (int r = 0; r < nrows; r++) {
        int x = 0;
        for (int c = 0; c < M_COUNT + 3; c++) {
            if (!cols_on[c]) continue;
            const img_u8 *t = &rows[r].col[c];
            if (t->px)
                for (int y = 0; y < s; y++)
                    memcpy(g.px + ((size_t)(r * s + y) * g.w + x * s) * 3, t->px + (size_t)y * s * 3, (size_t)s * 3);
            x++;
        }
    }
    st = img_save(&g, path, 90);
    img_free(&g);
    return st;
}

/* One evaluation run: the options, the models, the samples, the current batch and what is
 * accumulated over the batches. */
typedef struct {
    const ev_opts *o;
    int want[M_COUNT]; /* the methods run (Sim-K's variants with Sim-K) */
    ev_models m;
    ev_list imgs, masks;
    long nimg, total; /* images used; samples (nimg * masks per image) */
    int s, B, k;      /* working size, images per network call, Sim-K's K (0 without Sim-K) */
    size_t hw, isz;   /* s*s and 3*s*s */
    /* the current batch: samples j0 .. j0 + n - 1 */
    long j0;
    int n;
    double ratio[64]; /* hole ratio per sample of the batch (--batch is at most 64) */
    int bucket[64];   /* its bucket, -1 outside [0.01, 0.6] */
    img_u8 *orig;     /* (B) the images */
    float *x, *keep, *outf, *nb;
    uint8_t *hole, *ring;
    int *dist;
    double *work;
    int64_t *ids;
    float *scores;
    /* accumulated over the batches */
    ev_acc acc[M_COUNT][EV_NBUCKETS + 1];
    double ring_err[M_COUNT][EV_NRINGS];
    long ring_n[EV_NRINGS];
    double *l1_simk; /* (total) Sim-K's L1 per sample, for section 5.6 */
    long outside, better_than_random, nsim_cmp;
    double ms[M_COUNT];
    ev_row *rows; /* the Figure 1 grid's rows */
    int nrows;
    FILE *cf; /* samples.csv, in memory */
    char *csv;
    size_t csv_len;
} ev_run;

/* Step 1: the methods --methods names into want[] (Sim-K's section 5.6 variants follow Sim-K),
 * Sim-K dropped, with a note on stderr, without --db. Returns 0, or 2 after naming an unknown method. */
static int choose_methods(const ev_opts *o, int want[M_COUNT]) {
    char buf[256];
    memset(want, 0, M_COUNT * sizeof *want);
    snprintf(buf, sizeof buf, "%s", o->methods);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int found = 0;
        for (int mth = M_TELEA; mth <= M_SIMK; mth++)
            if (!strcmp(tok, method_key[mth])) want[mth] = found = 1;
        if (!found) {
            fprintf(stderr, "semipaint eval: unknown method '%s' (known: telea,coarse,sim0,sim1)\n", tok);
            return 2;
        }
    }
    if (want[M_SIMK] && !o->db) {
        fprintf(stderr, "semipaint eval: sim1 needs --db (a database made by `semipaint index build`); skipping it\n");
        want[M_SIMK] = 0;
    }
    want[M_SIMK_TRUE] = want[M_SIMK_RANDOM] = want[M_SIMK_NOISE] = want[M_SIMK];
    return 0;
}

/* Step 3: the images and masks (sorted), the number of samples they make, and the report folder.
 * Sample j is image j / R with mask j * M / (N * R) (sample_image, sample_mask). */
static sp_status list_samples(ev_run *r) {
    const ev_opts *o = r->o;
    sp_status st;
    if ((st = list_images(o->images, &r->imgs))) return st;
    if ((st = list_images(o->masks, &r->masks))) return st;
    r->nimg = o->limit > 0 && o->limit < r->imgs.n ? o->limit : r->imgs.n;
    r->total = r->nimg * o->per_image;
    return cli_make_dirs(o->out);
}

/* The image file of sample j. */
static const char *sample_image(const ev_run *r, long j) { return r->imgs.v[j / r->o->per_image]; }

/* The mask file of sample j: the masks spread evenly over the samples. */
static const char *sample_mask(const ev_run *r, long j) { return r->masks.v[(long)((double)j * r->masks.n / r->total)]; }

/* Step 4: the batch buffers, the grid's rows (spread evenly over the samples) and samples.csv's
 * header, for the working size and K of the loaded models. */
static sp_status alloc_run(ev_run *r) {
    const int s = r->m.s, B = r->o->batch, k = r->m.k;
    r->s = s, r->B = B, r->k = k;
    r->hw = (size_t)s * s, r->isz = 3 * r->hw;
    const size_t hw = r->hw, isz = r->isz;
    r->x = malloc((size_t)B * isz * sizeof *r->x);
    r->keep = malloc((size_t)B * hw * sizeof *r->keep);
    r->outf = malloc((size_t)B * isz * sizeof *r->outf);
    r->hole = malloc((size_t)B * hw);
    r->ring = malloc((size_t)B * hw);
    r->dist = malloc(hw * sizeof *r->dist);
    r->l1_simk = calloc(r->total, sizeof *r->l1_simk);
    r->orig = calloc(B, sizeof *r->orig);
    r->work = malloc(8 * hw * sizeof *r->work);
    r->ids = malloc((size_t)B * (k ? k : 1) * sizeof *r->ids);
    r->scores = malloc((size_t)B * (k ? k : 1) * sizeof *r->scores);
    r->nb = k ? malloc(isz * sizeof *r->nb) : NULL;
    r->nrows = r->o->grid_rows < r->total ? r->o->grid_rows : (int)r->total;
    r->rows = calloc(r->nrows > 0 ? r->nrows : 1, sizeof *r->rows);
    if (!r->x || !r->keep || !r->outf || !r->hole || !r->ring || !r->dist || !r->l1_simk || !r->orig || !r->work ||
        !r->ids || !r->scores || (k && !r->nb) || !r->rows)
        return sp_err(SP_ERR_NOMEM, "evaluation buffers for a batch of %d", B);
    for (int i = 0; i < r->nrows; i++) r->rows[i].sample = ((2L * i + 1) * r->total) / (2L * r->nrows);
    r->cf = open_memstream(&r->csv, &r->csv_len);
    if (!r->cf) return sp_err(SP_ERR_NOMEM, "csv buffer");
    fprintf(r->cf, "sample,image,mask,hole_ratio,bucket,method,l1_pct,psnr,ssim,hole_l1_pct,neighbour\n");
    return SP_OK;
}

/* Step 5: loads samples j0 .. j0 + n - 1: the images (orig, x), their holes and keep masks, hole
 * ratios and buckets, and the hole pixels' distance rings (counted for samples in a bucket). */
static sp_status load_batch(ev_run *r, long j0, int n) {
    const size_t hw = r->hw;
    sp_status st;
    r->j0 = j0;
    r->n = n;
    for (int i = 0; i < n; i++) {
        const long j = j0 + i;
        img_free(&r->orig[i]);
        if ((st = load_square(sample_image(r, j), r->s, &r->orig[i]))) return st;
        if ((st = load_mask(sample_mask(r, j), r->s, r->hole + i * hw))) return st;
        img_to_chw(&r->orig[i], r->x + i * r->isz);
        long nh = 0;
        for (size_t q = 0; q < hw; q++) {
            r->keep[i * hw + q] = r->hole[i * hw + q] ? 0.0f : 1.0f;
            nh += r->hole[i * hw + q];
        }
        r->ratio[i] = (double)nh / hw;
        r->bucket[i] = bucket_of(r->ratio[i]);
        if (r->bucket[i] < 0) r->outside++;
        hole_rings(r->hole + i * hw, r->s, r->dist, r->ring + i * hw);
        if (r->bucket[i] >= 0)
            for (size_t q = 0; q < hw; q++)
                if (r->ring[i * hw + q] < EV_NRINGS) r->ring_n[r->ring[i * hw + q]]++;
    }
    return SP_OK;
}

/* Step 6: runs network method `mth` on the batch into outf through its pipeline (composited, and
 * blended with Telea when --blend on: the pipeline's option), adding its time to ms[mth]. Telea
 * runs per sample in score_method. */
static sp_status run_method(ev_run *r, int mth) {
    ev_models *m = &r->m;
    if (mth == M_TELEA) return SP_OK;
    double t0 = sp_now();
    nn_pipeline *p = mth == M_COARSE || mth == M_SIM0 ? m->p0
                     : mth == M_SIMK                  ? m->pk
                     : mth == M_SIMK_TRUE             ? m->ptrue
                     : mth == M_SIMK_RANDOM           ? m->prandom
                                                      : m->pnoise;
    m->j0 = r->j0;
    m->truth = r->x;
    sp_status st = nn_pipeline_run(p, r->n, r->x, r->keep, mth == M_COARSE ? NN_METHOD_COARSE : NN_METHOD_SIM,
                                   r->outf, mth == M_SIMK ? r->ids : NULL, mth == M_SIMK ? r->scores : NULL, NULL);
    if (st) return st;
    r->ms[mth] += (sp_now() - t0) * 1e3;
    return SP_OK;
}

/* Step 7: scores method `mth` on each sample of the batch (Telea's fill made here, timed per
 * sample): the metrics into the bucket and ring accumulators, a samples.csv line, the section 5.6
 * comparison, and the result (and Sim-K's neighbour) into the grid row of the sample, if any. */
static sp_status score_method(ev_run *r, int mth) {
    const ev_opts *o = r->o;
    const size_t hw = r->hw;
    sp_status st;
    for (int i = 0; i < r->n; i++) {
        const long j = r->j0 + i;
        img_u8 om = {0};
        if (mth == M_TELEA) {
            double t1 = sp_now();
            if ((st = img_copy(&r->orig[i], &om))) return st;
            if ((st = telea_inpaint(&om, r->hole + i * hw, o->radius))) {
                img_free(&om);
                return st;
            }
            r->ms[mth] += (sp_now() - t1) * 1e3;
        } else if ((st = chw_to_img(r->outf + i * r->isz, r->s, &om))) {
            return st;
        }
        double q[Q_COUNT];
        metrics(om.px, r->orig[i].px, r->hole + i * hw, r->ring + i * hw, r->s, r->work, q,
                r->bucket[i] >= 0 ? r->ring_err[mth] : NULL);
        if (r->bucket[i] >= 0) {
            acc_add(&r->acc[mth][r->bucket[i]], q);
            acc_add(&r->acc[mth][EV_NBUCKETS], q);
        }
        fprintf(r->cf, "%ld,%s,%s,%.5f,%d,%s,%.5f,%.4f,%.5f,%.5f,", j, cli_base_name(sample_image(r, j)),
                cli_base_name(sample_mask(r, j)), r->ratio[i], r->bucket[i] + 1, method_key[mth], q[Q_L1], q[Q_PSNR],
                q[Q_SSIM], q[Q_HOLE_L1]);
        if (mth == M_SIMK)
            fprintf(r->cf, "%s\n", rt_db_source_name(r->m.db, r->ids[(size_t)i * r->k]));
        else
            fprintf(r->cf, "\n");
        /* Section 5.6: does the retrieved neighbour beat a random one on this sample? */
        if (mth == M_SIMK && r->bucket[i] >= 0) r->l1_simk[j] = q[Q_L1];
        if (mth == M_SIMK_RANDOM && r->bucket[i] >= 0) {
            r->nsim_cmp++;
            r->better_than_random += r->l1_simk[j] < q[Q_L1];
        }
        int kept = 0;
        for (int g = 0; g < r->nrows; g++)
            if (r->rows[g].sample == j && mth <= M_SIMK) {
                ev_row *row = &r->rows[g];
                row->ratio = r->ratio[i];
                img_free(&row->col[2 + mth]);
                row->col[2 + mth] = om;
                kept = 1;
                if (mth == M_SIMK) {
                    if ((st = rt_db_image(r->m.db, r->ids[(size_t)i * r->k], r->nb))) return st;
                    img_free(&row->col[M_COUNT + 2]);
                    if ((st = chw_to_img(r->nb, r->s, &row->col[M_COUNT + 2]))) return st;
                }
            }
        if (!kept) img_free(&om);
    }
    return SP_OK;
}

/* The grid rows' first two columns for the samples of the batch: the original and the masked
 * input (the hole in white). */
static sp_status keep_grid_inputs(ev_run *r) {
    sp_status st;
    for (int i = 0; i < r->n; i++)
        for (int g = 0; g < r->nrows; g++)
            if (r->rows[g].sample == r->j0 + i) {
                ev_row *row = &r->rows[g];
                img_free(&row->col[0]);
                img_free(&row->col[1]);
                if ((st = img_copy(&r->orig[i], &row->col[0])) || (st = img_copy(&r->orig[i], &row->col[1]))) return st;
                for (size_t q = 0; q < r->hw; q++)
                    if (r->hole[i * r->hw + q]) memset(row->col[1].px + q * 3, 255, 3);
            }
    return SP_OK;
}

/* Step 8a: DIR/grid.png (when it has rows) and DIR/samples.csv. */
static sp_status write_grid_and_csv(ev_run *r) {
    const int *want = r->want;
    int cols_on[M_COUNT + 3] = {0};
    cols_on[0] = cols_on[1] = 1;
    for (int mth = M_TELEA; mth <= M_SIMK; mth++) cols_on[2 + mth] = want[mth];
    cols_on[M_COUNT + 2] = want[M_SIMK];
    char path[4096];
    sp_status st;
    fclose(r->cf);
    r->cf = NULL;
    if (r->nrows > 0) {
        snprintf(path, sizeof path, "%s/grid.png", r->o->out);
        if ((st = write_grid(path, r->rows, r->nrows, cols_on, r->s))) return st;
    }
    snprintf(path, sizeof path, "%s/samples.csv", r->o->out);
    return sp_write_file_atomic(path, r->csv, r->csv_len);
}

/* Step 8b, the report's head: title, command, data, models, database, engine and how the numbers
 * are computed. */
static void report_head(FILE *mf, const ev_run *r, int argc, char **argv) {
    const ev_opts *o = r->o;
    const int s = r->s;
    time_t now = time(NULL);
    char when[64];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    fprintf(mf, "# %s\n\n", o->title ? o->title : "semipaint eval");
    fprintf(mf, "Command (%s):\n\n```\nsemipaint", when);
    for (int i = 0; i < argc; i++) fprintf(mf, " %s", argv[i]);
    fprintf(mf, "\n```\n\n");
    fprintf(mf, "- images: `%s` (%ld used), masks: `%s` (%ld), %d per image: %ld samples at %dx%d, %ld of them with a "
                "hole ratio outside [0.01, 0.6] (left out of the tables)\n",
            o->images, r->nimg, o->masks, r->masks.n, o->per_image, r->total, s, s, r->outside);
    const nn_net *nl[3] = {r->m.coarse, r->m.sim0, r->m.simk};
    for (int i = 0; i < 3; i++) {
        if (!nl[i]) continue;
        const nn_net_info *in = nn_net_get_info(nl[i]);
        fprintf(mf, "- `%s`: %s k=%d, %ld parameters, size %d, sha256 `%.16s…`; telea blend: %s; trained on: %s\n",
                in->path, in->arch_name, in->k, in->params, in->size, in->sha256,
                !in->blend_n ? "none" : o->blend ? "on" : "off (--blend off)",
                in->trained_on[0] ? in->trained_on : "?");
    }
    if (r->m.db)
        fprintf(mf, "- database `%s`: %ld images, descriptor %s\n", o->db, rt_db_count(r->m.db),
                rt_db_descriptor(r->m.db));
    fprintf(mf, "- engine: %s (%s); telea radius %d\n", nn_backend_name(r->m.be), nn_backend_device(r->m.be), o->radius);
    fprintf(mf,
            "\nEach number is computed over the whole composited %dx%d image (known pixels are the "
            "original's), 8-bit, as in the paper's Table 1: L1 in %% of 255, PSNR in dB (capped at %g), "
            "SSIM with an 11x11 Gaussian window (sigma 1.5) averaged over RGB; mean ± sample std per "
            "hole-ratio bucket. The inception score of the paper needs Inception weights that cannot be "
            "had here and is left out.\n",
            s, s, EV_PSNR_CAP);
}

/* Step 8c, Table 1: samples per bucket, L1, PSNR, SSIM and hole L1 per method and bucket, then the
 * hole L1 by distance ring. */
static void report_tables(FILE *mf, ev_run *r) {
    const int *want = r->want, k = r->k;
    fprintf(mf, "\nSamples per bucket:");
    const int first = want[M_TELEA] ? M_TELEA : want[M_COARSE] ? M_COARSE : want[M_SIM0] ? M_SIM0 : M_SIMK;
    for (int b = 0; b <= EV_NBUCKETS; b++) fprintf(mf, " %ld", r->acc[first][b].n);
    fprintf(mf, " (the last: all).\n");
    int show[M_COUNT];
    for (int i = 0; i < M_COUNT; i++) show[i] = want[i] && i <= M_SIMK;
    table(mf, "L1 (%), lower is better", Q_L1, show, r->acc, 2, k);
    table(mf, "PSNR (dB), higher is better", Q_PSNR, show, r->acc, 2, k);
    table(mf, "SSIM, higher is better", Q_SSIM, show, r->acc, 4, k);
    table(mf, "L1 over the hole pixels only (%), lower is better", Q_HOLE_L1, show, r->acc, 2, k);
    long nall = 0;
    for (int g = 0; g < EV_NRINGS; g++) nall += r->ring_n[g];
    fprintf(mf, "\n**L1 over the hole pixels (%%) by their distance to the nearest known pixel (chessboard, px), "
                "pooled over the hole pixels of all samples, lower is better**\n\n| method |");
    for (int g = 0; g < EV_NRINGS; g++) fprintf(mf, " %s |", ring_name[g]);
    fprintf(mf, "\n|---|");
    for (int g = 0; g < EV_NRINGS; g++) fprintf(mf, "---|");
    fprintf(mf, "\n| share of hole pixels (%%) |");
    for (int g = 0; g < EV_NRINGS; g++) fprintf(mf, " %.1f |", nall ? 100.0 * r->ring_n[g] / nall : 0.0);
    fprintf(mf, "\n");
    for (int mth = 0; mth <= M_SIMK; mth++) {
        if (!show[mth]) continue;
        if (mth == M_SIMK)
            fprintf(mf, "| sim%d |", k);
        else
            fprintf(mf, "| %s |", method_key[mth]);
        for (int g = 0; g < EV_NRINGS; g++) {
            if (r->ring_n[g])
                fprintf(mf, " %.2f |", 100.0 * r->ring_err[mth][g] / (3.0 * 255.0 * r->ring_n[g]));
            else
                fprintf(mf, " - |");
        }
        fprintf(mf, "\n");
    }
}

/* Step 8d, the rest of the report: section 5.6 (with Sim-K), time per image and the Figure 1 caption. */
static void report_tail(FILE *mf, ev_run *r) {
    const int *want = r->want, k = r->k;
    if (want[M_SIMK]) {
        int show56[M_COUNT] = {0};
        show56[M_SIMK] = show56[M_SIMK_TRUE] = show56[M_SIMK_RANDOM] = show56[M_SIMK_NOISE] = 1;
        fprintf(mf,
                "\n## Section 5.6: does Sim-%d use its neighbour?\n\nSim-%d fed with the retrieved neighbour "
                "(of the coarse composite), with the true image as its own reference (sim%d-true: an upper bound of what "
                "a caller-supplied reference is worth), with a uniformly random database image, and with uniform "
                "noise.\n",
                k, k, k);
        table(mf, "L1 (%)", Q_L1, show56, r->acc, 3, k);
        table(mf, "L1 over the hole pixels only (%)", Q_HOLE_L1, show56, r->acc, 3, k);
        table(mf, "PSNR (dB)", Q_PSNR, show56, r->acc, 3, k);
        table(mf, "SSIM", Q_SSIM, show56, r->acc, 4, k);
        if (r->nsim_cmp)
            fprintf(mf, "\nThe retrieved neighbour gives a lower L1 than the random image on %ld of %ld samples (%.1f%%).\n",
                    r->better_than_random, r->nsim_cmp, 100.0 * r->better_than_random / r->nsim_cmp);
    }
    fprintf(mf, "\n## Time per image\n\n| method | ms/image |\n|---|---|\n");
    for (int mth = 0; mth < M_COUNT; mth++)
        if (want[mth]) fprintf(mf, "| %s | %.1f |\n", method_key[mth], r->total ? r->ms[mth] / r->total : 0.0);
    if (want[M_COARSE] || want[M_SIM0] || want[M_SIMK])
        fprintf(mf, "\n(every network method includes the coarse pass, sim1's section 5.6 variants too: they run "
                    "through the pipeline; %d images per network call.)\n", r->B);
    if (r->nrows > 0) {
        fprintf(mf, "\n## Figure 1\n\n![grid](grid.png)\n\nColumns: original, masked (hole in white)");
        for (int mth = M_TELEA; mth <= M_SIMK; mth++)
            if (want[mth]) fprintf(mf, ", %s", method_key[mth]);
        if (want[M_SIMK]) fprintf(mf, ", the retrieved database image");
        fprintf(mf, ". Rows (sample, hole ratio):");
        for (int g = 0; g < r->nrows; g++)
            fprintf(mf, " %ld (%.2f)%s", r->rows[g].sample, r->rows[g].ratio, g + 1 < r->nrows ? "," : ".\n");
    }
}

/* Step 8: writes the grid, samples.csv and DIR/report.md, and prints the report on stdout. */
static sp_status write_outputs(ev_run *r, int argc, char **argv) {
    sp_status st = write_grid_and_csv(r);
    if (st) return st;
    char *md = NULL;
    size_t md_len = 0;
    FILE *mf = open_memstream(&md, &md_len);
    if (!mf) return sp_err(SP_ERR_NOMEM, "report buffer");
    report_head(mf, r, argc, argv);
    report_tables(mf, r);
    report_tail(mf, r);
    fclose(mf);
    char path[4096];
    snprintf(path, sizeof path, "%s/report.md", r->o->out);
    st = sp_write_file_atomic(path, md, md_len);
    if (!st) fwrite(md, 1, md_len, stdout);
    free(md);
    return st;
}

/* Frees everything a run holds. */
static void run_free(ev_run *r) {
    if (r->cf) fclose(r->cf);
    free(r->csv);
    if (r->rows)
        for (int g = 0; g < r->nrows; g++)
            for (int c = 0; c < M_COUNT + 3; c++) img_free(&r->rows[g].col[c]);
    free(r->rows);
    if (r->orig)
        for (int i = 0; i < r->o->batch; i++) img_free(&r->orig[i]);
    free(r->orig);
    free(r->x);
    free(r->keep);
    free(r->outf);
    free(r->hole);
    free(r->ring);
    free(r->dist);
    free(r->l1_simk);
    free(r->work);
    free(r->ids);
    free(r->scores);
    free(r->nb);
    list_free(&r->imgs);
    list_free(&r->masks);
    models_free(&r->m);
}

/* The evaluation: the methods, the models, the samples, then per batch each method run and scored,
 * then the outputs. Returns the exit status (2 for an unknown method). */
static int run_eval(const ev_opts *o, int argc, char **argv) {
    ev_run *r = calloc(1, sizeof *r);
    if (!r) {
        fprintf(stderr, "semipaint eval: out of memory\n");
        return 1;
    }
    r->o = o;
    int rc = choose_methods(o, r->want); /* step 1 */
    if (rc) {
        free(r);
        return rc;
    }
    rc = 1;
    sp_status st;
    if ((st = models_load(o, r->want, &r->m))) goto fail; /* step 2 */
    if ((st = list_samples(r))) goto fail;
    if ((st = alloc_run(r))) goto fail;
    sp_progress prog;
    sp_progress_init(&prog, "eval", r->total);
    for (long j0 = 0; j0 < r->total; j0 += r->B) {
        const int n = (int)(r->total - j0 < r->B ? r->total - j0 : r->B);
        if ((st = load_batch(r, j0, n))) goto fail;
        for (int mth = 0; mth < M_COUNT; mth++) {
            if (!r->want[mth]) continue;
            if ((st = run_method(r, mth))) goto fail;
            if ((st = score_method(r, mth))) goto fail;
        }
        if ((st = keep_grid_inputs(r))) goto fail;
        sp_progress_update(&prog, j0 + n);
    }
    sp_progress_finish(&prog);
    if ((st = write_outputs(r, argc, argv))) goto fail;
    rc = 0;
fail:
    if (st) fprintf(stderr, "semipaint eval: %s\n", sp_err_msg());
    run_free(r);
    free(r);
    return rc;
}

/* --blend on|off */
static int parse_on_off(const char *v, void *f) {
    if (strcmp(v, "on") && strcmp(v, "off")) return -1;
    *(int *)f = !strcmp(v, "on");
    return 0;
}

#define EO(f) offsetof(ev_opts, f)
static const cli_opt eval_table[] = {
    {"--images", NULL, CLI_STR, EO(images), 0, 0, NULL, NULL},
    {"--masks", NULL, CLI_STR, EO(masks), 0, 0, NULL, NULL},
    {"--out", NULL, CLI_STR, EO(out), 0, 0, NULL, NULL},
    {"--model", NULL, CLI_STR, EO(model), 0, 0, NULL, NULL},
    {"--config", "-c", CLI_STR, EO(config), 0, 0, NULL, NULL},
    {"--coarse", NULL, CLI_STR, EO(coarse), 0, 0, NULL, NULL},
    {"--sim0", NULL, CLI_STR, EO(sim0), 0, 0, NULL, NULL},
    {"--sim1", NULL, CLI_STR, EO(simk), 0, 0, NULL, NULL},
    {"--db", NULL, CLI_STR, EO(db), 0, 0, NULL, NULL},
    {"--descriptor-weights", NULL, CLI_STR, EO(desc_weights), 0, 0, NULL, NULL},
    {"--methods", NULL, CLI_STR, EO(methods), 0, 0, NULL, NULL},
    {"--title", NULL, CLI_STR, EO(title), 0, 0, NULL, NULL},
    {"--masks-per-image", NULL, CLI_INT, EO(per_image), 1, 1000, NULL, NULL},
    {"--limit", NULL, CLI_INT, EO(limit), 1, EV_MAX_FILES, NULL, NULL},
    {"--grid-rows", NULL, CLI_INT, EO(grid_rows), 0, 64, NULL, NULL},
    {"--batch", NULL, CLI_INT, EO(batch), 1, 64, NULL, NULL},
    {"--threads", NULL, CLI_INT, EO(threads), 0, 1024, NULL, NULL},
    {"--radius", NULL, CLI_INT, EO(radius), 1, 64, NULL, NULL},
    {"--blend", NULL, CLI_FN, EO(blend), 0, 0, parse_on_off, "on or off"},
    {"--seed", NULL, CLI_U64, EO(seed), 0, (double)UINT64_MAX, NULL, NULL},
};

/* --model: the family's weights and database (from `fam`, which must outlive the command) for the
 * flags not given. 0, or 2 (usage) / 1 (the configuration fails) after printing why. */
static int family_defaults(ev_opts *o, cli_family *fam) {
    int rc = cli_family_load("semipaint eval", o->config, o->model, fam);
    if (rc) return rc;
    const cfg_family *f = &fam->f;
    if (!o->coarse) o->coarse = f->coarse;
    if (!o->sim0 && f->refine_fallback[0]) o->sim0 = f->refine_fallback;
    if (!o->simk && f->refine[0]) o->simk = f->refine;
    if (!o->db && f->database[0]) o->db = f->database;
    if (!o->desc_weights && f->descriptor_weights[0]) o->desc_weights = f->descriptor_weights;
    return 0;
}

int cmd_eval(int argc, char **argv) {
    ev_opts o = {.methods = "telea,coarse,sim0,sim1",
                 .per_image = 1,
                 .grid_rows = 6,
                 .batch = 8,
                 .threads = 2,
                 .radius = TELEA_DEFAULT_RADIUS,
                 .blend = 1,
                 .seed = 1};
    const cli_spec spec = {"semipaint eval", eval_table, sizeof eval_table / sizeof eval_table[0], 0, 0, ev_usage};
    int rc = cli_parse(&spec, argc, argv, &o, NULL, NULL);
    if (rc >= 0) return rc;
    if (!o.images || !o.masks || !o.out) {
        fprintf(stderr, "semipaint eval: --images, --masks and --out are required\n\n");
        ev_usage(stderr);
        return 2;
    }
    if (o.config && !o.model) {
        fprintf(stderr, "semipaint eval: -c/--config is read only with --model\n");
        return 2;
    }
    static cli_family fam; /* o's paths point into it */
    if (o.model && (rc = family_defaults(&o, &fam))) return rc;
    if (!o.coarse) o.coarse = "weights/pconv.safetensors";
    if (!o.sim0) o.sim0 = "weights/sim0.safetensors";
    if (!o.simk) o.simk = "weights/sim1.safetensors";
    return run_eval(&o, argc, argv);
}
