/* cpu.c: the CPU backend: convolutions through oneDNN on nChw8c tensors, partial-convolution mask arithmetic and the cheap ops fused by hand. */
#include <dnnl.h>
#include <omp.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/backend.h"
#include "model/cpu/wino.h"

/* Layout: activations are nChw8c: element (n,c,y,x) at ((n*CB + c/8)*H*W + y*W + x)*8 + c%8,
 * CB = ceil(C/8); padding channels are zero. A network input with fewer than 8 channels is plain
 * NCHW instead, the layout oneDNN's first-layer kernels read (with nChw8c they fall back to the
 * reference implementation). Masks are planar (n,g,h,w). */
#define BLK CPU_BLK
static inline int cblocks(int c) { return (c + BLK - 1) / BLK; }

/* Start of channel c of image n, and the distance between consecutive pixels of that channel. */
static inline float *chan(const nn_tensor *t, int n, int c, size_t *stride) {
    const size_t HW = (size_t)t->h * t->w;
    float *d = t->data;
    if (t->plain) {
        *stride = 1;
        return d + ((size_t)n * t->c + c) * HW;
    }
    *stride = BLK;
    return d + ((size_t)n * cblocks(t->c) + c / BLK) * HW * BLK + c % BLK;
}

typedef struct {
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    int threads;
    nn_conv_algo algo; /* nn_backend_opts.conv_algo (the caller applies SEMIPAINT_CONV) */
    float *scratch; /* pconv epilogue planes and Winograd tiles; grows to the largest layer once */
    size_t scratch_bytes;
} cpu_impl;

/* Returns a scratch buffer of at least `bytes`, reusing the previous one when large enough. */
static float *cpu_scratch(cpu_impl *ci, size_t bytes) {
    if (bytes <= ci->scratch_bytes) return ci->scratch;
    free(ci->scratch);
    ci->scratch = sp_aligned_alloc(bytes);
    ci->scratch_bytes = ci->scratch ? bytes : 0;
    return ci->scratch;
}

/* One oneDNN convolution for one input shape. */
typedef struct conv_prim {
    int n, h, w, with_bias, plain;
    nn_act act;
    dnnl_primitive_t prim;
    dnnl_memory_t src, dst, wts, bias;
    float *wbuf; /* reordered weights when not shared with the layer's */
    struct conv_prim *next;
} conv_prim;

typedef struct {
    conv_prim *prims;
    dnnl_memory_desc_t wmd; /* format of the shared reordered weights */
    float *wbuf;            /* shared reordered weights, NULL until the first primitive */
    float *wino[2];         /* weights transformed for F(2x2) and F(4x4), NULL until first used */
} cpu_layer;

#define DNNL_TRY(call)                                                                                   \
    do {                                                                                                 \
        dnnl_status_t s_ = (call);                                                                       \
        if (s_ != dnnl_success) {                                                                        \
            st = sp_err(SP_ERR_BACKEND, "oneDNN %s failed (status %d) at %s:%d", #call, (int)s_, __FILE__, \
                        __LINE__);                                                                       \
            goto fail;                                                                                   \
        }                                                                                                \
    } while (0)

static cpu_impl *impl_of(nn_backend *be) { return be->impl; }

/* ---- memory ---- */

/* Zeroed memory for a tensor or mask, reported to the test hook (backend.h). */
static void *cpu_alloc_zero(nn_backend *be, size_t bytes) {
    if (nn_hook(be, NN_HOOK_ALLOC, bytes)) return NULL;
    void *p = sp_aligned_alloc(bytes);
    if (!p) return NULL;
    memset(p, 0, bytes);
    nn_hook(be, NN_HOOK_ALLOCATED, bytes);
    return p;
}

static void cpu_free_zero(nn_backend *be, void *p, size_t bytes) {
    free(p);
    if (p) nn_hook(be, NN_HOOK_FREED, bytes);
}

