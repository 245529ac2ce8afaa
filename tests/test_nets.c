/* test_nets.c: the three networks and the pipeline on the CPU backend against PyTorch, batch 1 and 3, small config and paper256. */
#include <stdlib.h>
#include <string.h>

#include "tests/golden.h"
#include "model/nn.h"

static nn_backend *be;

static nn_net *load(const char *dir, const char *file) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    nn_net *net = NULL;
    CHECKF(nn_net_load(be, p, &net) == SP_OK, "%s", sp_err_msg());
    return net;
}

/* Neighbour source for the pipeline test: hands back the fixture's neighbour images. */
typedef struct {
    const float *neighbors; /* (n,k,3,s,s) */
    int calls;
} fixed_retriever;

static sp_status fixed_query(void *ctx, int n, int s, const float *comp, int64_t *ids, float *scores, float *nb,
                             double *dms, double *sms) {
    (void)comp;
    fixed_retriever *r = ctx;
    memcpy(nb, r->neighbors, (size_t)n * 3 * s * s * sizeof(float));
    for (int i = 0; i < n; i++) ids[i] = 100 + i, scores[i] = 0.5f;
    *dms = *sms = 0;
    r->calls++;
    return SP_OK;
}

static void run_batch(const char *dir, const char *io_name, nn_net *pconv, nn_net *simk[3], nn_net *vgg) {
    char p[512], what[128];
    snprintf(p, sizeof p, "%s/%s", dir, io_name);
    st_file *f = NULL;
    CHECKF(st_open(p, &f) == SP_OK, "%s", sp_err_msg());
    if (!f) return;
    int64_t is[4];
    float *img = golden_read(f, "image", is, NULL), *mask = golden_read(f, "mask", NULL, NULL);
    int n = (int)is[0], s = (int)is[2];
    size_t img_sz = (size_t)n * 3 * s * s;
    float *out = malloc(img_sz * sizeof(float));
    printf(" %s (batch %d, %dx%d)\n", p, n, s, s);

    /* coarse */
    float *ref = golden_read(f, "pconv_out", NULL, NULL);
    double t0 = sp_now();
    CHECKF(nn_unet_forward(pconv, n, s, s, img, mask, out) == SP_OK, "%s", sp_err_msg());
    snprintf(what, sizeof what, "pconv_unet (%.0f ms)", (sp_now() - t0) * 1e3);
    golden_close(what, out, ref, img_sz);
    free(ref);

    /* refine, K = 0, 1, 2 */
    for (int k = 0; k < 3; k++) {
        char in_name[32], out_name[32];
        snprintf(in_name, sizeof in_name, "simk%d_in", k);
        snprintf(out_name, sizeof out_name, "simk%d_out", k);
        float *x = golden_read(f, in_name, NULL, NULL);
        ref = golden_read(f, out_name, NULL, NULL);
        t0 = sp_now();
        CHECKF(nn_unet_forward(simk[k], n, s, s, x, NULL, out) == SP_OK, "%s", sp_err_msg());
        snprintf(what, sizeof what, "simk_unet k=%d (%.0f ms)", k, (sp_now() - t0) * 1e3);
        golden_close(what, out, ref, img_sz);
        if (k == 1) {
            /* The pipeline with a retriever that returns the fixture's neighbour must give the
             * composite of that refine output, with the known pixels bit-exact. */
            size_t hw = (size_t)s * s;
            float *nb = malloc(img_sz * sizeof(float));
            for (int i = 0; i < n; i++) memcpy(nb + (size_t)i * 3 * hw, x + ((size_t)i * 7 + 4) * hw, 3 * hw * sizeof(float));
            fixed_retriever fr = {nb, 0};
            nn_retriever r = {.k = 1, .query = fixed_query, .ctx = &fr};
            nn_pipeline *pipe = NULL;
            CHECKF(nn_pipeline_new(pconv, simk[1], &r, &pipe) == SP_OK, "%s", sp_err_msg());
            float *pout = malloc(img_sz * sizeof(float)), *want = malloc(img_sz * sizeof(float));
            int64_t ids[8];
            float sc[8];
            nn_timings tm;
            CHECKF(nn_pipeline_run(pipe, n, img, mask, NN_METHOD_SIM, pout, ids, sc, &tm) == SP_OK, "%s", sp_err_msg());
            CHECK(fr.calls == 1 && ids[0] == 100 && sc[0] == 0.5f);
            nn_composite(n, 3, s, s, img, ref, mask, want);
            golden_close("pipeline sim-1", pout, want, img_sz);
            int exact = 1;
            for (int i = 0; i < n; i++)
                for (int c = 0; c < 3; c++)
                    for (size_t q = 0; q < hw; q++)
                        if (mask[(size_t)i * hw + q] != 0 &&
                            memcmp(&pout[((size_t)i * 3 + c) * hw + q], &img[((size_t)i * 3 + c) * hw + q], 4))
                            exact = 0;
            CHECKF(exact, "known pixels are not bit-exact");
            /* caller-supplied neighbours (nn_pipeline_run_refs): the same images given for every
             * crop skip retrieval and give the same output; given for the first crop only (of
             * several), the retriever runs for the batch and the output is still the same */
            uint8_t given[8];
            memset(given, 1, sizeof given);
            CHECKF(nn_pipeline_run_refs(pipe, n, img, mask, nb, given, NN_METHOD_SIM, pout, ids, sc, &tm) == SP_OK, "%s",
                   sp_err_msg());
            CHECK(fr.calls == 1 && ids[0] == -1 && sc[0] == 1.0f && tm.search == 0);
            golden_close("pipeline sim-1, given neighbours", pout, want, img_sz);
            memset(given, 0, sizeof given);
            given[0] = 1;
            CHECK(nn_pipeline_run_refs(pipe, n, img, mask, nb, given, NN_METHOD_SIM, pout, ids, sc, &tm) == SP_OK);
            CHECK(fr.calls == (n >= 2 ? 2 : 1) && ids[0] == -1 && (n < 2 || ids[1] == 101)); /* n = 1: all given */
            golden_close("pipeline sim-1, first crop given", pout, want, img_sz);
            int calls = fr.calls;
            /* coarse method: composite of the coarse pass */
            float *cref = golden_read(f, "pconv_out", NULL, NULL);
            CHECK(nn_pipeline_run(pipe, n, img, mask, NN_METHOD_COARSE, pout, NULL, NULL, &tm) == SP_OK);
            nn_composite(n, 3, s, s, img, cref, mask, want);
            golden_close("pipeline coarse", pout, want, img_sz);
            CHECK(fr.calls == calls);
            free(cref);
            nn_pipeline_free(pipe);
            free(pout);
            free(want);
            free(nb);
        }
        free(x);
        free(ref);
    }

    /* descriptor network */
    int64_t fs[4];
    ref = golden_read(f, "vgg_feat", fs, NULL);
    size_t nf = (size_t)(fs[0] * fs[1] * fs[2] * fs[3]);
    float *feat = malloc(nf * sizeof(float)), *desc = malloc((size_t)n * fs[1] * sizeof(float));
    for (int pool = 0; pool < 2; pool++) {
        t0 = sp_now();
        CHECKF(nn_vgg_forward(vgg, n, s, s, img, pool ? NN_POOL_MAX : NN_POOL_AVG, feat, desc) == SP_OK, "%s",
               sp_err_msg());
        if (pool == 0) {
            snprintf(what, sizeof what, "vgg16_features conv5_3 (%.0f ms)", (sp_now() - t0) * 1e3);
            golden_close(what, feat, ref, nf);
        }
        float *dref = golden_read(f, pool ? "vgg_desc_max" : "vgg_desc_avg", NULL, NULL);
        golden_close(pool ? "descriptor max" : "descriptor avg", desc, dref, (size_t)n * fs[1]);
        free(dref);
    }
    free(ref);
    free(feat);
    free(desc);
    free(img);
    free(mask);
    free(out);
    st_close(f);
}

