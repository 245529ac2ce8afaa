#!/usr/bin/env bash
# it_train.sh: training/train.py end to end on a few real images: cache, neighbours, exact resume (2+2 steps == 4 steps), export, the thumbnail descriptor against the C one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/usr/bin/python3}
BUILD=${BUILD:-build}
DATA=../shared/data/celebahq256/train
if ! "$PY" -c 'import torch, numpy, PIL' 2>/dev/null; then
  echo "SKIP: $PY has no torch/numpy/PIL (install python3-torch python3-numpy python3-pil)"
  exit 0
fi
if [ ! -d "$DATA" ] || [ ! -d ../shared/data/quickdraw/simplified ]; then
  echo "SKIP: $DATA or ../shared/data/quickdraw/simplified is absent"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/img"
for f in $(ls "$DATA" | sort | head -24); do ln -s "$(cd "$DATA" && pwd)/$f" "$tmp/img/$f"; done

T="$PY training/train.py"
echo "== cache and neighbours (24 images at 64x64)"
$T cache --data "$tmp/img" --cache-dir "$tmp/cache" --sizes 64
$T neighbours --cache-dir "$tmp/cache" --size 64 --k 2 --out "$tmp/nb.npy"
"$PY" - "$tmp/nb.npy" <<'EOF'
import sys
import numpy as np
nb = np.load(sys.argv[1])
assert nb.shape == (24, 2) and nb.dtype == np.int32, (nb.shape, nb.dtype)
assert not (nb == np.arange(24)[:, None]).any(), "an image is its own neighbour"
assert (nb[:, 0] != nb[:, 1]).all()
EOF

common=(--config small --batch 2 --nets pconv,sim1,sim0 --cache-dir "$tmp/cache" --neighbours "$tmp/nb.npy"
        --log-every 1 --lr-high-steps 3)
echo "== 4 steps at once"
$T run "${common[@]}" --ckpt-dir "$tmp/a" --steps 4 > "$tmp/a.log"
echo "== 2 steps, resume, 2 more"
$T run "${common[@]}" --ckpt-dir "$tmp/b" --steps 2 > "$tmp/b.log"
$T run "${common[@]}" --ckpt-dir "$tmp/b" --steps 2 >> "$tmp/b.log"
grep -q "resuming" "$tmp/b.log" || { echo "FAIL: the second run did not resume"; exit 1; }
$T same-checkpoints "$tmp/a/train.pt" "$tmp/b/train.pt"
[ "$(wc -l < "$tmp/a/loss_log.jsonl")" -eq 4 ] || { echo "FAIL: loss log has not 4 rows"; exit 1; }
echo "== a different seed gives different nets (the comparison can fail)"
$T run "${common[@]}" --ckpt-dir "$tmp/c" --steps 4 --seed 2 > /dev/null
if $T same-checkpoints "$tmp/a/train.pt" "$tmp/c/train.pt" 2>/dev/null; then
  echo "FAIL: seeds 1 and 2 gave identical checkpoints"; exit 1
fi

echo "== export with a model card"
$T export --ckpt-dir "$tmp/a" --out-dir "$tmp/w"
"$PY" - "$tmp/w" <<'EOF'
import sys
sys.path.insert(0, "training")
import export
for n, arch, k in (("pconv", "pconv_unet", -1), ("sim1", "simk_unet", 1), ("sim0", "simk_unet", 0)):
    m, meta = export.load_module(f"{sys.argv[1]}/{n}.safetensors")
    assert (meta["arch"], meta["k"], meta["size"]) == (arch, k, 64), meta
    assert "non-commercial" in meta["licence"] and "8 samples" in meta["trained_on"], meta
    assert "4 steps" in meta["notes"] and "hole" in meta["notes"], meta["notes"]
EOF
if [ -x "$BUILD/semipaint" ]; then
  for n in pconv sim1 sim0; do "$BUILD/semipaint" weights info "$tmp/w/$n.safetensors" > /dev/null; done
  echo "== thumb16: numpy port == retrieval/rt_desc.c"
  $T check-thumb --data "$DATA" --n 40 --queries 3
else
  echo "($BUILD/semipaint absent: weights info and the C descriptor check skipped)"
fi
echo "it_train: OK"
