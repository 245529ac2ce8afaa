/* core/route.c: the router file's loader, the domain features and classifier, and the gate's request statistics and model. */
#include "core/route.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "imaging/telea.h"
#include "model/st.h"

#define RT_MAX_HIDDEN 256
#define RT_NAME_MAX 32
#define RT_TEXTURE_BAND 8 /* known pixels this close to the hole (working pixels) make CORE_RF_TEXTURE */

/* One small model: standardised inputs, an optional ReLU hidden layer, a linear output layer. */
typedef struct {
    int nin, nhid, nout; /* nhid 0: no hidden layer */
    float *mu, *sd, *w1, *b1, *w, *b;
} rt_mlp;

struct core_router {
    int nclasses, domain_size;
    char names[CORE_ROUTE_MAX_CLASSES][RT_NAME_MAX];
    float threshold[CORE_ROUTE_MAX_CLASSES];
    int gate_size[CORE_ROUTE_MAX_CLASSES];
    rt_mlp domain;
    rt_mlp gate[CORE_ROUTE_MAX_CLASSES];
    char sha256[65];
};

static const char *const feat_names[CORE_ROUTE_NFEAT] = {
    "hole_ratio", "crop_hole", "log_scale", "log_crops", "thick_mean", "thick_max", "texture", "p_class",
};

const char *core_route_feat_name(int i) { return i >= 0 && i < CORE_ROUTE_NFEAT ? feat_names[i] : NULL; }

/* ---- loading ---- */

static void mlp_free(rt_mlp *m) {
    free(m->mu);
    free(m->sd);
    free(m->w1);
    free(m->b1);
    free(m->w);
    free(m->b);
    memset(m, 0, sizeof *m);
}

/* Reads tensor PREFIX.SUFFIX of the given shape into a new buffer (*out). */
static sp_status read_tensor(const st_file *f, const char *prefix, const char *suffix, int ndim, int64_t d0,
                             int64_t d1, float **out) {
    char name[96];
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    int64_t dims[2] = {d0, d1};
    size_t n = (size_t)(ndim == 1 ? d0 : d0 * d1);
    if (!(*out = malloc(sizeof(float) * (n ? n : 1)))) return sp_err(SP_ERR_NOMEM, "no memory for %s", name);
    sp_status st = st_read_f32(f, name, ndim, dims, *out);
    if (st == SP_ERR_INVALID) st = SP_ERR_FORMAT; /* a tensor of another shape: the file is at fault */
    return st;
}

/* Loads model `prefix` with `nin` inputs and `nout` outputs (see core/route.h). */
static sp_status mlp_load(const st_file *f, const char *prefix, int nin, int nout, rt_mlp *m) {
    memset(m, 0, sizeof *m);
    m->nin = nin;
    m->nout = nout;
    char name[96];
    snprintf(name, sizeof name, "%s.w1", prefix);
    const st_tensor *w1 = st_find(f, name);
    if (w1) {
        if (w1->ndim != 2 || w1->shape[0] < 1 || w1->shape[0] > RT_MAX_HIDDEN || w1->shape[1] != nin)
            return sp_err(SP_ERR_FORMAT, "%s: %s must be (H, %d) with H in 1..%d", st_path(f), name, nin,
                          RT_MAX_HIDDEN);
        m->nhid = (int)w1->shape[0];
    }
    int last = m->nhid ? m->nhid : nin;
    sp_status st;
    if ((st = read_tensor(f, prefix, "mu", 1, nin, 0, &m->mu)) || (st = read_tensor(f, prefix, "sd", 1, nin, 0, &m->sd)) ||
        (m->nhid && ((st = read_tensor(f, prefix, "w1", 2, m->nhid, nin, &m->w1)) ||
                     (st = read_tensor(f, prefix, "b1", 1, m->nhid, 0, &m->b1)))) ||
        (st = read_tensor(f, prefix, "w", 2, nout, last, &m->w)) || (st = read_tensor(f, prefix, "b", 1, nout, 0, &m->b)))
        return st;
    for (int i = 0; i < nin; i++)
        if (!(m->sd[i] > 0) || !isfinite(m->sd[i]) || !isfinite(m->mu[i]))
            return sp_err(SP_ERR_FORMAT, "%s: %s.sd[%d] is %g, %s.mu[%d] %g: each sd must be finite and > 0",
                          st_path(f), prefix, i, m->sd[i], prefix, i, m->mu[i]);
    return SP_OK;
}

