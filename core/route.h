/* core/route.h: model=auto's router: which model family a request fits (its crops' known pixels), and the gate that sends it to Telea when that family's networks are not expected to beat Telea. */
#ifndef CORE_ROUTE_H
#define CORE_ROUTE_H

#include "core/request.h"

/*
 * The router file (weights/router.safetensors, fit by training/fit_router.py) holds two small
 * models and what they need:
 *
 *  - the domain classifier: per-crop features of the known pixels (core_router_domain_features,
 *    definition CORE_ROUTE_DOMAIN_FEATURES) -> the probability of each class (model family:
 *    "faces", "general", ...), a softmax over a linear layer or a one-hidden-layer ReLU MLP;
 *  - per class, a gate: the request statistics of core_route_features (definition
 *    CORE_ROUTE_GATE_FEATURES) -> the probability that the class's networks give a lower hole L1
 *    than Telea (a logistic regression, or a one-hidden-layer MLP), used when it is at least the
 *    class's threshold.
 *
 * Metadata (strings): kind "semipaint router", format "1", classes "faces,general" (2 to
 * CORE_ROUTE_MAX_CLASSES names), domain_features and gate_features (the definitions' versions,
 * which must be this build's), domain_size (the working size the domain crops are prepared at),
 * threshold.CLASS (the gate's threshold in [0,1]) and size.CLASS (the working size the gate was
 * fit at, a default for tools; 0 or absent = unknown). Tensors (F32, F16 or BF16), for a model
 * M = "domain" (F = CORE_ROUTE_DOMAIN_NFEAT inputs, O = classes outputs) or "gate.CLASS"
 * (F = CORE_ROUTE_NFEAT, O = 1): M.mu and M.sd (F: inputs are standardised as (f - mu) / sd),
 * optionally M.w1 (H,F) and M.b1 (H) (a ReLU hidden layer, H <= 256), then M.w (O,H or F) and
 * M.b (O). Other tensors (the fit's golden.* rows, for tests) are ignored.
 *
 * A loaded router is read-only: any number of threads may use it at once. For model=auto the
 * daemon prepares the request at core_router_domain_size, takes core_router_choose of
 * core_router_domain's probabilities, prepares it again at that family's working size when it
 * differs, and sends it to the family's networks when core_router_use_nets says so, else to
 * Telea. Cost on one core (semipaint route): about 0.25-0.35 ms for the domain decision of a
 * 256-px crop and 0.3-0.9 ms for the gate (two distance transforms per crop), against about 80 ms
 * for a 256-px faces request through the networks; no network pass.
 */

#define CORE_ROUTE_DOMAIN_FEATURES "grid8-v1" /* the domain features' definition */
#define CORE_ROUTE_GATE_FEATURES "gate-v1"    /* the gate features' definition */
#define CORE_ROUTE_MAX_CLASSES 8
#define CORE_ROUTE_GRID 8 /* cells per side of the domain features' grid */
/* Domain features of one crop, on a CORE_ROUTE_GRID x CORE_ROUTE_GRID grid of cells (64), from the
 * known pixels only: per cell the mean R, G, B (3 x 64); its mean luminance, less the mean over
 * cells, over their standard deviation + 0.02 (64); its mean |horizontal| and |vertical| luminance
 * step, each over the crop's mean step + 0.001 (2 x 64); its known share (64); then the crop's mean
 * R, G, B, their standard deviations, the left-right asymmetry of the cell colours and the crop's
 * mean step (8). */
#define CORE_ROUTE_DOMAIN_NFEAT (CORE_ROUTE_GRID * CORE_ROUTE_GRID * 7 + 8)

/* The gate's inputs, in this order (core_route_feat.v). */
typedef enum {
    CORE_RF_HOLE_RATIO = 0, /* hole pixels / image pixels */
    CORE_RF_CROP_HOLE,      /* hole share of the crops' working pixels (all crops together) */
    CORE_RF_LOG_SCALE,      /* log2 of the mean crop side (longer side, image pixels) / s: > 0 shrinks */
    CORE_RF_LOG_CROPS,      /* log2 of the number of crops */
    CORE_RF_THICK_MEAN,     /* log2(1 + mean chessboard distance, in working pixels, of the hole pixels
                             * to the nearest known pixel): thin strokes are small, blobs large */
    CORE_RF_THICK_MAX,      /* log2(1 + the largest such distance) */
    CORE_RF_TEXTURE,        /* log2(1 + mean |luminance gradient|, in 8-bit units, of the known
                             * pixels within 8 working pixels of the hole) */
    CORE_RF_P_CLASS,        /* the domain probability of the class whose gate is asked */
    CORE_ROUTE_NFEAT
} core_route_feat_index;

