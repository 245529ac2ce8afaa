/* loadgen.c: HTTP load generator for semipaintd on loopback: closed loop (N connections back to back) or open loop (a fixed arrival rate regardless of answers), with status counts, latency percentiles and the daemon's resident memory. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/sp.h"

/* Bounds: the generator is a benchmark tool, never a flood. */
#define MAX_RATE 20000.0
#define MAX_DURATION 600.0
#define MAX_CONNS 4096
#define MAX_SAMPLES 2000000
#define HDR_CAP 8192
/* An idle connection is closed after this long, well before a server's keep-alive timeout (10 s
 * for semipaintd with its default request_timeout_ms), so that a request is never sent on a
 * connection the server is closing at the same moment. */
#define IDLE_CLOSE_S 4.0

typedef enum { C_FREE = 0, C_CONNECTING, C_SENDING, C_READING, C_IDLE } conn_state;

typedef struct {
    int fd;
    conn_state state;
    size_t off;        /* bytes of the request sent */
    double t_start;    /* open loop: the scheduled arrival; closed loop: the send */
    double idle_since; /* C_IDLE: when the last answer ended */
    char hdr[HDR_CAP]; /* the answer's status line and headers, as far as read */
    size_t hlen;
    long long body_left; /* -1 while the headers are incomplete */
    int status, close_after;
} conn;

typedef enum { E_CONNECT = 0, E_CLOSED, E_RESET, E_BAD, E_TIMEOUT } err_kind;
static const char *err_names[5] = {"connect failed", "closed before the answer", "reset", "malformed answer",
                                   "timeout"};

typedef struct {
    int status; /* HTTP status, or 0 for a transport error or timeout */
    float ms;
} sample;

typedef struct {
    /* options */
    char host[64], path[256];
    int port, v6;
    const char *body_path, *ctype;
    int closed;   /* connections of the closed loop; 0 = open loop */
    double rate;  /* open loop: requests per second */
    double duration, timeout, warmup, deadline_ms;
    int max_conns, pid;
    /* state */
    uint8_t *req;
    size_t req_len;
    int ep;
    conn *c;
    int nopen, inflight;
    sample *s;
    long ns, scheduled, not_sent, errors, timeouts;
    long why[5]; /* transport errors by kind, see err_names */
    double *rss;
    int nrss, rss_cap;
} gen;

static int usage(FILE *f) {
    fprintf(f,
            "usage: loadgen --url http://127.0.0.1:PORT/PATH --body FILE --type CONTENT-TYPE\n"
            "               (--closed N | --rate R) --duration S [--max-conns N] [--timeout S]\n"
            "               [--pid PID] [--warmup S] [--deadline-ms MS]\n"
            "\n"
            "Sends POST requests with FILE as the body to a server on this machine (loopback only).\n"
            "  --closed N     closed loop: N connections, each sends its next request when the answer is in\n"
            "  --rate R       open loop: R requests per second (at most %.0f) whatever the answers; latency\n"
            "                 counts from the scheduled arrival, so a slow server cannot hide its queueing\n"
            "  --duration S   seconds of load (at most %.0f); answers still due get --timeout more\n"
            "  --max-conns N  open loop: connections at most (default 512, at most %d); an arrival that\n"
            "                 finds none free is counted as not sent\n"
            "  --timeout S    seconds before a request counts as timed out (default 30)\n"
            "  --pid PID      samples VmRSS of PID every second; --warmup S (default 10) is left out of\n"
            "                 the min/max\n"
            "  --deadline-ms  the server's request deadline, to compare the p99 of 200s with\n"
            "The last line is `result key=value ...` for scripts.\n",
            MAX_RATE, MAX_DURATION, MAX_CONNS);
    return 2;
}

/* Parses http://HOST:PORT/PATH where HOST is 127.0.0.1, localhost or [::1]. */
static int parse_url(gen *g, const char *url) {
    if (strncmp(url, "http://", 7)) return -1;
    const char *p = url + 7, *hend, *pstart;
    if (*p == '[') {
        hend = strchr(p, ']');
        if (!hend) return -1;
        snprintf(g->host, sizeof g->host, "%.*s", (int)(hend - p - 1), p + 1);
        pstart = hend + 1;
        g->v6 = 1;
    } else {
        hend = p + strcspn(p, ":/");
        snprintf(g->host, sizeof g->host, "%.*s", (int)(hend - p), p);
        pstart = hend;
    }
    if (strcmp(g->host, "127.0.0.1") && strcmp(g->host, "localhost") && strcmp(g->host, "::1")) return -2;
    if (*pstart != ':') return -1;
    char *end;
    long port = strtol(pstart + 1, &end, 10);
    if (port < 1 || port > 65535) return -1;
    g->port = (int)port;
    snprintf(g->path, sizeof g->path, "%s", *end == '/' ? end : "/");
    return 0;
}

