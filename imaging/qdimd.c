/* qdimd.c: QD-IMD mask generation (Iskakov 2018, Algorithm 1): Quick Draw loading, a portable PRNG, thick-line rasterisation. */
#include "imaging/qdimd.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Pixel-exact agreement with training/qdimd.py needs every product and sum rounded on its own:
 * no fused multiply-add. ISO C mode (-std=c11) already gives GCC -ffp-contract=off. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define QD_MAX_ATTEMPTS 100

struct qd_source {
    long ndrawings, nstrokes;
    size_t npoints;
    long *drawing_first; /* [ndrawings + 1]: index of each drawing's first stroke */
    size_t *stroke_first; /* [nstrokes + 1]: index of each stroke's first point */
    double *xy;           /* [npoints][2]: x, y in Quick Draw units (0-255) */
    size_t cap_d, cap_s, cap_p;
};

void qd_params_default(qd_params *p) {
    p->size = 256;
    p->seed = 0;
    p->strokes_mean = 4;
    p->strokes_std = 2;
    p->width_min = 5;
    p->width_max = 15;
    p->scale_min = 1.0;
    p->scale_max = 1.5;
    p->whole_drawings = 0;
}

sp_status qd_params_check(const qd_params *p) {
    if (p->size < 8 || p->size > 8192) return sp_err(SP_ERR_INVALID, "qdimd: size %d is not in 8-8192", p->size);
    if (!(p->strokes_mean >= 0 && p->strokes_mean <= 1000))
        return sp_err(SP_ERR_INVALID, "qdimd: strokes mean %g is not in 0-1000", p->strokes_mean);
    if (!(p->strokes_std >= 0 && p->strokes_std <= 1000))
        return sp_err(SP_ERR_INVALID, "qdimd: strokes std %g is not in 0-1000", p->strokes_std);
    if (!(p->width_min > 0 && p->width_min <= p->width_max && p->width_max <= 1000))
        return sp_err(SP_ERR_INVALID, "qdimd: widths %g-%g need 0 < min <= max <= 1000", p->width_min, p->width_max);
    if (!(p->scale_min > 0 && p->scale_min <= p->scale_max && p->scale_max <= 100))
        return sp_err(SP_ERR_INVALID, "qdimd: scales %g-%g need 0 < min <= max <= 100", p->scale_min, p->scale_max);
    return SP_OK;
}

