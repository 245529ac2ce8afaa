/* srv_http_int.h: INTERNAL to server/ (never included outside it): the server and request structs, the route table's entry, and the helpers that the HTTP glue, the route table and the handler files share. */
#ifndef SRV_HTTP_INT_H
#define SRV_HTTP_INT_H

/*
 * Who does what (docs/http-api.md is the contract):
 *   srv_server.c   the lifecycle of srv.h: start (token, metrics, pools, listening address), load,
 *                  reload, drain, free; --check-config's file checks
 *   srv_http.c     libmicrohttpd's callbacks: a request's headers, body buffering, admission,
 *                  answers and errors, the log line and the request metrics
 *   srv_routes.c   the route table: matching, 404 and 405 with Allow, readiness, auth, and the
 *                  executor's queue before an inpainting body
 *   srv_h_get.c    the GET handlers: healthz, readyz, metrics, info, images, openapi, the web page
 *   srv_h_inpaint.c  POST /v1/inpaint's and POST /v1/images/edits' stages on the pools
 *                  (core/request.h does the work)
 *   srv_h_admin.c  POST /v1/index/images and POST /v1/admin/reload
 */

#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/sp.h"
#include "core/config.h"
#include "core/engine.h"
#include "core/exec.h"
#include "core/metrics.h"
#include "core/pool.h"
#include "core/request.h"
#include "imaging/img.h"
#include "server/srv.h"
#include "server/srv_request.h"

/* ---- the server ---- */

typedef enum { ST_LOADING = 0, ST_READY, ST_DRAINING, ST_FAILED } server_state;

struct srv_server {
    cfg_config cfg;
    struct MHD_Daemon *mhd;
    int port;
    atomic_int state;
    char token[512]; /* bearer token of the routes with auth; "" = the SRV_AUTH_BEARER routes are off */
    core_engine *engine;
    core_exec *exec;
    atomic_int inflight;
    atomic_int admitted; /* inpainting requests past admission and not yet completed */
    int max_admitted;    /* their bound (see srv_server_new) */
    atomic_long buffered; /* request body bytes held (server.max_buffered_bytes) */
    atomic_long pixels;   /* decoded image pixels held (server.max_pixels_in_flight) */
    core_pool *work;       /* decode, paste and encode: off the HTTP threads */
    core_pool *telea;      /* the workers of method=telea */
    atomic_uint_fast64_t next_id;
    unsigned id_prefix;
    double started;
    pthread_mutex_t reload_mu; /* one reload at a time */
    atomic_int reload_threads; /* reload threads that may still touch a suspended request */
    char load_error[512];
    /* metrics */
    core_metrics *metrics;
    core_family *m_requests, *m_duration, *m_stage, *m_batch, *m_depth, *m_inflight, *m_rejected, *m_index,
        *m_build, *m_gpu, *m_inpaint;
};

/* ---- the route table (srv_routes.c) ---- */

typedef struct req req;

/* Who may call a route. */
typedef enum {
    SRV_AUTH_NONE = 0,
    SRV_AUTH_BEARER,        /* the server.auth_token_file token; 403 disabled when none is configured */
    SRV_AUTH_BEARER_IMAGES, /* the token too, when server.images_require_token is true */
} srv_auth;

/* What a route does with a request body. */
typedef enum {
    SRV_BODY_NONE = 0, /* none expected: whatever comes is read and dropped */
    SRV_BODY_INPAINT,  /* an inpainting form or JSON (srv_inpaint_args, in r->args); the executor's
                        * queue is checked before the body, an admission slot taken once it is in */
    SRV_BODY_INDEX,    /* an index form or JSON (srv_index_args, in r->xargs) */
    SRV_BODY_IGNORED,  /* may come, is read and dropped; the request is a change all the same */
} srv_body;

/* The API a route speaks: its error bodies and, for an inpainting route, its form and answer. */
typedef enum {
    SRV_API_NATIVE = 0, /* semipaint's: {"error": {"code", "message"}} */
    SRV_API_OPENAI,     /* OpenAI's image edit API: {"error": {"message", "type", "param", "code"}}, the
                         * edits form (srv_form_finish_edits), {"created", "data": [{"b64_json"}]} */
} srv_api;

/* Answers the request, or starts its work and suspends the connection; called once the request
 * is complete and its body (if the route takes one) parsed. `arg` is the path parameter of a
 * prefix route (what follows the prefix, never empty), NULL for the others. */
typedef enum MHD_Result (*srv_handler)(req *r, const char *arg);
/* Answers a request whose connection the work started by the handler resumed. */
typedef enum MHD_Result (*srv_resumer)(req *r);

/* One route. A path has one entry per method (today: one method per path); GET also answers
 * HEAD. Readiness: a route with a body (any kind but SRV_BODY_NONE) is refused before its body
 * and the refusal is counted in semipaint_rejected_total; the others are answered 503 when
 * complete, uncounted. */
