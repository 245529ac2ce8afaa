/* img.c: JPEG (TurboJPEG), PNG (libpng) and WebP (libwebp) decoding and encoding, EXIF orientation, channel conversion and resampling. */
#include "imaging/img.h"

#include <libdeflate.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <turbojpeg.h>
#include <webp/decode.h>
#include <webp/encode.h>
#include <zlib.h>

/* The PNGs we write: the server encodes one per request, so speed matters more than the last
 * few percent of size. Rows use the Up filter. Up to IMG_PNG_WHOLE_MAX bytes of filtered rows,
 * the whole stream is deflated in one call by libdeflate at level 1: on six 256x256 CelebA-HQ
 * faces and the server benchmark's pictures that took 1.7-2.6 ms against 3.9-6.0 ms for libpng
 * with zlib level 2 and the Up filter (18-25 ms for libpng's defaults, level 6 with adaptive
 * filters), for files between 6% smaller and 2% larger. Larger images go through libpng row by
 * row (zlib level 2), which needs no whole copy of the filtered rows and of the output. Decoding
 * takes the same one-pass route for the common kinds of PNG (png_decode_whole). */
#define IMG_PNG_DEFLATE_LEVEL 1
#define IMG_PNG_WHOLE_MAX ((size_t)16 << 20)
#define IMG_PNG_LEVEL 2
#define IMG_PNG_FILTER PNG_FILTER_UP

static const uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }

img_format img_sniff(const uint8_t *buf, size_t len) {
    if (!buf) return IMG_FMT_UNKNOWN;
    if (len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF) return IMG_FMT_JPEG;
    if (len >= 8 && !memcmp(buf, png_signature, 8)) return IMG_FMT_PNG;
    if (len >= 12 && !memcmp(buf, "RIFF", 4) && !memcmp(buf + 8, "WEBP", 4)) return IMG_FMT_WEBP;
    return IMG_FMT_UNKNOWN;
}

const char *img_format_name(img_format f) {
    switch (f) {
    case IMG_FMT_JPEG: return "jpeg";
    case IMG_FMT_PNG: return "png";
    case IMG_FMT_WEBP: return "webp";
    default: return "unknown";
    }
}

const char *img_format_mime(img_format f) {
    switch (f) {
    case IMG_FMT_JPEG: return "image/jpeg";
    case IMG_FMT_PNG: return "image/png";
    case IMG_FMT_WEBP: return "image/webp";
    default: return "application/octet-stream";
    }
}

img_format img_format_parse(const char *s) {
    if (!s) return IMG_FMT_UNKNOWN;
    if (!strcasecmp(s, "jpeg") || !strcasecmp(s, "jpg")) return IMG_FMT_JPEG;
    if (!strcasecmp(s, "png")) return IMG_FMT_PNG;
    if (!strcasecmp(s, "webp")) return IMG_FMT_WEBP;
    return IMG_FMT_UNKNOWN;
}

/* ---- headers ---- */

/* Reads the IHDR chunk that must follow the PNG signature, checking its length, type and CRC. */
static sp_status png_header(const uint8_t *buf, size_t len, int *w, int *h) {
    if (len < 33) return sp_err(SP_ERR_FORMAT, "png: truncated header (%zu bytes, IHDR needs 33)", len);
    if (be32(buf + 8) != 13 || memcmp(buf + 12, "IHDR", 4))
        return sp_err(SP_ERR_FORMAT, "png: the first chunk is not a 13-byte IHDR");
    uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf + 12, 17);
    if (crc != be32(buf + 29)) return sp_err(SP_ERR_FORMAT, "png: IHDR CRC mismatch");
    uint32_t pw = be32(buf + 16), ph = be32(buf + 20);
    if (pw == 0 || ph == 0 || pw > 0x7fffffffu || ph > 0x7fffffffu)
        return sp_err(SP_ERR_FORMAT, "png: invalid dimensions %ux%u", (unsigned)pw, (unsigned)ph);
    *w = (int)pw;
    *h = (int)ph;
    return SP_OK;
}

static sp_status jpeg_header(const uint8_t *buf, size_t len, int *w, int *h, int *colorspace) {
    tjhandle tj = tjInitDecompress();
    if (!tj) return sp_err(SP_ERR_NOMEM, "jpeg: tjInitDecompress: %s", tjGetErrorStr2(NULL));
    int subsamp = 0, cs = 0;
    sp_status st = SP_OK;
    if (tjDecompressHeader3(tj, buf, (unsigned long)len, w, h, &subsamp, &cs))
        st = sp_err(SP_ERR_FORMAT, "jpeg header: %s", tjGetErrorStr2(tj));
    else if (*w <= 0 || *h <= 0)
        st = sp_err(SP_ERR_FORMAT, "jpeg header: invalid dimensions %dx%d", *w, *h);
    if (colorspace) *colorspace = cs;
    tjDestroy(tj);
    return st;
}

/* The features of a WebP from its RIFF header and first chunks (VP8, VP8L or VP8X), without
 * decoding: canvas size, alpha, animation. */
static sp_status webp_header(const uint8_t *buf, size_t len, WebPBitstreamFeatures *ft) {
    VP8StatusCode vs = WebPGetFeatures(buf, len, ft);
    if (vs == VP8_STATUS_NOT_ENOUGH_DATA)
        return sp_err(SP_ERR_FORMAT, "webp: truncated header (%zu bytes)", len);
    if (vs != VP8_STATUS_OK) return sp_err(SP_ERR_FORMAT, "webp: invalid header (libwebp status %d)", (int)vs);
    if (ft->width <= 0 || ft->height <= 0 || ft->width > 16384 || ft->height > 16384) /* 14 bits of size - 1 */
        return sp_err(SP_ERR_FORMAT, "webp: invalid dimensions %dx%d", ft->width, ft->height);
    return SP_OK;
}

