#!/usr/bin/env bash
# gpu_check.sh: the first-GPU-run check of the CUDA backend as one bounded command: test_cuda_ops per precision, the heuristic algorithm path, the paper256 golden networks, `semipaint bench --device cuda` at batch 1, 8, 32, and compute-sanitizer where it can attach; each step's log and PASS/FAIL/SKIP line are written as it finishes.
#
#   bash tests/gpu_check.sh [--budget SECONDS]
#                   on a machine with a GPU, from anywhere in the checkout. The whole run, unpacking
#                   or building included, ends within the budget (default 480 s: a device loan may
#                   allow one 10-minute command). Uses the bundle below when it is there, else builds
#                   `make CUDA=1 BUILD=build-cuda` (which needs the Debian build dependencies).
#   bash tests/gpu_check.sh --bundle
#                   on the build machine (no GPU needed): builds CUDA=1 and packs test_cuda_ops,
#                   semipaint and the shared libraries a bare CUDA image lacks (oneDNN, OpenBLAS, ...)
#                   into build-cuda/gpu-bundle.tar.xz, for a GPU machine without them; cuDNN is taken
#                   from that machine.
#
# Steps, most valuable first. Each runs under `timeout` with the smaller of its cap and what is left
# of the budget; one that would get less than 20 s is SKIPped, and so is what the machine cannot do.
#   ops_<prec>   test_cuda_ops (SEMIPAINT_TEST_PART=ops): every op against the CPU at batch 1, 8, 13,
#                the small golden networks, the networks at batch 12; with fp32 also the error paths
#                (the backend's test hook), SEMIPAINT_CUDA_NHWC both ways and heuristic fp16 on
#                awkward channel counts
#   heuristic    test_cuda_ops fp16 with SEMIPAINT_CUDA_ALGO=heuristic (cuDNN's _v7 heuristics)
#   fixtures     build/fixtures/paper256 made with PyTorch, when absent
#   golden       test_cuda_ops SEMIPAINT_TEST_PART=paper256: the paper256 golden networks, each precision
#   bench_<prec> semipaint bench --batch 1,8,32 on the paper256 weights
#   sanitizer    compute-sanitizer memcheck over test_cuda_ops fp16 (small fixtures, heuristic
#                algorithms), after a probe: where the sanitizer cannot attach (sandboxed GPUs answer
#                "Device not supported", then error 999 at the first allocation) it is a SKIP
#
# Output: $OUT when set (the device tool's result folder, which returns at most 8 files), else
# build-cuda/gpu-check/: summary.txt (one PASS/FAIL/SKIP line per step, appended as each ends),
# device.txt, build.log, ops.log, golden.log, bench.log, sanitizer.log; each step appends to its
# log while it runs, so a run cut short still leaves what it did. Exit status 1 when a step FAILed.
#
# Settings (environment): GPU_CHECK_PRECISIONS ("fp32 fp16 tf32"), GPU_CHECK_BATCHES (1,8,32),
# GPU_CHECK_SANITIZER (1; 0 skips compute-sanitizer), GPU_CHECK_PEAK_<PREC> (GFLOP/s for %peak;
# defaults for an H100/H200 SXM: dense fp32 67000, tf32 494700, fp16 989400 from the data sheet).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--bundle" ]; then
  make CUDA=1 BUILD=build-cuda -j2 || exit 1
  d=$(mktemp -d)
  mkdir -p "$d/bin" "$d/lib"
  cp build-cuda/tests/test_cuda_ops build-cuda/semipaint "$d/bin/"
  # Everything the binaries load except the C library family, the C++ runtime (the GPU machine's
  # is newer and cuDNN needs it) and cuDNN/the driver (taken from the GPU machine).
  for b in "$d"/bin/*; do ldd "$b"; done | awk '/=> \//{print $3}' | sort -u | while read -r l; do
    case "$(basename "$l")" in
      libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libstdc++*|libgcc_s*|libcudnn*|libcuda.so*) ;;
      *) cp -L "$l" "$d/lib/" ;;
    esac
  done
  XZ_OPT=-9e tar -C "$d" -cJf build-cuda/gpu-bundle.tar.xz bin lib && rm -rf "$d"
  ls -la build-cuda/gpu-bundle.tar.xz
  echo "carry build-cuda/gpu-bundle.tar.xz to the GPU machine and run: bash tests/gpu_check.sh"
  exit 0
fi

BUDGET=480
while [ $# -gt 0 ]; do
  case $1 in
    --budget) BUDGET=${2:-}; shift 2 || { echo "gpu_check: --budget needs a number of seconds" >&2; exit 2; } ;;
    --budget=*) BUDGET=${1#--budget=}; shift ;;
    *) echo "usage: bash tests/gpu_check.sh [--budget SECONDS] | --bundle" >&2; exit 2 ;;
  esac
done
case $BUDGET in ''|*[!0-9]*) echo "gpu_check: --budget '$BUDGET' is not a number of seconds" >&2; exit 2 ;; esac
[ "$BUDGET" -ge 60 ] || { echo "gpu_check: --budget $BUDGET: at least 60 seconds" >&2; exit 2; }

LOG=${OUT:-build-cuda/gpu-check}
mkdir -p "$LOG"
SUM=$LOG/summary.txt
: > "$SUM"
for f in device.txt build.log ops.log golden.log bench.log sanitizer.log; do : > "$LOG/$f"; done
PRECS=${GPU_CHECK_PRECISIONS:-fp32 fp16 tf32}
BATCHES=${GPU_CHECK_BATCHES:-1,8,32}
FX=build/fixtures/paper256
MIN_STEP=20 # seconds: a step that would get less is skipped
RESERVE=5   # seconds kept for the summary
t0=$(date +%s)
DEADLINE=$((t0 + BUDGET))
fail=0
echo "gpu_check: budget ${BUDGET}s, logs in $LOG" | tee -a "$SUM"

now() { date +%s; }

# record STATUS NAME SECONDS NOTE: one summary line, written at once.
record() {
  printf '%-4s %-14s %4ss  %s\n' "$1" "$2" "$3" "$4" | tee -a "$SUM"
  [ "$1" = FAIL ] && fail=1
  return 0
}

# run_step NAME LOG CAP CMD...: runs CMD, output appended to LOG as it comes, under timeout with
# min(CAP, budget left); sets RC (124/137: timed out, 200: skipped for the budget), SECS, CUT (1 when
# the budget, not CAP, set the limit) and PART, a file holding this step's output alone. Records
# nothing: the caller judges.
PART=$(mktemp)
trap 'rm -f "$PART"' EXIT
run_step() {
  local name=$1 log=$2 cap=$3
  shift 3
  local l=$((DEADLINE - $(now) - RESERVE)) off
  : > "$PART"
  SECS=0
  CUT=0
  if [ "$l" -lt "$MIN_STEP" ]; then
    RC=200
    echo "=== $name: skipped, ${l}s of the budget left" >> "$log"
    return
  fi
  [ "$l" -lt "$cap" ] && cap=$l CUT=1
  printf '\n=== %s (at %ss, limit %ss): %s\n' "$name" "$(($(now) - t0))" "$cap" "$*" >> "$log"
  off=$(stat -c %s "$log")
  local s
  s=$(now)
  timeout -k 5 "$cap" "$@" >> "$log" 2>&1
  RC=$?
  SECS=$(($(now) - s))
  tail -c +$((off + 1)) "$log" > "$PART"
  echo "=== $name: rc $RC after ${SECS}s" >> "$log"
}

timed_out() { [ "$RC" = 124 ] || [ "$RC" = 137 ]; }

# A step the budget cut short is a SKIP (what it did is in its log); one that ran past its own cap FAILs.
budget_cut() { timed_out && [ "$CUT" = 1 ]; }

# The lines of a test_cuda_ops run worth seeing on the console.
show_test() { grep -E "SKIP|FAIL|CHECK failed|worst at|: [0-9]+ checks|^== " "$PART" | head -${1:-30}; }

# Judges a test_cuda_ops step: PASS needs rc 0 and a GPU actually used.
judge_test() {
  local name=$1
  if [ "$RC" = 200 ]; then record SKIP "$name" 0 "budget spent"; return; fi
  if budget_cut && ! grep -qE "CHECK failed|ratio .* FAIL" "$PART"; then
    record SKIP "$name" "$SECS" "the budget ran out before the end; no failure before that (partial log in $2)"
  elif timed_out; then
    record FAIL "$name" "$SECS" "timed out (partial log in $2)"
  elif grep -q "SKIP: no GPU" "$PART"; then
    record FAIL "$name" "$SECS" "test_cuda_ops found no usable GPU: $(grep -m1 'SKIP: no GPU' "$PART")"
  elif [ "$RC" = 0 ]; then
    record PASS "$name" "$SECS" "$(grep -m1 -E ': [0-9]+ checks' "$PART")"
  else
    record FAIL "$name" "$SECS" "rc $RC: $(grep -m1 -E ': [0-9]+ checks' "$PART") (log $2)"
  fi
  show_test 30
}

# ---- device and setup ----

{
  echo "date: $(date -u)"
  timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 ||
    echo "(nvidia-smi failed)"
  command -v compute-sanitizer || echo "(no compute-sanitizer on PATH)"
} > "$LOG/device.txt" 2>&1
cat "$LOG/device.txt"

# The directory holding libcudnn.so.9 on this machine (system, CUDA toolkit, or the nvidia-cudnn
# Python wheel), and with the wheel the sibling nvidia/*/lib directories cuDNN loads from.
cudnn_dirs() {
  for dir in /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu /usr/local/lib; do
    [ -e "$dir/libcudnn.so.9" ] && { echo "$dir"; return; }
  done
  l=$(ldconfig -p 2>/dev/null | awk '/libcudnn\.so\.9 /{print $NF; exit}')
  [ -n "$l" ] && { dirname "$l"; return; }
  python3 - <<'EOF' 2>/dev/null
import glob, os
import nvidia.cudnn as m
root = os.path.dirname(list(m.__path__)[0])
print(":".join([os.path.join(list(m.__path__)[0], "lib")] + sorted(glob.glob(os.path.join(root, "*", "lib")))))
EOF
}

