/* telea.c: Telea's (2004) fast-marching inpainting: narrow band on a binary heap, weighted first-order estimates. */
#include "imaging/telea.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Pixel states of the fast marching method (section 3 of the paper). */
enum { KNOWN = 0, BAND = 1, INSIDE = 2 };
#define T_INF 1.0e6f

/* A band pixel in the heap with its keys: T, then the insertion order (`stamp`), so that equal
 * T leave in a fixed order. */
typedef struct {
    float T;
    uint32_t stamp;
    int p;
} band_ent;

/* One neighbour q of the disc B_eps(p), as an offset from p, with its distance factors. */
typedef struct {
    int dx, dy;
    int lin;        /* dy * w + dx: the offset in the pixel arrays */
    float inv_len;  /* 1/|p - q| */
    float inv_len2; /* dst = d0^2/|p - q|^2 with d0 = 1 pixel */
} disc_off;

typedef struct {
    int w, h, c, nch; /* nch: channels painted (alpha excluded) */
    uint8_t *px;
    uint8_t *flag;    /* [h*w] KNOWN, BAND, INSIDE */
    float *T;         /* [h*w] arrival time of the front: > 0 in the hole, <= 0 outside */
    float *g;         /* [h*w][nch][2] image gradient, NULL without the gradient term */
    band_ent *heap;   /* the narrow band: a min-heap on (T, insertion order) */
    int *pos;         /* [h*w] position in the heap, -1 when not in it */
    int n;
    uint32_t next_stamp;
    disc_off *disc;
    int ndisc, radius;
    double deadline; /* sp_now() time after which the march gives up; 0 = none */
    int timed_out;
} telea_ctx;

/* ---- the narrow band: a binary min-heap with position tracking ---- */

/* Entries carry their keys, so that sifting reads the heap array only. */
static inline int band_less(band_ent a, band_ent b) { return a.T < b.T || (a.T == b.T && a.stamp < b.stamp); }

static inline void heap_set(telea_ctx *t, int i, band_ent e) {
    t->heap[i] = e;
    t->pos[e.p] = i;
}

static void heap_up(telea_ctx *t, int i) {
    band_ent e = t->heap[i];
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!band_less(e, t->heap[parent])) break;
        heap_set(t, i, t->heap[parent]);
        i = parent;
    }
    heap_set(t, i, e);
}

static void heap_down(telea_ctx *t, int i) {
    band_ent e = t->heap[i];
    for (;;) {
        int l = 2 * i + 1, m = i;
        band_ent best = e;
        if (l < t->n && band_less(t->heap[l], best)) m = l, best = t->heap[l];
        if (l + 1 < t->n && band_less(t->heap[l + 1], best)) m = l + 1, best = t->heap[l + 1];
        if (m == i) break;
        heap_set(t, i, best);
        i = m;
    }
    heap_set(t, i, e);
}

/* Inserts pixel p with its current T, or moves it up after its T decreased. */
static void band_push(telea_ctx *t, int p) {
    if (t->pos[p] >= 0) {
        t->heap[t->pos[p]].T = t->T[p];
        heap_up(t, t->pos[p]);
        return;
    }
    heap_set(t, t->n++, (band_ent){t->T[p], t->next_stamp++, p});
    heap_up(t, t->n - 1);
}

static int band_pop(telea_ctx *t) {
    int p = t->heap[0].p;
    t->pos[p] = -1;
    if (--t->n > 0) {
        heap_set(t, 0, t->heap[t->n]);
        heap_down(t, 0);
    }
    return p;
}

/* ---- the Eikonal update |grad T| = 1 (the paper's solve()) ---- */

static int known_at(const telea_ctx *t, int x, int y) {
    return x >= 0 && y >= 0 && x < t->w && y < t->h && t->flag[y * t->w + x] == KNOWN;
}

