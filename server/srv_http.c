/* srv_http.c: semipaintd's HTTP side on libmicrohttpd: routing, limits, auth, request bodies, suspend/resume around the executor, answers, logs, metrics, drain. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gen/openapi_yaml.h"
#include "server/srv.h"
#include "core/engine.h"
#include "core/exec.h"
#include "core/metrics.h"
#include "imaging/plan.h"
#include "core/pool.h"
#include "core/request.h"
#include "server/srv_request.h"
#include "server/srv_web.h"
#include "imaging/telea.h"

#define DISCARD_FACTOR 2 /* after an error, read at most this many times max_body_bytes more before closing */

/* ---- routes ---- */

typedef enum {
    R_INPAINT = 0,
    R_HEALTHZ,
    R_READYZ,
    R_METRICS,
    R_INFO,
    R_IMAGE,
    R_OPENAPI,
    R_ROOT,
    R_INDEX,
    R_RELOAD,
    R_OTHER,
    R_COUNT
} route_id;

/* label: the route as metrics and logs name it; methods: the one method it answers (GET routes
 * also answer HEAD). */
static const struct {
    const char *label, *method;
    int mutating;
} routes[R_COUNT] = {
    [R_INPAINT] = {"/v1/inpaint", "POST", 0},  [R_HEALTHZ] = {"/healthz", "GET", 0},
    [R_READYZ] = {"/readyz", "GET", 0},        [R_METRICS] = {"/metrics", "GET", 0},
    [R_INFO] = {"/v1/info", "GET", 0},         [R_IMAGE] = {"/v1/images/{id}", "GET", 0},
    [R_OPENAPI] = {"/openapi.yaml", "GET", 0}, [R_ROOT] = {"/", "GET", 0},
    [R_INDEX] = {"/v1/index/images", "POST", 1}, [R_RELOAD] = {"/v1/admin/reload", "POST", 1},
    [R_OTHER] = {"other", NULL, 0},
};

static int get_route(route_id rt) { return routes[rt].method && !strcmp(routes[rt].method, "GET"); }

static route_id match_route(const char *url) {
    if (!strcmp(url, "/v1/inpaint") || !strcmp(url, "/inpaint")) return R_INPAINT;
    if (!strcmp(url, "/healthz")) return R_HEALTHZ;
    if (!strcmp(url, "/readyz")) return R_READYZ;
    if (!strcmp(url, "/metrics")) return R_METRICS;
    if (!strcmp(url, "/v1/info")) return R_INFO;
    if (!strncmp(url, "/v1/images/", 11) && url[11]) return R_IMAGE;
    if (!strcmp(url, "/openapi.yaml")) return R_OPENAPI;
    if (!strcmp(url, "/")) return R_ROOT;
    if (!strcmp(url, "/v1/index/images")) return R_INDEX;
    if (!strcmp(url, "/v1/admin/reload")) return R_RELOAD;
    return R_OTHER;
}

/* ---- the server ---- */

typedef enum { ST_LOADING = 0, ST_READY, ST_DRAINING, ST_FAILED } server_state;

struct srv_server {
    cfg_config cfg;
    struct MHD_Daemon *mhd;
    int port;
    atomic_int state;
    char token[512]; /* bearer token of mutating routes; "" = those routes are off */
    core_engine *engine;
    core_exec *exec;
    int s; /* working size */
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
        *m_build, *m_gpu;
};

/* ---- one request ---- */

typedef enum { PH_HEADERS = 0, PH_BODY, PH_WAITING, PH_RESUMED, PH_ANSWERED } phase;

typedef struct {
    srv_server *srv;
    struct MHD_Connection *conn;
    route_id route;
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
    img_format in_fmt;
    core_request cr; /* the image, hole map, crops and executor work (core/request.h) */
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
} req;

static void req_free(req *r) {
    if (!r) return;
    if (r->buffered) atomic_fetch_sub(&r->srv->buffered, r->buffered);
    if (r->pixels) atomic_fetch_sub(&r->srv->pixels, r->pixels);
    free(r->body);
    srv_form_free(r->form);
    srv_inpaint_args_free(&r->args);
    core_request_free(&r->cr);
    free(r->out);
    srv_index_args_free(&r->xargs);
    free(r->rgb);
    free(r->new_ids);
    free(r);
}

static int hold_pixels(req *r, long px);
static int refuse(req *r, const char *why);

/* Appends a JSON string literal of `s` (quotes included) to out. */
static void json_str(char *out, size_t cap, const char *s) {
    size_t k = 0;
    if (cap < 3) return;
    out[k++] = '"';
    for (; *s && k + 8 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') out[k++] = '\\', out[k++] = (char)c;
        else if (c < 0x20) k += (size_t)snprintf(out + k, cap - k, "\\u%04x", c);
        else out[k++] = (char)c;
    }
    out[k++] = '"';
    out[k] = 0;
}

/* ---- answers ---- */

static void add_common_headers(req *r, struct MHD_Response *resp) {
    MHD_add_response_header(resp, "X-Request-Id", r->id);
    if (atomic_load(&r->srv->state) == ST_DRAINING) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
}

/* Queues an answer whose body is malloc'ed `body` (taken over) or a static string (`owned` = 0). */
static enum MHD_Result answer(req *r, int status, const char *ctype, void *body, size_t len, int owned,
                              struct MHD_Response **hold) {
    struct MHD_Response *resp =
        owned ? MHD_create_response_from_buffer_with_free_callback(len, body, free)
              : MHD_create_response_from_buffer(len, body, MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        if (owned) free(body);
        return MHD_NO;
    }
    if (ctype) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    add_common_headers(r, resp);
    r->status = status;
    r->bytes_out = len;
    r->phase = PH_ANSWERED;
    if (hold) {
        *hold = resp; /* the caller adds headers, queues and destroys */
        return MHD_YES;
    }
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result queue_held(req *r, struct MHD_Response *resp) {
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* A JSON error {"error": {"code", "message"}} with Retry-After on 503 and Allow on 405. */
static enum MHD_Result answer_error(req *r, const srv_error *e) {
    cJSON *root = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(err, "code", e->code ? e->code : "error");
    cJSON_AddStringToObject(err, "message", e->message);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) return MHD_NO;
    r->err = *e;
    r->failed = 1;
    struct MHD_Response *resp;
    if (answer(r, e->status, "application/json", text, strlen(text), 1, &resp) != MHD_YES) return MHD_NO;
    if (e->status == 503) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", r->retry_after > 0 ? r->retry_after : 1);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (e->status == 405 && routes[r->route].method) {
        char allow[32];
        snprintf(allow, sizeof allow, "%s%s", routes[r->route].method,
                 strcmp(routes[r->route].method, "GET") ? "" : ", HEAD");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    }
    if (e->status == 401) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"semipaintd\"");
    return queue_held(r, resp);
}

static enum MHD_Result fail(req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static enum MHD_Result fail(req *r, int status, const char *code, const char *fmt, ...) {
    srv_error e = {status, code, ""};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    return answer_error(r, &e);
}

static enum MHD_Result answer_json(req *r, int status, cJSON *root) {
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) return fail(r, 503, "out_of_memory", "out of memory");
    size_t n = strlen(text);
    return answer(r, status, "application/json", text, n, 1, NULL);
}

static enum MHD_Result answer_text(req *r, int status, const char *ctype, const char *text) {
    return answer(r, status, ctype, (void *)text, strlen(text), 0, NULL);
}

/* ---- auth ---- */

