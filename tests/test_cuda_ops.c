/* test_cuda_ops.c: every backend op on the CUDA backend against the CPU backend (random inputs, odd sizes, batch 1 and 8, fp32/tf32/fp16), and the golden networks through CUDA; prints "SKIP: no GPU" and passes where there is none. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "golden.h"

#ifndef SP_CUDA

int main(void) {
    printf("test_cuda_ops: SKIP: no GPU (this build has no CUDA backend; build with make CUDA=1)\n");
    return t_done("test_cuda_ops");
}

#else

#if defined(__SANITIZE_ADDRESS__)
/* Under AddressSanitizer the CUDA driver needs the shadow gap unprotected to map device memory,
 * and the driver's and cuDNN's process-lifetime allocations are not leaks of ours. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "protect_shadow_gap=0"; }
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libcuda.so\nleak:libcudart.so\nleak:libcudnn\nleak:libnvrtc\nleak:libcublas\nleak:libnvidia";
}
#endif

static nn_backend *cpu, *gpu;

/* Normalised-error bounds (max|diff| / max|ref|) per precision: `ops` for the element-wise ops
 * and transfers, `conv` for one convolution, `net` for whole networks. */
typedef struct {
    nn_precision prec;
    const char *name;
    double ops, conv, net;
} tolerance;

static const tolerance tolerances[] = {
    {NN_PREC_FP32, "fp32", 1e-6, 1e-4, 1e-4},
    {NN_PREC_TF32, "tf32", 1e-6, 5e-3, 2e-2},
    {NN_PREC_FP16, "fp16", 1e-3, 1e-2, 3e-2},
};

/* ---- helpers ---- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

/* Uniform in [lo, hi). */
static float frand(float lo, float hi) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return lo + (hi - lo) * (float)((double)(rng_state >> 11) / 9007199254740992.0);
}

static float *rand_buf(size_t n, float lo, float hi) {
    float *b = malloc(n * sizeof(float) + 4);
    SP_ASSERT(b);
    for (size_t i = 0; i < n; i++) b[i] = frand(lo, hi);
    return b;
}

/* Compares with the normalised-error rule at `tol`; prints one line. */
static void compare(const char *what, const float *got, const float *ref, size_t n, double tol) {
    double maxref = 0, maxdiff = 0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        double r = fabs((double)ref[i]), d = fabs((double)got[i] - (double)ref[i]);
        if (r > maxref) maxref = r;
        if (!(d <= maxdiff)) {
            maxdiff = d;
            worst = i;
        }
    }
    double rel = maxref > 0 ? maxdiff / maxref : maxdiff;
    int ok = rel <= tol;
    printf("  %-44s max|diff| %.3g  max|ref| %.3g  ratio %.3g (<= %.0e) %s\n", what, maxdiff, maxref, rel, tol,
           ok ? "ok" : "FAIL");
    if (!ok) printf("    worst at %zu: got %.9g ref %.9g\n", worst, (double)got[worst], (double)ref[worst]);
    t_checks++;
    if (!ok) t_failures++;
}

/* The same tensor on both backends. */
typedef struct {
    nn_tensor c, g;
} tpair;

typedef struct {
    nn_mask c, g;
} mpair;

static size_t numel(const nn_tensor *t) { return (size_t)t->n * t->c * t->h * t->w; }

static void tp_new(tpair *p, int n, int c, int h, int w, int input) {
    if (input) {
        CHECKF(nn_tensor_new_input(cpu, &p->c, n, c, h, w) == SP_OK, "%s", sp_err_msg());
        CHECKF(nn_tensor_new_input(gpu, &p->g, n, c, h, w) == SP_OK, "%s", sp_err_msg());
    } else {
        CHECKF(nn_tensor_new(cpu, &p->c, n, c, h, w) == SP_OK, "%s", sp_err_msg());
        CHECKF(nn_tensor_new(gpu, &p->g, n, c, h, w) == SP_OK, "%s", sp_err_msg());
    }
}

/* Uploads host (n,c,h,w) into both. */
static void tp_upload(tpair *p, const float *host) {
    CHECKF(cpu->ops->upload(cpu, &p->c, 0, p->c.c, host, NULL, NULL) == SP_OK, "%s", sp_err_msg());
    CHECKF(gpu->ops->upload(gpu, &p->g, 0, p->g.c, host, NULL, NULL) == SP_OK, "%s", sp_err_msg());
}

