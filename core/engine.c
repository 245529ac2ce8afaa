/* core/engine.c: loading the models and database named by the configuration; reference-counted worlds for reloads; the runner over nn_pipeline. */
#include "core/engine.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/models.h"
#include "core/route.h"
#include "model/nn.h"
#include "retrieval/rt.h"

typedef struct world {
    rt_db *db;            /* NULL in Sim-0 */
    rt_retriever retr;
    nn_pipeline *pipe;
    int refs;             /* users now, plus one while it is the current world */
    long loaded_at;       /* wall seconds */
} world;

/* One model family: its models, current world and append handle. */
typedef struct {
    cfg_family cfg;
    int index;                /* its number in cfg_families' order: messages name its keys (cfg_family_key) */
    core_models m;            /* nets, descriptor; the engine's backend (core/models.h) */
    nn_net *refine;           /* Sim-K's with a database, else Sim-0's */
    int s, k;
    world *cur;               /* guarded by the engine's mu */
    long reloads;
    /* Appends go through their own writable handle (each append takes the database's lock while
     * it writes); after each append a fresh read-only world is swapped in so searches see the new
     * images. A handle left stale by `semipaint index build --force` is reopened once. */
    pthread_mutex_t write_mu; /* one append or reload at a time */
    rt_db *writer;
    char wkey[CFG_NAME_MAX + 48]; /* its descriptor_weights key, as messages name it */
} family;

struct core_engine {
    cfg_config cfg;
    nn_backend *be;           /* the one backend every family runs on */
    int writable;
    pthread_mutex_t mu;       /* guards each family's cur and reloads */
    int nfam;
    family fam[CFG_MAX_FAMILIES];
    core_router *router;      /* model.router, or NULL */
};

static void world_free(world *w) {
    if (!w) return;
    nn_pipeline_free(w->pipe);
    rt_db_close(w->db);
    free(w);
}

