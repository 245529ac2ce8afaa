#!/usr/bin/env bash
# run.sh: what `make run` does: semipaintd on port 8080 with the shipped weights and, when ../shared/data/celebahq256/train exists, a database built from it once (Sim-0 otherwise); also the general family's database from ../shared/data/general/train, once.
# Environment: PORT (8080), DATA (../shared/data), DB (build/db), DB_GENERAL (build/db-general),
# BUILD (build), PY (/usr/bin/python3), and any SEMIPAINT_<SECTION>_<KEY> override of config/semipaintd.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
PORT=${PORT:-8080}
DATA=${DATA:-../shared/data}
DB=${DB:-$BUILD/db}
DB_GENERAL=${DB_GENERAL:-$BUILD/db-general}
D="$BUILD/semipaintd"
# HTTP threads and the model share the cores: OpenMP workers must not spin between parallel regions.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
[ -x "$D" ] || { echo "run: $D is not built (make)" >&2; exit 1; }

# ---- weights: the shipped ones, or loudly untrained stand-ins ----
untrained=()
weight() { # file arch k -> prints the path to use
  local file=$1 arch=$2 k=$3
  if [ -f "weights/$file" ]; then echo "weights/$file"; return; fi
  local out="$BUILD/untrained/$file"
  if [ ! -f "$out" ]; then
    mkdir -p "$BUILD/untrained"
    echo "run: weights/$file is missing: exporting a RANDOM-INIT paper256 $arch as $out" >&2
    "$PY" training/export.py --arch "$arch" --config paper256 --k "$k" --seed 1 --out "$out" \
      --notes "untrained stand-in written by scripts/run.sh" >&2
  fi
  echo "$out"
}
export SEMIPAINT_MODEL_COARSE=${SEMIPAINT_MODEL_COARSE:-$(weight pconv.safetensors pconv_unet 1)}
export SEMIPAINT_MODEL_REFINE=${SEMIPAINT_MODEL_REFINE:-$(weight sim1.safetensors simk_unet 1)}
export SEMIPAINT_MODEL_REFINE_FALLBACK=${SEMIPAINT_MODEL_REFINE_FALLBACK:-$(weight sim0.safetensors simk_unet 0)}
for w in "$SEMIPAINT_MODEL_COARSE" "$SEMIPAINT_MODEL_REFINE" "$SEMIPAINT_MODEL_REFINE_FALLBACK"; do
  case "$w" in "$BUILD"/untrained/*) untrained+=("$w");; esac
done

# ---- database: built once from the CelebA-HQ training images, then reused ----
if [ -n "${SEMIPAINT_RETRIEVAL_DATABASE+set}" ]; then
  mode="retrieval.database from the environment: '${SEMIPAINT_RETRIEVAL_DATABASE}'"
elif [ -d "$DATA/celebahq256/train" ]; then
  if ! "$BUILD/semipaint" index info "$DB" > /dev/null 2>&1; then
    echo "run: building the retrieval database $DB from $DATA/celebahq256/train (once; later starts reuse it)" >&2
    "$BUILD/semipaint" index build --images "$DATA/celebahq256/train" --out "$DB" --force
  fi
  export SEMIPAINT_RETRIEVAL_DATABASE=$DB
  mode="Sim-1 with the database $DB"
else
  export SEMIPAINT_RETRIEVAL_DATABASE=
  mode="Sim-0: no $DATA/celebahq256/train to build a database from"
fi
# ---- the general family's database (`make db-general`): general/train at its working size, 128 ----
if [ -d "$DATA/general/train" ]; then
  if ! "$BUILD/semipaint" index info "$DB_GENERAL" > /dev/null 2>&1; then
    echo "run: building the general family's database $DB_GENERAL from $DATA/general/train at 128x128 (once)" >&2
    "$BUILD/semipaint" index build --images "$DATA/general/train" --out "$DB_GENERAL" --size 128 --force
  fi
else
  echo "run: no $DATA/general/train: the general family's database $DB_GENERAL is not built" >&2
fi
if ! "$BUILD/semipaint" index info "$DB_GENERAL" > /dev/null 2>&1; then
  export SEMIPAINT_FAMILIES_GENERAL_DATABASE=  # the general family runs Sim-0 without it
else
  export SEMIPAINT_FAMILIES_GENERAL_DATABASE=$DB_GENERAL
fi
export SEMIPAINT_SERVER_LISTEN=${SEMIPAINT_SERVER_LISTEN:-0.0.0.0:$PORT}
export SEMIPAINT_LOGGING_FORMAT=${SEMIPAINT_LOGGING_FORMAT:-text}
"$D" -c config/semipaintd.yaml --check-config > /dev/null

# ---- what to tell the user ----
img="photo.jpg"
[ -d "$DATA/celebahq256/val" ] && img=$(find "$DATA/celebahq256/val" -maxdepth 1 -name '*.jpg' | sort | head -n 1)
# an example mask (white = hole) of that image's size, 256x256: a bar across the eyes and a blot
mask="$BUILD/example-mask.png"
"$PY" - "$mask" <<'PYEOF'
import struct, sys, zlib
w = h = 256
hole = lambda x, y: (60 <= x < 196 and 100 <= y < 124) or (x - 170) ** 2 + (y - 190) ** 2 < 400
raw = b"".join(b"\0" + bytes(255 if hole(x, y) else 0 for x in range(w)) for y in range(h))
chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                              + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
PYEOF
if [ ${#untrained[@]} -gt 0 ]; then
  cat >&2 <<EOF

  ************************************************************************************
  *  WARNING: UNTRAINED WEIGHTS. These are random-init stand-ins, not trained models: *
EOF
  for w in "${untrained[@]}"; do printf '  *    %-76s  *\n' "$w" >&2; done
  cat >&2 <<EOF
  *  The service works end to end but its fills are noise. Ship weights/*.safetensors *
  *  (training/, issue 5) and start again.                                            *
  ************************************************************************************

EOF
fi
cat <<EOF
semipaintd on http://localhost:$PORT  ($mode)
  API:      http://localhost:$PORT/openapi.yaml     info: http://localhost:$PORT/v1/info
  try:      curl -F image=@$img -F mask=@$mask -o out.jpg http://localhost:$PORT/v1/inpaint
  stop:     Ctrl-C (drains in-flight requests, then exits)
EOF
exec "$D" -c config/semipaintd.yaml
