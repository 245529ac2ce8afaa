#!/usr/bin/env bash
# it_families.sh: model families (issue 17) end to end: the shipped faces (256 px) and general (128 px) nets served by one daemon, `model` chosen by name or auto (with and without the router), X-Model and the JSON's model and routing, /v1/info, the metrics, a general database at 128 px (built by `index build --model general`) with ?model=, 422s, the CLI's --model giving the daemon's pixels, and `bench --model` / `index info --model` on the shipped families.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
D="$BUILD/semipaintd"
SP="$BUILD/semipaint"
FACES=../shared/data/celebahq256/val
GENERAL=../shared/data/general/val
W=weights
[ -x "$D" ] && [ -x "$SP" ] || { echo "it_families: SKIP (not built)"; exit 0; }
for f in "$W/pconv.safetensors" "$W/sim0.safetensors" "$W/general/pconv.safetensors" "$W/general/sim0.safetensors" \
         "$W/general/sim1.safetensors"; do
  [ -f "$f" ] || { echo "it_families: SKIP (no $f)"; exit 0; }
done
for d in "$FACES" "$GENERAL"; do [ -d "$d" ] || { echo "it_families: SKIP ($d is absent)"; exit 0; }; done

. tests/daemon.sh
it_begin it_families

# a face, a general photo of its own size, and masks of their sizes; a tiny general database at 128 px
faces=("$FACES"/*.jpg)
gens=("$GENERAL"/*.jpg)
cp "${faces[0]}" "$tmp/face.jpg"
cp "${gens[0]}" "$tmp/photo.jpg"
mkdir "$tmp/gtrain"
for f in "${gens[@]:1:6}"; do ln -s "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$tmp/gtrain/$(basename "$f")"; done
"$PY" - "$tmp" <<'EOF'
import sys
from PIL import Image, ImageDraw
d = sys.argv[1]
for name in ("face", "photo"):
    w, h = Image.open(f"{d}/{name}.jpg").size
    m = Image.new("L", (w, h), 0)
    ImageDraw.Draw(m).ellipse([w * 3 // 8, h * 3 // 8, w * 5 // 8, h * 5 // 8], fill=255)
    m.save(f"{d}/{name}_mask.png")
EOF
# the general family's database as `make db-general` would build it, but at $tmp/dbg: --model general takes the
# path, the size (its nets' 128 px) and the descriptor from the configuration
SEMIPAINT_FAMILIES_GENERAL_DATABASE=$tmp/dbg "$SP" index build --model general --images "$tmp/gtrain" --threads 1 \
  > "$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; bad "index build --model general"; it_end; }
check "index build --model general: the configured database at the general nets' 128 px" \
  grep -q "^built $tmp/dbg: 6 images (0 skipped) at 128x128, descriptor thumb16" "$tmp/build.log"

export SEMIPAINT_MODEL_COARSE=$W/pconv.safetensors
export SEMIPAINT_MODEL_REFINE=$W/sim1.safetensors
export SEMIPAINT_MODEL_REFINE_FALLBACK=$W/sim0.safetensors
export SEMIPAINT_RETRIEVAL_DATABASE=
export SEMIPAINT_MODEL_FAMILY=faces
export SEMIPAINT_FAMILIES_GENERAL_COARSE=$W/general/pconv.safetensors
export SEMIPAINT_FAMILIES_GENERAL_REFINE=$W/general/sim1.safetensors
export SEMIPAINT_FAMILIES_GENERAL_REFINE_FALLBACK=$W/general/sim0.safetensors
export SEMIPAINT_FAMILIES_GENERAL_DATABASE=$tmp/dbg
export SEMIPAINT_MODEL_ROUTER=
export SEMIPAINT_SERVER_LISTEN=127.0.0.1:0
export SEMIPAINT_MODEL_CPU_THREADS=1
export SEMIPAINT_BATCHING_MAX_BATCH=2
echo "token-for-it-families-0123456789" > "$tmp/token"
chmod 600 "$tmp/token"
export SEMIPAINT_SERVER_AUTH_TOKEN_FILE=$tmp/token

# ---- the CLI first (the daemon and the CLI do not share the cores) ----
"$SP" inpaint --image "$tmp/photo.jpg" --mask "$tmp/photo_mask.png" --out "$tmp/cli_general.png" --model general \
  > "$tmp/cli1.log" 2>&1 || cat "$tmp/cli1.log"
check "semipaint inpaint --model general runs and says so" grep -q "model general, networks" "$tmp/cli1.log"
rc=0; "$SP" inpaint --image "$tmp/photo.jpg" --mask "$tmp/photo_mask.png" --out "$tmp/x.png" --model nope > /dev/null 2> "$tmp/err" || rc=$?
check "semipaint inpaint --model nope: usage error naming the families" sh -c "test $rc = 2 && grep -q 'faces general' '$tmp/err'"
"$SP" index info --model general > "$tmp/info.txt" 2> "$tmp/err" || cat "$tmp/err"
check "semipaint index info --model general: the configured database ($tmp/dbg, 6 images at 128)" \
  sh -c "grep -q '^database    $tmp/dbg\$' '$tmp/info.txt' && grep -q '^images      6 (128x128 RGB' '$tmp/info.txt'"
for fam in general:128:general/pconv.safetensors:families.general.coarse faces:256:pconv.safetensors:model.coarse; do
  IFS=: read -r name size file key <<< "$fam"
  "$SP" bench --model "$name" --batch 1 --iters 1 --warmup 0 --threads 1 > "$tmp/bench_$name.log" 2>&1 || tail -3 "$tmp/bench_$name.log"
  check "semipaint bench --model $name: its nets at ${size} px, the files named" sh -c \
    "grep -q 'model family $name of config/semipaintd.yaml, ${size}x${size}' '$tmp/bench_$name.log' &&
     grep -q '^  coarse  *$W/$file ($key)\$' '$tmp/bench_$name.log' && grep -q '^pipeline0  *1 ' '$tmp/bench_$name.log'"
done
rc=0; "$SP" bench --model nope > /dev/null 2> "$tmp/err" || rc=$?
check "semipaint bench --model nope: usage error naming the families" sh -c "test $rc = 2 && grep -q 'it has: faces general' '$tmp/err'"
rc=0; "$SP" index build --model nope --images "$tmp/gtrain" > /dev/null 2> "$tmp/err" || rc=$?
check "semipaint index build --model nope: usage error naming the families" sh -c "test $rc = 2 && grep -q 'it has: faces general' '$tmp/err'"

# ---- the daemon ----
start_daemon "$tmp/log" || { bad "the daemon did not start"; it_end; }
post() { # post NAME IMAGE MASK [curl -F args...]: the answer into $tmp/NAME.out, headers into $tmp/NAME.h; prints the status
  local name=$1 img=$2 mask=$3; shift 3
  curl -s -D "$tmp/$name.h" -o "$tmp/$name.out" -w '%{http_code}' -F image=@"$img" -F mask=@"$mask" -F format=png "$@" "$url/v1/inpaint"
}
hdr() { tr -d '\r' < "$tmp/$1.h" | sed -n "s/^$2: //Ip"; }

curl -s "$url/v1/info" > "$tmp/info.json"
check "/v1/info lists faces (256, sim0) and general (128, sim1) and default_model auto" "$PY" - "$tmp/info.json" <<'EOF'
import json, sys
i = json.load(open(sys.argv[1]))
f = [(x["name"], x["working_size"], x["mode"]) for x in i["families"]]
sys.exit(not (f == [("faces", 256, "sim0"), ("general", 128, "sim1")] and i["default_model"] == "auto"
              and i["mode"] == "sim0" and i["families"][1]["database"]["size"] == 128))
EOF
check "/v1/info: the general nets carry telea_blend_image (Telea at the photo's resolution), non-increasing" "$PY" - "$tmp/info.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))["families"][1]["models"]
t = [m[k].get("telea_blend_image") for k in ("coarse", "refine")]
sys.exit(not all(x and 1 <= len(x) <= 64 and all(0 <= v <= 1 for v in x) and x == sorted(x, reverse=True) for x in t))
EOF
check "model=general: 200" test "$(post g "$tmp/photo.jpg" "$tmp/photo_mask.png" -F model=general)" = 200
check "model=general: X-Model general, X-Inpaint-Method sim" sh -c "test '$(hdr g X-Model)' = general && test '$(hdr g X-Inpaint-Method)' = sim"
check "model=general: X-Neighbors names the general database's rows ($(hdr g X-Neighbors))" sh -c "echo '$(hdr g X-Neighbors)' | grep -Eq '^[0-5]:'"
check "the daemon and semipaint inpaint --model general give the same pixels" cmp -s "$tmp/g.out" "$tmp/cli_general.png"
code=$(post f "$tmp/face.jpg" "$tmp/face_mask.png" -F model=faces)
check "model=faces: 200, X-Model faces" sh -c "test $code = 200 && test '$(hdr f X-Model)' = faces"
code=$(post f2 "$tmp/photo.jpg" "$tmp/photo_mask.png" -F model=faces)
check "model=general and model=faces differ on the same photo" sh -c "test $code = 200 && ! cmp -s '$tmp/g.out' '$tmp/f2.out'"
code=$(post a "$tmp/photo.jpg" "$tmp/photo_mask.png")
check "no model, no router: auto serves the first family ($(hdr a X-Model))" sh -c "test $code = 200 && test '$(hdr a X-Model)' = faces"
check "kept pixels are bit-exact with model=general" "$PY" - "$tmp" <<'EOF'
import sys
from PIL import Image
d = sys.argv[1]
a = Image.open(f"{d}/photo.jpg").convert("RGB"); b = Image.open(f"{d}/g.out").convert("RGB"); m = Image.open(f"{d}/photo_mask.png").convert("L")
pa, pb, pm = a.load(), b.load(), m.load()
w, h = a.size
bad = sum(1 for y in range(h) for x in range(w) if pm[x, y] <= 127 and pa[x, y] != pb[x, y])
sys.exit(bad != 0)
EOF
code=$(post u "$tmp/photo.jpg" "$tmp/photo_mask.png" -F model=nope)
check "an unknown model is 422 unknown_model naming the families" sh -c "test $code = 422 && grep -q unknown_model '$tmp/u.out' && grep -q 'auto, faces, general' '$tmp/u.out'"
code=$(post u2 "$tmp/photo.jpg" "$tmp/photo_mask.png" -F model=Faces)
check "a malformed model is 422 invalid_field" sh -c "test $code = 422 && grep -q invalid_field '$tmp/u2.out'"
code=$(post u3 "$tmp/photo.jpg" "$tmp/photo_mask.png" -F reference_id=1)
check "reference_id with auto: the first family serves it (422 for Sim-0 faces: no_references_for_sim0)" sh -c "test $code = 422 && grep -q no_references_for_sim0 '$tmp/u3.out'"
code=$(post r "$tmp/photo.jpg" "$tmp/photo_mask.png" -F model=general -F reference_id=2)
check "reference_id with model=general reads the general database (X-Neighbors 2:1.0000)" sh -c "test $code = 200 && test '$(hdr r X-Neighbors)' = '2:1.0000'"

# JSON: model in, model and routing out
"$PY" - "$tmp" > "$tmp/body.json" <<'EOF'
import base64, json, sys
d = sys.argv[1]
b = lambda p: base64.b64encode(open(p, "rb").read()).decode()
print(json.dumps({"image": b(d + "/photo.jpg"), "mask": b(d + "/photo_mask.png"), "format": "png", "model": "general"}))
EOF
code=$(curl -s -o "$tmp/ans.json" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @"$tmp/body.json" "$url/v1/inpaint")
check "JSON model=general: 200 with model general, routing named, and the multipart answer's pixels" "$PY" - "$tmp" "$code" <<'EOF'
import base64, json, sys
d, code = sys.argv[1], sys.argv[2]
a = json.load(open(d + "/ans.json"))
ok = code == "200" and a["model"] == "general" and a["routing"]["requested"] == "named" and a["routing"]["p_nets"] is None
sys.exit(not (ok and base64.b64decode(a["image"]) == open(d + "/g.out", "rb").read()))
EOF

# the database routes take ?model=
T=$(cat "$tmp/token")
code=$(curl -s -o "$tmp/add.json" -w '%{http_code}' -H "Authorization: Bearer $T" -F image=@"$tmp/photo.jpg" "$url/v1/index/images?model=general")
check "POST /v1/index/images?model=general adds to the general database (7 images)" sh -c "test $code = 200 && grep -q '\"count\":7' '$tmp/add.json' && grep -q '\"model\":\"general\"' '$tmp/add.json'"
code=$(curl -s -o "$tmp/add2.json" -w '%{http_code}' -H "Authorization: Bearer $T" -F image=@"$tmp/photo.jpg" "$url/v1/index/images")
check "POST /v1/index/images without model: the first family, which has no database: 422 no_database" sh -c "test $code = 422 && grep -q no_database '$tmp/add2.json'"
code=$(curl -s -o "$tmp/img6.jpg" -w '%{http_code}' "$url/v1/images/6?model=general")
check "GET /v1/images/6?model=general: the added image at 128x128" sh -c "test $code = 200 && $PY -c \"from PIL import Image; import sys; sys.exit(Image.open('$tmp/img6.jpg').size != (128, 128))\""
code=$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/images/0?model=nope")
check "GET /v1/images/0?model=nope: 422" test "$code" = 422

# both families at once: every request answered, each by its family
jobs_=()
for i in 1 2 3; do
  post c$i "$tmp/photo.jpg" "$tmp/photo_mask.png" -F model=general > "$tmp/c$i.code" &
  jobs_+=($!)
  post d$i "$tmp/face.jpg" "$tmp/face_mask.png" -F model=faces > "$tmp/d$i.code" &
  jobs_+=($!)
done
wait "${jobs_[@]}" # not the daemon
allok=1
for i in 1 2 3; do
  [ "$(cat "$tmp/c$i.code")" = 200 ] && [ "$(hdr c$i X-Model)" = general ] && cmp -s "$tmp/c$i.out" "$tmp/g.out" || allok=0
  [ "$(cat "$tmp/d$i.code")" = 200 ] && [ "$(hdr d$i X-Model)" = faces ] || allok=0
done
check "six concurrent requests to both families: each 200 from its family, general's pixels unchanged" test $allok = 1

curl -s "$url/metrics" > "$tmp/metrics.txt"
check "metrics: semipaint_inpaint_total by model, method and requested" sh -c "grep -q '^semipaint_inpaint_total{model=\"general\",method=\"sim\",requested=\"named\"} [1-9]' '$tmp/metrics.txt' && grep -q '^semipaint_inpaint_total{model=\"faces\",method=\"sim\",requested=\"auto\"} 1' '$tmp/metrics.txt'"
check "metrics: semipaint_index_images per family" sh -c "grep -q '^semipaint_index_images{model=\"general\"} 7' '$tmp/metrics.txt' && grep -q '^semipaint_index_images{model=\"faces\"} 0' '$tmp/metrics.txt'"
code=$(curl -s -o "$tmp/rl.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $T" "$url/v1/admin/reload")
check "POST /v1/admin/reload reloads the general family's database (count 7)" sh -c "test $code = 200 && grep -q '\"count\":7' '$tmp/rl.json'"
check "the log names both families at start" sh -c "grep -q 'model family faces' '$tmp/log' && grep -q 'model family general' '$tmp/log'"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""

# ---- auto with the router: a face goes to faces, a general photo to general ----
if [ -f "$W/router.safetensors" ]; then
  export SEMIPAINT_MODEL_ROUTER=$W/router.safetensors
  start_daemon "$tmp/log2" || { bad "the daemon with the router did not start"; it_end; }
  post ra "$tmp/face.jpg" "$tmp/face_mask.png" -F model=auto > /dev/null
  post rb "$tmp/photo.jpg" "$tmp/photo_mask.png" > /dev/null
  check "router: the CelebA face goes to faces ($(hdr ra X-Model))" test "$(hdr ra X-Model)" = faces
  check "router: the general photo goes to general ($(hdr rb X-Model), $(hdr rb X-Inpaint-Method))" test "$(hdr rb X-Model)" = general
  curl -s -o "$tmp/ra.json" -H 'Content-Type: application/json' --data-binary @"$tmp/body.json" "$url/v1/inpaint" > /dev/null
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""
else
  echo "skip the router checks: no $W/router.safetensors"
fi
it_end