static sp_status cpu_tensor_alloc(nn_backend *be, nn_tensor *t) {
    t->plain = t->input && t->c < BLK;
    t->bytes = (size_t)t->n * (t->plain ? t->c : cblocks(t->c) * BLK) * t->h * t->w * sizeof(float);
    t->data = cpu_alloc_zero(be, t->bytes);
    if (!t->data) return sp_err(SP_ERR_NOMEM, "tensor of %zu bytes", t->bytes);
    return SP_OK;
}

static void cpu_free_data(nn_backend *be, nn_tensor *t) {
    cpu_free_zero(be, t->data, t->bytes);
    t->data = NULL;
}

static sp_status cpu_mask_alloc(nn_backend *be, nn_mask *m) {
    m->bytes = (size_t)m->n * m->g * m->h * m->w * sizeof(float);
    m->data = cpu_alloc_zero(be, m->bytes);
    if (!m->data) return sp_err(SP_ERR_NOMEM, "mask of %zu bytes", m->bytes);
    return SP_OK;
}

static void cpu_mask_free(nn_backend *be, nn_mask *m) {
    cpu_free_zero(be, m->data, m->bytes);
    m->data = NULL;
}

/* ---- host <-> backend ---- */

static sp_status cpu_upload(nn_backend *be, nn_tensor *t, int c0, int nc, const float *host, const float *scale,
                            const float *shift) {
    /* Every forward pass starts with an upload; the OpenMP thread count is per calling thread. */
    omp_set_num_threads(impl_of(be)->threads);
    const int HW = t->h * t->w;
#pragma omp parallel for collapse(2)
    for (int n = 0; n < t->n; n++)
        for (int c = 0; c < nc; c++) {
            const float *s = host + ((size_t)n * nc + c) * HW;
            size_t ps;
            float *o = chan(t, n, c0 + c, &ps);
            float a = scale ? scale[c] : 1.0f, b = scale ? shift[c] : 0.0f;
            if (scale)
                for (int p = 0; p < HW; p++) o[(size_t)p * ps] = s[p] * a + b;
            else
                for (int p = 0; p < HW; p++) o[(size_t)p * ps] = s[p];
        }
    return SP_OK;
}

static sp_status cpu_download(nn_backend *be, const nn_tensor *t, float *host) {
    (void)be;
    const int HW = t->h * t->w;
#pragma omp parallel for collapse(2)
    for (int n = 0; n < t->n; n++)
        for (int c = 0; c < t->c; c++) {
            float *o = host + ((size_t)n * t->c + c) * HW;
            size_t ps;
            const float *s = chan(t, n, c, &ps);
            for (int p = 0; p < HW; p++) o[p] = s[(size_t)p * ps];
        }
    return SP_OK;
}

static sp_status cpu_mask_upload(nn_backend *be, nn_mask *m, const float *host, const int *cnt) {
    (void)be;
    for (int g = 0; g < m->g; g++) m->cnt[g] = cnt[g];
    memcpy(m->data, host, m->bytes);
    return SP_OK;
}

/* The group holding channel c. */
static int mask_group(const nn_mask *m, int c) {
    int g = 0;
    while (g < m->g - 1 && c >= m->cnt[g]) c -= m->cnt[g++];
    return g;
}

static int mask_channels(const nn_mask *m) {
    int c = 0;
    for (int g = 0; g < m->g; g++) c += m->cnt[g];
    return c;
}

static sp_status cpu_mask_download(nn_backend *be, const nn_mask *m, float *host) {
    (void)be;
    const int C = mask_channels(m), HW = m->h * m->w;
    const float *d = m->data;
    for (int n = 0; n < m->n; n++)
        for (int c = 0; c < C; c++)
            memcpy(host + ((size_t)n * C + c) * HW, d + ((size_t)n * m->g + mask_group(m, c)) * HW,
                   (size_t)HW * sizeof(float));
    return SP_OK;
}

