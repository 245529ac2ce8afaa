/* core/exec.c: the executor thread: FIFO of works, batch forming with max_batch/max_delay, deadlines, admission by capacity and measured rate. */
#include "core/exec.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct core_exec {
    core_runner runner;
    core_exec_metrics metrics;
    int max_batch, queue_capacity;
    double max_delay;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake;    /* the thread: work arrived or stop */
    pthread_cond_t idle;    /* drainers: the queue emptied */
    core_work *head, *tail;  /* works with crops not yet in a batch */
    core_work *tasks, *tasks_tail;
    int depth;              /* crops queued, not yet in a batch */
    int fdepth[CORE_MAX_FAMILIES]; /* of which, per model family */
    int running;            /* crops in the batch being computed */
    int running_fam;        /* its family */
    int stop;
    int joined; /* core_exec_stop has joined the thread */
    /* smoothed seconds per batch of each family's recent batches (a 128-px family's batch costs a
     * fraction of a 256-px one's); 0 = no measurement yet */
    double batch_s[CORE_MAX_FAMILIES];
    /* batch buffers, max_batch crops each */
    float *img, *mask, *out, *scores;
    float *refs;    /* (max_batch,k,3,s,s) caller-supplied neighbours of the batch's crops */
    uint8_t *given; /* (max_batch) 1 = the crop's neighbours are in refs */
    int64_t *ids;
    core_work **bw; /* work of each batch slot */
    int *bc;       /* crop index within its work */
};

static void abs_time(struct timespec *ts, double at) {
    /* condition variables use CLOCK_MONOTONIC (set in core_exec_new), like sp_now() */
    ts->tv_sec = (time_t)at;
    ts->tv_nsec = (long)((at - (double)ts->tv_sec) * 1e9);
    if (ts->tv_nsec >= 1000000000L) ts->tv_sec++, ts->tv_nsec -= 1000000000L;
}

static void unlink_work(core_exec *ex, core_work *w) {
    core_work **pp = &ex->head, *prev = NULL;
    while (*pp && *pp != w) prev = *pp, pp = &(*pp)->next;
    if (!*pp) return;
    *pp = w->next;
    if (ex->tail == w) ex->tail = prev;
    w->next = NULL;
}

static void set_gauge(core_exec *ex) { core_metric_set(ex->metrics.queue_depth, NULL, ex->depth); }

/* n crops of work w leave the queue (into a batch, or failed). Holds mu. */
static void dequeue(core_exec *ex, const core_work *w, int n) {
    ex->depth -= n;
    ex->fdepth[w->family] -= n;
}

/* Fails queued works whose deadline passed; moves them to *failed (linked by next). Holds mu. */
static void expire(core_exec *ex, double now, core_work **failed) {
    for (core_work *w = ex->head, *n; w; w = n) {
        n = w->next;
        if (now <= w->deadline) continue;
        unlink_work(ex, w);
        dequeue(ex, w, w->n - w->taken);
        w->status = SP_ERR_TIMEOUT;
        snprintf(w->error, sizeof w->error, "the request's deadline passed after %.0f ms in the queue",
                 (now - w->enqueued) * 1e3);
        core_metric_add(ex->metrics.rejected, (const char *[]){"deadline"}, 1);
        w->next = *failed;
        *failed = w;
    }
    set_gauge(ex);
}

static void finish_all(core_work *list) {
    for (core_work *w = list, *n; w; w = n) {
        n = w->next;
        w->next = NULL;
        w->done(w);
    }
}

/* 1 when w's crops may share a batch with the head's: the same method and family. */
static int same_kind(const core_work *w, const core_work *head) {
    return w->method == head->method && w->family == head->family;
}

/* Crops of the head's kind available for one batch, in FIFO order up to the first other kind. */
static int batchable(core_exec *ex) {
    if (!ex->head) return 0;
    int n = 0;
    for (core_work *w = ex->head; w && same_kind(w, ex->head) && n < ex->max_batch; w = w->next)
        n += w->n - w->taken;
    return n < ex->max_batch ? n : ex->max_batch;
}

