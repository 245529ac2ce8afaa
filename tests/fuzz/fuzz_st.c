/* fuzz_st.c: libFuzzer harness for the safetensors header parser (st_open_mem): no crash, and an accepted image keeps every promise of st.h. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/st.h"

static const int dtype_size[] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1}; /* in st_dtype order */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file *f = NULL;
    if (st_open_mem(data, size, "fuzz", &f) != SP_OK) {
        if (f) abort();
        return 0;
    }
    if (strcmp(st_path(f), "fuzz") || strlen(st_sha256(f)) != 64) abort();
    int n = st_count(f);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)data[i] << (8 * i);
    const uint8_t *at = data + 8 + hlen; /* the tensors tile the data area in offset order */
    for (int i = 0; i < n; i++) {
        const st_tensor *t = st_at(f, i);
        if (!t || !t->name || t->ndim < 0 || t->ndim > ST_MAX_DIMS || (int)t->dtype < 0 || t->dtype > ST_BOOL) abort();
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0) abort();
            numel *= t->shape[d];
        }
        if (numel != t->numel || (uint64_t)t->numel * (uint64_t)dtype_size[t->dtype] != t->nbytes) abort();
        if (t->data != at || t->data + t->nbytes > data + size) abort();
        at = t->data + t->nbytes;
        if (t->nbytes) { /* the view is readable */
            volatile uint8_t x = t->data[0] ^ t->data[t->nbytes - 1];
            (void)x;
        }
        const st_tensor *g = st_find(f, t->name);
        if (!g || strcmp(g->name, t->name)) abort();
        if ((t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16) && t->numel <= (1 << 16)) {
            float *out = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *out);
            if (!out) abort();
            if (st_read_f32(f, t->name, t->ndim, t->shape, out) != SP_OK) abort();
            free(out);
        }
    }
    if (at != data + size) abort();
    if (st_at(f, -1) || st_at(f, n)) abort();
    (void)st_meta(f, "semipaint");
    (void)st_dtype_name((st_dtype)n);
    st_close(f);
    return 0;
}
