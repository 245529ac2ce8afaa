/* test_srv_request.c: the multipart parser (any chunking gives the same parts), the form and JSON request parsers and base64. */
#include <stdlib.h>
#include <string.h>

#include "img.h"
#include "srv_multipart.h"
#include "srv_request.h"
#include "t.h"

/* Collects parts as "name|filename|bytes" records to compare parses. */
typedef struct {
    char log[65536];
    size_t n;
} collect;

static sp_status c_begin(void *ctx, const char *name, const char *filename, const char *ct) {
    collect *c = ctx;
    c->n += (size_t)snprintf(c->log + c->n, sizeof c->log - c->n, "<%s|%s|%s>", name, filename ? filename : "-",
                             ct ? ct : "-");
    return SP_OK;
}
static sp_status c_data(void *ctx, const uint8_t *d, size_t n) {
    collect *c = ctx;
    if (c->n + n < sizeof c->log) memcpy(c->log + c->n, d, n), c->n += n;
    return SP_OK;
}
static sp_status c_end(void *ctx) {
    collect *c = ctx;
    if (c->n + 1 < sizeof c->log) c->log[c->n++] = '$';
    return SP_OK;
}

/* Parses `body` fed in pieces of `step` bytes (0 = all at once); returns the status. */
static sp_status parse(const char *boundary, const uint8_t *body, size_t len, size_t step, collect *c) {
    memset(c, 0, sizeof *c);
    srv_mp_callbacks cb = {c_begin, c_data, c_end, c};
    srv_mp *p;
    sp_status st = srv_mp_new(boundary, &cb, &p);
    if (st) return st;
    if (!step) step = len ? len : 1;
    for (size_t i = 0; i < len && !st; i += step) st = srv_mp_feed(p, body + i, i + step <= len ? step : len - i);
    if (!st) st = srv_mp_finish(p);
    srv_mp_free(p);
    return st;
}

