/* srv_request.c: turns multipart and JSON request bodies into checked request fields; base64 both ways; HTTP error records. */
#include "server/srv_request.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imaging/img.h"
#include "server/srv_multipart.h"

#define TEXT_FIELD_MAX 64

int srv_error_set(srv_error *e, int status, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    e->status = status;
    e->code = code;
    e->param[0] = 0;
    return status;
}

const char *srv_method_name(srv_method m) {
    switch (m) {
    case SRV_METHOD_SIM: return "sim";
    case SRV_METHOD_COARSE: return "coarse";
    case SRV_METHOD_TELEA: return "telea";
    }
    return "?";
}

void srv_inpaint_args_free(srv_inpaint_args *a) {
    free(a->image.data);
    free(a->mask.data);
    for (int i = 0; i < a->nrefs; i++) free(a->refs[i].data);
    memset(a, 0, sizeof *a);
}

void srv_index_args_free(srv_index_args *a) {
    for (int i = 0; i < a->n; i++) free(a->images[i].data);
    free(a->images);
    memset(a, 0, sizeof *a);
}

/* ---- the values of text fields, shared by both forms ---- */

static int set_method(srv_inpaint_args *a, const char *v, srv_error *err) {
    if (!strcmp(v, "sim")) a->method = SRV_METHOD_SIM;
    else if (!strcmp(v, "coarse")) a->method = SRV_METHOD_COARSE;
    else if (!strcmp(v, "telea")) a->method = SRV_METHOD_TELEA;
    else return srv_error_set(err, 422, "invalid_field", "method '%.64s' is not allowed; allowed: sim, coarse, telea", v);
    return 0;
}

static int set_model(srv_inpaint_args *a, const char *v, srv_error *err) {
    size_t n = strlen(v);
    int ok = n >= 1 && n <= SRV_MODEL_MAX && v[0] >= 'a' && v[0] <= 'z';
    for (size_t i = 0; ok && i < n; i++) ok = (v[i] >= 'a' && v[i] <= 'z') || (v[i] >= '0' && v[i] <= '9');
    if (!ok)
        return srv_error_set(err, 422, "invalid_field",
                             "model '%.64s' is not allowed; allowed: auto or a model family's name (GET /v1/info lists "
                             "them)", v);
    memcpy(a->model, v, n + 1);
    return 0;
}

static int set_format(srv_inpaint_args *a, const char *v, srv_error *err) {
    img_format f = img_format_parse(v);
    if (f == IMG_FMT_UNKNOWN)
        return srv_error_set(err, 422, "invalid_field", "format '%.64s' is not allowed; allowed: png, jpeg, webp", v);
    a->format = f;
    return 0;
}

static int set_quality_text(srv_inpaint_args *a, const char *v, srv_error *err) {
    char *end;
    long q = strtol(v, &end, 10);
    if (!*v || *end || q < 1 || q > 100)
        return srv_error_set(err, 422, "invalid_field", "quality '%.64s' is not allowed; allowed: an integer 1..100", v);
    a->quality = (int)q;
    return 0;
}

/* mask_from_alpha as a form's text: true/false, 1/0, on/off (an HTML checkbox sends "on"). */
static int set_mask_from_alpha_text(srv_inpaint_args *a, const char *v, srv_error *err) {
    if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "on")) a->mask_from_alpha = 1;
    else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "off")) a->mask_from_alpha = 0;
    else
        return srv_error_set(err, 422, "invalid_field",
                             "mask_from_alpha '%.64s' is not allowed; allowed: true, false (1, 0, on, off)", v);
    return 0;
}

/* A reference_id as text: a decimal integer 0..2^53 (a JSON number's exact range). */
static int add_ref_id_text(srv_inpaint_args *a, const char *v, srv_error *err) {
    char *end;
    errno = 0;
    long long id = strtoll(v, &end, 10);
    if (!*v || *end || errno || id < 0 || id > (1LL << 53))
        return srv_error_set(err, 422, "invalid_field", "reference_id '%.64s' is not allowed; allowed: an integer >= 0", v);
    if (a->nref_ids >= SRV_MAX_REFERENCES)
        return srv_error_set(err, 422, "too_many_references", "more than %d reference_id fields", SRV_MAX_REFERENCES);
    a->ref_ids[a->nref_ids++] = (int64_t)id;
    return 0;
}

static int check_inpaint(const srv_inpaint_args *a, srv_error *err) {
    int has_mask = a->mask.data || a->mask.len;
    if (!a->image.data && !a->image.len)
        return srv_error_set(err, 422, "missing_field", "the request has no 'image' field");
    if (a->mask_from_alpha && has_mask)
        return srv_error_set(err, 422, "conflicting_fields",
                             "'mask' and mask_from_alpha=true are exclusive: send a mask, or take it from the alpha");
    if (!a->mask_from_alpha && !has_mask)
        return srv_error_set(err, 422, "missing_field",
                             "the request has no 'mask' field (or mask_from_alpha=true to take it from the image's alpha)");
    if (a->image.len == 0) return srv_error_set(err, 400, "empty_image", "the 'image' field is empty");
    if (has_mask && a->mask.len == 0) return srv_error_set(err, 400, "empty_mask_file", "the 'mask' field is empty");
    if (a->nrefs && a->nref_ids)
        return srv_error_set(err, 422, "conflicting_fields",
                             "'reference' and 'reference_id' are exclusive: send images, or name database images");
    if ((a->nrefs || a->nref_ids) && a->method != SRV_METHOD_SIM)
        return srv_error_set(err, 422, "conflicting_fields", "references are used only by method sim, not %s",
                             srv_method_name(a->method));
    for (int i = 0; i < a->nrefs; i++)
        if (a->refs[i].len == 0) return srv_error_set(err, 400, "empty_reference", "reference %d is empty", i);
    return 0;
}

/* ---- Accept ---- */

int srv_accept_image_format(const char *accept) {
    if (!accept) return IMG_FMT_UNKNOWN;
    const char *p = accept;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        const char *t = p;
        while (*p && *p != ',' && *p != ';' && *p != ' ' && *p != '\t') p++;
        size_t tl = (size_t)(p - t);
        int zero_q = 0; /* a parameter q=0 (0, 0.0, 0.000): "not acceptable" */
        while (*p && *p != ',') {
            if (*p == ';') {
                p++;
                while (*p == ' ' || *p == '\t') p++;
                if ((p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
                    const char *v = p + 2;
                    if (*v == '0') {
                        v++;
                        if (*v == '.') v++;
                        while (*v == '0') v++;
                        zero_q = !*v || *v == ',' || *v == ';' || *v == ' ' || *v == '\t';
                    }
                }
                continue;
            }
            p++;
        }
        if (zero_q) continue;
        if (tl == 10 && !strncasecmp(t, "image/webp", 10)) return IMG_FMT_WEBP;
        if (tl == 9 && !strncasecmp(t, "image/png", 9)) return IMG_FMT_PNG;
        if ((tl == 10 && !strncasecmp(t, "image/jpeg", 10)) || (tl == 9 && !strncasecmp(t, "image/jpg", 9)))
            return IMG_FMT_JPEG;
    }
    return IMG_FMT_UNKNOWN;
}