/* The metadata value `key`, required. */
static sp_status meta_req(const st_file *f, const char *key, const char **out) {
    *out = st_meta(f, key);
    if (!*out)
        return sp_err(SP_ERR_FORMAT, "%s: metadata has no '%s'%s", st_path(f), key,
                      strcmp(key, "kind") ? "" : " (not a router file?)");
    return SP_OK;
}

/* Splits the comma-separated class list into r->names. */
static sp_status parse_classes(const st_file *f, const char *list, core_router *r) {
    const char *p = list;
    r->nclasses = 0;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (r->nclasses == CORE_ROUTE_MAX_CLASSES)
            return sp_err(SP_ERR_FORMAT, "%s: more than %d classes in '%s'", st_path(f), CORE_ROUTE_MAX_CLASSES, list);
        if (len == 0 || len >= RT_NAME_MAX)
            return sp_err(SP_ERR_FORMAT, "%s: classes '%s': each name must have 1 to %d characters", st_path(f), list,
                          RT_NAME_MAX - 1);
        for (size_t i = 0; i < len; i++) {
            char c = p[i];
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
                return sp_err(SP_ERR_FORMAT, "%s: classes '%s': names take a-z, 0-9, _ and - only", st_path(f), list);
        }
        memcpy(r->names[r->nclasses], p, len);
        r->names[r->nclasses][len] = 0;
        for (int j = 0; j < r->nclasses; j++)
            if (!strcmp(r->names[j], r->names[r->nclasses]))
                return sp_err(SP_ERR_FORMAT, "%s: class '%s' named twice", st_path(f), r->names[j]);
        r->nclasses++;
        p += len + (e != NULL);
        if (e && !*p) return sp_err(SP_ERR_FORMAT, "%s: classes '%s' ends with a comma", st_path(f), list);
    }
    if (r->nclasses < 2) return sp_err(SP_ERR_FORMAT, "%s: classes '%s': at least two are needed", st_path(f), list);
    return SP_OK;
}

/* A whole decimal number in [lo, hi]. */
static int parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static sp_status router_load(const st_file *f, core_router *r) {
    const char *v;
    sp_status st;
    if ((st = meta_req(f, "kind", &v))) return st;
    if (strcmp(v, "semipaint router"))
        return sp_err(SP_ERR_FORMAT, "%s: metadata kind is '%s', not 'semipaint router'", st_path(f), v);
    if ((st = meta_req(f, "format", &v))) return st;
    if (strcmp(v, "1")) return sp_err(SP_ERR_FORMAT, "%s: router format '%s'; this build reads format 1", st_path(f), v);
    if ((st = meta_req(f, "domain_features", &v))) return st;
    if (strcmp(v, CORE_ROUTE_DOMAIN_FEATURES))
        return sp_err(SP_ERR_FORMAT, "%s: fit on domain features '%s'; this build computes '%s' (refit it: training/fit_router.py)",
                      st_path(f), v, CORE_ROUTE_DOMAIN_FEATURES);
    if ((st = meta_req(f, "gate_features", &v))) return st;
    if (strcmp(v, CORE_ROUTE_GATE_FEATURES))
        return sp_err(SP_ERR_FORMAT, "%s: fit on gate features '%s'; this build computes '%s' (refit it: training/fit_router.py)",
                      st_path(f), v, CORE_ROUTE_GATE_FEATURES);
    if ((st = meta_req(f, "domain_size", &v))) return st;
    if (parse_int(v, CORE_ROUTE_GRID, 8192, &r->domain_size))
        return sp_err(SP_ERR_FORMAT, "%s: domain_size '%s' is not an integer in %d..8192", st_path(f), v, CORE_ROUTE_GRID);
    if ((st = meta_req(f, "classes", &v)) || (st = parse_classes(f, v, r))) return st;
    for (int i = 0; i < r->nclasses; i++) {
        char key[64];
        snprintf(key, sizeof key, "threshold.%s", r->names[i]);
        if ((st = meta_req(f, key, &v))) return st;
        char *end;
        double t = strtod(v, &end);
        if (end == v || *end || !(t >= 0 && t <= 1))
            return sp_err(SP_ERR_FORMAT, "%s: %s '%s' is not a number in [0, 1]", st_path(f), key, v);
        r->threshold[i] = (float)t;
        snprintf(key, sizeof key, "size.%s", r->names[i]);
        if ((v = st_meta(f, key)) && parse_int(v, 0, 8192, &r->gate_size[i]))
            return sp_err(SP_ERR_FORMAT, "%s: %s '%s' is not an integer in 0..8192", st_path(f), key, v);
    }
    if ((st = mlp_load(f, "domain", CORE_ROUTE_DOMAIN_NFEAT, r->nclasses, &r->domain))) return st;
    for (int i = 0; i < r->nclasses; i++) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "gate.%s", r->names[i]);
        if ((st = mlp_load(f, prefix, CORE_ROUTE_NFEAT, 1, &r->gate[i]))) return st;
    }
    snprintf(r->sha256, sizeof r->sha256, "%s", st_sha256(f));
    return SP_OK;
}

