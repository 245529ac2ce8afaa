/* core/exec.h: the batching executor (docs/http-api.md): one thread per device takes crops from a bounded FIFO and runs them in batches. */
#ifndef CORE_EXEC_H
#define CORE_EXEC_H

#include "model/nn.h"
#include "core/metrics.h"

/*
 * HTTP threads submit a work (one request's crops) and return; the executor thread forms batches
 * of up to max_batch crops of one method and one model family in FIFO order, waiting at most max_delay_ms after the
 * oldest queued crop for a batch to fill; a work's crops may span batches. A batch runs padded to
 * a power of two (or max_batch) with copies of its last crop, so the engine sees few batch sizes
 * and keeps one activation plan for each: its memory stays flat after warm-up. When every crop of a
 * work is done, or the work failed (deadline, shutdown, model error), the executor calls its
 * `done` callback once and never touches it again. Admission is all or nothing: a work whose
 * crops do not fit in queue_capacity, or whose last crop would not be done within 3/4 of the time
 * left to its deadline at the measured time per batch, is refused with SP_ERR_BUSY and a
 * Retry-After estimate.
 */

#define CORE_MAX_FAMILIES 8 /* model families one runner serves at most */

/* What the executor runs: the model behind an interface (the real pipeline or a test double). It
 * serves `nfam` model families; a batch holds crops of one family only. */
typedef struct {
    int nfam;                   /* 1..CORE_MAX_FAMILIES */
    int s[CORE_MAX_FAMILIES];   /* working size of a crop of each family */
    int k[CORE_MAX_FAMILIES];   /* neighbours per crop written to ids/scores (0 for none) */
    /* Inpaints n crops of family `fam` (n a power of two or max_batch): img (n,3,s,s), mask
     * (n,1,s,s) 1 = keep; refs (n,k,3,s,s) the neighbours of the crops with given[i] != 0, which skip
     * retrieval (nn_pipeline_run_refs; both NULL when no crop of the batch has any); writes out
     * (n,3,s,s) and, with k > 0 and method SIM, ids/scores (n,k), with the family's s and k.
     * Called only from the executor thread. */
    sp_status (*run)(void *ctx, int fam, int n, const float *img, const float *mask, const float *refs,
                     const uint8_t *given, nn_method method, float *out, int64_t *ids, float *scores, nn_timings *t);
    void *ctx;
} core_runner;

typedef struct core_work core_work;
struct core_work {
    /* set by the submitter; the buffers stay valid until `done` */
    int n;             /* crops (0 for a task) */
    int family;        /* the runner's family (0..nfam-1) the crops are for */
    nn_method method;
    const float *img;  /* (n,3,s,s) */
    const float *mask; /* (n,1,s,s) */
    float *out;        /* (n,3,s,s) */
    int64_t *ids;      /* (n,k), may be NULL */
    float *scores;     /* (n,k), may be NULL */
    /* Caller-supplied neighbours (method SIM, k > 0): the same K images for every crop of the work,
     * which then skip retrieval; NULL = retrieve. ids/scores of its crops get ref_ids and 1. */
    const float *refs;      /* (k,3,s,s) in [0,1], or NULL */
    const int64_t *ref_ids; /* (k) what to report for each (a database id, or -1 for an upload) */
    double deadline;   /* sp_now() time after which the work is dropped with SP_ERR_TIMEOUT */
    /* A task instead of crops: called on the executor thread between batches (n = 0). */
    void (*call)(core_work *w);
    void (*done)(core_work *w); /* required; called exactly once, from the executor thread or core_exec_stop */
    void *user;
    /* results, written before `done` */
    sp_status status;  /* SP_OK, SP_ERR_TIMEOUT, SP_ERR_BUSY (shutting down) or the runner's error */
    char error[256];
    double queue_ms;   /* longest wait of one of its crops before its batch started */
    nn_timings t;      /* milliseconds of the batches that held its crops, summed */
    int batches;
    /* private to the executor */
    core_work *next;
    int taken;         /* crops handed to batches */
    int finished;      /* crops done */
    double enqueued;
};

/* Metric families the executor updates (any may be NULL). */
typedef struct {
    core_family *batch_size;     /* histogram */
    core_family *stage_seconds;  /* histogram {stage}: queue, coarse, descriptor, search, refine */
    core_family *queue_depth;    /* gauge */
    core_family *rejected;       /* counter {reason}: queue_full, deadline, shutdown */
} core_exec_metrics;

typedef struct core_exec core_exec;

/* Starts the executor thread. `runner` and `metrics` are copied. */
sp_status core_exec_new(const core_runner *runner, int max_batch, int max_delay_ms, int queue_capacity,
                       const core_exec_metrics *metrics, core_exec **out);

/* Queues a work (n >= 1 crops, or a task with `call`). SP_ERR_BUSY when it is refused (queue full,
 * it would not be done before its deadline, or the executor is stopping): *retry_after_s receives
 * a suggested wait in whole seconds (>= 1) and `done` is NOT called. On SP_OK `done` will be. */
sp_status core_exec_submit(core_exec *ex, core_work *w, int *retry_after_s);

/* NULL when n crops of model family `fam` with this deadline would be admitted now, else why not
 * ("queue_full", "overload", "shutdown"): a cheap check before a request's body is read and
 * decoded, to shed load early. `fam` -1 (or out of range): the family is not known yet, and the
 * crops count at the fastest family's batch time. *retry_after_s as for core_exec_submit. */
const char *core_exec_admissible(core_exec *ex, int fam, int n, double deadline, int *retry_after_s);

/* Crops waiting now. */
int core_exec_queue_depth(core_exec *ex);

/* Waits until nothing is queued or running, or until `timeout_s` passes; returns the number of
 * crops still queued or running (0 = drained). New submissions are still accepted meanwhile. */
int core_exec_drain(core_exec *ex, double timeout_s);

/* Stops the thread after the batch in progress; every work still queued gets SP_ERR_BUSY and its
 * `done`, and later submissions are refused with SP_ERR_BUSY. The executor stays valid (queries,
 * refused submissions) until core_exec_free. Idempotent; NULL is a no-op. */
void core_exec_stop(core_exec *ex);

/* core_exec_stop, then frees the executor; NULL is a no-op. */
void core_exec_free(core_exec *ex);

#endif
