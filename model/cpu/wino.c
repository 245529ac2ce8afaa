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

/* Measured on a 2-core AVX2 EPYC (the layer table of `semipaint bench`: layer shapes of the three networks,
 * direct against Winograd, interleaved): Winograd takes 0.65-0.85x the time once both channel
 * counts reach 128 and there are at least 128 tiles per thread (32x32 pixels per thread). With
 * 64 channels the transformed tiles (4x the pixels) make the layer memory-bound and it loses or
 * ties; with fewer tiles sgemm's rows are too short and threads idle. */
int cpu_wino_pays(const nn_layer *l, const nn_tensor *x, int threads) {
    if (l->cin < 128 || l->cout < 128) return 0;
    const long tiles = (long)x->n * ((x->h + 1) / 2) * ((x->w + 1) / 2);
    return tiles >= 128L * threads;
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
    return (size_t)threads * WT * tile_block(CI, CO) * (CI + CO) * sizeof(float);
}

/* V[xi][i][cb*8 + j] for the tiles [t0, t0+nt) of the flattened (image, tile row, tile column) index. */
/* Compiled for AVX2 and for baseline x86-64, picked at load time. */
__attribute__((target_clones("avx2", "default"))) static void input_transform(const nn_tensor *x, int t0, int nt, int T, int CI, float *V) {
    const int H = x->h, W = x->w, TW = (W + 1) / 2, NT = ((H + 1) / 2) * TW, CB = CI / CPU_BLK;
    const size_t plane = (size_t)H * W * CPU_BLK;
    for (int i = 0; i < nt; i++) {
        const int g = t0 + i, img = g / NT, r = g % NT, y0 = (r / TW) * 2 - 1, x0 = (r % TW) * 2 - 1;
        const int inner = y0 >= 0 && x0 >= 0 && y0 + 4 <= H && x0 + 4 <= W;
        for (int cb = 0; cb < CB; cb++) {
            const float *src = (const float *)x->data + ((size_t)img * CB + cb) * plane;
            float d[4][4][CPU_BLK];
            if (inner) {
                for (int a = 0; a < 4; a++)
                    memcpy(d[a], src + ((size_t)(y0 + a) * W + x0) * CPU_BLK, sizeof d[a]);
            } else {
                for (int a = 0; a < 4; a++)
                    for (int b = 0; b < 4; b++) {
                        const int yy = y0 + a, xx = x0 + b;
                        if (yy >= 0 && yy < H && xx >= 0 && xx < W)
                            memcpy(d[a][b], src + ((size_t)yy * W + xx) * CPU_BLK, sizeof d[a][b]);
                        else
                            memset(d[a][b], 0, sizeof d[a][b]);
                    }
            }
            float t[4][4][CPU_BLK]; /* B^T d */
            for (int b = 0; b < 4; b++)
                for (int j = 0; j < CPU_BLK; j++) {
                    t[0][b][j] = d[0][b][j] - d[2][b][j];
                    t[1][b][j] = d[1][b][j] + d[2][b][j];
                    t[2][b][j] = d[2][b][j] - d[1][b][j];
                    t[3][b][j] = d[1][b][j] - d[3][b][j];
                }
            float *v = V + (size_t)i * CI + cb * CPU_BLK;
            const size_t xs = (size_t)T * CI; /* distance between consecutive xi */
            for (int a = 0; a < 4; a++)
                for (int j = 0; j < CPU_BLK; j++) {
                    v[(a * 4 + 0) * xs + j] = t[a][0][j] - t[a][2][j];
                    v[(a * 4 + 1) * xs + j] = t[a][1][j] + t[a][2][j];
                    v[(a * 4 + 2) * xs + j] = t[a][2][j] - t[a][1][j];
                    v[(a * 4 + 3) * xs + j] = t[a][1][j] - t[a][3][j];
                }
        }
    }
}

static inline float act_of(float v, nn_act act) {
    if (act == NN_ACT_RELU) return v > 0 ? v : 0;
    if (act == NN_ACT_LRELU) return v > 0 ? v : v * NN_LRELU_SLOPE;
    return v;
}

