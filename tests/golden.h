/* golden.h: helpers for the golden tests: read fixture tensors and compare with the normalised-error rule. */
#ifndef GOLDEN_H
#define GOLDEN_H

#include <math.h>

#include "model/st.h"
#include "tests/t.h"

/* The tolerance of every golden comparison: max |diff| <= GOLDEN_TOL * max |ref|. */
#define GOLDEN_TOL 1e-4

/* Reads fixture tensor `name` of any shape as a malloc'ed F32 array; fills shape/ndim. Aborts
 * the test (returns NULL after a failed CHECK) when missing. */
static inline float *golden_read(const st_file *f, const char *name, int64_t *shape, int *ndim) {
    const st_tensor *t = st_find(f, name);
    CHECKF(t != NULL, "%s: fixture tensor '%s' missing", st_path(f), name);
    if (!t) return NULL;
    float *buf = malloc((size_t)t->numel * sizeof(float) + 4);
    if (!buf) return NULL;
    sp_status st = st_read_f32(f, name, t->ndim, t->shape, buf);
    CHECKF(st == SP_OK, "%s", sp_err_msg());
    if (shape)
        for (int i = 0; i < t->ndim; i++) shape[i] = t->shape[i];
    if (ndim) *ndim = t->ndim;
    return buf;
}

/* Compares n floats with the golden rule; prints the worst difference and returns 1 when within. */
static inline int golden_close(const char *what, const float *got, const float *ref, size_t n) {
    double maxref = 0, maxdiff = 0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        double r = fabs((double)ref[i]), d = fabs((double)got[i] - (double)ref[i]);
        if (r > maxref) maxref = r;
        if (!(d <= maxdiff)) {
            maxdiff = d;
            worst = i;
        }
    }
    double rel = maxref > 0 ? maxdiff / maxref : maxdiff;
    int ok = rel <= GOLDEN_TOL;
    printf("  %-36s max|diff| %.3g  max|ref| %.3g  ratio %.3g  %s\n", what, maxdiff, maxref, rel, ok ? "ok" : "FAIL");
    if (!ok)
        printf("    worst at %zu: got %.9g ref %.9g\n", worst, (double)got[worst], (double)ref[worst]);
    t_checks++;
    if (!ok) t_failures++;
    return ok;
}

#endif
