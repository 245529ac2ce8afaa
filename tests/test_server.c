/* test_server.c: starts the real semipaintd on loopback and checks every route, both request forms, image sizes, bad inputs, auth, reload, concurrency, overload and SIGTERM under load. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "imaging/img.h"
#include "retrieval/rt.h"
#include "server/srv_request.h"
#include "tests/t.h"

#define FIX "tests/fixtures/small"
static char tmp[] = "/tmp/test_server.XXXXXX";
static const char *build_dir;

/* ---- a minimal HTTP/1.1 client (one request per connection) ---- */

typedef struct {
    int status;   /* 0 when no answer came */
    int sent;     /* the whole request went out */
    char head[8192];
    uint8_t *body;
    size_t len;
} resp;

static void resp_free(resp *r) {
    free(r->body);
    memset(r, 0, sizeof *r);
}

static int connect_port(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct timeval tv = {120, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n) {
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
        if (k <= 0) return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Reads the answer until the server closes; fills r. */
static void read_answer(int fd, resp *r) {
    size_t cap = 65536, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (n == cap) buf = realloc(buf, cap *= 2);
        ssize_t k = recv(fd, buf + n, cap - n, 0);
        if (k <= 0) break;
        n += (size_t)k;
    }
    uint8_t *end = n >= 4 ? memmem(buf, n, "\r\n\r\n", 4) : NULL;
    if (!end || sscanf((char *)buf, "HTTP/1.%*d %d", &r->status) != 1) {
        r->status = 0;
        free(buf);
        return;
    }
    size_t hl = (size_t)(end - buf) + 2;
    snprintf(r->head, sizeof r->head, "%.*s", (int)hl, (char *)buf);
    r->len = n - hl - 2;
    r->body = malloc(r->len + 1);
    memcpy(r->body, end + 4, r->len);
    r->body[r->len] = 0;
    free(buf);
}

/* One request; `headers` are extra lines each ending in \r\n (may be NULL). */
static void http(int port, const char *method, const char *path, const char *headers, const void *body, size_t len,
                 resp *r) {
    memset(r, 0, sizeof *r);
    int fd = connect_port(port);
    if (fd < 0) return;
    char head[2048];
    int hn = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s", method, path,
                      headers ? headers : "");
    if (body || !strcmp(method, "POST")) hn += snprintf(head + hn, sizeof head - hn, "Content-Length: %zu\r\n", len);
    hn += snprintf(head + hn, sizeof head - hn, "\r\n");
    if (send_all(fd, head, (size_t)hn) == 0 && (!len || send_all(fd, body, len) == 0)) r->sent = 1;
    read_answer(fd, r);
    close(fd);
}

/* Value of header `name` in r (static buffer), or NULL. */
static const char *header(const resp *r, const char *name) {
    static _Thread_local char v[2048];
    char pat[128];
    snprintf(pat, sizeof pat, "\r\n%s:", name);
    const char *p = strcasestr(r->head, pat);
    if (!p) return NULL;
    p += strlen(pat);
    while (*p == ' ') p++;
    size_t n = strcspn(p, "\r\n");
    snprintf(v, sizeof v, "%.*s", (int)n, p);
    return v;
}

static const char *error_code(const resp *r) {
    static _Thread_local char code[64];
    code[0] = 0;
    cJSON *j = r->body ? cJSON_Parse((const char *)r->body) : NULL;
    cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "code");
    if (cJSON_IsString(c)) snprintf(code, sizeof code, "%s", c->valuestring);
    cJSON_Delete(j);
    return code;
}

/* ---- request bodies ---- */

typedef struct {
    const char *name, *filename;
    const void *data;
    size_t len;
} part;

#define BOUNDARY "semipaint-test-7d3f"
static const char *MP_HEADER = "Content-Type: multipart/form-data; boundary=" BOUNDARY "\r\n";

static uint8_t *multipart(const part *p, int n, size_t *len) {
    size_t cap = 1024;
    for (int i = 0; i < n; i++) cap += p[i].len + 256;
    uint8_t *b = malloc(cap);
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        k += (size_t)sprintf((char *)b + k, "--" BOUNDARY "\r\nContent-Disposition: form-data; name=\"%s\"", p[i].name);
        if (p[i].filename) k += (size_t)sprintf((char *)b + k, "; filename=\"%s\"\r\nContent-Type: application/octet-stream", p[i].filename);
        k += (size_t)sprintf((char *)b + k, "\r\n\r\n");
        memcpy(b + k, p[i].data, p[i].len);
        k += p[i].len;
        k += (size_t)sprintf((char *)b + k, "\r\n");
    }
    k += (size_t)sprintf((char *)b + k, "--" BOUNDARY "--\r\n");
    *len = k;
    return b;
}

/* ---- images ---- */

typedef struct {
    uint8_t *data; /* encoded */
    size_t len;
    img_u8 px;     /* what the server decodes from data */
} enc_img;

static void enc_free(enc_img *e) {
    free(e->data);
    img_free(&e->px);
}

/* A w x h image with smooth gradients and a few shapes, seeded; c = 3 or 4 (alpha varies). */
static void synth(int w, int h, int c, unsigned seed, img_u8 *im) {
    img_alloc(im, w, h, c);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = im->px + ((size_t)y * w + x) * c;
            p[0] = (uint8_t)((x * 255 / (w > 1 ? w - 1 : 1) + seed * 37) & 255);
            p[1] = (uint8_t)((y * 255 / (h > 1 ? h - 1 : 1) + seed * 91) & 255);
            p[2] = (uint8_t)(((x / 9 + y / 7) % 2) * 120 + (seed * 13 & 127));
            if (c == 4) p[3] = (uint8_t)(128 + (x + y) % 128);
        }
}

static void encode(const img_u8 *im, img_format f, enc_img *e) {
    memset(e, 0, sizeof *e);
    img_encode(im, f, 90, &e->data, &e->len);
    img_format g;
    img_decode(e->data, e->len, 0, &e->px, &g);
}

/* A mask PNG with filled rectangles {x0,y0,x1,y1} as holes. */
static void mask_png(int w, int h, const int (*rects)[4], int n, enc_img *e) {
    img_u8 m;
    img_alloc(&m, w, h, 1);
    for (int i = 0; i < n; i++)
        for (int y = rects[i][1]; y < rects[i][3] && y < h; y++)
            for (int x = rects[i][0]; x < rects[i][2] && x < w; x++) m.px[(size_t)y * w + x] = 255;
    encode(&m, IMG_FMT_PNG, e);
    img_free(&m);
}

