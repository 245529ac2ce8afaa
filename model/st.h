/* st.h: a safetensors reader: mmap'ed file, fully validated header, typed tensor views and metadata. */
#ifndef ST_H
#define ST_H

#include "common/sp.h"

typedef enum { ST_F32 = 0, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL } st_dtype;
#define ST_MAX_DIMS 8

/* One tensor of the file: a view into the mapping, valid while the file is open. */
typedef struct {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const uint8_t *data; /* little-endian raw bytes, (end - begin) of them */
    size_t nbytes;
} st_tensor;

typedef struct st_file st_file;

/* Opens and mmaps `path`, then checks everything in the header (see st_open_mem). Every error
 * names the file and, where one is at fault, the tensor. */
sp_status st_open(const char *path, st_file **out);
/* Parses and checks a safetensors image held in memory: `buf` holds `len` bytes (the 8-byte
 * little-endian header length, the JSON header, the data area) and must stay valid and unchanged
 * until st_close, which does not free it; `name` stands for the file in messages. Checks: the
 * header length within the buffer (at most 100 MiB); the header one JSON object followed only by
 * space padding; `__metadata__` at most once, an object mapping distinct keys to strings; each
 * tensor name once; in each entry dtype, shape and data_offsets once each, a known dtype, at most
 * ST_MAX_DIMS dimensions of non-negative integers whose product stays within 2^40, and
 * data_offsets [begin, end] inside the data area with end - begin = elements * dtype size; and,
 * in offset order, the tensors covering the data area exactly (no overlap, no gap, nothing after
 * the last). SP_ERR_FORMAT for a bad image, SP_ERR_NOMEM; on success *out holds the file. */
sp_status st_open_mem(const uint8_t *buf, size_t len, const char *name, st_file **out);
/* Unmaps (st_open) and frees; NULL is a no-op. */
void st_close(st_file *f);

/* The path (or st_open_mem name) given at open. */
const char *st_path(const st_file *f);
/* The number of tensors (the __metadata__ entry is not one). */
int st_count(const st_file *f);
/* The i-th tensor in file order (by data offset), or NULL when i is out of range. */
const st_tensor *st_at(const st_file *f, int i);
/* The tensor called `name`, or NULL. */
const st_tensor *st_find(const st_file *f, const char *name);
/* The metadata value for `key`, or NULL. */
const char *st_meta(const st_file *f, const char *key);
/* SHA-256 of the whole file (computed at open). */
const char *st_sha256(const st_file *f);
/* The safetensors name of a dtype ("F32", ...); "?" for a value outside the enum. */
const char *st_dtype_name(st_dtype d);

/* Finds `name`, checks it has exactly the shape dims[0..ndim-1], and converts it to F32 into
 * `out` (numel floats). F32, F16 and BF16 are accepted. Errors name the file and the tensor. */
sp_status st_read_f32(const st_file *f, const char *name, int ndim, const int64_t *dims, float *out);

/* Writes a safetensors file atomically: tensors are F32, names/shapes/data given in parallel
 * arrays; `meta_json` is the JSON object for __metadata__ (or NULL). Used by tests and tools. */
sp_status st_write_f32(const char *path, int n, const char *const *names, const int *ndims,
                       const int64_t *const *shapes, const float *const *data, const char *meta_json);

#endif
