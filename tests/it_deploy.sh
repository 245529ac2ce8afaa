#!/usr/bin/env bash
# it_deploy.sh: the deployment files offline: renders every kustomize overlay, lints them (yamllint, dockerfilelint), runs the container's entrypoint and config against the real semipaintd, and checks that ports, probes, config keys and the autoscaler's metric agree with what it serves.
# Each tool that is absent (kubectl, yamllint, node/npm, docker-compose) skips its part with a message.
# Rendered manifests are left in $BUILD/tests/deploy/.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
D="$BUILD/semipaintd"
CLI="$BUILD/semipaint"
KUBECTL=${KUBECTL:-kubectl}
[ -x "$D" ] && [ -x "$CLI" ] || { echo "it_deploy: SKIP ($D or $CLI not built)"; exit 0; }
"$PY" -c 'import yaml' 2>/dev/null || { echo "it_deploy: SKIP ($PY has no yaml module: apt-get install python3-yaml)"; exit 0; }

out="$BUILD/tests/deploy"
rm -rf "$out"
mkdir -p "$out"
tmp=$(mktemp -d /tmp/it_deploy.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
passes=0
fails=0
ok() { echo "ok   $*"; passes=$((passes + 1)); }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
skip() { echo "skip $*"; }

# ---- render every overlay ----
args=()
if command -v "$KUBECTL" >/dev/null && "$KUBECTL" kustomize --help >/dev/null 2>&1; then
  for o in docker/overlays/*/; do
    o=$(basename "$o")
    if "$KUBECTL" kustomize "docker/overlays/$o" > "$out/$o.yaml" 2> "$out/$o.err"; then
      ok "kubectl kustomize docker/overlays/$o ($(grep -c '^kind:' "$out/$o.yaml") objects)"
      args+=("--$o" "$out/$o.yaml")
    else
      bad "kubectl kustomize docker/overlays/$o: $(grep -v '^# Warning' "$out/$o.err" | head -n 3)"
    fi
  done
else
  skip "rendering the overlays: no '$KUBECTL kustomize' (Debian: apt-get install kubernetes-client); the base files are checked as they are"
fi

# ---- lint ----
if command -v yamllint >/dev/null; then
  if yamllint -c docker/.yamllint -f parsable docker/ > "$tmp/lint" 2>&1; then ok "yamllint docker/"; else bad "yamllint docker/:"; cat "$tmp/lint"; fi
  rendered=("$out"/*.yaml)
  if [ -e "${rendered[0]}" ]; then
    # kustomize writes block sequences unindented and the ConfigMap's file as one long line
    if yamllint -d '{extends: relaxed, rules: {line-length: disable, indentation: {indent-sequences: whatever}}}' \
         -f parsable "${rendered[@]}" > "$tmp/lint" 2>&1; then ok "yamllint of the rendered overlays"
    else bad "yamllint of the rendered overlays:"; cat "$tmp/lint"; fi
  fi
else
  skip "yamllint (Debian: apt-get install yamllint)"
fi
if command -v node >/dev/null && bash scripts/npm_deps.sh; then
  if .deps/npm/node_modules/.bin/dockerfilelint -c docker Dockerfile > "$tmp/dfl" 2>&1; then ok "dockerfilelint Dockerfile"
  else bad "dockerfilelint Dockerfile:"; cat "$tmp/dfl"; fi
else
  skip "dockerfilelint (node or the npm tools of tests/npm are missing)"
fi
if command -v hadolint >/dev/null; then
  if hadolint Dockerfile > "$tmp/hl" 2>&1; then ok "hadolint Dockerfile"; else bad "hadolint Dockerfile:"; cat "$tmp/hl"; fi
else
  skip "hadolint (not packaged in Debian 12)"
fi
compose=()
if docker compose version >/dev/null 2>&1; then compose=(docker compose); elif command -v docker-compose >/dev/null; then compose=(docker-compose); fi
if [ ${#compose[@]} -gt 0 ]; then
  for files in "docker/docker-compose.yml" "docker/docker-compose.yml docker/docker-compose.gpu.yml"; do
    fa=()
    for f in $files; do fa+=(-f "$f"); done
    if "${compose[@]}" "${fa[@]}" config -q > "$tmp/dc" 2>&1; then ok "${compose[*]} config: $files"
    else bad "${compose[*]} config: $files:"; cat "$tmp/dc"; fi
  done
else
  skip "docker-compose config (neither 'docker compose' nor docker-compose is installed)"
fi

# ---- the container's configuration, through the real daemon ----
# docker/base/semipaintd.yaml is the image's default and the ConfigMap: it must pass the daemon's own
# checks. Its weights live in /opt/semipaint in the image; here the repository's stand in for them.
if [ -f weights/pconv.safetensors ]; then
  export SEMIPAINT_MODEL_COARSE=weights/pconv.safetensors SEMIPAINT_MODEL_REFINE=weights/sim1.safetensors \
         SEMIPAINT_MODEL_REFINE_FALLBACK=weights/sim0.safetensors
else
  FIX=tests/fixtures/small
  export SEMIPAINT_MODEL_COARSE=$FIX/pconv_unet.safetensors SEMIPAINT_MODEL_REFINE=$FIX/simk_unet_k1.safetensors \
         SEMIPAINT_MODEL_REFINE_FALLBACK=$FIX/simk_unet_k0.safetensors
fi
export SEMIPAINT_MODEL_CPU_THREADS=1 OMP_WAIT_POLICY=PASSIVE
unset SEMIPAINT_RETRIEVAL_DATABASE SEMIPAINT_SERVER_LISTEN SEMIPAINT_MODEL_ROUTER SEMIPAINT_FAMILIES_GENERAL_DATABASE
# The keys semipaintd knows, from its defaults (a bad key in the file must not hide the others).
"$D" --print-config > "$out/print-config.yaml"
if SEMIPAINT_RETRIEVAL_DATABASE='' "$D" -c docker/base/semipaintd.yaml --check-config > "$tmp/cc" 2>&1; then
  ok "semipaintd --check-config accepts docker/base/semipaintd.yaml"
else
  bad "semipaintd --check-config refuses docker/base/semipaintd.yaml: $(cat "$tmp/cc")"
fi
if SEMIPAINT_RETRIEVAL_DATABASE='' "$D" -c "$out/print-config.yaml" --check-config > /dev/null 2>&1; then
  ok "its --print-config output is a valid configuration too"
else
  bad "its --print-config output is refused"
fi

# The entrypoint, with the database path moved from /data/db into a scratch folder.
bin="$tmp/bin"
mkdir -p "$bin"
ln -s "$PWD/$D" "$bin/semipaintd"
ln -s "$PWD/$CLI" "$bin/semipaint"
sed "s|^  database: /data/db |  database: $tmp/data/db |" docker/base/semipaintd.yaml > "$tmp/cfg.yaml"
grep -q "database: $tmp/data/db" "$tmp/cfg.yaml" || { bad "docker/base/semipaintd.yaml has no 'database: /data/db' line"; }
export SEMIPAINT_SERVER_LISTEN=127.0.0.1:0
start() { # log-file: starts the entrypoint in the background, sets pid and port
  : > "$1"
  PATH="$bin:$PATH" docker/entrypoint.sh -c "$tmp/cfg.yaml" >> "$1" 2>&1 &
  pid=$!
  port=""
  for _ in $(seq 1 200); do
    port=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$1" | head -n 1 || true)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
}
stop() { kill -TERM "$pid" 2>/dev/null; local rc=0; wait "$pid" || rc=$?; pid=""; return "$rc"; }
code() { curl -s -o "${2:-/dev/null}" -w '%{http_code}' "http://127.0.0.1:$port$1"; }
wait_ready() { # prints the seconds to 200 from /readyz, or fails
  local t0 t1
  t0=$(date +%s.%N)
  for _ in $(seq 1 600); do
    [ "$(code /readyz)" = 200 ] && { t1=$(date +%s.%N); printf '%.2f\n' "$(echo "$t1 - $t0" | bc)"; return 0; }
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# 1. no database on the volume yet: the entrypoint serves Sim-0 and says why
start "$tmp/log1"
if [ -n "$port" ] && wait_ready > /dev/null; then
  code /v1/info "$tmp/info" > /dev/null
  if grep -q '"mode":"sim0"' "$tmp/info" && grep -q "no database at $tmp/data/db yet: serving Sim-0" "$tmp/log1"; then
    ok "entrypoint: an empty volume starts Sim-0 with a warning"
  else bad "entrypoint: an empty volume: $(head -c 300 "$tmp/info")"; fi
else
  bad "entrypoint: the daemon did not start without a database:"; tail -n 5 "$tmp/log1"
fi
[ -n "$pid" ] && { stop || true; }

# 2. a database on the volume: used as configured
mkdir -p "$tmp/images" "$tmp/data"
"$PY" - "$tmp/images" <<'EOF'
import struct, sys, zlib
def png(path, w, h, px):
    raw = b"".join(b"\0" + bytes(px[y * w * 3:(y + 1) * w * 3]) for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
for i in range(6):
    png(f"{sys.argv[1]}/i{i}.png", 32, 32, [v for y in range(32) for x in range(32) for v in (x * 8 + i * 40 & 255, y * 8, i * 50)])
EOF
PATH="$bin:$PATH" docker/entrypoint.sh semipaint index build --images "$tmp/images" --out "$tmp/data/db" > "$tmp/build.log" 2>&1 ||
  { bad "entrypoint: 'semipaint index build' as a command:"; tail -n 5 "$tmp/build.log"; }
start "$tmp/log2"
ready_s=""
if [ -n "$port" ] && ready_s=$(wait_ready); then
  code /v1/info "$tmp/info" > /dev/null
  if grep -q '"mode":"sim1"' "$tmp/info" && grep -q '"count":6' "$tmp/info"; then
    ok "entrypoint: a database on the volume is served (Sim-1, 6 images), ready in ${ready_s} s"
  else bad "entrypoint: the database is not served: $(head -c 300 "$tmp/info")"; fi
  # What the manifests rely on: these paths answer 200, and the metrics the autoscaler reads.
  : > "$out/routes"
  for p in /healthz /readyz /metrics /v1/info /openapi.yaml; do
    [ "$(code "$p")" = 200 ] && echo "GET $p" >> "$out/routes"
  done
  code /metrics "$out/metrics.txt" > /dev/null
  if grep -q '^semipaint_index_images{model="faces"} 6$' "$out/metrics.txt"; then
    ok "GET /metrics reports the database (semipaint_index_images{model=\"faces\"} 6)"
  else bad "GET /metrics does not report semipaint_index_images{model=\"faces\"} 6"; fi
  t0=$(date +%s)
  if stop; then ok "SIGTERM: exit status 0 after $(( $(date +%s) - t0 )) s"; else bad "SIGTERM: non-zero exit"; fi
else
  bad "entrypoint: the daemon did not start with a database:"; tail -n 5 "$tmp/log2"
  [ -n "$pid" ] && { stop || true; }
fi

# 3. a path that holds something else than a database still stops the daemon
rm -rf "$tmp/data/db" && mkdir -p "$tmp/data/db" && echo junk > "$tmp/data/db/junk"
start "$tmp/log3"
rc=0
[ -n "$pid" ] && { wait "$pid" || rc=$?; pid=""; }
if [ "$rc" -ne 0 ] && grep -q "startup failed: .*$tmp/data/db" "$tmp/log3"; then
  ok "entrypoint: a broken database stops the daemon (status $rc) with a message naming it"
else bad "entrypoint: a broken database: status $rc"; tail -n 3 "$tmp/log3"; fi

# ---- the runtime stage's libraries: every NEEDED library of semipaintd comes from an installed package ----
needed=()
if command -v dpkg >/dev/null && command -v readelf >/dev/null && command -v apt-cache >/dev/null; then
  : > "$out/needed"
  for so in $(readelf -d "$D" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    # sanitizer runtimes (make san-test) are not in the image; CUDA's come from the cuda-runtime stage
    case "$so" in libasan.*|libubsan.*|liblsan.*|libtsan.*) echo "  ($so: sanitizer runtime, not in the image)"; continue;; esac
    path=$(ldd "$D" | awk -v s="$so" '$1 == s {print $3}')
    case "$(readlink -f "$path")" in /usr/local/cuda*) echo "  ($so: from the CUDA stage)"; continue;; esac
    [ -n "$path" ] || path=$(ldd "$D" | awk -v s="$so" 'index($1, s) {print $1}' | sed -n 1p)
    pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -n 1 | cut -d: -f1 || true)
    [ -n "$pkg" ] || pkg=$(dpkg -S "$path" 2>/dev/null | head -n 1 | cut -d: -f1 || true)
    echo "${pkg:-unknown} $so" >> "$out/needed"
  done
  mapfile -t rpkgs < <("$PY" tests/deploy_check.py --print-config /dev/null --runtime-packages)
  # one apt-cache call each (they take a second or two apiece): which exist, and what they pull in
  known=$(apt-cache policy "${rpkgs[@]}" 2>/dev/null | awk '/^[^ ].*:$/ {p = substr($0, 1, length($0) - 1)}
                                                          /^  Candidate: / && $2 != "(none)" {print p}')
  missing_pkgs=()
  for p in "${rpkgs[@]}"; do grep -qx "$p" <<< "$known" || missing_pkgs+=("$p"); done
  mapfile -t known_pkgs <<< "$known"
  apt-cache depends "${known_pkgs[@]}" 2>/dev/null | sed -n 's/^ *|\?\(Pre\)\?Depends: \([^<>]*\)$/\2/p' > "$out/provided"
  if [ ${#missing_pkgs[@]} -eq 0 ]; then ok "every runtime package of the Dockerfile exists in this Debian ($(. /etc/os-release && echo "$VERSION_CODENAME"))"
  else bad "runtime packages unknown to apt-cache: ${missing_pkgs[*]}"; fi
  needed=(--needed "$out/needed" --provided "$out/provided")
else
  skip "the runtime library check (needs dpkg, readelf and apt-cache)"
fi

# ---- agreement of manifests, compose, Dockerfile and the daemon ----
extra=()
[ -s "$out/routes" ] && extra+=(--routes "$out/routes")
[ -s "$out/metrics.txt" ] && extra+=(--metrics "$out/metrics.txt")
[ -n "$ready_s" ] && extra+=(--ready-s "$ready_s")
if "$PY" tests/deploy_check.py "${args[@]}" --print-config "$out/print-config.yaml" "${extra[@]}" "${needed[@]}" > "$tmp/dc.out" 2>&1; then
  :
fi
cat "$tmp/dc.out"
p=$(sed -n 's/^deploy_check: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$tmp/dc.out")
f=$(sed -n 's/^deploy_check: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$tmp/dc.out")
[ -n "$p" ] || { bad "deploy_check.py did not finish"; p=0; f=0; }
passes=$((passes + p))
fails=$((fails + f))

echo "it_deploy: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
