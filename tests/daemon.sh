# daemon.sh: sourced by the integration tests that talk HTTP to semipaintd on loopback.
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
