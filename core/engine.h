/* core/engine.h: what semipaintd serves with: backend, coarse and refine nets, descriptor and database, swapped atomically on reload. */
#ifndef CORE_ENGINE_H
#define CORE_ENGINE_H

#include <cjson/cJSON.h>

#include "core/config.h"
#include "imaging/img.h"
#include "core/exec.h"

/*
 * The engine owns one backend and, for each model family of the configuration (cfg_families:
 * model.family's first), its long-lived models (nets, descriptor) and a "world": the family's open
 * database with its retriever and pipeline. A reload builds new worlds beside the current ones and
 * swaps them in; an old world is freed when its last user (a batch, an image read) lets go, so no
 * request is dropped. A family without a database runs Sim-0 (its refine_fallback) and has no
 * world database. Families are numbered 0..core_engine_nfamilies()-1 in the configuration's order.
 */
typedef struct core_engine core_engine;

/* Loads everything `cfg` names (the backend per model.*, then each family's nets, database and
 * descriptor, then model.router, whose classes must be families) and warms every family's
 * pipeline up. Errors name the file and the key at fault
 * ("families.general.coarse"). The working size of a family is its nets' metadata `size`. */
sp_status core_engine_new(const cfg_config *cfg, core_engine **out);
/* Frees the engine; no batch may be running. NULL is a no-op. */
void core_engine_free(core_engine *e);

int core_engine_nfamilies(const core_engine *e);
/* model.router as loaded (its classes are families of the engine), or NULL without one. */
const struct core_router *core_engine_router(const core_engine *e);
const char *core_engine_family_name(const core_engine *e, int fam);
/* The index of family `name`, or -1. */
int core_engine_family_index(const core_engine *e, const char *name);

int core_engine_size(const core_engine *e, int fam);     /* working size of the family's nets */
int core_engine_k(const core_engine *e, int fam);        /* neighbours per crop (0 = Sim-0) */
int core_engine_has_db(const core_engine *e, int fam);   /* the family has a database open */
/* The `telea_blend_image` table (docs/weights.md#telea_blend_image) of the net that paints family
 * `fam`'s answers to `coarse` (1: its coarse net) or sim (0: its refine net, Sim-0 without a
 * database) requests, with its length in *n; NULL and *n = 0 when that net has none or the
 * family's telea_blend is off. The table lives as long as the engine. */
const float *core_engine_image_blend(const core_engine *e, int fam, int coarse, int *n);
long core_engine_db_count(core_engine *e, int fam);      /* images in its database (0 without one) */
const char *core_engine_backend(const core_engine *e); /* "cpu" or "cuda" */
size_t core_engine_device_memory(const core_engine *e);
int core_engine_backend_has(const core_engine *e, nn_cap cap); /* the backend's capability (model/nn.h) */

/* The executor's runner over every family's current pipeline. */
core_runner core_engine_runner(core_engine *e);

/* Reopens every family's database and swaps them in without stopping batches in flight.
 * SP_ERR_INVALID when no family has a database; on a failure the families not yet swapped keep
 * their current world, and the error names the family. */
sp_status core_engine_reload(core_engine *e);

/* Database image `id` of family `fam` as an s x s RGB image in `out` (caller frees).
 * SP_ERR_INVALID when there is no such image or no database. */
sp_status core_engine_image(core_engine *e, int fam, int64_t id, img_u8 *out);

/* Adds n images (n,s,s,3 RGB bytes, s the family's size) with their names to family `fam`'s
 * database durably; their ids go to `ids`. Computes the descriptors, so call it on the executor
 * thread (a task) to keep one user per network. SP_ERR_INVALID without a writable database. */
sp_status core_engine_index_add(core_engine *e, int fam, int n, const uint8_t *rgb, const char *const *names,
                                int64_t *ids);

/* Adds the /v1/info fields the engine knows to `obj`: backend, device, `router` (file, sha256,
 * domain_size, thresholds; null without one), `families` (each with its
 * name, mode, working size, models and database) and, for the first family as before families
 * existed, mode, working_size, models and database at the top level. */
void core_engine_info(core_engine *e, cJSON *obj);

#endif
