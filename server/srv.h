/* srv.h: semipaintd, the HTTP inference daemon, at a glance: its lifecycle and the subsystems it wires together. */
#ifndef SRV_H
#define SRV_H

#include "core/config.h"

/*
 * A request's life (docs/http-api.md):
 *   HTTP thread (libmicrohttpd pool):  headers -> limits, auth, content type
 *                                       body   -> srv_request (streaming multipart or JSON)
 *                                       decode -> img_decode, hole map, img_plan crops -> float
 *                                       submit -> core_exec queue; the connection is suspended
 *   executor thread (core_exec):         batches of crops -> core_engine runner -> nn_pipeline_run
 *                                       last crop done -> the connection is resumed
 *   HTTP thread again:                  paste crops back (img_plan), encode, answer
 *   completion:                         one JSON log line, metrics (core_metrics), buffers freed
 * telea runs on the HTTP thread (no network); index appends and their descriptors run as
 * executor tasks; database reloads run on a reload thread and swap worlds (core_engine).
 *
 * States: loading (healthz 200, readyz 503, work 503) -> ready -> draining on SIGTERM (readyz
 * 503, new work 503, in-flight requests finish within shutdown_grace_ms) -> stopped.
 */

typedef struct srv_server srv_server;

/* Starts listening per cfg->server (answers healthz, and 503 to work, until loaded). The config is
 * copied. Errors name the address or the token file at fault. */
sp_status srv_server_new(const cfg_config *cfg, srv_server **out);

/* The port actually bound (useful with port 0). */
int srv_server_port(const srv_server *s);

/* Loads the models and the database and starts the executor; the server is ready afterwards.
 * Call once, from any thread. */
sp_status srv_server_load(srv_server *s);

/* Reloads the database (SIGHUP); logs the outcome. Requests keep being served meanwhile. */
sp_status srv_server_reload(srv_server *s);

/* Graceful stop: not ready, stop accepting, let in-flight requests finish within
 * server.shutdown_grace_ms, answer 503 to what is left, stop the HTTP threads. Returns the
 * number of requests that had to be cut short (0 in a clean drain). */
int srv_server_shutdown(srv_server *s);

/* Frees everything (after srv_server_shutdown, or on a failed start); NULL is a no-op. */
void srv_server_free(srv_server *s);

/* Checks what the config names without loading it: every model family's weights files readable
 * and database directory present, model.router readable, the token file valid. Errors name the
 * key ("families.general.coarse") and the path. */
sp_status srv_check_files(const cfg_config *cfg);

#endif
