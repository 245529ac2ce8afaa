/* test_cuda_ops.c: every backend op on the CUDA backend against the CPU backend (random inputs, odd sizes, batch 1, 8 and 13, fp32/tf32/fp16), the golden networks through CUDA, the error paths (the backend test hook) and the environment settings; prints "SKIP: no GPU" and passes where there is none. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/backend.h"
#include "tests/golden.h"

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

/* Masks of 2, 3 and 4 channel groups over 11 channels: transfer and mask_apply. */
static void test_masks(const tolerance *tol, int n) {
    static const struct {
        int g, cnt[NN_MAX_GROUPS];
    } groups[] = {{2, {5, 6}}, {3, {4, 4, 3}}, {4, {3, 3, 3, 2}}};
    char what[96];
    const int H = 13, W = 9;
    for (size_t k = 0; k < sizeof groups / sizeof groups[0]; k++) {
        const int g = groups[k].g, *cnt = groups[k].cnt;
        mpair m;
        mp_new(&m, n, g, H, W);
        float *planes = hole_planes(n, g, H, W);
        mp_upload(&m, planes, cnt);
        snprintf(what, sizeof what, "mask upload/download n=%d %d groups", n, g);
        mp_compare(what, &m);
        tpair t;
        tp_new(&t, n, 11, H, W, 0);
        float *x = rand_buf((size_t)n * 11 * H * W, -1, 1);
        tp_upload(&t, x);
        CHECKF(cpu->ops->mask_apply(cpu, &t.c, &m.c) == SP_OK, "%s", sp_err_msg());
        CHECKF(gpu->ops->mask_apply(gpu, &t.g, &m.g) == SP_OK, "%s", sp_err_msg());
        snprintf(what, sizeof what, "mask_apply n=%d (11,13,9) %d groups", n, g);
        tp_compare(what, &t, tol->ops);
        tp_drop(&t);
        mp_drop(&m);
        free(planes);
        free(x);
    }
}

typedef struct {
    int cin, cout, k, stride, h, w;
    nn_act act;
    int input;
} conv_case;

