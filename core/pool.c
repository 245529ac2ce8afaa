/* core/pool.c: worker threads taking jobs from a bounded FIFO queue (mutex and condition variable). */
#include "core/pool.h"

#include <pthread.h>
#include <stdlib.h>

struct core_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    core_job *head, *tail;
    int waiting, capacity, stopping;
    int nthreads;
    pthread_t *threads;
};

static void *worker(void *arg) {
    core_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stopping) pthread_cond_wait(&p->cv, &p->mu);
        core_job *j = p->head;
        if (!j) break; /* stopping and nothing left */
        p->head = j->next;
        if (!p->head) p->tail = NULL;
        p->waiting--;
        int cancelled = p->stopping;
        pthread_mutex_unlock(&p->mu);
        j->run(j, cancelled);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

sp_status core_pool_new(int threads, int capacity, core_pool **out) {
    *out = NULL;
    if (threads < 1 || threads > 64 || capacity < 1)
        return sp_err(SP_ERR_INVALID, "pool: %d threads and room for %d jobs are not allowed", threads, capacity);
    core_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->threads = calloc((size_t)threads, sizeof *p->threads))) {
        free(p);
        return sp_err(SP_ERR_NOMEM, "pool: out of memory");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->capacity = capacity;
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p)) {
            core_pool_free(p);
            return sp_err(SP_ERR_NOMEM, "pool: cannot start worker thread %d of %d", i + 1, threads);
        }
        p->nthreads++;
    }
    *out = p;
    return SP_OK;
}

sp_status core_pool_submit(core_pool *p, core_job *job) {
    pthread_mutex_lock(&p->mu);
    if (p->stopping || p->waiting >= p->capacity) {
        int stopping = p->stopping;
        pthread_mutex_unlock(&p->mu);
        return stopping ? sp_err(SP_ERR_BUSY, "the server is shutting down")
                        : sp_err(SP_ERR_BUSY, "%d jobs are already waiting for a worker", p->capacity);
    }
    job->next = NULL;
    if (p->tail) p->tail->next = job;
    else p->head = job;
    p->tail = job;
    p->waiting++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return SP_OK;
}

int core_pool_waiting(core_pool *p) {
    pthread_mutex_lock(&p->mu);
    int n = p->waiting;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void core_pool_stop(core_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    p->stopping = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
    p->nthreads = 0;
    /* no worker left (or none started): cancel what is still queued here */
    pthread_mutex_lock(&p->mu);
    core_job *j = p->head;
    p->head = p->tail = NULL;
    p->waiting = 0;
    pthread_mutex_unlock(&p->mu);
    for (core_job *next; j; j = next) {
        next = j->next;
        j->run(j, 1);
    }
}

void core_pool_free(core_pool *p) {
    if (!p) return;
    core_pool_stop(p);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
}
