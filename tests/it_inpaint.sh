#!/usr/bin/env bash
# it_inpaint.sh: `semipaint inpaint` on files and folders with the small test networks: outputs, known pixels kept, masks matched by stem, each bad input named while the rest is done.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
SP=$BUILD/semipaint
FIX=tests/fixtures/small
[ -x "$SP" ] || { echo "SKIP: $SP not built"; exit 0; }
[ -f "$FIX/pconv_unet.safetensors" ] || { echo "SKIP: no $FIX"; exit 0; }
"$PY" -c 'import numpy, PIL' 2>/dev/null || { echo "SKIP: $PY lacks numpy/PIL"; exit 0; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export SEMIPAINT_MODEL_COARSE=$FIX/pconv_unet.safetensors SEMIPAINT_MODEL_REFINE=$FIX/simk_unet_k1.safetensors \
       SEMIPAINT_MODEL_REFINE_FALLBACK=$FIX/simk_unet_k0.safetensors SEMIPAINT_MODEL_CPU_THREADS=1
# the first family only, as tests/daemon.sh's first_family_only (tests/it_families.sh tests families)
export SEMIPAINT_MODEL_ROUTER= SEMIPAINT_FAMILIES_GENERAL_DATABASE=

mkdir "$tmp/img" "$tmp/mask"
"$PY" - "$tmp" <<'EOF'
import sys
import numpy as np
from PIL import Image
d = sys.argv[1]
rng = np.random.default_rng(1)
for name, (w, h), ext in (("a", (64, 64), "png"), ("b", (150, 90), "jpg"), ("c", (80, 120), "png"), ("d", (40, 40), "png")):
    yy, xx = np.mgrid[0:h, 0:w]
    im = np.stack([xx * 255 // w, yy * 255 // h, (xx * yy) % 256], -1).astype(np.uint8)
    Image.fromarray(im).save(f"{d}/img/{name}.{ext}", quality=95)
    m = np.zeros((h, w), np.uint8)
    m[h // 3:h // 2, w // 4:w // 2] = 255
    if name == "b":
        m[5:12, w - 30:w - 10] = 255  # a second region far away: two crops
    if name != "d":  # d has no mask
        Image.fromarray(m).save(f"{d}/mask/{name}.png")
Image.fromarray(np.zeros((10, 10), np.uint8)).save(f"{d}/mask/wrong.png")
EOF

echo "== usage errors (status 2)"
set +e
"$SP" inpaint --image "$tmp/img/a.png" > /dev/null 2>&1; [ $? -eq 2 ] || { echo "FAIL: missing --mask/--out not a usage error"; exit 1; }
"$SP" inpaint --image "$tmp/img" --mask "$tmp/mask/a.png" --out "$tmp/o" > /dev/null 2>&1; [ $? -eq 2 ] || { echo "FAIL: folder with file mask accepted"; exit 1; }
"$SP" inpaint --image "$tmp/img/a.png" --mask "$tmp/mask/a.png" --out "$tmp/o.bmp" 2> "$tmp/err" > /dev/null
[ $? -eq 2 ] && grep -q "o.bmp" "$tmp/err" || { echo "FAIL: bad output extension"; exit 1; }
"$SP" inpaint --image "$tmp/img/a.png" --mask "$tmp/mask/a.png" --out "$tmp/o.png" --method fancy > /dev/null 2>&1
[ $? -eq 2 ] || { echo "FAIL: unknown method accepted"; exit 1; }
echo "== a file whose mask has another size: status 1, both files named"
"$SP" inpaint --image "$tmp/img/a.png" --mask "$tmp/mask/wrong.png" --out "$tmp/o.png" --db none 2> "$tmp/err" > /dev/null
[ $? -eq 1 ] && grep -q "wrong.png is 10x10 but its image .*a.png is 64x64" "$tmp/err" || { echo "FAIL: size mismatch"; cat "$tmp/err"; exit 1; }
echo "== a database that is not there: status 1, and the hint"
"$SP" inpaint --image "$tmp/img/a.png" --mask "$tmp/mask/a.png" --out "$tmp/o.png" --db "$tmp/nodb" 2> "$tmp/err" > /dev/null
[ $? -eq 1 ] && grep -q "nodb" "$tmp/err" || { echo "FAIL: missing database"; cat "$tmp/err"; exit 1; }
set -e

echo "== one file, each method"
for m in sim coarse telea; do
  "$SP" inpaint --image "$tmp/img/a.png" --mask "$tmp/mask/a.png" --out "$tmp/a_$m.png" --method $m --db none > /dev/null
done
echo "== a folder: masks by stem, d has none (status 1, the others written)"
rc=0
"$SP" inpaint --image "$tmp/img" --mask "$tmp/mask" --out "$tmp/out" --db none > "$tmp/stdout" 2> "$tmp/err" || rc=$?
[ "$rc" -eq 1 ] && grep -q "d.png: no mask" "$tmp/err" && grep -q "inpainted 3 of 4 images" "$tmp/stdout" \
  || { echo "FAIL: folder run (rc $rc)"; cat "$tmp/stdout" "$tmp/err"; exit 1; }
"$SP" inpaint --image "$tmp/img" --mask "$tmp/mask" --out "$tmp/outpng" --format png --db none > /dev/null 2>&1 || true

"$PY" - "$tmp" <<'EOF'
import os, sys
import numpy as np
from PIL import Image
d = sys.argv[1]
def load(p): return np.asarray(Image.open(p).convert("RGB")).astype(int)
src, hole = load(f"{d}/img/a.png"), np.asarray(Image.open(f"{d}/mask/a.png")) > 127
outs = {m: load(f"{d}/a_{m}.png") for m in ("sim", "coarse", "telea")}
for m, o in outs.items():
    assert o.shape == src.shape, (m, o.shape)
    assert (o[~hole] == src[~hole]).all(), f"{m}: a known pixel changed"
    assert (o[hole] != src[hole]).any(), f"{m}: the hole was not painted"
assert (outs["sim"] != outs["coarse"]).any() and (outs["sim"] != outs["telea"]).any()
assert sorted(os.listdir(f"{d}/out")) == ["a.png", "b.jpg", "c.png"], os.listdir(f"{d}/out")
assert sorted(os.listdir(f"{d}/outpng")) == ["a.png", "b.png", "c.png"], os.listdir(f"{d}/outpng")
for n in ("a", "c"):
    o, s = load(f"{d}/outpng/{n}.png"), load(f"{d}/img/{n}.png")
    h = np.asarray(Image.open(f"{d}/mask/{n}.png")) > 127
    assert o.shape == s.shape and (o[~h] == s[~h]).all(), n
assert (load(f"{d}/outpng/a.png") == outs["sim"]).all(), "folder and file runs differ"
b, bs = load(f"{d}/outpng/b.png"), load(f"{d}/img/b.jpg")
bh = np.asarray(Image.open(f"{d}/mask/b.png")) > 127
assert b.shape == bs.shape and (b[~bh] == bs[~bh]).all(), "b: known pixels of a JPEG input changed in PNG output"
print("it_inpaint: outputs checked: sizes, known pixels bit-exact, holes painted, folder == file")
EOF
echo "it_inpaint: OK"