static double rss_mib(int pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    double kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atof(line + 6);
    fclose(f);
    return kb < 0 ? -1 : kb / 1024;
}

static void record(gen *g, int status, double t_start) {
    if (g->ns >= MAX_SAMPLES) return;
    g->s[g->ns].status = status;
    g->s[g->ns].ms = (float)((sp_now() - t_start) * 1e3);
    g->ns++;
}

static void conn_close(gen *g, conn *c) {
    if (c->fd >= 0) {
        epoll_ctl(g->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        g->nopen--;
    }
    c->fd = -1;
    c->state = C_FREE;
}

static void watch(gen *g, conn *c, unsigned events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(g->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* A request ended without an answer: a transport error. */
static void fail_req(gen *g, conn *c, err_kind why) {
    record(g, 0, c->t_start);
    g->errors++;
    g->why[why]++;
    g->inflight--;
    conn_close(g, c);
}

static void try_send(gen *g, conn *c) {
    while (c->off < g->req_len) {
        ssize_t n = send(c->fd, g->req + c->off, g->req_len - c->off, MSG_NOSIGNAL);
        if (n > 0) {
            c->off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            watch(g, c, EPOLLOUT | EPOLLIN);
            return;
        }
        /* the server may answer early and close (413, 503 while draining): read what came */
        break;
    }
    c->state = C_READING;
    watch(g, c, EPOLLIN | EPOLLRDHUP);
}

static void start_on(gen *g, conn *c, double t_start) {
    c->off = 0;
    c->hlen = 0;
    c->body_left = -1;
    c->status = 0;
    c->close_after = 0;
    c->t_start = t_start;
    g->inflight++;
    if (c->state == C_CONNECTING) return; /* sends once connected */
    c->state = C_SENDING;
    try_send(g, c);
}

static conn *open_conn(gen *g) {
    conn *c = NULL;
    for (int i = 0; i < g->max_conns && !c; i++)
        if (g->c[i].state == C_FREE) c = &g->c[i];
    if (!c) return NULL;
    int fd = socket(g->v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    if (g->v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)g->port);
        a->sin6_addr = in6addr_loopback;
        sl = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)g->port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof *a;
    }
    c->fd = fd;
    g->nopen++;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(g->ep, EPOLL_CTL_ADD, fd, &ev);
    if (connect(fd, (struct sockaddr *)&ss, sl) && errno != EINPROGRESS) {
        conn_close(g, c);
        return NULL;
    }
    c->state = C_CONNECTING;
    return c;
}

/* Parses the status line and the headers in c->hdr[0..end). */
static int parse_head(conn *c, size_t end) {
    if (end < 12 || strncmp(c->hdr, "HTTP/1.", 7)) return -1;
    c->status = atoi(c->hdr + 9);
    c->body_left = 0;
    c->close_after = c->hdr[7] == '0';
    for (char *l = strstr(c->hdr, "\r\n"); l && (size_t)(l - c->hdr) < end; l = strstr(l + 2, "\r\n")) {
        char *h = l + 2;
        if (!strncasecmp(h, "Content-Length:", 15)) c->body_left = atoll(h + 15);
        else if (!strncasecmp(h, "Connection:", 11)) {
            const char *v = h + 11;
            while (*v == ' ') v++;
            if (!strncasecmp(v, "close", 5)) c->close_after = 1;
        }
    }
    return c->status >= 100 && c->status < 600 ? 0 : -1;
}

/* Reads what the socket holds; finishes the request when its answer is complete. */
static void on_readable(gen *g, conn *c, int closed_loop, double end_t) {
    static char buf[65536];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) { /* closed or reset */
            if (c->state == C_IDLE) conn_close(g, c);
            else fail_req(g, c, n == 0 ? E_CLOSED : E_RESET);
            return;
        }
        if (c->state == C_IDLE) { /* stray bytes: the server spoke out of turn */
            conn_close(g, c);
            return;
        }
        size_t used = 0;
        if (c->body_left < 0) {
            size_t take = (size_t)n < HDR_CAP - 1 - c->hlen ? (size_t)n : HDR_CAP - 1 - c->hlen;
            memcpy(c->hdr + c->hlen, buf, take);
            size_t old = c->hlen;
            c->hlen += take;
            c->hdr[c->hlen] = 0;
            char *e = strstr(c->hdr, "\r\n\r\n");
            if (!e) {
                if (c->hlen >= HDR_CAP - 1) {
                    fail_req(g, c, E_BAD);
                    return;
                }
                continue;
            }
            size_t hend = (size_t)(e - c->hdr) + 4;
            if (parse_head(c, hend)) {
                fail_req(g, c, E_BAD);
                return;
            }
            used = hend - old;
        }
        c->body_left -= (long long)((size_t)n - used);
        if (c->body_left > 0) continue;
        record(g, c->status, c->t_start);
        g->inflight--;
        if (c->close_after || c->body_left < 0) conn_close(g, c);
        else {
            c->state = C_IDLE;
            c->idle_since = sp_now();
            watch(g, c, EPOLLIN | EPOLLRDHUP);
        }
        if (closed_loop && sp_now() < end_t) { /* the next request, on this connection or a new one */
            conn *next = c->state == C_IDLE ? c : open_conn(g);
            if (next) start_on(g, next, sp_now());
        }
        return;
    }
}

