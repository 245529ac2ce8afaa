/* sp.c: errors, logging, clocks, file helpers, SHA-256 and progress lines shared by every module. */
#include "common/sp.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char err_buf[1024];

sp_status sp_err(sp_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return st;
}

sp_status sp_err_wrap(sp_status st, const char *fmt, ...) {
    char prefix[512], old[sizeof err_buf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_buf, sizeof old);
    size_t k = strlen(prefix);
    memcpy(err_buf, prefix, k);
    memcpy(err_buf + k, ": ", 2);
    size_t room = sizeof err_buf - k - 3, ol = strlen(old);
    if (ol > room) ol = room;
    memcpy(err_buf + k + 2, old, ol);
    err_buf[k + 2 + ol] = 0;
    return st;
}

const char *sp_err_msg(void) { return err_buf; }

const char *sp_status_name(sp_status st) {
    switch (st) {
    case SP_OK: return "ok";
    case SP_ERR_IO: return "io";
    case SP_ERR_FORMAT: return "format";
    case SP_ERR_INVALID: return "invalid";
    case SP_ERR_NOMEM: return "nomem";
    case SP_ERR_UNSUPPORTED: return "unsupported";
    case SP_ERR_BACKEND: return "backend";
    case SP_ERR_LIMIT: return "limit";
    case SP_ERR_TIMEOUT: return "timeout";
    case SP_ERR_BUSY: return "busy";
    case SP_ERR_STALE: return "stale";
    }
    return "unknown";
}

/* ---- logging ---- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static sp_log_level log_min = SP_LOG_INFO;
static int log_json = 0;
static const char *level_names[] = {"debug", "info", "warn", "error"};

void sp_log_configure(sp_log_level min_level, int json) {
    log_min = min_level;
    log_json = json;
}

int sp_log_level_parse(const char *s) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0) return i;
    return -1;
}

static void log_time(char *buf, size_t n) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + k, n - k, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* Appends `s` to `out` as the inside of a JSON string (quotes and control bytes escaped). */
static size_t json_escape(char *out, size_t cap, const char *s) {
    size_t k = 0;
    for (; *s && k + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[k++] = '\\';
            out[k++] = (char)c;
        } else if (c < 0x20) {
            k += (size_t)snprintf(out + k, cap - k, "\\u%04x", c);
        } else {
            out[k++] = (char)c;
        }
    }
    out[k] = 0;
    return k;
}

static void log_emit(sp_log_level level, const char *msg, int nkv, va_list ap) {
    char ts[40], line[8192];
    size_t k = 0;
    log_time(ts, sizeof ts);
    if (log_json) {
        char esc[4096];
        json_escape(esc, sizeof esc, msg);
        k += (size_t)snprintf(line + k, sizeof line - k, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\"",
                              ts, level_names[level], esc);
        for (int i = 0; i < nkv && k < sizeof line; i++) {
            const char *key = va_arg(ap, const char *);
            const char *val = va_arg(ap, const char *);
            k += (size_t)snprintf(line + k, sizeof line - k, ",\"%s\":%s", key, val);
        }
        if (k < sizeof line) k += (size_t)snprintf(line + k, sizeof line - k, "}");
    } else {
        k += (size_t)snprintf(line + k, sizeof line - k, "%s %-5s %s", ts, level_names[level], msg);
        for (int i = 0; i < nkv && k < sizeof line; i++) {
            const char *key = va_arg(ap, const char *);
            const char *val = va_arg(ap, const char *);
            k += (size_t)snprintf(line + k, sizeof line - k, " %s=%s", key, val);
        }
    }
    if (k >= sizeof line) k = sizeof line - 1;
    pthread_mutex_lock(&log_mu);
    fwrite(line, 1, k, stderr);
    fputc('\n', stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_mu);
}

static void log_kv_wrap(sp_log_level level, const char *msg, int nkv, ...) {
    va_list ap;
    va_start(ap, nkv);
    log_emit(level, msg, nkv, ap);
    va_end(ap);
}

void sp_log(sp_log_level level, const char *fmt, ...) {
    if (level < log_min) return;
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_kv_wrap(level, msg, 0);
}

void sp_log_kv(sp_log_level level, const char *msg, int nkv, ...) {
    if (level < log_min) return;
    va_list ap;
    va_start(ap, nkv);
    log_emit(level, msg, nkv, ap);
    va_end(ap);
}

void sp_assert_fail(const char *file, int line, const char *expr) {
    fprintf(stderr, "%s:%d: assertion failed: %s\n", file, line, expr);
    abort();
}

