#!/usr/bin/env bash
# it_webp.sh: issue 18 against the real daemon and CLI: WebP in and out (format, Accept, the upload's own format), animated WebP refused, and a transparent PNG or WebP whose alpha is the mask (mask_from_alpha), with every kept pixel bit-exact.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
D="$BUILD/semipaintd"
FIX=tests/fixtures/small
[ -x "$D" ] || { echo "it_webp: SKIP ($D not built)"; exit 0; }
[ -f "$FIX/pconv_unet.safetensors" ] || { echo "it_webp: SKIP (no $FIX)"; exit 0; }
"$PY" -c 'from PIL import features, Image; assert features.check("webp")' 2>/dev/null || { echo "it_webp: SKIP (no PIL with WebP)"; exit 0; }

. tests/daemon.sh
it_begin it_webp

small_nets

# Inputs made with PIL: an RGB photo (PNG, lossy WebP), its mask, an RGBA image whose transparent
# pixels (alpha 0, coloured magenta underneath) are the hole and whose other pixels have varied
# alpha (PNG and lossless WebP), an opaque RGBA PNG, and a two-frame animated WebP.
"$PY" - "$tmp" <<'PYEOF'
import sys, math
from PIL import Image
d = sys.argv[1]
w, h = 80, 64
rgb = Image.new("RGB", (w, h))
rgb.putdata([(int(128 + 100 * math.sin(x * .1)), int(128 + 90 * math.cos(y * .13)), (x * y) % 256) for y in range(h) for x in range(w)])
rgb.save(f"{d}/photo.png")
rgb.save(f"{d}/photo.webp", quality=90)
mask = Image.new("L", (w, h), 0)
mask.paste(255, (20, 16, 44, 40))
mask.save(f"{d}/mask.png")
rgba = Image.new("RGBA", (w, h))
px = []
for y in range(h):
    for x in range(w):
        r, g, b = rgb.getpixel((x, y))
        hole = 25 <= x < 45 and 20 <= y < 36 or (x - 65) ** 2 + (y - 50) ** 2 < 30
        px.append((255, 0, 255, 0) if hole else (r, g, b, 255 if x < 60 else 40 + (x * 7 + y) % 200))
rgba.putdata(px)
rgba.save(f"{d}/alpha.png")
rgba.save(f"{d}/alpha.webp", lossless=True, exact=True)
Image.new("RGBA", (w, h), (10, 20, 30, 255)).save(f"{d}/opaque.png")
frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
frames[0].save(f"{d}/anim.webp", save_all=True, append_images=frames[1:], duration=100, loop=0)
PYEOF

# compare IN OUT: OUT is RGBA of IN's size; pixels with alpha > 0 in IN are bit-exact (RGBA); the
# transparent ones are opaque now and no longer all magenta (they were painted).
cat > "$tmp/compare.py" <<'PYEOF'
import sys
from PIL import Image
a, b = Image.open(sys.argv[1]).convert("RGBA"), Image.open(sys.argv[2])
assert b.mode == "RGBA" and b.size == a.size, (b.mode, b.size)
pa, pb = list(a.getdata()), list(b.getdata())
holes = [i for i, p in enumerate(pa) if p[3] == 0]
kept = [i for i, p in enumerate(pa) if p[3] != 0]
bad = [i for i in kept if pa[i] != pb[i]]
assert not bad, f"{len(bad)} kept pixels changed, e.g. {pa[bad[0]]} -> {pb[bad[0]]}"
assert all(pb[i][3] == 255 for i in holes), "hole pixels are not opaque"
assert sum(pb[i][:3] != (255, 0, 255) for i in holes) > len(holes) // 2, "the hole was not painted"
print(f"{len(holes)} hole pixels painted, {len(kept)} kept bit-exact")
PYEOF
is_fmt() { "$PY" -c "import sys; from PIL import Image; im = Image.open(sys.argv[1]); assert im.format == sys.argv[2], im.format" "$1" "$2"; }
ctype() { tr -d '\r' < "$1" | sed -n 's/^[Cc]ontent-[Tt]ype: //p'; }
errcode() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['error']['code'])" "$1"; }