/* ---- convolution through oneDNN ---- */

static void prim_free(conv_prim *p) {
    if (p->prim) dnnl_primitive_destroy(p->prim);
    if (p->src) dnnl_memory_destroy(p->src);
    if (p->dst) dnnl_memory_destroy(p->dst);
    if (p->wts) dnnl_memory_destroy(p->wts);
    if (p->bias) dnnl_memory_destroy(p->bias);
    free(p->wbuf);
    free(p);
}

static void cpu_layer_release(nn_backend *be, nn_layer *l) {
    (void)be;
    cpu_layer *cl = l->be;
    if (!cl) return;
    while (cl->prims) {
        conv_prim *nx = cl->prims->next;
        prim_free(cl->prims);
        cl->prims = nx;
    }
    free(cl->wbuf);
    free(cl->wino[0]);
    free(cl->wino[1]);
    free(cl);
    l->be = NULL;
}

/* Reorders the layer's OIHW weights into a buffer of format `md`. */
static sp_status reorder_weights(cpu_impl *ci, const nn_layer *l, const dnnl_memory_desc_t *md, float **out) {
    sp_status st = SP_OK;
    dnnl_memory_desc_t umd;
    dnnl_memory_t um = NULL, tm = NULL;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t r = NULL;
    size_t bytes = dnnl_memory_desc_get_size(md);
    float *buf = sp_aligned_alloc(bytes);
    if (!buf) return sp_err(SP_ERR_NOMEM, "weights of %zu bytes", bytes);
    dnnl_dims_t wd = {l->cout, l->cin, l->k, l->k};
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&umd, 4, wd, dnnl_f32, dnnl_oihw));
    DNNL_TRY(dnnl_memory_create(&um, &umd, ci->eng, l->w));
    DNNL_TRY(dnnl_memory_create(&tm, md, ci->eng, buf));
    DNNL_TRY(dnnl_reorder_primitive_desc_create(&rpd, &umd, ci->eng, md, ci->eng, NULL));
    DNNL_TRY(dnnl_primitive_create(&r, rpd));
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, um}, {DNNL_ARG_TO, tm}};
    DNNL_TRY(dnnl_primitive_execute(r, ci->strm, 2, args));
    DNNL_TRY(dnnl_stream_wait(ci->strm));
    *out = buf;
    buf = NULL;
fail:
    if (r) dnnl_primitive_destroy(r);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (um) dnnl_memory_destroy(um);
    if (tm) dnnl_memory_destroy(tm);
    free(buf);
    return st;
}

