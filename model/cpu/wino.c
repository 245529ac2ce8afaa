/* wino.c: Winograd F(2x2,3x3) and F(4x4,3x3) convolution (Lavin and Gray 2016) on nChw8c tensors: transforms fused with bias and activation here, the products per block of tiles through oneDNN's sgemm. */
#include <dnnl.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/cpu/wino.h"

/* Each output tile of m x m pixels reads an (m+2) x (m+2) input patch d; with the transforms
 *   V = B^T d B,  U = G g G^T,  Y = A^T (U .* V) A
 * the 3x3 correlation costs (m+2)^2 multiplies per m^2 outputs instead of 9 m^2. Summed over input
 * channels, the elementwise products become (m+2)^2 matrix products per block of T tiles:
 * (T x CI) by (CI x CO). F(2x2,3x3) (m = 2) does 2.25x less arithmetic than a direct convolution,
 * F(4x4,3x3) (m = 4) 4x less, with transformed tiles of 4x and 2.25x the output's size; its larger
 * transform coefficients cost accuracy (about 10x F(2x2)'s rounding error, still within 1e-5 of
 * the outputs' scale on the networks here; the golden tests bound it). The products run at 55-85%
 * of the FMA peak against 85-95% for oneDNN's direct AVX2 kernels.
 *
 *   m = 2: B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
 *          A^T = [1 1 1 0; 0 1 -1 -1]
 *   m = 4: B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
 *                 0 4 0 -5 0 1],
 *          G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1],
 *          A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1] */

#define MAXA 6 /* largest patch side, m + 2 */
/* Floats between consecutive xi planes of a block's V (T x CI) and M (T x CO): one cache line more
 * than the plane, so that the planes a tile's transform touches do not all fall in the same cache
 * set (T*C is often a power of two). */
#define PLANE(T, C) ((size_t)(T) * (C) + 16)

static inline int blocks8(int c) { return (c + CPU_BLK - 1) / CPU_BLK; }

int cpu_wino_shape_ok(const nn_layer *l, const nn_tensor *x, const nn_tensor *y) {
    return l->k == 3 && l->stride == 1 && l->pad == 1 && !x->plain && !y->plain && x->n == y->n && x->h == y->h &&
           x->w == y->w && x->c == l->cin && y->c == l->cout;
}

/* Most tiles per block: as many rows as keep a block's transformed input and products,
 * (m+2)^2 * T * (CI+CO) floats, within about 4 MB, between 16 and 256, a multiple of 8. */
static int tile_block_max(int m, int ci, int co) {
    int t = (int)((4u << 20) / sizeof(float) / (unsigned)((m + 2) * (m + 2)) / (unsigned)(ci + co));
    if (t > 256) t = 256;
    if (t < 16) t = 16;
    return t / 8 * 8;
}

static long tiles_of(const nn_tensor *x, int m) { return (long)x->n * ((x->h + m - 1) / m) * ((x->w + m - 1) / m); }

/* Measured on a 2-core AVX2 EPYC with the layer table of `semipaint bench` (every 3x3 stride-1
 * shape of the three networks, direct against both Winograd variants): F(4x4) takes 0.35-0.7x the
 * time of the direct kernels, down to 64 input and 3 output channels, once each thread gets at
 * least 32 tiles (a 32x32 image at 2 threads); below that threads idle and sgemm's rows are too
 * short. At 16x16, F(2x2) still takes 0.6x with at least 128 input channels. */
int cpu_wino_pick(const nn_layer *l, const nn_tensor *x, int threads) {
    if (tiles_of(x, 4) >= 32L * threads) return 4;
    if (l->cin >= 128 && tiles_of(x, 2) >= 32L * threads) return 2;
    return 0;
}

