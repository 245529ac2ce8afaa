/* test_weights.c: the safetensors loader (file and memory) and network builder accept a good file and refuse each kind of bad one with a message naming the file and the tensor. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/nn.h"
#include "model/st.h"
#include "tests/t.h"

static char dir[256];
static nn_backend *be;

typedef struct {
    const char *skip;   /* tensor left out */
    const char *extra;  /* tensor added */
    const char *bad;    /* tensor given a wrong shape */
    const char *arch;   /* metadata arch */
    const char *blend;  /* JSON value of telea_blend (escaped for the outer string), NULL = absent */
    const char *iblend; /* JSON value of telea_blend_image, likewise */
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
             "\\\"enc_channels\\\": [8, 8], \\\"in_channels\\\": 3, \\\"out_channels\\\": 3, \\\"k\\\": -1%s%s%s%s}\"}",
             v->arch ? v->arch : "pconv_unet", v->blend ? ", \\\"telea_blend\\\": " : "", v->blend ? v->blend : "",
             v->iblend ? ", \\\"telea_blend_image\\\": " : "", v->iblend ? v->iblend : "");
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

/* Writes a crafted safetensors file: `header` padded with spaces to a multiple of 8, then `ndata`
 * data bytes (a ramp). */
static void write_st(const char *path, const char *header, size_t ndata) {
    size_t hl = strlen(header), padded = (hl + 7) & ~(size_t)7;
    uint8_t *b = malloc(8 + padded + ndata + 1);
    SP_ASSERT(b);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(b + 8, header, hl);
    memset(b + 8 + hl, ' ', padded - hl);
    for (size_t i = 0; i < ndata; i++) b[8 + padded + i] = (uint8_t)(i * 7 + 1);
    write_bytes(path, b, 8 + padded + ndata);
    free(b);
}

/* st_open of a crafted header must fail naming the file and each NULL-terminated word; the same
 * bytes through st_open_mem must fail the same way, naming the given name. */
static void expect_st_fail(const char *what, const char *header, size_t ndata, ...) {
    char path[300];
    snprintf(path, sizeof path, "%s/crafted.safetensors", dir);
    write_st(path, header, ndata);
    st_file *f = NULL;
    sp_status st = st_open(path, &f);
    CHECKF(st == SP_ERR_FORMAT && !f, "%s: a bad header was accepted (%d)", what, (int)st);
    st_close(f);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", sp_err_msg());
    printf("  %-24s -> %s\n", what, msg);
    CHECKF(strstr(msg, path) != NULL, "%s: message does not name the file: %s", what, msg);
    va_list ap;
    va_start(ap, ndata);
    for (const char *w; (w = va_arg(ap, const char *));)
        CHECKF(strstr(msg, w) != NULL, "%s: message lacks '%s': %s", what, w, msg);
    va_end(ap);
    uint8_t *b;
    size_t n;
    SP_ASSERT(sp_read_file(path, &b, &n) == SP_OK);
    f = NULL;
    CHECKF(st_open_mem(b, n, "mem:crafted", &f) == SP_ERR_FORMAT && !f && strstr(sp_err_msg(), "mem:crafted"),
           "%s: st_open_mem: %s", what, sp_err_msg());
    st_close(f);
    free(b);
}

/* A crafted header that must load; returns the number of tensors (-1 on failure). */
static int expect_st_ok(const char *what, const char *header, size_t ndata) {
    char path[300];
    snprintf(path, sizeof path, "%s/crafted_ok.safetensors", dir);
    write_st(path, header, ndata);
    st_file *f = NULL;
    sp_status st = st_open(path, &f);
    CHECKF(st == SP_OK, "%s: refused: %s", what, sp_err_msg());
    int n = f ? st_count(f) : -1;
    st_close(f);
    return n;
}

/* Each kind of inconsistent header is refused by st_open and st_open_mem with a message naming the
 * file; a header that repeats __metadata__ used to overflow the metadata arrays (issue 15). */
