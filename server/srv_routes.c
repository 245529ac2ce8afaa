/* srv_routes.c: semipaintd's route table (method, path, label, handlers, auth, readiness, body) and what it decides: matching, 404, 405 with Allow, readiness, bearer auth. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "server/srv_http_int.h"

/* Every route (docs/http-api.md, server/openapi.yaml). Columns, as srv_route in
 * server/srv_http_int.h: method, path, prefix (1: the path is a prefix and what follows it the
 * parameter), label, the start and resumed handlers, auth, needs_ready, body, quiet, api. The label
 * is how metrics, logs and error messages name a route: /inpaint is an alias of /v1/inpaint.
 * /v1/images/edits is OpenAI's image edit API on the same stages, admission and budgets as
 * /v1/inpaint. */
static const srv_route routes[] = {
    {"POST", "/v1/inpaint",      0, "/v1/inpaint",      srv_inpaint_start, srv_inpaint_send,   SRV_AUTH_NONE,          1, SRV_BODY_INPAINT, 0, SRV_API_NATIVE},
    {"POST", "/inpaint",         0, "/v1/inpaint",      srv_inpaint_start, srv_inpaint_send,   SRV_AUTH_NONE,          1, SRV_BODY_INPAINT, 0, SRV_API_NATIVE},
    {"POST", "/v1/images/edits", 0, "/v1/images/edits", srv_inpaint_start, srv_inpaint_send,   SRV_AUTH_NONE,          1, SRV_BODY_INPAINT, 0, SRV_API_OPENAI},
    {"GET",  "/healthz",         0, "/healthz",         srv_get_healthz,   NULL,               SRV_AUTH_NONE,          0, SRV_BODY_NONE,    1, SRV_API_NATIVE},
    {"GET",  "/readyz",          0, "/readyz",          srv_get_readyz,    NULL,               SRV_AUTH_NONE,          0, SRV_BODY_NONE,    1, SRV_API_NATIVE},
    {"GET",  "/metrics",         0, "/metrics",         srv_get_metrics,   NULL,               SRV_AUTH_NONE,          0, SRV_BODY_NONE,    1, SRV_API_NATIVE},
    {"GET",  "/v1/info",         0, "/v1/info",         srv_get_info,      NULL,               SRV_AUTH_NONE,          1, SRV_BODY_NONE,    0, SRV_API_NATIVE},
    {"GET",  "/v1/images/",      1, "/v1/images/{id}",  srv_get_image,     NULL,               SRV_AUTH_BEARER_IMAGES, 1, SRV_BODY_NONE,    0, SRV_API_NATIVE},
    {"GET",  "/openapi.yaml",    0, "/openapi.yaml",    srv_get_openapi,   NULL,               SRV_AUTH_NONE,          0, SRV_BODY_NONE,    0, SRV_API_NATIVE},
    {"GET",  "/",                0, "/",                srv_get_root,      NULL,               SRV_AUTH_NONE,          0, SRV_BODY_NONE,    0, SRV_API_NATIVE},
    {"POST", "/v1/index/images", 0, "/v1/index/images", srv_index_start,   srv_index_resumed,  SRV_AUTH_BEARER,        1, SRV_BODY_INDEX,   0, SRV_API_NATIVE},
    {"POST", "/v1/admin/reload", 0, "/v1/admin/reload", srv_reload_start,  srv_reload_resumed, SRV_AUTH_BEARER,        1, SRV_BODY_IGNORED, 0, SRV_API_NATIVE},
};
#define N_ROUTES (sizeof routes / sizeof routes[0])

/* No route: 404 from srv_route_check; a body that comes anyway is read and dropped. */
const srv_route srv_route_none = {NULL, "", 0, "other", NULL, NULL, SRV_AUTH_NONE, 0, SRV_BODY_IGNORED, 0, SRV_API_NATIVE};

static int path_matches(const srv_route *rt, const char *url) {
    if (!rt->prefix) return !strcmp(url, rt->path);
    size_t n = strlen(rt->path);
    return !strncmp(url, rt->path, n) && url[n];
}

