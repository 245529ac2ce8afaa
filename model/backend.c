/* backend.c: backend selection (auto/cpu/cuda), the names of devices, precisions and convolution algorithms, the environment's overrides of the options, capabilities, and the shape helpers shared by every backend. */
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

/* The index of `name` in the NULL-terminated `names`; -1 when absent. */
static int name_index(const char *const *names, const char *name) {
    for (int i = 0; names[i]; i++)
        if (!strcmp(name, names[i])) return i;
    return -1;
}

const char *const nn_device_names[] = {"auto", "cpu", "cuda", NULL};
const char *const nn_precision_names[] = {"fp32", "tf32", "fp16", NULL};
static const char *const conv_algo_names[] = {"auto", "direct", "winograd", "winograd4", NULL};

int nn_device_parse(const char *name, nn_device *out) {
    int i = name_index(nn_device_names, name);
    if (i < 0) return -1;
    *out = (nn_device)i;
    return 0;
}

int nn_precision_parse(const char *name, nn_precision *out) {
    int i = name_index(nn_precision_names, name);
    if (i < 0) return -1;
    *out = (nn_precision)i;
    return 0;
}

int nn_conv_algo_parse(const char *name, nn_conv_algo *out) {
    int i = name_index(conv_algo_names, name);
    if (i < 0) return -1;
    *out = (nn_conv_algo)i;
    return 0;
}

/* The value of variable `name` in `envp`, or NULL. */
static const char *env_value(char *const *envp, const char *name) {
    const size_t n = strlen(name);
    for (size_t i = 0; envp && envp[i]; i++)
        if (!strncmp(envp[i], name, n) && envp[i][n] == '=') return envp[i] + n + 1;
    return NULL;
}

sp_status nn_backend_opts_from_env(nn_backend_opts *o, char *const *envp) {
    const char *conv = env_value(envp, "SEMIPAINT_CONV");
    if (o->conv_algo == NN_CONV_AUTO && conv && *conv && nn_conv_algo_parse(conv, &o->conv_algo))
        return sp_err(SP_ERR_INVALID, "SEMIPAINT_CONV=%s: expected auto, direct, winograd or winograd4", conv);
    return SP_OK;
}

int nn_backend_has(const nn_backend *be, nn_cap cap) {
    unsigned caps = be->ops->caps;
    /* A backend with memory of its own device computes there: its ops queue work on the device
     * and leave the host's cores free. */
    if (be->ops->device_memory) caps |= NN_CAP_DEVICE_MEMORY | NN_CAP_ASYNC_HOST_OVERLAP;
    return (caps & (unsigned)cap) != 0;
}
