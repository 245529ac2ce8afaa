/* cmd_bench.c: `semipaint bench`: times each network and the whole pipeline (the fixture nets, or --model's family of the configuration), the machine's FMA peak, and optionally PyTorch side by side. */
#include <immintrin.h>
#include <omp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/models.h"
#include "model/nn.h"

/* ---- fp32 FMA peak ---- */

/* Runs `iters` rounds of 12 independent 8-wide FMA chains (enough to fill two FMA pipes of
 * latency 4-5); returns a value that depends on every result so nothing is optimised away. */
__attribute__((target("avx2,fma"))) static float fma_kernel(long iters, float seed) {
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    __m256 a0 = _mm256_set1_ps(seed), a1 = _mm256_set1_ps(seed + 1), a2 = _mm256_set1_ps(seed + 2),
           a3 = _mm256_set1_ps(seed + 3), a4 = _mm256_set1_ps(seed + 4), a5 = _mm256_set1_ps(seed + 5),
           a6 = _mm256_set1_ps(seed + 6), a7 = _mm256_set1_ps(seed + 7), a8 = _mm256_set1_ps(seed + 8),
           a9 = _mm256_set1_ps(seed + 9), a10 = _mm256_set1_ps(seed + 10), a11 = _mm256_set1_ps(seed + 11);
    for (long it = 0; it < iters; it++) {
        a0 = _mm256_fmadd_ps(a0, m, c), a1 = _mm256_fmadd_ps(a1, m, c), a2 = _mm256_fmadd_ps(a2, m, c);
        a3 = _mm256_fmadd_ps(a3, m, c), a4 = _mm256_fmadd_ps(a4, m, c), a5 = _mm256_fmadd_ps(a5, m, c);
        a6 = _mm256_fmadd_ps(a6, m, c), a7 = _mm256_fmadd_ps(a7, m, c), a8 = _mm256_fmadd_ps(a8, m, c);
        a9 = _mm256_fmadd_ps(a9, m, c), a10 = _mm256_fmadd_ps(a10, m, c), a11 = _mm256_fmadd_ps(a11, m, c);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[7];
}

/* Measured fp32 peak in GFLOP/s over `threads` threads (FMA = 2 flops), best of 5 rounds. */
static double measure_peak(int threads) {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
    const long iters = 20000000;
    double best = 0;
    volatile float sink = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = sp_now();
        float acc = 0;
#pragma omp parallel num_threads(threads) reduction(+ : acc)
        acc += fma_kernel(iters, (float)omp_get_thread_num());
        double dt = sp_now() - t0;
        sink += acc;
        double gf = (double)threads * iters * 12 * 8 * 2 / dt / 1e9;
        if (gf > best) best = gf;
    }
    (void)sink;
    return best;
}

/* ---- timing ---- */

typedef struct {
    double mean_ms, min_ms; /* per image */
} timing;

typedef struct {
    nn_net *pconv, *vgg, *simk;
    nn_net *sim0;          /* --model: the family's refine_fallback (Sim-0), or NULL */
    rt_descriptor *desc;   /* --model: the family's descriptor (else VGG's avg pooling directly) */
    nn_pipeline *pipe;     /* coarse + descriptor + search + refine (Sim-K) */
    nn_pipeline *pipe0;    /* --model: coarse + refine_fallback (Sim-0), or NULL */
    int n, s, k;
    float *img, *mask, *out, *feat_desc;
    float *db;     /* synthetic database descriptors for the bench retriever, (db_n, dim) */
    int db_n, dim;
} bench_ctx;

/* Bench retriever: real descriptors (vgg16_features, or --model's family descriptor), exact search
 * over db_n synthetic vectors, and the composite itself handed back as each of the k neighbours. */
static sp_status bench_query(void *ctx, int n, int s, const float *comp, int64_t *ids, float *scores, float *nb,
                             double *dms, double *sms) {
    bench_ctx *b = ctx;
    double t0 = sp_now();
    sp_status st = b->desc ? rt_descriptor_compute(b->desc, n, s, comp, b->feat_desc)
                           : nn_vgg_forward(b->vgg, n, s, s, comp, NN_POOL_AVG, NULL, b->feat_desc);
    if (st) return st;
    double t1 = sp_now();
    const size_t img = (size_t)3 * s * s;
    for (int i = 0; i < n; i++) {
        float best = -2;
        int64_t bi = 0;
        for (int j = 0; j < b->db_n; j++) {
            float d = 0;
            for (int c = 0; c < b->dim; c++) d += b->feat_desc[(size_t)i * b->dim + c] * b->db[(size_t)j * b->dim + c];
            if (d > best) best = d, bi = j;
        }
        for (int j = 0; j < b->k; j++) {
            ids[i * b->k + j] = bi;
            scores[i * b->k + j] = best;
            memcpy(nb + ((size_t)i * b->k + j) * img, comp + i * img, img * sizeof(float));
        }
    }
    *dms = (t1 - t0) * 1e3;
    *sms = (sp_now() - t1) * 1e3;
    return SP_OK;
}