/* A request's gate inputs (core_route_features). */
typedef struct {
    float v[CORE_ROUTE_NFEAT];
} core_route_feat;

typedef struct core_router core_router;

/* Loads a router file (see above): checks the metadata (kind, format, classes, the features'
 * versions, domain size, every class's threshold) and every tensor's shape. Errors name the file
 * and the problem: SP_ERR_IO (cannot open), SP_ERR_FORMAT (not safetensors, a missing or
 * malformed key or tensor, a features version of another build), SP_ERR_NOMEM. */
sp_status core_router_load(const char *path, core_router **out);
/* Frees the router; NULL is a no-op. */
void core_router_free(core_router *r);

/* The number of classes (model families), 2..CORE_ROUTE_MAX_CLASSES. */
int core_router_nclasses(const core_router *r);
/* Class i's name ("faces", "general"), or NULL when i is out of range. */
const char *core_router_class(const core_router *r, int i);
/* The index of the class called `name`, or -1. */
int core_router_find(const core_router *r, const char *name);
/* The working size that crops must be prepared at for core_router_domain (256). */
int core_router_domain_size(const core_router *r);
/* Class i's gate threshold: the networks are used when core_router_gate >= it (core_router_use_nets). */
float core_router_threshold(const core_router *r, int i);
/* The working size class i's gate was fit at (metadata size.CLASS), 0 when the file does not say. */
int core_router_gate_size(const core_router *r, int i);
/* The file's SHA-256 (hex), for logs and /v1/info. */
const char *core_router_sha256(const core_router *r);

/* The domain features (CORE_ROUTE_DOMAIN_NFEAT floats, definition CORE_ROUTE_DOMAIN_FEATURES) of
 * one crop: x (3,s,s) in [0,1], m (1,s,s) with 1 = known pixel, 0 = hole; only known pixels are
 * read. A cell without a known pixel takes the crop's known means (0 for a crop without any).
 * Needs s >= CORE_ROUTE_GRID (else all features are 0). No allocation. */
void core_router_domain_features(int s, const float *x, const float *m, float *feat);

/* The class probabilities p[nclasses] (summing to 1) of one crop's domain features. */
void core_router_domain_probs(const core_router *r, const float *feat, float *p);

/* The class probabilities p[nclasses] of a request from its n crops as core_request_prepare makes
 * them at the domain size: x (n,3,s,s) in [0,1], m (n,1,s,s) 1 = known, 0 = hole. Each crop's
 * probabilities are weighted by its hole pixels (equal weights when no crop has one).
 * SP_ERR_INVALID when n < 1 or s is not the router's domain size. No allocation; about 0.2 ms per
 * 256-px crop on one core. */
sp_status core_router_domain(const core_router *r, int n, int s, const float *x, const float *m, float *p);

/* The gate inputs (definition CORE_ROUTE_GATE_FEATURES) of a request prepared for the networks
 * (core_request_prepare with method sim or coarse, at the working size of the family asked about:
 * its plan, hole map, image size and r->x, r->m are read), with p_class the domain probability
 * of that family. SP_ERR_INVALID for a request without crops; SP_ERR_NOMEM (two s x s work maps). */
sp_status core_route_features(const core_request *r, float p_class, core_route_feat *f);

/* The name of gate input i ("hole_ratio", ...; core_route_feat_index order), NULL out of range. */
const char *core_route_feat_name(int i);

/* The probability that class `cls`'s networks beat Telea (lower hole L1) on a request with gate
 * inputs f; -1 when cls is out of range. */
float core_router_gate(const core_router *r, int cls, const core_route_feat *f);

/* The class a request goes to: the most probable of p[nclasses] (the first of equals). */
int core_router_choose(const core_router *r, const float *p);

/* 1 when class `cls`'s networks are to fill a request with gate inputs f, 0 for Telea: the gate
 * reaches the class's threshold, and that threshold is below 1 (a threshold of 1 means Telea
 * always, 0 the networks always). 0 when cls is out of range. */
int core_router_use_nets(const core_router *r, int cls, const core_route_feat *f);

#endif
