/* test_ops.c: every engine op on the CPU backend against PyTorch outputs in tests/fixtures/small/ops.safetensors. */
#include <stdlib.h>
#include <string.h>

#include "model/backend.h"
#include "tests/golden.h"

static nn_backend *be;

static void layer_from(const st_file *f, const char *pre, int stride, int pad, nn_layer *l) {
    char n[64];
    int64_t ws[4];
    memset(l, 0, sizeof *l);
    snprintf(n, sizeof n, "%s.w", pre);
    l->w = golden_read(f, n, ws, NULL);
    snprintf(n, sizeof n, "%s.b", pre);
    l->b = golden_read(f, n, NULL, NULL);
    l->cout = (int)ws[0];
    l->cin = (int)ws[1];
    l->k = (int)ws[2];
    l->stride = stride;
    l->pad = pad;
}

static void layer_done(nn_layer *l) {
    be->ops->layer_release(be, l);
    free(l->w);
    free(l->b);
}

/* Uploads a host NCHW tensor into a new backend tensor. */
static void put(nn_tensor *t, const float *host, const int64_t *s) {
    CHECK(nn_tensor_new(be, t, (int)s[0], (int)s[1], (int)s[2], (int)s[3]) == SP_OK);
    CHECK(be->ops->upload(be, t, 0, (int)s[1], host, NULL, NULL) == SP_OK);
}

static float *get(const nn_tensor *t) {
    float *h = malloc((size_t)t->n * t->c * t->h * t->w * sizeof(float));
    CHECK(be->ops->download(be, t, h) == SP_OK);
    return h;
}

static void test_conv(const st_file *f, const char *pre, int stride, int pad) {
    char nm[64];
    int64_t xs[4], ys[4];
    snprintf(nm, sizeof nm, "%s.x", pre);
    float *x = golden_read(f, nm, xs, NULL);
    snprintf(nm, sizeof nm, "%s.y", pre);
    float *yr = golden_read(f, nm, ys, NULL);
    nn_layer l;
    layer_from(f, pre, stride, pad, &l);
    nn_tensor tx, ty;
    put(&tx, x, xs);
    CHECK(nn_tensor_new(be, &ty, (int)ys[0], (int)ys[1], (int)ys[2], (int)ys[3]) == SP_OK);
    CHECKF(be->ops->conv(be, &l, &tx, &ty, NN_ACT_NONE) == SP_OK, "%s", sp_err_msg());
    float *y = get(&ty);
    golden_close(pre, y, yr, (size_t)(ys[0] * ys[1] * ys[2] * ys[3]));
    free(x);
    free(yr);
    free(y);
    nn_tensor_drop(be, &tx);
    nn_tensor_drop(be, &ty);
    layer_done(&l);
}

/* Groups consecutive identical channel planes of a host mask (n,C,h,w) into nn_mask groups. */
static void put_mask(nn_mask *m, const float *host, const int64_t *s) {
    int n = (int)s[0], C = (int)s[1];
    size_t hw = (size_t)(s[2] * s[3]);
    int cnt[NN_MAX_GROUPS], first[NN_MAX_GROUPS], g = 0;
    for (int c = 0; c < C; c++) {
        int same = g > 0;
        for (int i = 0; same && i < n; i++)
            same = !memcmp(host + ((size_t)i * C + c) * hw, host + ((size_t)i * C + first[g - 1]) * hw, hw * sizeof(float));
        if (same) {
            cnt[g - 1]++;
        } else {
            SP_ASSERT(g < NN_MAX_GROUPS);
            first[g] = c;
            cnt[g++] = 1;
        }
    }
    CHECK(nn_mask_new(be, m, n, g, (int)s[2], (int)s[3]) == SP_OK);
    float *planes = malloc((size_t)n * g * hw * sizeof(float));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < g; j++)
            memcpy(planes + ((size_t)i * g + j) * hw, host + ((size_t)i * C + first[j]) * hw, hw * sizeof(float));
    CHECK(be->ops->mask_upload(be, m, planes, cnt) == SP_OK);
    free(planes);
}