sp_status cpu_wino_weights(const nn_layer *l, int m, float **u) {
    static const float G2[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
    static const float G4[6][3] = {{0.25f, 0, 0},
                                   {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                                   {-1.0f / 6, 1.0f / 6, -1.0f / 6},
                                   {1.0f / 24, 1.0f / 12, 1.0f / 6},
                                   {1.0f / 24, -1.0f / 12, 1.0f / 6},
                                   {0, 0, 1}};
    const float(*G)[3] = m == 4 ? G4 : G2;
    const int A = m + 2, CI = blocks8(l->cin) * CPU_BLK, CO = blocks8(l->cout) * CPU_BLK;
    *u = NULL;
    if (m != 2 && m != 4) return sp_err(SP_ERR_INVALID, "Winograd F(%dx%d,3x3)", m, m);
    float *o = calloc((size_t)A * A * CI * CO, sizeof(float));
    if (!o) return sp_err(SP_ERR_NOMEM, "Winograd weights of %zu bytes", (size_t)A * A * CI * CO * sizeof(float));
    for (int oc = 0; oc < l->cout; oc++)
        for (int c = 0; c < l->cin; c++) {
            const float *g = l->w + ((size_t)oc * l->cin + c) * 9;
            double gg[MAXA][3]; /* G g, then (G g) G^T, in double: the weights are transformed once */
            for (int i = 0; i < A; i++)
                for (int j = 0; j < 3; j++)
                    gg[i][j] = (double)G[i][0] * g[j] + (double)G[i][1] * g[3 + j] + (double)G[i][2] * g[6 + j];
            for (int i = 0; i < A; i++)
                for (int j = 0; j < A; j++)
                    o[((size_t)(i * A + j) * CI + c) * CO + oc] =
                        (float)(gg[i][0] * G[j][0] + gg[i][1] * G[j][1] + gg[i][2] * G[j][2]);
        }
    *u = o;
    return SP_OK;
}

size_t cpu_wino_scratch_bytes(const nn_layer *l, int m, int threads) {
    const int CI = blocks8(l->cin) * CPU_BLK, CO = blocks8(l->cout) * CPU_BLK, T = tile_block_max(m, CI, CO);
    return (size_t)threads * (m + 2) * (m + 2) * (PLANE(T, CI) + PLANE(T, CO)) * sizeof(float);
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

#define st8(p, v)                    \
    do {                             \
        const v8 v_ = (v);           \
        memcpy((p), &v_, sizeof v_); \
    } while (0)

/* B^T applied to one line of a patch: r = B^T d for d = d[0], d[s], d[2s], ... */
static inline void bt_line(int m, const v8 *d, int s, v8 *r, int rs) {
    if (m == 2) {
        r[0] = d[0] - d[2 * s];
        r[rs] = d[s] + d[2 * s];
        r[2 * rs] = d[2 * s] - d[s];
        r[3 * rs] = d[s] - d[3 * s];
        return;
    }
    const v8 d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s], d4 = d[4 * s], d5 = d[5 * s];
    r[0] = 4 * d0 - 5 * d2 + d4;
    r[rs] = d3 + d4 - 4 * (d1 + d2);
    r[2 * rs] = 4 * (d1 - d2) + d4 - d3;
    r[3 * rs] = 2 * (d3 - d1) + d4 - d2;
    r[4 * rs] = 2 * (d1 - d3) + d4 - d2;
    r[5 * rs] = 4 * d1 - 5 * d3 + d5;
}

/* A^T applied to one line of products: o = A^T q for q = q[0], q[s], ... */
static inline void at_line(int m, const v8 *q, int s, v8 *o, int os) {
    if (m == 2) {
        o[0] = q[0] + q[s] + q[2 * s];
        o[os] = q[s] - q[2 * s] - q[3 * s];
        return;
    }
    const v8 a = q[s] + q[2 * s], b = q[s] - q[2 * s], c = q[3 * s] + q[4 * s], d = q[3 * s] - q[4 * s];
    o[0] = q[0] + a + c;
    o[os] = b + 2 * d;
    o[2 * os] = a + 4 * c;
    o[3 * os] = b + 8 * d + q[5 * s];
}

/* V[xi][i][cb*8 + j] for the tiles [t0, t0+nt) of the flattened (image, tile row, tile column)
 * index; consecutive xi planes are xs floats apart. Compiled for AVX2 and for baseline x86-64,
 * picked at load time. */
__attribute__((target_clones("avx2", "default"))) static void input_transform(int m, const nn_tensor *x, int t0,
                                                                               int nt, size_t xs, int CI, float *V) {
    const int A = m + 2, H = x->h, W = x->w, TW = (W + m - 1) / m, NT = ((H + m - 1) / m) * TW, CB = CI / CPU_BLK;
    const size_t plane = (size_t)H * W * CPU_BLK;
    const v8 zero = {0};
    for (int i = 0; i < nt; i++) {
        const int g = t0 + i, img = g / NT, r = g % NT, y0 = (r / TW) * m - 1, x0 = (r % TW) * m - 1;
        const int inner = y0 >= 0 && x0 >= 0 && y0 + A <= H && x0 + A <= W;
        for (int cb = 0; cb < CB; cb++) {
            const float *src = (const float *)x->data + ((size_t)img * CB + cb) * plane;
            v8 d[MAXA][MAXA], t[MAXA][MAXA], v[MAXA][MAXA];
            for (int a = 0; a < A; a++)
                for (int b = 0; b < A; b++) {
                    const int yy = y0 + a, xx = x0 + b;
                    d[a][b] = inner || (yy >= 0 && yy < H && xx >= 0 && xx < W)
                                  ? ld8(src + ((size_t)yy * W + xx) * CPU_BLK)
                                  : zero;
                }
            for (int b = 0; b < A; b++) bt_line(m, &d[0][b], MAXA, &t[0][b], MAXA); /* columns: B^T d */
            for (int a = 0; a < A; a++) bt_line(m, t[a], 1, v[a], 1);               /* rows: (B^T d) B */
            float *vp = V + (size_t)i * CI + cb * CPU_BLK;
            for (int a = 0; a < A; a++)
                for (int b = 0; b < A; b++) st8(vp + (a * A + b) * xs, v[a][b]);
        }
    }
}

/* y's pixels of tiles [t0, t0+nt) from the products M[xi][i][co] (planes xs floats apart):
 * A^T q A, bias, activation. */
__attribute__((target_clones("avx2", "default"))) static void output_transform(int m, const float *M, int t0, int nt,
                                                                                size_t xs, int CO, const float *bias,
                                                                                int cout, nn_act act, nn_tensor *y) {
    const int A = m + 2, H = y->h, W = y->w, TW = (W + m - 1) / m, NT = ((H + m - 1) / m) * TW, CB = CO / CPU_BLK;
    const size_t plane = (size_t)H * W * CPU_BLK;
    const v8 zero = {0}, slope = zero + (act == NN_ACT_LRELU ? NN_LRELU_SLOPE : 0.0f);
    for (int i = 0; i < nt; i++) {
        const int g = t0 + i, img = g / NT, r = g % NT, oy = (r / TW) * m, ox = (r % TW) * m;
        for (int cb = 0; cb < CB; cb++) {
            const float *mp = M + (size_t)i * CO + cb * CPU_BLK;
            v8 b = zero, q[MAXA][MAXA], s[MAXA][MAXA], o[MAXA][MAXA];
            if (bias)
                for (int j = 0; j < CPU_BLK && cb * CPU_BLK + j < cout; j++) b[j] = bias[cb * CPU_BLK + j];
            for (int a = 0; a < A; a++)
                for (int c = 0; c < A; c++) q[a][c] = ld8(mp + (a * A + c) * xs);
            for (int a = 0; a < A; a++) at_line(m, q[a], 1, s[a], 1);                /* rows: q A */
            for (int c = 0; c < m; c++) at_line(m, &s[0][c], MAXA, &o[0][c], MAXA); /* columns: A^T (q A) */
            float *dst = (float *)y->data + ((size_t)img * CB + cb) * plane;
            for (int a = 0; a < m && oy + a < H; a++)
                for (int c = 0; c < m && ox + c < W; c++) {
                    v8 v = o[a][c] + b;
                    if (act != NN_ACT_NONE) { /* max(v, v*slope), slope < 1 */
                        const v8i pos = v > zero;
                        v = (v8)(((v8i)v & pos) | ((v8i)(v * slope) & ~pos));
                    }
                    st8(dst + ((size_t)(oy + a) * W + ox + c) * CPU_BLK, v);
                }
        }
    }
}

sp_status cpu_wino_conv(const float *u, int m, const nn_layer *l, const nn_tensor *x, nn_tensor *y, int with_bias,
                        nn_act act, float *scratch, int threads) {
    if (!cpu_wino_shape_ok(l, x, y) || (m != 2 && m != 4))
        return sp_err(SP_ERR_INVALID, "Winograd F(%dx%d,3x3) convolution of this shape", m, m);
    const int A2 = (m + 2) * (m + 2), CI = blocks8(l->cin) * CPU_BLK, CO = blocks8(l->cout) * CPU_BLK;
    const int Tmax = tile_block_max(m, CI, CO);
    const long total = tiles_of(x, m);
    /* Blocks of equal size, a multiple of the thread count where there are enough tiles. */
    long nblocks = (total + Tmax - 1) / Tmax;
    if (nblocks < total / 16 && nblocks % threads) nblocks += threads - nblocks % threads;
    const int T = (int)((total + nblocks - 1) / nblocks);
    nblocks = (total + T - 1) / T;
    /* plane strides and scratch layout as sized by cpu_wino_scratch_bytes (for Tmax >= T) */
    const size_t vs = PLANE(Tmax, CI), ms = PLANE(Tmax, CO), per = A2 * (vs + ms);
    const float *bias = with_bias ? l->b : NULL;
    int bad = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (long b = 0; b < nblocks; b++) {
        float *V = scratch + (size_t)omp_get_thread_num() * per, *M = V + A2 * vs;
        const int t0 = (int)(b * T), nt = (int)(total - t0 < T ? total - t0 : T);
        input_transform(m, x, t0, nt, vs, CI, V);
        for (int xi = 0; xi < A2; xi++)
            if (dnnl_sgemm('N', 'N', nt, CO, CI, 1.0f, V + xi * vs, CI, u + (size_t)xi * CI * CO, CO, 0.0f, M + xi * ms,
                           CO) != dnnl_success) {
#pragma omp atomic write
                bad = 1;
            }
        output_transform(m, M, t0, nt, ms, CO, bias, l->cout, act, y);
    }
    if (bad) return sp_err(SP_ERR_BACKEND, "oneDNN sgemm failed in a Winograd convolution %d->%d", l->cin, l->cout);
    return SP_OK;
}