static void test_multipart(void) {
    char b[64];
    CHECK(srv_mp_boundary("multipart/form-data; boundary=abc123", b, sizeof b) == SP_OK && !strcmp(b, "abc123"));
    CHECK(srv_mp_boundary("Multipart/Form-Data;boundary=\"a b:c\"", b, sizeof b) == SP_OK && !strcmp(b, "a b:c"));
    CHECK(srv_mp_boundary("multipart/form-data; charset=utf-8; boundary=x", b, sizeof b) == SP_OK && !strcmp(b, "x"));
    CHECK(srv_mp_boundary("application/json", b, sizeof b) == SP_ERR_UNSUPPORTED);
    CHECK(srv_mp_boundary("multipart/form-data", b, sizeof b) == SP_ERR_FORMAT);
    CHECK(srv_mp_boundary("multipart/form-data; boundary=", b, sizeof b) == SP_ERR_FORMAT);
    CHECK(srv_mp_boundary("multipart/form-data; boundary=\"unterminated", b, sizeof b) == SP_ERR_FORMAT);
    CHECK(srv_mp_boundary("multipart/form-data; boundary=a\x01z", b, sizeof b) == SP_ERR_FORMAT);
    char longb[120] = "multipart/form-data; boundary=";
    memset(longb + strlen(longb), 'x', 71);
    CHECK(srv_mp_boundary(longb, b, sizeof b) == SP_ERR_FORMAT);

    /* binary content with near-boundaries inside, a preamble, padding and an epilogue */
    uint8_t body[4096];
    size_t n = 0;
#define ADD(s) (memcpy(body + n, s, sizeof s - 1), n += sizeof s - 1)
    ADD("this is a preamble\r\n--XyZ  \r\n");
    ADD("Content-Disposition: form-data; name=\"image\"; filename=\"a \\\"q\\\".png\"\r\n");
    ADD("Content-Type: image/png\r\n\r\n");
    ADD("\x89PNG\r\n\x1a\n\r\n-\r\n--\r\n--Xy\r\r\n--XyY");
    body[n++] = 0;
    body[n++] = 255;
    ADD("\r\n--XyZ\r\n");
    ADD("content-disposition: form-data; name=method\r\n\r\n");
    ADD("coarse");
    ADD("\r\n--XyZ--\r\nepilogue --XyZ garbage");
#undef ADD
    collect whole, piece;
    CHECKF(parse("XyZ", body, n, 0, &whole) == SP_OK, "%s", sp_err_msg());
    const char expect[] = "<image|a \"q\".png|image/png>\x89PNG\r\n\x1a\n\r\n-\r\n--\r\n--Xy\r\r\n--XyY\0\xff$"
                          "<method|-|->coarse$";
    CHECKF(whole.n == sizeof expect - 1 && !memcmp(whole.log, expect, whole.n), "got %zu bytes: %.*s", whole.n,
           (int)whole.n, whole.log);
    for (size_t step = 1; step <= 17; step++) {
        CHECK(parse("XyZ", body, n, step, &piece) == SP_OK);
        CHECKF(piece.n == whole.n && !memcmp(piece.log, whole.log, whole.n), "chunk size %zu differs", step);
    }
    /* a body opening directly with the boundary, an empty part */
    const char *b2 = "--q\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n\r\n--q--";
    CHECK(parse("q", (const uint8_t *)b2, strlen(b2), 0, &piece) == SP_OK && piece.n == 8 &&
          !memcmp(piece.log, "<x|-|->$", 8));

    /* malformed bodies */
    const char *bad[] = {
        "",                                                                                 /* nothing */
        "--q\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nabc",                    /* no closing boundary */
        "--q\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nabc\r\n--q",              /* stops after boundary */
        "--q\r\nContent-Disposition: attachment; name=\"x\"\r\n\r\nabc\r\n--q--",           /* not form-data */
        "--q\r\nContent-Type: text/plain\r\n\r\nabc\r\n--q--",                              /* no disposition */
        "--q\r\nContent-Disposition: form-data; filename=\"x\"\r\n\r\nabc\r\n--q--",        /* no name */
        "--q\r\nContent-Disposition: form-data; name=\"x\r\n\r\nabc\r\n--q--",              /* unterminated quote */
        "--q\r\n\r\nabc\r\n--q--",                                                          /* no headers */
        "--q\r\nContent-Disposition: form-data; name=x\r\n folded\r\n\r\nabc\r\n--q--",     /* folded header */
        "--qX\r\nContent-Disposition: form-data; name=x\r\n\r\nabc\r\n--q--",               /* garbage after boundary */
        "--q\nContent-Disposition: form-data; name=x\r\n\r\nabc\r\n--q--",                  /* LF only */
        "--q\r\nContent-Disposition: form-data; name=x\r\nContent-Transfer-Encoding: base64\r\n\r\nYQ==\r\n--q--",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sp_status st = parse("q", (const uint8_t *)bad[i], strlen(bad[i]), 0, &piece);
        CHECKF(st == SP_ERR_FORMAT, "bad body %zu accepted", i);
        CHECKF(parse("q", (const uint8_t *)bad[i], strlen(bad[i]), 1, &piece) == SP_ERR_FORMAT, "bad body %zu (1 byte)", i);
    }
    /* headers longer than the bound */
    size_t hn = 20000;
    uint8_t *hb = malloc(hn);
    memcpy(hb, "--q\r\nX-Long: ", 13);
    memset(hb + 13, 'a', hn - 13);
    CHECK(parse("q", hb, hn, 0, &piece) == SP_ERR_FORMAT && strstr(sp_err_msg(), "8 KiB"));
    free(hb);
    /* too many parts */
    size_t pn = 0;
    uint8_t *pb = malloc(100000);
    for (int i = 0; i < SRV_MP_MAX_PARTS + 1; i++)
        pn += (size_t)sprintf((char *)pb + pn, "--q\r\nContent-Disposition: form-data; name=p\r\n\r\nv\r\n");
    pn += (size_t)sprintf((char *)pb + pn, "--q--");
    CHECK(parse("q", pb, pn, 0, &piece) == SP_ERR_FORMAT && strstr(sp_err_msg(), "too many parts"));
    free(pb);
}

/* Builds a multipart body of the given fields into buf; returns its length. */
static size_t form_body(char *buf, const char *const *names, const char *const *values, int n) {
    size_t k = 0;
    for (int i = 0; i < n; i++)
        k += (size_t)sprintf(buf + k, "--BB\r\nContent-Disposition: form-data; name=\"%s\"%s\r\n\r\n%s\r\n", names[i],
                             (!strcmp(names[i], "image") || !strcmp(names[i], "mask")) ? "; filename=\"f.png\"" : "",
                             values[i]);
    k += (size_t)sprintf(buf + k, "--BB--\r\n");
    return k;
}