/* ---- multipart ---- */

enum {
    F_IMAGE = 0, F_MASK, F_METHOD, F_FORMAT, F_QUALITY, F_MASK_FROM_ALPHA, F_REFERENCE, F_REFERENCE_ID, F_MODEL, F_COUNT
};
static const char *const inpaint_fields[F_COUNT] = {"image",           "mask",      "method",       "format", "quality",
                                                    "mask_from_alpha", "reference", "reference_id", "model"};

/* The fields of the images/edits form (SRV_FORM_EDITS), OpenAI's names. */
enum {
    E_IMAGE = 0, E_IMAGES, E_MASK, E_PROMPT, E_N, E_SIZE, E_RESPONSE_FORMAT, E_MODEL, E_OUTPUT_FORMAT, E_USER,
    E_QUALITY, E_BACKGROUND, E_OUTPUT_COMPRESSION, E_INPUT_FIDELITY, E_STREAM, E_PARTIAL_IMAGES, E_MODERATION,
    E_COUNT
};
static const char *const edits_fields[E_COUNT] = {
    "image",          "image[]", "mask",   "prompt",  "n",                  "size",           "response_format",
    "model",          "output_format", "user", "quality", "background", "output_compression", "input_fidelity",
    "stream",         "partial_images", "moderation"};

struct srv_form {
    srv_form_kind kind;
    srv_mp *mp;
    srv_error err;
    int failed;
    int field;         /* field of the current part, -1 between parts */
    int skip;          /* the current part's data is dropped (prompt, image[] after the first) */
    srv_blob *blob;    /* file part being received */
    size_t cap;        /* capacity of blob->data */
    char text[SRV_EDITS_TEXT_MAX + 1];
    size_t tlen;
    int seen[(int)E_COUNT > (int)F_COUNT ? (int)E_COUNT : (int)F_COUNT];
    srv_inpaint_args ia;
    srv_index_args xa;
    srv_edits_args ea;
};

static sp_status form_fail(srv_form *f, int status, const char *code, const char *fmt, const char *arg) {
    srv_error_set(&f->err, status, code, fmt, arg);
    f->failed = 1;
    return sp_err(SP_ERR_INVALID, "%s", f->err.message);
}

/* Ends an edits form with the error just recorded in f->err (every fault of that form names its
 * field: `param`). */
static sp_status edits_fail(srv_form *f, const char *param, int status) {
    (void)status;
    snprintf(f->err.param, sizeof f->err.param, "%s", param);
    f->failed = 1;
    return sp_err(SP_ERR_INVALID, "%s", f->err.message);
}

/* A part of the edits form begins. */
static sp_status edits_begin(srv_form *f, const char *name, const char *filename) {
    for (int i = 0; i < E_COUNT; i++)
        if (!strcmp(name, edits_fields[i])) f->field = i;
    if (f->field < 0)
        return edits_fail(f, name,
                          srv_error_set(&f->err, 400, "unknown_field",
                                        "unknown parameter '%.64s' (OpenAI's image edit fields: image, mask, prompt, "
                                        "model, n, size, response_format, output_format, user, ...)",
                                        name));
    if ((f->field == E_IMAGES && f->seen[E_IMAGE]) || (f->field == E_IMAGE && f->seen[E_IMAGES]))
        return edits_fail(f, "image",
                          srv_error_set(&f->err, 400, "repeated_field", "give 'image' or 'image[]', not both"));
    if (f->seen[f->field]++) {
        if (f->field == E_IMAGES) { /* the first of image[] is the image; the others are dropped */
            f->skip = 1;
            return SP_OK;
        }
        return edits_fail(f, name, srv_error_set(&f->err, 400, "repeated_field", "parameter '%.64s' given twice", name));
    }
    if (f->field == E_PROMPT) f->skip = 1; /* accepted, and not used: semipaint fills from the image */
    if (f->field == E_IMAGE || f->field == E_IMAGES || f->field == E_MASK) {
        f->blob = f->field == E_MASK ? &f->ia.mask : &f->ia.image;
        snprintf(f->blob->name, sizeof f->blob->name, "%s", filename ? filename : "");
        f->cap = 0;
    }
    return SP_OK;
}