/* T at a pixel from one horizontal neighbour (x1,y1) and one vertical neighbour (x2,y2). */
static float solve(const telea_ctx *t, int x1, int y1, int x2, int y2) {
    int k1 = known_at(t, x1, y1), k2 = known_at(t, x2, y2);
    if (k1 && k2) {
        float t1 = t->T[y1 * t->w + x1], t2 = t->T[y2 * t->w + x2];
        float d = t1 - t2;
        if (d * d >= 2.0f) return T_INF; /* no two-sided solution; the other pairs give a one-sided one */
        float r = sqrtf(2.0f - d * d);
        float s = (t1 + t2 - r) * 0.5f;
        if (s >= t1 && s >= t2) return s;
        s += r;
        if (s >= t1 && s >= t2) return s;
        return T_INF;
    }
    if (k1) return 1.0f + t->T[y1 * t->w + x1];
    if (k2) return 1.0f + t->T[y2 * t->w + x2];
    return T_INF;
}

static float update_T(const telea_ctx *t, int x, int y) {
    float a = solve(t, x - 1, y, x, y - 1), b = solve(t, x + 1, y, x, y - 1);
    float c = solve(t, x - 1, y, x, y + 1), d = solve(t, x + 1, y, x, y + 1);
    return fminf(fminf(a, b), fminf(c, d));
}

/* ---- gradients ---- */

/* The smaller of two slopes of the same sign, 0 when they disagree (minmod): exact on a ramp,
 * 0 next to a step, so that a first-order estimate never overshoots an edge. */
static inline float minmod(float a, float b) {
    if (a * b <= 0) return 0;
    return fabsf(a) < fabsf(b) ? a : b;
}

/* Slope-limited derivative of channel k of the known image at pixel i along one axis (`step`
 * pixels per unit, `at` the coordinate on it, `len` the image extent): minmod of the two
 * one-sided differences when both neighbours are known; next to the hole or the border, minmod
 * of the two differences on the known side. */
static float known_slope(const img_u8 *im, const uint8_t *hole, int k, int i, int step, int at, int len) {
    int c = im->c;
    const uint8_t *px = im->px;
#define V(j) ((float)px[(size_t)(j)*c + k])
    int lo = at > 0 && !hole[i - step], hi = at < len - 1 && !hole[i + step];
    if (lo && hi) return minmod(V(i) - V(i - step), V(i + step) - V(i));
    if (lo && at > 1 && !hole[i - 2 * step]) return minmod(V(i) - V(i - step), V(i - step) - V(i - 2 * step));
    if (hi && at < len - 2 && !hole[i + 2 * step]) return minmod(V(i + step) - V(i), V(i + 2 * step) - V(i + step));
    return 0;
#undef V
}

/* grad T at pixel (x, y), the normal N of the front: central differences over neighbours that
 * are not INSIDE, one-sided where only one is, 0 along an axis with none. */
static void grad_T(const telea_ctx *t, int x, int y, float *gx, float *gy) {
    int w = t->w, i = y * w + x;
    const float *T = t->T;
    int l = x > 0 && t->flag[i - 1] != INSIDE, r = x < w - 1 && t->flag[i + 1] != INSIDE;
    int u = y > 0 && t->flag[i - w] != INSIDE, d = y < t->h - 1 && t->flag[i + w] != INSIDE;
    *gx = l && r ? (T[i + 1] - T[i - 1]) * 0.5f : r ? T[i + 1] - T[i] : l ? T[i] - T[i - 1] : 0.0f;
    *gy = u && d ? (T[i + w] - T[i - w]) * 0.5f : d ? T[i + w] - T[i] : u ? T[i] - T[i - w] : 0.0f;
}

/* ---- painting one pixel (section 2 of the paper) ---- */

/* The weighted sum over the disc around pixel p = (x, y) for NCH painted channels, with (GRAD)
 * or without the gradient term; CHECK says whether a neighbour may lie outside the image. The
 * three flags are compile-time constants in each call, so the channel loops unroll. */
