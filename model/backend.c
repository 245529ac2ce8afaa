/* backend.c: backend selection (auto/cpu/cuda) and the shape helpers shared by every backend. */
#include "model/backend.h"

#include <string.h>

sp_status nn_backend_new(const nn_backend_opts *opts, nn_backend **out) {
    *out = NULL;
    nn_backend_opts o = *opts;
    if (o.device == NN_DEVICE_CUDA || o.device == NN_DEVICE_AUTO) {
#ifdef SP_CUDA
        sp_status st = nn_cuda_backend_new(&o, out);
        if (st == SP_OK) return SP_OK;
        if (o.device == NN_DEVICE_CUDA) return st;
        SP_WARN("model.device auto: no usable GPU (%s); using the CPU", sp_err_msg());
#else
        if (o.device == NN_DEVICE_CUDA)
            return sp_err(SP_ERR_UNSUPPORTED, "model.device cuda: this build has no CUDA backend (build with make CUDA=1)");
        SP_DEBUG("model.device auto: built without CUDA; using the CPU");
#endif
    }
    o.device = NN_DEVICE_CPU;
    return nn_cpu_backend_new(&o, out);
}

void nn_backend_free(nn_backend *be) {
    if (be) be->ops->destroy(be);
}

const char *nn_backend_name(const nn_backend *be) { return be->ops->name; }
const char *nn_backend_device(const nn_backend *be) { return be->device; }

size_t nn_backend_device_memory(const nn_backend *be) {
    return be->ops->device_memory ? be->ops->device_memory((nn_backend *)be) : 0;
}

static sp_status tensor_new(nn_backend *be, nn_tensor *t, int n, int c, int h, int w, int input) {
    memset(t, 0, sizeof *t);
    t->n = n;
    t->c = c;
    t->h = h;
    t->w = w;
    t->input = input;
    return be->ops->tensor_alloc(be, t);
}

sp_status nn_tensor_new(nn_backend *be, nn_tensor *t, int n, int c, int h, int w) {
    return tensor_new(be, t, n, c, h, w, 0);
}

sp_status nn_tensor_new_input(nn_backend *be, nn_tensor *t, int n, int c, int h, int w) {
    return tensor_new(be, t, n, c, h, w, 1);
}

sp_status nn_mask_new(nn_backend *be, nn_mask *m, int n, int g, int h, int w) {
    memset(m, 0, sizeof *m);
    m->n = n;
    m->g = g;
    m->h = h;
    m->w = w;
    return be->ops->mask_alloc(be, m);
}

void nn_tensor_drop(nn_backend *be, nn_tensor *t) {
    if (t->data) be->ops->tensor_release(be, t);
    memset(t, 0, sizeof *t);
}

void nn_mask_drop(nn_backend *be, nn_mask *m) {
    if (m->data) be->ops->mask_release(be, m);
    memset(m, 0, sizeof *m);
}

void nn_backend_set_hook(nn_backend *be, nn_hook_fn fn, void *ctx) {
    be->hook = fn;
    be->hook_ctx = fn ? ctx : NULL;
}

sp_status nn_buffer_grow(const nn_allocator *a, void **buf, size_t *size, size_t need) {
    if (need <= *size) return SP_OK;
    void *p = NULL;
    const size_t old = *size;
    /* First beside the old buffer, so that a failure leaves it untouched. */
    sp_status st = a->alloc(a->ctx, &p, need);
    if (st == SP_OK) {
        a->release(a->ctx, *buf, old);
        *buf = p;
        *size = need;
        return SP_OK;
    }
    /* Then in the old buffer's room. */
    if (*buf) {
        a->release(a->ctx, *buf, old);
        *buf = NULL;
        *size = 0;
        if ((st = a->alloc(a->ctx, &p, need)) == SP_OK) {
            *buf = p;
            *size = need;
            return SP_OK;
        }
    }
    if (!old) return st;
    /* Keep what the buffer's current users were sized for; report the failure to grow. */
    char why[512];
    snprintf(why, sizeof why, "%s", sp_err_msg());
    if (a->alloc(a->ctx, &p, old) == SP_OK) {
        *buf = p;
        *size = old;
        return sp_err(st, "%s", why);
    }
    return sp_err(st, "%s (and the old %zu bytes could not be allocated again)", why, old);
}

int nn_conv_algo_parse(const char *name, nn_conv_algo *out) {
    static const char *names[] = {"auto", "direct", "winograd", "winograd4"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, names[i])) {
            *out = (nn_conv_algo)i;
            return 0;
        }
    return -1;
}
