#!/usr/bin/env bash
# it_retrieval_kill.sh: kill -9 `semipaint index add` after each of its steps and at random moments; the database must open with the old or the new content, never a mix.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
bin=$BUILD/semipaint
# The appends that are killed run the test build with the SEMIPAINT_RT_ADD_PAUSE_MS hook
# (make $BUILD/tests/semipaint_hooks); production binaries have no hooks.
hooks=$BUILD/tests/semipaint_hooks
[ -x "$bin" ] || { echo "it_retrieval_kill: $bin not built"; exit 1; }
[ -x "$hooks" ] || { echo "it_retrieval_kill: $hooks not built (make BUILD=$BUILD $hooks)"; exit 1; }
tmp=$(mktemp -d /tmp/it_retrieval_kill.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# Test images: 64x64 RGB PNGs of distinct colour waves, written with zlib alone.
"$PY" tests/wave_images.py "$tmp/base:b:0:10" $(for r in $(seq 0 12); do echo "$tmp/add$r:r${r}_:$((100 + r * 5)):5"; done)

db=$tmp/db
"$bin" index build --images "$tmp/base" --out "$db" >/dev/null 2>&1
count() { "$bin" index info "$db" | awk '/^images/ {print $2}'; }
# top1 IMAGE -> "id score"
top1() { "$bin" index query "$db" "$1" -k 1 2>/dev/null | awk 'NR == 2 {print $2, $3}'; }

fail=0
old=$(count)
[ "$old" = 10 ] || { echo "FAIL: built database holds $old images, not 10"; exit 1; }
seen_old=0; seen_new=0
# Rounds 0-8 kill right after a given step of the append has said it is done (each step then
# sleeps 60 ms, so the kill lands before the next one; "begin" is before the database lock,
# "start" just after it), rounds 9-11 at random moments. Until the manifest is replaced the old
# content must be there, from then on the new.
steps=("" "begin" "start" "store rows" "store header" "names" "index written" "index renamed" "manifest (committed)")
for r in 0 1 2 3 4 5 6 7 8 9 10 11; do
  files=("$tmp/add$r"/*.png)
  : > "$tmp/add.log"
  SEMIPAINT_RT_ADD_PAUSE_MS=60 "$hooks" index add "$db" "${files[@]}" >/dev/null 2>"$tmp/add.log" &
  pid=$!
  want=any
  if [ "$r" -lt 9 ]; then
    target=${steps[$r]}
    if [ -n "$target" ]; then
      for _ in $(seq 2000); do
        grep -q "rt_db_add: $target done" "$tmp/add.log" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.005
      done
    fi
    want=old; [ "$target" = "manifest (committed)" ] && want=new
    how="after step '${target:-(before any)}'"
  else
    sleep "$(echo "scale=3; ($RANDOM % 500) / 1000" | bc)"
    how="at a random moment"
  fi
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if ! n=$(count); then
    echo "FAIL round $r: the database does not open after a kill $how"; "$bin" index info "$db" || true; fail=1; break
  fi
  if [ "$n" = "$old" ]; then
    state=old; seen_old=$((seen_old + 1))
  elif [ "$n" = $((old + ${#files[@]})) ]; then
    state=new; seen_new=$((seen_new + 1))
  else
    echo "FAIL round $r: count $n, neither the old $old nor the new $((old + ${#files[@]}))"; fail=1; break
  fi
  if [ "$want" != any ] && [ "$want" != "$state" ]; then
    echo "FAIL round $r: killed $how, found the $state content, want the $want"; fail=1
  fi
  # Committed images find themselves at their ids; uncommitted ones find nothing past the old end.
  for j in "${!files[@]}"; do
    read -r id score < <(top1 "${files[$j]}")
    if [ "$state" = new ]; then
      want_id=$((old + j))
      if [ "$id" != "$want_id" ] || [ "$(echo "$score < 0.9999" | bc)" = 1 ]; then
        echo "FAIL round $r ($state): ${files[$j]} -> id $id score $score, want id $want_id"; fail=1
      fi
    elif [ "$id" -ge "$old" ]; then
      echo "FAIL round $r ($state): ${files[$j]} -> id $id beyond the committed $old images"; fail=1
    fi
  done
  # An image from before still finds itself.
  last=$(ls "$tmp/base"/*.png | tail -1)
  read -r id score < <(top1 "$last")
  [ "$id" = 9 ] || { echo "FAIL round $r: $last -> id $id, want 9"; fail=1; }
  step=$(grep -o 'rt_db_add: .* done' "$tmp/add.log" | tail -1 | sed 's/rt_db_add: //; s/ done//' || true)
  echo "round $r: killed $how (last step done: ${step:-none}) -> $state content ($n images)"
  old=$n
done

# An append that is left to finish, after all the kills: clean, complete, and no stale files.
files=("$tmp/add12"/*.png)
"$bin" index add "$db" "${files[@]}" >/dev/null 2>&1 || { echo "FAIL: final add"; fail=1; }
n=$(count)
[ "$n" = $((old + 5)) ] || { echo "FAIL: final add: count $n, want $((old + 5))"; fail=1; }
read -r id score < <(top1 "${files[4]}")
[ "$id" = $((old + 4)) ] || { echo "FAIL: final add: last image -> id $id, want $((old + 4))"; fail=1; }
nidx=$(ls "$db" | grep -c '^index\.' || true)
leftovers=$(ls "$db" | grep -c 'tmp' || true)
[ "$nidx" = 1 ] && [ "$leftovers" = 0 ] || { echo "FAIL: stale files in $db: $(ls "$db" | tr '\n' ' ')"; fail=1; }
echo "kills: $seen_old left the old content, $seen_new the new; final count $n"
[ "$fail" = 0 ] && echo "it_retrieval_kill: PASS" || { echo "it_retrieval_kill: FAIL"; exit 1; }