/* 1 when `out` (encoded answer) keeps every non-hole pixel of `in` (and its alpha) bit-exact. */
static int check_kept(const uint8_t *data, size_t len, const img_u8 *in, const img_u8 *mask, char *why, size_t cap) {
    img_u8 out;
    img_format f;
    if (img_decode(data, len, 0, &out, &f)) {
        snprintf(why, cap, "answer does not decode: %s", sp_err_msg());
        return 0;
    }
    int ok = 1;
    if (out.w != in->w || out.h != in->h) {
        snprintf(why, cap, "answer is %dx%d, input %dx%d", out.w, out.h, in->w, in->h);
        ok = 0;
    } else if (out.c != (in->c == 1 ? 3 : in->c)) {
        snprintf(why, cap, "answer has %d channels, input %d", out.c, in->c);
        ok = 0;
    } else {
        long diff = 0;
        for (size_t i = 0; i < (size_t)in->w * in->h; i++) {
            int hole = mask->px[i * mask->c] > 127;
            for (int k = 0; k < out.c; k++) {
                int a = out.px[i * out.c + k], b = in->px[i * in->c + (in->c == 1 ? 0 : k)];
                if ((!hole || k == 3) && a != b) diff++;
            }
        }
        if (diff) {
            snprintf(why, cap, "%ld known or alpha values changed", diff);
            ok = 0;
        }
    }
    img_free(&out);
    return ok;
}

/* ---- the daemon ---- */

typedef struct {
    pid_t pid;
    int port;
    char log[512];
} daemon_t;

static daemon_t *live[4];

static void kill_live(void) {
    for (int i = 0; i < 4; i++)
        if (live[i] && live[i]->pid > 0) kill(live[i]->pid, SIGKILL);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static char *read_text(const char *path) {
    uint8_t *b;
    size_t n;
    if (sp_read_file(path, &b, &n)) return strdup("");
    return (char *)b;
}

/* Starts semipaintd with config `yaml`; waits for /readyz. 0 on success. */
static int start(daemon_t *d, const char *name, const char *yaml) {
    memset(d, 0, sizeof *d);
    char cfg[512], bin[512];
    snprintf(cfg, sizeof cfg, "%s/%s.yaml", tmp, name);
    snprintf(d->log, sizeof d->log, "%s/%s.log", tmp, name);
    snprintf(bin, sizeof bin, "%s/semipaintd", build_dir);
    write_file(cfg, yaml);
    d->pid = fork();
    if (d->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        setenv("OMP_WAIT_POLICY", "PASSIVE", 0); /* as scripts/run.sh runs it */
        int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(bin, bin, "-c", cfg, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 4; i++)
        if (!live[i]) {
            live[i] = d;
            break;
        }
    for (int t = 0; t < 600 && !d->port; t++) {
        usleep(50000);
        char *log = read_text(d->log);
        const char *p = strstr(log, "(port ");
        if (p) d->port = atoi(p + 6);
        free(log);
        if (waitpid(d->pid, NULL, WNOHANG) == d->pid) break;
    }
    if (!d->port) return -1;
    for (int t = 0; t < 1200; t++) {
        resp r;
        http(d->port, "GET", "/readyz", NULL, NULL, 0, &r);
        int st = r.status;
        resp_free(&r);
        if (st == 200) return 0;
        usleep(100000);
    }
    return -1;
}

/* Sends `sig` and waits up to 120 s for the exit; returns the exit status (or -1). */
static int stop_daemon(daemon_t *d, int sig) {
    kill(d->pid, sig);
    for (int t = 0; t < 1200; t++) {
        int status;
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            d->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        usleep(100000);
    }
    return -1;
}

static int count_in_log(const daemon_t *d, const char *needle1, const char *needle2) {
    char *log = read_text(d->log);
    int n = 0;
    for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n"))
        if (strstr(line, needle1) && (!needle2 || strstr(line, needle2))) n++;
    free(log);
    return n;
}

/* ---- fixtures ---- */

/* A database of `n` synthetic images at size s with the thumb16 descriptor. */
static int make_db(const char *dir, int n, int s, int replace) {
    rt_descriptor *d;
    if (rt_descriptor_new("thumb16", NULL, &d)) return -1;
    int dim = rt_descriptor_dim(d);
    uint8_t *rgb = malloc((size_t)n * s * s * 3);
    float *chw = malloc(sizeof(float) * 3 * s * s * n), *desc = malloc(sizeof(float) * dim * n);
    char names[64][32];
    const char *np[64];
    for (int i = 0; i < n; i++) {
        img_u8 im;
        synth(s, s, 3, (unsigned)i + 100, &im);
        memcpy(rgb + (size_t)i * s * s * 3, im.px, (size_t)s * s * 3);
        img_to_chw(&im, chw + (size_t)i * 3 * s * s);
        img_free(&im);
        snprintf(names[i], sizeof names[i], "synth-%02d.png", i);
        np[i] = names[i];
    }
    rt_db_builder *b = NULL;
    int rc = rt_descriptor_compute(d, n, s, chw, desc) || rt_db_builder_new(dir, d, "Flat", s, replace, &b) ||
             rt_db_builder_add(b, n, rgb, desc, np) || rt_db_builder_finish(b);
    if (rc) fprintf(stderr, "make_db: %s\n", sp_err_msg());
    rt_db_builder_free(b);
    rt_descriptor_free(d);
    free(rgb);
    free(chw);
    free(desc);
    return rc ? -1 : 0;
}

/* ---- checks ---- */

/* Prints how long the previous phase took (the log of a slow run shows where the time went). */
static void phase(const char *name) {
    static double last;
    double now = sp_now();
    if (last > 0) printf("  %-28s %6.1f s\n", name, now - last);
    last = now;
}

/* POSTs an inpainting request as multipart; extra fields as name=value pairs. */
static void inpaint_mp(int port, const enc_img *im, const char *ifile, const enc_img *mask, const char *extra_headers,
                       const char *const *fields, int nf, resp *r) {
    part p[8] = {{"image", ifile, im->data, im->len}, {"mask", "mask.png", mask->data, mask->len}};
    int n = 2;
    for (int i = 0; i + 1 < nf * 2 && n < 8; i += 2, n++) p[n] = (part){fields[i], NULL, fields[i + 1], strlen(fields[i + 1])};
    size_t len;
    uint8_t *body = multipart(p, n, &len);
    char hdr[512];
    snprintf(hdr, sizeof hdr, "%s%s", MP_HEADER, extra_headers ? extra_headers : "");
    http(port, "POST", "/v1/inpaint", hdr, body, len, r);
    free(body);
}

static void check_ok_image(const resp *r, const char *what, const char *mime, const enc_img *in, const enc_img *mask) {
    char why[256] = "";
    CHECKF(r->status == 200, "%s: status %d %s", what, r->status, r->body ? (char *)r->body : "");
    if (r->status != 200) return;
    const char *ct = header(r, "Content-Type");
    CHECKF(ct && !strcmp(ct, mime), "%s: content type %s, want %s", what, ct ? ct : "-", mime);
    CHECKF(header(r, "X-Request-Id") != NULL, "%s: no X-Request-Id", what);
    CHECKF(header(r, "Server-Timing") && strstr(header(r, "Server-Timing"), "total;dur="), "%s: no Server-Timing", what);
    CHECKF(header(r, "X-Neighbors") != NULL, "%s: no X-Neighbors", what);
    CHECKF(check_kept(r->body, r->len, &in->px, &mask->px, why, sizeof why), "%s: %s", what, why);
}

static void test_routes(int port) {
    resp r;
    http(port, "GET", "/healthz", NULL, NULL, 0, &r);
    CHECK(r.status == 200 && strstr((char *)r.body, "ok") && header(&r, "X-Request-Id"));
    resp_free(&r);
    http(port, "HEAD", "/healthz", NULL, NULL, 0, &r);
    CHECK(r.status == 200 && r.len == 0);
    resp_free(&r);
    http(port, "GET", "/readyz", "X-Request-Id: my-id.42\r\n", NULL, 0, &r);
    CHECK(r.status == 200 && header(&r, "X-Request-Id") && !strcmp(header(&r, "X-Request-Id"), "my-id.42"));
    resp_free(&r);
    http(port, "GET", "/openapi.yaml", NULL, NULL, 0, &r);
    CHECK(r.status == 200 && r.len > 1000 && !strncmp((char *)r.body, "openapi: 3", 10));
    const char *paths[] = {"/v1/inpaint:", "/inpaint:", "/v1/images/{id}:", "/v1/index/images:", "/v1/admin/reload:",
                           "/v1/info:", "/healthz:", "/readyz:", "/metrics:", "/openapi.yaml:", "\n  /:"};
    for (size_t i = 0; r.body && i < sizeof paths / sizeof paths[0]; i++)
        CHECKF(strstr((char *)r.body, paths[i]), "openapi.yaml lacks %s", paths[i]);
    resp_free(&r);
    http(port, "GET", "/", NULL, NULL, 0, &r);
    CHECK(r.status == 200 && header(&r, "Content-Type") && strstr(header(&r, "Content-Type"), "text/html") &&
          r.body && strstr((char *)r.body, "<canvas"));
    resp_free(&r);
    http(port, "GET", "/v1/inpaint", NULL, NULL, 0, &r);
    CHECK(r.status == 405 && header(&r, "Allow") && !strcmp(header(&r, "Allow"), "POST"));
    resp_free(&r);
    http(port, "DELETE", "/v1/info", NULL, NULL, 0, &r);
    CHECK(r.status == 405);
    resp_free(&r);
    http(port, "GET", "/no/such/route", NULL, NULL, 0, &r);
    CHECK(r.status == 404 && !strcmp(error_code(&r), "not_found"));
    resp_free(&r);
}

static void test_info(int port, const char *mode, long count) {
    resp r;
    http(port, "GET", "/v1/info", NULL, NULL, 0, &r);
    CHECK(r.status == 200);
    cJSON *j = r.body ? cJSON_Parse((char *)r.body) : NULL;
    CHECKF(j && !strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "mode")), mode), "info: %s", r.body ? (char *)r.body : "");
    CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "working_size")) == 64);
    CHECK(cJSON_GetStringValue(cJSON_GetObjectItem(j, "version")) && cJSON_GetStringValue(cJSON_GetObjectItem(j, "backend")));
    cJSON *models = cJSON_GetObjectItem(j, "models");
    cJSON *coarse = cJSON_GetObjectItem(models, "coarse");
    CHECK(coarse && strlen(cJSON_GetStringValue(cJSON_GetObjectItem(coarse, "sha256"))) == 64);
    CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(coarse, "parameters")) > 1000);
    cJSON *db = cJSON_GetObjectItem(j, "database");
    if (count < 0) {
        CHECK(cJSON_IsNull(db) && cJSON_GetStringValue(cJSON_GetObjectItem(j, "note")) &&
              strstr(cJSON_GetStringValue(cJSON_GetObjectItem(j, "note")), "Sim-0"));
    } else {
        CHECKF(db && cJSON_GetNumberValue(cJSON_GetObjectItem(db, "count")) == count, "info count: %s", (char *)r.body);
        CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(db, "descriptor")), "thumb16"));
    }
    cJSON_Delete(j);
    resp_free(&r);
}

