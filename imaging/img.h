/* img.h: decoding, encoding and resampling of 8-bit images (JPEG through libjpeg-turbo, PNG through libpng, WebP through libwebp). */
#ifndef IMG_H
#define IMG_H

#include "common/sp.h"

typedef enum { IMG_FMT_UNKNOWN = 0, IMG_FMT_JPEG, IMG_FMT_PNG, IMG_FMT_WEBP } img_format;

/* An 8-bit image, interleaved: px[(y*w + x)*c + ch], c = 1 (grey), 3 (RGB) or 4 (RGBA). */
typedef struct {
    int w, h, c;
    uint8_t *px; /* malloc'ed; owned by the struct, released by img_free */
} img_u8;

/* Identifies the format from the first bytes (a WebP: "RIFF", 4 bytes, "WEBP"); IMG_FMT_UNKNOWN when
 * not a JPEG, PNG or WebP. */
img_format img_sniff(const uint8_t *buf, size_t len);

/* "jpeg"/"png"/"webp" and the MIME type ("image/jpeg", "image/png", "image/webp"). */
const char *img_format_name(img_format f);
const char *img_format_mime(img_format f);
/* Parses "jpeg", "jpg", "png" or "webp" (any case); IMG_FMT_UNKNOWN otherwise. */
img_format img_format_parse(const char *s);

/* Reads only the header: format, width and height (before EXIF orientation; a WebP's canvas, also
 * of an animated one), so that a pixel limit can be checked before any decoding. Fails with
 * SP_ERR_FORMAT on bytes that are not a JPEG, PNG or WebP header (truncated, corrupt, sizes out
 * of range). */
sp_status img_probe(const uint8_t *buf, size_t len, img_format *fmt, int *w, int *h);

/* Decodes a JPEG, PNG or still WebP held in memory. Applies the EXIF orientation of a JPEG. Keeps
 * an alpha channel (c = 4), gives grey as c = 1 and everything else as c = 3. Refuses, before
 * allocating, an image of more than `max_pixels` pixels (SP_ERR_LIMIT; 0 = no limit). Truncated
 * or corrupt data is SP_ERR_FORMAT; an animated WebP is SP_ERR_UNSUPPORTED (not cut to its first
 * frame). On success `out` owns new pixels; on failure it is zeroed. */
sp_status img_decode(const uint8_t *buf, size_t len, long max_pixels, img_u8 *out, img_format *fmt);

/* Reads and decodes a file; errors name the path. */
sp_status img_load(const char *path, long max_pixels, img_u8 *out);

/* Encodes to JPEG (quality 1-100; alpha dropped), PNG (quality ignored) or WebP (lossy at quality
 * 1-99, lossless at 100 with the RGB of transparent pixels kept, so every pixel is bit-exact as in
 * PNG; alpha kept losslessly in both; grey written as RGB; at most 16383x16383). `*out` is
 * malloc'ed; the caller frees it. */
sp_status img_encode(const img_u8 *im, img_format fmt, int quality, uint8_t **out, size_t *len);

/* Encodes and writes to `path`, the format taken from its extension (.png, .jpg, .jpeg, .webp). */
sp_status img_save(const img_u8 *im, const char *path, int quality);

/* Allocates a w x h x c image (zeroed). */
sp_status img_alloc(img_u8 *im, int w, int h, int c);

/* Releases the pixels and zeroes the struct; safe on a zeroed struct. */
void img_free(img_u8 *im);

/* Converts `src` to `c` channels (1, 3 or 4) into a new image `out`: grey is replicated, RGB to
 * grey is the Rec. 601 luma (299R+587G+114B)/1000 rounded, alpha is dropped or set to 255. */
sp_status img_convert(const img_u8 *src, int c, img_u8 *out);

/* Resamples the rectangle (x0,y0,cw,ch) of `src` to w x h with area averaging when shrinking and
 * bilinear interpolation when enlarging; `out` gets src's channel count. */
sp_status img_resize_rect(const img_u8 *src, int x0, int y0, int cw, int ch, int w, int h, img_u8 *out);

/* Centre-crops `src` to a square and resizes it to s x s RGB (alpha and grey converted). */
sp_status img_square(const img_u8 *src, int s, img_u8 *out);

/* Converts an s x s RGB image to planar float (3,s,s) in [0,1] (c = 1 or 4 converted). */
void img_to_chw(const img_u8 *im, float *chw);

/* Converts planar float (3,h,w) in [0,1] to interleaved RGB bytes (rounded, clamped); `im`
 * must be allocated with c = 3 or 4 (alpha left as it is). */
void img_from_chw(const float *chw, img_u8 *im);

#endif
