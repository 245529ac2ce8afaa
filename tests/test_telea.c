/* test_telea.c: Telea inpainting tests; with --compare OUTDIR [N], writes inputs and results for tests/it_telea.sh to compare with OpenCV. */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imaging/img.h"
#include "tests/t.h"
#include "imaging/telea.h"

static uint8_t *disc_hole(int w, int h, int cx, int cy, int r) {
    uint8_t *m = calloc((size_t)w * h, 1);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) m[y * w + x] = (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r;
    return m;
}

static void fill_random(img_u8 *im, unsigned seed) {
    size_t n = (size_t)im->w * im->h * im->c;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        im->px[i] = (uint8_t)(seed >> 24);
    }
}

static void test_constant(void) {
    img_u8 im = {0};
    CHECK(img_alloc(&im, 40, 30, 3) == SP_OK);
    for (int i = 0; i < 40 * 30; i++) im.px[3 * i] = 10, im.px[3 * i + 1] = 200, im.px[3 * i + 2] = 77;
    uint8_t *hole = disc_hole(40, 30, 20, 15, 9);
    for (int i = 0; i < 40 * 30; i++)
        if (hole[i]) im.px[3 * i] = im.px[3 * i + 1] = im.px[3 * i + 2] = 0;
    CHECK(telea_inpaint(&im, hole, 5) == SP_OK);
    int ok = 1;
    for (int i = 0; i < 40 * 30; i++) ok &= im.px[3 * i] == 10 && im.px[3 * i + 1] == 200 && im.px[3 * i + 2] == 77;
    CHECK(ok);
    free(hole);
    img_free(&im);
}

/* Known pixels are never changed, and the values under the hole are never read. */
static void test_known_untouched(void) {
    img_u8 a = {0}, b = {0};
    CHECK(img_alloc(&a, 50, 40, 4) == SP_OK && img_alloc(&b, 50, 40, 4) == SP_OK);
    fill_random(&a, 1);
    memcpy(b.px, a.px, 50 * 40 * 4);
    uint8_t *hole = disc_hole(50, 40, 10, 30, 12);
    for (int i = 0; i < 50 * 40; i++)
        if (hole[i]) {
            a.px[4 * i] = 0, a.px[4 * i + 1] = 255, a.px[4 * i + 2] = 3; /* garbage under the hole */
            b.px[4 * i] = 99, b.px[4 * i + 1] = 1, b.px[4 * i + 2] = 200;
        }
    img_u8 orig = {0};
    CHECK(img_alloc(&orig, 50, 40, 4) == SP_OK);
    memcpy(orig.px, a.px, 50 * 40 * 4);
    CHECK(telea_inpaint(&a, hole, 5) == SP_OK && telea_inpaint(&b, hole, 5) == SP_OK);
    int same_known = 1, alpha_kept = 1;
    for (int i = 0; i < 50 * 40; i++) {
        if (!hole[i]) same_known &= !memcmp(a.px + 4 * i, orig.px + 4 * i, 4);
        alpha_kept &= a.px[4 * i + 3] == orig.px[4 * i + 3];
    }
    CHECK(same_known);
    CHECK(alpha_kept);
    CHECK(!memcmp(a.px, b.px, 50 * 40 * 4) || 0 == printf("hole values leaked into the result\n"));
    free(hole);
    img_free(&a);
    img_free(&b);
    img_free(&orig);
}