static int form_parse(const char *const *names, const char *const *values, int n, srv_inpaint_args *a, srv_error *e) {
    char body[4096];
    size_t len = form_body(body, names, values, n);
    srv_form *f;
    int r = srv_form_new(SRV_FORM_INPAINT, "multipart/form-data; boundary=BB", &f, e);
    if (r) return r;
    r = srv_form_feed(f, (const uint8_t *)body, len, e);
    if (!r) r = srv_form_finish_inpaint(f, a, e);
    srv_form_free(f);
    return r;
}

static void test_forms(void) {
    srv_inpaint_args a;
    srv_error e;
    const char *n1[] = {"image", "mask", "method", "format", "quality"};
    const char *v1[] = {"IMG", "MASK", "telea", "jpg", "77"};
    CHECKF(form_parse(n1, v1, 5, &a, &e) == 0, "%s", e.message);
    CHECK(a.image.len == 3 && !memcmp(a.image.data, "IMG", 3) && !strcmp(a.image.name, "f.png"));
    CHECK(a.mask.len == 4 && a.method == SRV_METHOD_TELEA && a.format == IMG_FMT_JPEG && a.quality == 77);
    srv_inpaint_args_free(&a);

    struct {
        const char *names[3], *values[3];
        int n, status;
        const char *code;
    } cases[] = {
        {{"image", "mask", "colour"}, {"I", "M", "red"}, 3, 422, "unknown_field"},
        {{"image", "image", "mask"}, {"I", "I", "M"}, 3, 422, "repeated_field"},
        {{"image", "mask", "method"}, {"I", "M", "magic"}, 3, 422, "invalid_field"},
        {{"image", "mask", "format"}, {"I", "M", "gif"}, 3, 422, "invalid_field"},
        {{"image", "mask", "quality"}, {"I", "M", "0"}, 3, 422, "invalid_field"},
        {{"image", "mask", "quality"}, {"I", "M", "5x"}, 3, 422, "invalid_field"},
        {{"image"}, {"I"}, 1, 422, "missing_field"},
        {{"image", "mask"}, {"", "M"}, 2, 400, "empty_image"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int r = form_parse(cases[i].names, cases[i].values, cases[i].n, &a, &e);
        CHECKF(r == cases[i].status && !strcmp(e.code, cases[i].code), "case %zu: %d %s (%s)", i, r, r ? e.code : "",
               r ? e.message : "");
        if (!r) srv_inpaint_args_free(&a);
    }
    srv_form *f;
    CHECK(srv_form_new(SRV_FORM_INPAINT, "text/plain", &f, &e) == 415);
    CHECK(srv_form_new(SRV_FORM_INPAINT, "multipart/form-data", &f, &e) == 400);
    /* a malformed body and a truncated one */
    CHECK(srv_form_new(SRV_FORM_INPAINT, "multipart/form-data; boundary=BB", &f, &e) == 0);
    CHECK(srv_form_feed(f, (const uint8_t *)"--BB\r\ngarbage\r\n\r\n", 17, &e) == 400 && !strcmp(e.code, "malformed_multipart"));
    srv_form_free(f);
    CHECK(srv_form_new(SRV_FORM_INPAINT, "multipart/form-data; boundary=BB", &f, &e) == 0);
    const char *trunc = "--BB\r\nContent-Disposition: form-data; name=image\r\n\r\nabc";
    CHECK(srv_form_feed(f, (const uint8_t *)trunc, strlen(trunc), &e) == 0);
    CHECK(srv_form_finish_inpaint(f, &a, &e) == 400);
    srv_form_free(f);

    /* the index form: repeated images with their file names */
    srv_index_args x;
    CHECK(srv_form_new(SRV_FORM_INDEX, "multipart/form-data; boundary=BB", &f, &e) == 0);
    const char *ib = "--BB\r\nContent-Disposition: form-data; name=image; filename=a.jpg\r\n\r\nAAA\r\n"
                     "--BB\r\nContent-Disposition: form-data; name=image; filename=b.jpg\r\n\r\nBB\r\n--BB--";
    CHECK(srv_form_feed(f, (const uint8_t *)ib, strlen(ib), &e) == 0);
    CHECK(srv_form_finish_index(f, &x, &e) == 0 && x.n == 2 && x.images[1].len == 2 && !strcmp(x.images[0].name, "a.jpg"));
    srv_index_args_free(&x);
    srv_form_free(f);
}

static void test_json(void) {
    srv_inpaint_args a;
    srv_error e;
    const char *ok = "{\"image\":\"SU1H\",\"mask\":\"data:image/png;base64,TUFTSw==\",\"method\":\"coarse\","
                     "\"format\":\"png\",\"quality\":50}";
    CHECKF(srv_parse_inpaint_json((const uint8_t *)ok, strlen(ok), &a, &e) == 0, "%s", e.message);
    CHECK(a.image.len == 3 && !memcmp(a.image.data, "IMG", 3) && a.mask.len == 4 && !memcmp(a.mask.data, "MASK", 4));
    CHECK(a.method == SRV_METHOD_COARSE && a.format == IMG_FMT_PNG && a.quality == 50);
    srv_inpaint_args_free(&a);
    struct {
        const char *body;
        int status;
        const char *code;
    } cases[] = {
        {"", 400, "empty_body"},
        {"{\"image\":", 400, "malformed_json"},
        {"[1,2]", 400, "malformed_json"},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"extra\":1}", 422, "unknown_field"},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"image\":\"SU1H\"}", 422, "repeated_field"},
        {"{\"image\":\"SU1H!\",\"mask\":\"TUFTSw==\"}", 400, "invalid_base64"},
        {"{\"image\":\"data:image/png,SU1H\",\"mask\":\"TUFTSw==\"}", 400, "invalid_base64"},
        {"{\"image\":5,\"mask\":\"TUFTSw==\"}", 422, "invalid_field"},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"quality\":7.5}", 422, "invalid_field"},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"quality\":\"7\"}", 422, "invalid_field"},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"method\":5}", 422, "invalid_field"},
        {"{\"image\":\"SU1H\"}", 422, "missing_field"},
        {"{\"image\":\"\",\"mask\":\"TUFTSw==\"}", 400, "empty_image"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int r = srv_parse_inpaint_json((const uint8_t *)cases[i].body, strlen(cases[i].body), &a, &e);
        CHECKF(r == cases[i].status && !strcmp(e.code, cases[i].code), "json case %zu: %d %s", i, r, r ? e.code : "");
        if (!r) srv_inpaint_args_free(&a);
    }
    srv_index_args x;
    const char *ix = "{\"images\":[\"QUFB\",\"QkI=\"],\"names\":[\"a.jpg\",\"b.jpg\"]}";
    CHECK(srv_parse_index_json((const uint8_t *)ix, strlen(ix), &x, &e) == 0 && x.n == 2 && x.images[1].len == 2 &&
          !strcmp(x.images[1].name, "b.jpg"));
    srv_index_args_free(&x);
    const char *ix2 = "{\"images\":[\"QUFB\"],\"names\":[]}";
    CHECK(srv_parse_index_json((const uint8_t *)ix2, strlen(ix2), &x, &e) == 422);
}

