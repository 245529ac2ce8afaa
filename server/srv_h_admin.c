/* srv_h_admin.c: the routes that change the server: POST /v1/index/images (an executor task appends to the database) and POST /v1/admin/reload (a reload thread). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv_http_int.h"

/* Called by the executor once the index task ran, or when it was dropped at shutdown. */
static void work_done(core_work *w) {
    req *r = w->user;
    MHD_resume_connection(r->conn); /* last touch: the HTTP thread owns r again */
}

/* The index task (executor thread, between batches): appends the squared images. */
static void index_task(core_work *w) {
    req *r = w->user;
    srv_server *s = r->srv;
    const char *names[SRV_INDEX_MAX_IMAGES];
    for (int i = 0; i < r->xargs.n; i++) names[i] = r->xargs.images[i].name;
    r->task_status = core_engine_index_add(s->engine, r->choice.family, r->xargs.n, r->rgb, names, r->new_ids);
    if (r->task_status) snprintf(r->task_error, sizeof r->task_error, "%s", sp_err_msg());
    r->db_count = core_engine_db_count(s->engine, r->choice.family);
}

/* The family of a database route: ?model=NAME, the first family when not given. 0 or the status. */
static int db_family(req *r) {
    const char *model = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "model");
    return srv_family(r, model, 0, 0, &r->choice.family);
}

enum MHD_Result srv_index_start(req *r, const char *arg) {
    (void)arg;
    srv_server *s = r->srv;
    if (db_family(r)) return srv_answer_error(r, &r->err);
    const int fam = r->choice.family, S = core_engine_size(s->engine, fam);
    if (!core_engine_has_db(s->engine, fam))
        return fail(r, 422, "no_database", "model family %s has no database: there is nothing to add to",
                    core_engine_family_name(s->engine, fam));
    if (!s->exec || atomic_load(&s->state) != ST_READY) {
        r->retry_after = 1;
        return fail(r, 503, "shutting_down", "the server is shutting down");
    }
    int n = r->xargs.n;
    size_t row = (size_t)S * S * 3;
    r->rgb = malloc(row * n);
    r->new_ids = calloc((size_t)n, sizeof *r->new_ids);
    if (!r->rgb || !r->new_ids) return fail(r, 503, "out_of_memory", "out of memory");
    for (int i = 0; i < n; i++) {
        img_u8 im, sq;
        img_format f;
        char what[64];
        snprintf(what, sizeof what, "image %d", i);
        if (srv_decode_upload(r, &r->xargs.images[i], what, 1, &im, &f)) return srv_answer_error(r, &r->err);
        sp_status st = img_square(&im, S, &sq);
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

enum MHD_Result srv_index_resumed(req *r) {
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
    cJSON_AddStringToObject(o, "model", core_engine_family_name(r->srv->engine, r->choice.family));
    core_metric_set(r->srv->m_index, (const char *[]){core_engine_family_name(r->srv->engine, r->choice.family)},
                    (double)r->db_count);
    return srv_answer_json(r, 200, o);
}

/* The reload (its own thread, so that the HTTP thread is not held): srv_server_reload. */
static void *reload_thread(void *arg) {
    req *r = arg;
    r->task_status = srv_server_reload(r->srv);
    if (r->task_status) snprintf(r->task_error, sizeof r->task_error, "%s", sp_err_msg());
    srv_server *s = r->srv;
    r->db_count = 0;
    for (int i = 0; i < core_engine_nfamilies(s->engine); i++) r->db_count += core_engine_db_count(s->engine, i);
    MHD_resume_connection(r->conn); /* last touch of r */
    atomic_fetch_sub(&s->reload_threads, 1);
    return NULL;
}

enum MHD_Result srv_reload_start(req *r, const char *arg) {
    (void)arg;
    int any = 0;
    for (int i = 0; i < core_engine_nfamilies(r->srv->engine); i++) any |= core_engine_has_db(r->srv->engine, i);
    if (!any) return fail(r, 422, "no_database", "no model family has a database: there is nothing to reload");
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

enum MHD_Result srv_reload_resumed(req *r) {
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
    return srv_answer_json(r, 200, o);
}
