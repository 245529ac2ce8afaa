/* test_srv_request.c: the multipart parser (any chunking gives the same parts), the form (inpaint, index, images/edits) and JSON request parsers (and the JSON shape limits) and base64. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "imaging/img.h"
#include "server/srv_multipart.h"
#include "server/srv_request.h"
#include "tests/t.h"

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

/* Caller-supplied references (issue 18) in both forms. */
static void test_references(void) {
    srv_inpaint_args a;
    srv_error e;
    const char *n1[] = {"image", "mask", "reference", "reference"};
    const char *v1[] = {"IMG", "MASK", "R0", "R11"};
    CHECKF(form_parse(n1, v1, 4, &a, &e) == 0, "%s", e.message);
    CHECK(a.nrefs == 2 && a.refs[0].len == 2 && !memcmp(a.refs[1].data, "R11", 3) && a.nref_ids == 0);
    srv_inpaint_args_free(&a);
    const char *n2[] = {"image", "mask", "reference_id", "reference_id"};
    const char *v2[] = {"IMG", "MASK", "7", "0"};
    CHECKF(form_parse(n2, v2, 4, &a, &e) == 0, "%s", e.message);
    CHECK(a.nref_ids == 2 && a.ref_ids[0] == 7 && a.ref_ids[1] == 0 && a.nrefs == 0);
    srv_inpaint_args_free(&a);
    struct {
        const char *names[11], *values[11];
        int n, status;
        const char *code;
    } cases[] = {
        {{"image", "mask", "reference", "reference_id"}, {"I", "M", "R", "1"}, 4, 422, "conflicting_fields"},
        {{"image", "mask", "reference_id", "method"}, {"I", "M", "1", "telea"}, 4, 422, "conflicting_fields"},
        {{"image", "mask", "reference_id"}, {"I", "M", "-1"}, 3, 422, "invalid_field"},
        {{"image", "mask", "reference_id"}, {"I", "M", "1x"}, 3, 422, "invalid_field"},
        {{"image", "mask", "reference_id"}, {"I", "M", ""}, 3, 422, "invalid_field"},
        {{"image", "mask", "reference"}, {"I", "M", ""}, 3, 400, "empty_reference"},
        {{"image", "mask", "reference", "reference", "reference", "reference", "reference", "reference", "reference",
          "reference", "reference"},
         {"I", "M", "1", "2", "3", "4", "5", "6", "7", "8", "9"}, 11, 422, "too_many_references"},
        {{"image", "mask", "reference_id", "reference_id", "reference_id", "reference_id", "reference_id",
          "reference_id", "reference_id", "reference_id", "reference_id"},
         {"I", "M", "1", "2", "3", "4", "5", "6", "7", "8", "9"}, 11, 422, "too_many_references"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int r = form_parse(cases[i].names, cases[i].values, cases[i].n, &a, &e);
        CHECKF(r == cases[i].status && !strcmp(e.code, cases[i].code), "ref case %zu: %d %s (%s)", i, r,
               r ? e.code : "", r ? e.message : "");
        if (!r) srv_inpaint_args_free(&a);
    }
    const char *ok = "{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"reference\":[\"UjA=\",\"UjEx\"]}";
    CHECKF(srv_parse_inpaint_json((const uint8_t *)ok, strlen(ok), &a, &e) == 0, "%s", e.message);
    CHECK(a.nrefs == 2 && a.refs[0].len == 2 && !memcmp(a.refs[1].data, "R11", 3));
    srv_inpaint_args_free(&a);
    const char *ok2 = "{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"reference_id\":[3, 0,12]}";
    CHECKF(srv_parse_inpaint_json((const uint8_t *)ok2, strlen(ok2), &a, &e) == 0, "%s", e.message);
    CHECK(a.nref_ids == 3 && a.ref_ids[0] == 3 && a.ref_ids[1] == 0 && a.ref_ids[2] == 12);
    srv_inpaint_args_free(&a);
    struct {
        const char *body;
        int status;
        const char *code;
    } jc[] = {
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"reference\":\"UjA=\"}", 422, "invalid_field"},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"reference\":[5]}", 422, "invalid_field"},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"reference\":[\"\"]}", 400, "empty_reference"},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"reference\":[\"U!\"]}", 400, "invalid_base64"},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"reference_id\":[\"1\"]}", 422, "invalid_field"},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"reference_id\":[1.5]}", 422, "invalid_field"},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"reference_id\":[-1]}", 422, "invalid_field"},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"reference_id\":[1e300]}", 422, "invalid_field"},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"reference_id\":[1,]}", 400, "malformed_json"},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"reference_id\":[1,2,3,4,5,6,7,8,9]}", 422,
         "too_many_references"},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"reference_id\":[1],\"reference\":[\"UjA=\"]}", 422,
         "conflicting_fields"},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"reference_id\":[1],\"method\":\"coarse\"}", 422,
         "conflicting_fields"},
    };
    for (size_t i = 0; i < sizeof jc / sizeof jc[0]; i++) {
        int r = srv_parse_inpaint_json((const uint8_t *)jc[i].body, strlen(jc[i].body), &a, &e);
        CHECKF(r == jc[i].status && !strcmp(e.code, jc[i].code), "json ref case %zu: %d %s (%s)", i, r,
               r ? e.code : "", r ? e.message : "");
        if (!r) srv_inpaint_args_free(&a);
    }
}

