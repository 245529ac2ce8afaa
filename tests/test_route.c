/* test_route.c: model=auto's router: loading and refusing router files, the domain and gate features on hand-made crops, the models' arithmetic, and the shipped router against the golden rows its fit wrote. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/request.h"
#include "core/route.h"
#include "model/st.h"
#include "tests/t.h"

#define DF CORE_ROUTE_DOMAIN_NFEAT
#define GF CORE_ROUTE_NFEAT

static char dir[] = "/tmp/test_route_XXXXXX";

/* A hand-made router: domain = linear (2, DF) with one non-zero input per class (or, hidden > 0, a
 * hidden layer), gates with known weights. The metadata is `meta` (NULL: a valid set). */
typedef struct {
    float dmu[DF], dsd[DF], dw[3 * DF], db[3];
    float w1[4 * DF], b1[4], w2[2 * 4];
    float gmu[GF], gsd[GF], gw[2][GF], gb[2][1];
} tiny;

static void tiny_init(tiny *t) {
    memset(t, 0, sizeof *t);
    for (int i = 0; i < DF; i++) t->dmu[i] = 0.5f, t->dsd[i] = 0.25f;
    t->dw[0 * DF + 0] = 2.0f;   /* faces: cell (0,0) red */
    t->dw[1 * DF + 128] = 1.5f; /* general: cell (0,0) blue */
    t->db[0] = 0.1f, t->db[1] = -0.2f;
    for (int i = 0; i < DF; i++) t->w1[i] = i == 0 ? 1.0f : 0.0f; /* hidden 0 = red of cell (0,0) */
    t->w1[1 * DF + 128] = 1.0f;                                      /* hidden 1 = its blue */
    t->b1[2] = 0.5f, t->b1[3] = -0.5f;
    t->w2[0] = 1.0f, t->w2[1] = -1.0f, t->w2[4 + 1] = 2.0f, t->w2[4 + 2] = 0.3f;
    for (int i = 0; i < GF; i++) t->gmu[i] = 0.1f * i, t->gsd[i] = 1.0f + 0.5f * i;
    for (int i = 0; i < GF; i++) t->gw[0][i] = 0.2f * (i + 1), t->gw[1][i] = -0.1f * i;
    t->gb[0][0] = -0.3f, t->gb[1][0] = 0.4f;
}

static const char *good_meta =
    "{\"kind\":\"semipaint router\",\"format\":\"1\",\"classes\":\"faces,general\",\"domain_features\":\"" CORE_ROUTE_DOMAIN_FEATURES
    "\",\"gate_features\":\"" CORE_ROUTE_GATE_FEATURES "\",\"domain_size\":\"256\",\"threshold.faces\":\"0.25\","
    "\"threshold.general\":\"0.75\",\"size.faces\":\"256\",\"size.general\":\"128\"}";

/* Writes `t` as a router file (hidden layer when `hidden`; the domain's w of `dw_rows` rows) with `meta`. */
static void write_router(const char *path, const tiny *t, int hidden, const char *meta, int dw_rows) {
    const char *names[16];
    int nd[16];
    int64_t sh[16][2];
    const int64_t *shp[16];
    const float *data[16];
    int n = 0;
#define ADD(nm, d, a, b, nd_)                                                                                         \
    do {                                                                                                              \
        names[n] = nm, data[n] = d, sh[n][0] = a, sh[n][1] = b, nd[n] = nd_, shp[n] = sh[n];                          \
        n++;                                                                                                          \
    } while (0)
    ADD("domain.mu", t->dmu, DF, 0, 1);
    ADD("domain.sd", t->dsd, DF, 0, 1);
    if (hidden) {
        ADD("domain.w1", t->w1, 4, DF, 2);
        ADD("domain.b1", t->b1, 4, 0, 1);
        ADD("domain.w", t->w2, dw_rows, 4, 2);
    } else {
        ADD("domain.w", t->dw, dw_rows, DF, 2);
    }
    ADD("domain.b", t->db, dw_rows, 0, 1);
    ADD("gate.faces.mu", t->gmu, GF, 0, 1);
    ADD("gate.faces.sd", t->gsd, GF, 0, 1);
    ADD("gate.faces.w", t->gw[0], 1, GF, 2);
    ADD("gate.faces.b", t->gb[0], 1, 0, 1);
    ADD("gate.general.mu", t->gmu, GF, 0, 1);
    ADD("gate.general.sd", t->gsd, GF, 0, 1);
    ADD("gate.general.w", t->gw[1], 1, GF, 2);
    ADD("gate.general.b", t->gb[1], 1, 0, 1);
#undef ADD
    CHECKF(st_write_f32(path, n, names, nd, shp, data, meta) == SP_OK, "%s", sp_err_msg());
}

