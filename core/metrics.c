/* core/metrics.c: the Prometheus registry: families with labelled series under one mutex, rendering, and process_* from /proc/self. */
#include "core/metrics.h"

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

const double core_duration_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                       0.5,   1,      2.5,   5,    10,    30,   60};
const int core_duration_nbuckets = sizeof core_duration_buckets / sizeof core_duration_buckets[0];

typedef enum { K_COUNTER, K_GAUGE, K_HISTOGRAM } kind;

typedef struct series {
    struct series *next;
    char *values[SRV_METRICS_MAX_LABELS];
    double value;                               /* counter, gauge */
    double sum;                                 /* histogram */
    unsigned long count;                        /* histogram */
    unsigned long buckets[SRV_METRICS_MAX_BUCKETS]; /* histogram, per bucket (not cumulative) */
} series;

struct core_family {
    core_metrics *m;
    struct core_family *next;
    kind kind;
    char *name, *help;
    int nlabels;
    char *labels[SRV_METRICS_MAX_LABELS];
    double bounds[SRV_METRICS_MAX_BUCKETS];
    int nbounds;
    series *head, *tail;
};

typedef struct hook {
    struct hook *next;
    void (*fn)(void *);
    void *ctx;
} hook;

struct core_metrics {
    pthread_mutex_t mu;
    core_family *head, *tail;
    hook *hooks;
};