static int head_error(req *r, int status, const char *code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* 0 when the request carries the configured bearer token, else the error is recorded in r->err. */
static int check_auth(req *r) {
    srv_server *s = r->srv;
    if (!s->token[0])
        return head_error(r, 403, "disabled", "%s changes the server and is off: no server.auth_token_file is configured",
                          routes[r->route].label);
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7))
        return head_error(r, 401, "unauthorized", "%s needs an Authorization: Bearer <token> header", routes[r->route].label);
    const char *tok = h + 7;
    while (*tok == ' ') tok++;
    size_t a = strlen(tok), b = strlen(s->token);
    unsigned diff = (unsigned)(a ^ b);
    for (size_t i = 0; i < b; i++) diff |= (unsigned)(unsigned char)s->token[i] ^ (unsigned)(unsigned char)(i < a ? tok[i] : 0);
    if (diff) return head_error(r, 403, "forbidden", "the bearer token is not the configured one");
    return 0;
}

/* ---- GET routes ---- */

static enum MHD_Result get_info(req *r) {
    srv_server *s = r->srv;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", "semipaintd");
    cJSON_AddStringToObject(o, "version", SP_VERSION);
    cJSON_AddStringToObject(o, "paper", "Semi-parametric Image Inpainting (Iskakov, 2018)");
    core_engine_info(s->engine, o);
    cJSON *lim = cJSON_AddObjectToObject(o, "limits");
    cJSON_AddNumberToObject(lim, "max_body_bytes", (double)s->cfg.server.max_body_bytes);
    cJSON_AddNumberToObject(lim, "max_image_pixels", (double)s->cfg.server.max_image_pixels);
    cJSON_AddNumberToObject(lim, "request_timeout_ms", s->cfg.server.request_timeout_ms);
    cJSON *b = cJSON_AddObjectToObject(o, "batching");
    cJSON_AddNumberToObject(b, "max_batch", s->cfg.batching.max_batch);
    cJSON_AddNumberToObject(b, "max_delay_ms", s->cfg.batching.max_delay_ms);
    cJSON_AddNumberToObject(b, "queue_capacity", s->cfg.batching.queue_capacity);
    cJSON *ip = cJSON_AddObjectToObject(o, "inpaint");
    cJSON_AddStringToObject(ip, "strategy", cfg_enum_name("inpaint", "strategy", s->cfg.inpaint.strategy));
    cJSON_AddNumberToObject(ip, "crop_margin", s->cfg.inpaint.crop_margin);
    cJSON_AddStringToObject(ip, "default_format", cfg_enum_name("inpaint", "default_format", s->cfg.inpaint.default_format));
    const char *methods[] = {"sim", "coarse", "telea"};
    cJSON_AddItemToObject(ip, "methods", cJSON_CreateStringArray(methods, 3));
    cJSON_AddBoolToObject(o, "index_writable", s->token[0] && core_engine_has_db(s->engine));
    cJSON_AddNumberToObject(o, "uptime_s", sp_now() - s->started);
    return answer_json(r, 200, o);
}

static enum MHD_Result get_image(req *r, const char *url) {
    const char *p = url + 11;
    char *end;
    errno = 0;
    long long id = strtoll(p, &end, 10);
    if (!isdigit((unsigned char)*p) || *end || errno)
        return fail(r, 404, "not_found", "image ids are non-negative integers, not '%.64s'", p);
    img_u8 im;
    if (core_engine_image(r->srv->engine, id, &im)) return fail(r, 404, "not_found", "%s", sp_err_msg());
    uint8_t *buf;
    size_t len;
    sp_status st = img_encode(&im, IMG_FMT_JPEG, r->srv->cfg.inpaint.jpeg_quality, &buf, &len);
    img_free(&im);
    if (st) return fail(r, 503, "encode_failed", "%s", sp_err_msg());
    struct MHD_Response *resp;
    if (answer(r, 200, "image/jpeg", buf, len, 1, &resp) != MHD_YES) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "public, max-age=3600");
    return queue_held(r, resp);
}

static enum MHD_Result get_metrics(req *r) {
    size_t len;
    char *text = core_metrics_render(r->srv->metrics, &len);
    if (!text) return fail(r, 503, "out_of_memory", "out of memory");
    return answer(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, 1, NULL);
}

/* ---- inpainting ---- */

/* Decodes one uploaded image, mapping failures to 415 (not an image), 413 (too many pixels),
 * 400 (corrupt or truncated) and 503 (memory, or server.max_pixels_in_flight: with `count`, its
 * pixels are counted there from before the decoding until the request ends; a mask, which has
 * the image's size and lives only until the hole map is made, is not counted). Returns 0 or the
 * status with r->err set. */
static int decode_upload(req *r, const srv_blob *b, const char *what, int count, img_u8 *out, img_format *fmt) {
    long maxpx = r->srv->cfg.server.max_image_pixels;
    img_format f;
    int w, h;
    if (img_sniff(b->data, b->len) == IMG_FMT_UNKNOWN)
        return srv_error_set(&r->err, 415, "unsupported_image", "the %s is neither a JPEG nor a PNG", what);
    if (img_probe(b->data, b->len, &f, &w, &h))
        return srv_error_set(&r->err, 400, "bad_image", "the %s has a corrupt header: %s", what, sp_err_msg());
    if ((long long)w * h > maxpx)
        return srv_error_set(&r->err, 413, "image_too_large", "the %s is %dx%d = %lld pixels; the limit is %ld", what, w,
                             h, (long long)w * h, maxpx);
    if (count && hold_pixels(r, (long)w * h)) return r->err.status;
    sp_status st = img_decode(b->data, b->len, maxpx, out, fmt);
    if (st == SP_ERR_LIMIT)
        return srv_error_set(&r->err, 413, "image_too_large", "the %s: %s", what, sp_err_msg());
    if (st == SP_ERR_NOMEM) {
        r->retry_after = 5;
        return srv_error_set(&r->err, 503, "out_of_memory", "no memory to decode the %s", what);
    }
    if (st) return srv_error_set(&r->err, 400, "bad_image", "the %s cannot be decoded: %s", what, sp_err_msg());
    return 0;
}

/* Called by the executor when every crop is back or the work failed. */
static void work_done(core_work *w) {
    req *r = w->user;
    MHD_resume_connection(r->conn); /* last touch: the HTTP thread owns r again */
}

static void format_timings(req *r, double total_ms, char *server_timing, size_t cap, cJSON *json) {
    int queued = r->cr.work.n > 0, sim = queued && r->cr.work.method == NN_METHOD_SIM;
    int retrieval = sim && core_engine_k(r->srv->engine) > 0;
    struct {
        const char *name;
        double ms;
        int used;
    } st[] = {
        {"decode", r->decode_ms, 1},
        {"queue", r->cr.work.queue_ms, queued},
        {"coarse", r->cr.work.t.coarse, queued},
        {"descriptor", r->cr.work.t.descriptor, retrieval},
        {"search", r->cr.work.t.search, retrieval},
        {"refine", r->cr.work.t.refine, sim},
        {"telea", r->cr.telea_ms, r->args.method == SRV_METHOD_TELEA},
        {"encode", r->encode_ms, 1},
        {"total", total_ms, 1},
    };
    size_t k = 0, tk = 0;
    server_timing[0] = 0;
    tk += (size_t)snprintf(r->timings + tk, sizeof r->timings - tk, "{");
    for (size_t i = 0; i < sizeof st / sizeof st[0]; i++) {
        if (!st[i].used) continue;
        k += (size_t)snprintf(server_timing + k, k < cap ? cap - k : 0, "%s%s;dur=%.2f", k ? ", " : "", st[i].name,
                              st[i].ms);
        if (tk < sizeof r->timings)
            tk += (size_t)snprintf(r->timings + tk, sizeof r->timings - tk, "%s\"%s\":%.2f", tk > 1 ? "," : "",
                                   st[i].name, st[i].ms);
        if (json) cJSON_AddNumberToObject(json, st[i].name, round(st[i].ms * 100) / 100);
    }
    if (tk < sizeof r->timings) snprintf(r->timings + tk, sizeof r->timings - tk, "}");
}

