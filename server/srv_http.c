/* srv_http.c: semipaintd's HTTP side on libmicrohttpd: a request's headers, limits and body, admission, suspend/resume around its route's handlers, answers and errors, the log line and request metrics. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/srv_http_int.h"

#define DISCARD_FACTOR 2 /* after an error, read at most this many times max_body_bytes more before closing */

/* ---- one request ---- */

/* Frees the request and gives back its body bytes and pixels to the server's counts. */
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

enum MHD_Result srv_answer(req *r, int status, const char *ctype, void *body, size_t len, int owned,
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

enum MHD_Result srv_queue_held(req *r, struct MHD_Response *resp) {
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result srv_answer_error(req *r, const srv_error *e) {
    cJSON *root = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(root, "error");
    if (r->route->api == SRV_API_OPENAI) { /* OpenAI's shape, with semipaint's code and the status kept */
        cJSON_AddStringToObject(err, "message", e->message);
        cJSON_AddStringToObject(err, "type", e->status >= 500 ? "server_error" : "invalid_request_error");
        if (e->param[0]) cJSON_AddStringToObject(err, "param", e->param);
        else cJSON_AddNullToObject(err, "param");
        cJSON_AddStringToObject(err, "code", e->code ? e->code : "error");
    } else {
        cJSON_AddStringToObject(err, "code", e->code ? e->code : "error");
        cJSON_AddStringToObject(err, "message", e->message);
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) return MHD_NO;
    r->err = *e;
    r->failed = 1;
    struct MHD_Response *resp;
    if (srv_answer(r, e->status, "application/json", text, strlen(text), 1, &resp) != MHD_YES) return MHD_NO;
    if (e->status == 503) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", r->retry_after > 0 ? r->retry_after : 1);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (e->status == 405 && r->route->method) {
        char allow[64];
        srv_route_allow(r->route, allow, sizeof allow);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    }
    if (e->status == 401) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"semipaintd\"");
    return srv_queue_held(r, resp);
}

enum MHD_Result srv_failv(req *r, int status, const char *code, const char *fmt, va_list ap) {
    srv_error e = {status, code, "", ""};
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    return srv_answer_error(r, &e);
}

enum MHD_Result srv_answer_json(req *r, int status, cJSON *root) {
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) return fail(r, 503, "out_of_memory", "out of memory");
    size_t n = strlen(text);
    return srv_answer(r, status, "application/json", text, n, 1, NULL);
}

enum MHD_Result srv_answer_text(req *r, int status, const char *ctype, const char *text) {
    return srv_answer(r, status, ctype, (void *)text, strlen(text), 0, NULL);
}

/* ---- errors found before the answer, and admission ---- */

int srv_head_error(req *r, int status, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err.message, sizeof r->err.message, fmt, ap);
    va_end(ap);
    r->err.status = status;
    r->err.code = code;
    r->failed = 1;
    return status;
}

int srv_refuse(req *r, const char *why) {
    core_metric_add(r->srv->m_rejected, (const char *[]){why}, 1);
    if (r->retry_after < 1) r->retry_after = 1;
    return srv_head_error(r, 503, "overloaded", "the server is at capacity (%s): retry after %d s",
                          !strcmp(why, "queue_full")    ? "the queue is full"
                          : !strcmp(why, "overload")    ? "the queue would not reach this request before its deadline"
                          : !strcmp(why, "inflight")    ? "too many requests are being received and processed"
                          : !strcmp(why, "pixels")      ? "too many image pixels are being processed"
                          : !strcmp(why, "buffered")    ? "too many request bodies are being received"
                          : !strcmp(why, "telea_queue") ? "too many telea requests are waiting"
                                                        : "shutting down",
                          r->retry_after);
}

/* Admission of an inpainting request whose body is complete: the executor's queue, then a slot
 * among the requests being decoded, queued or encoded. 0, or 503 recorded in r->err. */
static int admit(req *r) {
    srv_server *s = r->srv;
    const char *why = core_exec_admissible(s->exec, -1, 1, r->deadline, &r->retry_after);
    if (why) return srv_refuse(r, why);
    if (atomic_fetch_add(&s->admitted, 1) >= s->max_admitted) {
        atomic_fetch_sub(&s->admitted, 1);
        r->retry_after = 1;
        return srv_refuse(r, "inflight");
    }
    r->admitted = 1;
    return 0;
}