/* The first-order estimates carry a linear ramp through the hole; plain weighted means do not. */
static void test_ramp(void) {
    int worst[2] = {0, 0};
    for (int v = 0; v < 2; v++) {
        img_u8 im = {0};
        CHECK(img_alloc(&im, 64, 48, 1) == SP_OK);
        for (int y = 0; y < 48; y++)
            for (int x = 0; x < 64; x++) im.px[y * 64 + x] = (uint8_t)(30 + 3 * x);
        uint8_t *hole = disc_hole(64, 48, 32, 24, 10);
        CHECK(telea_inpaint_ex(&im, hole, 5, v ? TELEA_NO_GRADIENT : 0) == SP_OK);
        for (int y = 0; y < 48; y++)
            for (int x = 0; x < 64; x++)
                if (hole[y * 64 + x] && abs(im.px[y * 64 + x] - (30 + 3 * x)) > worst[v])
                    worst[v] = abs(im.px[y * 64 + x] - (30 + 3 * x));
        free(hole);
        img_free(&im);
    }
    CHECKF(worst[0] <= 2, "ramp through a hole: worst error %d", worst[0]);
    CHECKF(worst[1] > 3 * worst[0], "ramp: without the gradient term %d, with it %d", worst[1], worst[0]);
}

/* A horizontal edge (50 above, 200 below) continues through a vertical band hole: away from the
 * edge each side keeps its value, and no column overshoots or oscillates across it. */
static void test_edge(void) {
    for (int flags = 0; flags <= TELEA_NO_GRADIENT; flags += TELEA_NO_GRADIENT) {
        img_u8 im = {0};
        CHECK(img_alloc(&im, 60, 40, 3) == SP_OK);
        for (int y = 0; y < 40; y++)
            for (int x = 0; x < 60; x++) memset(im.px + (y * 60 + x) * 3, y < 20 ? 50 : 200, 3);
        uint8_t *hole = calloc(60 * 40, 1);
        for (int y = 0; y < 40; y++)
            for (int x = 27; x < 33; x++) hole[y * 60 + x] = 1;
        CHECK(telea_inpaint_ex(&im, hole, 5, flags) == SP_OK);
        int far_ok = 1, monotone = 1;
        for (int x = 27; x < 33; x++)
            for (int y = 0; y < 40; y++) {
                int v = im.px[(y * 60 + x) * 3];
                if (y <= 14 || y >= 26) far_ok &= abs(v - (y < 20 ? 50 : 200)) <= 5;
                if (y > 0) monotone &= v >= im.px[((y - 1) * 60 + x) * 3];
            }
        CHECKF(far_ok, "flags %d: an edge side changed away from the edge", flags);
        CHECKF(monotone, "flags %d: a column is not monotone across the edge", flags);
        free(hole);
        img_free(&im);
    }
}

static void test_edges_and_errors(void) {
    img_u8 im = {0};
    CHECK(img_alloc(&im, 20, 10, 1) == SP_OK);
    memset(im.px, 120, 200);
    uint8_t hole[200] = {0};
    /* A hole along the image border and in a corner. */
    for (int y = 0; y < 10; y++) hole[y * 20] = hole[y * 20 + 1] = 1;
    hole[19] = hole[18] = hole[39] = 1;
    for (int i = 0; i < 200; i++)
        if (hole[i]) im.px[i] = 0;
    CHECK(telea_inpaint(&im, hole, 3) == SP_OK);
    int ok = 1;
    for (int i = 0; i < 200; i++) ok &= im.px[i] == 120;
    CHECK(ok);
    /* A 1-pixel image region, radius 1. */
    memset(hole, 0, sizeof hole);
    hole[55] = 1;
    im.px[55] = 0;
    CHECK(telea_inpaint(&im, hole, 1) == SP_OK && im.px[55] == 120);
    /* No hole: nothing changes. */
    memset(hole, 0, sizeof hole);
    CHECK(telea_inpaint(&im, hole, 5) == SP_OK);
    /* Errors. */
    memset(hole, 1, sizeof hole);
    CHECK(telea_inpaint(&im, hole, 5) == SP_ERR_INVALID);
    CHECK(telea_inpaint(&im, hole, 0) == SP_ERR_INVALID);
    CHECK(telea_inpaint(&im, NULL, 5) == SP_ERR_INVALID);
    CHECK(telea_inpaint(NULL, hole, 5) == SP_ERR_INVALID);
    hole[0] = 0;
    CHECK(telea_inpaint_ex(&im, hole, 5, 8) == SP_ERR_INVALID);
    img_free(&im);
}