/* A crop of side s: every pixel (r,g,b), the known ones where hole() is 0; hole pixels hold junk. */
static void fill_crop(int s, float *x, float *m, float r, float g, float b, int (*hole)(int, int, int)) {
    const size_t s2 = (size_t)s * s;
    for (int y = 0; y < s; y++)
        for (int xx = 0; xx < s; xx++) {
            size_t i = (size_t)y * s + xx;
            int h = hole ? hole(xx, y, s) : 0;
            m[i] = h ? 0.0f : 1.0f;
            x[i] = h ? 0.93f : r;
            x[s2 + i] = h ? 0.07f : g;
            x[2 * s2 + i] = h ? 0.51f : b;
        }
}

static int hole_centre(int x, int y, int s) { return x >= s / 4 && x < 3 * s / 4 && y >= s / 4 && y < 3 * s / 4; }
static int hole_top_left_cell(int x, int y, int s) { return x < s / 8 && y < s / 8; }
static int hole_square4(int x, int y, int s) { return x >= s / 2 && x < s / 2 + 4 && y >= s / 2 && y < s / 2 + 4; }

static float sigm(float z) { return 1.0f / (1.0f + expf(-z)); }

static void test_load_and_models(void) {
    char path[256];
    snprintf(path, sizeof path, "%s/r.safetensors", dir);
    tiny t;
    tiny_init(&t);
    write_router(path, &t, 0, good_meta, 2);
    core_router *r = NULL;
    CHECKF(core_router_load(path, &r) == SP_OK, "%s", sp_err_msg());
    if (!r) return;
    CHECK(core_router_nclasses(r) == 2);
    CHECK(!strcmp(core_router_class(r, 0), "faces") && !strcmp(core_router_class(r, 1), "general"));
    CHECK(core_router_class(r, 2) == NULL && core_router_class(r, -1) == NULL);
    CHECK(core_router_find(r, "general") == 1 && core_router_find(r, "cats") == -1);
    CHECK(core_router_domain_size(r) == 256);
    CHECK(fabsf(core_router_threshold(r, 0) - 0.25f) < 1e-7f && fabsf(core_router_threshold(r, 1) - 0.75f) < 1e-7f);
    CHECK(core_router_gate_size(r, 0) == 256 && core_router_gate_size(r, 1) == 128);
    CHECK(strlen(core_router_sha256(r)) == 64);

    /* the domain softmax, by hand */
    float f[DF], p[2];
    for (int i = 0; i < DF; i++) f[i] = 0.5f;
    f[0] = 0.9f, f[128] = 0.3f;
    core_router_domain_probs(r, f, p);
    float l0 = 0.1f + 2.0f * (0.9f - 0.5f) / 0.25f, l1 = -0.2f + 1.5f * (0.3f - 0.5f) / 0.25f;
    float want0 = 1.0f / (1.0f + expf(l1 - l0));
    CHECKF(fabsf(p[0] - want0) < 1e-6f && fabsf(p[0] + p[1] - 1.0f) < 1e-6f, "p %g %g, want %g", p[0], p[1], want0);

    /* the gate's logistic, by hand */
    core_route_feat g;
    for (int i = 0; i < GF; i++) g.v[i] = 0.3f * i - 0.2f;
    for (int c = 0; c < 2; c++) {
        float z = t.gb[c][0];
        for (int i = 0; i < GF; i++) z += t.gw[c][i] * (g.v[i] - t.gmu[i]) / t.gsd[i];
        float got = core_router_gate(r, c, &g);
        CHECKF(fabsf(got - sigm(z)) < 1e-6f, "gate %d: %g, want %g", c, got, sigm(z));
    }
    CHECK(core_router_gate(r, 2, &g) == -1.0f);
    /* nets when the gate reaches the threshold (0.25 for faces, 0.75 for general) */
    for (int c = 0; c < 2; c++)
        CHECK(core_router_use_nets(r, c, &g) == (core_router_gate(r, c, &g) >= core_router_threshold(r, c)));
    CHECK(core_router_use_nets(r, 5, &g) == 0);
    float pc[2] = {0.4f, 0.6f};
    CHECK(core_router_choose(r, pc) == 1);
    pc[0] = 0.6f, pc[1] = 0.4f;
    CHECK(core_router_choose(r, pc) == 0);
    pc[1] = 0.6f;
    CHECK(core_router_choose(r, pc) == 0); /* the first of equals */

    /* core_router_domain: one crop equals its probabilities; two crops are weighted by their holes */
    const int s = 256;
    const size_t s2 = (size_t)s * s;
    float *x = malloc(sizeof(float) * 3 * s2 * 2), *m = malloc(sizeof(float) * s2 * 2);
    fill_crop(s, x, m, 0.9f, 0.2f, 0.3f, hole_centre);                  /* 128 x 128 hole */
    fill_crop(s, x + 3 * s2, m + s2, 0.2f, 0.2f, 0.8f, hole_top_left_cell); /* 32 x 32 hole */
    float pa[2], pb[2], fa[DF], fb[DF], pr[2];
    core_router_domain_features(s, x, m, fa);
    core_router_domain_features(s, x + 3 * s2, m + s2, fb);
    core_router_domain_probs(r, fa, pa);
    core_router_domain_probs(r, fb, pb);
    CHECK(core_router_domain(r, 1, s, x, m, pr) == SP_OK && fabsf(pr[0] - pa[0]) < 1e-6f);
    CHECK(core_router_domain(r, 2, s, x, m, pr) == SP_OK);
    float wa = 128.0f * 128, wb = 32.0f * 32;
    CHECKF(fabsf(pr[0] - (wa * pa[0] + wb * pb[0]) / (wa + wb)) < 1e-5f, "two crops: %g", pr[0]);
    CHECK(pa[0] > 0.9f && pb[1] > 0.9f); /* red cell (0,0) -> faces, blue -> general */
    CHECK(core_router_domain(r, 1, 128, x, m, pr) == SP_ERR_INVALID);
    CHECK(core_router_domain(r, 0, s, x, m, pr) == SP_ERR_INVALID);
    core_router_free(r);

    /* a hidden layer */
    write_router(path, &t, 1, good_meta, 2);
    CHECKF(core_router_load(path, &r) == SP_OK, "%s", sp_err_msg());
    if (r) {
        core_router_domain_probs(r, f, p);
        float z[4] = {(0.9f - 0.5f) / 0.25f, (0.3f - 0.5f) / 0.25f, 0.5f, -0.5f}, h[4];
        for (int j = 0; j < 4; j++) h[j] = z[j] > 0 ? z[j] : 0;
        float a0 = 0.1f, a1 = -0.2f;
        for (int j = 0; j < 4; j++) a0 += t.w2[j] * h[j], a1 += t.w2[4 + j] * h[j];
        float w0 = 1.0f / (1.0f + expf(a1 - a0));
        CHECKF(fabsf(p[0] - w0) < 1e-6f, "hidden layer: p %g, want %g", p[0], w0);
        core_router_free(r);
    }
    /* thresholds 0 (the nets always) and 1 (Telea always), whatever the gate says */
    char meta[1024];
    snprintf(meta, sizeof meta, "%s", good_meta);
    char *t1 = strstr(meta, "\"0.25\""), *t2 = strstr(meta, "\"0.75\"");
    if (t1 && t2) {
        memcpy(t1, "\"1.00\"", 6);
        memcpy(t2, "\"0.00\"", 6);
    }
    write_router(path, &t, 0, meta, 2);
    CHECKF(core_router_load(path, &r) == SP_OK, "%s", sp_err_msg());
    if (r) {
        core_route_feat hi;
        for (int i = 0; i < GF; i++) hi.v[i] = 1000.0f; /* faces gate 1.0 */
        CHECK(core_router_gate(r, 0, &hi) == 1.0f && core_router_use_nets(r, 0, &hi) == 0);
        CHECK(core_router_gate(r, 1, &hi) < 1e-6f && core_router_use_nets(r, 1, &hi) == 1);
        core_router_free(r);
    }
    free(x);
    free(m);
}

