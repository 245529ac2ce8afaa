/* srv_pool.h: a fixed set of worker threads with a bounded queue, for work that must not run on the HTTP threads (Telea). */
#ifndef SRV_POOL_H
#define SRV_POOL_H

#include "sp.h"

typedef struct srv_pool srv_pool;

/* One piece of work. The submitter owns the job and keeps it alive until `run` has been called;
 * `run` is called exactly once, on a worker thread, with `cancelled` = 1 when the pool is being
 * freed before the job started (the job should then only report that and return). */
typedef struct srv_job {
    void (*run)(struct srv_job *job, int cancelled);
    struct srv_job *next; /* the pool's */
} srv_job;

/* Starts `threads` (1-64) workers with room for `capacity` (>= 1) queued jobs. */
sp_status srv_pool_new(int threads, int capacity, srv_pool **out);

/* Queues `job`. SP_ERR_BUSY when `capacity` jobs are already waiting or the pool is stopping
 * (the job is then not taken and its `run` is never called). Thread-safe. */
sp_status srv_pool_submit(srv_pool *p, srv_job *job);

/* Jobs waiting (not yet started). Thread-safe. */
int srv_pool_waiting(srv_pool *p);

/* Stops taking jobs (srv_pool_submit answers SP_ERR_BUSY from then on), calls `run` of each
 * queued job with cancelled = 1 and waits for running jobs to return. The pool stays valid until
 * srv_pool_free. Idempotent; NULL is a no-op. */
void srv_pool_stop(srv_pool *p);

/* srv_pool_stop, then frees the pool. NULL is a no-op. */
void srv_pool_free(srv_pool *p);

#endif
