/* rt_index.c: the FAISS inner-product index behind rt_index.h (FAISS's C API), with a fast exact search for Flat indexes. */
#include "retrieval/rt_index.h"

#include <errno.h>
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/clone_index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

/* Exact search for Flat indexes.
 *
 * FAISS as Debian packages it is built for baseline x86-64: its exact search of fewer than 20
 * queries runs scalar dot products (13.7 ms for one query over 12,000 x 768 on this machine; its
 * BLAS path 8.4 ms), and a plain AVX2 scan of the float vectors is bound by memory bandwidth
 * (37 MB per query at 768-d, 3.4 ms). So for a Flat index semipaint keeps, beside FAISS's float
 * vectors, an 8-bit copy (one scale per vector: x ~ sx * cx, |cx| <= 127) with, per vector, the
 * exact L2 norm of its quantisation error e_x = |x - sx*cx| and the norm of sx*cx. A query is
 * quantised the same way (q ~ sq * cq, error e_q), and the approximate score
 * a_x = sq * sx * <cq, cx> is an exact integer dot product scaled (AVX2: 32 multiply-adds an
 * instruction). Since <q,x> - a_x = <q, x - sx*cx> + <q - sq*cq, sx*cx>,
 * |<q,x> - a_x| <= |q| e_x + e_q |sx*cx| =: m_x. The k-th largest lower bound a_x - m_x is a
 * threshold no true top-k vector falls below, and only the vectors whose upper bound a_x + m_x
 * reaches it are scored again from the float vectors. The result is the exact top k of the float
 * dot products, ties broken by the lower id. The 8-bit copy is a quarter of the bytes (9 MB at
 * 12,000 x 768: it stays in the last-level cache). Up to QB queries share one pass; from
 * FLAT_MAX_BATCH queries on, FAISS's BLAS path is used instead. */
#define QB 8
#define FLAT_MAX_BATCH 20
#define PAR_MIN_ELEMS (1L << 24) /* split the scan across threads from 16 M elements up */
#define FAISS_PAR_MIN_QUERIES 16 /* FAISS searches of fewer queries run on one thread */

struct rt_index {
    FaissIndex *fx;
    FaissIndexFlat *flat; /* fx as a Flat index, or NULL */
    int d;
    long ncodes, cap;     /* vectors quantised so far (== ntotal when in step) */
    int8_t *codes;        /* (cap, d) */
    float *scale, *err, *qnorm; /* (cap): sx, e_x (rounded up), |sx*cx| */
};

/* FAISS's last error on this thread, never NULL. */
static const char *faiss_msg(void) {
    const char *m = faiss_get_last_error();
    return m ? m : "unknown FAISS error";
}

/* ---- kernels ---- */

/* out[j] = <q_j, row> for nq queries (nq, d) and one float row (d). */
static void dots_f32_c(const float *q, int nq, const float *row, int d, float *out) {
    for (int j = 0; j < nq; j++) {
        const float *a = q + (size_t)j * d;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int i = 0;
        for (; i + 4 <= d; i += 4) {
            s0 += a[i] * row[i];
            s1 += a[i + 1] * row[i + 1];
            s2 += a[i + 2] * row[i + 2];
            s3 += a[i + 3] * row[i + 3];
        }
        for (; i < d; i++) s0 += a[i] * row[i];
        out[j] = (s0 + s1) + (s2 + s3);
    }
}