if [ -f build-cuda/gpu-bundle.tar.xz ]; then
  B=$(mktemp -d)
  trap 'rm -rf "$B" "$PART"' EXIT
  s=$(now)
  if tar -C "$B" -xJf build-cuda/gpu-bundle.tar.xz >> "$LOG/build.log" 2>&1 ||
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' build-cuda/gpu-bundle.tar.xz "$B" >> "$LOG/build.log" 2>&1; then
    TEST=$B/bin/test_cuda_ops
    SEMIPAINT=$B/bin/semipaint
    cd_dirs=$(cudnn_dirs)
    if [ -z "$cd_dirs" ]; then
      record FAIL setup $(($(now) - s)) "no libcudnn.so.9 on this machine"
      exit 1
    fi
    echo "cuDNN from: $cd_dirs" >> "$LOG/device.txt"
    export LD_LIBRARY_PATH="$B/lib:$cd_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    record PASS setup $(($(now) - s)) "unpacked build-cuda/gpu-bundle.tar.xz; cuDNN from $cd_dirs"
  else
    record FAIL setup $(($(now) - s)) "could not unpack build-cuda/gpu-bundle.tar.xz (build.log)"
    exit 1
  fi
else
  run_step build "$LOG/build.log" "$BUDGET" make CUDA=1 BUILD=build-cuda -j"$(nproc)"
  if [ "$RC" != 0 ]; then
    tail -40 "$PART"
    record FAIL setup "$SECS" "make CUDA=1 BUILD=build-cuda: rc $RC (build.log)"
    exit 1
  fi
  TEST=build-cuda/tests/test_cuda_ops
  SEMIPAINT=build-cuda/semipaint
  record PASS setup "$SECS" "built with make CUDA=1 BUILD=build-cuda"
