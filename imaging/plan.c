/* imaging/plan.c: hole regions by run-length union-find, clustering into crops, conservative mask resampling and paste-back. */
#include "imaging/plan.h"

#include <stdlib.h>
#include <string.h>

long img_hole_map(const img_u8 *mask, uint8_t *hole) {
    size_t n = (size_t)mask->w * mask->h;
    long holes = 0;
    int c = mask->c;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = mask->px + i * c;
        unsigned lum = c == 1 ? p[0] : (299u * p[0] + 587u * p[1] + 114u * p[2] + 500u) / 1000u;
        if (c == 4) lum = (lum * p[3] + 127u) / 255u;
        hole[i] = lum > 127;
        holes += hole[i];
    }
    return holes;
}

long img_hole_map_alpha(const img_u8 *im, uint8_t *hole) {
    if (im->c != 4) return -1;
    size_t n = (size_t)im->w * im->h;
    long holes = 0;
    for (size_t i = 0; i < n; i++) {
        hole[i] = im->px[i * 4 + 3] == 0;
        holes += hole[i];
    }
    return holes;
}

sp_status img_hole_map_scaled(const img_u8 *mask, int w, int h, uint8_t *hole, long *holes) {
    img_u8 r = {0};
    const img_u8 *m = mask;
    if (mask->w != w || mask->h != h) { /* at its own size the resampling is the identity */
        sp_status st = img_resize_rect(mask, 0, 0, mask->w, mask->h, w, h, &r);
        if (st) return st;
        m = &r;
    }
    long n = img_hole_map(m, hole);
    if (holes) *holes = n;
    img_free(&r);
    return SP_OK;
}

/* ---- connected regions ---- */

typedef struct {
    int y, x0, x1; /* run of hole pixels [x0, x1] on row y */
} run;

typedef struct {
    int x0, y0, x1, y1; /* [x0,x1) x [y0,y1) */
} box;