/* y's pixels of tiles [t0, t0+nt) from the products M[xi][i][co]: A^T m A, bias, activation. */
__attribute__((target_clones("avx2", "default"))) static void output_transform(const float *M, int t0, int nt, int T, int CO, const float *bias, int cout, nn_act act,
                             nn_tensor *y) {
    const int H = y->h, W = y->w, TW = (W + 1) / 2, NT = ((H + 1) / 2) * TW, CB = CO / CPU_BLK;
    const size_t plane = (size_t)H * W * CPU_BLK, xs = (size_t)T * CO;
    for (int i = 0; i < nt; i++) {
        const int g = t0 + i, img = g / NT, r = g % NT, oy = (r / TW) * 2, ox = (r % TW) * 2;
        for (int cb = 0; cb < CB; cb++) {
            const float *m = M + (size_t)i * CO + cb * CPU_BLK;
            float b[CPU_BLK], s[4][2][CPU_BLK], o[2][2][CPU_BLK];
            for (int j = 0; j < CPU_BLK; j++) b[j] = bias && cb * CPU_BLK + j < cout ? bias[cb * CPU_BLK + j] : 0.0f;
            for (int a = 0; a < 4; a++)
                for (int j = 0; j < CPU_BLK; j++) {
                    const float m0 = m[(a * 4 + 0) * xs + j], m1 = m[(a * 4 + 1) * xs + j];
                    const float m2 = m[(a * 4 + 2) * xs + j], m3 = m[(a * 4 + 3) * xs + j];
                    s[a][0][j] = m0 + m1 + m2;
                    s[a][1][j] = m1 - m2 - m3;
                }
            for (int c = 0; c < 2; c++)
                for (int j = 0; j < CPU_BLK; j++) {
                    o[0][c][j] = act_of(s[0][c][j] + s[1][c][j] + s[2][c][j] + b[j], act);
                    o[1][c][j] = act_of(s[1][c][j] - s[2][c][j] - s[3][c][j] + b[j], act);
                }
            float *dst = (float *)y->data + ((size_t)img * CB + cb) * plane;
            for (int a = 0; a < 2 && oy + a < H; a++)
                for (int c = 0; c < 2 && ox + c < W; c++)
                    memcpy(dst + ((size_t)(oy + a) * W + ox + c) * CPU_BLK, o[a][c], sizeof o[a][c]);
        }
    }
}

sp_status cpu_wino_conv(const float *u, const nn_layer *l, const nn_tensor *x, nn_tensor *y, int with_bias,
                        nn_act act, float *scratch, int threads) {
    if (!cpu_wino_shape_ok(l, x, y)) return sp_err(SP_ERR_INVALID, "Winograd convolution of this shape");
    const int CI = blocks8(l->cin) * CPU_BLK, CO = blocks8(l->cout) * CPU_BLK, T = tile_block(CI, CO);
    const int total = x->n * ((x->h + 1) / 2) * ((x->w + 1) / 2), nblocks = (total + T - 1) / T;
    const size_t per = (size_t)WT * T * (CI + CO);
    const float *bias = with_bias ? l->b : NULL;
    int bad = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int b = 0; b < nblocks; b++) {
        float *V = scratch + (size_t)omp_get_thread_num() * per, *M = V + (size_t)WT * T * CI;
        const int t0 = b * T, nt = total - t0 < T ? total - t0 : T;
        input_transform(x, t0, nt, T, CI, V);
        for (int xi = 0; xi < WT; xi++)
            if (dnnl_sgemm('N', 'N', nt, CO, CI, 1.0f, V + (size_t)xi * T * CI, CI, u + (size_t)xi * CI * CO, CO, 0.0f,
                           M + (size_t)xi * T * CO, CO) != dnnl_success) {
#pragma omp atomic write
                bad = 1;
            }
        output_transform(M, t0, nt, T, CO, bias, l->cout, act, y);
    }
    if (bad) return sp_err(SP_ERR_BACKEND, "oneDNN sgemm failed in a Winograd convolution %d->%d", l->cin, l->cout);
    return SP_OK;
}
