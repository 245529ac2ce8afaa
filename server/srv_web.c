/* srv_web.c: the web demo page served at GET /, embedded from server/web/index.html by the Makefile (build/gen/web_index.h). */
#include "server/srv_web.h"

#include "gen/web_index.h"

void srv_web_index(const char **body, size_t *len) {
    *body = (const char *)web_index_html;
    *len = web_index_html_len;
}