/* out[j] = <cq_j, row> exactly, for nq 8-bit queries (nq, d) and one 8-bit row. */
static void idots_c(const int8_t *cq, const uint8_t *aq, int nq, const int8_t *row, int d, int32_t *out) {
    (void)aq;
    for (int j = 0; j < nq; j++) {
        const int8_t *a = cq + (size_t)j * d;
        int32_t s = 0;
        for (int i = 0; i < d; i++) s += a[i] * row[i];
        out[j] = s;
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static float hsum256(__m256 s) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

/* Four queries at a time share each load of the row; the rest one by one. */
__attribute__((target("avx2,fma"))) static void dots_f32_avx2(const float *q, int nq, const float *row, int d, float *out) {
    int j = 0;
    for (; j + 4 <= nq; j += 4) {
        const float *a = q + (size_t)j * d, *b = a + d, *c = b + d, *e = c + d;
        __m256 sa = _mm256_setzero_ps(), sb = sa, sc = sa, se = sa;
        int i = 0;
        for (; i + 8 <= d; i += 8) {
            const __m256 r = _mm256_loadu_ps(row + i);
            sa = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), r, sa);
            sb = _mm256_fmadd_ps(_mm256_loadu_ps(b + i), r, sb);
            sc = _mm256_fmadd_ps(_mm256_loadu_ps(c + i), r, sc);
            se = _mm256_fmadd_ps(_mm256_loadu_ps(e + i), r, se);
        }
        float va = hsum256(sa), vb = hsum256(sb), vc = hsum256(sc), ve = hsum256(se);
        for (; i < d; i++) va += a[i] * row[i], vb += b[i] * row[i], vc += c[i] * row[i], ve += e[i] * row[i];
        out[j] = va, out[j + 1] = vb, out[j + 2] = vc, out[j + 3] = ve;
    }
    for (; j < nq; j++) {
        const float *a = q + (size_t)j * d;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int i = 0;
        for (; i + 32 <= d; i += 32) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(row + i), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(row + i + 8), a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(row + i + 16), a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(row + i + 24), a3);
        }
        for (; i + 8 <= d; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(row + i), a0);
        float v = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (; i < d; i++) v += a[i] * row[i];
        out[j] = v;
    }
}

/* The same with AVX2: maddubs multiplies |cq| (unsigned) by cx carrying cq's sign, adding
 * pairs into 16 bits (at most 2 * 127 * 127, no saturation); madd widens to 32 bits. `aq` holds
 * |cq|. Four queries at a time share each load of the row. */
__attribute__((target("avx2"))) static inline __m256i idot32(__m256i aq, __m256i cq, __m256i x, __m256i acc) {
    const __m256i p16 = _mm256_maddubs_epi16(aq, _mm256_sign_epi8(x, cq));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

__attribute__((target("avx2"))) static int32_t hsum_epi32(__m256i v) {
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
    return _mm_cvtsi128_si32(h);
}

__attribute__((target("avx2"))) static void idots_avx2(const int8_t *cq, const uint8_t *aq, int nq, const int8_t *row,
                                                       int d, int32_t *out) {
    int j = 0;
    for (; j + 4 <= nq; j += 4) {
        __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
        const size_t o0 = (size_t)j * d, o1 = o0 + d, o2 = o1 + d, o3 = o2 + d;
        int i = 0;
        for (; i + 32 <= d; i += 32) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(row + i));
            s0 = idot32(_mm256_loadu_si256((const __m256i *)(aq + o0 + i)), _mm256_loadu_si256((const __m256i *)(cq + o0 + i)), x, s0);
            s1 = idot32(_mm256_loadu_si256((const __m256i *)(aq + o1 + i)), _mm256_loadu_si256((const __m256i *)(cq + o1 + i)), x, s1);
            s2 = idot32(_mm256_loadu_si256((const __m256i *)(aq + o2 + i)), _mm256_loadu_si256((const __m256i *)(cq + o2 + i)), x, s2);
            s3 = idot32(_mm256_loadu_si256((const __m256i *)(aq + o3 + i)), _mm256_loadu_si256((const __m256i *)(cq + o3 + i)), x, s3);
        }
        int32_t v0 = hsum_epi32(s0), v1 = hsum_epi32(s1), v2 = hsum_epi32(s2), v3 = hsum_epi32(s3);
        for (; i < d; i++) {
            v0 += cq[o0 + i] * row[i];
            v1 += cq[o1 + i] * row[i];
            v2 += cq[o2 + i] * row[i];
            v3 += cq[o3 + i] * row[i];
        }
        out[j] = v0, out[j + 1] = v1, out[j + 2] = v2, out[j + 3] = v3;
    }
    for (; j < nq; j++) {
        const size_t o = (size_t)j * d;
        __m256i s0 = _mm256_setzero_si256(), s1 = s0;
        int i = 0;
        for (; i + 64 <= d; i += 64) {
            s0 = idot32(_mm256_loadu_si256((const __m256i *)(aq + o + i)), _mm256_loadu_si256((const __m256i *)(cq + o + i)),
                        _mm256_loadu_si256((const __m256i *)(row + i)), s0);
            s1 = idot32(_mm256_loadu_si256((const __m256i *)(aq + o + i + 32)),
                        _mm256_loadu_si256((const __m256i *)(cq + o + i + 32)),
                        _mm256_loadu_si256((const __m256i *)(row + i + 32)), s1);
        }
        for (; i + 32 <= d; i += 32)
            s0 = idot32(_mm256_loadu_si256((const __m256i *)(aq + o + i)), _mm256_loadu_si256((const __m256i *)(cq + o + i)),
                        _mm256_loadu_si256((const __m256i *)(row + i)), s0);
        int32_t v = hsum_epi32(_mm256_add_epi32(s0, s1));
        for (; i < d; i++) v += cq[o + i] * row[i];
        out[j] = v;
    }
}
#endif

