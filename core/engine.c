/* core/engine.c: loading the models and database named by the configuration; reference-counted worlds for reloads; the runner over nn_pipeline. */
#include "core/engine.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/models.h"
#include "model/nn.h"
#include "retrieval/rt.h"

typedef struct world {
    rt_db *db;            /* NULL in Sim-0 */
    rt_retriever retr;
    nn_pipeline *pipe;
    int refs;             /* users now, plus one while it is the current world */
    long loaded_at;       /* wall seconds */
} world;

struct core_engine {
    cfg_config cfg;
    core_models m;            /* backend, nets, descriptor (core/models.h) */
    nn_backend *be;           /* m's, for short */
    nn_net *coarse, *refine, *vgg; /* m's: refine is Sim-K's with a database, else Sim-0's */
    rt_descriptor *desc;
    int s, k, writable;
    pthread_mutex_t mu;       /* guards cur, reloads */
    world *cur;
    long reloads;
    /* Appends go through their own writable handle (each append takes the database's lock while
     * it writes); after each append a fresh read-only world is swapped in so searches see the new
     * images. A handle left stale by `semipaint index build --force` is reopened once. */
    pthread_mutex_t write_mu; /* one append or reload at a time */
    rt_db *writer;
};

static void world_free(world *w) {
    if (!w) return;
    nn_pipeline_free(w->pipe);
    rt_db_close(w->db);
    free(w);
}

static world *acquire(core_engine *e) {
    pthread_mutex_lock(&e->mu);
    world *w = e->cur;
    w->refs++;
    pthread_mutex_unlock(&e->mu);
    return w;
}

static void release(core_engine *e, world *w) {
    pthread_mutex_lock(&e->mu);
    int last = --w->refs == 0;
    pthread_mutex_unlock(&e->mu);
    if (last) world_free(w);
}

/* Opens the database and builds a world on it (or a Sim-0 world when `dir` is empty). */
static sp_status world_new(core_engine *e, world **out) {
    *out = NULL;
    world *w = calloc(1, sizeof *w);
    if (!w) return sp_err(SP_ERR_NOMEM, "engine: out of memory");
    sp_status st = SP_OK;
    w->loaded_at = (long)sp_wall();
    if (e->k > 0) {
        const char *dir = e->cfg.retrieval.database;
        if ((st = core_models_open_db(&e->m, dir, "retrieval.database", 0, &w->db))) goto fail;
        if (rt_db_set_search_param(w->db, "nprobe", e->cfg.retrieval.nprobe))
            SP_DEBUG("%s: retrieval.nprobe not applied: %s", dir, sp_err_msg());
        rt_retriever_init(&w->retr, w->db, e->desc, e->k);
        st = core_models_pipeline(&e->m, e->refine, &w->retr.hook, e->cfg.model.telea_blend, &w->pipe);
    } else {
        st = core_models_pipeline(&e->m, e->refine, NULL, e->cfg.model.telea_blend, &w->pipe);
    }
    if (st) goto fail;
    w->refs = 1;
    *out = w;
    return SP_OK;
fail:
    world_free(w);
    return st;
}

/* The last component of `path` ("db" for "build/db/"), in `out`; what /v1/info shows of paths. */
static const char *last_component(const char *path, char *out, size_t cap) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/') b--;
    snprintf(out, cap, "%.*s", (int)(n - b), path + b);
    return out;
}

/* Runs the whole pipeline once at every batch size the executor uses (powers of two below
 * max_batch, and max_batch) on a grey picture with a square hole, so that the backend's
 * primitives, transformed weights and activation memory exist before the service reports ready:
 * the first requests are as fast as the rest, and resident memory starts at its working level. */