/* A growing body for the shape tests. */
typedef struct {
    char *b;
    size_t n, cap;
} sbuf;

static void sb_put(sbuf *s, const char *t, size_t k) {
    if (s->n + k + 1 > s->cap) {
        s->cap = (s->n + k + 1) * 2;
        s->b = realloc(s->b, s->cap);
        SP_ASSERT(s->b);
    }
    memcpy(s->b + s->n, t, k);
    s->n += k;
    s->b[s->n] = 0;
}
static void sb_str(sbuf *s, const char *t) { sb_put(s, t, strlen(t)); }
static void sb_rep(sbuf *s, const char *t, size_t times) {
    for (size_t i = 0; i < times; i++) sb_str(s, t);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Bytes allocated through cJSON while the hooks below are installed: a JSON tree being built. */
static size_t cjson_bytes;
static void *counting_malloc(size_t n) {
    cjson_bytes += n;
    return malloc(n);
}

/* Parses `body` as both JSON kinds and checks each answer (status 0 = accepted); prints the time
 * taken when `label` is given (a benchmark line, not a check), and then checks that no JSON tree
 * of the body's size was built (at most 2 bytes of tree per body byte, over both parses). */
static void expect_json(const char *label, const char *body, size_t len, int st_inpaint, const char *code_inpaint,
                        int st_index, const char *code_index) {
    srv_error e;
    srv_inpaint_args a;
    srv_index_args x;
    cjson_bytes = 0;
    double t0 = now_s();
    int r = srv_parse_inpaint_json((const uint8_t *)body, len, &a, &e);
    double t1 = now_s();
    CHECKF(r == st_inpaint && (!r || !strcmp(e.code, code_inpaint)), "%s (inpaint): %d %s: %s", label ? label : body, r,
           r ? e.code : "", r ? e.message : "");
    if (!r) srv_inpaint_args_free(&a);
    double t2 = now_s();
    r = srv_parse_index_json((const uint8_t *)body, len, &x, &e);
    double t3 = now_s();
    CHECKF(r == st_index && (!r || !strcmp(e.code, code_index)), "%s (index): %d %s: %s", label ? label : body, r,
           r ? e.code : "", r ? e.message : "");
    if (!r) srv_index_args_free(&x);
    if (label) {
        printf("  %-40s %9zu bytes: inpaint %d in %7.3f ms, index %d in %7.3f ms, %zu bytes of tree\n", label, len,
               st_inpaint, (t1 - t0) * 1e3, st_index, (t3 - t2) * 1e3, cjson_bytes);
        CHECKF(cjson_bytes <= 2 * len, "%s: a JSON tree of %zu bytes for a %zu-byte body", label, cjson_bytes, len);
    }
}

/* Issue 15: a JSON body is refused by its shape in one linear pass, before anything is built. The
 * 120,000-key body held a thread for 27.8 s (a quadratic duplicate-key scan). */
static void test_json_shape(void) {
    cJSON_Hooks hooks = {counting_malloc, free};
    cJSON_InitHooks(&hooks);
    sbuf s = {0};
    char t[64];
    /* 120,000 keys */
    sb_str(&s, "{");
    for (int i = 0; i < 120000; i++) {
        int k = snprintf(t, sizeof t, "%s\"k%d\":0", i ? "," : "", i);
        sb_put(&s, t, (size_t)k);
    }
    sb_str(&s, "}");
    expect_json("120,000 unknown keys", s.b, s.n, 422, "unknown_field", 422, "unknown_field");
    /* 120,000 keys, the known ones first */
    s.n = 0;
    sb_str(&s, "{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"method\":\"sim\",\"format\":\"png\",\"quality\":5");
    for (int i = 5; i < 120000; i++) {
        int k = snprintf(t, sizeof t, ",\"k%d\":0", i);
        sb_put(&s, t, (size_t)k);
    }
    sb_str(&s, "}");
    expect_json("120,000 keys, 5 known first", s.b, s.n, 422, "unknown_field", 422, "unknown_field");
    /* 120,000 repeats of a known key */
    s.n = 0;
    sb_str(&s, "{\"mask\":\"TUFTSw==\"");
    sb_rep(&s, ",\"image\":\"SU1H\"", 120000);
    sb_str(&s, "}");
    expect_json("120,000 repeated keys", s.b, s.n, 422, "repeated_field", 422, "unknown_field");
    s.n = 0;
    sb_str(&s, "{\"images\":[\"QUFB\"]");
    sb_rep(&s, ",\"names\":[\"a\"]", 120000);
    sb_str(&s, "}");
    expect_json("120,000 repeated names", s.b, s.n, 422, "unknown_field", 422, "repeated_field");

    /* deep nesting, at the root and in each kind of member */
    s.n = 0;
    sb_rep(&s, "[", 200000);
    expect_json("200,000 x [", s.b, s.n, 400, "malformed_json", 400, "malformed_json");
    s.n = 0;
    sb_str(&s, "{\"image\":");
    sb_rep(&s, "[", 200000);
    expect_json("image: 200,000 x [", s.b, s.n, 400, "malformed_json", 400, "malformed_json");
    s.n = 0;
    sb_str(&s, "{\"images\":[");
    sb_rep(&s, "{\"a\":", 200000);
    expect_json("images: 200,000 nested objects", s.b, s.n, 400, "malformed_json", 400, "malformed_json");
    s.n = 0;
    sb_str(&s, "{\"names\":");
    sb_rep(&s, "{\"a\":", 200000);
    expect_json("names: 200,000 nested objects", s.b, s.n, 400, "malformed_json", 400, "malformed_json");
    /* closed nesting: well-formed up to 64 levels (then refused by shape), malformed past that */
    for (int depth = 62; depth <= 64; depth++) {
        s.n = 0;
        sb_str(&s, "{\"image\":");
        sb_rep(&s, "[", (size_t)depth);
        sb_rep(&s, "]", (size_t)depth);
        sb_str(&s, ",\"mask\":\"QQ==\"}");
        int ok = depth < 64; /* the root object is level 1 */
        expect_json(NULL, s.b, s.n, ok ? 422 : 400, ok ? "invalid_field" : "malformed_json", ok ? 422 : 400,
                    ok ? "unknown_field" : "malformed_json");
    }

    /* many tiny array items */
    s.n = 0;
    sb_str(&s, "{\"images\":[\"QUFB\"");
    sb_rep(&s, ",\"QUFB\"", 300000);
    sb_str(&s, "]}");
    expect_json("images: 300,000 tiny strings", s.b, s.n, 422, "unknown_field", 413, "too_many_images");
    s.n = 0;
    sb_str(&s, "{\"images\":[0");
    sb_rep(&s, ",0", 300000);
    sb_str(&s, "]}");
    expect_json("images: 300,000 numbers", s.b, s.n, 422, "unknown_field", 422, "invalid_field");
    s.n = 0;
    sb_str(&s, "{\"images\":[\"QUFB\"],\"names\":[\"a\"");
    sb_rep(&s, ",\"a\"", 300000);
    sb_str(&s, "]}");
    expect_json("names: 300,000 tiny strings", s.b, s.n, 422, "unknown_field", 422, "invalid_field");
    s.n = 0;
    sb_str(&s, "{\"image\":[0");
    sb_rep(&s, ",0", 300000);
    sb_str(&s, "]}");
    expect_json("image: 300,000 numbers", s.b, s.n, 422, "invalid_field", 422, "unknown_field");

    /* bodies at the default max_body_bytes (32 MiB) */
    const size_t max = 32u << 20;
    struct {
        const char *label, *head, *unit, *tail;
        int s1;
        const char *c1;
        int s2;
        const char *c2;
    } big[] = {
        {"32 MiB: [[[[", "", "[", "", 400, "malformed_json", 400, "malformed_json"},
        {"32 MiB: keys", "{\"k\":0", ",\"k\":0", "}", 422, "unknown_field", 422, "unknown_field"},
        {"32 MiB: images of numbers", "{\"images\":[0", ",0", "]}", 422, "unknown_field", 422, "invalid_field"},
        {"32 MiB: images of tiny strings", "{\"images\":[\"QQ\"", ",\"QQ\"", "]}", 422, "unknown_field", 413, "too_many_images"},
        {"32 MiB: unterminated image", "{\"image\":\"", "QUFB", "", 400, "malformed_json", 400, "malformed_json"},
        {"32 MiB: 60 deep arrays, repeated", "{\"k\":0", NULL, "}", 422, "unknown_field", 422, "unknown_field"},
        {"32 MiB: images of 256 big strings", "{\"images\":[\"QUFB\"", ",\"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\"", "],\"names\":0}",
         422, "unknown_field", 413, "too_many_images"},
        {"32 MiB: whitespace", "", "    ", "{}", 422, "missing_field", 422, "missing_field"},
        {"32 MiB: bad base64 at the end", "{\"mask\":\"QQ==\",\"image\":\"", "QUFB", "!\"}", 400, "invalid_base64", 422,
         "unknown_field"},
    };
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        s.n = 0;
        sb_str(&s, big[i].head);
        char deep[128] = ",\"k\":";
        memset(deep + 5, '[', 60);
        memset(deep + 65, ']', 60);
        deep[125] = 0;
        if (!big[i].unit) big[i].unit = deep;
        size_t ul = strlen(big[i].unit), tl = strlen(big[i].tail);
        sb_rep(&s, big[i].unit, (max - s.n - tl) / ul);
        sb_str(&s, big[i].tail);
        expect_json(big[i].label, s.b, s.n, big[i].s1, big[i].c1, big[i].s2, big[i].c2);
    }
    free(s.b);

    /* string limits: method and format 64 bytes, names[] items 255 bytes, quality 32 characters */
    char b[2048];
    snprintf(b, sizeof b, "{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"method\":\"%065d\"}", 0);
    expect_json(NULL, b, strlen(b), 422, "invalid_field", 422, "unknown_field");
    snprintf(b, sizeof b, "{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"format\":\"%s\"}",
             "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
             "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9x");
    expect_json(NULL, b, strlen(b), 422, "invalid_field", 422, "unknown_field");
    snprintf(b, sizeof b, "{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"quality\":%033d}", 5);
    expect_json(NULL, b, strlen(b), 400, "malformed_json", 400, "malformed_json"); /* 0-led: not JSON */
    snprintf(b, sizeof b, "{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"quality\":5.%032d}", 0);
    expect_json(NULL, b, strlen(b), 422, "invalid_field", 422, "unknown_field");
    char name[300];
    memset(name, 'n', 256);
    name[256] = 0;
    snprintf(b, sizeof b, "{\"images\":[\"QUFB\"],\"names\":[\"%s\"]}", name);
    expect_json(NULL, b, strlen(b), 422, "unknown_field", 422, "invalid_field");
    name[255] = 0;
    snprintf(b, sizeof b, "{\"images\":[\"QUFB\"],\"names\":[\"%s\"]}", name);
    expect_json(NULL, b, strlen(b), 422, "unknown_field", 0, NULL);

    /* syntax the scan refuses */
    const char *bad[] = {
        "   ",
        "{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\"} x",
        "{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\"}{}",
        "{\"image\":\"SU1H\" \"mask\":\"TUFTSw==\"}",
        "{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",}",
        "{\"image\":\"SU1H\",\"mask\":\"TUF\\xSw==\"}",
        "{\"image\":\"SU1H\",\"mask\":\"TUFT\\ud800Sw==\"}",
        "{\"image\":\"SU1H\",\"mask\":\"TUFT\\udc00Sw==\"}",
        "{\"image\":\"SU1H\",\"mask\":\"TUFT\\u00g0\"}",
        "{\"image\":\"SU1H\",\"mask\":\"TUFTSw==",
        "{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"quality\":-}",
        "{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"quality\":1.}",
        "{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"quality\":1e}",
        "{\"image\" \"SU1H\"}",
        "{image:\"SU1H\"}",
        "{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        srv_inpaint_args a;
        srv_error e;
        int r = srv_parse_inpaint_json((const uint8_t *)bad[i], strlen(bad[i]), &a, &e);
        CHECKF(r == 400 && !strcmp(e.code, "malformed_json"), "bad JSON %zu: %d %s", i, r, r ? e.code : "");
        if (!r) srv_inpaint_args_free(&a);
    }

    /* still accepted: escapes in names and values, whitespace, numbers in exponent form */
    const char *good = " \r\n{ \"\\u0069mage\" : \"data:image\\/png;base64,SU1H\" ,\n\t\"mask\":\"TUFT\\u0053w==\","
                       "\"method\":\"\\u0074elea\",\"quality\":1e2 } \n";
    srv_inpaint_args a;
    srv_error e;
    CHECKF(srv_parse_inpaint_json((const uint8_t *)good, strlen(good), &a, &e) == 0, "%s", e.message);
    CHECK(a.image.len == 3 && !memcmp(a.image.data, "IMG", 3) && a.mask.len == 4 && !memcmp(a.mask.data, "MASK", 4) &&
          a.method == SRV_METHOD_TELEA && a.quality == 100);
    srv_inpaint_args_free(&a);
    expect_json(NULL, "{\"image\":\"SU1H\",\"\\u0069mage\":\"SU1H\",\"mask\":\"TUFTSw==\"}", strlen("{\"image\":\"SU1H\",\"\\u0069mage\":\"SU1H\",\"mask\":\"TUFTSw==\"}"), 422, "repeated_field", 422,
                "unknown_field");
    expect_json(NULL, "{\"image\\u0000\":\"SU1H\",\"mask\":\"TUFTSw==\"}", strlen("{\"image\\u0000\":\"SU1H\",\"mask\":\"TUFTSw==\"}"), 422, "unknown_field", 422, "unknown_field");
    expect_json(NULL, "{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"method\":\"sim\\u0000\"}", strlen("{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"method\":\"sim\\u0000\"}"), 422, "invalid_field", 422,
                "unknown_field");
    expect_json(NULL, "{}", strlen("{}"), 422, "missing_field", 422, "missing_field");
    expect_json(NULL, "{\"images\":[]}", strlen("{\"images\":[]}"), 422, "unknown_field", 422, "missing_field");
    expect_json(NULL, "{\"images\":\"QUFB\"}", strlen("{\"images\":\"QUFB\"}"), 422, "unknown_field", 422, "invalid_field");
    srv_index_args x;
    const char *ix = "{\"names\":[\"\\u00e9t\\u00e9.jpg\",\"\\ud83d\\ude00\"],\"images\":[\"QUFB\",\"QkI=\"]}";
    CHECKF(srv_parse_index_json((const uint8_t *)ix, strlen(ix), &x, &e) == 0, "%s", e.message);
    CHECK(x.n == 2 && !strcmp(x.images[0].name, "\xc3\xa9t\xc3\xa9.jpg") && !strcmp(x.images[1].name, "\xf0\x9f\x98\x80"));
    srv_index_args_free(&x);
    /* 256 images are allowed, 257 are not */
    sbuf s2 = {0};
    sb_str(&s2, "{\"images\":[\"QUFB\"");
    sb_rep(&s2, ",\"QUFB\"", SRV_INDEX_MAX_IMAGES - 1);
    sb_str(&s2, "]}");
    CHECKF(srv_parse_index_json((const uint8_t *)s2.b, s2.n, &x, &e) == 0 && x.n == SRV_INDEX_MAX_IMAGES, "%s", e.message);
    srv_index_args_free(&x);
    s2.n -= 2;
    sb_str(&s2, ",\"QUFB\"]}");
    CHECK(srv_parse_index_json((const uint8_t *)s2.b, s2.n, &x, &e) == 413 && !strcmp(e.code, "too_many_images"));
    free(s2.b);
    cJSON_InitHooks(NULL);
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

