#!/usr/bin/env bash
# bench_server.sh: semipaintd on loopback: /healthz rate (wrk), HTTP+decode+encode overhead of a 256x256 request (curl), the sustainable rate (closed loop) and overload at twice that rate (open loop: 503 shedding, p99 of accepted requests, RSS), both with build/loadgen.
# Environment: MODELS=small (test fixtures, default) or shipped (weights/ or build/untrained/ as `make run` uses),
# HEALTH_S (10), SUSTAIN_S (20), OVERLOAD_S (60), WARMUP_S (10, left out of the RSS spread), OVERHEAD_N (30),
# BUILD (build), PY (/usr/bin/python3). Model families (the cost of model=auto): FAMILIES=1 adds the general
# family (weights/general, Sim-0) beside the first; ROUTER=FILE sets model.router (auto then weighs every
# request); FACE=FILE sends that image (e.g. a CelebA-HQ val face) instead of the synthetic one, scaled to
# 256x256 with the same hole. Paired runs with and without ROUTER measure what the router costs.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
MODELS=${MODELS:-small}
HEALTH_S=${HEALTH_S:-10}
SUSTAIN_S=${SUSTAIN_S:-20}
OVERLOAD_S=${OVERLOAD_S:-60}
WARMUP_S=${WARMUP_S:-10}
OVERHEAD_N=${OVERHEAD_N:-30}
D="$BUILD/semipaintd"
# HTTP threads and the model share the cores: OpenMP workers must not spin between parallel regions.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
[ -x "$D" ] && [ -x "$BUILD/loadgen" ] || { echo "bench: $D or $BUILD/loadgen is not built (make)" >&2; exit 1; }
command -v wrk > /dev/null || bash scripts/deps.sh wrk

tmp=$(mktemp -d /tmp/bench_server.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

if [ "$MODELS" = small ]; then
  coarse=tests/fixtures/small/pconv_unet.safetensors; fallback=tests/fixtures/small/simk_unet_k0.safetensors
else
  # the shipped weights, else the untrained stand-ins that `make run` writes (in that order: ls
  # would sort build/ before weights/)
  coarse=""; fallback=""
  for d in weights "$BUILD/untrained"; do
    [ -z "$coarse" ] && [ -f "$d/pconv.safetensors" ] && [ -f "$d/sim0.safetensors" ] && { coarse=$d/pconv.safetensors; fallback=$d/sim0.safetensors; }
  done
  [ -n "$coarse" ] || { echo "bench: no shipped weights; run 'make run' once" >&2; exit 1; }
fi
queue=32
cat > "$tmp/bench.yaml" <<EOF
server: {listen: "127.0.0.1:0", http_threads: 2, request_timeout_ms: 10000, shutdown_grace_ms: 20000}
batching: {max_batch: 8, max_delay_ms: 5, queue_capacity: $queue}
model: {coarse: $coarse, refine_fallback: $fallback, router: "${ROUTER:-}"}
logging: {format: json}
EOF
if [ "${FAMILIES:-0}" = 1 ]; then
  printf 'families:\n  general: {coarse: weights/general/pconv.safetensors, refine_fallback: weights/general/sim0.safetensors}\n' \
    >> "$tmp/bench.yaml"
fi

# a 256x256 photo-like PNG and a mask with a 64x48 hole, as one multipart body
"$PY" - "$tmp" "${FACE:-}" <<'EOF'
import struct, sys, zlib, math
def png(w, h, ch, px):
    raw = b"".join(b"\0" + bytes(px[y * w * ch:(y + 1) * w * ch]) for y in range(h))
    def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, {1: 0, 3: 2}[ch], 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
d, n = sys.argv[1], 256
img = png(n, n, 3, [int(127 + 120 * math.sin(x / 9 + c) * math.cos(y / 13 - c)) for y in range(n) for x in range(n) for c in range(3)])
if len(sys.argv) > 2 and sys.argv[2]:  # FACE: a real photo instead, 256x256
    from PIL import Image
    im = Image.open(sys.argv[2]).convert("RGB").resize((n, n), Image.BICUBIC)
    img = png(n, n, 3, list(im.tobytes()))
mask = png(n, n, 1, [255 if 96 <= x < 160 and 100 <= y < 148 else 0 for y in range(n) for x in range(n)])
open(d + "/img.png", "wb").write(img); open(d + "/mask.png", "wb").write(mask)
b = b"semipaint-bench-boundary"
body = b"".join(b"--" + b + b'\r\nContent-Disposition: form-data; name="' + k + b'"; filename="f.png"\r\n\r\n' + v + b"\r\n"
                for k, v in ((b"image", img), (b"mask", mask))) + b"--" + b + b"--\r\n"
open(d + "/body", "wb").write(body)
EOF

"$D" -c "$tmp/bench.yaml" > "$tmp/log" 2>&1 &
pid=$!
port=""
for _ in $(seq 1 300); do
  port=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$tmp/log" | head -n 1); [ -n "$port" ] && break; sleep 0.1
done
url="http://127.0.0.1:$port"
for _ in $(seq 1 1200); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/readyz")" = 200 ] && break; sleep 0.1; done
echo "bench: semipaintd $(curl -s "$url/v1/info" | "$PY" -c 'import json,sys; j=json.load(sys.stdin); print(j["backend"], j["device"], "working size", j["working_size"], j["mode"], "families", [f["name"] for f in j.get("families", [])], "router", (j.get("router") or {}).get("file"))'), models=$MODELS ($coarse, $fallback), $(nproc) cores"