fi
ldd "$TEST" 2>&1 | grep -E "cudnn|cudart|dnnl|not found" | tee -a "$LOG/device.txt"

# ---- 1. the ops, small golden networks, batch-12 networks, error paths ----

for p in $PRECS; do
  run_step "ops_$p" "$LOG/ops.log" 200 env SEMIPAINT_TEST_PRECISION="$p" SEMIPAINT_TEST_PART=ops "$TEST"
  judge_test "ops_$p" "$LOG/ops.log"
done

# The heuristic algorithm path in its own step (it used to run only under compute-sanitizer).
run_step heuristic "$LOG/ops.log" 120 env SEMIPAINT_TEST_PRECISION=fp16 SEMIPAINT_TEST_PART=ops \
  SEMIPAINT_CUDA_ALGO=heuristic "$TEST"
judge_test heuristic "$LOG/ops.log"

# ---- 2. the paper256 golden networks ----

if [ ! -f "$FX/io_b3.safetensors" ]; then
  if ! python3 -c 'import torch' > /dev/null 2>&1; then
    record SKIP fixtures 0 "no $FX and no PyTorch to make it"
  else
    run_step fixtures "$LOG/golden.log" 150 python3 training/gen_fixtures.py --config paper256 --out "$FX"
    if [ "$RC" = 200 ] || budget_cut; then
      record SKIP fixtures "$SECS" "budget spent"
    elif [ "$RC" = 0 ] && [ -f "$FX/io_b3.safetensors" ]; then
      record PASS fixtures "$SECS" "made $FX"
    else
      tail -5 "$PART"
      record FAIL fixtures "$SECS" "gen_fixtures.py rc $RC (golden.log)"
    fi
  fi