static void test_crafted_headers(void) {
    const char *T4 = "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}";
    char h[4096];
    snprintf(h, sizeof h, "{\"__metadata__\":{\"a\":\"1\",\"b\":\"2\",\"c\":\"3\"},\"__metadata__\":{\"d\":\"4\"},%s}", T4);
    expect_st_fail("two __metadata__", h, 4, "__metadata__", "twice", NULL);
    snprintf(h, sizeof h, "{%s,\"__metadata__\":{\"d\":\"4\"},\"__metadata__\":{\"a\":\"1\",\"b\":\"2\",\"c\":\"3\"}}", T4);
    expect_st_fail("two __metadata__ (2nd)", h, 4, "__metadata__", "twice", NULL);
    snprintf(h, sizeof h, "{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"},%s}", T4);
    expect_st_fail("repeated metadata key", h, 4, "__metadata__", "'a'", "twice", NULL);
    snprintf(h, sizeof h, "{\"__metadata__\":{\"a\":1},%s}", T4);
    expect_st_fail("metadata not a string", h, 4, "'a'", "not a string", NULL);
    snprintf(h, sizeof h, "{\"__metadata__\":[\"a\"],%s}", T4);
    expect_st_fail("metadata not an object", h, 4, "__metadata__", NULL);
    snprintf(h, sizeof h, "{%s,%s}", T4, T4);
    expect_st_fail("repeated tensor", h, 8, "'t'", "twice", NULL);
    expect_st_fail("repeated entry key",
                   "{\"t\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'t'", "dtype",
                   "twice", NULL);
    expect_st_fail("overlap",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                   12, "overlaps", NULL);
    expect_st_fail("same offsets",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                   8, "overlaps", NULL);
    expect_st_fail("gap",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                   12, "'b'", "unused", NULL);
    expect_st_fail("data after the last", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
                   "after the last tensor", NULL);
    expect_st_fail("data and no tensor", "{}", 8, "after the last tensor", NULL);
    expect_st_fail("offsets past the end", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 4,
                   "'t'", "past the end", NULL);
    expect_st_fail("offsets huge",
                   "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[9007199254740991,9007199254740992]}}", 4,
                   "'t'", "past the end", NULL);
    expect_st_fail("offsets reversed", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4,
                   "'t'", "data_offsets", NULL);
    expect_st_fail("offsets negative", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
                   "'t'", "data_offsets", NULL);
    expect_st_fail("offsets fractional", "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,0.5]}}", 4,
                   "'t'", "data_offsets", NULL);
    expect_st_fail("three offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,4]}}", 4,
                   "'t'", "data_offsets", NULL);
    expect_st_fail("bytes != numel*size", "{\"t\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,4]}}", 4,
                   "'t'", "4 data bytes for 3 F16", NULL);
    expect_st_fail("shape product overflow",
                   "{\"t\":{\"dtype\":\"F64\",\"shape\":[1048576,1048576,1048576],\"data_offsets\":[0,8]}}", 8, "'t'",
                   "too large", NULL);
    expect_st_fail("shape 2^63 / 8",
                   "{\"t\":{\"dtype\":\"F64\",\"shape\":[1152921504606846976],\"data_offsets\":[0,8]}}", 8, "'t'",
                   "shape", NULL);
    expect_st_fail("shape negative", "{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "'t'",
                   "shape entry 0", NULL);
    expect_st_fail("shape not a number", "{\"t\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4,
                   "'t'", "shape entry 0", NULL);
    expect_st_fail("nine dimensions", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
                   4, "'t'", "9 dimensions", NULL);
    expect_st_fail("dtype not a string", "{\"t\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'t'",
                   "dtype", NULL);
    expect_st_fail("entry not an object", "{\"t\":[1]}", 4, "'t'", "not an object", NULL);
    expect_st_fail("bytes after the header", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}x", 4,
                   "after its JSON object", NULL);
    expect_st_fail("two header objects", "{}{}", 0, "after its JSON object", NULL);
    expect_st_fail("header an array", "[{}]", 0, "not a JSON object", NULL);

    /* still accepted: zero-size tensors anywhere in the order, no tensors at all, padding */
    CHECK(expect_st_ok("zero-size tensors",
                       "{\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                       "\"a\":{\"dtype\":\"BOOL\",\"shape\":[2,2],\"data_offsets\":[0,4]},"
                       "\"z\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[8,8]},\"__metadata__\":{}}",
                       8) == 4);
    CHECK(expect_st_ok("empty", "{}", 0) == 0);
    CHECK(expect_st_ok("scalar", "{\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]}}", 8) == 1);
}