/* An integer in [lo, hi] written in decimal digits only: 1 and *out set, else 0. */
static int parse_bounded(const char *v, long lo, long hi, long *out) {
    if (!*v || strlen(v) > 9) return 0;
    for (const char *p = v; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    long n = strtol(v, NULL, 10);
    if (n < lo || n > hi) return 0;
    *out = n;
    return 1;
}

/* A text value of the edits form is complete (f->text, NUL-terminated, no NUL inside). */
static sp_status edits_value(srv_form *f) {
    const char *v = f->text, *nm = edits_fields[f->field];
    long n;
    switch (f->field) {
    case E_N:
        if (!parse_bounded(v, 1, 10, &n))
            return edits_fail(f, nm, srv_error_set(&f->err, 400, "invalid_field", "n '%.64s' is not an integer 1..10", v));
        if (n != 1)
            return edits_fail(f, nm, srv_error_set(&f->err, 400, "unsupported_value",
                                                   "n=%ld is not supported: this server makes one image per request (n=1)", n));
        break;
    case E_SIZE:
        if (strcmp(v, "auto")) {
            const char *x = strchr(v, 'x');
            char wt[16] = "";
            long w = 0, h = 0;
            if (x && (size_t)(x - v) < sizeof wt) memcpy(wt, v, (size_t)(x - v)), wt[x - v] = 0;
            if (!x || !parse_bounded(wt, 1, 1000000, &w) || !parse_bounded(x + 1, 1, 1000000, &h))
                return edits_fail(f, nm, srv_error_set(&f->err, 400, "invalid_field",
                                                       "size '%.64s' is not allowed; allowed: auto, or WIDTHxHEIGHT", v));
            f->ea.size_w = (int)w;
            f->ea.size_h = (int)h;
        }
        break;
    case E_RESPONSE_FORMAT:
        if (!strcmp(v, "url"))
            return edits_fail(f, nm, srv_error_set(&f->err, 400, "unsupported_value",
                                                   "response_format=url is not supported: this server keeps no images "
                                                   "to link to; use b64_json (the default)"));
        if (strcmp(v, "b64_json"))
            return edits_fail(f, nm, srv_error_set(&f->err, 400, "invalid_field",
                                                   "response_format '%.64s' is not allowed; allowed: b64_json", v));
        break;
    case E_OUTPUT_FORMAT: {
        img_format fmt = img_format_parse(v);
        if (fmt == IMG_FMT_UNKNOWN)
            return edits_fail(f, nm, srv_error_set(&f->err, 400, "invalid_field",
                                                   "output_format '%.64s' is not allowed; allowed: png, jpeg, webp", v));
        f->ia.format = fmt;
        break;
    }
    case E_MODEL: snprintf(f->ea.model, sizeof f->ea.model, "%s", v); break;
    case E_USER: snprintf(f->ea.user, sizeof f->ea.user, "%s", v); break;
    case E_OUTPUT_COMPRESSION:
        if (!parse_bounded(v, 0, 100, &n))
            return edits_fail(f, nm, srv_error_set(&f->err, 400, "invalid_field",
                                                   "output_compression '%.64s' is not an integer 0..100", v));
        break;
    case E_PARTIAL_IMAGES:
        if (!parse_bounded(v, 0, 3, &n))
            return edits_fail(f, nm, srv_error_set(&f->err, 400, "invalid_field",
                                                   "partial_images '%.64s' is not an integer 0..3", v));
        break;
    case E_STREAM:
        if (!strcmp(v, "true"))
            return edits_fail(f, nm, srv_error_set(&f->err, 400, "unsupported_value",
                                                   "stream=true is not supported: the answer comes whole"));
        if (strcmp(v, "false"))
            return edits_fail(f, nm, srv_error_set(&f->err, 400, "invalid_field",
                                                   "stream '%.64s' is not allowed; allowed: true, false", v));
        break;
    default: break; /* quality, background, input_fidelity, moderation: accepted and ignored */
    }
    return SP_OK;
}

static sp_status on_begin(void *ctx, const char *name, const char *filename, const char *ctype) {
    srv_form *f = ctx;
    (void)ctype; /* the bytes are sniffed; a part's declared type is not trusted */
    f->field = -1;
    f->blob = NULL;
    f->tlen = 0;
    f->skip = 0;
    if (f->kind == SRV_FORM_EDITS) return edits_begin(f, name, filename);
    if (f->kind == SRV_FORM_INDEX) {
        if (strcmp(name, "image"))
            return form_fail(f, 422, "unknown_field", "unknown field '%.64s'; allowed: image (repeated)", name);
        if (f->xa.n >= SRV_INDEX_MAX_IMAGES)
            return form_fail(f, 413, "too_many_images", "more than %s images in one request", "256");
        srv_blob *nb = realloc(f->xa.images, (size_t)(f->xa.n + 1) * sizeof *nb);
        if (!nb) return form_fail(f, 503, "out_of_memory", "%s", "out of memory");
        f->xa.images = nb;
        f->blob = &nb[f->xa.n++];
        memset(f->blob, 0, sizeof *f->blob);
        snprintf(f->blob->name, sizeof f->blob->name, "%s", filename ? filename : "");
        f->field = F_IMAGE;
        f->cap = 0;
        return SP_OK;
    }
    for (int i = 0; i < F_COUNT; i++)
        if (!strcmp(name, inpaint_fields[i])) f->field = i;
    if (f->field < 0)
        return form_fail(f, 422, "unknown_field",
                         "unknown field '%.64s'; allowed: image, mask, method, format, quality, mask_from_alpha, "
                         "reference, reference_id, model",
                         name);
    if (f->field == F_REFERENCE) { /* repeated: one image per part */
        if (f->ia.nrefs >= SRV_MAX_REFERENCES)
            return form_fail(f, 422, "too_many_references", "more than %s reference images", "8");
        f->blob = &f->ia.refs[f->ia.nrefs++];
        snprintf(f->blob->name, sizeof f->blob->name, "%s", filename ? filename : "");
        f->cap = 0;
        return SP_OK;
    }
    if (f->field != F_REFERENCE_ID && f->seen[f->field]++)
        return form_fail(f, 422, "repeated_field", "field '%.64s' given twice", name);
    if (f->field == F_IMAGE || f->field == F_MASK) {
        f->blob = f->field == F_IMAGE ? &f->ia.image : &f->ia.mask;
        snprintf(f->blob->name, sizeof f->blob->name, "%s", filename ? filename : "");
        f->cap = 0;
    }
    return SP_OK;
}

static sp_status on_data(void *ctx, const uint8_t *d, size_t n) {
    srv_form *f = ctx;
    if (f->blob) {
        srv_blob *b = f->blob;
        if (b->len + n > f->cap) {
            size_t cap = f->cap ? f->cap : 65536;
            while (cap < b->len + n) cap *= 2;
            uint8_t *nd = realloc(b->data, cap);
            if (!nd) return form_fail(f, 503, "out_of_memory", "%s", "out of memory");
            b->data = nd;
            f->cap = cap;
        }
        memcpy(b->data + b->len, d, n);
        b->len += n;
        return SP_OK;
    }
    if (f->skip) return SP_OK;
    if (f->kind == SRV_FORM_EDITS && f->tlen + n > SRV_EDITS_TEXT_MAX)
        return edits_fail(f, edits_fields[f->field],
                          srv_error_set(&f->err, 400, "invalid_field", "parameter '%s' is longer than %d bytes",
                                        edits_fields[f->field], SRV_EDITS_TEXT_MAX));
    if (f->kind != SRV_FORM_EDITS && f->tlen + n > TEXT_FIELD_MAX)
        return form_fail(f, 422, "invalid_field", "field '%s' is longer than 64 bytes", inpaint_fields[f->field]);
    memcpy(f->text + f->tlen, d, n);
    f->tlen += n;
    return SP_OK;
}

static sp_status on_end(void *ctx) {
    srv_form *f = ctx;
    if (f->blob) {
        if (!f->blob->data) f->blob->data = malloc(1); /* present but empty: told apart from missing */
        if (!f->blob->data) return form_fail(f, 503, "out_of_memory", "%s", "out of memory");
        f->blob = NULL;
        return SP_OK;
    }
    if (f->skip) {
        f->skip = 0;
        f->field = -1;
        return SP_OK;
    }
    f->text[f->tlen] = 0;
    if (f->kind == SRV_FORM_EDITS) {
        if (memchr(f->text, 0, f->tlen))
            return edits_fail(f, edits_fields[f->field], srv_error_set(&f->err, 400, "invalid_field",
                                                                     "parameter '%s' holds a NUL byte",
                                                                     edits_fields[f->field]));
        sp_status st = edits_value(f);
        f->field = -1;
        return st;
    }
    if (memchr(f->text, 0, f->tlen))
        return form_fail(f, 422, "invalid_field", "field '%s' holds a NUL byte", inpaint_fields[f->field]);
    int r = 0;
    if (f->field == F_METHOD) r = set_method(&f->ia, f->text, &f->err);
    else if (f->field == F_FORMAT) r = set_format(&f->ia, f->text, &f->err);
    else if (f->field == F_QUALITY) r = set_quality_text(&f->ia, f->text, &f->err);
    else if (f->field == F_MASK_FROM_ALPHA) r = set_mask_from_alpha_text(&f->ia, f->text, &f->err);
    else if (f->field == F_REFERENCE_ID) r = add_ref_id_text(&f->ia, f->text, &f->err);
    else if (f->field == F_MODEL) r = set_model(&f->ia, f->text, &f->err);
    if (r) {
        f->failed = 1;
        return sp_err(SP_ERR_INVALID, "%s", f->err.message);
    }
    f->field = -1;
    return SP_OK;
}

int srv_form_new(srv_form_kind kind, const char *content_type, srv_form **out, srv_error *err) {
    *out = NULL;
    char boundary[SRV_MP_BOUNDARY_MAX + 1];
    sp_status st = srv_mp_boundary(content_type, boundary, sizeof boundary);
    if (st == SP_ERR_UNSUPPORTED) return srv_error_set(err, 415, "unsupported_media_type", "%s", sp_err_msg());
    if (st) return srv_error_set(err, 400, "malformed_multipart", "%s", sp_err_msg());
    srv_form *f = calloc(1, sizeof *f);
    if (!f) return srv_error_set(err, 503, "out_of_memory", "out of memory");
    f->kind = kind;
    f->field = -1;
    srv_mp_callbacks cb = {on_begin, on_data, on_end, f};
    if (srv_mp_new(boundary, &cb, &f->mp)) {
        free(f);
        return srv_error_set(err, 400, "malformed_multipart", "%s", sp_err_msg());
    }
    *out = f;
    return 0;
}

int srv_form_feed(srv_form *f, const uint8_t *data, size_t len, srv_error *err) {
    if (f->failed) return *err = f->err, err->status;
    sp_status st = srv_mp_feed(f->mp, data, len);
    if (!st) return 0;
    if (!f->failed) {
        srv_error_set(&f->err, 400, "malformed_multipart", "%s", sp_err_msg());
        f->failed = 1;
    }
    *err = f->err;
    return err->status;
}

static int form_finish(srv_form *f, srv_error *err) {
    if (f->failed) return *err = f->err, err->status;
    if (srv_mp_finish(f->mp)) {
        f->failed = 1;
        srv_error_set(&f->err, 400, "malformed_multipart", "%s", sp_err_msg());
        return *err = f->err, err->status;
    }
    return 0;
}

int srv_form_finish_inpaint(srv_form *f, srv_inpaint_args *out, srv_error *err) {
    memset(out, 0, sizeof *out);
    int r = form_finish(f, err);
    if (r) return r;
    if ((r = check_inpaint(&f->ia, err))) return r;
    *out = f->ia;
    memset(&f->ia, 0, sizeof f->ia);
    return 0;
}

int srv_form_finish_index(srv_form *f, srv_index_args *out, srv_error *err) {
    memset(out, 0, sizeof *out);
    int r = form_finish(f, err);
    if (r) return r;
    if (f->xa.n == 0) return srv_error_set(err, 422, "missing_field", "the request has no 'image' field");
    for (int i = 0; i < f->xa.n; i++)
        if (f->xa.images[i].len == 0) return srv_error_set(err, 400, "empty_image", "image %d is empty", i);
    *out = f->xa;
    memset(&f->xa, 0, sizeof f->xa);
    return 0;
}

int srv_form_finish_edits(srv_form *f, srv_inpaint_args *out, srv_edits_args *ex, srv_error *err) {
    memset(out, 0, sizeof *out);
    memset(ex, 0, sizeof *ex);
    int r = form_finish(f, err);
    if (r) return r;
    srv_inpaint_args *a = &f->ia;
    if (!a->image.data) r = srv_error_set(err, 400, "missing_field", "the request has no 'image' (or 'image[]') field");
    else if (a->image.len == 0) r = srv_error_set(err, 400, "empty_image", "the 'image' field is empty");
    else if (a->mask.data && a->mask.len == 0) r = srv_error_set(err, 400, "empty_mask_file", "the 'mask' field is empty");
    if (r) {
        snprintf(err->param, sizeof err->param, "%s", a->image.data && a->image.len ? "mask" : "image");
        return r;
    }
    if (a->mask.data) a->mask_alpha = 1;
    else a->mask_from_alpha = 1;
    if (a->format == IMG_FMT_UNKNOWN) a->format = IMG_FMT_PNG; /* OpenAI's default */
    *out = *a;
    *ex = f->ea;
    memset(a, 0, sizeof *a);
    return 0;
}

void srv_form_free(srv_form *f) {
    if (!f) return;
    srv_mp_free(f->mp);
    srv_inpaint_args_free(&f->ia);
    srv_index_args_free(&f->xa);
    free(f);
}

/* ---- base64 ---- */

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

sp_status srv_b64_decode(const char *s, size_t n, uint8_t **out, size_t *outlen) {
    *out = NULL;
    *outlen = 0;
    if (n >= 5 && !strncmp(s, "data:", 5)) {
        const char *comma = memchr(s, ',', n);
        if (!comma) return sp_err(SP_ERR_FORMAT, "data URL without a comma");
        size_t hl = (size_t)(comma - s);
        if (hl < 12 || strncmp(comma - 7, ";base64", 7)) return sp_err(SP_ERR_FORMAT, "data URL is not ;base64");
        n -= hl + 1;
        s = comma + 1;
    }
    uint8_t *buf = malloc(n / 4 * 3 + 3);
    if (!buf) return sp_err(SP_ERR_NOMEM, "out of memory decoding base64");
    size_t k = 0, pad = 0, nv = 0;
    uint32_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int v = b64_value(c);
        if (v < 0 || pad) {
            free(buf);
            return sp_err(SP_ERR_FORMAT, v < 0 ? "invalid base64 character at offset %zu" : "base64 data after '=' at offset %zu", i);
        }
        acc = acc << 6 | (uint32_t)v;
        if (++nv == 4) {
            buf[k++] = (uint8_t)(acc >> 16);
            buf[k++] = (uint8_t)(acc >> 8);
            buf[k++] = (uint8_t)acc;
            acc = 0;
            nv = 0;
        }
    }
    if (nv == 1 || pad > 2 || (pad && (nv + pad) != 4)) {
        free(buf);
        return sp_err(SP_ERR_FORMAT, "base64 data ends in the middle of a group");
    }
    if (nv == 2) buf[k++] = (uint8_t)(acc >> 4);
    else if (nv == 3) {
        buf[k++] = (uint8_t)(acc >> 10);
        buf[k++] = (uint8_t)(acc >> 2);
    }
    *out = buf;
    *outlen = k;
    return SP_OK;
}