static int same_path(const srv_route *a, const srv_route *b) { return a->prefix == b->prefix && !strcmp(a->path, b->path); }

static int method_ok(const srv_route *rt, const char *method) {
    return !strcmp(method, rt->method) || (!strcmp(rt->method, "GET") && !strcmp(method, "HEAD"));
}

const srv_route *srv_route_match(const char *url, const char *method) {
    const srv_route *first = NULL;
    for (size_t i = 0; i < N_ROUTES; i++) {
        if (!path_matches(&routes[i], url)) continue;
        if (method_ok(&routes[i], method)) return &routes[i];
        if (!first) first = &routes[i];
    }
    return first ? first : &srv_route_none;
}

const char *srv_route_arg(const srv_route *rt, const char *url) { return rt->prefix ? url + strlen(rt->path) : NULL; }

void srv_route_allow(const srv_route *rt, char *out, size_t cap) {
    size_t k = 0;
    out[0] = 0;
    for (size_t i = 0; i < N_ROUTES && rt->method; i++)
        if (same_path(&routes[i], rt) && k < cap)
            k += (size_t)snprintf(out + k, cap - k, "%s%s%s", k ? ", " : "", routes[i].method,
                                  strcmp(routes[i].method, "GET") ? "" : ", HEAD");
}

int srv_route_ready(req *r, int count) {
    int state = atomic_load(&r->srv->state);
    if (state == ST_READY) return 0;
    r->retry_after = 1;
    if (count) core_metric_add(r->srv->m_rejected, (const char *[]){state == ST_DRAINING ? "draining" : "not_ready"}, 1);
    return srv_head_error(r, 503, state == ST_DRAINING ? "draining" : "not_ready", "%s",
                          state == ST_DRAINING ? "the server is shutting down" : "the server is not ready (loading)");
}

/* 0 when the request carries the configured bearer token, else the error is recorded in r->err. */
static int check_auth(req *r) {
    srv_server *s = r->srv;
    if (!s->token[0])
        return srv_head_error(r, 403, "disabled",
                              "%s changes the server and is off: no server.auth_token_file is configured", r->route->label);
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7))
        return srv_head_error(r, 401, "unauthorized", "%s needs an Authorization: Bearer <token> header", r->route->label);
    const char *tok = h + 7;
    while (*tok == ' ') tok++;
    size_t a = strlen(tok), b = strlen(s->token);
    unsigned diff = (unsigned)(a ^ b);
    for (size_t i = 0; i < b; i++) diff |= (unsigned)(unsigned char)s->token[i] ^ (unsigned)(unsigned char)(i < a ? tok[i] : 0);
    if (diff) return srv_head_error(r, 403, "forbidden", "the bearer token is not the configured one");
    return 0;
}

int srv_route_check(req *r, const char *url, const char *method) {
    srv_server *s = r->srv;
    const srv_route *rt = r->route;
    if (!rt->method) return srv_head_error(r, 404, "not_found", "no route %.128s (see /openapi.yaml)", url);
    if (!method_ok(rt, method))
        return srv_head_error(r, 405, "method_not_allowed", "%s takes %s, not %.16s", rt->label, rt->method, method);
    /* the other routes' readiness is checked when they are complete (srv_http.c) */
    if (rt->needs_ready && rt->body != SRV_BODY_NONE && srv_route_ready(r, 1)) return r->err.status;
    if ((rt->auth == SRV_AUTH_BEARER || (rt->auth == SRV_AUTH_BEARER_IMAGES && s->cfg.server.images_require_token)) &&
        check_auth(r))
        return r->err.status;
    /* A queue that is already full refuses at once, before the body; the admission slot itself is
     * taken only once the body is in (srv_http.c), so that slow uploads hold no slot. */
    const char *why = rt->body == SRV_BODY_INPAINT ? core_exec_admissible(s->exec, -1, 1, r->deadline, &r->retry_after) : NULL;
    if (why) return srv_refuse(r, why);
    return 0;
}
