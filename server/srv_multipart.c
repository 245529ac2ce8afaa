/* srv_multipart.c: streaming multipart/form-data parser: a byte-level state machine that finds "\r\n--boundary" across chunk edges. */
#include "server/srv_multipart.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/*
 * A body is:   [preamble] "--" B padding CRLF  headers CRLF  data  CRLF "--" B padding CRLF  headers ...
 *              ... data  CRLF "--" B "--" [epilogue]
 * The parser looks for the delimiter D = CRLF "--" B everywhere; the first boundary may open the
 * body without its CRLF, which is handled by starting the search as if CRLF had just been seen.
 * D starts with CR and B holds no CR, so after a mismatch no suffix of the matched bytes can
 * start a new match: the matched bytes are data and the search restarts at the current byte.
 */

typedef enum {
    MP_PREAMBLE,  /* before the first delimiter; bytes discarded */
    MP_AFTER,     /* just after a delimiter: "--" closes, else padding then CRLF */
    MP_AFTER_DASH,
    MP_PADDING,
    MP_PADDING_CR,
    MP_HEADERS,   /* header lines of a part, up to an empty line */
    MP_BODY,      /* part data, up to the next delimiter */
    MP_EPILOGUE,  /* after the closing delimiter; bytes discarded */
    MP_FAILED,
} mp_state;

struct srv_mp {
    srv_mp_callbacks cb;
    char delim[SRV_MP_BOUNDARY_MAX + 5]; /* "\r\n--" + boundary */
    size_t dlen;
    mp_state state;
    size_t matched; /* bytes of delim matched so far (PREAMBLE, BODY) */
    size_t padding;
    char hdr[SRV_MP_HEADER_BYTES + 1];
    size_t hlen;
    int parts;
};

static int bchar(int c) {
    return isalnum(c) || strchr("'()+_,-./:=? ", c) != NULL;
}

static int valid_boundary(const char *b, size_t n) {
    if (n < 1 || n > SRV_MP_BOUNDARY_MAX || b[n - 1] == ' ') return 0;
    for (size_t i = 0; i < n; i++)
        if (!b[i] || !bchar((unsigned char)b[i])) return 0;
    return 1;
}

sp_status srv_mp_boundary(const char *ct, char *out, size_t cap) {
    while (*ct == ' ' || *ct == '\t') ct++;
    if (strncasecmp(ct, "multipart/form-data", 19) || (ct[19] && ct[19] != ';' && ct[19] != ' ' && ct[19] != '\t'))
        return sp_err(SP_ERR_UNSUPPORTED, "content type '%.64s' is not multipart/form-data", ct);
    const char *p = ct + 19;
    while (*p) {
        while (*p == ';' || *p == ' ' || *p == '\t') p++;
        const char *name = p;
        while (*p && *p != '=' && *p != ';') p++;
        size_t nlen = (size_t)(p - name);
        while (nlen && (name[nlen - 1] == ' ' || name[nlen - 1] == '\t')) nlen--;
        if (*p != '=') continue;
        p++;
        while (*p == ' ' || *p == '\t') p++;
        char val[SRV_MP_BOUNDARY_MAX + 2];
        size_t vlen = 0;
        if (*p == '"') {
            p++;
            while (*p && *p != '"') {
                if (*p == '\\' && p[1]) p++;
                if (vlen > SRV_MP_BOUNDARY_MAX) return sp_err(SP_ERR_FORMAT, "multipart boundary longer than 70 characters");
                val[vlen++] = *p++;
            }
            if (*p != '"') return sp_err(SP_ERR_FORMAT, "unterminated quoted parameter in content type");
            p++;
        } else {
            while (*p && *p != ';' && *p != ' ' && *p != '\t') {
                if (vlen > SRV_MP_BOUNDARY_MAX) return sp_err(SP_ERR_FORMAT, "multipart boundary longer than 70 characters");
                val[vlen++] = *p++;
            }
        }
        val[vlen] = 0;
        if (nlen == 8 && !strncasecmp(name, "boundary", 8)) {
            if (!valid_boundary(val, vlen)) return sp_err(SP_ERR_FORMAT, "invalid multipart boundary '%s'", val);
            if (vlen + 1 > cap) return sp_err(SP_ERR_FORMAT, "multipart boundary too long");
            memcpy(out, val, vlen + 1);
            return SP_OK;
        }
    }
    return sp_err(SP_ERR_FORMAT, "multipart/form-data content type without a boundary parameter");
}

