#!/usr/bin/env bash
# gpu_check.sh: the first-GPU-run check of the CUDA backend: test_cuda_ops per precision, compute-sanitizer over it, and `semipaint bench --device cuda` at batch 1, 8, 32 (about 5 minutes on an H100).
#
#   bash tests/gpu_check.sh            on a machine with a GPU, from anywhere in the checkout. Uses the
#                                      bundle below when it is there, else builds `make CUDA=1
#                                      BUILD=build-cuda` (which needs the Debian build dependencies).
#   bash tests/gpu_check.sh --bundle   on the build machine (no GPU needed): builds CUDA=1 and packs
#                                      test_cuda_ops, semipaint and the shared libraries a bare CUDA
#                                      image lacks (oneDNN, OpenBLAS, ...) into build-cuda/gpu-bundle.tar.xz,
#                                      for a GPU machine without them; cuDNN is taken from that machine.
#
# Settings (environment): GPU_CHECK_PRECISIONS ("fp32 tf32 fp16"), GPU_CHECK_BATCHES (1,8,32),
# GPU_CHECK_SANITIZER (1; 0 skips compute-sanitizer), GPU_CHECK_PEAK_<PREC> (GFLOP/s for %peak;
# defaults for an H100/H200 SXM: dense fp32 67000, tf32 494700, fp16 989400 from the data sheet).
# Logs go to $OUT when set (the device tool's result folder), else build-cuda/gpu-check/.
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

LOG=${OUT:-build-cuda/gpu-check}
mkdir -p "$LOG"
PRECS=${GPU_CHECK_PRECISIONS:-fp32 tf32 fp16}
BATCHES=${GPU_CHECK_BATCHES:-1,8,32}
fail=0
t0=$(date +%s)
step() { echo; echo "=== [$(( $(date +%s) - t0 )) s] $*"; }

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "(nvidia-smi failed)"

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
  step "unpacking build-cuda/gpu-bundle.tar.xz"
  B=$(mktemp -d)
  trap 'rm -rf "$B"' EXIT
  tar -C "$B" -xJf build-cuda/gpu-bundle.tar.xz 2>/dev/null ||
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' build-cuda/gpu-bundle.tar.xz "$B" ||
    exit 1
  TEST=$B/bin/test_cuda_ops
  SEMIPAINT=$B/bin/semipaint
  cd_dirs=$(cudnn_dirs)
  [ -n "$cd_dirs" ] || { echo "gpu_check: no libcudnn.so.9 on this machine" >&2; exit 1; }
  echo "cuDNN from: $cd_dirs"
  export LD_LIBRARY_PATH="$B/lib:$cd_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  step "make CUDA=1 BUILD=build-cuda"
  make CUDA=1 BUILD=build-cuda -j"$(nproc)" > "$LOG/build.log" 2>&1 || { tail -40 "$LOG/build.log"; exit 1; }
  TEST=build-cuda/tests/test_cuda_ops
  SEMIPAINT=build-cuda/semipaint
fi
ldd "$TEST" | grep -E "cudnn|cudart|dnnl|not found"

# paper256 random-weight fixtures: the bench's weights and the large golden check.
FX=build/fixtures/paper256
if [ ! -f "$FX/io_b3.safetensors" ]; then
  step "generating $FX with PyTorch"
  timeout 300 python3 training/gen_fixtures.py --config paper256 --out "$FX" > "$LOG/fixtures.log" 2>&1 ||
    { echo "fixture generation failed (the bench and the paper256 golden check are skipped):"; tail -5 "$LOG/fixtures.log"; }
fi

# One log per step kind (the device tool returns at most 8 files).
: > "$LOG/test_cuda_ops.log"
: > "$LOG/bench.log"
one=$(mktemp)
for p in $PRECS; do
  step "test_cuda_ops $p"
  SEMIPAINT_TEST_PRECISION=$p timeout 300 "$TEST" > "$one" 2>&1
  rc=$?
  cat "$one" >> "$LOG/test_cuda_ops.log"
  if [ $rc = 0 ] && ! grep -q "SKIP: no GPU" "$one"; then
    grep -E "^== |GPU memory|pconv_unet|descriptor|conv7|: [0-9]+ checks" "$one"
  else
    fail=1
    echo "FAIL test_cuda_ops $p (rc $rc; log $LOG/test_cuda_ops.log):"
    grep -E "SKIP|FAIL|CHECK failed|worst|error|: [0-9]+ checks" "$one" | head -40
  fi
done
rm -f "$one"

if [ "${GPU_CHECK_SANITIZER:-1}" = 1 ] && command -v compute-sanitizer >/dev/null; then
  step "compute-sanitizer memcheck: test_cuda_ops fp16, small fixtures, heuristic algorithms"
  SEMIPAINT_TEST_PRECISION=fp16 SEMIPAINT_SKIP_PAPER256=1 SEMIPAINT_CUDA_ALGO=heuristic timeout 240 \
    compute-sanitizer --tool memcheck \
    --error-exitcode 99 "$TEST" > "$LOG/sanitizer.log" 2>&1
  rc=$?
  tail -3 "$LOG/sanitizer.log"
  case $rc in
    0) echo "sanitizer: clean" ;;
    124) echo "sanitizer: timed out (not counted as a failure)" ;;
    *) fail=1; echo "sanitizer: rc $rc"; grep -m 20 -E "Invalid|ERROR|Error" "$LOG/sanitizer.log" ;;
  esac
fi

if [ -f "$FX/pconv_unet.safetensors" ]; then
  for p in $PRECS; do
    case $p in fp32) pk=${GPU_CHECK_PEAK_FP32:-67000} ;; tf32) pk=${GPU_CHECK_PEAK_TF32:-494700} ;; *) pk=${GPU_CHECK_PEAK_FP16:-989400} ;; esac
    step "semipaint bench --device cuda --precision $p --batch $BATCHES"
    timeout 300 "$SEMIPAINT" bench --device cuda --precision "$p" --batch "$BATCHES" --iters 5 --warmup 1 \
      --threads "$(nproc)" --peak-gflops "$pk" --weights-dir "$FX" 2>&1 | tee -a "$LOG/bench.log"
    [ "${PIPESTATUS[0]}" = 0 ] || { fail=1; echo "FAIL bench $p"; }
  done
fi

step "done: $([ $fail = 0 ] && echo PASS || echo FAIL) (logs in $LOG)"
exit $fail