/* An inpainting request runs in stages, none of them on an HTTP thread once its body is parsed:
 *   prepare (work pool): decode, hole map, then telea (telea pool) or crops to the executor;
 *   finish (work pool): paste, encode, the answer's bytes and headers;
 *   send (HTTP thread, on resumption): the prepared answer, or the error recorded on the way.
 * Each stage owns the request until it hands it on; the last touch of a stage off the HTTP
 * threads is MHD_resume_connection. */

static void finish_job(core_job *job, int cancelled);

/* Ends the off-thread stages: the HTTP thread takes the request back and sends what is ready. */
static void hand_back(req *r) { MHD_resume_connection(r->conn); }

/* Records an error of an off-thread stage and hands the request back. */
static void stage_fail(req *r) {
    r->stage_failed = 1;
    hand_back(r);
}

/* Queues the finish stage on the work pool, or hands back a 503 when it cannot take it. */
static void to_finish(req *r) {
    r->job.run = finish_job;
    if (core_pool_submit(r->srv->work, &r->job)) {
        r->retry_after = 1;
        srv_error_set(&r->err, 503, "shutting_down", "the server is shutting down");
        stage_fail(r);
    }
}

/* Called by the executor when every crop of the request is back or the work failed. */
static void inpaint_done(core_work *w) { to_finish(w->user); }

/* Paste and encode: the answer's body and headers in r->out*. 0, or the status with r->err set. */
static int finish_build(req *r) {
    srv_server *s = r->srv;
    double t0 = sp_now();
    int k = core_engine_k(s->engine);
    int n = r->cr.work.n;
    if (n > 0 && core_request_finish(&r->cr))
        return srv_error_set(&r->err, 503, "out_of_memory", "no memory to paste the result");
    img_format fmt = (img_format)r->args.format;
    if (fmt == IMG_FMT_UNKNOWN) {
        int df = s->cfg.inpaint.default_format;
        fmt = df == CFG_FORMAT_PNG ? IMG_FMT_PNG : df == CFG_FORMAT_JPEG ? IMG_FMT_JPEG : r->in_fmt;
    }
    int quality = r->args.quality ? r->args.quality : s->cfg.inpaint.jpeg_quality;
    uint8_t *enc;
    size_t len;
    if (img_encode(&r->cr.im, fmt, quality, &enc, &len)) {
        r->retry_after = 5;
        return srv_error_set(&r->err, 503, "encode_failed", "the answer could not be encoded (out of memory?)");
    }
    r->encode_ms = (sp_now() - t0) * 1e3;
    core_metric_observe(s->m_stage, (const char *[]){"encode"}, r->encode_ms / 1e3);

    /* neighbours: each crop's, best score per id, in crop order */
    size_t nk = 0;
    r->neighbors[0] = 0;
    cJSON *nb = cJSON_CreateArray();
    int use_nb = n > 0 && k > 0 && r->cr.work.method == NN_METHOD_SIM;
    for (int i = 0; use_nb && i < n * k; i++) {
        int dup = 0;
        for (int j = 0; j < i; j++) dup |= r->cr.ids[j] == r->cr.ids[i];
        if (dup) continue;
        float best = r->cr.scores[i];
        for (int j = i + 1; j < n * k; j++)
            if (r->cr.ids[j] == r->cr.ids[i] && r->cr.scores[j] > best) best = r->cr.scores[j];
        if (nk + 40 < sizeof r->neighbors)
            nk += (size_t)snprintf(r->neighbors + nk, sizeof r->neighbors - nk, "%s%lld:%.4f", nk ? "," : "",
                                   (long long)r->cr.ids[i], best);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "id", (double)r->cr.ids[i]);
        cJSON_AddNumberToObject(e, "score", round(best * 1e4) / 1e4);
        cJSON_AddItemToArray(nb, e);
    }
    double total = (sp_now() - r->t0) * 1e3;
    cJSON *tj = r->want_json ? cJSON_CreateObject() : NULL;
    format_timings(r, total, r->server_timing, sizeof r->server_timing, tj);
    if (!r->want_json) {
        cJSON_Delete(nb);
        r->out = enc;
        r->out_len = len;
        r->out_ctype = img_format_mime(fmt);
        return 0;
    }
    size_t blen;
    char *b64 = srv_b64_encode(enc, len, &blen);
    free(enc);
    cJSON *root = cJSON_CreateObject();
    if (!b64 || !root) {
        free(b64);
        cJSON_Delete(root);
        cJSON_Delete(tj);
        cJSON_Delete(nb);
        r->retry_after = 5;
        return srv_error_set(&r->err, 503, "out_of_memory", "out of memory");
    }
    cJSON_AddItemToObject(root, "image", cJSON_CreateStringReference(b64));
    cJSON_AddStringToObject(root, "format", img_format_name(fmt));
    cJSON_AddNumberToObject(root, "width", r->cr.im.w);
    cJSON_AddNumberToObject(root, "height", r->cr.im.h);
    cJSON_AddStringToObject(root, "method", srv_method_name(r->args.method));
    cJSON_AddItemToObject(root, "neighbors", nb);
    cJSON_AddItemToObject(root, "timings_ms", tj);
    cJSON_AddStringToObject(root, "request_id", r->id);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    free(b64);
    if (!text) {
        r->retry_after = 5;
        return srv_error_set(&r->err, 503, "out_of_memory", "out of memory");
    }
    r->out = text;
    r->out_len = strlen(text);
    r->out_ctype = "application/json";
    return 0;
}

/* The finish stage (work pool): maps the executor's or Telea's outcome to an answer or an error. */
static void finish_job(core_job *job, int cancelled) {
    req *r = (req *)((char *)job - offsetof(req, job));
    core_work *w = &r->cr.work;
    sp_status st = r->args.method == SRV_METHOD_TELEA ? r->task_status : w->n > 0 ? w->status : SP_OK;
    const char *why = r->args.method == SRV_METHOD_TELEA ? r->task_error : w->error;
    if (cancelled) {
        st = SP_ERR_BUSY;
        why = "the server is shutting down";
    }
    if (st == SP_ERR_TIMEOUT) {
        srv_error_set(&r->err, 504, "deadline_exceeded", "the answer was not ready within server.request_timeout_ms = %d",
                      r->srv->cfg.server.request_timeout_ms);
    } else if (st == SP_ERR_BUSY) {
        r->retry_after = 1;
        srv_error_set(&r->err, 503, "shutting_down", "%s", why);
    } else if (st == SP_ERR_NOMEM) {
        r->retry_after = 5;
        srv_error_set(&r->err, 503, "out_of_memory", "no memory for this image");
    } else if (st) {
        SP_ERROR("request %s: %s failed: %s", r->id, srv_method_name(r->args.method), why);
        srv_error_set(&r->err, 500, "inference_failed", "the inpainting failed; the server log has the details (request %s)",
                      r->id);
    } else if (!finish_build(r)) {
        hand_back(r);
        return;
    }
    stage_fail(r);
}

/* The Telea stage (telea pool): fills the hole within the request's deadline. */
static void telea_job(core_job *job, int cancelled) {
    req *r = (req *)((char *)job - offsetof(req, job));
    if (cancelled) {
        r->task_status = SP_ERR_BUSY;
        snprintf(r->task_error, sizeof r->task_error, "the server is shutting down");
    } else {
        r->task_status = core_request_telea(&r->cr, r->deadline);
        if (r->task_status) snprintf(r->task_error, sizeof r->task_error, "%s", sp_err_msg());
    }
    to_finish(r);
}

/* Decodes and prepares an inpainting request, then hands telea to its workers or queues crops.
 * 0 when the request went on to another stage, else the status with r->err set. */
