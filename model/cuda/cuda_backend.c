/* cuda_backend.c: the CUDA backend: convolutions through cuDNN, every other op through model/cuda/kernels.cu, all on one stream per backend. */
#include <cuda_runtime_api.h>
#include <cudnn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "model/backend.h"
#include "model/cuda/kernels.h"

/* Design.
 *
 * Layout and precision (model.precision):
 *   fp32: activations and weights fp32, NCHW; cuDNN math CUDNN_FMA_MATH, so no TF32 on Ampere
 *         and later (CUDNN_DEFAULT_MATH would permit it) and results match the CPU to ~1e-6.
 *   tf32: as fp32 with CUDNN_TENSOR_OP_MATH: fp32 data on TF32 tensor cores. Not
 *         CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, which lets cuDNN down-convert fp32 tensors to
 *         fp16 (fp16 precision, not TF32).
 *   fp16: activations and weights stored as fp16 in NHWC (the layout of cuDNN's tensor-core
 *         kernels), convolutions accumulate in fp32 (compute type FLOAT, "pseudo-half"),
 *         CUDNN_TENSOR_OP_MATH. Our kernels compute in fp32 and round once on store.
 *   The environment variable SEMIPAINT_CUDA_NHWC=0|1 overrides the layout (for diagnosis).
 *   Masks, biases, the partial-convolution ratio plane and host transfers are fp32 throughout;
 *   masks are planar (n,g,h,w) with channel groups as nn_mask describes.
 *
 * Convolutions use cuDNN's legacy convolution API (cudnnConvolutionForward,
 * cudnnFindConvolutionForwardAlgorithmEx, cudnnGetConvolutionForwardAlgorithm_v7,
 * cudnnGetConvolutionForwardWorkspaceSize). cuDNN 9 still ships and declares it in cudnn_cnn.h
 * (9.19 here; marked deprecated, which only warns under CUDNN_WARN_DEPRECATED), and it is
 * sufficient: each layer is one dense 2-D cross-correlation with symmetric padding and equal
 * strides, in fp32 or fp16 data with fp32 accumulation, and the parts cuDNN's fused
 * conv+bias+activation cannot express (LeakyReLU, the partial-convolution ratio) run in our own
 * epilogue kernel either way, so the graph API would add no fusion we use.
 *
 * Algorithm choice: once per layer and input shape (n,h,w), by cudnnFindConvolutionForwardAlgorithmEx
 * (timed runs on the real buffers; SEMIPAINT_CUDA_ALGO=heuristic uses the _v7 heuristics
 * instead), the fastest successful algorithm whose workspace fits the limit (256 MiB, or
 * SEMIPAINT_CUDA_WORKSPACE_MB). Every other usable algorithm of that list is kept, best first:
 * when the one in use fails at run time (the heuristics can name an algorithm that then refuses
 * the shape, e.g. fp16 NHWC with channel counts not a multiple of 8) or its workspace cannot be
 * had, the next one is tried, and the first that runs becomes the layer's choice for that shape.
 * One workspace buffer serves every layer (the single stream orders its users); it grows to each
 * run's need, and a failed grow keeps the old buffer, so one out-of-memory event fails at most
 * the request that caused it.
 *
 * Memory: weights are uploaded once, on a layer's first use (fp32, or fp16 for fp16 precision,
 * in the activation layout), biases fp32. Tensors and masks are cudaMalloc'ed when net.c plans a
 * batch size and reused. Host transfers go through one pinned staging buffer; an event recorded
 * after each copy out of it guards its reuse. device_memory() reports every byte cudaMalloc'ed
 * here (weights, tensors, masks, workspace, scratch), not cuDNN's internal allocations.
 *
 * Every CUDA and cuDNN call is checked; a failure logs and returns SP_ERR_BACKEND with
 * "file:line: call: error string", and clears the thread's CUDA last error, which the runtime
 * keeps after a failed call (a failed cudaMalloc, say) and the next kernel launch's
 * cudaGetLastError() would report as its own. The CUDA device is made current, and any stale
 * last error left by other code cleared, at the start of every entry point, so any thread may
 * drive the backend (one at a time). Errors that corrupt the context are sticky and are still
 * reported by every later call. */

#define WORKSPACE_LIMIT_MB 256

typedef struct {
    nn_backend *be; /* for the test hook */
    int dev;
    nn_precision prec;
    int half, nhwc, find;
    cudnnDataType_t dt;
    cudnnTensorFormat_t fmt;
    cudnnMathType_t math;
    cudaStream_t stream;
    cudnnHandle_t dnn;
    cudaEvent_t staged; /* recorded after the last copy out of `pin` */
    size_t ws_limit;
    void *ws;           /* shared cuDNN workspace */
    size_t ws_size;
    void *scr;          /* device fp32 staging for transfers and descriptors */
    size_t scr_size;
    float *ratio;       /* partial-convolution ratio plane (n,1,h,w) */
    size_t ratio_size;
    void *pin;          /* pinned host staging */
    size_t pin_size;
    _Atomic size_t held; /* bytes cudaMalloc'ed by this backend */
} cu_impl;

/* A usable forward algorithm: the math type it runs with and the workspace it needs. */
typedef struct {
    cudnnConvolutionFwdAlgo_t algo;
    cudnnMathType_t math;
    size_t ws;
} cu_algo;

/* One cuDNN convolution setup for one input shape of a layer. */
typedef struct cu_convset {
    int n, h, w;
    cudnnTensorDescriptor_t xd, yd;
    cudnnConvolutionDescriptor_t cd; /* its math type is that of cand[cur] */
    cu_algo cand[2 * CUDNN_CONVOLUTION_FWD_ALGO_COUNT]; /* usable algorithms, best first */
    int ncand, cur;                                    /* cand[cur] is the one in use */
    struct cu_convset *next;
} cu_convset;

/* A layer's device state. */
typedef struct {
    void *w; /* (cout,cin,k,k) for NCHW, (cout,k,k,cin) for NHWC; fp32 or fp16 */
    float *b; /* (cout) fp32 */
    size_t wbytes;
    cudnnFilterDescriptor_t wd;
    cu_convset *convs;
} cu_layer;