sp_status img_probe(const uint8_t *buf, size_t len, img_format *fmt, int *w, int *h) {
    int pw = 0, ph = 0;
    img_format f = img_sniff(buf, len);
    sp_status st;
    if (f == IMG_FMT_PNG)
        st = png_header(buf, len, &pw, &ph);
    else if (f == IMG_FMT_JPEG)
        st = jpeg_header(buf, len, &pw, &ph, NULL);
    else if (f == IMG_FMT_WEBP) {
        WebPBitstreamFeatures ft;
        if (!(st = webp_header(buf, len, &ft))) pw = ft.width, ph = ft.height;
    } else
        st = sp_err(SP_ERR_FORMAT, "not a JPEG, PNG or WebP image (%zu bytes)", len);
    if (fmt) *fmt = st ? IMG_FMT_UNKNOWN : f;
    if (w) *w = st ? 0 : pw;
    if (h) *h = st ? 0 : ph;
    return st;
}

static sp_status check_pixels(const char *what, int w, int h, long max_pixels) {
    if (max_pixels > 0 && (long long)w * h > (long long)max_pixels)
        return sp_err(SP_ERR_LIMIT, "%s: %dx%d = %lld pixels is over the limit of %ld", what, w, h, (long long)w * h,
                      max_pixels);
    return SP_OK;
}

/* ---- allocation and conversion ---- */

sp_status img_alloc(img_u8 *im, int w, int h, int c) {
    memset(im, 0, sizeof *im);
    if (w <= 0 || h <= 0 || (c != 1 && c != 3 && c != 4))
        return sp_err(SP_ERR_INVALID, "img_alloc: invalid shape %dx%dx%d", w, h, c);
    size_t n = (size_t)w * (size_t)h;
    if (n / (size_t)w != (size_t)h || n > SIZE_MAX / (size_t)c)
        return sp_err(SP_ERR_LIMIT, "img_alloc: %dx%dx%d does not fit in memory", w, h, c);
    im->px = calloc(n * (size_t)c, 1);
    if (!im->px) return sp_err(SP_ERR_NOMEM, "img_alloc: out of memory for %dx%dx%d", w, h, c);
    im->w = w;
    im->h = h;
    im->c = c;
    return SP_OK;
}

void img_free(img_u8 *im) {
    if (!im) return;
    free(im->px);
    memset(im, 0, sizeof *im);
}

static int img_valid(const img_u8 *im) {
    return im && im->px && im->w > 0 && im->h > 0 && (im->c == 1 || im->c == 3 || im->c == 4);
}

sp_status img_convert(const img_u8 *src, int c, img_u8 *out) {
    if (!img_valid(src)) {
        if (out) memset(out, 0, sizeof *out);
        return sp_err(SP_ERR_INVALID, "img_convert: invalid source image");
    }
    sp_status st = img_alloc(out, src->w, src->h, c);
    if (st) return st;
    size_t n = (size_t)src->w * src->h;
    const uint8_t *s = src->px;
    uint8_t *d = out->px;
    int sc = src->c;
    for (size_t i = 0; i < n; i++, s += sc, d += c) {
        uint8_t r, g, b, a = 255;
        if (sc == 1) {
            r = g = b = s[0];
        } else {
            r = s[0];
            g = s[1];
            b = s[2];
            if (sc == 4) a = s[3];
        }
        if (c == 1) {
            d[0] = sc == 1 ? s[0] : (uint8_t)((299u * r + 587u * g + 114u * b + 500u) / 1000u);
        } else {
            d[0] = r;
            d[1] = g;
            d[2] = b;
            if (c == 4) d[3] = a;
        }
    }
    return SP_OK;
}

/* ---- JPEG ---- */

static unsigned rd16(const uint8_t *p, int le) { return le ? (unsigned)p[1] << 8 | p[0] : be16(p); }
static uint32_t rd32(const uint8_t *p, int le) {
    return le ? (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0] : be32(p);
}

/* The Orientation tag (0x0112) of IFD0 in a TIFF block of `n` bytes; 0 when absent or invalid. */
static int tiff_orientation(const uint8_t *t, size_t n) {
    if (n < 8) return 0;
    int le;
    if (t[0] == 'I' && t[1] == 'I')
        le = 1;
    else if (t[0] == 'M' && t[1] == 'M')
        le = 0;
    else
        return 0;
    if (rd16(t + 2, le) != 42) return 0;
    uint32_t ifd = rd32(t + 4, le);
    if (ifd > n - 2) return 0;
    unsigned count = rd16(t + ifd, le);
    for (unsigned i = 0; i < count; i++) {
        size_t e = (size_t)ifd + 2 + 12 * (size_t)i;
        if (e + 12 > n) return 0;
        if (rd16(t + e, le) != 0x0112) continue;
        unsigned type = rd16(t + e + 2, le);
        uint32_t cnt = rd32(t + e + 4, le);
        if (type != 3 || cnt != 1) return 0; /* must be one SHORT, stored in the value field */
        unsigned v = rd16(t + e + 8, le);
        return v >= 1 && v <= 8 ? (int)v : 0;
    }
    return 0;
}

/* The EXIF orientation (1-8) from the first APP1 "Exif" segment before the scan; 1 when none. */
static int jpeg_orientation(const uint8_t *b, size_t n) {
    size_t p = 2;
    while (p + 4 <= n) {
        if (b[p] != 0xFF) return 1;
        uint8_t m = b[p + 1];
        if (m == 0xFF) { /* fill byte */
            p++;
            continue;
        }
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) { /* markers without a length */
            p += 2;
            continue;
        }
        if (m == 0xDA || m == 0xD9) return 1; /* start of scan or end of image: no more metadata */
        size_t seg = be16(b + p + 2);
        if (seg < 2 || seg > n - p - 2) return 1;
        if (m == 0xE1 && seg >= 8 && !memcmp(b + p + 4, "Exif\0\0", 6)) {
            int o = tiff_orientation(b + p + 10, seg - 8);
            if (o) return o;
        }
        p += 2 + seg;
    }
    return 1;
}