typedef struct {
    const char *method;  /* "GET" or "POST"; NULL only for srv_route_none */
    const char *path;    /* the whole path, or its prefix when `prefix` */
    int prefix;          /* 1: `path` followed by a non-empty parameter */
    const char *label;   /* the route as metrics, logs and error messages name it */
    srv_handler start;   /* NULL only for srv_route_none */
    srv_resumer resumed; /* for a handler that suspends the connection; else NULL */
    srv_auth auth;
    int needs_ready;     /* answered 503 not_ready (loading) or draining unless the server is ready */
    srv_body body;
    int quiet;           /* probes and scrapes: logged at debug level when they succeed */
    srv_api api;
} srv_route;

/* What a request on no route is labelled with (label "other", method NULL): answered 404. */
extern const srv_route srv_route_none;

/* The route of `url` for `method`: the entry with this path and method, else the first with this
 * path (then srv_route_check answers 405), else &srv_route_none. Never NULL. */
const srv_route *srv_route_match(const char *url, const char *method);

/* The path parameter of `url` on route `rt` (see srv_handler), NULL for an exact route. */
const char *srv_route_arg(const srv_route *rt, const char *url);

/* Writes the Allow header of a 405 on `rt`'s path into `out`: its methods, ", HEAD" after GET. */
void srv_route_allow(const srv_route *rt, char *out, size_t cap);

/* The checks of a request's headers that its route decides, in this order: 404 without a route,
 * 405 for another method, 503 when a route with a body needs a ready server, the route's auth
 * (401, 403), and for an inpainting route the executor's queue (503 overloaded). 0 to go on, else
 * the status with the error recorded in r->err (srv_head_error). */
int srv_route_check(req *r, const char *url, const char *method);

/* Records 503 not_ready or draining in r->err when the server is not ready (Retry-After 1; with
 * `count`, in semipaint_rejected_total too). 0 when it is ready. */
int srv_route_ready(req *r, int count);

/* ---- one request ---- */

typedef enum { PH_HEADERS = 0, PH_BODY, PH_WAITING, PH_RESUMED, PH_ANSWERED } phase;

struct req {
    srv_server *srv;
    struct MHD_Connection *conn;
    const srv_route *route; /* never NULL (srv_route_none) */
    const char *method;
    char id[72];
    double t0, deadline;
    phase phase;
    int admitted; /* holds one of the server's admission slots */
    unsigned idle_s; /* the connection's idle timeout now, seconds */
    long buffered; /* body bytes counted in srv->buffered */
    long pixels;   /* pixels counted in srv->pixels */
    core_job job;   /* the stage queued on a pool (prepare, telea, finish) */
    int stage_failed; /* an off-thread stage recorded an error in err */
    void *out;     /* the prepared answer: body (malloc'ed), length, type, headers */
    size_t out_len;
    const char *out_ctype;
    char server_timing[512];
    char neighbors[1024];
    /* body */
    int is_json, want_json;
    size_t body_len, discarded;
    uint8_t *body;
    size_t body_cap;
    srv_form *form;
    int failed;
    srv_error err;
    int retry_after; /* seconds, for 503 */
    /* inpaint */
    srv_inpaint_args args;
    srv_edits_args edits; /* POST /v1/images/edits' own fields */
    img_format in_fmt;
    img_format accept_fmt; /* the image format the Accept header asks for; UNKNOWN = none */
    core_request cr; /* the image, hole map, crops and executor work (core/request.h) */
    core_route choice; /* the family that served it and, for model=auto, why */
    core_work work;  /* an index task */
    double decode_ms, encode_ms;
    /* index */
    srv_index_args xargs;
    uint8_t *rgb;
    int64_t *new_ids;
    sp_status task_status;
    char task_error[256];
    long db_count;
    /* outcome, for the log line */
    int status;
    size_t bytes_out;
    char timings[256];
};

/* ---- answers and errors (srv_http.c) ---- */

/* Answers `status` with `body` of `len` bytes: malloc'ed and taken over when `owned` (freed even
 * on failure), else static. With `hold`, the response is handed to the caller, who adds headers
 * and queues it with srv_queue_held; else it is queued. Adds X-Request-Id (and Connection: close
 * while draining), records the status and length for the log, and marks the request answered. */
enum MHD_Result srv_answer(req *r, int status, const char *ctype, void *body, size_t len, int owned,
                           struct MHD_Response **hold);

/* Queues a response held by srv_answer with the status recorded there, and releases it. */
enum MHD_Result srv_queue_held(req *r, struct MHD_Response *resp);

/* Answers the JSON error {"error": {"code", "message"}} of `e` (copied into r->err; may be
 * &r->err) or, on a SRV_API_OPENAI route, OpenAI's {"error": {"message", "type", "param", "code"}}
 * (type invalid_request_error below 500, server_error from 500; param e->param or null) with the
 * same status, with Retry-After (r->retry_after, at least 1) on 503, Allow on 405 and
 * WWW-Authenticate on 401. */
