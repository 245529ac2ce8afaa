#!/usr/bin/env bash
# image_test.sh: `make image-test`: builds the CPU image from the Dockerfile with Debian's Buildah (no BuildKit, no registry), runs semipaintd inside it and checks /readyz, every model family and one inpaint request.
#
# The base image is a Debian 12 (bookworm) minbase root file system made with debootstrap from the
# Debian mirror, cached in .deps/image-test/rootfs and imported as localhost/semipaint-base:bookworm;
# it stands in for both debian:12 and debian:12-slim (--build-arg BUILD_BASE/BASE). Buildah keeps
# its images in .deps/image-test/storage (vfs driver, chroot isolation: no kernel overlay, no
# namespaces needed) with --layers, so a second run reuses the layers of the first. The daemon runs
# with `buildah run` (chroot isolation: the host's network) on 127.0.0.1 and a port the kernel picks.
# Everything is bounded in time; the working containers are removed at exit, the cache is kept
# (about 12 GB for one build; each run whose sources changed adds its layers, about 3.5 GB:
# rm -rf .deps/image-test reclaims it). Needs root (buildah, debootstrap) and the Debian mirror.
#
# Environment: IMAGE_TEST_DIR (cache, default .deps/image-test), IMAGE_TEST_MIRROR (default
# http://deb.debian.org/debian), IMAGE_TEST_BUILD_TIMEOUT (seconds, default 5400),
# IMAGE_TEST_READY_TIMEOUT (seconds, default 180).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${IMAGE_TEST_DIR:-.deps/image-test}
mirror=${IMAGE_TEST_MIRROR:-http://deb.debian.org/debian}
build_timeout=${IMAGE_TEST_BUILD_TIMEOUT:-5400}
ready_timeout=${IMAGE_TEST_READY_TIMEOUT:-180}
base_img=localhost/semipaint-base:bookworm
img=localhost/semipaint:image-test
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
bh=(buildah --root "$dir/storage" --runroot "$dir/run" --storage-driver vfs)
export BUILDAH_ISOLATION=chroot

T0=$(date +%s)
ts=$T0
times=()
step() { # name: ends the previous step's timing, starts this one
  local now; now=$(date +%s)
  [ -n "${cur:-}" ] && { times+=("$(printf '%-34s %5d s' "$cur" $((now - ts)))"); echo "image-test: $cur: $((now - ts)) s"; }
  cur=$1; ts=$now
  [ -n "$cur" ] && echo "image-test: == $cur"
  return 0
}
tmp=$(mktemp -d /tmp/image_test.XXXXXX)
ctr=""
run_pid=""
descendants() { local c; for c in $(pgrep -P "$1" 2>/dev/null || true); do descendants "$c"; echo "$c"; done; }
run_rc=""
stop_daemon() { # SIGTERM to semipaintd (`buildah run` then exits with its status), SIGKILL to all after 20 s
  [ -n "$run_pid" ] || return 0
  local p pids d=""
  pids="$(descendants "$run_pid")"
  for p in $pids; do [ "$(cat "/proc/$p/comm" 2>/dev/null)" = semipaintd ] && d="$d $p"; done
  # shellcheck disable=SC2086
  kill -TERM ${d:-$pids $run_pid} 2>/dev/null || true
  for _ in $(seq 1 200); do kill -0 "$run_pid" 2>/dev/null || break; sleep 0.1; done
  pids="$(descendants "$run_pid") $run_pid"
  # shellcheck disable=SC2086
  kill -0 "$run_pid" 2>/dev/null && { echo "image-test: the daemon ignored SIGTERM for 20 s: SIGKILL"; kill -KILL $pids 2>/dev/null || true; }
  run_rc=0
  wait "$run_pid" 2>/dev/null || run_rc=$?
  run_pid=""
}
cleanup() {
  stop_daemon
  if [ -n "$ctr" ]; then timeout 120 "${bh[@]}" rm "$ctr" >/dev/null 2>&1 || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { echo "image-test: FAIL: $*"; exit 1; }

# ---- tools ----
step "tools (buildah, debootstrap)"
[ "$(id -u)" -eq 0 ] || fail "needs root (buildah with the vfs driver, debootstrap)"
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
for c in curl python3; do command -v "$c" >/dev/null || missing+=("$c"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "image-test: installing ${missing[*]}"
  timeout 600 apt-get update -q
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "image-test: $(buildah --version)"

# ---- base image: debootstrap, cached ----
step "debootstrap bookworm minbase"
if [ ! -x "$dir/rootfs/usr/bin/apt-get" ]; then
  rm -rf "$dir/rootfs.tmp"
  timeout 1800 debootstrap --variant=minbase bookworm "$dir/rootfs.tmp" "$mirror" > "$dir/debootstrap.log" 2>&1 ||
    { tail -n 20 "$dir/debootstrap.log"; fail "debootstrap (log: $dir/debootstrap.log)"; }
  rm -rf "$dir/rootfs.tmp/var/cache/apt/archives/"*.deb "$dir/rootfs.tmp/var/lib/apt/lists/"*_Packages 2>/dev/null || true
  mv "$dir/rootfs.tmp" "$dir/rootfs"
else
  echo "image-test: cached: $dir/rootfs"
fi

step "import the base image"
if [ -z "$("${bh[@]}" images -q "$base_img" 2>/dev/null)" ]; then
  c=$(timeout 120 "${bh[@]}" from scratch)
  m=$(timeout 60 "${bh[@]}" mount "$c")
  timeout 600 tar -C "$dir/rootfs" -cf - . | tar -C "$m" -xf -
  timeout 60 "${bh[@]}" umount "$c" >/dev/null
  timeout 120 "${bh[@]}" config --os linux --arch amd64 --cmd /bin/bash \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
  timeout 900 "${bh[@]}" commit --quiet --rm "$c" "$base_img" >/dev/null
else
  echo "image-test: cached: $base_img"
fi

# ---- the image ----
step "buildah bud (CPU image)"
echo "image-test: log: $dir/bud.log"
# --format docker: the OCI image format has no HEALTHCHECK (Buildah drops it with a warning).
if ! timeout "$build_timeout" "${bh[@]}" bud --isolation chroot --layers --pull=never --format docker \
       --build-arg BUILD_BASE="$base_img" --build-arg BASE="$base_img" \
       -f Dockerfile -t "$img" . > "$dir/bud.log" 2>&1; then
  tail -n 30 "$dir/bud.log"
  fail "buildah bud (exit status above; log: $dir/bud.log)"
fi
tail -n 3 "$dir/bud.log"
"${bh[@]}" inspect --type image --format '{{.OCIv1.Config.User}} {{.OCIv1.Config.Entrypoint}} {{.OCIv1.Config.Cmd}} {{index .OCIv1.Config.Labels "io.semipaint.backend"}}' "$img"
echo
label=$("${bh[@]}" inspect --type image --format '{{index .OCIv1.Config.Labels "io.semipaint.backend"}}' "$img")
[ "$label" = cpu ] || fail "the image's io.semipaint.backend label is '$label', not cpu"
hc=$("${bh[@]}" inspect --type image --format '{{if .Docker.Config.Healthcheck}}{{.Docker.Config.Healthcheck.Test}}{{end}}' "$img")
case "$hc" in *healthz*) echo "image-test: HEALTHCHECK $hc";; *) fail "the image has no HEALTHCHECK ('$hc')";; esac

# ---- run it ----
step "start semipaintd in the image"
ctr=$(timeout 300 "${bh[@]}" from --pull=never "$img")
log="$tmp/daemon.log"
# The image's ENTRYPOINT and CMD, as its USER; listen on loopback, on a port the kernel picks.
"${bh[@]}" run --isolation chroot \
  --env SEMIPAINT_SERVER_LISTEN=127.0.0.1:0 --env SEMIPAINT_MODEL_CPU_THREADS=1 \
  "$ctr" -- /usr/local/bin/semipaint-entrypoint -c /etc/semipaint/semipaintd.yaml > "$log" 2>&1 &
run_pid=$!
port=""
for _ in $(seq 1 600); do # 60 s for the port (the container's set-up included)
  port=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$log" | head -n 1 || true)
  [ -n "$port" ] && break
  kill -0 "$run_pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$port" ] || { tail -n 20 "$log"; fail "semipaintd did not report its port"; }