static inline __attribute__((always_inline)) void disc_sum(const telea_ctx *t, int x, int y, int p, float nx,
                                                           float ny, const int nch, const int grad,
                                                           const int check, float *acc, float (*gacc)[2],
                                                           int *lo, int *hi, float *sum) {
    const int w = t->w, c = t->c;
    const float Tp = t->T[p];
    for (int n = 0; n < t->ndisc; n++) {
        const disc_off *o = &t->disc[n];
        if (check) {
            int qx = x + o->dx, qy = y + o->dy;
            if (qx < 0 || qy < 0 || qx >= w || qy >= t->h) continue;
        }
        int q = p + o->lin;
        if (t->flag[q] == INSIDE) continue;
        float rx = (float)-o->dx, ry = (float)-o->dy; /* p - q */
        float dir = fabsf((rx * nx + ry * ny) * o->inv_len);
        if (dir < 1e-6f) dir = 1e-6f; /* a neighbour straight across the normal still counts, a little */
        float lev = 1.0f / (1.0f + fabsf(Tp - t->T[q]));
        float wt = dir * o->inv_len2 * lev;
        const uint8_t *v = t->px + (size_t)q * c;
        for (int k = 0; k < nch; k++) {
            float e = v[k];
            if (grad) {
                const float *g = t->g + ((size_t)q * nch + k) * 2;
                e += g[0] * rx + g[1] * ry;
                gacc[k][0] += wt * g[0];
                gacc[k][1] += wt * g[1];
            }
            acc[k] += wt * e;
            lo[k] = v[k] < lo[k] ? v[k] : lo[k];
            hi[k] = v[k] > hi[k] ? v[k] : hi[k];
        }
        *sum += wt;
    }
}

static void inpaint_pixel(telea_ctx *t, int x, int y) {
    int w = t->w, c = t->c, nch = t->nch, p = y * w + x, r = t->radius;
    float nx, ny;
    grad_T(t, x, y, &nx, &ny);
    float acc[3] = {0, 0, 0}, gacc[3][2] = {{0, 0}, {0, 0}, {0, 0}}, sum = 0;
    int lo[3] = {255, 255, 255}, hi[3] = {0, 0, 0};
    const int inside = x >= r && y >= r && x < w - r && y < t->h - r;
    if (nch == 3 && t->g && inside)
        disc_sum(t, x, y, p, nx, ny, 3, 1, 0, acc, gacc, lo, hi, &sum); /* the common case, unrolled */
    else
        disc_sum(t, x, y, p, nx, ny, nch, t->g != NULL, 1, acc, gacc, lo, hi, &sum);
    if (!(sum > 0)) return; /* cannot happen: the pixel that just froze is a neighbour */
    for (int k = 0; k < nch; k++) {
        float e = acc[k] / sum;
        e = e < (float)lo[k] ? (float)lo[k] : e > (float)hi[k] ? (float)hi[k] : e;
        t->px[(size_t)p * c + k] = (uint8_t)(e + 0.5f);
        if (t->g) {
            t->g[((size_t)p * nch + k) * 2] = gacc[k][0] / sum;
            t->g[((size_t)p * nch + k) * 2 + 1] = gacc[k][1] / sum;
        }
    }
}

/* ---- the march (the paper's Figure 4, with T computed before the pixel is painted) ---- */

/* Puts the pixels outside the hole that are 4-adjacent to it into the band with T = 0. */
static void seed_band(telea_ctx *t, const uint8_t *hole) {
    int w = t->w, h = t->h;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int i = y * w + x;
            if (hole[i]) continue;
            if ((x > 0 && hole[i - 1]) || (x < w - 1 && hole[i + 1]) || (y > 0 && hole[i - w]) ||
                (y < h - 1 && hole[i + w])) {
                t->flag[i] = BAND;
                t->T[i] = 0.0f;
                band_push(t, i);
            }
        }
}

