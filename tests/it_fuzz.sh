#!/usr/bin/env bash
# it_fuzz.sh: builds the libFuzzer harnesses of the request parsers (multipart, JSON, image headers) with clang-14 and runs each for a bounded time.
# FUZZ_SECONDS (default 15) sets the time per harness; corpora persist in $BUILD/fuzz/corpus-* across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECS=${FUZZ_SECONDS:-15}
CLANG=${CLANG:-clang-14}

if [ -n "${SP_SANITIZED:-}" ] || [ "$BUILD" = build-san ]; then
  echo "it_fuzz: SKIP in the sanitizer pass (the harnesses are built with ASan+UBSan already and ran in the plain pass)"
  exit 0
fi
if ! command -v "$CLANG" >/dev/null; then
  echo "it_fuzz: SKIP ($CLANG not installed; scripts/deps.sh installs clang-14 and libclang-rt-14-dev)"
  exit 0
fi

out="$BUILD/fuzz"
mkdir -p "$out"
flags=(-std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -D_GNU_SOURCE
       -Wno-macro-redefined -Imodel -Iserver)
common=(model/sp.c)
build() { # name sources...
  local name=$1; shift
  if [ ! -x "$out/$name" ] || [ -n "$(find tests/fuzz/"$name".c "$@" model/sp.c -newer "$out/$name" 2>/dev/null)" ]; then
    "$CLANG" "${flags[@]}" tests/fuzz/"$name".c "$@" "${common[@]}" -lcjson -lturbojpeg -lpng -ldeflate -lz -lm -o "$out/$name"
  fi
}
build fuzz_multipart server/srv_multipart.c server/srv_request.c server/img.c
build fuzz_json server/srv_request.c server/srv_multipart.c server/img.c
build fuzz_probe server/img.c

# seed corpora: well-formed inputs the fuzzer mutates from
seed() { # corpus file, content on stdin
  mkdir -p "$out/corpus-$1"
  cat > "$out/corpus-$1/$2"
}
printf '\x05--B0und'"'"'ry\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n\r\n--B0und\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="mask"\r\n\r\nM\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name=method\r\n\r\ncoarse\r\n--B0und'"'"'ry--\r\n' | seed multipart two-files
printf '\x01preamble\r\n--B0und'"'"'ry \t\r\ncontent-disposition: form-data; name="image"; filename="x.jpg"\r\nContent-Transfer-Encoding: binary\r\n\r\n\xff\xd8\xff\r\n--B0und'"'"'ry--' | seed multipart padding
printf '{"image":"iVBORw0KGgo=","mask":"data:image/png;base64,iVBORw0KGgo=","method":"sim","format":"png","quality":90}' | seed json inpaint
printf '{"images":["/9j/4AAQ","iVBORw0KGgo="],"names":["a.jpg","b.png"]}' | seed json index
echo '/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAYEBQYFBAYGBQYHBwYIChAKCgkJChQODwwQFxQYGBcUFhYaHSUfGhsjHBYWICwgIyYnKSopGR8tMC0oMCUoKSj/2wBDAQcHBwoIChMKChMoGhYaKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCj/wAARCAADAAQDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwDzOiiiuE/aT//Z' | base64 -d | seed probe tiny-4x3.jpg
echo 'iVBORw0KGgoAAAANSUhEUgAAAAMAAAACCAYAAACddGYaAAAAE0lEQVR4nGNkZGJmYYACJgYkAAABNAAOEeL7owAAAABJRU5ErkJggg==' | base64 -d | seed probe tiny-3x2-rgba.png
# RGB with all five row filters and the image data split over two IDAT chunks, and grey: the
# one-pass decoder of server/img.c takes both
echo 'iVBORw0KGgoAAAANSUhEUgAAAAUAAAAFCAIAAAACDbGyAAAALUlEQVR4nAFQAK//AAAFCiUqL0pPVG90eZSZngELEBUwNTpVWl96f4SfpKkCFhsgO0Ae/nKbAAAALklEQVRFYGVqhYqPqq+0AyEmK0ZLUGtwdZCVmrW6vwQsMTZRVlt2e4CboKXAxcr4MR2iJCLKtgAAAABJRU5ErkJggg==' | base64 -d | seed probe rgb-5x5-filters-2idat.png
echo 'iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAAAAACMmsGiAAAAHElEQVR4nGNhUPXKZ+Y2CK1iErNOaGVUdMueAAAmegSL1xciDwAAAABJRU5ErkJggg==' | base64 -d | seed probe grey-4x4.png

status=0
for h in fuzz_multipart:multipart fuzz_json:json fuzz_probe:probe; do
  bin=${h%%:*}; corpus="$out/corpus-${h##*:}"
  echo "it_fuzz: $bin for ${SECS}s"
  if ! "$out/$bin" "$corpus" -max_total_time="$SECS" -max_len=65536 -timeout=20 -rss_limit_mb=2048 \
       -artifact_prefix="$out/$bin-" -print_final_stats=1 > "$out/$bin.log" 2>&1; then
    echo "it_fuzz: FAIL $bin (artifact and log in $out/):"; tail -n 40 "$out/$bin.log"; status=1
  else
    grep -E "stat::number_of_executed_units|cov:" "$out/$bin.log" | tail -n 2
  fi
done
exit $status