static sp_status warm_up(core_engine *e, int max_batch) {
    const size_t plane = (size_t)e->s * e->s;
    float *img = malloc((size_t)max_batch * 3 * plane * sizeof(float));
    float *mask = malloc((size_t)max_batch * plane * sizeof(float));
    float *out = malloc((size_t)max_batch * 3 * plane * sizeof(float));
    sp_status st = SP_OK;
    if (!img || !mask || !out) {
        st = sp_err(SP_ERR_NOMEM, "engine: warm-up buffers for a batch of %d", max_batch);
        goto done;
    }
    for (size_t i = 0; i < (size_t)max_batch * 3 * plane; i++) img[i] = 0.5f;
    for (int b = 0; b < max_batch; b++)
        for (int y = 0; y < e->s; y++)
            for (int x = 0; x < e->s; x++)
                mask[b * plane + (size_t)y * e->s + x] = !(y >= e->s / 4 && y < 3 * e->s / 4 && x >= e->s / 4 && x < 3 * e->s / 4);
    double t0 = sp_now();
    world *w = acquire(e);
    for (int n = 1;; n = n * 2 < max_batch ? n * 2 : max_batch) {
        if ((st = nn_pipeline_run(w->pipe, n, img, mask, NN_METHOD_SIM, out, NULL, NULL, NULL))) {
            st = sp_err_wrap(st, "engine warm-up at batch size %d", n);
            break;
        }
        if (n == max_batch) break;
    }
    release(e, w);
    if (!st) SP_INFO("warmed up batch sizes 1 to %d in %.1f s", max_batch, sp_now() - t0);
done:
    free(img);
    free(mask);
    free(out);
    return st;
}

sp_status core_engine_new(const cfg_config *cfg, core_engine **out) {
    *out = NULL;
    core_engine *e = calloc(1, sizeof *e);
    if (!e) return sp_err(SP_ERR_NOMEM, "engine: out of memory");
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->write_mu, NULL);
    e->cfg = *cfg;
    e->writable = cfg->server.auth_token_file[0] != 0;
    sp_status st;
    const int with_db = cfg->retrieval.database[0] != 0;
    /* with a database Sim-K (model.refine) and its descriptor, without one Sim-0 (model.refine_fallback) */
    core_models_opts mo = {.device = (nn_device)cfg->model.device, .gpu = cfg->model.gpu,
                           .precision = (nn_precision)cfg->model.precision, .threads = cfg->model.cpu_threads,
                           .coarse = cfg->model.coarse, .coarse_key = "model.coarse",
                           .refine = with_db ? cfg->model.refine : NULL, .refine_key = "model.refine",
                           .sim0 = with_db ? NULL : cfg->model.refine_fallback, .sim0_key = "model.refine_fallback",
                           .sim0_why = " but no retrieval.database is configured",
                           .database = with_db ? cfg->retrieval.database : NULL, .database_key = "retrieval.database",
                           .descriptor = with_db ? cfg->retrieval.descriptor : NULL,
                           .descriptor_key = "retrieval.descriptor",
                           .descriptor_weights = with_db ? cfg->retrieval.descriptor_weights : NULL,
                           .descriptor_weights_key = "retrieval.descriptor_weights"};
    const char *empty = !cfg->model.coarse[0]                ? "model.coarse"
                        : with_db && !cfg->model.refine[0]   ? "model.refine"
                        : !with_db && !cfg->model.refine_fallback[0] ? "model.refine_fallback"
                                                             : NULL;
    if (empty) {
        st = sp_err(SP_ERR_INVALID, "%s is empty: it must name a weights file", empty);
        goto fail;
    }
    if ((st = core_models_open(&mo, &e->m))) goto fail;
    e->be = e->m.be;
    e->coarse = e->m.coarse;
    e->refine = with_db ? e->m.refine : e->m.sim0;
    e->vgg = e->m.vgg;
    e->desc = e->m.desc;
    e->s = e->m.s;
    e->k = e->m.k;
    if ((st = world_new(e, &e->cur))) goto fail;
    if (with_db && e->writable && (st = rt_db_open(cfg->retrieval.database, e->desc, 1, &e->writer))) {
        st = sp_err_wrap(st, "opening the database for POST /v1/index/images (server.auth_token_file is set)");
        goto fail;
    }
    if ((st = warm_up(e, cfg->batching.max_batch > 0 ? cfg->batching.max_batch : 1))) goto fail;
    *out = e;
    return SP_OK;
fail:
    core_engine_free(e);
    return st;
}

void core_engine_free(core_engine *e) {
    if (!e) return;
    if (e->cur) release(e, e->cur);
    rt_db_close(e->writer);
    core_models_close(&e->m);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->write_mu);
    free(e);
}

int core_engine_size(const core_engine *e) { return e->s; }
int core_engine_k(const core_engine *e) { return e->k; }
int core_engine_has_db(const core_engine *e) { return e->k > 0; }
const char *core_engine_backend(const core_engine *e) { return nn_backend_name(e->be); }
int core_engine_backend_has(const core_engine *e, nn_cap cap) { return nn_backend_has(e->be, cap); }