start_daemon "$tmp/d.log" || exit 1

# ---- WebP in and out ----
code=$(curl -s -D "$tmp/h1" -o "$tmp/o1" -w '%{http_code}' -F image=@"$tmp/photo.webp" -F mask=@"$tmp/mask.png" -F method=coarse "$url/v1/inpaint")
check "a WebP upload answers 200" test "$code" = 200
check "... in WebP (inpaint.default_format: input)" sh -c "test '$(ctype "$tmp/h1")' = image/webp && $(declare -f is_fmt); PY=$PY is_fmt $tmp/o1 WEBP"
code=$(curl -s -D "$tmp/h2" -o "$tmp/o2" -w '%{http_code}' -H 'Accept: image/webp' -F image=@"$tmp/photo.png" -F mask=@"$tmp/mask.png" -F method=coarse "$url/v1/inpaint")
check "Accept: image/webp turns a PNG upload's answer into WebP" sh -c "test $code = 200 && test '$(ctype "$tmp/h2")' = image/webp"
check "... which PIL reads as WebP" is_fmt "$tmp/o2" WEBP
code=$(curl -s -D "$tmp/h3" -o "$tmp/o3" -w '%{http_code}' -H 'Accept: image/avif, image/png;q=0.9, image/webp' -F image=@"$tmp/photo.webp" -F mask=@"$tmp/mask.png" -F method=telea "$url/v1/inpaint")
check "Accept: the first supported type wins (image/png)" sh -c "test $code = 200 && test '$(ctype "$tmp/h3")' = image/png"
code=$(curl -s -D "$tmp/h4" -o "$tmp/o4" -w '%{http_code}' -H 'Accept: image/webp' -F format=jpeg -F image=@"$tmp/photo.png" -F mask=@"$tmp/mask.png" -F method=telea "$url/v1/inpaint")
check "format wins over Accept" sh -c "test $code = 200 && test '$(ctype "$tmp/h4")' = image/jpeg"
"$PY" -c "import base64,json,sys; print(json.dumps({'image': base64.b64encode(open(sys.argv[1],'rb').read()).decode(), 'mask': base64.b64encode(open(sys.argv[2],'rb').read()).decode(), 'method': 'telea', 'format': 'webp'}))" "$tmp/photo.png" "$tmp/mask.png" > "$tmp/req.json"
curl -s -o "$tmp/o5.json" -H 'Content-Type: application/json' --data-binary @"$tmp/req.json" "$url/v1/inpaint"
check "JSON format=webp answers format webp with a WebP inside" "$PY" -c "
import base64,json,sys; o = json.load(open(sys.argv[1])); assert o['format'] == 'webp', o
assert base64.b64decode(o['image'])[8:12] == b'WEBP'" "$tmp/o5.json"
code=$(curl -s -o "$tmp/e1" -w '%{http_code}' -F image=@"$tmp/anim.webp" -F mask_from_alpha=true "$url/v1/inpaint")
check "an animated WebP is 415 unsupported_image" sh -c "test $code = 415 && test \$($(declare -f errcode); PY=$PY errcode $tmp/e1) = unsupported_image"
grep -q animated "$tmp/e1" && ok "... and the message says animated" || bad "... and the message says animated"

# ---- the alpha channel as the mask ----
for m in coarse sim telea; do
  code=$(curl -s -o "$tmp/a_$m.png" -w '%{http_code}' -F image=@"$tmp/alpha.png" -F mask_from_alpha=true -F method=$m -F format=png "$url/v1/inpaint")
  check "mask_from_alpha, method=$m: 200" test "$code" = 200
  check "... the transparent pixels painted and opaque, every other pixel bit-exact (PNG)" "$PY" "$tmp/compare.py" "$tmp/alpha.png" "$tmp/a_$m.png"