/* Downloads both and compares. */
static void tp_compare(const char *what, const tpair *p, double tol) {
    size_t n = numel(&p->c);
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    SP_ASSERT(a && b);
    CHECKF(cpu->ops->download(cpu, &p->c, a) == SP_OK, "%s", sp_err_msg());
    CHECKF(gpu->ops->download(gpu, &p->g, b) == SP_OK, "%s", sp_err_msg());
    compare(what, b, a, n, tol);
    free(a);
    free(b);
}

static void tp_drop(tpair *p) {
    nn_tensor_drop(cpu, &p->c);
    nn_tensor_drop(gpu, &p->g);
}

static void mp_new(mpair *p, int n, int g, int h, int w) {
    CHECKF(nn_mask_new(cpu, &p->c, n, g, h, w) == SP_OK, "%s", sp_err_msg());
    CHECKF(nn_mask_new(gpu, &p->g, n, g, h, w) == SP_OK, "%s", sp_err_msg());
}

/* Uploads planes (n,g,h,w) with group counts cnt into both. */
static void mp_upload(mpair *p, const float *planes, const int *cnt) {
    CHECKF(cpu->ops->mask_upload(cpu, &p->c, planes, cnt) == SP_OK, "%s", sp_err_msg());
    CHECKF(gpu->ops->mask_upload(gpu, &p->g, planes, cnt) == SP_OK, "%s", sp_err_msg());
}

/* Downloads both full masks and compares; the group structure must agree too. */
static void mp_compare(const char *what, const mpair *p) {
    CHECKF(p->c.g == p->g.g, "%s: %d groups on the CPU, %d on CUDA", what, p->c.g, p->g.g);
    int C = 0;
    for (int i = 0; i < p->c.g; i++) {
        CHECKF(p->c.cnt[i] == p->g.cnt[i], "%s: group %d counts %d vs %d", what, i, p->c.cnt[i], p->g.cnt[i]);
        C += p->c.cnt[i];
    }
    size_t n = (size_t)p->c.n * C * p->c.h * p->c.w;
    float *a = malloc(n * sizeof(float) + 4), *b = malloc(n * sizeof(float) + 4);
    SP_ASSERT(a && b);
    CHECKF(cpu->ops->mask_download(cpu, &p->c, a) == SP_OK, "%s", sp_err_msg());
    CHECKF(gpu->ops->mask_download(gpu, &p->g, b) == SP_OK, "%s", sp_err_msg());
    compare(what, b, a, n, 0.0);
    free(a);
    free(b);
}

static void mp_drop(mpair *p) {
    nn_mask_drop(cpu, &p->c);
    nn_mask_drop(gpu, &p->g);
}

/* Mask planes (n,g,h,w) of 0/1: per image one rectangular hole shared by all its planes (so
 * that some k x k windows see no valid pixel in any group), plus scattered single holes per plane. */
static float *hole_planes(int n, int g, int h, int w) {
    size_t hw = (size_t)h * w;
    float *m = malloc((size_t)n * g * hw * sizeof(float));
    SP_ASSERT(m);
    for (int i = 0; i < n; i++) {
        int hh = h / 2 + 1, ww = w / 2 + 1;
        int y0 = (int)frand(0, (float)(h - hh + 1)), x0 = (int)frand(0, (float)(w - ww + 1));
        for (int j = 0; j < g; j++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    int hole = (y >= y0 && y < y0 + hh && x >= x0 && x < x0 + ww) || frand(0, 1) < 0.1f;
                    m[((size_t)i * g + j) * hw + (size_t)y * w + x] = hole ? 0.0f : 1.0f;
                }
    }
    return m;
}

static void layer_rand(nn_layer *l, int cin, int cout, int k, int stride) {
    memset(l, 0, sizeof *l);
    l->cin = cin;
    l->cout = cout;
    l->k = k;
    l->stride = stride;
    l->pad = (k - 1) / 2;
    float a = sqrtf(3.0f / (float)(cin * k * k));
    l->w = rand_buf((size_t)cout * cin * k * k, -a, a);
    l->b = rand_buf((size_t)cout, -0.1f, 0.1f);
}