/* Issue 18: format=webp, mask_from_alpha (multipart text, JSON boolean) and its conflicts, Accept. */
static void test_webp_alpha(void) {
    srv_inpaint_args a;
    srv_error e;
    const char *n1[] = {"image", "mask_from_alpha", "format", "quality"};
    const char *v1[] = {"IMG", "true", "webp", "100"};
    CHECKF(form_parse(n1, v1, 4, &a, &e) == 0, "%s", e.message);
    CHECK(a.mask_from_alpha == 1 && !a.mask.data && a.mask.len == 0 && a.format == IMG_FMT_WEBP && a.quality == 100);
    srv_inpaint_args_free(&a);
    struct {
        const char *names[3], *values[3];
        int n, status, from_alpha;
        const char *code;
    } cases[] = {
        {{"image", "mask_from_alpha"}, {"I", "1"}, 2, 0, 1, ""},
        {{"image", "mask_from_alpha"}, {"I", "on"}, 2, 0, 1, ""},
        {{"image", "mask", "mask_from_alpha"}, {"I", "M", "false"}, 3, 0, 0, ""},
        {{"image", "mask", "mask_from_alpha"}, {"I", "M", "0"}, 3, 0, 0, ""},
        {{"image", "mask_from_alpha", "mask"}, {"I", "true", "M"}, 3, 422, 0, "conflicting_fields"},
        {{"image", "mask_from_alpha"}, {"I", "false"}, 2, 422, 0, "missing_field"},
        {{"image", "mask_from_alpha"}, {"I", "yes"}, 2, 422, 0, "invalid_field"},
        {{"image", "mask_from_alpha", "mask_from_alpha"}, {"I", "1", "1"}, 3, 422, 0, "repeated_field"},
        {{"image", "mask_from_alpha"}, {"", "true"}, 2, 400, 0, "empty_image"},
        {{"image", "mask", "format"}, {"I", "M", "WEBP"}, 3, 0, 0, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int r = form_parse(cases[i].names, cases[i].values, cases[i].n, &a, &e);
        CHECKF(r == cases[i].status && (r ? !strcmp(e.code, cases[i].code) : a.mask_from_alpha == cases[i].from_alpha),
               "form case %zu: %d %s (%s)", i, r, r ? e.code : "", r ? e.message : "");
        if (!r) srv_inpaint_args_free(&a);
    }
    struct {
        const char *body;
        int status, from_alpha;
        const char *code;
    } jcases[] = {
        {"{\"image\":\"SU1H\",\"mask_from_alpha\":true,\"format\":\"webp\"}", 0, 1, ""},
        {"{\"mask_from_alpha\" : true , \"image\":\"SU1H\"}", 0, 1, ""},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"mask_from_alpha\":false}", 0, 0, ""},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"mask_from_alpha\":true}", 422, 0, "conflicting_fields"},
        {"{\"image\":\"SU1H\",\"mask_from_alpha\":false}", 422, 0, "missing_field"},
        {"{\"image\":\"SU1H\",\"mask_from_alpha\":\"true\"}", 422, 0, "invalid_field"},
        {"{\"image\":\"SU1H\",\"mask_from_alpha\":1}", 422, 0, "invalid_field"},
        {"{\"image\":\"SU1H\",\"mask_from_alpha\":null}", 422, 0, "invalid_field"},
        {"{\"image\":\"SU1H\",\"mask_from_alpha\":true,\"mask_from_alpha\":true}", 422, 0, "repeated_field"},
        {"{\"image\":\"SU1H\",\"mask_from_alpha\":tru}", 400, 0, "malformed_json"},
        {"{\"image\":\"SU1H\",\"mask_from_alpha\":truex}", 400, 0, "malformed_json"},
        {"{\"image\":\"SU1H\",\"mask_from_alpha\":t", 400, 0, "malformed_json"},
        {"{\"image\":\"\",\"mask_from_alpha\":true}", 400, 0, "empty_image"},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"format\":\"webp\"}", 0, 0, ""},
        {"{\"image\":\"SU1H\",\"mask\":\"TUFTSw==\",\"format\":\"gif\"}", 422, 0, "invalid_field"},
    };
    for (size_t i = 0; i < sizeof jcases / sizeof jcases[0]; i++) {
        int r = srv_parse_inpaint_json((const uint8_t *)jcases[i].body, strlen(jcases[i].body), &a, &e);
        CHECKF(r == jcases[i].status && (r ? !strcmp(e.code, jcases[i].code) : a.mask_from_alpha == jcases[i].from_alpha),
               "json case %zu: %d %s (%s)", i, r, r ? e.code : "", r ? e.message : "");
        if (!r) srv_inpaint_args_free(&a);
        else CHECK(!a.image.data && !a.mask.data && !a.mask_from_alpha);
    }
    /* Accept: the first supported image type in the header's order; q=0 is "not this one" */
    CHECK(srv_accept_image_format(NULL) == IMG_FMT_UNKNOWN);
    CHECK(srv_accept_image_format("*/*") == IMG_FMT_UNKNOWN);
    CHECK(srv_accept_image_format("image/webp") == IMG_FMT_WEBP);
    CHECK(srv_accept_image_format("image/avif,image/webp,image/png,*/*;q=0.8") == IMG_FMT_WEBP);
    CHECK(srv_accept_image_format("text/html, image/png;q=0.9, image/webp") == IMG_FMT_PNG);
    CHECK(srv_accept_image_format("image/webp;q=0, image/jpeg") == IMG_FMT_JPEG);
    CHECK(srv_accept_image_format("image/webp; q=0.0 ,Image/PNG") == IMG_FMT_PNG);
    CHECK(srv_accept_image_format("image/webp;q=0.5") == IMG_FMT_WEBP);
    CHECK(srv_accept_image_format("image/webpx, image/pngx, image/jpg") == IMG_FMT_JPEG);
    CHECK(srv_accept_image_format("application/json") == IMG_FMT_UNKNOWN);
    CHECK(srv_accept_image_format(";;,,, ;q=0") == IMG_FMT_UNKNOWN);
}