static void run_dir(const char *dir) {
    nn_net *pconv = load(dir, "pconv_unet.safetensors"), *vgg = load(dir, "vgg16_features.safetensors");
    nn_net *simk[3] = {load(dir, "simk_unet_k0.safetensors"), load(dir, "simk_unet_k1.safetensors"),
                       load(dir, "simk_unet_k2.safetensors")};
    if (pconv && vgg && simk[0] && simk[1] && simk[2]) {
        run_batch(dir, "io_b1.safetensors", pconv, simk, vgg);
        run_batch(dir, "io_b3.safetensors", pconv, simk, vgg);
    }
    nn_net_free(pconv);
    nn_net_free(vgg);
    for (int k = 0; k < 3; k++) nn_net_free(simk[k]);
}

int main(void) {
    /* The small networks with every 3x3 stride-1 layer forced through each Winograd variant (auto
     * leaves such narrow layers to oneDNN's direct kernels), then every fixture set with the default. */
    nn_backend_opts o = {.device = NN_DEVICE_CPU, .threads = 2};
    for (int m = 2; m <= 4; m += 2) {
        o.conv_algo = m == 2 ? NN_CONV_WINOGRAD : NN_CONV_WINOGRAD4;
        CHECK(nn_backend_new(&o, &be) == SP_OK);
        printf("test_nets: small networks with Winograd F(%dx%d,3x3) forced\n", m, m);
        run_dir("tests/fixtures/small");
        nn_backend_free(be);
    }
    o.conv_algo = NN_CONV_AUTO;
    CHECK(nn_backend_new(&o, &be) == SP_OK);
    run_dir("tests/fixtures/small");
    /* paper256 fixtures are generated at test time (tests/run.sh) where PyTorch is present. */
    const char *big = getenv("SEMIPAINT_FIXTURES_PAPER256");
    if (!big) big = "build/fixtures/paper256";
    if (t_exists(big) && !getenv("SEMIPAINT_SKIP_PAPER256"))
        run_dir(big);
    else
        printf("test_nets: SKIP paper256 (no %s: PyTorch absent or SEMIPAINT_SKIP_PAPER256 set)\n", big);
    nn_backend_free(be);
    return t_done("test_nets");
}