/* Each bad file is refused with SP_ERR_FORMAT (or IO), and the message names the file and `says`. */
static void refused(const char *what, const char *meta, int dw_rows, const char *says) {
    char path[256];
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    tiny t;
    tiny_init(&t);
    write_router(path, &t, 0, meta, dw_rows);
    core_router *r = (core_router *)1;
    sp_status st = core_router_load(path, &r);
    CHECKF(st == SP_ERR_FORMAT && r == NULL, "%s: status %d", what, st);
    CHECKF(strstr(sp_err_msg(), path) && strstr(sp_err_msg(), says), "%s: message '%s' lacks the path or '%s'", what,
           sp_err_msg(), says);
}

static void test_refused(void) {
    char meta[2048];
    refused("no metadata", NULL, 2, "kind");
    refused("another kind", "{\"kind\":\"semipaint weights\"}", 2, "not 'semipaint router'");
#define WITH(from, to)                                                                                                \
    do {                                                                                                              \
        const char *p = strstr(good_meta, from);                                                                      \
        snprintf(meta, sizeof meta, "%.*s%s%s", (int)(p - good_meta), good_meta, to, p + strlen(from));               \
    } while (0)
    WITH(CORE_ROUTE_DOMAIN_FEATURES, "grid4-v0");
    refused("old domain features", meta, 2, "grid4-v0");
    WITH(CORE_ROUTE_GATE_FEATURES, "gate-v0");
    refused("old gate features", meta, 2, "gate-v0");
    WITH("\"0.75\"", "\"1.5\"");
    refused("threshold out of range", meta, 2, "threshold.general");
    WITH("\"faces,general\"", "\"faces\"");
    refused("one class", meta, 2, "at least two");
    WITH("\"faces,general\"", "\"faces,faces\"");
    refused("a class twice", meta, 2, "twice");
    WITH("\"faces,general\"", "\"faces,General!\"");
    refused("a bad class name", meta, 2, "a-z");
    WITH("\"domain_size\":\"256\"", "\"domain_size\":\"big\"");
    refused("bad domain size", meta, 2, "domain_size");
    WITH(",\"threshold.faces\":\"0.25\"", "");
    refused("no threshold", meta, 2, "threshold.faces");
    WITH("\"faces,general\"", "\"faces,general,cats\",\"threshold.cats\":\"0.5\"");
    refused("a class without its gate", meta, 3, "gate.cats");
    refused("domain.w of the wrong shape", good_meta, 3, "domain.w");
#undef WITH
    core_router *r = (core_router *)1;
    CHECK(core_router_load("/nonexistent/router.safetensors", &r) != SP_OK && r == NULL);
    CHECKF(strstr(sp_err_msg(), "/nonexistent/router.safetensors"), "%s", sp_err_msg());
    /* not safetensors at all */
    char path[256];
    snprintf(path, sizeof path, "%s/junk.safetensors", dir);
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs("this is not a router", f);
        fclose(f);
    }
    CHECK(core_router_load(path, &r) == SP_ERR_FORMAT && r == NULL && strstr(sp_err_msg(), path));
    core_router_free(NULL);
}

