/* test_img.c: image decode/encode/resize tests: round trips (JPEG, PNG, WebP), EXIF orientations, PNG variants (the one-pass path and libpng), corrupt input, limits, hole maps. */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <turbojpeg.h>
#include <zlib.h>

#include "imaging/img.h"
#include "imaging/plan.h"
#include "tests/t.h"

/* ---- a growable byte buffer and a hand-written PNG builder (independent of libpng's writer) ---- */

typedef struct {
    uint8_t *b;
    size_t n, cap;
} bytes;

static void put(bytes *o, const void *p, size_t n) {
    if (o->n + n > o->cap) {
        o->cap = (o->n + n) * 2 + 64;
        o->b = realloc(o->b, o->cap);
        if (!o->b) abort();
    }
    memcpy(o->b + o->n, p, n);
    o->n += n;
}
static void put32(bytes *o, uint32_t v) {
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(o, b, 4);
}
static void put_chunk(bytes *o, const char *type, const uint8_t *data, uint32_t n) {
    put32(o, n);
    put(o, type, 4);
    if (n) put(o, data, n);
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, (const Bytef *)type, 4);
    if (n) crc = crc32(crc, data, n);
    put32(o, (uint32_t)crc);
}

typedef unsigned (*sample_fn)(int x, int y, int ch);

static int ct_channels(int ct) { return ct == 0 ? 1 : ct == 2 ? 3 : ct == 3 ? 1 : ct == 4 ? 2 : 4; }

/* Appends the filtered (filter 0) scanlines of the sub-image of pass (x0,y0,dx,dy). */
static void png_rows(bytes *raw, int w, int h, int depth, int ct, sample_fn f, int x0, int y0, int dx, int dy) {
    int ch = ct_channels(ct);
    int pw = (w - x0 + dx - 1) / dx, ph = (h - y0 + dy - 1) / dy;
    if (pw <= 0 || ph <= 0) return;
    size_t rowbytes = ((size_t)pw * ch * depth + 7) / 8;
    uint8_t *row = malloc(rowbytes + 1);
    for (int py = 0; py < ph; py++) {
        memset(row, 0, rowbytes + 1);
        size_t bit = 0;
        for (int px = 0; px < pw; px++)
            for (int k = 0; k < ch; k++) {
                unsigned v = f(x0 + px * dx, y0 + py * dy, k);
                if (depth == 16) {
                    row[1 + bit / 8] = (uint8_t)(v >> 8);
                    row[2 + bit / 8] = (uint8_t)v;
                } else if (depth == 8) {
                    row[1 + bit / 8] = (uint8_t)v;
                } else {
                    row[1 + bit / 8] |= (uint8_t)(v << (8 - depth - bit % 8));
                }
                bit += (size_t)depth;
            }
        put(raw, row, rowbytes + 1);
    }
    free(row);
}

