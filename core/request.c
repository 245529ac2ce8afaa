/* core/request.c: the one request path: hole map, crop plan and network inputs, executor work, Telea, paste-back. */
#include "core/request.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/route.h"
#include "imaging/telea.h"

long core_request_budget(const cfg_config *cfg, int s) {
    long crop = (long)s * s, budget = cfg->inpaint.max_work_pixels;
    long queue = (long)cfg->batching.queue_capacity * crop;
    if (budget > queue) budget = queue;
    return budget < crop ? crop : budget;
}

sp_status core_request_prepare(core_request *r, const cfg_config *cfg, int s, int k, core_method method,
                               img_u8 *image, const img_u8 *mask, core_mask_kind kind, core_fault *fault) {
    memset(r, 0, sizeof *r);
    *fault = CORE_FAULT_NONE;
    r->method = method;
    r->s = s;
    r->k = k;
    r->im = *image;
    memset(image, 0, sizeof *image);
    if (!mask) {
        if (r->im.c != 4) {
            *fault = CORE_FAULT_NO_ALPHA;
            return sp_err(SP_ERR_INVALID, "the image has no alpha channel to take the mask from (%s)",
                          r->im.c == 1 ? "grey" : "RGB");
        }
        if (!(r->hole = malloc((size_t)r->im.w * r->im.h))) return sp_err(SP_ERR_NOMEM, "no memory for the hole map");
        r->from_alpha = 1;
        if ((r->holes = img_hole_map_alpha(&r->im, r->hole)) == 0) {
            *fault = CORE_FAULT_EMPTY_MASK;
            return sp_err(SP_ERR_INVALID, "the image has no fully transparent pixel (alpha 0 marks the hole)");
        }
    } else if (mask->w != r->im.w || mask->h != r->im.h) {
        *fault = CORE_FAULT_MASK_SIZE;
        return sp_err(SP_ERR_INVALID, "the mask is %dx%d but the image is %dx%d (after EXIF orientation)", mask->w,
                      mask->h, r->im.w, r->im.h);
    } else if (!(r->hole = malloc((size_t)r->im.w * r->im.h))) {
        return sp_err(SP_ERR_NOMEM, "no memory for the hole map");
    } else if (kind == CORE_MASK_ALPHA) {
        if (mask->c != 4) {
            *fault = CORE_FAULT_MASK_NO_ALPHA;
            return sp_err(SP_ERR_INVALID, "the mask has no alpha channel (%s): its transparent pixels, alpha 0, mark the hole",
                          mask->c == 1 ? "grey" : "RGB");
        }
        r->from_alpha = 1;
        if ((r->holes = img_hole_map_alpha(mask, r->hole)) == 0) {
            *fault = CORE_FAULT_EMPTY_MASK;
            return sp_err(SP_ERR_INVALID, "the mask has no fully transparent pixel (alpha 0 marks the hole)");
        }
    } else if ((r->holes = img_hole_map(mask, r->hole)) == 0) {
        *fault = CORE_FAULT_EMPTY_MASK;
        return sp_err(SP_ERR_INVALID, "the mask marks no pixel as hole (white, luminance > 127, is the hole)");
    }
    if (r->im.c == 1) {
        img_u8 rgb;
        sp_status st = img_convert(&r->im, 3, &rgb);
        if (st) return st;
        img_free(&r->im);
        r->im = rgb;
    }
    if (method == CORE_METHOD_TELEA) return SP_OK;
    sp_status st = img_plan_make(r->hole, r->im.w, r->im.h, s, cfg_plan_strategy(cfg), cfg->inpaint.crop_margin,
                                 core_request_budget(cfg, s), &r->plan);
    if (st) return st;
    int n = r->plan.n;
    size_t s2 = (size_t)s * s;
    r->x = malloc(sizeof(float) * 3 * s2 * n);
    r->m = malloc(sizeof(float) * s2 * n);
    r->y = malloc(sizeof(float) * 3 * s2 * n);
    r->ids = calloc((size_t)n * (k + 1), sizeof *r->ids);
    r->scores = calloc((size_t)n * (k + 1), sizeof *r->scores);
    if (!r->x || !r->m || !r->y || !r->ids || !r->scores) return sp_err(SP_ERR_NOMEM, "no memory for %d crops", n);
    for (int i = 0; i < n; i++)
        if ((st = img_plan_input(&r->plan, i, &r->im, r->hole, r->x + (size_t)i * 3 * s2, r->m + (size_t)i * s2)))
            return st;
    return SP_OK;
}

