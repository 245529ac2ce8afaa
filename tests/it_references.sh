#!/usr/bin/env bash
# it_references.sh: caller-supplied references (issue 18) with the shipped nets and a 6-image database: `reference` / `reference_id` change the Sim-1 answer, X-Neighbors and the JSON say what was used, the errors, and the CLI gives the daemon's pixels.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
D="$BUILD/semipaintd"
SP="$BUILD/semipaint"
VAL=../shared/data/celebahq256/val
TRAIN=../shared/data/celebahq256/train
W=weights
[ -x "$D" ] && [ -x "$SP" ] || { echo "it_references: SKIP (not built)"; exit 0; }
for f in "$W/pconv.safetensors" "$W/sim0.safetensors" "$W/sim1.safetensors"; do
  [ -f "$f" ] || { echo "it_references: SKIP (no $f)"; exit 0; }
done
for d in "$VAL" "$TRAIN"; do [ -d "$d" ] || { echo "it_references: SKIP ($d is absent)"; exit 0; }; done

. tests/daemon.sh
it_begin it_references

mkdir "$tmp/train"
# globs, not `ls | head`: under pipefail a pipe cut short by head can fail the whole line
train_files=("$TRAIN"/*.jpg)
for f in "${train_files[@]:0:6}"; do ln -s "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$tmp/train/$(basename "$f")"; done
"$SP" index build --images "$tmp/train" --out "$tmp/db" --descriptor thumb16 --threads 1 > "$tmp/build.log" 2>&1 ||
  { cat "$tmp/build.log"; echo "it_references: the database build failed"; exit 1; }
val_files=("$VAL"/*.jpg)
face=$(basename "${val_files[0]}")
other=$(basename "${val_files[1]}")
cp "$VAL/$face" "$tmp/img.jpg"
cp "$VAL/$other" "$tmp/other.jpg"
# a square hole over the middle of the face; the face itself (a 256x256 JPEG) is the true reference
"$PY" - "$tmp" <<'EOF'
import struct, sys, zlib
def png(path, w, h, px):
    raw = b"".join(b"\0" + bytes(px[y * w:(y + 1) * w]) for y in range(h))
    def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
png(sys.argv[1] + "/mask.png", 256, 256, [255 if 80 <= x < 176 and 90 <= y < 186 else 0 for y in range(256) for x in range(256)])
EOF

first_family_only
export SEMIPAINT_MODEL_COARSE=$W/pconv.safetensors
export SEMIPAINT_MODEL_REFINE=$W/sim1.safetensors
export SEMIPAINT_MODEL_REFINE_FALLBACK=$W/sim0.safetensors
export SEMIPAINT_RETRIEVAL_DATABASE=$tmp/db
export SEMIPAINT_SERVER_LISTEN=127.0.0.1:0
export SEMIPAINT_MODEL_CPU_THREADS=1
export SEMIPAINT_BATCHING_MAX_BATCH=2

# ---- the CLI (before the daemon: the two do not share the cores) ----
"$SP" inpaint --image "$tmp/img.jpg" --mask "$tmp/mask.png" --out "$tmp/cli_ref.png" --reference "$tmp/other.jpg" > "$tmp/cli1.log" 2>&1 || cat "$tmp/cli1.log"
check "semipaint inpaint --reference FILE runs" test -s "$tmp/cli_ref.png"
"$SP" inpaint --image "$tmp/img.jpg" --mask "$tmp/mask.png" --out "$tmp/cli_id.png" --reference-id 4 > "$tmp/cli2.log" 2>&1 || cat "$tmp/cli2.log"
check "semipaint inpaint --reference-id N runs" test -s "$tmp/cli_id.png"
rc=0; "$SP" inpaint --image "$tmp/img.jpg" --mask "$tmp/mask.png" --out "$tmp/x.png" --reference "$tmp/other.jpg" --db none > /dev/null 2> "$tmp/err" || rc=$?
check "the CLI refuses references with Sim-0 (status 1, says why)" sh -c "test $rc = 1 && grep -q 'Sim-0' '$tmp/err'"
rc=0; "$SP" inpaint --image "$tmp/img.jpg" --mask "$tmp/mask.png" --out "$tmp/x.png" --reference "$tmp/other.jpg" --reference-id 1 > /dev/null 2>&1 || rc=$?
check "--reference and --reference-id together are a usage error" test "$rc" = 2
rc=0; "$SP" inpaint --image "$tmp/img.jpg" --mask "$tmp/mask.png" --out "$tmp/x.png" --reference-id 99 > /dev/null 2> "$tmp/err" || rc=$?
check "the CLI names a reference id the database lacks" sh -c "test $rc = 1 && grep -q 'no image 99' '$tmp/err'"

# ---- the daemon ----
start_daemon "$tmp/log" || { bad "the daemon did not start"; exit 1; }
post() { # post NAME [curl -F args...]: the PNG into $tmp/NAME.png, headers into $tmp/NAME.h; prints the status
  local name=$1; shift
  curl -s -D "$tmp/$name.h" -o "$tmp/$name.png" -w '%{http_code}' -F image=@"$tmp/img.jpg" -F mask=@"$tmp/mask.png" -F format=png "$@" "$url/v1/inpaint"
}
nbh() { tr -d '\r' < "$tmp/$1.h" | sed -n 's/^[Xx]-[Nn]eighbors: //p'; }

check "retrieval: 200" test "$(post plain)" = 200
plain_nb=$(nbh plain)
check "retrieval: X-Neighbors names a database id and its score ($plain_nb)" sh -c "echo '$plain_nb' | grep -Eq '^[0-5]:0?[.0-9]+$'"
check "reference upload: 200" test "$(post up -F reference=@"$tmp/img.jpg")" = 200
check "reference upload: X-Neighbors upload0:1.0000 ($(nbh up))" test "$(nbh up)" = "upload0:1.0000"
check "the reference changes the Sim-1 answer" sh -c "! cmp -s '$tmp/plain.png' '$tmp/up.png'"
check "reference_id: 200" test "$(post id -F reference_id=4)" = 200
check "reference_id: X-Neighbors 4:1.0000 ($(nbh id))" test "$(nbh id)" = "4:1.0000"
check "the daemon and the CLI give the same pixels with --reference-id" cmp -s "$tmp/id.png" "$tmp/cli_id.png"
check "reference other face: 200" test "$(post oth -F reference=@"$tmp/other.jpg")" = 200
check "the daemon and the CLI give the same pixels with --reference FILE" cmp -s "$tmp/oth.png" "$tmp/cli_ref.png"

code=$(post e1 -F reference_id=99)
check "an unknown reference_id is 422 unknown_reference" sh -c "test $code = 422 && grep -q unknown_reference '$tmp/e1.png'"
code=$(post e2 -F reference=@"$tmp/img.jpg" -F reference=@"$tmp/other.jpg")
check "two references for Sim-1 are 422 too_many_references" sh -c "test $code = 422 && grep -q too_many_references '$tmp/e2.png'"
code=$(post e3 -F reference_id=1 -F method=coarse)
check "a reference with method coarse is 422 conflicting_fields" sh -c "test $code = 422 && grep -q conflicting_fields '$tmp/e3.png'"
code=$(post e4 -F reference=@"$tmp/img.jpg" -F reference_id=1)
check "reference and reference_id together are 422 conflicting_fields" sh -c "test $code = 422 && grep -q conflicting_fields '$tmp/e4.png'"

# the JSON form: "reference" an array of base64 images, the answer's neighbors say their source
"$PY" - "$tmp" > "$tmp/body.json" <<'EOF'
import base64, json, sys
d = sys.argv[1]
b = lambda p: base64.b64encode(open(p, "rb").read()).decode()
print(json.dumps({"image": b(d + "/img.jpg"), "mask": b(d + "/mask.png"), "format": "png", "reference": [b(d + "/other.jpg")]}))
EOF
code=$(curl -s -o "$tmp/ans.json" -w '%{http_code}' -H 'Content-Type: application/json' -H 'Accept: application/json' --data-binary @"$tmp/body.json" "$url/v1/inpaint")
check "JSON with a reference: 200" test "$code" = 200
check "JSON: neighbors [{id: null, source: reference}] and the multipart answer's pixels" "$PY" - "$tmp" <<'EOF'
import base64, json, sys
d = sys.argv[1]
a = json.load(open(d + "/ans.json"))
nb = a["neighbors"]
ok = len(nb) == 1 and nb[0]["id"] is None and nb[0]["source"] == "reference" and nb[0]["reference"] == 0
sys.exit(not (ok and base64.b64decode(a["image"]) == open(d + "/oth.png", "rb").read()))
EOF
printf '{"image":"AA==","mask":"AA==","reference_id":[1,2,3,4,5,6,7,8,9]}' > "$tmp/many.json"
code=$(curl -s -o "$tmp/many.out" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @"$tmp/many.json" "$url/v1/inpaint")
check "JSON: more than 8 reference_id items are 422 too_many_references" sh -c "test $code = 422 && grep -q too_many_references '$tmp/many.out'"

kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""
it_end