static void test_pconv(const st_file *f, const char *pre, int stride, int pad) {
    char nm[64];
    int64_t xs[4], ys[4];
    snprintf(nm, sizeof nm, "%s.x", pre);
    float *x = golden_read(f, nm, xs, NULL);
    snprintf(nm, sizeof nm, "%s.m", pre);
    float *m = golden_read(f, nm, NULL, NULL);
    snprintf(nm, sizeof nm, "%s.y", pre);
    float *yr = golden_read(f, nm, ys, NULL);
    snprintf(nm, sizeof nm, "%s.m_out", pre);
    float *mr = golden_read(f, nm, NULL, NULL);
    nn_layer l;
    layer_from(f, pre, stride, pad, &l);
    nn_tensor tx, ty;
    nn_mask mx, my;
    put(&tx, x, xs);
    put_mask(&mx, m, xs);
    CHECK(mx.g == 2);
    CHECK(be->ops->mask_apply(be, &tx, &mx) == SP_OK);
    CHECK(nn_tensor_new(be, &ty, (int)ys[0], (int)ys[1], (int)ys[2], (int)ys[3]) == SP_OK);
    CHECK(nn_mask_new(be, &my, (int)ys[0], 1, (int)ys[2], (int)ys[3]) == SP_OK);
    CHECKF(be->ops->pconv(be, &l, &tx, &mx, &ty, &my, NN_ACT_NONE) == SP_OK, "%s", sp_err_msg());
    float *y = get(&ty);
    size_t ny = (size_t)(ys[0] * ys[1] * ys[2] * ys[3]);
    float *mo = malloc(ny * sizeof(float));
    CHECK(be->ops->mask_download(be, &my, mo) == SP_OK);
    char what[64];
    golden_close(pre, y, yr, ny);
    snprintf(what, sizeof what, "%s mask", pre);
    golden_close(what, mo, mr, ny);
    int holes = 0, full = 0;
    for (size_t i = 0; i < ny; i++) holes += mr[i] == 0, full += mr[i] == 1;
    CHECKF(holes > 0 && full > 0, "%s: the fixture needs windows with and without valid pixels", pre);
    free(x), free(m), free(yr), free(mr), free(y), free(mo);
    nn_tensor_drop(be, &tx);
    nn_tensor_drop(be, &ty);
    nn_mask_drop(be, &mx);
    nn_mask_drop(be, &my);
    layer_done(&l);
}

