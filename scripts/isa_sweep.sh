#!/usr/bin/env bash
# isa_sweep.sh: runs the golden and training tests with oneDNN's and PyTorch's kernels capped at AVX2 and at SSE4.1, and prints how far each result moves.
# Usage: scripts/isa_sweep.sh [OUTDIR]   (needs `make`; about 5 minutes on 2 cores). Each run's logs
# go to OUTDIR (default build/isa_sweep); the table at the end is what the README quotes.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
out=${1:-$BUILD/isa_sweep}
mkdir -p "$out"
# label, ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY ("" = the machine's best)
runs=("native||" "avx2|AVX2|avx2" "sse41|SSE41|default")
printf '%-7s %-9s %-9s %-12s %-12s %-14s %-9s %s\n' run onednn aten "nets worst" "ops worst" "widen change" threads status
for r in "${runs[@]}"; do
  IFS='|' read -r label isa aten <<< "$r"
  st=PASS
  env ${isa:+ONEDNN_MAX_CPU_ISA=$isa} ${aten:+ATEN_CPU_CAPABILITY=$aten} "$BUILD/tests/test_nets" > "$out/$label.nets.log" 2>&1 || st=FAIL
  env ${isa:+ONEDNN_MAX_CPU_ISA=$isa} ${aten:+ATEN_CPU_CAPABILITY=$aten} OMP_NUM_THREADS=1 "$BUILD/tests/test_nets" > "$out/$label.nets1.log" 2>&1 || st=FAIL
  env ${isa:+ONEDNN_MAX_CPU_ISA=$isa} ${aten:+ATEN_CPU_CAPABILITY=$aten} "$BUILD/tests/test_ops" > "$out/$label.ops.log" 2>&1 || st=FAIL
  env ${isa:+ONEDNN_MAX_CPU_ISA=$isa} ${aten:+ATEN_CPU_CAPABILITY=$aten} BUILD=$BUILD PY=$PY bash tests/it_train.sh > "$out/$label.train.log" 2>&1 || st=FAIL
  env ${isa:+ONEDNN_MAX_CPU_ISA=$isa} ${aten:+ATEN_CPU_CAPABILITY=$aten} BUILD=$BUILD PY=$PY bash tests/it_training.sh > "$out/$label.training.log" 2>&1 || st=FAIL
  worst() { grep -ho 'ratio [0-9.e+-]*' "$@" | awk '{ if ($2 > m) m = $2 } END { printf "%.2e", m }'; }
  widen=$(grep -ho 'Sim-1 output change max [0-9.e+-]*' "$out/$label.train.log" | awk '{print $5}' | sort -g | tail -n 1)
  printf '%-7s %-9s %-9s %-12s %-12s %-14s %-9s %s\n' "$label" "${isa:-best}" "${aten:-best}" \
    "$(worst "$out/$label.nets.log")" "$(worst "$out/$label.ops.log")" "${widen:-?}" "2 and 1" "$st"
done