static void test_base64(void) {
    uint8_t raw[300];
    for (int i = 0; i < 300; i++) raw[i] = (uint8_t)(i * 37 + 11);
    for (size_t n = 0; n <= 300; n += 1) {
        size_t el, dl;
        char *s = srv_b64_encode(raw, n, &el);
        uint8_t *d;
        CHECK(el == (n + 2) / 3 * 4 && strlen(s) == el);
        CHECK(srv_b64_decode(s, el, &d, &dl) == SP_OK && dl == n && !memcmp(d, raw, n));
        free(d);
        free(s);
    }
    uint8_t *d;
    size_t dl;
    CHECK(srv_b64_decode("TWFu\r\nTWE", 9, &d, &dl) == SP_OK && dl == 5 && !memcmp(d, "ManMa", 5));
    free(d);
    CHECK(srv_b64_decode("-_8=", 4, &d, &dl) == SP_OK && dl == 2 && d[0] == 0xfb && d[1] == 0xff);
    free(d);
    CHECK(srv_b64_decode("TWFuT", 5, &d, &dl) == SP_ERR_FORMAT);
    CHECK(srv_b64_decode("TW=u", 4, &d, &dl) == SP_ERR_FORMAT);
    CHECK(srv_b64_decode("TQ===", 5, &d, &dl) == SP_ERR_FORMAT);
    CHECK(srv_b64_decode("T*==", 4, &d, &dl) == SP_ERR_FORMAT);
    CHECK(srv_b64_decode("data:,abc", 9, &d, &dl) == SP_ERR_FORMAT);
}

int main(void) {
    test_multipart();
    test_forms();
    test_json();
    test_base64();
    return t_done("test_srv_request");
}