/* One layer used on two backends: each keeps its own state in l->be, so each backend gets a
 * copy of the layer sharing the host weights. */
static void layer_done(nn_layer *lc, nn_layer *lg) {
    cpu->ops->layer_release(cpu, lc);
    gpu->ops->layer_release(gpu, lg);
    free(lc->w);
    free(lc->b);
}

static int conv_out(int in, const nn_layer *l) { return (in + 2 * l->pad - l->k) / l->stride + 1; }

static const char *act_name(nn_act a) { return a == NN_ACT_RELU ? "relu" : a == NN_ACT_LRELU ? "lrelu" : "none"; }

/* ---- op tests ---- */

static void test_transfers(const tolerance *tol, int n) {
    char what[96];
    const int C = 11, H = 13, W = 9;
    size_t hw = (size_t)H * W;
    tpair t;
    tp_new(&t, n, C, H, W, 0);
    float *a = rand_buf((size_t)n * 5 * hw, -2, 2), *b = rand_buf((size_t)n * 4 * hw, -2, 2);
    float scale[5] = {0.5f, 2.0f, -1.0f, 4.37f, 1.0f}, shift[5] = {0.1f, -0.2f, 0.3f, -1.5f, 0.0f};
    /* channels [2,7) scaled and shifted, [7,11) as they are, [0,2) left zero */
    CHECKF(cpu->ops->upload(cpu, &t.c, 2, 5, a, scale, shift) == SP_OK, "%s", sp_err_msg());
    CHECKF(gpu->ops->upload(gpu, &t.g, 2, 5, a, scale, shift) == SP_OK, "%s", sp_err_msg());
    CHECKF(cpu->ops->upload(cpu, &t.c, 7, 4, b, NULL, NULL) == SP_OK, "%s", sp_err_msg());
    CHECKF(gpu->ops->upload(gpu, &t.g, 7, 4, b, NULL, NULL) == SP_OK, "%s", sp_err_msg());
    snprintf(what, sizeof what, "upload/download n=%d (11,13,9)", n);
    tp_compare(what, &t, tol->ops);
    tp_drop(&t);
    free(a);
    free(b);

    /* a network input with 3 channels (the CPU keeps it plain NCHW) */
    float *x = rand_buf((size_t)n * 3 * hw, 0, 1);
    tp_new(&t, n, 3, H, W, 1);
    tp_upload(&t, x);
    snprintf(what, sizeof what, "input upload/download n=%d (3,13,9)", n);
    tp_compare(what, &t, tol->ops);
    tp_drop(&t);
    free(x);
}

static void test_masks(const tolerance *tol, int n) {
    char what[96];
    const int H = 13, W = 9, cnt[2] = {5, 6};
    mpair m;
    mp_new(&m, n, 2, H, W);
    float *planes = hole_planes(n, 2, H, W);
    mp_upload(&m, planes, cnt);
    snprintf(what, sizeof what, "mask upload/download n=%d groups 5+6", n);
    mp_compare(what, &m);
    tpair t;
    tp_new(&t, n, 11, H, W, 0);
    float *x = rand_buf((size_t)n * 11 * H * W, -1, 1);
    tp_upload(&t, x);
    CHECKF(cpu->ops->mask_apply(cpu, &t.c, &m.c) == SP_OK, "%s", sp_err_msg());
    CHECKF(gpu->ops->mask_apply(gpu, &t.g, &m.g) == SP_OK, "%s", sp_err_msg());
    snprintf(what, sizeof what, "mask_apply n=%d (11,13,9)", n);
    tp_compare(what, &t, tol->ops);
    tp_drop(&t);
    mp_drop(&m);
    free(planes);
    free(x);
}

typedef struct {
    int cin, cout, k, stride, h, w;
    nn_act act;
    int input;
} conv_case;

