/* backend.h: the table of functions a compute backend (CPU/oneDNN, CUDA/cuDNN) implements, and the tensors it works on. */
#ifndef BACKEND_H
#define BACKEND_H

#include "model/nn.h"

typedef enum { NN_ACT_NONE = 0, NN_ACT_RELU, NN_ACT_LRELU } nn_act; /* LRELU slope 0.2 */
#define NN_LRELU_SLOPE 0.2f
#define NN_MAX_GROUPS 4

/* An activation tensor of logical shape (n,c,h,w) in backend memory and the backend's own
 * layout (the CPU uses nChw8c with c padded to a multiple of 8; padding channels hold 0). */
typedef struct {
    int n, c, h, w;
    int input;  /* set before allocation for a network's input: the backend may pick a layout
                 * that suits a first layer with few channels (the CPU uses plain NCHW below 8) */
    int plain;  /* set by the backend: 1 when the data is plain NCHW */
    void *data;
    size_t bytes;
} nn_tensor;

/* A partial-convolution mask of logical shape (n,C,h,w) whose channels form `g` groups of
 * identical channels: group i covers cnt[i] consecutive channels and is stored once as a plane,
 * so data holds (n,g,h,w) floats (0 or 1) in backend memory. */
typedef struct {
    int n, g, h, w;
    int cnt[NN_MAX_GROUPS];
    void *data;
    size_t bytes;
} nn_mask;

/* One convolution layer: host weights OIHW and bias, plus backend state (uploaded weights and
 * per-shape primitives/algorithms, created on first use of each input shape). */
typedef struct {
    int cin, cout, k, stride, pad;
    float *w; /* (cout,cin,k,k), owned */
    float *b; /* (cout), owned */
    void *be; /* backend state, freed by layer_release */
} nn_layer;

typedef struct nn_backend_ops {
    const char *name;
    /* The nn_cap bits the backend declares. A backend with device_memory computes on a device of
     * its own, so NN_CAP_DEVICE_MEMORY and NN_CAP_ASYNC_HOST_OVERLAP follow from it (nn_backend_has)
     * and need not be declared. */
    unsigned caps;
    void (*destroy)(nn_backend *be);
    size_t (*device_memory)(nn_backend *be); /* optional: NULL means 0 (and no device of its own) */

    /* Memory. Allocation fills data/bytes from the shape fields already set. */
    sp_status (*tensor_alloc)(nn_backend *be, nn_tensor *t);
    void (*tensor_release)(nn_backend *be, nn_tensor *t);
    sp_status (*mask_alloc)(nn_backend *be, nn_mask *m);
    void (*mask_release)(nn_backend *be, nn_mask *m);

    /* Host <-> backend. upload writes host (n,nc,h,w) into channels [c0,c0+nc) of t, computing
     * v*scale[c]+shift[c] when scale is non-NULL; download reads all of t as (n,c,h,w). */
    sp_status (*upload)(nn_backend *be, nn_tensor *t, int c0, int nc, const float *host, const float *scale,
                        const float *shift);
    sp_status (*download)(nn_backend *be, const nn_tensor *t, float *host);
    /* mask_upload fills m (its g set at allocation) from host planes (n,g,h,w) of 0/1 values,
     * group i standing for cnt[i] channels. */
    sp_status (*mask_upload)(nn_backend *be, nn_mask *m, const float *host, const int *cnt);
    /* mask_download writes the full multi-channel mask (n,C,h,w) to host. */
    sp_status (*mask_download)(nn_backend *be, const nn_mask *m, float *host);

    /* Layers. layer_release frees l->be (NULL-safe). */
    void (*layer_release)(nn_backend *be, nn_layer *l);

    /* Ops. Shapes are checked by the caller (net.c); y must be allocated with the output shape. */
    /* y = act(conv(x, W) + b) */
    sp_status (*conv)(nn_backend *be, nn_layer *l, const nn_tensor *x, nn_tensor *y, nn_act act);
    /* Partial convolution (docs/weights.md) of x, which must already be zero where mx is 0
     * (every pconv output is; mask_apply makes an input so): y = act((conv(x,W)*ratio + b)*u),
     * my = u as one group of cout channels. */
    sp_status (*pconv)(nn_backend *be, nn_layer *l, const nn_tensor *x, const nn_mask *mx, nn_tensor *y,
                       nn_mask *my, nn_act act);
    /* x *= m channel-wise (m's channels matching x's). */
    sp_status (*mask_apply)(nn_backend *be, nn_tensor *x, const nn_mask *m);
    /* y = concat(up(a), skip) along channels, where up is nearest x2 upsampling when y is twice
     * a's size and the identity when the sizes agree; skip may be NULL (y = up(a)). With ma
     * non-NULL also my = concat(up(ma), mskip). */
    sp_status (*up2_concat)(nn_backend *be, const nn_tensor *a, const nn_tensor *skip, nn_tensor *y,
                            const nn_mask *ma, const nn_mask *mskip, nn_mask *my);
    /* y = maxpool 2x2 stride 2 of x. */
    sp_status (*maxpool2)(nn_backend *be, const nn_tensor *x, nn_tensor *y);
    /* y = act(x) (in place allowed). */
    sp_status (*act)(nn_backend *be, const nn_tensor *x, nn_tensor *y, nn_act act);
    /* host (n,c) = L2-normalised spatial avg or max of x. */
    sp_status (*desc_pool)(nn_backend *be, const nn_tensor *x, nn_pool pool, float *host);
    /* Waits for queued work (no-op on the CPU). */
    sp_status (*sync)(nn_backend *be);
} nn_backend_ops;