/* A complete PNG: IHDR, optional PLTE and tRNS, one IDAT, IEND. */
static bytes build_png(int w, int h, int depth, int ct, int interlace, sample_fn f, const uint8_t *plte, int nplte,
                       const uint8_t *trns, int ntrns) {
    bytes o = {0}, raw = {0};
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    put(&o, sig, 8);
    uint8_t ihdr[13] = {(uint8_t)(w >> 24), (uint8_t)(w >> 16), (uint8_t)(w >> 8), (uint8_t)w,
                        (uint8_t)(h >> 24), (uint8_t)(h >> 16), (uint8_t)(h >> 8), (uint8_t)h,
                        (uint8_t)depth,     (uint8_t)ct,        0,                 0,
                        (uint8_t)interlace};
    put_chunk(&o, "IHDR", ihdr, 13);
    if (plte) put_chunk(&o, "PLTE", plte, (uint32_t)nplte * 3);
    if (trns) put_chunk(&o, "tRNS", trns, (uint32_t)ntrns);
    if (!interlace) {
        png_rows(&raw, w, h, depth, ct, f, 0, 0, 1, 1);
    } else {
        static const int adam7[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                                        {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
        for (int p = 0; p < 7; p++) png_rows(&raw, w, h, depth, ct, f, adam7[p][0], adam7[p][1], adam7[p][2], adam7[p][3]);
    }
    uLongf zn = compressBound(raw.n);
    uint8_t *z = malloc(zn);
    if (compress2(z, &zn, raw.b, raw.n, 6) != Z_OK) abort();
    put_chunk(&o, "IDAT", z, (uint32_t)zn);
    put_chunk(&o, "IEND", NULL, 0);
    free(z);
    free(raw.b);
    return o;
}

/* ---- sample patterns ---- */

static unsigned pat8(int x, int y, int ch) { return (unsigned)(x * 7 + y * 13 + ch * 50) & 255; }
static unsigned pat16(int x, int y, int ch) { return pat8(x, y, ch) * 257u; }
static unsigned pat_idx(int x, int y, int ch) { return (unsigned)(x + 2 * y + ch) % 4; }
static unsigned pat1(int x, int y, int ch) { return (unsigned)((x ^ y) + ch) & 1; }
static unsigned pat4(int x, int y, int ch) { return (unsigned)(x + y + ch) & 15; }

static void fill_pattern(img_u8 *im, unsigned seed) {
    size_t n = (size_t)im->w * im->h * im->c;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        im->px[i] = (uint8_t)(seed >> 16);
    }
}

static int img_equal(const img_u8 *a, const img_u8 *b) {
    return a->w == b->w && a->h == b->h && a->c == b->c && !memcmp(a->px, b->px, (size_t)a->w * a->h * a->c);
}

static double mean_abs_diff(const img_u8 *a, const img_u8 *b) {
    size_t n = (size_t)a->w * a->h * a->c;
    double s = 0;
    for (size_t i = 0; i < n; i++) s += abs((int)a->px[i] - (int)b->px[i]);
    return s / (double)n;
}

/* ---- tests ---- */

static void test_names(void) {
    CHECK(img_format_parse("jpg") == IMG_FMT_JPEG);
    CHECK(img_format_parse("JPEG") == IMG_FMT_JPEG);
    CHECK(img_format_parse("png") == IMG_FMT_PNG);
    CHECK(img_format_parse("gif") == IMG_FMT_UNKNOWN);
    CHECK(img_format_parse(NULL) == IMG_FMT_UNKNOWN);
    CHECK(!strcmp(img_format_mime(IMG_FMT_PNG), "image/png"));
    CHECK(!strcmp(img_format_mime(IMG_FMT_JPEG), "image/jpeg"));
    CHECK(!strcmp(img_format_name(IMG_FMT_JPEG), "jpeg"));
    CHECK(img_sniff((const uint8_t *)"GIF89a", 6) == IMG_FMT_UNKNOWN);
    CHECK(img_sniff(NULL, 0) == IMG_FMT_UNKNOWN);
}

static void test_png_roundtrip(void) {
    for (int c = 1; c <= 4; c++) {
        if (c == 2) continue;
        img_u8 a = {0}, b = {0};
        CHECK(img_alloc(&a, 37, 23, c) == SP_OK);
        fill_pattern(&a, (unsigned)c);
        uint8_t *buf = NULL;
        size_t len = 0;
        CHECK(img_encode(&a, IMG_FMT_PNG, 0, &buf, &len) == SP_OK);
        CHECK(img_sniff(buf, len) == IMG_FMT_PNG);
        img_format f = IMG_FMT_UNKNOWN;
        int w = 0, h = 0;
        CHECK(img_probe(buf, len, &f, &w, &h) == SP_OK && f == IMG_FMT_PNG && w == 37 && h == 23);
        f = IMG_FMT_UNKNOWN;
        CHECK(img_decode(buf, len, 0, &b, &f) == SP_OK && f == IMG_FMT_PNG);
        CHECKF(img_equal(&a, &b), "PNG round trip of c=%d is not lossless", c);
        img_free(&b);
        CHECK(img_decode(buf, len, 37 * 23 - 1, &b, NULL) == SP_ERR_LIMIT);
        CHECK(b.px == NULL && b.w == 0);
        CHECK(img_decode(buf, len, 37 * 23, &b, NULL) == SP_OK);
        free(buf);
        img_free(&a);
        img_free(&b);
    }
}

/* A smooth image that JPEG keeps well. */
static void fill_smooth(img_u8 *im) {
    for (int y = 0; y < im->h; y++)
        for (int x = 0; x < im->w; x++)
            for (int k = 0; k < im->c; k++)
                im->px[((size_t)y * im->w + x) * im->c + k] =
                    (uint8_t)(128 + 100 * sin(x * 0.07 + k) * cos(y * 0.05 - k * 0.5));
}

static void test_jpeg_roundtrip(void) {
    int cs[] = {3, 1, 4};
    for (int t = 0; t < 3; t++) {
        int c = cs[t];
        img_u8 a = {0}, b = {0};
        CHECK(img_alloc(&a, 64, 48, c) == SP_OK);
        fill_smooth(&a);
        uint8_t *buf = NULL;
        size_t len = 0;
        CHECK(img_encode(&a, IMG_FMT_JPEG, 95, &buf, &len) == SP_OK);
        CHECK(img_sniff(buf, len) == IMG_FMT_JPEG);
        int w = 0, h = 0;
        img_format f;
        CHECK(img_probe(buf, len, &f, &w, &h) == SP_OK && f == IMG_FMT_JPEG && w == 64 && h == 48);
        CHECK(img_decode(buf, len, 0, &b, &f) == SP_OK && f == IMG_FMT_JPEG);
        int want_c = c == 4 ? 3 : c; /* alpha is dropped */
        CHECKF(b.w == 64 && b.h == 48 && b.c == want_c, "got %dx%dx%d", b.w, b.h, b.c);
        if (b.c == want_c && b.w == 64 && b.h == 48) {
            img_u8 ref = {0};
            CHECK(img_convert(&a, want_c, &ref) == SP_OK);
            double d = mean_abs_diff(&ref, &b);
            CHECKF(d < 2.5, "JPEG q95 mean abs error %.2f for c=%d", d, c);
            img_free(&ref);
        }
        img_free(&b);
        CHECK(img_decode(buf, len, 100, &b, NULL) == SP_ERR_LIMIT);
        free(buf);
        img_free(&a);
        img_free(&b);
    }
    img_u8 a = {0};
    uint8_t *buf = (uint8_t *)"x";
    size_t len = 1;
    CHECK(img_alloc(&a, 8, 8, 3) == SP_OK);
    CHECK(img_encode(&a, IMG_FMT_JPEG, 0, &buf, &len) == SP_ERR_INVALID && buf == NULL);
    CHECK(img_encode(&a, IMG_FMT_JPEG, 101, &buf, &len) == SP_ERR_INVALID);
    CHECK(img_encode(&a, IMG_FMT_UNKNOWN, 90, &buf, &len) == SP_ERR_INVALID);
    img_free(&a);
}

/* An APP1 Exif segment holding IFD0 with a Make tag and then the Orientation tag. */
static bytes exif_segment(int orientation, int little) {
    bytes t = {0}, s = {0};
    uint8_t le[] = {'I', 'I', 42, 0, 8, 0, 0, 0, 2, 0,
                    0x0F, 0x01, 2, 0, 4, 0, 0, 0, 'a', 'b', 'c', 0,
                    0x12, 0x01, 3, 0, 1, 0, 0, 0, (uint8_t)orientation, 0, 0, 0,
                    0, 0, 0, 0};
    uint8_t be[] = {'M', 'M', 0, 42, 0, 0, 0, 8, 0, 2,
                    0x01, 0x0F, 0, 2, 0, 0, 0, 4, 'a', 'b', 'c', 0,
                    0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, (uint8_t)orientation, 0, 0,
                    0, 0, 0, 0};
    if (little)
        put(&t, le, sizeof le);
    else
        put(&t, be, sizeof be);
    size_t seglen = 2 + 6 + t.n;
    uint8_t hdr[4] = {0xFF, 0xE1, (uint8_t)(seglen >> 8), (uint8_t)seglen};
    put(&s, hdr, 4);
    put(&s, "Exif\0\0", 6);
    put(&s, t.b, t.n);
    free(t.b);
    return s;
}

/* `jpeg` with `seg` inserted after SOI (where = 0) or after the first segment (where = 1). */
static bytes insert_segment(const uint8_t *jpeg, size_t len, const bytes *seg, int where) {
    size_t at = 2;
    if (where) at += 2 + ((size_t)jpeg[4] << 8 | jpeg[5]);
    bytes o = {0};
    put(&o, jpeg, at);
    put(&o, seg->b, seg->n);
    put(&o, jpeg + at, len - at);
    return o;
}

static const uint8_t quad_rgb[4][3] = {{230, 20, 20}, {20, 230, 20}, {20, 20, 230}, {230, 230, 230}};

static void test_exif(void) {
    /* Stored image 64x32: quadrants TL red, TR green, BL blue, BR white. */
    img_u8 a = {0};
    CHECK(img_alloc(&a, 64, 32, 3) == SP_OK);
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 64; x++) memcpy(a.px + ((size_t)y * 64 + x) * 3, quad_rgb[(y >= 16) * 2 + (x >= 32)], 3);
    uint8_t *jpg = NULL;
    size_t jlen = 0;
    CHECK(img_encode(&a, IMG_FMT_JPEG, 95, &jpg, &jlen) == SP_OK);
    /* Where each stored quadrant (TL, TR, BL, BR) is displayed, per EXIF orientation 1-8
     * (from the TIFF 6.0 definitions of the 0th row and 0th column). */
    static const int disp[8][4] = {{0, 1, 2, 3}, {1, 0, 3, 2}, {3, 2, 1, 0}, {2, 3, 0, 1},
                                   {0, 2, 1, 3}, {1, 3, 0, 2}, {3, 1, 2, 0}, {2, 0, 3, 1}};
    for (int o = 1; o <= 8; o++)
        for (int little = 0; little <= 1; little++) {
            bytes seg = exif_segment(o, little);
            bytes j = insert_segment(jpg, jlen, &seg, o % 2);
            img_u8 b = {0};
            int w = 0, h = 0;
            CHECK(img_probe(j.b, j.n, NULL, &w, &h) == SP_OK && w == 64 && h == 32); /* probe: before orientation */
            sp_status st = img_decode(j.b, j.n, 0, &b, NULL);
            CHECKF(st == SP_OK, "orientation %d: %s", o, sp_err_msg());
            int W = o >= 5 ? 32 : 64, H = o >= 5 ? 64 : 32;
            CHECKF(b.w == W && b.h == H && b.c == 3, "orientation %d (%s): got %dx%d", o, little ? "II" : "MM", b.w, b.h);
            if (b.w == W && b.h == H) {
                for (int q = 0; q < 4; q++) {
                    int d = disp[o - 1][q];
                    int X = (d & 1) ? 3 * W / 4 : W / 4, Y = (d & 2) ? 3 * H / 4 : H / 4;
                    const uint8_t *p = b.px + ((size_t)Y * W + X) * 3;
                    int err = abs(p[0] - quad_rgb[q][0]) + abs(p[1] - quad_rgb[q][1]) + abs(p[2] - quad_rgb[q][2]);
                    CHECKF(err < 30, "orientation %d (%s): stored quadrant %d expected at displayed %d, got %d,%d,%d", o,
                           little ? "II" : "MM", q, d, p[0], p[1], p[2]);
                }
            }
            img_free(&b);
            free(seg.b);
            free(j.b);
        }
    /* A malformed Exif block (IFD offset past the end, bad count) is ignored, not fatal. */
    bytes seg = exif_segment(6, 1);
    seg.b[10 + 4] = 0xF0; /* IFD0 offset 0xF0: past the segment */
    bytes j = insert_segment(jpg, jlen, &seg, 0);
    img_u8 b = {0};
    CHECK(img_decode(j.b, j.n, 0, &b, NULL) == SP_OK && b.w == 64 && b.h == 32);
    img_free(&b);
    free(j.b);
    seg.b[10 + 4] = 8;
    seg.b[10 + 8] = 0xFF; /* entry count 255, running past the segment, and no Orientation tag */
    seg.b[10 + 22] = 0x13;
    j = insert_segment(jpg, jlen, &seg, 0);
    CHECK(img_decode(j.b, j.n, 0, &b, NULL) == SP_OK && b.w == 64 && b.h == 32);
    img_free(&b);
    free(j.b);
    seg.b[10 + 22] = 0x12; /* an over-large count is harmless when Orientation is found in bounds */
    j = insert_segment(jpg, jlen, &seg, 0);
    CHECK(img_decode(j.b, j.n, 0, &b, NULL) == SP_OK && b.w == 32 && b.h == 64);
    img_free(&b);
    free(j.b);
    seg.b[10 + 8] = 2;
    seg.b[10 + 22 + 2] = 4; /* Orientation with type LONG: not valid, ignored */
    j = insert_segment(jpg, jlen, &seg, 0);
    CHECK(img_decode(j.b, j.n, 0, &b, NULL) == SP_OK && b.w == 64 && b.h == 32);
    img_free(&b);
    free(j.b);
    free(seg.b);
    free(jpg);
    img_free(&a);
}

