/* wino.h: Winograd F(2x2,3x3) and F(4x4,3x3) convolution for the CPU backend: transforms written here, the products through oneDNN's sgemm. */
#ifndef SP_CPU_WINO_H
#define SP_CPU_WINO_H

#include "model/backend.h"

/* Channel block of the CPU backend's nChw8c layout. */
#define CPU_BLK 8

/* 1 when layer l on input x into y can run as a Winograd convolution: a 3x3 kernel, stride 1,
 * padding 1, same-size output, both tensors blocked (nChw8c). */
int cpu_wino_shape_ok(const nn_layer *l, const nn_tensor *x, const nn_tensor *y);

/* The Winograd variant expected to beat oneDNN's direct kernels on this shape with `threads`
 * threads: 2 for F(2x2,3x3), 4 for F(4x4,3x3), 0 for neither (the rule was measured on AVX2
 * machines; see the comment in wino.c). */
int cpu_wino_pick(const nn_layer *l, const nn_tensor *x, int threads);

/* Transforms the layer's (cout,cin,3,3) weights for F(m x m,3x3), m = 2 or 4, into *u: (m+2)^2
 * matrices of (CI x CO) floats with CI, CO the channel counts rounded up to CPU_BLK and zeros in
 * the padding. The caller frees *u. */
sp_status cpu_wino_weights(const nn_layer *l, int m, float **u);

/* Scratch bytes cpu_wino_conv needs for layer l with variant m and `threads` threads. */
size_t cpu_wino_scratch_bytes(const nn_layer *l, int m, int threads);

/* y = act(conv3x3(x, W) + b) (bias only when with_bias) as F(m x m,3x3) through the weights u
 * transformed for m, using `scratch` (cpu_wino_scratch_bytes of it) and up to `threads` OpenMP
 * threads. Padding channels of y stay zero. */
sp_status cpu_wino_conv(const float *u, int m, const nn_layer *l, const nn_tensor *x, nn_tensor *y, int with_bias,
                        nn_act act, float *scratch, int threads);

#endif
