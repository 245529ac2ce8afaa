/* srv_h_inpaint.c: POST /v1/inpaint and POST /v1/images/edits (OpenAI's image edit API) in stages on the pools (prepare, telea, finish, send), around core/request.h; the decoding of uploads with their pixel accounting. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/srv_http_int.h"

/* Decodes one uploaded image, mapping failures to 415 (not an image, or an animated WebP), 413 (too many pixels),
 * 400 (corrupt or truncated) and 503 (memory, or server.max_pixels_in_flight: with `count`, its
 * pixels are counted there from before the decoding until the request ends; a mask, which has
 * the image's size and lives only until the hole map is made, is not counted). Returns 0 or the
 * status with r->err set. */
int srv_decode_upload(req *r, const srv_blob *b, const char *what, int count, img_u8 *out, img_format *fmt) {
    long maxpx = r->srv->cfg.server.max_image_pixels;
    img_format f;
    int w, h;
    if (img_sniff(b->data, b->len) == IMG_FMT_UNKNOWN)
        return srv_error_set(&r->err, 415, "unsupported_image", "the %s is not a JPEG, PNG or WebP", what);
    if (img_probe(b->data, b->len, &f, &w, &h))
        return srv_error_set(&r->err, 400, "bad_image", "the %s has a corrupt header: %s", what, sp_err_msg());
    if ((long long)w * h > maxpx)
        return srv_error_set(&r->err, 413, "image_too_large", "the %s is %dx%d = %lld pixels; the limit is %ld", what, w,
                             h, (long long)w * h, maxpx);
    if (count && srv_hold_pixels(r, (long)w * h)) return r->err.status;
    sp_status st = img_decode(b->data, b->len, maxpx, out, fmt);
    if (st == SP_ERR_LIMIT)
        return srv_error_set(&r->err, 413, "image_too_large", "the %s: %s", what, sp_err_msg());
    if (st == SP_ERR_NOMEM) {
        r->retry_after = 5;
        return srv_error_set(&r->err, 503, "out_of_memory", "no memory to decode the %s", what);
    }
    if (st == SP_ERR_UNSUPPORTED) return srv_error_set(&r->err, 415, "unsupported_image", "the %s: %s", what, sp_err_msg());
    if (st) return srv_error_set(&r->err, 400, "bad_image", "the %s cannot be decoded: %s", what, sp_err_msg());
    return 0;
}

/* Writes the stages the request went through and their times: Server-Timing into `server_timing`,
 * the log line's JSON into r->timings and, with `json`, the answer's timings_ms members. */
