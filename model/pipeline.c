/* pipeline.c: the batched inpainting pipeline: coarse -> composite -> retrieval -> refine -> composite. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "imaging/telea.h"
#include "model/backend.h"

struct nn_pipeline {
    nn_net *coarse, *refine;
    const nn_retriever *retriever;
    int k, s;
    int cap;          /* batch size the buffers below hold */
    float *fill;      /* (cap,3,s,s) coarse output, then refine output */
    float *comp;      /* (cap,3,s,s) coarse composite */
    float *rin;       /* (cap,4+3k,s,s) refine input */
    float *neighbors; /* (cap,k,3,s,s) */
    int64_t *ids;     /* (cap,k) when the caller wants none */
    float *scores;
    nn_pipeline_opts opts;
    uint8_t *tfill;   /* (cap,s,s,3) Telea's fill for the border blend */
    int *tdist;       /* (cap,s,s) hole distances */
};

void nn_composite(int n, int c, int h, int w, const float *known, const float *fill, const float *mask, float *out) {
    const size_t hw = (size_t)h * w;
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++) {
            const float *kp = known + ((size_t)i * c + ch) * hw, *fp = fill + ((size_t)i * c + ch) * hw;
            const float *mp = mask + (size_t)i * hw;
            float *op = out + ((size_t)i * c + ch) * hw;
            for (size_t p = 0; p < hw; p++) op[p] = mp[p] != 0.0f ? kp[p] : fp[p];
        }
}

sp_status nn_pipeline_new(nn_net *coarse, nn_net *refine, const nn_retriever *retriever, nn_pipeline **out) {
    *out = NULL;
    const nn_net_info *ci = nn_net_get_info(coarse), *ri = nn_net_get_info(refine);
    if (ci->arch != NN_ARCH_PCONV_UNET)
        return sp_err(SP_ERR_INVALID, "%s: the coarse model must be a pconv_unet, this is %s", ci->path, ci->arch_name);
    if (ri->arch != NN_ARCH_SIMK_UNET)
        return sp_err(SP_ERR_INVALID, "%s: the refine model must be a simk_unet, this is %s", ri->path, ri->arch_name);
    if (ci->size != ri->size)
        return sp_err(SP_ERR_INVALID, "%s works at %d pixels but %s at %d", ci->path, ci->size, ri->path, ri->size);
    if (ri->k > 0 && (!retriever || retriever->k != ri->k))
        return sp_err(SP_ERR_INVALID, "%s: Sim-%d needs a retriever giving %d neighbours", ri->path, ri->k, ri->k);
    if (ri->k == 0 && retriever)
        return sp_err(SP_ERR_INVALID, "%s: Sim-0 takes no retriever", ri->path);
    nn_pipeline *p = calloc(1, sizeof *p);
    if (!p) return sp_err(SP_ERR_NOMEM, "pipeline");
    p->coarse = coarse;
    p->refine = refine;
    p->retriever = retriever;
    p->k = ri->k;
    p->s = ci->size;
    *out = p;
    return SP_OK;
}

static void free_buffers(nn_pipeline *p) {
    free(p->fill);
    free(p->comp);
    free(p->rin);
    free(p->neighbors);
    free(p->ids);
    free(p->scores);
    free(p->tfill);
    free(p->tdist);
    p->tfill = NULL;
    p->tdist = NULL;
    p->fill = p->comp = p->rin = p->neighbors = p->scores = NULL;
    p->ids = NULL;
    p->cap = 0;
}

void nn_pipeline_free(nn_pipeline *p) {
    if (!p) return;
    free_buffers(p);
    free(p);
}

int nn_pipeline_k(const nn_pipeline *p) { return p->k; }

void nn_pipeline_set_opts(nn_pipeline *p, const nn_pipeline_opts *o) { p->opts = *o; }

/* Telea's fill of a batch for the border blend. It reads only the input's known pixels, so it
 * can run while the networks do (opts.overlap): on a GPU it then costs no time of its own up to
 * theirs. On the CPU the two compete for the same cores (overlapping measured 8-13% fewer
 * requests per second with the shipped models on two cores), so it runs after them. */
typedef struct {
    int n, s, threads;
    const float *img, *mask;
    uint8_t *fill;
    int *dist;
    sp_status st;
    char err[512];
} blend_job;

static void *blend_fill_main(void *arg) {
    blend_job *j = arg;
    j->st = telea_blend_fill(j->n, j->s, j->img, j->mask, TELEA_DEFAULT_RADIUS, j->threads, j->fill, j->dist);
    if (j->st) snprintf(j->err, sizeof j->err, "%s", sp_err_msg());
    return NULL;
}

/* Grows the host buffers to hold batches of n (allocated once per larger batch size). */
static sp_status reserve(nn_pipeline *p, int n) {
    if (n <= p->cap) return SP_OK;
    free_buffers(p);
    size_t img = (size_t)3 * p->s * p->s;
    p->fill = sp_aligned_alloc((size_t)n * img * sizeof(float));
    p->comp = sp_aligned_alloc((size_t)n * img * sizeof(float));
    p->rin = sp_aligned_alloc((size_t)n * (4 + 3 * p->k) * p->s * p->s * sizeof(float));
    p->neighbors = p->k ? sp_aligned_alloc((size_t)n * p->k * img * sizeof(float)) : NULL;
    p->ids = p->k ? malloc((size_t)n * p->k * sizeof(int64_t)) : NULL;
    p->scores = p->k ? malloc((size_t)n * p->k * sizeof(float)) : NULL;
    p->tfill = malloc((size_t)n * img);
    p->tdist = malloc((size_t)n * p->s * p->s * sizeof(int));
    if (!p->fill || !p->comp || !p->rin || (p->k && (!p->neighbors || !p->ids || !p->scores)) || !p->tfill ||
        !p->tdist) {
        free_buffers(p);
        return sp_err(SP_ERR_NOMEM, "pipeline buffers for a batch of %d", n);
    }
    p->cap = n;
    return SP_OK;
}

