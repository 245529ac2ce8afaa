/* telea.h: inpainting by the fast marching method of Telea (2004), the service's network-free `telea` method. */
#ifndef TELEA_H
#define TELEA_H

#include "imaging/img.h"

/* The radius OpenCV's cv2.inpaint examples use, and our default. */
#define TELEA_DEFAULT_RADIUS 5

/* Fills the hole of `im` in place (A. Telea, "An Image Inpainting Technique Based on the Fast
 * Marching Method", J. Graphics Tools 9(1), 2004). `hole` has w*h bytes, nonzero = hole.
 *
 * Pixels are filled in order of their distance T to the hole's boundary (fast marching with a
 * narrow band on a binary heap; T is also computed outside the hole, negative, as far as the
 * radius reaches). Each pixel p is the weighted mean, over the known and already filled pixels
 * q within `radius`, of the first-order estimates I(q) + grad I(q).(p - q), weighted by
 * |dir| * dst * lev with dir = (p - q)/|p - q| . grad T(p), dst = 1/|p - q|^2 and
 * lev = 1/(1 + |T(p) - T(q)|). Two departures from the paper's letter keep the scheme stable
 * (taken literally, the estimates' errors feed the next pixels' gradients and grow into
 * streaks): grad I of known pixels is slope-limited (minmod), filled pixels carry the weighted
 * mean of their neighbours' gradients instead of differences of filled values, and each
 * estimate is clamped to the range of the values it averages.
 *
 * Works on c = 1, 3 or 4 (alpha left as it is); pixels outside the hole are not changed and the
 * values under the hole are never read. SP_ERR_INVALID for a bad image, radius (1-64) or a hole
 * covering the whole image; SP_ERR_NOMEM when the work buffers cannot be had. */
sp_status telea_inpaint(img_u8 *im, const uint8_t *hole, int radius);

/* Flags of telea_inpaint_ex. TELEA_NO_GRADIENT drops the gradient term: plain weighted means of
 * I(q), close to what OpenCV's cv2.inpaint(INPAINT_TELEA) computes (tests/it_telea.sh).
 * TELEA_FULL_FRAME marches over the whole image even when the hole is small (the default works
 * in a window around the hole, with the same result bit for bit; the flag is for that test). */
enum { TELEA_NO_GRADIENT = 1, TELEA_FULL_FRAME = 2 };

/* telea_inpaint with flags (0 = telea_inpaint). */
sp_status telea_inpaint_ex(img_u8 *im, const uint8_t *hole, int radius, int flags);

/* telea_inpaint_ex that gives up once sp_now() passes `deadline` (0 = never): SP_ERR_TIMEOUT,
 * with the image partly filled. The work buffers take about 45 bytes per pixel of the window
 * around the hole (the hole's bounding box plus 2.5 radius + 5 pixels on each side; the whole
 * image when that window would be over three quarters of it). */
sp_status telea_inpaint_until(img_u8 *im, const uint8_t *hole, int radius, int flags, double deadline);

/* The chessboard distance of every pixel of a w x h mask (nonzero = hole) to the nearest known
 * pixel, by the two-pass chamfer transform: dist[i] = 0 for a known pixel, 1 for a hole pixel
 * touching one (8-neighbourhood), and so on; pixels outside the image count as hole. */
void telea_hole_distance(const uint8_t *hole, int w, int h, int *dist);

/* The border blend of a network's fill with Telea's (the weights files' `telea_blend`,
 * docs/weights.md). `out` holds n composited crops (n,3,s,s) in [0,1], known pixels being
 * the image's own; `mask` (n,1,s,s) is 1 = keep, 0 = hole. Each hole pixel at chessboard
 * distance d from the nearest known pixel becomes b*T + (1-b)*clamp(out, 0, 1) with
 * b = blend[min(d, nblend) - 1] and T Telea's fill (telea_inpaint, `radius`) of the known pixels
 * rounded to 8 bits. Known pixels, crops without a hole and crops without a known pixel are left
 * as they are; nblend = 0 does nothing. The crops run in parallel (OpenMP, one per thread).
 * SP_ERR_INVALID for bad arguments (radius outside 1-64 included), SP_ERR_NOMEM. */
sp_status telea_blend(int n, int s, const float *mask, const float *blend, int nblend, int radius, float *out);

/* telea_blend in two steps, so that Telea can run while the networks do (it reads only the
 * known pixels): telea_blend_fill computes, for n crops img (n,3,s,s) in [0,1] with mask
 * (n,1,s,s), Telea's fill `fill` (n,s,s,3) and the hole distance `dist` (n,s,s; 0 for known
 * pixels and for every pixel of a crop without a hole or without a known pixel), one crop per
 * OpenMP thread (`threads`, 0 = OpenMP's default). Errors as telea_blend's. */
sp_status telea_blend_fill(int n, int s, const float *img, const float *mask, int radius, int threads, uint8_t *fill,
                           int *dist);
/* Then blends the composites `out` (n,3,s,s) where dist > 0, as telea_blend does. */
void telea_blend_apply(int n, int s, const float *blend, int nblend, const uint8_t *fill, const int *dist, float *out);

/* The blend at the image's own resolution (the weights files' `telea_blend_image`,
 * docs/weights.md#telea_blend_image), after the crops are pasted back: `im` (c = 3 or 4) holds
 * the pasted answer and `hole` (w*h bytes, nonzero = hole) its hole map. Each hole pixel at
 * chessboard distance d (in image pixels, as telea_hole_distance counts it) from the nearest
 * known pixel becomes round(b*T + (1-b)*im) in each colour channel, b = blend[min(d, nblend) - 1],
 * T being telea_inpaint_until's fill (`radius`) of the known pixels, the same pixels as the
 * telea method answers. Known pixels and the alpha channel are not changed; nblend = 0, a hole
 * map without a hole or without a known pixel do nothing. Extra memory: c bytes per hole pixel
 * and 5 bytes per pixel of the holes' bounding box (its hole map and distances), besides Telea's own. Gives up once sp_now()
 * passes `deadline` (0 = never) with SP_ERR_TIMEOUT and `im` as it was. SP_ERR_INVALID for bad
 * arguments (radius 1-64, nblend 0-64), SP_ERR_NOMEM. */
sp_status telea_image_blend(img_u8 *im, const uint8_t *hole, const float *blend, int nblend, int radius,
                            double deadline);

#endif
