/* fuzz_probe.c: libFuzzer harness for what the server runs on untrusted image bytes: sniff, header probe, and decode under a pixel limit. */
#include <stdint.h>
#include <stdlib.h>

#include "imaging/img.h"

#define MAX_PIXELS (1L << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    img_format sniffed = img_sniff(data, size), f;
    int w = 0, h = 0;
    sp_status st = img_probe(data, size, &f, &w, &h);
    if (st == SP_OK && (w <= 0 || h <= 0 || f == IMG_FMT_UNKNOWN || f != sniffed)) abort();
    img_u8 im;
    img_format df;
    if (img_decode(data, size, MAX_PIXELS, &im, &df) == SP_OK) {
        if (st != SP_OK || (long)im.w * im.h > MAX_PIXELS || (im.c != 1 && im.c != 3 && im.c != 4) || !im.px) abort();
        img_free(&im);
    }
    return 0;
}