size_t core_engine_device_memory(const core_engine *e) { return nn_backend_device_memory(e->be); }

long core_engine_db_count(core_engine *e) {
    if (!e->k) return 0;
    world *w = acquire(e);
    long n = rt_db_count(w->db);
    release(e, w);
    return n;
}

static sp_status engine_run(void *ctx, int n, const float *img, const float *mask, const float *refs,
                            const uint8_t *given, nn_method method, float *out, int64_t *ids, float *scores,
                            nn_timings *t) {
    core_engine *e = ctx;
    world *w = acquire(e);
    sp_status st = nn_pipeline_run_refs(w->pipe, n, img, mask, refs, given, method, out, ids, scores, t);
    release(e, w);
    return st;
}

core_runner core_engine_runner(core_engine *e) {
    core_runner r = {e->s, e->k, engine_run, e};
    return r;
}

/* Builds a world on the database as it is on disk now and makes it current. Holds write_mu. */
static sp_status swap_world(core_engine *e) {
    world *nw;
    sp_status st = world_new(e, &nw);
    if (st) return st;
    pthread_mutex_lock(&e->mu);
    world *old = e->cur;
    e->cur = nw;
    e->reloads++;
    pthread_mutex_unlock(&e->mu);
    release(e, old);
    return SP_OK;
}

sp_status core_engine_reload(core_engine *e) {
    if (!e->k) return sp_err(SP_ERR_INVALID, "no retrieval.database is configured: nothing to reload");
    pthread_mutex_lock(&e->write_mu);
    /* the directory may have been replaced: the writer follows it */
    rt_db_close(e->writer);
    e->writer = NULL;
    sp_status st = swap_world(e);
    if (e->writable) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", st ? sp_err_msg() : "");
        if (rt_db_open(e->cfg.retrieval.database, e->desc, 1, &e->writer))
            SP_ERROR("%s: cannot reopen for appends (POST /v1/index/images is refused until a reload succeeds): %s",
                     e->cfg.retrieval.database, sp_err_msg());
        if (st) sp_err(st, "%s", msg);
    }
    pthread_mutex_unlock(&e->write_mu);
    return st;
}

sp_status core_engine_image(core_engine *e, int64_t id, img_u8 *out) {
    memset(out, 0, sizeof *out);
    if (!e->k) return sp_err(SP_ERR_INVALID, "no database is configured");
    world *w = acquire(e);
    sp_status st = SP_OK;
    const uint8_t *px = id >= 0 && id < rt_db_count(w->db) ? rt_db_image_rgb(w->db, id) : NULL;
    if (!px) st = sp_err(SP_ERR_INVALID, "no image %lld in the database (it holds %ld)", (long long)id, rt_db_count(w->db));
    else if (!(st = img_alloc(out, e->s, e->s, 3))) memcpy(out->px, px, (size_t)e->s * e->s * 3);
    release(e, w);
    return st;
}