/* ---- random stream ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void qd_rng_init(qd_rng *r, uint64_t seed, uint64_t index) {
    uint64_t x = seed;
    uint64_t h = splitmix64(&x);                /* a hash of the seed ... */
    uint64_t y = h + index * 0x9E3779B97F4A7C15ull; /* ... moved along by the index */
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&y);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t qd_rng_next(qd_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double qd_rng_uniform(qd_rng *r) { return (double)(qd_rng_next(r) >> 11) * 0x1.0p-53; }

uint64_t qd_rng_below(qd_rng *r, uint64_t n) {
    uint64_t threshold = (0 - n) % n; /* 2^64 mod n: values below it would bias the modulo */
    for (;;) {
        uint64_t x = qd_rng_next(r);
        if (x >= threshold) return x % n;
    }
}

double qd_log(double x) {
    int e = 0;
    double m = frexp(x, &e); /* x = m * 2^e, m in [0.5, 1) */
    if (m < 0.7071067811865476) {
        m = m * 2.0;
        e = e - 1;
    }
    /* log(m) = 2 atanh(z) = 2 (z + z^3/3 + z^5/5 + ...), |z| <= 0.1716: 12 terms reach 1e-17. */
    double z = (m - 1.0) / (m + 1.0), z2 = z * z;
    double s = 1.0 / 23.0;
    for (int k = 10; k >= 0; k--) s = s * z2 + 1.0 / (double)(2 * k + 1);
    return (double)e * 0.6931471805599453 + 2.0 * z * s;
}

double qd_rng_normal(qd_rng *r) {
    double u, v, s;
    do {
        u = 2.0 * qd_rng_uniform(r) - 1.0;
        v = 2.0 * qd_rng_uniform(r) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    return u * sqrt(-2.0 * qd_log(s) / s);
}

/* ---- rasterisation ---- */

void qd_draw_segment(uint8_t *mask, int size, double ax, double ay, double bx, double by, double radius) {
    double minx = fmin(ax, bx) - radius, maxx = fmax(ax, bx) + radius;
    double miny = fmin(ay, by) - radius, maxy = fmax(ay, by) + radius;
    if (!(maxx >= 0 && maxy >= 0 && minx <= size && miny <= size)) return; /* also NaN */
    /* Candidate pixels: a box one pixel wider than the capsule; the test below decides. */
    int i0 = minx < 0 ? 0 : (int)floor(minx - 0.5) - 1, i1 = maxx > size ? size - 1 : (int)ceil(maxx - 0.5) + 1;
    int j0 = miny < 0 ? 0 : (int)floor(miny - 0.5) - 1, j1 = maxy > size ? size - 1 : (int)ceil(maxy - 0.5) + 1;
    if (i0 < 0) i0 = 0;
    if (j0 < 0) j0 = 0;
    if (i1 > size - 1) i1 = size - 1;
    if (j1 > size - 1) j1 = size - 1;
    double dx = bx - ax, dy = by - ay, len2 = dx * dx + dy * dy, r2 = radius * radius;
    for (int j = j0; j <= j1; j++) {
        double py = j + 0.5;
        uint8_t *row = mask + (size_t)j * size;
        for (int i = i0; i <= i1; i++) {
            double px = i + 0.5;
            double t = 0.0;
            if (len2 > 0) {
                t = ((px - ax) * dx + (py - ay) * dy) / len2;
                t = t < 0.0 ? 0.0 : t > 1.0 ? 1.0 : t;
            }
            double ex = px - (ax + t * dx), ey = py - (ay + t * dy);
            if (ex * ex + ey * ey <= r2) row[i] = 255;
        }
    }
}

/* Draws stroke `s` of the source, mapped to the upscaled canvas, as a polyline of `radius`. */
static void draw_stroke(const qd_source *src, long s, int size, double scale, double radius, uint8_t *mask) {
    const double *p = src->xy + 2 * src->stroke_first[s];
    size_t n = src->stroke_first[s + 1] - src->stroke_first[s];
    double f = size / 256.0, c = size / 2.0;
    double px = c + scale * ((p[0] + 0.5) * f - c), py = c + scale * ((p[1] + 0.5) * f - c);
    if (n == 1) qd_draw_segment(mask, size, px, py, px, py, radius);
    for (size_t k = 1; k < n; k++) {
        double qx = c + scale * ((p[2 * k] + 0.5) * f - c), qy = c + scale * ((p[2 * k + 1] + 0.5) * f - c);
        qd_draw_segment(mask, size, px, py, qx, qy, radius);
        px = qx;
        py = qy;
    }
}

double qd_hole_ratio(const uint8_t *mask, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += mask[i] != 0;
    return n ? (double)k / (double)n : 0.0;
}

sp_status qd_generate(const qd_params *p, qd_source *src, uint64_t index, uint8_t *mask_out) {
    sp_status st = qd_params_check(p);
    if (st) return st;
    if (!src || src->ndrawings <= 0) return sp_err(SP_ERR_INVALID, "qdimd: no drawings loaded");
    size_t n = (size_t)p->size * p->size;
    qd_rng r;
    qd_rng_init(&r, p->seed, index);
    for (int attempt = 0; attempt < QD_MAX_ATTEMPTS; attempt++) {
        memset(mask_out, 0, n);
        double k = floor(p->strokes_mean + p->strokes_std * qd_rng_normal(&r) + 0.5);
        long strokes = k < 1 ? 1 : (long)k;
        double scale = p->scale_min + (p->scale_max - p->scale_min) * qd_rng_uniform(&r);
        for (long i = 0; i < strokes; i++) {
            uint64_t d = qd_rng_below(&r, (uint64_t)src->ndrawings);
            long s0 = src->drawing_first[d], s1 = src->drawing_first[d + 1];
            if (!p->whole_drawings) {
                s0 += (long)qd_rng_below(&r, (uint64_t)(s1 - s0));
                s1 = s0 + 1;
            }
            double width = p->width_min + (p->width_max - p->width_min) * qd_rng_uniform(&r);
            double radius = width * scale / 2.0;
            for (long s = s0; s < s1; s++) draw_stroke(src, s, p->size, scale, radius, mask_out);
        }
        if (memchr(mask_out, 255, n)) return SP_OK;
    }
    return sp_err(SP_ERR_INVALID, "qdimd: mask %llu came out empty %d times (are the drawings inside the canvas?)",
                  (unsigned long long)index, QD_MAX_ATTEMPTS);
}

/* ---- loading ---- */

/* Returns `p` grown to hold at least `need` elements of `elem` bytes (or `p` itself when it
 * already does); NULL when out of memory, `p` then still valid. */
static void *grow(void *p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return p;
    size_t c = *cap ? *cap : 1024;
    while (c < need) c *= 2;
    void *q = realloc(p, c * elem);
    if (q) *cap = c;
    return q;
}

/* Sets the error message and returns -1, for add_drawing. */
static int malformed(const char *what) {
    sp_err(SP_ERR_FORMAT, "%s", what);
    return -1;
}

/* Appends one drawing (the "drawing" array of a line); 1 when it had no points, -1 on a malformed
 * drawing (message set), -2 out of memory. */
static int add_drawing(qd_source *s, const cJSON *drawing) {
    if (!cJSON_IsArray(drawing)) return malformed("\"drawing\" is not an array");
    long first = s->nstrokes;
    const cJSON *stroke;
    cJSON_ArrayForEach(stroke, drawing) {
        const cJSON *xs = cJSON_GetArrayItem(stroke, 0), *ys = cJSON_GetArrayItem(stroke, 1);
        if (!cJSON_IsArray(stroke) || !cJSON_IsArray(xs) || !cJSON_IsArray(ys))
            return malformed("a stroke is not [[x...],[y...]]");
        int n = cJSON_GetArraySize(xs);
        if (n != cJSON_GetArraySize(ys))
            return malformed("a stroke has different numbers of x and y values");
        if (n == 0) continue;
        double *xy = grow(s->xy, &s->cap_p, 2 * (s->npoints + (size_t)n), sizeof *s->xy);
        if (!xy) return -2;
        s->xy = xy;
        size_t *sf = grow(s->stroke_first, &s->cap_s, (size_t)s->nstrokes + 2, sizeof *s->stroke_first);
        if (!sf) return -2;
        s->stroke_first = sf;
        const cJSON *x = xs->child, *y = ys->child;
        for (int k = 0; k < n; k++, x = x->next, y = y->next) {
            if (!cJSON_IsNumber(x) || !cJSON_IsNumber(y) || !isfinite(x->valuedouble) || !isfinite(y->valuedouble))
                return malformed("a stroke has a coordinate that is not a number");
            s->xy[2 * (s->npoints + k)] = x->valuedouble;
            s->xy[2 * (s->npoints + k) + 1] = y->valuedouble;
        }
        s->stroke_first[s->nstrokes] = s->npoints;
        s->npoints += (size_t)n;
        s->nstrokes++;
        s->stroke_first[s->nstrokes] = s->npoints;
    }
    if (s->nstrokes == first) return 1;
    long *df = grow(s->drawing_first, &s->cap_d, (size_t)s->ndrawings + 2, sizeof *s->drawing_first);
    if (!df) return -2;
    s->drawing_first = df;
    s->drawing_first[s->ndrawings] = first;
    s->ndrawings++;
    s->drawing_first[s->ndrawings] = s->nstrokes;
    return 0;
}

static sp_status load_file(qd_source *s, const char *path) {
    uint8_t *buf = NULL;
    size_t len = 0;
    sp_status st = sp_read_file(path, &buf, &len);
    if (st) return st;
    const char *p = (const char *)buf, *end = p + len;
    for (long line = 1; p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        const char *q = p;
        while (q < e && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
        if (q < e) {
            cJSON *obj = cJSON_ParseWithLength(p, (size_t)(e - p));
            if (!obj) {
                st = sp_err(SP_ERR_FORMAT, "%s:%ld: not valid JSON", path, line);
                break;
            }
            int r = add_drawing(s, cJSON_GetObjectItemCaseSensitive(obj, "drawing"));
            cJSON_Delete(obj);
            if (r == -1) {
                st = sp_err_wrap(SP_ERR_FORMAT, "%s:%ld", path, line);
                break;
            }
            if (r == -2) {
                st = sp_err(SP_ERR_NOMEM, "%s:%ld: out of memory", path, line);
                break;
            }
        }
        p = e + 1;
    }
    free(buf);
    return st;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

sp_status qd_source_new(const char *dir, qd_source **out) {
    *out = NULL;
    sp_status st = SP_OK;
    char **names = NULL;
    size_t nn = 0, cap = 0;
    qd_source *s = calloc(1, sizeof *s);
    if (!s) return sp_err(SP_ERR_NOMEM, "qdimd: out of memory");
    DIR *d = opendir(dir);
    if (!d) {
        st = sp_err(SP_ERR_IO, "%s: cannot open the Quick Draw folder", dir);
        goto fail;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 7 || strcmp(e->d_name + l - 7, ".ndjson")) continue;
        char *copy = strdup(e->d_name);
        char **nm = copy ? grow(names, &cap, nn + 1, sizeof *names) : NULL;
        if (!nm) {
            free(copy);
            closedir(d);
            st = sp_err(SP_ERR_NOMEM, "qdimd: out of memory");
            goto fail;
        }
        names = nm;
        names[nn++] = copy;
    }
    closedir(d);
    if (nn == 0) {
        st = sp_err(SP_ERR_INVALID, "%s: no .ndjson files", dir);
        goto fail;
    }
    qsort(names, nn, sizeof *names, cmp_names);
    for (size_t i = 0; i < nn; i++) {
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= (int)sizeof path) {
            st = sp_err(SP_ERR_INVALID, "%s/%s: path too long", dir, names[i]);
            goto fail;
        }
        if ((st = load_file(s, path))) goto fail;
    }
    if (s->ndrawings == 0) {
        st = sp_err(SP_ERR_INVALID, "%s: no drawings with points", dir);
        goto fail;
    }
    for (size_t i = 0; i < nn; i++) free(names[i]);
    free(names);
    *out = s;
    return SP_OK;
fail:
    for (size_t i = 0; i < nn; i++) free(names[i]);
    free(names);
    qd_source_free(s);
    return st;
}

void qd_source_free(qd_source *s) {
    if (!s) return;
    free(s->drawing_first);
    free(s->stroke_first);
    free(s->xy);
    free(s);
}

long qd_source_drawings(const qd_source *s) { return s ? s->ndrawings : 0; }
long qd_source_strokes(const qd_source *s) { return s ? s->nstrokes : 0; }