/* What a row of the timing table runs: the first four are the rows without --model, in this
 * order (and training/bench_torch.py's names); --model adds the family's descriptor, its Sim-0
 * net and pipeline. */
typedef enum { B_PCONV, B_VGG, B_SIMK, B_PIPE, B_DESC, B_SIM0, B_PIPE0 } bench_which;
static const char *bench_names[] = {"pconv", "vgg", "simk1", "pipeline"};

/* One row of the timing table. */
typedef struct {
    bench_which w;
    char name[24];
    double flops; /* per image; 0 = not counted (a descriptor without a network) */
} bench_row;
#define BENCH_MAX_ROWS 6

static sp_status run_once(bench_ctx *b, bench_which w) {
    switch (w) {
    case B_PCONV: return nn_unet_forward(b->pconv, b->n, b->s, b->s, b->img, b->mask, b->out);
    case B_VGG: return nn_vgg_forward(b->vgg, b->n, b->s, b->s, b->img, NN_POOL_AVG, NULL, b->feat_desc);
    case B_DESC: return rt_descriptor_compute(b->desc, b->n, b->s, b->img, b->feat_desc);
    case B_SIMK: {
        /* the refine input (n,3+1+3k,s,s): reuse img for the three image parts */
        return nn_unet_forward(b->simk, b->n, b->s, b->s, b->out, NULL, b->img);
    }
    case B_SIM0: return nn_unet_forward(b->sim0, b->n, b->s, b->s, b->out, NULL, b->img);
    case B_PIPE: return nn_pipeline_run(b->pipe, b->n, b->img, b->mask, NN_METHOD_SIM, b->out, NULL, NULL, NULL);
    case B_PIPE0: return nn_pipeline_run(b->pipe0, b->n, b->img, b->mask, NN_METHOD_SIM, b->out, NULL, NULL, NULL);
    }
    return SP_OK;
}

static sp_status time_it(bench_ctx *b, bench_which w, int iters, int warmup, timing *t) {
    sp_status st;
    for (int i = 0; i < warmup; i++)
        if ((st = run_once(b, w))) return st;
    double sum = 0, mn = 1e30;
    for (int i = 0; i < iters; i++) {
        double t0 = sp_now();
        if ((st = run_once(b, w))) return st;
        double dt = (sp_now() - t0) * 1e3 / b->n;
        sum += dt;
        if (dt < mn) mn = dt;
    }
    t->mean_ms = sum / iters;
    t->min_ms = mn;
    return SP_OK;
}

/* Runs training/bench_torch.py for one batch size and parses its JSON lines into tt[4]. */
static int torch_bench(const char *py, const char *wdir, int s, int n, int threads, int iters, int warmup, timing *tt) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s training/bench_torch.py --weights-dir '%s' --size %d --batch %d --threads %d --iters %d --warmup %d",
             py, wdir, s, n, threads, iters, warmup);
    FILE *p = popen(cmd, "r");
    if (!p) return 0;
    char line[1024];
    int got = 0;
    while (fgets(line, sizeof line, p)) {
        for (int w = 0; w < 4; w++) {
            char key[64];
            snprintf(key, sizeof key, "\"net\": \"%s\"", bench_names[w]);
            if (!strstr(line, key)) continue;
            char *a = strstr(line, "\"ms_per_image\": "), *m = strstr(line, "\"min_ms_per_image\": ");
            if (a && m) {
                tt[w].mean_ms = atof(a + 16);
                tt[w].min_ms = atof(m + 20);
                got |= 1 << w;
            }
        }
    }
    int rc = pclose(p);
    return rc == 0 && got == 15;
}