static void check_png_variant(const char *name, bytes png, int want_c, unsigned (*expect)(int x, int y, int ch), int w,
                              int h) {
    img_u8 b = {0};
    sp_status st = img_decode(png.b, png.n, 0, &b, NULL);
    CHECKF(st == SP_OK, "%s: %s", name, sp_err_msg());
    CHECKF(b.w == w && b.h == h && b.c == want_c, "%s: got %dx%dx%d, want %dx%dx%d", name, b.w, b.h, b.c, w, h, want_c);
    if (st == SP_OK && b.c == want_c && b.w == w && b.h == h) {
        int bad = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int k = 0; k < want_c; k++)
                    bad += b.px[((size_t)y * w + x) * want_c + k] != expect(x, y, k);
        CHECKF(bad == 0, "%s: %d samples differ", name, bad);
    }
    img_free(&b);
    free(png.b);
}

static const uint8_t plte[12] = {10, 20, 30, 200, 100, 0, 0, 255, 128, 77, 77, 77};
static const uint8_t plte_trns[4] = {0, 128, 255, 7};
static unsigned exp_palette(int x, int y, int ch) { return plte[pat_idx(x, y, 0) * 3 + ch]; }
static unsigned exp_palette_a(int x, int y, int ch) {
    return ch < 3 ? exp_palette(x, y, ch) : plte_trns[pat_idx(x, y, 0)];
}
static unsigned exp_pat8(int x, int y, int ch) { return pat8(x, y, ch); }
static unsigned exp_grey1(int x, int y, int ch) { return pat1(x, y, 0) * 255 + 0 * ch; }
static unsigned exp_grey4(int x, int y, int ch) { return pat4(x, y, 0) * 17 + 0 * ch; }
static unsigned exp_ga(int x, int y, int ch) { return ch < 3 ? pat8(x, y, 0) : pat8(x, y, 1); }
static unsigned exp_grey_trns(int x, int y, int ch) {
    unsigned g = pat8(x, y, 0);
    return ch < 3 ? g : g == pat8(3, 2, 0) ? 0 : 255;
}