/* ---- test hook ---- */

/* What a backend tells its test hook (nn_backend_set_hook). */
typedef enum {
    NN_HOOK_ALLOC = 0, /* before allocating `arg` bytes (the CPU: tensors and masks; CUDA: every cudaMalloc);
                        * a nonzero return makes that allocation fail as running out of memory does */
    NN_HOOK_ALLOCATED, /* after an allocation of `arg` bytes succeeded (return ignored) */
    NN_HOOK_FREED,     /* after memory of `arg` bytes allocated so was released (return ignored) */
    NN_HOOK_CONV,      /* CUDA: before a convolution runs with cuDNN algorithm number `arg`; a nonzero
                        * return makes that run fail as an algorithm cuDNN cannot execute does */
} nn_hook_event;

/* A test hook: called synchronously from the thread driving the backend. */
typedef int (*nn_hook_fn)(void *ctx, nn_hook_event ev, size_t arg);

struct nn_backend {
    const nn_backend_ops *ops;
    nn_backend_opts opts;
    char device[256];
    void *impl;
    nn_hook_fn hook; /* NULL except under tests */
    void *hook_ctx;
};

/* Installs (fn non-NULL) or removes (fn NULL) the test hook of `be`; tests only. */
void nn_backend_set_hook(nn_backend *be, nn_hook_fn fn, void *ctx);

/* For backends: reports `ev` to be's hook; returns its answer, 0 when no hook is installed. */
static inline int nn_hook(nn_backend *be, nn_hook_event ev, size_t arg) {
    return be->hook ? be->hook(be->hook_ctx, ev, arg) : 0;
}

/* The CPU backend (model/cpu/cpu.c). */
sp_status nn_cpu_backend_new(const nn_backend_opts *opts, nn_backend **out);
#ifdef SP_CUDA
/* The CUDA backend (model/cuda/); fails with the reason when no GPU is usable. */
sp_status nn_cuda_backend_new(const nn_backend_opts *opts, nn_backend **out);
#endif

/* Helpers over the table: allocate a tensor/mask of a shape, release (NULL-safe data). */
sp_status nn_tensor_new(nn_backend *be, nn_tensor *t, int n, int c, int h, int w);
/* The same for a network input (see nn_tensor.input). */
sp_status nn_tensor_new_input(nn_backend *be, nn_tensor *t, int n, int c, int h, int w);
sp_status nn_mask_new(nn_backend *be, nn_mask *m, int n, int g, int h, int w);
void nn_tensor_drop(nn_backend *be, nn_tensor *t);
void nn_mask_drop(nn_backend *be, nn_mask *m);

/* An allocator for nn_buffer_grow: alloc sets *p (NULL on failure, with the reason in
 * sp_err_msg()); release frees what alloc returned (p may be NULL). */
typedef struct {
    sp_status (*alloc)(void *ctx, void **p, size_t bytes);
    void (*release)(void *ctx, void *p, size_t bytes);
    void *ctx;
} nn_allocator;

/* Grows the buffer (*buf, *size) to at least `need` bytes; contents are not kept. Tries a new
 * buffer while the old one is still held, then, failing that, again after freeing the old one.
 * When both fail it re-creates the old size, so that users sized for the old buffer keep
 * working, and returns the error with *buf and *size describing what is held (NULL and 0 only when
 * even the old size could not be had). */
sp_status nn_buffer_grow(const nn_allocator *a, void **buf, size_t *size, size_t need);

#endif