static void test_conv(const tolerance *tol, int n, const conv_case *cc) {
    char what[96];
    nn_layer lc, lg;
    layer_rand(&lc, cc->cin, cc->cout, cc->k, cc->stride);
    lg = lc;
    int oh = conv_out(cc->h, &lc), ow = conv_out(cc->w, &lc);
    tpair x, y;
    tp_new(&x, n, cc->cin, cc->h, cc->w, cc->input);
    tp_new(&y, n, cc->cout, oh, ow, 0);
    float *hx = rand_buf((size_t)n * cc->cin * cc->h * cc->w, -1, 1);
    tp_upload(&x, hx);
    CHECKF(cpu->ops->conv(cpu, &lc, &x.c, &y.c, cc->act) == SP_OK, "%s", sp_err_msg());
    CHECKF(gpu->ops->conv(gpu, &lg, &x.g, &y.g, cc->act) == SP_OK, "%s", sp_err_msg());
    snprintf(what, sizeof what, "conv%d s%d %d->%d %dx%d %s n=%d", cc->k, cc->stride, cc->cin, cc->cout, cc->w, cc->h,
             act_name(cc->act), n);
    tp_compare(what, &y, tol->conv);
    /* a second run reuses the algorithm chosen for this shape */
    CHECKF(gpu->ops->conv(gpu, &lg, &x.g, &y.g, cc->act) == SP_OK, "%s", sp_err_msg());
    snprintf(what, sizeof what, "  same, second run n=%d", n);
    tp_compare(what, &y, tol->conv);
    tp_drop(&x);
    tp_drop(&y);
    layer_done(&lc, &lg);
    free(hx);
}

typedef struct {
    int cin, cout, k, stride, h, w, g;
    int cnt[2];
    nn_act act;
    int input;
} pconv_case;

static void test_pconv(const tolerance *tol, int n, const pconv_case *pc) {
    char what[96];
    nn_layer lc, lg;
    layer_rand(&lc, pc->cin, pc->cout, pc->k, pc->stride);
    lg = lc;
    int oh = conv_out(pc->h, &lc), ow = conv_out(pc->w, &lc);
    tpair x, y;
    mpair mx, my;
    tp_new(&x, n, pc->cin, pc->h, pc->w, pc->input);
    tp_new(&y, n, pc->cout, oh, ow, 0);
    mp_new(&mx, n, pc->g, pc->h, pc->w);
    mp_new(&my, n, 1, oh, ow);
    float *hx = rand_buf((size_t)n * pc->cin * pc->h * pc->w, -1, 1), *planes = hole_planes(n, pc->g, pc->h, pc->w);
    tp_upload(&x, hx);
    mp_upload(&mx, planes, pc->cnt);
    CHECKF(cpu->ops->mask_apply(cpu, &x.c, &mx.c) == SP_OK, "%s", sp_err_msg());
    CHECKF(gpu->ops->mask_apply(gpu, &x.g, &mx.g) == SP_OK, "%s", sp_err_msg());
    CHECKF(cpu->ops->pconv(cpu, &lc, &x.c, &mx.c, &y.c, &my.c, pc->act) == SP_OK, "%s", sp_err_msg());
    CHECKF(gpu->ops->pconv(gpu, &lg, &x.g, &mx.g, &y.g, &my.g, pc->act) == SP_OK, "%s", sp_err_msg());
    snprintf(what, sizeof what, "pconv%d s%d %d->%d %dx%d g%d %s n=%d", pc->k, pc->stride, pc->cin, pc->cout, pc->w,
             pc->h, pc->g, act_name(pc->act), n);
    tp_compare(what, &y, tol->conv);
    snprintf(what, sizeof what, "  its mask n=%d", n);
    mp_compare(what, &my);
    /* the case must exercise both empty and full windows */
    size_t np = (size_t)n * oh * ow * pc->cout;
    float *mo = malloc(np * sizeof(float));
    SP_ASSERT(mo);
    CHECK(cpu->ops->mask_download(cpu, &my.c, mo) == SP_OK);
    int holes = 0, full = 0;
    for (size_t i = 0; i < np; i++) holes += mo[i] == 0, full += mo[i] == 1;
    CHECKF(holes > 0 && full > 0, "%s: the case needs windows with and without valid pixels", what);
    free(mo);
    tp_drop(&x);
    tp_drop(&y);
    mp_drop(&mx);
    mp_drop(&my);
    layer_done(&lc, &lg);
    free(hx);
    free(planes);
}

