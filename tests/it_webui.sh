#!/usr/bin/env bash
# it_webui.sh: the demo page at GET / in a real browser: Debian's headless chromium driven by playwright-core (tests/webui.mjs) against semipaintd on loopback; screenshot in $BUILD/tests/webui.png.
# Skips with a message when chromium, node or the npm tools (scripts/npm_deps.sh) are absent.
# Weights: the shipped weights/ with a small thumb16 database (so that neighbours show), else (or with WEBUI_SMALL=1)
# the small test fixtures (Sim-0). Two model families either way: the first (model.*) and "second", made by the
# environment from the same coarse and fallback weights without a database (Sim-0), for the Model selector.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
D="$BUILD/semipaintd"
CLI="$BUILD/semipaint"
DATA=${SEMIPAINT_DATA:-../shared/data}
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$D" ] && [ -x "$CLI" ] || { echo "it_webui: SKIP ($D or $CLI not built)"; exit 0; }
[ -x "$CHROMIUM" ] || { echo "it_webui: SKIP (no $CHROMIUM: apt-get install chromium)"; exit 0; }
command -v node >/dev/null || { echo "it_webui: SKIP (node is not installed)"; exit 0; }
bash scripts/npm_deps.sh || { echo "it_webui: SKIP (playwright-core could not be installed into .deps/npm)"; exit 0; }
export NPM_PREFIX=$PWD/.deps/npm

tmp=$(mktemp -d /tmp/it_webui.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

# ---- models and database ----
# the configuration's general family without its database and auto without the router: the page's
# families come from /v1/info, and auto's choice is then the first family
export SEMIPAINT_MODEL_ROUTER= SEMIPAINT_FAMILIES_GENERAL_DATABASE=
if [ "${WEBUI_SMALL:-0}" != 1 ] && [ -f weights/pconv.safetensors ] && [ -f weights/sim1.safetensors ] && [ -f weights/sim0.safetensors ]; then
  export SEMIPAINT_MODEL_COARSE=weights/pconv.safetensors
  export SEMIPAINT_MODEL_REFINE=weights/sim1.safetensors
  export SEMIPAINT_MODEL_REFINE_FALLBACK=weights/sim0.safetensors
  export SEMIPAINT_FAMILIES_SECOND_COARSE=weights/pconv.safetensors
  export SEMIPAINT_FAMILIES_SECOND_REFINE_FALLBACK=weights/sim0.safetensors
  mkdir -p "$tmp/images"
  if [ -d "$DATA/celebahq256/train" ]; then
    src="$DATA/celebahq256/train"
  else # a few distinct synthetic images, written with Python's standard library
    src="$tmp/images"
    "$PY" - "$src" <<'EOF'
import struct, sys, zlib
def png(path, w, h, px):
    raw = b"".join(b"\0" + bytes(px[y * w * 3:(y + 1) * w * 3]) for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
for i in range(8):
    png(f"{sys.argv[1]}/s{i}.png", 64, 64,
        [v for y in range(64) for x in range(64) for v in ((x * 4 + i * 40) % 256, (y * 4 + i * 25) % 256, ((x + y) * (i + 1)) % 256)])
EOF
  fi
  "$CLI" index build --images "$src" --out "$tmp/db" --limit 24 --descriptor thumb16 > "$tmp/index.log" 2>&1 ||
    { cat "$tmp/index.log"; echo "it_webui: FAIL (index build)"; exit 1; }
  export SEMIPAINT_RETRIEVAL_DATABASE=$tmp/db
  weights="shipped weights, a 24-image database; family second: Sim-0"
else
  FIX=tests/fixtures/small
  export SEMIPAINT_MODEL_COARSE=$FIX/pconv_unet.safetensors
  export SEMIPAINT_MODEL_REFINE=$FIX/simk_unet_k1.safetensors
  export SEMIPAINT_MODEL_REFINE_FALLBACK=$FIX/simk_unet_k0.safetensors
  export SEMIPAINT_RETRIEVAL_DATABASE=
  export SEMIPAINT_FAMILIES_SECOND_COARSE=$FIX/pconv_unet.safetensors
  export SEMIPAINT_FAMILIES_SECOND_REFINE_FALLBACK=$FIX/simk_unet_k0.safetensors
  weights="small test fixtures, Sim-0; family second: Sim-0"
fi
export SEMIPAINT_SERVER_LISTEN=127.0.0.1:0
export SEMIPAINT_MODEL_CPU_THREADS=1
export SEMIPAINT_SERVER_WEB_UI=true
export OMP_WAIT_POLICY=PASSIVE

# ---- the daemon ----
. tests/daemon.sh
start_daemon "$tmp/log" || { echo "it_webui: FAIL (the daemon did not start)"; exit 1; }
base=$url
echo "semipaintd on $base ($weights)"

# GET / must serve server/web/index.html as compiled in. Until the route is wired to srv_web_index(),
# the daemon says it has no page: the browser then gets the file through playwright, and we say so.
page_file=""
code=$(curl -s -o "$tmp/index.html" -w '%{http_code}' "$base/")
if [ "$code" = 200 ]; then
  cmp -s "$tmp/index.html" server/web/index.html || { echo "FAIL GET / is not server/web/index.html (rebuild?)"; exit 1; }
  echo "ok   GET / serves server/web/index.html byte for byte"
else
  echo "FAIL GET / answered $code: $(head -c 300 "$tmp/index.html")"
  exit 1
fi

image=""
[ -d "$DATA/celebahq256/val" ] && image=$(find "$DATA/celebahq256/val" -maxdepth 1 -name '*.jpg' | sort | sed -n 1p)
mkdir -p "$BUILD/tests"
rc=0
BASE_URL=$base IMAGE=$image SHOT="$BUILD/tests/webui.png" PAGE_FILE=$page_file timeout 180 node tests/webui.mjs || rc=$?
kill -TERM "$pid"
wait "$pid" || true
pid=""
if [ "$rc" -ne 0 ]; then
  echo "daemon log (last lines):"; tail -n 20 "$tmp/log"
  exit "$rc"
fi
echo "screenshot: $BUILD/tests/webui.png"