/* r->iblend: the telea_blend_image table of the net that paints r's family and method (none for telea). */
static void image_blend_of(core_request *r, const core_engine *e) {
    if (r->method != CORE_METHOD_TELEA)
        r->iblend = core_engine_image_blend(e, r->family, r->method == CORE_METHOD_COARSE, &r->iblend_n);
}

sp_status core_request_prepare_for(core_request *r, const cfg_config *cfg, core_engine *e, const core_router *rt,
                                   int fam, core_method method, int has_refs, img_u8 *image, const img_u8 *mask,
                                   core_mask_kind kind, core_fault *fault, core_route *route) {
    *route = (core_route){.routed = fam < 0, .family = fam < 0 ? 0 : fam, .p_family = 1, .p_nets = -1};
    if (fam >= 0 || !rt || method == CORE_METHOD_TELEA) { /* named, or auto without a router: no weighing */
        const int f = route->family;
        sp_status st = core_request_prepare(r, cfg, core_engine_size(e, f), core_engine_k(e, f), method, image, mask,
                                            kind, fault);
        r->family = f;
        if (!st) image_blend_of(r, e);
        return st;
    }
    /* 1. the family: crops planned at the router's size, as the family of that size would get them */
    const int ds = core_router_domain_size(rt);
    int dfam = -1;
    for (int i = 0; i < core_engine_nfamilies(e) && dfam < 0; i++)
        if (core_engine_size(e, i) == ds) dfam = i;
    sp_status st = core_request_prepare(r, cfg, ds, dfam >= 0 ? core_engine_k(e, dfam) : 0, method, image, mask, kind,
                                        fault);
    if (st) return st;
    float p[CORE_ROUTE_MAX_CLASSES];
    if ((st = core_router_domain(rt, r->plan.n, ds, r->x, r->m, p))) return st;
    const int cls = core_router_choose(rt, p);
    const int best = core_engine_family_index(e, core_router_class(rt, cls)); /* the engine checked them all */
    if (best < 0) return sp_err(SP_ERR_INVALID, "the router's class %s is no family of this configuration",
                                core_router_class(rt, cls));
    route->family = best;
    route->p_family = p[cls];
    if (best != dfam) { /* prepared again at the chosen family's size: the image moves back out of r */
        img_u8 im = r->im;
        memset(&r->im, 0, sizeof r->im);
        core_request_free(r);
        st = core_request_prepare(r, cfg, core_engine_size(e, best), core_engine_k(e, best), method, &im, mask, kind,
                                  fault);
        img_free(&im);
        if (st) return st;
    }
    r->family = best;
    /* 2. nets or Telea: the family's gate, for sim without the caller's references */
    if (method == CORE_METHOD_SIM && !has_refs) {
        core_route_feat feat;
        if ((st = core_route_features(r, p[cls], &feat))) return st;
        route->p_nets = core_router_gate(rt, cls, &feat);
        if (!core_router_use_nets(rt, cls, &feat)) {
            route->to_telea = 1;
            r->method = CORE_METHOD_TELEA; /* the crops go unused; core_request_free frees them */
        }
    }
    image_blend_of(r, e);
    return SP_OK;
}

sp_status core_request_set_refs(core_request *r, int n, const img_u8 *imgs, const int64_t *ids) {
    if (r->method != CORE_METHOD_SIM) return sp_err(SP_ERR_INVALID, "references are used only by method sim");
    if (r->k < 1) return sp_err(SP_ERR_INVALID, "Sim-0 (no database) takes no reference images");
    if (n < 1 || n > r->k)
        return sp_err(SP_ERR_INVALID, "%d references given; this model takes 1 to %d (its K)", n, r->k);
    const size_t isz = (size_t)3 * r->s * r->s;
    free(r->refs);
    free(r->ref_ids);
    r->refs = malloc(sizeof(float) * isz * (size_t)r->k);
    r->ref_ids = malloc(sizeof(int64_t) * (size_t)r->k);
    r->nrefs = 0;
    if (!r->refs || !r->ref_ids) return sp_err(SP_ERR_NOMEM, "no memory for %d reference images", r->k);
    for (int i = 0; i < n; i++) {
        const img_u8 *im = &imgs[i];
        img_u8 sq = {0};
        const int as_is = im->w == r->s && im->h == r->s && im->c == 3; /* already a database row */
        if (!as_is) {
            sp_status st = img_square(im, r->s, &sq);
            if (st) return st;
        }
        img_to_chw(as_is ? im : &sq, r->refs + isz * i);
        img_free(&sq);
        r->ref_ids[i] = ids[i];
    }
    for (int i = n; i < r->k; i++) { /* fewer than K: the last repeats */
        memcpy(r->refs + isz * i, r->refs + isz * (n - 1), sizeof(float) * isz);
        r->ref_ids[i] = ids[n - 1];
    }
    r->nrefs = n;
    return SP_OK;
}