static void test_png_variants(void) {
    check_png_variant("rgb8", build_png(13, 11, 8, 2, 0, pat8, NULL, 0, NULL, 0), 3, exp_pat8, 13, 11);
    check_png_variant("rgb8 interlaced", build_png(13, 11, 8, 2, 1, pat8, NULL, 0, NULL, 0), 3, exp_pat8, 13, 11);
    check_png_variant("rgba16 interlaced", build_png(9, 10, 16, 6, 1, pat16, NULL, 0, NULL, 0), 4, exp_pat8, 9, 10);
    check_png_variant("rgb16", build_png(17, 5, 16, 2, 0, pat16, NULL, 0, NULL, 0), 3, exp_pat8, 17, 5);
    check_png_variant("grey16", build_png(17, 5, 16, 0, 0, pat16, NULL, 0, NULL, 0), 1, exp_pat8, 17, 5);
    check_png_variant("palette", build_png(15, 7, 8, 3, 0, pat_idx, plte, 4, NULL, 0), 3, exp_palette, 15, 7);
    check_png_variant("palette 2-bit interlaced", build_png(15, 7, 2, 3, 1, pat_idx, plte, 4, NULL, 0), 3, exp_palette,
                      15, 7);
    check_png_variant("palette+tRNS", build_png(15, 7, 8, 3, 0, pat_idx, plte, 4, plte_trns, 4), 4, exp_palette_a, 15,
                      7);
    check_png_variant("grey 1-bit", build_png(21, 6, 1, 0, 0, pat1, NULL, 0, NULL, 0), 1, exp_grey1, 21, 6);
    check_png_variant("grey 4-bit interlaced", build_png(21, 6, 4, 0, 1, pat4, NULL, 0, NULL, 0), 1, exp_grey4, 21, 6);
    check_png_variant("grey+alpha", build_png(12, 12, 8, 4, 0, pat8, NULL, 0, NULL, 0), 4, exp_ga, 12, 12);
    uint8_t key[2] = {0, (uint8_t)pat8(3, 2, 0)};
    check_png_variant("grey+tRNS", build_png(12, 12, 8, 0, 0, pat8, NULL, 0, key, 2), 4, exp_grey_trns, 12, 12);
}

/* A CMYK JPEG (Adobe convention: inverted ink values) decodes to RGB = C'*K'/255. */
static void test_cmyk(void) {
    enum { W = 32, H = 16 };
    uint8_t px[W * H * 4];
    for (int i = 0; i < W * H; i++) {
        px[4 * i] = 200, px[4 * i + 1] = 100, px[4 * i + 2] = 50;
        px[4 * i + 3] = i % W < W / 2 ? 255 : 128;
    }
    tjhandle tj = tjInitCompress();
    unsigned long len = 0;
    uint8_t *jpg = NULL;
    CHECK(tj && tjCompress2(tj, px, W, 0, H, TJPF_CMYK, &jpg, &len, TJSAMP_444, 98, 0) == 0);
    img_u8 b = {0};
    sp_status st = jpg ? img_decode(jpg, len, 0, &b, NULL) : SP_ERR_INVALID;
    CHECKF(st == SP_OK && b.c == 3 && b.w == W && b.h == H, "CMYK JPEG: %s", sp_err_msg());
    if (st == SP_OK) {
        const uint8_t *l = b.px + (8 * W + 4) * 3, *r = b.px + (8 * W + 28) * 3;
        CHECKF(abs(l[0] - 200) < 5 && abs(l[1] - 100) < 5 && abs(l[2] - 50) < 5, "left %d,%d,%d", l[0], l[1], l[2]);
        CHECKF(abs(r[0] - 100) < 5 && abs(r[1] - 50) < 5 && abs(r[2] - 25) < 5, "right %d,%d,%d", r[0], r[1], r[2]);
    }
    img_free(&b);
    tjFree(jpg);
    if (tj) tjDestroy(tj);
}

static void test_corrupt(void) {
    img_u8 a = {0}, b = {0};
    CHECK(img_alloc(&a, 64, 64, 3) == SP_OK);
    fill_pattern(&a, 7);
    uint8_t *buf = NULL;
    size_t len = 0;

    CHECK(img_encode(&a, IMG_FMT_JPEG, 90, &buf, &len) == SP_OK);
    sp_status st = img_decode(buf, len / 2, 0, &b, NULL);
    CHECKF(st == SP_ERR_FORMAT, "truncated JPEG: %s", sp_status_name(st));
    CHECK(strlen(sp_err_msg()) > 5 && b.px == NULL);
    printf("truncated JPEG: %s\n", sp_err_msg());
    CHECK(img_decode(buf, 20, 0, &b, NULL) == SP_ERR_FORMAT);
    CHECK(img_probe(buf, 20, NULL, NULL, NULL) == SP_ERR_FORMAT);
    free(buf);

    CHECK(img_encode(&a, IMG_FMT_PNG, 0, &buf, &len) == SP_OK);
    st = img_decode(buf, len / 2, 0, &b, NULL);
    CHECKF(st == SP_ERR_FORMAT, "truncated PNG: %s", sp_status_name(st));
    printf("truncated PNG: %s\n", sp_err_msg());
    CHECK(img_decode(buf, len - 5, 0, &b, NULL) == SP_ERR_FORMAT); /* IEND cut */
    CHECK(img_decode(buf, 30, 0, &b, NULL) == SP_ERR_FORMAT);     /* inside IHDR */
    CHECK(img_probe(buf, 30, NULL, NULL, NULL) == SP_ERR_FORMAT);
    buf[len / 2] ^= 0x55; /* damage inside IDAT: CRC or zlib error */
    st = img_decode(buf, len, 0, &b, NULL);
    CHECKF(st == SP_ERR_FORMAT, "corrupt PNG: %s", sp_status_name(st));
    printf("corrupt PNG: %s\n", sp_err_msg());
    buf[len / 2] ^= 0x55;
    buf[20] ^= 1; /* IHDR CRC mismatch */
    CHECK(img_probe(buf, len, NULL, NULL, NULL) == SP_ERR_FORMAT);
    CHECK(img_decode(buf, len, 0, &b, NULL) == SP_ERR_FORMAT);
    free(buf);
    CHECK(b.px == NULL);

    const char *text = "this is not an image at all, just some text";
    img_format f = IMG_FMT_PNG;
    st = img_decode((const uint8_t *)text, strlen(text), 0, &b, &f);
    CHECK(st == SP_ERR_FORMAT && f == IMG_FMT_UNKNOWN);
    CHECK(img_probe((const uint8_t *)text, strlen(text), &f, NULL, NULL) == SP_ERR_FORMAT && f == IMG_FMT_UNKNOWN);
    CHECK(img_decode((const uint8_t *)"", 0, 0, &b, NULL) == SP_ERR_FORMAT);
    uint8_t soi_only[4] = {0xFF, 0xD8, 0xFF, 0xD9};
    CHECK(img_decode(soi_only, 4, 0, &b, NULL) == SP_ERR_FORMAT);
    img_free(&a);
}

/* A PNG claiming 100000x100000 (signature, IHDR with a valid CRC, a tiny IDAT, IEND): refused
 * from the header without any pixel allocation. */
