/* test_retrieval.c: the retrieval database: build, query, reopen, append, concurrent search, descriptors, refusal of broken databases, and the database lock against rebuilds. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/file.h>
#include <unistd.h>

#include "retrieval/rt.h"
#include "retrieval/rt_index.h"
#include "tests/t.h"

/* FAISS 1.7.3's read_index leaks the half-read index when a truncated file makes it throw (a
 * raw pointer in index_read.cpp); the "truncated index" case below triggers that on purpose. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:faiss::read_index\n"; }

#define S 256
#define ROW (S * S * 3)

static char root[64];

/* Image i: smooth coloured waves whose frequencies, phases and colours depend on i. */
static void make_image(int i, uint8_t *rgb) {
    uint32_t h = 2654435761u * (uint32_t)(i + 1);
    float fx = 0.01f + (h % 97) * 0.0006f, fy = 0.01f + (h / 97 % 89) * 0.0007f;
    float ph = (h / 8633 % 628) * 0.01f;
    float col[3] = {(h >> 3 & 255) / 255.f, (h >> 11 & 255) / 255.f, (h >> 19 & 255) / 255.f};
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            float w = 0.5f + 0.5f * sinf(fx * x * (1 + i % 3) + fy * y * (1 + i % 5) + ph);
            float v = 0.5f + 0.5f * cosf(fy * x - fx * y * (1 + i % 4) - ph);
            for (int c = 0; c < 3; c++) {
                float p = col[c] * w + (1 - col[c]) * v * (c == i % 3 ? 1.0f : 0.4f);
                rgb[(y * S + x) * 3 + c] = (uint8_t)lrintf(fminf(fmaxf(p, 0), 1) * 255);
            }
        }
}

static void to_chw(const uint8_t *rgb, float *chw) {
    for (int i = 0; i < S * S; i++)
        for (int c = 0; c < 3; c++) chw[c * S * S + i] = rgb[3 * i + c] / 255.0f;
}

/* Images [first, first+n) with their descriptors under `d`. */
static void make_batch(rt_descriptor *d, int first, int n, uint8_t *rgb, float *desc) {
    float *chw = malloc((size_t)n * 3 * S * S * sizeof *chw);
    for (int i = 0; i < n; i++) {
        make_image(first + i, rgb + (size_t)i * ROW);
        to_chw(rgb + (size_t)i * ROW, chw + (size_t)i * 3 * S * S);
    }
    CHECK(rt_descriptor_compute(d, n, S, chw, desc) == SP_OK);
    free(chw);
}

static void name_of(int i, char *buf, size_t cap) { snprintf(buf, cap, "img%03d.png", i); }

static int copy_file(const char *from, const char *to) {
    uint8_t *buf;
    size_t len;
    if (sp_read_file(from, &buf, &len)) return -1;
    FILE *f = fopen(to, "wb");
    int ok = f && fwrite(buf, 1, len, f) == len;
    if (f) fclose(f);
    free(buf);
    return ok ? 0 : -1;
}

static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
    rmdir(dir);
}

/* A fresh copy of database `src` at `dst`. */
static void copy_db(const char *src, const char *dst) {
    remove_dir(dst);
    mkdir(dst, 0755);
    DIR *d = opendir(src);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char a[512], b[512];
        snprintf(a, sizeof a, "%s/%s", src, e->d_name);
        snprintf(b, sizeof b, "%s/%s", dst, e->d_name);
        CHECK(copy_file(a, b) == 0);
    }
    closedir(d);
}

/* Sets manifest key `key` to a number (or, with str != NULL, a string). */
static void edit_manifest(const char *dir, const char *key, double num, const char *str) {
    char p[512];
    snprintf(p, sizeof p, "%s/manifest.json", dir);
    uint8_t *buf;
    size_t len;
    CHECK(sp_read_file(p, &buf, &len) == SP_OK);
    cJSON *o = cJSON_Parse((char *)buf);
    free(buf);
    cJSON_DeleteItemFromObject(o, key);
    if (str) cJSON_AddStringToObject(o, key, str);
    else cJSON_AddNumberToObject(o, key, num);
    char *s = cJSON_Print(o);
    CHECK(sp_write_file_atomic(p, s, strlen(s)) == SP_OK);
    cJSON_free(s);
    cJSON_Delete(o);
}

static double manifest_num(const char *dir, const char *key) {
    char p[512];
    snprintf(p, sizeof p, "%s/manifest.json", dir);
    uint8_t *buf;
    size_t len;
    if (sp_read_file(p, &buf, &len)) return -1;
    cJSON *o = cJSON_Parse((char *)buf);
    free(buf);
    double v = cJSON_GetNumberValue(cJSON_GetObjectItem(o, key));
    cJSON_Delete(o);
    return v;
}

/* Opening `dir` must fail with `want` and a message containing each of the given words. */
static void expect_refused(const char *what, const char *dir, rt_descriptor *d, sp_status want, const char *w1,
                           const char *w2) {
    rt_db *db = NULL;
    sp_status st = rt_db_open(dir, d, 0, &db);
    const char *msg = sp_err_msg();
    CHECKF(st == want, "%s: status %s, want %s (%s)", what, sp_status_name(st), sp_status_name(want), msg);
    CHECKF(db == NULL, "%s: a handle came back", what);
    CHECKF(!w1 || strstr(msg, w1), "%s: message '%s' lacks '%s'", what, msg, w1);
    CHECKF(!w2 || strstr(msg, w2), "%s: message '%s' lacks '%s'", what, msg, w2);
    if (st == SP_OK) printf("  %s: opened, count %ld\n", what, rt_db_count(db));
    rt_db_close(db);
}