sp_status core_router_load(const char *path, core_router **out) {
    *out = NULL;
    st_file *f = NULL;
    sp_status st = st_open(path, &f);
    if (st) return st; /* st_open names the file */
    core_router *r = calloc(1, sizeof *r);
    if (!r) {
        st_close(f);
        return sp_err(SP_ERR_NOMEM, "%s: no memory for the router", path);
    }
    st = router_load(f, r);
    if (st && !strstr(sp_err_msg(), path)) sp_err_wrap(st, "%s", path); /* every message names the file */
    st_close(f);
    if (st) {
        core_router_free(r);
        return st;
    }
    *out = r;
    return SP_OK;
}

void core_router_free(core_router *r) {
    if (!r) return;
    mlp_free(&r->domain);
    for (int i = 0; i < CORE_ROUTE_MAX_CLASSES; i++) mlp_free(&r->gate[i]);
    free(r);
}

int core_router_nclasses(const core_router *r) { return r->nclasses; }

const char *core_router_class(const core_router *r, int i) { return i >= 0 && i < r->nclasses ? r->names[i] : NULL; }

int core_router_find(const core_router *r, const char *name) {
    for (int i = 0; i < r->nclasses; i++)
        if (!strcmp(r->names[i], name)) return i;
    return -1;
}

int core_router_domain_size(const core_router *r) { return r->domain_size; }

float core_router_threshold(const core_router *r, int i) { return i >= 0 && i < r->nclasses ? r->threshold[i] : 1.0f; }

int core_router_gate_size(const core_router *r, int i) { return i >= 0 && i < r->nclasses ? r->gate_size[i] : 0; }

const char *core_router_sha256(const core_router *r) { return r->sha256; }

/* ---- the models ---- */

/* out[nout] = the model's outputs (logits) for input `in` (m->nin floats). */
static void mlp_forward(const rt_mlp *m, const float *in, float *out) {
    float z[CORE_ROUTE_DOMAIN_NFEAT > CORE_ROUTE_NFEAT ? CORE_ROUTE_DOMAIN_NFEAT : CORE_ROUTE_NFEAT];
    float h[RT_MAX_HIDDEN];
    for (int i = 0; i < m->nin; i++) z[i] = (in[i] - m->mu[i]) / m->sd[i];
    const float *last = z;
    int nlast = m->nin;
    if (m->nhid) {
        for (int j = 0; j < m->nhid; j++) {
            const float *w = m->w1 + (size_t)j * m->nin;
            float a = m->b1[j];
            for (int i = 0; i < m->nin; i++) a += w[i] * z[i];
            h[j] = a > 0 ? a : 0;
        }
        last = h;
        nlast = m->nhid;
    }
    for (int o = 0; o < m->nout; o++) {
        const float *w = m->w + (size_t)o * nlast;
        float a = m->b[o];
        for (int i = 0; i < nlast; i++) a += w[i] * last[i];
        out[o] = a;
    }
}