/* Returns in `out` the displayed image of `in` stored with EXIF orientation `o` (2-8). */
static sp_status apply_orientation(const img_u8 *in, int o, img_u8 *out) {
    int w = in->w, h = in->h, c = in->c;
    int swap = o >= 5;
    sp_status st = img_alloc(out, swap ? h : w, swap ? w : h, c);
    if (st) return st;
    /* Source coordinates of displayed (0,0), and their steps per displayed X and per displayed Y. */
    int x0, y0, xX, yX, xY, yY;
    switch (o) {
    case 2: x0 = w - 1, y0 = 0, xX = -1, yX = 0, xY = 0, yY = 1; break;
    case 3: x0 = w - 1, y0 = h - 1, xX = -1, yX = 0, xY = 0, yY = -1; break;
    case 4: x0 = 0, y0 = h - 1, xX = 1, yX = 0, xY = 0, yY = -1; break;
    case 5: x0 = 0, y0 = 0, xX = 0, yX = 1, xY = 1, yY = 0; break;
    case 6: x0 = 0, y0 = h - 1, xX = 0, yX = -1, xY = 1, yY = 0; break;
    case 7: x0 = w - 1, y0 = h - 1, xX = 0, yX = -1, xY = -1, yY = 0; break;
    case 8: x0 = w - 1, y0 = 0, xX = 0, yX = 1, xY = -1, yY = 0; break;
    default: x0 = 0, y0 = 0, xX = 1, yX = 0, xY = 0, yY = 1; break;
    }
    ptrdiff_t row = (ptrdiff_t)w * c;
    ptrdiff_t stepX = xX * (ptrdiff_t)c + yX * row, stepY = xY * (ptrdiff_t)c + yY * row;
    const uint8_t *base = in->px + (ptrdiff_t)y0 * row + (ptrdiff_t)x0 * c;
    uint8_t *d = out->px;
    for (int Y = 0; Y < out->h; Y++) {
        const uint8_t *s = base + Y * stepY;
        for (int X = 0; X < out->w; X++, s += stepX, d += c) memcpy(d, s, (size_t)c);
    }
    return SP_OK;
}

static sp_status jpeg_decode(const uint8_t *buf, size_t len, long max_pixels, img_u8 *out) {
    int w = 0, h = 0, cs = 0;
    sp_status st = jpeg_header(buf, len, &w, &h, &cs);
    if (st) return st;
    if ((st = check_pixels("jpeg", w, h, max_pixels))) return st;
    int cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
    int c = cs == TJCS_GRAY ? 1 : cmyk ? 4 : 3;
    int pf = c == 1 ? TJPF_GRAY : cmyk ? TJPF_CMYK : TJPF_RGB;
    img_u8 raw = {0}, tmp = {0};
    tjhandle tj = NULL;
    if ((st = img_alloc(&raw, w, h, c))) goto fail;
    tj = tjInitDecompress();
    if (!tj) {
        st = sp_err(SP_ERR_NOMEM, "jpeg: tjInitDecompress: %s", tjGetErrorStr2(NULL));
        goto fail;
    }
    int flags = TJFLAG_STOPONWARNING;
#ifdef TJFLAG_LIMITSCANS
    flags |= TJFLAG_LIMITSCANS;
#endif
    if (tjDecompress2(tj, buf, (unsigned long)len, raw.px, w, 0, h, pf, flags)) {
        st = sp_err(SP_ERR_FORMAT, "jpeg: %s", tjGetErrorStr2(tj));
        goto fail;
    }
    if (cmyk) {
        /* Adobe CMYK JPEGs store inverted ink values, so each byte is the paper left uncovered:
         * R = C'*K'/255 with C' and K' as decoded. */
        if ((st = img_alloc(&tmp, w, h, 3))) goto fail;
        size_t n = (size_t)w * h;
        for (size_t i = 0; i < n; i++) {
            const uint8_t *s = raw.px + 4 * i;
            for (int k = 0; k < 3; k++) tmp.px[3 * i + k] = (uint8_t)((s[k] * s[3] + 127) / 255);
        }
        img_free(&raw);
        raw = tmp;
        memset(&tmp, 0, sizeof tmp);
    }
    int o = jpeg_orientation(buf, len);
    if (o != 1) {
        if ((st = apply_orientation(&raw, o, &tmp))) goto fail;
        img_free(&raw);
        raw = tmp;
        memset(&tmp, 0, sizeof tmp);
    }
    tjDestroy(tj);
    *out = raw;
    return SP_OK;
fail:
    if (tj) tjDestroy(tj);
    img_free(&raw);
    img_free(&tmp);
    return st;
}

static sp_status jpeg_encode(const img_u8 *im, int quality, uint8_t **out, size_t *len) {
    if (quality < 1 || quality > 100) return sp_err(SP_ERR_INVALID, "jpeg: quality %d is not in 1-100", quality);
    if (im->w > 65535 || im->h > 65535)
        return sp_err(SP_ERR_INVALID, "jpeg: %dx%d is larger than JPEG's 65535x65535", im->w, im->h);
    int pf = im->c == 1 ? TJPF_GRAY : im->c == 3 ? TJPF_RGB : TJPF_RGBX;
    int ss = im->c == 1 ? TJSAMP_GRAY : TJSAMP_420;
    unsigned long cap = tjBufSize(im->w, im->h, ss);
    if (cap == (unsigned long)-1) return sp_err(SP_ERR_INVALID, "jpeg: tjBufSize: %s", tjGetErrorStr2(NULL));
    uint8_t *b = malloc(cap);
    if (!b) return sp_err(SP_ERR_NOMEM, "jpeg: out of memory for %lu bytes", cap);
    tjhandle tj = tjInitCompress();
    if (!tj) {
        free(b);
        return sp_err(SP_ERR_NOMEM, "jpeg: tjInitCompress: %s", tjGetErrorStr2(NULL));
    }
    unsigned long size = cap;
    if (tjCompress2(tj, im->px, im->w, 0, im->h, pf, &b, &size, ss, quality, TJFLAG_NOREALLOC)) {
        sp_status st = sp_err(SP_ERR_BACKEND, "jpeg: tjCompress2: %s", tjGetErrorStr2(tj));
        tjDestroy(tj);
        free(b);
        return st;
    }
    tjDestroy(tj);
    uint8_t *shrunk = realloc(b, size);
    *out = shrunk ? shrunk : b;
    *len = size;
    return SP_OK;
}