char *srv_b64_encode(const uint8_t *d, size_t n, size_t *outlen) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t len = (n + 2) / 3 * 4;
    char *s = malloc(len + 1);
    if (!s) return NULL;
    size_t k = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        s[k++] = tab[v >> 18];
        s[k++] = tab[(v >> 12) & 63];
        s[k++] = tab[(v >> 6) & 63];
        s[k++] = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)d[i] << 16;
        s[k++] = tab[v >> 18];
        s[k++] = tab[(v >> 12) & 63];
        s[k++] = '=';
        s[k++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8;
        s[k++] = tab[v >> 18];
        s[k++] = tab[(v >> 12) & 63];
        s[k++] = tab[(v >> 6) & 63];
        s[k++] = '=';
    }
    s[k] = 0;
    if (outlen) *outlen = k;
    return s;
}

/* ---- JSON ----
 * The two JSON bodies are read by one linear pass over the raw bytes that checks the syntax and the
 * shape together: the root must be an object of known members, each at most once, each value of
 * its member's type (strings, a number, arrays of strings: nothing nests deeper than that), each
 * string and array within its member's limit. After the first shape fault only the syntax of the
 * rest is checked (without recursion, at most JSON_MAX_DEPTH levels), so that a body that is not
 * JSON is always 400 and a JSON body of the wrong shape 422 (413 for too many images). A hostile
 * body costs one look at each of its bytes and no memory; nothing is built but the decoded
 * fields of a body that passed. */