static void test_up2_concat(const tolerance *tol, int n) {
    char what[96];
    /* x2 upsampling with a skip and masks: a (5,7,9) + skip (3,14,18) -> (8,14,18), masks 1+1 groups */
    {
        tpair a, s, y;
        mpair ma, ms, my;
        tp_new(&a, n, 5, 7, 9, 0);
        tp_new(&s, n, 3, 14, 18, 1); /* a skip can be the network input */
        tp_new(&y, n, 8, 14, 18, 0);
        mp_new(&ma, n, 1, 7, 9);
        mp_new(&ms, n, 1, 14, 18);
        mp_new(&my, n, 2, 14, 18);
        float *ha = rand_buf((size_t)n * 5 * 7 * 9, -1, 1), *hs = rand_buf((size_t)n * 3 * 14 * 18, -1, 1);
        float *pa = hole_planes(n, 1, 7, 9), *ps = hole_planes(n, 1, 14, 18);
        int ca = 5, cs = 3;
        tp_upload(&a, ha);
        tp_upload(&s, hs);
        mp_upload(&ma, pa, &ca);
        mp_upload(&ms, ps, &cs);
        CHECKF(cpu->ops->up2_concat(cpu, &a.c, &s.c, &y.c, &ma.c, &ms.c, &my.c) == SP_OK, "%s", sp_err_msg());
        CHECKF(gpu->ops->up2_concat(gpu, &a.g, &s.g, &y.g, &ma.g, &ms.g, &my.g) == SP_OK, "%s", sp_err_msg());
        snprintf(what, sizeof what, "up2_concat x2 5+3 14x18 n=%d", n);
        tp_compare(what, &y, tol->ops);
        snprintf(what, sizeof what, "  its mask n=%d", n);
        mp_compare(what, &my);
        tp_drop(&a), tp_drop(&s), tp_drop(&y);
        mp_drop(&ma), mp_drop(&ms), mp_drop(&my);
        free(ha), free(hs), free(pa), free(ps);
    }
    /* same size (identity), skip mask of 2 groups: 6 + 5 -> 11 channels, masks 1 + 2 groups */
    {
        tpair a, s, y;
        mpair ma, ms, my;
        tp_new(&a, n, 6, 7, 9, 0);
        tp_new(&s, n, 5, 7, 9, 0);
        tp_new(&y, n, 11, 7, 9, 0);
        mp_new(&ma, n, 1, 7, 9);
        mp_new(&ms, n, 2, 7, 9);
        mp_new(&my, n, 3, 7, 9);
        float *ha = rand_buf((size_t)n * 6 * 63, -1, 1), *hs = rand_buf((size_t)n * 5 * 63, -1, 1);
        float *pa = hole_planes(n, 1, 7, 9), *ps = hole_planes(n, 2, 7, 9);
        int ca = 6, cs[2] = {2, 3};
        tp_upload(&a, ha);
        tp_upload(&s, hs);
        mp_upload(&ma, pa, &ca);
        mp_upload(&ms, ps, cs);
        CHECKF(cpu->ops->up2_concat(cpu, &a.c, &s.c, &y.c, &ma.c, &ms.c, &my.c) == SP_OK, "%s", sp_err_msg());
        CHECKF(gpu->ops->up2_concat(gpu, &a.g, &s.g, &y.g, &ma.g, &ms.g, &my.g) == SP_OK, "%s", sp_err_msg());
        snprintf(what, sizeof what, "concat x1 6+5 9x7 n=%d", n);
        tp_compare(what, &y, tol->ops);
        snprintf(what, sizeof what, "  its mask (1+2 groups) n=%d", n);
        mp_compare(what, &my);
        tp_drop(&a), tp_drop(&s), tp_drop(&y);
        mp_drop(&ma), mp_drop(&ms), mp_drop(&my);
        free(ha), free(hs), free(pa), free(ps);
    }
    /* upsampling alone */
    {
        tpair a, y;
        tp_new(&a, n, 4, 5, 7, 0);
        tp_new(&y, n, 4, 10, 14, 0);
        float *ha = rand_buf((size_t)n * 4 * 35, -1, 1);
        tp_upload(&a, ha);
        CHECKF(cpu->ops->up2_concat(cpu, &a.c, NULL, &y.c, NULL, NULL, NULL) == SP_OK, "%s", sp_err_msg());
        CHECKF(gpu->ops->up2_concat(gpu, &a.g, NULL, &y.g, NULL, NULL, NULL) == SP_OK, "%s", sp_err_msg());
        snprintf(what, sizeof what, "upsample x2 (4,5,7) n=%d", n);
        tp_compare(what, &y, tol->ops);
        tp_drop(&a), tp_drop(&y);
        free(ha);
    }
}