static void on_event(gen *g, conn *c, unsigned ev, int closed_loop, double end_t) {
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            fail_req(g, c, E_CONNECT);
            return;
        }
        c->state = C_SENDING; /* a connection is only opened for a request */
        try_send(g, c);
        return;
    }
    if (c->state == C_SENDING && (ev & EPOLLOUT)) try_send(g, c);
    if (c->fd >= 0 && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) on_readable(g, c, closed_loop, end_t);
}

static int cmp_sample(const void *a, const void *b) {
    const sample *x = a, *y = b;
    if (x->status != y->status) return x->status - y->status;
    return x->ms < y->ms ? -1 : x->ms > y->ms;
}

static void report(gen *g, double took) {
    qsort(g->s, (size_t)g->ns, sizeof *g->s, cmp_sample);
    long n200 = 0, n503 = 0, n5xx = 0, nother = 0;
    double p50_200 = 0, p99_200 = 0, max_200 = 0;
    for (long i = 0; i < g->ns;) {
        long j = i;
        while (j < g->ns && g->s[j].status == g->s[i].status) j++;
        long n = j - i;
        double p50 = g->s[i + n / 2].ms, p99 = g->s[i + (long)(0.99 * (double)(n - 1))].ms, mx = g->s[j - 1].ms;
        int st = g->s[i].status;
        printf("  status %s%d: %ld, latency p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", st ? "" : "(transport error) ", st,
               n, p50, p99, mx);
        if (st == 200) n200 = n, p50_200 = p50, p99_200 = p99, max_200 = mx;
        else if (st == 503) n503 = n;
        else if (st >= 500) n5xx += n;
        else nother += n;
        i = j;
    }
    for (int i = 0; i < 5; i++)
        if (g->why[i]) printf("  transport errors, %s: %ld\n", err_names[i], g->why[i]);
    double rate = g->ns / took;
    printf("  %ld answers in %.1f s (%.1f/s), %ld of them 200 (%.1f/s); %ld transport errors (%ld timeouts); %ld "
           "arrivals not sent (no free connection)\n",
           g->ns, took, rate, n200, n200 / took, g->errors, g->timeouts, g->not_sent);
    if (g->deadline_ms > 0 && n200)
        printf("  200s: p99 %.1f ms against the %.0f ms deadline: %s\n", p99_200, g->deadline_ms,
               p99_200 <= g->deadline_ms ? "within" : "OVER");
    double rmin = 0, rmax = 0, spread = 0;
    int nr = 0;
    if (g->nrss) {
        for (int i = 0; i < g->nrss; i++) {
            if (i < (int)g->warmup) continue;
            double v = g->rss[i];
            if (!nr || v < rmin) rmin = v;
            if (!nr || v > rmax) rmax = v;
            nr++;
        }
        if (nr) {
            spread = (rmax - rmin) / rmin * 100;
            printf("  VmRSS of pid %d after %.0f s of warm-up (%d samples): min %.1f MiB, max %.1f MiB, spread %.1f%% "
                   "(first sample %.1f MiB, last %.1f MiB)\n",
                   g->pid, g->warmup, nr, rmin, rmax, spread, g->rss[0], g->rss[g->nrss - 1]);
        }
    }
    printf("result mode=%s offered=%.2f answered=%ld rate=%.2f ok=%ld ok_rate=%.2f s503=%ld other5xx=%ld other=%ld "
           "errors=%ld not_sent=%ld p50_200_ms=%.1f p99_200_ms=%.1f max_200_ms=%.1f rss_min_mib=%.1f "
           "rss_max_mib=%.1f rss_spread_pct=%.1f\n",
           g->closed ? "closed" : "open", g->closed ? rate : g->rate, g->ns, rate, n200, n200 / took, n503, n5xx,
           nother, g->errors, g->not_sent, p50_200, p99_200, max_200, rmin, rmax, spread);
}

