/* sp.h: status codes, thread-local error messages, logging, asserts and clocks shared by every module. */
#ifndef SP_H
#define SP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SP_VERSION "0.1.0"

/* Every fallible function returns one of these; SP_OK is zero so `if (st)` tests for failure.
 * The human-readable reason is in sp_err_msg() of the same thread. */
typedef enum {
    SP_OK = 0,
    SP_ERR_IO,        /* a file or socket could not be read or written */
    SP_ERR_FORMAT,    /* input bytes are malformed (bad header, truncated data, bad JSON) */
    SP_ERR_INVALID,   /* well-formed but unusable arguments or contents (wrong shape, bad value) */
    SP_ERR_NOMEM,     /* an allocation failed */
    SP_ERR_UNSUPPORTED, /* a valid request this build or device cannot serve */
    SP_ERR_BACKEND,   /* the compute library (oneDNN, CUDA, cuDNN, FAISS) reported an error */
    SP_ERR_LIMIT,     /* a configured limit (size, pixels, queue) was exceeded */
    SP_ERR_TIMEOUT,   /* a deadline passed */
    SP_ERR_BUSY,      /* temporarily unavailable; retry later */
    SP_ERR_STALE,     /* what an open handle holds was replaced on disk (e.g. a database rebuilt by
                       * another process): reopen or reload it, then retry; retrying alone never helps */
} sp_status;

/* Sets this thread's error message (printf format) and returns `st`, so a failing path can
 * write `return sp_err(SP_ERR_IO, "open %s: %s", path, strerror(errno));`. */
sp_status sp_err(sp_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes this thread's current error message with a context string (printf format) and
 * returns `st`: `return sp_err_wrap(st, "%s", path);` turns "bad dtype" into "w.st: bad dtype". */
sp_status sp_err_wrap(sp_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* This thread's last error message; never NULL (empty when none was set). Valid until the next
 * sp_err* call on this thread. */
const char *sp_err_msg(void);

/* A short constant name for a status ("io", "format", ...). */
const char *sp_status_name(sp_status st);

/* Log levels, in increasing severity. */
typedef enum { SP_LOG_DEBUG = 0, SP_LOG_INFO, SP_LOG_WARN, SP_LOG_ERROR } sp_log_level;

/* Sets the minimum level printed and the output format (json != 0: one JSON object a line). */
void sp_log_configure(sp_log_level min_level, int json);

/* Parses "debug", "info", "warn" or "error"; returns -1 when `s` is none of them. */
int sp_log_level_parse(const char *s);

/* Writes one log line to stderr at `level` (printf format); thread-safe. */
void sp_log(sp_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes one structured log line: `msg` plus `nkv` pairs of already-JSON-encoded values,
 * e.g. sp_log_kv(SP_LOG_INFO, "request", 2, "route", "\"/v1/inpaint\"", "status", "200"). */
void sp_log_kv(sp_log_level level, const char *msg, int nkv, ...);

#define SP_DEBUG(...) sp_log(SP_LOG_DEBUG, __VA_ARGS__)
#define SP_INFO(...) sp_log(SP_LOG_INFO, __VA_ARGS__)
#define SP_WARN(...) sp_log(SP_LOG_WARN, __VA_ARGS__)
#define SP_ERROR(...) sp_log(SP_LOG_ERROR, __VA_ARGS__)

/* Bugs, not runtime failures: prints file, line and expression, then aborts. */
#define SP_ASSERT(x)                                                                  \
    do {                                                                              \
        if (!(x)) sp_assert_fail(__FILE__, __LINE__, #x);                             \
    } while (0)
void sp_assert_fail(const char *file, int line, const char *expr) __attribute__((noreturn));

/* Monotonic clock in seconds. */
double sp_now(void);

/* Wall-clock time in seconds since the epoch. */
double sp_wall(void);

/* malloc that returns memory aligned to 64 bytes (free with free()); NULL on failure. */
void *sp_aligned_alloc(size_t bytes);

/* Reads a whole file into a malloc'ed buffer (NUL-terminated for convenience, the NUL not
 * counted in *len). Caller frees *out. Errors name the path. */
sp_status sp_read_file(const char *path, uint8_t **out, size_t *len);

/* Writes `len` bytes to `path` atomically: a temporary file beside it, fsync, rename, fsync
 * of the directory. Either the old or the new content is visible afterwards, never a mix. */
sp_status sp_write_file_atomic(const char *path, const void *data, size_t len);

/* SHA-256 of `len` bytes; `hex` receives 64 lowercase hex digits and a NUL. */
void sp_sha256_hex(const void *data, size_t len, char hex[65]);

/* Incremental SHA-256, for data read in pieces. */
typedef struct {
    uint32_t h[8];
    uint64_t bits;
    uint8_t buf[64];
    size_t nbuf;
} sp_sha256;
void sp_sha256_init(sp_sha256 *s);
void sp_sha256_update(sp_sha256 *s, const void *data, size_t len);
void sp_sha256_final_hex(sp_sha256 *s, char hex[65]);

/* A progress line for long work: on a terminal a redrawn bar with rate and ETA, otherwise a
 * plain line every few seconds. `label` must outlive the progress object. */
typedef struct {
    const char *label;
    long total, done;
    double t0, last;
    int tty;
} sp_progress;
void sp_progress_init(sp_progress *p, const char *label, long total);
void sp_progress_update(sp_progress *p, long done);
void sp_progress_finish(sp_progress *p);

#endif
