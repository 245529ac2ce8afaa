#!/usr/bin/env bash
# it_weights.sh: the shipped weights/ files match weights/SHA256SUMS, stay within 60 MB, and load as the nets the default config expects.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
[ -f weights/SHA256SUMS ] || { echo "FAIL: weights/SHA256SUMS is missing"; exit 1; }
(cd weights && sha256sum --strict -c SHA256SUMS)
for n in pconv sim1 sim0; do
  grep -q " $n.safetensors\$" weights/SHA256SUMS || { echo "FAIL: $n.safetensors is not in SHA256SUMS"; exit 1; }
done
total=$(cat weights/*.safetensors | wc -c)
[ "$total" -le $((60 * 1000 * 1000)) ] || { echo "FAIL: weights/*.safetensors hold $total bytes, over 60 MB"; exit 1; }
echo "weights: $total bytes in all"
if [ -x "$BUILD/semipaint" ]; then
  check() { # file arch k
    out=$("$BUILD/semipaint" weights info "weights/$1")
    echo "$out" | grep -Eq "^arch +$2\$" || { echo "FAIL: $1 is not $2"; echo "$out" | head -12; exit 1; }
    if [ "$3" != "-" ]; then
      echo "$out" | grep -Eq "^k +$3\$" || { echo "FAIL: $1 has not k = $3"; exit 1; }
    fi
    echo "$out" | grep -Eq "^telea blend +0?[.0-9]+" || { echo "FAIL: $1 carries no telea_blend table"; exit 1; }
    echo "$out" | grep -q "non-commercial" || { echo "FAIL: $1 has no CelebA licence in its model card"; exit 1; }
    sum=$(sha256sum "weights/$1" | cut -d' ' -f1)
    echo "$out" | grep -q "$sum" || { echo "FAIL: weights info of $1 does not show its sha256"; exit 1; }
    echo "$1: $2 (k $3) ok"
  }
  check pconv.safetensors pconv_unet -
  check sim1.safetensors simk_unet 1
  check sim0.safetensors simk_unet 0
else
  echo "($BUILD/semipaint absent: weights info checks skipped)"
fi
echo "it_weights: OK"
