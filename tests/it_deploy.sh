#!/usr/bin/env bash
# it_deploy.sh: the deployment files offline: renders every kustomize overlay, lints them (yamllint, dockerfilelint), runs the container's entrypoint, config and index-build Jobs against the real semipaintd for every model family, and checks that ports, probes, config keys, the image's weights and the autoscaler's metric agree with what it serves.
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
# checks. Its paths are the image's: deploy_check.py --host-config writes it as $tmp/cfg.yaml with each
# /opt/semipaint path made the repository file the Dockerfile copies there (a path no COPY line
# fills stays as it is, and fails), and /data made $tmp/data. It prints one line per model family:
# name, database variable (SEMIPAINT_RETRIEVAL_DATABASE or SEMIPAINT_FAMILIES_<NAME>_DATABASE), database.
# (the caller's configuration variables do not apply: the file's values are under test)
while IFS= read -r v; do unset "$v"; done < <(compgen -e |
  grep -E '^SEMIPAINT_(SERVER|BATCHING|MODEL|RETRIEVAL|INPAINT|LOGGING|FAMILIES)_' || true)
fams=() dbvars=() dbs=()
while IFS=$'\t' read -r n v d; do fams+=("$n"); dbvars+=("$v"); dbs+=("$d"); done \
  < <("$PY" tests/deploy_check.py --host-config "$tmp/cfg.yaml" --data "$tmp/data")