static void *exec_main(void *arg) {
    core_exec *ex = arg;
    pthread_mutex_lock(&ex->mu);
    for (;;) {
        while (!ex->stop && !ex->head && !ex->tasks) pthread_cond_wait(&ex->wake, &ex->mu);
        if (ex->tasks) {
            core_work *t = ex->tasks;
            ex->tasks = t->next;
            if (!ex->tasks) ex->tasks_tail = NULL;
            t->next = NULL;
            pthread_mutex_unlock(&ex->mu);
            t->call(t);
            t->done(t);
            pthread_mutex_lock(&ex->mu);
            continue;
        }
        if (ex->stop) break;
        core_work *failed = NULL;
        expire(ex, sp_now(), &failed);
        if (failed) {
            pthread_mutex_unlock(&ex->mu);
            finish_all(failed);
            pthread_mutex_lock(&ex->mu);
            continue;
        }
        if (!ex->head) continue;
        /* let the batch fill: until max_batch crops wait or max_delay passed since the oldest */
        double until = ex->head->enqueued + ex->max_delay;
        while (!ex->stop && !ex->tasks && ex->head && batchable(ex) < ex->max_batch && sp_now() < until) {
            struct timespec ts;
            abs_time(&ts, until);
            pthread_cond_timedwait(&ex->wake, &ex->mu, &ts);
        }
        if (!ex->head || ex->tasks) continue;
        /* form the batch */
        core_work *const head = ex->head;
        nn_method method = head->method;
        const int fam = head->family;
        const size_t s2 = (size_t)ex->runner.s[fam] * ex->runner.s[fam];
        const int k = ex->runner.k[fam];
        int nb = 0;
        double now = sp_now();
        for (core_work *w = head, *next; w && same_kind(w, head) && nb < ex->max_batch; w = next) {
            next = w->next;
            double waited = (now - w->enqueued) * 1e3;
            if (waited > w->queue_ms) w->queue_ms = waited;
            w->batches++;
            while (w->taken < w->n && nb < ex->max_batch) {
                ex->bw[nb] = w;
                ex->bc[nb] = w->taken++;
                nb++;
            }
            if (w->taken == w->n) unlink_work(ex, w);
        }
        dequeue(ex, head, nb);
        ex->running = nb;
        ex->running_fam = fam;
        set_gauge(ex);
        pthread_mutex_unlock(&ex->mu);

        core_metric_observe(ex->metrics.batch_size, NULL, nb);
        const size_t nsz = (size_t)k * 3 * s2; /* one crop's neighbours */
        int any_given = 0;
        for (int i = 0; i < nb; i++) {
            const core_work *w = ex->bw[i];
            ex->given[i] = k > 0 && w->refs && method == NN_METHOD_SIM;
            if (ex->given[i]) {
                memcpy(ex->refs + (size_t)i * nsz, w->refs, sizeof(float) * nsz);
                any_given = 1;
            }
            memcpy(ex->img + (size_t)i * 3 * s2, w->img + (size_t)ex->bc[i] * 3 * s2, sizeof(float) * 3 * s2);
            memcpy(ex->mask + (size_t)i * s2, w->mask + (size_t)ex->bc[i] * s2, sizeof(float) * s2);
            double waited = now - w->enqueued;
            core_metric_observe(ex->metrics.stage_seconds, (const char *[]){"queue"}, waited);
        }
        /* Pad to a power of two (or max_batch) with copies of the last crop: the engine keeps one
         * activation plan per batch size, and a few sizes keep its memory flat and planned. */
        int run_n = 1;
        while (run_n < nb) run_n *= 2;
        if (run_n > ex->max_batch) run_n = ex->max_batch;
        for (int i = nb; i < run_n; i++) {
            memcpy(ex->img + (size_t)i * 3 * s2, ex->img + (size_t)(nb - 1) * 3 * s2, sizeof(float) * 3 * s2);
            memcpy(ex->mask + (size_t)i * s2, ex->mask + (size_t)(nb - 1) * s2, sizeof(float) * s2);
            ex->given[i] = ex->given[nb - 1];
            if (ex->given[i]) memcpy(ex->refs + (size_t)i * nsz, ex->refs + (size_t)(nb - 1) * nsz, sizeof(float) * nsz);
        }
        nn_timings t = {0};
        double t0 = sp_now();
        sp_status st = ex->runner.run(ex->runner.ctx, fam, run_n, ex->img, ex->mask, any_given ? ex->refs : NULL,
                                      any_given ? ex->given : NULL, method, ex->out, k ? ex->ids : NULL,
                                      k ? ex->scores : NULL, &t);
        double took = sp_now() - t0;
        if (!st) {
            core_metric_observe(ex->metrics.stage_seconds, (const char *[]){"coarse"}, t.coarse / 1e3);
            if (method == NN_METHOD_SIM) {
                core_metric_observe(ex->metrics.stage_seconds, (const char *[]){"descriptor"}, t.descriptor / 1e3);
                core_metric_observe(ex->metrics.stage_seconds, (const char *[]){"search"}, t.search / 1e3);
                core_metric_observe(ex->metrics.stage_seconds, (const char *[]){"refine"}, t.refine / 1e3);
            }
        }
        char err[256] = "";
        if (st) snprintf(err, sizeof err, "%s", sp_err_msg());
        core_work *done = NULL;
        pthread_mutex_lock(&ex->mu);
        ex->batch_s[fam] = ex->batch_s[fam] > 0 ? 0.8 * ex->batch_s[fam] + 0.2 * took : took;
        for (int i = 0; i < nb; i++) {
            core_work *w = ex->bw[i];
            int c = ex->bc[i];
            if (!st) {
                memcpy(w->out + (size_t)c * 3 * s2, ex->out + (size_t)i * 3 * s2, sizeof(float) * 3 * s2);
                if (k && w->ids) memcpy(w->ids + (size_t)c * k, ex->ids + (size_t)i * k, sizeof(int64_t) * (size_t)k);
                if (k && w->scores)
                    memcpy(w->scores + (size_t)c * k, ex->scores + (size_t)i * k, sizeof(float) * (size_t)k);
                for (int q = 0; ex->given[i] && q < k; q++) { /* what the caller gave, as it named it */
                    if (w->ids) w->ids[(size_t)c * k + q] = w->ref_ids ? w->ref_ids[q] : -1;
                    if (w->scores) w->scores[(size_t)c * k + q] = 1;
                }
            }
            /* count each work's timings once per batch: at its first slot */
            if (i == 0 || ex->bw[i - 1] != w) {
                w->t.coarse += t.coarse;
                w->t.descriptor += t.descriptor;
                w->t.search += t.search;
                w->t.refine += t.refine;
            }
            if (st && w->status == SP_OK) {
                w->status = st;
                snprintf(w->error, sizeof w->error, "%s", err);
            }
            w->finished++;
            /* a failed work leaves the queue at once; a good one when every crop is back */
            int last = w->finished == w->taken && (w->taken == w->n || w->status != SP_OK);
            if (last) {
                if (w->taken < w->n) {
                    unlink_work(ex, w);
                    dequeue(ex, w, w->n - w->taken);
                }
                w->next = done;
                done = w;
            }
        }
        ex->running = 0;
        set_gauge(ex);
        if (!ex->head && !ex->running) pthread_cond_broadcast(&ex->idle);
        pthread_mutex_unlock(&ex->mu);
        finish_all(done);
        pthread_mutex_lock(&ex->mu);
    }
    pthread_mutex_unlock(&ex->mu);
    return NULL;
}