/* Advances the front: takes the band pixel of least T, freezes it (KNOWN) and updates T of its
 * 4-neighbours; an INSIDE neighbour joins the band and, with `paint`, is painted. Stops once the
 * least T exceeds `stop`, leaving the band empty. */
static void march(telea_ctx *t, int paint, float stop) {
    static const int nb[4][2] = {{-1, 0}, {0, -1}, {1, 0}, {0, 1}};
    int w = t->w, h = t->h;
    unsigned pops = 0;
    while (t->n > 0) {
        /* a look at the clock every 16,384 pixels: about a millisecond of work */
        if (t->deadline > 0 && (++pops & 16383) == 0 && sp_now() > t->deadline) {
            t->timed_out = 1;
            break;
        }
        int p = band_pop(t);
        t->flag[p] = KNOWN;
        if (t->T[p] > stop) break;
        int px = p % w, py = p / w;
        for (int k = 0; k < 4; k++) {
            int x = px + nb[k][0], y = py + nb[k][1];
            if (x < 0 || y < 0 || x >= w || y >= h) continue;
            int q = y * w + x;
            if (t->flag[q] == KNOWN) continue;
            float T = update_T(t, x, y);
            if (T < t->T[q]) t->T[q] = T;
            if (t->flag[q] == INSIDE) {
                if (paint) inpaint_pixel(t, x, y); /* while still INSIDE: its old value is never read */
                t->flag[q] = BAND;
            }
            band_push(t, q);
        }
    }
    while (t->n > 0) band_pop(t);
}

/* The march over the whole of `im` (checked arguments, at least one hole and one known pixel). */
static sp_status telea_frame(img_u8 *im, const uint8_t *hole, int radius, int flags, double deadline) {
    int w = im->w, h = im->h;
    size_t n = (size_t)w * h;

    sp_status st = SP_OK;
    telea_ctx t = {.w = w, .h = h, .c = im->c, .nch = im->c == 4 ? 3 : im->c, .px = im->px, .radius = radius,
                   .deadline = deadline};
    t.flag = malloc(n);
    t.T = malloc(n * sizeof *t.T);
    t.heap = malloc(n * sizeof *t.heap);
    t.pos = malloc(n * sizeof *t.pos);
    t.disc = malloc(sizeof *t.disc * (size_t)(2 * radius + 1) * (2 * radius + 1));
    if (!(flags & TELEA_NO_GRADIENT)) t.g = malloc(n * (size_t)t.nch * 2 * sizeof *t.g);
    if (!t.flag || !t.T || !t.heap || !t.pos || !t.disc || (!(flags & TELEA_NO_GRADIENT) && !t.g)) {
        st = sp_err(SP_ERR_NOMEM, "telea: out of memory for %dx%d", w, h);
        goto done;
    }
    for (int dy = -radius; dy <= radius; dy++)
        for (int dx = -radius; dx <= radius; dx++) {
            int d2 = dx * dx + dy * dy;
            if (d2 == 0 || d2 > radius * radius) continue;
            t.disc[t.ndisc++] = (disc_off){dx, dy, dy * w + dx, 1.0f / sqrtf((float)d2), 1.0f / (float)d2};
        }
    for (size_t i = 0; i < n; i++) t.pos[i] = -1;

    /* T outside the hole: a first march from the boundary outwards, over the known pixels, as far
     * as any disc can reach; those pixels get -T, so that grad T is a central difference across
     * the boundary and lev tells near known pixels from far ones. */
    float reach = 1.5f * (float)radius + 2.0f;
    for (size_t i = 0; i < n; i++) {
        t.flag[i] = hole[i] ? KNOWN : INSIDE;
        t.T[i] = hole[i] ? 0.0f : T_INF;
    }
    seed_band(&t, hole);
    march(&t, 0, reach);
    if (t.timed_out) {
        st = sp_err(SP_ERR_TIMEOUT, "telea: the deadline passed while filling %dx%d", w, h);
        goto done;
    }
    for (size_t i = 0; i < n; i++) t.T[i] = hole[i] ? T_INF : -fminf(t.T[i], reach);

    /* The image gradient of the known pixels; painted pixels get the weighted mean of their
     * neighbours' gradients rather than differences of painted values, which would feed each
     * estimate's error into the next ones and grow without bound.
     * Only the known pixels within `radius` of the hole are ever read (by discs around hole
     * pixels); the rest get 0. Their chessboard distance to the hole is that of the inverted
     * mask, computed in t.flag and t.pos, which are free until the fill below resets them. */
    if (t.g) {
        uint8_t *known = t.flag;
        int *near = t.pos;
        for (size_t i = 0; i < n; i++) known[i] = !hole[i];
        telea_hole_distance(known, w, h, near);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int i = y * w + x;
                float *g = t.g + (size_t)i * t.nch * 2;
                int need = !hole[i] && near[i] <= radius;
                for (int k = 0; k < t.nch; k++) {
                    g[2 * k] = need ? known_slope(im, hole, k, i, 1, x, w) : 0;
                    g[2 * k + 1] = need ? known_slope(im, hole, k, i, w, y, h) : 0;
                }
            }
        for (size_t i = 0; i < n; i++) t.pos[i] = -1;
    }

    /* The fill: the hole is INSIDE, the known pixels KNOWN, and those 4-adjacent to the hole the
     * initial band (the boundary, T = 0). */
    for (size_t i = 0; i < n; i++) t.flag[i] = hole[i] ? INSIDE : KNOWN;
    seed_band(&t, hole);
    march(&t, 1, T_INF);
    if (t.timed_out) st = sp_err(SP_ERR_TIMEOUT, "telea: the deadline passed while filling %dx%d", w, h);
