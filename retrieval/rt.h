/* rt.h: the retrieval database (docs/database.md): descriptors, a FAISS cosine index and an image store. */
#ifndef RT_H
#define RT_H

#include "model/nn.h"

/* Descriptors: how an image (3,s,s) in [0,1] becomes an L2-normalised vector. */
typedef struct rt_descriptor rt_descriptor;

/* Creates a descriptor by name: "vgg16_features:avg" / "vgg16_features:max" (needs `vgg`, a
 * loaded vgg16_features net; the database records its weights' sha256), or a descriptor that
 * needs no weights (see rt_descriptor_names). `vgg` may be NULL for those. */
sp_status rt_descriptor_new(const char *name, nn_net *vgg, rt_descriptor **out);
void rt_descriptor_free(rt_descriptor *d);
/* Space-separated list of the descriptor names this build knows. */
const char *rt_descriptor_names(void);
/* The descriptor's name, dimension, and the sha256 of its weights ("" when it has none). */
const char *rt_descriptor_name(const rt_descriptor *d);
int rt_descriptor_dim(const rt_descriptor *d);
const char *rt_descriptor_weights_sha256(const rt_descriptor *d);
/* Computes descriptors of n images (n,3,s,s) in [0,1] into out (n,dim). */
sp_status rt_descriptor_compute(rt_descriptor *d, int n, int s, const float *images, float *out);

/* A database directory opened for search (and, with writable = 1, for appends).
 *
 * Writers exclude each other through the database lock, an flock() on DIR/lock that every write
 * (rt_db_add, the replacement of DIR by rt_db_builder_finish) holds for as long as it writes,
 * in any process. Opening, even writable, takes no lock, so any number of handles may be open;
 * each append checks under the lock that its handle still sees the database on disk. */
typedef struct rt_db rt_db;

/* How long a writer waits for the database lock by default: a handle's appends (short, so that a
 * server's append fails fast with SP_ERR_BUSY) and a build's replacement of the directory (long,
 * so that a finished build is not thrown away because an append was running). */
#define RT_DB_LOCK_WAIT_S 2.0
#define RT_DB_BUILD_LOCK_WAIT_S 60.0

/* Opens the database in `dir`, checks manifest, index and store against each other and against
 * `desc` (name and weights sha256 must match; desc may be NULL to skip that check, e.g. for
 * `index info`), and refuses a truncated or mismatched database with a message naming the file.
 * A writable open also removes files left by killed writers when the database lock is free at
 * that moment (it never waits for it). */
sp_status rt_db_open(const char *dir, rt_descriptor *desc, int writable, rt_db **out);
void rt_db_close(rt_db *db);
long rt_db_count(const rt_db *db);
int rt_db_size(const rt_db *db);                /* working size of the stored images (256) */
const char *rt_db_descriptor(const rt_db *db);  /* the descriptor name in the manifest */
const char *rt_db_source_name(const rt_db *db, long id); /* file name the image came from */

/* Searches n descriptors (n,dim) for their k nearest images by cosine; ids/scores are (n,k).
 * Thread-safe with respect to other searches. */
sp_status rt_db_search(rt_db *db, int n, const float *desc, int k, int64_t *ids, float *scores);

/* Copies image `id` as planar float (3,s,s) in [0,1]. */
sp_status rt_db_image(rt_db *db, int64_t id, float *chw);
/* Pointer to image `id` as interleaved RGB bytes (s*s*3) in the memory-mapped store; valid
 * while the db is open. NULL when id is out of range. */
const uint8_t *rt_db_image_rgb(rt_db *db, int64_t id);

/* Appends n images given as interleaved RGB bytes (n,s,s,3), their descriptors computed by
 * the caller (n,dim), and their source names, durably: after it returns the database opens
 * with them; if the process dies midway it opens with the old content, never a mix. Ids of the
 * new images are written to `ids_out` when non-NULL. Needs writable = 1. Serialised internally
 * against concurrent searches. Holds the database lock while it writes; fails with SP_ERR_BUSY
 * (naming the database, nothing written) when another writer keeps it longer than the lock wait
 * (rt_db_set_lock_wait), and with SP_ERR_STALE (nothing written) when the database on disk is no
 * longer the one this handle holds: replaced by another process (`index build --force`), or
 * appended to through another handle. A stale handle stays stale: close it and open it again. */
