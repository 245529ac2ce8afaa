/* fuzz_multipart.c: libFuzzer harness for the streaming multipart parser and the form layer (inpaint, index and images/edits forms): no crash, and any chunking gives the same parts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv_multipart.h"
#include "server/srv_request.h"

/* The parse as one string: part headers, data and ends, and the final status. */
typedef struct {
    uint8_t *log;
    size_t n, cap;
} trace;

static void put(trace *t, const void *p, size_t n) {
    if (t->n + n > t->cap) {
        t->cap = (t->n + n) * 2 + 64;
        t->log = realloc(t->log, t->cap);
    }
    memcpy(t->log + t->n, p, n);
    t->n += n;
}

static sp_status on_begin(void *ctx, const char *name, const char *file, const char *ct) {
    trace *t = ctx;
    put(t, "<", 1);
    put(t, name, strlen(name) + 1);
    if (file) put(t, file, strlen(file) + 1);
    if (ct) put(t, ct, strlen(ct) + 1);
    return SP_OK;
}
static sp_status on_data(void *ctx, const uint8_t *d, size_t n) {
    put(ctx, d, n);
    return SP_OK;
}
static sp_status on_end(void *ctx) {
    put(ctx, ">", 1);
    return SP_OK;
}

static sp_status run(const uint8_t *body, size_t len, size_t step, trace *t) {
    srv_mp_callbacks cb = {on_begin, on_data, on_end, t};
    srv_mp *p;
    if (srv_mp_new("B0und'ry", &cb, &p)) abort();
    sp_status st = SP_OK;
    for (size_t i = 0; i < len && !st; i += step) st = srv_mp_feed(p, body + i, i + step <= len ? step : len - i);
    if (!st) st = srv_mp_finish(p);
    srv_mp_free(p);
    put(t, &st, sizeof st);
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t step = (size_t)data[0] % 17 + 1;
    const uint8_t *body = data + 1;
    size_t len = size - 1;
    trace a = {0}, b = {0};
    sp_status sa = run(body, len, len ? len : 1, &a);
    sp_status sb = run(body, len, step, &b);
    /* the same outcome whatever the chunking (a failure may be found at a different byte, after
     * which the traces stop differently; successes must match exactly) */
    if ((sa == SP_OK) != (sb == SP_OK)) abort();
    if (sa == SP_OK && (a.n != b.n || memcmp(a.log, b.log, a.n))) abort();
    free(a.log);
    free(b.log);
    /* the form layer on the same body, for every route's form (inpaint, index, images/edits) */
    for (int kind = 0; kind < SRV_FORM_KINDS; kind++) {
        srv_form *f;
        srv_error e;
        if (srv_form_new((srv_form_kind)kind, "multipart/form-data; boundary=\"B0und'ry\"", &f, &e)) abort();
        int r = 0;
        for (size_t i = 0; i < len && !r; i += step) r = srv_form_feed(f, body + i, i + step <= len ? step : len - i, &e);
        if (!r) {
            if (kind == SRV_FORM_INPAINT) {
                srv_inpaint_args args;
                if (!srv_form_finish_inpaint(f, &args, &e)) srv_inpaint_args_free(&args);
            } else if (kind == SRV_FORM_EDITS) {
                srv_inpaint_args args;
                srv_edits_args ex;
                if (!srv_form_finish_edits(f, &args, &ex, &e)) {
                    if (!args.image.len || !(args.mask_alpha ^ args.mask_from_alpha)) abort();
                    srv_inpaint_args_free(&args);
                }
            } else {
                srv_index_args args;
                if (!srv_form_finish_index(f, &args, &e)) srv_index_args_free(&args);
            }
        }
        if (r && (e.status < 400 || e.status > 599)) abort();
        srv_form_free(f);
    }
    return 0;
}
