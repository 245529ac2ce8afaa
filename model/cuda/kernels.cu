/* kernels.cu: the CUDA backend's own kernels: transfers with layout and type conversion, partial-convolution mask arithmetic, fused bias/ratio/activation epilogue, upsample+concat, max-pool, activations, descriptor pooling. */
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "model/cuda/kernels.h"

/* All kernels are grid-stride loops over the elements they write, in the memory order of their
 * output so that neighbouring threads store to neighbouring addresses. Arithmetic is fp32 for
 * both element types; fp16 values are converted on load and rounded to nearest on store. */

#define THREADS 256

typedef long long idx_t;

/* ---- element access ---- */

__device__ __forceinline__ float ld(const float *p, idx_t i) { return p[i]; }
__device__ __forceinline__ float ld(const __half *p, idx_t i) { return __half2float(p[i]); }
__device__ __forceinline__ void st(float *p, idx_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st(__half *p, idx_t i, float v) { p[i] = __float2half_rn(v); }

__device__ __forceinline__ float act_fn(float v, int act, float slope) {
    if (act == 1) return v > 0.0f ? v : 0.0f;
    if (act == 2) return v > 0.0f ? v : v * slope;
    return v;
}

/* ---- layout ---- */

__device__ __forceinline__ idx_t count_of(const cuk_shape &s) { return (idx_t)s.n * s.c * s.h * s.w; }

/* Offset of element (n,c,y,x) of a tensor of shape s. */
__device__ __forceinline__ idx_t offset(const cuk_shape &s, int n, int c, int y, int x) {
    if (s.nhwc) return (((idx_t)n * s.h + y) * s.w + x) * s.c + c;
    return (((idx_t)n * s.c + c) * s.h + y) * s.w + x;
}

/* Coordinates of the element at memory position i of a tensor of shape s. */
__device__ __forceinline__ void coords(const cuk_shape &s, idx_t i, int &n, int &c, int &y, int &x) {
    if (s.nhwc) {
        c = (int)(i % s.c);
        i /= s.c;
        x = (int)(i % s.w);
        i /= s.w;
        y = (int)(i % s.h);
        n = (int)(i / s.h);
    } else {
        x = (int)(i % s.w);
        i /= s.w;
        y = (int)(i % s.h);
        i /= s.h;
        c = (int)(i % s.c);
        n = (int)(i / s.c);
    }
}

/* The group (plane index) holding channel c; the last group takes any channel beyond the counts,
 * as the CPU backend does. */
__device__ __forceinline__ int group_of(const cuk_groups &g, int c) {
    int i = 0;
    while (i < g.g - 1 && c >= g.cnt[i]) c -= g.cnt[i++];
    return i;
}

#define GRID_LOOP(i, total) for (idx_t i = (idx_t)blockIdx.x * blockDim.x + threadIdx.x; i < (total); i += (idx_t)gridDim.x * blockDim.x)

static unsigned blocks_for(idx_t total) {
    idx_t b = (total + THREADS - 1) / THREADS;
    if (b < 1) b = 1;
    if (b > 65535LL * 16) b = 65535LL * 16; /* the grid-stride loop covers the rest */
    return (unsigned)b;
}

/* ---- transfers ---- */

/* src (n,nc,h,w) fp32 NCHW -> channels [c0,c0+nc) of dst (shape t). One thread per source element. */
template <typename T>
__global__ void k_from_nchw(const float *src, int nc, const float *scale, const float *shift, T *dst, cuk_shape t,
                            int c0) {
    const idx_t hw = (idx_t)t.h * t.w, total = (idx_t)t.n * nc * hw;
    GRID_LOOP(i, total) {
        int p = (int)(i % hw), c = (int)((i / hw) % nc), n = (int)(i / (hw * nc));
        float v = src[i];
        if (scale) v = v * scale[c] + shift[c];
        st(dst, offset(t, n, c0 + c, p / t.w, p % t.w), v);
    }
}

/* src (shape t) -> dst (n,c,h,w) fp32 NCHW. One thread per destination element. */
template <typename T> __global__ void k_to_nchw(const T *src, cuk_shape t, float *dst) {
    const idx_t total = count_of(t);
    GRID_LOOP(i, total) {
        int x = (int)(i % t.w), y = (int)((i / t.w) % t.h), c = (int)((i / ((idx_t)t.w * t.h)) % t.c);
        int n = (int)(i / ((idx_t)t.w * t.h * t.c));
        dst[i] = ld(src, offset(t, n, c, y, x));
    }
}

/* planes (n,g,hw) -> dst (n,C,hw), C = sum of cnt. */
__global__ void k_mask_expand(const float *planes, int n, cuk_groups g, int C, int hw, float *dst) {
    const idx_t total = (idx_t)n * C * hw;
    GRID_LOOP(i, total) {
        int p = (int)(i % hw), c = (int)((i / hw) % C), b = (int)(i / ((idx_t)hw * C));
        dst[i] = planes[((idx_t)b * g.g + group_of(g, c)) * hw + p];
    }
}

/* fp32 -> fp16 conversion of weights. */
__global__ void k_f32_to_f16(const float *src, __half *dst, idx_t count) {
    GRID_LOOP(i, count) dst[i] = __float2half_rn(src[i]);
}

/* ---- masks and partial convolution ---- */

/* x (shape t) *= planes (n,g,h,w) of each channel's group. */
template <typename T> __global__ void k_mask_apply(T *x, cuk_shape t, const float *planes, cuk_groups g) {
    const idx_t total = count_of(t), hw = (idx_t)t.h * t.w;
    GRID_LOOP(i, total) {
        int n, c, y, xx;
        coords(t, i, n, c, y, xx);
        st(x, i, ld(x, i) * planes[((idx_t)n * g.g + group_of(g, c)) * hw + (idx_t)y * t.w + xx]);
    }
}

/* m (n,g,ih,iw) -> u, ratio (n,1,oh,ow): one thread per output pixel; the window is clipped to the
 * image (zero padding contributes nothing). Box sums of 0/1 planes are exact integers in fp32. */
__global__ void k_pconv_mask(const float *m, int n, cuk_groups g, int ih, int iw, int oh, int ow, int k, int stride,
                             int pad, float K, float *u, float *ratio) {
    const idx_t total = (idx_t)n * oh * ow;
    GRID_LOOP(i, total) {
        int ox = (int)(i % ow), oy = (int)((i / ow) % oh), b = (int)(i / ((idx_t)ow * oh));
        int y0 = oy * stride - pad, x0 = ox * stride - pad;
        int ya = y0 < 0 ? 0 : y0, yb = y0 + k > ih ? ih : y0 + k;
        int xa = x0 < 0 ? 0 : x0, xb = x0 + k > iw ? iw : x0 + k;
        float sum = 0.0f;
        for (int gi = 0; gi < g.g; gi++) {
            const float *pl = m + ((idx_t)b * g.g + gi) * ih * iw;
            float bs = 0.0f;
            for (int yy = ya; yy < yb; yy++)
                for (int xx = xa; xx < xb; xx++) bs += pl[(idx_t)yy * iw + xx];
            sum += (float)g.cnt[gi] * bs;
        }
        float uu = sum > 1.0f ? 1.0f : sum;
        u[i] = uu;
        ratio[i] = K / (sum + 1e-8f) * uu;
    }
}

/* Epilogue on a raw convolution y (shape t): y = act(y + b[c]) or y = act(y*ratio + b[c]*u). */
template <typename T>
__global__ void k_bias_act(T *y, cuk_shape t, const float *bias, const float *ratio, const float *u, int act,
                           float slope) {
    const idx_t total = count_of(t), hw = (idx_t)t.h * t.w;
    GRID_LOOP(i, total) {
        int n, c, yy, x;
        coords(t, i, n, c, yy, x);
        float v = ld(y, i);
        if (ratio) {
            idx_t p = (idx_t)n * hw + (idx_t)yy * t.w + x;
            v = v * ratio[p] + bias[c] * u[p];
        } else {
            v = v + bias[c];
        }
        st(y, i, act_fn(v, act, slope));
    }
}

/* ---- upsample + concat, pooling, activations ---- */

/* y (shape ys) = [up_f(a) (shape as) ; skip (shape ss, may be NULL)] along channels. */
template <typename T>
__global__ void k_up2_concat(const T *a, cuk_shape as, const T *skip, cuk_shape ss, T *y, cuk_shape ys, int f) {
    const idx_t total = count_of(ys);
    GRID_LOOP(i, total) {
        int n, c, yy, x;
        coords(ys, i, n, c, yy, x);
        float v = 0.0f;
        if (c < as.c)
            v = ld(a, offset(as, n, c, yy / f, x / f));
        else if (skip && c - as.c < ss.c)
            v = ld(skip, offset(ss, n, c - as.c, yy, x));
        st(y, i, v);
    }
}

/* my (n,ga+gs,h,w) = [up_f(ma) (n,ga,h/f,w/f) ; ms (n,gs,h,w)]. */
__global__ void k_mask_up2_concat(const float *ma, int ga, const float *ms, int gs, float *my, int n, int h, int w,
                                  int f) {
    const int G = ga + gs, ah = h / f, aw = w / f;
    const idx_t hw = (idx_t)h * w, total = (idx_t)n * G * hw;
    GRID_LOOP(i, total) {
        int x = (int)(i % w), y = (int)((i / w) % h), g = (int)((i / hw) % G), b = (int)(i / (hw * G));
        my[i] = g < ga ? ma[(((idx_t)b * ga + g) * ah + y / f) * aw + x / f]
                       : ms[(((idx_t)b * gs + (g - ga)) * h + y) * w + x];
    }
}

/* y (shape ys) = max over the 2x2 window at (2y, 2x) of x (shape xs). */
template <typename T> __global__ void k_maxpool2(const T *x, cuk_shape xs, T *y, cuk_shape ys) {
    const idx_t total = count_of(ys);
    GRID_LOOP(i, total) {
        int n, c, oy, ox;
        coords(ys, i, n, c, oy, ox);
        float a = ld(x, offset(xs, n, c, 2 * oy, 2 * ox)), b = ld(x, offset(xs, n, c, 2 * oy, 2 * ox + 1));
        float d = ld(x, offset(xs, n, c, 2 * oy + 1, 2 * ox)), e = ld(x, offset(xs, n, c, 2 * oy + 1, 2 * ox + 1));
        float m = a > b ? a : b, m2 = d > e ? d : e;
        st(y, i, m > m2 ? m : m2);
    }
}

/* y = act(x), elementwise over `count` elements; x may equal y. */
template <typename T> __global__ void k_act(const T *x, T *y, idx_t count, int act, float slope) {
    GRID_LOOP(i, count) st(y, i, act_fn(ld(x, i), act, slope));
}

/* ---- descriptor ---- */

/* One block per image: pooled[c] (c floats of dynamic shared memory) = mean or max of channel c
 * of x (shape xs) over its h*w pixels; then out (n,c) = pooled / max(||pooled||_2, 1e-12). */
template <typename T> __global__ void k_desc_pool(const T *x, cuk_shape xs, int max, float *out) {
    extern __shared__ float pooled[];
    __shared__ float warp_sums[THREADS / 32];
    __shared__ float norm;
    const int n = blockIdx.x, hw = xs.h * xs.w;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < xs.c; c += blockDim.x) {
        float acc = max ? -INFINITY : 0.0f;
        for (int p = 0; p < hw; p++) {
            float v = ld(x, offset(xs, n, c, p / xs.w, p % xs.w));
            acc = max ? (v > acc ? v : acc) : acc + v;
        }
        if (!max) acc /= (float)hw;
        pooled[c] = acc;
        ss += acc * acc;
    }
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_down_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.0f;
        for (int i = 0; i < (int)(blockDim.x >> 5); i++) t += warp_sums[i];
        float nr = sqrtf(t);
        norm = nr < 1e-12f ? 1e-12f : nr;
    }
    __syncthreads();
    for (int c = threadIdx.x; c < xs.c; c += blockDim.x) out[(idx_t)n * xs.c + c] = pooled[c] / norm;
}