/* Logs and records a failed CUDA or cuDNN call; returns SP_ERR_BACKEND. */
static sp_status cu_fail(const char *file, int line, const char *call, const char *what) {
    SP_ERROR("%s:%d: %s: %s", file, line, call, what);
    return sp_err(SP_ERR_BACKEND, "%s:%d: %s: %s", file, line, call, what);
}

#define CU_TRY(call)                                                                                     \
    do {                                                                                                 \
        cudaError_t e_ = (call);                                                                         \
        if (e_ != cudaSuccess) {                                                                         \
            char w_[256];                                                                                \
            (void)cudaGetLastError(); /* not the next launch's error */                                  \
            snprintf(w_, sizeof w_, "%s (%s)", cudaGetErrorString(e_), cudaGetErrorName(e_));            \
            st = cu_fail(__FILE__, __LINE__, #call, w_);                                                 \
            goto fail;                                                                                   \
        }                                                                                                \
    } while (0)

#define DNN_TRY(call)                                                                                    \
    do {                                                                                                 \
        cudnnStatus_t s_ = (call);                                                                       \
        if (s_ != CUDNN_STATUS_SUCCESS) {                                                                \
            char d_[512], w_[768];                                                                       \
            d_[0] = 0;                                                                                   \
            cudnnGetLastErrorString(d_, sizeof d_);                                                      \
            snprintf(w_, sizeof w_, "%s%s%s", cudnnGetErrorString(s_), d_[0] ? ": " : "", d_);           \
            st = cu_fail(__FILE__, __LINE__, #call, w_);                                                 \
            goto fail;                                                                                   \
        }                                                                                                \
    } while (0)

/* Makes the backend's device current for the calling thread and clears a stale (non-sticky)
 * last error that other code left in it (first statement of every op). */
#define ENTER(ci)                                                                                        \
    do {                                                                                                 \
        CU_TRY(cudaSetDevice((ci)->dev));                                                                \
        (void)cudaGetLastError();                                                                        \
    } while (0)

static cu_impl *impl_of(nn_backend *be) { return be->impl; }
static cuk_dtype dtype_of(const cu_impl *ci) { return ci->half ? CUK_F16 : CUK_F32; }
static size_t elem_size(const cu_impl *ci) { return ci->half ? 2 : 4; }

static cuk_shape shape_of(const cu_impl *ci, const nn_tensor *t) {
    cuk_shape s = {t->n, t->c, t->h, t->w, ci->nhwc};
    return s;
}

static cuk_groups groups_of(const nn_mask *m) {
    cuk_groups g;
    memset(&g, 0, sizeof g);
    g.g = m->g;
    for (int i = 0; i < m->g && i < CUK_MAX_GROUPS; i++) g.cnt[i] = m->cnt[i];
    return g;
}

_Static_assert(CUK_MAX_GROUPS == NN_MAX_GROUPS, "kernels.h and backend.h disagree on mask groups");

/* ---- device memory ---- */

static sp_status dev_alloc(cu_impl *ci, void **p, size_t bytes) {
    sp_status st = SP_OK;
    *p = NULL;
    /* A failure the test hook asks for is a real one: a request no GPU can satisfy, so that it
     * takes cudaMalloc's own error path, the error state it leaves included. */
    const size_t ask = nn_hook(ci->be, NN_HOOK_ALLOC, bytes) ? (size_t)1 << 62 : bytes;
    CU_TRY(cudaMalloc(p, ask));
    if (ask != bytes) { /* cannot happen; never hand out a buffer the hook meant to refuse */
        cudaFree(*p);
        st = sp_err(SP_ERR_NOMEM, "an injected allocation failure succeeded");
        goto fail;
    }
    atomic_fetch_add(&ci->held, bytes);
    nn_hook(ci->be, NN_HOOK_ALLOCATED, bytes);
    return SP_OK;
fail:
    *p = NULL;
    return sp_err_wrap(st, "allocating %zu bytes of GPU memory (%zu held)", bytes, atomic_load(&ci->held));
}

/* Frees a device buffer after the stream has finished every queued use of it. */
static void dev_free(cu_impl *ci, void *p, size_t bytes) {
    if (!p) return;
    if (cudaStreamSynchronize(ci->stream) != cudaSuccess) SP_WARN("cudaStreamSynchronize before cudaFree failed");
    if (cudaFree(p) != cudaSuccess) SP_WARN("cudaFree of %zu bytes failed", bytes);
    (void)cudaGetLastError();
    atomic_fetch_sub(&ci->held, bytes);
    nn_hook(ci->be, NN_HOOK_FREED, bytes);
}

static sp_status grow_alloc(void *ctx, void **p, size_t bytes) { return dev_alloc(ctx, p, bytes); }
static void grow_release(void *ctx, void *p, size_t bytes) { dev_free(ctx, p, bytes); }

/* Grows a device buffer to at least `need` bytes (contents not kept); on failure the buffer
 * keeps its old size where that can be had (nn_buffer_grow). */
static sp_status grow(cu_impl *ci, void **buf, size_t *size, size_t need) {
    const nn_allocator a = {grow_alloc, grow_release, ci};
    return nn_buffer_grow(&a, buf, size, need);
}

/* Makes the pinned staging buffer free to write and at least `need` bytes. */
static sp_status pin_reserve(cu_impl *ci, size_t need) {
    sp_status st = SP_OK;
    CU_TRY(cudaEventSynchronize(ci->staged));
    if (need <= ci->pin_size) return SP_OK;
    if (ci->pin) CU_TRY(cudaFreeHost(ci->pin));
    ci->pin = NULL;
    ci->pin_size = 0;
    CU_TRY(cudaHostAlloc(&ci->pin, need, cudaHostAllocDefault));
    ci->pin_size = need;
    return SP_OK;
fail:
    return st;
}

/* Queues a copy of `bytes` host bytes to device `dst` through the pinned buffer; `src` may be
 * reused as soon as this returns. */
static sp_status h2d(cu_impl *ci, void *dst, const void *src, size_t bytes) {
    sp_status st = pin_reserve(ci, bytes);
    if (st) return st;
    memcpy(ci->pin, src, bytes);
    CU_TRY(cudaMemcpyAsync(dst, ci->pin, bytes, cudaMemcpyHostToDevice, ci->stream));
    CU_TRY(cudaEventRecord(ci->staged, ci->stream));
    return SP_OK;
fail:
    return st;
}

/* Copies `bytes` device bytes at `src` to host `dst` after all queued work; waits. */
static sp_status d2h(cu_impl *ci, void *dst, const void *src, size_t bytes) {
    sp_status st = pin_reserve(ci, bytes);
    if (st) return st;
    CU_TRY(cudaMemcpyAsync(ci->pin, src, bytes, cudaMemcpyDeviceToHost, ci->stream));
    CU_TRY(cudaEventRecord(ci->staged, ci->stream));
    CU_TRY(cudaStreamSynchronize(ci->stream));
    memcpy(dst, ci->pin, bytes);
    return SP_OK;
fail:
    return st;
}

/* ---- tensors and masks ---- */

static sp_status cu_tensor_alloc(nn_backend *be, nn_tensor *t) {
    cu_impl *ci = impl_of(be);
    sp_status st = SP_OK;
    ENTER(ci);
    if (t->n < 1 || t->c < 1 || t->h < 1 || t->w < 1)
        return sp_err(SP_ERR_INVALID, "tensor of shape (%d,%d,%d,%d)", t->n, t->c, t->h, t->w);
    t->plain = !ci->nhwc;
    t->bytes = (size_t)t->n * t->c * t->h * t->w * elem_size(ci);
    if ((st = dev_alloc(ci, &t->data, t->bytes))) return st;
    CU_TRY(cudaMemsetAsync(t->data, 0, t->bytes, ci->stream));
    return SP_OK;
fail:
    return st;
}

static void cu_tensor_release(nn_backend *be, nn_tensor *t) {
    cu_impl *ci = impl_of(be);
    if (cudaSetDevice(ci->dev) != cudaSuccess) SP_WARN("cudaSetDevice(%d) failed", ci->dev);
    dev_free(ci, t->data, t->bytes);
    t->data = NULL;
}

static sp_status cu_mask_alloc(nn_backend *be, nn_mask *m) {
    cu_impl *ci = impl_of(be);
    sp_status st = SP_OK;
    ENTER(ci);
    if (m->n < 1 || m->g < 1 || m->g > NN_MAX_GROUPS || m->h < 1 || m->w < 1)
        return sp_err(SP_ERR_INVALID, "mask of shape (%d,%d,%d,%d)", m->n, m->g, m->h, m->w);
    m->bytes = (size_t)m->n * m->g * m->h * m->w * sizeof(float);
    if ((st = dev_alloc(ci, &m->data, m->bytes))) return st;
    CU_TRY(cudaMemsetAsync(m->data, 0, m->bytes, ci->stream));
    return SP_OK;
fail:
    return st;
}

static void cu_mask_release(nn_backend *be, nn_mask *m) {
    cu_impl *ci = impl_of(be);
    if (cudaSetDevice(ci->dev) != cudaSuccess) SP_WARN("cudaSetDevice(%d) failed", ci->dev);
    dev_free(ci, m->data, m->bytes);
    m->data = NULL;
}

/* ---- host <-> device ---- */

static sp_status cu_upload(nn_backend *be, nn_tensor *t, int c0, int nc, const float *host, const float *scale,
                           const float *shift) {
    cu_impl *ci = impl_of(be);
    sp_status st = SP_OK;
    ENTER(ci);
    if (c0 < 0 || nc < 1 || c0 + nc > t->c)
        return sp_err(SP_ERR_INVALID, "upload of channels [%d,%d) into a tensor of %d", c0, c0 + nc, t->c);
    size_t count = (size_t)t->n * nc * t->h * t->w, bytes = (count + (scale ? 2 * (size_t)nc : 0)) * sizeof(float);
    if ((st = grow(ci, &ci->scr, &ci->scr_size, bytes))) return st;
    if ((st = pin_reserve(ci, bytes))) return st;
    /* One copy: the image data, then scale and shift. */
    memcpy(ci->pin, host, count * sizeof(float));
    if (scale) {
        memcpy((float *)ci->pin + count, scale, (size_t)nc * sizeof(float));
        memcpy((float *)ci->pin + count + nc, shift, (size_t)nc * sizeof(float));
    }
    CU_TRY(cudaMemcpyAsync(ci->scr, ci->pin, bytes, cudaMemcpyHostToDevice, ci->stream));
    CU_TRY(cudaEventRecord(ci->staged, ci->stream));
    const float *d = ci->scr;
    CU_TRY(cuk_from_nchw(ci->stream, dtype_of(ci), d, nc, scale ? d + count : NULL, scale ? d + count + nc : NULL,
                         t->data, shape_of(ci, t), c0));
    return SP_OK;
fail:
    return st;
}

static sp_status cu_download(nn_backend *be, const nn_tensor *t, float *host) {
    cu_impl *ci = impl_of(be);
    sp_status st = SP_OK;
    ENTER(ci);
    size_t bytes = (size_t)t->n * t->c * t->h * t->w * sizeof(float);
    if ((st = grow(ci, &ci->scr, &ci->scr_size, bytes))) return st;
    CU_TRY(cuk_to_nchw(ci->stream, dtype_of(ci), t->data, shape_of(ci, t), ci->scr));
    return d2h(ci, host, ci->scr, bytes);
fail:
    return st;
}

static sp_status cu_mask_upload(nn_backend *be, nn_mask *m, const float *host, const int *cnt) {
    cu_impl *ci = impl_of(be);
    sp_status st = SP_OK;
    ENTER(ci);
    for (int g = 0; g < m->g; g++) m->cnt[g] = cnt[g];
    return h2d(ci, m->data, host, (size_t)m->n * m->g * m->h * m->w * sizeof(float));
fail:
    return st;
}

static int mask_channels(const nn_mask *m) {
    int c = 0;
    for (int g = 0; g < m->g; g++) c += m->cnt[g];
    return c;
}

static sp_status cu_mask_download(nn_backend *be, const nn_mask *m, float *host) {
    cu_impl *ci = impl_of(be);
    sp_status st = SP_OK;
    ENTER(ci);
    size_t bytes = (size_t)m->n * mask_channels(m) * m->h * m->w * sizeof(float);
    if ((st = grow(ci, &ci->scr, &ci->scr_size, bytes))) return st;
    CU_TRY(cuk_mask_expand(ci->stream, m->data, m->n, groups_of(m), m->h, m->w, ci->scr));
    return d2h(ci, host, ci->scr, bytes);
fail:
    return st;
}

/* ---- convolution ---- */

static void conv_free(cu_convset *cv) {
    if (cv->xd) cudnnDestroyTensorDescriptor(cv->xd);
    if (cv->yd) cudnnDestroyTensorDescriptor(cv->yd);
    if (cv->cd) cudnnDestroyConvolutionDescriptor(cv->cd);
    free(cv);
}

/* Frees a layer's device state (any part may be missing). */
static void layer_state_free(cu_impl *ci, cu_layer *cl, int cout) {
    while (cl->convs) {
        cu_convset *nx = cl->convs->next;
        conv_free(cl->convs);
        cl->convs = nx;
    }
    if (cl->wd) cudnnDestroyFilterDescriptor(cl->wd);
    dev_free(ci, cl->w, cl->wbytes);
    dev_free(ci, cl->b, (size_t)cout * sizeof(float));
    free(cl);
}

static void cu_layer_release(nn_backend *be, nn_layer *l) {
    cu_impl *ci = impl_of(be);
    if (!l->be) return;
    if (cudaSetDevice(ci->dev) != cudaSuccess) SP_WARN("cudaSetDevice(%d) failed", ci->dev);
    layer_state_free(ci, l->be, l->cout);
    l->be = NULL;
}

/* Creates the layer's device state (weights in the activation layout and type, fp32 bias,
 * filter descriptor) and sets l->be; leaves l->be NULL on failure. */
static sp_status layer_init(cu_impl *ci, nn_layer *l) {
    sp_status st = SP_OK;
    const int K = l->cout, C = l->cin, R = l->k;
    const size_t nw = (size_t)K * C * R * R;
    float *tw = NULL;
    cu_layer *cl = calloc(1, sizeof *cl);
    if (!cl) return sp_err(SP_ERR_NOMEM, "layer state");
    const float *src = l->w;
    if (ci->nhwc) {
        /* OIHW -> OHWI (cuDNN's NHWC filter layout, "KRSC") */
        tw = malloc(nw * sizeof(float));
        if (!tw) {
            st = sp_err(SP_ERR_NOMEM, "weights of %zu floats", nw);
            goto fail;
        }
        for (int o = 0; o < K; o++)
            for (int i = 0; i < C; i++)
                for (int y = 0; y < R; y++)
                    for (int x = 0; x < R; x++)
                        tw[(((size_t)o * R + y) * R + x) * C + i] = l->w[(((size_t)o * C + i) * R + y) * R + x];
        src = tw;
    }
    if ((st = dev_alloc(ci, &cl->w, nw * elem_size(ci)))) goto fail;
    cl->wbytes = nw * elem_size(ci);
    if ((st = dev_alloc(ci, (void **)&cl->b, (size_t)K * sizeof(float)))) goto fail;
    if (ci->half) {
        if ((st = grow(ci, &ci->scr, &ci->scr_size, nw * sizeof(float)))) goto fail;
        if ((st = h2d(ci, ci->scr, src, nw * sizeof(float)))) goto fail;
        CU_TRY(cuk_f32_to_f16(ci->stream, ci->scr, cl->w, nw));
    } else if ((st = h2d(ci, cl->w, src, nw * sizeof(float)))) {
        goto fail;
    }
    if ((st = h2d(ci, cl->b, l->b, (size_t)K * sizeof(float)))) goto fail;
    DNN_TRY(cudnnCreateFilterDescriptor(&cl->wd));
    DNN_TRY(cudnnSetFilter4dDescriptor(cl->wd, ci->dt, ci->fmt, K, C, R, R));
    free(tw);
    l->be = cl;
    return SP_OK;
fail:
    free(tw);
    layer_state_free(ci, cl, K);
    return st;
}

/* A cuDNN status with cuDNN's last error message, for logs and errors. */
static void dnn_describe(cudnnStatus_t s, char *buf, size_t n) {
    char d[512];
    d[0] = 0;
    cudnnGetLastErrorString(d, sizeof d);
    snprintf(buf, n, "%s%s%s", cudnnGetErrorString(s), d[0] ? ": " : "", d);
}

/* Lists in cv->cand the usable algorithms for cv, best first (timed on x, y and the layer's
 * weights, or by heuristics): those that succeeded, within the workspace limit, never with
 * down-conversion. Then makes the first whose workspace can be had the one in use (cur), with
 * cv's math type set to it. Fails when none is usable. */
static sp_status choose_algo(cu_impl *ci, cu_layer *cl, cu_convset *cv, const nn_layer *l, const nn_tensor *x,
                             nn_tensor *y) {
    sp_status st = SP_OK;
    cudnnConvolutionFwdAlgoPerf_t perf[2 * CUDNN_CONVOLUTION_FWD_ALGO_COUNT]; /* room for math variants */
    const int room = (int)(sizeof perf / sizeof perf[0]);
    int got = 0;
    if (ci->find) {
        size_t need = 0;
        for (int a = 0; a < CUDNN_CONVOLUTION_FWD_ALGO_COUNT; a++) {
            size_t sz = 0;
            if (cudnnGetConvolutionForwardWorkspaceSize(ci->dnn, cv->xd, cl->wd, cv->cd, cv->yd,
                                                        (cudnnConvolutionFwdAlgo_t)a, &sz) == CUDNN_STATUS_SUCCESS &&
                sz <= ci->ws_limit && sz > need)
                need = sz;
        }
        /* Short of memory the search makes do with the workspace there is: algorithms needing
         * more are reported as failed and skipped. */
        if (grow(ci, &ci->ws, &ci->ws_size, need))
            SP_WARN("cuDNN algorithm search for conv %dx%d %d->%d with a %zu-byte workspace instead of %zu: %s", l->k,
                    l->k, l->cin, l->cout, ci->ws_size, need, sp_err_msg());
        DNN_TRY(cudnnFindConvolutionForwardAlgorithmEx(ci->dnn, cv->xd, x->data, cl->wd, cl->w, cv->cd, cv->yd, y->data,
                                                       room, &got, perf, ci->ws, ci->ws_size));
    } else {
        DNN_TRY(cudnnGetConvolutionForwardAlgorithm_v7(ci->dnn, cv->xd, cl->wd, cv->cd, cv->yd, room, &got, perf));
    }
    cv->ncand = 0;
    for (int i = 0; i < got && cv->ncand < (int)(sizeof cv->cand / sizeof cv->cand[0]); i++) {
        if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
        /* fp32 stays on FMA kernels whatever the result reports; never allow down-conversion. */
        cudnnMathType_t mt = ci->prec == NN_PREC_FP32 ? CUDNN_FMA_MATH : perf[i].mathType;
        if (mt == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) continue;
        int dup = 0;
        for (int j = 0; j < cv->ncand && !dup; j++) dup = cv->cand[j].algo == perf[i].algo && cv->cand[j].math == mt;
        if (dup) continue;
        DNN_TRY(cudnnSetConvolutionMathType(cv->cd, mt));
        size_t sz = 0;
        if (cudnnGetConvolutionForwardWorkspaceSize(ci->dnn, cv->xd, cl->wd, cv->cd, cv->yd, perf[i].algo, &sz) !=
                CUDNN_STATUS_SUCCESS ||
            sz > ci->ws_limit)
            continue;
        cv->cand[cv->ncand].algo = perf[i].algo;
        cv->cand[cv->ncand].math = mt;
        cv->cand[cv->ncand].ws = sz;
        SP_DEBUG("cuDNN conv %dx%d %d->%d stride %d on (%d,%d,%d,%d): candidate %d algo %d, math %d, workspace %zu B, "
                 "%.3f ms",
                 l->k, l->k, l->cin, l->cout, l->stride, x->n, x->c, x->h, x->w, cv->ncand, (int)perf[i].algo, (int)mt,
                 sz, ci->find ? (double)perf[i].time : -1.0);
        cv->ncand++;
    }
    if (!cv->ncand)
        return sp_err(SP_ERR_BACKEND,
                      "cuDNN has no usable forward algorithm for conv %dx%d %d->%d stride %d on (%d,%d,%d,%d) "
                      "(%d candidates, workspace limit %zu MiB)",
                      l->k, l->k, l->cin, l->cout, l->stride, x->n, x->c, x->h, x->w, got, ci->ws_limit >> 20);
    /* The best whose workspace fits now or can be had; a later run grows it on demand. */
    st = SP_ERR_BACKEND;
    for (int i = 0; i < cv->ncand && st; i++) {
        cv->cur = i;
        st = grow(ci, &ci->ws, &ci->ws_size, cv->cand[i].ws);
    }
    if (st) return sp_err_wrap(st, "no workspace for any of %d cuDNN algorithms", cv->ncand);
    DNN_TRY(cudnnSetConvolutionMathType(cv->cd, cv->cand[cv->cur].math));
    return SP_OK;
fail:
    return st;
}

/* Finds or creates the convolution setup of layer l for input x and output y. */
static sp_status get_conv(cu_impl *ci, nn_layer *l, const nn_tensor *x, nn_tensor *y, cu_convset **out) {
    sp_status st = SP_OK;
    if (!l->be && (st = layer_init(ci, l))) return st;
    cu_layer *cl = l->be;
    for (cu_convset *cv = cl->convs; cv; cv = cv->next)
        if (cv->n == x->n && cv->h == x->h && cv->w == x->w) {
            *out = cv;
            return SP_OK;
        }
    cu_convset *cv = calloc(1, sizeof *cv);
    if (!cv) return sp_err(SP_ERR_NOMEM, "convolution state");
    cv->n = x->n;
    cv->h = x->h;
    cv->w = x->w;
    int on, oc, oh, ow;
    DNN_TRY(cudnnCreateTensorDescriptor(&cv->xd));
    DNN_TRY(cudnnCreateTensorDescriptor(&cv->yd));
    DNN_TRY(cudnnCreateConvolutionDescriptor(&cv->cd));
    DNN_TRY(cudnnSetTensor4dDescriptor(cv->xd, ci->fmt, ci->dt, x->n, x->c, x->h, x->w));
    DNN_TRY(cudnnSetTensor4dDescriptor(cv->yd, ci->fmt, ci->dt, y->n, y->c, y->h, y->w));
    DNN_TRY(cudnnSetConvolution2dDescriptor(cv->cd, l->pad, l->pad, l->stride, l->stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                            CUDNN_DATA_FLOAT));
    DNN_TRY(cudnnSetConvolutionMathType(cv->cd, ci->math));
    DNN_TRY(cudnnGetConvolution2dForwardOutputDim(cv->cd, cv->xd, cl->wd, &on, &oc, &oh, &ow));
    if (on != y->n || oc != y->c || oh != y->h || ow != y->w) {
        st = sp_err(SP_ERR_INVALID, "conv %dx%d stride %d of (%d,%d,%d,%d) gives (%d,%d,%d,%d), output is (%d,%d,%d,%d)",
                    l->k, l->k, l->stride, x->n, x->c, x->h, x->w, on, oc, oh, ow, y->n, y->c, y->h, y->w);
        goto fail;
    }
    if ((st = choose_algo(ci, cl, cv, l, x, y))) goto fail;
    cv->next = cl->convs;
    cl->convs = cv;
    *out = cv;
    return SP_OK;
fail:
    conv_free(cv);
    return st;
}

/* y = conv(x, W) without bias (the raw result the epilogues start from). Runs the algorithm in
 * use for this shape; when it fails, or its workspace cannot be had, tries the others of the
 * list in turn (from the next one, wrapping around) and keeps the first that runs. */
static sp_status conv_raw(cu_impl *ci, nn_layer *l, const nn_tensor *x, nn_tensor *y) {
    sp_status st = SP_OK;
    if (x->c != l->cin || y->c != l->cout || x->n != y->n)
        return sp_err(SP_ERR_INVALID, "conv %d->%d on (%d,%d,%d,%d) into (%d,%d,%d,%d)", l->cin, l->cout, x->n, x->c,
                      x->h, x->w, y->n, y->c, y->h, y->w);
    cu_convset *cv = NULL;
    if ((st = get_conv(ci, l, x, y, &cv))) return st;
    cu_layer *cl = l->be;
    const float one = 1.0f, zero = 0.0f; /* alpha and beta are float for float and half data */
    char why[768] = "";
    for (int tried = 0; tried < cv->ncand; tried++) {
        const cu_algo *a = &cv->cand[cv->cur];
        if (tried) DNN_TRY(cudnnSetConvolutionMathType(cv->cd, a->math));
        if (a->ws > ci->ws_size && grow(ci, &ci->ws, &ci->ws_size, a->ws)) {
            snprintf(why, sizeof why, "workspace: %s", sp_err_msg());
        } else {
            const int injected = nn_hook(ci->be, NN_HOOK_CONV, (size_t)a->algo);
            cudnnStatus_t s = injected ? CUDNN_STATUS_NOT_SUPPORTED
                                       : cudnnConvolutionForward(ci->dnn, &one, cv->xd, x->data, cl->wd, cl->w, cv->cd,
                                                                 a->algo, a->ws ? ci->ws : NULL, a->ws, &zero, cv->yd,
                                                                 y->data);
            if (s == CUDNN_STATUS_SUCCESS) {
                if (tried)
                    SP_WARN("cuDNN conv %dx%d %d->%d on (%d,%d,%d,%d): now algorithm %d (math %d)", l->k, l->k, l->cin,
                            l->cout, x->n, x->c, x->h, x->w, (int)a->algo, (int)a->math);
                return SP_OK;
            }
            if (injected)
                snprintf(why, sizeof why, "%s (injected by the test hook)", cudnnGetErrorString(s));
            else
                dnn_describe(s, why, sizeof why);
            (void)cudaGetLastError(); /* a launch cuDNN attempted must not fail our next one */
        }
        SP_WARN("cuDNN conv %dx%d %d->%d on (%d,%d,%d,%d): algorithm %d failed (%s)%s", l->k, l->k, l->cin, l->cout,
                x->n, x->c, x->h, x->w, (int)a->algo, why, tried + 1 < cv->ncand ? "; trying the next" : "");
        cv->cur = (cv->cur + 1) % cv->ncand;
    }
    /* cur is back where it started; set its math type again for the next request. */
    DNN_TRY(cudnnSetConvolutionMathType(cv->cd, cv->cand[cv->cur].math));
    return sp_err(SP_ERR_BACKEND, "cuDNN conv %dx%d %d->%d on (%d,%d,%d,%d): all %d algorithms failed; the last: %s",
                  l->k, l->k, l->cin, l->cout, x->n, x->c, x->h, x->w, cv->ncand, why);
fail:
    return st;
}

static int act_code(nn_act act) { return act == NN_ACT_RELU ? 1 : act == NN_ACT_LRELU ? 2 : 0; }

static sp_status cu_conv(nn_backend *be, nn_layer *l, const nn_tensor *x, nn_tensor *y, nn_act act) {
    cu_impl *ci = impl_of(be);
    sp_status st = SP_OK;
    ENTER(ci);
    if ((st = conv_raw(ci, l, x, y))) return st;
    cu_layer *cl = l->be;
    CU_TRY(cuk_bias_act(ci->stream, dtype_of(ci), y->data, shape_of(ci, y), cl->b, NULL, NULL, act_code(act),
                        NN_LRELU_SLOPE));
    return SP_OK;
fail:
    return st;
}

/* raw = conv(x) into y; u and ratio from the mask's window sums; then in one pass over y
 * y = act(raw*ratio + b*u); my = u as one group of cout channels. */
static sp_status cu_pconv(nn_backend *be, nn_layer *l, const nn_tensor *x, const nn_mask *mx, nn_tensor *y,
                          nn_mask *my, nn_act act) {
    cu_impl *ci = impl_of(be);
    sp_status st = SP_OK;
    ENTER(ci);
    if (mx->n != x->n || mx->h != x->h || mx->w != x->w || my->n != y->n || my->h != y->h || my->w != y->w)
        return sp_err(SP_ERR_INVALID, "pconv masks (%d,%d,%d) and (%d,%d,%d) for tensors (%d,%d,%d) and (%d,%d,%d)",
                      mx->n, mx->h, mx->w, my->n, my->h, my->w, x->n, x->h, x->w, y->n, y->h, y->w);
    const size_t plane = (size_t)y->n * y->h * y->w * sizeof(float);
    if (my->bytes < plane) return sp_err(SP_ERR_INVALID, "pconv output mask of %zu bytes, needs %zu", my->bytes, plane);
    if ((st = conv_raw(ci, l, x, y))) return st;
    if ((st = grow(ci, (void **)&ci->ratio, &ci->ratio_size, plane))) return st;
    const float K = (float)(l->cin * l->k * l->k);
    CU_TRY(cuk_pconv_mask(ci->stream, mx->data, mx->n, groups_of(mx), mx->h, mx->w, y->h, y->w, l->k, l->stride, l->pad,
                          K, my->data, ci->ratio));
    my->g = 1;
    my->cnt[0] = l->cout;
    cu_layer *cl = l->be;
    CU_TRY(cuk_bias_act(ci->stream, dtype_of(ci), y->data, shape_of(ci, y), cl->b, ci->ratio, my->data, act_code(act),
                        NN_LRELU_SLOPE));
    return SP_OK;
fail:
    return st;
}

/* ---- other ops ---- */

static sp_status cu_mask_apply(nn_backend *be, nn_tensor *x, const nn_mask *m) {
    cu_impl *ci = impl_of(be);
    sp_status st = SP_OK;
    ENTER(ci);
    if (m->n != x->n || m->h != x->h || m->w != x->w)
        return sp_err(SP_ERR_INVALID, "mask (%d,%d,%d) for a tensor (%d,%d,%d)", m->n, m->h, m->w, x->n, x->h, x->w);
    CU_TRY(cuk_mask_apply(ci->stream, dtype_of(ci), x->data, shape_of(ci, x), m->data, groups_of(m)));
    return SP_OK;
fail:
    return st;
}

static sp_status cu_up2_concat(nn_backend *be, const nn_tensor *a, const nn_tensor *skip, nn_tensor *y,
                               const nn_mask *ma, const nn_mask *mskip, nn_mask *my) {
    cu_impl *ci = impl_of(be);
    sp_status st = SP_OK;
    ENTER(ci);
    const int H = y->h, W = y->w, f = H / a->h;
    if ((f != 1 && f != 2) || a->h * f != H || a->w * f != W || a->n != y->n)
        return sp_err(SP_ERR_INVALID, "concat of %dx%d into %dx%d", a->w, a->h, W, H);
    if (skip && (skip->h != H || skip->w != W || skip->n != y->n || a->c + skip->c > y->c))
        return sp_err(SP_ERR_INVALID, "concat of (%d,%d,%d,%d) and (%d,%d,%d,%d) into (%d,%d,%d,%d)", a->n, a->c, a->h,
                      a->w, skip->n, skip->c, skip->h, skip->w, y->n, y->c, y->h, y->w);
    if (!skip && a->c > y->c) return sp_err(SP_ERR_INVALID, "upsampling %d channels into %d", a->c, y->c);
    cuk_shape ss = {0, 0, 0, 0, ci->nhwc};
    if (skip) ss = shape_of(ci, skip);
    CU_TRY(cuk_up2_concat(ci->stream, dtype_of(ci), a->data, shape_of(ci, a), skip ? skip->data : NULL, ss, y->data,
                          shape_of(ci, y), f));
    if (ma) {
        int G = ma->g + (mskip ? mskip->g : 0);
        if (G > NN_MAX_GROUPS) return sp_err(SP_ERR_UNSUPPORTED, "mask with %d channel groups", G);
        if (ma->h * f != H || ma->w * f != W || (mskip && (mskip->h != H || mskip->w != W)))
            return sp_err(SP_ERR_INVALID, "concat of masks of %dx%d into %dx%d", ma->w, ma->h, W, H);
        if (my->bytes < (size_t)y->n * G * H * W * sizeof(float))
            return sp_err(SP_ERR_INVALID, "concat mask of %zu bytes cannot hold %d groups", my->bytes, G);
        my->g = G;
        for (int g = 0; g < ma->g; g++) my->cnt[g] = ma->cnt[g];
        for (int g = 0; mskip && g < mskip->g; g++) my->cnt[ma->g + g] = mskip->cnt[g];
        CU_TRY(cuk_mask_up2_concat(ci->stream, ma->data, ma->g, mskip ? mskip->data : NULL, mskip ? mskip->g : 0,
                                   my->data, y->n, H, W, f));
    }
    return SP_OK;
fail:
    return st;
}

static sp_status cu_maxpool2(nn_backend *be, const nn_tensor *x, nn_tensor *y) {
    cu_impl *ci = impl_of(be);
    sp_status st = SP_OK;
    ENTER(ci);
    if (y->n != x->n || y->c != x->c || y->h != x->h / 2 || y->w != x->w / 2)
        return sp_err(SP_ERR_INVALID, "maxpool of (%d,%d,%d,%d) into (%d,%d,%d,%d)", x->n, x->c, x->h, x->w, y->n,
                      y->c, y->h, y->w);
    CU_TRY(cuk_maxpool2(ci->stream, dtype_of(ci), x->data, shape_of(ci, x), y->data, shape_of(ci, y)));
    return SP_OK;
fail:
    return st;
}

static sp_status cu_act(nn_backend *be, const nn_tensor *x, nn_tensor *y, nn_act act) {
    cu_impl *ci = impl_of(be);
    sp_status st = SP_OK;
    ENTER(ci);
    size_t count = (size_t)x->n * x->c * x->h * x->w;
    if (count != (size_t)y->n * y->c * y->h * y->w)
        return sp_err(SP_ERR_INVALID, "activation of %zu elements into %d*%d*%d*%d", count, y->n, y->c, y->h, y->w);
    CU_TRY(cuk_act(ci->stream, dtype_of(ci), x->data, y->data, count, act_code(act), NN_LRELU_SLOPE));
    return SP_OK;
fail:
    return st;
}

static sp_status cu_desc_pool(nn_backend *be, const nn_tensor *x, nn_pool pool, float *host) {
    cu_impl *ci = impl_of(be);
    sp_status st = SP_OK;
    ENTER(ci);
    size_t bytes = (size_t)x->n * x->c * sizeof(float);
    if ((st = grow(ci, &ci->scr, &ci->scr_size, bytes))) return st;
    CU_TRY(cuk_desc_pool(ci->stream, dtype_of(ci), x->data, shape_of(ci, x), pool == NN_POOL_MAX, ci->scr));
    return d2h(ci, host, ci->scr, bytes);
fail:
    return st;
}

static sp_status cu_sync(nn_backend *be) {
    cu_impl *ci = impl_of(be);
    sp_status st = SP_OK;
    ENTER(ci);
    CU_TRY(cudaStreamSynchronize(ci->stream));
    return SP_OK;
fail:
    return st;
}

static size_t cu_device_memory(nn_backend *be) { return atomic_load(&impl_of(be)->held); }

static void cu_destroy(nn_backend *be) {
    cu_impl *ci = be->impl;
    if (ci) {
        if (cudaSetDevice(ci->dev) != cudaSuccess) SP_WARN("cudaSetDevice(%d) failed", ci->dev);
        if (ci->stream) {
            dev_free(ci, ci->ws, ci->ws_size);
            dev_free(ci, ci->scr, ci->scr_size);
            dev_free(ci, ci->ratio, ci->ratio_size);
        }
        if (ci->pin) cudaFreeHost(ci->pin);
        if (ci->dnn) cudnnDestroy(ci->dnn);
        if (ci->staged) cudaEventDestroy(ci->staged);
        if (ci->stream) cudaStreamDestroy(ci->stream);
        size_t left = atomic_load(&ci->held);
        if (left) SP_WARN("CUDA backend freed with %zu bytes of GPU memory still held (free the networks first)", left);
        free(ci);
    }
    free(be);
}

static const nn_backend_ops cuda_ops = {
    .name = "cuda",
    .destroy = cu_destroy,
    .device_memory = cu_device_memory,
    .tensor_alloc = cu_tensor_alloc,
    .tensor_release = cu_tensor_release,
    .mask_alloc = cu_mask_alloc,
    .mask_release = cu_mask_release,
    .upload = cu_upload,
    .download = cu_download,
    .mask_upload = cu_mask_upload,
    .mask_download = cu_mask_download,
    .layer_release = cu_layer_release,
    .conv = cu_conv,
    .pconv = cu_pconv,
    .mask_apply = cu_mask_apply,
    .up2_concat = cu_up2_concat,
    .maxpool2 = cu_maxpool2,
    .act = cu_act,
    .desc_pool = cu_desc_pool,
    .sync = cu_sync,
};

/* An integer environment setting, or `def` when unset; -1 when set but not a number in [lo,hi]. */
static long env_long(const char *name, long def, long lo, long hi) {
    const char *v = getenv(name);
    if (!v || !*v) return def;
    char *end;
    long x = strtol(v, &end, 10);
    return *end || x < lo || x > hi ? -1 : x;
}

static const char *prec_name(nn_precision p) { return p == NN_PREC_FP16 ? "fp16" : p == NN_PREC_TF32 ? "tf32" : "fp32"; }

sp_status nn_cuda_backend_new(const nn_backend_opts *opts, nn_backend **out) {
    sp_status st = SP_OK;
    *out = NULL;
    int count = 0;
    cudaError_t ce = cudaGetDeviceCount(&count);
    if (ce != cudaSuccess)
        return sp_err(SP_ERR_UNSUPPORTED, "no usable GPU: cudaGetDeviceCount: %s (%s)", cudaGetErrorString(ce),
                      cudaGetErrorName(ce));
    if (count == 0) return sp_err(SP_ERR_UNSUPPORTED, "no GPU: the CUDA runtime sees 0 devices");
    if (opts->gpu < 0 || opts->gpu >= count)
        return sp_err(SP_ERR_INVALID, "model.gpu %d: this machine has %d GPU%s (0..%d)", opts->gpu, count,
                      count == 1 ? "" : "s", count - 1);
    size_t dnn_ver = cudnnGetVersion();
    if (dnn_ver / 10000 != CUDNN_MAJOR)
        return sp_err(SP_ERR_UNSUPPORTED, "cuDNN %zu.%zu.%zu loaded, this build needs cuDNN %d", dnn_ver / 10000,
                      dnn_ver / 100 % 100, dnn_ver % 100, CUDNN_MAJOR);
    long nhwc_env = env_long("SEMIPAINT_CUDA_NHWC", -2, 0, 1);
    long ws_mb = env_long("SEMIPAINT_CUDA_WORKSPACE_MB", WORKSPACE_LIMIT_MB, 0, 1L << 20);
    const char *algo_env = getenv("SEMIPAINT_CUDA_ALGO");
    if (nhwc_env == -1) return sp_err(SP_ERR_INVALID, "SEMIPAINT_CUDA_NHWC must be 0 or 1");
    if (ws_mb < 0) return sp_err(SP_ERR_INVALID, "SEMIPAINT_CUDA_WORKSPACE_MB must be a number of MiB");
    if (algo_env && *algo_env && strcmp(algo_env, "find") && strcmp(algo_env, "heuristic"))
        return sp_err(SP_ERR_INVALID, "SEMIPAINT_CUDA_ALGO must be find or heuristic, not '%s'", algo_env);

    nn_backend *be = calloc(1, sizeof *be);
    cu_impl *ci = calloc(1, sizeof *ci);
    if (!be || !ci) {
        free(be);
        free(ci);
        return sp_err(SP_ERR_NOMEM, "backend");
    }
    be->ops = &cuda_ops;
    be->opts = *opts;
    be->impl = ci;
    ci->be = be;
    atomic_init(&ci->held, 0);
    ci->dev = opts->gpu;
    ci->prec = opts->precision;
    ci->half = opts->precision == NN_PREC_FP16;
    ci->nhwc = nhwc_env >= 0 ? (int)nhwc_env : ci->half;
    ci->find = !(algo_env && !strcmp(algo_env, "heuristic"));
    ci->dt = ci->half ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
    ci->fmt = ci->nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    ci->math = opts->precision == NN_PREC_FP32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
    ci->ws_limit = (size_t)ws_mb << 20;

    CU_TRY(cudaSetDevice(ci->dev));
    struct cudaDeviceProp prop;
    CU_TRY(cudaGetDeviceProperties(&prop, ci->dev));
    cudaError_t pe = cuk_probe();
    if (pe != cudaSuccess) {
        st = sp_err(SP_ERR_UNSUPPORTED,
                    "GPU %d (%s, compute capability %d.%d): this build has no kernels it can run: %s (%s)", ci->dev,
                    prop.name, prop.major, prop.minor, cudaGetErrorString(pe), cudaGetErrorName(pe));
        goto fail;
    }
    CU_TRY(cudaStreamCreateWithFlags(&ci->stream, cudaStreamNonBlocking));
    CU_TRY(cudaEventCreateWithFlags(&ci->staged, cudaEventDisableTiming));
    DNN_TRY(cudnnCreate(&ci->dnn));
    DNN_TRY(cudnnSetStream(ci->dnn, ci->stream));
    snprintf(be->device, sizeof be->device, "%.120s (GPU %d, compute %d.%d, %.0f GiB, cuDNN %zu.%zu.%zu, %s %s)", prop.name,
             ci->dev, prop.major, prop.minor, (double)prop.totalGlobalMem / (1u << 30), dnn_ver / 10000,
             dnn_ver / 100 % 100, dnn_ver % 100, prec_name(ci->prec), ci->nhwc ? "NHWC" : "NCHW");
    SP_INFO("CUDA backend on %s; cuDNN algorithms by %s, workspace limit %ld MiB", be->device,
            ci->find ? "timed search" : "heuristics", ws_mb);
    *out = be;
    return SP_OK;
fail:
    cu_destroy(be);
    return st;
}