/* Parses an images/edits form of the given fields (every step chunking, one byte at a time too). */
static int edits_parse(const char *const *names, const char *const *values, int n, size_t step, srv_inpaint_args *a,
                       srv_edits_args *x, srv_error *e) {
    char body[8192];
    size_t len = form_body(body, names, values, n);
    srv_form *f;
    int r = srv_form_new(SRV_FORM_EDITS, "multipart/form-data; boundary=BB", &f, e);
    if (r) return r;
    for (size_t i = 0; i < len && !r; i += step) r = srv_form_feed(f, (const uint8_t *)body + i, i + step <= len ? step : len - i, e);
    if (!r) r = srv_form_finish_edits(f, a, x, e);
    srv_form_free(f);
    return r;
}

static void test_edits_form(void) {
    srv_inpaint_args a;
    srv_edits_args x;
    srv_error e;
    char prompt[2001];
    memset(prompt, 'p', 2000);
    prompt[2000] = 0;
    const char *n1[] = {"image", "mask", "prompt", "model", "n", "size", "response_format", "output_format", "user",
                        "quality", "background", "output_compression", "input_fidelity", "stream", "partial_images",
                        "moderation"};
    const char *v1[] = {"IMG", "MASK", prompt, "gpt-image-1", "1", "320x200", "b64_json", "webp", "u-42",
                        "high", "transparent", "80", "low", "false", "0", "auto"};
    for (size_t step = 1; step <= 4096; step *= 8) {
        CHECKF(edits_parse(n1, v1, 16, step, &a, &x, &e) == 0, "%s", e.message);
        CHECK(a.image.len == 3 && a.mask.len == 4 && a.mask_alpha && !a.mask_from_alpha && a.format == IMG_FMT_WEBP);
        CHECK(!strcmp(x.model, "gpt-image-1") && !strcmp(x.user, "u-42") && x.size_w == 320 && x.size_h == 200);
        srv_inpaint_args_free(&a);
    }
    /* no mask: the image's own alpha; image[]: the first is kept; png by default, size auto */
    const char *n2[] = {"image[]", "image[]", "prompt", "size"};
    const char *v2[] = {"FIRST", "SECOND", "x", "auto"};
    CHECKF(edits_parse(n2, v2, 4, 4096, &a, &x, &e) == 0, "%s", e.message);
    CHECK(a.image.len == 5 && !memcmp(a.image.data, "FIRST", 5) && a.mask_from_alpha && !a.mask_alpha);
    CHECK(a.format == IMG_FMT_PNG && x.size_w == 0 && !x.model[0]);
    srv_inpaint_args_free(&a);

    struct {
        const char *names[3], *values[3];
        int n;
        const char *code, *param;
    } cases[] = {
        {{"image", "colour"}, {"I", "red"}, 2, "unknown_field", "colour"},
        {{"image", "image"}, {"I", "I"}, 2, "repeated_field", "image"},
        {{"image", "image[]"}, {"I", "I"}, 2, "repeated_field", "image"},
        {{"image", "n", "n"}, {"I", "1", "1"}, 3, "repeated_field", "n"},
        {{"image", "n"}, {"I", "2"}, 2, "unsupported_value", "n"},
        {{"image", "n"}, {"I", "0"}, 2, "invalid_field", "n"},
        {{"image", "n"}, {"I", "1.5"}, 2, "invalid_field", "n"},
        {{"image", "stream"}, {"I", "true"}, 2, "unsupported_value", "stream"},
        {{"image", "stream"}, {"I", "yes"}, 2, "invalid_field", "stream"},
        {{"image", "response_format"}, {"I", "url"}, 2, "unsupported_value", "response_format"},
        {{"image", "response_format"}, {"I", "b64"}, 2, "invalid_field", "response_format"},
        {{"image", "size"}, {"I", "1024"}, 2, "invalid_field", "size"},
        {{"image", "size"}, {"I", "x5"}, 2, "invalid_field", "size"},
        {{"image", "output_format"}, {"I", "gif"}, 2, "invalid_field", "output_format"},
        {{"image", "output_compression"}, {"I", "101"}, 2, "invalid_field", "output_compression"},
        {{"image", "partial_images"}, {"I", "4"}, 2, "invalid_field", "partial_images"},
        {{"prompt"}, {"x"}, 1, "missing_field", "image"},
        {{"image", "mask"}, {"", "M"}, 2, "empty_image", "image"},
        {{"image", "mask"}, {"I", ""}, 2, "empty_mask_file", "mask"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int r = edits_parse(cases[i].names, cases[i].values, cases[i].n, 4096, &a, &x, &e);
        CHECKF(r == 400 && !strcmp(e.code, cases[i].code) && !strcmp(e.param, cases[i].param), "case %zu: %d %s %s (%s)",
               i, r, r ? e.code : "", r ? e.param : "", r ? e.message : "");
        if (!r) srv_inpaint_args_free(&a);
    }
    /* a text field past SRV_EDITS_TEXT_MAX */
    char longv[SRV_EDITS_TEXT_MAX + 2];
    memset(longv, 'u', sizeof longv - 1);
    longv[sizeof longv - 1] = 0;
    const char *n3[] = {"image", "user"};
    const char *v3[] = {"I", longv};
    CHECK(edits_parse(n3, v3, 2, 7, &a, &x, &e) == 400 && !strcmp(e.code, "invalid_field") && !strcmp(e.param, "user"));
}

int main(void) {
    test_webp_alpha();
    test_edits_form();
    test_multipart();
    test_forms();
    test_json();
    test_references();
    test_json_shape();
    test_base64();
    return t_done("test_srv_request");
}