double sp_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double sp_wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void *sp_aligned_alloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return NULL;
    return p;
}

/* ---- files ---- */

sp_status sp_read_file(const char *path, uint8_t **out, size_t *len) {
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return sp_err(SP_ERR_IO, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap + 1);
    if (!buf) {
        fclose(f);
        return sp_err(SP_ERR_NOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                fclose(f);
                return sp_err(SP_ERR_NOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return sp_err(SP_ERR_IO, "%s: read error", path);
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return SP_OK;
}

sp_status sp_write_file_atomic(const char *path, const void *data, size_t len) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return sp_err(SP_ERR_INVALID, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return sp_err(SP_ERR_IO, "%s: %s", tmp, strerror(errno));
    const uint8_t *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            sp_status st = sp_err(SP_ERR_IO, "%s: write: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return st;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        sp_status st = sp_err(SP_ERR_IO, "%s: fsync: %s", tmp, strerror(errno));
        unlink(tmp);
        return st;
    }
    if (rename(tmp, path) != 0) {
        sp_status st = sp_err(SP_ERR_IO, "rename %s -> %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        return st;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return SP_OK;
}

/* ---- SHA-256 (FIPS 180-4) ---- */

static const uint32_t sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha_block(sp_sha256 *s, const uint8_t *b) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 | (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], bb = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + sha_k[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = bb;
        bb = a;
        a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += bb; s->h[2] += c; s->h[3] += d;
    s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

void sp_sha256_init(sp_sha256 *s) {
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->bits = 0;
    s->nbuf = 0;
}

void sp_sha256_update(sp_sha256 *s, const void *data, size_t len) {
    const uint8_t *p = data;
    s->bits += (uint64_t)len * 8;
    while (len > 0) {
        if (s->nbuf == 0 && len >= 64) {
            sha_block(s, p);
            p += 64;
            len -= 64;
            continue;
        }
        size_t take = 64 - s->nbuf < len ? 64 - s->nbuf : len;
        memcpy(s->buf + s->nbuf, p, take);
        s->nbuf += take;
        p += take;
        len -= take;
        if (s->nbuf == 64) {
            sha_block(s, s->buf);
            s->nbuf = 0;
        }
    }
}

void sp_sha256_final_hex(sp_sha256 *s, char hex[65]) {
    uint64_t bits = s->bits;
    uint8_t pad = 0x80;
    sp_sha256_update(s, &pad, 1);
    uint8_t zero = 0;
    while (s->nbuf != 56) sp_sha256_update(s, &zero, 1);
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
    sp_sha256_update(s, lenb, 8); /* `bits` was saved before padding, as the standard needs */
    for (int i = 0; i < 8; i++) snprintf(hex + 8 * i, 9, "%08x", s->h[i]);
    hex[64] = 0;
}

void sp_sha256_hex(const void *data, size_t len, char hex[65]) {
    sp_sha256 s;
    sp_sha256_init(&s);
    sp_sha256_update(&s, data, len);
    sp_sha256_final_hex(&s, hex);
}

/* ---- progress ---- */

void sp_progress_init(sp_progress *p, const char *label, long total) {
    p->label = label;
    p->total = total;
    p->done = 0;
    p->t0 = p->last = sp_now();
    p->tty = isatty(STDERR_FILENO);
}

static void progress_print(sp_progress *p, int final) {
    double el = sp_now() - p->t0;
    double rate = el > 0 ? (double)p->done / el : 0;
    double eta = rate > 0 && p->total > p->done ? (double)(p->total - p->done) / rate : 0;
    if (p->tty) {
        int width = 30, fill = p->total > 0 ? (int)(width * p->done / p->total) : 0;
        char bar[64];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        fprintf(stderr, "\r%s [%s] %ld/%ld %.1f/s ETA %.0fs%s", p->label, bar, p->done, p->total, rate, eta,
                final ? "\n" : "");
    } else {
        fprintf(stderr, "%s %ld/%ld %.1f/s ETA %.0fs\n", p->label, p->done, p->total, rate, eta);
    }
    fflush(stderr);
}

void sp_progress_update(sp_progress *p, long done) {
    p->done = done;
    double t = sp_now();
    if (t - p->last >= (p->tty ? 0.2 : 5.0)) {
        p->last = t;
        progress_print(p, 0);
    }
}

void sp_progress_finish(sp_progress *p) { progress_print(p, 1); }