int srv_family(req *r, const char *model, int allow_auto, int dflt, int *fam) {
    core_engine *e = r->srv->engine;
    *fam = dflt;
    if (!model || !model[0]) return 0;
    if (allow_auto && !strcmp(model, "auto")) return *fam = -1, 0;
    if ((*fam = core_engine_family_index(e, model)) >= 0) return 0;
    char list[512];
    size_t k = (size_t)snprintf(list, sizeof list, "%s", allow_auto ? "auto" : "");
    for (int i = 0; i < core_engine_nfamilies(e) && k < sizeof list; i++)
        k += (size_t)snprintf(list + k, sizeof list - k, "%s%s", k ? ", " : "", core_engine_family_name(e, i));
    snprintf(r->err.param, sizeof r->err.param, "model");
    return srv_error_set(&r->err, 422, "unknown_model", "model '%.64s' is not served here; allowed: %s", model, list);
}

int srv_hold_pixels(req *r, long px) {
    srv_server *s = r->srv;
    if (atomic_fetch_add(&s->pixels, px) + px > s->cfg.server.max_pixels_in_flight) {
        atomic_fetch_sub(&s->pixels, px);
        r->retry_after = 2;
        return srv_refuse(r, "pixels");
    }
    r->pixels += px;
    return 0;
}

/* ---- the access handler ---- */

/* The request id: the client's X-Request-Id when it is 1-64 characters of [A-Za-z0-9-_.:], else
 * the server's prefix and a counter. */
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

/* First call of a request: the route's checks (srv_route_check), then for a route that reads a
 * form or JSON the body's announced length, its Content-Type and the Accept header. Returns 0 to
 * go on reading the body, or an error status recorded in r->err. */
static int on_headers(req *r, const char *url, const char *method) {
    srv_server *s = r->srv;
    const srv_route *rt = r->route;
    if (srv_route_check(r, url, method)) return r->err.status;
    if (rt->body == SRV_BODY_NONE || rt->body == SRV_BODY_IGNORED) return 0; /* any body is read and dropped */
    const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (!errno && !*end && n > (unsigned long long)s->cfg.server.max_body_bytes)
            return srv_head_error(r, 413, "body_too_large", "the body is %llu bytes; the limit is %ld (server.max_body_bytes)",
                                  n, s->cfg.server.max_body_bytes);
    }
    if (!ct)
        return srv_head_error(r, 415, "unsupported_media_type", "no Content-Type: send multipart/form-data or application/json");
    const char *accept = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
    r->want_json = accept && strstr(accept, "application/json") && !strstr(accept, "image/");
    r->accept_fmt = (img_format)srv_accept_image_format(accept);
    while (*ct == ' ') ct++;
    if (rt->api == SRV_API_OPENAI) { /* OpenAI's image edit form is multipart; its answer JSON */
        r->want_json = 1;
        if (srv_form_new(SRV_FORM_EDITS, ct, &r->form, &r->err)) {
            r->failed = 1;
            if (r->err.status == 415)
                snprintf(r->err.message, sizeof r->err.message,
                         "Content-Type %.80s is not supported: send multipart/form-data", ct);
            return r->err.status;
        }
        return 0;
    }
    if (!strncasecmp(ct, "application/json", 16) && (!ct[16] || ct[16] == ';' || ct[16] == ' ')) {
        r->is_json = 1;
        r->want_json = 1;
        return 0;
    }
    if (srv_form_new(rt->body == SRV_BODY_INDEX ? SRV_FORM_INDEX : SRV_FORM_INPAINT, ct, &r->form, &r->err)) {
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
        return srv_answer_error(r, &r->err);
    }
    /* A connection with no more bytes is closed at the deadline at the latest: its idle timeout,
     * which libmicrohttpd restarts on every read, is cut to the time left. */
    unsigned left = (unsigned)(r->deadline - now) + 1;
    if (left < r->idle_s) {
        MHD_set_connection_option(r->conn, MHD_CONNECTION_OPTION_TIMEOUT, left);
        r->idle_s = left;
    }
    if (r->failed || r->route->body == SRV_BODY_NONE || r->route->body == SRV_BODY_IGNORED) {
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
        srv_refuse(r, "buffered");
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

/* Parses the complete body of a form or JSON route into r->args or r->xargs, for an inpainting
 * request once it holds an admission slot, and lets the raw body go. 0, or the status with r->err
 * set. */
static int parse_body(req *r) {
    const srv_route *rt = r->route;
    if (r->body_len == 0) return srv_error_set(&r->err, 400, "empty_body", "the request body is empty");
    if (rt->body == SRV_BODY_INPAINT && admit(r)) return r->err.status;
    int st = rt->body == SRV_BODY_INDEX
                 ? (r->is_json ? srv_parse_index_json(r->body, r->body_len, &r->xargs, &r->err)
                               : srv_form_finish_index(r->form, &r->xargs, &r->err))
             : rt->api == SRV_API_OPENAI ? srv_form_finish_edits(r->form, &r->args, &r->edits, &r->err)
                 : (r->is_json ? srv_parse_inpaint_json(r->body, r->body_len, &r->args, &r->err)
                               : srv_form_finish_inpaint(r->form, &r->args, &r->err));
    free(r->body);
    r->body = NULL;
    srv_form_free(r->form);
    r->form = NULL;
    return st;
}

/* The request is complete: an error recorded on the way, the readiness of a route without a body,
 * the body parsed, then the route's handler. */
static enum MHD_Result on_complete(req *r, const char *url) {
    const srv_route *rt = r->route;
    if (r->failed) return srv_answer_error(r, &r->err);
    if (rt->needs_ready && rt->body == SRV_BODY_NONE && srv_route_ready(r, 0)) return srv_answer_error(r, &r->err);
    if ((rt->body == SRV_BODY_INPAINT || rt->body == SRV_BODY_INDEX) && parse_body(r)) return srv_answer_error(r, &r->err);
    return rt->start(r, srv_route_arg(rt, url));
}

enum MHD_Result srv_on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
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
        r->route = srv_route_match(url, method);
        r->method = strcmp(method, "GET") && strcmp(method, "HEAD") && strcmp(method, "POST") ? "other" : method;
        make_id(s, conn, r->id, sizeof r->id);
        core_metric_set(s->m_inflight, NULL, (double)(atomic_fetch_add(&s->inflight, 1) + 1));
        /* A client error is answered at once, leaving the body unread (the connection then closes);
         * a 503 reads and drops the body first so that the answer reaches the client on a live
         * connection, ready for its retry. */
        if (on_headers(r, url, method) && has_body(conn) && r->err.status != 503) return srv_answer_error(r, &r->err);
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
        return r->route->resumed ? r->route->resumed(r) : MHD_NO;
    }
    return on_complete(r, url);
}