static int prepare(req *r) {
    srv_server *s = r->srv;
    double t0 = sp_now();
    img_u8 im, mask;
    img_format mfmt;
    if (decode_upload(r, &r->args.image, "image", 1, &im, &r->in_fmt)) return r->err.status;
    if (decode_upload(r, &r->args.mask, "mask", 0, &mask, &mfmt)) {
        img_free(&im);
        return r->err.status;
    }
    /* the uploaded bytes are not needed any more: a queued request holds only its pixels */
    free(r->args.image.data);
    free(r->args.mask.data);
    r->args.image.data = r->args.mask.data = NULL;
    r->args.image.len = r->args.mask.len = 0;
    core_method method = r->args.method == SRV_METHOD_TELEA    ? CORE_METHOD_TELEA
                         : r->args.method == SRV_METHOD_COARSE ? CORE_METHOD_COARSE
                                                               : CORE_METHOD_SIM;
    core_fault fault;
    sp_status st = core_request_prepare(&r->cr, &s->cfg, s->s, core_engine_k(s->engine), method, &im, &mask, &fault);
    img_free(&mask);
    if (st) {
        img_free(&im);
        if (fault == CORE_FAULT_MASK_SIZE) return srv_error_set(&r->err, 422, "mask_size_mismatch", "%s", sp_err_msg());
        if (fault == CORE_FAULT_EMPTY_MASK) return srv_error_set(&r->err, 422, "empty_mask", "%s", sp_err_msg());
        r->retry_after = 5;
        return srv_error_set(&r->err, 503, "out_of_memory", "no memory to prepare the image");
    }
    r->decode_ms = (sp_now() - t0) * 1e3;
    core_metric_observe(s->m_stage, (const char *[]){"decode"}, sp_now() - t0);
    if (method == CORE_METHOD_TELEA) {
        r->job.run = telea_job;
        if (core_pool_submit(s->telea, &r->job)) {
            r->retry_after = 2;
            return refuse(r, "telea_queue");
        }
        return 0;
    }
    core_request_work(&r->cr, r->deadline);
    r->cr.work.done = inpaint_done;
    r->cr.work.user = r;
    int ra;
    if (core_exec_submit(s->exec, &r->cr.work, &ra)) {
        r->retry_after = ra;
        r->cr.work.n = 0;
        return srv_error_set(&r->err, 503, "overloaded", "%s", sp_err_msg());
    }
    return 0;
}

/* The prepare stage (work pool). */
static void prepare_job(core_job *job, int cancelled) {
    req *r = (req *)((char *)job - offsetof(req, job));
    if (cancelled) {
        r->retry_after = 1;
        srv_error_set(&r->err, 503, "shutting_down", "the server is shutting down");
        stage_fail(r);
    } else if (prepare(r)) {
        stage_fail(r);
    }
}

/* Sends the answer the stages prepared, or the error one of them recorded (HTTP thread). */
static enum MHD_Result inpaint_send(req *r) {
    if (r->stage_failed) return answer_error(r, &r->err);
    struct MHD_Response *resp;
    void *body = r->out;
    r->out = NULL; /* the response owns it now */
    if (answer(r, 200, r->out_ctype, body, r->out_len, 1, &resp) != MHD_YES) return MHD_NO;
    MHD_add_response_header(resp, "Server-Timing", r->server_timing);
    MHD_add_response_header(resp, "X-Neighbors", r->neighbors[0] ? r->neighbors : "none");
    MHD_add_response_header(resp, "X-Inpaint-Method", srv_method_name(r->args.method));
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return queue_held(r, resp);
}

/* Hands a parsed inpainting request to the work pool and suspends its connection. */
static enum MHD_Result inpaint_start(req *r) {
    r->job.run = prepare_job;
    r->phase = PH_WAITING;
    if (core_pool_submit(r->srv->work, &r->job)) {
        r->phase = PH_BODY;
        r->retry_after = 1;
        refuse(r, "inflight");
        return answer_error(r, &r->err);
    }
    /* A stage may already have resumed the connection: then MHD ignores this suspension. */
    MHD_suspend_connection(r->conn);
    return MHD_YES;
}

/* ---- index and reload ---- */

static void index_task(core_work *w) {
    req *r = w->user;
    srv_server *s = r->srv;
    const char *names[SRV_INDEX_MAX_IMAGES];
    for (int i = 0; i < r->xargs.n; i++) names[i] = r->xargs.images[i].name;
    r->task_status = core_engine_index_add(s->engine, r->xargs.n, r->rgb, names, r->new_ids);
    if (r->task_status) snprintf(r->task_error, sizeof r->task_error, "%s", sp_err_msg());
    r->db_count = core_engine_db_count(s->engine);
}

static enum MHD_Result index_start(req *r) {
    srv_server *s = r->srv;
    if (!core_engine_has_db(s->engine))
        return fail(r, 422, "no_database", "no retrieval.database is configured: there is nothing to add to");
    if (!s->exec || atomic_load(&s->state) != ST_READY) {
        r->retry_after = 1;
        return fail(r, 503, "shutting_down", "the server is shutting down");
    }
    int n = r->xargs.n;
    size_t row = (size_t)s->s * s->s * 3;
    r->rgb = malloc(row * n);
    r->new_ids = calloc((size_t)n, sizeof *r->new_ids);
    if (!r->rgb || !r->new_ids) return fail(r, 503, "out_of_memory", "out of memory");
    for (int i = 0; i < n; i++) {
        img_u8 im, sq;
        img_format f;
        char what[64];
        snprintf(what, sizeof what, "image %d", i);
        if (decode_upload(r, &r->xargs.images[i], what, 1, &im, &f)) return answer_error(r, &r->err);
        sp_status st = img_square(&im, s->s, &sq);
        long px = (long)im.w * im.h; /* one image at a time: its pixels are let go with it */
        atomic_fetch_sub(&s->pixels, px);
        r->pixels -= px;
        img_free(&im);
        if (st) return fail(r, 503, "out_of_memory", "%s", sp_err_msg());
        memcpy(r->rgb + row * i, sq.px, row);
        img_free(&sq);
        if (!r->xargs.images[i].name[0]) snprintf(r->xargs.images[i].name, sizeof r->xargs.images[i].name, "upload-%s-%d", r->id, i);
    }
    core_work *w = &r->work;
    memset(w, 0, sizeof *w);
    w->call = index_task;
    w->done = work_done;
    w->user = r;
    w->deadline = r->deadline;
    int ra;
    r->phase = PH_WAITING;
    if (core_exec_submit(s->exec, w, &ra)) {
        r->phase = PH_BODY;
        r->retry_after = ra;
        return fail(r, 503, "overloaded", "%s", sp_err_msg());
    }
    MHD_suspend_connection(r->conn);
    return MHD_YES;
}

static enum MHD_Result index_resumed(req *r) {
    if (r->work.status == SP_ERR_BUSY) return fail(r, 503, "shutting_down", "%s", r->work.error);
    if (r->task_status == SP_ERR_BUSY) {
        r->retry_after = 1;
        return fail(r, 503, "database_busy", "another process is writing the database; retry shortly");
    }
    if (r->task_status == SP_ERR_STALE)
        return fail(r, 409, "database_replaced",
                    "the database was replaced on disk while this server had it open; reload it "
                    "(POST /v1/admin/reload or SIGHUP), then retry");
    if (r->task_status) {
        SP_ERROR("request %s: adding to the database failed: %s", r->id, r->task_error);
        return fail(r, 500, "index_failed", "adding the images failed; the server log has the details (request %s)",
                    r->id);
    }
    cJSON *o = cJSON_CreateObject(), *ids = cJSON_AddArrayToObject(o, "ids");
    for (int i = 0; i < r->xargs.n; i++) cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)r->new_ids[i]));
    cJSON_AddNumberToObject(o, "added", r->xargs.n);
    cJSON_AddNumberToObject(o, "count", (double)r->db_count);
    core_metric_set(r->srv->m_index, NULL, (double)r->db_count);
    return answer_json(r, 200, o);
}

static void *reload_thread(void *arg) {
    req *r = arg;
    r->task_status = srv_server_reload(r->srv);
    if (r->task_status) snprintf(r->task_error, sizeof r->task_error, "%s", sp_err_msg());
    srv_server *s = r->srv;
    r->db_count = core_engine_db_count(s->engine);
    MHD_resume_connection(r->conn); /* last touch of r */
    atomic_fetch_sub(&s->reload_threads, 1);
    return NULL;
}

