/* rt_index.h: a small C wrapper of a FAISS inner-product index (the only place FAISS types cross into semipaint). */
#ifndef RT_INDEX_H
#define RT_INDEX_H

#include "common/sp.h"

/* A FAISS index over `dim`-d float vectors with the inner-product metric (cosine on L2-normalised
 * vectors). Searches are thread-safe with respect to each other; train, add and set_param are not
 * (callers serialise them against searches). */
typedef struct rt_index rt_index;

/* Creates an empty index from a FAISS index-factory string ("Flat", "IVF1024,Flat", "HNSW32",
 * "IVF4096,SQ8", ...). Errors carry FAISS's message. */
sp_status rt_index_new(const char *factory, int dim, rt_index **out);
/* Frees an index; NULL is a no-op. */
void rt_index_free(rt_index *ix);

int rt_index_dim(const rt_index *ix);
long rt_index_count(const rt_index *ix);
/* 1 when the index needs no (more) training, e.g. Flat or an IVF already trained. */
int rt_index_is_trained(const rt_index *ix);

/* Trains the index on n vectors (n,dim) (k-means for IVF, codebooks for PQ/SQ). A no-op when the
 * index is already trained. */
sp_status rt_index_train(rt_index *ix, long n, const float *x);
/* Adds n vectors (n,dim); they get ids count .. count+n-1. */
sp_status rt_index_add(rt_index *ix, long n, const float *x);
/* For n queries (n,dim), the k best ids and inner products (n,k), best first; ids are -1 where
 * the index holds fewer than k vectors. */
sp_status rt_index_search(const rt_index *ix, long n, const float *q, int k, float *scores, int64_t *ids);
/* Sets a search-time parameter by FAISS's name ("nprobe" for IVF, "efSearch" for HNSW). */
sp_status rt_index_set_param(rt_index *ix, const char *name, double value);
/* A deep copy (for copy-on-write appends). */
sp_status rt_index_clone(const rt_index *ix, rt_index **out);

/* Writes the index to `path` and fsyncs it (not atomic by itself: write to a temporary name and
 * rename). Reads an index written by rt_index_write; refuses one whose metric is not inner
 * product. Errors name the path. */
sp_status rt_index_write(const rt_index *ix, const char *path);
sp_status rt_index_read(const char *path, rt_index **out);

#endif
