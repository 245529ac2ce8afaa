/* fuzz_json.c: libFuzzer harness for the JSON request parsers (single-pass shape check) and base64: no crash, errors are 4xx/503 with a code, accepted fields are sane and owned. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    srv_error e;
    srv_inpaint_args a;
    int r = srv_parse_inpaint_json(data, size, &a, &e);
    if (r == 0) {
        /* a mask, or (exclusively) mask_from_alpha */
        if (!a.image.data || !a.image.len || (a.mask_from_alpha ? a.mask.data || a.mask.len : !a.mask.data || !a.mask.len))
            abort();
        if ((int)a.method < SRV_METHOD_SIM || a.method > SRV_METHOD_TELEA || a.quality < 0 || a.quality > 100) abort();
        srv_inpaint_args_free(&a);
    } else if (r < 400 || r > 599 || r != e.status || !e.code) {
        abort();
    }
    srv_index_args x;
    r = srv_parse_index_json(data, size, &x, &e);
    if (r == 0) {
        if (x.n < 1 || x.n > SRV_INDEX_MAX_IMAGES) abort();
        for (int i = 0; i < x.n; i++)
            if (!x.images[i].data || !x.images[i].len || !memchr(x.images[i].name, 0, sizeof x.images[i].name)) abort();
        srv_index_args_free(&x);
    } else if (r < 400 || r > 599 || r != e.status || !e.code) {
        abort();
    }
    /* base64 of the raw bytes, and a round trip through the encoder */
    uint8_t *out;
    size_t n;
    if (srv_b64_decode((const char *)data, size, &out, &n) == SP_OK) {
        size_t el;
        char *enc = srv_b64_encode(out, n, &el);
        uint8_t *back;
        size_t bn;
        if (!enc || srv_b64_decode(enc, el, &back, &bn) || bn != n || memcmp(back, out, n)) abort();
        free(back);
        free(enc);
        free(out);
    }
    return 0;
}