static void test_huge_header(void) {
    bytes o = {0};
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    put(&o, sig, 8);
    uint8_t ihdr[13] = {0, 0x01, 0x86, 0xA0, 0, 0x01, 0x86, 0xA0, 8, 2, 0, 0, 0}; /* 100000 = 0x186A0 */
    put_chunk(&o, "IHDR", ihdr, 13);
    uint8_t idat[8] = {0x78, 0x9c, 0x63, 0, 0, 0, 1, 0};
    put_chunk(&o, "IDAT", idat, 8);
    put_chunk(&o, "IEND", NULL, 0);
    int w = 0, h = 0;
    img_format f;
    CHECK(img_probe(o.b, o.n, &f, &w, &h) == SP_OK && f == IMG_FMT_PNG && w == 100000 && h == 100000);
    img_u8 b = {0};
    double t0 = sp_now();
    sp_status st = img_decode(o.b, o.n, 50L * 1000 * 1000, &b, NULL);
    double dt = sp_now() - t0;
    CHECKF(st == SP_ERR_LIMIT, "got %s: %s", sp_status_name(st), sp_err_msg());
    CHECKF(dt < 0.05, "refusal took %.3f s", dt);
    printf("100000x100000 PNG: %s (%.1f us)\n", sp_err_msg(), dt * 1e6);
    CHECK(b.px == NULL && b.w == 0);
    /* Only the signature and IHDR, no limit: libpng fails on the missing data before allocating. */
    st = img_decode(o.b, 33, 0, &b, NULL);
    CHECKF(st == SP_ERR_FORMAT, "header-only PNG: %s", sp_status_name(st));
    free(o.b);
}

static int all_equal(const img_u8 *im, uint8_t v) {
    size_t n = (size_t)im->w * im->h * im->c;
    for (size_t i = 0; i < n; i++)
        if (im->px[i] != v) return 0;
    return 1;
}

static void test_resize(void) {
    static const int sizes[][4] = {{100, 80, 256, 256}, {256, 256, 100, 37}, {37, 91, 300, 7}, {1, 1, 5, 9},
                                   {7, 5, 7, 5},        {256, 256, 3, 3},    {999, 3, 10, 1}};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++)
        for (int c = 1; c <= 4; c += 2) {
            const uint8_t vals[3] = {0, 173, 255};
            for (int v = 0; v < 3; v++) {
                img_u8 a = {0}, b = {0};
                CHECK(img_alloc(&a, sizes[t][0], sizes[t][1], c) == SP_OK);
                memset(a.px, vals[v], (size_t)a.w * a.h * c);
                CHECK(img_resize_rect(&a, 0, 0, a.w, a.h, sizes[t][2], sizes[t][3], &b) == SP_OK);
                CHECK(b.w == sizes[t][2] && b.h == sizes[t][3] && b.c == c);
                CHECKF(all_equal(&b, vals[v]), "constant %d changed: %dx%d -> %dx%d c=%d", vals[v], a.w, a.h, b.w, b.h,
                       c);
                img_free(&a);
                img_free(&b);
            }
        }
    /* Area averaging: 4x2 -> 2x1 is the mean of each 2x2 block. */
    img_u8 a = {0}, b = {0};
    CHECK(img_alloc(&a, 4, 2, 1) == SP_OK);
    const uint8_t v[8] = {0, 10, 100, 200, 20, 30, 50, 50};
    memcpy(a.px, v, 8);
    CHECK(img_resize_rect(&a, 0, 0, 4, 2, 2, 1, &b) == SP_OK);
    CHECK(b.px[0] == 15 && b.px[1] == 100);
    img_free(&b);
    /* Identity keeps every pixel; a sub-rectangle at the same size is a crop. */
    CHECK(img_resize_rect(&a, 0, 0, 4, 2, 4, 2, &b) == SP_OK && img_equal(&a, &b));
    img_free(&b);
    CHECK(img_resize_rect(&a, 1, 1, 2, 1, 2, 1, &b) == SP_OK && b.px[0] == 30 && b.px[1] == 50);
    img_free(&b);
    /* Bilinear enlarging with aligned centres: [0,100] -> 4 samples 0,25,75,100. */
    CHECK(img_resize_rect(&a, 0, 0, 2, 1, 4, 1, &b) == SP_OK);
    CHECKF(b.px[0] == 0 && b.px[1] == 3 && b.px[2] == 8 && b.px[3] == 10, "got %d %d %d %d", b.px[0], b.px[1], b.px[2],
           b.px[3]);
    img_free(&b);
    /* Invalid rectangles. */
    CHECK(img_resize_rect(&a, 3, 0, 2, 2, 4, 4, &b) == SP_ERR_INVALID);
    CHECK(img_resize_rect(&a, -1, 0, 2, 2, 4, 4, &b) == SP_ERR_INVALID);
    CHECK(img_resize_rect(&a, 0, 0, 4, 2, 0, 4, &b) == SP_ERR_INVALID);
    CHECK(b.px == NULL);
    img_free(&a);

    /* img_square of a grey 300x200 image: centre 200x200 crop, RGB. */
    CHECK(img_alloc(&a, 300, 200, 1) == SP_OK);
    for (int y = 0; y < 200; y++)
        for (int x = 0; x < 300; x++) a.px[y * 300 + x] = x < 50 || x >= 250 ? 0 : 200;
    CHECK(img_square(&a, 64, &b) == SP_OK && b.w == 64 && b.h == 64 && b.c == 3 && all_equal(&b, 200));
    img_free(&a);
    img_free(&b);
}

static void test_chw_convert(void) {
    img_u8 a = {0}, b = {0}, g = {0};
    CHECK(img_alloc(&a, 5, 4, 4) == SP_OK);
    fill_pattern(&a, 3);
    float chw[3 * 20];
    img_to_chw(&a, chw);
    CHECK(fabsf(chw[1 * 20 + 7] - a.px[7 * 4 + 1] / 255.0f) < 1e-7f);
    CHECK(img_alloc(&b, 5, 4, 4) == SP_OK);
    memset(b.px, 99, 80);
    img_from_chw(chw, &b);
    int ok = 1;
    for (int i = 0; i < 20; i++) ok &= !memcmp(a.px + 4 * i, b.px + 4 * i, 3) && b.px[4 * i + 3] == 99;
    CHECK(ok);
    chw[0] = -3.0f;
    chw[1] = 7.0f;
    chw[2] = NAN;
    img_from_chw(chw, &b);
    CHECK(b.px[0] == 0 && b.px[4] == 255 && b.px[8] == 0);
    CHECK(img_convert(&a, 1, &g) == SP_OK && g.c == 1);
    CHECK(g.px[0] == (299 * a.px[0] + 587 * a.px[1] + 114 * a.px[2] + 500) / 1000);
    img_free(&b);
    CHECK(img_convert(&g, 4, &b) == SP_OK && b.px[0] == g.px[0] && b.px[2] == g.px[0] && b.px[3] == 255);
    img_free(&a);
    img_free(&b);
    img_free(&g);
    img_free(&g); /* twice: safe */
}

