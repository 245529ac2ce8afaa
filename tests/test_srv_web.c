/* test_srv_web.c: the embedded demo page is server/web/index.html byte for byte, is self-contained (no external URL) and calls the API's routes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/sp.h"
#include "server/srv_web.h"
#include "tests/t.h"

/* The first occurrence of `needle` in the n bytes at `hay` (which need not be NUL-terminated). */
static const char *find(const char *hay, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; k <= n && i <= n - k; i++)
        if (!memcmp(hay + i, needle, k)) return hay + i;
    return NULL;
}

int main(void) {
    const char *page = NULL;
    size_t len = 0;
    srv_web_index(&page, &len);
    CHECK(page && len > 1000);

    uint8_t *src = NULL;
    size_t slen = 0;
    if (sp_read_file("server/web/index.html", &src, &slen)) {
        fprintf(stderr, "test_srv_web: %s (run from the repository root)\n", sp_err_msg());
        t_failures++;
    } else {
        CHECKF(slen == len && !memcmp(src, page, len),
               "the embedded page (%zu bytes) differs from server/web/index.html (%zu bytes): rebuild", len, slen);
    }
    free(src);

    CHECK(len >= 15 && !strncmp(page, "<!doctype html>", 15));
    CHECK(find(page, len, "<meta charset=\"utf-8\">"));
    CHECK(find(page, len, "</html>"));
    /* self-contained: nothing is loaded from another origin, and no external script or style */
    const char *external[] = {"http://", "https://", "src=\"//", "href=\"//", "url(", "@import", "<script src", "<link "};
    for (size_t i = 0; i < sizeof external / sizeof external[0]; i++)
        CHECKF(!find(page, len, external[i]), "the page contains '%s'", external[i]);
    /* the routes it calls, relative so the page also works behind a path prefix */
    const char *calls[] = {"fetch(\"v1/inpaint\"", "fetch(\"v1/info\"", "`v1/images/${", "Accept: \"application/json\""};
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++)
        CHECKF(find(page, len, calls[i]), "the page lacks '%s'", calls[i]);
    /* the controls the issue asks for */
    const char *ids[] = {"id=\"file\"", "id=\"drop\"", "id=\"editor\"", "id=\"brush\"", "id=\"undo\"", "id=\"clear\"",
                         "id=\"method\"", "value=\"sim\"", "value=\"coarse\"", "value=\"telea\"", "id=\"submit\"",
                         "id=\"result\"", "id=\"neighbors\"", "id=\"timings\"", "id=\"download\""};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) CHECKF(find(page, len, ids[i]), "the page lacks %s", ids[i]);
    return t_done("test_srv_web");
}
