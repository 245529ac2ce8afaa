/* test_plan.c: crop planning for any image size: regions, ownership, conservative masks, paste-back touching only hole pixels. */
#include <stdlib.h>
#include <string.h>

#include "imaging/plan.h"
#include "tests/t.h"

static void disk(uint8_t *hole, int w, int h, int cx, int cy, int r) {
    for (int y = cy - r; y <= cy + r; y++)
        for (int x = cx - r; x <= cx + r; x++)
            if (x >= 0 && y >= 0 && x < w && y < h && (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r)
                hole[(size_t)y * w + x] = 1;
}

/* Checks the plan's invariants on a w x h hole map; returns the number of crops. */
static int check_plan(const uint8_t *hole, int w, int h, int s, img_plan_strategy strat, int margin, img_plan *p) {
    sp_status st = img_plan_make(hole, w, h, s, strat, margin, 32L * s * s, p);
    CHECKF(st == SP_OK, "%s", sp_err_msg());
    if (st) return 0;
    for (int i = 0; i < p->n; i++) {
        const img_crop *c = &p->crops[i];
        CHECKF(c->x0 >= 0 && c->y0 >= 0 && c->x0 + c->w <= w && c->y0 + c->h <= h, "crop %d outside %dx%d", i, w, h);
        CHECKF(c->bx0 >= c->x0 && c->by0 >= c->y0 && c->bx1 <= c->x0 + c->w && c->by1 <= c->y0 + c->h,
               "owned box of crop %d not inside it", i);
        if (w >= s && h >= s && strat == IMG_PLAN_CROP)
            CHECKF(c->w >= s && c->h >= s, "crop %d is %dx%d, smaller than %d", i, c->w, c->h, s);
    }
    /* each hole pixel owned exactly once */
    long bad = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            if (!hole[(size_t)y * w + x]) continue;
            int owners = 0;
            for (int i = 0; i < p->n; i++) {
                const img_crop *c = &p->crops[i];
                owners += x >= c->bx0 && x < c->bx1 && y >= c->by0 && y < c->by1;
            }
            bad += owners != 1;
        }
    CHECKF(bad == 0, "%ld hole pixels not owned exactly once", bad);
    return p->n;
}

/* Runs input + a constant "network" + paste on an image; checks known pixels are unchanged and
 * that the working masks cover every hole pixel. */
static void roundtrip(const uint8_t *hole, int w, int h, int c, int s, img_plan_strategy strat) {
    img_plan p;
    if (!check_plan(hole, w, h, s, strat, 16, &p)) return;
    img_u8 im, orig;
    CHECK(img_alloc(&im, w, h, c) == SP_OK);
    for (size_t i = 0; i < (size_t)w * h * c; i++) im.px[i] = (uint8_t)(i * 2654435761u >> 13);
    CHECK(img_alloc(&orig, w, h, c) == SP_OK);
    memcpy(orig.px, im.px, (size_t)w * h * c);
    float *chw = malloc(sizeof(float) * 3 * s * s), *mask = malloc(sizeof(float) * s * s);
    for (int i = 0; i < p.n; i++) {
        const img_crop *cr = &p.crops[i];
        CHECK(img_plan_input(&p, i, &im, hole, chw, mask) == SP_OK);
        if (cr->w == s && cr->h == s) {
            /* scale 1: exact copy */
            int ok = 1;
            for (int y = 0; y < s && ok; y++)
                for (int x = 0; x < s; x++) {
                    size_t src = (size_t)(cr->y0 + y) * w + cr->x0 + x;
                    ok &= chw[(size_t)y * s + x] == orig.px[src * c] / 255.0f;
                    ok &= mask[(size_t)y * s + x] == (hole[src] ? 0.0f : 1.0f);
                }
            CHECKF(ok, "scale-1 input of crop %d differs from the image", i);
        } else {
            long leak = 0;
            for (int y = 0; y < cr->h; y++)
                for (int x = 0; x < cr->w; x++)
                    if (hole[(size_t)(cr->y0 + y) * w + cr->x0 + x]) {
                        int tx = (int)((long)x * s / cr->w), ty = (int)((long)y * s / cr->h);
                        leak += mask[(size_t)ty * s + tx] != 0.0f;
                    }
            CHECKF(leak == 0, "%ld hole pixels not masked in the working crop %d", leak, i);
        }
        for (int k = 0; k < 3 * s * s; k++) chw[k] = 0.5f;
        CHECK(img_plan_paste(&p, i, chw, &im, hole) == SP_OK);
    }
    long changed_known = 0, unfilled = 0;
    for (size_t i = 0; i < (size_t)w * h; i++) {
        for (int k = 0; k < c; k++) {
            if (!hole[i] || k == 3) changed_known += im.px[i * c + k] != orig.px[i * c + k];
            else unfilled += im.px[i * c + k] != 128;
        }
    }
    CHECKF(changed_known == 0, "%ld known or alpha values changed (%dx%dx%d)", changed_known, w, h, c);
    CHECKF(unfilled == 0, "%ld hole values not filled (%dx%dx%d)", unfilled, w, h, c);
    free(chw);
    free(mask);
    img_free(&im);
    img_free(&orig);
    img_plan_free(&p);
}

