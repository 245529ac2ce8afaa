#!/usr/bin/env bash
# it_hardening.sh: semipaintd against hostile clients on loopback: slow uploads (82 and 500), huge Telea images, a 120,000-key JSON body, what strangers see, the token file's mode.
# Every client loop here is bounded in count and time and targets 127.0.0.1/127.0.0.2 only.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
D="$BUILD/semipaintd"
FIX=tests/fixtures/small
[ -x "$D" ] || { echo "it_hardening: SKIP ($D not built)"; exit 0; }
[ -f "$FIX/pconv_unet.safetensors" ] || { echo "it_hardening: SKIP (no $FIX)"; exit 0; }

. tests/daemon.sh
it_begin it_hardening
stop_daemon() { kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=""; }

small_nets
export SEMIPAINT_SERVER_SHUTDOWN_GRACE_MS=2000

# ---- the token file: one that others may read stops the start, naming the file and the fix ----
printf 'hardening-token-0123456789\n' > "$tmp/token"
chmod 644 "$tmp/token"
rc=0
SEMIPAINT_SERVER_AUTH_TOKEN_FILE="$tmp/token" timeout 30 "$D" -c config/semipaintd.yaml > "$tmp/tok.log" 2>&1 || rc=$?
check "a token file others may read stops the start (status 1)" test "$rc" = 1
check "the message names the file, its mode and the fix" grep -q "$tmp/token has mode 0644: any user of the machine may read or change the token; refused (chmod 600" "$tmp/tok.log"
chmod 600 "$tmp/token"

# ---- slow uploads: 82 trickling from this address, then 500 from another ----
"$PY" tests/hostile.py png "$tmp/img.png" "$tmp/mask.png" 160 120
export SEMIPAINT_SERVER_REQUEST_TIMEOUT_MS=3000
SEMIPAINT_SERVER_AUTH_TOKEN_FILE="$tmp/token" SEMIPAINT_SERVER_IMAGES_REQUIRE_TOKEN=true \
  start_daemon "$tmp/d1.log" || { bad "the daemon did not start"; exit 1; }
info=$(curl -s "$url/v1/info")
check "/v1/info shows no directories" sh -c "! printf '%s' '$info' | grep -q -e '$FIX' -e '\"path\"'"
check "/v1/info names the weights file" sh -c "printf '%s' '$info' | grep -q '\"file\":\"pconv_unet.safetensors\"'"
check "GET /v1/images/{id} needs the token when images_require_token is set" \
  test "$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/images/0")" = 401
check "... and passes the auth check with it" \
  test "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer hardening-token-0123456789' "$url/v1/images/0")" = 404
if "$PY" tests/hostile.py slow --port "$port" --slow 82 --slow-from 127.0.0.1 --timeout-ms 3000 \
     --image "$tmp/img.png" --mask "$tmp/mask.png" > "$tmp/slow82.txt" 2>&1; then
  ok "82 slow uploads: normal requests answered 200 in time, slow ones 408 or closed ($(tail -n 1 "$tmp/slow82.txt"))"
else bad "82 slow uploads:"; cat "$tmp/slow82.txt"; fi
check "the 408s are counted" sh -c "curl -s '$url/metrics' | grep -q 'semipaint_rejected_total{reason=\"slow_body\"} [1-9]'"
if "$PY" tests/hostile.py slow --port "$port" --slow 500 --slow-from 127.0.0.2 --timeout-ms 3000 \
     --image "$tmp/img.png" --mask "$tmp/mask.png" > "$tmp/slow500.txt" 2>&1; then
  ok "500 slow uploads from another address (128 per client): $(tail -n 1 "$tmp/slow500.txt")"
else bad "500 slow uploads from another address:"; cat "$tmp/slow500.txt"; fi
stop_daemon
SEMIPAINT_SERVER_MAX_CONNECTIONS_PER_CLIENT=0 start_daemon "$tmp/d2.log" || { bad "the daemon did not start"; exit 1; }
if "$PY" tests/hostile.py slow --port "$port" --slow 500 --slow-from 127.0.0.1 --timeout-ms 3000 \
     --image "$tmp/img.png" --mask "$tmp/mask.png" > "$tmp/slow500b.txt" 2>&1; then
  ok "500 slow uploads from the same address, no per-client limit: $(tail -n 1 "$tmp/slow500b.txt")"
else bad "500 slow uploads from the same address:"; cat "$tmp/slow500b.txt"; fi

# ---- a 120,000-key JSON body: refused quickly ----
out=$("$PY" tests/hostile.py keys --port "$port" --keys 120000)
code=${out%% *}
check "a 120,000-key JSON body is refused with a 4xx ($out)" sh -c "case $code in 4??) true;; *) false;; esac"
stop_daemon

# ---- six concurrent 23-megapixel Telea requests: six HTTP answers, /healthz fast throughout ----
"$PY" tests/hostile.py png "$tmp/big.png" "$tmp/bigmask.png" 4800 4800 --checker 16
SEMIPAINT_SERVER_REQUEST_TIMEOUT_MS=20000 SEMIPAINT_SERVER_MAX_BODY_BYTES=64MiB \
  start_daemon "$tmp/d3.log" || { bad "the daemon did not start"; exit 1; }
if "$PY" tests/hostile.py telea --port "$port" --pid "$pid" --count 6 --image "$tmp/big.png" --mask "$tmp/bigmask.png" \
     --bound-config "$D" > "$tmp/telea.txt" 2>&1; then
  ok "six 23-megapixel telea requests: $(tail -n 1 "$tmp/telea.txt")"
else bad "six 23-megapixel telea requests:"; cat "$tmp/telea.txt"; fi
check "the daemon still answers an ordinary request" \
  test "$(curl -s -o /dev/null -w '%{http_code}' -F image=@"$tmp/img.png" -F mask=@"$tmp/mask.png" "$url/v1/inpaint")" = 200
stop_daemon

it_end
