/* wino.c: Winograd F(2x2,3x3) convolution (Lavin and Gray 2016) on nChw8c tensors: transforms fused with bias and activation here, the 16 products per block of tiles through oneDNN's sgemm. */
#include <dnnl.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "wino.h"

/* Each output tile of 2x2 pixels reads a 4x4 input patch d; with the transforms
 *   V = B^T d B,  U = G g G^T,  Y = A^T (U .* V) A
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
 *   A^T = [1 1 1 0; 0 1 -1 -1]
 * the 3x3 correlation costs 16 multiplies per 4 outputs instead of 36. Summed over input channels,
 * the elementwise products become 16 matrix products per block of T tiles: (T x CI) by (CI x CO).
 * Arithmetic is 2.25x less than a direct convolution; the products run at 55-75% of the FMA peak
 * against 85-95% for oneDNN's direct AVX2 kernels, so the net gain is 1.3-1.8x on large layers. */

#define WT 16 /* elements of a transformed tile */
/* Floats between consecutive xi planes of a block's V (T x CI) and M (T x CO): one cache line more
 * than the plane, so that the 16 planes a tile's transform touches do not all fall in the same
 * cache set (T*C is a power of two). */
#define PLANE(T, C) ((size_t)(T) * (C) + 16)

static inline int blocks8(int c) { return (c + CPU_BLK - 1) / CPU_BLK; }

int cpu_wino_shape_ok(const nn_layer *l, const nn_tensor *x, const nn_tensor *y) {
    return l->k == 3 && l->stride == 1 && l->pad == 1 && !x->plain && !y->plain && x->n == y->n && x->h == y->h &&
           x->w == y->w && x->c == l->cin && y->c == l->cout;
}

/* Tiles per block: as many rows as keep a block's transformed input and products,
 * 16*T*(CI+CO) floats, within about 4 MB, between 16 and 256, a multiple of 8. */
static int tile_block(int ci, int co) {
    int t = (int)((4u << 20) / sizeof(float) / WT / (unsigned)(ci + co));
    if (t > 256) t = 256;
    if (t < 16) t = 16;
    return t / 8 * 8;
}

/* Measured on a 2-core AVX2 EPYC with the layer table of `semipaint bench` (every 3x3 stride-1
 * shape of the three networks, direct against Winograd): Winograd takes 0.55-0.75x the time of
 * the direct kernels from 128 input and 64 output channels on, when each thread gets at least 32
 * tiles and 32768 tile-channels of work; 64-channel inputs tie (the transformed tiles, 4x the
 * pixels, make the layer memory-bound), 3 output channels and 512 channels at 16x16 lose. */
int cpu_wino_pays(const nn_layer *l, const nn_tensor *x, int threads) {
    if (l->cin < 128 || l->cout < 64) return 0;
    const long tiles = (long)x->n * ((x->h + 1) / 2) * ((x->w + 1) / 2);
    return tiles >= 32L * threads && tiles * l->cin >= 32768L * threads;
}

sp_status cpu_wino_weights(const nn_layer *l, float **u) {
    const int CI = blocks8(l->cin) * CPU_BLK, CO = blocks8(l->cout) * CPU_BLK;
    float *o = calloc((size_t)WT * CI * CO, sizeof(float));
    *u = NULL;
    if (!o) return sp_err(SP_ERR_NOMEM, "Winograd weights of %zu bytes", (size_t)WT * CI * CO * sizeof(float));
    static const float G[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
    for (int oc = 0; oc < l->cout; oc++)
        for (int c = 0; c < l->cin; c++) {
            const float *g = l->w + ((size_t)oc * l->cin + c) * 9;
            float gg[4][3];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 3; j++) gg[i][j] = G[i][0] * g[j] + G[i][1] * g[3 + j] + G[i][2] * g[6 + j];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++)
                    o[((size_t)(i * 4 + j) * CI + c) * CO + oc] = gg[i][0] * G[j][0] + gg[i][1] * G[j][1] + gg[i][2] * G[j][2];
        }
    *u = o;
    return SP_OK;
}

