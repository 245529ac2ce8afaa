/* core/pool.h: a fixed set of worker threads with a bounded queue, for work that must not run on the HTTP threads (Telea). */
#ifndef CORE_POOL_H
#define CORE_POOL_H

#include "common/sp.h"

typedef struct core_pool core_pool;

/* One piece of work. The submitter owns the job and keeps it alive until `run` has been called;
 * `run` is called exactly once, on a worker thread, with `cancelled` = 1 when the pool is being
 * freed before the job started (the job should then only report that and return). */
typedef struct core_job {
    void (*run)(struct core_job *job, int cancelled);
    struct core_job *next; /* the pool's */
} core_job;

/* Starts `threads` (1-64) workers with room for `capacity` (>= 1) queued jobs. */
sp_status core_pool_new(int threads, int capacity, core_pool **out);

/* Queues `job`. SP_ERR_BUSY when `capacity` jobs are already waiting or the pool is stopping
 * (the job is then not taken and its `run` is never called). Thread-safe. */
sp_status core_pool_submit(core_pool *p, core_job *job);

/* Jobs waiting (not yet started). Thread-safe. */
int core_pool_waiting(core_pool *p);

/* Stops taking jobs (core_pool_submit answers SP_ERR_BUSY from then on), calls `run` of each
 * queued job with cancelled = 1 and waits for running jobs to return. The pool stays valid until
 * core_pool_free. Idempotent; NULL is a no-op. */
void core_pool_stop(core_pool *p);

/* core_pool_stop, then frees the pool. NULL is a no-op. */
void core_pool_free(core_pool *p);

#endif