echo "image-test: listening on 127.0.0.1:$port"

step "wait for /readyz 200"
url="http://127.0.0.1:$port"
ok=""
for _ in $(seq 1 $((ready_timeout * 5))); do
  [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$url/readyz")" = 200 ] && { ok=1; break; }
  kill -0 "$run_pid" 2>/dev/null || break
  sleep 0.2
done
[ -n "$ok" ] || { tail -n 20 "$log"; fail "/readyz did not answer 200 within $ready_timeout s"; }
curl -s -m 5 "$url/v1/info" | head -c 400; echo

step "every model family served (Sim-0 on the empty volume)"
# The families of the image's configuration (docker/base/semipaintd.yaml), each on Sim-0: the
# container's /data holds no database, and the entrypoint says so for each family.
curl -s -m 5 -o "$tmp/info.json" "$url/v1/info"
want=$(awk '/^[a-z_]+:/ {s = $1} s == "model:" && /^  family: / {print $2}
            s == "families:" && /^  [a-z0-9]+:/ {sub(/:.*/, "", $1); print $1}' docker/base/semipaintd.yaml | paste -sd' ' -)
got=$(python3 -c 'import json, sys
print(" ".join(f["name"] + ":" + f["mode"] for f in json.load(open(sys.argv[1])).get("families", [])))' "$tmp/info.json")
exp=""
for f in $want; do exp="$exp${exp:+ }$f:sim0"; done
[ "$got" = "$exp" ] || fail "GET /v1/info's families are '$got', expected '$exp'"
for f in $want; do
  grep -q "serving Sim-0 for family $f " "$log" || fail "the entrypoint did not say that family $f has no database"
done
echo "image-test: families: $got"

step "POST /v1/inpaint"
python3 - "$tmp" <<'EOF'
import struct, sys, zlib
def png(path, w, h, ch, px):
    raw = b"".join(b"\0" + bytes(px[y * w * ch:(y + 1) * w * ch]) for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2 if ch == 3 else 0, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
w, h = 96, 64
png(f"{sys.argv[1]}/img.png", w, h, 3, [v for y in range(h) for x in range(w) for v in (x * 2 & 255, y * 3 & 255, (x + y) & 255)])
png(f"{sys.argv[1]}/mask.png", w, h, 1, [255 if 30 <= x < 60 and 20 <= y < 44 else 0 for y in range(h) for x in range(w)])
EOF
code=$(curl -s -m 120 -o "$tmp/out.png" -w '%{http_code}' -F image=@"$tmp/img.png" -F mask=@"$tmp/mask.png" -F format=png "$url/v1/inpaint")
[ "$code" = 200 ] || { head -c 400 "$tmp/out.png"; echo; fail "POST /v1/inpaint answered $code"; }
size=$(python3 -c 'import struct,sys; d=open(sys.argv[1],"rb").read(24); print("%dx%d" % struct.unpack(">II", d[16:24]) if d[:8] == b"\x89PNG\r\n\x1a\n" else "not-a-png")' "$tmp/out.png")
[ "$size" = 96x64 ] || fail "POST /v1/inpaint: the answer is $size, not a 96x64 PNG"
echo "image-test: POST /v1/inpaint: 200, a 96x64 PNG of $(stat -c %s "$tmp/out.png") bytes"

step "stop (SIGTERM) and clean up"
stop_daemon
[ "$run_rc" = 0 ] || { tail -n 5 "$log"; fail "semipaintd exited with status $run_rc after SIGTERM"; }
echo "image-test: SIGTERM: semipaintd exited with status 0"
grep -q '"level":"error"' "$log" && { grep '"level":"error"' "$log" | head -n 5; }
timeout 120 "${bh[@]}" rm "$ctr" >/dev/null
ctr=""
step ""
echo "image-test: step times:"
printf '  %s\n' "${times[@]}"
echo "image-test: passed in $(( $(date +%s) - T0 )) s ($(du -sh "$dir" 2>/dev/null | cut -f1) cached in $dir)"