done
code=$(curl -s -D "$tmp/h6" -o "$tmp/a.webp" -w '%{http_code}' -F image=@"$tmp/alpha.webp" -F mask_from_alpha=1 -F method=coarse -F quality=100 "$url/v1/inpaint")
check "a transparent lossless WebP with mask_from_alpha, quality=100: a WebP answer" sh -c "test $code = 200 && test '$(ctype "$tmp/h6")' = image/webp"
check "... lossless: every kept pixel bit-exact" "$PY" "$tmp/compare.py" "$tmp/alpha.webp" "$tmp/a.webp"
"$PY" -c "import base64,json,sys; print(json.dumps({'image': base64.b64encode(open(sys.argv[1],'rb').read()).decode(), 'mask_from_alpha': True, 'method': 'telea', 'format': 'png'}))" "$tmp/alpha.png" > "$tmp/req2.json"
curl -s -o "$tmp/o7.json" -H 'Content-Type: application/json' --data-binary @"$tmp/req2.json" "$url/v1/inpaint"
"$PY" -c "import base64,json,sys; open(sys.argv[2],'wb').write(base64.b64decode(json.load(open(sys.argv[1]))['image']))" "$tmp/o7.json" "$tmp/o7.png" || true
check "JSON mask_from_alpha: true, the same contract" "$PY" "$tmp/compare.py" "$tmp/alpha.png" "$tmp/o7.png"
expect() { # what status code curl-args...
  local what=$1 st=$2 want=$3; shift 3
  local c; c=$(curl -s -o "$tmp/e" -w '%{http_code}' "$@" "$url/v1/inpaint")
  if [ "$c" = "$st" ] && [ "$(errcode "$tmp/e")" = "$want" ]; then ok "$what: $st $want"; else bad "$what: got $c $(cat "$tmp/e")"; fi
}
expect "mask_from_alpha on an image without alpha" 422 no_alpha -F image=@"$tmp/photo.png" -F mask_from_alpha=true
expect "mask_from_alpha on an image without alpha (WebP)" 422 no_alpha -F image=@"$tmp/photo.webp" -F mask_from_alpha=true
expect "mask_from_alpha on an opaque RGBA image" 422 empty_mask -F image=@"$tmp/opaque.png" -F mask_from_alpha=true
expect "a mask and mask_from_alpha=true" 422 conflicting_fields -F image=@"$tmp/alpha.png" -F mask=@"$tmp/mask.png" -F mask_from_alpha=true
expect "neither a mask nor mask_from_alpha" 422 missing_field -F image=@"$tmp/alpha.png" -F mask_from_alpha=false
expect "format=gif" 422 invalid_field -F image=@"$tmp/photo.png" -F mask=@"$tmp/mask.png" -F format=gif
kill -TERM "$pid"; wait "$pid" || true; pid=""

# ---- semipaint inpaint --mask-from-alpha: the same path offline ----
C="$BUILD/semipaint"
if "$C" inpaint --image "$tmp/alpha.png" --mask-from-alpha --method telea --out "$tmp/cli.webp" --quality 100 > "$tmp/cli.log" 2>&1; then
  check "semipaint inpaint --mask-from-alpha writes a lossless WebP with the kept pixels bit-exact" "$PY" "$tmp/compare.py" "$tmp/alpha.png" "$tmp/cli.webp"
  check "... the same pixels as the daemon's telea answer" "$PY" -c "
import sys; from PIL import Image; a, b = Image.open(sys.argv[1]), Image.open(sys.argv[2]); assert list(a.getdata()) == list(b.getdata())" "$tmp/cli.webp" "$tmp/a_telea.png"
else
  bad "semipaint inpaint --mask-from-alpha: $(cat "$tmp/cli.log")"
fi
rc=0; "$C" inpaint --image "$tmp/photo.png" --mask-from-alpha --method telea --out "$tmp/x.png" > "$tmp/cli2.log" 2>&1 || rc=$?
check "semipaint inpaint --mask-from-alpha on an image without alpha fails (1) and says so" sh -c "test $rc = 1 && grep -q 'no alpha channel' '$tmp/cli2.log'"
rc=0; "$C" inpaint --image "$tmp/alpha.png" --mask "$tmp/mask.png" --mask-from-alpha --out "$tmp/x.png" > /dev/null 2>&1 || rc=$?
check "--mask with --mask-from-alpha is a usage error (2)" test "$rc" = 2

it_end