sp_status core_exec_new(const core_runner *runner, int max_batch, int max_delay_ms, int queue_capacity,
                       const core_exec_metrics *metrics, core_exec **out) {
    *out = NULL;
    if (max_batch < 1 || queue_capacity < 1 || runner->nfam < 1 || runner->nfam > CORE_MAX_FAMILIES)
        return sp_err(SP_ERR_INVALID, "executor: invalid settings");
    int smax = 0, kmax = 0; /* the batch buffers fit every family's crops */
    for (int i = 0; i < runner->nfam; i++) {
        if (runner->s[i] < 1 || runner->k[i] < 0) return sp_err(SP_ERR_INVALID, "executor: invalid family %d", i);
        if (runner->s[i] > smax) smax = runner->s[i];
        if (runner->k[i] > kmax) kmax = runner->k[i];
    }
    core_exec *ex = calloc(1, sizeof *ex);
    if (!ex) return sp_err(SP_ERR_NOMEM, "executor: out of memory");
    ex->runner = *runner;
    if (metrics) ex->metrics = *metrics;
    ex->max_batch = max_batch;
    ex->max_delay = max_delay_ms / 1e3;
    ex->queue_capacity = queue_capacity;
    size_t s2 = (size_t)smax * smax, nb = (size_t)max_batch;
    ex->img = sp_aligned_alloc(sizeof(float) * nb * 3 * s2);
    ex->mask = sp_aligned_alloc(sizeof(float) * nb * s2);
    ex->out = sp_aligned_alloc(sizeof(float) * nb * 3 * s2);
    ex->ids = calloc(nb * (size_t)(kmax + 1), sizeof *ex->ids);
    ex->scores = calloc(nb * (size_t)(kmax + 1), sizeof *ex->scores);
    ex->bw = calloc(nb, sizeof *ex->bw);
    ex->bc = calloc(nb, sizeof *ex->bc);
    ex->given = calloc(nb, 1);
    ex->refs = kmax ? sp_aligned_alloc(sizeof(float) * nb * (size_t)kmax * 3 * s2) : NULL;
    if (!ex->img || !ex->mask || !ex->out || !ex->ids || !ex->scores || !ex->bw || !ex->bc || !ex->given ||
        (kmax && !ex->refs))
        goto nomem;
    pthread_mutex_init(&ex->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ex->wake, &ca);
    pthread_cond_init(&ex->idle, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&ex->thread, NULL, exec_main, ex)) {
        pthread_mutex_destroy(&ex->mu);
        pthread_cond_destroy(&ex->wake);
        pthread_cond_destroy(&ex->idle);
        free(ex->img), free(ex->mask), free(ex->out), free(ex->ids), free(ex->scores), free(ex->bw), free(ex->bc);
        free(ex->given), free(ex->refs);
        free(ex);
        return sp_err(SP_ERR_NOMEM, "executor: cannot start its thread");
    }
    *out = ex;
    return SP_OK;