/* The kinds of value a member may hold. */
enum { JV_STRING = 1, JV_NUMBER, JV_STRINGS, JV_BOOL, JV_NUMBERS };

/* A member a body may hold, and its limits. */
typedef struct {
    const char *name;
    int kind;
    size_t max_bytes;     /* a string, or each item: most bytes once unescaped; 0 = the body's size bounds it */
    int max_items;        /* JV_STRINGS: most items */
    int items_status;     /* JV_STRINGS: status and code when there are more */
    const char *items_code;
    const char *what;     /* the value it must be, for messages */
    const char *item_what; /* JV_STRINGS: what each item must be */
} json_field;

/* The raw text of a string (between its quotes) or of a number, as found in the body. */
typedef struct {
    const char *raw;
    size_t len;
    int escaped; /* holds a backslash escape */
} json_span;

/* What the scan found for one field. */
typedef struct {
    int present;
    json_span v;      /* JV_STRING, JV_NUMBER, JV_BOOL (the literal) */
    json_span *items; /* JV_STRINGS, JV_NUMBERS: room for max_items spans, given by the caller */
    int n;
} json_member;

#define JSON_NUMBER_MAX 32 /* most characters of a number (quality) */
#define JSON_NAME_MAX 255  /* most bytes of a names[] item (srv_blob.name holds 255 and a NUL) */
#define JSON_MAX_DEPTH 64  /* most nesting levels the syntax check follows (the shapes need 2) */

static const json_field inpaint_json[] = {
    {"image", JV_STRING, 0, 0, 0, NULL, "a base64 string or a data URL", NULL},
    {"mask", JV_STRING, 0, 0, 0, NULL, "a base64 string or a data URL", NULL},
    {"method", JV_STRING, TEXT_FIELD_MAX, 0, 0, NULL, "a string", NULL},
    {"format", JV_STRING, TEXT_FIELD_MAX, 0, 0, NULL, "a string", NULL},
    {"quality", JV_NUMBER, JSON_NUMBER_MAX, 0, 0, NULL, "an integer 1..100", NULL},
    {"mask_from_alpha", JV_BOOL, 0, 0, 0, NULL, "true or false", NULL},
    {"reference", JV_STRINGS, 0, SRV_MAX_REFERENCES, 422, "too_many_references", "an array of base64 strings",
     "a base64 string or a data URL"},
    {"reference_id", JV_NUMBERS, JSON_NUMBER_MAX, SRV_MAX_REFERENCES, 422, "too_many_references",
     "an array of integers", "an integer >= 0"},
    {"model", JV_STRING, TEXT_FIELD_MAX, 0, 0, NULL, "a string", NULL},
};
static const json_field index_json[] = {
    {"images", JV_STRINGS, 0, SRV_INDEX_MAX_IMAGES, 413, "too_many_images", "a non-empty array of base64 strings",
     "a base64 string or a data URL"},
    {"names", JV_STRINGS, JSON_NAME_MAX, SRV_INDEX_MAX_IMAGES, 422, "invalid_field", "an array of strings", "a string"},
};
#define N_INPAINT_JSON ((int)(sizeof inpaint_json / sizeof inpaint_json[0]))
#define N_INDEX_JSON ((int)(sizeof index_json / sizeof index_json[0]))

static int hex4(const char *p, unsigned *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return 0;
        *v = *v << 4 | (unsigned)d;
    }
    return 1;
}

/* Scans the string whose opening quote is at *pp, leaving *pp past the closing quote, and counts
 * its bytes once unescaped into *dlen (\u escapes as UTF-8, a surrogate pair as one 4-byte
 * character; other bytes, control characters included, are taken as they are). 0, or -1 when
 * malformed (a bad escape, a lone surrogate, no closing quote) with *pp at the fault. */
static int scan_string(const char **pp, const char *end, size_t *dlen, int *escaped) {
    const char *p = *pp + 1;
    size_t n = 0;
    *escaped = 0;
    for (;;) {
        if (p >= end) break;
        char c = *p;
        if (c == '"') {
            *dlen = n;
            *pp = p + 1;
            return 0;
        }
        if (c != '\\') {
            p++;
            n++;
            continue;
        }
        *escaped = 1;
        if (end - p < 2) break;
        c = p[1];
        if (c == 'u') {
            unsigned cp, lo;
            if (end - p < 6 || !hex4(p + 2, &cp) || (cp >= 0xDC00 && cp <= 0xDFFF)) break;
            if (cp >= 0xD800 && cp <= 0xDBFF) { /* a high surrogate: its low half must follow */
                if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || !hex4(p + 8, &lo) || lo < 0xDC00 || lo > 0xDFFF) break;
                n += 4;
                p += 12;
            } else {
                n += cp < 0x80 ? 1 : cp < 0x800 ? 2 : 3;
                p += 6;
            }
        } else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't') {
            n++;
            p += 2;
        } else {
            break;
        }
    }
    *pp = p;
    return -1;
}

/* Scans a JSON number at *pp (strict grammar); leaves *pp past it. 0, or -1 with *pp at the fault. */
static int scan_number(const char **pp, const char *end) {
    const char *p = *pp;
#define DIGIT(q) ((q) < end && *(q) >= '0' && *(q) <= '9')
    if (p < end && *p == '-') p++;
    if (!DIGIT(p)) goto bad;
    if (*p == '0') p++;
    else
        while (DIGIT(p)) p++;
    if (p < end && *p == '.') {
        p++;
        if (!DIGIT(p)) goto bad;
        while (DIGIT(p)) p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (!DIGIT(p)) goto bad;
        while (DIGIT(p)) p++;
    }
#undef DIGIT
    *pp = p;
    return 0;
bad:
    *pp = p;
    return -1;
}

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* The kind of value starting with c: 's'tring, 'n'umber, 'a'rray, 'o'bject, 'l'iteral, or 0. */
static char value_start(char c) {
    if (c == '"') return 's';
    if (c == '-' || (c >= '0' && c <= '9')) return 'n';
    if (c == '[') return 'a';
    if (c == '{') return 'o';
    if (c == 't' || c == 'f' || c == 'n') return 'l';
    return 0;
}

/* Decodes the raw text of a string that scan_string accepted into out (room for len bytes; the
 * text never grows); returns the decoded length. */
