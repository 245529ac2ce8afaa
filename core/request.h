/* core/request.h: one inpainting request from decoded pixels to the pasted result (prepare -> submit -> finish), shared by semipaintd and `semipaint inpaint`. */
#ifndef CORE_REQUEST_H
#define CORE_REQUEST_H

#include "core/config.h"
#include "core/engine.h"
#include "core/exec.h"
#include "imaging/img.h"
#include "imaging/plan.h"

typedef enum { CORE_METHOD_SIM = 0, CORE_METHOD_COARSE, CORE_METHOD_TELEA } core_method;

/* Why core_request_prepare refused a request (with SP_ERR_INVALID), for the caller's answer. */
typedef enum {
    CORE_FAULT_NONE = 0,
    CORE_FAULT_MASK_SIZE,  /* the mask's size is not the image's */
    CORE_FAULT_EMPTY_MASK, /* the mask marks no hole pixel (from alpha: no fully transparent pixel) */
    CORE_FAULT_NO_ALPHA,   /* the mask is to come from the image's alpha, and it has none */
    CORE_FAULT_MASK_NO_ALPHA, /* the mask is to come from the mask's alpha (CORE_MASK_ALPHA), and it has none */
} core_fault;

/* How a separate mask image marks the hole. */
typedef enum {
    CORE_MASK_LUMA = 0, /* semipaint's convention: luminance > 127 (alpha applied) is the hole (img_hole_map) */
    CORE_MASK_ALPHA,    /* OpenAI's images/edits convention: the mask's alpha 0 is the hole (img_hole_map_alpha) */
} core_mask_kind;

/*
 * A request's state. The image, hole map, plan and crop buffers belong to it from prepare until
 * core_request_free; `work` is what goes to the executor (its buffers are the request's).
 */
typedef struct {
    core_method method;
    int family;       /* the model family (core_engine's numbering) the crops are for */
    int s, k;         /* working size, neighbours per crop */
    img_u8 im;        /* the image being inpainted (RGB or RGBA; a grey upload becomes RGB) */
    uint8_t *hole;    /* w*h, 1 = hole */
    long holes;       /* hole pixels */
    int from_alpha;   /* the hole map came from an alpha (the image's or, CORE_MASK_ALPHA, the mask's):
                       * the filled pixels turn opaque */
    img_plan plan;    /* crops (not for telea) */
    float *x, *m, *y; /* (n,3,s,s), (n,1,s,s), (n,3,s,s) */
    int64_t *ids;     /* (n,k) neighbours of each crop, with their scores */
    float *scores;
    float *refs;      /* (k,3,s,s) caller-supplied neighbours of every crop (core_request_set_refs), or NULL */
    int64_t *ref_ids; /* (k) their ids: a database id, or -1 for an uploaded image */
    int nrefs;        /* references given (1..k; the last fills the remaining of the K slots) */
    core_work work;
    double telea_ms;      /* the telea method's time */
    double blend_ms;      /* the image blend's time (telea_blend_image), 0 without one */
    const float *iblend;  /* the painting net's telea_blend_image table (core_request_prepare_for), or NULL */
    int iblend_n;
} core_request;

/* The most working pixels one request may send to the networks under `cfg`: inpaint.max_work_pixels,
 * and no more crops than the executor's queue holds (batching.queue_capacity). */
long core_request_budget(const cfg_config *cfg, int s);

/* Takes `image` (its pixels move into r; *image is emptied) and `mask` (not kept) and makes the
 * hole map (`kind` CORE_MASK_LUMA: luminance > 127, alpha applied: img_hole_map; CORE_MASK_ALPHA:
 * the mask's alpha 0, img_hole_map_alpha, and the filled pixels of an image with alpha turn
 * opaque as below), a grey image RGB, and for sim and coarse
 * the crop plan (cfg's strategy, margin and core_request_budget) and the crops' network inputs.
 * A NULL `mask` takes the hole map from the image's own alpha (img_hole_map_alpha: alpha 0 is the
 * hole); the alpha stays in r->im, and finish (or telea) makes only the filled pixels opaque (alpha
 * 255: a fill left transparent would not show). SP_ERR_INVALID with *fault set for a
 * mask of another size, one without a hole pixel, (mask NULL) an image without alpha, or
 * (CORE_MASK_ALPHA) a mask without alpha; SP_ERR_NOMEM. On error r holds what was made so far: free it with core_request_free. */