static void test_descriptors(void) {
    rt_descriptor *d = NULL;
    CHECK(rt_descriptor_new("nope", NULL, &d) == SP_ERR_INVALID && d == NULL);
    CHECK(strstr(sp_err_msg(), "thumb16") != NULL); /* the message lists the known names */
    CHECK(rt_descriptor_new("vgg16_features:avg", NULL, &d) == SP_ERR_INVALID && d == NULL);
    CHECK(strstr(sp_err_msg(), "weights") != NULL);
    CHECK(rt_descriptor_new("vgg16_features:mean", NULL, &d) == SP_ERR_INVALID);

    float *flat = malloc(3 * S * S * sizeof *flat);
    for (int i = 0; i < 3 * S * S; i++) flat[i] = i < S * S ? 0.8f : 0.3f;
    const char *names[] = {"thumb8", "thumb16", "thumb16_zm", "thumb32"};
    const int dims[] = {192, 768, 768, 3072};
    for (int k = 0; k < 4; k++) {
        CHECK(rt_descriptor_new(names[k], NULL, &d) == SP_OK);
        CHECK(rt_descriptor_dim(d) == dims[k]);
        CHECK(!strcmp(rt_descriptor_name(d), names[k]));
        CHECK(!strcmp(rt_descriptor_weights_sha256(d), ""));
        float *v = malloc(dims[k] * sizeof *v);
        CHECK(rt_descriptor_compute(d, 1, S, flat, v) == SP_OK);
        double ss = 0;
        for (int i = 0; i < dims[k]; i++) ss += v[i] * v[i];
        /* A flat image: unit norm, except zero under zero-mean (nothing left). */
        if (k == 2) CHECKF(ss < 1e-10, "%s of a flat image: norm^2 %g", names[k], ss);
        else CHECKF(fabs(ss - 1) < 1e-5, "%s: norm^2 %g", names[k], ss);
        /* Y cells of the flat image are all equal; the Y value 0.299*0.8+0.587*0.3+0.114*0.3-0.5 < 0. */
        if (k != 2) CHECK(v[0] < 0 && fabsf(v[0] - v[dims[k] / 3 - 1]) < 1e-6f);
        free(v);
        rt_descriptor_free(d);
    }
    /* Any size that holds the cells works (thumbs are area averages). */
    CHECK(rt_descriptor_new("thumb16", NULL, &d) == SP_OK);
    float small[3 * 40 * 40], v[768];
    for (int i = 0; i < 3 * 40 * 40; i++) small[i] = (i % 40) / 40.0f;
    CHECK(rt_descriptor_compute(d, 1, 40, small, v) == SP_OK);
    CHECK(rt_descriptor_compute(d, 1, 8, small, v) == SP_ERR_INVALID);
    rt_descriptor_free(d);
    rt_descriptor_free(NULL);
    free(flat);
}

/* Brute-force top k in double precision: best (k) and bid (k), higher score first. */
static void brute_topk(const float *x, long n, int d, const float *q, int k, double *best, long *bid) {
    int nb = 0;
    for (long r = 0; r < n; r++) {
        double s = 0;
        for (int c = 0; c < d; c++) s += (double)q[c] * x[r * d + c];
        if (nb == k && s <= best[k - 1]) continue;
        int p = nb < k ? nb++ : k - 1;
        while (p > 0 && s > best[p - 1]) {
            best[p] = best[p - 1];
            bid[p] = bid[p - 1];
            p--;
        }
        best[p] = s;
        bid[p] = r;
    }
}

/* Searches nq queries for k and compares with the brute force; returns the mismatches. Ids
 * may differ only where the double scores tie within float rounding. */
static int compare_search(rt_index *ix, const float *x, long n, int d, const float *q, long nq, int k) {
    int64_t ids[25 * 10];
    float sc[25 * 10];
    if (rt_index_search(ix, nq, q, k, sc, ids) != SP_OK) return 1000;
    int bad = 0;
    for (long j = 0; j < nq; j++) {
        double best[10];
        long bid[10];
        brute_topk(x, n, d, q + j * d, k, best, bid);
        for (int a = 0; a < k; a++) {
            if (a >= n) {
                bad += ids[j * k + a] != -1;
                continue;
            }
            bad += fabs(sc[j * k + a] - best[a]) > 1e-4;
            if (ids[j * k + a] != bid[a]) {
                /* Acceptable only if the returned id's true score equals best[a] within rounding. */
                double s = 0;
                for (int c = 0; c < d; c++) s += (double)q[j * d + c] * x[ids[j * k + a] * d + c];
                bad += fabs(s - best[a]) > 1e-5;
            }
        }
    }
    return bad;
}

/* The exact search (8-bit pre-filter and exact re-scoring below 20 queries, FAISS's BLAS path
 * above) against a double-precision brute force: random vectors of awkward sizes, a set large
 * enough to be scanned by several threads, and near-duplicates that defeat the pre-filter. */
static void test_exact_search(void) {
    const struct {
        int d;
        long n;
        int dup; /* 1: vectors are tiny perturbations of a few directions */
    } cases[] = {{37, 3, 0}, {37, 5000, 0}, {256, 5000, 0}, {768, 5000, 0}, {768, 22000, 0}, {64, 3000, 1}};
    const long nqs[] = {1, 7, 8, 13, 25};
    uint32_t h = 12345;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int d = cases[ci].d;
        const long n = cases[ci].n;
        float *x = malloc((size_t)(n + 25) * d * sizeof *x);
        for (long i = 0; i < (n + 25) * d; i++) {
            h = h * 1664525u + 1013904223u;
            x[i] = (float)(h >> 8) / (1 << 24) - 0.5f;
        }
        if (cases[ci].dup) /* four directions, each repeated with perturbations of 1e-4 */
            for (long i = 0; i < n + 25; i++)
                for (int c = 0; c < d; c++) x[i * d + c] = x[(i % 4) * d + c] + (i >= 4 ? x[i * d + c] * 2e-4f : 0);
        const float *q = x + (size_t)n * d;
        rt_index *ix = NULL, *cl = NULL;
        CHECK(rt_index_new("Flat", d, &ix) == SP_OK);
        /* Added in two parts, and searched through a clone too: the 8-bit copy must follow. */
        CHECK(rt_index_add(ix, n / 2, x) == SP_OK);
        CHECK(rt_index_clone(ix, &cl) == SP_OK);
        CHECK(rt_index_add(cl, n - n / 2, x + (size_t)(n / 2) * d) == SP_OK && rt_index_count(cl) == n);
        for (int qi = 0; qi < 5; qi++) {
            if (n > 10000 && qi != 0 && qi != 2) continue; /* the large set: 1 and 8 queries */
            for (int k = 1; k <= 10; k += 9) {
                int bad = compare_search(cl, x, n, d, q, nqs[qi], k);
                CHECKF(bad == 0, "exact search d %d, n %ld%s, %ld queries, k %d: %d mismatches", d, n,
                       cases[ci].dup ? " (near-duplicates)" : "", nqs[qi], k, bad);
            }
        }
        rt_index_free(ix);
        rt_index_free(cl);
        free(x);
    }
}