/* ---- comparison mode ---- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The sorted names in `dir` ending with `ext`; *n of them. */
static char **list_dir(const char *dir, const char *ext, int *n) {
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    int cap = 64;
    char **names = malloc(sizeof *names * (size_t)cap);
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name), le = strlen(ext);
        if (l <= le || strcmp(e->d_name + l - le, ext)) continue;
        if (*n == cap) names = realloc(names, sizeof *names * (size_t)(cap *= 2));
        names[(*n)++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)*n, sizeof *names, cmp_str);
    return names;
}

static void free_list(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Writes, for the first N validation images each paired with a mask spread over the hole-ratio
 * range: OUT/in_NN.png, OUT/mask_NN.png (256x256, 255 = hole), OUT/c_NN.png (telea_inpaint) and
 * OUT/a_NN.png (TELEA_NO_GRADIENT), with one line per pair giving the best of 3 timings of each. */
static int compare_mode(const char *out, int count) {
    const char *data = t_data_dir("test_telea");
    if (!data) return 3;
    char idir[512], mdir[512];
    snprintf(idir, sizeof idir, "%s/celebahq256/val", data);
    snprintf(mdir, sizeof mdir, "%s/masks/nvidia-irregular-test", data);
    int ni = 0, nm = 0;
    char **imgs = list_dir(idir, ".jpg", &ni), **masks = list_dir(mdir, ".png", &nm);
    if (ni < count || nm < count) {
        printf("test_telea: SKIP comparison (%s or %s has too few files)\n", idir, mdir);
        free_list(imgs, ni);
        free_list(masks, nm);
        return 3;
    }
    int rc = 0;
    for (int i = 0; i < count && rc == 0; i++) {
        char path[1024];
        img_u8 im = {0}, m = {0}, m256 = {0}, work = {0};
        uint8_t *hole = NULL;
        const char *mname = masks[(long)i * nm / count];
        snprintf(path, sizeof path, "%s/%s", idir, imgs[i]);
        if (img_load(path, 0, &im) || im.w != 256 || im.h != 256) {
            fprintf(stderr, "%s: %s\n", path, sp_err_msg());
            rc = 1;
            goto next;
        }
        snprintf(path, sizeof path, "%s/%s", mdir, mname);
        if (img_load(path, 0, &m) || img_resize_rect(&m, 0, 0, m.w, m.h, 256, 256, &m256)) {
            fprintf(stderr, "%s: %s\n", path, sp_err_msg());
            rc = 1;
            goto next;
        }
        /* Luminance > 127 is hole (docs/http-api.md); the mask is written back as 0/255. */
        hole = malloc(256 * 256);
        for (int k = 0; k < 256 * 256; k++) {
            int v = m256.c == 1 ? m256.px[k] : m256.px[k * m256.c];
            hole[k] = v > 127;
            m256.px[k * m256.c] = hole[k] ? 255 : 0;
        }
        long nh = 0;
        for (int k = 0; k < 256 * 256; k++) nh += hole[k];
        char p_in[1024], p_mask[1024], p_out[1024];
        snprintf(p_in, sizeof p_in, "%s/in_%02d.png", out, i);
        snprintf(p_mask, sizeof p_mask, "%s/mask_%02d.png", out, i);
        snprintf(p_out, sizeof p_out, "%s/c_%02d.png", out, i);
        if (img_save(&im, p_in, 0) || img_save(&m256, p_mask, 0)) {
            fprintf(stderr, "%s\n", sp_err_msg());
            rc = 1;
            goto next;
        }
        if (img_alloc(&work, 256, 256, 3)) {
            rc = 1;
            goto next;
        }
        double best[2] = {1e9, 1e9};
        for (int v = 0; v < 2; v++) {
            for (int rep = 0; rep < 3; rep++) {
                memcpy(work.px, im.px, 256 * 256 * 3);
                double t0 = sp_now();
                sp_status st = telea_inpaint_ex(&work, hole, TELEA_DEFAULT_RADIUS, v ? TELEA_NO_GRADIENT : 0);
                double dt = sp_now() - t0;
                if (st) {
                    fprintf(stderr, "telea_inpaint: %s\n", sp_err_msg());
                    rc = 1;
                    goto next;
                }
                if (dt < best[v]) best[v] = dt;
            }
            if (v) snprintf(p_out, sizeof p_out, "%s/a_%02d.png", out, i);
            if (img_save(&work, p_out, 0)) {
                fprintf(stderr, "%s\n", sp_err_msg());
                rc = 1;
                goto next;
            }
        }
        printf("pair %02d image %s mask %s hole %.3f c_ms %.3f a_ms %.3f\n", i, imgs[i], mname, nh / 65536.0,
               best[0] * 1e3, best[1] * 1e3);
    next:
        free(hole);
        img_free(&im);
        img_free(&m);
        img_free(&m256);
        img_free(&work);
    }
    free_list(imgs, ni);
    free_list(masks, nm);
    return rc;
}

/* telea_hole_distance: chessboard distance to the nearest known pixel, the image's outside
 * counting as hole. */
static void test_distance(void) {
    enum { W = 9, H = 7 };
    uint8_t hole[W * H] = {0};
    int d[W * H];
    for (int y = 1; y < 6; y++)
        for (int x = 1; x < 8; x++) hole[y * W + x] = 1; /* a 7x5 block inside a 1-px frame */
    telea_hole_distance(hole, W, H, d);
    CHECK(d[0] == 0 && d[1 * W + 1] == 1 && d[2 * W + 2] == 2 && d[3 * W + 3] == 3 && d[3 * W + 4] == 3);
    CHECK(d[3 * W + 1] == 1 && d[2 * W + 4] == 2 && d[5 * W + 7] == 1);
    memset(hole, 1, sizeof hole);
    hole[0] = 0; /* one known pixel in the corner */
    telea_hole_distance(hole, W, H, d);
    CHECK(d[0] == 0 && d[1] == 1 && d[W + 1] == 1 && d[2 * W + 5] == 5 && d[(H - 1) * W + W - 1] == W - 1);
}

/* telea_blend: table [1] is Telea's fill, [0] the (clamped) net output, and in between each
 * hole pixel mixes by its distance; known pixels never change. */
static void test_blend(void) {
    enum { S = 24 };
    const size_t hw = S * S;
    float *img = malloc(3 * hw * sizeof *img), *keep = malloc(hw * sizeof *keep), *out = malloc(3 * hw * sizeof *out);
    uint8_t *hole = disc_hole(S, S, 12, 11, 6);
    img_u8 ref = {0};
    CHECK(img_alloc(&ref, S, S, 3) == SP_OK);
    fill_random(&ref, 7);
    for (size_t q = 0; q < hw; q++) {
        keep[q] = hole[q] ? 0.0f : 1.0f;
        for (int c = 0; c < 3; c++) img[c * hw + q] = ref.px[3 * q + c] / 255.0f;
    }
    img_u8 tel = {0};
    CHECK(img_alloc(&tel, S, S, 3) == SP_OK);
    memcpy(tel.px, ref.px, 3 * hw);
    CHECK(telea_inpaint(&tel, hole, TELEA_DEFAULT_RADIUS) == SP_OK);
    int *d = malloc(hw * sizeof *d);
    telea_hole_distance(hole, S, S, d);
    const float tables[3][3] = {{1.0f}, {0.0f}, {0.75f, 0.25f, 0.0f}};
    const int ntab[3] = {1, 1, 3};
    for (int t = 0; t < 3; t++) {
        /* the "net" fills the hole with 1.3 in channel 0 (out of range), 0.2 elsewhere */
        for (size_t q = 0; q < hw; q++)
            for (int c = 0; c < 3; c++) out[c * hw + q] = hole[q] ? (c ? 0.2f : 1.3f) : img[c * hw + q];
        CHECK(telea_blend(1, S, keep, tables[t], ntab[t], TELEA_DEFAULT_RADIUS, out) == SP_OK);
        int ok = 1;
        for (size_t q = 0; q < hw; q++)
            for (int c = 0; c < 3; c++) {
                float want = img[c * hw + q];
                if (hole[q]) {
                    float b = tables[t][(d[q] < ntab[t] ? d[q] : ntab[t]) - 1];
                    want = b * (tel.px[3 * q + c] / 255.0f) + (1 - b) * (c ? 0.2f : 1.0f);
                }
                ok &= fabsf(out[c * hw + q] - want) < 1e-6f;
            }
        CHECKF(ok, "blend table %d", t);
    }
    /* fill (from an input whose hole holds junk: never read) then apply == telea_blend */
    {
        float *junk = malloc(3 * hw * sizeof *junk), *o1 = malloc(3 * hw * sizeof *o1), *o2 = malloc(3 * hw * sizeof *o2);
        uint8_t *fill = malloc(3 * hw);
        int *dd = malloc(hw * sizeof *dd);
        for (size_t q = 0; q < hw; q++)
            for (int c = 0; c < 3; c++) {
                junk[c * hw + q] = hole[q] ? (float)((q * 7 + c) % 5) : img[c * hw + q];
                o1[c * hw + q] = o2[c * hw + q] = hole[q] ? 0.3f + 0.1f * c : img[c * hw + q];
            }
        CHECK(telea_blend(1, S, keep, tables[2], ntab[2], TELEA_DEFAULT_RADIUS, o1) == SP_OK);
        CHECK(telea_blend_fill(1, S, junk, keep, TELEA_DEFAULT_RADIUS, 2, fill, dd) == SP_OK);
        telea_blend_apply(1, S, tables[2], ntab[2], fill, dd, o2);
        CHECK(memcmp(o1, o2, 3 * hw * sizeof *o1) == 0);
        int dok = 1;
        for (size_t q = 0; q < hw; q++) dok &= dd[q] == d[q];
        CHECK(dok);
        free(junk);
        free(o1);
        free(o2);
        free(fill);
        free(dd);
    }
    /* no table, no hole, or no known pixel: unchanged; bad arguments refused */
    for (size_t q = 0; q < 3 * hw; q++) out[q] = 2.0f;
    CHECK(telea_blend(1, S, keep, tables[0], 0, TELEA_DEFAULT_RADIUS, out) == SP_OK && out[0] == 2.0f);
    for (size_t q = 0; q < hw; q++) keep[q] = 0.0f;
    CHECK(telea_blend(1, S, keep, tables[0], 1, TELEA_DEFAULT_RADIUS, out) == SP_OK && out[hw / 2] == 2.0f);
    CHECK(telea_blend(1, S, NULL, tables[0], 1, TELEA_DEFAULT_RADIUS, out) == SP_ERR_INVALID);
    for (size_t q = 0; q < hw; q++) keep[q] = hole[q] ? 0.0f : 1.0f;
    CHECK(telea_blend(1, S, keep, tables[0], 1, 0, out) == SP_ERR_INVALID);
    free(d);
    free(hole);
    free(img);
    free(keep);
    free(out);
    img_free(&ref);
    img_free(&tel);
}

/* Telea in a window around the hole gives the whole-image march's pixels bit for bit, for small
 * holes anywhere (edges and corners included), with and without the gradient term. */
static void test_window_equals_frame(void) {
    int w = 300, h = 220, diffs = 0, windowed = 0;
    for (int trial = 0; trial < 12; trial++) {
        img_u8 a = {0}, b = {0};
        int c = trial % 3 == 0 ? 1 : trial % 3 == 1 ? 3 : 4;
        CHECK(img_alloc(&a, w, h, c) == SP_OK && img_alloc(&b, w, h, c) == SP_OK);
        fill_random(&a, 7 + trial);
        for (int y = 0; y < h; y++) /* smooth content, so that the gradients matter */
            for (int x = 0; x < w; x++)
                for (int k = 0; k < c; k++) a.px[(y * w + x) * c + k] = (uint8_t)((a.px[(y * w + x) * c + k] >> 4) + x / 3 + y / 2 * k);
        memcpy(b.px, a.px, (size_t)w * h * c);
        int cx = trial < 4 ? 4 + trial : trial < 8 ? w - 3 - trial : 60 + 17 * trial;
        int cy = trial < 4 ? 3 : trial < 8 ? h - 2 - trial : 40 + 9 * trial;
        uint8_t *hole = disc_hole(w, h, cx, cy, 4 + trial);
        for (int y = 0; y < 8; y++) hole[(cy + 20 < h - 8 ? cy + 20 + y : y) * w + (cx + 3) % w] = 1; /* a thin scratch */
        int flags = trial & 1 ? TELEA_NO_GRADIENT : 0;
        CHECK(telea_inpaint_ex(&a, hole, 5, flags) == SP_OK);
        CHECK(telea_inpaint_ex(&b, hole, 5, flags | TELEA_FULL_FRAME) == SP_OK);
        diffs += memcmp(a.px, b.px, (size_t)w * h * c) != 0;
        windowed++;
        free(hole);
        img_free(&a);
        img_free(&b);
    }
    CHECKF(diffs == 0, "%d of %d windowed fills differ from the whole-image march", diffs, windowed);
}

/* A deadline already past stops a large fill with SP_ERR_TIMEOUT; a later one lets it finish. */
static void test_deadline(void) {
    int w = 1200, h = 900;
    img_u8 im = {0};
    CHECK(img_alloc(&im, w, h, 3) == SP_OK);
    fill_random(&im, 3);
    uint8_t *hole = calloc((size_t)w * h, 1);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) hole[(size_t)y * w + x] = ((x / 8) + (y / 8)) & 1; /* a checkerboard */
    CHECK(telea_inpaint_until(&im, hole, 5, 0, sp_now() - 1) == SP_ERR_TIMEOUT);
    CHECK(telea_inpaint_until(&im, hole, 5, 0, sp_now() + 600) == SP_OK);
    free(hole);
    img_free(&im);
}