static void test_inpaint_forms(int port, int with_db) {
    img_u8 im;
    enc_img png, mask;
    synth(64, 64, 3, 1, &im);
    encode(&im, IMG_FMT_PNG, &png);
    img_free(&im);
    const int rect[][4] = {{20, 18, 44, 40}};
    mask_png(64, 64, rect, 1, &mask);
    resp r;
    /* multipart, image answer */
    inpaint_mp(port, &png, "a.png", &mask, NULL, NULL, 0, &r);
    check_ok_image(&r, "multipart 64x64", "image/png", &png, &mask);
    const char *timing = header(&r, "Server-Timing");
    const char *stages[] = {"decode;", "queue;", "coarse;", "refine;", "encode;", "total;", "descriptor;", "search;"};
    for (int i = 0; timing && i < (with_db ? 8 : 6); i++) CHECKF(strstr(timing, stages[i]), "Server-Timing lacks %s: %s", stages[i], timing);
    const char *nb = header(&r, "X-Neighbors");
    if (with_db) {
        long id = -1;
        float score = -2;
        CHECKF(nb && sscanf(nb, "%ld:%f", &id, &score) == 2 && id >= 0 && id < 24 && score >= -1.01f && score <= 1.01f,
               "X-Neighbors: %s", nb ? nb : "-");
    } else {
        CHECKF(nb && !strcmp(nb, "none"), "X-Neighbors without a database: %s", nb ? nb : "-");
    }
    resp_free(&r);
    /* the alias, methods, Accept: application/json */
    const char *coarse[] = {"method", "coarse"};
    inpaint_mp(port, &png, "a.png", &mask, NULL, coarse, 1, &r);
    check_ok_image(&r, "method coarse", "image/png", &png, &mask);
    CHECK(header(&r, "Server-Timing") && !strstr(header(&r, "Server-Timing"), "refine"));
    resp_free(&r);
    const char *telea[] = {"method", "telea", "format", "jpeg", "quality", "80"};
    inpaint_mp(port, &png, "a.png", &mask, NULL, telea, 3, &r);
    CHECKF(r.status == 200 && header(&r, "Content-Type") && !strcmp(header(&r, "Content-Type"), "image/jpeg") &&
           img_sniff(r.body, r.len) == IMG_FMT_JPEG, "telea as jpeg: %d", r.status);
    resp_free(&r);
    inpaint_mp(port, &png, "a.png", &mask, "Accept: application/json\r\n", NULL, 0, &r);
    cJSON *j = r.body ? cJSON_Parse((char *)r.body) : NULL;
    CHECKF(r.status == 200 && j && cJSON_GetNumberValue(cJSON_GetObjectItem(j, "width")) == 64 &&
           cJSON_IsArray(cJSON_GetObjectItem(j, "neighbors")) && cJSON_IsObject(cJSON_GetObjectItem(j, "timings_ms")) &&
           !strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "format")), "png"),
           "Accept: application/json: %d", r.status);
    if (with_db) CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(j, "neighbors")) >= 1);
    cJSON_Delete(j);
    resp_free(&r);
    /* JSON with base64 and a data URL, through the /inpaint alias */
    size_t n1, n2;
    char *b1 = srv_b64_encode(png.data, png.len, &n1), *b2 = srv_b64_encode(mask.data, mask.len, &n2);
    size_t cap = n1 + n2 + 256;
    char *body = malloc(cap);
    int bl = snprintf(body, cap, "{\"image\":\"%s\",\"mask\":\"data:image/png;base64,%s\",\"method\":\"sim\",\"format\":\"png\"}", b1, b2);
    http(port, "POST", "/inpaint", "Content-Type: application/json\r\n", body, (size_t)bl, &r);
    j = r.body ? cJSON_Parse((char *)r.body) : NULL;
    const char *img64 = cJSON_GetStringValue(cJSON_GetObjectItem(j, "image"));
    CHECKF(r.status == 200 && img64, "JSON request: %d %s", r.status, r.body ? (char *)r.body : "");
    if (img64) {
        uint8_t *dec;
        size_t dl;
        char why[256] = "";
        CHECK(srv_b64_decode(img64, strlen(img64), &dec, &dl) == SP_OK);
        CHECKF(check_kept(dec, dl, &png.px, &mask.px, why, sizeof why), "JSON answer: %s", why);
        free(dec);
    }
    cJSON_Delete(j);
    resp_free(&r);
    free(body);
    free(b1);
    free(b2);
    enc_free(&png);
    enc_free(&mask);
}