/* ---- launchers ---- */

#define LAUNCH(kernel, total, s, ...) kernel<<<blocks_for(total), THREADS, 0, s>>>(__VA_ARGS__)

extern "C" cudaError_t cuk_probe(void) {
    cudaFuncAttributes a;
    cudaError_t e = cudaFuncGetAttributes(&a, k_act<float>);
    if (e == cudaSuccess) e = cudaFuncGetAttributes(&a, k_act<__half>);
    return e;
}

extern "C" cudaError_t cuk_from_nchw(cudaStream_t s, cuk_dtype dt, const float *src, int nc, const float *scale,
                                     const float *shift, void *dst, cuk_shape t, int c0) {
    idx_t total = (idx_t)t.n * nc * t.h * t.w;
    if (dt == CUK_F16)
        LAUNCH(k_from_nchw<__half>, total, s, src, nc, scale, shift, (__half *)dst, t, c0);
    else
        LAUNCH(k_from_nchw<float>, total, s, src, nc, scale, shift, (float *)dst, t, c0);
    return cudaGetLastError();
}

extern "C" cudaError_t cuk_to_nchw(cudaStream_t s, cuk_dtype dt, const void *src, cuk_shape t, float *dst) {
    idx_t total = (idx_t)t.n * t.c * t.h * t.w;
    if (dt == CUK_F16)
        LAUNCH(k_to_nchw<__half>, total, s, (const __half *)src, t, dst);
    else
        LAUNCH(k_to_nchw<float>, total, s, (const float *)src, t, dst);
    return cudaGetLastError();
}

