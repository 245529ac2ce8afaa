/* srv_h_get.c: semipaintd's GET handlers: /healthz, /readyz, /metrics, /v1/info, /v1/images/{id}, /openapi.yaml and the web page at /. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>

#include "gen/openapi_yaml.h"
#include "server/srv_http_int.h"
#include "server/srv_web.h"

enum MHD_Result srv_get_healthz(req *r, const char *arg) {
    (void)arg;
    return srv_answer_text(r, 200, "application/json", "{\"status\":\"ok\"}");
}

enum MHD_Result srv_get_readyz(req *r, const char *arg) {
    (void)arg;
    int state = atomic_load(&r->srv->state);
    if (state == ST_READY) return srv_answer_text(r, 200, "application/json", "{\"status\":\"ready\"}");
    r->retry_after = 1;
    return fail(r, 503, state == ST_DRAINING ? "draining" : state == ST_FAILED ? "load_failed" : "loading", "%s",
                state == ST_DRAINING ? "the server is shutting down"
                : state == ST_FAILED ? "loading the models or the database failed; the server log has the details"
                                     : "the models and the database are loading");
}

enum MHD_Result srv_get_metrics(req *r, const char *arg) {
    (void)arg;
    size_t len;
    char *text = core_metrics_render(r->srv->metrics, &len);
    if (!text) return fail(r, 503, "out_of_memory", "out of memory");
    return srv_answer(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, 1, NULL);
}

enum MHD_Result srv_get_openapi(req *r, const char *arg) {
    (void)arg;
    return srv_answer(r, 200, "application/yaml", (void *)openapi_yaml, openapi_yaml_len, 0, NULL);
}

enum MHD_Result srv_get_root(req *r, const char *arg) {
    (void)arg;
    if (r->srv->cfg.server.web_ui) {
        const char *page;
        size_t n;
        srv_web_index(&page, &n);
        return srv_answer(r, 200, "text/html; charset=utf-8", (void *)page, n, 0, NULL);
    }
    return fail(r, 404, "not_found", "%s",
                "the web demo page is off (server.web_ui: false); the API is described at /openapi.yaml");
}

enum MHD_Result srv_get_info(req *r, const char *arg) {
    (void)arg;
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
    cJSON_AddBoolToObject(o, "index_writable", s->token[0] && core_engine_has_db(s->engine, 0));
    cJSON_AddStringToObject(o, "default_model", "auto");
    cJSON_AddNumberToObject(o, "uptime_s", sp_now() - s->started);
    return srv_answer_json(r, 200, o);
}

enum MHD_Result srv_get_image(req *r, const char *arg) {
    char *end;
    errno = 0;
    long long id = strtoll(arg, &end, 10);
    if (!isdigit((unsigned char)*arg) || *end || errno)
        return fail(r, 404, "not_found", "image ids are non-negative integers, not '%.64s'", arg);
    img_u8 im;
    int fam;
    if (srv_family(r, MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "model"), 0, 0, &fam))
        return srv_answer_error(r, &r->err);
    if (core_engine_image(r->srv->engine, fam, id, &im)) return fail(r, 404, "not_found", "%s", sp_err_msg());
    uint8_t *buf;
    size_t len;
    sp_status st = img_encode(&im, IMG_FMT_JPEG, r->srv->cfg.inpaint.jpeg_quality, &buf, &len);
    img_free(&im);
    if (st) return fail(r, 503, "encode_failed", "%s", sp_err_msg());
    struct MHD_Response *resp;
    if (srv_answer(r, 200, "image/jpeg", buf, len, 1, &resp) != MHD_YES) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "public, max-age=3600");
    return srv_queue_held(r, resp);
}
