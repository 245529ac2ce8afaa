/* cmd_eval.c: `semipaint eval`: the paper's Table 1 (L1, PSNR, SSIM per hole-ratio bucket) for telea, coarse, Sim-0 and Sim-K, its Figure 1 grid and the section 5.6 neighbour check. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/cli.h"
#include "imaging/img.h"
#include "model/nn.h"
#include "retrieval/rt.h"
#include "imaging/telea.h"

#define EV_MAX_PIXELS (64L << 20)
#define EV_NBUCKETS 6      /* [0.01,0.1], (0.1,0.2], ..., (0.5,0.6] */
#define EV_PSNR_CAP 100.0  /* PSNR of an image equal to the original */
#define EV_MAX_FILES 1000000
#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* The columns of the tables: telea, coarse, sim0, simK, and the section 5.6 variants of simK. */
enum { M_TELEA = 0, M_COARSE, M_SIM0, M_SIMK, M_SIMK_RANDOM, M_SIMK_NOISE, M_COUNT };
static const char *const method_key[M_COUNT] = {"telea", "coarse", "sim0", "sim1", "sim1-random", "sim1-noise"};
enum { Q_L1 = 0, Q_PSNR, Q_SSIM, Q_HOLE_L1, Q_COUNT };

typedef struct {
    const char *images, *masks, *out, *coarse, *sim0, *simk, *db, *desc_weights, *methods, *title;
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
            "section 5.6 check (Sim-K with its retrieved neighbour, a random database image, noise).\n"
            "Writes DIR/report.md, DIR/grid.png and DIR/samples.csv.\n\n"
            "  --images DIR         evaluation images (JPEG/PNG, sorted by name; centre-cropped and scaled\n"
            "                       to the nets' size when they are not square at that size)\n"
            "  --masks DIR          hole masks (white = hole; scaled to the nets' size with area averaging,\n"
            "                       then luminance > 127 = hole); sample j of N*R gets mask j*M/(N*R) of the\n"
            "                       M sorted masks, so a folder sorted by hole ratio spreads over all buckets\n"
            "  --out DIR            report folder (created)\n"
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
    if (n == 0) st = sp_err(SP_ERR_INVALID, "%s: no .jpg, .jpeg or .png files", dir);
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

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

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

/* Loads a mask scaled to s x s (area averaging) into hole (s*s bytes, 1 = hole: luminance > 127). */
static sp_status load_mask(const char *path, int s, uint8_t *hole) {
    img_u8 im = {0}, r = {0};
    sp_status st = img_load(path, EV_MAX_PIXELS, &im);
    if (st == SP_OK) st = img_resize_rect(&im, 0, 0, im.w, im.h, s, s, &r);
    if (st == SP_OK)
        for (int i = 0; i < s * s; i++) {
            const uint8_t *p = r.px + (size_t)i * r.c;
            int lum = r.c >= 3 ? (299 * p[0] + 587 * p[1] + 114 * p[2] + 500) / 1000 : p[0];
            hole[i] = lum > 127;
        }
    img_free(&im);
    img_free(&r);
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

static void acc_add(ev_acc *a, const double q[Q_COUNT]) {
    a->n++;
    for (int i = 0; i < Q_COUNT; i++) {
        a->sum[i] += q[i];
        a->sumsq[i] += q[i] * q[i];
    }
}

static double acc_mean(const ev_acc *a, int q) { return a->n ? a->sum[q] / a->n : NAN; }

/* Sample standard deviation (n-1); 0 for a single sample. */
static double acc_std(const ev_acc *a, int q) {
    if (a->n < 2) return 0;
    double m = a->sum[q] / a->n, v = (a->sumsq[q] - a->n * m * m) / (a->n - 1);
    return v > 0 ? sqrt(v) : 0;
}

/* ---- the run ---- */

typedef struct {
    nn_backend *be;
    nn_net *coarse, *sim0, *simk, *vgg;
    rt_descriptor *desc;
    rt_db *db;
    rt_retriever retr;
    nn_pipeline *p0, *pk;
    int k, s;
} ev_models;

static void models_free(ev_models *m) {
    nn_pipeline_free(m->pk);
    nn_pipeline_free(m->p0);
    rt_db_close(m->db);
    rt_descriptor_free(m->desc);
    nn_net_free(m->simk);
    nn_net_free(m->sim0);
    nn_net_free(m->coarse);
    nn_net_free(m->vgg);
    nn_backend_free(m->be);
    memset(m, 0, sizeof *m);
}

static sp_status models_load(const ev_opts *o, const int want[M_COUNT], ev_models *m) {
    nn_backend_opts bo = {.device = NN_DEVICE_AUTO, .threads = o->threads};
    sp_status st = nn_backend_new(&bo, &m->be);
    if (st) return st;
    const int need_nets = want[M_COARSE] || want[M_SIM0] || want[M_SIMK];
    m->s = 256;
    if (!need_nets) return SP_OK;
    if ((st = nn_net_load(m->be, o->coarse, &m->coarse))) return st;
    m->s = nn_net_get_info(m->coarse)->size;
    if ((st = nn_net_load(m->be, o->sim0, &m->sim0))) return st;
    if (nn_net_get_info(m->sim0)->k != 0)
        return sp_err(SP_ERR_INVALID, "%s: --sim0 needs a simk_unet with k = 0", o->sim0);
    if ((st = nn_pipeline_new(m->coarse, m->sim0, NULL, &m->p0))) return st;
    if (!want[M_SIMK]) return SP_OK;
    if ((st = nn_net_load(m->be, o->simk, &m->simk))) return st;
    m->k = nn_net_get_info(m->simk)->k;
    if (m->k < 1) return sp_err(SP_ERR_INVALID, "%s: --sim1 needs a simk_unet with k >= 1", o->simk);
    if ((st = rt_db_open(o->db, NULL, 0, &m->db))) return st;
    const char *dname = rt_db_descriptor(m->db);
    if (o->desc_weights && (st = nn_net_load(m->be, o->desc_weights, &m->vgg))) return st;
    if ((st = rt_descriptor_new(dname, m->vgg, &m->desc))) return sp_err_wrap(st, "database %s", o->db);
    if (strcmp(rt_descriptor_weights_sha256(m->desc), rt_db_weights_sha256(m->db)))
        return sp_err(SP_ERR_INVALID, "database %s was built with descriptor weights %s, --descriptor-weights are %s",
                      o->db, rt_db_weights_sha256(m->db), rt_descriptor_weights_sha256(m->desc));
    if (rt_db_size(m->db) != m->s)
        return sp_err(SP_ERR_INVALID, "database %s stores %d px images, the nets work at %d", o->db, rt_db_size(m->db),
                      m->s);
    if (rt_db_count(m->db) < m->k)
        return sp_err(SP_ERR_INVALID, "database %s holds %ld images, fewer than k = %d", o->db, rt_db_count(m->db),
                      m->k);
    rt_retriever_init(&m->retr, m->db, m->desc, m->k);
    return nn_pipeline_new(m->coarse, m->simk, &m->retr.hook, &m->pk);
}

/* One kept grid row: the images of every column. */
typedef struct {
    long sample;
    double ratio;
    img_u8 col[M_COUNT + 3]; /* original, masked, methods M_TELEA..M_SIMK, neighbour */
} ev_row;

static sp_status chw_to_img(const float *chw, int s, img_u8 *im) {
    sp_status st = img_alloc(im, s, s, 3);
    if (st == SP_OK) img_from_chw(chw, im);
    return st;
}

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

static int run_eval(const ev_opts *o, int argc, char **argv) {
    int want[M_COUNT] = {0};
    {
        char buf[256];
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
    }
    if (want[M_SIMK] && !o->db) {
        fprintf(stderr, "semipaint eval: sim1 needs --db (a database made by `semipaint index build`); skipping it\n");
        want[M_SIMK] = 0;
    }
    want[M_SIMK_RANDOM] = want[M_SIMK_NOISE] = want[M_SIMK];

    ev_models m = {0};
    ev_list imgs = {0}, masks = {0};
    ev_acc acc[M_COUNT][EV_NBUCKETS + 1];
    memset(acc, 0, sizeof acc);
    ev_row *rows = NULL;
    float *x = NULL, *keep = NULL, *outf = NULL, *rin = NULL, *nb = NULL;
    uint8_t *hole = NULL, *ring = NULL;
    int *dist = NULL;
    double ring_err[M_COUNT][EV_NRINGS] = {{0}};
    long ring_n[EV_NRINGS] = {0};
    double *l1_simk = NULL;
    img_u8 *orig = NULL;
    double *work = NULL;
    int64_t *ids = NULL;
    float *scores = NULL;
    char *csv = NULL, *md = NULL;
    size_t csv_len = 0, md_len = 0;
    FILE *cf = NULL, *mf = NULL;
    long outside = 0, better_than_random = 0, nsim_cmp = 0;
    double ms[M_COUNT] = {0};
    long nimg = 0, total = 0;
    int nrows = 0, rc = 1;
    sp_status st;

    if ((st = models_load(o, want, &m))) goto fail;
    if ((st = list_images(o->images, &imgs))) goto fail;
    if ((st = list_images(o->masks, &masks))) goto fail;
    nimg = o->limit > 0 && o->limit < imgs.n ? o->limit : imgs.n;
    total = nimg * o->per_image;
    const int s = m.s, B = o->batch, k = m.k;
    const size_t hw = (size_t)s * s, isz = 3 * hw;
    if ((st = make_dirs(o->out))) goto fail;

    x = malloc((size_t)B * isz * sizeof *x);
    keep = malloc((size_t)B * hw * sizeof *keep);
    outf = malloc((size_t)B * isz * sizeof *outf);
    hole = malloc((size_t)B * hw);
    ring = malloc((size_t)B * hw);
    dist = malloc(hw * sizeof *dist);
    l1_simk = calloc(total, sizeof *l1_simk);
    orig = calloc(B, sizeof *orig);
    work = malloc(8 * hw * sizeof *work);
    ids = malloc((size_t)B * (k ? k : 1) * sizeof *ids);
    scores = malloc((size_t)B * (k ? k : 1) * sizeof *scores);
    rin = k ? malloc((size_t)B * (4 + 3 * k) * hw * sizeof *rin) : NULL;
    nb = k ? malloc(isz * sizeof *nb) : NULL;
    nrows = o->grid_rows < total ? o->grid_rows : (int)total;
    rows = calloc(nrows > 0 ? nrows : 1, sizeof *rows);
    if (!x || !keep || !outf || !hole || !ring || !dist || !l1_simk || !orig || !work || !ids || !scores || (k && (!rin || !nb)) || !rows) {
        st = sp_err(SP_ERR_NOMEM, "evaluation buffers for a batch of %d", B);
        goto fail;
    }
    for (int r = 0; r < nrows; r++) rows[r].sample = ((2L * r + 1) * total) / (2L * nrows);
    cf = open_memstream(&csv, &csv_len);
    if (!cf) {
        st = sp_err(SP_ERR_NOMEM, "csv buffer");
        goto fail;
    }
    fprintf(cf, "sample,image,mask,hole_ratio,bucket,method,l1_pct,psnr,ssim,hole_l1_pct,neighbour\n");

    sp_progress prog;
    sp_progress_init(&prog, "eval", total);
    for (long j0 = 0; j0 < total; j0 += B) {
        const int n = (int)(total - j0 < B ? total - j0 : B);
        double ratio[64];
        int bucket[64];
        for (int i = 0; i < n; i++) {
            const long j = j0 + i;
            const char *ip = imgs.v[j / o->per_image], *mp = masks.v[(long)((double)j * masks.n / total)];
            img_free(&orig[i]);
            if ((st = load_square(ip, s, &orig[i]))) goto fail;
            if ((st = load_mask(mp, s, hole + i * hw))) goto fail;
            img_to_chw(&orig[i], x + i * isz);
            long nh = 0;
            for (size_t q = 0; q < hw; q++) {
                keep[i * hw + q] = hole[i * hw + q] ? 0.0f : 1.0f;
                nh += hole[i * hw + q];
            }
            ratio[i] = (double)nh / hw;
            bucket[i] = bucket_of(ratio[i]);
            if (bucket[i] < 0) outside++;
            hole_rings(hole + i * hw, s, dist, ring + i * hw);
            if (bucket[i] >= 0)
                for (size_t q = 0; q < hw; q++)
                    if (ring[i * hw + q] < EV_NRINGS) ring_n[ring[i * hw + q]]++;
        }
        for (int mth = 0; mth < M_COUNT; mth++) {
            if (!want[mth]) continue;
            double t0 = sp_now();
            if (mth == M_COARSE || mth == M_SIM0 || mth == M_SIMK) {
                nn_pipeline *p = mth == M_SIMK ? m.pk : m.p0;
                nn_method meth = mth == M_COARSE ? NN_METHOD_COARSE : NN_METHOD_SIM;
                if ((st = nn_pipeline_run(p, n, x, keep, meth, outf, mth == M_SIMK ? ids : NULL,
                                          mth == M_SIMK ? scores : NULL, NULL)))
                    goto fail;
            } else if (mth == M_SIMK_RANDOM || mth == M_SIMK_NOISE) {
                /* Sim-K on [I*M, M, S_1..S_K] with S a random database image or uniform noise. */
                for (int i = 0; i < n; i++) {
                    float *r = rin + (size_t)i * (4 + 3 * k) * hw;
                    const float *im = x + i * isz, *mk = keep + i * hw;
                    for (int c = 0; c < 3; c++)
                        for (size_t q = 0; q < hw; q++) r[c * hw + q] = im[c * hw + q] * mk[q];
                    memcpy(r + 3 * hw, mk, hw * sizeof *mk);
                    uint64_t rs = o->seed * 0x100000001B3ull + (uint64_t)(j0 + i) * 2 + (mth == M_SIMK_NOISE);
                    for (int q = 0; q < k; q++) {
                        float *dst = r + (4 + 3 * q) * hw;
                        if (mth == M_SIMK_RANDOM) {
                            int64_t id = (int64_t)(splitmix64(&rs) % (uint64_t)rt_db_count(m.db));
                            if ((st = rt_db_image(m.db, id, dst))) goto fail;
                        } else {
                            for (size_t e = 0; e < isz; e++) dst[e] = (float)((splitmix64(&rs) >> 40) / 16777216.0);
                        }
                    }
                }
                if ((st = nn_unet_forward(m.simk, n, s, s, rin, NULL, outf))) goto fail;
                nn_composite(n, 3, s, s, x, outf, keep, outf);
            }
            if (mth != M_TELEA && o->blend) {
                const nn_net_info *bi = nn_net_get_info(mth == M_COARSE ? m.coarse : mth == M_SIM0 ? m.sim0 : m.simk);
                if ((st = telea_blend(n, s, keep, bi->blend, bi->blend_n, TELEA_DEFAULT_RADIUS, outf))) goto fail;
            }
            if (mth != M_TELEA) ms[mth] += (sp_now() - t0) * 1e3;
            for (int i = 0; i < n; i++) {
                const long j = j0 + i;
                img_u8 om = {0};
                if (mth == M_TELEA) {
                    double t1 = sp_now();
                    if ((st = img_copy(&orig[i], &om))) goto fail;
                    if ((st = telea_inpaint(&om, hole + i * hw, o->radius))) {
                        img_free(&om);
                        goto fail;
                    }
                    ms[mth] += (sp_now() - t1) * 1e3;
                } else if ((st = chw_to_img(outf + i * isz, s, &om))) {
                    goto fail;
                }
                double q[Q_COUNT];
                metrics(om.px, orig[i].px, hole + i * hw, ring + i * hw, s, work, q,
                        bucket[i] >= 0 ? ring_err[mth] : NULL);
                if (bucket[i] >= 0) {
                    acc_add(&acc[mth][bucket[i]], q);
                    acc_add(&acc[mth][EV_NBUCKETS], q);
                }
                fprintf(cf, "%ld,%s,%s,%.5f,%d,%s,%.5f,%.4f,%.5f,%.5f,", j, base_name(imgs.v[j / o->per_image]),
                        base_name(masks.v[(long)((double)j * masks.n / total)]), ratio[i], bucket[i] + 1,
                        method_key[mth], q[Q_L1], q[Q_PSNR], q[Q_SSIM], q[Q_HOLE_L1]);
                if (mth == M_SIMK)
                    fprintf(cf, "%s\n", rt_db_source_name(m.db, ids[(size_t)i * k]));
                else
                    fprintf(cf, "\n");
                /* Section 5.6: does the retrieved neighbour beat a random one on this sample? */
                if (mth == M_SIMK && bucket[i] >= 0) l1_simk[j] = q[Q_L1];
                if (mth == M_SIMK_RANDOM && bucket[i] >= 0) {
                    nsim_cmp++;
                    better_than_random += l1_simk[j] < q[Q_L1];
                }
                int kept = 0;
                for (int r = 0; r < nrows; r++)
                    if (rows[r].sample == j && mth <= M_SIMK) {
                        rows[r].ratio = ratio[i];
                        img_free(&rows[r].col[2 + mth]);
                        rows[r].col[2 + mth] = om;
                        kept = 1;
                        if (mth == M_SIMK) {
                            if ((st = rt_db_image(m.db, ids[(size_t)i * k], nb))) goto fail;
                            img_free(&rows[r].col[M_COUNT + 2]);
                            if ((st = chw_to_img(nb, s, &rows[r].col[M_COUNT + 2]))) goto fail;
                        }
                    }
                if (!kept) img_free(&om);
            }
        }
        /* Rows of the grid: the original and the masked input. */
        for (int i = 0; i < n; i++)
            for (int r = 0; r < nrows; r++)
                if (rows[r].sample == j0 + i) {
                    img_free(&rows[r].col[0]);
                    img_free(&rows[r].col[1]);
                    if ((st = img_copy(&orig[i], &rows[r].col[0])) || (st = img_copy(&orig[i], &rows[r].col[1])))
                        goto fail;
                    for (size_t q = 0; q < hw; q++)
                        if (hole[i * hw + q]) memset(rows[r].col[1].px + q * 3, 255, 3);
                }
        sp_progress_update(&prog, j0 + n);
    }
    sp_progress_finish(&prog);
    fclose(cf);
    cf = NULL;

    /* The grid. */
    int cols_on[M_COUNT + 3] = {0};
    cols_on[0] = cols_on[1] = 1;
    for (int mth = M_TELEA; mth <= M_SIMK; mth++) cols_on[2 + mth] = want[mth];
    cols_on[M_COUNT + 2] = want[M_SIMK];
    char path[4096];
    if (nrows > 0) {
        snprintf(path, sizeof path, "%s/grid.png", o->out);
        if ((st = write_grid(path, rows, nrows, cols_on, s))) goto fail;
    }
    snprintf(path, sizeof path, "%s/samples.csv", o->out);
    if ((st = sp_write_file_atomic(path, csv, csv_len))) goto fail;

    /* The report. */
    mf = open_memstream(&md, &md_len);
    if (!mf) {
        st = sp_err(SP_ERR_NOMEM, "report buffer");
        goto fail;
    }
    time_t now = time(NULL);
    char when[64];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    fprintf(mf, "# %s\n\n", o->title ? o->title : "semipaint eval");
    fprintf(mf, "Command (%s):\n\n```\nsemipaint", when);
    for (int i = 0; i < argc; i++) fprintf(mf, " %s", argv[i]);
    fprintf(mf, "\n```\n\n");
    fprintf(mf, "- images: `%s` (%ld used), masks: `%s` (%ld), %d per image: %ld samples at %dx%d, %ld of them with a "
                "hole ratio outside [0.01, 0.6] (left out of the tables)\n",
            o->images, nimg, o->masks, masks.n, o->per_image, total, s, s, outside);
    const nn_net *nl[3] = {m.coarse, m.sim0, m.simk};
    for (int i = 0; i < 3; i++) {
        if (!nl[i]) continue;
        const nn_net_info *in = nn_net_get_info(nl[i]);
        fprintf(mf, "- `%s`: %s k=%d, %ld parameters, size %d, sha256 `%.16s…`; telea blend: %s; trained on: %s\n",
                in->path, in->arch_name, in->k, in->params, in->size, in->sha256,
                !in->blend_n ? "none" : o->blend ? "on" : "off (--blend off)",
                in->trained_on[0] ? in->trained_on : "?");
    }
    if (m.db)
        fprintf(mf, "- database `%s`: %ld images, descriptor %s\n", o->db, rt_db_count(m.db), rt_db_descriptor(m.db));
    fprintf(mf, "- engine: %s (%s); telea radius %d\n", nn_backend_name(m.be), nn_backend_device(m.be), o->radius);
    fprintf(mf,
            "\nEach number is computed over the whole composited %dx%d image (known pixels are the "
            "original's), 8-bit, as in the paper's Table 1: L1 in %% of 255, PSNR in dB (capped at %g), "
            "SSIM with an 11x11 Gaussian window (sigma 1.5) averaged over RGB; mean ± sample std per "
            "hole-ratio bucket. The inception score of the paper needs Inception weights that cannot be "
            "had here and is left out.\n",
            s, s, EV_PSNR_CAP);
    fprintf(mf, "\nSamples per bucket:");
    {
        const int first = want[M_TELEA] ? M_TELEA : want[M_COARSE] ? M_COARSE : want[M_SIM0] ? M_SIM0 : M_SIMK;
        for (int b = 0; b <= EV_NBUCKETS; b++) fprintf(mf, " %ld", acc[first][b].n);
        fprintf(mf, " (the last: all).\n");
    }
    int show[M_COUNT];
    for (int i = 0; i < M_COUNT; i++) show[i] = want[i] && i <= M_SIMK;
    table(mf, "L1 (%), lower is better", Q_L1, show, acc, 2, k);
    table(mf, "PSNR (dB), higher is better", Q_PSNR, show, acc, 2, k);
    table(mf, "SSIM, higher is better", Q_SSIM, show, acc, 4, k);
    table(mf, "L1 over the hole pixels only (%), lower is better", Q_HOLE_L1, show, acc, 2, k);
    {
        long nall = 0;
        for (int r = 0; r < EV_NRINGS; r++) nall += ring_n[r];
        fprintf(mf, "\n**L1 over the hole pixels (%%) by their distance to the nearest known pixel (chessboard, px), "
                    "pooled over the hole pixels of all samples, lower is better**\n\n| method |");
        for (int r = 0; r < EV_NRINGS; r++) fprintf(mf, " %s |", ring_name[r]);
        fprintf(mf, "\n|---|");
        for (int r = 0; r < EV_NRINGS; r++) fprintf(mf, "---|");
        fprintf(mf, "\n| share of hole pixels (%%) |");
        for (int r = 0; r < EV_NRINGS; r++) fprintf(mf, " %.1f |", nall ? 100.0 * ring_n[r] / nall : 0.0);
        fprintf(mf, "\n");
        for (int mth = 0; mth <= M_SIMK; mth++) {
            if (!show[mth]) continue;
            if (mth == M_SIMK)
                fprintf(mf, "| sim%d |", k);
            else
                fprintf(mf, "| %s |", method_key[mth]);
            for (int r = 0; r < EV_NRINGS; r++) {
                if (ring_n[r])
                    fprintf(mf, " %.2f |", 100.0 * ring_err[mth][r] / (3.0 * 255.0 * ring_n[r]));
                else
                    fprintf(mf, " - |");
            }
            fprintf(mf, "\n");
        }
    }
    if (want[M_SIMK]) {
        int show56[M_COUNT] = {0};
        show56[M_SIMK] = show56[M_SIMK_RANDOM] = show56[M_SIMK_NOISE] = 1;
        fprintf(mf,
                "\n## Section 5.6: does Sim-%d use its neighbour?\n\nSim-%d fed with the retrieved neighbour "
                "(of the coarse composite), with a uniformly random database image, and with uniform noise.\n",
                k, k);
        table(mf, "L1 (%)", Q_L1, show56, acc, 3, k);
        table(mf, "L1 over the hole pixels only (%)", Q_HOLE_L1, show56, acc, 3, k);
        table(mf, "PSNR (dB)", Q_PSNR, show56, acc, 3, k);
        table(mf, "SSIM", Q_SSIM, show56, acc, 4, k);
        if (nsim_cmp)
            fprintf(mf, "\nThe retrieved neighbour gives a lower L1 than the random image on %ld of %ld samples (%.1f%%).\n",
                    better_than_random, nsim_cmp, 100.0 * better_than_random / nsim_cmp);
    }
    fprintf(mf, "\n## Time per image\n\n| method | ms/image |\n|---|---|\n");
    for (int mth = 0; mth < M_COUNT; mth++)
        if (want[mth]) fprintf(mf, "| %s | %.1f |\n", method_key[mth], total ? ms[mth] / total : 0.0);
    if (want[M_COARSE] || want[M_SIM0] || want[M_SIMK])
        fprintf(mf, "\n(coarse, sim0 and sim1 each include the coarse pass; %d images per network call.)\n", B);
    if (nrows > 0) {
        fprintf(mf, "\n## Figure 1\n\n![grid](grid.png)\n\nColumns: original, masked (hole in white)");
        for (int mth = M_TELEA; mth <= M_SIMK; mth++)
            if (want[mth]) fprintf(mf, ", %s", method_key[mth]);
        if (want[M_SIMK]) fprintf(mf, ", the retrieved database image");
        fprintf(mf, ". Rows (sample, hole ratio):");
        for (int r = 0; r < nrows; r++) fprintf(mf, " %ld (%.2f)%s", rows[r].sample, rows[r].ratio, r + 1 < nrows ? "," : ".\n");
    }
    fclose(mf);
    mf = NULL;
    snprintf(path, sizeof path, "%s/report.md", o->out);
    if ((st = sp_write_file_atomic(path, md, md_len))) goto fail;
    fwrite(md, 1, md_len, stdout);
    rc = 0;
    st = SP_OK;
fail:
    if (st) fprintf(stderr, "semipaint eval: %s\n", sp_err_msg());
    if (cf) fclose(cf);
    if (mf) fclose(mf);
    free(csv);
    free(md);
    if (rows)
        for (int r = 0; r < nrows; r++)
            for (int c = 0; c < M_COUNT + 3; c++) img_free(&rows[r].col[c]);
    free(rows);
    if (orig)
        for (int i = 0; i < o->batch; i++) img_free(&orig[i]);
    free(orig);
    free(x);
    free(keep);
    free(outf);
    free(hole);
    free(ring);
    free(dist);
    free(l1_simk);
    free(work);
    free(ids);
    free(scores);
    free(rin);
    free(nb);
    list_free(&imgs);
    list_free(&masks);
    models_free(&m);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    ev_opts o = {.coarse = "weights/pconv.safetensors",
                 .sim0 = "weights/sim0.safetensors",
                 .simk = "weights/sim1.safetensors",
                 .methods = "telea,coarse,sim0,sim1",
                 .per_image = 1,
                 .grid_rows = 6,
                 .batch = 8,
                 .threads = 2,
                 .radius = TELEA_DEFAULT_RADIUS,
                 .blend = 1,
                 .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            ev_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "semipaint eval: %s needs a value\n", a);
            ev_usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--images")) o.images = v;
        else if (!strcmp(a, "--masks")) o.masks = v;
        else if (!strcmp(a, "--out")) o.out = v;
        else if (!strcmp(a, "--coarse")) o.coarse = v;
        else if (!strcmp(a, "--sim0")) o.sim0 = v;
        else if (!strcmp(a, "--sim1")) o.simk = v;
        else if (!strcmp(a, "--db")) o.db = v;
        else if (!strcmp(a, "--descriptor-weights")) o.desc_weights = v;
        else if (!strcmp(a, "--methods")) o.methods = v;
        else if (!strcmp(a, "--title")) o.title = v;
        else if (!strcmp(a, "--masks-per-image")) bad = cli_parse_int(v, 1, 1000, &o.per_image);
        else if (!strcmp(a, "--limit")) bad = cli_parse_int(v, 1, EV_MAX_FILES, &o.limit);
        else if (!strcmp(a, "--grid-rows")) bad = cli_parse_int(v, 0, 64, &o.grid_rows);
        else if (!strcmp(a, "--batch")) bad = cli_parse_int(v, 1, 64, &o.batch);
        else if (!strcmp(a, "--threads")) bad = cli_parse_int(v, 0, 1024, &o.threads);
        else if (!strcmp(a, "--radius")) bad = cli_parse_int(v, 1, 64, &o.radius);
        else if (!strcmp(a, "--blend")) {
            bad = strcmp(v, "on") && strcmp(v, "off");
            o.blend = !strcmp(v, "on");
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long sv = strtoull(v, &end, 10);
            bad = end == v || *end || errno || *v == '-';
            o.seed = sv;
        } else {
            fprintf(stderr, "semipaint eval: unknown option %s\n", a);
            ev_usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "semipaint eval: bad value '%s' for %s\n", v, a);
            return 2;
        }
    }
    if (!o.images || !o.masks || !o.out) {
        ev_usage(stderr);
        return 2;
    }
    return run_eval(&o, argc, argv);
}