/* 256x256, 1000x750 RGBA with several holes (crops spanning batches), 3000x2000 JPEG. */
static void test_sizes(int port) {
    resp r;
    img_u8 im;
    enc_img e, m;
    synth(256, 256, 3, 2, &im);
    encode(&im, IMG_FMT_PNG, &e);
    img_free(&im);
    const int r256[][4] = {{100, 100, 140, 150}};
    mask_png(256, 256, r256, 1, &m);
    inpaint_mp(port, &e, "a.png", &m, NULL, NULL, 0, &r);
    check_ok_image(&r, "256x256", "image/png", &e, &m);
    resp_free(&r);
    enc_free(&e);
    enc_free(&m);

    synth(1000, 750, 4, 3, &im);
    encode(&im, IMG_FMT_PNG, &e);
    img_free(&im);
    const int r1000[][4] = {{10, 10, 40, 30}, {900, 20, 990, 90}, {400, 300, 600, 420}, {50, 650, 80, 745}, {700, 600, 760, 700}, {480, 40, 500, 60}};
    mask_png(1000, 750, r1000, 6, &m);
    inpaint_mp(port, &e, "rgba.png", &m, NULL, NULL, 0, &r);
    check_ok_image(&r, "1000x750 RGBA, 6 holes", "image/png", &e, &m);
    resp_free(&r);
    /* JPEG in, JPEG out; resize strategy is exercised by test_srv_plan */
    enc_free(&e);
    synth(1000, 750, 3, 4, &im);
    encode(&im, IMG_FMT_JPEG, &e);
    img_free(&im);
    inpaint_mp(port, &e, "photo.jpg", &m, NULL, NULL, 0, &r);
    CHECKF(r.status == 200 && img_sniff(r.body, r.len) == IMG_FMT_JPEG && header(&r, "Content-Type") &&
           !strcmp(header(&r, "Content-Type"), "image/jpeg"), "JPEG in -> JPEG out: %d", r.status);
    resp_free(&r);
    enc_free(&e);
    enc_free(&m);

    synth(3000, 2000, 3, 5, &im);
    encode(&im, IMG_FMT_JPEG, &e);
    img_free(&im);
    const int r3000[][4] = {{1000, 800, 1400, 1100}, {2800, 100, 2900, 160}};
    mask_png(3000, 2000, r3000, 2, &m);
    const char *png[] = {"format", "png"};
    inpaint_mp(port, &e, "big.jpg", &m, NULL, png, 1, &r);
    check_ok_image(&r, "3000x2000 JPEG -> PNG", "image/png", &e, &m);
    resp_free(&r);
    enc_free(&e);
    enc_free(&m);
}

static void expect(int port, const char *what, int status, const char *code, const resp *r);

/* A JPEG with an EXIF orientation of 6 (rotate 90 degrees clockwise): stored 64x32, shown 32x64. */
static void test_exif(int port) {
    img_u8 im;
    enc_img jpg, rot;
    synth(64, 32, 3, 12, &im);
    encode(&im, IMG_FMT_JPEG, &jpg);
    img_free(&im);
    static const uint8_t app1[] = {0xff, 0xe1, 0, 34, 'E', 'x', 'i', 'f', 0, 0, 'I', 'I', 0x2a, 0, 8, 0, 0, 0,
                                   1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0};
    memset(&rot, 0, sizeof rot);
    rot.len = jpg.len + sizeof app1;
    rot.data = malloc(rot.len);
    memcpy(rot.data, jpg.data, 2);
    memcpy(rot.data + 2, app1, sizeof app1);
    memcpy(rot.data + 2 + sizeof app1, jpg.data + 2, jpg.len - 2);
    img_format f;
    CHECK(img_decode(rot.data, rot.len, 0, &rot.px, &f) == SP_OK && rot.px.w == 32 && rot.px.h == 64);
    enc_img shown, stored;
    const int rect[][4] = {{8, 20, 24, 40}};
    mask_png(32, 64, rect, 1, &shown);
    mask_png(64, 32, rect, 1, &stored);
    resp r;
    const char *png[] = {"format", "png"};
    inpaint_mp(port, &rot, "exif.jpg", &shown, NULL, png, 1, &r);
    check_ok_image(&r, "EXIF-rotated JPEG with a mask of its shown size", "image/png", &rot, &shown);
    resp_free(&r);
    inpaint_mp(port, &rot, "exif.jpg", &stored, NULL, NULL, 0, &r);
    expect(port, "EXIF-rotated JPEG with a mask of its stored size", 422, "mask_size_mismatch", &r);
    resp_free(&r);
    enc_free(&jpg);
    enc_free(&rot);
    enc_free(&shown);
    enc_free(&stored);
}

/* A PNG whose IHDR claims w x h (valid CRC), followed by nothing else. */
static size_t huge_png_header(uint8_t *b, uint32_t w, uint32_t h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(b, sig, 8);
    uint8_t *c = b + 8;
    c[0] = 0, c[1] = 0, c[2] = 0, c[3] = 13;
    memcpy(c + 4, "IHDR", 4);
    uint8_t *d = c + 8;
    d[0] = (uint8_t)(w >> 24), d[1] = (uint8_t)(w >> 16), d[2] = (uint8_t)(w >> 8), d[3] = (uint8_t)w;
    d[4] = (uint8_t)(h >> 24), d[5] = (uint8_t)(h >> 16), d[6] = (uint8_t)(h >> 8), d[7] = (uint8_t)h;
    d[8] = 8, d[9] = 2, d[10] = 0, d[11] = 0, d[12] = 0;
    uint32_t crc = (uint32_t)crc32(0, c + 4, 17);
    uint8_t *e = d + 13;
    e[0] = (uint8_t)(crc >> 24), e[1] = (uint8_t)(crc >> 16), e[2] = (uint8_t)(crc >> 8), e[3] = (uint8_t)crc;
    return 8 + 25;
}