static void test_simple(const st_file *f) {
    int64_t xs[4], ys[4], bs[4];
    /* nearest x2 upsampling */
    float *x = golden_read(f, "up.x", xs, NULL), *yr = golden_read(f, "up.y", ys, NULL);
    nn_tensor tx, ty, tb;
    put(&tx, x, xs);
    CHECK(nn_tensor_new(be, &ty, (int)ys[0], (int)ys[1], (int)ys[2], (int)ys[3]) == SP_OK);
    CHECK(be->ops->up2_concat(be, &tx, NULL, &ty, NULL, NULL, NULL) == SP_OK);
    float *y = get(&ty);
    golden_close("upsample x2", y, yr, (size_t)(ys[0] * ys[1] * ys[2] * ys[3]));
    free(x), free(yr), free(y);
    nn_tensor_drop(be, &tx);
    nn_tensor_drop(be, &ty);

    /* max-pool */
    x = golden_read(f, "pool.x", xs, NULL);
    yr = golden_read(f, "pool.y", ys, NULL);
    put(&tx, x, xs);
    CHECK(nn_tensor_new(be, &ty, (int)ys[0], (int)ys[1], (int)ys[2], (int)ys[3]) == SP_OK);
    CHECK(be->ops->maxpool2(be, &tx, &ty) == SP_OK);
    y = get(&ty);
    golden_close("maxpool 2x2", y, yr, (size_t)(ys[0] * ys[1] * ys[2] * ys[3]));
    free(x), free(yr), free(y);
    nn_tensor_drop(be, &tx);
    nn_tensor_drop(be, &ty);

    /* activations */
    x = golden_read(f, "act.x", xs, NULL);
    const char *names[2] = {"relu.y", "lrelu.y"};
    nn_act acts[2] = {NN_ACT_RELU, NN_ACT_LRELU};
    for (int i = 0; i < 2; i++) {
        yr = golden_read(f, names[i], NULL, NULL);
        put(&tx, x, xs);
        CHECK(nn_tensor_new(be, &ty, (int)xs[0], (int)xs[1], (int)xs[2], (int)xs[3]) == SP_OK);
        CHECK(be->ops->act(be, &tx, &ty, acts[i]) == SP_OK);
        y = get(&ty);
        golden_close(names[i], y, yr, (size_t)(xs[0] * xs[1] * xs[2] * xs[3]));
        free(yr), free(y);
        nn_tensor_drop(be, &tx);
        nn_tensor_drop(be, &ty);
    }
    free(x);

    /* concat (3 + 5 channels: the unaligned path) */
    x = golden_read(f, "cat.a", xs, NULL);
    float *b = golden_read(f, "cat.b", bs, NULL);
    yr = golden_read(f, "cat.y", ys, NULL);
    put(&tx, x, xs);
    put(&tb, b, bs);
    CHECK(nn_tensor_new(be, &ty, (int)ys[0], (int)ys[1], (int)ys[2], (int)ys[3]) == SP_OK);
    CHECK(be->ops->up2_concat(be, &tx, &tb, &ty, NULL, NULL, NULL) == SP_OK);
    y = get(&ty);
    golden_close("concat", y, yr, (size_t)(ys[0] * ys[1] * ys[2] * ys[3]));
    free(x), free(b), free(yr), free(y);
    nn_tensor_drop(be, &tx);
    nn_tensor_drop(be, &tb);
    nn_tensor_drop(be, &ty);

    /* descriptor pooling */
    x = golden_read(f, "desc.x", xs, NULL);
    put(&tx, x, xs);
    const char *dn[2] = {"desc.avg", "desc.max"};
    for (int p = 0; p < 2; p++) {
        yr = golden_read(f, dn[p], NULL, NULL);
        float *d = malloc((size_t)(xs[0] * xs[1]) * sizeof(float));
        CHECK(be->ops->desc_pool(be, &tx, p == 0 ? NN_POOL_AVG : NN_POOL_MAX, d) == SP_OK);
        golden_close(dn[p], d, yr, (size_t)(xs[0] * xs[1]));
        free(d), free(yr);
    }
    free(x);
    nn_tensor_drop(be, &tx);
}