done:
    free(t.flag);
    free(t.T);
    free(t.g);
    free(t.heap);
    free(t.pos);
    free(t.disc);
    return st;
}

/* Pixels of context a window around the hole keeps on each side so that the march inside it is
 * the march over the whole image: the first march reaches 1.5 radius + 2 outwards, the discs
 * `radius` further and the slopes one pixel more. */
static int telea_margin(int radius) { return (int)ceilf(1.5f * (float)radius + 2.0f) + radius + 3; }

sp_status telea_inpaint_until(img_u8 *im, const uint8_t *hole, int radius, int flags, double deadline) {
    if (!im || !im->px || im->w <= 0 || im->h <= 0 || (im->c != 1 && im->c != 3 && im->c != 4) || !hole)
        return sp_err(SP_ERR_INVALID, "telea: invalid image or mask");
    if (radius < 1 || radius > 64) return sp_err(SP_ERR_INVALID, "telea: radius %d is not in 1-64", radius);
    if (flags & ~(TELEA_NO_GRADIENT | TELEA_FULL_FRAME))
        return sp_err(SP_ERR_INVALID, "telea: unknown flags 0x%x", (unsigned)flags);
    int w = im->w, h = im->h;
    size_t n = (size_t)w * h;
    if (n > (size_t)INT32_MAX) return sp_err(SP_ERR_LIMIT, "telea: %dx%d is too large", w, h);
    size_t nhole = 0;
    int x0 = w, y0 = h, x1 = -1, y1 = -1;
    for (int y = 0; y < h; y++) {
        const uint8_t *row = hole + (size_t)y * w;
        for (int x = 0; x < w; x++)
            if (row[x]) {
                nhole++;
                if (x < x0) x0 = x;
                if (x > x1) x1 = x;
                if (y < y0) y0 = y;
                if (y > y1) y1 = y;
            }
    }
    if (nhole == 0) return SP_OK;
    if (nhole == n) return sp_err(SP_ERR_INVALID, "telea: the hole covers the whole image");
    int inner = flags & TELEA_NO_GRADIENT;
    int m = telea_margin(radius);
    x0 = x0 - m < 0 ? 0 : x0 - m;
    y0 = y0 - m < 0 ? 0 : y0 - m;
    x1 = x1 + m >= w ? w - 1 : x1 + m;
    y1 = y1 + m >= h ? h - 1 : y1 + m;
    int cw = x1 - x0 + 1, ch = y1 - y0 + 1;
    /* the whole image when asked, or when the window would save under a quarter of it */
    if ((flags & TELEA_FULL_FRAME) || (size_t)cw * ch * 4 > n * 3) return telea_frame(im, hole, radius, inner, deadline);
    img_u8 sub = {.w = cw, .h = ch, .c = im->c};
    size_t rowb = (size_t)cw * im->c;
    sub.px = malloc(rowb * ch);
    uint8_t *sh = calloc((size_t)cw * ch, 1);
    sp_status st = SP_OK;
    if (!sub.px || !sh) {
        st = sp_err(SP_ERR_NOMEM, "telea: out of memory for a %dx%d window", cw, ch);
        goto out;
    }
    for (int y = 0; y < ch; y++) {
        memcpy(sub.px + rowb * y, im->px + ((size_t)(y0 + y) * w + x0) * im->c, rowb);
        memcpy(sh + (size_t)cw * y, hole + (size_t)(y0 + y) * w + x0, (size_t)cw);
    }
    st = telea_frame(&sub, sh, radius, inner, deadline);
    if (!st) /* only the hole pixels changed */
        for (int y = 0; y < ch; y++)
            for (int x = 0; x < cw; x++)
                if (sh[(size_t)cw * y + x])
                    memcpy(im->px + ((size_t)(y0 + y) * w + x0 + x) * im->c, sub.px + rowb * y + (size_t)x * im->c,
                           (size_t)im->c);
out:
    free(sub.px);
    free(sh);
    return st;
}