sp_status rt_db_add(rt_db *db, int n, const uint8_t *rgb, const float *desc, const char *const *names,
                    int64_t *ids_out);

/* Sets how long this handle's appends wait for the database lock (seconds, >= 0; 0 tries once);
 * the default is RT_DB_LOCK_WAIT_S. Not thread-safe with respect to a running append. */
void rt_db_set_lock_wait(rt_db *db, double seconds);

/* Reads only the manifest of the database in `dir` and copies its descriptor name into `name`
 * (cap bytes), so that a caller can create that descriptor before rt_db_open. */
sp_status rt_db_peek_descriptor(const char *dir, char *name, size_t cap);

/* The manifest's descriptor dimension, weights sha256 ("" when none), FAISS factory string, and
 * generation (incremented by every committed append). */
int rt_db_dim(const rt_db *db);
const char *rt_db_weights_sha256(const rt_db *db);
const char *rt_db_factory(const rt_db *db);
long rt_db_generation(const rt_db *db);

/* Sets a FAISS search-time parameter ("nprobe" for IVF indexes, "efSearch" for HNSW); fails with
 * SP_ERR_INVALID when the index has no such parameter. Serialised against searches. */
sp_status rt_db_set_search_param(rt_db *db, const char *name, double value);

/* Builds a new database directory `dir`, streaming: rows are written to a temporary directory
 * beside `dir` as they come, and rt_db_builder_finish trains the FAISS index (factory string,
 * e.g. "Flat", "IVF256,Flat", "HNSW32") on all the descriptors, adds them, writes index and
 * manifest, and renames the temporary directory to `dir`. Until then `dir` is untouched; an
 * interrupted build leaves only a temporary "DIR.tmp-PID" directory (never a half database).
 * `dir` must not exist unless `replace` is set, in which case an existing database there is
 * replaced as a whole. The descriptor fixes name, dim and weights sha256 of the database. */
typedef struct rt_db_builder rt_db_builder;
sp_status rt_db_builder_new(const char *dir, const rt_descriptor *desc, const char *factory, int size, int replace,
                            rt_db_builder **out);
/* Appends n images (n,size,size,3) RGB bytes, their descriptors (n,dim) and source names (NULL
 * or NULL entries: empty names; newlines are replaced). */
sp_status rt_db_builder_add(rt_db_builder *b, int n, const uint8_t *rgb, const float *desc, const char *const *names);
long rt_db_builder_count(const rt_db_builder *b);
/* Trains, writes and commits the database (see above); the builder can only be freed afterwards.
 * Replacing an existing database takes its lock first (waiting up to the builder's lock wait), so
 * that no append writes into the directory meanwhile; SP_ERR_BUSY when it cannot, in which case
 * the existing database is left as it was (and the new one is not kept). Handles still open on the
 * replaced database see SP_ERR_STALE on their next append. */
sp_status rt_db_builder_finish(rt_db_builder *b);
/* Sets how long rt_db_builder_finish waits for the database lock (seconds, >= 0; 0 tries once);
 * the default is RT_DB_BUILD_LOCK_WAIT_S. */
void rt_db_builder_set_lock_wait(rt_db_builder *b, double seconds);
/* Frees a builder; an unfinished build's temporary directory is removed. NULL is a no-op. */
void rt_db_builder_free(rt_db_builder *b);

/* A retriever for nn_pipeline_new: computes descriptors of the composites with `desc`, searches
 * `db`, and fills the neighbours' images. The struct must outlive the pipeline. */
typedef struct {
    nn_retriever hook;
    rt_db *db;
    rt_descriptor *desc;
} rt_retriever;
void rt_retriever_init(rt_retriever *r, rt_db *db, rt_descriptor *desc, int k);

#endif