static enum MHD_Result reload_start(req *r) {
    if (!core_engine_has_db(r->srv->engine))
        return fail(r, 422, "no_database", "no retrieval.database is configured: there is nothing to reload");
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    r->phase = PH_WAITING;
    atomic_fetch_add(&r->srv->reload_threads, 1);
    int rc = pthread_create(&th, &at, reload_thread, r);
    pthread_attr_destroy(&at);
    if (rc) {
        atomic_fetch_sub(&r->srv->reload_threads, 1);
        r->phase = PH_BODY;
        return fail(r, 503, "busy", "cannot start a reload thread");
    }
    MHD_suspend_connection(r->conn);
    return MHD_YES;
}

static enum MHD_Result reload_resumed(req *r) {
    if (r->task_status == SP_ERR_BUSY) {
        r->retry_after = 1;
        return fail(r, 503, "busy", "%s", r->task_error);
    }
    if (r->task_status) /* srv_server_reload logged the reason */
        return fail(r, 500, "reload_failed",
                    "the reload failed and the previous database stays in service; the server log has the details");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "reloaded");
    cJSON_AddNumberToObject(o, "count", (double)r->db_count);
    return answer_json(r, 200, o);
}

/* ---- the access handler ---- */

static void make_id(srv_server *s, struct MHD_Connection *conn, char *out, size_t cap) {
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    if (h) {
        size_t n = strlen(h), ok = n >= 1 && n <= 64;
        for (size_t i = 0; ok && i < n; i++) ok = isalnum((unsigned char)h[i]) || strchr("-_.:", h[i]);
        if (ok) {
            snprintf(out, cap, "%s", h);
            return;
        }
    }
    uint64_t n = atomic_fetch_add(&s->next_id, 1);
    snprintf(out, cap, "%08x-%010llu", s->id_prefix, (unsigned long long)n);
}

/* Records an error found from the headers; it is answered at once when a body is coming (which
 * is then not read, and the connection closes), else when the request completes (keep-alive). */
static int head_error(req *r, int status, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err.message, sizeof r->err.message, fmt, ap);
    va_end(ap);
    r->err.status = status;
    r->err.code = code;
    r->failed = 1;
    return status;
}

/* Records a 503 of load shedding for reason `why` (a semipaint_rejected_total label). */
static int refuse(req *r, const char *why) {
    core_metric_add(r->srv->m_rejected, (const char *[]){why}, 1);
    if (r->retry_after < 1) r->retry_after = 1;
    return head_error(r, 503, "overloaded", "the server is at capacity (%s): retry after %d s",
                      !strcmp(why, "queue_full")  ? "the queue is full"
                      : !strcmp(why, "overload")  ? "the queue would not reach this request before its deadline"
                      : !strcmp(why, "inflight")  ? "too many requests are being received and processed"
                      : !strcmp(why, "pixels")    ? "too many image pixels are being processed"
                      : !strcmp(why, "buffered")  ? "too many request bodies are being received"
                      : !strcmp(why, "telea_queue") ? "too many telea requests are waiting"
                                                  : "shutting down",
                      r->retry_after);
}

/* Admission of an inpainting request whose body is complete: the executor's queue, then a slot
 * among the requests being decoded, queued or encoded. 0, or 503 recorded in r->err. */
static int admit(req *r) {
    srv_server *s = r->srv;
    const char *why = core_exec_admissible(s->exec, 1, r->deadline, &r->retry_after);
    if (why) return refuse(r, why);
    if (atomic_fetch_add(&s->admitted, 1) >= s->max_admitted) {
        atomic_fetch_sub(&s->admitted, 1);
        r->retry_after = 1;
        return refuse(r, "inflight");
    }
    r->admitted = 1;
    return 0;
}

/* Counts `px` more decoded pixels for the request against server.max_pixels_in_flight. 0, or
 * 503 recorded in r->err. */
static int hold_pixels(req *r, long px) {
    srv_server *s = r->srv;
    if (atomic_fetch_add(&s->pixels, px) + px > s->cfg.server.max_pixels_in_flight) {
        atomic_fetch_sub(&s->pixels, px);
        r->retry_after = 2;
        return refuse(r, "pixels");
    }
    r->pixels += px;
    return 0;
}

/* First call of a request: route, method, state, auth and body checks. Returns 0 to go on reading
 * the body, or an error status recorded in r->err. */
static int on_headers(req *r, const char *url, const char *method) {
    srv_server *s = r->srv;
    route_id rt = r->route;
    int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (rt == R_OTHER) return head_error(r, 404, "not_found", "no route %.128s (see /openapi.yaml)", url);
    const char *want = routes[rt].method;
    if (!(strcmp(want, "GET") ? !strcmp(method, want) : is_get))
        return head_error(r, 405, "method_not_allowed", "%s takes %s, not %.16s", routes[rt].label, want, method);
    if (rt == R_IMAGE && s->cfg.server.images_require_token && check_auth(r)) return r->err.status;
    if (!strcmp(want, "GET")) return 0; /* answered when the request completes */
    int state = atomic_load(&s->state);
    if (state != ST_READY) {
        r->retry_after = 1;
        core_metric_add(s->m_rejected, (const char *[]){state == ST_DRAINING ? "draining" : "not_ready"}, 1);
        return head_error(r, 503, state == ST_DRAINING ? "draining" : "not_ready", "%s",
                          state == ST_DRAINING ? "the server is shutting down" : "the server is not ready (loading)");
    }
    if (routes[rt].mutating && check_auth(r)) return r->err.status;
    /* A queue that is already full refuses at once, before the body; the admission slot itself is
     * taken only once the body is in (admit), so that slow uploads hold no slot. */
    const char *why = rt == R_INPAINT ? core_exec_admissible(s->exec, 1, r->deadline, &r->retry_after) : NULL;
    if (why) return refuse(r, why);
    if (rt == R_RELOAD) return 0; /* any body is read and ignored */
    const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (!errno && !*end && n > (unsigned long long)s->cfg.server.max_body_bytes)
            return head_error(r, 413, "body_too_large", "the body is %llu bytes; the limit is %ld (server.max_body_bytes)",
                              n, s->cfg.server.max_body_bytes);
    }
    if (!ct)
        return head_error(r, 415, "unsupported_media_type", "no Content-Type: send multipart/form-data or application/json");
    const char *accept = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
    r->want_json = accept && strstr(accept, "application/json") && !strstr(accept, "image/");
    while (*ct == ' ') ct++;
    if (!strncasecmp(ct, "application/json", 16) && (!ct[16] || ct[16] == ';' || ct[16] == ' ')) {
        r->is_json = 1;
        r->want_json = 1;
        return 0;
    }
    if (srv_form_new(rt == R_INDEX ? SRV_FORM_INDEX : SRV_FORM_INPAINT, ct, &r->form, &r->err)) {
        r->failed = 1;
        if (r->err.status == 415)
            snprintf(r->err.message, sizeof r->err.message,
                     "Content-Type %.80s is not supported: send multipart/form-data or application/json", ct);
        return r->err.status;
    }
    return 0;
}

/* 1 when the request announces a body (which an early answer then leaves unread). */
static int has_body(struct MHD_Connection *conn) {
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    return te || (cl && strcmp(cl, "0"));
}