static void test_pool_act(const tolerance *tol, int n) {
    char what[96];
    const int shapes[2][3] = {{13, 14, 18}, {5, 15, 19}}; /* c, h, w: even and odd inputs */
    for (int i = 0; i < 2; i++) {
        int c = shapes[i][0], h = shapes[i][1], w = shapes[i][2];
        tpair x, y;
        tp_new(&x, n, c, h, w, 0);
        tp_new(&y, n, c, h / 2, w / 2, 0);
        float *hx = rand_buf((size_t)n * c * h * w, -3, 3);
        tp_upload(&x, hx);
        CHECKF(cpu->ops->maxpool2(cpu, &x.c, &y.c) == SP_OK, "%s", sp_err_msg());
        CHECKF(gpu->ops->maxpool2(gpu, &x.g, &y.g) == SP_OK, "%s", sp_err_msg());
        snprintf(what, sizeof what, "maxpool2 (%d,%d,%d) n=%d", c, h, w, n);
        tp_compare(what, &y, tol->ops);
        tp_drop(&x), tp_drop(&y);
        free(hx);
    }
    const nn_act acts[2] = {NN_ACT_RELU, NN_ACT_LRELU};
    for (int i = 0; i < 2; i++) {
        tpair x, y;
        tp_new(&x, n, 7, 9, 11, 0);
        tp_new(&y, n, 7, 9, 11, 0);
        float *hx = rand_buf((size_t)n * 7 * 99, -2, 2);
        tp_upload(&x, hx);
        CHECKF(cpu->ops->act(cpu, &x.c, &y.c, acts[i]) == SP_OK, "%s", sp_err_msg());
        CHECKF(gpu->ops->act(gpu, &x.g, &y.g, acts[i]) == SP_OK, "%s", sp_err_msg());
        snprintf(what, sizeof what, "act %s (7,9,11) n=%d", act_name(acts[i]), n);
        tp_compare(what, &y, tol->ops);
        CHECKF(cpu->ops->act(cpu, &x.c, &x.c, acts[i]) == SP_OK, "%s", sp_err_msg());
        CHECKF(gpu->ops->act(gpu, &x.g, &x.g, acts[i]) == SP_OK, "%s", sp_err_msg());
        snprintf(what, sizeof what, "act %s in place n=%d", act_name(acts[i]), n);
        tp_compare(what, &x, tol->ops);
        tp_drop(&x), tp_drop(&y);
        free(hx);
    }
}

static void test_desc_pool(const tolerance *tol, int n) {
    char what[96];
    const int C = 37, H = 5, W = 7;
    tpair x;
    tp_new(&x, n, C, H, W, 0);
    float *hx = rand_buf((size_t)n * C * H * W, -0.5f, 2);
    tp_upload(&x, hx);
    float *a = malloc((size_t)n * C * sizeof(float)), *b = malloc((size_t)n * C * sizeof(float));
    SP_ASSERT(a && b);
    for (int p = 0; p < 2; p++) {
        nn_pool pool = p ? NN_POOL_MAX : NN_POOL_AVG;
        CHECKF(cpu->ops->desc_pool(cpu, &x.c, pool, a) == SP_OK, "%s", sp_err_msg());
        CHECKF(gpu->ops->desc_pool(gpu, &x.g, pool, b) == SP_OK, "%s", sp_err_msg());
        snprintf(what, sizeof what, "desc_pool %s (37,5,7) n=%d", nn_pool_name(pool), n);
        /* the L2 normalisation sums in another order: allow a few ulps even in fp32 */
        compare(what, b, a, (size_t)n * C, tol->ops > 1e-5 ? tol->ops : 1e-5);
    }
    tp_drop(&x);
    free(hx), free(a), free(b);
}