static void expect(int port, const char *what, int status, const char *code, const resp *r) {
    CHECKF(r->status == status && (!code || !strcmp(error_code(r), code)), "%s: got %d %s, want %d %s", what, r->status,
           r->body ? (char *)r->body : "", status, code ? code : "");
    resp h;
    http(port, "GET", "/healthz", NULL, NULL, 0, &h);
    CHECKF(h.status == 200, "the server stopped answering after: %s", what);
    resp_free(&h);
}

static void test_bad_inputs(int port, long max_body) {
    img_u8 im;
    enc_img png, jpg, mask, mask_small, mask_empty;
    synth(64, 64, 3, 6, &im);
    encode(&im, IMG_FMT_PNG, &png);
    encode(&im, IMG_FMT_JPEG, &jpg);
    img_free(&im);
    const int rect[][4] = {{10, 10, 30, 30}};
    mask_png(64, 64, rect, 1, &mask);
    mask_png(32, 32, rect, 1, &mask_small);
    mask_png(64, 64, rect, 0, &mask_empty);
    resp r;

    http(port, "POST", "/v1/inpaint", MP_HEADER, NULL, 0, &r);
    expect(port, "empty body", 400, "empty_body", &r);
    resp_free(&r);

    enc_img trunc = {jpg.data, jpg.len / 2, {0}};
    inpaint_mp(port, &trunc, "t.jpg", &mask, NULL, NULL, 0, &r);
    expect(port, "truncated JPEG", 400, "bad_image", &r);
    resp_free(&r);

    uint8_t huge[64];
    enc_img hp = {huge, huge_png_header(huge, 100000, 100000), {0}};
    inpaint_mp(port, &hp, "huge.png", &mask, NULL, NULL, 0, &r);
    expect(port, "PNG claiming 100000x100000", 413, "image_too_large", &r);
    resp_free(&r);

    enc_img text = {(uint8_t *)"this is not an image at all, just text", 38, {0}};
    inpaint_mp(port, &text, "x.txt", &mask, NULL, NULL, 0, &r);
    expect(port, "non-image bytes", 415, "unsupported_image", &r);
    resp_free(&r);

    inpaint_mp(port, &png, "a.png", &mask_small, NULL, NULL, 0, &r);
    expect(port, "mask of another size", 422, "mask_size_mismatch", &r);
    resp_free(&r);

    inpaint_mp(port, &png, "a.png", &mask_empty, NULL, NULL, 0, &r);
    expect(port, "empty mask", 422, "empty_mask", &r);
    resp_free(&r);

    const char *unknown[] = {"colour", "red"};
    inpaint_mp(port, &png, "a.png", &mask, NULL, unknown, 1, &r);
    expect(port, "unknown field", 422, "unknown_field", &r);
    resp_free(&r);
    const char *uj = "{\"image\":\"QUJD\",\"mask\":\"QUJD\",\"strength\":3}";
    http(port, "POST", "/v1/inpaint", "Content-Type: application/json\r\n", uj, strlen(uj), &r);
    expect(port, "unknown JSON field", 422, "unknown_field", &r);
    resp_free(&r);

    http(port, "POST", "/v1/inpaint", "Content-Type: text/plain\r\n", "hello", 5, &r);
    expect(port, "wrong content type", 415, "unsupported_media_type", &r);
    resp_free(&r);
    http(port, "POST", "/v1/inpaint", NULL, "hello", 5, &r);
    expect(port, "no content type", 415, "unsupported_media_type", &r);
    resp_free(&r);

    /* over the limit, declared: answered from the headers, the body never sent */
    {
        int fd = connect_port(port);
        char head[512];
        int n = snprintf(head, sizeof head, "POST /v1/inpaint HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%sContent-Length: %ld\r\n\r\n",
                         MP_HEADER, max_body + 1);
        memset(&r, 0, sizeof r);
        if (fd >= 0 && send_all(fd, head, (size_t)n) == 0) read_answer(fd, &r);
        if (fd >= 0) close(fd);
        expect(port, "body over the limit (Content-Length)", 413, "body_too_large", &r);
        resp_free(&r);
    }
    /* over the limit, chunked: counted while it arrives */
    {
        int fd = connect_port(port);
        char head[512];
        int n = snprintf(head, sizeof head, "POST /v1/inpaint HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%sTransfer-Encoding: chunked\r\n\r\n", MP_HEADER);
        size_t chunk = 1 << 20;
        char *data = malloc(chunk + 64);
        int ln = sprintf(data, "%zx\r\n", chunk);
        memset(data + ln, 'x', chunk);
        memcpy(data + ln + chunk, "\r\n", 2);
        int ok = fd >= 0 && send_all(fd, head, (size_t)n) == 0;
        for (long sent = 0; ok && sent <= max_body; sent += (long)chunk) ok = send_all(fd, data, (size_t)ln + chunk + 2) == 0;
        if (ok) send_all(fd, "0\r\n\r\n", 5);
        memset(&r, 0, sizeof r);
        if (fd >= 0) read_answer(fd, &r);
        if (fd >= 0) close(fd);
        free(data);
        expect(port, "body over the limit (chunked)", 413, "body_too_large", &r);
        resp_free(&r);
    }

    const char *bad_mp = "--" BOUNDARY "\r\nthis is not a header block\r\n\r\nxx\r\n--" BOUNDARY "--\r\n";
    http(port, "POST", "/v1/inpaint", MP_HEADER, bad_mp, strlen(bad_mp), &r);
    expect(port, "malformed multipart", 400, "malformed_multipart", &r);
    resp_free(&r);
    const char *unterminated = "--" BOUNDARY "\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc";
    http(port, "POST", "/v1/inpaint", MP_HEADER, unterminated, strlen(unterminated), &r);
    expect(port, "multipart without its closing boundary", 400, "malformed_multipart", &r);
    resp_free(&r);

    const char *b64 = "{\"image\":\"@@@not base64@@@\",\"mask\":\"QUJD\"}";
    http(port, "POST", "/v1/inpaint", "Content-Type: application/json\r\n", b64, strlen(b64), &r);
    expect(port, "invalid base64", 400, "invalid_base64", &r);
    resp_free(&r);
    http(port, "POST", "/v1/inpaint", "Content-Type: application/json\r\n", "{\"image\": [", 11, &r);
    expect(port, "malformed JSON", 400, "malformed_json", &r);
    resp_free(&r);

    enc_free(&png);
    enc_free(&jpg);
    enc_free(&mask);
    enc_free(&mask_small);
    enc_free(&mask_empty);
}