static int run(gen *g) {
    double t0 = sp_now(), end_t = t0 + g->duration, next_rss = t0 + 1;
    long total = g->closed ? 0 : (long)ceil(g->rate * g->duration);
    if (g->closed) {
        for (int i = 0; i < g->closed; i++) {
            conn *c = open_conn(g);
            if (!c) {
                fprintf(stderr, "loadgen: cannot open connection %d to port %d\n", i + 1, g->port);
                return 1;
            }
            start_on(g, c, sp_now());
        }
    }
    double last_scan = t0;
    struct epoll_event evs[256];
    for (;;) {
        double now = sp_now();
        /* closed loop: a connection lost to an error is replaced */
        while (g->closed && now < end_t && g->inflight < g->closed) {
            conn *c = open_conn(g);
            if (!c) break;
            start_on(g, c, now);
        }
        /* open loop: every arrival that is due goes out now, on an idle connection or a new one */
        while (!g->closed && g->scheduled < total) {
            double due = t0 + (double)g->scheduled / g->rate;
            if (due > now) break;
            g->scheduled++;
            conn *c = NULL;
            for (int i = 0; i < g->max_conns && !c; i++)
                if (g->c[i].state == C_IDLE) c = &g->c[i];
            if (!c) c = open_conn(g);
            if (!c) {
                g->not_sent++;
                continue;
            }
            start_on(g, c, due);
        }
        if (now >= next_rss && g->pid > 0 && now < end_t + 0.5) {
            double r = rss_mib(g->pid);
            if (r >= 0 && g->nrss < g->rss_cap) {
                g->rss[g->nrss++] = r;
                printf("  t=%3ds VmRSS %.1f MiB, %d requests in flight, %d connections open\n", g->nrss, r, g->inflight,
                       g->nopen);
                fflush(stdout);
            }
            next_rss += 1;
        }
        if (now - last_scan > 0.1) { /* time out requests that wait too long, close long-idle connections */
            last_scan = now;
            for (int i = 0; i < g->max_conns; i++) {
                conn *c = &g->c[i];
                if (c->state == C_IDLE && now - c->idle_since > IDLE_CLOSE_S) conn_close(g, c);
                if ((c->state == C_CONNECTING || c->state == C_SENDING || c->state == C_READING) &&
                    now - c->t_start > g->timeout) {
                    g->timeouts++;
                    fail_req(g, c, E_TIMEOUT);
                }
            }
        }
        int done_sending = g->closed ? now >= end_t : g->scheduled >= total;
        if (done_sending && g->inflight == 0) break;
        if (done_sending && now > end_t + g->timeout + 1) break;
        double wake = now + 0.05;
        if (!g->closed && g->scheduled < total) {
            double due = t0 + (double)g->scheduled / g->rate;
            if (due < wake) wake = due;
        }
        if (g->pid > 0 && next_rss < wake) wake = next_rss;
        int ms = (int)ceil((wake - now) * 1e3);
        int n = epoll_wait(g->ep, evs, 256, ms < 0 ? 0 : ms);
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (c->fd >= 0) on_event(g, c, evs[i].events, g->closed > 0, end_t);
        }
    }
    double took = (g->closed ? sp_now() : end_t) - t0;
    if (g->closed) took = g->duration;
    report(g, took);
    return 0;
}