size_t cpu_wino_scratch_bytes(const nn_layer *l, const nn_tensor *x, int threads) {
    (void)x;
    const int CI = blocks8(l->cin) * CPU_BLK, CO = blocks8(l->cout) * CPU_BLK;
    const int T = tile_block(CI, CO);
    return (size_t)threads * WT * (PLANE(T, CI) + PLANE(T, CO)) * sizeof(float);
}

/* Eight channels of one pixel: the unit of the nChw8c layout, one AVX register (GCC vector
 * extension; unaligned loads and stores go through memcpy). */
typedef float v8 __attribute__((vector_size(CPU_BLK * sizeof(float))));
typedef int v8i __attribute__((vector_size(CPU_BLK * sizeof(int))));
/* The helpers below are static and inlined: no vector crosses a real call, so GCC's note that
 * the ABI of v8 arguments depends on -mavx does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"

static inline v8 ld8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

#define st8(p, v)                  \
    do {                           \
        const v8 v_ = (v);         \
        memcpy((p), &v_, sizeof v_); \
    } while (0)

/* V[xi][i][cb*8 + j] for the tiles [t0, t0+nt) of the flattened (image, tile row, tile column) index.
 * Compiled for AVX2 and for baseline x86-64, picked at load time. */
__attribute__((target_clones("avx2", "default"))) static void input_transform(const nn_tensor *x, int t0, int nt, int T,
                                                                               int CI, float *V) {
    const int H = x->h, W = x->w, TW = (W + 1) / 2, NT = ((H + 1) / 2) * TW, CB = CI / CPU_BLK;
    const size_t plane = (size_t)H * W * CPU_BLK, xs = PLANE(T, CI); /* xs: distance between consecutive xi */
    const v8 zero = {0};
    for (int i = 0; i < nt; i++) {
        const int g = t0 + i, img = g / NT, r = g % NT, y0 = (r / TW) * 2 - 1, x0 = (r % TW) * 2 - 1;
        const int inner = y0 >= 0 && x0 >= 0 && y0 + 4 <= H && x0 + 4 <= W;
        for (int cb = 0; cb < CB; cb++) {
            const float *src = (const float *)x->data + ((size_t)img * CB + cb) * plane;
            v8 d[4][4];
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++) {
                    const int yy = y0 + a, xx = x0 + b;
                    d[a][b] = inner || (yy >= 0 && yy < H && xx >= 0 && xx < W)
                                  ? ld8(src + ((size_t)yy * W + xx) * CPU_BLK)
                                  : zero;
                }
            float *v = V + (size_t)i * CI + cb * CPU_BLK;
            for (int a = 0; a < 4; a++) {
                v8 t0v, t1v, t2v, t3v; /* row a of B^T d */
                if (a == 0)
                    t0v = d[0][0] - d[2][0], t1v = d[0][1] - d[2][1], t2v = d[0][2] - d[2][2], t3v = d[0][3] - d[2][3];
                else if (a == 1)
                    t0v = d[1][0] + d[2][0], t1v = d[1][1] + d[2][1], t2v = d[1][2] + d[2][2], t3v = d[1][3] + d[2][3];
                else if (a == 2)
                    t0v = d[2][0] - d[1][0], t1v = d[2][1] - d[1][1], t2v = d[2][2] - d[1][2], t3v = d[2][3] - d[1][3];
                else
                    t0v = d[1][0] - d[3][0], t1v = d[1][1] - d[3][1], t2v = d[1][2] - d[3][2], t3v = d[1][3] - d[3][3];
                st8(v + (a * 4 + 0) * xs, t0v - t2v);
                st8(v + (a * 4 + 1) * xs, t1v + t2v);
                st8(v + (a * 4 + 2) * xs, t2v - t1v);
                st8(v + (a * 4 + 3) * xs, t1v - t3v);
            }
        }
    }
}