/* Where each group of domain features starts (core/route.h). */
enum { F_RGB = 0, F_LUM = 192, F_DX = 256, F_DY = 320, F_COV = 384, F_GLOB = 448 };

static void test_domain_features(void) {
    CHECK(DF == F_GLOB + 8);
    const int s = 64;
    const size_t s2 = (size_t)s * s;
    float x[3 * 64 * 64], m[64 * 64], f[DF];
    /* uniform colour with a hole full of junk: every cell the colour, no gradient, no spread */
    fill_crop(s, x, m, 0.25f, 0.5f, 0.75f, hole_centre);
    core_router_domain_features(s, x, m, f);
    int bad = 0;
    for (int k = 0; k < 64; k++)
        bad += fabsf(f[F_RGB + k] - 0.25f) > 1e-6f || fabsf(f[F_RGB + 64 + k] - 0.5f) > 1e-6f ||
               fabsf(f[F_RGB + 128 + k] - 0.75f) > 1e-6f || fabsf(f[F_LUM + k]) > 1e-4f || f[F_DX + k] != 0.0f ||
               f[F_DY + k] != 0.0f;
    CHECKF(bad == 0, "%d cells differ from the known colour (hole pixels read?)", bad);
    /* the hole covers the 4 x 4 centre cells: their known share is 0, the others' 1 */
    CHECK(f[F_COV + 0] == 1.0f && f[F_COV + 2 * 8 + 2] == 0.0f && f[F_COV + 5 * 8 + 5] == 0.0f && f[F_COV + 6 * 8 + 5] == 1.0f);
    CHECK(fabsf(f[F_GLOB] - 0.25f) < 1e-6f && fabsf(f[F_GLOB + 1] - 0.5f) < 1e-6f && fabsf(f[F_GLOB + 2] - 0.75f) < 1e-6f);
    CHECK(fabsf(f[F_GLOB + 3]) < 1e-3f && fabsf(f[F_GLOB + 4]) < 1e-3f && fabsf(f[F_GLOB + 5]) < 1e-3f);
    CHECK(f[F_GLOB + 6] == 0.0f && fabsf(f[F_GLOB + 7] - 0.001f) < 1e-7f);

    /* left half black, right half white: cells 0 and 1, asymmetry 1, std 0.5, a step only at the edge */
    for (int y = 0; y < s; y++)
        for (int xx = 0; xx < s; xx++)
            for (int c = 0; c < 3; c++) x[c * s2 + (size_t)y * s + xx] = xx < s / 2 ? 0.0f : 1.0f;
    for (size_t i = 0; i < s2; i++) m[i] = 1.0f;
    core_router_domain_features(s, x, m, f);
    CHECK(f[F_RGB + 0] == 0.0f && f[F_RGB + 7] == 1.0f && f[F_RGB + 64 + 3] == 0.0f && f[F_RGB + 64 + 4] == 1.0f);
    CHECK(fabsf(f[F_LUM + 0] + 0.5f / 0.52f) < 1e-5f && fabsf(f[F_LUM + 7] - 0.5f / 0.52f) < 1e-5f);
    CHECK(fabsf(f[F_GLOB + 6] - 1.0f) < 1e-6f && fabsf(f[F_GLOB + 3] - 0.5f) < 1e-5f && fabsf(f[F_GLOB] - 0.5f) < 1e-6f);
    CHECK(f[F_COV + 17] == 1.0f);
    /* the edge pair (x = 31, 32) belongs to cell 3: 8 rows x 1 step over its 64 pairs, relative to
     * the crop's mean step (64 / (64 x 63) horizontally, 0 vertically, halved, + 0.001) */
    const float gnorm = 0.5f / 63.0f + 0.001f;
    CHECKF(fabsf(f[F_DX + 3] - 0.125f / gnorm) < 1e-3f && f[F_DX + 2] == 0 && f[F_DX + 4] == 0 && f[F_DY + 3] == 0,
           "steps %g %g %g", f[F_DX + 2], f[F_DX + 3], f[F_DX + 4]);
    CHECK(fabsf(f[F_GLOB + 7] - gnorm) < 1e-6f);

    /* a cell without a known pixel takes the crop's known means */
    fill_crop(s, x, m, 0.25f, 0.5f, 0.75f, hole_top_left_cell);
    for (size_t i = 0; i < s2; i++)
        if (m[i] > 0.5f && (i % s) >= (size_t)s / 2) x[i] = 0.75f; /* right half redder */
    core_router_domain_features(s, x, m, f);
    CHECKF(fabsf(f[F_RGB] - f[F_GLOB]) < 1e-6f && f[F_GLOB] > 0.25f && f[F_GLOB] < 0.75f, "empty cell %g, crop mean %g",
           f[F_RGB], f[F_GLOB]);
    CHECK(f[F_COV] == 0.0f && f[F_COV + 1] == 1.0f);

    /* no known pixel at all, or a crop smaller than the grid: zeros */
    for (size_t i = 0; i < s2; i++) m[i] = 0.0f;
    core_router_domain_features(s, x, m, f);
    int nz = 0;
    for (int i = 0; i < DF; i++) nz += f[i] != 0.0f;
    CHECK(nz == 0);
    core_router_domain_features(4, x, m, f);
    CHECK(f[0] == 0.0f);
}