fi
if [ -f "$FX/io_b3.safetensors" ]; then
  run_step golden "$LOG/golden.log" 240 env SEMIPAINT_TEST_PART=paper256 SEMIPAINT_FIXTURES_PAPER256="$FX" "$TEST"
  judge_test golden "$LOG/golden.log"
else
  record SKIP golden 0 "no $FX"
fi

# ---- 3. bench at batch 1, 8, 32 ----

for p in $PRECS; do
  if [ ! -f "$FX/pconv_unet.safetensors" ]; then
    record SKIP "bench_$p" 0 "no paper256 weights in $FX"
    continue
  fi
  case $p in fp32) pk=${GPU_CHECK_PEAK_FP32:-67000} ;; tf32) pk=${GPU_CHECK_PEAK_TF32:-494700} ;; *) pk=${GPU_CHECK_PEAK_FP16:-989400} ;; esac
  run_step "bench_$p" "$LOG/bench.log" 120 "$SEMIPAINT" bench --device cuda --precision "$p" --batch "$BATCHES" \
    --iters 5 --warmup 1 --threads "$(nproc)" --peak-gflops "$pk" --weights-dir "$FX"
  if [ "$RC" = 200 ]; then
    record SKIP "bench_$p" 0 "budget spent"
  elif [ "$RC" = 0 ]; then
    tail -20 "$PART"
    record PASS "bench_$p" "$SECS" "batches $BATCHES"
  elif budget_cut; then
    tail -20 "$PART"
    record SKIP "bench_$p" "$SECS" "the budget ran out before the end (partial log in bench.log)"
  else
    tail -20 "$PART"
    record FAIL "bench_$p" "$SECS" "$(timed_out && echo "timed out" || echo "rc $RC") (bench.log)"
  fi
done

# ---- 4. compute-sanitizer, where it can attach ----

if [ "${GPU_CHECK_SANITIZER:-1}" != 1 ]; then
  record SKIP sanitizer 0 "GPU_CHECK_SANITIZER=${GPU_CHECK_SANITIZER}"
elif ! command -v compute-sanitizer > /dev/null; then
  record SKIP sanitizer 0 "no compute-sanitizer on PATH"
else
  # The probe: one backend, one allocation, a few kernels and transfers under memcheck.
  run_step sanitizer_probe "$LOG/sanitizer.log" 60 env SEMIPAINT_TEST_PRECISION=probe \
    compute-sanitizer --tool memcheck --error-exitcode 99 "$TEST"
  usable=0
  if [ "$RC" = 200 ]; then
    record SKIP sanitizer 0 "budget spent"
  elif [ "$RC" = 0 ] && grep -q "probe ok" "$PART" && ! grep -q "SKIP: no GPU" "$PART"; then
    usable=1
  elif why=$(grep -m1 -iE "device not supported|error 999|CUDA_ERROR_UNKNOWN|cudaErrorUnknown|unknown error|SKIP: no GPU|unable to|not supported" "$PART"); then
    record SKIP sanitizer "$SECS" "compute-sanitizer cannot attach here: $why"
  elif timed_out; then
    record SKIP sanitizer "$SECS" "the probe timed out$([ "$CUT" = 1 ] && echo " (budget)") (sanitizer.log)"
  else
    grep -m 20 -E "Invalid|ERROR|Error|FAIL" "$PART"
    record FAIL sanitizer "$SECS" "memcheck probe rc $RC (sanitizer.log)"
  fi
  if [ $usable = 1 ]; then
    run_step sanitizer "$LOG/sanitizer.log" 240 env SEMIPAINT_TEST_PRECISION=fp16 SEMIPAINT_TEST_PART=ops \
      SEMIPAINT_CUDA_ALGO=heuristic compute-sanitizer --tool memcheck --error-exitcode 99 "$TEST"
    tail -3 "$PART"
    if [ "$RC" = 200 ]; then
      record SKIP sanitizer 0 "budget spent after the probe"
    elif [ "$RC" = 0 ]; then
      record PASS sanitizer "$SECS" "memcheck clean: test_cuda_ops fp16, heuristic algorithms"
    elif timed_out && ! grep -qE "^========= (Invalid|Error)|ERROR SUMMARY: [1-9]" "$PART"; then
      record SKIP sanitizer "$SECS" "memcheck timed out before the end; no error before that (sanitizer.log)"
    else
      grep -m 20 -E "Invalid|ERROR|Error" "$PART"
      record FAIL sanitizer "$SECS" "memcheck rc $RC (sanitizer.log)"
    fi
  fi
fi

total=$(($(now) - t0))
echo "gpu_check: $([ $fail = 0 ] && echo PASS || echo FAIL) in ${total}s of ${BUDGET}s (logs in $LOG)" | tee -a "$SUM"
exit $fail
