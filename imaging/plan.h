/* imaging/plan.h: fitting an image of any size to the networks' working size (docs/http-api.md): hole regions, crops, scaling, pasting back. */
#ifndef IMG_PLAN_H
#define IMG_PLAN_H

#include "imaging/img.h"

/* One working crop: the rectangle of the image it covers (scaled to s x s for the networks) and
 * the box of hole pixels it owns, the only pixels it writes back. Owned boxes of a plan are
 * disjoint and together hold every hole pixel. */
typedef struct {
    int x0, y0, w, h;        /* crop rectangle in the image */
    int bx0, by0, bx1, by1;  /* owned box, [bx0,bx1) x [by0,by1), inside the crop */
} img_crop;

typedef struct {
    int s;           /* working size */
    int n;           /* number of crops */
    img_crop *crops; /* malloc'ed */
    int regions;     /* connected hole regions found (8-connectivity); -1 when not counted (resize,
                      * an image at the working size, or more than IMG_PLAN_MAX_REGIONS) */
    int tile;        /* 0 when the crops follow the hole regions; else the side, in image pixels,
                      * of the grid cells whose holes each crop owns (too many regions for the budget) */
} img_plan;

#define IMG_PLAN_MAX_REGIONS 4096 /* beyond, the holes are planned on a grid rather than by region */

/* Builds a hole map from a decoded mask: 1 where the luminance (times alpha, for RGBA) is above
 * 127, else 0. `hole` has mask->w * mask->h bytes. Returns the number of hole pixels. */
long img_hole_map(const img_u8 *mask, uint8_t *hole);

/* Builds a hole map from an image's own alpha channel, the images/edits convention: 1 where the
 * alpha is 0 (fully transparent), else 0. `hole` has im->w * im->h bytes. Returns the number of
 * hole pixels, or -1 (hole untouched) when the image has no alpha channel (c != 4). */
long img_hole_map_alpha(const img_u8 *im, uint8_t *hole);

/* The hole map of a mask of any size scaled to w x h: the mask is resampled as img_resize_rect
 * does (area averaging when shrinking), then thresholded as img_hole_map does. `hole` has w * h
 * bytes; *holes (when non-NULL) gets the number of hole pixels. */
sp_status img_hole_map_scaled(const img_u8 *mask, int w, int h, uint8_t *hole, long *holes);

/* How an image larger than the working size is fitted (inpaint.strategy of the configuration). */
typedef enum { IMG_PLAN_CROP = 0, IMG_PLAN_RESIZE } img_plan_strategy;

/* Plans the crops for a w x h image whose hole map is `hole` (w*h bytes, nonzero = hole; at least
 * one hole pixel). A s x s image is one crop as it is. Otherwise `resize` makes one crop of the
 * whole image; `crop` groups the 8-connected hole regions whose boxes overlap, or come within
 * 2*margin of each other while the group with its margins still fits s x s, and gives each group
 * a square of at least s (when the image allows) around its box plus `margin`, non-square only
 * where the image is too narrow. The crops, each s x s pixels for
 * the networks, may take at most `max_work_pixels` working pixels together (at least one crop):
 * when the regions need more (or there are over IMG_PLAN_MAX_REGIONS of them), the holes are
 * planned on a grid instead, each cell's holes owned by one crop, with cells of s - 2*margin
 * pixels (crops at scale 1) doubled until the crops fit the budget; a many-small-defects photo
 * thus keeps crops near full resolution. `out` owns malloc'ed crops (img_plan_free). */
sp_status img_plan_make(const uint8_t *hole, int w, int h, int s, img_plan_strategy strategy, int margin,
                        long max_work_pixels, img_plan *out);
void img_plan_free(img_plan *p);

/* The networks' input for crop `i`: `chw` (3,s,s) in [0,1] and `mask` (1,s,s), 1 = keep,
 * 0 = hole. A crop at scale 1 is copied; otherwise the image is resampled (img_resize_rect) and a
 * working pixel is a hole when any image pixel that could contribute to it is one, so no hole
 * content leaks into the known pixels. */
sp_status img_plan_input(const img_plan *p, int i, const img_u8 *im, const uint8_t *hole, float *chw, float *mask);

/* Writes crop `i`'s result `chw` (3,s,s) back: scaled to the crop's size, then copied into the
 * hole pixels of the owned box of `im` (c = 3 or 4; alpha untouched). No other pixel changes. */
sp_status img_plan_paste(const img_plan *p, int i, const float *chw, img_u8 *im, const uint8_t *hole);

#endif