static void test_files(void) {
    char dir[] = "/tmp/test_img_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0);
        return;
    }
    char p1[64], p2[64], p3[64];
    snprintf(p1, sizeof p1, "%s/a.png", dir);
    snprintf(p2, sizeof p2, "%s/a.JPG", dir);
    snprintf(p3, sizeof p3, "%s/a.gif", dir);
    img_u8 a = {0}, b = {0};
    CHECK(img_alloc(&a, 30, 20, 3) == SP_OK);
    fill_smooth(&a);
    CHECK(img_save(&a, p1, 0) == SP_OK);
    CHECK(img_load(p1, 0, &b) == SP_OK && img_equal(&a, &b));
    img_free(&b);
    CHECK(img_save(&a, p2, 90) == SP_OK);
    CHECK(img_load(p2, 0, &b) == SP_OK && b.w == 30 && b.h == 20);
    img_free(&b);
    CHECK(img_save(&a, p3, 90) == SP_ERR_INVALID);
    CHECK(img_load(p3, 0, &b) != SP_OK && strstr(sp_err_msg(), "a.gif"));
    CHECK(img_load(p1, 10, &b) == SP_ERR_LIMIT && strstr(sp_err_msg(), "a.png"));
    unlink(p1);
    unlink(p2);
    rmdir(dir);
    img_free(&a);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void test_real_files(void) {
    const char *data = t_data_dir("test_img");
    if (!data) return;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/celebahq256/val", data);
    DIR *d = opendir(dir);
    if (!d) {
        printf("test_img: SKIP real images (%s absent)\n", dir);
        return;
    }
    char *names[8];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 8)
        if (strstr(e->d_name, ".jpg")) names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    double worst = 0, t_dec = 0, t_png = 0, t_jpg = 0;
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        img_u8 a = {0}, b = {0};
        double t0 = sp_now();
        sp_status st = img_load(path, 0, &a);
        t_dec += sp_now() - t0;
        CHECKF(st == SP_OK && a.w == 256 && a.h == 256 && a.c == 3, "%s: %s", path, sp_err_msg());
        if (st) continue;
        uint8_t *buf = NULL;
        size_t len = 0;
        t0 = sp_now();
        CHECK(img_encode(&a, IMG_FMT_PNG, 0, &buf, &len) == SP_OK);
        t_png += sp_now() - t0;
        CHECK(img_decode(buf, len, 0, &b, NULL) == SP_OK && img_equal(&a, &b));
        free(buf);
        img_free(&b);
        t0 = sp_now();
        CHECK(img_encode(&a, IMG_FMT_JPEG, 90, &buf, &len) == SP_OK);
        t_jpg += sp_now() - t0;
        CHECK(img_decode(buf, len, 0, &b, NULL) == SP_OK);
        double md = b.w == 256 ? mean_abs_diff(&a, &b) : 999;
        if (md > worst) worst = md;
        free(buf);
        img_free(&b);
        /* Shrink and enlarge back: smooth faces survive with a small error. */
        img_u8 s = {0}, u = {0};
        CHECK(img_resize_rect(&a, 0, 0, 256, 256, 128, 128, &s) == SP_OK);
        CHECK(img_resize_rect(&s, 0, 0, 128, 128, 256, 256, &u) == SP_OK);
        double rd = mean_abs_diff(&a, &u);
        CHECKF(rd < 6, "%s: resize 256->128->256 mean abs diff %.2f", names[i], rd);
        img_free(&s);
        img_free(&u);
        img_free(&a);
    }
    CHECKF(n > 0 && worst < 4, "%d files, worst JPEG q90 re-encode mean abs diff %.2f", n, worst);
    if (n)
        printf("real files: %d decoded, JPEG q90 worst mean abs diff %.2f; per image: decode %.2f ms, PNG encode %.2f ms, "
               "JPEG encode %.2f ms\n",
               n, worst, 1e3 * t_dec / n, 1e3 * t_png / n, 1e3 * t_jpg / n);
    for (int i = 0; i < n; i++) free(names[i]);

    char mask[512];
    snprintf(mask, sizeof mask, "%s/masks/nvidia-irregular-test/00000.png", data);
    if (t_exists(mask)) {
        img_u8 m = {0};
        CHECK(img_load(mask, 0, &m) == SP_OK && m.w == 512 && m.h == 512 && m.c == 1);
        img_free(&m);
    }
}

/* An 8-bit PNG whose row y uses filter type y % 5, its IDAT split into pieces of `split` bytes
 * after an ancillary chunk: the one-pass decoder's case (every filter, several IDATs). */
static bytes build_png_filtered(int w, int h, int ct, sample_fn f, size_t split) {
    int ch = ct_channels(ct);
    size_t row = (size_t)w * ch;
    uint8_t *px = malloc(row * h), *raw = malloc((row + 1) * h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < ch; k++) px[y * row + (size_t)x * ch + k] = (uint8_t)f(x, y, k);
    for (int y = 0; y < h; y++) {
        uint8_t *d = raw + y * (row + 1);
        const uint8_t *cur = px + y * row, *up = y ? cur - row : NULL;
        d[0] = (uint8_t)(y % 5);
        for (size_t i = 0; i < row; i++) {
            int a = i >= (size_t)ch ? cur[i - ch] : 0, b = up ? up[i] : 0, c = up && i >= (size_t)ch ? up[i - ch] : 0;
            int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
            int pred[5] = {0, a, b, (a + b) / 2, pa <= pb && pa <= pc ? a : pb <= pc ? b : c};
            d[1 + i] = (uint8_t)(cur[i] - pred[y % 5]);
        }
    }
    bytes o = {0};
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    put(&o, sig, 8);
    uint8_t ihdr[13] = {(uint8_t)(w >> 24), (uint8_t)(w >> 16), (uint8_t)(w >> 8), (uint8_t)w,
                        (uint8_t)(h >> 24), (uint8_t)(h >> 16), (uint8_t)(h >> 8), (uint8_t)h,
                        8, (uint8_t)ct, 0, 0, 0};
    put_chunk(&o, "IHDR", ihdr, 13);
    put_chunk(&o, "tEXt", (const uint8_t *)"k\0v", 3);
    uLongf zn = compressBound((row + 1) * h);
    uint8_t *z = malloc(zn);
    if (compress2(z, &zn, raw, (row + 1) * h, 6) != Z_OK) abort();
    for (size_t k = 0; k < zn; k += split) put_chunk(&o, "IDAT", z + k, (uint32_t)(zn - k < split ? zn - k : split));
    put_chunk(&o, "IEND", NULL, 0);
    free(z);
    free(raw);
    free(px);
    return o;
}

/* The one-pass PNG decoder (every filter type, split IDATs) agrees with the pixels; a bad CRC is
 * still an error; and an image past the one-pass size goes through libpng both ways. */
