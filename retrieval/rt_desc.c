/* rt_desc.c: image descriptors for retrieval: VGG-16 conv5_3 pooled (the paper's) and weight-free YCbCr thumbnails. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "retrieval/rt.h"

/* Thumbnail descriptors ("thumbT" and "thumbT_zm"): the image is area-averaged to T x T cells
 * in YCbCr (JPEG's full-range matrix; Y centred on 0.5, Cb and Cr on 0), giving 3*T*T values
 * laid out as [Y cells, Cb cells, Cr cells]. Faces in an aligned data set share their layout,
 * so a small thumbnail compares pose, framing, hair and skin colour and lighting; YCbCr
 * separates brightness from the skin-tone axes. "_zm" removes each channel's mean over the
 * cells first, so a global change of brightness or colour cast does not count. The vector is
 * then L2-normalised (a zero vector, e.g. a flat image under _zm, stays zero). */
typedef enum { D_VGG = 0, D_THUMB } desc_kind;

struct rt_descriptor {
    char name[64];
    desc_kind kind;
    nn_net *vgg;
    nn_pool pool;
    int cells;      /* thumbnail: T */
    int zero_mean;  /* thumbnail: remove each channel's mean */
    int dim;
    char sha256[65];
};

static const struct {
    const char *name;
    int cells, zero_mean;
} thumbs[] = {
    {"thumb8", 8, 0},
    {"thumb16", 16, 0},
    {"thumb16_zm", 16, 1},
    {"thumb32", 32, 0},
};

const char *rt_descriptor_names(void) { return "vgg16_features:avg vgg16_features:max thumb8 thumb16 thumb16_zm thumb32"; }

sp_status rt_descriptor_new(const char *name, nn_net *vgg, rt_descriptor **out) {
    *out = NULL;
    if (!name) return sp_err(SP_ERR_INVALID, "no descriptor name");
    rt_descriptor *d = calloc(1, sizeof *d);
    if (!d) return sp_err(SP_ERR_NOMEM, "descriptor");
    snprintf(d->name, sizeof d->name, "%s", name);
    const char *vp = "vgg16_features:";
    if (!strncmp(name, vp, strlen(vp))) {
        int pool = nn_pool_parse(name + strlen(vp));
        if (pool < 0) {
            free(d);
            return sp_err(SP_ERR_INVALID, "descriptor '%s': pooling must be avg or max", name);
        }
        if (!vgg) {
            free(d);
            return sp_err(SP_ERR_INVALID, "descriptor '%s' needs vgg16_features weights (--weights FILE)", name);
        }
        const nn_net_info *info = nn_net_get_info(vgg);
        if (info->arch != NN_ARCH_VGG16) {
            sp_status st = sp_err(SP_ERR_INVALID, "descriptor '%s': %s is a %s network, not vgg16_features", name,
                                  info->path, info->arch_name);
            free(d);
            return st;
        }
        d->kind = D_VGG;
        d->vgg = vgg;
        d->pool = (nn_pool)pool;
        d->dim = info->out_channels;
        snprintf(d->sha256, sizeof d->sha256, "%s", info->sha256);
        *out = d;
        return SP_OK;
    }
    for (size_t i = 0; i < sizeof thumbs / sizeof thumbs[0]; i++) {
        if (strcmp(name, thumbs[i].name)) continue;
        d->kind = D_THUMB;
        d->cells = thumbs[i].cells;
        d->zero_mean = thumbs[i].zero_mean;
        d->dim = 3 * d->cells * d->cells;
        *out = d;
        return SP_OK;
    }
    free(d);
    return sp_err(SP_ERR_INVALID, "unknown descriptor '%s' (known: %s)", name, rt_descriptor_names());
}

void rt_descriptor_free(rt_descriptor *d) { free(d); }

const char *rt_descriptor_name(const rt_descriptor *d) { return d->name; }
int rt_descriptor_dim(const rt_descriptor *d) { return d->dim; }
const char *rt_descriptor_weights_sha256(const rt_descriptor *d) { return d->sha256; }