static int uf_find(int *parent, int i) {
    while (parent[i] != i) {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    return i;
}

static void uf_union(int *parent, int a, int b) {
    a = uf_find(parent, a);
    b = uf_find(parent, b);
    if (a != b) parent[a < b ? b : a] = a < b ? a : b;
}

/* Bounding boxes of the 8-connected hole regions; *nbox = -1 (and no boxes) when there are more
 * than `limit` regions. */
static sp_status hole_regions(const uint8_t *hole, int w, int h, int limit, box **boxes, int *nbox) {
    *boxes = NULL;
    *nbox = 0;
    size_t cap = 1024, n = 0;
    run *runs = malloc(cap * sizeof *runs);
    int *parent = NULL;
    box *bx = NULL;
    sp_status st = SP_OK;
    if (!runs) return sp_err(SP_ERR_NOMEM, "hole regions: out of memory");
    for (int y = 0; y < h; y++) {
        const uint8_t *row = hole + (size_t)y * w;
        for (int x = 0; x < w;) {
            if (!row[x]) {
                x++;
                continue;
            }
            int x0 = x;
            while (x < w && row[x]) x++;
            if (n == cap) {
                cap *= 2;
                run *nr = realloc(runs, cap * sizeof *runs);
                if (!nr) {
                    st = sp_err(SP_ERR_NOMEM, "hole regions: out of memory");
                    goto fail;
                }
                runs = nr;
            }
            runs[n++] = (run){y, x0, x - 1};
        }
    }
    parent = malloc((n ? n : 1) * sizeof *parent);
    if (!parent) {
        st = sp_err(SP_ERR_NOMEM, "hole regions: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) parent[i] = (int)i;
    /* join runs of consecutive rows that touch, diagonals included: two pointers over the rows */
    size_t a = 0; /* first run of row y-1 */
    for (size_t b0 = 0; b0 < n;) {
        int y = runs[b0].y;
        size_t b1 = b0;
        while (b1 < n && runs[b1].y == y) b1++;
        while (a < b0 && runs[a].y < y - 1) a++;
        size_t i = a;
        for (size_t j = b0; j < b1 && i < b0; j++) {
            while (i < b0 && runs[i].x1 + 1 < runs[j].x0) i++;
            for (size_t k = i; k < b0 && runs[k].x0 <= runs[j].x1 + 1; k++) uf_union(parent, (int)k, (int)j);
        }
        b0 = b1;
    }
    /* one box per root */
    int nb = 0;
    int *slot = malloc((n ? n : 1) * sizeof *slot);
    if (!slot) {
        st = sp_err(SP_ERR_NOMEM, "hole regions: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) slot[i] = -1;
    for (size_t i = 0; i < n; i++)
        if (uf_find(parent, (int)i) == (int)i) slot[i] = nb++;
    if (nb > limit) {
        free(slot);
        *nbox = -1;
        goto fail;
    }
    bx = malloc((size_t)(nb ? nb : 1) * sizeof *bx);
    if (!bx) {
        free(slot);
        st = sp_err(SP_ERR_NOMEM, "hole regions: out of memory");
        goto fail;
    }
    for (int i = 0; i < nb; i++) bx[i] = (box){w, h, 0, 0};
    for (size_t i = 0; i < n; i++) {
        box *b = &bx[slot[uf_find(parent, (int)i)]];
        if (runs[i].x0 < b->x0) b->x0 = runs[i].x0;
        if (runs[i].x1 + 1 > b->x1) b->x1 = runs[i].x1 + 1;
        if (runs[i].y < b->y0) b->y0 = runs[i].y;
        if (runs[i].y + 1 > b->y1) b->y1 = runs[i].y + 1;
    }
    free(slot);
    *boxes = bx;
    *nbox = nb;
    bx = NULL;
fail:
    free(bx);
    free(parent);
    free(runs);
    return st;
}

static int imin(int a, int b);
static int imax(int a, int b);

/* Merges boxes until no two of them overlap, nor have margin-expanded extents that meet while
 * their union with its margins still fits one working crop of s x s at scale 1 (merging those is
 * free; merging farther ones would scale the crop down, and chains of nearby defects would grow
 * into one blurry crop over the whole photo). Returns the new count. */
static int cluster(box *b, int n, int margin, int s) {
    int changed = 1;
    while (changed) {
        changed = 0;
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++) {
                int overlap = b[i].x0 < b[j].x1 && b[j].x0 < b[i].x1 && b[i].y0 < b[j].y1 && b[j].y0 < b[i].y1;
                int near = b[i].x0 - margin < b[j].x1 + margin && b[j].x0 - margin < b[i].x1 + margin &&
                           b[i].y0 - margin < b[j].y1 + margin && b[j].y0 - margin < b[i].y1 + margin;
                int uw = imax(b[i].x1, b[j].x1) - imin(b[i].x0, b[j].x0) + 2 * margin;
                int uh = imax(b[i].y1, b[j].y1) - imin(b[i].y0, b[j].y0) + 2 * margin;
                if (overlap || (near && uw <= s && uh <= s)) {
                    if (b[j].x0 < b[i].x0) b[i].x0 = b[j].x0;
                    if (b[j].y0 < b[i].y0) b[i].y0 = b[j].y0;
                    if (b[j].x1 > b[i].x1) b[i].x1 = b[j].x1;
                    if (b[j].y1 > b[i].y1) b[i].y1 = b[j].y1;
                    b[j--] = b[--n];
                    changed = 1;
                }
            }
    }
    return n;
}

static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

/* Places the crop for owned box `o` in a w x h image (see img_plan_make). */
static img_crop place(box o, int w, int h, int s, int margin) {
    int ew = o.x1 - o.x0 + 2 * margin, eh = o.y1 - o.y0 + 2 * margin;
    int need = imax(ew, eh);
    int side = imin(imax(need, s), imin(w, h));
    int cw, ch;
    if (side >= need) {
        cw = ch = side;
    } else {
        cw = imin(w, imax(ew, side));
        ch = imin(h, imax(eh, side));
    }
    img_crop c = {0};
    c.w = cw;
    c.h = ch;
    int x0 = (o.x0 + o.x1) / 2 - cw / 2, y0 = (o.y0 + o.y1) / 2 - ch / 2;
    x0 = imax(imin(x0, o.x0), o.x1 - cw); /* the owned box stays inside */
    y0 = imax(imin(y0, o.y0), o.y1 - ch);
    c.x0 = imax(0, imin(x0, w - cw));
    c.y0 = imax(0, imin(y0, h - ch));
    c.bx0 = o.x0;
    c.by0 = o.y0;
    c.bx1 = o.x1;
    c.by1 = o.y1;
    return c;
}

/* The holes of `all` on a grid of cells of side `cell` (first s - 2*margin, at least s/2, then
 * doubled until the cells that hold a hole number at most max_crops): one box per such cell, the
 * box of the hole pixels inside it. */
static sp_status grid_boxes(const uint8_t *hole, int w, int h, box all, int s, int margin, long max_crops, box **out,
                            int *nout, int *cell_out) {
    int cell = imax(s - 2 * margin, imax(s / 2, 1));
    for (;;) {
        int gx = (all.x1 - all.x0 + cell - 1) / cell, gy = (all.y1 - all.y0 + cell - 1) / cell;
        box *b = malloc((size_t)gx * gy * sizeof *b);
        if (!b) return sp_err(SP_ERR_NOMEM, "plan: out of memory");
        for (int i = 0; i < gx * gy; i++) b[i] = (box){w, h, 0, 0};
        for (int y = all.y0; y < all.y1; y++) {
            const uint8_t *row = hole + (size_t)y * w;
            box *brow = b + (size_t)((y - all.y0) / cell) * gx;
            for (int x = all.x0; x < all.x1; x++)
                if (row[x]) {
                    box *c = brow + (x - all.x0) / cell;
                    if (x < c->x0) c->x0 = x;
                    if (x + 1 > c->x1) c->x1 = x + 1;
                    if (y < c->y0) c->y0 = y;
                    if (y + 1 > c->y1) c->y1 = y + 1;
                }
        }
        int n = 0;
        for (int i = 0; i < gx * gy; i++)
            if (b[i].x1 > 0) b[n++] = b[i];
        if (n <= max_crops || cell >= imax(w, h)) {
            *out = b;
            *nout = n;
            *cell_out = cell;
            return SP_OK;
        }
        free(b);
        cell *= 2;
    }
}

sp_status img_plan_make(const uint8_t *hole, int w, int h, int s, img_plan_strategy strategy, int margin,
                        long max_work_pixels, img_plan *out) {
    memset(out, 0, sizeof *out);
    out->s = s;
    if (w <= 0 || h <= 0 || s <= 0) return sp_err(SP_ERR_INVALID, "plan: invalid sizes %dx%d, working %d", w, h, s);
    /* the box around every hole pixel */
    box all = {w, h, 0, 0};
    for (int y = 0; y < h; y++) {
        const uint8_t *row = hole + (size_t)y * w;
        int first = -1, last = -1;
        for (int x = 0; x < w; x++)
            if (row[x]) {
                if (first < 0) first = x;
                last = x;
            }
        if (first < 0) continue;
        all.x0 = imin(all.x0, first);
        all.x1 = imax(all.x1, last + 1);
        all.y0 = imin(all.y0, y);
        all.y1 = y + 1;
    }
    if (all.x1 == 0) return sp_err(SP_ERR_INVALID, "plan: the mask has no hole pixel");
    box *boxes = NULL;
    int nb = 0;
    if ((w == s && h == s) || strategy == IMG_PLAN_RESIZE) {
        out->crops = malloc(sizeof *out->crops);
        if (!out->crops) goto nomem;
        out->crops[0] = (img_crop){0, 0, w, h, all.x0, all.y0, all.x1, all.y1};
        out->n = 1;
        out->regions = -1;
        return SP_OK;
    }
    sp_status st = hole_regions(hole, w, h, IMG_PLAN_MAX_REGIONS, &boxes, &nb);
    if (st) return st;
    out->regions = nb;
    if (nb > 0) nb = cluster(boxes, nb, margin, s);
    long max_crops = max_work_pixels / ((long)s * s);
    if (max_crops < 1) max_crops = 1;
    if (nb < 0 || nb > max_crops) {
        free(boxes);
        boxes = NULL;
        if ((st = grid_boxes(hole, w, h, all, s, margin, max_crops, &boxes, &nb, &out->tile))) return st;
    }
    out->crops = malloc((size_t)nb * sizeof *out->crops);
    if (!out->crops) goto nomem;
    for (int i = 0; i < nb; i++) out->crops[i] = place(boxes[i], w, h, s, margin);
    out->n = nb;
    free(boxes);
    return SP_OK;
nomem:
    free(boxes);
    img_plan_free(out);
    return sp_err(SP_ERR_NOMEM, "plan: out of memory");
}

void img_plan_free(img_plan *p) {
    if (!p) return;
    free(p->crops);
    memset(p, 0, sizeof *p);
}

sp_status img_plan_input(const img_plan *p, int i, const img_u8 *im, const uint8_t *hole, float *chw, float *mask) {
    const img_crop *c = &p->crops[i];
    int s = p->s;
    size_t n = (size_t)s * s;
    if (c->w == s && c->h == s) {
        for (int y = 0; y < s; y++)
            for (int x = 0; x < s; x++) {
                size_t src = (size_t)(c->y0 + y) * im->w + (size_t)(c->x0 + x);
                const uint8_t *px = im->px + src * im->c;
                size_t d = (size_t)y * s + x;
                for (int k = 0; k < 3; k++) chw[k * n + d] = (float)px[im->c == 1 ? 0 : k] / 255.0f;
                mask[d] = hole[src] ? 0.0f : 1.0f;
            }
        return SP_OK;
    }
    img_u8 small;
    sp_status st = img_resize_rect(im, c->x0, c->y0, c->w, c->h, s, s, &small);
    if (st) return st;
    img_to_chw(&small, chw);
    img_free(&small);
    /* integral image of the crop's holes, for "any hole in this source rectangle" queries */
    size_t iw = (size_t)c->w + 1;
    uint32_t *sum = calloc(iw * (size_t)(c->h + 1), sizeof *sum);
    if (!sum) return sp_err(SP_ERR_NOMEM, "plan: out of memory");
    for (int y = 0; y < c->h; y++) {
        uint32_t acc = 0;
        const uint8_t *row = hole + (size_t)(c->y0 + y) * im->w + c->x0;
        for (int x = 0; x < c->w; x++) {
            acc += row[x] != 0;
            sum[(size_t)(y + 1) * iw + x + 1] = sum[(size_t)y * iw + x + 1] + acc;
        }
    }
    int *xs0 = malloc(sizeof(int) * 4 * (size_t)s);
    if (!xs0) {
        free(sum);
        return sp_err(SP_ERR_NOMEM, "plan: out of memory");
    }
    int *xs1 = xs0 + s, *ys0 = xs0 + 2 * s, *ys1 = xs0 + 3 * s;
    /* source span of working pixel t: its area footprint widened by one pixel each side, which
     * also covers the two taps of bilinear enlargement */
    for (int t = 0; t < s; t++) {
        xs0[t] = imax(0, (int)((long)t * c->w / s) - 1);
        xs1[t] = imin(c->w, (int)(((long)(t + 1) * c->w + s - 1) / s) + 1);
        ys0[t] = imax(0, (int)((long)t * c->h / s) - 1);
        ys1[t] = imin(c->h, (int)(((long)(t + 1) * c->h + s - 1) / s) + 1);
    }
    for (int y = 0; y < s; y++)
        for (int x = 0; x < s; x++) {
            uint32_t cnt = sum[(size_t)ys1[y] * iw + xs1[x]] - sum[(size_t)ys0[y] * iw + xs1[x]] -
                           sum[(size_t)ys1[y] * iw + xs0[x]] + sum[(size_t)ys0[y] * iw + xs0[x]];
            mask[(size_t)y * s + x] = cnt ? 0.0f : 1.0f;
        }
    free(xs0);
    free(sum);
    return SP_OK;
}

sp_status img_plan_paste(const img_plan *p, int i, const float *chw, img_u8 *im, const uint8_t *hole) {
    const img_crop *c = &p->crops[i];
    int s = p->s;
    if (im->c != 3 && im->c != 4) return sp_err(SP_ERR_INVALID, "plan: paste needs an RGB or RGBA image");
    img_u8 res, back;
    memset(&back, 0, sizeof back);
    sp_status st = img_alloc(&res, s, s, 3);
    if (st) return st;
    img_from_chw(chw, &res);
    const img_u8 *src = &res;
    if (c->w != s || c->h != s) {
        st = img_resize_rect(&res, 0, 0, s, s, c->w, c->h, &back);
        if (st) {
            img_free(&res);
            return st;
        }
        src = &back;
    }
    for (int y = c->by0; y < c->by1; y++) {
        const uint8_t *hrow = hole + (size_t)y * im->w;
        uint8_t *drow = im->px + (size_t)y * im->w * im->c;
        const uint8_t *srow = src->px + (size_t)(y - c->y0) * src->w * 3;
        for (int x = c->bx0; x < c->bx1; x++) {
            if (!hrow[x]) continue;
            const uint8_t *sp = srow + (size_t)(x - c->x0) * 3;
            uint8_t *dp = drow + (size_t)x * im->c;
            dp[0] = sp[0];
            dp[1] = sp[1];
            dp[2] = sp[2];
        }
    }
    img_free(&res);
    img_free(&back);
    return SP_OK;
}