void core_router_domain_probs(const core_router *r, const float *feat, float *p) {
    float logit[CORE_ROUTE_MAX_CLASSES];
    mlp_forward(&r->domain, feat, logit);
    float mx = logit[0];
    for (int c = 1; c < r->nclasses; c++)
        if (logit[c] > mx) mx = logit[c];
    float sum = 0;
    for (int c = 0; c < r->nclasses; c++) sum += p[c] = expf(logit[c] - mx);
    for (int c = 0; c < r->nclasses; c++) p[c] /= sum;
}

float core_router_gate(const core_router *r, int cls, const core_route_feat *f) {
    if (cls < 0 || cls >= r->nclasses) return -1.0f;
    float z;
    mlp_forward(&r->gate[cls], f->v, &z);
    return 1.0f / (1.0f + expf(-z));
}

int core_router_choose(const core_router *r, const float *p) {
    int best = 0;
    for (int c = 1; c < r->nclasses; c++)
        if (p[c] > p[best]) best = c;
    return best;
}

int core_router_use_nets(const core_router *r, int cls, const core_route_feat *f) {
    if (cls < 0 || cls >= r->nclasses || r->threshold[cls] >= 1.0f) return 0;
    return core_router_gate(r, cls, f) >= r->threshold[cls];
}

/* ---- domain features ---- */

#define G CORE_ROUTE_GRID

