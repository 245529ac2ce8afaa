/* bench.c: times a single convolution layer on a backend, for `semipaint bench`'s per-layer efficiency figures. */
#include <stdlib.h>

#include "model/backend.h"

sp_status nn_conv_bench(nn_backend *be, int n, int cin, int cout, int k, int stride, int h, int w, int iters,
                        double *best_ms) {
    nn_layer l = {.cin = cin, .cout = cout, .k = k, .stride = stride, .pad = (k - 1) / 2};
    nn_tensor x = {0}, y = {0};
    sp_status st = SP_OK;
    size_t nw = (size_t)cout * cin * k * k;
    l.w = malloc(nw * sizeof(float));
    l.b = calloc((size_t)cout, sizeof(float));
    if (!l.w || !l.b) {
        st = sp_err(SP_ERR_NOMEM, "conv bench weights");
        goto done;
    }
    for (size_t i = 0; i < nw; i++) l.w[i] = (float)((i * 2654435761u) % 2001) * 1e-4f - 0.1f;
    int oh = (h + 2 * l.pad - k) / stride + 1, ow = (w + 2 * l.pad - k) / stride + 1;
    if ((st = nn_tensor_new(be, &x, n, cin, h, w)) || (st = nn_tensor_new(be, &y, n, cout, oh, ow))) goto done;
    *best_ms = 1e30;
    for (int i = 0; i <= iters; i++) { /* the first run creates the primitive and is not counted */
        double t0 = sp_now();
        if ((st = be->ops->conv(be, &l, &x, &y, NN_ACT_RELU)) || (st = be->ops->sync(be))) goto done;
        double ms = (sp_now() - t0) * 1e3;
        if (i > 0 && ms < *best_ms) *best_ms = ms;
    }
done:
    be->ops->layer_release(be, &l);
    nn_tensor_drop(be, &x);
    nn_tensor_drop(be, &y);
    free(l.w);
    free(l.b);
    return st;
}
