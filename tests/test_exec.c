/* test_exec.c: the batching executor with a test runner: batch sizes, crops spanning batches, deadlines, load shedding, errors, shutdown. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/exec.h"
#include "tests/t.h"

#define S 8

/* A runner that fills holes with 0.25 + crop's first pixel (or, for a crop with given neighbours,
 * the first value of its neighbours), after sleeping `delay_us`. */
typedef struct {
    int delay_us;
    int fam_delay_us[2]; /* added per batch of family 0 and 1 */
    int fail;
    int sizes[256];
    int fams[256];   /* the family of each batch */
    int mixed;       /* a batch held crops tagged with another family */
    atomic_int nbatches;
    pthread_t thread;
} fake;

static sp_status fake_run(void *ctx, int fam, int n, const float *img, const float *mask, const float *refs,
                         const uint8_t *given, nn_method method, float *out, int64_t *ids, float *scores,
                         nn_timings *t) {
    fake *f = ctx;
    f->thread = pthread_self();
    int b = atomic_fetch_add(&f->nbatches, 1);
    if (b < 256) f->sizes[b] = n, f->fams[b] = fam;
    for (int i = 0; i < n; i++) /* family 1's test crops have a first pixel >= 2 */
        if ((img[(size_t)i * 3 * S * S] >= 2.0f) != (fam == 1)) f->mixed = 1;
    if (f->delay_us) usleep((useconds_t)f->delay_us);
    if (fam < 2 && f->fam_delay_us[fam]) usleep((useconds_t)f->fam_delay_us[fam]);
    if (f->fail) return sp_err(SP_ERR_BACKEND, "fake backend failure");
    for (int i = 0; i < n; i++)
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < S * S; p++) {
                size_t o = ((size_t)i * 3 + c) * S * S + p;
                float m = mask[(size_t)i * S * S + p];
                float fill = given && given[i] ? refs[(size_t)i * 3 * S * S] : 0.25f + img[(size_t)i * 3 * S * S];
                out[o] = m ? img[o] : fill;
            }
    if (ids)
        for (int i = 0; i < n; i++) {
            ids[i] = (int64_t)(img[(size_t)i * 3 * S * S] * 1000);
            scores[i] = 0.5f;
        }
    t->coarse = 1;
    t->refine = method == NN_METHOD_SIM ? 2 : 0;
    return SP_OK;
}

typedef struct {
    core_work w;
    float img[4][3 * S * S], mask[4][S * S], out[4][3 * S * S];
    int64_t ids[4];
    float scores[4];
    atomic_int done;
    pthread_t done_thread;
} job;

static void job_done(core_work *w) {
    job *j = w->user;
    j->done_thread = pthread_self();
    atomic_fetch_add(&j->done, 1);
}

static void job_init(job *j, int n, float tag, double deadline_s) {
    memset(j, 0, sizeof *j);
    for (int i = 0; i < n; i++) {
        for (int p = 0; p < 3 * S * S; p++) j->img[i][p] = tag + (float)i * 0.01f;
        for (int p = 0; p < S * S; p++) j->mask[i][p] = p % 3 ? 1.0f : 0.0f;
    }
    j->w.n = n;
    j->w.method = NN_METHOD_SIM;
    j->w.img = &j->img[0][0];
    j->w.mask = &j->mask[0][0];
    j->w.out = &j->out[0][0];
    j->w.ids = j->ids;
    j->w.scores = j->scores;
    j->w.deadline = sp_now() + deadline_s;
    j->w.done = job_done;
    j->w.user = j;
}

static int job_ok(const job *j) {
    for (int i = 0; i < j->w.n; i++)
        for (int p = 0; p < 3 * S * S; p++) {
            float want = (p % (S * S)) % 3 ? j->img[i][p] : 0.25f + j->img[i][0];
            if (j->out[i][p] != want) return 0;
        }
    for (int i = 0; i < j->w.n; i++)
        if (j->ids[i] != (int64_t)(j->img[i][0] * 1000)) return 0;
    return 1;
}

static void wait_done(job *j, int n) {
    for (int t = 0; t < 500; t++) {
        int all = 1;
        for (int i = 0; i < n; i++) all &= atomic_load(&j[i].done) > 0;
        if (all) return;
        usleep(10000);
    }
}

static void task_call(core_work *w) { *(pthread_t *)w->user = pthread_self(); }
static atomic_int task_done_count;
static void task_done(core_work *w) {
    (void)w;
    atomic_fetch_add(&task_done_count, 1);
}

