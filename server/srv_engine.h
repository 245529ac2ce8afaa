/* srv_engine.h: what semipaintd serves with: backend, coarse and refine nets, descriptor and database, swapped atomically on reload. */
#ifndef SRV_ENGINE_H
#define SRV_ENGINE_H

#include <cjson/cJSON.h>

#include "config.h"
#include "img.h"
#include "srv_exec.h"

/*
 * The engine owns the long-lived models (backend, nets, descriptor) and a "world": the open
 * database with its retriever and pipeline. A reload builds a new world beside the current one
 * and swaps it in; the old world is freed when its last user (a batch, an image read) lets go,
 * so no request is dropped. With no database configured the engine runs Sim-0 (refine_fallback)
 * and has no world database.
 */
typedef struct srv_engine srv_engine;

/* Loads everything `cfg` names (backend per model.*, nets, the database and its descriptor).
 * Errors name the file at fault. The working size is the nets' metadata `size`. */
sp_status srv_engine_new(const cfg_config *cfg, srv_engine **out);
/* Frees the engine; no batch may be running. NULL is a no-op. */
void srv_engine_free(srv_engine *e);

int srv_engine_size(const srv_engine *e);     /* working size of the nets */
int srv_engine_k(const srv_engine *e);        /* neighbours per crop (0 = Sim-0) */
int srv_engine_has_db(const srv_engine *e);   /* a database is configured and open */
long srv_engine_db_count(srv_engine *e);      /* images in the database (0 without one) */
const char *srv_engine_backend(const srv_engine *e); /* "cpu" or "cuda" */
size_t srv_engine_device_memory(const srv_engine *e);

/* The executor's runner over the current world's pipeline. */
srv_runner srv_engine_runner(srv_engine *e);

/* Reopens the configured database and swaps it in without stopping batches in flight.
 * SP_ERR_INVALID when no database is configured; on failure the current world stays. */
sp_status srv_engine_reload(srv_engine *e);

/* Database image `id` as an s x s RGB image in `out` (caller frees). SP_ERR_INVALID when there is
 * no such image or no database. */
sp_status srv_engine_image(srv_engine *e, int64_t id, img_u8 *out);

/* Adds n images (n,s,s,3 RGB bytes) with their names to the database durably; their ids go to
 * `ids`. Computes the descriptors, so call it on the executor thread (a task) to keep one user per
 * network. SP_ERR_INVALID without a writable database. */
sp_status srv_engine_index_add(srv_engine *e, int n, const uint8_t *rgb, const char *const *names, int64_t *ids);

/* Adds the /v1/info fields the engine knows (backend, device, mode, models, database) to `obj`. */
void srv_engine_info(srv_engine *e, cJSON *obj);

#endif