static void format_timings(req *r, double total_ms, char *server_timing, size_t cap, cJSON *json) {
    int queued = r->cr.work.n > 0, sim = queued && r->cr.work.method == NN_METHOD_SIM;
    int retrieval = sim && core_engine_k(r->srv->engine, r->cr.family) > 0;
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
        {"blend", r->cr.blend_ms, queued && r->cr.iblend_n > 0},
        {"telea", r->cr.telea_ms, r->cr.method == CORE_METHOD_TELEA},
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

/* Prints `root` (deleted; NULL = out of memory) as the JSON answer in r->out*, then frees `b64`, the
 * base64 image that root refers to without owning. 0, or 503 in r->err. */
static int json_answer(req *r, cJSON *root, char *b64) {
    char *text = root ? cJSON_PrintUnformatted(root) : NULL;
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

/* The method that ran: the requested one, or telea when model=auto's gate chose Telea. */
static const char *ran_method(const req *r) {
    return r->cr.method == CORE_METHOD_TELEA ? "telea" : srv_method_name(r->args.method);
}

/* The answer of POST /v1/images/edits, OpenAI's shape: {"created", "data": [{"b64_json"}],
 * "model", "output_format", "size"} in r->out*, from the encoded image `enc` (freed). "model" names
 * what ran: semipaint-FAMILY-METHOD. */
static int openai_answer(req *r, uint8_t *enc, size_t len, img_format fmt) {
    size_t blen;
    char *b64 = srv_b64_encode(enc, len, &blen);
    free(enc);
    cJSON *root = cJSON_CreateObject(), *data = cJSON_CreateArray(), *item = cJSON_CreateObject();
    if (b64 && root && data && item) {
        char model[64], size[32];
        snprintf(model, sizeof model, "semipaint-%s-%s", core_engine_family_name(r->srv->engine, r->cr.family),
                 ran_method(r));
        snprintf(size, sizeof size, "%dx%d", r->cr.im.w, r->cr.im.h);
        cJSON_AddNumberToObject(root, "created", (double)time(NULL));
        cJSON_AddItemToObject(item, "b64_json", cJSON_CreateStringReference(b64));
        cJSON_AddItemToArray(data, item);
        cJSON_AddItemToObject(root, "data", data);
        cJSON_AddStringToObject(root, "model", model);
        cJSON_AddStringToObject(root, "output_format", img_format_name(fmt));
        cJSON_AddStringToObject(root, "size", size);
        return json_answer(r, root, b64);
    }
    cJSON_Delete(root);
    cJSON_Delete(data);
    cJSON_Delete(item);
    return json_answer(r, NULL, b64);
}

/* Paste and encode: the answer's body and headers in r->out*. 0, or the status with r->err set. */
static int finish_build(req *r) {
    srv_server *s = r->srv;
    double t0 = sp_now();
    int k = core_engine_k(s->engine, r->cr.family);
    int n = r->cr.work.n;
    core_metric_add(s->m_inpaint, (const char *[]){core_engine_family_name(s->engine, r->cr.family), ran_method(r),
                                                   r->choice.routed ? "auto" : "named"}, 1);
    if (n > 0 && core_request_finish(&r->cr))
        return srv_error_set(&r->err, 503, "out_of_memory", "no memory to paste the result");
    img_format fmt = (img_format)r->args.format; /* format, then Accept, then inpaint.default_format */
    if (fmt == IMG_FMT_UNKNOWN && !r->want_json) fmt = r->accept_fmt;
    if (fmt == IMG_FMT_UNKNOWN) {
        int df = s->cfg.inpaint.default_format;
        fmt = df == CFG_FORMAT_PNG    ? IMG_FMT_PNG
              : df == CFG_FORMAT_JPEG ? IMG_FMT_JPEG
              : df == CFG_FORMAT_WEBP ? IMG_FMT_WEBP
                                      : r->in_fmt;
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

    /* neighbours: the caller's references (the same for every crop), else each crop's retrieved
     * ones, best score per id, in crop order */
    size_t nk = 0;
    r->neighbors[0] = 0;
    cJSON *nb = cJSON_CreateArray();
    int use_nb = n > 0 && k > 0 && r->cr.work.method == NN_METHOD_SIM;
    for (int i = 0; use_nb && i < r->cr.nrefs; i++) {
        int64_t id = r->cr.ref_ids[i];
        if (nk + 40 < sizeof r->neighbors) {
            if (id < 0)
                nk += (size_t)snprintf(r->neighbors + nk, sizeof r->neighbors - nk, "%supload%d:1.0000", nk ? "," : "", i);
            else
                nk += (size_t)snprintf(r->neighbors + nk, sizeof r->neighbors - nk, "%s%lld:1.0000", nk ? "," : "",
                                       (long long)id);
        }
        cJSON *e = cJSON_CreateObject();
        if (id < 0) cJSON_AddNullToObject(e, "id");
        else cJSON_AddNumberToObject(e, "id", (double)id);
        cJSON_AddNumberToObject(e, "score", 1);
        cJSON_AddStringToObject(e, "source", id < 0 ? "reference" : "reference_id");
        if (id < 0) cJSON_AddNumberToObject(e, "reference", i);
        cJSON_AddItemToArray(nb, e);
    }
    if (r->cr.nrefs) use_nb = 0;
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
        cJSON_AddStringToObject(e, "source", "retrieved");
        cJSON_AddItemToArray(nb, e);
    }
    if (r->route->api == SRV_API_OPENAI) { /* its total includes the base64 and JSON of the answer */
        cJSON_Delete(nb);
        int ret = openai_answer(r, enc, len, fmt);
        format_timings(r, (sp_now() - r->t0) * 1e3, r->server_timing, sizeof r->server_timing, NULL);
        return ret;
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
    cJSON_AddStringToObject(root, "method", ran_method(r));
    cJSON_AddStringToObject(root, "model", core_engine_family_name(s->engine, r->cr.family));
    cJSON *ro = cJSON_AddObjectToObject(root, "routing");
    cJSON_AddStringToObject(ro, "requested", r->choice.routed ? "auto" : "named");
    cJSON_AddNumberToObject(ro, "p_model", round(r->choice.p_family * 1e4) / 1e4);
    if (r->choice.p_nets >= 0) cJSON_AddNumberToObject(ro, "p_nets", round(r->choice.p_nets * 1e4) / 1e4);
    else cJSON_AddNullToObject(ro, "p_nets");
    cJSON_AddItemToObject(root, "neighbors", nb);
    cJSON_AddItemToObject(root, "timings_ms", tj);
    cJSON_AddStringToObject(root, "request_id", r->id);
    return json_answer(r, root, b64);
}

/* The finish stage (work pool): maps the executor's or Telea's outcome to an answer or an error. */
static void finish_job(core_job *job, int cancelled) {
    req *r = (req *)((char *)job - offsetof(req, job));
    core_work *w = &r->cr.work;
    const int telea = r->cr.method == CORE_METHOD_TELEA;
    sp_status st = telea ? r->task_status : w->n > 0 ? w->status : SP_OK;
    const char *why = telea ? r->task_error : w->error;
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
        SP_ERROR("request %s: %s failed: %s", r->id, ran_method(r), why);
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

/* The caller's references (issue 18), after a prepared sim request: `reference` uploads decoded
 * (their pixels counted like the image's until the request ends) or `reference_id` rows read from
 * the database, made the crops' neighbours (core_request_set_refs). 422 no_references_for_sim0
 * without a database (K = 0), too_many_references past K, unknown_reference for an id the database
 * does not hold; the upload statuses of srv_decode_upload. 0 or the status with r->err set. */
static int set_references(req *r) {
    srv_server *s = r->srv;
    int n = r->args.nrefs ? r->args.nrefs : r->args.nref_ids, k = core_engine_k(s->engine, r->cr.family);
    if (n == 0) return 0;
    const char *param = r->args.nrefs ? "reference" : "reference_id";
    snprintf(r->err.param, sizeof r->err.param, "%s", param);
    if (k == 0)
        return srv_error_set(&r->err, 422, "no_references_for_sim0",
                             "model family %s runs Sim-0 (it has no database): it takes no references",
                             core_engine_family_name(s->engine, r->cr.family));
    if (n > k)
        return srv_error_set(&r->err, 422, "too_many_references", "%d references given; the model (Sim-%d) takes 1 to %d",
                             n, k, k);
    img_u8 ims[SRV_MAX_REFERENCES] = {{0}};
    int64_t ids[SRV_MAX_REFERENCES];
    int ret = 0;
    for (int i = 0; !ret && i < n; i++) {
        if (r->args.nrefs) {
            char what[32];
            img_format f;
            snprintf(what, sizeof what, "reference %d", i);
            ids[i] = -1;
            ret = srv_decode_upload(r, &r->args.refs[i], what, 1, &ims[i], &f);
        } else {
            ids[i] = r->args.ref_ids[i];
            sp_status st = core_engine_image(s->engine, r->cr.family, ids[i], &ims[i]);
            if (st == SP_ERR_NOMEM) {
                r->retry_after = 5;
                ret = srv_error_set(&r->err, 503, "out_of_memory", "no memory for the reference images");
            } else if (st) {
                ret = srv_error_set(&r->err, 422, "unknown_reference", "reference_id %lld: %s", (long long)ids[i],
                                    sp_err_msg());
            }
        }
    }
    if (!ret && core_request_set_refs(&r->cr, n, ims, ids)) {
        r->retry_after = 5;
        ret = srv_error_set(&r->err, 503, "out_of_memory", "no memory for the reference images");
    }
    for (int i = 0; i < n; i++) img_free(&ims[i]);
    for (int i = 0; i < r->args.nrefs; i++) { /* the uploaded bytes are not needed any more */
        free(r->args.refs[i].data);
        r->args.refs[i].data = NULL;
        r->args.refs[i].len = 0;
    }
    r->args.nrefs = 0;
    if (!ret) r->err.param[0] = 0;
    return ret;
}

/* Decodes and prepares an inpainting request, then hands telea to its workers or queues crops.
 * 0 when the request went on to another stage, else the status with r->err set. */
static int prepare(req *r) {
    srv_server *s = r->srv;
    double t0 = sp_now();
    img_u8 im, mask = {0};
    img_format mfmt;
    int from_alpha = r->args.mask_from_alpha;
    if (srv_decode_upload(r, &r->args.image, "image", 1, &im, &r->in_fmt)) {
        snprintf(r->err.param, sizeof r->err.param, "image");
        return r->err.status;
    }
    if (!from_alpha && srv_decode_upload(r, &r->args.mask, "mask", 0, &mask, &mfmt)) {
        img_free(&im);
        snprintf(r->err.param, sizeof r->err.param, "mask");
        return r->err.status;
    }
    if (r->edits.size_w && (r->edits.size_w != im.w || r->edits.size_h != im.h)) { /* images/edits: `size` */
        srv_error_set(&r->err, 400, "unsupported_value",
                      "size %dx%d is not supported: the answer has the image's own size, %dx%d (or give size=auto)",
                      r->edits.size_w, r->edits.size_h, im.w, im.h);
        snprintf(r->err.param, sizeof r->err.param, "size");
        img_free(&im);
        img_free(&mask);
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
    /* the model family: named, or auto (images/edits: a name semipaint does not serve, such as
     * OpenAI's, means auto) */
    const char *model = r->args.model;
    if (r->route->api == SRV_API_OPENAI && r->edits.model[0] && core_engine_family_index(s->engine, r->edits.model) >= 0)
        model = r->edits.model;
    int fam;
    if (srv_family(r, model, 1, -1, &fam)) {
        img_free(&im);
        img_free(&mask);
        return r->err.status;
    }
    const int has_refs = r->args.nrefs || r->args.nref_ids;
    /* reference_id names a row of one family's database: with auto, the first family's (as
     * GET /v1/images/{id} without ?model=) */
    if (fam < 0 && r->args.nref_ids) fam = 0;
    core_fault fault;
    sp_status st = core_request_prepare_for(&r->cr, &s->cfg, s->engine, core_engine_router(s->engine), fam, method,
                                            has_refs, &im,
                                            from_alpha ? NULL : &mask,
                                            r->args.mask_alpha ? CORE_MASK_ALPHA : CORE_MASK_LUMA, &fault, &r->choice);
    img_free(&mask);
    if (st) {
        img_free(&im);
        int ret = 0;
        if (fault == CORE_FAULT_MASK_SIZE) ret = srv_error_set(&r->err, 422, "mask_size_mismatch", "%s", sp_err_msg());
        if (fault == CORE_FAULT_EMPTY_MASK) ret = srv_error_set(&r->err, 422, "empty_mask", "%s", sp_err_msg());
        if (fault == CORE_FAULT_NO_ALPHA || fault == CORE_FAULT_MASK_NO_ALPHA)
            ret = srv_error_set(&r->err, 422, "no_alpha", "%s", sp_err_msg());
        if (ret) {
            snprintf(r->err.param, sizeof r->err.param, "%s", from_alpha ? "image" : "mask");
            return ret;
        }
        r->retry_after = 5;
        return srv_error_set(&r->err, 503, "out_of_memory", "no memory to prepare the image");
    }
    if (set_references(r)) return r->err.status;
    r->decode_ms = (sp_now() - t0) * 1e3;
    core_metric_observe(s->m_stage, (const char *[]){"decode"}, sp_now() - t0);
    if (r->cr.method == CORE_METHOD_TELEA) {
        r->job.run = telea_job;
        if (core_pool_submit(s->telea, &r->job)) {
            r->retry_after = 2;
            return srv_refuse(r, "telea_queue");
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
enum MHD_Result srv_inpaint_send(req *r) {
    if (r->stage_failed) return srv_answer_error(r, &r->err);
    struct MHD_Response *resp;
    void *body = r->out;
    r->out = NULL; /* the response owns it now */
    if (srv_answer(r, 200, r->out_ctype, body, r->out_len, 1, &resp) != MHD_YES) return MHD_NO;
    MHD_add_response_header(resp, "Server-Timing", r->server_timing);
    MHD_add_response_header(resp, "X-Neighbors", r->neighbors[0] ? r->neighbors : "none");
    MHD_add_response_header(resp, "X-Inpaint-Method", ran_method(r));
    MHD_add_response_header(resp, "X-Model", core_engine_family_name(r->srv->engine, r->cr.family));
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return srv_queue_held(r, resp);
}

/* Hands a parsed inpainting request to the work pool and suspends its connection. */
enum MHD_Result srv_inpaint_start(req *r, const char *arg) {
    (void)arg;
    r->job.run = prepare_job;
    r->phase = PH_WAITING;
    if (core_pool_submit(r->srv->work, &r->job)) {
        r->phase = PH_BODY;
        r->retry_after = 1;
        srv_refuse(r, "inflight");
        return srv_answer_error(r, &r->err);
    }
    /* A stage may already have resumed the connection: then MHD ignores this suspension. */
    MHD_suspend_connection(r->conn);
    return MHD_YES;
}
