/* test_weights.c: the safetensors loader and network builder accept a good file and refuse each kind of bad one with a message naming the file and the tensor. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn.h"
#include "st.h"
#include "t.h"

static char dir[256];
static nn_backend *be;

typedef struct {
    const char *skip;   /* tensor left out */
    const char *extra;  /* tensor added */
    const char *bad;    /* tensor given a wrong shape */
    const char *arch;   /* metadata arch */
    const char *blend;  /* JSON value of telea_blend (escaped for the outer string), NULL = absent */
} variant;

/* Writes a 2-level pconv_unet (kernels 3,3; channels 8,8) with the variant's defects. */
static void write_pconv(const char *path, const variant *v) {
    const char *names[10];
    int ndims[10];
    int64_t shp[10][4];
    const int64_t *shapes[10];
    const float *data[10];
    static float buf[8][8 * 16 * 9];
    int n = 0;
    struct {
        const char *name;
        int co, ci;
    } layers[4] = {{"enc.0", 8, 3}, {"enc.1", 8, 8}, {"dec.0", 8, 16}, {"dec.1", 3, 11}};
    static char nm[8][32];
    for (int i = 0; i < 4; i++)
        for (int b = 0; b < 2; b++) {
            snprintf(nm[n], sizeof nm[n], "%s.%s", layers[i].name, b ? "bias" : "weight");
            if (v->skip && !strcmp(v->skip, nm[n])) continue;
            names[n] = nm[n];
            ndims[n] = b ? 1 : 4;
            shp[n][0] = layers[i].co;
            shp[n][1] = layers[i].ci;
            shp[n][2] = shp[n][3] = 3;
            if (v->bad && !strcmp(v->bad, nm[n])) shp[n][0] = layers[i].co + 1;
            shapes[n] = shp[n];
            for (size_t k = 0; k < sizeof buf[n] / sizeof(float); k++) buf[n][k] = (float)((k * 7 + (size_t)n) % 13) * 0.01f;
            data[n] = buf[n];
            n++;
        }
    if (v->extra) {
        names[n] = v->extra;
        ndims[n] = 1;
        shp[n][0] = 4;
        shapes[n] = shp[n];
        data[n] = buf[0];
        n++;
    }
    char meta[768];
    snprintf(meta, sizeof meta,
             "{\"semipaint\": \"{\\\"format\\\": 1, \\\"arch\\\": \\\"%s\\\", \\\"size\\\": 16, \\\"enc_kernels\\\": [3, 3], "
             "\\\"enc_channels\\\": [8, 8], \\\"in_channels\\\": 3, \\\"out_channels\\\": 3, \\\"k\\\": -1%s%s}\"}",
             v->arch ? v->arch : "pconv_unet", v->blend ? ", \\\"telea_blend\\\": " : "", v->blend ? v->blend : "");
    CHECKF(st_write_f32(path, n, names, ndims, shapes, data, meta) == SP_OK, "%s", sp_err_msg());
}

/* Loading `path` must fail and the message must contain each of the NULL-terminated words. */
static void expect_fail(const char *what, const char *path, ...) {
    nn_net *net = NULL;
    sp_status st = nn_net_load(be, path, &net);
    CHECKF(st != SP_OK, "%s: loaded a bad file", what);
    nn_net_free(net);
    const char *msg = sp_err_msg();
    printf("  %-24s -> %s\n", what, msg);
    CHECKF(strstr(msg, path) != NULL, "%s: message does not name the file: %s", what, msg);
    va_list ap;
    va_start(ap, path);
    for (const char *w; (w = va_arg(ap, const char *));)
        CHECKF(strstr(msg, w) != NULL, "%s: message lacks '%s': %s", what, w, msg);
    va_end(ap);
}