static world *acquire(core_engine *e, family *f) {
    pthread_mutex_lock(&e->mu);
    world *w = f->cur;
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

/* Opens f's database and builds a world on it (or a Sim-0 world without one). */
static sp_status world_new(family *f, world **out) {
    *out = NULL;
    world *w = calloc(1, sizeof *w);
    if (!w) return sp_err(SP_ERR_NOMEM, "engine: out of memory");
    sp_status st = SP_OK;
    w->loaded_at = (long)sp_wall();
    if (f->k > 0) {
        const char *dir = f->cfg.database;
        char key[CFG_NAME_MAX + 32];
        cfg_family_key(f->index, f->cfg.name, "database", key, sizeof key);
        if ((st = core_models_open_db(&f->m, dir, key, 0, &w->db))) goto fail;
        if (rt_db_set_search_param(w->db, "nprobe", f->cfg.nprobe))
            SP_DEBUG("%s: nprobe not applied: %s", dir, sp_err_msg());
        rt_retriever_init(&w->retr, w->db, f->m.desc, f->k);
        st = core_models_pipeline(&f->m, f->refine, &w->retr.hook, f->cfg.telea_blend, &w->pipe);
    } else {
        st = core_models_pipeline(&f->m, f->refine, NULL, f->cfg.telea_blend, &w->pipe);
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
static sp_status warm_up(core_engine *e, family *f, int max_batch) {
    const int S = f->s;
    const size_t plane = (size_t)S * S;
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
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                mask[b * plane + (size_t)y * S + x] = !(y >= S / 4 && y < 3 * S / 4 && x >= S / 4 && x < 3 * S / 4);
    double t0 = sp_now();
    world *w = acquire(e, f);
    for (int n = 1;; n = n * 2 < max_batch ? n * 2 : max_batch) {
        if ((st = nn_pipeline_run(w->pipe, n, img, mask, NN_METHOD_SIM, out, NULL, NULL, NULL))) {
            st = sp_err_wrap(st, "engine warm-up of family %s at batch size %d", f->cfg.name, n);
            break;
        }
        if (n == max_batch) break;
    }
    release(e, w);
    if (!st) SP_INFO("family %s: warmed up batch sizes 1 to %d in %.1f s", f->cfg.name, max_batch, sp_now() - t0);
done:
    free(img);
    free(mask);
    free(out);
    return st;
}

/* Loads family f (f->cfg set) on the engine's backend. */
static sp_status family_open(core_engine *e, family *f) {
    const cfg_config *cfg = &e->cfg;
    const cfg_family *c = &f->cfg;
    const int with_db = c->database[0] != 0;
    /* the keys as the configuration names them (cfg_family_key) */
    char kc[64], kr[64], kf[64], kd[64], kdesc[64], kw[64];
    cfg_family_key(f->index, c->name, "coarse", kc, sizeof kc);
    cfg_family_key(f->index, c->name, "refine", kr, sizeof kr);
    cfg_family_key(f->index, c->name, "refine_fallback", kf, sizeof kf);
    cfg_family_key(f->index, c->name, "database", kd, sizeof kd);
    cfg_family_key(f->index, c->name, "descriptor", kdesc, sizeof kdesc);
    cfg_family_key(f->index, c->name, "descriptor_weights", kw, sizeof kw);
    const char *empty = !c->coarse[0] ? kc : with_db && !c->refine[0] ? kr : !with_db && !c->refine_fallback[0] ? kf : NULL;
    if (empty) return sp_err(SP_ERR_INVALID, "%s is empty: it must name a weights file", empty);
    char why[96];
    snprintf(why, sizeof why, " but no %s is configured", kd);
    /* with a database Sim-K (refine) and its descriptor, without one Sim-0 (refine_fallback) */
    core_models_opts mo = {.device = (nn_device)cfg->model.device, .gpu = cfg->model.gpu,
                           .precision = (nn_precision)cfg->model.precision, .threads = cfg->model.cpu_threads,
                           .be = e->be, .coarse = c->coarse, .coarse_key = kc,
                           .refine = with_db ? c->refine : NULL, .refine_key = kr,
                           .sim0 = with_db ? NULL : c->refine_fallback, .sim0_key = kf, .sim0_why = why,
                           .database = with_db ? c->database : NULL, .database_key = kd,
                           .descriptor = with_db ? c->descriptor : NULL, .descriptor_key = kdesc,
                           .descriptor_weights = with_db ? c->descriptor_weights : NULL,
                           .descriptor_weights_key = kw};
    sp_status st = core_models_open(&mo, &f->m);
    if (st) return st;
    snprintf(f->wkey, sizeof f->wkey, "%s", kw); /* mo's keys were this frame's: keep the one m holds */
    f->m.descriptor_weights_key = f->wkey;
    if (!e->be) e->be = f->m.be, f->m.borrowed_be = 0; /* the first family made it and frees it last */
    f->refine = with_db ? f->m.refine : f->m.sim0;
    f->s = f->m.s;
    f->k = f->m.k;
    if ((st = world_new(f, &f->cur))) return st;
    if (with_db && e->writable && (st = rt_db_open(c->database, f->m.desc, 1, &f->writer)))
        return sp_err_wrap(st, "opening %s for POST /v1/index/images (server.auth_token_file is set)", kd);
    return SP_OK;
}

/* Loads model.router and checks that its classes are families of the configuration. */
static sp_status router_open(core_engine *e) {
    const char *path = e->cfg.model.router;
    sp_status st = core_router_load(path, &e->router);
    if (st) return sp_err_wrap(st, "model.router");
    for (int c = 0; c < core_router_nclasses(e->router); c++) {
        const char *name = core_router_class(e->router, c);
        int f = core_engine_family_index(e, name);
        if (f < 0)
            return sp_err(SP_ERR_INVALID, "model.router: %s routes to family '%s', which the configuration does not "
                          "define (model.family or the families section)", path, name);
        int gs = core_router_gate_size(e->router, c);
        if (gs && gs != e->fam[f].s)
            SP_WARN("model.router: %s's gate for %s was fit at %d px but the family works at %d px", path, name, gs,
                    e->fam[f].s);
    }
    SP_INFO("model.router: %s (%d families, domain crops at %d px)", path, core_router_nclasses(e->router),
            core_router_domain_size(e->router));
    return SP_OK;
}

sp_status core_engine_new(const cfg_config *cfg, core_engine **out) {
    *out = NULL;
    core_engine *e = calloc(1, sizeof *e);
    if (!e) return sp_err(SP_ERR_NOMEM, "engine: out of memory");
    pthread_mutex_init(&e->mu, NULL);
    e->cfg = *cfg;
    e->writable = cfg->server.auth_token_file[0] != 0;
    cfg_family fams[CFG_MAX_FAMILIES];
    const int n = cfg_families(cfg, fams);
    sp_status st = SP_OK;
    for (int i = 0; i < n; i++) {
        family *f = &e->fam[i];
        f->cfg = fams[i];
        f->index = i;
        pthread_mutex_init(&f->write_mu, NULL);
        e->nfam = i + 1;
        if ((st = family_open(e, f))) goto fail;
    }
    if (cfg->model.router[0] && (st = router_open(e))) goto fail;
    for (int i = 0; i < e->nfam; i++)
        if ((st = warm_up(e, &e->fam[i], cfg->batching.max_batch > 0 ? cfg->batching.max_batch : 1))) goto fail;
    *out = e;
    return SP_OK;
fail:
    core_engine_free(e);
    return st;
}

void core_engine_free(core_engine *e) {
    if (!e) return;
    core_router_free(e->router);
    /* families in reverse: the first owns the backend the others borrow */
    for (int i = e->nfam - 1; i >= 0; i--) {
        family *f = &e->fam[i];
        if (f->cur) release(e, f->cur);
        rt_db_close(f->writer);
        core_models_close(&f->m);
        pthread_mutex_destroy(&f->write_mu);
    }
    pthread_mutex_destroy(&e->mu);
    free(e);
}

int core_engine_nfamilies(const core_engine *e) { return e->nfam; }
const core_router *core_engine_router(const core_engine *e) { return e->router; }
const char *core_engine_family_name(const core_engine *e, int fam) { return e->fam[fam].cfg.name; }
int core_engine_family_index(const core_engine *e, const char *name) {
    for (int i = 0; i < e->nfam; i++)
        if (!strcmp(e->fam[i].cfg.name, name)) return i;
    return -1;
}
int core_engine_size(const core_engine *e, int fam) { return e->fam[fam].s; }
int core_engine_k(const core_engine *e, int fam) { return e->fam[fam].k; }

const float *core_engine_image_blend(const core_engine *e, int fam, int coarse, int *n) {
    const family *f = &e->fam[fam];
    const nn_net_info *in = nn_net_get_info(coarse ? f->m.coarse : f->refine);
    *n = f->cfg.telea_blend ? in->iblend_n : 0;
    return *n ? in->iblend : NULL;
}
int core_engine_has_db(const core_engine *e, int fam) { return e->fam[fam].k > 0; }
const char *core_engine_backend(const core_engine *e) { return nn_backend_name(e->be); }
int core_engine_backend_has(const core_engine *e, nn_cap cap) { return nn_backend_has(e->be, cap); }

size_t core_engine_device_memory(const core_engine *e) { return nn_backend_device_memory(e->be); }

long core_engine_db_count(core_engine *e, int fam) {
    family *f = &e->fam[fam];
    if (!f->k) return 0;
    world *w = acquire(e, f);
    long n = rt_db_count(w->db);
    release(e, w);
    return n;
}

static sp_status engine_run(void *ctx, int fam, int n, const float *img, const float *mask, const float *refs,
                            const uint8_t *given, nn_method method, float *out, int64_t *ids, float *scores,
                            nn_timings *t) {
    core_engine *e = ctx;
    family *f = &e->fam[fam];
    world *w = acquire(e, f);
    sp_status st = nn_pipeline_run_refs(w->pipe, n, img, mask, refs, given, method, out, ids, scores, t);
    release(e, w);
    return st;
}

core_runner core_engine_runner(core_engine *e) {
    core_runner r = {.nfam = e->nfam, .run = engine_run, .ctx = e};
    for (int i = 0; i < e->nfam; i++) r.s[i] = e->fam[i].s, r.k[i] = e->fam[i].k;
    return r;
}

/* Builds a world on f's database as it is on disk now and makes it current. Holds f->write_mu. */
static sp_status swap_world(core_engine *e, family *f) {
    world *nw;
    sp_status st = world_new(f, &nw);
    if (st) return st;
    pthread_mutex_lock(&e->mu);
    world *old = f->cur;
    f->cur = nw;
    f->reloads++;
    pthread_mutex_unlock(&e->mu);
    release(e, old);
    return SP_OK;
}

/* Reloads family f's database; the append handle follows the directory (it may be replaced). */
static sp_status family_reload(core_engine *e, family *f) {
    pthread_mutex_lock(&f->write_mu);
    rt_db_close(f->writer);
    f->writer = NULL;
    sp_status st = swap_world(e, f);
    if (e->writable) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", st ? sp_err_msg() : "");
        if (rt_db_open(f->cfg.database, f->m.desc, 1, &f->writer))
            SP_ERROR("family %s: %s: cannot reopen for appends (POST /v1/index/images is refused until a reload "
                     "succeeds): %s", f->cfg.name, f->cfg.database, sp_err_msg());
        if (st) sp_err(st, "%s", msg);
    }
    pthread_mutex_unlock(&f->write_mu);
    if (st) return sp_err(st, "family %s: %s", f->cfg.name, sp_err_msg());
    return SP_OK;
}

sp_status core_engine_reload(core_engine *e) {
    int any = 0;
    sp_status st = SP_OK;
    for (int i = 0; i < e->nfam && !st; i++) {
        if (!e->fam[i].k) continue;
        any = 1;
        st = family_reload(e, &e->fam[i]);
    }
    if (!any) return sp_err(SP_ERR_INVALID, "no family has a database: nothing to reload");
    return st;
}

sp_status core_engine_image(core_engine *e, int fam, int64_t id, img_u8 *out) {
    memset(out, 0, sizeof *out);
    family *f = &e->fam[fam];
    if (!f->k) return sp_err(SP_ERR_INVALID, "family %s has no database", f->cfg.name);
    world *w = acquire(e, f);
    sp_status st = SP_OK;
    const uint8_t *px = id >= 0 && id < rt_db_count(w->db) ? rt_db_image_rgb(w->db, id) : NULL;
    if (!px) st = sp_err(SP_ERR_INVALID, "no image %lld in the database (it holds %ld)", (long long)id, rt_db_count(w->db));
    else if (!(st = img_alloc(out, f->s, f->s, 3))) memcpy(out->px, px, (size_t)f->s * f->s * 3);
    release(e, w);
    return st;
}

sp_status core_engine_index_add(core_engine *e, int fam, int n, const uint8_t *rgb, const char *const *names,
                                int64_t *ids) {
    family *f = &e->fam[fam];
    if (!f->k) return sp_err(SP_ERR_INVALID, "family %s has no database", f->cfg.name);
    if (!e->writable) return sp_err(SP_ERR_INVALID, "the database is open read-only (no server.auth_token_file)");
    size_t s2 = (size_t)f->s * f->s;
    int dim = rt_descriptor_dim(f->m.desc);
    float *chw = malloc(sizeof(float) * 3 * s2 * (size_t)n), *desc = malloc(sizeof(float) * (size_t)dim * n);
    sp_status st = SP_OK;
    if (!chw || !desc) {
        st = sp_err(SP_ERR_NOMEM, "index add: out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        img_u8 im = {f->s, f->s, 3, (uint8_t *)rgb + (size_t)i * s2 * 3};
        img_to_chw(&im, chw + (size_t)i * 3 * s2);
    }
    if ((st = rt_descriptor_compute(f->m.desc, n, f->s, chw, desc))) goto done;
    pthread_mutex_lock(&f->write_mu);
    if (!f->writer) st = sp_err(SP_ERR_INVALID, "the database could not be reopened for appends; reload it first");
    else if ((st = rt_db_add(f->writer, n, rgb, desc, names, ids)) == SP_ERR_STALE) {
        /* rebuilt or appended to by another process since we opened it: nothing was written;
         * follow the directory as it is now and try once more */
        SP_INFO("%s changed on disk since it was opened (%s); reopening it for this append", f->cfg.database,
                sp_err_msg());
        rt_db_close(f->writer);
        f->writer = NULL;
        if ((st = rt_db_open(f->cfg.database, f->m.desc, 1, &f->writer)) == SP_OK)
            st = rt_db_add(f->writer, n, rgb, desc, names, ids);
    }
    if (f->writer && st == SP_OK) {
        if ((st = swap_world(e, f)))
            st = sp_err_wrap(st, "the images were added durably but the database could not be reopened to serve them");
    }
    pthread_mutex_unlock(&f->write_mu);
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
    if (in->iblend_n && blend_on) {
        cJSON *t = cJSON_AddArrayToObject(o, "telea_blend_image");
        for (int i = 0; t && i < in->iblend_n; i++)
            cJSON_AddItemToArray(t, cJSON_CreateNumber(round(in->iblend[i] * 1e4) / 1e4));
    }
    return o;
}

/* One family's fields of /v1/info: mode, working_size, models, database (and a note without one). */
static void family_info(core_engine *e, family *f, cJSON *obj) {
    char mode[32];
    snprintf(mode, sizeof mode, "sim%d", f->k);
    cJSON_AddStringToObject(obj, "mode", mode);
    cJSON_AddNumberToObject(obj, "working_size", f->s);
    cJSON *models = cJSON_AddObjectToObject(obj, "models");
    cJSON_AddItemToObject(models, "coarse", net_json(f->m.coarse, f->cfg.telea_blend));
    cJSON_AddItemToObject(models, "refine", net_json(f->refine, f->cfg.telea_blend));
    if (f->m.vgg) cJSON_AddItemToObject(models, "descriptor", net_json(f->m.vgg, f->cfg.telea_blend));
    if (!f->k) {
        cJSON_AddNullToObject(obj, "database");
        char note[160], key[CFG_NAME_MAX + 32];
        snprintf(note, sizeof note, "no database is configured for this family: serving Sim-0 (refine without "
                 "neighbours, %s)", cfg_family_key(f->index, f->cfg.name, "refine_fallback", key, sizeof key));
        cJSON_AddStringToObject(obj, "note", note);
        return;
    }
    world *w = acquire(e, f);
    cJSON *db = cJSON_AddObjectToObject(obj, "database");
    char name[256];
    cJSON_AddStringToObject(db, "name", last_component(f->cfg.database, name, sizeof name));
    cJSON_AddNumberToObject(db, "count", (double)rt_db_count(w->db));
    cJSON_AddStringToObject(db, "descriptor", rt_db_descriptor(w->db));
    cJSON_AddStringToObject(db, "descriptor_weights_sha256", rt_db_weights_sha256(w->db));
    cJSON_AddStringToObject(db, "index", rt_db_factory(w->db));
    cJSON_AddNumberToObject(db, "size", rt_db_size(w->db));
    cJSON_AddNumberToObject(db, "generation", (double)rt_db_generation(w->db));
    cJSON_AddBoolToObject(db, "writable", e->writable);
    cJSON_AddNumberToObject(db, "loaded_at", (double)w->loaded_at);
    pthread_mutex_lock(&e->mu);
    cJSON_AddNumberToObject(db, "reloads", (double)f->reloads);
    pthread_mutex_unlock(&e->mu);
    release(e, w);
}

void core_engine_info(core_engine *e, cJSON *obj) {
    cJSON_AddStringToObject(obj, "backend", nn_backend_name(e->be));
    cJSON_AddStringToObject(obj, "device", nn_backend_device(e->be));
    family_info(e, &e->fam[0], obj); /* the first family at the top level, as before families */
    if (e->router) {
        cJSON *ro = cJSON_AddObjectToObject(obj, "router");
        char name[256];
        cJSON_AddStringToObject(ro, "file", last_component(e->cfg.model.router, name, sizeof name));
        cJSON_AddStringToObject(ro, "sha256", core_router_sha256(e->router));
        cJSON_AddNumberToObject(ro, "domain_size", core_router_domain_size(e->router));
        cJSON *th = cJSON_AddObjectToObject(ro, "thresholds");
        for (int c = 0; th && c < core_router_nclasses(e->router); c++)
            cJSON_AddNumberToObject(th, core_router_class(e->router, c),
                                    round(core_router_threshold(e->router, c) * 1e4) / 1e4);
    } else {
        cJSON_AddNullToObject(obj, "router");
    }
    cJSON *arr = cJSON_AddArrayToObject(obj, "families");
    for (int i = 0; arr && i < e->nfam; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", e->fam[i].cfg.name);
        family_info(e, &e->fam[i], o);
        cJSON_AddItemToArray(arr, o);
    }
}
