/* nn.h: the inference engine's public API: compute backends, networks loaded from safetensors, and the inpainting pipeline. */
#ifndef NN_H
#define NN_H

#include "common/sp.h"

/* ---- backends ---- */

typedef enum { NN_DEVICE_AUTO = 0, NN_DEVICE_CPU, NN_DEVICE_CUDA } nn_device;
typedef enum { NN_PREC_FP32 = 0, NN_PREC_TF32, NN_PREC_FP16 } nn_precision;

/* The device names in nn_device order ("auto", "cpu", "cuda") and the precision names in
 * nn_precision order ("fp32", "tf32", "fp16"), each NULL-terminated: the one spelling of each,
 * for tables of choices such as the configuration's model.device and model.precision. */
extern const char *const nn_device_names[];
extern const char *const nn_precision_names[];
/* Parses a device name ("auto", "cpu", "cuda") into *out; 0 on success, -1 otherwise. */
int nn_device_parse(const char *name, nn_device *out);
/* Parses a precision name ("fp32", "tf32", "fp16") into *out; 0 on success, -1 otherwise. */
int nn_precision_parse(const char *name, nn_precision *out);

/* How the CPU backend computes 3x3 stride-1 convolutions. AUTO picks Winograd F(2x2,3x3) or
 * F(4x4,3x3) where the layer is large enough for it to win and oneDNN's direct kernels elsewhere;
 * the environment variable SEMIPAINT_CONV=auto|direct|winograd|winograd4 overrides AUTO where the
 * options are built (nn_backend_opts_from_env). WINOGRAD (F(2x2)) and WINOGRAD4 (F(4x4)) force it
 * on every layer whose shape allows it. */
typedef enum { NN_CONV_AUTO = 0, NN_CONV_DIRECT, NN_CONV_WINOGRAD, NN_CONV_WINOGRAD4 } nn_conv_algo;

/* Parses "auto", "direct", "winograd" or "winograd4" into *out; 0 on success, -1 otherwise. */
int nn_conv_algo_parse(const char *name, nn_conv_algo *out);

typedef struct {
    nn_device device;       /* AUTO: CUDA when this build has it and a GPU answers, else CPU */
    int gpu;                /* CUDA device ordinal */
    nn_precision precision; /* CPU computes in fp32 whatever is asked */
    int threads;            /* CPU threads; 0 = all online cores */
    nn_conv_algo conv_algo; /* CPU only */
} nn_backend_opts;

/* Applies the environment's overrides to backend options being built, from `envp`
 * (NULL-terminated "NAME=value" strings, e.g. `environ`; NULL = none): SEMIPAINT_CONV (an
 * nn_conv_algo name) sets conv_algo when it is NN_CONV_AUTO, so an explicit choice wins. The
 * backends read no environment themselves: whoever builds nn_backend_opts calls this before
 * nn_backend_new. SP_ERR_INVALID, naming the variable, for a value it cannot parse (o unchanged). */
sp_status nn_backend_opts_from_env(nn_backend_opts *o, char *const *envp);

typedef struct nn_backend nn_backend;

/* Creates a backend. With device AUTO and no usable GPU, falls back to the CPU and logs why;
 * with device CUDA and none usable, fails with SP_ERR_UNSUPPORTED and the reason. */
sp_status nn_backend_new(const nn_backend_opts *opts, nn_backend **out);
/* Frees a backend created by nn_backend_new; NULL is a no-op. Free its networks first. */
void nn_backend_free(nn_backend *be);
/* "cpu" or "cuda". */
const char *nn_backend_name(const nn_backend *be);
/* A human-readable device description ("AMD EPYC, 2 threads", "NVIDIA H100 80GB HBM3"). */
const char *nn_backend_device(const nn_backend *be);
/* Bytes of device memory the backend holds now (weights and activation arenas); 0 on the CPU. */
size_t nn_backend_device_memory(const nn_backend *be);

/* What a backend can do, asked instead of comparing its name. */
typedef enum {
    NN_CAP_DEVICE_MEMORY = 1 << 0,      /* holds memory of a device of its own, which
                                         * nn_backend_device_memory reports (a GPU) */
    NN_CAP_ASYNC_HOST_OVERLAP = 1 << 1, /* computes off the host's cores (a GPU): host work on another
                                         * thread, such as Telea's fill, runs while the networks do
                                         * instead of competing with them for the same cores */
    NN_CAP_CONV_ALGO = 1 << 2,          /* honours nn_backend_opts.conv_algo (the CPU) */
} nn_cap;
/* 1 when `be` has capability `cap`, else 0. */
int nn_backend_has(const nn_backend *be, nn_cap cap);