sp_status core_engine_index_add(core_engine *e, int n, const uint8_t *rgb, const char *const *names, int64_t *ids) {
    if (!e->k) return sp_err(SP_ERR_INVALID, "no database is configured");
    if (!e->writable) return sp_err(SP_ERR_INVALID, "the database is open read-only (no server.auth_token_file)");
    size_t s2 = (size_t)e->s * e->s;
    int dim = rt_descriptor_dim(e->desc);
    float *chw = malloc(sizeof(float) * 3 * s2 * (size_t)n), *desc = malloc(sizeof(float) * (size_t)dim * n);
    sp_status st = SP_OK;
    if (!chw || !desc) {
        st = sp_err(SP_ERR_NOMEM, "index add: out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        img_u8 im = {e->s, e->s, 3, (uint8_t *)rgb + (size_t)i * s2 * 3};
        img_to_chw(&im, chw + (size_t)i * 3 * s2);
    }
    if ((st = rt_descriptor_compute(e->desc, n, e->s, chw, desc))) goto done;
    pthread_mutex_lock(&e->write_mu);
    if (!e->writer) st = sp_err(SP_ERR_INVALID, "the database could not be reopened for appends; reload it first");
    else if ((st = rt_db_add(e->writer, n, rgb, desc, names, ids)) == SP_ERR_STALE) {
        /* rebuilt or appended to by another process since we opened it: nothing was written;
         * follow the directory as it is now and try once more */
        SP_INFO("%s changed on disk since it was opened (%s); reopening it for this append", e->cfg.retrieval.database,
                sp_err_msg());
        rt_db_close(e->writer);
        e->writer = NULL;
        if ((st = rt_db_open(e->cfg.retrieval.database, e->desc, 1, &e->writer)) == SP_OK)
            st = rt_db_add(e->writer, n, rgb, desc, names, ids);
    }
    if (e->writer && st == SP_OK) {
        if ((st = swap_world(e)))
            st = sp_err_wrap(st, "the images were added durably but the database could not be reopened to serve them");
    }
    pthread_mutex_unlock(&e->write_mu);
done:
    free(chw);
    free(desc);
    return st;
}

static cJSON *net_json(const nn_net *net, int blend_on) {
    const nn_net_info *in = nn_net_get_info(net);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "arch", in->arch_name);
    char name[256];
    cJSON_AddStringToObject(o, "file", last_component(in->path, name, sizeof name)); /* no directories for strangers */
    cJSON_AddNumberToObject(o, "parameters", (double)in->params);
    cJSON_AddStringToObject(o, "sha256", in->sha256);
    cJSON_AddNumberToObject(o, "size", in->size);
    if (in->arch == NN_ARCH_SIMK_UNET) cJSON_AddNumberToObject(o, "k", in->k);
    cJSON_AddStringToObject(o, "trained_on", in->trained_on);
    cJSON_AddStringToObject(o, "licence", in->licence);
    if (in->blend_n && blend_on) {
        cJSON *t = cJSON_AddArrayToObject(o, "telea_blend");
        for (int i = 0; t && i < in->blend_n; i++) /* as written in the file, not as a float's double */
            cJSON_AddItemToArray(t, cJSON_CreateNumber(round(in->blend[i] * 1e4) / 1e4));
    }
    return o;
}

void core_engine_info(core_engine *e, cJSON *obj) {
    cJSON_AddStringToObject(obj, "backend", nn_backend_name(e->be));
    cJSON_AddStringToObject(obj, "device", nn_backend_device(e->be));
    char mode[32];
    snprintf(mode, sizeof mode, "sim%d", e->k);
    cJSON_AddStringToObject(obj, "mode", mode);
    cJSON_AddNumberToObject(obj, "working_size", e->s);
    cJSON *models = cJSON_AddObjectToObject(obj, "models");
    cJSON_AddItemToObject(models, "coarse", net_json(e->coarse, e->cfg.model.telea_blend));
    cJSON_AddItemToObject(models, "refine", net_json(e->refine, e->cfg.model.telea_blend));
    if (e->vgg) cJSON_AddItemToObject(models, "descriptor", net_json(e->vgg, e->cfg.model.telea_blend));
    if (!e->k) {
        cJSON_AddNullToObject(obj, "database");
        cJSON_AddStringToObject(obj, "note", "no retrieval.database is configured: serving Sim-0 (refine without "
                                             "neighbours, model.refine_fallback)");
        return;
    }
    world *w = acquire(e);
    cJSON *db = cJSON_AddObjectToObject(obj, "database");
    char name[256];
    cJSON_AddStringToObject(db, "name", last_component(e->cfg.retrieval.database, name, sizeof name));
    cJSON_AddNumberToObject(db, "count", (double)rt_db_count(w->db));
    cJSON_AddStringToObject(db, "descriptor", rt_db_descriptor(w->db));
    cJSON_AddStringToObject(db, "descriptor_weights_sha256", rt_db_weights_sha256(w->db));
    cJSON_AddStringToObject(db, "index", rt_db_factory(w->db));
    cJSON_AddNumberToObject(db, "size", rt_db_size(w->db));
    cJSON_AddNumberToObject(db, "generation", (double)rt_db_generation(w->db));
    cJSON_AddBoolToObject(db, "writable", e->writable);
    cJSON_AddNumberToObject(db, "loaded_at", (double)w->loaded_at);
    pthread_mutex_lock(&e->mu);
    cJSON_AddNumberToObject(db, "reloads", (double)e->reloads);
    pthread_mutex_unlock(&e->mu);
    release(e, w);
}
