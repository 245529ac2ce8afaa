#!/usr/bin/env bash
# it_route.sh: `semipaint route` on real photographs: CelebA-HQ faces go to the faces family and general photographs to the general one, the table and the --dump JSON lines (what training/fit_router.py reads) have their fields, and bad input is refused with the right exit status.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
SP=$BUILD/semipaint
DATA=${SEMIPAINT_DATA:-../shared/data}
R=weights/router.safetensors
[ -x "$SP" ] || { echo "it_route: SKIP ($SP not built)"; exit 0; }
[ -f "$R" ] || { echo "it_route: SKIP ($R absent: training/fit_router.py writes it)"; exit 0; }
for d in "$DATA/celebahq256/val" "$DATA/general/val" "$DATA/masks/nvidia-irregular-test"; do
  [ -d "$d" ] || { echo "it_route: SKIP ($d absent)"; exit 0; }
done
"$PY" -c 'import PIL, numpy' 2> /dev/null || { echo "it_route: SKIP (no PIL and numpy in $PY)"; exit 0; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
passes=0
ok() { echo "ok   $*"; passes=$((passes + 1)); }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }

# six faces and six general photographs (of their own sizes), each with an NVIDIA mask of a small
# hole ratio scaled to its size, as fit_router.py's validation does
mkdir -p "$tmp/img" "$tmp/mask"
faces=("$DATA"/celebahq256/val/*.jpg)
gens=("$DATA"/general/val/*.jpg)
pick_f=() pick_g=()
for i in 0 80 160 240 320 400; do pick_f+=("${faces[$i]}"); done
for i in 0 130 260 390 520 650; do pick_g+=("${gens[$i]}"); done
for f in "${pick_f[@]}" "${pick_g[@]}"; do ln -s "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$tmp/img/"; done
"$PY" - "$tmp" "$DATA/masks/nvidia-irregular-test" <<'EOF'
import os, sys
import numpy as np
from PIL import Image
tmp, masks = sys.argv[1], sys.argv[2]
m = Image.open(os.path.join(masks, sorted(os.listdir(masks))[100])).convert("L")
for f in sorted(os.listdir(os.path.join(tmp, "img"))):
    w, h = Image.open(os.path.join(tmp, "img", f)).size
    a = (np.asarray(m.resize((w, h), Image.BOX)) > 127).astype(np.uint8) * 255
    Image.fromarray(a).save(os.path.join(tmp, "mask", os.path.splitext(f)[0] + ".png"))
    if f == sorted(os.listdir(os.path.join(tmp, "img")))[0]:  # a mask of another size
        Image.fromarray(a[:, : w // 2]).save(os.path.join(tmp, "wrong.png"))
EOF

# the table: one line per image; at least 5 of 6 faces to faces and 5 of 6 general photographs to
# general (the router's val error is about 2% each way; a refit may move one)
if "$SP" route --image "$tmp/img" --mask "$tmp/mask" > "$tmp/out" 2> "$tmp/err"; then ok "route on a folder: exit 0"
else bad "route on a folder: exit $? ($(head -3 "$tmp/err"))"; fi
cat "$tmp/out"
head -1 "$tmp/out" | grep -q '^image .*faces .*general .*family .*gate .*use$' && ok "header line" || bad "header: $(head -1 "$tmp/out")"
nf=0 ng=0
for f in "${pick_f[@]}"; do grep -q "^$(basename "$f") .* faces .* \(nets\|telea\)$" "$tmp/out" && nf=$((nf + 1)); done
for f in "${pick_g[@]}"; do grep -q "^$(basename "$f") .* general .* \(nets\|telea\)$" "$tmp/out" && ng=$((ng + 1)); done
[ $nf -ge 5 ] && ok "$nf of 6 faces -> faces" || bad "only $nf of 6 faces routed to faces"
[ $ng -ge 5 ] && ok "$ng of 6 general photographs -> general" || bad "only $ng of 6 general photographs routed to general"
grep -q "^routed 12 of 12 images: [0-9]* to faces, [0-9]* to general; nets for [0-9]*, telea for [0-9]*; 0 failed$" "$tmp/out" &&
  ok "summary line" || bad "summary: $(grep '^routed' "$tmp/out")"
grep -q "^per image: prepare [0-9.]* ms, domain [0-9.]* ms, gate [0-9.]* ms$" "$tmp/out" && ok "timing line" || bad "no timing line"

# one file, and --size
if "$SP" route --image "${faces[0]}" --mask "$tmp/mask/$(basename "${faces[0]}" .jpg).png" --size 128 > "$tmp/one" 2>&1 &&
  grep -q "^$(basename "${faces[0]}") .* faces " "$tmp/one"; then ok "one file with --size 128"; else bad "one file: $(cat "$tmp/one")"; fi

# the dump: one JSON object per image, with the features the fit reads
if "$SP" route --image "$tmp/img" --mask "$tmp/mask" --dump "$tmp/d.jsonl" > "$tmp/out" 2>&1; then ok "--dump: exit 0"
else bad "--dump: exit $?"; fi
"$PY" - "$tmp/d.jsonl" <<'EOF' && ok "--dump lines have their fields" || bad "--dump lines"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 12, len(lines)
for o in lines:
    for k in ("image", "mask", "w", "h", "holes", "domain_size", "domain_crops", "domain", "domain_holes", "p", "class",
              "size", "crops", "gate", "gate_p", "nets"):
        assert k in o, (k, o.keys())
    assert o["domain_size"] == 256 and len(o["domain"]) == o["domain_crops"] == len(o["domain_holes"])
    assert all(len(f) == 456 for f in o["domain"])
    assert set(o["gate"]) == {"faces", "general"} and all(len(v) == 8 for v in o["gate"].values())
    assert abs(sum(o["p"]) - 1) < 1e-5 and o["class"] in ("faces", "general")
EOF
if "$SP" route --image "$tmp/img" --mask "$tmp/mask" --router none --dump "$tmp/n.jsonl" > /dev/null 2>&1 &&
  "$PY" -c "import json,sys; o=[json.loads(l) for l in open('$tmp/n.jsonl')]; assert len(o)==12 and all('p' not in x and len(x['domain'][0])==456 for x in o)"; then
  ok "--router none --dump: the domain features only"
else bad "--router none --dump"; fi

# refusals
"$SP" route --image "${faces[0]}" --mask "$tmp/wrong.png" > /dev/null 2> "$tmp/err"
rc=$?
[ $rc -eq 1 ] && grep -q "wrong.png is .* but its image" "$tmp/err" && ok "a mask of another size: exit 1, named" || bad "wrong mask: exit $rc, $(cat "$tmp/err")"
"$SP" route --image "$tmp/img" --mask "$tmp/mask" --router none > /dev/null 2> "$tmp/err"
[ $? -eq 2 ] && grep -q "needs --dump" "$tmp/err" && ok "--router none without --dump: usage error" || bad "--router none without --dump"
"$SP" route --image "$tmp/img" --mask "$tmp/mask" --router "$tmp/none.safetensors" > /dev/null 2> "$tmp/err"
[ $? -eq 1 ] && grep -q "$tmp/none.safetensors" "$tmp/err" && ok "a missing router: exit 1, named" || bad "missing router: $(cat "$tmp/err")"
"$SP" route --image "$tmp/img" --mask "${faces[0]}" > /dev/null 2> "$tmp/err"
[ $? -eq 2 ] && ok "a folder with a file: usage error" || bad "folder with file"

echo "it_route: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