void core_request_work(core_request *r, double deadline) {
    core_work *w = &r->work;
    memset(w, 0, sizeof *w);
    w->n = r->plan.n;
    w->family = r->family;
    w->method = r->method == CORE_METHOD_COARSE ? NN_METHOD_COARSE : NN_METHOD_SIM;
    w->img = r->x;
    w->mask = r->m;
    w->out = r->y;
    w->ids = r->ids;
    w->scores = r->scores;
    w->refs = r->refs;
    w->ref_ids = r->ref_ids;
    w->deadline = deadline;
}

/* With a hole map from alpha, the filled pixels become opaque; every other pixel is left as it is. */
static void opaque_holes(core_request *r) {
    if (!r->from_alpha || r->im.c != 4) return;
    size_t n = (size_t)r->im.w * r->im.h;
    for (size_t i = 0; i < n; i++)
        if (r->hole[i]) r->im.px[i * 4 + 3] = 255;
}

sp_status core_request_telea(core_request *r, double deadline) {
    double t0 = sp_now();
    sp_status st = telea_inpaint_until(&r->im, r->hole, TELEA_DEFAULT_RADIUS, 0, deadline);
    r->telea_ms = (sp_now() - t0) * 1e3;
    if (!st) opaque_holes(r);
    return st;
}

sp_status core_request_finish(core_request *r) {
    size_t crop = (size_t)3 * r->s * r->s;
    for (int i = 0; i < r->plan.n; i++) {
        sp_status st = img_plan_paste(&r->plan, i, r->y + (size_t)i * crop, &r->im, r->hole);
        if (st) return st;
    }
    if (r->iblend_n) {
        double t0 = sp_now();
        sp_status st = telea_image_blend(&r->im, r->hole, r->iblend, r->iblend_n, TELEA_DEFAULT_RADIUS, r->work.deadline);
        r->blend_ms = (sp_now() - t0) * 1e3;
        if (st && st != SP_ERR_TIMEOUT) return st; /* past the deadline: the pasted answer as it is */
    }
    opaque_holes(r);
    return SP_OK;
}

/* core_request_run's wait for the executor. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} waiter;

static void wake(core_work *w) {
    waiter *wt = w->user;
    pthread_mutex_lock(&wt->mu);
    wt->done = 1;
    pthread_cond_signal(&wt->cv);
    pthread_mutex_unlock(&wt->mu);
}

sp_status core_request_run(core_request *r, core_exec *ex, double deadline) {
    if (r->method == CORE_METHOD_TELEA) return core_request_telea(r, deadline);
    waiter wt = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    core_request_work(r, deadline > 0 ? deadline : sp_now() + 1e7); /* no deadline: a long one */
    r->work.done = wake;
    r->work.user = &wt;
    int retry;
    sp_status st = core_exec_submit(ex, &r->work, &retry);
    if (st) return st;
    pthread_mutex_lock(&wt.mu);
    while (!wt.done) pthread_cond_wait(&wt.cv, &wt.mu);
    pthread_mutex_unlock(&wt.mu);
    pthread_mutex_destroy(&wt.mu);
    pthread_cond_destroy(&wt.cv);
    if (r->work.status) return sp_err(r->work.status, "%s", r->work.error);
    return core_request_finish(r);
}

void core_request_free(core_request *r) {
    img_free(&r->im);
    free(r->hole);
    img_plan_free(&r->plan);
    free(r->x);
    free(r->m);
    free(r->y);
    free(r->ids);
    free(r->scores);
    free(r->refs);
    free(r->ref_ids);
    memset(r, 0, sizeof *r);
}