sp_status telea_inpaint_ex(img_u8 *im, const uint8_t *hole, int radius, int flags) {
    return telea_inpaint_until(im, hole, radius, flags, 0);
}

sp_status telea_inpaint(img_u8 *im, const uint8_t *hole, int radius) { return telea_inpaint_ex(im, hole, radius, 0); }

/* d = min(d, v + 1). */
static inline void relax(int *d, int v) {
    if (v + 1 < *d) *d = v + 1;
}

void telea_hole_distance(const uint8_t *hole, int w, int h, int *dist) {
    const int inf = w + h + 2;
    for (int y = 0; y < h; y++) /* forward pass: left, up-left, up, up-right */
        for (int x = 0; x < w; x++) {
            int d = hole[y * w + x] ? inf : 0;
            if (d) {
                if (x > 0) relax(&d, dist[y * w + x - 1]);
                for (int dx = -1; y > 0 && dx <= 1; dx++)
                    if (x + dx >= 0 && x + dx < w) relax(&d, dist[(y - 1) * w + x + dx]);
            }
            dist[y * w + x] = d;
        }
    for (int y = h - 1; y >= 0; y--) /* backward pass: right, down-left, down, down-right */
        for (int x = w - 1; x >= 0; x--) {
            int d = dist[y * w + x];
            if (d) {
                if (x < w - 1) relax(&d, dist[y * w + x + 1]);
                for (int dx = -1; y < h - 1 && dx <= 1; dx++)
                    if (x + dx >= 0 && x + dx < w) relax(&d, dist[(y + 1) * w + x + dx]);
            }
            dist[y * w + x] = d;
        }
}

/* Telea's fill of one crop for the blend; returns a status without setting the thread's error
 * message (it may run on an OpenMP worker). */