/* The backend's names, the environment's overrides and the capabilities (model/backend.c). */
static void test_backend_api(void) {
    nn_device d = NN_DEVICE_CPU;
    nn_precision p = NN_PREC_FP32;
    nn_conv_algo a = NN_CONV_AUTO;
    CHECK(nn_device_parse("auto", &d) == 0 && d == NN_DEVICE_AUTO);
    CHECK(nn_device_parse("cuda", &d) == 0 && d == NN_DEVICE_CUDA);
    CHECK(nn_device_parse("cpu", &d) == 0 && d == NN_DEVICE_CPU);
    CHECK(nn_device_parse("gpu", &d) == -1 && nn_device_parse("CPU", &d) == -1 && d == NN_DEVICE_CPU);
    CHECK(!strcmp(nn_device_names[NN_DEVICE_CUDA], "cuda") && nn_device_names[3] == NULL);
    CHECK(nn_precision_parse("fp16", &p) == 0 && p == NN_PREC_FP16 && nn_precision_parse("fp64", &p) == -1);
    CHECK(!strcmp(nn_precision_names[NN_PREC_TF32], "tf32") && nn_precision_names[3] == NULL);
    CHECK(nn_conv_algo_parse("winograd4", &a) == 0 && a == NN_CONV_WINOGRAD4 && nn_conv_algo_parse("", &a) == -1);

    /* SEMIPAINT_CONV applies where the options are built, and only over AUTO. */
    char *env_w[] = {"PATH=/bin", "SEMIPAINT_CONVX=direct", "SEMIPAINT_CONV=winograd", NULL};
    char *env_bad[] = {"SEMIPAINT_CONV=fast", NULL};
    char *env_empty[] = {"SEMIPAINT_CONV=", NULL};
    nn_backend_opts o = {.device = NN_DEVICE_CPU};
    CHECK(nn_backend_opts_from_env(&o, env_w) == SP_OK && o.conv_algo == NN_CONV_WINOGRAD);
    o.conv_algo = NN_CONV_DIRECT;
    CHECK(nn_backend_opts_from_env(&o, env_w) == SP_OK && o.conv_algo == NN_CONV_DIRECT);
    CHECK(nn_backend_opts_from_env(&o, env_bad) == SP_OK && o.conv_algo == NN_CONV_DIRECT);
    o.conv_algo = NN_CONV_AUTO;
    CHECK(nn_backend_opts_from_env(&o, env_empty) == SP_OK && o.conv_algo == NN_CONV_AUTO);
    CHECK(nn_backend_opts_from_env(&o, NULL) == SP_OK && o.conv_algo == NN_CONV_AUTO);
    sp_status st = nn_backend_opts_from_env(&o, env_bad);
    CHECKF(st == SP_ERR_INVALID && strstr(sp_err_msg(), "SEMIPAINT_CONV=fast"), "%d %s", (int)st, sp_err_msg());
    CHECK(o.conv_algo == NN_CONV_AUTO);

    /* The CPU backend reads no environment (a bad SEMIPAINT_CONV is not its business) and says what
     * it can do. */
    setenv("SEMIPAINT_CONV", "fast", 1);
    nn_backend *cpu = NULL;
    st = nn_backend_new(&o, &cpu);
    unsetenv("SEMIPAINT_CONV");
    CHECKF(st == SP_OK, "%s", sp_err_msg());
    if (cpu) {
        CHECK(nn_backend_has(cpu, NN_CAP_CONV_ALGO));
        CHECK(!nn_backend_has(cpu, NN_CAP_DEVICE_MEMORY) && !nn_backend_has(cpu, NN_CAP_ASYNC_HOST_OVERLAP));
        CHECK(nn_backend_device_memory(cpu) == 0);
        nn_backend_free(cpu);
    }
}

int main(void) {
    test_backend_api();
    const char *path = "tests/fixtures/small/ops.safetensors";
    st_file *f = NULL;
    sp_status st = st_open(path, &f);
    CHECKF(st == SP_OK, "%s", sp_err_msg());
    if (st) return t_done("test_ops");
    /* Every op with oneDNN's direct convolutions, then with each Winograd variant forced on the 3x3
     * stride-1 layers (conv3: odd sizes, channel counts that are not multiples of 8, batch 2). */
    static const nn_conv_algo algos[] = {NN_CONV_DIRECT, NN_CONV_WINOGRAD, NN_CONV_WINOGRAD4};
    static const char *names[] = {"direct", "Winograd F(2x2,3x3)", "Winograd F(4x4,3x3)"};
    for (int a = 0; a < 3; a++) {
        nn_backend_opts o = {.device = NN_DEVICE_CPU, .threads = 2, .conv_algo = algos[a]};
        CHECK(nn_backend_new(&o, &be) == SP_OK);
        printf("ops on %s (%s), convolutions %s\n", nn_backend_name(be), nn_backend_device(be), names[a]);
        test_conv(f, "conv", 2, 1);
        test_conv(f, "conv7", 2, 3);
        test_conv(f, "conv3", 1, 1);
        test_pconv(f, "pconv", 2, 2);
        test_pconv(f, "pconv3", 1, 1);
        test_simple(f);
        nn_backend_free(be);
    }
    st_close(f);
    return t_done("test_ops");
}