/* Finds or creates the primitive for input (n,h,w) of layer l. */
static sp_status get_prim(nn_backend *be, nn_layer *l, const nn_tensor *x, const nn_tensor *y, int with_bias,
                          nn_act act, conv_prim **out) {
    cpu_impl *ci = impl_of(be);
    sp_status st = SP_OK;
    if (!l->be) {
        l->be = calloc(1, sizeof(cpu_layer));
        if (!l->be) return sp_err(SP_ERR_NOMEM, "layer state");
    }
    cpu_layer *cl = l->be;
    for (conv_prim *p = cl->prims; p; p = p->next)
        if (p->n == x->n && p->h == x->h && p->w == x->w && p->with_bias == with_bias && p->act == act &&
            p->plain == x->plain) {
            *out = p;
            return SP_OK;
        }
    conv_prim *p = calloc(1, sizeof *p);
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    if (!p) return sp_err(SP_ERR_NOMEM, "primitive");
    p->n = x->n;
    p->h = x->h;
    p->w = x->w;
    p->with_bias = with_bias;
    p->act = act;
    p->plain = x->plain;
    dnnl_memory_desc_t smd, wmd, bmd, dmd;
    dnnl_dims_t sd = {x->n, x->c, x->h, x->w}, dd = {y->n, y->c, y->h, y->w};
    dnnl_dims_t wd = {l->cout, l->cin, l->k, l->k}, bd = {l->cout};
    dnnl_dims_t strides = {l->stride, l->stride}, pad = {l->pad, l->pad};
    /* Right padding so that oneDNN's output size equals the PyTorch one we allocated. */
    dnnl_dims_t padr = {(y->h - 1) * l->stride + l->k - x->h - l->pad, (y->w - 1) * l->stride + l->k - x->w - l->pad};
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&smd, 4, sd, dnnl_f32, x->plain ? dnnl_nchw : dnnl_nChw8c));
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&dmd, 4, dd, dnnl_f32, y->plain ? dnnl_nchw : dnnl_nChw8c));
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&wmd, 4, wd, dnnl_f32, dnnl_format_tag_any));
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_x));
    dnnl_convolution_desc_t cd;
    DNNL_TRY(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct, &smd, &wmd,
                                                with_bias ? &bmd : NULL, &dmd, strides, pad, padr));
    DNNL_TRY(dnnl_primitive_attr_create(&attr));
    if (act != NN_ACT_NONE) {
        DNNL_TRY(dnnl_post_ops_create(&po));
        DNNL_TRY(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, act == NN_ACT_LRELU ? NN_LRELU_SLOPE : 0.0f,
                                              0.0f));
        DNNL_TRY(dnnl_primitive_attr_set_post_ops(attr, po));
    }
    DNNL_TRY(dnnl_primitive_desc_create(&pd, &cd, attr, ci->eng, NULL));
    const dnnl_memory_desc_t *qw = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    if (!cl->wbuf) {
        if ((st = reorder_weights(ci, l, qw, &cl->wbuf))) goto fail;
        cl->wmd = *qw;
    }
    float *wptr = cl->wbuf;
    if (!dnnl_memory_desc_equal(qw, &cl->wmd)) {
        if ((st = reorder_weights(ci, l, qw, &p->wbuf))) goto fail;
        wptr = p->wbuf;
    }
    DNNL_TRY(dnnl_memory_create(&p->wts, qw, ci->eng, wptr));
    DNNL_TRY(dnnl_memory_create(&p->src, &smd, ci->eng, DNNL_MEMORY_NONE));
    DNNL_TRY(dnnl_memory_create(&p->dst, &dmd, ci->eng, DNNL_MEMORY_NONE));
    if (with_bias) DNNL_TRY(dnnl_memory_create(&p->bias, &bmd, ci->eng, l->b));
    DNNL_TRY(dnnl_primitive_create(&p->prim, pd));
    const char *impl = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    SP_DEBUG("conv %dx%d %d->%d stride %d on (%d,%d,%d,%d): %s", l->k, l->k, l->cin, l->cout, l->stride, x->n, x->c,
             x->h, x->w, impl ? impl : "?");
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    if (po) dnnl_post_ops_destroy(po);
    p->next = cl->prims;
    cl->prims = p;
    *out = p;
    return SP_OK;
fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (po) dnnl_post_ops_destroy(po);
    prim_free(p);
    return st;
}

/* Runs layer l as Winograd F(2x2,3x3) or F(4x4,3x3) when the backend's algorithm choice and the
 * shape allow it; *done says whether it did. */
static sp_status try_wino(nn_backend *be, nn_layer *l, const nn_tensor *x, nn_tensor *y, int with_bias, nn_act act,
                          int *done) {
    cpu_impl *ci = impl_of(be);
    *done = 0;
    if (ci->algo == NN_CONV_DIRECT || !cpu_wino_shape_ok(l, x, y)) return SP_OK;
    const int m = ci->algo == NN_CONV_WINOGRAD ? 2 : ci->algo == NN_CONV_WINOGRAD4 ? 4 : cpu_wino_pick(l, x, ci->threads);
    if (!m) return SP_OK;
    if (!l->be && !(l->be = calloc(1, sizeof(cpu_layer)))) return sp_err(SP_ERR_NOMEM, "layer state");
    cpu_layer *cl = l->be;
    float **u = &cl->wino[m == 4];
    sp_status st;
    if (!*u && (st = cpu_wino_weights(l, m, u))) return st;
    float *scratch = cpu_scratch(ci, cpu_wino_scratch_bytes(l, m, ci->threads));
    if (!scratch) return sp_err(SP_ERR_NOMEM, "Winograd scratch");
    *done = 1;
    return cpu_wino_conv(*u, m, l, x, y, with_bias, act, scratch, ci->threads);
}

