/* srv_request.h: the request bodies of semipaintd: multipart and JSON forms of /v1/inpaint and /v1/index/images, base64, HTTP errors. */
#ifndef SRV_REQUEST_H
#define SRV_REQUEST_H

#include "common/sp.h"

/* An HTTP error answer: status, a stable machine-readable code and a human message. */
typedef struct {
    int status;       /* 400, 401, 403, 404, 405, 413, 415, 422, 500, 503, 504 */
    const char *code; /* static string: "bad_request", "unknown_field", ... */
    char message[512];
    char param[32];   /* the request field at fault, for OpenAI-shaped answers; "" = none */
} srv_error;

/* Fills `e` (printf message; param cleared) and returns its status, so parsers can
 * `return srv_error_set(...)`. */
int srv_error_set(srv_error *e, int status, const char *code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

typedef enum { SRV_METHOD_SIM = 0, SRV_METHOD_COARSE, SRV_METHOD_TELEA } srv_method;
/* The method's name as the API spells it ("sim", "coarse", "telea"); "?" for another value. */
const char *srv_method_name(srv_method m);

/* A byte string owned by its holder (malloc'ed). */
typedef struct {
    uint8_t *data;
    size_t len;
    char name[256]; /* a multipart part's filename or a JSON name; may be empty */
} srv_blob;

/* Most `reference` images, or `reference_id`s, one request may name (the model's K bounds it further). */
#define SRV_MAX_REFERENCES 8

/* Most bytes of a `model` value: a family name (1..31 of a-z and 0-9) or "auto". */
#define SRV_MODEL_MAX 31

/* The fields of an inpainting request (docs/http-api.md). */
typedef struct {
    srv_blob image, mask;
    srv_blob refs[SRV_MAX_REFERENCES]; /* `reference` images (issue 18), in the order given */
    int nrefs;
    int64_t ref_ids[SRV_MAX_REFERENCES]; /* `reference_id`s: database images (exclusive with refs) */
    int nref_ids;
    srv_method method; /* default SIM */
    int format;        /* img_format; IMG_FMT_UNKNOWN (0) = not given */
    int quality;       /* 1-100; 0 = not given */
    int mask_from_alpha; /* 1: no mask; the image's alpha is the mask (alpha 0 = hole) */
    int mask_alpha;      /* 1: the mask's own alpha is the mask (alpha 0 = hole; POST /v1/images/edits) */
    char model[SRV_MODEL_MAX + 1]; /* `model`: a family name or "auto"; "" = not given (auto) */
} srv_inpaint_args;
/* Releases the blobs and zeroes the struct; safe on a zeroed struct. */
void srv_inpaint_args_free(srv_inpaint_args *a);

/* The images of a POST /v1/index/images request. */
#define SRV_INDEX_MAX_IMAGES 256
typedef struct {
    int n;
    srv_blob *images;
} srv_index_args;
/* Releases the images and zeroes the struct; safe on a zeroed struct. */
void srv_index_args_free(srv_index_args *a);

/* The fields of a POST /v1/images/edits request (OpenAI's image edit form) that have no place in
 * srv_inpaint_args. */
#define SRV_EDITS_TEXT_MAX 256
typedef struct {
    char model[SRV_EDITS_TEXT_MAX + 1]; /* as given ("" = not given); every name runs the one model */
    char user[SRV_EDITS_TEXT_MAX + 1];  /* as given, for the log line */
    int size_w, size_h;                  /* `size` WxH; 0 = auto (not given) */
} srv_edits_args;

/* A multipart body being received, for one route's field set. */
typedef enum { SRV_FORM_INPAINT = 0, SRV_FORM_INDEX, SRV_FORM_EDITS } srv_form_kind;
#define SRV_FORM_KINDS 3
typedef struct srv_form srv_form;

/* Starts a form for a request whose Content-Type is `content_type`. Fails with 415 for a type
 * that is not multipart/form-data and 400 for a missing or invalid boundary. */
int srv_form_new(srv_form_kind kind, const char *content_type, srv_form **out, srv_error *err);
/* Feeds the next piece of the body; 0 on success, else the error status (400 malformed, 422
 * unknown or repeated field, 413 too many parts). After an error the form refuses more input. */
int srv_form_feed(srv_form *f, const uint8_t *data, size_t len, srv_error *err);
/* Ends the body and hands the fields over (the form keeps nothing). 0 or an error status. */
int srv_form_finish_inpaint(srv_form *f, srv_inpaint_args *out, srv_error *err);
int srv_form_finish_index(srv_form *f, srv_index_args *out, srv_error *err);
/* The SRV_FORM_EDITS form (OpenAI's image edit API; docs/http-api.md): `image`, or `image[]` of
 * which the first is kept and the others dropped; optional `mask` (its alpha 0 is the hole:
 * out->mask_alpha), else the image's own alpha (out->mask_from_alpha); `output_format` png, jpeg
 * or webp (out->format; png when not given); `model`, `user` and `size` (auto or WxH) into `ex`;
 * `prompt`, `quality`, `background`, `input_fidelity`, `moderation`, `output_compression` (0..100)
 * and `partial_images` (0..3) checked where they have a syntax, and ignored. Every fault is 400
 * with err->param naming the field: unknown_field, repeated_field, invalid_field, missing_field,
 * empty_image, empty_mask_file, and unsupported_value for what cannot be honoured: n other than 1,
 * stream=true, response_format=url (the image's size is checked by the handler). The statuses of
 * the form layer (413, 503) otherwise. Text fields are at most SRV_EDITS_TEXT_MAX bytes, `prompt`
 * any length (not kept). */
int srv_form_finish_edits(srv_form *f, srv_inpaint_args *out, srv_edits_args *ex, srv_error *err);
/* Frees the form and any fields it still holds; NULL is a no-op. */
void srv_form_free(srv_form *f);

/* Caller-supplied references (both forms): `reference` images and `reference_id`s (integers
 * 0..2^53) are exclusive (422 conflicting_fields), at most SRV_MAX_REFERENCES of either (422
 * too_many_references), only with method sim (422 conflicting_fields); an empty reference image is
 * 400 empty_reference. In a multipart form both are repeated parts; in JSON, arrays ("reference":
 * [base64, ...], "reference_id": [integer, ...]). */

/* Parses a JSON inpainting body {"image", "mask", "method", "format", "quality",
 * "mask_from_alpha", "reference", "reference_id", "model"} (model: "auto" or a family name, 1..31
 * of a-z and 0-9, else 422 invalid_field; whether the family exists is the handler's check): image and mask as base64 or data URLs, mask_from_alpha a boolean (true: no
 * mask, the image's alpha is the mask; with a mask too, 422 conflicting_fields; without either,
 * 422 missing_field). One linear pass over the raw bytes, allocating nothing, checks the
 * syntax of the whole body (at most 64 levels of nesting) and its shape before anything is
 * decoded: the root must be one object (only whitespace after it) whose members are among those
 * six, each at most once; image, mask, method and format strings, quality a number,
 * mask_from_alpha true or false; method and
 * format at most 64 bytes once unescaped, quality at most 32 characters; image and mask are
 * bounded only by the body. A syntax error wins over a shape fault; of shape faults the first in
 * the body is reported. 400 empty_body, malformed_json (syntax, too deep, or a root that is not an
 * object) or invalid_base64; 422 unknown_field, repeated_field, invalid_field (wrong type, too
 * long, a value out of range or holding a NUL) or missing_field; 400 empty_image or
 * empty_mask_file; 503 out_of_memory. 0 on success with `out` owning the decoded bytes; on
 * failure `out` holds nothing. */
int srv_parse_inpaint_json(const uint8_t *body, size_t len, srv_inpaint_args *out, srv_error *err);

/* Parses a JSON index body {"images": [base64 or data URL, ...], "names": [string, ...]} with the
 * same single checking pass: at most those two members, once each, both arrays of strings (nothing
 * nested deeper); images 1..SRV_INDEX_MAX_IMAGES items (413 too_many_images past that), names as
 * many as images (422 invalid_field otherwise), each name at most 255 bytes once unescaped and
 * without NUL (422 invalid_field). Other statuses as srv_parse_inpaint_json, with 422
 * missing_field for a missing or empty images array and 400 empty_image for an empty image. */
int srv_parse_index_json(const uint8_t *body, size_t len, srv_index_args *out, srv_error *err);

/* The image format an Accept header asks for: the first of image/webp, image/png, image/jpeg
 * (image/jpg) in the header's order, skipping ranges with q=0 (other q values and wildcards are not
 * weighed); IMG_FMT_UNKNOWN (0) when it names none of them or is NULL. Returns an img_format. */
int srv_accept_image_format(const char *accept);

/* Decodes standard or URL-safe base64 (padding optional, ASCII whitespace ignored), or a
 * `data:[type];base64,` URL, into a malloc'ed buffer. SP_ERR_FORMAT on any other byte, a
 * misplaced '=' or a dangling character. */
sp_status srv_b64_decode(const char *s, size_t n, uint8_t **out, size_t *outlen);

/* Encodes to standard base64 with padding; returns a malloc'ed NUL-terminated string (NULL on
 * allocation failure) and its length in *outlen. */
char *srv_b64_encode(const uint8_t *data, size_t n, size_t *outlen);

#endif