/* ---- networks ---- */

typedef enum { NN_ARCH_PCONV_UNET = 0, NN_ARCH_SIMK_UNET, NN_ARCH_VGG16 } nn_arch;
#define NN_MAX_LEVELS 8
#define NN_MAX_BLEND 64

/* What a weights file says about its network (docs/weights.md). */
typedef struct {
    nn_arch arch;
    const char *arch_name;   /* "pconv_unet", "simk_unet", "vgg16_features" */
    int size;                /* working size the net was trained at (256) */
    int levels;              /* UNet depth L (0 for vgg16_features) */
    int enc_kernels[NN_MAX_LEVELS];
    int enc_channels[NN_MAX_LEVELS];
    int in_channels;         /* 3 for pconv and vgg, 3+1+3k for simk */
    int out_channels;        /* 3 for the UNets, 512 for vgg16_features */
    int k;                   /* simk_unet: neighbours per query; -1 otherwise */
    long params;             /* parameter count */
    char sha256[65];         /* of the whole file */
    char path[1024];
    char trained_on[256], licence[256], notes[1024]; /* free-form metadata, may be empty */
    /* Optional `telea_blend` (UNets only): the share of the Telea fill in each hole pixel's
     * output by its chessboard distance to the nearest known pixel, blend[d-1] for d = 1..blend_n
     * and blend[blend_n-1] beyond; blend_n = 0 when absent (the raw network output is used). */
    int blend_n;
    float blend[NN_MAX_BLEND];
    /* Optional `telea_blend_image` (UNets only): the same kind of table applied after the crops are
     * pasted back, at the image's own resolution (docs/weights.md#telea_blend_image), with the
     * distance counted in image pixels; iblend_n = 0 when absent. */
    int iblend_n;
    float iblend[NN_MAX_BLEND];
} nn_net_info;

typedef struct nn_net nn_net;

/* Loads a safetensors weights file (mmap; every header field checked; F16/BF16 converted to
 * F32) and builds the network its metadata describes on `be`. Every error names the file and,
 * where one is at fault, the tensor. The net keeps a pointer to `be`. */
sp_status nn_net_load(nn_backend *be, const char *path, nn_net **out);
/* Frees a network; NULL is a no-op. */
void nn_net_free(nn_net *net);
/* The network's metadata; valid while the net lives. */
const nn_net_info *nn_net_get_info(const nn_net *net);

/* Runs a UNet on `n` images of h x w (both divisible by 2^levels), host memory, NCHW f32:
 *   pconv_unet: x (n,3,h,w) image, m (n,1,h,w) mask with 1 = keep, 0 = hole; y (n,3,h,w)
 *               (the network sees x*m and the mask repeated over 3 channels);
 *   simk_unet:  x (n,in_channels,h,w), m unused (NULL); y (n,3,h,w).
 * Raw network output: no compositing. Memory for a batch size is planned on first use. */
sp_status nn_unet_forward(nn_net *net, int n, int h, int w, const float *x, const float *m, float *y);

/* Floating-point operations (multiply and add counted as 2) of one forward pass of one h x w
 * image through the net's convolutions. */
double nn_net_flops(const nn_net *net, int h, int w);

/* Descriptor pooling of conv5_3 (after ReLU) for vgg16_features. */
typedef enum { NN_POOL_AVG = 0, NN_POOL_MAX } nn_pool;
/* Parses "avg" or "max"; -1 otherwise. */
int nn_pool_parse(const char *s);
const char *nn_pool_name(nn_pool p);

/* vgg16_features on n images x (n,3,h,w) in [0,1] (ImageNet normalisation applied inside):
 * writes conv5_3 after ReLU, (n,512,h/16,w/16), to `feat` when non-NULL, and the pooled,
 * L2-normalised descriptor (n,512) to `desc` when non-NULL. */
sp_status nn_vgg_forward(nn_net *net, int n, int h, int w, const float *x, nn_pool pool, float *feat, float *desc);

/* Times one convolution layer (n,cin,h,w) -> (n,cout,...) with k x k kernels, "same" padding
 * and ReLU on `be`: the best of `iters` runs after one warm-up, in milliseconds. */