/* A client that sends half a body and stops: the server closes it after its idle timeout and goes on serving. */
static void test_slow_client(int port, double idle_s) {
    int fd = connect_port(port);
    CHECK(fd >= 0);
    if (fd < 0) return;
    const char *head = "POST /v1/inpaint HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=" BOUNDARY
                       "\r\nContent-Length: 100000\r\n\r\n--" BOUNDARY "\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc";
    double t0 = sp_now();
    CHECK(send_all(fd, head, strlen(head)) == 0);
    resp r;
    memset(&r, 0, sizeof r);
    read_answer(fd, &r); /* returns when the server closes */
    double waited = sp_now() - t0;
    close(fd);
    CHECKF(waited >= idle_s * 0.8 && waited < idle_s + 10, "slow client closed after %.1f s (idle timeout %.1f s)", waited, idle_s);
    CHECKF(r.status == 0 || (r.status >= 400 && r.status < 500), "slow client got %d", r.status);
    resp_free(&r);
    resp h;
    http(port, "GET", "/healthz", NULL, NULL, 0, &h);
    CHECK(h.status == 200);
    resp_free(&h);
}

static void test_images_route(int port) {
    resp r;
    http(port, "GET", "/v1/images/3", NULL, NULL, 0, &r);
    CHECK(r.status == 200 && header(&r, "Content-Type") && !strcmp(header(&r, "Content-Type"), "image/jpeg"));
    img_u8 im;
    img_format f;
    CHECK(r.status == 200 && img_decode(r.body, r.len, 0, &im, &f) == SP_OK && im.w == 64 && im.h == 64);
    if (r.status == 200) img_free(&im);
    resp_free(&r);
    http(port, "GET", "/v1/images/999999", NULL, NULL, 0, &r);
    CHECK(r.status == 404);
    resp_free(&r);
    http(port, "GET", "/v1/images/-1", NULL, NULL, 0, &r);
    CHECK(r.status == 404);
    resp_free(&r);
    http(port, "GET", "/v1/images/abc", NULL, NULL, 0, &r);
    CHECK(r.status == 404);
    resp_free(&r);
}

/* ---- concurrency ---- */

typedef struct {
    int port, id, rounds;
    atomic_int *stop;
    int ok, busy, other, refused, lost, wrong;
    char why[256];
} client;

static void *client_main(void *arg) {
    client *c = arg;
    img_u8 im;
    enc_img png, mask;
    synth(64, 64, 3, 200 + (unsigned)c->id, &im);
    encode(&im, IMG_FMT_PNG, &png);
    img_free(&im);
    int rect[1][4] = {{5 + c->id % 20, 8, 30 + c->id % 20, 40}};
    mask_png(64, 64, (const int(*)[4])rect, 1, &mask);
    for (int i = 0; c->stop ? !atomic_load(c->stop) : i < c->rounds; i++) {
        resp r;
        inpaint_mp(c->port, &png, "c.png", &mask, NULL, NULL, 0, &r);
        if (r.status == 200) {
            char why[256];
            if (check_kept(r.body, r.len, &png.px, &mask.px, why, sizeof why)) c->ok++;
            else c->wrong++, snprintf(c->why, sizeof c->why, "%s", why);
        } else if (r.status == 503) {
            c->busy++;
        } else if (r.status) {
            c->other++;
            snprintf(c->why, sizeof c->why, "status %d: %s", r.status, r.body ? (char *)r.body : "");
        } else if (!r.sent) {
            c->refused++;
            usleep(20000);
        } else {
            c->lost++;
        }
        resp_free(&r);
    }
    enc_free(&png);
    enc_free(&mask);
    return NULL;
}

static void test_admin(int port, const char *token, const daemon_t *d, const char *db) {
    img_u8 im;
    enc_img a, b;
    synth(100, 80, 3, 40, &im);
    encode(&im, IMG_FMT_PNG, &a);
    img_free(&im);
    synth(64, 64, 3, 41, &im);
    encode(&im, IMG_FMT_JPEG, &b);
    img_free(&im);
    part p[2] = {{"image", "new-a.png", a.data, a.len}, {"image", "new-b.jpg", b.data, b.len}};
    size_t len;
    uint8_t *body = multipart(p, 2, &len);
    resp r;
    http(port, "POST", "/v1/index/images", MP_HEADER, body, len, &r);
    expect(port, "index without a token", 401, "unauthorized", &r);
    CHECK(header(&r, "WWW-Authenticate") != NULL);
    resp_free(&r);
    char hdr[512];
    snprintf(hdr, sizeof hdr, "%sAuthorization: Bearer wrong-token-wrong-token\r\n", MP_HEADER);
    http(port, "POST", "/v1/index/images", hdr, body, len, &r);
    expect(port, "index with a wrong token", 403, "forbidden", &r);
    resp_free(&r);
    snprintf(hdr, sizeof hdr, "%sAuthorization: Bearer %s\r\n", MP_HEADER, token);
    http(port, "POST", "/v1/index/images", hdr, body, len, &r);
    cJSON *j = r.body ? cJSON_Parse((char *)r.body) : NULL;
    cJSON *ids = cJSON_GetObjectItem(j, "ids");
    CHECKF(r.status == 200 && cJSON_GetArraySize(ids) == 2 && cJSON_GetNumberValue(cJSON_GetArrayItem(ids, 0)) == 24 &&
           cJSON_GetNumberValue(cJSON_GetObjectItem(j, "count")) == 26, "index add: %d %s", r.status, r.body ? (char *)r.body : "");
    cJSON_Delete(j);
    resp_free(&r);
    free(body);
    test_info(port, "sim1", 26);
    http(port, "GET", "/v1/images/25", NULL, NULL, 0, &r);
    CHECK(r.status == 200);
    resp_free(&r);
    /* reload by route and by SIGHUP, while requests are being served: none is dropped */
    client cl[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        cl[i] = (client){.port = port, .id = 50 + i, .rounds = 2};
        pthread_create(&th[i], NULL, client_main, &cl[i]);
    }
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", token);
    http(port, "POST", "/v1/admin/reload", hdr, NULL, 0, &r);
    CHECKF(r.status == 200 && strstr((char *)r.body, "\"count\":26"), "reload: %d %s", r.status, r.body ? (char *)r.body : "");
    resp_free(&r);
    http(port, "POST", "/v1/admin/reload", NULL, NULL, 0, &r);
    CHECK(r.status == 401);
    resp_free(&r);
    int before = count_in_log(d, "database reloaded", NULL);
    kill(d->pid, SIGHUP);
    for (int t = 0; t < 100 && count_in_log(d, "database reloaded", NULL) == before; t++) usleep(100000);
    CHECK(count_in_log(d, "database reloaded", NULL) == before + 1);
    int ok = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ok += cl[i].ok;
    }
    CHECKF(ok == 8, "requests during the reloads: %d of 8 answered correctly", ok);
    test_info(port, "sim1", 26);
    /* The database rebuilt under the daemon (as `semipaint index build --force` does): the next
     * add follows the new directory instead of writing the old generation into it. */
    CHECK(make_db(db, 10, 64, 1) == 0);
    body = multipart(p, 2, &len);
    snprintf(hdr, sizeof hdr, "%sAuthorization: Bearer %s\r\n", MP_HEADER, token);
    http(port, "POST", "/v1/index/images", hdr, body, len, &r);
    j = r.body ? cJSON_Parse((char *)r.body) : NULL;
    ids = cJSON_GetObjectItem(j, "ids");
    CHECKF(r.status == 200 && cJSON_GetNumberValue(cJSON_GetArrayItem(ids, 0)) == 10 &&
               cJSON_GetNumberValue(cJSON_GetObjectItem(j, "count")) == 12,
           "index add after a rebuild: %d %s", r.status, r.body ? (char *)r.body : "");
    cJSON_Delete(j);
    resp_free(&r);
    free(body);
    test_info(port, "sim1", 12);
    enc_free(&a);
    enc_free(&b);
}

