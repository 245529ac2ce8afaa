/* test_faults.c: out-of-memory paths without a GPU: nn_buffer_grow's bookkeeping when allocations fail, and network plans that fail halfway (the backend's test hook failing the Nth allocation) giving back everything they took. */
#include <stdlib.h>
#include <string.h>

#include "model/backend.h"
#include "tests/t.h"

/* ---- nn_buffer_grow with a scripted allocator ---- */

/* malloc-backed; call i (from 0) fails when bit i of `fail` is set. */
typedef struct {
    unsigned fail;
    int calls, releases, live;
    size_t last_release; /* size passed to the last release */
} fake_alloc;

static sp_status fake_alloc_fn(void *ctx, void **p, size_t bytes) {
    fake_alloc *f = ctx;
    int i = f->calls++;
    *p = NULL;
    if (i < 32 && (f->fail >> i & 1u)) return sp_err(SP_ERR_NOMEM, "fake: no room for %zu bytes", bytes);
    *p = malloc(bytes);
    if (!*p) return sp_err(SP_ERR_NOMEM, "malloc(%zu)", bytes);
    memset(*p, 0xAB, bytes); /* writable to its full size */
    f->live++;
    return SP_OK;
}

static void fake_release_fn(void *ctx, void *p, size_t bytes) {
    fake_alloc *f = ctx;
    if (!p) return;
    free(p);
    f->releases++;
    f->live--;
    f->last_release = bytes;
}

/* A fresh allocator state and a buffer of `size` bytes (none when 0) made through it. */
static void grow_setup(fake_alloc *f, nn_allocator *a, void **buf, size_t *size, size_t have) {
    memset(f, 0, sizeof *f);
    a->alloc = fake_alloc_fn;
    a->release = fake_release_fn;
    a->ctx = f;
    *buf = NULL;
    *size = 0;
    if (have) CHECK(nn_buffer_grow(a, buf, size, have) == SP_OK && *buf && *size == have);
    f->calls = f->releases = 0;
}

static void test_buffer_grow(void) {
    fake_alloc f;
    nn_allocator a;
    void *buf;
    size_t size;

    /* no growth needed: nothing is called */
    grow_setup(&f, &a, &buf, &size, 100);
    void *was = buf;
    CHECK(nn_buffer_grow(&a, &buf, &size, 60) == SP_OK && buf == was && size == 100 && f.calls == 0);
    CHECK(nn_buffer_grow(&a, &buf, &size, 100) == SP_OK && buf == was && size == 100 && f.calls == 0);
    fake_release_fn(&f, buf, size);

    /* growth succeeds beside the old buffer: one allocation, the old one released after */
    grow_setup(&f, &a, &buf, &size, 100);
    CHECK(nn_buffer_grow(&a, &buf, &size, 300) == SP_OK);
    CHECK(buf && size == 300 && f.calls == 1 && f.releases == 1 && f.last_release == 100 && f.live == 1);
    memset(buf, 0, size);
    fake_release_fn(&f, buf, size);

    /* no room beside it, room once it is freed */
    grow_setup(&f, &a, &buf, &size, 100);
    f.fail = 1u;
    CHECK(nn_buffer_grow(&a, &buf, &size, 300) == SP_OK);
    CHECK(buf && size == 300 && f.calls == 2 && f.releases == 1 && f.live == 1);
    memset(buf, 0, size);
    fake_release_fn(&f, buf, size);

    /* no room at all: the old size comes back (its users keep working), and the error says why */
    grow_setup(&f, &a, &buf, &size, 100);
    f.fail = 3u;
    sp_status st = nn_buffer_grow(&a, &buf, &size, 300);
    CHECKF(st == SP_ERR_NOMEM && strstr(sp_err_msg(), "300"), "status %d, '%s'", (int)st, sp_err_msg());
    CHECKF(buf && size == 100 && f.calls == 3 && f.live == 1, "buf %p size %zu calls %d live %d", buf, size, f.calls,
           f.live);
    if (buf) memset(buf, 0, size);
    /* a later, smaller need is met by what was kept, and a later growth can succeed */
    CHECK(nn_buffer_grow(&a, &buf, &size, 80) == SP_OK && size == 100 && f.calls == 3);
    f.fail = 0;
    CHECK(nn_buffer_grow(&a, &buf, &size, 300) == SP_OK && size == 300 && f.live == 1);
    fake_release_fn(&f, buf, size);

    /* not even the old size: nothing held, and the buffer says so */
    grow_setup(&f, &a, &buf, &size, 100);
    f.fail = 7u;
    st = nn_buffer_grow(&a, &buf, &size, 300);
    CHECKF(st == SP_ERR_NOMEM && strstr(sp_err_msg(), "300") && strstr(sp_err_msg(), "100"), "status %d, '%s'",
           (int)st, sp_err_msg());
    CHECK(buf == NULL && size == 0 && f.live == 0);
    /* and the next growth starts from nothing */
    f.fail = 0;
    CHECK(nn_buffer_grow(&a, &buf, &size, 50) == SP_OK && buf && size == 50 && f.live == 1);
    fake_release_fn(&f, buf, size);

    /* from nothing, failing: one attempt, nothing held */
    grow_setup(&f, &a, &buf, &size, 0);
    f.fail = 1u;
    CHECK(nn_buffer_grow(&a, &buf, &size, 64) == SP_ERR_NOMEM && buf == NULL && size == 0 && f.calls == 1 &&
          f.live == 0);
    printf("nn_buffer_grow: bookkeeping under failing allocations checked\n");
}