static sp_status run_conv(nn_backend *be, nn_layer *l, const nn_tensor *x, nn_tensor *y, int with_bias, nn_act act) {
    cpu_impl *ci = impl_of(be);
    conv_prim *p;
    int done;
    sp_status st = try_wino(be, l, x, y, with_bias, act, &done);
    if (st || done) return st;
    st = get_prim(be, l, x, y, with_bias, act, &p);
    if (st) return st;
    DNNL_TRY(dnnl_memory_set_data_handle(p->src, x->data));
    DNNL_TRY(dnnl_memory_set_data_handle(p->dst, y->data));
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, p->src}, {DNNL_ARG_WEIGHTS, p->wts}, {DNNL_ARG_DST, p->dst},
                               {DNNL_ARG_BIAS, p->bias}};
    DNNL_TRY(dnnl_primitive_execute(p->prim, ci->strm, with_bias ? 4 : 3, args));
    DNNL_TRY(dnnl_stream_wait(ci->strm));
    return SP_OK;
fail:
    return st;
}

static sp_status cpu_conv(nn_backend *be, nn_layer *l, const nn_tensor *x, nn_tensor *y, nn_act act) {
    return run_conv(be, l, x, y, 1, act);
}

static inline float act_apply(float v, nn_act act) {
    if (act == NN_ACT_RELU) return v > 0 ? v : 0;
    if (act == NN_ACT_LRELU) return v > 0 ? v : v * NN_LRELU_SLOPE;
    return v;
}

/* Partial convolution: oneDNN computes raw = conv(x, W) into y; then per output pixel the mask
 * window sum s = sum over groups of cnt[g] * boxsum(plane g), u = min(s,1), ratio = u*K/(s+1e-8)
 * with K = cin*k*k, and in one pass y = act(raw*ratio + b*u). */