static size_t json_unescape(const char *s, size_t len, char *out) {
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c != '\\') {
            out[k++] = c;
            continue;
        }
        c = s[++i];
        switch (c) {
        case 'b': out[k++] = '\b'; break;
        case 'f': out[k++] = '\f'; break;
        case 'n': out[k++] = '\n'; break;
        case 'r': out[k++] = '\r'; break;
        case 't': out[k++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            hex4(s + i + 1, &cp);
            i += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                hex4(s + i + 3, &lo);
                i += 6;
                cp = 0x10000 + ((cp & 0x3FF) << 10 | (lo & 0x3FF));
            }
            if (cp < 0x80) {
                out[k++] = (char)cp;
            } else if (cp < 0x800) {
                out[k++] = (char)(0xC0 | cp >> 6);
                out[k++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                out[k++] = (char)(0xE0 | cp >> 12);
                out[k++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[k++] = (char)(0x80 | (cp & 0x3F));
            } else {
                out[k++] = (char)(0xF0 | cp >> 18);
                out[k++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                out[k++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[k++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: out[k++] = c; /* " \ / */
        }
    }
    return k;
}

/* A member name for messages: at most 64 bytes of its raw text, printable ASCII only. */
static void printable_name(const json_span *s, char *out, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < s->len && k + 1 < cap && i < 64; i++) {
        unsigned char c = (unsigned char)s->raw[i];
        out[k++] = c >= 0x20 && c < 0x7f && c != '\\' && c != '"' ? (char)c : '?';
    }
    out[k] = 0;
}

/* The state of the pass over a body. */
typedef struct {
    const char *body, *end, *p;
    int fault;     /* status of the first shape fault, 0 while none; the scan goes on for the syntax */
    srv_error *err;
} jscan;

/* A syntax error at s->p: 400 malformed_json, whatever shape fault came before. */
static int malformed(jscan *s) {
    return srv_error_set(s->err, 400, "malformed_json", "the body is not valid JSON (near byte %zu)",
                         (size_t)(s->p - s->body));
}

/* Records the first shape fault (later ones are dropped: the first is the answer). */
static void shape_fault(jscan *s, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void shape_fault(jscan *s, int status, const char *code, const char *fmt, ...) {
    if (s->fault) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err->message, sizeof s->err->message, fmt, ap);
    va_end(ap);
    s->err->status = s->fault = status;
    s->err->code = code;
}

static void ws(jscan *s) { s->p = skip_ws(s->p, s->end); }

/* Scans a string at s->p into *span (its raw text) and its unescaped length *dlen; -1 on a syntax error. */
static int string_at(jscan *s, json_span *span, size_t *dlen) {
    if (s->p >= s->end || *s->p != '"') return malformed(s), -1;
    const char *q = s->p;
    int esc;
    if (scan_string(&s->p, s->end, dlen, &esc)) return malformed(s), -1;
    *span = (json_span){q + 1, (size_t)(s->p - q) - 2, esc};
    return 0;
}

/* Checks the syntax of JSON text without recursion, keeping an explicit stack of the open
 * containers: bit i of `objects` tells whether container i of the `n` open ones is an object;
 * `depth` is the nesting outside them. With after = 0 it starts at a value (after whitespace);
 * with after = 1 just after one inside the innermost open container. Stops once every tracked
 * container is closed (with n = 0, after the one value). 0, or -1 on a syntax error or nesting
 * deeper than JSON_MAX_DEPTH levels (400 malformed_json). */
static int skip_json(jscan *s, int depth, uint64_t objects, int n, int after) {
    json_span key;
    size_t dl;
    for (;;) {
        if (!after) {
            ws(s);
            if (s->p >= s->end) return malformed(s), -1;
            char c = *s->p;
            if (c == '{' || c == '[') {
                if (depth + n + 1 > JSON_MAX_DEPTH)
                    return srv_error_set(s->err, 400, "malformed_json",
                                         "the body nests deeper than %d levels (near byte %zu)", JSON_MAX_DEPTH,
                                         (size_t)(s->p - s->body)),
                           -1;
                objects = c == '{' ? objects | (1ull << n) : objects & ~(1ull << n);
                n++;
                s->p++;
                ws(s);
                if (s->p < s->end && *s->p == (c == '{' ? '}' : ']')) {
                    s->p++;
                    n--;
                } else {
                    if (c == '{') {
                        if (string_at(s, &key, &dl)) return -1;
                        ws(s);
                        if (s->p >= s->end || *s->p != ':') return malformed(s), -1;
                        s->p++;
                    }
                    continue; /* the first value inside */
                }
            } else if (c == '"') {
                if (string_at(s, &key, &dl)) return -1;
            } else if (c == '-' || (c >= '0' && c <= '9')) {
                if (scan_number(&s->p, s->end)) return malformed(s), -1;
            } else {
                const char *lit = c == 't' ? "true" : c == 'f' ? "false" : c == 'n' ? "null" : NULL;
                size_t ll = lit ? strlen(lit) : 0;
                if (!lit || (size_t)(s->end - s->p) < ll || memcmp(s->p, lit, ll)) return malformed(s), -1;
                s->p += ll;
            }
        }
        after = 0;
        /* after a value: close containers, or move on to the next element */
        for (;;) {
            if (n == 0) return 0;
            int obj = (int)(objects >> (n - 1) & 1);
            ws(s);
            if (s->p < s->end && *s->p == (obj ? '}' : ']')) {
                s->p++;
                n--;
                continue;
            }
            if (s->p >= s->end || *s->p != ',') return malformed(s), -1;
            s->p++;
            if (obj) {
                ws(s);
                if (string_at(s, &key, &dl)) return -1;
                ws(s);
                if (s->p >= s->end || *s->p != ':') return malformed(s), -1;
                s->p++;
            }
            break;
        }
    }
}

/* Skips one value at s->p that starts at nesting `depth`, checking its syntax. */
static int skip_value(jscan *s, int depth) { return skip_json(s, depth, 0, 0, 0); }

/* A string member (idx < 0) or item idx of member `name` at s->p (after whitespace): records its
 * span in *out (when out is given), or records a shape fault (wrong type, longer than max bytes
 * once unescaped, 0 = no bound) and checks its syntax only. 0, or -1 on a syntax error. */
static int string_value(jscan *s, size_t max, const char *name, int idx, const char *what, json_span *out, int depth) {
    char label[48];
    ws(s);
    if (s->p < s->end && *s->p != '"' && value_start(*s->p)) {
        if (!s->fault) {
            snprintf(label, sizeof label, idx < 0 ? "%s" : "%s[%d]", name, idx);
            shape_fault(s, 422, "invalid_field", "field '%s' must be %s", label, what);
        }
        return skip_value(s, depth);
    }
    size_t dl;
    json_span sp;
    if (string_at(s, &sp, &dl)) return -1;
    if (max && dl > max && !s->fault) {
        snprintf(label, sizeof label, idx < 0 ? "%s" : "%s[%d]", name, idx);
        shape_fault(s, 422, "invalid_field", "field '%s' is longer than %zu bytes", label, max);
    }
    if (out) *out = sp;
    return 0;
}

/* A number item idx of member `name` at s->p (after whitespace): records its span in *out (when
 * given), or records a shape fault (not a number, longer than max characters) and checks the
 * syntax only. 0, or -1 on a syntax error. */
static int number_value(jscan *s, size_t max, const char *name, int idx, const char *what, json_span *out, int depth) {
    ws(s);
    if (s->p < s->end && value_start(*s->p) == 'n') {
        const char *q = s->p;
        if (scan_number(&s->p, s->end)) return malformed(s), -1;
        if ((size_t)(s->p - q) > max && !s->fault)
            shape_fault(s, 422, "invalid_field", "field '%s[%d]' must be %s", name, idx, what);
        if (out) *out = (json_span){q, (size_t)(s->p - q), 0};
        return 0;
    }
    if (s->p < s->end && value_start(*s->p) && !s->fault)
        shape_fault(s, 422, "invalid_field", "field '%s[%d]' must be %s", name, idx, what);
    return skip_value(s, depth);
}

/* The single pass over a JSON body: the syntax of all of it (up to JSON_MAX_DEPTH levels) and the
 * shape. Fills m[i] for fields[i]. 0; 400 empty_body or malformed_json (a syntax error comes
 * first, then the first shape fault in body order); 422 unknown_field, repeated_field or
 * invalid_field; the field's items_status for too many items. */
static int json_scan(const uint8_t *body, size_t len, const json_field *fields, int nf, json_member *m,
                     srv_error *err) {
    jscan s = {(const char *)body, (const char *)body + len, (const char *)body, 0, err};
    for (int i = 0; i < nf; i++) m[i].present = 0, m[i].n = 0;
    if (len == 0) return srv_error_set(err, 400, "empty_body", "the request body is empty");
    ws(&s);
    if (s.p >= s.end) return malformed(&s);
    if (*s.p != '{') {
        if (value_start(*s.p)) return srv_error_set(err, 400, "malformed_json", "the body must be a JSON object");
        return malformed(&s);
    }
    s.p++;
    ws(&s);
    if (s.p < s.end && *s.p == '}') {
        s.p++;
    } else {
        for (;;) {
            json_span key;
            size_t klen;
            if (string_at(&s, &key, &klen)) return 400;
            int fi = -1;
            if (klen <= 16) {
                char kb[32];
                size_t kn = key.escaped ? json_unescape(key.raw, key.len, kb) : key.len;
                const char *kt = key.escaped ? kb : key.raw;
                for (int i = 0; i < nf; i++)
                    if (kn == strlen(fields[i].name) && !memcmp(kt, fields[i].name, kn)) fi = i;
            }
            ws(&s);
            if (s.p >= s.end || *s.p != ':') return malformed(&s);
            s.p++;
            ws(&s);
            const json_field *f = fi >= 0 ? &fields[fi] : NULL;
            int r = 0;
            if (!f) {
                if (!s.fault) {
                    char nm[72], allowed[96] = "";
                    size_t an = 0;
                    printable_name(&key, nm, sizeof nm);
                    for (int i = 0; i < nf; i++)
                        an += (size_t)snprintf(allowed + an, sizeof allowed - an, "%s%s", i ? ", " : "", fields[i].name);
                    shape_fault(&s, 422, "unknown_field", "unknown field '%s'; allowed: %s", nm, allowed);
                }
                r = skip_value(&s, 1);
            } else if (m[fi].present++) {
                shape_fault(&s, 422, "repeated_field", "field '%s' given twice", f->name);
                r = skip_value(&s, 1);
            } else if (f->kind == JV_STRING) {
                r = string_value(&s, f->max_bytes, f->name, -1, f->what, &m[fi].v, 1);
            } else if (f->kind == JV_NUMBER) {
                if (s.p < s.end && value_start(*s.p) == 'n') {
                    const char *q = s.p;
                    if (scan_number(&s.p, s.end)) return malformed(&s);
                    m[fi].v = (json_span){q, (size_t)(s.p - q), 0};
                    if (m[fi].v.len > f->max_bytes)
                        shape_fault(&s, 422, "invalid_field", "field '%s' must be %s", f->name, f->what);
                } else {
                    if (s.p < s.end && value_start(*s.p))
                        shape_fault(&s, 422, "invalid_field", "field '%s' must be %s", f->name, f->what);
                    r = skip_value(&s, 1);
                }
            } else if (f->kind == JV_BOOL) {
                const char *q = s.p;
                int t = s.end - s.p >= 4 && !memcmp(s.p, "true", 4);
                int fl = !t && s.end - s.p >= 5 && !memcmp(s.p, "false", 5);
                if (t || fl) {
                    s.p += t ? 4 : 5;
                    m[fi].v = (json_span){q, (size_t)(s.p - q), 0};
                } else {
                    if (s.p < s.end && value_start(*s.p))
                        shape_fault(&s, 422, "invalid_field", "field '%s' must be %s", f->name, f->what);
                    r = skip_value(&s, 1);
                }
            } else if (s.p >= s.end || *s.p != '[') { /* JV_STRINGS, JV_NUMBERS */
                if (s.p < s.end && value_start(*s.p))
                    shape_fault(&s, 422, "invalid_field", "'%s' must be %s", f->name, f->what);
                r = skip_value(&s, 1);
            } else {
                s.p++;
                ws(&s);
                if (s.p < s.end && *s.p == ']') {
                    s.p++;
                } else {
                    for (int i = 0;; i++) {
                        json_span *slot = NULL;
                        if (i < f->max_items) slot = &m[fi].items[m[fi].n++];
                        else
                            shape_fault(&s, f->items_status, f->items_code, "'%s' has more than %d items", f->name,
                                        f->max_items);
                        if (f->kind == JV_NUMBERS) r = number_value(&s, f->max_bytes, f->name, i, f->item_what, slot, 2);
                        else r = string_value(&s, f->max_bytes, f->name, i, f->item_what, slot, 2);
                        if (r) break;
                        if (s.fault) { /* the answer is known: only the syntax of the rest is left */
                            if (skip_json(&s, 0, 1, 2, 1)) return err->status;
                            goto end;
                        }
                        ws(&s);
                        if (s.p < s.end && *s.p == ',') {
                            s.p++;
                            continue;
                        }
                        if (s.p < s.end && *s.p == ']') {
                            s.p++;
                            break;
                        }
                        return malformed(&s);
                    }
                }
            }
            if (r) return err->status;
            if (s.fault) {
                if (skip_json(&s, 0, 1, 1, 1)) return err->status;
                goto end;
            }
            /* a comma and the next member, or the end of the object */
            ws(&s);
            if (s.p < s.end && *s.p == ',') {
                s.p++;
                ws(&s);
                continue;
            }
            if (s.p < s.end && *s.p == '}') {
                s.p++;
                break;
            }
            return malformed(&s);
        }
    }
end:
    ws(&s);
    if (s.p < s.end)
        return srv_error_set(err, 400, "malformed_json", "the body has data after its JSON object (at byte %zu)",
                             (size_t)(s.p - s.body));
    return s.fault;
}

/* Decodes the base64 (or data URL) string `s` into a blob. */
static int decode_span(const json_span *s, const char *label, srv_blob *b, srv_error *err) {
    char *tmp = NULL;
    const char *text = s->raw;
    size_t n = s->len;
    if (s->escaped) { /* e.g. "\/" as some encoders write '/': unescaped into a copy first */
        tmp = malloc(n ? n : 1);
        if (!tmp) return srv_error_set(err, 503, "out_of_memory", "out of memory");
        n = json_unescape(s->raw, s->len, tmp);
        text = tmp;
    }
    sp_status st = srv_b64_decode(text, n, &b->data, &b->len);
    free(tmp);
    if (st == SP_ERR_NOMEM) return srv_error_set(err, 503, "out_of_memory", "out of memory");
    if (st) return srv_error_set(err, 400, "invalid_base64", "field '%s': %s", label, sp_err_msg());
    return 0;
}

/* Unescapes a short string into a NUL-terminated buffer of `cap` bytes (the scan already bounded
 * it to cap - 1; checked again here); refuses an embedded NUL. */
static int text_span(const json_span *s, const char *label, char *out, size_t cap, srv_error *err) {
    char *tmp = malloc(s->len + 1);
    if (!tmp) return srv_error_set(err, 503, "out_of_memory", "out of memory");
    size_t n = s->escaped ? json_unescape(s->raw, s->len, tmp) : s->len;
    if (!s->escaped) memcpy(tmp, s->raw, n);
    int r = 0;
    if (n >= cap) r = srv_error_set(err, 422, "invalid_field", "field '%s' is longer than %zu bytes", label, cap - 1);
    else if (memchr(tmp, 0, n)) r = srv_error_set(err, 422, "invalid_field", "field '%s' holds a NUL byte", label);
    else memcpy(out, tmp, n), out[n] = 0;
    free(tmp);
    return r;
}

int srv_parse_inpaint_json(const uint8_t *body, size_t len, srv_inpaint_args *out, srv_error *err) {
    memset(out, 0, sizeof *out);
    json_member m[N_INPAINT_JSON];
    json_span ref_spans[SRV_MAX_REFERENCES], id_spans[SRV_MAX_REFERENCES];
    m[F_REFERENCE].items = ref_spans;
    m[F_REFERENCE_ID].items = id_spans;
    int r = json_scan(body, len, inpaint_json, N_INPAINT_JSON, m, err);
    if (r) return r;
    if (!m[F_IMAGE].present) return srv_error_set(err, 422, "missing_field", "the request has no 'image' field");
    int from_alpha = m[F_MASK_FROM_ALPHA].present && m[F_MASK_FROM_ALPHA].v.raw[0] == 't';
    if (from_alpha && m[F_MASK].present)
        return srv_error_set(err, 422, "conflicting_fields",
                             "'mask' and mask_from_alpha=true are exclusive: send a mask, or take it from the alpha");
    if (!from_alpha && !m[F_MASK].present)
        return srv_error_set(err, 422, "missing_field",
                             "the request has no 'mask' field (or mask_from_alpha=true to take it from the image's alpha)");
    out->mask_from_alpha = from_alpha;
    char text[TEXT_FIELD_MAX + 1];
    if (m[F_METHOD].present && !(r = text_span(&m[F_METHOD].v, "method", text, sizeof text, err)))
        r = set_method(out, text, err);
    if (!r && m[F_FORMAT].present && !(r = text_span(&m[F_FORMAT].v, "format", text, sizeof text, err)))
        r = set_format(out, text, err);
    if (!r && m[F_MODEL].present && !(r = text_span(&m[F_MODEL].v, "model", text, sizeof text, err)))
        r = set_model(out, text, err);
    if (!r && m[F_QUALITY].present) {
        char num[JSON_NUMBER_MAX + 1];
        size_t qn = m[F_QUALITY].v.len < JSON_NUMBER_MAX ? m[F_QUALITY].v.len : JSON_NUMBER_MAX; /* the scan bounded it */
        memcpy(num, m[F_QUALITY].v.raw, qn);
        num[qn] = 0;
        double q = strtod(num, NULL);
        if (!(q >= 1 && q <= 100) || q != (double)(int)q)
            r = srv_error_set(err, 422, "invalid_field", "quality is not allowed; allowed: an integer 1..100");
        else out->quality = (int)q;
    }
    for (int i = 0; !r && i < m[F_REFERENCE_ID].n; i++) {
        char num[JSON_NUMBER_MAX + 1];
        const json_span *sp = &m[F_REFERENCE_ID].items[i];
        size_t qn = sp->len < JSON_NUMBER_MAX ? sp->len : JSON_NUMBER_MAX; /* the scan bounded it */
        memcpy(num, sp->raw, qn);
        num[qn] = 0;
        double v = strtod(num, NULL);
        if (!(v >= 0 && v <= 9007199254740992.0) || v != floor(v))
            r = srv_error_set(err, 422, "invalid_field", "reference_id[%d] is not allowed; allowed: an integer >= 0", i);
        else out->ref_ids[out->nref_ids++] = (int64_t)v;
    }
    if (!r) r = decode_span(&m[F_IMAGE].v, "image", &out->image, err);
    if (!r && m[F_MASK].present) r = decode_span(&m[F_MASK].v, "mask", &out->mask, err);
    for (int i = 0; !r && i < m[F_REFERENCE].n; i++) {
        char label[32];
        snprintf(label, sizeof label, "reference[%d]", i);
        out->nrefs = i + 1;
        r = decode_span(&m[F_REFERENCE].items[i], label, &out->refs[i], err);
    }
    if (!r) r = check_inpaint(out, err);
    if (r) srv_inpaint_args_free(out);
    return r;
}

int srv_parse_index_json(const uint8_t *body, size_t len, srv_index_args *out, srv_error *err) {
    memset(out, 0, sizeof *out);
    json_member m[N_INDEX_JSON];
    json_span *spans = calloc(2 * SRV_INDEX_MAX_IMAGES, sizeof *spans);
    if (!spans) return srv_error_set(err, 503, "out_of_memory", "out of memory");
    m[0].items = spans;
    m[1].items = spans + SRV_INDEX_MAX_IMAGES;
    int r = json_scan(body, len, index_json, N_INDEX_JSON, m, err);
    int n = m[0].n;
    if (!r && n < 1) r = srv_error_set(err, 422, "missing_field", "'images' must be a non-empty array of base64 strings");
    if (!r && m[1].present && m[1].n != n)
        r = srv_error_set(err, 422, "invalid_field", "'names' must be an array as long as 'images'");
    if (!r) {
        out->images = calloc((size_t)n, sizeof *out->images);
        if (!out->images) r = srv_error_set(err, 503, "out_of_memory", "out of memory");
    }
    for (int i = 0; !r && i < n; i++) {
        srv_blob *b = &out->images[i];
        char label[32];
        snprintf(label, sizeof label, "images[%d]", i);
        out->n = i + 1;
        r = decode_span(&m[0].items[i], label, b, err);
        if (!r && b->len == 0) r = srv_error_set(err, 400, "empty_image", "%s is empty", label);
        if (!r && m[1].present) {
            snprintf(label, sizeof label, "names[%d]", i);
            r = text_span(&m[1].items[i], label, b->name, sizeof b->name, err);
        }
    }
    free(spans);
    if (r) srv_index_args_free(out);
    return r;
}