/* ---- plans that fail halfway ---- */

/* Counts what the backend reports; the fail_at-th allocation request (from 1) fails. */
typedef struct {
    long asked, fail_at, live;
    size_t live_bytes;
} hook_state;

static int count_hook(void *ctx, nn_hook_event ev, size_t arg) {
    hook_state *h = ctx;
    switch (ev) {
    case NN_HOOK_ALLOC:
        h->asked++;
        return h->fail_at && h->asked == h->fail_at;
    case NN_HOOK_ALLOCATED:
        h->live++;
        h->live_bytes += arg;
        return 0;
    case NN_HOOK_FREED:
        h->live--;
        h->live_bytes -= arg;
        return 0;
    case NN_HOOK_CONV:
        return 0;
    }
    return 0;
}

static float *rand_buf(size_t n, unsigned seed, int binary) {
    float *b = malloc(n * sizeof(float));
    SP_ASSERT(b);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        float u = (float)(seed >> 8) / 16777216.0f;
        b[i] = binary ? (u < 0.7f ? 1.0f : 0.0f) : u;
    }
    return b;
}

/* One forward of the net at batch n, size s x s (out: the output, or NULL to discard). */
static sp_status forward(nn_net *net, int n, int s, float *out) {
    const nn_net_info *in = nn_net_get_info(net);
    float *x = rand_buf((size_t)n * in->in_channels * s * s, 7u + (unsigned)n, 0);
    float *m = rand_buf((size_t)n * s * s, 11u + (unsigned)n, 1);
    size_t no = in->arch == NN_ARCH_VGG16 ? (size_t)n * in->out_channels : (size_t)n * 3 * s * s;
    float *y = out ? out : malloc(no * sizeof(float));
    SP_ASSERT(y);
    sp_status st = in->arch == NN_ARCH_VGG16 ? nn_vgg_forward(net, n, s, s, x, NN_POOL_AVG, NULL, y)
                                             : nn_unet_forward(net, n, s, s, x, m, y);
    if (!out) free(y);
    free(x);
    free(m);
    return st;
}

/* Fails each allocation of a batch-4 plan in turn: every failure must give back all it took, and
 * the net must still run a smaller batch, with the same result as before the failures. */