/* The answer of a GET route, once the request is complete. */
static enum MHD_Result on_get(req *r, const char *url) {
    srv_server *s = r->srv;
    int state = atomic_load(&s->state);
    switch (r->route) {
    case R_HEALTHZ: return answer_text(r, 200, "application/json", "{\"status\":\"ok\"}");
    case R_READYZ:
        if (state == ST_READY) return answer_text(r, 200, "application/json", "{\"status\":\"ready\"}");
        r->retry_after = 1;
        return fail(r, 503, state == ST_DRAINING ? "draining" : state == ST_FAILED ? "load_failed" : "loading", "%s",
                    state == ST_DRAINING ? "the server is shutting down"
                    : state == ST_FAILED ? "loading the models or the database failed; the server log has the details"
                                         : "the models and the database are loading");
    case R_METRICS: return get_metrics(r);
    case R_OPENAPI: return answer(r, 200, "application/yaml", (void *)openapi_yaml, openapi_yaml_len, 0, NULL);
    case R_ROOT:
        if (s->cfg.server.web_ui) {
            const char *page;
            size_t n;
            srv_web_index(&page, &n);
            return answer(r, 200, "text/html; charset=utf-8", (void *)page, n, 0, NULL);
        }
        return fail(r, 404, "not_found", "%s",
                    "the web demo page is off (server.web_ui: false); the API is described at /openapi.yaml");
    default: break;
    }
    if (state != ST_READY) {
        r->retry_after = 1;
        return fail(r, 503, state == ST_DRAINING ? "draining" : "not_ready", "%s",
                    state == ST_DRAINING ? "the server is shutting down" : "the server is not ready (loading)");
    }
    if (r->route == R_INFO) return get_info(r);
    return get_image(r, url);
}

/* Takes a piece of the body. Returns MHD_NO to close a connection that keeps sending after an error. */
static enum MHD_Result on_body(req *r, const char *data, size_t n) {
    srv_server *s = r->srv;
    double now = sp_now();
    if (now > r->deadline) {
        /* The whole body must arrive within server.request_timeout_ms: a slow or stalled upload
         * is answered 408 and its connection closed, whatever it had sent. */
        core_metric_add(s->m_rejected, (const char *[]){"slow_body"}, 1);
        srv_error_set(&r->err, 408, "body_timeout",
                      "the body did not arrive within %d ms (server.request_timeout_ms): %zu bytes came",
                      s->cfg.server.request_timeout_ms, r->body_len + r->discarded + n);
        r->failed = 1;
        return answer_error(r, &r->err);
    }
    /* A connection with no more bytes is closed at the deadline at the latest: its idle timeout,
     * which libmicrohttpd restarts on every read, is cut to the time left. */
    unsigned left = (unsigned)(r->deadline - now) + 1;
    if (left < r->idle_s) {
        MHD_set_connection_option(r->conn, MHD_CONNECTION_OPTION_TIMEOUT, left);
        r->idle_s = left;
    }
    if (r->failed || r->route == R_RELOAD || get_route(r->route)) {
        r->discarded += n;
        return r->discarded > (size_t)s->cfg.server.max_body_bytes * DISCARD_FACTOR ? MHD_NO : MHD_YES;
    }
    if (r->body_len + n > (size_t)s->cfg.server.max_body_bytes) {
        srv_error_set(&r->err, 413, "body_too_large", "the body is longer than %ld bytes (server.max_body_bytes)",
                      s->cfg.server.max_body_bytes);
        r->failed = 1;
        r->discarded = n;
        return MHD_YES;
    }
    if (atomic_fetch_add(&s->buffered, (long)n) + (long)n > s->cfg.server.max_buffered_bytes) {
        atomic_fetch_sub(&s->buffered, (long)n);
        refuse(r, "buffered");
        r->retry_after = 2;
        r->discarded = n;
        return MHD_YES;
    }
    r->buffered += (long)n;
    r->body_len += n;
    if (r->form) {
        if (srv_form_feed(r->form, (const uint8_t *)data, n, &r->err)) r->failed = 1;
        return MHD_YES;
    }
    if (r->body_len > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 65536;
        while (cap < r->body_len) cap *= 2;
        uint8_t *nb = realloc(r->body, cap);
        if (!nb) {
            srv_error_set(&r->err, 503, "out_of_memory", "no memory for the body");
            r->failed = 1;
            return MHD_YES;
        }
        r->body = nb;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len - n, data, n);
    return MHD_YES;
}

/* The body is complete: parse it and start the route's work. */
static enum MHD_Result on_complete(req *r, const char *url) {
    if (r->failed) return answer_error(r, &r->err);
    if (get_route(r->route)) return on_get(r, url);
    if (r->route == R_RELOAD) return reload_start(r);
    if (r->body_len == 0) return fail(r, 400, "empty_body", "the request body is empty");
    int st;
    if (r->route == R_INDEX) {
        st = r->is_json ? srv_parse_index_json(r->body, r->body_len, &r->xargs, &r->err)
                        : srv_form_finish_index(r->form, &r->xargs, &r->err);
        free(r->body);
        r->body = NULL;
        if (st) return answer_error(r, &r->err);
        return index_start(r);
    }
    if (admit(r)) return answer_error(r, &r->err);
    st = r->is_json ? srv_parse_inpaint_json(r->body, r->body_len, &r->args, &r->err)
                    : srv_form_finish_inpaint(r->form, &r->args, &r->err);
    free(r->body);
    r->body = NULL;
    srv_form_free(r->form);
    r->form = NULL;
    if (st) return answer_error(r, &r->err);
    return inpaint_start(r);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_size, void **con_cls) {
    (void)version;
    srv_server *s = cls;
    req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        *con_cls = r;
        r->srv = s;
        r->conn = conn;
        r->t0 = sp_now();
        r->deadline = r->t0 + s->cfg.server.request_timeout_ms / 1e3;
        r->idle_s = (unsigned)((s->cfg.server.request_timeout_ms + 999) / 1000);
        r->route = match_route(url);
        r->method = strcmp(method, "GET") && strcmp(method, "HEAD") && strcmp(method, "POST") ? "other" : method;
        make_id(s, conn, r->id, sizeof r->id);
        core_metric_set(s->m_inflight, NULL, (double)(atomic_fetch_add(&s->inflight, 1) + 1));
        /* A client error is answered at once, leaving the body unread (the connection then closes);
         * a 503 reads and drops the body first so that the answer reaches the client on a live
         * connection, ready for its retry. */
        if (on_headers(r, url, method) && has_body(conn) && r->err.status != 503) return answer_error(r, &r->err);
        r->phase = PH_BODY;
        return MHD_YES;
    }
    if (r->phase == PH_ANSWERED) {
        *upload_size = 0; /* MHD discards the rest after an early answer */
        return MHD_YES;
    }
    if (*upload_size) {
        enum MHD_Result ret = on_body(r, upload_data, *upload_size);
        *upload_size = 0;
        return ret;
    }
    if (r->phase == PH_WAITING) {
        r->phase = PH_RESUMED;
        if (r->route == R_INDEX) return index_resumed(r);
        if (r->route == R_RELOAD) return reload_resumed(r);
        return inpaint_send(r);
    }
    return on_complete(r, url);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)conn;
    srv_server *s = cls;
    req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    double ms = (sp_now() - r->t0) * 1e3;
    char code[16];
    int status = r->status;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && status == 0) {
        status = toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? 408 : 499; /* closed before an answer */
        if (status == 408 && r->phase == PH_BODY && !get_route(r->route))
            core_metric_add(s->m_rejected, (const char *[]){"slow_body"}, 1); /* a body that stalled */
    }
    snprintf(code, sizeof code, "%d", status);
    const char *label = routes[r->route].label;
    core_metric_add(s->m_requests, (const char *[]){label, code}, 1);
    core_metric_observe(s->m_duration, (const char *[]){label}, ms / 1e3);
    core_metric_set(s->m_inflight, NULL, (double)(atomic_fetch_sub(&s->inflight, 1) - 1));
    if (r->admitted) atomic_fetch_sub(&s->admitted, 1);
    char id[96], route[64], meth[16], st[16], bin[32], bout[32], dur[32], err[600], errcode[64];
    json_str(id, sizeof id, r->id);
    json_str(route, sizeof route, label);
    json_str(meth, sizeof meth, r->method);
    snprintf(st, sizeof st, "%d", status);
    snprintf(bin, sizeof bin, "%zu", r->body_len + r->discarded);
    snprintf(bout, sizeof bout, "%zu", r->bytes_out);
    snprintf(dur, sizeof dur, "%.2f", ms);
    sp_log_level lvl = status >= 500 && status != 503 ? SP_LOG_WARN : SP_LOG_INFO;
    /* probes and scrapes would drown the log: they are logged at debug level when they succeed */
    if ((r->route == R_HEALTHZ || r->route == R_READYZ || r->route == R_METRICS) && status < 400) lvl = SP_LOG_DEBUG;
    if (r->failed || status >= 400) {
        json_str(err, sizeof err, status == 408 ? "the client sent nothing for the idle timeout"
                                  : status == 499 ? "the client closed the connection before the answer"
                                                  : r->err.message);
        json_str(errcode, sizeof errcode, status == 408 ? "client_timeout" : status == 499 ? "client_closed"
                                                        : r->err.code ? r->err.code : "error");
        sp_log_kv(lvl, "request", 9, "request_id", id, "method", meth, "route", route, "status", st, "bytes_in", bin,
                  "bytes_out", bout, "duration_ms", dur, "error_code", errcode, "error", err);
    } else {
        sp_log_kv(lvl, "request", 8, "request_id", id, "method", meth, "route", route, "status", st, "bytes_in", bin,
                  "bytes_out", bout, "duration_ms", dur, "timings_ms", r->timings[0] ? r->timings : "{}");
    }
    req_free(r);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    SP_DEBUG("libmicrohttpd: %s", msg);
}

