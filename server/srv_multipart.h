/* srv_multipart.h: a streaming multipart/form-data parser (RFC 7578 / RFC 2046) with strict bounds, fed the body in pieces of any size. */
#ifndef SRV_MULTIPART_H
#define SRV_MULTIPART_H

#include "common/sp.h"

#define SRV_MP_BOUNDARY_MAX 70     /* RFC 2046 */
#define SRV_MP_HEADER_BYTES 8192   /* all header lines of one part together */
#define SRV_MP_MAX_PARTS 256       /* parts per body */
#define SRV_MP_PADDING_MAX 64      /* transport padding after a boundary */

/* What the parser reports. Strings are NUL-terminated and valid only during the call; filename
 * and content_type are NULL when the part has none. A callback returning non-zero aborts the
 * parse: srv_mp_feed then returns that status (the callback sets the message with sp_err). */
typedef struct {
    sp_status (*part_begin)(void *ctx, const char *name, const char *filename, const char *content_type);
    sp_status (*part_data)(void *ctx, const uint8_t *data, size_t len);
    sp_status (*part_end)(void *ctx);
    void *ctx;
} srv_mp_callbacks;

typedef struct srv_mp srv_mp;

/* Extracts the boundary parameter of a `multipart/form-data; boundary=...` Content-Type value
 * (quoted or not) into `out` (at least SRV_MP_BOUNDARY_MAX+1 bytes). SP_ERR_UNSUPPORTED when the
 * type is not multipart/form-data, SP_ERR_FORMAT when the boundary is missing or invalid. */
sp_status srv_mp_boundary(const char *content_type, char *out, size_t cap);

/* Creates a parser for `boundary` (1-70 characters of RFC 2046's bchars) reporting to `cb`
 * (copied). The caller frees it with srv_mp_free. */
sp_status srv_mp_new(const char *boundary, const srv_mp_callbacks *cb, srv_mp **out);

/* Parses the next `len` bytes of the body. Returns SP_ERR_FORMAT with a reason on malformed
 * input (after which the parser refuses further input), or a callback's status. */
sp_status srv_mp_feed(srv_mp *p, const uint8_t *data, size_t len);

/* Declares the end of the body: SP_ERR_FORMAT unless the closing boundary was seen. */
sp_status srv_mp_finish(srv_mp *p);

/* Number of parts begun so far. */
int srv_mp_parts(const srv_mp *p);

/* Frees a parser; NULL is a no-op. */
void srv_mp_free(srv_mp *p);

#endif
