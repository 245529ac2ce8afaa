/* srv_request.c: turns multipart and JSON request bodies into checked request fields; base64 both ways; HTTP error records. */
#include "srv_request.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "img.h"
#include "srv_multipart.h"

#define TEXT_FIELD_MAX 64

int srv_error_set(srv_error *e, int status, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    e->status = status;
    e->code = code;
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

static int set_format(srv_inpaint_args *a, const char *v, srv_error *err) {
    img_format f = img_format_parse(v);
    if (f == IMG_FMT_UNKNOWN)
        return srv_error_set(err, 422, "invalid_field", "format '%.64s' is not allowed; allowed: png, jpeg", v);
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

static int check_inpaint(const srv_inpaint_args *a, srv_error *err) {
    if (!a->image.data && !a->image.len)
        return srv_error_set(err, 422, "missing_field", "the request has no 'image' field");
    if (!a->mask.data && !a->mask.len)
        return srv_error_set(err, 422, "missing_field", "the request has no 'mask' field");
    if (a->image.len == 0) return srv_error_set(err, 400, "empty_image", "the 'image' field is empty");
    if (a->mask.len == 0) return srv_error_set(err, 400, "empty_mask_file", "the 'mask' field is empty");
    return 0;
}

/* ---- multipart ---- */

enum { F_IMAGE = 0, F_MASK, F_METHOD, F_FORMAT, F_QUALITY, F_COUNT };
static const char *const inpaint_fields[F_COUNT] = {"image", "mask", "method", "format", "quality"};

struct srv_form {
    srv_form_kind kind;
    srv_mp *mp;
    srv_error err;
    int failed;
    int field;         /* field of the current part, -1 between parts */
    srv_blob *blob;    /* file part being received */
    size_t cap;        /* capacity of blob->data */
    char text[TEXT_FIELD_MAX + 1];
    size_t tlen;
    int seen[F_COUNT];
    srv_inpaint_args ia;
    srv_index_args xa;
};

static sp_status form_fail(srv_form *f, int status, const char *code, const char *fmt, const char *arg) {
    srv_error_set(&f->err, status, code, fmt, arg);
    f->failed = 1;
    return sp_err(SP_ERR_INVALID, "%s", f->err.message);
}

static sp_status on_begin(void *ctx, const char *name, const char *filename, const char *ctype) {
    srv_form *f = ctx;
    (void)ctype; /* the bytes are sniffed; a part's declared type is not trusted */
    f->field = -1;
    f->blob = NULL;
    f->tlen = 0;
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
                         "unknown field '%.64s'; allowed: image, mask, method, format, quality", name);
    if (f->seen[f->field]++) return form_fail(f, 422, "repeated_field", "field '%.64s' given twice", name);
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
    if (f->tlen + n > TEXT_FIELD_MAX)
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
    f->text[f->tlen] = 0;
    if (memchr(f->text, 0, f->tlen))
        return form_fail(f, 422, "invalid_field", "field '%s' holds a NUL byte", inpaint_fields[f->field]);
    int r = 0;
    if (f->field == F_METHOD) r = set_method(&f->ia, f->text, &f->err);
    else if (f->field == F_FORMAT) r = set_format(&f->ia, f->text, &f->err);
    else if (f->field == F_QUALITY) r = set_quality_text(&f->ia, f->text, &f->err);
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

/* ---- JSON ---- */

static cJSON *parse_object(const uint8_t *body, size_t len, srv_error *err) {
    if (len == 0) {
        srv_error_set(err, 400, "empty_body", "the request body is empty");
        return NULL;
    }
    cJSON *root = cJSON_ParseWithLength((const char *)body, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= (const char *)body && at <= (const char *)body + len ? (size_t)(at - (const char *)body) : 0;
        srv_error_set(err, 400, "malformed_json", "the body is not valid JSON (near byte %zu)", off);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        srv_error_set(err, 400, "malformed_json", "the body must be a JSON object");
        return NULL;
    }
    /* cJSON keeps duplicate keys; a repeated key is refused like a repeated form field */
    for (cJSON *a = root->child; a; a = a->next)
        for (cJSON *b = a->next; b; b = b->next)
            if (a->string && b->string && !strcmp(a->string, b->string)) {
                srv_error_set(err, 422, "repeated_field", "field '%.64s' given twice", a->string);
                cJSON_Delete(root);
                return NULL;
            }
    return root;
}

static int decode_field(const cJSON *item, const char *name, srv_blob *b, srv_error *err) {
    if (!cJSON_IsString(item) || !item->valuestring)
        return srv_error_set(err, 422, "invalid_field", "field '%s' must be a base64 string or a data URL", name);
    size_t n = strlen(item->valuestring);
    if (srv_b64_decode(item->valuestring, n, &b->data, &b->len))
        return srv_error_set(err, 400, "invalid_base64", "field '%s': %s", name, sp_err_msg());
    return 0;
}

int srv_parse_inpaint_json(const uint8_t *body, size_t len, srv_inpaint_args *out, srv_error *err) {
    memset(out, 0, sizeof *out);
    cJSON *root = parse_object(body, len, err);
    if (!root) return err->status;
    int r = 0;
    for (cJSON *it = root->child; it && !r; it = it->next) {
        const char *k = it->string;
        if (!strcmp(k, "image")) r = decode_field(it, "image", &out->image, err);
        else if (!strcmp(k, "mask")) r = decode_field(it, "mask", &out->mask, err);
        else if (!strcmp(k, "method") || !strcmp(k, "format")) {
            if (!cJSON_IsString(it)) r = srv_error_set(err, 422, "invalid_field", "field '%s' must be a string", k);
            else if (k[0] == 'm') r = set_method(out, it->valuestring, err);
            else r = set_format(out, it->valuestring, err);
        } else if (!strcmp(k, "quality")) {
            double q = cJSON_IsNumber(it) ? it->valuedouble : -1;
            if (q < 1 || q > 100 || q != (double)(int)q)
                r = srv_error_set(err, 422, "invalid_field", "quality is not allowed; allowed: an integer 1..100");
            else out->quality = (int)q;
        } else {
            r = srv_error_set(err, 422, "unknown_field",
                              "unknown field '%.64s'; allowed: image, mask, method, format, quality", k);
        }
    }
    cJSON_Delete(root);
    if (!r && (!out->image.data || !out->mask.data)) {
        const char *miss = !out->image.data ? "image" : "mask";
        r = srv_error_set(err, 422, "missing_field", "the request has no '%s' field", miss);
    }
    if (!r) r = check_inpaint(out, err);
    if (r) srv_inpaint_args_free(out);
    return r;
}

int srv_parse_index_json(const uint8_t *body, size_t len, srv_index_args *out, srv_error *err) {
    memset(out, 0, sizeof *out);
    cJSON *root = parse_object(body, len, err);
    if (!root) return err->status;
    int r = 0;
    const cJSON *images = NULL, *names = NULL;
    for (cJSON *it = root->child; it && !r; it = it->next) {
        if (!strcmp(it->string, "images")) images = it;
        else if (!strcmp(it->string, "names")) names = it;
        else r = srv_error_set(err, 422, "unknown_field", "unknown field '%.64s'; allowed: images, names", it->string);
    }
    int n = images && cJSON_IsArray(images) ? cJSON_GetArraySize(images) : -1;
    if (!r && n < 1) r = srv_error_set(err, 422, "missing_field", "'images' must be a non-empty array of base64 strings");
    if (!r && n > SRV_INDEX_MAX_IMAGES) r = srv_error_set(err, 413, "too_many_images", "more than 256 images in one request");
    if (!r && names && (!cJSON_IsArray(names) || cJSON_GetArraySize(names) != n))
        r = srv_error_set(err, 422, "invalid_field", "'names' must be an array as long as 'images'");
    if (!r) {
        out->images = calloc((size_t)n, sizeof *out->images);
        if (!out->images) r = srv_error_set(err, 503, "out_of_memory", "out of memory");
    }
    for (int i = 0; !r && i < n; i++) {
        srv_blob *b = &out->images[i];
        char label[32];
        snprintf(label, sizeof label, "images[%d]", i);
        r = decode_field(cJSON_GetArrayItem(images, i), label, b, err);
        out->n = i + 1;
        if (!r && b->len == 0) r = srv_error_set(err, 400, "empty_image", "%s is empty", label);
        if (!r && names) {
            const cJSON *nm = cJSON_GetArrayItem(names, i);
            if (!cJSON_IsString(nm)) r = srv_error_set(err, 422, "invalid_field", "names[%d] must be a string", i);
            else snprintf(b->name, sizeof b->name, "%s", nm->valuestring);
        }
    }
    cJSON_Delete(root);
    if (r) srv_index_args_free(out);
    return r;
}