static long peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: semipaint bench [--weights-dir DIR | --model NAME [-c FILE]] [--batch 1,4] [--threads N]\n"
            "                       [--iters N] [--warmup N] [--vs-torch] [--python PATH]\n"
            "                       [--device cpu|cuda|auto] [--gpu N] [--precision fp32|tf32|fp16]\n"
            "                       [--peak-gflops X] [--conv-algo auto|direct|winograd|winograd4] [--blend on|off]\n"
            "Times pconv_unet, vgg16_features, simk_unet (K=1) and the whole pipeline on the device at the\n"
            "weights' working size, prints ms per image, images/s and GFLOP/s against the peak (on the CPU\n"
            "the measured fp32 FMA peak, on a GPU the --peak-gflops given, e.g. the data sheet's dense\n"
            "figure for the precision), and on a GPU the device memory held; --vs-torch runs\n"
            "training/bench_torch.py with the same weights and threads and\n"
            "prints the ratio C/PyTorch. DIR holds pconv_unet.safetensors, vgg16_features.safetensors and\n"
            "simk_unet_k1.safetensors (default build/fixtures/paper256, made by `make fixtures`).\n"
            "--model NAME times a model family of the configuration -c FILE [" CLI_DEFAULT_CONFIG "]\n"
            "instead (model.family or one of the families section; SEMIPAINT_* variables apply): its coarse,\n"
            "refine and refine_fallback nets at their working size, its descriptor (the database's for\n"
            "auto; thumb16 when there is none to read), the Sim-K pipeline and the Sim-0 pipeline, with\n"
            "the family's telea_blend unless --blend is given; it prints the family and the files. Not with\n"
            "--weights-dir or --vs-torch.\n"
            "On the CPU the layer table also times each layer with oneDNN's direct kernels and with\n"
            "Winograd F(2x2,3x3) and F(4x4,3x3); --conv-algo fixes the choice for the networks (default\n"
            "auto: the backend's rule). The pipeline is the one the service runs: with the Telea border\n"
            "blend of the refine weights' telea_blend table when they carry one (--blend off [on] times the\n"
            "networks alone); the report says which.\n");
}

/* What `semipaint bench` is asked for. */
typedef struct {
    const char *wdir, *py, *batches;
    const char *model, *config; /* --model NAME of the configuration -c FILE */
    int threads, iters, warmup, vs_torch, gpu;
    int blend; /* --blend on|off: the pipeline's Telea border blend; -1 = not given */
    nn_device device;
    nn_precision precision;
    nn_conv_algo algo;
    double peak;
} bench_opts;

static int parse_device(const char *v, void *f) { return nn_device_parse(v, f); }
static int parse_precision(const char *v, void *f) { return nn_precision_parse(v, f); }
static int parse_algo(const char *v, void *f) { return nn_conv_algo_parse(v, f); }
static int parse_on_off(const char *v, void *f) {
    if (strcmp(v, "on") && strcmp(v, "off")) return -1;
    *(int *)f = !strcmp(v, "on");
    return 0;
}

/* --batch: a comma-separated list of batch sizes in [1, 4096]. */
static int parse_batches(const char *v, void *f) {
    const char *p = v;
    for (;;) {
        char item[32];
        size_t len = strcspn(p, ",");
        int n;
        if (len == 0 || len >= sizeof item) return -1;
        snprintf(item, sizeof item, "%.*s", (int)len, p);
        if (cli_parse_int(item, 1, 4096, &n)) return -1;
        if (!p[len]) break;
        p += len + 1;
    }
    *(const char **)f = v;
    return 0;
}

#define BO(f) offsetof(bench_opts, f)
static const cli_opt bench_opts_table[] = {
    {"--weights-dir", NULL, CLI_STR, BO(wdir), 0, 0, NULL, NULL},
    {"--model", NULL, CLI_STR, BO(model), 0, 0, NULL, NULL},
    {"--config", "-c", CLI_STR, BO(config), 0, 0, NULL, NULL},
    {"--batch", NULL, CLI_FN, BO(batches), 0, 0, parse_batches, "a comma-separated list of batch sizes 1..4096"},
    {"--threads", NULL, CLI_INT, BO(threads), 1, 1024, NULL, NULL},
    {"--iters", NULL, CLI_INT, BO(iters), 1, 1000000, NULL, NULL},
    {"--warmup", NULL, CLI_INT, BO(warmup), 0, 1000000, NULL, NULL},
    {"--vs-torch", NULL, CLI_FLAG, BO(vs_torch), 0, 0, NULL, NULL},
    {"--python", NULL, CLI_STR, BO(py), 0, 0, NULL, NULL},
    {"--device", NULL, CLI_FN, BO(device), 0, 0, parse_device, "cpu, cuda or auto"},
    {"--gpu", NULL, CLI_INT, BO(gpu), 0, 63, NULL, NULL},
    {"--precision", NULL, CLI_FN, BO(precision), 0, 0, parse_precision, "fp32, tf32 or fp16"},
    {"--peak-gflops", NULL, CLI_DOUBLE, BO(peak), 0, 1e9, NULL, NULL},
    {"--conv-algo", NULL, CLI_FN, BO(algo), 0, 0, parse_algo, "auto, direct, winograd or winograd4"},
    {"--blend", NULL, CLI_FN, BO(blend), 0, 0, parse_on_off, "on or off"},
};

