# daemon.sh: sourced by the integration tests that talk HTTP to semipaintd on loopback.
# it_begin NAME: a temporary folder $tmp, removed at exit together with the daemon $pid when one
# runs, and the tally of checks: ok WHAT, bad WHAT, check WHAT COMMAND... (runs it), it_end.
it_begin() {
  it_name=$1
  tmp=$(mktemp -d "/tmp/$1.XXXXXX")
  pid=""
  fails=0
  passes=0
  trap 'it_cleanup' EXIT
}
it_cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
ok() { echo "ok   $*"; passes=$((passes + 1)); }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
# it_end: prints "NAME: N passed, M failed" and exits 1 when a check failed.
it_end() { echo "$it_name: $passes passed, $fails failed"; [ "$fails" -eq 0 ]; exit $?; }
# first_family_only: the tests written for one family keep their answers with the shipped
# configuration's families: model=auto runs the first family (no router), and the general family
# needs no database (it is loaded, Sim-0, and never chosen). tests/it_families.sh tests families.
first_family_only() {
  export SEMIPAINT_MODEL_ROUTER=
  export SEMIPAINT_FAMILIES_GENERAL_DATABASE=
}
# small_nets: config/semipaintd.yaml pointed at the small test networks in $FIX, no database,
# any free loopback port, one CPU thread.
small_nets() {
  first_family_only
  export SEMIPAINT_MODEL_COARSE=$FIX/pconv_unet.safetensors
  export SEMIPAINT_MODEL_REFINE=$FIX/simk_unet_k1.safetensors
  export SEMIPAINT_MODEL_REFINE_FALLBACK=$FIX/simk_unet_k0.safetensors
  export SEMIPAINT_RETRIEVAL_DATABASE=
  export SEMIPAINT_SERVER_LISTEN=127.0.0.1:0
  export SEMIPAINT_MODEL_CPU_THREADS=1
}
# start_daemon LOG: starts "$D" -c config/semipaintd.yaml (configured by the caller's environment)
# in the background, logging to LOG; sets pid, port and url once it has printed its port, then
# waits at most 60 s for GET /readyz to answer 200. Returns 1, after printing LOG, when the daemon
# printed no port, exited or did not become ready.
start_daemon() {
  "$D" -c config/semipaintd.yaml > "$1" 2>&1 &
  pid=$!
  port=""
  for _ in $(seq 1 200); do
    port=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$1" | head -n 1)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$port" ] || { cat "$1"; echo "semipaintd printed no port"; return 1; }
  url="http://127.0.0.1:$port"
  for _ in $(seq 1 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/readyz")" = 200 ] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$1"
  echo "semipaintd did not become ready"
  return 1
}