/* y's pixels of tiles [t0, t0+nt) from the products M[xi][i][co]: A^T m A, bias, activation. */
__attribute__((target_clones("avx2", "default"))) static void output_transform(const float *M, int t0, int nt, int T,
                                                                                int CO, const float *bias, int cout,
                                                                                nn_act act, nn_tensor *y) {
    const int H = y->h, W = y->w, TW = (W + 1) / 2, NT = ((H + 1) / 2) * TW, CB = CO / CPU_BLK;
    const size_t plane = (size_t)H * W * CPU_BLK, xs = PLANE(T, CO);
    const v8 zero = {0}, slope = zero + (act == NN_ACT_LRELU ? NN_LRELU_SLOPE : 0.0f);
    for (int i = 0; i < nt; i++) {
        const int g = t0 + i, img = g / NT, r = g % NT, oy = (r / TW) * 2, ox = (r % TW) * 2;
        for (int cb = 0; cb < CB; cb++) {
            const float *m = M + (size_t)i * CO + cb * CPU_BLK;
            v8 b = zero;
            if (bias)
                for (int j = 0; j < CPU_BLK && cb * CPU_BLK + j < cout; j++) b[j] = bias[cb * CPU_BLK + j];
            v8 s0[4], s1[4]; /* m A: columns 0 and 1 of each row */
            for (int a = 0; a < 4; a++) {
                const v8 m0 = ld8(m + (a * 4 + 0) * xs), m1 = ld8(m + (a * 4 + 1) * xs);
                const v8 m2 = ld8(m + (a * 4 + 2) * xs), m3 = ld8(m + (a * 4 + 3) * xs);
                s0[a] = m0 + m1 + m2;
                s1[a] = m1 - m2 - m3;
            }
            v8 o[2][2] = {{s0[0] + s0[1] + s0[2] + b, s1[0] + s1[1] + s1[2] + b},
                          {s0[1] - s0[2] - s0[3] + b, s1[1] - s1[2] - s1[3] + b}};
            if (act != NN_ACT_NONE)
                for (int a = 0; a < 2; a++)
                    for (int c = 0; c < 2; c++) { /* max(o, o*slope), slope < 1 */
                        const v8i pos = o[a][c] > zero;
                        o[a][c] = (v8)(((v8i)o[a][c] & pos) | ((v8i)(o[a][c] * slope) & ~pos));
                    }
            float *dst = (float *)y->data + ((size_t)img * CB + cb) * plane;
            for (int a = 0; a < 2 && oy + a < H; a++)
                for (int c = 0; c < 2 && ox + c < W; c++) st8(dst + ((size_t)(oy + a) * W + ox + c) * CPU_BLK, o[a][c]);
        }
    }
}

sp_status cpu_wino_conv(const float *u, const nn_layer *l, const nn_tensor *x, nn_tensor *y, int with_bias,
                        nn_act act, float *scratch, int threads) {
    if (!cpu_wino_shape_ok(l, x, y)) return sp_err(SP_ERR_INVALID, "Winograd convolution of this shape");
    const int CI = blocks8(l->cin) * CPU_BLK, CO = blocks8(l->cout) * CPU_BLK, T = tile_block(CI, CO);
    const int total = x->n * ((x->h + 1) / 2) * ((x->w + 1) / 2), nblocks = (total + T - 1) / T;
    const size_t per = WT * (PLANE(T, CI) + PLANE(T, CO));
    const float *bias = with_bias ? l->b : NULL;
    int bad = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int b = 0; b < nblocks; b++) {
        float *V = scratch + (size_t)omp_get_thread_num() * per, *M = V + WT * PLANE(T, CI);
        const int t0 = b * T, nt = total - t0 < T ? total - t0 : T;
        input_transform(x, t0, nt, T, CI, V);
        for (int xi = 0; xi < WT; xi++)
            if (dnnl_sgemm('N', 'N', nt, CO, CI, 1.0f, V + xi * PLANE(T, CI), CI, u + (size_t)xi * CI * CO, CO, 0.0f,
                           M + xi * PLANE(T, CO), CO) != dnnl_success) {
#pragma omp atomic write
                bad = 1;
            }
        output_transform(M, t0, nt, T, CO, bias, l->cout, act, y);
    }
    if (bad) return sp_err(SP_ERR_BACKEND, "oneDNN sgemm failed in a Winograd convolution %d->%d", l->cin, l->cout);
    return SP_OK;
}