int main(void) {
    static job jobs[16];
    fake f = {0};
    core_runner r = {1, {S}, {1}, fake_run, &f};
    core_metrics *m = core_metrics_new();
    core_exec_metrics em = {core_metrics_histogram(m, "b", "b", NULL, (const double[]){1, 2, 4, 8}, 4),
                           core_metrics_histogram(m, "s", "s", "stage", core_duration_buckets, core_duration_nbuckets),
                           core_metrics_gauge(m, "q", "q", NULL), core_metrics_counter(m, "r", "r", "reason")};
    core_exec *ex;
    int ra;

    /* five works of three crops, max_batch 4 and a generous delay: batches 4,4,4,3, the last padded to 4 */
    CHECK(core_exec_new(&r, 4, 200, 64, &em, &ex) == SP_OK);
    for (int i = 0; i < 5; i++) {
        job_init(&jobs[i], 3, 0.1f * (float)(i + 1), 10);
        CHECK(core_exec_submit(ex, &jobs[i].w, &ra) == SP_OK);
    }
    wait_done(jobs, 5);
    for (int i = 0; i < 5; i++) {
        CHECK(atomic_load(&jobs[i].done) == 1 && jobs[i].w.status == SP_OK);
        CHECKF(job_ok(&jobs[i]), "job %d wrong output", i);
        CHECK(pthread_equal(jobs[i].done_thread, f.thread));
    }
    CHECK(atomic_load(&f.nbatches) == 4);
    CHECK(f.sizes[0] == 4 && f.sizes[1] == 4 && f.sizes[2] == 4 && f.sizes[3] == 4);
    CHECK(jobs[1].w.batches == 2 && jobs[1].w.t.coarse == 2 && jobs[1].w.t.refine == 4);
    CHECK(core_exec_drain(ex, 1) == 0);
    CHECK(core_metric_get(em.batch_size, NULL) == 4);

    /* caller-supplied neighbours: a work with refs (2 crops) and one without (3) share batches of 4;
     * each crop is handled as its own work says, padding included */
    f = (fake){0};
    CHECK(core_exec_new(&r, 4, 200, 64, &em, &ex) == SP_OK);
    static float ref[3 * S * S];
    for (int p = 0; p < 3 * S * S; p++) ref[p] = 0.875f;
    const int64_t ref_id = 42;
    job_init(&jobs[0], 3, 0.1f, 10);
    job_init(&jobs[1], 2, 0.2f, 10);
    jobs[1].w.refs = ref;
    jobs[1].w.ref_ids = &ref_id;
    CHECK(core_exec_submit(ex, &jobs[0].w, &ra) == SP_OK);
    CHECK(core_exec_submit(ex, &jobs[1].w, &ra) == SP_OK);
    wait_done(jobs, 2);
    CHECK(jobs[0].w.status == SP_OK && jobs[1].w.status == SP_OK && job_ok(&jobs[0]));
    for (int i = 0; i < 2; i++) {
        CHECK(jobs[1].ids[i] == 42 && jobs[1].scores[i] == 1.0f);
        for (int p = 0; p < 3 * S * S; p++)
            CHECK(jobs[1].out[i][p] == ((p % (S * S)) % 3 ? jobs[1].img[i][p] : 0.875f));
    }
    core_exec_free(ex);

    /* two families: works alternate between them; no batch mixes them, FIFO order within each kind */
    f = (fake){0};
    core_runner r2 = {2, {S, S}, {1, 0}, fake_run, &f};
    CHECK(core_exec_new(&r2, 4, 200, 64, &em, &ex) == SP_OK);
    for (int i = 0; i < 6; i++) {
        job_init(&jobs[i], 2, i % 2 ? 2.0f + 0.1f * (float)i : 0.1f * (float)(i + 1), 10);
        jobs[i].w.family = i % 2;
        if (i % 2) jobs[i].w.ids = NULL, jobs[i].w.scores = NULL;
        CHECK(core_exec_submit(ex, &jobs[i].w, &ra) == SP_OK);
    }
    wait_done(jobs, 6);
    for (int i = 0; i < 6; i++) {
        CHECK(jobs[i].w.status == SP_OK);
        if (i % 2 == 0) CHECK(job_ok(&jobs[i]));
    }
    CHECK(!f.mixed);
    CHECKF(atomic_load(&f.nbatches) >= 2, "%d batches", atomic_load(&f.nbatches));
    job_init(&jobs[0], 1, 0.1f, 10);
    jobs[0].w.family = 2;
    CHECK(core_exec_submit(ex, &jobs[0].w, &ra) == SP_ERR_INVALID);
    core_exec_free(ex);

    /* load shedding counts each family's batches at its own measured time: family 0's batch takes
     * 0.4 s, family 1's about 2 ms (a 256-px and a 128-px family, say) */
    f = (fake){.fam_delay_us = {400000, 2000}};
    CHECK(core_exec_new(&r2, 1, 0, 64, &em, &ex) == SP_OK);
    for (int i = 0; i < 2; i++) {
        job_init(&jobs[i], 1, i ? 2.5f : 0.1f, 10);
        jobs[i].w.family = i;
        if (i) jobs[i].w.ids = NULL, jobs[i].w.scores = NULL;
        CHECK(core_exec_submit(ex, &jobs[i].w, &ra) == SP_OK);
    }
    wait_done(jobs, 2);
    double soon = sp_now() + 0.3;
    CHECKF(!core_exec_admissible(ex, 1, 1, soon, &ra), "family 1 with 0.3 s to go on an idle queue is admitted");
    const char *why = core_exec_admissible(ex, 0, 1, soon, &ra);
    CHECKF(why && !strcmp(why, "overload"), "family 0 (0.4 s a batch) with 0.3 s to go is refused: %s", why ? why : "admitted");
    CHECKF(!core_exec_admissible(ex, -1, 1, soon, &ra), "a family not known yet counts at the fastest family's time");
    for (int i = 0; i < 2; i++) { /* two batches of family 0 ahead: 0.8 s */
        job_init(&jobs[i], 1, 0.1f, 10);
        CHECK(core_exec_submit(ex, &jobs[i].w, &ra) == SP_OK);
    }
    usleep(50000);
    why = core_exec_admissible(ex, 1, 1, sp_now() + 0.5, &ra);
    CHECKF(why && !strcmp(why, "overload") && ra >= 1, "family 1 behind 0.8 s of family 0: %s", why ? why : "admitted");
    CHECKF(!core_exec_admissible(ex, 1, 1, sp_now() + 3, &ra), "family 1 behind 0.8 s of family 0 with 3 s to go");
    wait_done(jobs, 2);
    core_exec_free(ex);
    f = (fake){0};
    CHECK(core_exec_new(&r, 4, 0, 64, &em, &ex) == SP_OK);

    /* a task runs on the executor thread (the one a batch of this executor ran on) */
    job_init(&jobs[0], 1, 0.1f, 10);
    CHECK(core_exec_submit(ex, &jobs[0].w, &ra) == SP_OK);
    wait_done(jobs, 1);
    pthread_t tt;
    core_work task = {.call = task_call, .done = task_done, .user = &tt};
    CHECK(core_exec_submit(ex, &task, &ra) == SP_OK);
    for (int t = 0; t < 100 && !atomic_load(&task_done_count); t++) usleep(10000);
    CHECK(atomic_load(&task_done_count) == 1 && pthread_equal(tt, f.thread));
    core_exec_free(ex);

    /* three crops alone with max_batch 8: the runner sees a batch of 4 (padded), the work its 3 results */
    f = (fake){0};
    CHECK(core_exec_new(&r, 8, 0, 64, &em, &ex) == SP_OK);
    job_init(&jobs[0], 3, 0.3f, 10);
    CHECK(core_exec_submit(ex, &jobs[0].w, &ra) == SP_OK);
    wait_done(jobs, 1);
    CHECK(atomic_load(&f.nbatches) == 1 && f.sizes[0] == 4 && job_ok(&jobs[0]));
    core_exec_free(ex);

    /* max_delay 0 with one crop: no waiting for company */
    f = (fake){0};
    CHECK(core_exec_new(&r, 8, 0, 64, &em, &ex) == SP_OK);
    job_init(&jobs[0], 1, 0.5f, 10);
    double t0 = sp_now();
    CHECK(core_exec_submit(ex, &jobs[0].w, &ra) == SP_OK);
    wait_done(jobs, 1);
    CHECK(atomic_load(&jobs[0].done) == 1 && sp_now() - t0 < 0.5);
    core_exec_free(ex);

    /* load shedding: capacity 6 crops, a slow runner */
    f = (fake){.delay_us = 200000};
    CHECK(core_exec_new(&r, 2, 0, 6, &em, &ex) == SP_OK);
    int accepted = 0, refused = 0;
    for (int i = 0; i < 8; i++) {
        job_init(&jobs[i], 2, 0.1f * (float)i, 30);
        sp_status st = core_exec_submit(ex, &jobs[i].w, &ra);
        if (st == SP_OK) accepted++;
        else {
            CHECK(st == SP_ERR_BUSY && ra >= 1 && strstr(sp_err_msg(), "full"));
            refused++;
            jobs[i].done = 1; /* never called for a refused work */
        }
    }
    CHECKF(accepted >= 3 && accepted <= 4 && refused == 8 - accepted, "accepted %d", accepted);
    job big;
    job_init(&big, 4, 0.9f, 30);
    big.w.n = 7;
    CHECK(core_exec_submit(ex, &big.w, &ra) == SP_ERR_BUSY && strstr(sp_err_msg(), "more than the queue holds"));
    wait_done(jobs, 8);
    for (int i = 0; i < 8; i++) CHECK(atomic_load(&jobs[i].done) == 1);
    CHECK(core_metric_get(em.rejected, (const char *[]){"queue_full"}) >= 4);
    /* after measuring 0.1 s per crop, a work that cannot start before its deadline is refused */
    for (int i = 0; i < 3; i++) {
        job_init(&jobs[i], 2, 0.1f, 30);
        if (i < 2) CHECK(core_exec_submit(ex, &jobs[i].w, &ra) == SP_OK);
        else jobs[i].done = 1;
    }
    job_init(&jobs[3], 2, 0.1f, 0.3);
    CHECK(core_exec_submit(ex, &jobs[3].w, &ra) == SP_ERR_BUSY && strstr(sp_err_msg(), "deadline") && ra >= 1);
    wait_done(jobs, 3);
    /* a deadline passing in the queue: 504-style timeout */
    f.delay_us = 300000;
    job_init(&jobs[0], 2, 0.1f, 30);
    job_init(&jobs[1], 2, 0.2f, 30);
    CHECK(core_exec_submit(ex, &jobs[0].w, &ra) == SP_OK);
    usleep(20000);
    jobs[1].w.deadline = sp_now() + 10;
    CHECK(core_exec_submit(ex, &jobs[1].w, &ra) == SP_OK);
    jobs[1].w.deadline = sp_now() + 0.05; /* shortened after admission, as if the estimate were wrong */
    wait_done(jobs, 2);
    CHECK(jobs[0].w.status == SP_OK);
    CHECKF(jobs[1].w.status == SP_ERR_TIMEOUT, "status %d", jobs[1].w.status);
    CHECK(core_metric_get(em.rejected, (const char *[]){"deadline"}) == 1);
    core_exec_free(ex);

    /* runner failure reaches every work of the batch */
    f = (fake){.fail = 1};
    CHECK(core_exec_new(&r, 4, 50, 64, &em, &ex) == SP_OK);
    job_init(&jobs[0], 3, 0.1f, 10);
    job_init(&jobs[1], 3, 0.2f, 10);
    CHECK(core_exec_submit(ex, &jobs[0].w, &ra) == SP_OK);
    CHECK(core_exec_submit(ex, &jobs[1].w, &ra) == SP_OK);
    wait_done(jobs, 2);
    CHECK(jobs[0].w.status == SP_ERR_BACKEND && strstr(jobs[0].w.error, "fake backend failure"));
    CHECK(jobs[1].w.status == SP_ERR_BACKEND && atomic_load(&jobs[1].done) == 1);
    CHECK(core_exec_queue_depth(ex) == 0);
    core_exec_free(ex);

    /* shutdown with work queued: every done is called with SP_ERR_BUSY */
    f = (fake){.delay_us = 100000};
    CHECK(core_exec_new(&r, 1, 0, 64, &em, &ex) == SP_OK);
    for (int i = 0; i < 4; i++) {
        job_init(&jobs[i], 1, 0.1f, 10);
        CHECK(core_exec_submit(ex, &jobs[i].w, &ra) == SP_OK);
    }
    usleep(20000);
    CHECK(core_exec_drain(ex, 0.05) > 0);
    core_exec_free(ex);
    int ok = 0, busy = 0;
    for (int i = 0; i < 4; i++) {
        CHECK(atomic_load(&jobs[i].done) == 1);
        ok += jobs[i].w.status == SP_OK;
        busy += jobs[i].w.status == SP_ERR_BUSY;
    }
    CHECKF(ok >= 1 && ok + busy == 4, "ok %d busy %d", ok, busy);
    core_exec_free(NULL);
    core_metrics_free(m);
    return t_done("test_exec");
}