sp_status nn_conv_bench(nn_backend *be, int n, int cin, int cout, int k, int stride, int h, int w, int iters,
                        double *best_ms);

/* ---- the pipeline (docs/http-api.md, "The pipeline") ---- */

/* Retrieval hook. `query` receives n coarse composites (n,3,s,s) in [0,1] and writes, per
 * image, k neighbour ids, cosine scores and the neighbour images (n,k,3,s,s) in [0,1], plus
 * the milliseconds it spent computing descriptors and searching. */
typedef struct {
    int k;
    sp_status (*query)(void *ctx, int n, int s, const float *composites, int64_t *ids, float *scores,
                       float *neighbors, double *descriptor_ms, double *search_ms);
    void *ctx;
} nn_retriever;

typedef enum { NN_METHOD_SIM = 0, NN_METHOD_COARSE } nn_method;

/* Milliseconds spent in each batched stage of one nn_pipeline_run. The Telea border blend's time
 * beyond the networks' (its wait and its mixing) counts in the stage of the net it blends. */
typedef struct {
    double coarse, descriptor, search, refine;
} nn_timings;

typedef struct nn_pipeline nn_pipeline;

/* Assembles a pipeline from a loaded pconv_unet and simk_unet (K = refine's k). With K >= 1 a
 * retriever with the same k is required; with K = 0 (Sim-0) it must be NULL. The pipeline
 * borrows the nets and the retriever; they must outlive it. */
sp_status nn_pipeline_new(nn_net *coarse, nn_net *refine, const nn_retriever *retriever, nn_pipeline **out);
/* Frees a pipeline; NULL is a no-op. */
void nn_pipeline_free(nn_pipeline *p);

/* Inpaints n working crops of s x s (s = the nets' size): img (n,3,s,s) in [0,1], mask
 * (n,1,s,s) with 1 = keep. METHOD_COARSE stops after the coarse pass; METHOD_SIM runs coarse,
 * composite, retrieval, refine. Writes out (n,3,s,s) with known pixels copied bit-exact from
 * img, and for SIM with K >= 1 the neighbours' ids and scores (n,K) when non-NULL. With the
 * blend option the hole pixels are then mixed with Telea's fill (nn_pipeline_opts). One thread
 * at a time per pipeline. */
sp_status nn_pipeline_run(nn_pipeline *p, int n, const float *img, const float *mask, nn_method method, float *out,
                          int64_t *ids, float *scores, nn_timings *t);
/* nn_pipeline_run with caller-supplied neighbours: for each crop i with given[i] != 0, refs
 * (n,K,3,s,s) in [0,1] holds its K neighbours, which replace the retrieved ones (its ids are set to
 * -1 and its scores to 1; the caller knows what it gave). The retriever runs only when some crop
 * has given[i] == 0 (for the whole batch, its neighbours then overwritten for the given crops).
 * refs and given NULL: nn_pipeline_run. Refs with K = 0 (Sim-0) are SP_ERR_INVALID. */
sp_status nn_pipeline_run_refs(nn_pipeline *p, int n, const float *img, const float *mask, const float *refs,
                               const uint8_t *given, nn_method method, float *out, int64_t *ids, float *scores,
                               nn_timings *t);
/* Refine's K (0 for Sim-0). */
int nn_pipeline_k(const nn_pipeline *p);

/* What a pipeline does besides the networks. The default (all 0) is the networks alone. */
typedef struct {
    int blend;         /* 1: mix the output net's fill with Telea's near the hole border, as that net's
                        * weights' telea_blend table says (docs/weights.md); nets without a table are
                        * left as they are */
    int blend_threads; /* OpenMP threads of the Telea fill; 0 = OpenMP's default */
    int overlap;       /* 1: compute the Telea fill on a thread of its own while the networks run;
                        * worth it only where the networks do not use the host's cores (a GPU) */
} nn_pipeline_opts;

/* Sets the pipeline's options for the following runs (not while one runs). */
void nn_pipeline_set_opts(nn_pipeline *p, const nn_pipeline_opts *o);

/* out = mask ? known : fill, per pixel, over n images of c channels: mask (n,1,h,w), 1 = keep. */
void nn_composite(int n, int c, int h, int w, const float *known, const float *fill, const float *mask, float *out);

#endif