static void test_gate_features(void) {
    /* one crop of 64 x 64 image pixels at s = 32 (scale 2), a 4 x 4 hole in a uniform crop */
    const int s = 32;
    const size_t s2 = (size_t)s * s;
    core_request r;
    memset(&r, 0, sizeof r);
    img_crop crop = {0, 0, 64, 64, 0, 0, 64, 64};
    float x[3 * 32 * 32], m[32 * 32];
    fill_crop(s, x, m, 0.4f, 0.4f, 0.4f, hole_square4);
    r.s = s;
    r.x = x;
    r.m = m;
    r.im.w = 64;
    r.im.h = 64;
    r.holes = 64; /* the 4 x 4 working pixels are 8 x 8 image pixels */
    r.plan.s = s;
    r.plan.n = 1;
    r.plan.crops = &crop;
    core_route_feat f;
    CHECKF(core_route_features(&r, 0.875f, &f) == SP_OK, "%s", sp_err_msg());
    CHECK(fabsf(f.v[CORE_RF_HOLE_RATIO] - 64.0f / 4096) < 1e-7f);
    CHECK(fabsf(f.v[CORE_RF_CROP_HOLE] - 16.0f / s2) < 1e-7f);
    CHECK(fabsf(f.v[CORE_RF_LOG_SCALE] - 1.0f) < 1e-6f && f.v[CORE_RF_LOG_CROPS] == 0.0f);
    /* the 12 border pixels of the square are at distance 1, the 4 inside at 2: mean 1.25, max 2 */
    CHECKF(fabsf(f.v[CORE_RF_THICK_MEAN] - log2f(2.25f)) < 1e-6f, "thick_mean %g", f.v[CORE_RF_THICK_MEAN]);
    CHECK(fabsf(f.v[CORE_RF_THICK_MAX] - log2f(3.0f)) < 1e-6f);
    CHECK(f.v[CORE_RF_TEXTURE] == 0.0f); /* uniform */
    CHECK(f.v[CORE_RF_P_CLASS] == 0.875f);
    /* a stripe pattern next to the hole: texture = log2(1 + mean |step| in 8-bit units) */
    for (int y = 0; y < s; y++)
        for (int xx = 0; xx < s; xx++)
            for (int c = 0; c < 3; c++) x[c * s2 + (size_t)y * s + xx] = (y & 1) ? 0.2f : 0.6f;
    CHECK(core_route_features(&r, 0.5f, &f) == SP_OK);
    CHECKF(f.v[CORE_RF_TEXTURE] > 5.0f && f.v[CORE_RF_TEXTURE] < log2f(1 + 0.4f * 255), "texture %g", f.v[CORE_RF_TEXTURE]);
    /* two crops */
    img_crop two[2] = {{0, 0, 64, 64, 0, 0, 64, 64}, {0, 0, 64, 64, 0, 0, 64, 64}};
    float x2[2 * 3 * 32 * 32], m2[2 * 32 * 32];
    fill_crop(s, x2, m2, 0.4f, 0.4f, 0.4f, hole_square4);
    fill_crop(s, x2 + 3 * s2, m2 + s2, 0.4f, 0.4f, 0.4f, NULL); /* no hole */
    r.x = x2, r.m = m2, r.plan.n = 2, r.plan.crops = two;
    CHECK(core_route_features(&r, 0.5f, &f) == SP_OK);
    CHECK(fabsf(f.v[CORE_RF_LOG_CROPS] - 1.0f) < 1e-6f && fabsf(f.v[CORE_RF_CROP_HOLE] - 16.0f / (2 * s2)) < 1e-7f);
    CHECK(fabsf(f.v[CORE_RF_THICK_MEAN] - log2f(2.25f)) < 1e-6f);
    r.plan.n = 0;
    CHECK(core_route_features(&r, 0.5f, &f) == SP_ERR_INVALID);
    for (int i = 0; i < GF; i++) CHECK(core_route_feat_name(i) != NULL);
    CHECK(core_route_feat_name(GF) == NULL && !strcmp(core_route_feat_name(CORE_RF_P_CLASS), "p_class"));

    /* through core_request_prepare, as the daemon prepares: a 300 x 200 image, a disc hole */
    cfg_config cfg;
    cfg_defaults(&cfg);
    img_u8 im = {0}, mask = {0};
    CHECK(img_alloc(&im, 300, 200, 3) == SP_OK && img_alloc(&mask, 300, 200, 1) == SP_OK);
    long holes = 0;
    for (int y = 0; y < 200; y++)
        for (int xx = 0; xx < 300; xx++) {
            im.px[((size_t)y * 300 + xx) * 3] = (uint8_t)(xx * 255 / 300);
            int h = (xx - 150) * (xx - 150) + (y - 100) * (y - 100) < 30 * 30;
            mask.px[(size_t)y * 300 + xx] = h ? 255 : 0;
            holes += h;
        }
    core_request q;
    core_fault fault;
    CHECKF(core_request_prepare(&q, &cfg, 128, 0, CORE_METHOD_SIM, &im, &mask, CORE_MASK_LUMA, &fault) == SP_OK, "%s",
           sp_err_msg());
    CHECK(core_route_features(&q, 1.0f, &f) == SP_OK);
    CHECK(fabsf(f.v[CORE_RF_HOLE_RATIO] - (float)holes / 60000) < 1e-6f);
    CHECKF(f.v[CORE_RF_THICK_MAX] > 3 && f.v[CORE_RF_THICK_MAX] < 6 && f.v[CORE_RF_TEXTURE] > 0, "thick_max %g texture %g",
           f.v[CORE_RF_THICK_MAX], f.v[CORE_RF_TEXTURE]);
    for (int i = 0; i < GF; i++) CHECK(isfinite(f.v[i]));
    core_request_free(&q);
    img_free(&im);
    img_free(&mask);
}