core_metrics *core_metrics_new(void) {
    core_metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

static void free_family(core_family *f) {
    for (series *s = f->head, *n; s; s = n) {
        n = s->next;
        for (int i = 0; i < f->nlabels; i++) free(s->values[i]);
        free(s);
    }
    for (int i = 0; i < f->nlabels; i++) free(f->labels[i]);
    free(f->name);
    free(f->help);
    free(f);
}

void core_metrics_free(core_metrics *m) {
    if (!m) return;
    for (core_family *f = m->head, *n; f; f = n) {
        n = f->next;
        free_family(f);
    }
    for (hook *h = m->hooks, *n; h; h = n) {
        n = h->next;
        free(h);
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static core_family *add_family(core_metrics *m, kind k, const char *name, const char *help, const char *labels) {
    core_family *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->m = m;
    f->kind = k;
    f->name = strdup(name);
    f->help = strdup(help);
    if (!f->name || !f->help) goto fail;
    if (labels && *labels) {
        const char *p = labels;
        while (*p) {
            const char *e = strchr(p, ',');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            if (f->nlabels == SRV_METRICS_MAX_LABELS || !n) goto fail;
            f->labels[f->nlabels] = strndup(p, n);
            if (!f->labels[f->nlabels++]) goto fail;
            p += n + (e ? 1 : 0);
        }
    }
    pthread_mutex_lock(&m->mu);
    if (m->tail) m->tail->next = f;
    else m->head = f;
    m->tail = f;
    pthread_mutex_unlock(&m->mu);
    return f;
fail:
    free_family(f);
    return NULL;
}

core_family *core_metrics_counter(core_metrics *m, const char *name, const char *help, const char *labels) {
    return add_family(m, K_COUNTER, name, help, labels);
}

core_family *core_metrics_gauge(core_metrics *m, const char *name, const char *help, const char *labels) {
    return add_family(m, K_GAUGE, name, help, labels);
}

core_family *core_metrics_histogram(core_metrics *m, const char *name, const char *help, const char *labels,
                                  const double *buckets, int nbuckets) {
    if (nbuckets < 1 || nbuckets > SRV_METRICS_MAX_BUCKETS) return NULL;
    for (int i = 1; i < nbuckets; i++)
        if (!(buckets[i] > buckets[i - 1])) return NULL;
    core_family *f = add_family(m, K_HISTOGRAM, name, help, labels);
    if (!f) return NULL;
    memcpy(f->bounds, buckets, sizeof(double) * (size_t)nbuckets);
    f->nbounds = nbuckets;
    return f;
}

/* The series of `values`, created when missing; NULL when out of memory. Caller holds the mutex. */
static series *find_series(core_family *f, const char *const *values, int create) {
    for (series *s = f->head; s; s = s->next) {
        int eq = 1;
        for (int i = 0; i < f->nlabels && eq; i++) eq = !strcmp(s->values[i], values[i]);
        if (eq) return s;
    }
    if (!create) return NULL;
    series *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    for (int i = 0; i < f->nlabels; i++) {
        s->values[i] = strdup(values[i]);
        if (!s->values[i]) {
            for (int j = 0; j < i; j++) free(s->values[j]);
            free(s);
            return NULL;
        }
    }
    if (f->tail) f->tail->next = s;
    else f->head = s;
    f->tail = s;
    return s;
}

void core_metric_add(core_family *f, const char *const *values, double v) {
    if (!f || f->kind == K_HISTOGRAM) return;
    pthread_mutex_lock(&f->m->mu);
    series *s = find_series(f, values, 1);
    if (s) s->value += v;
    pthread_mutex_unlock(&f->m->mu);
}

void core_metric_set(core_family *f, const char *const *values, double v) {
    if (!f || f->kind == K_HISTOGRAM) return;
    pthread_mutex_lock(&f->m->mu);
    series *s = find_series(f, values, 1);
    if (s) s->value = v;
    pthread_mutex_unlock(&f->m->mu);
}

void core_metric_observe(core_family *f, const char *const *values, double v) {
    if (!f || f->kind != K_HISTOGRAM) return;
    pthread_mutex_lock(&f->m->mu);
    series *s = find_series(f, values, 1);
    if (s) {
        int b = 0;
        while (b < f->nbounds && v > f->bounds[b]) b++;
        if (b < f->nbounds) s->buckets[b]++;
        s->count++;
        s->sum += v;
    }
    pthread_mutex_unlock(&f->m->mu);
}

double core_metric_get(core_family *f, const char *const *values) {
    if (!f) return 0;
    pthread_mutex_lock(&f->m->mu);
    series *s = find_series(f, values, 0);
    double v = !s ? 0 : f->kind == K_HISTOGRAM ? (double)s->count : s->value;
    pthread_mutex_unlock(&f->m->mu);
    return v;
}

void core_metrics_on_render(core_metrics *m, void (*fn)(void *), void *ctx) {
    hook *h = calloc(1, sizeof *h);
    if (!h) return;
    h->fn = fn;
    h->ctx = ctx;
    pthread_mutex_lock(&m->mu);
    h->next = m->hooks;
    m->hooks = h;
    pthread_mutex_unlock(&m->mu);
}

/* ---- rendering ---- */

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} buf;

static void bprintf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(buf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)k;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
}

/* A label value with \, " and newline escaped. */
static void put_value(buf *b, const char *v) {
    for (; *v; v++) {
        if (*v == '\\') bprintf(b, "\\\\");
        else if (*v == '"') bprintf(b, "\\\"");
        else if (*v == '\n') bprintf(b, "\\n");
        else bprintf(b, "%c", *v);
    }
}

/* {a="x",b="y"[,le="..."]} or nothing. */
static void put_labels(buf *b, const core_family *f, const series *s, const char *le) {
    if (!f->nlabels && !le) return;
    bprintf(b, "{");
    for (int i = 0; i < f->nlabels; i++) {
        bprintf(b, "%s%s=\"", i ? "," : "", f->labels[i]);
        put_value(b, s->values[i]);
        bprintf(b, "\"");
    }
    if (le) bprintf(b, "%sle=\"%s\"", f->nlabels ? "," : "", le);
    bprintf(b, "}");
}

static void put_number(buf *b, double v) {
    if (v == (double)(long long)v && v < 1e15 && v > -1e15) bprintf(b, "%lld", (long long)v);
    else bprintf(b, "%.15g", v);
}

char *core_metrics_render(core_metrics *m, size_t *len) {
    pthread_mutex_lock(&m->mu);
    hook *hooks = m->hooks;
    pthread_mutex_unlock(&m->mu);
    for (hook *h = hooks; h; h = h->next) h->fn(h->ctx);
    buf b = {malloc(8192), 0, 8192, 0};
    if (!b.s) return NULL;
    b.s[0] = 0;
    pthread_mutex_lock(&m->mu);
    for (core_family *f = m->head; f; f = f->next) {
        static const char *const types[] = {"counter", "gauge", "histogram"};
        bprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, types[f->kind]);
        for (series *s = f->head; s; s = s->next) {
            if (f->kind != K_HISTOGRAM) {
                bprintf(&b, "%s", f->name);
                put_labels(&b, f, s, NULL);
                bprintf(&b, " ");
                put_number(&b, s->value);
                bprintf(&b, "\n");
                continue;
            }
            unsigned long cum = 0;
            for (int i = 0; i <= f->nbounds; i++) {
                char le[32];
                if (i < f->nbounds) {
                    cum += s->buckets[i];
                    snprintf(le, sizeof le, "%g", f->bounds[i]);
                } else {
                    cum = s->count;
                    snprintf(le, sizeof le, "+Inf");
                }
                bprintf(&b, "%s_bucket", f->name);
                put_labels(&b, f, s, le);
                bprintf(&b, " %lu\n", cum);
            }
            bprintf(&b, "%s_sum", f->name);
            put_labels(&b, f, s, NULL);
            bprintf(&b, " ");
            put_number(&b, s->sum);
            bprintf(&b, "\n%s_count", f->name);
            put_labels(&b, f, s, NULL);
            bprintf(&b, " %lu\n", s->count);
        }
    }
    pthread_mutex_unlock(&m->mu);
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    *len = b.n;
    return b.s;
}