sp_status srv_mp_new(const char *boundary, const srv_mp_callbacks *cb, srv_mp **out) {
    *out = NULL;
    size_t n = strlen(boundary);
    if (!valid_boundary(boundary, n)) return sp_err(SP_ERR_FORMAT, "invalid multipart boundary");
    srv_mp *p = calloc(1, sizeof *p);
    if (!p) return sp_err(SP_ERR_NOMEM, "multipart parser: out of memory");
    p->cb = *cb;
    memcpy(p->delim, "\r\n--", 4);
    memcpy(p->delim + 4, boundary, n);
    p->dlen = n + 4;
    p->state = MP_PREAMBLE;
    p->matched = 2; /* the body may open with "--B": act as if CRLF was just seen */
    *out = p;
    return SP_OK;
}

void srv_mp_free(srv_mp *p) { free(p); }

int srv_mp_parts(const srv_mp *p) { return p->parts; }

static sp_status fail(srv_mp *p, const char *why) {
    p->state = MP_FAILED;
    return sp_err(SP_ERR_FORMAT, "malformed multipart body: %s", why);
}

/* Reads a parameter value (quoted string with backslash escapes, or a token) at *s into out. */
static int param_value(const char **s, char *out, size_t cap) {
    const char *p = *s;
    size_t n = 0;
    if (*p == '"') {
        p++;
        while (*p && *p != '"') {
            if (*p == '\\' && p[1]) p++;
            if (n + 1 >= cap) return -1;
            out[n++] = *p++;
        }
        if (*p != '"') return -1;
        p++;
    } else {
        while (*p && *p != ';' && *p != ' ' && *p != '\t') {
            if (n + 1 >= cap) return -1;
            out[n++] = *p++;
        }
    }
    out[n] = 0;
    *s = p;
    return 0;
}

/* Parses the collected header block (lines separated by CRLF) and reports the part. */
static sp_status headers_done(srv_mp *p) {
    char name[256] = "", filename[512] = "", ctype[256] = "";
    int have_disp = 0, have_name = 0, have_file = 0, have_ctype = 0;
    p->hdr[p->hlen] = 0;
    char *line = p->hdr;
    while (*line) {
        char *eol = strstr(line, "\r\n");
        if (!eol) return fail(p, "header line without CRLF");
        *eol = 0;
        if (*line == ' ' || *line == '\t') return fail(p, "folded header lines are not allowed");
        char *colon = strchr(line, ':');
        if (!colon || colon == line) return fail(p, "header line without a name");
        *colon = 0;
        const char *v = colon + 1;
        while (*v == ' ' || *v == '\t') v++;
        for (const char *c = line; *c; c++)
            if (!isgraph((unsigned char)*c)) return fail(p, "bad character in a header name");
        if (!strcasecmp(line, "Content-Disposition")) {
            if (have_disp) return fail(p, "two Content-Disposition headers in one part");
            have_disp = 1;
            if (strncasecmp(v, "form-data", 9) || (v[9] && v[9] != ';' && v[9] != ' '))
                return fail(p, "Content-Disposition of a part is not form-data");
            const char *s = v + 9;
            while (*s) {
                while (*s == ';' || *s == ' ' || *s == '\t') s++;
                if (!*s) break;
                const char *pn = s;
                while (*s && *s != '=' && *s != ';') s++;
                size_t pl = (size_t)(s - pn);
                if (*s != '=') continue;
                s++;
                char val[512];
                if (param_value(&s, val, sizeof val)) return fail(p, "bad or too long Content-Disposition parameter");
                if (pl == 4 && !strncasecmp(pn, "name", 4)) {
                    if (have_name || strlen(val) >= sizeof name) return fail(p, "bad name parameter");
                    strcpy(name, val);
                    have_name = 1;
                } else if (pl == 8 && !strncasecmp(pn, "filename", 8)) {
                    if (have_file) return fail(p, "two filename parameters");
                    strcpy(filename, val);
                    have_file = 1;
                }
            }
        } else if (!strcasecmp(line, "Content-Type")) {
            if (have_ctype || strlen(v) >= sizeof ctype) return fail(p, "bad Content-Type header in a part");
            strcpy(ctype, v);
            have_ctype = 1;
        } else if (!strcasecmp(line, "Content-Transfer-Encoding")) {
            if (strcasecmp(v, "binary") && strcasecmp(v, "8bit") && strcasecmp(v, "7bit"))
                return fail(p, "Content-Transfer-Encoding other than binary, 8bit or 7bit");
        }
        line = eol + 2;
    }
    if (!have_disp || !have_name || !name[0]) return fail(p, "part without a Content-Disposition form-data name");
    if (p->parts >= SRV_MP_MAX_PARTS) return fail(p, "too many parts");
    p->parts++;
    p->hlen = 0;
    if (!p->cb.part_begin) return SP_OK;
    return p->cb.part_begin(p->cb.ctx, name, have_file ? filename : NULL, have_ctype ? ctype : NULL);
}