/* The shipped router against the golden rows training/fit_router.py computed with numpy. */
static void test_golden(void) {
    const char *path = "weights/router.safetensors";
    if (!t_exists(path)) {
        printf("test_route: SKIP golden rows (%s absent)\n", path);
        return;
    }
    core_router *r = NULL;
    st_file *f = NULL;
    CHECKF(core_router_load(path, &r) == SP_OK, "%s", sp_err_msg());
    CHECKF(st_open(path, &f) == SP_OK, "%s", sp_err_msg());
    if (!r || !f) goto out;
    const int nc = core_router_nclasses(r);
    const st_tensor *gx = st_find(f, "golden.domain.x");
    CHECK(gx && gx->ndim == 2 && gx->shape[1] == DF);
    if (gx) {
        int64_t rows = gx->shape[0], dx[2] = {rows, DF}, dp[2] = {rows, nc};
        float *x = malloc(sizeof(float) * rows * DF), *p = malloc(sizeof(float) * rows * nc), got[CORE_ROUTE_MAX_CLASSES];
        CHECK(st_read_f32(f, "golden.domain.x", 2, dx, x) == SP_OK && st_read_f32(f, "golden.domain.p", 2, dp, p) == SP_OK);
        for (int64_t i = 0; i < rows; i++) {
            core_router_domain_probs(r, x + i * DF, got);
            for (int c = 0; c < nc; c++)
                CHECKF(fabsf(got[c] - p[i * nc + c]) < 1e-4f, "domain row %ld class %d: %g, fit %g", (long)i, c, got[c],
                       p[i * nc + c]);
        }
        free(x);
        free(p);
    }
    for (int c = 0; c < nc; c++) {
        char nx[96], np[96];
        snprintf(nx, sizeof nx, "golden.gate.%s.x", core_router_class(r, c));
        snprintf(np, sizeof np, "golden.gate.%s.p", core_router_class(r, c));
        const st_tensor *t = st_find(f, nx);
        CHECKF(t && t->ndim == 2 && t->shape[1] == GF, "%s", nx);
        if (!t) continue;
        int64_t rows = t->shape[0], dx[2] = {rows, GF}, dp[1] = {rows};
        float *x = malloc(sizeof(float) * rows * GF), *p = malloc(sizeof(float) * rows);
        CHECK(st_read_f32(f, nx, 2, dx, x) == SP_OK && st_read_f32(f, np, 1, dp, p) == SP_OK);
        for (int64_t i = 0; i < rows; i++) {
            core_route_feat g;
            memcpy(g.v, x + i * GF, sizeof g.v);
            float got = core_router_gate(r, c, &g);
            CHECKF(fabsf(got - p[i]) < 1e-4f, "%s row %ld: %g, fit %g", nx, (long)i, got, p[i]);
        }
        free(x);
        free(p);
    }
out:
    st_close(f);
    core_router_free(r);
}

int main(void) {
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_load_and_models();
    test_refused();
    test_domain_features();
    test_gate_features();
    test_golden();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "test_route: could not remove %s\n", dir);
    return t_done("test_route");
}