static void test_png_one_pass(void) {
    const int cts[3] = {0, 2, 6};
    for (int i = 0; i < 3; i++) {
        bytes png = build_png_filtered(23, 17, cts[i], pat8, 50);
        img_u8 b;
        CHECK(img_decode(png.b, png.n, 0, &b, NULL) == SP_OK);
        int c = ct_channels(cts[i]), ok = b.w == 23 && b.h == 17 && b.c == c;
        for (int y = 0; ok && y < 17; y++)
            for (int x = 0; x < 23; x++)
                for (int k = 0; k < c; k++) ok &= b.px[(y * 23 + x) * c + k] == (uint8_t)pat8(x, y, k);
        CHECKF(ok, "colour type %d with filters 0-4 and split IDATs decodes wrong", cts[i]);
        img_free(&b);
        /* flip a byte of the first IDAT's data: its CRC no longer matches */
        png.b[8 + 25 + 15 + 8 + 3] ^= 0x40;
        CHECK(img_decode(png.b, png.n, 0, &b, NULL) == SP_ERR_FORMAT && !b.px);
        free(png.b);
    }
    img_u8 big, back;
    CHECK(img_alloc(&big, 2400, 2400, 3) == SP_OK);
    fill_pattern(&big, 7);
    for (size_t i = 0; i < (size_t)2400 * 2400 * 3; i += 3) big.px[i] = 0; /* some redundancy */
    uint8_t *buf;
    size_t len;
    double t0 = sp_now();
    CHECK(img_encode(&big, IMG_FMT_PNG, 0, &buf, &len) == SP_OK);
    CHECK(img_decode(buf, len, 0, &back, NULL) == SP_OK);
    CHECKF(img_equal(&big, &back), "a 2400x2400 PNG (past the one-pass size) does not round-trip");
    printf("2400x2400 PNG through libpng: %zu bytes, encode and decode %.0f ms\n", len, (sp_now() - t0) * 1e3);
    free(buf);
    img_free(&big);
    img_free(&back);
}

/* img_hole_map_scaled: the mask scaled by area averaging, then img_hole_map's threshold (rounded
 * luminance > 127, times alpha), the same hole map the daemon, eval and index eval-descriptors read. */
static void test_hole_map_scaled(void) {
    /* 4x4 grey scaled to 2x2: each output pixel the mean of a 2x2 block. */
    static const uint8_t g[16] = {255, 255, 0,   0,   /* block means: 255, 64 */
                                  255, 255, 0,   255, /*              128, 127 */
                                  255, 0,   255, 0,   /* (the 127 block: 255,0,253,0 -> 127) */
                                  0,   255, 253, 0};
    img_u8 m = {4, 4, 1, (uint8_t *)g};
    uint8_t hole[16];
    long n = -1;
    CHECK(img_hole_map_scaled(&m, 2, 2, hole, &n) == SP_OK);
    CHECK(n == 2 && hole[0] == 1 && hole[1] == 0 && hole[2] == 1 && hole[3] == 0);
    /* At its own size it is img_hole_map. */
    uint8_t ref[16];
    long nref = img_hole_map(&m, ref);
    CHECK(img_hole_map_scaled(&m, 4, 4, hole, &n) == SP_OK && n == nref && !memcmp(hole, ref, 16));
    /* RGB: the luminance rounded ((128,128,127) is 127.886 -> 128, a hole); RGBA: times alpha. */
    uint8_t rgb[6] = {128, 128, 127, 127, 127, 127};
    img_u8 c3 = {2, 1, 3, rgb};
    CHECK(img_hole_map_scaled(&c3, 2, 1, hole, &n) == SP_OK && n == 1 && hole[0] == 1 && hole[1] == 0);
    uint8_t rgba[8] = {255, 255, 255, 0, 255, 255, 255, 255};
    img_u8 c4 = {2, 1, 4, rgba};
    CHECK(img_hole_map_scaled(&c4, 2, 1, hole, NULL) == SP_OK && hole[0] == 0 && hole[1] == 1);
    /* Enlarging works too; a bad size is refused. */
    CHECK(img_hole_map_scaled(&c4, 4, 2, hole, &n) == SP_OK && n >= 2);
    CHECK(img_hole_map_scaled(&c4, 0, 2, hole, &n) == SP_ERR_INVALID);
}

/* A hand-made WebP RIFF holding one chunk `fourcc` with `payload` (padded to even). */
static bytes webp_riff(const char *fourcc, const uint8_t *payload, uint32_t n) {
    bytes o = {0};
    uint32_t padded = n + (n & 1), riff = 4 + 8 + padded;
    uint8_t le[4];
    put(&o, "RIFF", 4);
    for (int i = 0; i < 4; i++) le[i] = (uint8_t)(riff >> (8 * i));
    put(&o, le, 4);
    put(&o, "WEBP", 4);
    put(&o, fourcc, 4);
    for (int i = 0; i < 4; i++) le[i] = (uint8_t)(n >> (8 * i));
    put(&o, le, 4);
    put(&o, payload, n);
    if (n & 1) put(&o, "", 1);
    return o;
}