/* The networks' part of nn_pipeline_run. */
static sp_status run_nets(nn_pipeline *p, int n, const float *img, const float *mask, const float *refs,
                          const uint8_t *given, nn_method method, float *out, int64_t *ids, float *scores,
                          nn_timings *t) {
    nn_timings tm = {0};
    const int s = p->s;
    const size_t hw = (size_t)s * s, img_sz = 3 * hw;
    sp_status st;
    double t0 = sp_now();
    if ((st = nn_unet_forward(p->coarse, n, s, s, img, mask, p->fill))) return st;
    tm.coarse = (sp_now() - t0) * 1e3;
    if (method == NN_METHOD_COARSE) {
        nn_composite(n, 3, s, s, img, p->fill, mask, out);
        if (t) *t = tm;
        return SP_OK;
    }
    if (p->k) {
        int64_t *oid = ids ? ids : p->ids;
        float *osc = scores ? scores : p->scores;
        int ngiven = 0;
        for (int i = 0; given && i < n; i++) ngiven += given[i] != 0;
        if (ngiven < n) { /* some crop retrieves its own */
            nn_composite(n, 3, s, s, img, p->fill, mask, p->comp);
            st = p->retriever->query(p->retriever->ctx, n, s, p->comp, oid, osc, p->neighbors, &tm.descriptor,
                                     &tm.search);
            if (st) return st;
        }
        for (int i = 0; given && i < n; i++) {
            if (!given[i]) continue;
            const size_t off = (size_t)i * p->k;
            memcpy(p->neighbors + off * img_sz, refs + off * img_sz, (size_t)p->k * img_sz * sizeof(float));
            for (int q = 0; q < p->k; q++) oid[off + q] = -1, osc[off + q] = 1;
        }
    }
    /* Refine input per image: [I*M (3), M (1), S_1..S_K (3 each)]. */
    const int cin = 4 + 3 * p->k;
    for (int i = 0; i < n; i++) {
        float *r = p->rin + (size_t)i * cin * hw;
        const float *im = img + (size_t)i * img_sz, *m = mask + (size_t)i * hw;
        for (int c = 0; c < 3; c++)
            for (size_t q = 0; q < hw; q++) r[c * hw + q] = im[c * hw + q] * m[q];
        memcpy(r + 3 * hw, m, hw * sizeof(float));
        if (p->k) memcpy(r + 4 * hw, p->neighbors + (size_t)i * p->k * img_sz, (size_t)p->k * img_sz * sizeof(float));
    }
    t0 = sp_now();
    if ((st = nn_unet_forward(p->refine, n, s, s, p->rin, NULL, p->fill))) return st;
    tm.refine = (sp_now() - t0) * 1e3;
    nn_composite(n, 3, s, s, img, p->fill, mask, out);
    if (t) *t = tm;
    return SP_OK;
}

sp_status nn_pipeline_run(nn_pipeline *p, int n, const float *img, const float *mask, nn_method method, float *out,
                          int64_t *ids, float *scores, nn_timings *t) {
    return nn_pipeline_run_refs(p, n, img, mask, NULL, NULL, method, out, ids, scores, t);
}

sp_status nn_pipeline_run_refs(nn_pipeline *p, int n, const float *img, const float *mask, const float *refs,
                               const uint8_t *given, nn_method method, float *out, int64_t *ids, float *scores,
                               nn_timings *t) {
    if (given && !refs) return sp_err(SP_ERR_INVALID, "pipeline: given neighbours without their images");
    if (given && !p->k)
        for (int i = 0; i < n; i++)
            if (given[i]) return sp_err(SP_ERR_INVALID, "pipeline: Sim-0 takes no neighbours");
    sp_status st = reserve(p, n);
    if (st) return st;
    const nn_net_info *in = nn_net_get_info(method == NN_METHOD_COARSE ? p->coarse : p->refine);
    const int blend = p->opts.blend && in->blend_n > 0 && n > 0;
    blend_job job = {n, p->s, p->opts.blend_threads, img, mask, p->tfill, p->tdist, SP_OK, ""};
    pthread_t th;
    int threaded = blend && p->opts.overlap && pthread_create(&th, NULL, blend_fill_main, &job) == 0;
    nn_timings tm = {0};
    st = run_nets(p, n, img, mask, refs, given, method, out, ids, scores, &tm);
    if (blend) {
        double t0 = sp_now(); /* the wait for the fill and the mixing, timed as part of the net's stage */
        if (threaded) pthread_join(th, NULL);
        else if (!st) blend_fill_main(&job);
        if (!st && job.st) st = sp_err(job.st, "%s", job.err);
        if (!st) {
            telea_blend_apply(n, p->s, in->blend, in->blend_n, job.fill, job.dist, out);
            *(method == NN_METHOD_COARSE ? &tm.coarse : &tm.refine) += (sp_now() - t0) * 1e3;
        }
    }
    if (t) *t = tm;
    return st;
}
