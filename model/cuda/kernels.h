/* kernels.h: the CUDA backend's own kernels (model/cuda/kernels.cu) as C launchers that queue work on a stream. */
#ifndef CUDA_KERNELS_H
#define CUDA_KERNELS_H

#include <cuda_runtime_api.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element type of activation tensors (masks, biases, ratios and host staging are always fp32). */
typedef enum { CUK_F32 = 0, CUK_F16 = 1 } cuk_dtype;

/* Logical shape (n,c,h,w) of a dense activation tensor and its layout: element (n,c,y,x) lives at
 *   nhwc = 0 (NCHW): ((n*c + ch)*h + y)*w + x
 *   nhwc = 1 (NHWC): ((n*h + y)*w + x)*c + ch */
typedef struct {
    int n, c, h, w, nhwc;
} cuk_shape;

/* Channel groups of a planar mask (backend.h's nn_mask): g planes per image, plane i standing for
 * cnt[i] consecutive channels. */
#define CUK_MAX_GROUPS 4
typedef struct {
    int g;
    int cnt[CUK_MAX_GROUPS];
} cuk_groups;

/* Activation codes (backend.h's nn_act): 0 none, 1 ReLU, 2 LeakyReLU with the given slope. */

/* Every launcher queues its kernel on `s` and returns cudaGetLastError() (a launch failure, or an
 * earlier asynchronous error). Pointers are device pointers unless said otherwise. */

/* Returns cudaSuccess when this binary holds code the current device can run (a kernel's
 * attributes can be read), else the reason (cudaErrorNoKernelImageForDevice, ...). */
cudaError_t cuk_probe(void);

/* dst channels [c0, c0+nc) of t = src (n,nc,h,w) fp32 NCHW, as v*scale[c]+shift[c] when scale is
 * non-NULL (scale, shift: nc device floats). */
cudaError_t cuk_from_nchw(cudaStream_t s, cuk_dtype dt, const float *src, int nc, const float *scale,
                          const float *shift, void *dst, cuk_shape t, int c0);

/* dst (n,c,h,w) fp32 NCHW = all of src of shape t. */
cudaError_t cuk_to_nchw(cudaStream_t s, cuk_dtype dt, const void *src, cuk_shape t, float *dst);

/* dst (n,C,h,w) fp32, C = sum of cnt = each channel's group plane of planes (n,g,h,w). */
cudaError_t cuk_mask_expand(cudaStream_t s, const float *planes, int n, cuk_groups g, int h, int w, float *dst);

/* x (shape t) *= its channel's group plane of planes (n,g,h,w), channel by channel. */
cudaError_t cuk_mask_apply(cudaStream_t s, cuk_dtype dt, void *x, cuk_shape t, const float *planes, cuk_groups g);

/* Partial-convolution window sums of the input mask planes m (n,g,ih,iw) for a k x k window,
 * stride `stride`, zero padding `pad`, over an (oh,ow) output: per output pixel
 *   sum = sum over groups i of cnt[i] * boxsum(plane i),  u = min(sum, 1),
 *   ratio = K/(sum + 1e-8) * u   (K = cin*k*k);
 * writes u (n,1,oh,ow) and ratio (n,1,oh,ow). */
cudaError_t cuk_pconv_mask(cudaStream_t s, const float *m, int n, cuk_groups g, int ih, int iw, int oh, int ow, int k,
                           int stride, int pad, float K, float *u, float *ratio);

/* In place on y (shape t), which holds a raw convolution: with ratio NULL y = act(y + bias[c]);
 * otherwise y = act(y*ratio[n,p] + bias[c]*u[n,p]) (ratio, u: (n,1,h,w); bias: c floats). */
cudaError_t cuk_bias_act(cudaStream_t s, cuk_dtype dt, void *y, cuk_shape t, const float *bias, const float *ratio,
                         const float *u, int act, float slope);

/* y (shape ys) = concat over channels of up(a) (shape as) and skip (shape ss; NULL: none), where
 * up repeats each pixel f x f (f = 1 or 2, ys.h = as.h*f). Channels of y beyond both are zeroed. */
cudaError_t cuk_up2_concat(cudaStream_t s, cuk_dtype dt, const void *a, cuk_shape as, const void *skip, cuk_shape ss,
                           void *y, cuk_shape ys, int f);

/* my (n, ga+gs, h, w) = planes of up(ma) (n,ga,h/f,w/f) followed by those of ms (n,gs,h,w) (gs may be 0). */
cudaError_t cuk_mask_up2_concat(cudaStream_t s, const float *ma, int ga, const float *ms, int gs, float *my, int n,
                                int h, int w, int f);

/* y (shape ys) = 2x2 max-pool, stride 2, of x (shape xs); ys.h = xs.h/2 rounded down. */
cudaError_t cuk_maxpool2(cudaStream_t s, cuk_dtype dt, const void *x, cuk_shape xs, void *y, cuk_shape ys);

/* y[i] = act(x[i]) for `count` elements (x == y allowed). */
cudaError_t cuk_act(cudaStream_t s, cuk_dtype dt, const void *x, void *y, size_t count, int act, float slope);

/* out (n,c) fp32 = per image and channel the spatial mean (max = 0) or maximum (max = 1) of x,
 * each image's vector then divided by max(L2 norm, 1e-12). */
cudaError_t cuk_desc_pool(cudaStream_t s, cuk_dtype dt, const void *x, cuk_shape xs, int max, float *out);

/* dst[i] = fp16(src[i]), round to nearest even, for `count` elements. */
cudaError_t cuk_f32_to_f16(cudaStream_t s, const float *src, void *dst, size_t count);

#ifdef __cplusplus
}
#endif

#endif