static void test_concurrent(int port) {
    client c[32];
    pthread_t th[32];
    for (int i = 0; i < 32; i++) {
        c[i] = (client){.port = port, .id = i, .rounds = 1};
        pthread_create(&th[i], NULL, client_main, &c[i]);
    }
    int ok = 0, bad = 0;
    for (int i = 0; i < 32; i++) {
        pthread_join(th[i], NULL);
        ok += c[i].ok;
        bad += c[i].busy + c[i].other + c[i].refused + c[i].lost + c[i].wrong;
        if (c[i].wrong || c[i].other) fprintf(stderr, "client %d: %s\n", i, c[i].why);
    }
    CHECKF(ok == 32 && bad == 0, "32 concurrent clients: %d correct answers of 32", ok);
}

/* Clients keep sending; SIGTERM in the middle: every request the server accepted is answered 200. */
static void test_sigterm_under_load(daemon_t *d) {
    atomic_int stop = 0;
    client c[12];
    pthread_t th[12];
    int base = count_in_log(d, "route\":\"/v1/inpaint\"", "\"status\":200");
    for (int i = 0; i < 12; i++) {
        c[i] = (client){.port = d->port, .id = i, .stop = &stop};
        pthread_create(&th[i], NULL, client_main, &c[i]);
    }
    sleep(2);
    int rc = stop_daemon(d, SIGTERM);
    atomic_store(&stop, 1);
    int ok = 0, busy = 0, other = 0, lost = 0, wrong = 0;
    for (int i = 0; i < 12; i++) {
        pthread_join(th[i], NULL);
        ok += c[i].ok, busy += c[i].busy, other += c[i].other, lost += c[i].lost, wrong += c[i].wrong;
    }
    int served = count_in_log(d, "route\":\"/v1/inpaint\"", "\"status\":200") - base;
    int cut = count_in_log(d, "shutting_down", NULL);
    CHECKF(rc == 0, "exit status after SIGTERM: %d", rc);
    CHECKF(ok > 0 && ok == served, "clients got %d answers 200, the server logged %d", ok, served);
    CHECKF(other == 0 && wrong == 0 && cut == 0, "other %d wrong %d cut %d", other, wrong, cut);
    printf("SIGTERM under load: %d answered 200, %d answered 503 while draining, %d connections reset before the "
           "server accepted them\n", ok, busy, lost);
    CHECK(count_in_log(d, "draining", NULL) >= 1 && count_in_log(d, "stopped after", NULL) == 1);
}

/* A tiny queue: some requests are shed with 503 and Retry-After, the others answered. */
static void test_overload(int port) {
    client c[12];
    pthread_t th[12];
    for (int i = 0; i < 12; i++) {
        c[i] = (client){.port = port, .id = i, .rounds = 1};
        pthread_create(&th[i], NULL, client_main, &c[i]);
    }
    int ok = 0, busy = 0, other = 0;
    for (int i = 0; i < 12; i++) {
        pthread_join(th[i], NULL);
        ok += c[i].ok, busy += c[i].busy, other += c[i].other + c[i].wrong + c[i].lost + c[i].refused;
    }
    CHECKF(ok >= 1 && busy >= 1 && other == 0, "overload: %d ok, %d shed, %d other", ok, busy, other);
    img_u8 im;
    enc_img png, mask;
    synth(64, 64, 3, 9, &im);
    encode(&im, IMG_FMT_PNG, &png);
    img_free(&im);
    const int rect[][4] = {{1, 1, 9, 9}};
    mask_png(64, 64, rect, 1, &mask);
    /* keep the queue full from threads and probe until a 503 carrying Retry-After is seen */
    int seen = 0;
    for (int attempt = 0; attempt < 3 && !seen; attempt++) {
        for (int i = 0; i < 12; i++) {
            c[i] = (client){.port = port, .id = i, .rounds = 3};
            pthread_create(&th[i], NULL, client_main, &c[i]);
        }
        for (int probe = 0; probe < 40 && !seen; probe++) {
            resp r;
            inpaint_mp(port, &png, "a.png", &mask, NULL, NULL, 0, &r);
            if (r.status == 503) {
                seen = 1;
                CHECKF(header(&r, "Retry-After") && atoi(header(&r, "Retry-After")) >= 1, "503 without Retry-After");
                CHECK(!strcmp(error_code(&r), "overloaded"));
            }
            resp_free(&r);
        }
        for (int i = 0; i < 12; i++) pthread_join(th[i], NULL);
    }
    CHECK(seen);
    resp m;
    http(port, "GET", "/metrics", NULL, NULL, 0, &m);
    const char *q = m.body ? strstr((char *)m.body, "semipaint_rejected_total{reason=\"queue_full\"} ") : NULL;
    const char *o = m.body ? strstr((char *)m.body, "semipaint_rejected_total{reason=\"overload\"} ") : NULL;
    CHECKF(q && o && atoi(q + 46) + atoi(o + 44) >= 1, "no load shedding counted in semipaint_rejected_total");
    resp_free(&m);
    enc_free(&png);
    enc_free(&mask);
}

static void test_metrics(int port) {
    resp r;
    http(port, "GET", "/metrics", NULL, NULL, 0, &r);
    CHECK(r.status == 200 && header(&r, "Content-Type") && strstr(header(&r, "Content-Type"), "text/plain"));
    const char *names[] = {
        "semipaint_http_requests_total{route=\"/v1/inpaint\",code=\"200\"}",
        "semipaint_http_request_duration_seconds_bucket{route=\"/v1/inpaint\",le=\"+Inf\"}",
        "semipaint_stage_duration_seconds_bucket{stage=\"decode\"",
        "semipaint_stage_duration_seconds_bucket{stage=\"queue\"",
        "semipaint_stage_duration_seconds_bucket{stage=\"coarse\"",
        "semipaint_stage_duration_seconds_bucket{stage=\"descriptor\"",
        "semipaint_stage_duration_seconds_bucket{stage=\"search\"",
        "semipaint_stage_duration_seconds_bucket{stage=\"refine\"",
        "semipaint_stage_duration_seconds_bucket{stage=\"encode\"",
        "semipaint_batch_size_count ",
        "semipaint_queue_depth ",
        "semipaint_inflight_requests ",
        "semipaint_rejected_total{reason=\"queue_full\"}",
        "semipaint_index_images{model=\"faces\"} 24",
        "semipaint_build_info{version=\"" SP_VERSION "\",backend=\"cpu\"} 1",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_start_time_seconds ",
    };
    for (size_t i = 0; r.body && i < sizeof names / sizeof names[0]; i++)
        CHECKF(strstr((char *)r.body, names[i]), "metrics lack %s", names[i]);
    resp_free(&r);
}