static sp_status cpu_pconv(nn_backend *be, nn_layer *l, const nn_tensor *x, const nn_mask *mx, nn_tensor *y,
                           nn_mask *my, nn_act act) {
    if (y->plain) return sp_err(SP_ERR_INVALID, "pconv output must be blocked");
    sp_status st = run_conv(be, l, x, y, 0, NN_ACT_NONE);
    if (st) return st;
    const int OH = y->h, OW = y->w, IH = mx->h, IW = mx->w, k = l->k, s = l->stride, pd = l->pad;
    const int G = mx->g, OHW = OH * OW, CB = cblocks(y->c);
    const float K = (float)(l->cin * k * k);
    float *u = my->data, *ratio = cpu_scratch(impl_of(be), (size_t)y->n * OHW * sizeof(float));
    if (!ratio) return sp_err(SP_ERR_NOMEM, "pconv ratio plane");
    my->g = 1;
    my->cnt[0] = l->cout;
    const float *mp = mx->data;
#pragma omp parallel for collapse(2)
    for (int n = 0; n < y->n; n++)
        for (int oy = 0; oy < OH; oy++) {
            int y0 = oy * s - pd, ya = y0 < 0 ? 0 : y0, yb = y0 + k > IH ? IH : y0 + k;
            for (int ox = 0; ox < OW; ox++) {
                int x0 = ox * s - pd, xa = x0 < 0 ? 0 : x0, xb = x0 + k > IW ? IW : x0 + k;
                float sum = 0;
                for (int g = 0; g < G; g++) {
                    const float *pl = mp + ((size_t)n * G + g) * IH * IW;
                    float bs = 0;
                    for (int iy = ya; iy < yb; iy++)
                        for (int ix = xa; ix < xb; ix++) bs += pl[iy * IW + ix];
                    sum += (float)mx->cnt[g] * bs;
                }
                float uu = sum > 1.0f ? 1.0f : sum;
                size_t o = (size_t)n * OHW + oy * OW + ox;
                u[o] = uu;
                ratio[o] = K / (sum + 1e-8f) * uu;
            }
        }
    float *yd = y->data;
    const float *bias = l->b;
#pragma omp parallel for collapse(2)
    for (int n = 0; n < y->n; n++)
        for (int cb = 0; cb < CB; cb++) {
            float b[BLK];
            for (int j = 0; j < BLK; j++) b[j] = cb * BLK + j < y->c ? bias[cb * BLK + j] : 0.0f;
            float *blk = yd + ((size_t)n * CB + cb) * OHW * BLK;
            const float *r = ratio + (size_t)n * OHW, *uu = u + (size_t)n * OHW;
            for (int p = 0; p < OHW; p++) {
                float rp = r[p], up = uu[p];
                for (int j = 0; j < BLK; j++) blk[p * BLK + j] = act_apply(blk[p * BLK + j] * rp + b[j] * up, act);
            }
        }
    return SP_OK;
}

static sp_status cpu_mask_apply(nn_backend *be, nn_tensor *x, const nn_mask *m) {
    (void)be;
    const int HW = x->h * x->w;
    const float *mp = m->data;
#pragma omp parallel for collapse(2)
    for (int n = 0; n < x->n; n++)
        for (int c = 0; c < x->c; c++) {
            const float *pl = mp + ((size_t)n * m->g + mask_group(m, c)) * HW;
            size_t ps;
            float *o = chan(x, n, c, &ps);
            for (int p = 0; p < HW; p++) o[(size_t)p * ps] *= pl[p];
        }
    return SP_OK;
}