static void test_ops(const tolerance *tol) {
    static const conv_case convs[] = {
        {3, 16, 7, 2, 13, 17, NN_ACT_RELU, 1},   /* a first layer: 3 input channels, the network input */
        {19, 24, 3, 1, 11, 9, NN_ACT_LRELU, 0},  /* a decoder layer, odd channels */
        {16, 8, 5, 2, 15, 13, NN_ACT_NONE, 0},   /* stride 2, odd size */
        {64, 32, 3, 1, 8, 8, NN_ACT_RELU, 0},    /* tensor-core friendly */
    };
    static const pconv_case pconvs[] = {
        {3, 8, 7, 2, 21, 19, 1, {3, 0}, NN_ACT_RELU, 1},  /* coarse enc.0: the input and its 1-group mask */
        {11, 16, 3, 1, 13, 11, 2, {5, 6}, NN_ACT_LRELU, 0}, /* a decoder level: features + skip masks */
        {12, 20, 5, 2, 17, 15, 2, {8, 4}, NN_ACT_RELU, 0},
        {9, 3, 3, 1, 10, 12, 2, {6, 3}, NN_ACT_NONE, 0},    /* the last layer: no activation */
    };
    const int batches[2] = {1, 8};
    for (int b = 0; b < 2; b++) {
        int n = batches[b];
        test_transfers(tol, n);
        test_masks(tol, n);
        for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++) test_conv(tol, n, &convs[i]);
        for (size_t i = 0; i < sizeof pconvs / sizeof pconvs[0]; i++) test_pconv(tol, n, &pconvs[i]);
        test_up2_concat(tol, n);
        test_pool_act(tol, n);
        test_desc_pool(tol, n);
    }
}

/* ---- golden networks through CUDA ---- */

static nn_net *load(const char *dir, const char *file) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    nn_net *net = NULL;
    CHECKF(nn_net_load(gpu, p, &net) == SP_OK, "%s", sp_err_msg());
    return net;
}

static void golden_batch(const tolerance *tol, const char *dir, const char *io, nn_net *pconv, nn_net *simk[3],
                         nn_net *vgg) {
    char p[512], what[128];
    snprintf(p, sizeof p, "%s/%s", dir, io);
    st_file *f = NULL;
    CHECKF(st_open(p, &f) == SP_OK, "%s", sp_err_msg());
    if (!f) return;
    int64_t is[4], fs[4];
    float *img = golden_read(f, "image", is, NULL), *mask = golden_read(f, "mask", NULL, NULL);
    int n = (int)is[0], s = (int)is[2];
    size_t isz = (size_t)n * 3 * s * s;
    float *out = malloc(isz * sizeof(float));
    printf(" %s (batch %d, %dx%d)\n", p, n, s, s);
    float *ref = golden_read(f, "pconv_out", NULL, NULL);
    double t0 = sp_now();
    CHECKF(nn_unet_forward(pconv, n, s, s, img, mask, out) == SP_OK, "%s", sp_err_msg());
    snprintf(what, sizeof what, "pconv_unet (first run %.0f ms)", (sp_now() - t0) * 1e3);
    compare(what, out, ref, isz, tol->net);
    free(ref);
    for (int k = 0; k < 3; k++) {
        char in_name[32], out_name[32];
        snprintf(in_name, sizeof in_name, "simk%d_in", k);
        snprintf(out_name, sizeof out_name, "simk%d_out", k);
        float *x = golden_read(f, in_name, NULL, NULL);
        ref = golden_read(f, out_name, NULL, NULL);
        CHECKF(nn_unet_forward(simk[k], n, s, s, x, NULL, out) == SP_OK, "%s", sp_err_msg());
        snprintf(what, sizeof what, "simk_unet k=%d", k);
        compare(what, out, ref, isz, tol->net);
        free(x);
        free(ref);
    }
    ref = golden_read(f, "vgg_feat", fs, NULL);
    size_t nf = (size_t)(fs[0] * fs[1] * fs[2] * fs[3]);
    float *feat = malloc(nf * sizeof(float)), *desc = malloc((size_t)n * fs[1] * sizeof(float));
    for (int pool = 0; pool < 2; pool++) {
        CHECKF(nn_vgg_forward(vgg, n, s, s, img, pool ? NN_POOL_MAX : NN_POOL_AVG, feat, desc) == SP_OK, "%s",
               sp_err_msg());
        if (pool == 0) compare("vgg16_features conv5_3", feat, ref, nf, tol->net);
        float *dref = golden_read(f, pool ? "vgg_desc_max" : "vgg_desc_avg", NULL, NULL);
        compare(pool ? "descriptor max" : "descriptor avg", desc, dref, (size_t)n * fs[1], tol->net);
        free(dref);
    }
    free(ref), free(feat), free(desc), free(img), free(mask), free(out);
    st_close(f);
}