void core_router_domain_features(int s, const float *x, const float *m, float *feat) {
    memset(feat, 0, sizeof(float) * CORE_ROUTE_DOMAIN_NFEAT);
    if (s < G) return;
    const size_t s2 = (size_t)s * s;
    const float *R = x, *Gr = x + s2, *B = x + 2 * s2;
    double sum[G * G][3] = {{0}}, gx[G * G] = {0}, gy[G * G] = {0}, tot[3] = {0}, sq[3] = {0};
    long cnt[G * G] = {0}, nx[G * G] = {0}, ny[G * G] = {0}, n = 0;
    for (int y = 0; y < s; y++) {
        const int cy = y * G / s;
        for (int cx = 0; cx < G; cx++) {
            const int x0 = (cx * s + G - 1) / G, x1 = ((cx + 1) * s + G - 1) / G; /* the columns whose xx * G / s is cx */
            const int cell = cy * G + cx;
            float sr = 0, sg = 0, sb = 0, qr = 0, qg = 0, qb = 0, ax = 0, ay = 0;
            long c = 0, cxn = 0, cyn = 0;
            for (int xx = x0; xx < x1; xx++) {
                const size_t i = (size_t)y * s + xx;
                if (m[i] < 0.5f) continue;
                const float r = R[i], g = Gr[i], b = B[i];
                sr += r, sg += g, sb += b;
                qr += r * r, qg += g * g, qb += b * b;
                c++;
                const float lum = 0.299f * r + 0.587f * g + 0.114f * b;
                if (xx + 1 < s && m[i + 1] >= 0.5f) {
                    ax += fabsf(lum - (0.299f * R[i + 1] + 0.587f * Gr[i + 1] + 0.114f * B[i + 1]));
                    cxn++;
                }
                if (y + 1 < s && m[i + s] >= 0.5f) {
                    ay += fabsf(lum - (0.299f * R[i + s] + 0.587f * Gr[i + s] + 0.114f * B[i + s]));
                    cyn++;
                }
            }
            sum[cell][0] += sr, sum[cell][1] += sg, sum[cell][2] += sb;
            tot[0] += sr, tot[1] += sg, tot[2] += sb;
            sq[0] += qr, sq[1] += qg, sq[2] += qb;
            cnt[cell] += c, n += c;
            gx[cell] += ax, gy[cell] += ay, nx[cell] += cxn, ny[cell] += cyn;
        }
    }
    if (n == 0) return;
    double mean[3], cellc[G * G][3], lum[G * G], gxt = 0, gyt = 0;
    long nxt = 0, nyt = 0;
    for (int c = 0; c < 3; c++) mean[c] = tot[c] / (double)n;
    for (int k = 0; k < G * G; k++) gxt += gx[k], gyt += gy[k], nxt += nx[k], nyt += ny[k];
    const double gxm = nxt ? gxt / (double)nxt : 0, gym = nyt ? gyt / (double)nyt : 0;
    const double gnorm = 0.5 * (gxm + gym) + 1e-3; /* the crop's mean step: gradients relative to it */
    double lmean = 0, lvar = 0;
    for (int k = 0; k < G * G; k++) {
        for (int c = 0; c < 3; c++) {
            cellc[k][c] = cnt[k] ? sum[k][c] / (double)cnt[k] : mean[c];
            feat[c * G * G + k] = (float)cellc[k][c];
        }
        lum[k] = 0.299 * cellc[k][0] + 0.587 * cellc[k][1] + 0.114 * cellc[k][2];
        lmean += lum[k] / (G * G);
        feat[4 * G * G + k] = (float)((nx[k] ? gx[k] / (double)nx[k] : gxm) / gnorm);
        feat[5 * G * G + k] = (float)((ny[k] ? gy[k] / (double)ny[k] : gym) / gnorm);
        const int rows = ((k / G + 1) * s + G - 1) / G - ((k / G) * s + G - 1) / G;
        const int cols = ((k % G + 1) * s + G - 1) / G - ((k % G) * s + G - 1) / G;
        feat[6 * G * G + k] = (float)((double)cnt[k] / ((double)rows * cols));
    }
    for (int k = 0; k < G * G; k++) lvar += (lum[k] - lmean) * (lum[k] - lmean) / (G * G);
    for (int k = 0; k < G * G; k++) feat[3 * G * G + k] = (float)((lum[k] - lmean) / (sqrt(lvar) + 0.02));
    float *glob = feat + 7 * G * G;
    for (int c = 0; c < 3; c++) {
        glob[c] = (float)mean[c];
        const double var = sq[c] / (double)n - mean[c] * mean[c];
        glob[3 + c] = (float)sqrt(var > 0 ? var : 0);
    }
    glob[7] = (float)gnorm;
    double asym = 0;
    for (int yy = 0; yy < G; yy++)
        for (int xx = 0; xx < G / 2; xx++)
            for (int c = 0; c < 3; c++) asym += fabs(cellc[yy * G + xx][c] - cellc[yy * G + G - 1 - xx][c]);
    glob[6] = (float)(asym / (G * (G / 2) * 3));
}

#undef G

sp_status core_router_domain(const core_router *r, int n, int s, const float *x, const float *m, float *p) {
    if (n < 1) return sp_err(SP_ERR_INVALID, "router: a request without crops");
    if (s != r->domain_size)
        return sp_err(SP_ERR_INVALID, "router: crops at %d px; the domain classifier takes crops at %d px", s,
                      r->domain_size);
    const size_t s2 = (size_t)s * s;
    float feat[CORE_ROUTE_DOMAIN_NFEAT], pc[CORE_ROUTE_MAX_CLASSES];
    double acc[CORE_ROUTE_MAX_CLASSES] = {0}, wsum = 0, total = 0;
    for (size_t j = 0; n > 1 && j < s2 * n; j++) total += m[j] < 0.5f;
    for (int i = 0; i < n; i++) {
        const float *mi = m + s2 * i;
        double w = 1; /* one crop, or no hole pixel anywhere: equal weights */
        if (n > 1 && total > 0) {
            w = 0;
            for (size_t j = 0; j < s2; j++) w += mi[j] < 0.5f;
            if (w == 0) continue;
        }
        core_router_domain_features(s, x + 3 * s2 * i, mi, feat);
        core_router_domain_probs(r, feat, pc);
        for (int c = 0; c < r->nclasses; c++) acc[c] += w * pc[c];
        wsum += w;
    }
    for (int c = 0; c < r->nclasses; c++) p[c] = (float)(acc[c] / wsum);
    return SP_OK;
}