/* One conv case on inputs in [lo, hi). */
static void test_conv_range(const tolerance *tol, int n, const conv_case *cc, float lo, float hi) {
    char what[96];
    nn_layer lc, lg;
    layer_rand(&lc, cc->cin, cc->cout, cc->k, cc->stride);
    lg = lc;
    int oh = conv_out(cc->h, &lc), ow = conv_out(cc->w, &lc);
    tpair x, y;
    tp_new(&x, n, cc->cin, cc->h, cc->w, cc->input);
    tp_new(&y, n, cc->cout, oh, ow, 0);
    float *hx = rand_buf((size_t)n * cc->cin * cc->h * cc->w, lo, hi);
    tp_upload(&x, hx);
    CHECKF(cpu->ops->conv(cpu, &lc, &x.c, &y.c, cc->act) == SP_OK, "%s", sp_err_msg());
    CHECKF(gpu->ops->conv(gpu, &lg, &x.g, &y.g, cc->act) == SP_OK, "%s", sp_err_msg());
    snprintf(what, sizeof what, "conv%d s%d %d->%d %dx%d %s n=%d%s", cc->k, cc->stride, cc->cin, cc->cout, cc->w, cc->h,
             act_name(cc->act), n, hi > 1 ? " large" : "");
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

static void test_conv(const tolerance *tol, int n, const conv_case *cc) { test_conv_range(tol, n, cc, -1, 1); }

typedef struct {
    int cin, cout, k, stride, h, w, g;
    int cnt[NN_MAX_GROUPS];
    nn_act act;
    int input;
} pconv_case;

/* One pconv case on inputs in [lo, hi). */
static void test_pconv_range(const tolerance *tol, int n, const pconv_case *pc, float lo, float hi) {
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
    float *hx = rand_buf((size_t)n * pc->cin * pc->h * pc->w, lo, hi), *planes = hole_planes(n, pc->g, pc->h, pc->w);
    tp_upload(&x, hx);
    mp_upload(&mx, planes, pc->cnt);
    CHECKF(cpu->ops->mask_apply(cpu, &x.c, &mx.c) == SP_OK, "%s", sp_err_msg());
    CHECKF(gpu->ops->mask_apply(gpu, &x.g, &mx.g) == SP_OK, "%s", sp_err_msg());
    CHECKF(cpu->ops->pconv(cpu, &lc, &x.c, &mx.c, &y.c, &my.c, pc->act) == SP_OK, "%s", sp_err_msg());
    CHECKF(gpu->ops->pconv(gpu, &lg, &x.g, &mx.g, &y.g, &my.g, pc->act) == SP_OK, "%s", sp_err_msg());
    snprintf(what, sizeof what, "pconv%d s%d %d->%d %dx%d g%d %s n=%d%s", pc->k, pc->stride, pc->cin, pc->cout, pc->w,
             pc->h, pc->g, act_name(pc->act), n, hi > 1 ? " large" : "");
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

static void test_pconv(const tolerance *tol, int n, const pconv_case *pc) { test_pconv_range(tol, n, pc, -1, 1); }

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
    /* x2 upsampling with masks of 2 + 2 groups: the most a concat mask holds */
    {
        tpair a, s, y;
        mpair ma, ms, my;
        tp_new(&a, n, 6, 5, 6, 0);
        tp_new(&s, n, 5, 10, 12, 0);
        tp_new(&y, n, 11, 10, 12, 0);
        mp_new(&ma, n, 2, 5, 6);
        mp_new(&ms, n, 2, 10, 12);
        mp_new(&my, n, 4, 10, 12);
        float *ha = rand_buf((size_t)n * 6 * 30, -1, 1), *hs = rand_buf((size_t)n * 5 * 120, -1, 1);
        float *pa = hole_planes(n, 2, 5, 6), *ps = hole_planes(n, 2, 10, 12);
        int ca[2] = {3, 3}, cs[2] = {2, 3};
        tp_upload(&a, ha);
        tp_upload(&s, hs);
        mp_upload(&ma, pa, ca);
        mp_upload(&ms, ps, cs);
        CHECKF(cpu->ops->up2_concat(cpu, &a.c, &s.c, &y.c, &ma.c, &ms.c, &my.c) == SP_OK, "%s", sp_err_msg());
        CHECKF(gpu->ops->up2_concat(gpu, &a.g, &s.g, &y.g, &ma.g, &ms.g, &my.g) == SP_OK, "%s", sp_err_msg());
        snprintf(what, sizeof what, "up2_concat x2 6+5 12x10 n=%d", n);
        tp_compare(what, &y, tol->ops);
        snprintf(what, sizeof what, "  its mask (2+2 groups) n=%d", n);
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

/* Descriptor pooling of C channels (the kernel has 256 threads a block: 600 makes each thread
 * pool three channels, the last pass partly) with inputs in [lo, hi). */
static void test_desc_pool(const tolerance *tol, int n, int C, float lo, float hi) {
    char what[96];
    const int H = 5, W = 7;
    tpair x;
    tp_new(&x, n, C, H, W, 0);
    float *hx = rand_buf((size_t)n * C * H * W, lo, hi);
    tp_upload(&x, hx);
    float *a = malloc((size_t)n * C * sizeof(float)), *b = malloc((size_t)n * C * sizeof(float));
    SP_ASSERT(a && b);
    for (int p = 0; p < 2; p++) {
        nn_pool pool = p ? NN_POOL_MAX : NN_POOL_AVG;
        CHECKF(cpu->ops->desc_pool(cpu, &x.c, pool, a) == SP_OK, "%s", sp_err_msg());
        CHECKF(gpu->ops->desc_pool(gpu, &x.g, pool, b) == SP_OK, "%s", sp_err_msg());
        snprintf(what, sizeof what, "desc_pool %s (%d,5,7) [%g,%g) n=%d", nn_pool_name(pool), C, lo, hi, n);
        /* the L2 normalisation sums in another order: allow a few ulps even in fp32 */
        compare(what, b, a, (size_t)n * C, tol->ops > 1e-5 ? tol->ops : 1e-5);
    }
    tp_drop(&x);
    free(hx), free(a), free(b);
}

/* Values far above 1 (fp16 holds up to 65504; its relative precision is what matters): transfers,
 * pooling, activations at magnitudes of thousands, and convolutions of inputs of tens. */
static void test_large_values(const tolerance *tol, int n) {
    char what[96];
    tpair t, y;
    const int C = 11, H = 13, W = 9;
    float *a = rand_buf((size_t)n * C * H * W, -3000, 3000);
    tp_new(&t, n, C, H, W, 0);
    tp_upload(&t, a);
    snprintf(what, sizeof what, "upload/download [-3000,3000) n=%d", n);
    tp_compare(what, &t, tol->ops);
    tp_new(&y, n, C, H / 2, W / 2, 0);
    CHECKF(cpu->ops->maxpool2(cpu, &t.c, &y.c) == SP_OK, "%s", sp_err_msg());
    CHECKF(gpu->ops->maxpool2(gpu, &t.g, &y.g) == SP_OK, "%s", sp_err_msg());
    snprintf(what, sizeof what, "maxpool2 [-3000,3000) n=%d", n);
    tp_compare(what, &y, tol->ops);
    CHECKF(cpu->ops->act(cpu, &t.c, &t.c, NN_ACT_LRELU) == SP_OK, "%s", sp_err_msg());
    CHECKF(gpu->ops->act(gpu, &t.g, &t.g, NN_ACT_LRELU) == SP_OK, "%s", sp_err_msg());
    snprintf(what, sizeof what, "act lrelu [-3000,3000) n=%d", n);
    tp_compare(what, &t, tol->ops);
    tp_drop(&t), tp_drop(&y);
    free(a);
    test_desc_pool(tol, n, 37, -100, 400);
    static const conv_case c1 = {19, 24, 3, 1, 11, 9, NN_ACT_LRELU, 0}, c2 = {3, 16, 7, 2, 13, 17, NN_ACT_NONE, 1};
    test_conv_range(tol, n, &c1, -40, 40);
    test_conv_range(tol, n, &c2, 0, 255); /* an image in 0..255 */
    static const pconv_case pc = {11, 16, 3, 1, 13, 11, 2, {5, 6}, NN_ACT_NONE, 0};
    test_pconv_range(tol, n, &pc, -40, 40);
}

static void test_ops(const tolerance *tol) {
    static const conv_case convs[] = {
        {3, 16, 7, 2, 13, 17, NN_ACT_RELU, 1},   /* a first layer: 3 input channels, the network input */
        {19, 24, 3, 1, 11, 9, NN_ACT_LRELU, 0},  /* a decoder layer, odd channels */
        {16, 8, 5, 2, 15, 13, NN_ACT_NONE, 0},   /* stride 2, odd size */
        {64, 32, 3, 1, 8, 8, NN_ACT_RELU, 0},    /* tensor-core friendly */
        {10, 16, 5, 2, 13, 11, NN_ACT_RELU, 1},  /* Sim-1's first layer: 10 input channels */
        {67, 3, 3, 1, 9, 11, NN_ACT_NONE, 0},    /* a last layer: 64 + 3 in, 3 out */
    };
    static const pconv_case pconvs[] = {
        {3, 8, 7, 2, 21, 19, 1, {3, 0}, NN_ACT_RELU, 1},  /* coarse enc.0: the input and its 1-group mask */
        {11, 16, 3, 1, 13, 11, 2, {5, 6}, NN_ACT_LRELU, 0}, /* a decoder level: features + skip masks */
        {12, 20, 5, 2, 17, 15, 2, {8, 4}, NN_ACT_RELU, 0},
        {9, 3, 3, 1, 10, 12, 2, {6, 3}, NN_ACT_NONE, 0},    /* the last layer: no activation */
        {13, 8, 3, 1, 11, 9, 3, {4, 5, 4}, NN_ACT_LRELU, 0}, /* input masks of 3 and 4 groups */
        {14, 6, 3, 2, 13, 15, 4, {3, 4, 4, 3}, NN_ACT_RELU, 0},
    };
    const int batches[3] = {1, 8, 13}; /* 13: above 8, odd */
    for (int b = 0; b < 3; b++) {
        int n = batches[b];
        test_transfers(tol, n);
        test_masks(tol, n);
        for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++) test_conv(tol, n, &convs[i]);
        for (size_t i = 0; i < sizeof pconvs / sizeof pconvs[0]; i++) test_pconv(tol, n, &pconvs[i]);
        test_up2_concat(tol, n);
        test_pool_act(tol, n);
        test_desc_pool(tol, n, 37, -0.5f, 2);
        test_desc_pool(tol, n, 600, -0.5f, 2);
        test_large_values(tol, n);
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

/* ---- whole networks at a batch above 8: CUDA against the CPU ---- */

/* Inputs for a net: images (and Sim-K's extra channels) in [0,1), a hole mask. */
static void net_inputs(const nn_net_info *in, int n, int s, float **x, float **m) {
    *x = rand_buf((size_t)n * in->in_channels * s * s, 0, 1);
    *m = hole_planes(n, 1, s, s);
}

static void test_nets_batch(const tolerance *tol, const char *dir, int n) {
    static const char *files[] = {"pconv_unet.safetensors", "simk_unet_k2.safetensors", "vgg16_features.safetensors"};
    const int s = 64;
    char p[512], what[128];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        nn_net *nc = NULL, *ng = NULL;
        CHECKF(nn_net_load(cpu, p, &nc) == SP_OK, "%s", sp_err_msg());
        CHECKF(nn_net_load(gpu, p, &ng) == SP_OK, "%s", sp_err_msg());
        if (nc && ng) {
            const nn_net_info *in = nn_net_get_info(nc);
            float *x, *m;
            net_inputs(in, n, s, &x, &m);
            if (in->arch == NN_ARCH_VGG16) {
                size_t nf = (size_t)n * in->out_channels * (s / 16) * (s / 16), nd = (size_t)n * in->out_channels;
                float *fc = malloc(nf * sizeof(float)), *fg = malloc(nf * sizeof(float));
                float *dc = malloc(nd * sizeof(float)), *dg = malloc(nd * sizeof(float));
                SP_ASSERT(fc && fg && dc && dg);
                CHECKF(nn_vgg_forward(nc, n, s, s, x, NN_POOL_MAX, fc, dc) == SP_OK, "%s", sp_err_msg());
                CHECKF(nn_vgg_forward(ng, n, s, s, x, NN_POOL_MAX, fg, dg) == SP_OK, "%s", sp_err_msg());
                snprintf(what, sizeof what, "%s batch %d features", in->arch_name, n);
                compare(what, fg, fc, nf, tol->net);
                snprintf(what, sizeof what, "%s batch %d descriptor max", in->arch_name, n);
                compare(what, dg, dc, nd, tol->net);
                free(fc), free(fg), free(dc), free(dg);
            } else {
                size_t no = (size_t)n * 3 * s * s;
                float *yc = malloc(no * sizeof(float)), *yg = malloc(no * sizeof(float));
                SP_ASSERT(yc && yg);
                CHECKF(nn_unet_forward(nc, n, s, s, x, m, yc) == SP_OK, "%s", sp_err_msg());
                CHECKF(nn_unet_forward(ng, n, s, s, x, m, yg) == SP_OK, "%s", sp_err_msg());
                snprintf(what, sizeof what, "%s batch %d", in->arch_name, n);
                compare(what, yg, yc, no, tol->net);
                free(yc), free(yg);
            }
            free(x), free(m);
        }
        nn_net_free(nc);
        nn_net_free(ng);
    }
}

/* ---- error paths: the backend's test hook (backend.h) ---- */

typedef struct {
    long asked, refused, fail_at, fail_next, live, convs, conv_fail_next;
    int fail_all, conv_fail_all;
    size_t live_bytes;
    long last_algo;
} hook_state;

static hook_state hs;

static int hook(void *ctx, nn_hook_event ev, size_t arg) {
    hook_state *h = ctx;
    int no = 0;
    switch (ev) {
    case NN_HOOK_ALLOC:
        h->asked++;
        if (h->fail_all || (h->fail_at && h->asked == h->fail_at)) no = 1;
        if (!no && h->fail_next > 0) h->fail_next--, no = 1;
        h->refused += no;
        return no;
    case NN_HOOK_ALLOCATED:
        h->live++;
        h->live_bytes += arg;
        return 0;
    case NN_HOOK_FREED:
        h->live--;
        h->live_bytes -= arg;
        return 0;
    case NN_HOOK_CONV:
        h->convs++;
        h->last_algo = (long)arg;
        if (h->conv_fail_all) return 1;
        if (h->conv_fail_next > 0) return h->conv_fail_next--, 1;
        return 0;
    }
    return 0;
}

/* A UNet plan failing at each of its allocations in turn gives all of it back (device_memory
 * and the hook's count return to where they were); then a smaller batch plans and runs and
 * matches the CPU: its first kernel launch comes after a real cudaMalloc failure. */
static void test_fault_plan(const tolerance *tol) {
    nn_net *nc = NULL, *ng = NULL;
    const char *p = "tests/fixtures/small/pconv_unet.safetensors";
    CHECKF(nn_net_load(cpu, p, &nc) == SP_OK, "%s", sp_err_msg());
    CHECKF(nn_net_load(gpu, p, &ng) == SP_OK, "%s", sp_err_msg());
    if (!nc || !ng) {
        nn_net_free(nc), nn_net_free(ng);
        return;
    }
    const nn_net_info *in = nn_net_get_info(ng);
    const int s = 32, L = in->levels, per_plan = 2 * (3 * L + 1); /* tensors and masks: net.c get_plan */
    float *x, *m, *y = malloc((size_t)4 * 3 * s * s * sizeof(float)), *yc = malloc((size_t)3 * 3 * s * s * sizeof(float));
    SP_ASSERT(y && yc);
    net_inputs(in, 4, s, &x, &m);
    CHECKF(nn_unet_forward(ng, 2, s, s, x, m, y) == SP_OK, "%s", sp_err_msg());
    size_t held = nn_backend_device_memory(gpu);
    long live = hs.live, kept = 0, ok = 0;
    for (int k = 1; k <= per_plan; k++) {
        hs.fail_at = hs.asked + k;
        sp_status st = nn_unet_forward(ng, 4, s, s, x, m, y);
        hs.fail_at = 0;
        ok += st == SP_OK;
        if (nn_backend_device_memory(gpu) != held || hs.live != live) kept++;
    }
    CHECKF(ok == 0, "%ld of %d failing plans reported success", ok, per_plan);
    CHECKF(kept == 0, "%ld of %d failed plans kept GPU memory (%zu bytes held, %zu before)", kept, per_plan,
           nn_backend_device_memory(gpu), held);
    printf("  a plan failing at each of its %d allocations: %ld kept memory\n", per_plan, kept);
    CHECKF(nn_unet_forward(ng, 3, s, s, x, m, y) == SP_OK, "after the failed plans: %s", sp_err_msg());
    CHECKF(nn_unet_forward(nc, 3, s, s, x, m, yc) == SP_OK, "%s", sp_err_msg());
    compare("pconv_unet batch 3 after failed batch-4 plans", y, yc, (size_t)3 * 3 * s * s, tol->net);
    nn_net_free(nc);
    nn_net_free(ng);
    free(x), free(m), free(y), free(yc);
}

/* A failed cudaMalloc (a tensor and a mask no GPU can hold) does not fail the next op. */
static void test_fault_stale_error(const tolerance *tol) {
    tpair t;
    tp_new(&t, 1, 7, 9, 11, 0);
    float *hx = rand_buf(7 * 99, -2, 2);
    tp_upload(&t, hx);
    nn_tensor huge;
    nn_mask hm;
    CHECK(nn_tensor_new(gpu, &huge, 1, 1 << 16, 1 << 12, 1 << 10) != SP_OK); /* 1 TiB */
    CHECK(huge.data == NULL);
    CHECKF(gpu->ops->act(gpu, &t.g, &t.g, NN_ACT_RELU) == SP_OK, "act after a failed allocation: %s", sp_err_msg());
    CHECKF(cpu->ops->act(cpu, &t.c, &t.c, NN_ACT_RELU) == SP_OK, "%s", sp_err_msg());
    tp_compare("act right after a failed cudaMalloc", &t, tol->ops);
    CHECK(nn_mask_new(gpu, &hm, 1 << 10, 4, 1 << 12, 1 << 12) != SP_OK); /* 256 GiB */
    CHECKF(gpu->ops->act(gpu, &t.g, &t.g, NN_ACT_LRELU) == SP_OK, "act after a failed allocation: %s", sp_err_msg());
    CHECKF(cpu->ops->act(cpu, &t.c, &t.c, NN_ACT_LRELU) == SP_OK, "%s", sp_err_msg());
    tp_compare("act right after a failed mask cudaMalloc", &t, tol->ops);
    tp_drop(&t);
    free(hx);
}

/* Runs layer l on x into y on both backends and compares; returns the CUDA status. */
static sp_status conv_both(const char *what, nn_layer *lc, nn_layer *lg, tpair *x, tpair *y, double tol) {
    CHECKF(cpu->ops->conv(cpu, lc, &x->c, &y->c, NN_ACT_NONE) == SP_OK, "%s", sp_err_msg());
    sp_status st = gpu->ops->conv(gpu, lg, &x->g, &y->g, NN_ACT_NONE);
    if (st == SP_OK) tp_compare(what, y, tol);
    return st;
}

/* A workspace that cannot grow: the layers already cached keep working, whether the old size
 * could be kept (the first two requests refused: nn_buffer_grow restores it) or nothing could
 * (every request refused: the next run grows it on demand). Each variant on a fresh backend, so
 * that its large layer surely asks for more workspace than the small one left. */
static void test_fault_workspace(const tolerance *tol, nn_backend_opts go) {
    nn_backend *outer = gpu;
    for (int v = 0; v < 2; v++) {
        sp_status st = nn_backend_new(&go, &gpu);
        CHECKF(st == SP_OK, "CUDA backend: %s", sp_err_msg());
        if (st) break;
        nn_backend_set_hook(gpu, hook, &hs);
        nn_layer ac, ag, bc, bg;
        layer_rand(&ac, 64, 64, 3, 1);
        ag = ac;
        layer_rand(&bc, 64, 128, 5, 1);
        bg = bc;
        tpair ax, ay, bx, by, tx, ty;
        tp_new(&ax, 2, 64, 32, 32, 0);
        tp_new(&ay, 2, 64, 32, 32, 0);
        float *h = rand_buf((size_t)2 * 64 * 32 * 32, -1, 1);
        tp_upload(&ax, h);
        free(h);
        CHECKF(conv_both("workspace: layer A", &ac, &ag, &ax, &ay, tol->conv) == SP_OK, "%s", sp_err_msg());
        /* B's weights go up on a tiny input first, so that only its workspace is at stake below */
        tp_new(&tx, 1, 64, 8, 8, 0);
        tp_new(&ty, 1, 128, 8, 8, 0);
        h = rand_buf((size_t)64 * 64, -1, 1);
        tp_upload(&tx, h);
        free(h);
        CHECKF(conv_both("workspace: layer B 8x8", &bc, &bg, &tx, &ty, tol->conv) == SP_OK, "%s", sp_err_msg());
        tp_drop(&tx), tp_drop(&ty);
        const int S = 96;
        tp_new(&bx, 4, 64, S, S, 0);
        tp_new(&by, 4, 128, S, S, 0);
        h = rand_buf((size_t)4 * 64 * S * S, -1, 1);
        tp_upload(&bx, h);
        free(h);
        long refused = hs.refused;
        if (v == 0)
            hs.fail_next = 2;
        else
            hs.fail_all = 1;
        st = gpu->ops->conv(gpu, &bg, &bx.g, &by.g, NN_ACT_NONE);
        hs.fail_next = 0;
        hs.fail_all = 0;
        const char *how = v ? "every workspace request" : "the first two workspace requests";
        printf("  layer B %dx%d with %s refused (%ld refused): %s\n", S, S, how, hs.refused - refused,
               st == SP_OK ? "ran" : sp_err_msg());
        CHECKF(hs.refused > refused, "layer B asked for no workspace: the case does not test what it should");
        CHECKF(conv_both("workspace: layer A after that", &ac, &ag, &ax, &ay, tol->conv) == SP_OK, "%s", sp_err_msg());
        CHECKF(conv_both("workspace: layer B after that", &bc, &bg, &bx, &by, tol->conv) == SP_OK, "%s", sp_err_msg());
        tp_drop(&bx), tp_drop(&by), tp_drop(&ax), tp_drop(&ay);
        layer_done(&ac, &ag);
        layer_done(&bc, &bg);
        nn_backend_free(gpu);
    }
    gpu = outer;
}

/* A cached algorithm that fails at run time gives way to the next one of the list, which then
 * stays; when every one fails the conv fails, and runs again once they work. */
static void test_fault_conv_fallback(const tolerance *tol) {
    nn_layer lc, lg;
    layer_rand(&lc, 19, 24, 3, 1);
    lg = lc;
    tpair x, y;
    tp_new(&x, 2, 19, 11, 9, 0);
    tp_new(&y, 2, 24, 11, 9, 0);
    float *h = rand_buf((size_t)2 * 19 * 99, -1, 1);
    tp_upload(&x, h);
    free(h);
    long c0 = hs.convs;
    CHECKF(conv_both("fallback: first run", &lc, &lg, &x, &y, tol->conv) == SP_OK, "%s", sp_err_msg());
    long first = hs.last_algo;
    CHECK(hs.convs - c0 == 1);
    c0 = hs.convs;
    hs.conv_fail_next = 1;
    CHECKF(conv_both("fallback: first algorithm failing", &lc, &lg, &x, &y, tol->conv) == SP_OK, "%s", sp_err_msg());
    long second = hs.last_algo;
    CHECKF(hs.convs - c0 == 2, "%ld attempts", hs.convs - c0);
    printf("  algorithm %ld failed (injected), algorithm %ld ran\n", first, second);
    c0 = hs.convs;
    CHECKF(conv_both("fallback: the new choice stays", &lc, &lg, &x, &y, tol->conv) == SP_OK, "%s", sp_err_msg());
    CHECKF(hs.convs - c0 == 1 && hs.last_algo == second, "%ld attempts, algorithm %ld", hs.convs - c0, hs.last_algo);
    hs.conv_fail_all = 1;
    sp_status st = gpu->ops->conv(gpu, &lg, &x.g, &y.g, NN_ACT_NONE);
    hs.conv_fail_all = 0;
    CHECKF(st == SP_ERR_BACKEND && strstr(sp_err_msg(), "algorithms failed"), "status %d: %s", (int)st, sp_err_msg());
    CHECKF(conv_both("fallback: after every algorithm failed once", &lc, &lg, &x, &y, tol->conv) == SP_OK, "%s",
           sp_err_msg());
    tp_drop(&x), tp_drop(&y);
    layer_done(&lc, &lg);
}

/* ---- settings from the environment ---- */

/* The heuristic algorithm choice on fp16 NHWC layers whose channel counts are not multiples of 8
 * (image inputs, Sim-K's 7 and 10 channels, 67 -> 3): whatever the heuristics name, the result
 * must be right (a refusing algorithm gives way to the next). */
static void test_heuristic_fp16(nn_backend_opts go) {
    const tolerance *tol = &tolerances[2];
    setenv("SEMIPAINT_CUDA_ALGO", "heuristic", 1);
    go.precision = NN_PREC_FP16;
    sp_status st = nn_backend_new(&go, &gpu);
    unsetenv("SEMIPAINT_CUDA_ALGO");
    CHECKF(st == SP_OK, "CUDA backend fp16 heuristic: %s", sp_err_msg());
    if (st) return;
    printf("== fp16, heuristic algorithms: awkward channel counts\n");
    static const conv_case convs[] = {
        {3, 16, 7, 2, 21, 19, NN_ACT_RELU, 1}, {7, 16, 5, 2, 21, 19, NN_ACT_RELU, 1},
        {10, 16, 5, 2, 21, 19, NN_ACT_RELU, 1}, {67, 3, 3, 1, 21, 19, NN_ACT_NONE, 0},
        {35, 13, 3, 1, 9, 11, NN_ACT_LRELU, 0},
    };
    static const pconv_case pc = {3, 16, 7, 2, 21, 19, 1, {3}, NN_ACT_RELU, 1};
    for (int n = 1; n <= 9; n += 8) {
        for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++) test_conv(tol, n, &convs[i]);
        test_pconv(tol, n, &pc);
    }
    test_golden(tol, "tests/fixtures/small");
    nn_backend_free(gpu);
    gpu = NULL;
}

/* SEMIPAINT_CUDA_NHWC overrides the layout both ways (fp32 in NHWC, fp16 in NCHW); each is
 * checked on the ops at batch 1 and 13 and on the small golden networks. A bad value is refused. */
static void test_layout_override(nn_backend_opts go) {
    static const struct {
        int tol;
        const char *env, *layout;
    } cases[] = {{0, "1", "NHWC"}, {2, "0", "NCHW"}};
    static const conv_case cc[] = {{3, 16, 7, 2, 13, 17, NN_ACT_RELU, 1}, {19, 24, 3, 1, 11, 9, NN_ACT_LRELU, 0}};
    static const pconv_case pc[] = {{11, 16, 3, 1, 13, 11, 2, {5, 6}, NN_ACT_LRELU, 0},
                                    {14, 6, 3, 2, 13, 15, 4, {3, 4, 4, 3}, NN_ACT_RELU, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const tolerance *tol = &tolerances[cases[i].tol];
        setenv("SEMIPAINT_CUDA_NHWC", cases[i].env, 1);
        go.precision = tol->prec;
        sp_status st = nn_backend_new(&go, &gpu);
        unsetenv("SEMIPAINT_CUDA_NHWC");
        CHECKF(st == SP_OK, "CUDA backend %s SEMIPAINT_CUDA_NHWC=%s: %s", tol->name, cases[i].env, sp_err_msg());
        if (st) continue;
        CHECKF(strstr(nn_backend_device(gpu), cases[i].layout), "SEMIPAINT_CUDA_NHWC=%s: device '%s'", cases[i].env,
               nn_backend_device(gpu));
        printf("== %s with SEMIPAINT_CUDA_NHWC=%s: %s\n", tol->name, cases[i].env, nn_backend_device(gpu));
        for (int n = 1; n <= 13; n += 12) {
            test_transfers(tol, n);
            test_masks(tol, n);
            for (size_t k = 0; k < sizeof cc / sizeof cc[0]; k++) test_conv(tol, n, &cc[k]);
            for (size_t k = 0; k < sizeof pc / sizeof pc[0]; k++) test_pconv(tol, n, &pc[k]);
            test_up2_concat(tol, n);
            test_pool_act(tol, n);
            test_desc_pool(tol, n, 600, -0.5f, 2);
        }
        test_large_values(tol, 1);
        test_golden(tol, "tests/fixtures/small");
        nn_backend_free(gpu);
        gpu = NULL;
    }
    setenv("SEMIPAINT_CUDA_NHWC", "2", 1);
    nn_backend *bad = NULL;
    sp_status st = nn_backend_new(&go, &bad);
    unsetenv("SEMIPAINT_CUDA_NHWC");
    CHECKF(st == SP_ERR_INVALID && strstr(sp_err_msg(), "SEMIPAINT_CUDA_NHWC"), "status %d: %s", (int)st, sp_err_msg());
    nn_backend_free(bad);
}

/* The error-path tests on an fp32 backend with the hook installed. */
static void test_faults(nn_backend_opts go) {
    const tolerance *tol = &tolerances[0];
    go.precision = NN_PREC_FP32;
    sp_status st = nn_backend_new(&go, &gpu);
    CHECKF(st == SP_OK, "CUDA backend: %s", sp_err_msg());
    if (st) return;
    memset(&hs, 0, sizeof hs);
    nn_backend_set_hook(gpu, hook, &hs);
    printf("== fp32: error paths (test hook)\n");
    test_fault_stale_error(tol);
    test_fault_plan(tol);
    test_fault_workspace(tol, go);
    test_fault_conv_fallback(tol);
    CHECKF(gpu->ops->sync(gpu) == SP_OK, "%s", sp_err_msg());
    nn_backend_set_hook(gpu, NULL, NULL);
    nn_backend_free(gpu);
    gpu = NULL;
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
    /* What callers ask instead of comparing names (nn_backend_has): the GPU holds device memory and
     * leaves the host's cores free while it computes; conv_algo is the CPU's. */
    CHECK(nn_backend_has(gpu, NN_CAP_DEVICE_MEMORY) && nn_backend_has(gpu, NN_CAP_ASYNC_HOST_OVERLAP));
    CHECK(!nn_backend_has(gpu, NN_CAP_CONV_ALGO) && nn_backend_has(cpu, NN_CAP_CONV_ALGO));
    nn_backend_free(gpu);
    gpu = NULL;

    /* a GPU ordinal that does not exist is refused with the reason */
    nn_backend *bad = NULL;
    go.gpu = 999;
    st = nn_backend_new(&go, &bad);
    CHECKF(st != SP_OK && strstr(sp_err_msg(), "model.gpu"), "gpu 999: status %d, '%s'", (int)st, sp_err_msg());
    nn_backend_free(bad);
    go.gpu = 0;

    /* SEMIPAINT_TEST_PRECISION: fp32, tf32 or fp16 runs just that one; "probe" runs one small
     * check of allocation, transfers and kernels (tests/gpu_check.sh asks it under
     * compute-sanitizer to learn whether the sanitizer can attach here).
     * SEMIPAINT_TEST_PART: "ops" runs the ops, the small golden networks, the batch-12 networks
     * and (with fp32) the error paths and environment settings; "paper256" only the paper256
     * golden networks; unset, both. */
    const char *only = getenv("SEMIPAINT_TEST_PRECISION"), *part = getenv("SEMIPAINT_TEST_PART");
    if (only && !strcmp(only, "probe")) {
        go.precision = NN_PREC_FP32;
        st = nn_backend_new(&go, &gpu);
        CHECKF(st == SP_OK, "CUDA backend: %s", sp_err_msg());
        if (st == SP_OK) {
            test_pool_act(&tolerances[0], 1);
            CHECKF(gpu->ops->sync(gpu) == SP_OK, "%s", sp_err_msg());
            nn_backend_free(gpu);
        }
        printf("test_cuda_ops: probe %s\n", t_failures ? "FAILED" : "ok");
        nn_backend_free(cpu);
        return t_done("test_cuda_ops");
    }
    const int do_ops = !part || !*part || !strcmp(part, "ops"), do_big = !part || !*part || !strcmp(part, "paper256");
    const char *big = getenv("SEMIPAINT_FIXTURES_PAPER256");
    if (!big) big = "build/fixtures/paper256";
    const int have_big = t_exists(big) && !getenv("SEMIPAINT_SKIP_PAPER256");
    if (do_big && !have_big) printf("test_cuda_ops: SKIP paper256 golden networks (no %s, or SEMIPAINT_SKIP_PAPER256)\n", big);
    for (size_t i = 0; i < sizeof tolerances / sizeof tolerances[0]; i++) {
        const tolerance *tol = &tolerances[i];
        if (only && *only && strcmp(only, tol->name)) continue;
        if (!do_ops && !have_big) continue;
        go.precision = tol->prec;
        st = nn_backend_new(&go, &gpu);
        CHECKF(st == SP_OK, "CUDA backend %s: %s", tol->name, sp_err_msg());
        if (st) continue;
        CHECK(!strcmp(nn_backend_name(gpu), "cuda"));
        double t0 = sp_now();
        if (do_ops) {
            printf("== %s: ops on %s against %s\n", tol->name, nn_backend_device(gpu), nn_backend_device(cpu));
            test_ops(tol);
            printf("== %s: golden networks (tests/fixtures/small)\n", tol->name);
            test_golden(tol, "tests/fixtures/small");
            printf("== %s: networks at batch 12 against the CPU\n", tol->name);
            test_nets_batch(tol, "tests/fixtures/small", 12);
        }
        if (do_big && have_big) {
            printf("== %s: golden networks (%s)\n", tol->name, big);
            test_golden(tol, big);
        }
        CHECKF(gpu->ops->sync(gpu) == SP_OK, "%s", sp_err_msg());
        printf("== %s: %.1f s\n", tol->name, sp_now() - t0);
        nn_backend_free(gpu);
        gpu = NULL;
    }
    /* Once, with the fp32 run (or all of them): error paths and the environment settings. */
    if (do_ops && (!only || !*only || !strcmp(only, "fp32"))) {
        double t0 = sp_now();
        test_faults(go);
        test_heuristic_fp16(go);
        test_layout_override(go);
        printf("== error paths and settings: %.1f s\n", sp_now() - t0);
    }
    nn_backend_free(cpu);
    return t_done("test_cuda_ops");
}

#endif