/* Copies up2(a) into channels [0,a->c) of y, and skip into [a->c, a->c+skip->c). */
static sp_status cpu_up2_concat(nn_backend *be, const nn_tensor *a, const nn_tensor *skip, nn_tensor *y,
                                const nn_mask *ma, const nn_mask *mskip, nn_mask *my) {
    (void)be;
    if (a->plain || y->plain) return sp_err(SP_ERR_INVALID, "concat of plain tensors");
    const int H = y->h, W = y->w, HW = H * W, AW = a->w, AHW = a->h * a->w, f = H / a->h;
    if ((f != 1 && f != 2) || a->h * f != H || a->w * f != W)
        return sp_err(SP_ERR_INVALID, "concat of %dx%d into %dx%d", a->w, a->h, W, H);
    const int CBA = cblocks(a->c), CBY = cblocks(y->c);
    const float *ad = a->data;
    float *yd = y->data;
    /* Upsampled part: whole blocks (a's padding channels are zero, and land on channels that the
     * skip part overwrites or that are y's padding). */
#pragma omp parallel for collapse(2)
    for (int n = 0; n < y->n; n++)
        for (int cb = 0; cb < CBA; cb++) {
            const float *src = ad + ((size_t)n * CBA + cb) * AHW * BLK;
            float *dst = yd + ((size_t)n * CBY + cb) * HW * BLK;
            for (int oy = 0; oy < H; oy++) {
                const float *sr = src + (size_t)(oy / f) * AW * BLK;
                float *dr = dst + (size_t)oy * W * BLK;
                for (int ox = 0; ox < W; ox++) memcpy(dr + ox * BLK, sr + (ox / f) * BLK, BLK * sizeof(float));
            }
        }
    if (skip) {
        const int CBS = cblocks(skip->c);
        const float *sd = skip->data;
        if (a->c % BLK == 0 && !skip->plain) {
#pragma omp parallel for collapse(2)
            for (int n = 0; n < y->n; n++)
                for (int cb = 0; cb < CBS; cb++)
                    memcpy(yd + ((size_t)n * CBY + a->c / BLK + cb) * HW * BLK,
                           sd + ((size_t)n * CBS + cb) * HW * BLK, (size_t)HW * BLK * sizeof(float));
        } else {
#pragma omp parallel for collapse(2)
            for (int n = 0; n < y->n; n++)
                for (int c = 0; c < skip->c; c++) {
                    size_t ss, os;
                    const float *s = chan(skip, n, c, &ss);
                    float *o = chan(y, n, a->c + c, &os);
                    for (int p = 0; p < HW; p++) o[(size_t)p * os] = s[(size_t)p * ss];
                }
        }
    }
    if (ma) {
        int G = ma->g + (mskip ? mskip->g : 0);
        if (G > NN_MAX_GROUPS) return sp_err(SP_ERR_UNSUPPORTED, "mask with %d channel groups", G);
        my->g = G;
        for (int g = 0; g < ma->g; g++) my->cnt[g] = ma->cnt[g];
        for (int g = 0; mskip && g < mskip->g; g++) my->cnt[ma->g + g] = mskip->cnt[g];
        const float *mad = ma->data;
        float *myd = my->data;
        for (int n = 0; n < y->n; n++) {
            for (int g = 0; g < ma->g; g++) {
                const float *src = mad + ((size_t)n * ma->g + g) * AHW;
                float *dst = myd + ((size_t)n * G + g) * HW;
                for (int oy = 0; oy < H; oy++)
                    for (int ox = 0; ox < W; ox++) dst[oy * W + ox] = src[(oy / f) * AW + ox / f];
            }
            if (mskip)
                memcpy(myd + ((size_t)n * G + ma->g) * HW, (const float *)mskip->data + (size_t)n * mskip->g * HW,
                       (size_t)mskip->g * HW * sizeof(float));
        }
    }
    return SP_OK;
}

static sp_status cpu_maxpool2(nn_backend *be, const nn_tensor *x, nn_tensor *y) {
    (void)be;
    if (x->plain || y->plain) return sp_err(SP_ERR_INVALID, "maxpool of plain tensors");
    const int CB = cblocks(x->c), IW = x->w, IHW = x->h * x->w, OW = y->w, OH = y->h, OHW = OH * OW;
    const float *xd = x->data;
    float *yd = y->data;
#pragma omp parallel for collapse(2)
    for (int n = 0; n < x->n; n++)
        for (int cb = 0; cb < CB; cb++) {
            const float *s = xd + ((size_t)n * CB + cb) * IHW * BLK;
            float *d = yd + ((size_t)n * CB + cb) * OHW * BLK;
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    const float *p0 = s + ((size_t)(2 * oy) * IW + 2 * ox) * BLK, *p1 = p0 + (size_t)IW * BLK;
                    float *o = d + ((size_t)oy * OW + ox) * BLK;
                    for (int j = 0; j < BLK; j++) {
                        float m = p0[j] > p0[BLK + j] ? p0[j] : p0[BLK + j];
                        float m2 = p1[j] > p1[BLK + j] ? p1[j] : p1[BLK + j];
                        o[j] = m > m2 ? m : m2;
                    }
                }
        }
    return SP_OK;
}

static sp_status cpu_act(nn_backend *be, const nn_tensor *x, nn_tensor *y, nn_act act) {
    (void)be;
    size_t n = x->bytes / sizeof(float);
    const float *s = x->data;
    float *d = y->data;
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) d[i] = act_apply(s[i], act);
    return SP_OK;
}