/* The paper's descriptor through the engine, on the randomly initialised small VGG-16 fixture
 * (tests/fixtures/small, 32 channels at conv5_3): the descriptor is nn_vgg_forward's, the
 * database records the weights' sha256, and a database refuses other weights or pooling. */
static void test_vgg_descriptor(void) {
    const char *vpath = "tests/fixtures/small/vgg16_features.safetensors";
    const char *ppath = "tests/fixtures/small/pconv_unet.safetensors";
    if (!t_exists(vpath)) {
        printf("test_retrieval: SKIP vgg16_features descriptor (%s absent)\n", vpath);
        return;
    }
    nn_backend_opts bo = {0};
    bo.device = NN_DEVICE_CPU;
    bo.threads = 1;
    nn_backend *be = NULL;
    nn_net *vgg = NULL, *pconv = NULL;
    CHECK(nn_backend_new(&bo, &be) == SP_OK);
    if (!be) return;
    CHECKF(nn_net_load(be, vpath, &vgg) == SP_OK, "%s", sp_err_msg());
    if (!vgg) {
        nn_backend_free(be);
        return;
    }
    const nn_net_info *info = nn_net_get_info(vgg);
    enum { VS = 64, NI = 6 };
    rt_descriptor *avg = NULL, *mx = NULL, *bad = NULL;
    CHECK(rt_descriptor_new("vgg16_features:avg", vgg, &avg) == SP_OK);
    CHECK(rt_descriptor_new("vgg16_features:max", vgg, &mx) == SP_OK);
    CHECK(rt_descriptor_dim(avg) == info->out_channels && !strcmp(rt_descriptor_weights_sha256(avg), info->sha256));
    CHECK(strlen(rt_descriptor_weights_sha256(avg)) == 64);
    if (t_exists(ppath) && nn_net_load(be, ppath, &pconv) == SP_OK) {
        CHECK(rt_descriptor_new("vgg16_features:avg", pconv, &bad) == SP_ERR_INVALID && bad == NULL);
        CHECK(strstr(sp_err_msg(), "pconv_unet") != NULL);
    }
    const int dim = rt_descriptor_dim(avg);
    uint8_t *rgb = malloc((size_t)NI * VS * VS * 3);
    float *chw = malloc((size_t)NI * 3 * VS * VS * sizeof *chw);
    float *da = malloc((size_t)NI * dim * sizeof *da), *dm = malloc((size_t)NI * dim * sizeof *dm);
    float *ref = malloc((size_t)NI * dim * sizeof *ref);
    uint8_t *big = malloc(ROW);
    for (int i = 0; i < NI; i++) {
        make_image(40 + i, big);
        for (int y = 0; y < VS; y++) /* every 4th pixel of the 256x256 test image */
            for (int x = 0; x < VS; x++)
                for (int c = 0; c < 3; c++) {
                    uint8_t v = big[((y * 4) * S + x * 4) * 3 + c];
                    rgb[((size_t)i * VS * VS + y * VS + x) * 3 + c] = v;
                    chw[(size_t)i * 3 * VS * VS + c * VS * VS + y * VS + x] = v / 255.0f;
                }
    }
    CHECK(rt_descriptor_compute(avg, NI, VS, chw, da) == SP_OK);
    CHECK(rt_descriptor_compute(mx, NI, VS, chw, dm) == SP_OK);
    CHECK(nn_vgg_forward(vgg, NI, VS, VS, chw, NN_POOL_AVG, NULL, ref) == SP_OK);
    CHECK(!memcmp(da, ref, (size_t)NI * dim * sizeof *da));
    CHECK(memcmp(da, dm, (size_t)NI * dim * sizeof *da) != 0);
    CHECK(rt_descriptor_compute(avg, 1, 40, chw, da) == SP_ERR_INVALID); /* not a multiple of 16 */
    double nn = 0;
    for (int i = 0; i < dim; i++) nn += (double)da[i] * da[i];
    CHECKF(fabs(nn - 1) < 1e-4, "vgg descriptor norm^2 %g", nn);

    char dir[128];
    snprintf(dir, sizeof dir, "%s/vggdb", root);
    const char *names[NI] = {"a", "b", "c", "d", "e", "f"};
    rt_db_builder *b = NULL;
    CHECK(rt_db_builder_new(dir, avg, "Flat", VS, 0, &b) == SP_OK);
    CHECK(rt_db_builder_add(b, NI, rgb, da, names) == SP_OK);
    CHECK(rt_db_builder_finish(b) == SP_OK);
    rt_db_builder_free(b);
    rt_db *db = NULL;
    char peek[64];
    CHECK(rt_db_peek_descriptor(dir, peek, sizeof peek) == SP_OK && !strcmp(peek, "vgg16_features:avg"));
    CHECK(rt_db_peek_descriptor(dir, peek, 5) == SP_ERR_INVALID);
    CHECK(rt_db_open(dir, mx, 0, &db) == SP_ERR_INVALID); /* other pooling */
    CHECK(rt_db_open(dir, avg, 0, &db) == SP_OK);
    if (db) {
        CHECK(!strcmp(rt_db_weights_sha256(db), info->sha256));
        rt_retriever r;
        rt_retriever_init(&r, db, avg, 1);
        int64_t id[NI];
        float sc[NI], *nb = malloc((size_t)NI * 3 * VS * VS * sizeof *nb);
        double dms, sms;
        CHECK(r.hook.query(r.hook.ctx, NI, VS, chw, id, sc, nb, &dms, &sms) == SP_OK);
        for (int i = 0; i < NI; i++) CHECKF(id[i] == i && sc[i] > 0.9999f, "vgg query %d -> %lld (%f)", i, (long long)id[i], sc[i]);
        CHECK(!memcmp(nb, chw, (size_t)NI * 3 * VS * VS * sizeof *nb));
        free(nb);
        rt_db_close(db);
    }
    remove_dir(dir);
    free(rgb);
    free(chw);
    free(da);
    free(dm);
    free(ref);
    free(big);
    rt_descriptor_free(avg);
    rt_descriptor_free(mx);
    nn_net_free(vgg);
    nn_net_free(pconv);
    nn_backend_free(be);
}