static void test_plan_faults(nn_backend *be, const char *file) {
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/small/%s", file);
    hook_state h = {0};
    nn_backend_set_hook(be, count_hook, &h);
    nn_net *net = NULL;
    CHECKF(nn_net_load(be, path, &net) == SP_OK, "%s", sp_err_msg());
    if (!net) {
        nn_backend_set_hook(be, NULL, NULL);
        return;
    }
    const int s = 32;
    const nn_net_info *in = nn_net_get_info(net);
    size_t no = in->arch == NN_ARCH_VGG16 ? (size_t)2 * in->out_channels : (size_t)2 * 3 * s * s;
    float *ref = malloc(no * sizeof(float)), *got = malloc(no * sizeof(float));
    SP_ASSERT(ref && got);
    CHECKF(forward(net, 2, s, ref) == SP_OK, "%s", sp_err_msg());
    /* how many allocations a plan makes: those of a fresh batch size */
    long a0 = h.asked, live0 = h.live;
    size_t bytes0 = h.live_bytes;
    CHECKF(forward(net, 3, s, NULL) == SP_OK, "%s", sp_err_msg());
    long per_plan = h.asked - a0;
    CHECKF(per_plan >= 4 && h.live == live0 + per_plan, "%s: %ld allocations, %ld live", file, per_plan,
           h.live - live0);
    long leaks = 0;
    for (long k = 1; k <= per_plan; k++) {
        long live = h.live;
        size_t bytes = h.live_bytes;
        h.fail_at = h.asked + k;
        sp_status st = forward(net, 4, s, NULL);
        h.fail_at = 0;
        CHECKF(st == SP_ERR_NOMEM, "%s: allocation %ld of %ld failed, forward says %d (%s)", file, k, per_plan, (int)st,
               sp_err_msg());
        if (h.live != live || h.live_bytes != bytes) {
            leaks++;
            CHECKF(0, "%s: plan failing at allocation %ld of %ld kept %ld allocations, %zu bytes", file, k, per_plan,
                   h.live - live, h.live_bytes - bytes);
        }
    }
    /* smaller and larger batches still plan and run; the cached batch-2 result is unchanged */
    CHECKF(forward(net, 1, s, NULL) == SP_OK, "%s: batch 1 after the failures: %s", file, sp_err_msg());
    CHECKF(forward(net, 4, s, NULL) == SP_OK, "%s: batch 4 after the failures: %s", file, sp_err_msg());
    CHECKF(forward(net, 2, s, got) == SP_OK, "%s", sp_err_msg());
    CHECK(memcmp(got, ref, no * sizeof(float)) == 0);
    nn_net_free(net);
    CHECKF(h.live == 0 && h.live_bytes == 0, "%s: %ld allocations (%zu bytes) left after nn_net_free", file, h.live,
           h.live_bytes);
    printf("%s: a plan makes %ld allocations; failing each in turn left %ld leaks (batch 2 holds %zu bytes)\n", file,
           per_plan, leaks, bytes0);
    nn_backend_set_hook(be, NULL, NULL);
    free(ref);
    free(got);
}

/* Without a hook nothing is reported and nothing fails; a hook can be removed again. */
static void test_hook_install(nn_backend *be) {
    hook_state h = {0};
    nn_tensor t;
    CHECK(nn_tensor_new(be, &t, 1, 3, 4, 4) == SP_OK);
    nn_tensor_drop(be, &t);
    nn_backend_set_hook(be, count_hook, &h);
    h.fail_at = 1;
    CHECK(nn_tensor_new(be, &t, 1, 3, 4, 4) == SP_ERR_NOMEM && t.data == NULL);
    nn_mask m;
    CHECK(nn_mask_new(be, &m, 1, 1, 4, 4) == SP_OK && h.live == 1);
    nn_mask_drop(be, &m);
    CHECK(h.asked == 2 && h.live == 0);
    nn_backend_set_hook(be, NULL, NULL);
    CHECK(nn_tensor_new(be, &t, 1, 3, 4, 4) == SP_OK && h.asked == 2);
    nn_tensor_drop(be, &t);
    CHECK(h.live == 0);
}

int main(void) {
    test_buffer_grow();
    nn_backend_opts o = {.device = NN_DEVICE_CPU, .threads = 2};
    nn_backend *be = NULL;
    CHECKF(nn_backend_new(&o, &be) == SP_OK, "%s", sp_err_msg());
    if (be) {
        test_hook_install(be);
        test_plan_faults(be, "pconv_unet.safetensors");
        test_plan_faults(be, "simk_unet_k1.safetensors");
        test_plan_faults(be, "vgg16_features.safetensors");
        nn_backend_free(be);
    }
    return t_done("test_faults");
}