static sp_status cpu_desc_pool(nn_backend *be, const nn_tensor *x, nn_pool pool, float *host) {
    (void)be;
    const int HW = x->h * x->w;
    for (int n = 0; n < x->n; n++) {
        float *o = host + (size_t)n * x->c;
        for (int c = 0; c < x->c; c++) {
            size_t ps;
            const float *s = chan(x, n, c, &ps);
            float acc = pool == NN_POOL_MAX ? -INFINITY : 0.0f;
            for (int p = 0; p < HW; p++) {
                float v = s[(size_t)p * ps];
                if (pool == NN_POOL_MAX)
                    acc = v > acc ? v : acc;
                else
                    acc += v;
            }
            o[c] = pool == NN_POOL_MAX ? acc : acc / (float)HW;
        }
        double ss = 0;
        for (int c = 0; c < x->c; c++) ss += (double)o[c] * o[c];
        float norm = (float)sqrt(ss);
        if (norm < 1e-12f) norm = 1e-12f;
        for (int c = 0; c < x->c; c++) o[c] /= norm;
    }
    return SP_OK;
}

static sp_status cpu_sync(nn_backend *be) {
    (void)be;
    return SP_OK;
}

static void cpu_destroy(nn_backend *be) {
    cpu_impl *ci = be->impl;
    if (ci) {
        if (ci->strm) dnnl_stream_destroy(ci->strm);
        if (ci->eng) dnnl_engine_destroy(ci->eng);
        free(ci->scratch);
        free(ci);
    }
    free(be);
}

static const nn_backend_ops cpu_ops = {
    .name = "cpu",
    .caps = NN_CAP_CONV_ALGO,
    .destroy = cpu_destroy,
    .device_memory = NULL,
    .tensor_alloc = cpu_tensor_alloc,
    .tensor_release = cpu_free_data,
    .mask_alloc = cpu_mask_alloc,
    .mask_release = cpu_mask_free,
    .upload = cpu_upload,
    .download = cpu_download,
    .mask_upload = cpu_mask_upload,
    .mask_download = cpu_mask_download,
    .layer_release = cpu_layer_release,
    .conv = cpu_conv,
    .pconv = cpu_pconv,
    .mask_apply = cpu_mask_apply,
    .up2_concat = cpu_up2_concat,
    .maxpool2 = cpu_maxpool2,
    .act = cpu_act,
    .desc_pool = cpu_desc_pool,
    .sync = cpu_sync,
};

/* The processor's model name from /proc/cpuinfo. */
static void cpu_model(char *buf, size_t n) {
    snprintf(buf, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *c = strchr(line, ':');
        if (!strncmp(line, "model name", 10) && c) {
            c += 2;
            c[strcspn(c, "\n")] = 0;
            snprintf(buf, n, "%s", c);
            break;
        }
    }
    fclose(f);
}

sp_status nn_cpu_backend_new(const nn_backend_opts *opts, nn_backend **out) {
    sp_status st = SP_OK;
    *out = NULL;
    nn_backend *be = calloc(1, sizeof *be);
    cpu_impl *ci = calloc(1, sizeof *ci);
    if (!be || !ci) {
        free(be);
        free(ci);
        return sp_err(SP_ERR_NOMEM, "backend");
    }
    be->ops = &cpu_ops;
    be->opts = *opts;
    be->impl = ci;
    ci->threads = opts->threads > 0 ? opts->threads : omp_get_num_procs();
    ci->algo = opts->conv_algo;
    omp_set_num_threads(ci->threads);
    DNNL_TRY(dnnl_engine_create(&ci->eng, dnnl_cpu, 0));
    DNNL_TRY(dnnl_stream_create(&ci->strm, ci->eng, dnnl_stream_default_flags));
    char model[200];
    cpu_model(model, sizeof model);
    snprintf(be->device, sizeof be->device, "%s, %d threads", model, ci->threads);
    *out = be;
    return SP_OK;
fail:
    cpu_destroy(be);
    return st;
}
