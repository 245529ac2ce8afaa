/* rt_retriever.c: the nn_retriever hook: descriptors of the coarse composites, search, and the neighbours' images. */
#include <stdlib.h>

#include "retrieval/rt.h"

/* nn_retriever.query: composites (n,3,s,s) -> ids, scores (n,k) and neighbours (n,k,3,s,s). */
static sp_status retriever_query(void *ctx, int n, int s, const float *composites, int64_t *ids, float *scores,
                                 float *neighbors, double *descriptor_ms, double *search_ms) {
    rt_retriever *r = ctx;
    const int k = r->hook.k;
    *descriptor_ms = *search_ms = 0;
    if (n <= 0) return SP_OK;
    if (s != rt_db_size(r->db))
        return sp_err(SP_ERR_INVALID, "retrieval: the pipeline works at %dx%d, the database stores %dx%d images", s, s,
                      rt_db_size(r->db), rt_db_size(r->db));
    const int dim = rt_descriptor_dim(r->desc);
    float *q = malloc((size_t)n * dim * sizeof *q);
    if (!q) return sp_err(SP_ERR_NOMEM, "retrieval: %d descriptors", n);
    double t0 = sp_now();
    sp_status st = rt_descriptor_compute(r->desc, n, s, composites, q);
    double t1 = sp_now();
    *descriptor_ms = (t1 - t0) * 1e3;
    if (st) goto done;
    if ((st = rt_db_search(r->db, n, q, k, ids, scores))) goto done;
    const size_t img = (size_t)3 * s * s;
    for (int i = 0; i < n * k && st == SP_OK; i++) {
        if (ids[i] < 0) {
            st = sp_err(SP_ERR_INVALID, "retrieval: the database holds %ld images, fewer than k = %d", rt_db_count(r->db), k);
            break;
        }
        st = rt_db_image(r->db, ids[i], neighbors + (size_t)i * img);
    }
    *search_ms = (sp_now() - t1) * 1e3;
done:
    free(q);
    return st;
}

void rt_retriever_init(rt_retriever *r, rt_db *db, rt_descriptor *desc, int k) {
    r->db = db;
    r->desc = desc;
    r->hook.k = k;
    r->hook.query = retriever_query;
    r->hook.ctx = r;
}