/* ---- gate features ---- */

sp_status core_route_features(const core_request *r, float p_class, core_route_feat *f) {
    memset(f, 0, sizeof *f);
    const int n = r->plan.n, s = r->s;
    if (n < 1 || !r->x || !r->m || s < 1) return sp_err(SP_ERR_INVALID, "router: the request has no crops");
    const size_t s2 = (size_t)s * s;
    uint8_t *map = malloc(s2);
    int *dist = malloc(sizeof(int) * s2);
    if (!map || !dist) {
        free(map);
        free(dist);
        return sp_err(SP_ERR_NOMEM, "router: no memory for two %dx%d maps", s, s);
    }
    double hole_px = 0, dsum = 0, tex = 0, side = 0;
    long tex_n = 0;
    int dmax = 0;
    for (int i = 0; i < n; i++) {
        const img_crop *c = &r->plan.crops[i];
        side += c->w > c->h ? c->w : c->h;
        const float *m = r->m + s2 * i, *R = r->x + 3 * s2 * i, *Gr = R + s2, *B = R + 2 * s2;
        long holes = 0;
        for (size_t j = 0; j < s2; j++) holes += map[j] = m[j] < 0.5f;
        if (holes == 0) continue;
        hole_px += (double)holes;
        if (holes == (long)s2) { /* no known pixel: as deep as the crop */
            dsum += (double)holes * s;
            if (s > dmax) dmax = s;
            continue;
        }
        telea_hole_distance(map, s, s, dist); /* hole pixels: distance to the nearest known one */
        for (size_t j = 0; j < s2; j++)
            if (map[j]) {
                dsum += dist[j];
                if (dist[j] > dmax) dmax = dist[j];
            }
        for (size_t j = 0; j < s2; j++) map[j] = !map[j];
        telea_hole_distance(map, s, s, dist); /* known pixels: distance to the nearest hole pixel */
        for (int y = 0; y < s; y++)
            for (int x = 0; x < s; x++) {
                const size_t j = (size_t)y * s + x;
                if (!map[j] || dist[j] > RT_TEXTURE_BAND) continue;
                const float lum = 0.299f * R[j] + 0.587f * Gr[j] + 0.114f * B[j];
                if (x + 1 < s && map[j + 1]) {
                    tex += fabsf(lum - (0.299f * R[j + 1] + 0.587f * Gr[j + 1] + 0.114f * B[j + 1]));
                    tex_n++;
                }
                if (y + 1 < s && map[j + s]) {
                    tex += fabsf(lum - (0.299f * R[j + s] + 0.587f * Gr[j + s] + 0.114f * B[j + s]));
                    tex_n++;
                }
            }
    }
    free(map);
    free(dist);
    const double img_px = (double)r->im.w * r->im.h;
    f->v[CORE_RF_HOLE_RATIO] = (float)(img_px > 0 ? (double)r->holes / img_px : 0);
    f->v[CORE_RF_CROP_HOLE] = (float)(hole_px / ((double)s2 * n));
    f->v[CORE_RF_LOG_SCALE] = (float)log2(side / n / s);
    f->v[CORE_RF_LOG_CROPS] = (float)log2((double)n);
    f->v[CORE_RF_THICK_MEAN] = (float)log2(1 + (hole_px > 0 ? dsum / hole_px : 0));
    f->v[CORE_RF_THICK_MAX] = (float)log2(1.0 + dmax);
    f->v[CORE_RF_TEXTURE] = (float)log2(1 + (tex_n ? 255.0 * tex / (double)tex_n : 0));
    f->v[CORE_RF_P_CLASS] = p_class;
    return SP_OK;
}