static sp_status fill_one(int s, const float *x, const float *m, int radius, uint8_t *fill, int *dist) {
    const size_t hw = (size_t)s * s;
    size_t nhole = 0;
    for (size_t q = 0; q < hw; q++) nhole += m[q] == 0.0f;
    if (nhole == 0 || nhole == hw) { /* nothing to fill, or no known pixel to fill from */
        memset(dist, 0, hw * sizeof *dist);
        return SP_OK;
    }
    img_u8 im = {.w = s, .h = s, .c = 3, .px = fill};
    uint8_t *hole = malloc(hw);
    if (!hole) return SP_ERR_NOMEM;
    for (size_t q = 0; q < hw; q++) {
        hole[q] = m[q] == 0.0f;
        for (int c = 0; c < 3; c++) {
            float v = x[c * hw + q] * 255.0f + 0.5f;
            fill[3 * q + c] = hole[q] ? 0 : v <= 0.0f ? 0 : v >= 255.0f ? 255 : (uint8_t)v;
        }
    }
    sp_status st = telea_inpaint(&im, hole, radius);
    telea_hole_distance(hole, s, s, dist);
    free(hole);
    return st;
}

sp_status telea_blend_fill(int n, int s, const float *img, const float *mask, int radius, int threads, uint8_t *fill,
                           int *dist) {
    if (n < 0 || s < 1 || !img || !mask || !fill || !dist || threads < 0)
        return sp_err(SP_ERR_INVALID, "telea blend: invalid arguments");
    if (radius < 1 || radius > 64) return sp_err(SP_ERR_INVALID, "telea blend: radius %d is not in 1-64", radius);
    const size_t hw = (size_t)s * s;
    sp_status st = SP_OK;
    /* One crop per thread: Telea is sequential within an image. */
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads ? threads : omp_get_max_threads())
    for (int i = 0; i < n; i++) {
        sp_status si = fill_one(s, img + (size_t)i * 3 * hw, mask + (size_t)i * hw, radius, fill + (size_t)i * 3 * hw,
                                dist + (size_t)i * hw);
        if (si) {
#pragma omp critical(telea_blend_status)
            st = si;
        }
    }
    if (st == SP_ERR_NOMEM) return sp_err(st, "telea blend: out of memory for %dx%d", s, s);
    if (st) return sp_err(st, "telea blend: Telea failed on a %dx%d crop", s, s);
    return SP_OK;
}

void telea_blend_apply(int n, int s, const float *blend, int nblend, const uint8_t *fill, const int *dist, float *out) {
    const size_t hw = (size_t)s * s;
    if (nblend <= 0) return;
    for (int i = 0; i < n; i++) {
        float *o = out + (size_t)i * 3 * hw;
        const uint8_t *f = fill + (size_t)i * 3 * hw;
        const int *d = dist + (size_t)i * hw;
        for (size_t q = 0; q < hw; q++) {
            if (d[q] == 0) continue;
            const float b = blend[(d[q] < nblend ? d[q] : nblend) - 1];
            for (int c = 0; c < 3; c++) {
                float v = o[c * hw + q];
                v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
                o[c * hw + q] = b * ((float)f[3 * q + c] / 255.0f) + (1.0f - b) * v;
            }
        }
    }
}

sp_status telea_blend(int n, int s, const float *mask, const float *blend, int nblend, int radius, float *out) {
    if (n < 0 || s < 1 || !mask || !out || (nblend && !blend) || nblend < 0)
        return sp_err(SP_ERR_INVALID, "telea blend: invalid arguments");
    if (radius < 1 || radius > 64) return sp_err(SP_ERR_INVALID, "telea blend: radius %d is not in 1-64", radius);
    if (n == 0 || nblend == 0) return SP_OK;
    const size_t hw = (size_t)s * s;
    uint8_t *fill = malloc((size_t)n * 3 * hw);
    int *dist = malloc((size_t)n * hw * sizeof *dist);
    sp_status st = fill && dist ? telea_blend_fill(n, s, out, mask, radius, 0, fill, dist)
                                : sp_err(SP_ERR_NOMEM, "telea blend: out of memory for %d crops of %dx%d", n, s, s);
    if (!st) telea_blend_apply(n, s, blend, nblend, fill, dist, out);
    free(fill);
    free(dist);
    return st;
}