/* The family's file behind key `key` as the header prints it. */
static void print_file(const char *what, const char *path, const char *key, const char *extra) {
    printf("  %-16s %s (%s)%s\n", what, path, key, extra);
}

int cmd_bench(int argc, char **argv) {
    bench_opts o = {.py = "/usr/bin/python3", .batches = "1,4", .threads = 2, .iters = 5, .warmup = 1,
                    .device = NN_DEVICE_CPU, .precision = NN_PREC_FP32, .algo = NN_CONV_AUTO, .blend = -1};
    const cli_spec spec = {"semipaint bench", bench_opts_table, sizeof bench_opts_table / sizeof bench_opts_table[0],
                           0, 0, usage};
    int prc = cli_parse(&spec, argc, argv, &o, NULL, NULL);
    if (prc >= 0) return prc;
    if (o.config && !o.model) {
        fprintf(stderr, "semipaint bench: -c/--config is read only with --model\n");
        return 2;
    }
    if (o.model && o.wdir) {
        fprintf(stderr, "semipaint bench: --weights-dir and --model are exclusive: --model times the family's files "
                        "named by the configuration\n");
        return 2;
    }
    if (o.model && o.vs_torch) {
        fprintf(stderr, "semipaint bench: --vs-torch compares the --weights-dir files; it does not take --model\n");
        return 2;
    }
    static cli_family fam; /* --model's family: the paths below point into it */
    if (o.model && (prc = cli_family_load("semipaint bench", o.config, o.model, &fam))) return prc;
    const cfg_family *f = &fam.f;
    const char *wdir = o.wdir ? o.wdir : "build/fixtures/paper256", *py = o.py, *batches = o.batches;
    const int threads = o.threads, iters = o.iters, warmup = o.warmup, vs_torch = o.vs_torch;
    /* the pipeline's blend: --blend, else the family's telea_blend, else on */
    const int blend = o.blend >= 0 ? o.blend : o.model ? f->telea_blend : 1;
    const double peak_arg = o.peak;
    nn_backend *be = NULL, *alt[3] = {NULL, NULL, NULL};
    core_models cm = {0};
    bench_ctx b = {0};
    int rc = 1;
    sp_status st = SP_OK;
    char pconv[1100], vgg[1100], simk[1100];
    /* --model: how messages name the family's keys, and its descriptor (named, the database's, or
     * a stand-in when neither can be had) */
    char kc[96], kr[96], kf[96], kd[96], kw[96], kdb[96], kb[96], dname[128] = "", dwhy[1400] = "";
    core_models_opts mo = {.device = o.device, .gpu = o.gpu, .precision = o.precision, .threads = threads,
                           .conv_algo = o.algo};
    if (!o.model) {
        snprintf(pconv, sizeof pconv, "%s/pconv_unet.safetensors", wdir);
        snprintf(vgg, sizeof vgg, "%s/vgg16_features.safetensors", wdir);
        snprintf(simk, sizeof simk, "%s/simk_unet_k1.safetensors", wdir);
        mo.coarse = pconv, mo.coarse_key = "--weights-dir", mo.refine = simk, mo.refine_key = "--weights-dir";
        mo.descriptor_weights = vgg, mo.descriptor_weights_key = "--weights-dir";
    } else {
        cli_family_key(&fam, "coarse", kc, sizeof kc);
        cli_family_key(&fam, "refine", kr, sizeof kr);
        cli_family_key(&fam, "refine_fallback", kf, sizeof kf);
        cli_family_key(&fam, "descriptor", kd, sizeof kd);
        cli_family_key(&fam, "descriptor_weights", kw, sizeof kw);
        cli_family_key(&fam, "database", kdb, sizeof kdb);
        cli_family_key(&fam, "telea_blend", kb, sizeof kb);
        if (!f->coarse[0] || (!f->refine[0] && !f->refine_fallback[0])) {
            fprintf(stderr, "semipaint bench: --model %s: %s needs %s and %s or %s\n", o.model, fam.config, kc, kr, kf);
            return 1;
        }
        if (f->refine[0]) { /* the Sim-K pipeline's descriptor */
            if (f->descriptor[0] && strcmp(f->descriptor, "auto")) {
                snprintf(dname, sizeof dname, "%s", f->descriptor);
                snprintf(dwhy, sizeof dwhy, "%s", kd);
            } else if (f->database[0] && rt_db_peek_descriptor(f->database, dname, sizeof dname) == SP_OK) {
                snprintf(dwhy, sizeof dwhy, "%s auto: the one of %s, %s", kd, f->database, kdb);
            } else {
                snprintf(dname, sizeof dname, "thumb16");
                snprintf(dwhy, sizeof dwhy, "%s auto, and %s %s%s: index build's default instead", kd, kdb,
                         f->database[0] ? f->database : "is empty", f->database[0] ? " cannot be read" : "");
            }
        }
        mo.coarse = f->coarse, mo.coarse_key = kc;
        mo.refine = f->refine, mo.refine_key = kr;
        mo.sim0 = f->refine_fallback, mo.sim0_key = kf;
        mo.descriptor = dname[0] ? dname : NULL, mo.descriptor_key = kd;
        mo.descriptor_weights = dname[0] ? f->descriptor_weights : NULL, mo.descriptor_weights_key = kw;
    }
    if ((st = core_models_open(&mo, &cm))) goto fail;
    be = cm.be;
    const nn_backend_opts bo = cm.bo; /* with the environment's overrides */
    b.pconv = cm.coarse;
    b.vgg = cm.vgg;
    b.simk = cm.refine;
    b.sim0 = cm.sim0;
    b.desc = o.model ? cm.desc : NULL;
    b.s = cm.s;
    b.k = cm.k;
    b.dim = b.desc ? rt_descriptor_dim(b.desc) : b.vgg ? nn_net_get_info(b.vgg)->out_channels : 0;
    b.db_n = 1000;
    if (b.dim) {
        b.db = malloc((size_t)b.db_n * b.dim * sizeof(float));
        if (!b.db) goto fail;
    }
    uint64_t rs = 88172645463325252ull;
    for (int i = 0; i < b.db_n * b.dim; i++) {
        rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
        b.db[i] = (float)((double)(rs >> 11) / 9007199254740992.0 - 0.5);
    }
    nn_retriever r = {.k = b.k, .query = bench_query, .ctx = &b};
    /* the pipelines the service runs: their blend option on when asked and the weights carry a table */
    if (b.simk && (st = core_models_pipeline(&cm, b.simk, &r, blend, &b.pipe))) goto fail;
    if (b.sim0 && (st = core_models_pipeline(&cm, b.sim0, NULL, blend, &b.pipe0))) goto fail;
    const int blend_c = nn_net_get_info(b.pconv)->blend_n, blend_r = b.simk ? nn_net_get_info(b.simk)->blend_n : 0;
    const int blend_0 = b.sim0 ? nn_net_get_info(b.sim0)->blend_n : 0;
    const int blend_on = blend && (blend_r > 0 || blend_0 > 0);

    /* the rows of the timing table */
    bench_row rows[BENCH_MAX_ROWS];
    int nrows = 0;
#define ADD_ROW(W, FLOPS, ...)                                                                                       \
    do {                                                                                                             \
        rows[nrows].w = (W);                                                                                         \
        rows[nrows].flops = (FLOPS);                                                                                 \
        snprintf(rows[nrows].name, sizeof rows[nrows].name, __VA_ARGS__);                                            \
        nrows++;                                                                                                     \
    } while (0)
    const double f_coarse = nn_net_flops(b.pconv, b.s, b.s), f_vgg = b.vgg ? nn_net_flops(b.vgg, b.s, b.s) : 0,
                 f_simk = b.simk ? nn_net_flops(b.simk, b.s, b.s) : 0, f_sim0 = b.sim0 ? nn_net_flops(b.sim0, b.s, b.s) : 0;
    if (!o.model) { /* without --model: these four, as training/bench_torch.py names them */
        ADD_ROW(B_PCONV, f_coarse, "%s", bench_names[B_PCONV]);
        ADD_ROW(B_VGG, f_vgg, "%s", bench_names[B_VGG]);
        ADD_ROW(B_SIMK, f_simk, "%s", bench_names[B_SIMK]);
        ADD_ROW(B_PIPE, f_coarse + f_vgg + f_simk, "%s", bench_names[B_PIPE]);
    } else {
        ADD_ROW(B_PCONV, f_coarse, "pconv");
        if (b.simk) {
            ADD_ROW(B_DESC, f_vgg, "%s", b.vgg ? "vgg" : rt_descriptor_name(b.desc));
            ADD_ROW(B_SIMK, f_simk, "simk%d", b.k);
        }
        if (b.sim0) ADD_ROW(B_SIM0, f_sim0, "simk0");
        if (b.pipe) ADD_ROW(B_PIPE, f_coarse + f_vgg + f_simk, "pipeline");
        if (b.pipe0) ADD_ROW(B_PIPE0, f_coarse + f_sim0, "pipeline0");
    }
#undef ADD_ROW

    /* Whether the networks run on the host's cores (then the host's FMA peak is theirs), whether
     * the backend has convolution algorithms to compare, and whether it holds device memory. */
    const int on_host = !nn_backend_has(be, NN_CAP_ASYNC_HOST_OVERLAP);
    const int algos = nn_backend_has(be, NN_CAP_CONV_ALGO);
    const int dev_mem = nn_backend_has(be, NN_CAP_DEVICE_MEMORY);
    if (!o.model) {
        printf("semipaint bench: %s, weights %s, %dx%d\n", nn_backend_device(be), wdir, b.s, b.s);
        if (!blend)
            printf("telea blend: off (--blend off): the pipeline times the networks alone\n");
        else if (blend_on)
            printf("telea blend: on, as the service runs it (simk_unet's table of %d distances%s)\n", blend_r,
                   nn_backend_has(be, NN_CAP_ASYNC_HOST_OVERLAP) ? ", Telea overlapped with the networks" : "");
        else
            printf("telea blend: none (%s carries no telea_blend table%s): the pipeline is the networks alone\n", simk,
                   blend_c ? "; pconv_unet's is used only by method=coarse" : "");
    } else {
        printf("semipaint bench: %s, model family %s of %s, %dx%d (the nets' working size)\n", nn_backend_device(be),
               f->name, fam.config, b.s, b.s);
        char extra[1200];
        print_file("coarse", f->coarse, kc, "");
        if (b.simk) {
            snprintf(extra, sizeof extra, ", k = %d", b.k);
            print_file("refine", f->refine, kr, extra);
        }
        if (b.sim0) print_file("refine_fallback", f->refine_fallback, kf, "");
        if (b.simk) {
            snprintf(extra, sizeof extra, "%s%s", b.vgg ? ", weights " : "", b.vgg ? nn_net_get_info(b.vgg)->path : "");
            print_file("descriptor", rt_descriptor_name(b.desc), dwhy, extra);
        }
        if (!blend) {
            printf("telea blend: off (%s): the pipelines time the networks alone\n", o.blend >= 0 ? "--blend off" : kb);
        } else {
            printf("telea blend: on (%s), as the service runs it:", o.blend >= 0 ? "--blend on" : kb);
            if (b.pipe) {
                if (blend_r) printf(" pipeline with simk%d's table of %d distances", b.k, blend_r);
                else printf(" pipeline without (%s carries no telea_blend table)", f->refine);
            }
            if (b.pipe0) {
                if (blend_0) printf("%s pipeline0 with simk0's table of %d distances", b.pipe ? ";" : "", blend_0);
                else printf("%s pipeline0 without (%s carries no telea_blend table)", b.pipe ? ";" : "", f->refine_fallback);
            }
            printf("%s\n", blend_on && nn_backend_has(be, NN_CAP_ASYNC_HOST_OVERLAP) ? "; Telea overlapped with the networks"
                                                                                    : "");
        }
    }
    double peak = peak_arg;
    if (peak > 0)
        printf("peak: %.1f GFLOP/s (--peak-gflops)\n", peak);
    else if (on_host)
        printf("measured fp32 FMA peak: %.1f GFLOP/s (%d threads)\n", peak = measure_peak(threads), threads);
    else
        printf("peak: unknown (give --peak-gflops for %%peak)\n");
    printf("GFLOP per image:");
    for (int i = 0; i < nrows; i++) {
        if (rows[i].flops > 0) printf("%s %s %.2f", i ? "," : "", rows[i].name, rows[i].flops / 1e9);
        else printf("%s %s -", i ? "," : "", rows[i].name);
    }
    printf("\n");
    /* channels of the image buffers: the refine nets' inputs (3 + 1 + 3k) reuse them */
    int chans = 7;
    if (b.simk && nn_net_get_info(b.simk)->in_channels > chans) chans = nn_net_get_info(b.simk)->in_channels;
    if (b.sim0 && nn_net_get_info(b.sim0)->in_channels > chans) chans = nn_net_get_info(b.sim0)->in_channels;
    /* Convolution layers alone: the shapes that carry most of the pipeline's work. */
    static const int layers[][6] = {/* cin, cout, k, stride, h(=w) input */
                                    {64, 64, 3, 1, 256, 0},    {128, 128, 3, 1, 128, 0}, {256, 256, 3, 1, 64, 0},
                                    {512, 512, 3, 1, 32, 0},   {512, 512, 3, 1, 16, 0},  {64, 128, 5, 2, 128, 0},
                                    {1024, 512, 3, 1, 16, 0},  {768, 256, 3, 1, 32, 0},  {384, 128, 3, 1, 64, 0},
                                    {192, 64, 3, 1, 128, 0},   {67, 3, 3, 1, 256, 0}};
    if (algos) { /* the same layers with each algorithm forced, to show what auto chose */
        nn_backend_opts ao = bo;
        ao.conv_algo = NN_CONV_DIRECT;
        if ((st = nn_backend_new(&ao, &alt[0]))) goto fail;
        ao.conv_algo = NN_CONV_WINOGRAD;
        if ((st = nn_backend_new(&ao, &alt[1]))) goto fail;
        ao.conv_algo = NN_CONV_WINOGRAD4;
        if ((st = nn_backend_new(&ao, &alt[2]))) goto fail;
    }
    printf("\nconvolution layers (batch 1, best of %d; GFLOP/s counts direct-convolution work):\n", iters);
    if (algos)
        printf("  %-38s %8s %9s %8s %10s %10s %10s\n", "layer", "ms", "GFLOP/s", "%peak", "direct ms", "F(2x2) ms",
               "F(4x4) ms");
    double lf = 0, lt = 0;
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) {
        const int *L = layers[i];
        double ms, alt_ms[3] = {0, 0, 0};
        if ((st = nn_conv_bench(be, 1, L[0], L[1], L[2], L[3], L[4], L[4], iters, &ms))) goto fail;
        for (int a = 0; a < 3 && alt[a]; a++)
            if ((a == 0 || (L[2] == 3 && L[3] == 1)) &&
                (st = nn_conv_bench(alt[a], 1, L[0], L[1], L[2], L[3], L[4], L[4], iters, &alt_ms[a]))) goto fail;
        int o = (L[4] + 2 * ((L[2] - 1) / 2) - L[2]) / L[3] + 1;
        double f = 2.0 * L[0] * L[1] * L[2] * L[2] * o * o;
        lf += f;
        lt += ms;
        char what[64];
        snprintf(what, sizeof what, "%4d->%-4d %dx%d stride %d at %3dx%-3d", L[0], L[1], L[2], L[2], L[3], L[4], L[4]);
        printf("  %-38s %8.2f %9.1f %7.0f%%", what, ms, f / ms / 1e6, peak > 0 ? 100 * f / ms / 1e6 / peak : 0);
        if (alt[0]) {
            printf(" %10.2f", alt_ms[0]);
            if (L[2] == 3 && L[3] == 1)
                printf(" %10.2f %10.2f", alt_ms[1], alt_ms[2]);
            else
                printf(" %10s %10s", "-", "-");
        }
        printf("\n");
    }
    printf("  all layers above: %.1f GFLOP/s, %.0f%% of peak\n", lf / lt / 1e6, peak > 0 ? 100 * lf / lt / 1e6 / peak : 0);
    for (int a = 0; a < 3; a++) {
        nn_backend_free(alt[a]);
        alt[a] = NULL;
    }
    printf("\n%-9s %5s %12s %12s %9s %9s %7s", "net", "batch", "ms/img mean", "ms/img min", "img/s", "GFLOP/s", "%peak");
    if (vs_torch) printf(" %14s %14s %9s", "torch ms mean", "torch ms min", "C/torch");
    printf("\n");
    for (const char *bp = batches; *bp;) {
        int n = atoi(bp);
        if (n < 1) {
            fprintf(stderr, "semipaint bench: bad --batch list '%s'\n", batches);
            rc = 2;
            goto out;
        }
        b.n = n;
        size_t isz = (size_t)n * chans * b.s * b.s;
        b.img = malloc(isz * sizeof(float));
        b.mask = malloc((size_t)n * b.s * b.s * sizeof(float));
        b.out = malloc(isz * sizeof(float));
        b.feat_desc = malloc((size_t)n * (b.dim ? b.dim : 1) * sizeof(float));
        if (!b.img || !b.mask || !b.out || !b.feat_desc) goto fail;
        for (size_t i = 0; i < isz; i++) b.img[i] = b.out[i] = (float)((i * 2654435761u) % 1000) / 1000.0f;
        for (int i = 0; i < n; i++)
            for (int y = 0; y < b.s; y++)
                for (int x = 0; x < b.s; x++)
                    b.mask[((size_t)i * b.s + y) * b.s + x] = !(x > b.s / 4 && x < b.s / 2 && y > b.s / 3 && y < 3 * b.s / 4);
        timing tc[BENCH_MAX_ROWS], tt[4];
        int have_torch = 0;
        for (int i = 0; i < nrows; i++)
            if ((st = time_it(&b, rows[i].w, iters, warmup, &tc[i]))) goto fail;
        if (vs_torch) {
            fflush(stdout);
            have_torch = torch_bench(py, wdir, b.s, n, threads, iters, warmup, tt);
            if (!have_torch) fprintf(stderr, "semipaint bench: %s training/bench_torch.py failed; no PyTorch figures\n", py);
        }
        for (int w = 0; w < nrows; w++) { /* without --model, row w is training/bench_torch.py's tt[w] */
            double gf = rows[w].flops / (tc[w].min_ms * 1e-3) / 1e9;
            if (rows[w].flops > 0)
                printf("%-9s %5d %12.2f %12.2f %9.1f %9.1f %6.0f%%", rows[w].name, n, tc[w].mean_ms, tc[w].min_ms,
                       1e3 / tc[w].mean_ms, gf, peak > 0 ? 100 * gf / peak : 0);
            else
                printf("%-9s %5d %12.2f %12.2f %9.1f %9s %7s", rows[w].name, n, tc[w].mean_ms, tc[w].min_ms,
                       1e3 / tc[w].mean_ms, "-", "-");
            if (have_torch && w < 4)
                printf(" %14.1f %14.1f %5.2f/%.2f", tt[w].mean_ms, tt[w].min_ms, tc[w].mean_ms / tt[w].mean_ms,
                       tc[w].min_ms / tt[w].min_ms);
            printf("\n");
        }
        printf("peak resident memory after batch %d: %ld MB\n", n, peak_rss_mb());
        if (dev_mem)
            printf("GPU memory held after batch %d: %.1f MiB\n", n, (double)nn_backend_device_memory(be) / (1 << 20));
        free(b.img), free(b.mask), free(b.out), free(b.feat_desc);
        b.img = b.mask = b.out = b.feat_desc = NULL;
        bp = strchr(bp, ',');
        if (!bp) break;
        bp++;
    }
    if (!o.model)
        printf("(GFLOP/s and %%peak from the fastest run; C/torch as mean/min ratios; pipeline = coarse + vgg descriptor +\n"
               " exact search over %d synthetic vectors + refine + composites%s)\n", b.db_n,
               blend_on ? (vs_torch ? " + the Telea border blend, which PyTorch's pipeline has not" : " + the Telea border blend")
                        : "");
    else {
        printf("(GFLOP/s and %%peak from the fastest run");
        if (b.pipe)
            printf(";\n pipeline = coarse + %s descriptor + exact search over %d synthetic vectors + refine (Sim-%d) +"
                   " composites%s", rt_descriptor_name(b.desc), b.db_n, b.k, blend && blend_r ? " + the Telea border blend" : "");
        if (b.pipe0)
            printf(";\n pipeline0 = coarse + refine_fallback (Sim-0, as without a database) + composites%s",
                   blend && blend_0 ? " + the Telea border blend" : "");
        printf(")\n");
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "semipaint bench: %s\n", st ? sp_err_msg() : "out of memory");
out:
    free(b.img), free(b.mask), free(b.out), free(b.feat_desc), free(b.db);
    nn_pipeline_free(b.pipe);
    nn_pipeline_free(b.pipe0);
    for (int a = 0; a < 3; a++) nn_backend_free(alt[a]);
    core_models_close(&cm);
    return rc;
}