sp_status core_request_prepare(core_request *r, const cfg_config *cfg, int s, int k, core_method method,
                               img_u8 *image, const img_u8 *mask, core_mask_kind kind, core_fault *fault);

/* How a request's model family was chosen (docs/http-api.md#models). */
typedef struct {
    int routed;     /* 1: model=auto chose; 0: the request named its family */
    int family;     /* the family that serves the request */
    int to_telea;   /* 1: auto's gate sent it to Telea (the family's nets are not expected to beat it) */
    float p_family; /* the router's probability of that family; 1 when nothing was weighed */
    float p_nets;   /* the gate's probability that the nets beat Telea; -1 when no gate ran */
} core_route;

typedef struct core_router core_router; /* core/route.h */

/* core_request_prepare for a model family of `e`: family `fam`, or with fam < 0 (model=auto) the
 * one router `rt` chooses from the image's crops (without a router: the first family). With the
 * router, a sim request without references then meets the family's gate: when its networks are
 * not expected to beat Telea, the request becomes a telea one (route->to_telea). r->family, r->s
 * and r->k are the family's, r->iblend the painting net's telea_blend_image table
 * (core_engine_image_blend); `route` says what was chosen and why. Errors as core_request_prepare. */
sp_status core_request_prepare_for(core_request *r, const cfg_config *cfg, core_engine *e, const core_router *rt,
                                   int fam, core_method method, int has_refs, img_u8 *image, const img_u8 *mask,
                                   core_mask_kind kind, core_fault *fault, core_route *route);

/* Caller-supplied references (issue 18): the `n` images `imgs` (any size; RGB, RGBA or grey) become
 * every crop's neighbours instead of retrieved ones, each made a database row the way the database
 * stores images (an s x s RGB image as it is, else img_square: the centre square of the short
 * side, resampled to s x s). ids[i] is what the answer reports for image i (its database id, or -1
 * for an upload). With fewer than K images the last fills the remaining slots. Call after a
 * successful prepare of a sim request. SP_ERR_INVALID when n is not 1..K (K = 0, Sim-0: none is
 * accepted) or the method is not sim; SP_ERR_NOMEM. */
sp_status core_request_set_refs(core_request *r, int n, const img_u8 *imgs, const int64_t *ids);

/* Fills r->work with the request's crops for the executor (buffers, method, deadline); the caller
 * sets `done` and `user` and submits it. */
void core_request_work(core_request *r, double deadline);

/* Method telea: fills the hole of r->im in place, giving up at `deadline` (sp_now() time, 0 =
 * never) with SP_ERR_TIMEOUT. With a hole map from alpha, the filled pixels turn opaque. */
sp_status core_request_telea(core_request *r, double deadline);

/* After the executor finished r->work with SP_OK: pastes each crop's result into the hole pixels
 * of r->im, then, with r->iblend (the painting net's telea_blend_image), blends them with Telea at
 * the image's resolution (telea_image_blend; past the work's deadline the pasted answer stays
 * as it is). No other pixel changes; with a hole map from alpha, the hole pixels' alpha becomes
 * 255. */
sp_status core_request_finish(core_request *r);

/* Runs the request to its end on `ex` (or Telea here) and waits: prepare must have succeeded.
 * `deadline` 0 means none.
 * The answer is in r->im. Errors: the work's status (SP_ERR_TIMEOUT, SP_ERR_BUSY when the
 * executor refused it, the runner's), with its message. For `semipaint inpaint`. */
sp_status core_request_run(core_request *r, core_exec *ex, double deadline);

/* Frees what the request holds; r is zeroed. */
void core_request_free(core_request *r);

#endif