static sp_status emit(srv_mp *p, const uint8_t *d, size_t n) {
    if (!n || !p->cb.part_data) return SP_OK;
    return p->cb.part_data(p->cb.ctx, d, n);
}

sp_status srv_mp_feed(srv_mp *p, const uint8_t *data, size_t len) {
    sp_status st;
    size_t i = 0;
    if (p->state == MP_FAILED) return sp_err(SP_ERR_FORMAT, "malformed multipart body");
    while (i < len) {
        uint8_t c = data[i];
        switch (p->state) {
        case MP_PREAMBLE:
            if (c == (uint8_t)p->delim[p->matched]) {
                i++;
                if (++p->matched == p->dlen) p->state = MP_AFTER;
            } else if (p->matched) {
                p->matched = 0; /* re-test this byte from the start */
            } else {
                const uint8_t *cr = memchr(data + i, '\r', len - i);
                i = cr ? (size_t)(cr - data) : len;
            }
            break;
        case MP_BODY:
            if (p->matched == 0) {
                const uint8_t *cr = memchr(data + i, '\r', len - i);
                size_t end = cr ? (size_t)(cr - data) : len;
                if ((st = emit(p, data + i, end - i))) return p->state = MP_FAILED, st;
                i = end;
                if (cr) {
                    p->matched = 1;
                    i++;
                }
            } else if (c == (uint8_t)p->delim[p->matched]) {
                i++;
                if (++p->matched == p->dlen) {
                    p->matched = 0;
                    p->state = MP_AFTER;
                    if (p->cb.part_end && (st = p->cb.part_end(p->cb.ctx))) return p->state = MP_FAILED, st;
                }
            } else {
                if ((st = emit(p, (const uint8_t *)p->delim, p->matched))) return p->state = MP_FAILED, st;
                p->matched = 0;
            }
            break;
        case MP_AFTER:
            i++;
            p->padding = 0;
            if (c == '-') p->state = MP_AFTER_DASH;
            else if (c == '\r') p->state = MP_PADDING_CR;
            else if (c == ' ' || c == '\t') p->state = MP_PADDING;
            else return fail(p, "unexpected byte after a boundary");
            break;
        case MP_AFTER_DASH:
            i++;
            if (c != '-') return fail(p, "unexpected byte after a boundary");
            p->state = MP_EPILOGUE;
            break;
        case MP_PADDING:
            i++;
            if (c == '\r') p->state = MP_PADDING_CR;
            else if ((c != ' ' && c != '\t') || ++p->padding > SRV_MP_PADDING_MAX)
                return fail(p, "unexpected byte after a boundary");
            break;
        case MP_PADDING_CR:
            i++;
            if (c != '\n') return fail(p, "boundary line not ended by CRLF");
            p->state = MP_HEADERS;
            p->hlen = 0;
            break;
        case MP_HEADERS: {
            /* copy up to the end of the header block (CRLF CRLF), bounded */
            size_t room = SRV_MP_HEADER_BYTES - p->hlen;
            if (room == 0) return fail(p, "part headers longer than 8 KiB");
            p->hdr[p->hlen++] = (char)c;
            i++;
            if (c == 0) return fail(p, "NUL byte in part headers");
            if (p->hlen == 2 && p->hdr[0] == '\r' && p->hdr[1] == '\n') {
                p->hlen = 0; /* a part with no header at all */
                return fail(p, "part without headers");
            }
            if (p->hlen >= 4 && !memcmp(p->hdr + p->hlen - 4, "\r\n\r\n", 4)) {
                p->hlen -= 2; /* keep the last line's CRLF, drop the empty line */
                if ((st = headers_done(p))) {
                    if (p->state != MP_FAILED) p->state = MP_FAILED;
                    return st;
                }
                p->state = MP_BODY;
                p->matched = 0;
            }
            break;
        }
        case MP_EPILOGUE:
            return SP_OK;
        case MP_FAILED:
            return sp_err(SP_ERR_FORMAT, "malformed multipart body");
        }
    }
    return SP_OK;
}

sp_status srv_mp_finish(srv_mp *p) {
    if (p->state == MP_EPILOGUE) return SP_OK;
    if (p->state == MP_FAILED) return sp_err(SP_ERR_FORMAT, "malformed multipart body");
    if (p->state == MP_PREAMBLE) return fail(p, "no boundary found in the body");
    return fail(p, "body ends before the closing boundary");
}
