/* pipeline.c: the batched inpainting pipeline: coarse -> composite -> retrieval -> refine -> composite. */
#include <stdlib.h>
#include <string.h>

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
    if (!p->fill || !p->comp || !p->rin || (p->k && (!p->neighbors || !p->ids || !p->scores))) {
        free_buffers(p);
        return sp_err(SP_ERR_NOMEM, "pipeline buffers for a batch of %d", n);
    }
    p->cap = n;
    return SP_OK;
}

sp_status nn_pipeline_run(nn_pipeline *p, int n, const float *img, const float *mask, nn_method method, float *out,
                          int64_t *ids, float *scores, nn_timings *t) {
    nn_timings tm = {0};
    const int s = p->s;
    const size_t hw = (size_t)s * s, img_sz = 3 * hw;
    sp_status st = reserve(p, n);
    if (st) return st;
    double t0 = sp_now();
    if ((st = nn_unet_forward(p->coarse, n, s, s, img, mask, p->fill))) return st;
    tm.coarse = (sp_now() - t0) * 1e3;
    if (method == NN_METHOD_COARSE) {
        nn_composite(n, 3, s, s, img, p->fill, mask, out);
        if (t) *t = tm;
        return SP_OK;
    }
    if (p->k) {
        nn_composite(n, 3, s, s, img, p->fill, mask, p->comp);
        st = p->retriever->query(p->retriever->ctx, n, s, p->comp, ids ? ids : p->ids, scores ? scores : p->scores,
                                 p->neighbors, &tm.descriptor, &tm.search);
        if (st) return st;
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