/* ---- lifecycle ---- */

static void render_hook(void *ctx) {
    srv_server *s = ctx;
    if (atomic_load(&s->state) == ST_READY || atomic_load(&s->state) == ST_DRAINING) {
        core_metric_set(s->m_index, NULL, (double)core_engine_db_count(s->engine));
        core_metric_set(s->m_depth, NULL, s->exec ? core_exec_queue_depth(s->exec) : 0);
        if (s->m_gpu) core_metric_set(s->m_gpu, NULL, (double)core_engine_device_memory(s->engine));
    }
}

static sp_status read_token(const char *path, char *out, size_t cap) {
    struct stat sb;
    if (stat(path, &sb)) return sp_err(SP_ERR_IO, "server.auth_token_file: %s: %s", path, strerror(errno));
    /* others may neither read nor write it, nor its group write it (a group read is how a
     * Kubernetes secret volume with fsGroup reaches a non-root user: defaultMode 0440) */
    if (sb.st_mode & (S_IRWXO | S_IWGRP))
        return sp_err(SP_ERR_INVALID,
                      "server.auth_token_file: %s has mode %04o: %s; refused (chmod 600 %s)", path,
                      (unsigned)(sb.st_mode & 07777),
                      sb.st_mode & S_IRWXO ? "any user of the machine may read or change the token"
                                           : "its group may change the token",
                      path);
    uint8_t *buf;
    size_t len;
    sp_status st = sp_read_file(path, &buf, &len);
    if (st) return sp_err_wrap(st, "server.auth_token_file");
    while (len && isspace(buf[len - 1])) len--;
    size_t i = 0;
    while (i < len && isspace(buf[i])) i++;
    sp_status res = SP_OK;
    if (len - i < 16) res = sp_err(SP_ERR_INVALID, "server.auth_token_file: %s holds a token of %zu characters; use at least 16", path, len - i);
    else if (len - i >= cap) res = sp_err(SP_ERR_INVALID, "server.auth_token_file: %s: token longer than %zu characters", path, cap - 1);
    else {
        for (size_t j = i; j < len && !res; j++)
            if (!isgraph(buf[j])) res = sp_err(SP_ERR_INVALID, "server.auth_token_file: %s: the token holds a blank or control character", path);
        if (!res) {
            memcpy(out, buf + i, len - i);
            out[len - i] = 0;
        }
    }
    free(buf);
    return res;
}

sp_status srv_server_new(const cfg_config *cfg, srv_server **out) {
    *out = NULL;
    srv_server *s = calloc(1, sizeof *s);
    if (!s) return sp_err(SP_ERR_NOMEM, "server: out of memory");
    s->cfg = *cfg;
    s->started = sp_now();
    pthread_mutex_init(&s->reload_mu, NULL);
    unsigned seed = (unsigned)getpid() * 2654435761u ^ (unsigned)(sp_wall() * 1e6);
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &seed, sizeof seed) != (ssize_t)sizeof seed) seed ^= 0x9e3779b9u;
        close(fd);
    }
    s->id_prefix = seed;
    /* Admission bound of inpainting requests in flight: what the queue holds, one running batch,
     * and two per HTTP thread being decoded or encoded. The executor's checks alone only see the
     * queue: when the HTTP threads fall behind (bodies, decoding and encoding share the CPU with
     * the model), requests would otherwise pile up receiving their bodies, all slowed alike, with
     * latencies far past their deadline measured from the client. */
    s->max_admitted = cfg->batching.queue_capacity + cfg->batching.max_batch + 2 * cfg->server.http_threads;
    sp_status st = SP_OK;
    if (cfg->server.auth_token_file[0] && (st = read_token(cfg->server.auth_token_file, s->token, sizeof s->token)))
        goto fail;
    s->metrics = core_metrics_new();
    if (!s->metrics) {
        st = sp_err(SP_ERR_NOMEM, "server: out of memory");
        goto fail;
    }
    const double batch_buckets[] = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256};
    s->m_requests = core_metrics_counter(s->metrics, "semipaint_http_requests_total", "HTTP requests answered, by route and status code.", "route,code");
    s->m_duration = core_metrics_histogram(s->metrics, "semipaint_http_request_duration_seconds", "Time from a request's headers to its completion.", "route", core_duration_buckets, core_duration_nbuckets);
    s->m_stage = core_metrics_histogram(s->metrics, "semipaint_stage_duration_seconds", "Time of each pipeline stage: decode and encode per request, queue per crop, coarse, descriptor, search and refine per batch.", "stage", core_duration_buckets, core_duration_nbuckets);
    s->m_batch = core_metrics_histogram(s->metrics, "semipaint_batch_size", "Crops per batched forward pass.", NULL, batch_buckets, sizeof batch_buckets / sizeof batch_buckets[0]);
    s->m_depth = core_metrics_gauge(s->metrics, "semipaint_queue_depth", "Crops waiting for the executor.", NULL);
    s->m_inflight = core_metrics_gauge(s->metrics, "semipaint_inflight_requests", "Requests being received, processed or answered.", NULL);
    s->m_rejected = core_metrics_counter(s->metrics, "semipaint_rejected_total", "Requests refused or dropped by load shedding, by reason.", "reason");
    s->m_index = core_metrics_gauge(s->metrics, "semipaint_index_images", "Images in the retrieval database.", NULL);
    s->m_build = core_metrics_gauge(s->metrics, "semipaint_build_info", "Version and compute backend of this server.", "version,backend");
    core_metrics_add_process(s->metrics);
    core_metrics_on_render(s->metrics, render_hook, s);
    core_metric_set(s->m_inflight, NULL, 0);
    core_metric_set(s->m_depth, NULL, 0);
    core_metric_set(s->m_index, NULL, 0);
    const char *reasons[] = {"queue_full", "overload", "inflight", "deadline",  "shutdown",    "not_ready",
                             "draining",   "pixels",   "buffered", "slow_body", "telea_queue"};
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        core_metric_add(s->m_rejected, (const char *[]){reasons[i]}, 0);

    /* Telea's queue: as many as its workers can start on within a request's deadline, roughly */
    if ((st = core_pool_new(cfg->inpaint.telea_threads, 4 * cfg->inpaint.telea_threads + 4, &s->telea))) goto fail;
    /* every admitted request can wait in the work pool's queue: it never refuses one of them */
    if ((st = core_pool_new(cfg->server.work_threads, s->max_admitted + 16, &s->work))) goto fail;
    char host[256];
    int port;
    if ((st = cfg_parse_listen(cfg->server.listen, host, sizeof host, &port))) goto fail;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES) flags |= MHD_USE_EPOLL;
    if (strchr(host, ':')) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1) {
            st = sp_err(SP_ERR_INVALID, "server.listen: '%s' is not an IPv6 address", host);
            goto fail;
        }
        flags |= MHD_USE_IPv6;
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        if (!host[0] || !strcmp(host, "0.0.0.0")) a4->sin_addr.s_addr = htonl(INADDR_ANY);
        else if (!strcmp(host, "localhost")) a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1) {
            st = sp_err(SP_ERR_INVALID, "server.listen: '%s' is not an IPv4 address (names other than localhost are not resolved)", host);
            goto fail;
        }
    }
    unsigned timeout_s = (unsigned)((cfg->server.request_timeout_ms + 999) / 1000);
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_SOCK_ADDR, 0, &ss},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)timeout_s, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)(64 * 1024), NULL},
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL},
        {MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, NULL},
        {MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)cfg->server.max_connections, NULL},
        {cfg->server.max_connections_per_client ? MHD_OPTION_PER_IP_CONNECTION_LIMIT : MHD_OPTION_LISTEN_BACKLOG_SIZE,
         cfg->server.max_connections_per_client ? (intptr_t)cfg->server.max_connections_per_client : 1024, NULL},
        {cfg->server.http_threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
         (intptr_t)cfg->server.http_threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    s->mhd = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, s, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!s->mhd) {
        st = sp_err(SP_ERR_IO, "server.listen: cannot listen on %s (address in use, or not permitted?)", cfg->server.listen);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : port;
    *out = s;
    return SP_OK;
fail:
    srv_server_free(s);
    return st;
}

