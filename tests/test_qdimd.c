/* test_qdimd.c: QD-IMD generator tests: random stream, logarithm, rasteriser, loading, determinism, real Quick Draw data. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imaging/qdimd.h"
#include "tests/t.h"

static void test_log(void) {
    double worst = 0;
    for (int i = 1; i <= 200000; i++) {
        double x = i / 200000.0; /* (0, 1], where the polar method needs it */
        double err = fabs(qd_log(x) - log(x)) / fmax(1.0, fabs(log(x)));
        if (err > worst) worst = err;
    }
    const double big[] = {1e-300, 3e-10, 0.5, 2.0, 10.0, 12345.678, 1e300};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        double err = fabs(qd_log(big[i]) - log(big[i])) / fmax(1.0, fabs(log(big[i])));
        if (err > worst) worst = err;
    }
    CHECKF(worst < 1e-15, "qd_log relative error %.3g", worst);
    CHECK(qd_log(1.0) == 0.0);
}

static void test_rng(void) {
    /* Known answers, from training/qdimd.py (a separate implementation of the same stream). */
    qd_rng r;
    qd_rng_init(&r, 0, 0);
    CHECK(qd_rng_next(&r) == 0xfb5405f7bd79c540ull);
    CHECK(qd_rng_next(&r) == 0x780c98e26cea5883ull);
    CHECK(qd_rng_next(&r) == 0x2a146e0980febc66ull);
    qd_rng_init(&r, 42, 7);
    CHECK(qd_rng_next(&r) == 0x91595b9054aaebffull);
    CHECK(qd_rng_next(&r) == 0xff82aa017b9a048aull);
    CHECK(qd_rng_uniform(&r) == 0.693400463479932);
    CHECK(qd_rng_below(&r, 1000) == 689);
    CHECK(qd_rng_normal(&r) == -1.2978600928967667);
    CHECK(qd_log(0.3) == -1.203972804325936);

    /* Streams of neighbouring indices and seeds differ. */
    qd_rng a, b;
    qd_rng_init(&a, 1, 0);
    qd_rng_init(&b, 1, 1);
    CHECK(qd_rng_next(&a) != qd_rng_next(&b));
    qd_rng_init(&a, 1, 0);
    qd_rng_init(&b, 2, 0);
    CHECK(qd_rng_next(&a) != qd_rng_next(&b));

    /* Moments of the uniform and normal draws, and the range of below(). */
    qd_rng_init(&r, 5, 5);
    enum { N = 200000 };
    double su = 0, sn = 0, sn2 = 0;
    long counts[7] = {0};
    int in_range = 1;
    for (int i = 0; i < N; i++) {
        double u = qd_rng_uniform(&r);
        in_range &= u >= 0 && u < 1;
        su += u;
        double z = qd_rng_normal(&r);
        sn += z;
        sn2 += z * z;
        uint64_t k = qd_rng_below(&r, 7);
        in_range &= k < 7;
        if (k < 7) counts[k]++;
    }
    CHECK(in_range);
    CHECKF(fabs(su / N - 0.5) < 0.005, "uniform mean %.4f", su / N);
    double mean = sn / N, sd = sqrt(sn2 / N - mean * mean);
    CHECKF(fabs(mean) < 0.01 && fabs(sd - 1) < 0.01, "normal mean %.4f sd %.4f", mean, sd);
    for (int k = 0; k < 7; k++) CHECKF(fabs(counts[k] / (double)N - 1 / 7.0) < 0.005, "below(7): %d has %ld", k, counts[k]);
    CHECK(qd_rng_below(&r, 1) == 0);
    uint64_t big = qd_rng_below(&r, UINT64_MAX);
    CHECK(big < UINT64_MAX);
}

/* Brute force: pixels whose centre is within r of the horizontal segment y = cy, x in [x0, x1]. */
static long brute_hseg(uint8_t *m, int size, double x0, double x1, double cy, double r) {
    long n = 0;
    for (int j = 0; j < size; j++)
        for (int i = 0; i < size; i++) {
            double px = i + 0.5, py = j + 0.5;
            double dx = px < x0 ? x0 - px : px > x1 ? px - x1 : 0;
            int in = dx * dx + (py - cy) * (py - cy) <= r * r;
            n += in;
            if (in != (m[j * size + i] == 255)) return -1;
        }
    return n;
}

static long count_set(const uint8_t *m, size_t n) {
    long k = 0;
    for (size_t i = 0; i < n; i++) k += m[i] != 0;
    return k;
}