repo_fams=$("$D" -c config/semipaintd.yaml --print-config 2>/dev/null |
  awk '/^[a-z_]+:/ {s = $1} s == "model:" && /^  family: / {gsub(/"/, "", $2); print $2}
       s == "families:" && /^  [a-z0-9]+:$/ {sub(/:$/, "", $1); print $1}' | paste -sd' ' -)
if [ "${fams[*]}" = "$repo_fams" ] && [ ${#fams[@]} -ge 2 ]; then
  ok "docker/base/semipaintd.yaml serves the model families of config/semipaintd.yaml: ${fams[*]}"
else
  bad "docker/base/semipaintd.yaml serves the families '${fams[*]}', config/semipaintd.yaml '$repo_fams'"
fi
nodb=()
for v in "${dbvars[@]}"; do nodb+=("$v="); done
if [ ! -f weights/pconv.safetensors ]; then # the small test nets stand in for every family's
  FIX=tests/fixtures/small
  export SEMIPAINT_MODEL_COARSE=$FIX/pconv_unet.safetensors SEMIPAINT_MODEL_REFINE=$FIX/simk_unet_k1.safetensors \
         SEMIPAINT_MODEL_REFINE_FALLBACK=$FIX/simk_unet_k0.safetensors SEMIPAINT_MODEL_ROUTER=
  for v in "${dbvars[@]:1}"; do
    f=${v%DATABASE}
    export "${f}COARSE=$SEMIPAINT_MODEL_COARSE" "${f}REFINE=$SEMIPAINT_MODEL_REFINE" \
           "${f}REFINE_FALLBACK=$SEMIPAINT_MODEL_REFINE_FALLBACK"
  done
fi
export SEMIPAINT_MODEL_CPU_THREADS=1 OMP_WAIT_POLICY=PASSIVE
# The keys semipaintd knows, from its defaults (a bad key in the file must not hide the others), with
# one family (named keys) so that a family's keys are printed too.
SEMIPAINT_FAMILIES_KEYS_COARSE=${SEMIPAINT_MODEL_COARSE:-weights/pconv.safetensors} \
SEMIPAINT_FAMILIES_KEYS_REFINE_FALLBACK=${SEMIPAINT_MODEL_REFINE_FALLBACK:-weights/sim0.safetensors} \
  "$D" --print-config > "$out/print-config.yaml"
if env "${nodb[@]}" "$D" -c "$tmp/cfg.yaml" --check-config > "$tmp/cc" 2>&1; then
  ok "semipaintd --check-config accepts docker/base/semipaintd.yaml (its image paths made the repository's files)"
else
  bad "semipaintd --check-config refuses docker/base/semipaintd.yaml: $(cat "$tmp/cc")"
fi
if SEMIPAINT_RETRIEVAL_DATABASE='' "$D" -c "$out/print-config.yaml" --check-config > /dev/null 2>&1; then
  ok "its --print-config output is a valid configuration too"
else
  bad "its --print-config output is refused"
fi

# The entrypoint, with the databases in $tmp/data.
bin="$tmp/bin"
mkdir -p "$bin"
ln -s "$PWD/$D" "$bin/semipaintd"
ln -s "$PWD/$CLI" "$bin/semipaint"
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
modes() { # GET /v1/info: "name:mode:images" of every family, in the configuration's order
  code /v1/info "$tmp/info" > /dev/null
  "$PY" -c 'import json, sys
print(" ".join("%s:%s:%s" % (f["name"], f["mode"], (f.get("database") or {}).get("count", 0))
               for f in json.load(open(sys.argv[1])).get("families", [])))' "$tmp/info" 2>/dev/null || true
}
expect() { # mode-of-each-family images-of-each-family: the modes() line they make
  local i e="" m c
  read -r -a m <<< "$1"
  read -r -a c <<< "$2"
  for i in "${!fams[@]}"; do e+="${e:+ }${fams[i]}:${m[i]}:${c[i]}"; done
  echo "$e"
}
allsim0=$(expect "$(printf 'sim0 %.0s' "${fams[@]}")" "$(printf '0 %.0s' "${fams[@]}")")

# 1. no database on the volume yet: the entrypoint serves every family on Sim-0 and says why for each
start "$tmp/log1"
if [ -n "$port" ] && wait_ready > /dev/null; then
  got=$(modes)
  warned=0
  for i in "${!fams[@]}"; do
    grep -q "no database at ${dbs[i]} yet: serving Sim-0 for family ${fams[i]} " "$tmp/log1" && warned=$((warned + 1))
  done
  if [ "$got" = "$allsim0" ] && [ "$warned" = ${#fams[@]} ]; then
    ok "entrypoint: an empty volume starts every family on Sim-0, with a warning each ($got)"
  else bad "entrypoint: an empty volume: families '$got' (expected '$allsim0'), $warned of ${#fams[@]} warnings"; fi
else
  bad "entrypoint: the daemon did not start without a database:"; tail -n 5 "$tmp/log1"
fi
[ -n "$pid" ] && { stop || true; }

# 2. the Jobs of docker/jobs/ (their commands, through the entrypoint), one database at a time: each
# family serves Sim-1 once its own database is there, the others stay on Sim-0
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
mapfile -t jobs < <("$PY" tests/deploy_check.py --job-commands --data "$tmp/data" --images "$tmp/images")
mode=() count=() cmd=()
for i in "${!fams[@]}"; do mode+=(sim0); count+=(0); done
ready_s=""
for i in "${!fams[@]}"; do
  job=""
  for j in "${jobs[@]}"; do
    eval "cmd=($j)"
    for k in "${!cmd[@]}"; do [ "${cmd[k]}" = --out ] && [ "${cmd[k + 1]:-}" = "${dbs[i]}" ] && job=$j; done
  done
  [ -n "$job" ] || { bad "no Job of docker/jobs/ builds ${fams[i]}'s database"; continue; }
  eval "cmd=($job)"
  if ! PATH="$bin:$PATH" docker/entrypoint.sh "${cmd[@]}" > "$tmp/build.log" 2>&1; then
    bad "entrypoint: the Job's command for ${fams[i]} ($job):"; tail -n 5 "$tmp/build.log"; continue
  fi
  mode[i]=sim1 count[i]=6
  want=$(expect "${mode[*]}" "${count[*]}")
  start "$tmp/log2"
  if [ -n "$port" ] && ready_s=$(wait_ready); then
    got=$(modes)
    if [ "$got" = "$want" ]; then
      ok "entrypoint: with the Job's database of ${fams[i]} ($(basename "${dbs[i]}")): $got, ready in ${ready_s} s"
    else bad "entrypoint: after the Job of ${fams[i]}: '$got', expected '$want'"; fi
  else
    bad "entrypoint: the daemon did not start with ${fams[i]}'s database:"; tail -n 5 "$tmp/log2"
  fi
  # with every database: what the manifests rely on (these paths answer 200, the metrics the autoscaler reads)
  if [ "$i" = $((${#fams[@]} - 1)) ] && [ -n "$pid" ]; then
    : > "$out/routes"
    for p in /healthz /readyz /metrics /v1/info /openapi.yaml; do
      [ "$(code "$p")" = 200 ] && echo "GET $p" >> "$out/routes"
    done
    code /metrics "$out/metrics.txt" > /dev/null
    missing=()
    for f in "${fams[@]}"; do grep -q "^semipaint_index_images{model=\"$f\"} 6$" "$out/metrics.txt" || missing+=("$f"); done
    if [ ${#missing[@]} -eq 0 ]; then
      ok "GET /metrics reports every family's database (semipaint_index_images{model=...} 6 each)"
    else bad "GET /metrics does not report semipaint_index_images 6 for: ${missing[*]}"; fi
    rss=$(sed -n 's/^process_resident_memory_bytes \([0-9.e+]*\)$/\1/p' "$out/metrics.txt")
    [ -n "$rss" ] && echo "     (resident memory once ready, every family loaded: $(awk -v b="$rss" 'BEGIN {printf "%.2f GiB", b / 2^30}'))"
    t0=$(date +%s)
    if stop; then ok "SIGTERM: exit status 0 after $(( $(date +%s) - t0 )) s"; else bad "SIGTERM: non-zero exit"; fi
  fi
  [ -n "$pid" ] && { stop || true; }
done

# 3. a path that holds something else than a database still stops the daemon (every family's)
for i in "${!fams[@]}"; do
  mv "${dbs[i]}" "$tmp/saved" 2>/dev/null || true
  mkdir -p "${dbs[i]}" && echo junk > "${dbs[i]}/junk"
  start "$tmp/log3"
  rc=0
  [ -n "$pid" ] && { wait "$pid" || rc=$?; pid=""; }
  if [ "$rc" -ne 0 ] && grep -q "startup failed: .*${dbs[i]}" "$tmp/log3"; then
    ok "entrypoint: a broken database of ${fams[i]} stops the daemon (status $rc) with a message naming it"
  else bad "entrypoint: a broken database of ${fams[i]}: status $rc"; tail -n 3 "$tmp/log3"; fi
  rm -rf "${dbs[i]}"
  mv "$tmp/saved" "${dbs[i]}" 2>/dev/null || true
done

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