int srv_server_port(const srv_server *s) { return s->port; }

sp_status srv_server_load(srv_server *s) {
    double t0 = sp_now();
    sp_status st = core_engine_new(&s->cfg, &s->engine);
    if (st) goto fail;
    s->s = core_engine_size(s->engine);
    core_exec_metrics em = {s->m_batch, s->m_stage, s->m_depth, s->m_rejected};
    core_runner runner = core_engine_runner(s->engine);
    if ((st = core_exec_new(&runner, s->cfg.batching.max_batch, s->cfg.batching.max_delay_ms,
                           s->cfg.batching.queue_capacity, &em, &s->exec)))
        goto fail;
    core_metric_set(s->m_build, (const char *[]){SP_VERSION, core_engine_backend(s->engine)}, 1);
    if (!strcmp(core_engine_backend(s->engine), "cuda"))
        s->m_gpu = core_metrics_gauge(s->metrics, "semipaint_gpu_memory_used_bytes", "Device memory held by the backend.", NULL);
    core_metric_set(s->m_index, NULL, (double)core_engine_db_count(s->engine));
    atomic_store(&s->state, ST_READY);
    SP_INFO("ready in %.1f s: working size %d, %s, %s backend", sp_now() - t0, s->s,
            core_engine_k(s->engine) ? "Sim-K with a database" : "Sim-0 (no database configured)",
            core_engine_backend(s->engine));
    return SP_OK;
fail:
    snprintf(s->load_error, sizeof s->load_error, "%s", sp_err_msg());
    atomic_store(&s->state, ST_FAILED);
    return st;
}

sp_status srv_server_reload(srv_server *s) {
    if (atomic_load(&s->state) != ST_READY) return sp_err(SP_ERR_BUSY, "the server is not ready; reload refused");
    if (pthread_mutex_trylock(&s->reload_mu)) return sp_err(SP_ERR_BUSY, "a reload is already running");
    double t0 = sp_now();
    sp_status st = core_engine_reload(s->engine);
    if (st) SP_ERROR("database reload failed, the previous one stays in service: %s", sp_err_msg());
    else {
        long n = core_engine_db_count(s->engine);
        core_metric_set(s->m_index, NULL, (double)n);
        SP_INFO("database reloaded in %.0f ms: %ld images", (sp_now() - t0) * 1e3, n);
    }
    pthread_mutex_unlock(&s->reload_mu);
    return st;
}

int srv_server_shutdown(srv_server *s) {
    if (!s->mhd) return 0;
    double t0 = sp_now(), grace = s->cfg.server.shutdown_grace_ms / 1e3;
    atomic_store(&s->state, ST_DRAINING);
    MHD_socket ls = MHD_quiesce_daemon(s->mhd);
    if (ls != MHD_INVALID_SOCKET) close(ls);
    SP_INFO("draining: %d requests in flight, %.1f s of grace", atomic_load(&s->inflight), grace);
    while (atomic_load(&s->inflight) > 0 && sp_now() - t0 < grace) usleep(10000);
    int cut = atomic_load(&s->inflight);
    /* What is left is answered 503: the work pool stops first (its queued stages are cancelled,
     * later hand-offs to it refused), then the executor and Telea's workers, whose requests then
     * go back to their HTTP threads with the refusal. Give the answers a moment to go out. */
    core_pool_stop(s->work);
    if (s->exec) {
        core_exec_free(s->exec);
        s->exec = NULL;
    }
    core_pool_stop(s->telea);
    double t1 = sp_now();
    while (atomic_load(&s->inflight) > 0 && sp_now() - t1 < 1.0) usleep(10000);
    /* a reload still opening the database holds a suspended request: let it finish first */
    while (atomic_load(&s->reload_threads) > 0) usleep(10000);
    MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
    SP_INFO("stopped after %.2f s of draining; %d requests cut short", sp_now() - t0, cut);
    return cut;
}

void srv_server_free(srv_server *s) {
    if (!s) return;
    /* cancelled stages resume their connections: before the daemon stops (see shutdown) */
    core_pool_stop(s->work);
    core_exec_free(s->exec);
    core_pool_stop(s->telea);
    if (s->mhd) MHD_stop_daemon(s->mhd);
    core_pool_free(s->work);
    core_pool_free(s->telea);
    core_engine_free(s->engine);
    core_metrics_free(s->metrics);
    pthread_mutex_destroy(&s->reload_mu);
    free(s);
}

/* ---- --check-config ---- */

static sp_status check_readable(const char *key, const char *path, int dir) {
    struct stat st;
    if (stat(path, &st)) return sp_err(SP_ERR_IO, "%s: %s: %s", key, path, strerror(errno));
    if (dir && !S_ISDIR(st.st_mode)) return sp_err(SP_ERR_INVALID, "%s: %s is not a directory", key, path);
    if (!dir && !S_ISREG(st.st_mode)) return sp_err(SP_ERR_INVALID, "%s: %s is not a regular file", key, path);
    if (access(path, R_OK)) return sp_err(SP_ERR_IO, "%s: %s: %s", key, path, strerror(errno));
    return SP_OK;
}

sp_status srv_check_files(const cfg_config *cfg) {
    sp_status st;
    int with_db = cfg->retrieval.database[0] != 0;
    if ((st = check_readable("model.coarse", cfg->model.coarse, 0))) return st;
    if (with_db) {
        if ((st = check_readable("model.refine", cfg->model.refine, 0))) return st;
        if ((st = check_readable("retrieval.database", cfg->retrieval.database, 1))) return st;
    } else if ((st = check_readable("model.refine_fallback", cfg->model.refine_fallback, 0))) {
        return st;
    }
    if (cfg->retrieval.descriptor_weights[0] &&
        (st = check_readable("retrieval.descriptor_weights", cfg->retrieval.descriptor_weights, 0)))
        return st;
    if (cfg->server.auth_token_file[0]) {
        char tok[512];
        if ((st = read_token(cfg->server.auth_token_file, tok, sizeof tok))) return st;
    }
    return SP_OK;
}