static void test_raster(void) {
    enum { S = 64 };
    uint8_t m[S * S];
    memset(m, 0, sizeof m);
    qd_draw_segment(m, S, 10.5, 20.5, 30.5, 20.5, 2.0);
    long n = brute_hseg(m, S, 10.5, 30.5, 20.5, 2.0);
    CHECKF(n > 0, "horizontal segment differs from the brute force (%ld)", n);
    CHECK(m[20 * S + 8] == 255 && m[20 * S + 7] == 0 && m[18 * S + 10] == 255 && m[17 * S + 20] == 0);
    /* The same segment drawn backwards. */
    uint8_t m2[S * S];
    memset(m2, 0, sizeof m2);
    qd_draw_segment(m2, S, 30.5, 20.5, 10.5, 20.5, 2.0);
    CHECK(!memcmp(m, m2, sizeof m));
    /* A point is a disc: 29 pixel centres lie within 3 of a pixel centre. */
    memset(m, 0, sizeof m);
    qd_draw_segment(m, S, 5.5, 5.5, 5.5, 5.5, 3.0);
    CHECKF(count_set(m, sizeof m) == 29, "disc of radius 3: %ld pixels", count_set(m, sizeof m));
    /* A diagonal: every set pixel within the radius, the pixels along the line set. */
    memset(m, 0, sizeof m);
    qd_draw_segment(m, S, 0, 0, 64, 64, 1.0);
    int ok = 1;
    for (int i = 0; i < S; i++) ok &= m[i * S + i] == 255;
    for (int j = 0; j < S; j++)
        for (int i = 0; i < S; i++)
            if (m[j * S + i]) ok &= fabs((i + 0.5) - (j + 0.5)) / sqrt(2.0) <= 1.0;
    CHECK(ok);
    /* Clipped at the borders, and nothing at all far outside or with NaN. */
    memset(m, 0, sizeof m);
    qd_draw_segment(m, S, -10, 32, 100, 32, 4);
    CHECK(m[32 * S + 0] == 255 && m[32 * S + 63] == 255 && count_set(m, sizeof m) == 64 * 8);
    memset(m, 0, sizeof m);
    qd_draw_segment(m, S, 1e12, 1e12, 2e12, 3e12, 5);
    qd_draw_segment(m, S, -1e12, 5, -1e11, 5, 5);
    qd_draw_segment(m, S, NAN, 5, 5, 5, 5);
    CHECK(count_set(m, sizeof m) == 0);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void test_source(void) {
    char dir[] = "/tmp/test_qdimd_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0);
        return;
    }
    char pa[128], pb[128], pc[128], pbad[128];
    snprintf(pa, sizeof pa, "%s/a.ndjson", dir);
    snprintf(pb, sizeof pb, "%s/b.ndjson", dir);
    snprintf(pc, sizeof pc, "%s/notes.txt", dir);
    snprintf(pbad, sizeof pbad, "%s/c.ndjson", dir);

    qd_source *src = NULL;
    CHECK(qd_source_new(dir, &src) == SP_ERR_INVALID && src == NULL); /* no .ndjson yet */
    write_text(pa, "{\"word\":\"x\",\"drawing\":[[[0,255,128],[0,255,40]],[[],[]],[[100],[100]]]}\n"
                   "\n"
                   "{\"drawing\":[[[],[]]]}\r\n");
    write_text(pb, "{\"drawing\":[[[10,20,30,40],[200,190,180,170]]]}");
    write_text(pc, "not json");
    CHECK(qd_source_new(dir, &src) == SP_OK);
    CHECKF(qd_source_drawings(src) == 2 && qd_source_strokes(src) == 3, "%ld drawings %ld strokes",
           qd_source_drawings(src), qd_source_strokes(src));

    qd_params p;
    qd_params_default(&p);
    p.size = 64;
    p.seed = 99;
    uint8_t m1[64 * 64], m2[64 * 64], m3[64 * 64];
    CHECK(qd_generate(&p, src, 5, m1) == SP_OK);
    CHECK(qd_generate(&p, src, 6, m3) == SP_OK);
    CHECK(qd_generate(&p, src, 5, m2) == SP_OK);
    CHECK(!memcmp(m1, m2, sizeof m1)); /* index 5 alone, whatever came before */
    int binary = 1;
    for (size_t i = 0; i < sizeof m1; i++) binary &= m1[i] == 0 || m1[i] == 255;
    CHECK(binary && count_set(m1, sizeof m1) > 0);
    int differ = 0;
    for (uint64_t i = 0; i < 10 && !differ; i++) {
        CHECK(qd_generate(&p, src, 100 + i, m3) == SP_OK);
        differ = memcmp(m1, m3, sizeof m1) != 0;
    }
    CHECK(differ);
    p.seed = 100;
    CHECK(qd_generate(&p, src, 5, m3) == SP_OK && memcmp(m1, m3, sizeof m1));
    p.whole_drawings = 1;
    CHECK(qd_generate(&p, src, 5, m3) == SP_OK && count_set(m3, sizeof m3) > 0);
    p.whole_drawings = 0;

    /* Bad parameters. */
    qd_params q = p;
    q.width_min = 0;
    CHECK(qd_generate(&q, src, 0, m3) == SP_ERR_INVALID && strstr(sp_err_msg(), "width"));
    q = p;
    q.scale_max = 0.5;
    CHECK(qd_params_check(&q) == SP_ERR_INVALID);
    q = p;
    q.size = 4;
    CHECK(qd_params_check(&q) == SP_ERR_INVALID);
    q = p;
    q.strokes_std = NAN;
    CHECK(qd_params_check(&q) == SP_ERR_INVALID);
    CHECK(qd_generate(&p, NULL, 0, m3) == SP_ERR_INVALID);
    qd_source_free(src);
    qd_source_free(NULL);

    /* Malformed lines name the file and the line. */
    write_text(pbad, "{\"drawing\":[[[1,2],[3,4]]]}\n{\"drawing\":[[[1,2],[3]]]}\n");
    src = NULL;
    CHECK(qd_source_new(dir, &src) == SP_ERR_FORMAT && src == NULL);
    CHECKF(strstr(sp_err_msg(), "c.ndjson:2"), "message: %s", sp_err_msg());
    write_text(pbad, "{\"drawing\": oops\n");
    CHECK(qd_source_new(dir, &src) == SP_ERR_FORMAT && strstr(sp_err_msg(), "c.ndjson:1"));
    write_text(pbad, "{\"drawing\":[[[1,\"a\"],[3,4]]]}\n");
    CHECK(qd_source_new(dir, &src) == SP_ERR_FORMAT);
    unlink(pbad);
    char missing[160];
    snprintf(missing, sizeof missing, "%s/none", dir);
    CHECK(qd_source_new(missing, &src) == SP_ERR_IO && strstr(sp_err_msg(), "none"));
    unlink(pa);
    unlink(pb);
    unlink(pc);
    rmdir(dir);
}