void srv_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
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
        if (status == 408 && r->phase == PH_BODY && r->route->body != SRV_BODY_NONE)
            core_metric_add(s->m_rejected, (const char *[]){"slow_body"}, 1); /* a body that stalled */
    }
    snprintf(code, sizeof code, "%d", status);
    const char *label = r->route->label;
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
    if (r->route->quiet && status < 400) lvl = SP_LOG_DEBUG;
    /* POST /v1/images/edits logs OpenAI's `user` and `model` fields too (as the client gave them) */
    char user[2 * SRV_EDITS_TEXT_MAX + 8], model[2 * SRV_EDITS_TEXT_MAX + 8];
    int ex = r->route->api == SRV_API_OPENAI ? 2 : 0;
    json_str(user, sizeof user, r->edits.user);
    json_str(model, sizeof model, r->edits.model);
    if (r->failed || status >= 400) {
        json_str(err, sizeof err, status == 408 ? "the client sent nothing for the idle timeout"
                                  : status == 499 ? "the client closed the connection before the answer"
                                                  : r->err.message);
        json_str(errcode, sizeof errcode, status == 408 ? "client_timeout" : status == 499 ? "client_closed"
                                                        : r->err.code ? r->err.code : "error");
        sp_log_kv(lvl, "request", 9 + ex, "request_id", id, "method", meth, "route", route, "status", st, "bytes_in",
                  bin, "bytes_out", bout, "duration_ms", dur, "error_code", errcode, "error", err, "user", user, "model",
                  model);
    } else if (r->route->body == SRV_BODY_INPAINT && s->engine) {
        /* what served it: the model family, the method that ran, and whether auto chose */
        char fam[2 * CFG_NAME_MAX + 8], ran[16];
        json_str(fam, sizeof fam, core_engine_family_name(s->engine, r->cr.family));
        json_str(ran, sizeof ran, r->cr.method == CORE_METHOD_TELEA ? "telea" : srv_method_name(r->args.method));
        sp_log_kv(lvl, "request", 11 + ex, "request_id", id, "method", meth, "route", route, "status", st, "bytes_in",
                  bin, "bytes_out", bout, "duration_ms", dur, "timings_ms", r->timings[0] ? r->timings : "{}",
                  "family", fam, "inpaint_method", ran, "requested", r->choice.routed ? "\"auto\"" : "\"named\"",
                  "user", user, "model", model);
    } else {
        sp_log_kv(lvl, "request", 8 + ex, "request_id", id, "method", meth, "route", route, "status", st, "bytes_in",
                  bin, "bytes_out", bout, "duration_ms", dur, "timings_ms", r->timings[0] ? r->timings : "{}", "user",
                  user, "model", model);
    }
    req_free(r);
}

void srv_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    SP_DEBUG("libmicrohttpd: %s", msg);
}