echo "== GET /healthz, wrk -t2 -c64 -d${HEALTH_S}s"
wrk -t2 -c64 -d"${HEALTH_S}s" --latency "$url/healthz" | grep -E "Requests/sec|Latency|99%"

# the same picture as a JPEG (the service itself converts it), for the photo-like case
curl -s -o "$tmp/img.jpg" -F image=@"$tmp/img.png" -F mask=@"$tmp/mask.png" -F method=telea -F format=jpeg "$url/v1/inpaint"
for fmt in png jpg; do
  echo "== overhead of a 256x256 ${fmt^^} request above the model ($OVERHEAD_N sequential requests, method coarse)"
  for _ in $(seq 1 3); do curl -s -o /dev/null -F image=@"$tmp/img.$fmt" -F mask=@"$tmp/mask.png" -F method=coarse "$url/v1/inpaint"; done
  for _ in $(seq 1 "$OVERHEAD_N"); do
    curl -s -o /dev/null -D "$tmp/h" -w '%{time_total}\n' -F image=@"$tmp/img.$fmt" -F mask=@"$tmp/mask.png" -F method=coarse "$url/v1/inpaint" > "$tmp/t"
    printf '%s %s\n' "$(cat "$tmp/t")" "$(grep -i '^Server-Timing:' "$tmp/h" | tr -d '\r')"
  done > "$tmp/overhead"
  "$PY" - "$tmp/overhead" <<'EOF2'
import re, statistics, sys
rows = []
for line in open(sys.argv[1]):
    t, rest = line.split(" ", 1)
    st = {k: float(v) for k, v in re.findall(r"(\w+);dur=([\d.]+)", rest)}
    model = sum(st.get(k, 0) for k in ("queue", "coarse", "descriptor", "search", "refine"))
    rows.append((float(t) * 1e3, model, st.get("decode", 0), st.get("encode", 0), st.get("total", 0)))
med = lambda xs: statistics.median(xs)
print(f"  client latency median {med(r[0] for r in rows):.2f} ms; model (queue+coarse+...) median {med(r[1] for r in rows):.2f} ms")
print(f"  overhead above the model: client side median {med(r[0] - r[1] for r in rows):.2f} ms, server side (total - model) "
      f"median {med(r[4] - r[1] for r in rows):.2f} ms [decode {med(r[2] for r in rows):.2f} ms, encode {med(r[3] for r in rows):.2f} ms]")
EOF2
done

ctype="multipart/form-data; boundary=semipaint-bench-boundary"
# The sustainable rate: as many connections back to back as the queue holds, so the executor is
# never idle (full batches) and nothing is shed: the throughput of a saturated server without 503s.
echo "== sustainable rate: closed loop, $queue connections (the queue's capacity) back to back for ${SUSTAIN_S}s"
"$BUILD/loadgen" --url "$url/v1/inpaint" --body "$tmp/body" --type "$ctype" --closed "$queue" --duration "$SUSTAIN_S" \
  --deadline-ms 10000 | tee "$tmp/sustain" | grep -v '^result'
rate=$(sed -n 's/^result .* ok_rate=\([0-9.]*\) .*/\1/p' "$tmp/sustain")

# Overload: an open loop sends at twice that rate whatever the answers (latency counts from each
# request's scheduled arrival), so the server has to shed the excess with 503s.
orate=$(awk "BEGIN{printf \"%.1f\", 2 * $rate}")
echo "== overload: open loop at 2x the sustainable rate ($orate req/s) for ${OVERLOAD_S}s, VmRSS every second"
base=$(grep -c '"route":"/v1/inpaint","status":200' "$tmp/log" || true)
"$BUILD/loadgen" --url "$url/v1/inpaint" --body "$tmp/body" --type "$ctype" --rate "$orate" --duration "$OVERLOAD_S" \
  --pid "$pid" --warmup "$WARMUP_S" --deadline-ms 10000 | tee "$tmp/overload" | grep -v '^result'
"$PY" - "$tmp/log" "$base" <<'EOF'
import json, sys
ms = []
for line in open(sys.argv[1]):
    if '"route":"/v1/inpaint"' in line and '"status":200' in line:
        ms.append(json.loads(line)["duration_ms"])
ms = sorted(ms[int(sys.argv[2]):])
if ms:
    print(f"  accepted requests (server side, 200): {len(ms)}, p50 {ms[len(ms) // 2]:.0f} ms, p99 {ms[int(0.99 * (len(ms) - 1))]:.0f} ms, max {ms[-1]:.0f} ms (deadline 10000 ms)")
EOF
curl -s "$url/metrics" | grep -E '^semipaint_rejected_total|^semipaint_http_requests_total\{route="/v1/inpaint"|^semipaint_inpaint_total' | sed 's/^/  /'