static void test_real(void) {
    const char *data = t_data_dir("test_qdimd");
    if (!data) return;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/quickdraw/simplified", data);
    if (!t_exists(dir)) {
        printf("test_qdimd: SKIP real drawings (%s absent)\n", dir);
        return;
    }
    qd_source *src = NULL;
    double t0 = sp_now();
    CHECKF(qd_source_new(dir, &src) == SP_OK, "%s", sp_err_msg());
    if (!src) return;
    double t_load = sp_now() - t0;
    CHECK(qd_source_drawings(src) > 1000 && qd_source_strokes(src) > qd_source_drawings(src));
    qd_params p;
    qd_params_default(&p);
    uint8_t *m = malloc(256 * 256);
    double sum = 0, lo = 1, hi = 0;
    enum { N = 200 };
    t0 = sp_now();
    for (int i = 0; i < N; i++) {
        CHECK(qd_generate(&p, src, (uint64_t)i, m) == SP_OK);
        double r = qd_hole_ratio(m, 256 * 256);
        sum += r;
        lo = fmin(lo, r);
        hi = fmax(hi, r);
    }
    double dt = sp_now() - t0;
    CHECKF(lo > 0 && sum / N > 0.08 && sum / N < 0.3, "hole ratio mean %.3f min %.4f", sum / N, lo);
    printf("real drawings: %ld drawings loaded in %.2f s; %d masks at %.0f masks/s, hole ratio mean %.3f "
           "(min %.4f, max %.3f)\n",
           qd_source_drawings(src), t_load, N, N / dt, sum / N, lo, hi);
    free(m);
    qd_source_free(src);
}

int main(void) {
    test_log();
    test_rng();
    test_raster();
    test_source();
    test_real();
    return t_done("test_qdimd");
}
