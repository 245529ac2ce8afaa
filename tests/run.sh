#!/usr/bin/env bash
# run.sh: runs every test binary of $BUILD and every tests/it_*.sh integration script; prints a summary.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export BUILD PY=${PY:-/usr/bin/python3}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# paper256 golden fixtures are too large to commit: generate them once where PyTorch is present.
fx=build/fixtures/paper256
if [ ! -f "$fx/io_b3.safetensors" ] && "$PY" -c 'import torch' 2>/dev/null; then
  echo "generating $fx (PyTorch, about 30 s)"
  "$PY" training/gen_fixtures.py --config paper256 --out "$fx" >/dev/null || echo "fixture generation failed" >&2
fi
# The sanitizer pass runs the small configuration only: paper256 under ASan adds minutes, not coverage.
case "$BUILD" in *san*) export SEMIPAINT_SKIP_PAPER256=1;; esac
pass=0; fail=0; failed=()
for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  case "$t" in *.o|*.d) continue;; esac
  name=$(basename "$t")
  start=$(date +%s.%N)
  if "$t" > "$BUILD/tests/$name.log" 2>&1; then
    pass=$((pass+1)); printf 'PASS %-28s %6.1fs\n' "$name" "$(echo "$(date +%s.%N) - $start" | bc)"
  else
    fail=$((fail+1)); failed+=("$name"); printf 'FAIL %s (log: %s)\n' "$name" "$BUILD/tests/$name.log"
    tail -n 30 "$BUILD/tests/$name.log" | sed 's/^/    /'
  fi
done
for t in tests/it_*.sh; do
  [ -f "$t" ] || continue
  name=$(basename "$t" .sh)
  start=$(date +%s.%N)
  if bash "$t" > "$BUILD/tests/$name.log" 2>&1; then
    pass=$((pass+1)); printf 'PASS %-28s %6.1fs\n' "$name" "$(echo "$(date +%s.%N) - $start" | bc)"
  else
    fail=$((fail+1)); failed+=("$name"); printf 'FAIL %s (log: %s)\n' "$name" "$BUILD/tests/$name.log"
    tail -n 30 "$BUILD/tests/$name.log" | sed 's/^/    /'
  fi
done
echo "tests ($BUILD): $pass passed, $fail failed ${failed[*]:-}"
[ "$fail" -eq 0 ]