/* st_open_mem reads the same tensors, metadata and sha256 as st_open of the same bytes. */
static void test_open_mem(const char *good) {
    uint8_t *b;
    size_t n;
    SP_ASSERT(sp_read_file(good, &b, &n) == SP_OK);
    st_file *f = NULL, *m = NULL;
    CHECKF(st_open(good, &f) == SP_OK, "%s", sp_err_msg());
    CHECKF(st_open_mem(b, n, "mem:good", &m) == SP_OK, "%s", sp_err_msg());
    if (f && m) {
        CHECK(st_count(f) == st_count(m) && st_count(m) == 8 && !strcmp(st_sha256(f), st_sha256(m)));
        CHECK(!strcmp(st_path(m), "mem:good") && st_meta(m, "semipaint") && !strcmp(st_meta(f, "semipaint"), st_meta(m, "semipaint")));
        for (int i = 0; i < st_count(m); i++) {
            const st_tensor *a = st_at(f, i), *c = st_at(m, i);
            CHECK(!strcmp(a->name, c->name) && a->nbytes == c->nbytes && !memcmp(a->data, c->data, a->nbytes));
            CHECK(c->data >= b && c->data + c->nbytes <= b + n && st_find(m, c->name) == c);
        }
        CHECK(st_at(m, -1) == NULL && st_at(m, st_count(m)) == NULL && !strcmp(st_dtype_name((st_dtype)99), "?"));
    }
    st_close(f);
    st_close(m);
    free(b);
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

    test_open_mem(good);
    test_crafted_headers();
    /* the daemon and `semipaint weights info` load through nn_net_load: a repeated __metadata__ is
     * refused there too, before any metadata is read */
    snprintf(p, sizeof p, "%s/crafted.safetensors", dir);
    write_st(p, "{\"__metadata__\":{\"a\":\"1\",\"b\":\"2\",\"c\":\"3\"},\"__metadata__\":{\"d\":\"4\"}}", 0);
    expect_fail("two __metadata__ (load)", p, "__metadata__", "twice", NULL);

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
    /* telea_blend_image: the same rules, its own fields, refused by its own name. */
    snprintf(p, sizeof p, "%s/iblend.safetensors", dir);
    write_pconv(p, &(variant){.blend = "[0.9]", .iblend = "[1, 0.6, 0.4, 0.35]"});
    net = NULL;
    CHECKF(nn_net_load(be, p, &net) == SP_OK, "%s", sp_err_msg());
    if (net) {
        const nn_net_info *in = nn_net_get_info(net);
        CHECK(in->blend_n == 1 && in->iblend_n == 4 && in->iblend[0] == 1.0f && in->iblend[3] == 0.35f);
        nn_net_free(net);
    }
    CHECKF(nn_net_load(be, good, &net) == SP_OK && nn_net_get_info(net)->iblend_n == 0, "no telea_blend_image: 0");
    nn_net_free(net);
    for (size_t i = 0; i < sizeof bad_blends / sizeof *bad_blends; i++) {
        snprintf(p, sizeof p, "%s/iblend_bad%zu.safetensors", dir, i);
        write_pconv(p, &(variant){.iblend = bad_blends[i]});
        expect_fail("bad telea_blend_image", p, "telea_blend_image", NULL);
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