/* Scales v (dim) to unit L2 norm; leaves a zero vector as it is. */
static void l2_normalise(float *v, int dim) {
    double ss = 0;
    for (int i = 0; i < dim; i++) ss += (double)v[i] * v[i];
    if (ss <= 1e-24) return;
    float inv = (float)(1.0 / sqrt(ss));
    for (int i = 0; i < dim; i++) v[i] *= inv;
}

/* One thumbnail: img (3,s,s) in [0,1] -> out (3*T*T); `col` is scratch of 3*s floats. Cell
 * (cy,cx) covers rows [cy*s/T, (cy+1)*s/T) and the same columns (whole pixels; exact area
 * averaging when T divides s). Each band of rows is first summed column by column (a loop the
 * compiler vectorises), then the columns of each cell. */
static void thumb_one(const rt_descriptor *d, int s, const float *img, float *col, float *out) {
    const int t = d->cells, plane = s * s, tt = t * t;
    for (int cy = 0; cy < t; cy++) {
        int y0 = cy * s / t, y1 = (cy + 1) * s / t;
        if (y1 <= y0) y1 = y0 + 1;
        for (int c = 0; c < 3; c++) {
            float *cs = col + c * s;
            const float *p = img + (size_t)c * plane;
            for (int x = 0; x < s; x++) cs[x] = 0;
            for (int y = y0; y < y1; y++) {
                const float *row = p + (size_t)y * s;
#pragma omp simd
                for (int x = 0; x < s; x++) cs[x] += row[x];
            }
        }
        for (int cx = 0; cx < t; cx++) {
            int x0 = cx * s / t, x1 = (cx + 1) * s / t;
            if (x1 <= x0) x1 = x0 + 1;
            /* YCbCr is linear in RGB: average R, G and B over the cell, then convert. */
            double sr = 0, sg = 0, sb = 0;
            for (int x = x0; x < x1; x++) {
                sr += col[x];
                sg += col[s + x];
                sb += col[2 * s + x];
            }
            const double inv = 1.0 / ((double)(y1 - y0) * (x1 - x0));
            sr *= inv, sg *= inv, sb *= inv;
            const double sy = 0.299 * sr + 0.587 * sg + 0.114 * sb;
            const double scb = -0.168736 * sr - 0.331264 * sg + 0.5 * sb;
            const double scr = 0.5 * sr - 0.418688 * sg - 0.081312 * sb;
            out[cy * t + cx] = (float)(sy - 0.5);
            out[tt + cy * t + cx] = (float)scb;
            out[2 * tt + cy * t + cx] = (float)scr;
        }
    }
    if (d->zero_mean) {
        for (int c = 0; c < 3; c++) {
            double m = 0;
            for (int i = 0; i < tt; i++) m += out[c * tt + i];
            m /= tt;
            for (int i = 0; i < tt; i++) out[c * tt + i] -= (float)m;
        }
    }
    l2_normalise(out, 3 * tt);
}

sp_status rt_descriptor_compute(rt_descriptor *d, int n, int s, const float *images, float *out) {
    if (n < 0 || s <= 0) return sp_err(SP_ERR_INVALID, "descriptor %s: bad batch %d of %dx%d", d->name, n, s, s);
    if (n == 0) return SP_OK;
    if (d->kind == D_VGG) {
        if (s % 16) return sp_err(SP_ERR_INVALID, "descriptor %s: image size %d is not a multiple of 16", d->name, s);
        sp_status st = nn_vgg_forward(d->vgg, n, s, s, images, d->pool, NULL, out);
        return st ? sp_err_wrap(st, "descriptor %s", d->name) : SP_OK;
    }
    if (s < d->cells)
        return sp_err(SP_ERR_INVALID, "descriptor %s: image size %d is smaller than %d cells", d->name, s, d->cells);
    const size_t img = (size_t)3 * s * s;
    float *col = malloc((size_t)n * 3 * s * sizeof *col);
    if (!col) return sp_err(SP_ERR_NOMEM, "descriptor %s: scratch", d->name);
#pragma omp parallel for schedule(static) if (n > 8)
    for (int i = 0; i < n; i++) thumb_one(d, s, images + i * img, col + (size_t)i * 3 * s, out + (size_t)i * d->dim);
    free(col);
    return SP_OK;
}