sp_status telea_image_blend(img_u8 *im, const uint8_t *hole, const float *blend, int nblend, int radius,
                            double deadline) {
    if (!im || !im->px || im->w <= 0 || im->h <= 0 || (im->c != 3 && im->c != 4) || !hole || nblend < 0 ||
        nblend > 64 || (nblend && !blend))
        return sp_err(SP_ERR_INVALID, "telea image blend: invalid arguments");
    if (radius < 1 || radius > 64) return sp_err(SP_ERR_INVALID, "telea image blend: radius %d is not in 1-64", radius);
    if (nblend == 0) return SP_OK;
    if (deadline > 0 && sp_now() > deadline) return sp_err(SP_ERR_TIMEOUT, "telea image blend: past the deadline");
    const int w = im->w, h = im->h, c = im->c;
    int bx0 = w, by0 = h, bx1 = -1, by1 = -1;
    size_t holes = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            if (hole[(size_t)y * w + x]) {
                holes++;
                if (x < bx0) bx0 = x;
                if (x > bx1) bx1 = x;
                if (y < by0) by0 = y;
                if (y > by1) by1 = y;
            }
    if (holes == 0 || holes == (size_t)w * h) return SP_OK; /* nothing to blend, or nothing to blend from */
    /* the holes' box grown by 1 (clipped): it holds the known ring next to every hole pixel */
    const int x0 = bx0 > 0 ? bx0 - 1 : 0, y0 = by0 > 0 ? by0 - 1 : 0;
    const int ww = (bx1 < w - 1 ? bx1 + 2 : w) - x0, wh = (by1 < h - 1 ? by1 + 2 : h) - y0;
    uint8_t *saved = malloc(holes * c), *wh_hole = calloc((size_t)ww * wh, 1);
    int *dist = malloc((size_t)ww * wh * sizeof *dist);
    if (!saved || !wh_hole || !dist) {
        free(saved);
        free(wh_hole);
        free(dist);
        return sp_err(SP_ERR_NOMEM, "telea image blend: no memory for %zu hole pixels", holes);
    }
    size_t k = 0; /* the pasted values, in the window's raster order */
    for (int y = y0; y < y0 + wh; y++)
        for (int x = x0; x < x0 + ww; x++)
            if (hole[(size_t)y * w + x]) memcpy(saved + c * k++, im->px + ((size_t)y * w + x) * c, c);
    sp_status st = telea_inpaint_until(im, hole, radius, 0, deadline);
    if (st) { /* put the pasted answer back */
        k = 0;
        for (int y = y0; y < y0 + wh; y++)
            for (int x = x0; x < x0 + ww; x++)
                if (hole[(size_t)y * w + x]) memcpy(im->px + ((size_t)y * w + x) * c, saved + c * k++, c);
        free(saved);
        free(wh_hole);
        free(dist);
        return st;
    }
    /* the distances within the window are the image's: it holds the known ring around every hole */
    for (int y = 0; y < wh; y++) memcpy(wh_hole + (size_t)y * ww, hole + (size_t)(y0 + y) * w + x0, ww);
    telea_hole_distance(wh_hole, ww, wh, dist);
    k = 0;
    for (int y = y0; y < y0 + wh; y++)
        for (int x = x0; x < x0 + ww; x++) {
            if (!hole[(size_t)y * w + x]) continue;
            uint8_t *p = im->px + ((size_t)y * w + x) * c;
            const uint8_t *n = saved + c * k++;
            const int d = dist[(size_t)(y - y0) * ww + x - x0];
            const float b = blend[(d < nblend ? d : nblend) - 1];
            for (int ch = 0; ch < 3; ch++) p[ch] = (uint8_t)(b * p[ch] + (1.0f - b) * n[ch] + 0.5f);
            if (c == 4) p[3] = n[3];
        }
    free(saved);
    free(wh_hole);
    free(dist);
    return SP_OK;
}