enum MHD_Result srv_answer_error(req *r, const srv_error *e);

/* Answers the error `status` `code` with a printf message (see srv_answer_error). */
enum MHD_Result srv_failv(req *r, int status, const char *code, const char *fmt, va_list ap);

/* srv_failv with the arguments inline. (The short name lets tests/it_docs.sh find the error
 * codes given with a literal status in the sources.) */
static inline enum MHD_Result fail(req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline enum MHD_Result fail(req *r, int status, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    enum MHD_Result ret = srv_failv(r, status, code, fmt, ap);
    va_end(ap);
    return ret;
}

/* Answers `root` (taken over) as JSON; 503 out_of_memory when it cannot be printed. */
enum MHD_Result srv_answer_json(req *r, int status, cJSON *root);

/* Answers the static NUL-terminated `text` (not copied) as `ctype`. */
enum MHD_Result srv_answer_text(req *r, int status, const char *ctype, const char *text);

/* Records an error in r->err (and r->failed) without answering: it is answered at once when a body
 * is coming (which is then not read, and the connection closes), else when the request completes
 * (keep-alive). Returns `status`. */
int srv_head_error(req *r, int status, const char *code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Records a 503 overloaded of load shedding for reason `why` (a semipaint_rejected_total label,
 * counted there), with Retry-After r->retry_after (at least 1). Returns 503. */
int srv_refuse(req *r, const char *why);

/* Counts `px` more decoded pixels for the request against server.max_pixels_in_flight until the
 * request ends. 0, or 503 recorded in r->err (srv_refuse "pixels"). */
int srv_hold_pixels(req *r, long px);

/* ---- libmicrohttpd's callbacks (srv_http.c), for srv_server_new; `cls` is the srv_server ---- */

/* MHD_AccessHandlerCallback: each call of a request (headers, body pieces, completion, resumption). */
enum MHD_Result srv_on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                               const char *version, const char *upload_data, size_t *upload_size, void **con_cls);

/* MHD_RequestCompletedCallback: the log line and the request metrics; frees the request. */
void srv_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe);

/* MHD_LogCallback: libmicrohttpd's messages at debug level. */
void srv_mhd_log(void *cls, const char *fmt, va_list ap);

/* ---- handlers (the table's start and resumed) ---- */

/* srv_h_get.c: GET /healthz, /readyz (200, or 503 loading, load_failed, draining), /metrics,
 * /openapi.yaml, / (the web page, or 404 when server.web_ui is false), /v1/info and
 * /v1/images/{id} (arg: the id; 404 for anything but a database id). */
/* The family a request names in `model` (the inpainting field, or the query parameter ?model= of
 * the database routes; NULL or "" = `dflt`, "auto" allowed only when allow_auto): *fam is its
 * index, or -1 for auto. 0, or 422 unknown_model (listing the families) in r->err. */
int srv_family(req *r, const char *model, int allow_auto, int dflt, int *fam);

enum MHD_Result srv_get_healthz(req *r, const char *arg);
enum MHD_Result srv_get_readyz(req *r, const char *arg);
enum MHD_Result srv_get_metrics(req *r, const char *arg);
enum MHD_Result srv_get_openapi(req *r, const char *arg);
enum MHD_Result srv_get_root(req *r, const char *arg);
enum MHD_Result srv_get_info(req *r, const char *arg);
enum MHD_Result srv_get_image(req *r, const char *arg);

/* srv_h_inpaint.c: POST /v1/inpaint and POST /v1/images/edits (r->route->api). srv_inpaint_start hands the parsed request (r->args) to the
 * work pool and suspends the connection (503 overloaded "inflight" when the pool refuses);
 * srv_inpaint_send answers what the stages prepared, or the error one of them recorded. */
enum MHD_Result srv_inpaint_start(req *r, const char *arg);
enum MHD_Result srv_inpaint_send(req *r);

/* Decodes one uploaded image `b` (`what` names it in errors), mapping failures to 415 (not an
 * image), 413 (too many pixels), 400 (corrupt or truncated) and 503 (memory, or
 * server.max_pixels_in_flight: with `count`, its pixels are counted there from before the decoding
 * until the request ends). Returns 0 with *out and *fmt set, or the status with r->err set. */
int srv_decode_upload(req *r, const srv_blob *b, const char *what, int count, img_u8 *out, img_format *fmt);

/* srv_h_admin.c: POST /v1/index/images (r->xargs decoded, squared and appended by an executor
 * task) and POST /v1/admin/reload (a reload thread); each suspends the connection until its work
 * is done. 422 no_database without a database. */
enum MHD_Result srv_index_start(req *r, const char *arg);
enum MHD_Result srv_index_resumed(req *r);
enum MHD_Result srv_reload_start(req *r, const char *arg);
enum MHD_Result srv_reload_resumed(req *r);

#endif
