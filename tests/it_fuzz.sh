#!/usr/bin/env bash
# it_fuzz.sh: builds the libFuzzer harnesses of the request parsers (multipart, JSON, image headers) and the safetensors header parser with clang-14 and runs each for a bounded time.
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
       -Wno-macro-redefined -I.)
common=(common/sp.c)
build() { # name sources...
  local name=$1; shift
  if [ ! -x "$out/$name" ] || [ -n "$(find tests/fuzz/"$name".c "$@" common/sp.c -newer "$out/$name" 2>/dev/null)" ]; then
    "$CLANG" "${flags[@]}" tests/fuzz/"$name".c "$@" "${common[@]}" -lcjson -lturbojpeg -lpng -lwebp -ldeflate -lz -lm -o "$out/$name"
  fi
}
build fuzz_multipart server/srv_multipart.c server/srv_request.c imaging/img.c
build fuzz_json server/srv_request.c server/srv_multipart.c imaging/img.c
build fuzz_probe imaging/img.c
build fuzz_st model/st.c

# seed corpora: well-formed inputs the fuzzer mutates from
seed() { # corpus file, content on stdin
  mkdir -p "$out/corpus-$1"
  cat > "$out/corpus-$1/$2"
}
printf '\x05--B0und'"'"'ry\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n\r\n--B0und\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="mask"\r\n\r\nM\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name=method\r\n\r\ncoarse\r\n--B0und'"'"'ry--\r\n' | seed multipart two-files
printf '\x05--B0und'"'"'ry\r\nContent-Disposition: form-data; name="image"; filename="a.webp"\r\n\r\nRIFF\x00\x00\x00\x00WEBPVP8L\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="mask_from_alpha"\r\n\r\ntrue\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name=format\r\n\r\nwebp\r\n--B0und'"'"'ry--\r\n' | seed multipart mask-from-alpha
# OpenAI's image edit form (POST /v1/images/edits): image[] twice, an alpha mask, the text fields
printf '\x03--B0und'"'"'ry\r\nContent-Disposition: form-data; name="image[]"; filename="a.png"\r\n\r\n\x89PNG\r\n\x1a\n\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="image[]"; filename="b.png"\r\n\r\n\x89PNG\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="mask"; filename="m.png"\r\n\r\nM\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nfill the hole\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="n"\r\n\r\n1\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="size"\r\n\r\n64x48\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="response_format"\r\n\r\nb64_json\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="model"\r\n\r\ngpt-image-1\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="output_format"\r\n\r\nwebp\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="user"\r\n\r\nu1\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="stream"\r\n\r\nfalse\r\n--B0und'"'"'ry--\r\n' | seed multipart openai-edits
printf '\x02--B0und'"'"'ry\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n\x89PNG\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="output_compression"\r\n\r\n80\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="partial_images"\r\n\r\n2\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="quality"\r\n\r\nhigh\r\n--B0und'"'"'ry--\r\n' | seed multipart openai-edits-alpha
printf '\x01preamble\r\n--B0und'"'"'ry \t\r\ncontent-disposition: form-data; name="image"; filename="x.jpg"\r\nContent-Transfer-Encoding: binary\r\n\r\n\xff\xd8\xff\r\n--B0und'"'"'ry--' | seed multipart padding
printf '{"image":"iVBORw0KGgo=","mask":"data:image/png;base64,iVBORw0KGgo=","method":"sim","format":"png","quality":90}' | seed json inpaint
printf '{"images":["/9j/4AAQ","iVBORw0KGgo="],"names":["a.jpg","b.png"]}' | seed json index
printf '{"image":"UklGRgAAAABXRUJQ","mask_from_alpha":true,"format":"webp","quality":100}' | seed json mask-from-alpha
printf '{"image":"UklGRgAAAABXRUJQ","mask":"QQ==","mask_from_alpha":false}' | seed json mask-from-alpha-false
printf '{"image":"iVBORw0KGgo=","mask":"QQ==","reference":["/9j/4AAQ","iVBORw0KGgo="]}' | seed json references
printf '{"image":"iVBORw0KGgo=","mask":"QQ==","reference_id":[0,12,1e1]}' | seed json reference-ids
printf '\x05--B0und'"'"'ry\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n\x89PNG\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="mask"\r\n\r\nM\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="reference"; filename="r.jpg"\r\n\r\n\xff\xd8\xff\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name="reference"\r\n\r\nR\r\n--B0und'"'"'ry\r\nContent-Disposition: form-data; name=reference_id\r\n\r\n7\r\n--B0und'"'"'ry--\r\n' | seed multipart references
# the pathological shapes of issue 15 (small versions): many keys, deep nesting, long arrays, escapes
awk 'BEGIN { printf "{"; for (i = 0; i < 2000; i++) printf "%s\"k%d\":0", (i ? "," : ""), i; printf "}" }' | seed json many-keys
awk 'BEGIN { for (i = 0; i < 5000; i++) printf "[" }' | seed json deep-open
awk 'BEGIN { printf "{\"image\":"; for (i = 0; i < 63; i++) printf "["; for (i = 0; i < 63; i++) printf "]"; printf ",\"mask\":\"QQ==\"}" }' | seed json deep-closed
awk 'BEGIN { printf "{\"images\":[0"; for (i = 0; i < 5000; i++) printf ",0"; printf "]}" }' | seed json numbers
awk 'BEGIN { printf "{\"images\":[\"QQ==\""; for (i = 0; i < 300; i++) printf ",\"QQ==\""; printf "],\"names\":[\"a\"]}" }' | seed json strings
printf '%s' '{"\u0069mage":"data:image\/png;base64,SU1H","mask":"TUFT\u0053w==","method":"\u0074elea","quality":1e2,"image":"x"}' | seed json escapes
printf '%s' '{"names":["\u00e9t\u00e9.jpg","\ud83d\ude00"],"images":["QUFB","QkI="]} ' | seed json names-utf8
# safetensors: a small valid image (every dtype size, a zero-size tensor, metadata) and the crash of issue 15
st_seed() { # corpus-file header data-bytes: the 8-byte length, the header padded with spaces to 8, the data
  local h=$2 pad len
  pad=$(( (8 - ${#h} % 8) % 8 )); len=$(( ${#h} + pad ))
  { printf "$(printf '\\x%02x\\x%02x\\x%02x\\x00\\x00\\x00\\x00\\x00' $((len & 255)) $((len >> 8 & 255)) $((len >> 16 & 255)))"
    printf '%s%*s' "$h" "$pad" ''
    head -c "$3" /dev/zero | tr '\0' '\1'; } | seed st "$1"
}
st_seed valid '{"__metadata__":{"semipaint":"{\"format\": 1}"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F16","shape":[3],"data_offsets":[16,22]},"c":{"dtype":"BF16","shape":[1],"data_offsets":[22,24]},"d":{"dtype":"U8","shape":[0],"data_offsets":[24,24]},"e":{"dtype":"I64","shape":[1,1],"data_offsets":[24,32]}}' 32
st_seed two-metadata '{"__metadata__":{"a":"1","b":"2","c":"3"},"__metadata__":{"d":"4"},"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}' 4
st_seed dtypes '{"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[1],"data_offsets":[8,12]},"c":{"dtype":"I16","shape":[1],"data_offsets":[12,14]},"d":{"dtype":"I8","shape":[1],"data_offsets":[14,15]},"e":{"dtype":"BOOL","shape":[1],"data_offsets":[15,16]}}' 16
echo '/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAYEBQYFBAYGBQYHBwYIChAKCgkJChQODwwQFxQYGBcUFhYaHSUfGhsjHBYWICwgIyYnKSopGR8tMC0oMCUoKSj/2wBDAQcHBwoIChMKChMoGhYaKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCj/wAARCAADAAQDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwDzOiiiuE/aT//Z' | base64 -d | seed probe tiny-4x3.jpg
echo 'iVBORw0KGgoAAAANSUhEUgAAAAMAAAACCAYAAACddGYaAAAAE0lEQVR4nGNkZGJmYYACJgYkAAABNAAOEeL7owAAAABJRU5ErkJggg==' | base64 -d | seed probe tiny-3x2-rgba.png
# RGB with all five row filters and the image data split over two IDAT chunks, and grey: the
# one-pass decoder of imaging/img.c takes both
echo 'iVBORw0KGgoAAAANSUhEUgAAAAUAAAAFCAIAAAACDbGyAAAALUlEQVR4nAFQAK//AAAFCiUqL0pPVG90eZSZngELEBUwNTpVWl96f4SfpKkCFhsgO0Ae/nKbAAAALklEQVRFYGVqhYqPqq+0AyEmK0ZLUGtwdZCVmrW6vwQsMTZRVlt2e4CboKXAxcr4MR2iJCLKtgAAAABJRU5ErkJggg==' | base64 -d | seed probe rgb-5x5-filters-2idat.png
echo 'iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAAAAACMmsGiAAAAHElEQVR4nGNhUPXKZ+Y2CK1iErNOaGVUdMueAAAmegSL1xciDwAAAABJRU5ErkJggg==' | base64 -d | seed probe grey-4x4.png
# WebP (made with PIL): lossless RGBA (VP8L), lossy RGB (VP8), lossy with an ALPH chunk (VP8X), and
# a two-frame animation (ANIM/ANMF), which the decoder refuses
echo 'UklGRkAAAABXRUJQVlA4TDMAAAAvAkAAECcgICFkq/8T7BCQEPJ/mFfIBCw2IunfzCEgITyX5QKAWcu/miCQtMXb/oj+h+sA' | base64 -d | seed probe lossless-3x2-rgba.webp
echo 'UklGRjAAAABXRUJQVlA4ICQAAABQAQCdASoEAAQAAsBMJQBOgCgAAP7wm0LpP1QIA4NkimuwAAA=' | base64 -d | seed probe lossy-4x4.webp
echo 'UklGRlQAAABXRUJQVlA4WAoAAAAQAAAAAwAAAwAAQUxQSAoAAAABB1CyiAhERP8DVlA4ICQAAABQAQCdASoEAAQAAsBMJQBOgCgAAP7wm0LpP1QIA4NkimuwAAA=' | base64 -d | seed probe lossy-alpha-4x4.webp
echo 'UklGRsQAAABXRUJQVlA4WAoAAAACAAAAAQAAAQAAQU5JTQYAAAAAAAAAAABBTk1GSgAAAAAAAAAAAAEAAAEAAAoAAAJWUDggMgAAADABAJ0BKgIAAgABQCYloAADcAD+8ut///mwP/bz/wR6Af//0uD//pcH//S4P/SkAAAAQU5NRkYAAAAAAAAAAAABAAABAAAKAAAAVlA4IC4AAAA0AQCdASoCAAIAAAAmJaAAA3AA/vtV4///S4P/+lwf/9Lg/9Lg//rV5Vesq6AA' | base64 -d | seed probe animated-2x2.webp

status=0
for h in fuzz_multipart:multipart fuzz_json:json fuzz_probe:probe fuzz_st:st; do
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