static void test_golden(const tolerance *tol, const char *dir) {
    size_t before = nn_backend_device_memory(gpu);
    nn_net *pconv = load(dir, "pconv_unet.safetensors"), *vgg = load(dir, "vgg16_features.safetensors");
    nn_net *simk[3] = {load(dir, "simk_unet_k0.safetensors"), load(dir, "simk_unet_k1.safetensors"),
                       load(dir, "simk_unet_k2.safetensors")};
    if (pconv && vgg && simk[0] && simk[1] && simk[2]) {
        golden_batch(tol, dir, "io_b1.safetensors", pconv, simk, vgg);
        golden_batch(tol, dir, "io_b3.safetensors", pconv, simk, vgg);
        size_t during = nn_backend_device_memory(gpu);
        printf("  GPU memory held with the five networks planned: %.1f MiB\n", (double)during / (1 << 20));
        CHECKF(during > before, "device_memory did not grow (%zu -> %zu)", before, during);
    }
    nn_net_free(pconv);
    nn_net_free(vgg);
    for (int k = 0; k < 3; k++) nn_net_free(simk[k]);
}

int main(void) {
    nn_backend_opts co = {.device = NN_DEVICE_CPU, .threads = 2};
    CHECKF(nn_backend_new(&co, &cpu) == SP_OK, "%s", sp_err_msg());
    nn_backend_opts go = {.device = NN_DEVICE_CUDA, .gpu = 0, .precision = NN_PREC_FP32};
    sp_status st = nn_backend_new(&go, &gpu);
    if (st == SP_ERR_UNSUPPORTED) {
        printf("test_cuda_ops: SKIP: no GPU (%s)\n", sp_err_msg());
        nn_backend_free(cpu);
        return t_done("test_cuda_ops");
    }
    CHECKF(st == SP_OK, "CUDA backend: %s", sp_err_msg());
    if (st) {
        nn_backend_free(cpu);
        return t_done("test_cuda_ops");
    }
    nn_backend_free(gpu);
    gpu = NULL;

    /* a GPU ordinal that does not exist is refused with the reason */
    nn_backend *bad = NULL;
    go.gpu = 999;
    st = nn_backend_new(&go, &bad);
    CHECKF(st != SP_OK && strstr(sp_err_msg(), "model.gpu"), "gpu 999: status %d, '%s'", (int)st, sp_err_msg());
    nn_backend_free(bad);
    go.gpu = 0;

    const char *only = getenv("SEMIPAINT_TEST_PRECISION"); /* fp32, tf32 or fp16: run just that one */
    for (size_t i = 0; i < sizeof tolerances / sizeof tolerances[0]; i++) {
        const tolerance *tol = &tolerances[i];
        if (only && *only && strcmp(only, tol->name)) continue;
        go.precision = tol->prec;
        st = nn_backend_new(&go, &gpu);
        CHECKF(st == SP_OK, "CUDA backend %s: %s", tol->name, sp_err_msg());
        if (st) continue;
        CHECK(!strcmp(nn_backend_name(gpu), "cuda"));
        printf("== %s: ops on %s against %s\n", tol->name, nn_backend_device(gpu), nn_backend_device(cpu));
        double t0 = sp_now();
        test_ops(tol);
        printf("== %s: golden networks (tests/fixtures/small)\n", tol->name);
        test_golden(tol, "tests/fixtures/small");
        const char *big = getenv("SEMIPAINT_FIXTURES_PAPER256");
        if (!big) big = "build/fixtures/paper256";
        if (t_exists(big) && !getenv("SEMIPAINT_SKIP_PAPER256")) {
            printf("== %s: golden networks (%s)\n", tol->name, big);
            test_golden(tol, big);
        }
        CHECKF(gpu->ops->sync(gpu) == SP_OK, "%s", sp_err_msg());
        printf("== %s: %.1f s\n", tol->name, sp_now() - t0);
        nn_backend_free(gpu);
        gpu = NULL;
    }
    nn_backend_free(cpu);
    return t_done("test_cuda_ops");
}

#endif