nomem:
    free(ex->img), free(ex->mask), free(ex->out), free(ex->ids), free(ex->scores), free(ex->bw), free(ex->bc);
    free(ex->given), free(ex->refs);
    free(ex);
    return sp_err(SP_ERR_NOMEM, "executor: out of memory for batch buffers of %d crops", max_batch);
}

/* Family f's seconds per batch: its own measurement, else (not measured yet) the longest of the
 * other families' (a conservative guess), else 0. Holds mu. */
static double batch_time(const core_exec *ex, int f) {
    if (ex->batch_s[f] > 0) return ex->batch_s[f];
    double m = 0;
    for (int i = 0; i < ex->runner.nfam; i++)
        if (ex->batch_s[i] > m) m = ex->batch_s[i];
    return m;
}

/* The shortest measured seconds per batch of any family, 0 when none is measured. Holds mu. */
static double fastest_batch(const core_exec *ex) {
    double m = 0;
    for (int i = 0; i < ex->runner.nfam; i++)
        if (ex->batch_s[i] > 0 && (m == 0 || ex->batch_s[i] < m)) m = ex->batch_s[i];
    return m;
}

/* Seconds until the last of n new crops of family `fam` (-1: not known yet, counted at the
 * fastest family's batch time) would be done: each family's crops in the queue or the running
 * batch, in whole batches at that family's batch time, the new crops' batches at theirs (they
 * may top up their family's last partial batch), plus one batch of margin for the running one and
 * the estimate's error. Also a Retry-After suggestion: the time to work off what waits now.
 * Holds mu. */
static double expected_wait(core_exec *ex, int fam, int n, int *retry_after_s) {
    const int mb = ex->max_batch;
    double ahead = 0;
    int have = 0; /* crops of fam ahead */
    for (int f = 0; f < ex->runner.nfam; f++) {
        int c = ex->fdepth[f] + (ex->running && f == ex->running_fam ? ex->running : 0);
        ahead += (double)((c + mb - 1) / mb) * batch_time(ex, f);
        if (f == fam) have = c;
    }
    int ra = (int)ceil(ahead);
    *retry_after_s = ra < 1 ? 1 : ra;
    const double own = fam >= 0 ? batch_time(ex, fam) : fastest_batch(ex);
    const int extra = (have + n + mb - 1) / mb - (have + mb - 1) / mb;
    return ahead + (extra + 1) * own;
}

/* 1 when a work expected to be done in wait_s would use more than 3/4 of the time left to its
 * deadline: the last quarter is kept for the estimate's error (batch times vary with the load). */
static int late(const core_exec *ex, double wait_s, double deadline) {
    return fastest_batch(ex) > 0 && wait_s > 0.75 * (deadline - sp_now());
}

const char *core_exec_admissible(core_exec *ex, int fam, int n, double deadline, int *retry_after_s) {
    pthread_mutex_lock(&ex->mu);
    if (fam >= ex->runner.nfam) fam = -1;
    double wait_s = expected_wait(ex, fam, n, retry_after_s);
    const char *why = ex->stop ? "shutdown"
                      : ex->depth + n > ex->queue_capacity ? "queue_full"
                      : late(ex, wait_s, deadline) ? "overload"
                                                   : NULL;
    pthread_mutex_unlock(&ex->mu);
    return why;
}

