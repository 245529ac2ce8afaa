/* srv_web.h: the web demo page (server/web/index.html) compiled into semipaintd, served at GET /. */
#ifndef SRV_WEB_H
#define SRV_WEB_H

#include <stddef.h>

/* Sets *body to the page (UTF-8 HTML, not NUL-terminated) and *len to its length in bytes. The
 * bytes are static and read-only: the caller must neither free nor modify them. Never fails. */
void srv_web_index(const char **body, size_t *len);

#endif