/* ---- process_* ---- */

typedef struct {
    core_family *rss, *vsz, *cpu, *fds, *maxfds, *start;
} process_gauges;

static void process_collect(void *ctx) {
    process_gauges *g = ctx;
    long page = sysconf(_SC_PAGESIZE), tck = sysconf(_SC_CLK_TCK);
    FILE *f = fopen("/proc/self/stat", "r");
    if (f) {
        char line[2048];
        if (fgets(line, sizeof line, f)) {
            /* fields after the command name in parentheses (which may hold spaces) */
            const char *p = strrchr(line, ')');
            unsigned long utime = 0, stime = 0, vsize = 0;
            unsigned long long starttime = 0;
            long rss = 0;
            if (p && sscanf(p + 2,
                            "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %llu %lu %ld",
                            &utime, &stime, &starttime, &vsize, &rss) == 5) {
                core_metric_set(g->cpu, NULL, (double)(utime + stime) / (double)tck);
                core_metric_set(g->vsz, NULL, (double)vsize);
                core_metric_set(g->rss, NULL, (double)rss * (double)page);
                FILE *sf = fopen("/proc/stat", "r");
                if (sf) {
                    char l[256];
                    unsigned long long btime = 0;
                    while (fgets(l, sizeof l, sf))
                        if (sscanf(l, "btime %llu", &btime) == 1) break;
                    fclose(sf);
                    if (btime) core_metric_set(g->start, NULL, (double)btime + (double)starttime / (double)tck);
                }
            }
        }
        fclose(f);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long n = 0;
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.') n++;
        closedir(d);
        core_metric_set(g->fds, NULL, (double)(n - 1)); /* minus the directory's own descriptor */
    }
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl)) core_metric_set(g->maxfds, NULL, (double)rl.rlim_cur);
}

void core_metrics_add_process(core_metrics *m) {
    static process_gauges g; /* one process, one set */
    g.rss = core_metrics_gauge(m, "process_resident_memory_bytes", "Resident memory size in bytes.", NULL);
    g.vsz = core_metrics_gauge(m, "process_virtual_memory_bytes", "Virtual memory size in bytes.", NULL);
    g.cpu = core_metrics_counter(m, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", NULL);
    g.fds = core_metrics_gauge(m, "process_open_fds", "Number of open file descriptors.", NULL);
    g.maxfds = core_metrics_gauge(m, "process_max_fds", "Maximum number of open file descriptors.", NULL);
    g.start = core_metrics_gauge(m, "process_start_time_seconds", "Start time of the process since unix epoch in seconds.", NULL);
    core_metrics_on_render(m, process_collect, &g);
}