/* Every request line of the JSON log parses and names id, route, status, bytes and timings. */
static void test_log(const daemon_t *d) {
    char *log = read_text(d->log);
    int lines = 0, good = 0, timed = 0;
    for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        CHECKF(j != NULL, "log line is not JSON: %.200s", line);
        if (j && !strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "msg")), "request")) {
            lines++;
            good += cJSON_GetStringValue(cJSON_GetObjectItem(j, "request_id")) && cJSON_GetStringValue(cJSON_GetObjectItem(j, "route")) &&
                    cJSON_IsNumber(cJSON_GetObjectItem(j, "status")) && cJSON_IsNumber(cJSON_GetObjectItem(j, "bytes_in")) &&
                    cJSON_IsNumber(cJSON_GetObjectItem(j, "bytes_out"));
            cJSON *t = cJSON_GetObjectItem(j, "timings_ms");
            timed += t && cJSON_IsNumber(cJSON_GetObjectItem(t, "refine"));
        }
        cJSON_Delete(j);
    }
    free(log);
    CHECKF(lines > 50 && good == lines && timed > 10, "log: %d request lines, %d complete, %d with stage timings", lines, good, timed);
}

int main(void) {
    build_dir = getenv("BUILD") ? getenv("BUILD") : "build";
    char bin[512];
    snprintf(bin, sizeof bin, "%s/semipaintd", build_dir);
    if (!t_exists(bin) || !t_exists(FIX "/pconv_unet.safetensors")) {
        printf("test_server: SKIP (%s or the fixtures are missing)\n", bin);
        return 0;
    }
    if (!mkdtemp(tmp)) return 1;
    atexit(kill_live);
    signal(SIGPIPE, SIG_IGN);

    char db[600], token_path[600], yaml[4096];
    snprintf(db, sizeof db, "%s/db", tmp);
    snprintf(token_path, sizeof token_path, "%s/token", tmp);
    const char *token = "test-token-0123456789abcdef";
    write_file(token_path, "test-token-0123456789abcdef\n");
    CHECK(chmod(token_path, 0600) == 0); /* semipaintd refuses a token others may read */
    CHECK(make_db(db, 24, 64, 0) == 0);

    /* A: Sim-1 with the database, admin routes on */
    static daemon_t a;
    long max_body = 16L << 20;
    snprintf(yaml, sizeof yaml,
             "server: {listen: \"127.0.0.1:0\", http_threads: 4, max_body_bytes: %ld, max_image_pixels: 7000000,\n"
             "         request_timeout_ms: 120000, shutdown_grace_ms: 60000, auth_token_file: \"%s\"}\n"
             "batching: {max_batch: 8, max_delay_ms: 20, queue_capacity: 128}\n"
             "model: {coarse: %s/pconv_unet.safetensors, refine: %s/simk_unet_k1.safetensors, cpu_threads: 2}\n"
             "retrieval: {database: \"%s\"}\n"
             "inpaint: {crop_margin: 16}\n"
             "logging: {format: json}\n",
             max_body, token_path, FIX, FIX, db);
    phase("start");
    if (start(&a, "sim1", yaml)) {
        CHECKF(0, "semipaintd did not start; its log:\n%s", read_text(a.log));
        return t_done("test_server");
    }
    phase("start sim1");
    test_routes(a.port);
    phase("test_routes");
    test_info(a.port, "sim1", 24);
    phase("test_info");
    test_inpaint_forms(a.port, 1);
    phase("test_inpaint_forms");
    test_images_route(a.port);
    phase("test_images_route");
    test_metrics(a.port);
    phase("test_metrics");
    test_bad_inputs(a.port, max_body);
    phase("test_bad_inputs");
    test_sizes(a.port);
    phase("test_sizes");
    test_exif(a.port);
    phase("test_exif");
    test_concurrent(a.port);
    phase("test_concurrent");
    test_admin(a.port, token, &a, db);
    phase("test_admin");
    test_log(&a);
    phase("test_log");
    test_sigterm_under_load(&a);
    phase("test_sigterm_under_load");

    /* B: Sim-0 without a database, a tiny queue */
    static daemon_t b;
    snprintf(yaml, sizeof yaml,
             "server: {listen: \"127.0.0.1:0\", http_threads: 2, request_timeout_ms: 60000, shutdown_grace_ms: 30000}\n"
             "batching: {max_batch: 1, max_delay_ms: 0, queue_capacity: 2}\n"
             "model: {coarse: %s/pconv_unet.safetensors, refine_fallback: %s/simk_unet_k0.safetensors, cpu_threads: 1}\n"
             "logging: {format: text}\n",
             FIX, FIX);
    if (start(&b, "sim0", yaml)) {
        CHECKF(0, "semipaintd (Sim-0) did not start; its log:\n%s", read_text(b.log));
        return t_done("test_server");
    }
    test_info(b.port, "sim0", -1);
    test_inpaint_forms(b.port, 0);
    phase("test_inpaint_forms");
    resp r;
    http(b.port, "POST", "/v1/index/images", MP_HEADER, "x", 1, &r);
    CHECK(r.status == 403 && !strcmp(error_code(&r), "disabled"));
    resp_free(&r);
    http(b.port, "POST", "/v1/admin/reload", NULL, NULL, 0, &r);
    CHECK(r.status == 403);
    resp_free(&r);
    test_overload(b.port);
    phase("test_overload");
    CHECK(stop_daemon(&b, SIGTERM) == 0);

    /* C: a short idle timeout for the client that stops mid-body */
    static daemon_t c;
    snprintf(yaml, sizeof yaml,
             "server: {listen: \"127.0.0.1:0\", http_threads: 1, request_timeout_ms: 1500}\n"
             "model: {coarse: %s/pconv_unet.safetensors, refine_fallback: %s/simk_unet_k0.safetensors, cpu_threads: 1}\n",
             FIX, FIX);
    if (start(&c, "slow", yaml)) {
        CHECKF(0, "semipaintd (slow client) did not start; its log:\n%s", read_text(c.log));
        return t_done("test_server");
    }
    test_slow_client(c.port, 2.0);
    phase("test_slow_client");
    CHECK(stop_daemon(&c, SIGTERM) == 0);

    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (!t_failures && !getenv("SEMIPAINT_KEEP_TMP") && system(cmd)) fprintf(stderr, "could not remove %s\n", tmp);
    if (t_failures) fprintf(stderr, "logs kept in %s\n", tmp);
    return t_done("test_server");
}
