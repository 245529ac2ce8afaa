/* qdimd.h: the QD-IMD irregular hole generator (Iskakov 2018, Algorithm 1) drawing Quick Draw strokes. */
#ifndef QDIMD_H
#define QDIMD_H

#include "common/sp.h"

/* One mask (Algorithm 1): n ~ N(strokes_mean, strokes_std) rounded, at least 1; n strokes, each
 * a random stroke of a random drawing (or the whole drawing with whole_drawings), drawn as
 * thick polylines with a width ~ U(width_min, width_max) px on a size x size canvas (Quick Draw's
 * 0-255 coordinates scaled by size/256); the canvas is upscaled by ~ U(scale_min, scale_max)
 * about its centre and centre-cropped back to size x size; the union of the lines is the hole.
 * A mask that comes out empty is drawn again from the same random stream. The upscale is done
 * geometrically (points and widths scaled) rather than by resampling a raster, so the result
 * is already binary.
 *
 * The random stream of mask `index` depends only on (seed, index), through splitmix64 and
 * xoshiro256**, and every step uses IEEE double arithmetic with a logarithm of our own, so a
 * (seed, index) gives the same mask on every machine and in training/qdimd.py. */
typedef struct {
    int size;                       /* output side in pixels; default 256 */
    uint64_t seed;                  /* default 0 */
    double strokes_mean, strokes_std; /* default 4, 2 */
    double width_min, width_max;    /* line width in px; default 5, 15 */
    double scale_min, scale_max;    /* upscale before the centre crop; default 1.0, 1.5 */
    int whole_drawings;             /* 0 (default, as QD-IMD): one stroke per draw; 1: whole drawings */
} qd_params;

/* Fills `p` with the defaults above. */
void qd_params_default(qd_params *p);

/* SP_OK when every field is usable (size 8-8192, 0 <= std, 0 <= mean <= 1000, 0 < width_min <=
 * width_max <= 1000, 0 < scale_min <= scale_max <= 100); otherwise SP_ERR_INVALID naming the field. */
sp_status qd_params_check(const qd_params *p);

/* Quick Draw drawings loaded in memory: an opaque handle, read-only after loading. */
typedef struct qd_source qd_source;

/* Loads every *.ndjson file of `dir` (in byte order of the names; each line one JSON object with
 * "drawing": [[[x...],[y...]], ...]). Empty strokes are dropped. Errors name the file and line.
 * On success `*out` is owned by the caller (qd_source_free). */
sp_status qd_source_new(const char *dir, qd_source **out);

/* Releases the source; NULL is a no-op. */
void qd_source_free(qd_source *s);

/* Numbers of drawings and strokes loaded. */
long qd_source_drawings(const qd_source *s);
long qd_source_strokes(const qd_source *s);

/* Writes mask number `index` into `mask_out` (size*size bytes, row-major; 255 = hole, 0 = keep).
 * Deterministic in (params, source contents, index). SP_ERR_INVALID on bad params or an empty
 * source. */
sp_status qd_generate(const qd_params *p, qd_source *src, uint64_t index, uint8_t *mask_out);

/* Fraction of nonzero bytes among n. */
double qd_hole_ratio(const uint8_t *mask, size_t n);

/* The random stream (exposed for tests and for checking the Python port). */
typedef struct {
    uint64_t s[4];
} qd_rng;

/* Seeds the stream of mask `index` under `seed`. */
void qd_rng_init(qd_rng *r, uint64_t seed, uint64_t index);
/* Next 64 random bits (xoshiro256**). */
uint64_t qd_rng_next(qd_rng *r);
/* Uniform double in [0, 1) with 53 random bits. */
double qd_rng_uniform(qd_rng *r);
/* Uniform integer in [0, n), n >= 1, without modulo bias. */
uint64_t qd_rng_below(qd_rng *r, uint64_t n);
/* Standard normal (Marsaglia's polar method; the second value is discarded). */
double qd_rng_normal(qd_rng *r);
/* Natural logarithm of x > 0 from + - * / only (so it is the same everywhere); |error| < 1e-15. */
double qd_log(double x);

/* Draws a thick segment into a size x size mask: every pixel whose centre lies within `radius`
 * of the segment (a, b) in pixel units (pixel (i, j) has its centre at (i+0.5, j+0.5)) is set to 255. */
void qd_draw_segment(uint8_t *mask, int size, double ax, double ay, double bx, double by, double radius);

#endif