sp_status core_exec_submit(core_exec *ex, core_work *w, int *retry_after_s) {
    *retry_after_s = 1;
    w->status = SP_OK;
    w->error[0] = 0;
    w->queue_ms = 0;
    memset(&w->t, 0, sizeof w->t);
    w->batches = w->taken = w->finished = 0;
    w->next = NULL;
    double now = sp_now();
    w->enqueued = now;
    pthread_mutex_lock(&ex->mu);
    if (ex->stop) {
        pthread_mutex_unlock(&ex->mu);
        core_metric_add(ex->metrics.rejected, (const char *[]){"shutdown"}, 1);
        return sp_err(SP_ERR_BUSY, "the server is shutting down");
    }
    if (!w->call && (w->family < 0 || w->family >= ex->runner.nfam)) {
        pthread_mutex_unlock(&ex->mu);
        return sp_err(SP_ERR_INVALID, "executor: no model family %d", w->family);
    }
    if (w->call) {
        if (ex->tasks_tail) ex->tasks_tail->next = w;
        else ex->tasks = w;
        ex->tasks_tail = w;
        pthread_cond_signal(&ex->wake);
        pthread_mutex_unlock(&ex->mu);
        return SP_OK;
    }
    double wait_s = expected_wait(ex, w->family, w->n, retry_after_s);
    if (ex->depth + w->n > ex->queue_capacity) {
        int cap = ex->queue_capacity, depth = ex->depth;
        pthread_mutex_unlock(&ex->mu);
        core_metric_add(ex->metrics.rejected, (const char *[]){"queue_full"}, 1);
        if (w->n > cap) return sp_err(SP_ERR_BUSY, "the request needs %d crops, more than the queue holds (%d)", w->n, cap);
        return sp_err(SP_ERR_BUSY, "the queue is full (%d of %d crops waiting)", depth, cap);
    }
    if (late(ex, wait_s, w->deadline)) {
        pthread_mutex_unlock(&ex->mu);
        core_metric_add(ex->metrics.rejected, (const char *[]){"overload"}, 1);
        return sp_err(SP_ERR_BUSY, "the queue would not reach this request before its deadline (about %.1f s)", wait_s);
    }
    if (ex->tail) ex->tail->next = w;
    else ex->head = w;
    ex->tail = w;
    ex->depth += w->n;
    ex->fdepth[w->family] += w->n;
    set_gauge(ex);
    pthread_cond_signal(&ex->wake);
    pthread_mutex_unlock(&ex->mu);
    return SP_OK;
}

int core_exec_queue_depth(core_exec *ex) {
    pthread_mutex_lock(&ex->mu);
    int d = ex->depth;
    pthread_mutex_unlock(&ex->mu);
    return d;
}

int core_exec_drain(core_exec *ex, double timeout_s) {
    double until = sp_now() + timeout_s;
    pthread_mutex_lock(&ex->mu);
    while ((ex->head || ex->running || ex->tasks) && sp_now() < until) {
        struct timespec ts;
        double next = sp_now() + 0.05; /* tasks do not signal idle: poll */
        abs_time(&ts, next < until ? next : until);
        pthread_cond_timedwait(&ex->idle, &ex->mu, &ts);
    }
    int left = ex->depth + ex->running;
    pthread_mutex_unlock(&ex->mu);
    return left;
}

void core_exec_stop(core_exec *ex) {
    if (!ex) return;
    pthread_mutex_lock(&ex->mu);
    int joined = ex->joined;
    ex->stop = 1;
    ex->joined = 1;
    pthread_cond_broadcast(&ex->wake);
    pthread_mutex_unlock(&ex->mu);
    if (joined) return;
    pthread_join(ex->thread, NULL);
    /* the thread ran the remaining tasks before stopping; fail what is still queued */
    core_work *left = ex->head;
    for (core_work *w = left; w; w = w->next) {
        w->status = SP_ERR_BUSY;
        snprintf(w->error, sizeof w->error, "the server shut down before this request ran");
        core_metric_add(ex->metrics.rejected, (const char *[]){"shutdown"}, 1);
    }
    ex->head = ex->tail = NULL;
    finish_all(left);
}

void core_exec_free(core_exec *ex) {
    if (!ex) return;
    core_exec_stop(ex);
    pthread_mutex_destroy(&ex->mu);
    pthread_cond_destroy(&ex->wake);
    pthread_cond_destroy(&ex->idle);
    free(ex->img);
    free(ex->mask);
    free(ex->out);
    free(ex->ids);
    free(ex->scores);
    free(ex->bw);
    free(ex->bc);
    free(ex->given);
    free(ex->refs);
    free(ex);
}