int main(void) {
    int s = 64;
    /* hole map from a mask: luminance > 127, alpha multiplies */
    img_u8 m;
    CHECK(img_alloc(&m, 4, 1, 4) == SP_OK);
    uint8_t px[16] = {255, 255, 255, 255, 255, 255, 255, 0, 100, 100, 100, 255, 200, 200, 200, 200};
    memcpy(m.px, px, 16);
    uint8_t hm[4];
    CHECK(img_hole_map(&m, hm) == 2 && hm[0] == 1 && hm[1] == 0 && hm[2] == 0 && hm[3] == 1);
    img_free(&m);

    /* working-size image: one crop as it is */
    uint8_t *h64 = calloc(64 * 64, 1);
    disk(h64, 64, 64, 20, 20, 5);
    img_plan p;
    CHECK(check_plan(h64, 64, 64, s, IMG_PLAN_CROP, 16, &p) == 1 && p.crops[0].w == 64);
    img_plan_free(&p);
    roundtrip(h64, 64, 64, 3, s, IMG_PLAN_CROP);
    memset(h64, 0, 64 * 64);
    CHECK(img_plan_make(h64, 64, 64, s, IMG_PLAN_CROP, 16, 32, &p) == SP_ERR_INVALID);
    free(h64);

    /* 1000x750: two far regions -> two crops at scale 1; a diagonal chain is one region */
    int w = 1000, h = 750;
    uint8_t *hole = calloc((size_t)w * h, 1);
    disk(hole, w, h, 100, 100, 10);
    disk(hole, w, h, 800, 600, 12);
    for (int i = 0; i < 20; i++) hole[(size_t)(300 + i) * w + 500 + i] = 1; /* diagonal line */
    CHECK(check_plan(hole, w, h, s, IMG_PLAN_CROP, 16, &p) == 3);
    CHECK(p.regions == 3);
    img_plan_free(&p);
    roundtrip(hole, w, h, 3, s, IMG_PLAN_CROP);
    roundtrip(hole, w, h, 4, s, IMG_PLAN_CROP);
    roundtrip(hole, w, h, 3, s, IMG_PLAN_RESIZE);
    /* close regions that fit one working crop together (margins included) merge into it */
    disk(hole, w, h, 115, 100, 3);
    CHECK(check_plan(hole, w, h, s, IMG_PLAN_CROP, 16, &p) == 3);
    img_plan_free(&p);
    /* close regions that would not (90..135 plus margins is 78 > 64) keep a crop each at scale 1 */
    disk(hole, w, h, 130, 100, 5);
    CHECK(check_plan(hole, w, h, s, IMG_PLAN_CROP, 16, &p) == 4);
    for (int i = 0; i < p.n; i++) CHECK(p.crops[i].w == s || p.crops[i].bx1 - p.crops[i].bx0 > 40);
    img_plan_free(&p);
    /* a big region needs a crop larger than s, downscaled */
    memset(hole, 0, (size_t)w * h);
    disk(hole, w, h, 500, 400, 150);
    CHECK(check_plan(hole, w, h, s, IMG_PLAN_CROP, 16, &p) == 1 && p.crops[0].w == p.crops[0].h &&
          p.crops[0].w >= 301 + 32);
    img_plan_free(&p);
    roundtrip(hole, w, h, 3, s, IMG_PLAN_CROP);
    /* a region wider than the image is tall: non-square crop of full height */
    memset(hole, 0, (size_t)w * h);
    for (int x = 10; x < 990; x++) hole[(size_t)300 * w + x] = 1;
    for (int y = 0; y < h; y++) hole[(size_t)y * w + 500] = 1;
    CHECK(check_plan(hole, w, h, s, IMG_PLAN_CROP, 16, &p) == 1 && p.crops[0].h == h && p.crops[0].w > h);
    img_plan_free(&p);
    roundtrip(hole, w, h, 3, s, IMG_PLAN_CROP);
    /* speckle noise: too many regions for the budget -> a grid of crops, at most the budget's 32 */
    memset(hole, 0, (size_t)w * h);
    for (int y = 0; y < h; y += 7)
        for (int x = 0; x < w; x += 7) hole[(size_t)y * w + x] = 1;
    int nc = check_plan(hole, w, h, s, IMG_PLAN_CROP, 2, &p);
    CHECKF(nc >= 2 && nc <= 32 && p.tile > 0, "speckle: %d crops on a grid of %d", nc, p.tile);
    img_plan_free(&p);
    roundtrip(hole, w, h, 3, s, IMG_PLAN_CROP);
    /* 48 separate small holes, more regions than the budget's 32 crops: a grid of crops, each far
     * smaller than the one crop around all holes the planner used to fall back to */
    memset(hole, 0, (size_t)w * h);
    for (int i = 0; i < 48; i++) disk(hole, w, h, 40 + (i % 8) * 125, 40 + (i / 8) * 130, 6);
    nc = check_plan(hole, w, h, s, IMG_PLAN_CROP, 16, &p);
    int small = 1;
    for (int i = 0; i < p.n; i++) small &= p.crops[i].w <= 300 && p.crops[i].h <= 300;
    CHECKF(nc > 1 && nc <= 32 && p.tile > 0 && small, "48 holes: %d crops on a grid of %d, each at most 300 px: %d", nc,
           p.tile, small);
    img_plan_free(&p);
    roundtrip(hole, w, h, 3, s, IMG_PLAN_CROP);
    free(hole);

    /* an image smaller than s: the crop is the largest square, enlarged */
    w = 50, h = 40;
    hole = calloc((size_t)w * h, 1);
    disk(hole, w, h, 25, 20, 4);
    CHECK(check_plan(hole, w, h, s, IMG_PLAN_CROP, 8, &p) == 1 && p.crops[0].w == 40 && p.crops[0].h == 40);
    img_plan_free(&p);
    roundtrip(hole, w, h, 3, s, IMG_PLAN_CROP);
    roundtrip(hole, w, h, 4, s, IMG_PLAN_RESIZE);
    free(hole);
    return t_done("test_plan");
}