/* ---- PNG ---- */

/* State of one libpng decode or encode. Everything changed after setjmp lives here, behind a
 * pointer, so that nothing the cleanup needs is an indeterminate local after a longjmp. */
typedef struct {
    png_structp png;
    png_infop info;
    const uint8_t *in; /* decode: input bytes */
    size_t in_len, in_pos;
    uint8_t *buf; /* encode: output bytes */
    size_t len, cap;
    img_u8 im;        /* decode: the pixels */
    png_bytep *rows;
    int nomem;
    char msg[200];
} png_ctx;

static void png_error_cb(png_structp png, png_const_charp msg) {
    png_ctx *x = png_get_error_ptr(png);
    snprintf(x->msg, sizeof x->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_warning_cb(png_structp png, png_const_charp msg) {
    (void)png;
    SP_DEBUG("png warning: %s", msg);
}

static void png_read_cb(png_structp png, png_bytep out, size_t n) {
    png_ctx *x = png_get_io_ptr(png);
    if (n > x->in_len - x->in_pos) png_error(png, "truncated data");
    memcpy(out, x->in + x->in_pos, n);
    x->in_pos += n;
}

/* Runs libpng on x->in; 0 on success with x->im filled, -1 on error (x->msg, x->nomem). */
static int png_decode_run(png_ctx *x) {
    if (setjmp(png_jmpbuf(x->png))) return -1;
    png_set_read_fn(x->png, x, png_read_cb);
    png_read_info(x->png, x->info);
    png_uint_32 w = 0, h = 0;
    int depth = 0, ct = 0;
    png_get_IHDR(x->png, x->info, &w, &h, &depth, &ct, NULL, NULL, NULL);
    int trns = png_get_valid(x->png, x->info, PNG_INFO_tRNS) != 0;
    int grey = !(ct & PNG_COLOR_MASK_COLOR);
    int alpha = (ct & PNG_COLOR_MASK_ALPHA) || trns;
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(x->png);
    if (grey && depth < 8) png_set_expand_gray_1_2_4_to_8(x->png);
    if (trns) png_set_tRNS_to_alpha(x->png);
    if (depth == 16) png_set_scale_16(x->png);
    if (grey && alpha) png_set_gray_to_rgb(x->png); /* grey + alpha becomes RGBA: c = 2 does not exist */
    png_set_interlace_handling(x->png);
    png_read_update_info(x->png, x->info);
    int c = alpha ? 4 : grey ? 1 : 3;
    if (png_get_rowbytes(x->png, x->info) != (size_t)w * c) png_error(x->png, "unexpected row size after conversion");
    if (img_alloc(&x->im, (int)w, (int)h, c)) {
        x->nomem = 1;
        png_error(x->png, "out of memory for the pixels");
    }
    x->rows = malloc(sizeof *x->rows * h);
    if (!x->rows) {
        x->nomem = 1;
        png_error(x->png, "out of memory for the row table");
    }
    for (png_uint_32 y = 0; y < h; y++) x->rows[y] = x->im.px + (size_t)y * w * c;
    png_read_image(x->png, x->rows);
    png_read_end(x->png, NULL);
    return 0;
}

static int paeth(int a, int b, int c) {
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/* Undoes the filter of one row of n bytes in place, bpp bytes per pixel; `up` is the row above
 * (already unfiltered) or NULL for the first. Returns -1 for an unknown filter type. */
static int png_unfilter(int type, uint8_t *row, const uint8_t *up, size_t n, int bpp) {
    switch (type) {
    case 0: return 0;
    case 1:
        for (size_t i = (size_t)bpp; i < n; i++) row[i] = (uint8_t)(row[i] + row[i - bpp]);
        return 0;
    case 2:
        if (up)
            for (size_t i = 0; i < n; i++) row[i] = (uint8_t)(row[i] + up[i]);
        return 0;
    case 3:
        for (size_t i = 0; i < n; i++) {
            int l = i >= (size_t)bpp ? row[i - bpp] : 0, u = up ? up[i] : 0;
            row[i] = (uint8_t)(row[i] + ((l + u) >> 1));
        }
        return 0;
    case 4:
        for (size_t i = 0; i < n; i++) {
            int l = i >= (size_t)bpp ? row[i - bpp] : 0, u = up ? up[i] : 0;
            int ul = up && i >= (size_t)bpp ? up[i - bpp] : 0;
            row[i] = (uint8_t)(row[i] + paeth(l, u, ul));
        }
        return 0;
    default: return -1;
    }
}

/* The common case in one pass, with libdeflate: an 8-bit, non-interlaced grey, RGB or RGBA PNG
 * without tRNS whose filtered rows fit in IMG_PNG_WHOLE_MAX. The IDAT chunks are checked (CRC)
 * and inflated in one call, then the rows unfiltered in place of the pixels. Returns 0 with *out
 * filled, -2 when out of memory, or -1 for anything else (another kind of PNG or any defect):
 * libpng then decodes it, or reports the error, exactly as it always does. */
static int png_decode_whole(const uint8_t *buf, size_t len, int w, int h, img_u8 *out) {
    int depth = buf[24], ct = buf[25], c = ct == 0 ? 1 : ct == 2 ? 3 : ct == 6 ? 4 : 0;
    if (depth != 8 || !c || buf[26] || buf[27] || buf[28]) return -1;
    size_t row = (size_t)w * c, rawn = (row + 1) * (size_t)h;
    if (rawn > IMG_PNG_WHOLE_MAX) return -1;
    /* the chunks after IHDR: IDATs in one run, IEND last, no tRNS and no unknown critical chunk */
    const uint8_t *first = NULL;
    size_t nidat = 0, zlen = 0, pos = 33;
    int run_over = 0, end = 0;
    while (!end) {
        if (len - pos < 12) return -1;
        size_t n = be32(buf + pos);
        const uint8_t *type = buf + pos + 4;
        if (n > 0x7fffffffu || n > len - pos - 12) return -1;
        int idat = !memcmp(type, "IDAT", 4);
        end = !memcmp(type, "IEND", 4);
        if (!memcmp(type, "tRNS", 4)) return -1;
        if (!(type[0] & 0x20) && !idat && !end && memcmp(type, "PLTE", 4)) return -1;
        if (ct == 0 && !memcmp(type, "PLTE", 4)) return -1;
        if (idat || end) {
            if (libdeflate_crc32(0, type, n + 4) != be32(buf + pos + 8 + n)) return -1;
        }
        if (idat) {
            if (run_over) return -1;
            if (!first) first = buf + pos;
            nidat++;
            zlen += n;
        } else if (first) {
            run_over = 1;
        }
        pos += 12 + n;
    }
    if (!first) return -1;
    uint8_t *z = NULL, *raw = malloc(rawn);
    if (!raw) return -2;
    const uint8_t *zin = first + 8;
    if (nidat > 1) { /* gather the run of IDAT payloads into one zlib stream */
        z = malloc(zlen);
        if (!z) {
            free(raw);
            return -2;
        }
        size_t k = 0;
        for (const uint8_t *p = first; k < zlen; p += 12 + be32(p)) {
            memcpy(z + k, p + 8, be32(p));
            k += be32(p);
        }
        zin = z;
    }
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    size_t got = 0;
    int nomem = !d, bad = nomem || libdeflate_zlib_decompress(d, zin, zlen, raw, rawn, &got) != LIBDEFLATE_SUCCESS ||
                          got != rawn;
    libdeflate_free_decompressor(d);
    free(z);
    if (bad) {
        free(raw);
        return nomem ? -2 : -1;
    }
    /* unfilter in place, then move each row one byte down over its filter byte */
    for (int y = 0; y < h && !bad; y++) {
        uint8_t *r = raw + (size_t)y * (row + 1);
        bad = png_unfilter(r[0], r + 1, y ? r + 1 - (row + 1) : NULL, row, c);
    }
    if (bad) {
        free(raw);
        return -1;
    }
    for (int y = 0; y < h; y++) memmove(raw + (size_t)y * row, raw + (size_t)y * (row + 1) + 1, row);
    uint8_t *px = realloc(raw, row * (size_t)h);
    out->w = w;
    out->h = h;
    out->c = c;
    out->px = px ? px : raw;
    return 0;
}

static sp_status png_decode(const uint8_t *buf, size_t len, long max_pixels, img_u8 *out) {
    int w = 0, h = 0;
    sp_status st = png_header(buf, len, &w, &h);
    if (st) return st;
    if ((st = check_pixels("png", w, h, max_pixels))) return st;
    int fast = png_decode_whole(buf, len, w, h, out);
    if (fast == 0) return SP_OK;
    if (fast == -2) return sp_err(SP_ERR_NOMEM, "png: out of memory for %dx%d pixels", w, h);
    png_ctx *x = calloc(1, sizeof *x);
    if (!x) return sp_err(SP_ERR_NOMEM, "png: out of memory");
    x->in = buf;
    x->in_len = len;
    x->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, x, png_error_cb, png_warning_cb);
    if (x->png) x->info = png_create_info_struct(x->png);
    if (!x->png || !x->info) {
        st = sp_err(SP_ERR_NOMEM, "png: cannot create the decoder");
    } else {
        /* libpng's own cap of 1e6 pixels per side stays as a backstop when max_pixels is 0. */
        if (png_decode_run(x)) {
            st = x->nomem ? sp_err(SP_ERR_NOMEM, "png: %s", x->msg) : sp_err(SP_ERR_FORMAT, "png: %s", x->msg);
        } else {
            *out = x->im;
            memset(&x->im, 0, sizeof x->im);
        }
    }
    png_destroy_read_struct(x->png ? &x->png : NULL, x->info ? &x->info : NULL, NULL);
    img_free(&x->im);
    free(x->rows);
    free(x);
    return st;
}

static void png_write_cb(png_structp png, png_bytep data, size_t n) {
    png_ctx *x = png_get_io_ptr(png);
    if (n > x->cap - x->len) {
        size_t cap = x->cap ? x->cap : 4096;
        while (cap - x->len < n) {
            if (cap > SIZE_MAX / 2) {
                x->nomem = 1;
                png_error(png, "output too large");
            }
            cap *= 2;
        }
        uint8_t *b = realloc(x->buf, cap);
        if (!b) {
            x->nomem = 1;
            png_error(png, "out of memory for the output");
        }
        x->buf = b;
        x->cap = cap;
    }
    memcpy(x->buf + x->len, data, n);
    x->len += n;
}

static void png_flush_cb(png_structp png) { (void)png; }

static int png_encode_run(png_ctx *x, const img_u8 *im) {
    if (setjmp(png_jmpbuf(x->png))) return -1;
    png_set_write_fn(x->png, x, png_write_cb, png_flush_cb);
    int ct = im->c == 1 ? PNG_COLOR_TYPE_GRAY : im->c == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_RGB_ALPHA;
    png_set_IHDR(x->png, x->info, (png_uint_32)im->w, (png_uint_32)im->h, 8, ct, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(x->png, IMG_PNG_LEVEL);
    png_set_filter(x->png, PNG_FILTER_TYPE_BASE, IMG_PNG_FILTER);
    png_write_info(x->png, x->info);
    size_t row = (size_t)im->w * im->c;
    for (int y = 0; y < im->h; y++) png_write_row(x->png, im->px + (size_t)y * row);
    png_write_end(x->png, NULL);
    return 0;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* Closes the chunk whose 4-byte length starts at p with `n` data bytes: writes the length and
 * the CRC of type and data after them. Returns the chunk's total size (12 + n). */
static size_t png_chunk_close(uint8_t *p, size_t n) {
    put_be32(p, (uint32_t)n);
    put_be32(p + 8 + n, libdeflate_crc32(0, p + 4, n + 4));
    return 12 + n;
}

/* Writes an 8-bit, non-interlaced PNG of `im` as signature, IHDR, one IDAT (every row Up-filtered,
 * one zlib stream from libdeflate) and IEND. The caller checked that the filtered rows fit in
 * IMG_PNG_WHOLE_MAX. *out is malloc'ed. */
static sp_status png_encode_whole(const img_u8 *im, uint8_t **out, size_t *len) {
    size_t row = (size_t)im->w * im->c, rawn = (row + 1) * (size_t)im->h;
    uint8_t *raw = malloc(rawn), *buf = NULL;
    struct libdeflate_compressor *z = libdeflate_alloc_compressor(IMG_PNG_DEFLATE_LEVEL);
    sp_status st = SP_OK;
    if (!raw || !z) {
        st = sp_err(SP_ERR_NOMEM, "png: out of memory for %zu bytes of rows", rawn);
        goto done;
    }
    /* Up: each byte minus the one above it; the first row's "above" is zero, so it is stored as is */
    for (int y = 0; y < im->h; y++) {
        uint8_t *d = raw + (size_t)y * (row + 1);
        const uint8_t *cur = im->px + (size_t)y * row, *up = cur - row;
        d[0] = 2;
        if (y == 0) memcpy(d + 1, cur, row);
        else
            for (size_t i = 0; i < row; i++) d[1 + i] = (uint8_t)(cur[i] - up[i]);
    }
    size_t zcap = libdeflate_zlib_compress_bound(z, rawn);
    buf = malloc(8 + 25 + 12 + zcap + 12);
    if (!buf) {
        st = sp_err(SP_ERR_NOMEM, "png: out of memory for the output");
        goto done;
    }
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    size_t n = 0;
    memcpy(buf, sig, 8);
    n += 8;
    uint8_t *ihdr = buf + n;
    memcpy(ihdr + 4, "IHDR", 4);
    put_be32(ihdr + 8, (uint32_t)im->w);
    put_be32(ihdr + 12, (uint32_t)im->h);
    ihdr[16] = 8; /* bit depth */
    ihdr[17] = im->c == 1 ? 0 : im->c == 3 ? 2 : 6;
    ihdr[18] = ihdr[19] = ihdr[20] = 0; /* deflate, adaptive filtering (type 0), not interlaced */
    n += png_chunk_close(ihdr, 13);
    uint8_t *idat = buf + n;
    memcpy(idat + 4, "IDAT", 4);
    size_t zn = libdeflate_zlib_compress(z, raw, rawn, idat + 8, zcap);
    if (!zn) {
        st = sp_err(SP_ERR_BACKEND, "png: libdeflate could not compress %zu bytes", rawn);
        goto done;
    }
    n += png_chunk_close(idat, zn);
    uint8_t *iend = buf + n;
    memcpy(iend + 4, "IEND", 4);
    n += png_chunk_close(iend, 0);
    uint8_t *fit = realloc(buf, n); /* give back the bound's slack */
    *out = fit ? fit : buf;
    *len = n;
    buf = NULL;
done:
    libdeflate_free_compressor(z);
    free(raw);
    free(buf);
    return st;
}

static sp_status png_encode(const img_u8 *im, uint8_t **out, size_t *len) {
    if (((size_t)im->w * im->c + 1) * (size_t)im->h <= IMG_PNG_WHOLE_MAX) return png_encode_whole(im, out, len);
    sp_status st = SP_OK;
    png_ctx *x = calloc(1, sizeof *x);
    if (!x) return sp_err(SP_ERR_NOMEM, "png: out of memory");
    x->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, x, png_error_cb, png_warning_cb);
    if (x->png) x->info = png_create_info_struct(x->png);
    if (!x->png || !x->info) {
        st = sp_err(SP_ERR_NOMEM, "png: cannot create the encoder");
    } else if (png_encode_run(x, im)) {
        st = x->nomem ? sp_err(SP_ERR_NOMEM, "png: %s", x->msg) : sp_err(SP_ERR_BACKEND, "png: %s", x->msg);
    } else {
        *out = x->buf;
        *len = x->len;
        x->buf = NULL;
    }
    png_destroy_write_struct(x->png ? &x->png : NULL, x->info ? &x->info : NULL);
    free(x->buf);
    free(x);
    return st;
}

/* ---- WebP ---- */

/* One still WebP (lossy or lossless) to RGB, or RGBA when it has alpha. An animated WebP is
 * refused (SP_ERR_UNSUPPORTED) rather than cut to its first frame: which frame a client meant
 * is not ours to guess. */
static sp_status webp_decode(const uint8_t *buf, size_t len, long max_pixels, img_u8 *out) {
    WebPBitstreamFeatures ft;
    sp_status st = webp_header(buf, len, &ft);
    if (st) return st;
    if (ft.has_animation)
        return sp_err(SP_ERR_UNSUPPORTED, "webp: animated WebP (%dx%d) is not supported; send a still image",
                      ft.width, ft.height);
    if ((st = check_pixels("webp", ft.width, ft.height, max_pixels))) return st;
    int c = ft.has_alpha ? 4 : 3;
    if ((st = img_alloc(out, ft.width, ft.height, c)))
        return sp_err(SP_ERR_NOMEM, "webp: out of memory for %dx%d pixels", ft.width, ft.height);
    size_t size = (size_t)ft.width * ft.height * c;
    int stride = ft.width * c; /* at most 16383 * 4 */
    uint8_t *r = c == 4 ? WebPDecodeRGBAInto(buf, len, out->px, size, stride)
                        : WebPDecodeRGBInto(buf, len, out->px, size, stride);
    if (!r) {
        img_free(out);
        return sp_err(SP_ERR_FORMAT, "webp: truncated or corrupt image data (%dx%d, %zu bytes)", ft.width, ft.height,
                      len);
    }
    return SP_OK;
}

/* Lossy at `quality` (1-99), lossless at 100 (the kept pixels bit-exact, as in PNG). Grey is
 * written as RGB; alpha is kept (losslessly, in both modes). */
static sp_status webp_encode(const img_u8 *im, int quality, uint8_t **out, size_t *len) {
    if (quality < 1 || quality > 100) return sp_err(SP_ERR_INVALID, "webp: quality %d is not in 1-100", quality);
    if (im->w > 16383 || im->h > 16383)
        return sp_err(SP_ERR_INVALID, "webp: %dx%d is larger than WebP's 16383x16383", im->w, im->h);
    img_u8 rgb = {0};
    const img_u8 *src = im;
    if (im->c == 1) {
        sp_status st = img_convert(im, 3, &rgb);
        if (st) return st;
        src = &rgb;
    }
    WebPConfig cfg;
    WebPPicture pic;
    WebPMemoryWriter wr;
    sp_status st = SP_OK;
    if (!WebPConfigInit(&cfg) || !WebPPictureInit(&pic)) {
        img_free(&rgb);
        return sp_err(SP_ERR_BACKEND, "webp: libwebp version mismatch");
    }
    WebPMemoryWriterInit(&wr);
    cfg.quality = (float)quality;
    cfg.method = 4;
    if (quality == 100) {
        cfg.lossless = 1;
        cfg.quality = 50; /* lossless effort: a middle one, for speed */
        cfg.method = 1;
        cfg.exact = 1; /* keep the RGB of fully transparent pixels too */
    }
    pic.use_argb = cfg.lossless;
    pic.width = src->w;
    pic.height = src->h;
    pic.writer = WebPMemoryWrite;
    pic.custom_ptr = &wr;
    int ok = src->c == 4 ? WebPPictureImportRGBA(&pic, src->px, src->w * 4) : WebPPictureImportRGB(&pic, src->px, src->w * 3);
    if (!ok) st = sp_err(SP_ERR_NOMEM, "webp: out of memory for %dx%d pixels", src->w, src->h);
    else if (!WebPEncode(&cfg, &pic))
        st = pic.error_code == VP8_ENC_ERROR_OUT_OF_MEMORY || pic.error_code == VP8_ENC_ERROR_BITSTREAM_OUT_OF_MEMORY
                 ? sp_err(SP_ERR_NOMEM, "webp: out of memory while encoding %dx%d", src->w, src->h)
                 : sp_err(SP_ERR_BACKEND, "webp: encoding failed (libwebp error %d)", (int)pic.error_code);
    WebPPictureFree(&pic);
    img_free(&rgb);
    if (!st) { /* the caller frees with free(): copy out of libwebp's allocator */
        *out = malloc(wr.size ? wr.size : 1);
        if (!*out) st = sp_err(SP_ERR_NOMEM, "webp: out of memory for %zu bytes", wr.size);
        else memcpy(*out, wr.mem, wr.size), *len = wr.size;
    }
    WebPMemoryWriterClear(&wr);
    return st;
}

/* ---- public decode / encode ---- */

sp_status img_decode(const uint8_t *buf, size_t len, long max_pixels, img_u8 *out, img_format *fmt) {
    memset(out, 0, sizeof *out);
    img_format f = img_sniff(buf, len);
    if (fmt) *fmt = f;
    if (f == IMG_FMT_JPEG) return jpeg_decode(buf, len, max_pixels, out);
    if (f == IMG_FMT_PNG) return png_decode(buf, len, max_pixels, out);
    if (f == IMG_FMT_WEBP) return webp_decode(buf, len, max_pixels, out);
    return sp_err(SP_ERR_FORMAT, "not a JPEG, PNG or WebP image (%zu bytes)", len);
}

sp_status img_load(const char *path, long max_pixels, img_u8 *out) {
    uint8_t *buf = NULL;
    size_t len = 0;
    memset(out, 0, sizeof *out);
    sp_status st = sp_read_file(path, &buf, &len);
    if (st) return st;
    st = img_decode(buf, len, max_pixels, out, NULL);
    free(buf);
    return st ? sp_err_wrap(st, "%s", path) : SP_OK;
}

sp_status img_encode(const img_u8 *im, img_format fmt, int quality, uint8_t **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (!img_valid(im)) return sp_err(SP_ERR_INVALID, "img_encode: invalid image");
    if (fmt == IMG_FMT_JPEG) return jpeg_encode(im, quality, out, len);
    if (fmt == IMG_FMT_PNG) return png_encode(im, out, len);
    if (fmt == IMG_FMT_WEBP) return webp_encode(im, quality, out, len);
    return sp_err(SP_ERR_INVALID, "img_encode: unknown format %d", (int)fmt);
}

sp_status img_save(const img_u8 *im, const char *path, int quality) {
    const char *dot = strrchr(path, '.');
    img_format f = dot && !strchr(dot, '/') ? img_format_parse(dot + 1) : IMG_FMT_UNKNOWN;
    if (f == IMG_FMT_UNKNOWN) return sp_err(SP_ERR_INVALID, "%s: extension is not .png, .jpg, .jpeg or .webp", path);
    uint8_t *buf = NULL;
    size_t len = 0;
    sp_status st = img_encode(im, f, quality, &buf, &len);
    if (st) return sp_err_wrap(st, "%s", path);
    st = sp_write_file_atomic(path, buf, len);
    free(buf);
    return st;
}

/* ---- resampling ---- */

/* For each output sample along one axis: the first source index and `taps` weights. */
typedef struct {
    int taps;
    int *first; /* [out] */
    float *w;   /* [out][taps] */
} rs_axis;

static void rs_axis_free(rs_axis *a) {
    free(a->first);
    free(a->w);
}

/* Plans `out` samples from `in` source samples: area averaging when shrinking, bilinear with
 * pixel centres aligned (edge samples clamped) when enlarging or keeping the size. */
static sp_status rs_axis_plan(int in, int out, rs_axis *a) {
    double s = (double)in / out;
    a->taps = out < in ? (int)ceil(s) + 1 : 2;
    a->first = malloc(sizeof *a->first * (size_t)out);
    a->w = calloc((size_t)out * a->taps, sizeof *a->w);
    if (!a->first || !a->w) {
        rs_axis_free(a);
        return sp_err(SP_ERR_NOMEM, "img_resize: out of memory");
    }
    for (int i = 0; i < out; i++) {
        float *w = a->w + (size_t)i * a->taps;
        if (out < in) {
            double lo = i * s, hi = (i + 1) * s;
            int j0 = (int)floor(lo);
            if (j0 > in - 1) j0 = in - 1;
            a->first[i] = j0;
            double sum = 0;
            for (int k = 0; k < a->taps; k++) {
                int j = j0 + k;
                if (j >= in) break;
                double ov = fmin(hi, j + 1.0) - fmax(lo, (double)j);
                if (ov > 0) {
                    w[k] = (float)ov;
                    sum += ov;
                }
            }
            for (int k = 0; k < a->taps; k++) w[k] = (float)(w[k] / sum);
        } else {
            double pos = (i + 0.5) * s - 0.5;
            int j0 = (int)floor(pos);
            double f = pos - j0;
            if (j0 < 0) j0 = 0, f = 0;
            if (j0 >= in - 1) j0 = in - 1, f = 0;
            a->first[i] = j0;
            w[0] = (float)(1.0 - f);
            w[1] = (float)f;
        }
    }
    return SP_OK;
}

sp_status img_resize_rect(const img_u8 *src, int x0, int y0, int cw, int ch, int w, int h, img_u8 *out) {
    memset(out, 0, sizeof *out);
    if (!img_valid(src)) return sp_err(SP_ERR_INVALID, "img_resize: invalid source image");
    if (cw <= 0 || ch <= 0 || x0 < 0 || y0 < 0 || x0 > src->w - cw || y0 > src->h - ch)
        return sp_err(SP_ERR_INVALID, "img_resize: rectangle (%d,%d) %dx%d is not inside %dx%d", x0, y0, cw, ch, src->w,
                      src->h);
    if (w <= 0 || h <= 0) return sp_err(SP_ERR_INVALID, "img_resize: invalid output size %dx%d", w, h);
    int c = src->c;
    rs_axis ax = {0}, ay = {0};
    float *tmp = NULL;
    sp_status st;
    if ((st = rs_axis_plan(cw, w, &ax))) goto fail;
    if ((st = rs_axis_plan(ch, h, &ay))) goto fail;
    if ((st = img_alloc(out, w, h, c))) goto fail;
    tmp = malloc(sizeof *tmp * (size_t)w * ch * c); /* (ch, w, c): rows resampled horizontally */
    if (!tmp) {
        st = sp_err(SP_ERR_NOMEM, "img_resize: out of memory");
        goto fail;
    }
    size_t srow = (size_t)src->w * c;
    for (int y = 0; y < ch; y++) {
        const uint8_t *s = src->px + (size_t)(y0 + y) * srow + (size_t)x0 * c;
        float *t = tmp + (size_t)y * w * c;
        for (int i = 0; i < w; i++) {
            const float *wt = ax.w + (size_t)i * ax.taps;
            int j0 = ax.first[i];
            for (int k = 0; k < c; k++) {
                float acc = 0;
                for (int q = 0; q < ax.taps && j0 + q < cw; q++) acc += wt[q] * s[(size_t)(j0 + q) * c + k];
                t[(size_t)i * c + k] = acc;
            }
        }
    }
    size_t trow = (size_t)w * c;
    for (int i = 0; i < h; i++) {
        const float *wt = ay.w + (size_t)i * ay.taps;
        int j0 = ay.first[i];
        uint8_t *d = out->px + (size_t)i * trow;
        for (size_t e = 0; e < trow; e++) {
            float acc = 0;
            for (int q = 0; q < ay.taps && j0 + q < ch; q++) acc += wt[q] * tmp[(size_t)(j0 + q) * trow + e];
            acc = acc < 0 ? 0 : acc > 255 ? 255 : acc;
            d[e] = (uint8_t)(acc + 0.5f);
        }
    }
    free(tmp);
    rs_axis_free(&ax);
    rs_axis_free(&ay);
    return SP_OK;
fail:
    free(tmp);
    rs_axis_free(&ax);
    rs_axis_free(&ay);
    img_free(out);
    return st;
}

sp_status img_square(const img_u8 *src, int s, img_u8 *out) {
    memset(out, 0, sizeof *out);
    if (!img_valid(src)) return sp_err(SP_ERR_INVALID, "img_square: invalid source image");
    int side = src->w < src->h ? src->w : src->h;
    img_u8 tmp = {0};
    sp_status st = img_resize_rect(src, (src->w - side) / 2, (src->h - side) / 2, side, side, s, s, &tmp);
    if (st) return st;
    if (tmp.c == 3) {
        *out = tmp;
        return SP_OK;
    }
    st = img_convert(&tmp, 3, out);
    img_free(&tmp);
    return st;
}

void img_to_chw(const img_u8 *im, float *chw) {
    size_t n = (size_t)im->w * im->h;
    int c = im->c;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = im->px + i * c;
        for (int k = 0; k < 3; k++) chw[k * n + i] = (float)p[c == 1 ? 0 : k] / 255.0f;
    }
}

void img_from_chw(const float *chw, img_u8 *im) {
    SP_ASSERT(im->c == 3 || im->c == 4);
    size_t n = (size_t)im->w * im->h;
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = im->px + i * im->c;
        for (int k = 0; k < 3; k++) {
            float v = chw[k * n + i] * 255.0f;
            if (!(v > 0)) v = 0; /* also NaN */
            if (v > 255) v = 255;
            p[k] = (uint8_t)(v + 0.5f);
        }
    }
}