typedef struct {
    rt_db *db;
    const float *desc;
    int n, bad, runs;
    volatile int stop;
} searcher;

/* Searches the first n descriptors over and over while the main thread appends. */
static void *search_loop(void *arg) {
    searcher *s = arg;
    while (!s->stop) {
        for (int i = 0; i < s->n; i++) {
            int64_t id;
            float sc;
            if (rt_db_search(s->db, 1, s->desc + (size_t)i * 768, 1, &id, &sc) != SP_OK || id != i) s->bad++;
            const uint8_t *p = rt_db_image_rgb(s->db, i);
            if (!p) s->bad++;
        }
        s->runs++;
    }
    return NULL;
}

/* ---- the database lock and rebuilds ---- */

/* Takes dir/lock as another process's writer would; returns the descriptor (close to unlock). */
static int hold_lock(const char *dir) {
    char p[300];
    snprintf(p, sizeof p, "%s/lock", dir);
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    CHECK(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0);
    return fd;
}

/* Closes `fd` (releasing its lock) after `after_s` seconds, on a thread of its own. */
typedef struct {
    int fd;
    double after_s;
} unlocker;

static void *unlock_later(void *arg) {
    unlocker *u = arg;
    usleep((useconds_t)(u->after_s * 1e6));
    close(u->fd);
    return NULL;
}

/* One write on a thread of its own: an append of one image to `db`, or the finish of `b`. */
typedef struct {
    rt_db *db;
    rt_db_builder *b;
    const uint8_t *rgb;
    const float *desc;
    const char *const *names;
    sp_status st;
} writer_job;

static void *add_job(void *arg) {
    writer_job *j = arg;
    j->st = rt_db_add(j->db, 1, j->rgb, j->desc, j->names, NULL);
    return NULL;
}

static void *finish_job(void *arg) {
    writer_job *j = arg;
    j->st = rt_db_builder_finish(j->b);
    return NULL;
}

/* `dir` holds exactly images [first, first+n) of the test set, opens, and finds them. */
static void check_db_holds(const char *what, const char *dir, rt_descriptor *d, const uint8_t *rgb, const float *desc,
                           const char *const *np, int first, int n) {
    rt_db *db = NULL;
    sp_status st = rt_db_open(dir, d, 0, &db);
    CHECKF(st == SP_OK, "%s: %s", what, sp_err_msg());
    if (!db) return;
    CHECKF(rt_db_count(db) == n, "%s: %ld images, want %d", what, rt_db_count(db), n);
    for (int i = 0; i < n && i < rt_db_count(db); i++) {
        const uint8_t *px = rt_db_image_rgb(db, i);
        CHECKF(px && !memcmp(px, rgb + (size_t)(first + i) * ROW, ROW), "%s: image %d", what, i);
        CHECKF(!strcmp(rt_db_source_name(db, i), np[first + i]), "%s: name %d", what, i);
        int64_t id;
        float sc;
        CHECKF(rt_db_search(db, 1, desc + (size_t)(first + i) * 768, 1, &id, &sc) == SP_OK && id == i,
               "%s: image %d finds %lld", what, i, (long long)id);
    }
    rt_db_close(db);
}

/* Builds (or with replace, rebuilds) `dir` from images [first, first+n). */
static sp_status build_db(const char *dir, rt_descriptor *d, const uint8_t *rgb, const float *desc,
                          const char *const *np, int first, int n, int replace, double lock_wait) {
    rt_db_builder *b = NULL;
    sp_status st = rt_db_builder_new(dir, d, "Flat", S, replace, &b);
    if (!st) rt_db_builder_set_lock_wait(b, lock_wait);
    if (!st) st = rt_db_builder_add(b, n, rgb + (size_t)first * ROW, desc + (size_t)first * 768, np + first);
    if (!st) st = rt_db_builder_finish(b);
    rt_db_builder_free(b);
    return st;
}

/* Finding 5 of issue 15: `index build --force` over a database that another handle (the daemon's)
 * has open and appends to. Writers exclude each other through the database lock, and a handle
 * whose directory was replaced refuses to append instead of writing its old rows and manifest
 * into the new database. Images [0, 6) make the first database, [6, 10) its replacement. */