static void test_webp(void) {
    CHECK(img_format_parse("webp") == IMG_FMT_WEBP && img_format_parse("WebP") == IMG_FMT_WEBP);
    CHECK(!strcmp(img_format_mime(IMG_FMT_WEBP), "image/webp") && !strcmp(img_format_name(IMG_FMT_WEBP), "webp"));
    CHECK(img_sniff((const uint8_t *)"RIFF\0\0\0\0WEBP", 12) == IMG_FMT_WEBP);
    CHECK(img_sniff((const uint8_t *)"RIFF\0\0\0\0WAVE", 12) == IMG_FMT_UNKNOWN);
    CHECK(img_sniff((const uint8_t *)"RIFF\0\0\0\0WEB", 11) == IMG_FMT_UNKNOWN);

    /* Lossless (quality 100): bit-exact for RGB and RGBA, the RGB of transparent pixels included;
     * grey comes back as RGB. */
    for (int c = 1; c <= 4; c++) {
        if (c == 2) continue;
        img_u8 a = {0}, b = {0}, want = {0};
        CHECK(img_alloc(&a, 37, 23, c) == SP_OK);
        fill_pattern(&a, 7u + (unsigned)c);
        if (c == 4)
            for (int i = 0; i < 37 * 23; i += 5) a.px[i * 4 + 3] = 0; /* transparent pixels with colour */
        uint8_t *buf = NULL;
        size_t len = 0;
        CHECK(img_encode(&a, IMG_FMT_WEBP, 100, &buf, &len) == SP_OK);
        CHECK(img_sniff(buf, len) == IMG_FMT_WEBP);
        img_format f = IMG_FMT_UNKNOWN;
        int w = 0, h = 0;
        CHECK(img_probe(buf, len, &f, &w, &h) == SP_OK && f == IMG_FMT_WEBP && w == 37 && h == 23);
        CHECK(img_decode(buf, len, 0, &b, &f) == SP_OK && f == IMG_FMT_WEBP);
        CHECK(img_convert(&a, c == 1 ? 3 : c, &want) == SP_OK);
        CHECKF(img_equal(&want, &b), "lossless WebP round trip of c=%d is not bit-exact", c);
        img_free(&b);
        /* the pixel limit is checked from the header, before decoding */
        CHECK(img_decode(buf, len, 37 * 23 - 1, &b, NULL) == SP_ERR_LIMIT && b.px == NULL);
        /* truncated data: the header still probes, the decode fails cleanly */
        CHECK(img_probe(buf, len / 2, &f, &w, &h) == SP_OK && w == 37);
        CHECKF(img_decode(buf, len / 2, 0, &b, NULL) == SP_ERR_FORMAT, "truncated: %s", sp_err_msg());
        CHECK(b.px == NULL);
        CHECK(img_probe(buf, 20, &f, &w, &h) == SP_ERR_FORMAT && f == IMG_FMT_UNKNOWN && w == 0);
        CHECK(img_decode(buf, 20, 0, &b, NULL) == SP_ERR_FORMAT);
        buf[12] = 'X'; /* VP8L -> XP8L: no image chunk */
        CHECK(img_probe(buf, len, &f, &w, &h) == SP_ERR_FORMAT);
        CHECK(img_decode(buf, len, 0, &b, NULL) == SP_ERR_FORMAT && b.px == NULL);
        free(buf);
        img_free(&a);
        img_free(&want);
    }

    /* Lossy: within a tolerance on a smooth image; alpha kept exactly. */
    img_u8 a = {0}, b = {0};
    CHECK(img_alloc(&a, 64, 48, 4) == SP_OK);
    fill_smooth(&a);
    for (int i = 0; i < 64 * 48; i++) a.px[i * 4 + 3] = (uint8_t)(i % 3 ? 255 : 0);
    uint8_t *buf = NULL;
    size_t len = 0, lossless_len = 0;
    CHECK(img_encode(&a, IMG_FMT_WEBP, 90, &buf, &len) == SP_OK);
    CHECK(img_decode(buf, len, 0, &b, NULL) == SP_OK && b.c == 4 && b.w == 64 && b.h == 48);
    double err = 0;
    int alpha_ok = 1;
    for (int i = 0; i < 64 * 48; i++) {
        alpha_ok &= b.px[i * 4 + 3] == a.px[i * 4 + 3];
        if (a.px[i * 4 + 3])
            for (int k = 0; k < 3; k++) err += abs((int)a.px[i * 4 + k] - (int)b.px[i * 4 + k]);
    }
    err /= 64.0 * 48 * 2 / 3 * 3;
    CHECKF(err < 4.0, "lossy WebP mean error %.2f", err);
    CHECK(alpha_ok);
    free(buf);
    img_free(&b);
    CHECK(img_encode(&a, IMG_FMT_WEBP, 100, &buf, &lossless_len) == SP_OK);
    free(buf);
    CHECKF(len < lossless_len, "lossy %zu bytes, lossless %zu", len, lossless_len);
    CHECK(img_encode(&a, IMG_FMT_WEBP, 0, &buf, &len) == SP_ERR_INVALID);
    img_free(&a);
    CHECK(img_alloc(&a, 16384, 1, 3) == SP_OK);
    CHECK(img_encode(&a, IMG_FMT_WEBP, 90, &buf, &len) == SP_ERR_INVALID && buf == NULL);
    img_free(&a);

    /* A hand-made VP8L header of 16384x16384 (WebP's largest): probed, and refused over the
     * limit before anything is allocated or decoded. */
    uint8_t vp8l[13] = {0x2f, 0xff, 0xff, 0xff, 0x0f}; /* width-1, height-1 = 16383 (14 bits each) */
    bytes o = webp_riff("VP8L", vp8l, sizeof vp8l);
    int w = 0, h = 0;
    img_format f;
    CHECK(img_probe(o.b, o.n, &f, &w, &h) == SP_OK && f == IMG_FMT_WEBP && w == 16384 && h == 16384);
    double t0 = sp_now();
    sp_status st = img_decode(o.b, o.n, 50L * 1000 * 1000, &b, NULL);
    CHECKF(st == SP_ERR_LIMIT && sp_now() - t0 < 0.05, "16384^2 WebP: %s", sp_status_name(st));
    CHECK(img_decode(o.b, o.n, 0, &b, NULL) == SP_ERR_FORMAT && b.px == NULL); /* no data behind it */
    o.b[12 + 8] = 0x2e; /* a bad VP8L signature */
    CHECK(img_probe(o.b, o.n, &f, &w, &h) == SP_ERR_FORMAT);
    free(o.b);

    /* An animated WebP (VP8X with the animation flag, 8x8 canvas) is refused, not cut to a frame. */
    uint8_t vp8x[10] = {0x02, 0, 0, 0, 7, 0, 0, 7, 0, 0};
    o = webp_riff("VP8X", vp8x, sizeof vp8x);
    CHECK(img_probe(o.b, o.n, &f, &w, &h) == SP_OK && w == 8 && h == 8);
    st = img_decode(o.b, o.n, 0, &b, NULL);
    CHECKF(st == SP_ERR_UNSUPPORTED && strstr(sp_err_msg(), "animated"), "animated: %s %s", sp_status_name(st),
           sp_err_msg());
    free(o.b);
}

static void test_hole_map_alpha(void) {
    uint8_t rgba[12] = {1, 2, 3, 0, 4, 5, 6, 1, 7, 8, 9, 255};
    img_u8 im = {3, 1, 4, rgba};
    uint8_t hole[3] = {9, 9, 9};
    CHECK(img_hole_map_alpha(&im, hole) == 1 && hole[0] == 1 && hole[1] == 0 && hole[2] == 0);
    img_u8 rgb = {1, 1, 3, rgba};
    hole[0] = 9;
    CHECK(img_hole_map_alpha(&rgb, hole) == -1 && hole[0] == 9);
    rgba[3] = 255;
    CHECK(img_hole_map_alpha(&im, hole) == 0);
}

int main(void) {
    test_hole_map_scaled();
    test_hole_map_alpha();
    test_webp();
    test_names();
    test_png_roundtrip();
    test_jpeg_roundtrip();
    test_exif();
    test_png_variants();
    test_png_one_pass();
    test_cmyk();
    test_corrupt();
    test_huge_header();
    test_resize();
    test_chw_convert();
    test_files();
    test_real_files();
    return t_done("test_img");
}
