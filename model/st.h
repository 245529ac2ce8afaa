/* st.h: a safetensors reader: mmap'ed file, fully validated header, typed tensor views and metadata. */
#ifndef ST_H
#define ST_H

#include "sp.h"

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

/* Opens and mmaps `path`, then checks everything in the header: length within the file, JSON,
 * each entry's dtype, shape and data_offsets (inside the data area, matching numel * dtype
 * size, not overlapping), and that __metadata__ maps strings to strings. Every error names the
 * file and, where one is at fault, the tensor. */
sp_status st_open(const char *path, st_file **out);
/* Unmaps and frees; NULL is a no-op. */
void st_close(st_file *f);

const char *st_path(const st_file *f);
int st_count(const st_file *f);
/* The i-th tensor in file order (by data offset). */
const st_tensor *st_at(const st_file *f, int i);
/* The tensor called `name`, or NULL. */
const st_tensor *st_find(const st_file *f, const char *name);
/* The metadata value for `key`, or NULL. */
const char *st_meta(const st_file *f, const char *key);
/* SHA-256 of the whole file (computed at open). */
const char *st_sha256(const st_file *f);
const char *st_dtype_name(st_dtype d);

/* Finds `name`, checks it has exactly the shape dims[0..ndim-1], and converts it to F32 into
 * `out` (numel floats). F32, F16 and BF16 are accepted. Errors name the file and the tensor. */
sp_status st_read_f32(const st_file *f, const char *name, int ndim, const int64_t *dims, float *out);

/* Writes a safetensors file atomically: tensors are F32, names/shapes/data given in parallel
 * arrays; `meta_json` is the JSON object for __metadata__ (or NULL). Used by tests and tools. */
sp_status st_write_f32(const char *path, int n, const char *const *names, const int *ndims,
                       const int64_t *const *shapes, const float *const *data, const char *meta_json);

#endif