static void test_lock_and_rebuild(rt_descriptor *d, const uint8_t *rgb, const float *desc, const char *const *np) {
    char dir[128], tmp[160], p[300];
    snprintf(dir, sizeof dir, "%s/lockdb", root);
    CHECK(build_db(dir, d, rgb, desc, np, 0, 5, 0, 0) == SP_OK);
    rt_db *a = NULL; /* the long-lived handle, as the daemon's */
    CHECK(rt_db_open(dir, d, 1, &a) == SP_OK);
    if (!a) return;

    /* Another writer holds the lock: an append fails at once (or after its bounded wait) with
     * SP_ERR_BUSY naming the database, and writes nothing. */
    int fd = hold_lock(dir);
    rt_db_set_lock_wait(a, 0);
    double t0 = sp_now();
    sp_status st = rt_db_add(a, 1, rgb + 5 * ROW, desc + 5 * 768, np + 5, NULL);
    double waited = sp_now() - t0;
    CHECKF(st == SP_ERR_BUSY && strstr(sp_err_msg(), dir) && strstr(sp_err_msg(), "another process is writing"),
           "append under another's lock: %s: %s", sp_status_name(st), sp_err_msg());
    CHECKF(waited < 1.0, "a wait of 0 took %.2f s", waited);
    rt_db_set_lock_wait(a, 0.3);
    t0 = sp_now();
    CHECK(rt_db_add(a, 1, rgb + 5 * ROW, desc + 5 * 768, np + 5, NULL) == SP_ERR_BUSY);
    waited = sp_now() - t0;
    CHECKF(waited >= 0.29 && waited < 3, "a wait of 0.3 s took %.2f s", waited);
    CHECK(rt_db_count(a) == 5 && manifest_num(dir, "count") == 5 && manifest_num(dir, "generation") == 1);
    /* ... and so does a --force rebuild, which leaves the database as it was and keeps nothing. */
    st = build_db(dir, d, rgb, desc, np, 6, 4, 1, 0.2);
    CHECKF(st == SP_ERR_BUSY && strstr(sp_err_msg(), "another process is writing") && strstr(sp_err_msg(), "not replaced"),
           "rebuild under another's lock: %s: %s", sp_status_name(st), sp_err_msg());
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", dir, (int)getpid());
    CHECK(!t_exists(tmp));
    check_db_holds("after the refused rebuild", dir, d, rgb, desc, np, 0, 5);
    /* A writer that waits gets the lock once it is released. */
    unlocker u = {fd, 0.2};
    pthread_t th;
    pthread_create(&th, NULL, unlock_later, &u);
    rt_db_set_lock_wait(a, 10);
    int64_t id = -1;
    st = rt_db_add(a, 1, rgb + 5 * ROW, desc + 5 * 768, np + 5, &id);
    CHECKF(st == SP_OK && id == 5, "append after the lock is released: %s", sp_err_msg());
    pthread_join(th, NULL);
    check_db_holds("after the append", dir, d, rgb, desc, np, 0, 6);

    /* The rebuild, while `a` is open: then `a`'s append is refused, and the new database is intact. */
    CHECK(build_db(dir, d, rgb, desc, np, 6, 4, 1, 5) == SP_OK);
    snprintf(p, sizeof p, "%s.old-%d.tmp", dir, (int)getpid());
    CHECK(!t_exists(tmp) && !t_exists(p)); /* the old database is gone */
    for (int round = 0; round < 2; round++) { /* and stays refused: a stale handle stays stale */
        st = rt_db_add(a, 1, rgb + 5 * ROW, desc + 5 * 768, np + 5, NULL);
        CHECKF(st == SP_ERR_STALE && strstr(sp_err_msg(), dir) && strstr(sp_err_msg(), "rebuilt") &&
               strstr(sp_err_msg(), "nothing written"), "stale append: %s: %s", sp_status_name(st), sp_err_msg());
    }
    CHECK(rt_db_count(a) == 6); /* the handle still serves what it had */
    CHECK(manifest_num(dir, "count") == 4 && manifest_num(dir, "generation") == 1);
    snprintf(p, sizeof p, "%s/index.1.faiss", dir);
    CHECK(t_exists(p));
    check_db_holds("the rebuilt database", dir, d, rgb, desc, np, 6, 4);
    rt_db_close(a);
    /* Reopened, the handle appends to the new database. */
    CHECK(rt_db_open(dir, d, 1, &a) == SP_OK);
    CHECK(a && rt_db_add(a, 1, rgb + 10 * ROW, desc + 10 * 768, np + 10, &id) == SP_OK && id == 4);
    rt_db_close(a);
    check_db_holds("the rebuilt database after an append", dir, d, rgb, desc, np, 6, 5);

    /* A rebuild and an append both waiting on the lock of the database being replaced: whichever
     * goes first, the append lands in the old database or is refused, never in the new one. */
    CHECK(rt_db_open(dir, d, 1, &a) == SP_OK);
    if (!a) return;
    fd = hold_lock(dir);
    rt_db_set_lock_wait(a, 10);
    rt_db_builder *b = NULL;
    CHECK(rt_db_builder_new(dir, d, "Flat", S, 1, &b) == SP_OK);
    if (!b) return;
    rt_db_builder_set_lock_wait(b, 10);
    CHECK(rt_db_builder_add(b, 3, rgb, desc, np) == SP_OK);
    writer_job ja = {a, NULL, rgb + 11 * ROW, desc + 11 * 768, np + 11, SP_OK};
    writer_job jb = {NULL, b, NULL, NULL, NULL, SP_OK};
    pthread_t ta, tb;
    pthread_create(&tb, NULL, finish_job, &jb);
    pthread_create(&ta, NULL, add_job, &ja);
    usleep(100000);
    close(fd);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECKF(jb.st == SP_OK, "rebuild: %s", sp_status_name(jb.st));
    CHECKF(ja.st == SP_OK || ja.st == SP_ERR_STALE, "append racing the rebuild: %s", sp_status_name(ja.st));
    printf("  append racing a rebuild: %s\n", ja.st == SP_OK ? "went first" : "refused as stale");
    rt_db_builder_free(b);
    rt_db_close(a);
    check_db_holds("rebuilt while an append waited", dir, d, rgb, desc, np, 0, 3);
    remove_dir(dir);
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/test_retrieval.XXXXXX");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    test_descriptors();
    test_exact_search();
    test_vgg_descriptor();

    const int N = 12, M = 4;
    rt_descriptor *d = NULL;
    CHECK(rt_descriptor_new("thumb16", NULL, &d) == SP_OK);
    uint8_t *rgb = malloc((size_t)(N + M) * ROW);
    float *desc = malloc((size_t)(N + M) * 768 * sizeof *desc);
    make_batch(d, 0, N + M, rgb, desc);
    char names[16][32];
    const char *np[16];
    for (int i = 0; i < N + M; i++) {
        name_of(i, names[i], sizeof names[i]);
        np[i] = names[i];
    }
    /* The test images must be told apart by the descriptor at all. */
    double maxcos = 0;
    for (int i = 0; i < N + M; i++)
        for (int j = 0; j < i; j++) {
            double c = 0;
            for (int k = 0; k < 768; k++) c += desc[i * 768 + k] * desc[j * 768 + k];
            if (c > maxcos) maxcos = c;
        }
    CHECKF(maxcos < 0.99, "two test images have cosine %.4f", maxcos);

    /* ---- build ---- */
    char dbdir[128], tmp[160];
    snprintf(dbdir, sizeof dbdir, "%s/db", root);
    rt_db_builder *b = NULL;
    CHECK(rt_db_builder_new(dbdir, d, "NoSuchIndex", S, 0, &b) != SP_OK && b == NULL);
    CHECK(rt_db_builder_new(dbdir, d, "Flat", S, 0, &b) == SP_OK);
    CHECK(rt_db_builder_add(b, 5, rgb, desc, np) == SP_OK);
    CHECK(rt_db_builder_add(b, N - 5, rgb + 5 * ROW, desc + 5 * 768, np + 5) == SP_OK);
    float notnorm[768] = {1, 1};
    CHECK(rt_db_builder_add(b, 1, rgb, notnorm, np) == SP_ERR_INVALID); /* not L2-normalised */
    CHECK(rt_db_builder_count(b) == N);
    CHECK(!t_exists(dbdir)); /* nothing at the destination until finish */
    CHECK(rt_db_builder_finish(b) == SP_OK);
    rt_db_builder_free(b);
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", dbdir, (int)getpid());
    CHECK(t_exists(dbdir) && !t_exists(tmp));
    CHECK(rt_db_builder_new(dbdir, d, "Flat", S, 0, &b) == SP_ERR_INVALID); /* exists */

    /* An abandoned build leaves nothing behind. */
    char dbdir2[128];
    snprintf(dbdir2, sizeof dbdir2, "%s/abandoned", root);
    CHECK(rt_db_builder_new(dbdir2, d, "Flat", S, 0, &b) == SP_OK);
    CHECK(rt_db_builder_add(b, 2, rgb, desc, np) == SP_OK);
    rt_db_builder_free(b);
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", dbdir2, (int)getpid());
    CHECK(!t_exists(dbdir2) && !t_exists(tmp));

    /* ---- open and query ---- */
    rt_db *db = NULL;
    CHECK(rt_db_open(dbdir, d, 0, &db) == SP_OK);
    if (!db) return t_done("test_retrieval");
    CHECK(rt_db_count(db) == N && rt_db_size(db) == S && rt_db_dim(db) == 768);
    CHECK(!strcmp(rt_db_descriptor(db), "thumb16") && !strcmp(rt_db_factory(db), "Flat"));
    CHECK(rt_db_generation(db) == 1);
    CHECK(rt_db_source_name(db, 3) && !strcmp(rt_db_source_name(db, 3), "img003.png"));
    CHECK(rt_db_source_name(db, N) == NULL && rt_db_source_name(db, -1) == NULL);
    int64_t ids[3 * N];
    float sc[3 * N];
    CHECK(rt_db_search(db, N, desc, 3, ids, sc) == SP_OK);
    for (int i = 0; i < N; i++) {
        CHECKF(ids[3 * i] == i, "query %d found %lld first", i, (long long)ids[3 * i]);
        CHECKF(fabsf(sc[3 * i] - 1) < 1e-4f, "query %d self score %f", i, sc[3 * i]);
        CHECK(sc[3 * i + 1] <= sc[3 * i] && sc[3 * i + 2] <= sc[3 * i + 1]);
        CHECK(ids[3 * i + 1] != i && ids[3 * i + 1] >= 0);
    }
    const uint8_t *p0 = rt_db_image_rgb(db, 7);
    CHECK(p0 && !memcmp(p0, rgb + 7 * ROW, ROW));
    CHECK(rt_db_image_rgb(db, N) == NULL && rt_db_image_rgb(db, -1) == NULL);
    float *chw = malloc(3 * S * S * sizeof *chw);
    CHECK(rt_db_image(db, 2, chw) == SP_OK);
    CHECK(fabsf(chw[0] - rgb[2 * ROW] / 255.f) < 1e-7f && fabsf(chw[S * S + 5] - rgb[2 * ROW + 16] / 255.f) < 1e-7f);
    CHECK(rt_db_image(db, N, chw) == SP_ERR_INVALID);
    CHECK(rt_db_add(db, 1, rgb, desc, np, NULL) == SP_ERR_INVALID); /* read-only */
    CHECK(rt_db_set_search_param(db, "nprobe", 4) != SP_OK);          /* a Flat index has none */

    /* The retriever hook: composites that are stored images find themselves and get their pixels. */
    rt_retriever r;
    rt_retriever_init(&r, db, d, 2);
    float *comp = malloc((size_t)2 * 3 * S * S * sizeof *comp), *nb = malloc((size_t)4 * 3 * S * S * sizeof *nb);
    to_chw(rgb + 4 * ROW, comp);
    to_chw(rgb + 9 * ROW, comp + 3 * S * S);
    int64_t rid[4];
    float rsc[4];
    double dms = -1, sms = -1;
    CHECK(r.hook.k == 2 && r.hook.ctx == &r);
    CHECK(r.hook.query(r.hook.ctx, 2, S, comp, rid, rsc, nb, &dms, &sms) == SP_OK);
    CHECK(rid[0] == 4 && rid[2] == 9 && rsc[0] > 0.9999f && dms >= 0 && sms >= 0);
    CHECK(!memcmp(nb, comp, 3 * S * S * sizeof *nb));
    CHECK(!memcmp(nb + 2 * 3 * S * S, comp + 3 * S * S, 3 * S * S * sizeof *nb));
    CHECK(r.hook.query(r.hook.ctx, 1, 128, comp, rid, rsc, nb, &dms, &sms) == SP_ERR_INVALID); /* wrong size */
    rt_retriever_init(&r, db, d, N + 1);
    int64_t bid[N + 1];
    float bsc[N + 1];
    float *bnb = malloc((size_t)(N + 1) * 3 * S * S * sizeof *bnb);
    CHECK(r.hook.query(r.hook.ctx, 1, S, comp, bid, bsc, bnb, &dms, &sms) == SP_ERR_INVALID); /* k > count */
    free(bnb);
    rt_db_close(db);

    /* ---- descriptor mismatch ---- */
    rt_descriptor *d8 = NULL;
    CHECK(rt_descriptor_new("thumb8", NULL, &d8) == SP_OK);
    expect_refused("wrong descriptor", dbdir, d8, SP_ERR_INVALID, "manifest.json", "thumb8");
    CHECK(rt_db_open(dbdir, NULL, 0, &db) == SP_OK); /* NULL skips the check (index info) */
    rt_db_close(db);

    /* ---- append ---- */
    CHECK(rt_db_open(dbdir, d, 1, &db) == SP_OK);
    rt_db *db2 = NULL, *db3 = NULL;
    CHECK(rt_db_open(dbdir, d, 0, &db2) == SP_OK); /* readers are fine */
    rt_db_close(db2);
    CHECK(rt_db_open(dbdir, d, 1, &db3) == SP_OK); /* so is a second writable handle; see below */
    const uint8_t *before = rt_db_image_rgb(db, 7);
    searcher sr = {db, desc, N, 0, 0, 0};
    pthread_t th;
    pthread_create(&th, NULL, search_loop, &sr);
    int64_t nid[M];
    CHECK(rt_db_add(db, 1, rgb + N * ROW, desc + N * 768, np + N, nid) == SP_OK);
    CHECK(nid[0] == N);
    CHECK(rt_db_add(db, M - 1, rgb + (N + 1) * ROW, desc + (N + 1) * 768, np + N + 1, nid + 1) == SP_OK);
    CHECK(nid[1] == N + 1 && nid[M - 1] == N + M - 1);
    CHECK(rt_db_add(db, 1, rgb, notnorm, np, NULL) == SP_ERR_INVALID);
    sr.stop = 1;
    pthread_join(th, NULL);
    CHECKF(sr.bad == 0 && sr.runs > 0, "concurrent searches: %d bad of %d runs", sr.bad, sr.runs);
    CHECK(rt_db_count(db) == N + M && rt_db_generation(db) == 3);
    /* The second handle still holds generation 1: its append would cut off the first one's. */
    sp_status st3 = rt_db_add(db3, 1, rgb, desc, np, NULL);
    CHECKF(st3 == SP_ERR_STALE && strstr(sp_err_msg(), dbdir) && strstr(sp_err_msg(), "appended"), "%s: %s",
           sp_status_name(st3), sp_err_msg());
    CHECK(rt_db_count(db3) == N && manifest_num(dbdir, "count") == N + M && manifest_num(dbdir, "generation") == 3);
    rt_db_close(db3);
    CHECK(before == rt_db_image_rgb(db, 7) && !memcmp(before, rgb + 7 * ROW, ROW)); /* old pointers stay valid */
    CHECK(rt_db_search(db, N + M, desc, 1, ids, sc) == SP_OK);
    for (int i = 0; i < N + M; i++) CHECKF(ids[i] == i && sc[i] > 0.9999f, "after add, query %d -> %lld", i, (long long)ids[i]);
    CHECK(!strcmp(rt_db_source_name(db, N + 2), "img014.png"));
    rt_db_close(db);
    char p[300];
    snprintf(p, sizeof p, "%s/index.1.faiss", dbdir);
    CHECK(!t_exists(p)); /* the old generation's index is gone */

    CHECK(rt_db_open(dbdir, d, 0, &db) == SP_OK);
    CHECK(rt_db_count(db) == N + M);
    CHECK(rt_db_search(db, 1, desc + (N + M - 1) * 768, 1, ids, sc) == SP_OK && ids[0] == N + M - 1);
    CHECK(!memcmp(rt_db_image_rgb(db, N + M - 1), rgb + (size_t)(N + M - 1) * ROW, ROW));
    CHECK(!strcmp(rt_db_source_name(db, N + M - 1), "img015.png"));
    rt_db_close(db);

    /* Uncommitted bytes past the committed end (a killed append) are ignored, then overwritten. */
    char spath[300];
    snprintf(spath, sizeof spath, "%s/images.u8", dbdir);
    int fd = open(spath, O_WRONLY | O_APPEND);
    CHECK(fd >= 0 && write(fd, rgb, ROW / 2) == ROW / 2);
    close(fd);
    snprintf(p, sizeof p, "%s/names.txt", dbdir);
    fd = open(p, O_WRONLY | O_APPEND);
    CHECK(fd >= 0 && write(fd, "half", 4) == 4);
    close(fd);
    snprintf(p, sizeof p, "%s/index.9.faiss", dbdir);
    CHECK(copy_file(spath, p) == 0); /* a stale, unnamed index file */
    CHECK(rt_db_open(dbdir, d, 1, &db) == SP_OK);
    CHECK(rt_db_count(db) == N + M);
    CHECK(!t_exists(p)); /* removed by the writable open */
    CHECK(rt_db_add(db, 1, rgb + 3 * ROW, desc + 3 * 768, NULL, nid) == SP_OK && nid[0] == N + M);
    CHECK(rt_db_source_name(db, N + M) && !strcmp(rt_db_source_name(db, N + M), ""));
    rt_db_close(db);
    CHECK(rt_db_open(dbdir, d, 0, &db) == SP_OK);
    CHECK(rt_db_count(db) == N + M + 1);
    CHECK(!memcmp(rt_db_image_rgb(db, N + M), rgb + 3 * ROW, ROW));
    CHECK(rt_db_search(db, 1, desc + 3 * 768, 2, ids, sc) == SP_OK);
    CHECK((ids[0] == 3 || ids[0] == N + M) && (ids[1] == 3 || ids[1] == N + M) && sc[1] > 0.9999f);
    rt_db_close(db);
    const long count = N + M + 1;

    /* ---- broken databases ---- */
    char bad[128], f[300];
    snprintf(bad, sizeof bad, "%s/bad", root);
    const char *idx = "index.4.faiss";

    copy_db(dbdir, bad);
    CHECK(rt_db_open(bad, d, 0, &db) == SP_OK); /* the copy itself is fine */
    rt_db_close(db);

    snprintf(f, sizeof f, "%s/images.u8", bad);
    fd = open(f, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, "X", 1, 0) == 1);
    close(fd);
    expect_refused("bad magic", bad, d, SP_ERR_FORMAT, "images.u8", "magic");

    copy_db(dbdir, bad);
    CHECK(truncate(f, 4096 + (count - 1) * (off_t)ROW + 100) == 0);
    expect_refused("truncated store", bad, d, SP_ERR_FORMAT, "images.u8", "truncated");
    CHECK(truncate(f, 100) == 0);
    expect_refused("store shorter than its header", bad, d, SP_ERR_FORMAT, "images.u8", "truncated");

    copy_db(dbdir, bad);
    edit_manifest(bad, "count", count + 1, NULL);
    expect_refused("manifest count above the store's", bad, d, SP_ERR_FORMAT, "images.u8", "manifest");

    copy_db(dbdir, bad);
    /* One image fewer in the manifest, names cut to match: the index holds one vector too many. */
    edit_manifest(bad, "count", count - 1, NULL);
    edit_manifest(bad, "names_bytes", manifest_num(bad, "names_bytes") - 1, NULL); /* last name "" = 1 byte */
    expect_refused("index count mismatch", bad, d, SP_ERR_FORMAT, idx, "vectors");

    copy_db(dbdir, bad);
    edit_manifest(bad, "count", count - 1, NULL);
    expect_refused("names count mismatch", bad, d, SP_ERR_FORMAT, "names.txt", "names");

    copy_db(dbdir, bad);
    snprintf(f, sizeof f, "%s/names.txt", bad);
    CHECK(truncate(f, 10) == 0);
    expect_refused("truncated names", bad, d, SP_ERR_FORMAT, "names.txt", "truncated");

    copy_db(dbdir, bad);
    edit_manifest(bad, "descriptor", 0, "thumb8");
    expect_refused("manifest descriptor differs", bad, d, SP_ERR_INVALID, "manifest.json", "thumb8");
    edit_manifest(bad, "dim", 192, NULL);
    expect_refused("index dim differs from manifest", bad, d8, SP_ERR_FORMAT, idx, "dimensions");

    copy_db(dbdir, bad);
    edit_manifest(bad, "descriptor_weights_sha256", 0, "00ff");
    expect_refused("weights sha256 differs", bad, d, SP_ERR_INVALID, "manifest.json", "sha256");

    copy_db(dbdir, bad);
    edit_manifest(bad, "format", 2, NULL);
    expect_refused("future format", bad, d, SP_ERR_FORMAT, "manifest.json", "format");

    copy_db(dbdir, bad);
    edit_manifest(bad, "index_file", 0, "../elsewhere.faiss");
    expect_refused("index path escapes", bad, d, SP_ERR_FORMAT, "manifest.json", "index");

    copy_db(dbdir, bad);
    snprintf(f, sizeof f, "%s/manifest.json", bad);
    unlink(f);
    expect_refused("missing manifest", bad, d, SP_ERR_IO, "manifest.json", "not a semipaint database");
    CHECK(rt_db_open(bad, d, 1, &db) == SP_ERR_IO); /* writable too, and no lock file made */

    copy_db(dbdir, bad);
    CHECK(sp_write_file_atomic(f, "{\"format\": 1, \"count\": ", 23) == SP_OK);
    expect_refused("corrupt manifest JSON", bad, d, SP_ERR_FORMAT, "manifest.json", "JSON");
    CHECK(sp_write_file_atomic(f, "[1,2]", 5) == SP_OK);
    expect_refused("manifest not an object", bad, d, SP_ERR_FORMAT, "manifest.json", "object");

    copy_db(dbdir, bad);
    snprintf(f, sizeof f, "%s/%s", bad, idx);
    CHECK(truncate(f, 200) == 0);
    expect_refused("truncated index", bad, d, SP_ERR_FORMAT, idx, "FAISS");
    unlink(f);
    expect_refused("missing index", bad, d, SP_ERR_IO, idx, NULL);

    copy_db(dbdir, bad);
    snprintf(f, sizeof f, "%s/images.u8", bad);
    unlink(f);
    expect_refused("missing store", bad, d, SP_ERR_IO, "images.u8", NULL);
    expect_refused("not a directory", "/nonexistent/db", d, SP_ERR_IO, "/nonexistent/db", NULL);
    remove_dir(bad);

    /* --force never replaces a folder that is not a database. */
    char notdb[160];
    snprintf(notdb, sizeof notdb, "%s/notdb", root);
    mkdir(notdb, 0755);
    snprintf(f, sizeof f, "%s/photo.jpg", notdb);
    CHECK(sp_write_file_atomic(f, "x", 1) == SP_OK);
    CHECK(rt_db_builder_new(notdb, d, "Flat", S, 1, &b) == SP_ERR_INVALID && b == NULL);
    CHECK(t_exists(f));
    remove_dir(notdb);

    /* ---- an approximate index, replacing a database as a whole ---- */
    CHECK(rt_db_builder_new(dbdir, d, "IVF2,Flat", S, 1, &b) == SP_OK);
    CHECK(rt_db_builder_add(b, N + M, rgb, desc, np) == SP_OK);
    CHECK(rt_db_builder_finish(b) == SP_OK);
    rt_db_builder_free(b);
    CHECK(rt_db_open(dbdir, d, 1, &db) == SP_OK);
    CHECK(rt_db_count(db) == N + M && !strcmp(rt_db_factory(db), "IVF2,Flat") && rt_db_generation(db) == 1);
    CHECK(rt_db_set_search_param(db, "nprobe", 2) == SP_OK);
    CHECK(rt_db_set_search_param(db, "bogus", 2) == SP_ERR_INVALID);
    CHECK(rt_db_search(db, N + M, desc, 1, ids, sc) == SP_OK);
    int self = 0;
    for (int i = 0; i < N + M; i++) self += ids[i] == i;
    CHECKF(self == N + M, "IVF with nprobe = nlist: %d of %d find themselves", self, N + M);
    CHECK(rt_db_add(db, 1, rgb, desc, np, nid) == SP_OK && nid[0] == N + M);
    rt_db_close(db);

    test_lock_and_rebuild(d, rgb, desc, np);

    rt_descriptor_free(d8);
    rt_descriptor_free(d);
    free(rgb);
    free(desc);
    free(chw);
    free(comp);
    free(nb);
    remove_dir(dbdir);
    rmdir(root);
    return t_done("test_retrieval");
}
