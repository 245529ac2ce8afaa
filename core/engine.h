/* core/engine.h: what semipaintd serves with: backend, coarse and refine nets, descriptor and database, swapped atomically on reload. */
#ifndef CORE_ENGINE_H
#define CORE_ENGINE_H

#include <cjson/cJSON.h>

#include "core/config.h"
#include "imaging/img.h"
#include "core/exec.h"

/*
 * The engine owns the long-lived models (backend, nets, descriptor) and a "world": the open
 * database with its retriever and pipeline. A reload builds a new world beside the current one
 * and swaps it in; the old world is freed when its last user (a batch, an image read) lets go,
 * so no request is dropped. With no database configured the engine runs Sim-0 (refine_fallback)
 * and has no world database.
 */
typedef struct core_engine core_engine;

/* Loads everything `cfg` names (backend per model.*, nets, the database and its descriptor).
 * Errors name the file at fault. The working size is the nets' metadata `size`. */
sp_status core_engine_new(const cfg_config *cfg, core_engine **out);
/* Frees the engine; no batch may be running. NULL is a no-op. */
void core_engine_free(core_engine *e);

int core_engine_size(const core_engine *e);     /* working size of the nets */
int core_engine_k(const core_engine *e);        /* neighbours per crop (0 = Sim-0) */
int core_engine_has_db(const core_engine *e);   /* a database is configured and open */
long core_engine_db_count(core_engine *e);      /* images in the database (0 without one) */
const char *core_engine_backend(const core_engine *e); /* "cpu" or "cuda" */
size_t core_engine_device_memory(const core_engine *e);
int core_engine_backend_has(const core_engine *e, nn_cap cap); /* the backend's capability (model/nn.h) */

/* The executor's runner over the current world's pipeline. */
core_runner core_engine_runner(core_engine *e);

/* Reopens the configured database and swaps it in without stopping batches in flight.
 * SP_ERR_INVALID when no database is configured; on failure the current world stays. */
sp_status core_engine_reload(core_engine *e);

/* Database image `id` as an s x s RGB image in `out` (caller frees). SP_ERR_INVALID when there is
 * no such image or no database. */
sp_status core_engine_image(core_engine *e, int64_t id, img_u8 *out);

/* Adds n images (n,s,s,3 RGB bytes) with their names to the database durably; their ids go to
 * `ids`. Computes the descriptors, so call it on the executor thread (a task) to keep one user per
 * network. SP_ERR_INVALID without a writable database. */
sp_status core_engine_index_add(core_engine *e, int n, const uint8_t *rgb, const char *const *names, int64_t *ids);

/* Adds the /v1/info fields the engine knows (backend, device, mode, models, database) to `obj`. */
void core_engine_info(core_engine *e, cJSON *obj);

#endif