extern "C" cudaError_t cuk_mask_expand(cudaStream_t s, const float *planes, int n, cuk_groups g, int h, int w,
                                       float *dst) {
    int C = 0;
    for (int i = 0; i < g.g; i++) C += g.cnt[i];
    LAUNCH(k_mask_expand, (idx_t)n * C * h * w, s, planes, n, g, C, h * w, dst);
    return cudaGetLastError();
}

extern "C" cudaError_t cuk_mask_apply(cudaStream_t s, cuk_dtype dt, void *x, cuk_shape t, const float *planes,
                                      cuk_groups g) {
    idx_t total = (idx_t)t.n * t.c * t.h * t.w;
    if (dt == CUK_F16)
        LAUNCH(k_mask_apply<__half>, total, s, (__half *)x, t, planes, g);
    else
        LAUNCH(k_mask_apply<float>, total, s, (float *)x, t, planes, g);
    return cudaGetLastError();
}

extern "C" cudaError_t cuk_pconv_mask(cudaStream_t s, const float *m, int n, cuk_groups g, int ih, int iw, int oh,
                                      int ow, int k, int stride, int pad, float K, float *u, float *ratio) {
    LAUNCH(k_pconv_mask, (idx_t)n * oh * ow, s, m, n, g, ih, iw, oh, ow, k, stride, pad, K, u, ratio);
    return cudaGetLastError();
}