/* telea_image_blend: share 1 everywhere is the telea method's answer, bit for bit (the fill ignores
 * the pasted values); share 0 keeps the pasted answer; a table mixes per chessboard distance with
 * rounding, as training/fit_image_blend.py computes it; known pixels and alpha never change; a
 * past deadline leaves the image as it was; bad arguments are refused. */
static void test_image_blend(void) {
    const int w = 160, h = 120;
    for (int c = 3; c <= 4; c++) {
        img_u8 orig = {0}, pasted = {0}, t = {0}, a = {0};
        CHECK(img_alloc(&orig, w, h, c) == SP_OK && img_alloc(&pasted, w, h, c) == SP_OK);
        fill_random(&orig, 11 + c);
        for (int y = 0; y < h; y++) /* smooth content */
            for (int x = 0; x < w; x++)
                for (int k = 0; k < c; k++) orig.px[(y * w + x) * c + k] = (uint8_t)((orig.px[(y * w + x) * c + k] >> 5) + x + y / 2 * k);
        uint8_t *hole = disc_hole(w, h, 70, 50, 14);
        for (int x = 10; x < 60; x++) hole[100 * w + x] = hole[101 * w + x] = 1; /* a scratch far from the disc */
        memcpy(pasted.px, orig.px, (size_t)w * h * c);
        unsigned seed = 99;
        for (size_t i = 0; i < (size_t)w * h; i++) /* "the nets' fill": other values under the hole */
            if (hole[i])
                for (int k = 0; k < c; k++) pasted.px[i * c + k] = (uint8_t)((seed = seed * 1664525u + 1013904223u) >> 24);
        CHECK(img_alloc(&t, w, h, c) == SP_OK && img_alloc(&a, w, h, c) == SP_OK);
        memcpy(t.px, orig.px, (size_t)w * h * c);
        CHECK(telea_inpaint(&t, hole, 5) == SP_OK);

        const float ones[3] = {1, 1, 1}, zero[1] = {0}, table[4] = {0.9f, 0.6f, 0.3f, 0.1f};
        memcpy(a.px, pasted.px, (size_t)w * h * c);
        CHECK(telea_image_blend(&a, hole, ones, 3, 5, 0) == SP_OK);
        int bad = 0;
        for (size_t i = 0; i < (size_t)w * h; i++)
            for (int k = 0; k < c; k++)
                bad += a.px[i * c + k] != (k == 3 ? pasted.px[i * c + k] : t.px[i * c + k]);
        CHECKF(bad == 0, "c=%d share 1: %d values differ from Telea's answer (alpha from the pasted image)", c, bad);

        memcpy(a.px, pasted.px, (size_t)w * h * c);
        CHECK(telea_image_blend(&a, hole, zero, 1, 5, 0) == SP_OK);
        CHECKF(!memcmp(a.px, pasted.px, (size_t)w * h * c), "c=%d share 0 changed the pasted answer", c);

        memcpy(a.px, pasted.px, (size_t)w * h * c);
        CHECK(telea_image_blend(&a, hole, table, 4, 5, 0) == SP_OK);
        int *dist = malloc(sizeof(int) * w * h);
        telea_hole_distance(hole, w, h, dist);
        bad = 0;
        int seen[5] = {0};
        for (size_t i = 0; i < (size_t)w * h; i++)
            for (int k = 0; k < c; k++) {
                int want = pasted.px[i * c + k];
                if (hole[i] && k < 3) {
                    int d = dist[i] < 4 ? dist[i] : 4;
                    float b = table[d - 1];
                    want = (int)(b * t.px[i * c + k] + (1.0f - b) * pasted.px[i * c + k] + 0.5f);
                    seen[d]++;
                }
                bad += a.px[i * c + k] != want;
            }
        CHECKF(bad == 0, "c=%d table: %d values differ from b*Telea + (1-b)*pasted", c, bad);
        CHECKF(seen[1] && seen[2] && seen[3] && seen[4], "c=%d: every distance class met", c);

        memcpy(a.px, pasted.px, (size_t)w * h * c);
        CHECK(telea_image_blend(&a, hole, table, 4, 5, sp_now() - 1) == SP_ERR_TIMEOUT);
        CHECKF(!memcmp(a.px, pasted.px, (size_t)w * h * c), "c=%d a timed-out blend left the image changed", c);
        free(dist);
        free(hole);
        img_free(&orig);
        img_free(&pasted);
        img_free(&t);
        img_free(&a);
    }
    img_u8 im = {0};
    CHECK(img_alloc(&im, 8, 8, 3) == SP_OK);
    uint8_t hole[64] = {0}, all[64];
    memset(all, 1, sizeof all);
    const float b[1] = {0.5f};
    CHECK(telea_image_blend(&im, hole, b, 1, 5, 0) == SP_OK); /* no hole: nothing to do */
    CHECK(telea_image_blend(&im, all, b, 1, 5, 0) == SP_OK);  /* no known pixel: nothing to blend from */
    CHECK(telea_image_blend(&im, hole, b, 65, 5, 0) == SP_ERR_INVALID);
    CHECK(telea_image_blend(&im, hole, NULL, 1, 5, 0) == SP_ERR_INVALID);
    CHECK(telea_image_blend(&im, hole, b, 1, 0, 0) == SP_ERR_INVALID);
    img_u8 grey = {0};
    CHECK(img_alloc(&grey, 8, 8, 1) == SP_OK);
    CHECK(telea_image_blend(&grey, hole, b, 1, 5, 0) == SP_ERR_INVALID);
    img_free(&grey);
    img_free(&im);
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "--compare")) return compare_mode(argv[2], argc >= 4 ? atoi(argv[3]) : 8);
    test_constant();
    test_known_untouched();
    test_ramp();
    test_edge();
    test_edges_and_errors();
    test_window_equals_frame();
    test_deadline();
    test_distance();
    test_blend();
    test_image_blend();
    return t_done("test_telea");
}
