/* core/models.h: the one assembly of the models every program runs: backend, coarse and refine nets, descriptor, and pipelines over them. */
#ifndef CORE_MODELS_H
#define CORE_MODELS_H

#include "model/nn.h"
#include "retrieval/rt.h"

/*
 * semipaintd's engine, `semipaint inpaint` (through the engine), `eval`, `bench` and `index` load
 * their models here, so that they check the same things and build the pipeline the service runs.
 * Each path comes with the name of the configuration key or flag that gave it ("model.coarse",
 * "--sim1"); every error names the file and that key.
 */
typedef struct {
    /* the backend: nn_backend_opts, then the environment's overrides (nn_backend_opts_from_env) */
    nn_device device;
    int gpu;
    nn_precision precision;
    int threads;            /* CPU threads, 0 = all online cores; also the Telea blend's threads */
    nn_conv_algo conv_algo;
    int backend_always;     /* 1: create the backend even when no network is loaded */
    nn_backend *be;         /* a backend to use instead of making one (borrowed: close leaves it) */
    /* the networks: a NULL or empty path is not loaded */
    const char *coarse, *coarse_key; /* pconv_unet; its size is the working size */
    const char *refine, *refine_key; /* simk_unet with k >= 1 (Sim-K) */
    const char *sim0, *sim0_key;     /* simk_unet with k = 0 (Sim-0) */
    const char *sim0_why;            /* appended to a k != 0 error (" since no retrieval.database is configured") */
    /* the descriptor */
    const char *database, *database_key; /* a database directory: "auto" reads its descriptor name */
    const char *descriptor, *descriptor_key; /* a name, "auto" (or NULL, empty) = the database's; none
                                              * without a database */
    const char *descriptor_weights, *descriptor_weights_key; /* vgg16_features weights: required by a
                                              * vgg16_features descriptor and loaded for it; loaded too
                                              * when given without any descriptor (the bare network) */
} core_models_opts;

/* What core_models_open loaded; NULL members were not asked for. */
typedef struct {
    nn_backend *be;
    int borrowed_be;        /* be came from core_models_opts.be: core_models_close leaves it */
    nn_net *coarse, *refine, *sim0, *vgg;
    rt_descriptor *desc;
    int s;       /* working size: the coarse net's (else the refine's, Sim-0's or VGG's), 0 without nets */
    int k;       /* refine's K, 0 without it */
    nn_backend_opts bo;  /* as the backend was (or will be) made, environment applied */
    const char *descriptor_weights_key; /* how messages name the VGG weights */
} core_models;

/* Loads what `o` names into `out` (zeroed first): the backend (when a network is loaded, or
 * always with backend_always), each network with its architecture checked (coarse a pconv_unet,
 * refine a simk_unet with k >= 1, sim0 one with k = 0) and all of one working size, then the
 * descriptor: its name from `o->descriptor` or, for "auto", from the database's manifest (read
 * only; core_models_open_db checks the rest), the VGG weights when it needs them. On failure everything loaded is freed and the error names the
 * file and its key. */
sp_status core_models_open(const core_models_opts *o, core_models *out);
/* Frees what core_models_open loaded (pipelines over it first) and zeroes `m`; safe twice. */
void core_models_close(core_models *m);

/* Replaces m->desc by descriptor `name`, loading the VGG weights `weights` (named `key` in
 * messages) when it is a vgg16_features descriptor and none are loaded yet, and the backend when
 * there is none. The descriptor stays m's (core_models_close frees it). */
sp_status core_models_descriptor(core_models *m, const char *name, const char *weights, const char *key);

/* Opens the database `dir` (named `key` in messages) for m's descriptor (its name and weights'
 * sha256 must be the database's) and checks that it stores images of m's working size (when m
 * has nets) and holds at least m->k images. */
sp_status core_models_open_db(const core_models *m, const char *dir, const char *key, int writable, rt_db **out);

/* A pipeline of m's coarse net and `refine` (m->refine or m->sim0) over `retriever` (NULL for
 * Sim-0) with the service's options: the Telea border blend when `blend` is 1 (each net's
 * telea_blend table), its fill on m's threads, overlapped with the networks where the backend
 * computes off the host (NN_CAP_ASYNC_HOST_OVERLAP). */
sp_status core_models_pipeline(const core_models *m, nn_net *refine, const nn_retriever *retriever, int blend,
                               nn_pipeline **out);

#endif