extern "C" cudaError_t cuk_bias_act(cudaStream_t s, cuk_dtype dt, void *y, cuk_shape t, const float *bias,
                                    const float *ratio, const float *u, int act, float slope) {
    idx_t total = (idx_t)t.n * t.c * t.h * t.w;
    if (dt == CUK_F16)
        LAUNCH(k_bias_act<__half>, total, s, (__half *)y, t, bias, ratio, u, act, slope);
    else
        LAUNCH(k_bias_act<float>, total, s, (float *)y, t, bias, ratio, u, act, slope);
    return cudaGetLastError();
}

extern "C" cudaError_t cuk_up2_concat(cudaStream_t s, cuk_dtype dt, const void *a, cuk_shape as, const void *skip,
                                      cuk_shape ss, void *y, cuk_shape ys, int f) {
    idx_t total = (idx_t)ys.n * ys.c * ys.h * ys.w;
    if (dt == CUK_F16)
        LAUNCH(k_up2_concat<__half>, total, s, (const __half *)a, as, (const __half *)skip, ss, (__half *)y, ys, f);
    else
        LAUNCH(k_up2_concat<float>, total, s, (const float *)a, as, (const float *)skip, ss, (float *)y, ys, f);
    return cudaGetLastError();
}

extern "C" cudaError_t cuk_mask_up2_concat(cudaStream_t s, const float *ma, int ga, const float *ms, int gs, float *my,
                                           int n, int h, int w, int f) {
    LAUNCH(k_mask_up2_concat, (idx_t)n * (ga + gs) * h * w, s, ma, ga, ms, gs, my, n, h, w, f);
    return cudaGetLastError();
}

extern "C" cudaError_t cuk_maxpool2(cudaStream_t s, cuk_dtype dt, const void *x, cuk_shape xs, void *y, cuk_shape ys) {
    idx_t total = (idx_t)ys.n * ys.c * ys.h * ys.w;
    if (dt == CUK_F16)
        LAUNCH(k_maxpool2<__half>, total, s, (const __half *)x, xs, (__half *)y, ys);
    else
        LAUNCH(k_maxpool2<float>, total, s, (const float *)x, xs, (float *)y, ys);
    return cudaGetLastError();
}

extern "C" cudaError_t cuk_act(cudaStream_t s, cuk_dtype dt, const void *x, void *y, size_t count, int act,
                               float slope) {
    if (dt == CUK_F16)
        LAUNCH(k_act<__half>, (idx_t)count, s, (const __half *)x, (__half *)y, (idx_t)count, act, slope);
    else
        LAUNCH(k_act<float>, (idx_t)count, s, (const float *)x, (float *)y, (idx_t)count, act, slope);
    return cudaGetLastError();
}

extern "C" cudaError_t cuk_desc_pool(cudaStream_t s, cuk_dtype dt, const void *x, cuk_shape xs, int max, float *out) {
    size_t smem = (size_t)xs.c * sizeof(float);
    if (smem > 48 * 1024) return cudaErrorInvalidValue; /* more than 12288 channels */
    if (dt == CUK_F16)
        k_desc_pool<__half><<<xs.n, THREADS, smem, s>>>((const __half *)x, xs, max, out);
    else
        k_desc_pool<float><<<xs.n, THREADS, smem, s>>>((const float *)x, xs, max, out);
    return cudaGetLastError();
}

extern "C" cudaError_t cuk_f32_to_f16(cudaStream_t s, const float *src, void *dst, size_t count) {
    LAUNCH(k_f32_to_f16, (idx_t)count, s, src, (__half *)dst, (idx_t)count);
    return cudaGetLastError();
}