typedef void (*dots_f32_fn)(const float *, int, const float *, int, float *);
typedef void (*idots_fn)(const int8_t *, const uint8_t *, int, const int8_t *, int, int32_t *);

static int have_avx2(void) {
#if defined(__x86_64__)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

/* ---- quantised copy ---- */

/* v (d) ~ scale * c with c in [-127, 127]; returns |v - scale*c| (exact, in double) and sets
 * *vnorm = |v| and *cnorm = |scale*c|. */
static double quantise(const float *v, int d, int8_t *c, float *scale, double *vnorm, double *cnorm) {
    float m = 0;
    double nn = 0;
    for (int i = 0; i < d; i++) {
        float a = fabsf(v[i]);
        if (a > m) m = a;
        nn += (double)v[i] * v[i];
    }
    const float sc = m > 0 ? m / 127.0f : 0, inv = m > 0 ? 127.0f / m : 0;
    double e2 = 0, c2 = 0;
    for (int i = 0; i < d; i++) {
        long q = lrintf(v[i] * inv);
        if (q > 127) q = 127;
        if (q < -127) q = -127;
        c[i] = (int8_t)q;
        const double r = (double)sc * q, diff = (double)v[i] - r;
        e2 += diff * diff;
        c2 += r * r;
    }
    *scale = sc;
    *vnorm = sqrt(nn);
    *cnorm = sqrt(c2);
    return sqrt(e2);
}

/* Quantises rows [from, to) of x (whose row 0 is vector `from`) into the index's 8-bit copy. */
static sp_status codes_append(rt_index *ix, long from, long to, const float *x) {
    if (to > ix->cap) {
        long nc = ix->cap ? ix->cap : 1024;
        while (nc < to) nc *= 2;
        int8_t *c = realloc(ix->codes, (size_t)nc * ix->d);
        if (c) ix->codes = c;
        float *s = c ? realloc(ix->scale, (size_t)nc * sizeof *s) : NULL;
        if (s) ix->scale = s;
        float *e = s ? realloc(ix->err, (size_t)nc * sizeof *e) : NULL;
        if (e) ix->err = e;
        float *qn = e ? realloc(ix->qnorm, (size_t)nc * sizeof *qn) : NULL;
        if (qn) ix->qnorm = qn;
        if (!qn) return sp_err(SP_ERR_NOMEM, "8-bit copy of %ld vectors", nc);
        ix->cap = nc;
    }
    const int d = ix->d;
#pragma omp parallel for schedule(static) if (to - from > 4096)
    for (long r = from; r < to; r++) {
        double vn, cn;
        double e = quantise(x + (size_t)(r - from) * d, d, ix->codes + (size_t)r * d, &ix->scale[r], &vn, &cn);
        /* Rounded up, with room for the float rounding of both scores (relative 1e-4). */
        ix->err[r] = (float)(e * (1 + 1e-5) + 1e-4 * vn + 1e-12);
        ix->qnorm[r] = (float)(cn * (1 + 1e-5) + 1e-12);
    }
    ix->ncodes = to;
    return SP_OK;
}

/* (Re)builds the 8-bit copy of a Flat index from FAISS's vectors. */
static sp_status codes_sync(rt_index *ix) {
    if (!ix->flat) return SP_OK;
    float *xb = NULL;
    size_t len = 0;
    faiss_IndexFlat_xb(ix->flat, &xb, &len);
    long nt = (long)faiss_Index_ntotal(ix->fx);
    if (nt <= ix->ncodes) {
        ix->ncodes = nt;
        return SP_OK;
    }
    if (len < (size_t)nt * ix->d) return SP_OK; /* not a plain float store: searches go to FAISS */
    return codes_append(ix, ix->ncodes, nt, xb + (size_t)ix->ncodes * ix->d);
}

/* ---- top-k lists: best first, higher score then lower id ---- */

static int better(float s, int64_t id, float s2, int64_t id2) { return s > s2 || (s == s2 && id < id2); }

static void topk_push(float *sc, int64_t *id, int k, float s, int64_t i) {
    if (!better(s, i, sc[k - 1], id[k - 1])) return;
    int p = k - 1;
    while (p > 0 && better(s, i, sc[p - 1], id[p - 1])) {
        sc[p] = sc[p - 1];
        id[p] = id[p - 1];
        p--;
    }
    sc[p] = s;
    id[p] = i;
}

static void topk_init(float *sc, int64_t *id, int k) {
    for (int i = 0; i < k; i++) {
        sc[i] = -INFINITY;
        id[i] = -1;
    }
}

/* Exact top k of n queries over a Flat index, through the 8-bit copy (see the top). */
static sp_status flat_search(const rt_index *ix, long n, const float *q, int k, float *scores, int64_t *ids) {
    float *xb = NULL;
    size_t len = 0;
    faiss_IndexFlat_xb(ix->flat, &xb, &len);
    const long nt = ix->ncodes;
    const int d = ix->d;
    const dots_f32_fn dots = have_avx2() ? dots_f32_avx2 : dots_f32_c;
    const idots_fn idots = have_avx2() ? idots_avx2 : idots_c;
    float *approx = malloc((size_t)QB * (nt > 0 ? nt : 1) * sizeof *approx);
    float *lb = malloc((size_t)k * sizeof *lb);
    int64_t *lbid = malloc((size_t)k * sizeof *lbid);
    int8_t *cq = malloc((size_t)QB * d);
    uint8_t *aq = malloc((size_t)QB * d);
    if (!approx || !lb || !lbid || !cq || !aq) {
        free(approx);
        free(lb);
        free(lbid);
        free(cq);
        free(aq);
        return sp_err(SP_ERR_NOMEM, "search of %ld queries over %ld vectors", n, nt);
    }
    const int nthreads = (long)nt * d >= PAR_MIN_ELEMS ? omp_get_max_threads() : 1;
    for (long q0 = 0; q0 < n; q0 += QB) {
        const int nq = (int)(n - q0 < QB ? n - q0 : QB);
        const float *qq = q + (size_t)q0 * d;
        float sq[QB], qn[QB], eq[QB];
        for (int j = 0; j < nq; j++) {
            double vn, cn;
            double e = quantise(qq + (size_t)j * d, d, cq + (size_t)j * d, &sq[j], &vn, &cn);
            for (int i = 0; i < d; i++) aq[(size_t)j * d + i] = (uint8_t)abs(cq[(size_t)j * d + i]);
            qn[j] = (float)(vn * (1 + 1e-5));
            eq[j] = (float)(e * (1 + 1e-5) + 1e-4 * vn + 1e-12);
        }
        /* Pass 1: approximate scores from the 8-bit copies; approx is (nt, nq). */
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
        for (long r = 0; r < nt; r++) {
            int32_t v[QB];
            idots(cq, aq, nq, ix->codes + (size_t)r * d, d, v);
            for (int j = 0; j < nq; j++) approx[(size_t)r * nq + j] = (float)v[j] * ix->scale[r] * sq[j];
        }
        for (int j = 0; j < nq; j++) {
            const float *qj = qq + (size_t)j * d;
            /* The threshold: the k-th largest lower bound. */
            topk_init(lb, lbid, k);
            for (long r = 0; r < nt; r++) {
                const float l = approx[(size_t)r * nq + j] - (qn[j] * ix->err[r] + eq[j] * ix->qnorm[r]);
                if (l > lb[k - 1]) topk_push(lb, lbid, k, l, r);
            }
            const float tau = lb[k - 1];
            /* Pass 2: exact scores of the vectors that can reach the threshold. */
            float *sc = scores + (size_t)(q0 + j) * k;
            int64_t *id = ids + (size_t)(q0 + j) * k;
            topk_init(sc, id, k);
            for (long r = 0; r < nt; r++) {
                if (approx[(size_t)r * nq + j] + (qn[j] * ix->err[r] + eq[j] * ix->qnorm[r]) < tau) continue;
                float v;
                dots(qj, 1, xb + (size_t)r * d, d, &v);
                topk_push(sc, id, k, v, r);
            }
        }
    }
    free(approx);
    free(lb);
    free(lbid);
    free(cq);
    free(aq);
    return SP_OK;
}

/* ---- the index ---- */

static sp_status wrap_new(FaissIndex *fx, rt_index **out) {
    rt_index *ix = calloc(1, sizeof *ix);
    if (!ix) {
        faiss_Index_free(fx);
        return sp_err(SP_ERR_NOMEM, "rt_index");
    }
    ix->fx = fx;
    ix->d = faiss_Index_d(fx);
    ix->flat = faiss_IndexFlat_cast(fx);
    sp_status st = codes_sync(ix);
    if (st) {
        rt_index_free(ix);
        return st;
    }
    *out = ix;
    return SP_OK;
}

sp_status rt_index_new(const char *factory, int dim, rt_index **out) {
    *out = NULL;
    if (!factory || !*factory) return sp_err(SP_ERR_INVALID, "empty FAISS factory string");
    if (dim <= 0) return sp_err(SP_ERR_INVALID, "index dimension %d must be positive", dim);
    FaissIndex *fx = NULL;
    if (faiss_index_factory(&fx, dim, factory, METRIC_INNER_PRODUCT))
        return sp_err(SP_ERR_INVALID, "FAISS factory '%s' (dim %d): %s", factory, dim, faiss_msg());
    return wrap_new(fx, out);
}

void rt_index_free(rt_index *ix) {
    if (!ix) return;
    if (ix->fx) faiss_Index_free(ix->fx);
    free(ix->codes);
    free(ix->scale);
    free(ix->err);
    free(ix->qnorm);
    free(ix);
}

int rt_index_dim(const rt_index *ix) { return ix->d; }
long rt_index_count(const rt_index *ix) { return (long)faiss_Index_ntotal(ix->fx); }
int rt_index_is_trained(const rt_index *ix) { return faiss_Index_is_trained(ix->fx); }

sp_status rt_index_train(rt_index *ix, long n, const float *x) {
    if (faiss_Index_is_trained(ix->fx)) return SP_OK;
    if (n <= 0) return sp_err(SP_ERR_INVALID, "cannot train the index on %ld vectors", n);
    if (faiss_Index_train(ix->fx, n, x)) return sp_err(SP_ERR_BACKEND, "FAISS train on %ld vectors: %s", n, faiss_msg());
    return SP_OK;
}

sp_status rt_index_add(rt_index *ix, long n, const float *x) {
    if (n < 0) return sp_err(SP_ERR_INVALID, "negative count %ld", n);
    if (n == 0) return SP_OK;
    if (!faiss_Index_is_trained(ix->fx)) return sp_err(SP_ERR_INVALID, "the index must be trained before adding");
    if (faiss_Index_add(ix->fx, n, x)) return sp_err(SP_ERR_BACKEND, "FAISS add of %ld vectors: %s", n, faiss_msg());
    if (ix->flat && ix->ncodes + n == rt_index_count(ix)) return codes_append(ix, ix->ncodes, ix->ncodes + n, x);
    return codes_sync(ix);
}

sp_status rt_index_search(const rt_index *ix, long n, const float *q, int k, float *scores, int64_t *ids) {
    if (k <= 0) return sp_err(SP_ERR_INVALID, "k = %d must be positive", k);
    if (n <= 0) return SP_OK;
    if (ix->flat && n < FLAT_MAX_BATCH && ix->ncodes == rt_index_count(ix)) return flat_search(ix, n, q, k, scores, ids);
    idx_t *lab = sizeof(idx_t) == sizeof(int64_t) ? (idx_t *)ids : malloc((size_t)n * k * sizeof *lab);
    if (!lab) return sp_err(SP_ERR_NOMEM, "search labels");
    /* FAISS parallelises a search over its queries; for a few queries the thread team costs more
     * than it gives (on a busy machine a batch of 8 waited for scheduler ticks: 12 ms against
     * 0.6 ms for one query), so small batches run on the calling thread. omp_set_num_threads
     * only changes this thread's setting, restored afterwards. */
    const int prev = omp_get_max_threads();
    if (n < FAISS_PAR_MIN_QUERIES) omp_set_num_threads(1);
    sp_status st = SP_OK;
    if (faiss_Index_search(ix->fx, n, q, k, scores, lab)) st = sp_err(SP_ERR_BACKEND, "FAISS search: %s", faiss_msg());
    if (n < FAISS_PAR_MIN_QUERIES) omp_set_num_threads(prev);
    if ((void *)lab != (void *)ids) {
        for (long i = 0; i < n * k; i++) ids[i] = lab[i];
        free(lab);
    }
    return st;
}

sp_status rt_index_set_param(rt_index *ix, const char *name, double value) {
    FaissParameterSpace *ps = NULL;
    if (faiss_ParameterSpace_new(&ps)) return sp_err(SP_ERR_BACKEND, "FAISS ParameterSpace: %s", faiss_msg());
    sp_status st = SP_OK;
    if (faiss_ParameterSpace_set_index_parameter(ps, ix->fx, name, value))
        st = sp_err(SP_ERR_INVALID, "index parameter %s = %g: %s", name, value, faiss_msg());
    faiss_ParameterSpace_free(ps);
    return st;
}

sp_status rt_index_clone(const rt_index *ix, rt_index **out) {
    *out = NULL;
    FaissIndex *fx = NULL;
    if (faiss_clone_index(ix->fx, &fx)) return sp_err(SP_ERR_BACKEND, "FAISS clone: %s", faiss_msg());
    rt_index *c = calloc(1, sizeof *c);
    if (!c) {
        faiss_Index_free(fx);
        return sp_err(SP_ERR_NOMEM, "rt_index");
    }
    c->fx = fx;
    c->d = ix->d;
    c->flat = faiss_IndexFlat_cast(fx);
    if (c->flat && ix->ncodes > 0) {
        /* Copy the 8-bit copy rather than recomputing it, with room to grow. */
        long cap = ix->ncodes + ix->ncodes / 4 + 1024;
        c->codes = malloc((size_t)cap * c->d);
        c->scale = malloc((size_t)cap * sizeof *c->scale);
        c->err = malloc((size_t)cap * sizeof *c->err);
        c->qnorm = malloc((size_t)cap * sizeof *c->qnorm);
        if (!c->codes || !c->scale || !c->err || !c->qnorm) {
            rt_index_free(c);
            return sp_err(SP_ERR_NOMEM, "8-bit copy of %ld vectors", ix->ncodes);
        }
        memcpy(c->codes, ix->codes, (size_t)ix->ncodes * c->d);
        memcpy(c->scale, ix->scale, (size_t)ix->ncodes * sizeof *c->scale);
        memcpy(c->err, ix->err, (size_t)ix->ncodes * sizeof *c->err);
        memcpy(c->qnorm, ix->qnorm, (size_t)ix->ncodes * sizeof *c->qnorm);
        c->cap = cap;
        c->ncodes = ix->ncodes;
    }
    sp_status st = codes_sync(c);
    if (st) {
        rt_index_free(c);
        return st;
    }
    *out = c;
    return SP_OK;
}

sp_status rt_index_write(const rt_index *ix, const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) return sp_err(SP_ERR_IO, "%s: %s", path, strerror(errno));
    if (faiss_write_index(ix->fx, f)) {
        sp_status st = sp_err(SP_ERR_IO, "%s: FAISS write: %s", path, faiss_msg());
        fclose(f);
        return st;
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        sp_status st = sp_err(SP_ERR_IO, "%s: flush: %s", path, strerror(errno));
        fclose(f);
        return st;
    }
    if (fclose(f) != 0) return sp_err(SP_ERR_IO, "%s: close: %s", path, strerror(errno));
    return SP_OK;
}

sp_status rt_index_read(const char *path, rt_index **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return sp_err(SP_ERR_IO, "%s: %s", path, strerror(errno));
    FaissIndex *fx = NULL;
    int rc = faiss_read_index(f, 0, &fx);
    fclose(f);
    if (rc) return sp_err(SP_ERR_FORMAT, "%s: not a readable FAISS index: %s", path, faiss_msg());
    if (faiss_Index_metric_type(fx) != METRIC_INNER_PRODUCT) {
        faiss_Index_free(fx);
        return sp_err(SP_ERR_FORMAT, "%s: the FAISS index does not use the inner-product metric", path);
    }
    sp_status st = wrap_new(fx, out);
    return st ? sp_err_wrap(st, "%s", path) : SP_OK;
}