static void write_bytes(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    SP_ASSERT(f);
    fwrite(b, 1, n, f);
    fclose(f);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/semipaint_weights_%d", (int)getpid());
    char cmd[300], good[300], p[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    SP_ASSERT(system(cmd) == 0);
    nn_backend_opts o = {.device = NN_DEVICE_CPU, .threads = 1};
    CHECK(nn_backend_new(&o, &be) == SP_OK);

    /* The good file loads and runs. */
    snprintf(good, sizeof good, "%s/good.safetensors", dir);
    write_pconv(good, &(variant){0});
    nn_net *net = NULL;
    CHECKF(nn_net_load(be, good, &net) == SP_OK, "%s", sp_err_msg());
    if (net) {
        const nn_net_info *in = nn_net_get_info(net);
        CHECK(in->arch == NN_ARCH_PCONV_UNET && in->levels == 2 && in->size == 16);
        CHECK(in->params == 8 * 3 * 9 + 8 + 8 * 8 * 9 + 8 + 8 * 16 * 9 + 8 + 3 * 11 * 9 + 3);
        CHECK(strlen(in->sha256) == 64);
        float x[3 * 16 * 16], m[16 * 16], y[3 * 16 * 16];
        for (int i = 0; i < 3 * 16 * 16; i++) x[i] = (float)(i % 17) / 17.0f;
        for (int i = 0; i < 16 * 16; i++) m[i] = (i % 16) < 8;
        CHECKF(nn_unet_forward(net, 1, 16, 16, x, m, y) == SP_OK, "%s", sp_err_msg());
        CHECK(nn_unet_forward(net, 1, 15, 16, x, m, y) != SP_OK);
        nn_net_free(net);
    }

    uint8_t *b;
    size_t n;
    SP_ASSERT(sp_read_file(good, &b, &n) == SP_OK);

    snprintf(p, sizeof p, "%s/truncated.safetensors", dir);
    write_bytes(p, b, n - 40);
    expect_fail("truncated", p, "dec.1", "past the end", NULL);

    snprintf(p, sizeof p, "%s/tiny.safetensors", dir);
    write_bytes(p, b, 5);
    expect_fail("shorter than a header", p, "truncated", NULL);

    uint8_t *c = malloc(n);
    memcpy(c, b, n);
    c[0] = 0xff, c[1] = 0xff, c[2] = 0xff, c[3] = 0x7f;
    snprintf(p, sizeof p, "%s/hlen.safetensors", dir);
    write_bytes(p, c, n);
    expect_fail("header length past end", p, "header length", NULL);

    memcpy(c, b, n);
    c[8] = '[';
    c[9] = '!';
    snprintf(p, sizeof p, "%s/notjson.safetensors", dir);
    write_bytes(p, c, n);
    expect_fail("header not JSON", p, "JSON", NULL);

    memcpy(c, b, n);
    char *h = memmem(c, n, "\"dec.0.bias\":{\"dtype\":\"F32\"", 27);
    SP_ASSERT(h);
    memcpy(h + 23, "Q32", 3);
    snprintf(p, sizeof p, "%s/dtype.safetensors", dir);
    write_bytes(p, c, n);
    expect_fail("unknown dtype", p, "dec.0.bias", "Q32", NULL);
    free(c);
    free(b);

    snprintf(p, sizeof p, "%s/shape.safetensors", dir);
    write_pconv(p, &(variant){.bad = "enc.1.weight"});
    expect_fail("wrong shape", p, "enc.1.weight", "shape", NULL);

    snprintf(p, sizeof p, "%s/missing.safetensors", dir);
    write_pconv(p, &(variant){.skip = "dec.0.bias"});
    expect_fail("missing tensor", p, "dec.0.bias", "missing", NULL);

    snprintf(p, sizeof p, "%s/extra.safetensors", dir);
    write_pconv(p, &(variant){.extra = "enc.9.weight"});
    expect_fail("extra tensor", p, "enc.9.weight", "unexpected", NULL);

    snprintf(p, sizeof p, "%s/arch.safetensors", dir);
    write_pconv(p, &(variant){.arch = "vgg16_features"});
    expect_fail("metadata of another arch", p, "vgg16_features", NULL);

    /* telea_blend: read when it is 1..NN_MAX_BLEND numbers in [0,1], refused by name otherwise. */
    snprintf(p, sizeof p, "%s/blend.safetensors", dir);
    write_pconv(p, &(variant){.blend = "[0.95, 0.5, 0]"});
    net = NULL;
    CHECKF(nn_net_load(be, p, &net) == SP_OK, "%s", sp_err_msg());
    if (net) {
        const nn_net_info *in = nn_net_get_info(net);
        CHECK(in->blend_n == 3 && in->blend[0] == 0.95f && in->blend[1] == 0.5f && in->blend[2] == 0.0f);
        nn_net_free(net);
    }
    CHECKF(nn_net_load(be, good, &net) == SP_OK && nn_net_get_info(net)->blend_n == 0, "no telea_blend: blend_n 0");
    nn_net_free(net);
    const char *bad_blends[] = {"[1.5]", "[]", "\\\"0.5\\\"", "[0.5, -0.1]", "[0.5, \\\"x\\\"]"};
    for (size_t i = 0; i < sizeof bad_blends / sizeof *bad_blends; i++) {
        snprintf(p, sizeof p, "%s/blend_bad%zu.safetensors", dir, i);
        write_pconv(p, &(variant){.blend = bad_blends[i]});
        expect_fail("bad telea_blend", p, "telea_blend", NULL);
    }

    snprintf(p, sizeof p, "%s/unknown_arch.safetensors", dir);
    write_pconv(p, &(variant){.arch = "resnet"});
    expect_fail("unknown arch", p, "resnet", NULL);

    snprintf(p, sizeof p, "%s/absent.safetensors", dir);
    expect_fail("absent file", p, "No such file", NULL);

    /* A pconv file where a simk model is expected: the pipeline refuses it by name. */
    nn_net *a = NULL, *bnet = NULL;
    nn_pipeline *pipe = NULL;
    if (nn_net_load(be, good, &a) == SP_OK && nn_net_load(be, good, &bnet) == SP_OK) {
        CHECK(nn_pipeline_new(a, bnet, NULL, &pipe) != SP_OK);
        CHECKF(strstr(sp_err_msg(), "simk_unet") != NULL, "%s", sp_err_msg());
        printf("  %-24s -> %s\n", "pconv as refine model", sp_err_msg());
    }
    nn_pipeline_free(pipe);
    nn_net_free(a);
    nn_net_free(bnet);

    nn_backend_free(be);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    SP_ASSERT(system(cmd) == 0);
    return t_done("test_weights");
}
