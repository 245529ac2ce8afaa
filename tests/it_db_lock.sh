#!/usr/bin/env bash
# it_db_lock.sh: `semipaint index build --force` against a database that another `semipaint index add` has open or is writing: the database lock and the stale-handle check keep the rebuilt database intact.
# Issue 15, finding 5. Uses $BUILD/tests/semipaint_hooks (make $BUILD/tests/semipaint_hooks) for the
# appends, whose SEMIPAINT_RT_ADD_PAUSE_MS hook announces each step so that SIGSTOP can freeze the
# append at a chosen point; everything else runs the production $BUILD/semipaint. Every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
bin=$BUILD/semipaint
hooks=$BUILD/tests/semipaint_hooks
[ -x "$bin" ] || { echo "it_db_lock: $bin not built"; exit 1; }
[ -x "$hooks" ] || { echo "it_db_lock: $hooks not built (make BUILD=$BUILD $hooks)"; exit 1; }
tmp=$(mktemp -d /tmp/it_db_lock.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# Test images: 64x64 RGB PNGs of distinct colour waves, written with zlib alone.
"$PY" tests/wave_images.py "$tmp/base:base:0:10" "$tmp/new:new:20:6" "$tmp/add:add:40:5" "$tmp/add2:add2:60:5"

db=$tmp/db
fail=0
count() { timeout 30 "$bin" index info "$db" | awk '/^images/ {print $2}'; }
generation() { timeout 30 "$bin" index info "$db" | awk '/^index/ {print $NF}'; }
# top1 IMAGE -> "id score"
top1() { timeout 30 "$bin" index query "$db" "$1" -k 1 2>/dev/null | awk 'NR == 2 {print $2, $3}'; }
# freeze_after LOG STEP PID: waits until the append says STEP is done (at most 20 s), then stops
# it with SIGSTOP within that step's pause, and checks that it did not get further.
freeze_after() {
  for _ in $(seq 2000); do
    if grep -q "rt_db_add: $2 done" "$1"; then
      kill -STOP "$3"
      last=$(grep -o 'rt_db_add: .* done' "$1" | tail -1)
      [ "$last" = "rt_db_add: $2 done" ] && return 0
      echo "FAIL: the append went on to '$last' before SIGSTOP (machine too slow for a ${PAUSE_MS} ms pause)"
      return 1
    fi
    kill -0 "$3" 2>/dev/null || break
    sleep 0.01
  done
  echo "FAIL: the append never said '$2 done':"; cat "$1"
  return 1
}
PAUSE_MS=500
# holds_exactly DIR WHAT [mid-append]: the database opens and holds exactly the images of DIR,
# each at its id, and (unless an append is frozen mid-way) no stray files.
holds_exactly() {
  local want files j id score
  files=("$tmp/$1"/*.png)
  want=${#files[@]}
  n=$(count) || { echo "FAIL ($2): the database does not open"; timeout 30 "$bin" index info "$db" || true; fail=1; return; }
  [ "$n" = "$want" ] || { echo "FAIL ($2): $n images, want the $want of $1"; fail=1; }
  for j in "${!files[@]}"; do
    read -r id score < <(top1 "${files[$j]}")
    if [ "$id" != "$j" ] || [ "$(echo "$score < 0.9999" | bc)" = 1 ]; then
      echo "FAIL ($2): ${files[$j]} -> id $id score $score, want id $j"; fail=1
    fi
  done
  local nidx left
  nidx=$(ls "$db" | grep -c '^index\.' || true)
  left=$(ls "$tmp" | grep -c '^db\.' || true)
  if [ "${3:-}" != mid-append ] && { [ "$nidx" != 1 ] || [ "$left" != 0 ]; }; then
    echo "FAIL ($2): stray files: $(ls "$db" "$tmp" | tr '\n' ' ')"; fail=1
  fi
}

timeout 60 "$bin" index build --images "$tmp/base" --out "$db" >/dev/null 2>&1
holds_exactly base "first build"

# 1. An append whose handle was opened before a --force rebuild (as the daemon's is) must not
#    write into the rebuilt database. The append is frozen after opening, before taking the lock.
SEMIPAINT_RT_ADD_PAUSE_MS=$PAUSE_MS timeout 60 "$hooks" index add "$db" "$tmp/add"/*.png >/dev/null 2>"$tmp/add1.log" &
pid=$!; pids+=("$pid")
freeze_after "$tmp/add1.log" begin "$pid" || exit 1
t0=$(date +%s.%N)
if ! timeout 60 "$bin" index build --images "$tmp/new" --out "$db" --force --lock-wait 10 >/dev/null 2>"$tmp/build1.log"; then
  echo "FAIL 1: the rebuild failed while the other handle only had the database open:"; cat "$tmp/build1.log"; fail=1
fi
echo "1: rebuilt in $(echo "$(date +%s.%N) - $t0" | bc) s while an append's handle was open"
kill -CONT "$pid"
rc=0; wait "$pid" || rc=$?
if [ "$rc" = 0 ] || ! grep -q "rebuilt" "$tmp/add1.log" || ! grep -q "nothing written" "$tmp/add1.log" || ! grep -q "$db" "$tmp/add1.log"; then
  echo "FAIL 1: the stale append exited $rc; want 1 and an error naming $db that says it was rebuilt:"; cat "$tmp/add1.log"; fail=1
fi
echo "1: stale append refused: $(grep -o 'semipaint index add: .*' "$tmp/add1.log" | head -c 300)"
holds_exactly new "1: after the stale append"
[ "$(generation)" = 1 ] || { echo "FAIL 1: generation $(generation), want 1"; fail=1; }

# 2. An append holding the database lock (frozen mid-write) excludes a rebuild and another append:
#    each fails after its bounded wait, naming the database, and leaves it as it was.
SEMIPAINT_RT_ADD_PAUSE_MS=$PAUSE_MS timeout 60 "$hooks" index add "$db" "$tmp/add"/*.png >"$tmp/add2.out" 2>"$tmp/add2.log" &
pid=$!; pids+=("$pid")
freeze_after "$tmp/add2.log" "store rows" "$pid" || exit 1
t0=$(date +%s.%N)
rc=0; timeout 60 "$bin" index build --images "$tmp/base" --out "$db" --force --lock-wait 0.5 >/dev/null 2>"$tmp/build2.log" || rc=$?
took=$(echo "$(date +%s.%N) - $t0" | bc)
if [ "$rc" != 1 ] || ! grep -q "another process is writing" "$tmp/build2.log" || ! grep -q "$db" "$tmp/build2.log"; then
  echo "FAIL 2: a rebuild under another's lock exited $rc; want 1 and 'another process is writing' $db:"; cat "$tmp/build2.log"; fail=1
fi
echo "2: rebuild refused after $took s: $(grep -o 'semipaint index build: .*' "$tmp/build2.log" | head -c 300)"
rc=0; timeout 30 "$bin" index add "$db" "$tmp/add2"/*.png --lock-wait 0 >/dev/null 2>"$tmp/add3.log" || rc=$?
if [ "$rc" != 1 ] || ! grep -q "another process is writing" "$tmp/add3.log"; then
  echo "FAIL 2: a second append under another's lock exited $rc:"; cat "$tmp/add3.log"; fail=1
fi
echo "2: second append refused: $(grep -o 'semipaint index add: .*' "$tmp/add3.log" | head -c 300)"
holds_exactly new "2: while the append is frozen" mid-append

# 3. A rebuild that waits long enough replaces the database once the append is done.
timeout 60 "$bin" index build --images "$tmp/base" --out "$db" --force --lock-wait 30 >/dev/null 2>"$tmp/build3.log" &
bpid=$!; pids+=("$bpid")
sleep 0.5
kill -0 "$bpid" 2>/dev/null || { echo "FAIL 3: the rebuild did not wait for the lock:"; cat "$tmp/build3.log"; fail=1; }
kill -CONT "$pid"
rc=0; wait "$pid" || rc=$?
[ "$rc" = 0 ] && grep -q "the database holds 11" "$tmp/add2.log" ||
  { echo "FAIL 3: the frozen append, resumed, exited $rc:"; cat "$tmp/add2.log"; fail=1; }
rc=0; wait "$bpid" || rc=$?
[ "$rc" = 0 ] || { echo "FAIL 3: the waiting rebuild exited $rc:"; cat "$tmp/build3.log"; fail=1; }
echo "3: the append finished, then the waiting rebuild replaced the database"
holds_exactly base "3: after the waiting rebuild"

[ "$fail" = 0 ] && echo "it_db_lock: PASS" || { echo "it_db_lock: FAIL"; exit 1; }