int main(int argc, char **argv) {
    gen g;
    memset(&g, 0, sizeof g);
    g.ep = -1;
    g.timeout = 30;
    g.warmup = 10;
    g.max_conns = 512;
    const char *url = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(stdout), 0;
        if (!v) return fprintf(stderr, "loadgen: %s needs a value\n", a), usage(stderr);
        i++;
        if (!strcmp(a, "--url")) url = v;
        else if (!strcmp(a, "--body")) g.body_path = v;
        else if (!strcmp(a, "--type")) g.ctype = v;
        else if (!strcmp(a, "--closed")) g.closed = atoi(v);
        else if (!strcmp(a, "--rate")) g.rate = atof(v);
        else if (!strcmp(a, "--duration")) g.duration = atof(v);
        else if (!strcmp(a, "--max-conns")) g.max_conns = atoi(v);
        else if (!strcmp(a, "--timeout")) g.timeout = atof(v);
        else if (!strcmp(a, "--pid")) g.pid = atoi(v);
        else if (!strcmp(a, "--warmup")) g.warmup = atof(v);
        else if (!strcmp(a, "--deadline-ms")) g.deadline_ms = atof(v);
        else return fprintf(stderr, "loadgen: unknown option %s\n", a), usage(stderr);
    }
    if (!url || !g.body_path || !g.ctype) return fprintf(stderr, "loadgen: --url, --body and --type are required\n"), usage(stderr);
    int pu = parse_url(&g, url);
    if (pu == -2) return fprintf(stderr, "loadgen: %s: only loopback hosts (127.0.0.1, localhost, [::1]) are allowed\n", url), 2;
    if (pu) return fprintf(stderr, "loadgen: %s: expected http://HOST:PORT/PATH\n", url), 2;
    if ((g.closed > 0) == (g.rate > 0)) return fprintf(stderr, "loadgen: give exactly one of --closed N and --rate R\n"), 2;
    if (g.rate > MAX_RATE || g.closed > MAX_CONNS || g.duration <= 0 || g.duration > MAX_DURATION || g.max_conns < 1 ||
        g.max_conns > MAX_CONNS || g.timeout <= 0 || g.timeout > MAX_DURATION || g.warmup < 0)
        return fprintf(stderr, "loadgen: a value is out of bounds (rate <= %.0f, duration in (0, %.0f], connections <= %d)\n",
                       MAX_RATE, MAX_DURATION, MAX_CONNS), 2;
    if (g.closed) g.max_conns = g.closed;
    uint8_t *body = NULL;
    size_t blen = 0;
    if (sp_read_file(g.body_path, &body, &blen)) return fprintf(stderr, "loadgen: %s\n", sp_err_msg()), 1;
    char head[1024];
    int hl = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "User-Agent: semipaint-loadgen\r\n\r\n",
                      g.path, g.v6 ? "[::1]" : g.host, g.port, g.ctype, blen);
    int rc = 1;
    g.req_len = (size_t)hl + blen;
    g.req = malloc(g.req_len);
    g.c = calloc((size_t)g.max_conns, sizeof *g.c);
    g.s = malloc(sizeof *g.s * MAX_SAMPLES);
    g.rss_cap = (int)g.duration + 2;
    g.rss = calloc((size_t)g.rss_cap, sizeof *g.rss);
    g.ep = epoll_create1(EPOLL_CLOEXEC);
    if (!g.req || !g.c || !g.s || !g.rss || g.ep < 0) {
        fprintf(stderr, "loadgen: out of memory\n");
        goto fail;
    }
    memcpy(g.req, head, (size_t)hl);
    memcpy(g.req + hl, body, blen);
    for (int i = 0; i < g.max_conns; i++) g.c[i].fd = -1;
    if (g.closed)
        printf("closed loop: %d connections back to back for %.0f s, POST %s (%zu bytes)\n", g.closed, g.duration,
               g.path, blen);
    else
        printf("open loop: %.1f requests/s for %.0f s whatever the answers (at most %d connections), POST %s (%zu "
               "bytes)\n",
               g.rate, g.duration, g.max_conns, g.path, blen);
    fflush(stdout);
    rc = run(&g);
fail:
    if (g.c)
        for (int i = 0; i < g.max_conns; i++)
            if (g.c[i].fd >= 0) close(g.c[i].fd);
    if (g.ep >= 0) close(g.ep);
    free(body);
    free(g.req);
    free(g.c);
    free(g.s);
    free(g.rss);
    return rc;
}
