#!/usr/bin/env bash
# it_train_general.sh: train.py --data-kind general on a few real photographs: native-size cache, database rows (== `semipaint index build`'s), deterministic multi-scale crop stream and mixed masks, exact resume (2+2 steps == 4 steps).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/usr/bin/python3}
BUILD=${BUILD:-build}
DATA=../shared/data/general/train
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
# three photographs of each source: square, landscape and portrait, 150-320 px
for p in bsds camvid imagenette intel; do
  for f in $(ls "$DATA" | grep "^${p}_" | sort | awk 'NR % 37 == 1' | head -3); do
    ln -s "$(cd "$DATA" && pwd)/$f" "$tmp/img/$f"
  done
done
n=$(ls "$tmp/img" | wc -l)
[ "$n" -eq 12 ] || { echo "FAIL: expected 12 test images, found $n"; exit 1; }

T="$PY training/train.py"
echo "== native cache, rows and neighbours (12 photographs, rows at 64x64)"
$T cache --data-kind general --data "$tmp/img" --cache-dir "$tmp/cache"
$T neighbours --data-kind general --cache-dir "$tmp/cache" --size 64 --k 2
"$PY" - "$tmp/img" "$tmp/cache" <<'EOF'
import os, sys
import numpy as np
from PIL import Image
sys.path.insert(0, "training")
import qdimd, train
src, cache = sys.argv[1], sys.argv[2]
imgs = train.GeneralImages(cache)
names = open(os.path.join(cache, "names.txt")).read().split()
assert names == sorted(os.listdir(src)) and len(imgs) == 12, names
for i, n in enumerate(names):
    assert np.array_equal(imgs[i], np.asarray(Image.open(os.path.join(src, n)).convert("RGB"))), n
nb = np.load(os.path.join(cache, "neighbours_thumb16_64.npy"))
assert nb.shape == (12, 4) and not (nb == np.arange(12)[:, None]).any(), nb
rows = np.load(os.path.join(cache, "rows64.u8"), mmap_mode="r")
assert rows.shape == (12, 64, 64, 3)
# resampling: a factor-2 shrink is the 2x2 mean rounded half up; a same-size crop is a copy
a = np.random.default_rng(0).integers(0, 256, (40, 60, 3)).astype(np.uint8)
m = a.reshape(20, 2, 30, 2, 3).astype(np.float64).mean(axis=(1, 3))
assert np.array_equal(train.resize_rect(a, 0, 0, 60, 40, 30, 20), np.floor(m + 0.5)), "area resampling"
assert np.array_equal(train.resize_rect(a, 3, 2, 20, 20, 20, 20), a[2:22, 3:23])

masks = train.MixedMasks(qdimd.DEFAULT_NDJSON, qdimd.Params(size=64, seed=1000), 1000, 0.5)
def stream():
    return train.GeneralStream(imgs, rows, nb, 3, 1, 64, masks)
s1, s2 = stream(), stream()
for step in (0, 1, 5, 9):  # 9 crosses into the third epoch of 12 images at batch 3
    x, y = s1.batch_at(step, 1), s2.batch_at(step, 1)
    assert all(np.array_equal(np.asarray(p), np.asarray(q)) for p, q in zip(x, y)), f"step {step} not deterministic"
    img, m1, nbr, ids = x
    assert img.shape == (3, 3, 64, 64) and m1.shape == (3, 1, 64, 64) and nbr.shape == (3, 1, 3, 64, 64)
    assert 0 <= float(img.min()) and float(img.max()) <= 1 and set(np.unique(m1.numpy())) <= {0.0, 1.0}
    assert 0 < float((1 - m1).mean()) < 0.9
x4 = s1.batch_at(4, 1)
assert not np.array_equal(np.asarray(x4[0]), np.asarray(s1.batch_at(5, 1)[0])), "two steps gave the same batch"
ids = np.concatenate([s1.batch_at(st, 1)[3] for st in range(4)])
assert sorted(ids) == list(range(12)), ids  # one epoch: every image once
# crops: squares inside the image, side between min(S, short side) and the short side, both ends reached
rng = np.random.default_rng(3)
sides = {}
for i in range(12):
    _, h, w = imgs.table[i]
    for u in list(rng.random((200, 3))) + [(0.0, 0.0, 0.0), (0.999999, 0.999999, 0.999999)]:
        x0, y0, side = s1.crop_box(i, *u)
        assert min(64, h, w) <= side <= min(h, w) and 0 <= x0 <= w - side and 0 <= y0 <= h - side, (i, u, x0, y0, side)
        sides.setdefault(i, set()).add(side)
    assert min(sides[i]) == min(64, h, w) and max(sides[i]) == min(h, w), (i, min(sides[i]), max(sides[i]))
# strokes and blobs: a pure function of the index, hole ratios in 5-65 %
r = []
for i in range(30):
    m = train.stroke_blob_mask(64, 1000, i)
    assert np.array_equal(m, train.stroke_blob_mask(64, 1000, i)) and m.dtype == np.uint8
    r.append((m > 0).mean())
assert 0.02 < min(r) and max(r) <= 0.65 and np.std(r) > 0.08, r
print(f"general stream: deterministic, crops and masks in range (strokes-and-blobs hole ratios "
      f"{min(r):.2f}-{max(r):.2f})")
EOF
if [ -x "$BUILD/semipaint" ]; then
  echo "== database rows: train.square_row == semipaint index build's stored images (256, and --size 64: rows64)"
  "$BUILD/semipaint" index build --images "$tmp/img" --out "$tmp/db" --descriptor thumb16 --threads 1 > /dev/null
  "$BUILD/semipaint" index build --images "$tmp/img" --out "$tmp/db64" --size 64 --threads 1 > /dev/null
  "$PY" - "$tmp/cache" "$tmp/db/images.u8" "$tmp/db64/images.u8" <<'EOF'
import os, sys
import numpy as np
sys.path.insert(0, "training")
import train
imgs = train.GeneralImages(sys.argv[1])
for path, s in ((sys.argv[2], 256), (sys.argv[3], 64)):
    store = np.fromfile(path, dtype=np.uint8)[4096:].reshape(-1, s, s, 3)
    assert store.shape[0] == len(imgs), store.shape
    worst = max(int(np.abs(train.square_row(imgs[i], s).astype(int) - store[i]).max()) for i in range(len(imgs)))
    assert worst <= 1, f"rows differ from the {s} store by up to {worst}"
    print(f"square_row == the {s} store's rows (max difference {worst})")
rows = np.load(os.path.join(sys.argv[1], "rows64.u8"), mmap_mode="r")
assert np.array_equal(np.asarray(rows), store), "train.py's rows64 differ from index build --size 64"
EOF
else
  echo "($BUILD/semipaint absent: the rows check against index build skipped)"
fi

common=(--config small --batch 2 --nets pconv,sim1,sim0 --cache-dir "$tmp/cache" --log-every 1 --lr-high-steps 3)
echo "== 4 steps at once"
$T run --data-kind general "${common[@]}" --ckpt-dir "$tmp/a" --steps 4 > "$tmp/a.log"
echo "== 2 steps, resume (no --data-kind: the checkpoint's), 2 more"
$T run --data-kind general "${common[@]}" --ckpt-dir "$tmp/b" --steps 2 > "$tmp/b.log"
$T run "${common[@]}" --ckpt-dir "$tmp/b" --steps 2 >> "$tmp/b.log"
grep -q "resuming" "$tmp/b.log" || { echo "FAIL: the second run did not resume"; exit 1; }
$T same-checkpoints "$tmp/a/train.pt" "$tmp/b/train.pt"
[ "$(wc -l < "$tmp/a/loss_log.jsonl")" -eq 4 ] || { echo "FAIL: loss log has not 4 rows"; exit 1; }
if $T run --data-kind faces "${common[@]}" --ckpt-dir "$tmp/b" --steps 1 > /dev/null 2>&1; then
  echo "FAIL: a general checkpoint resumed as faces"; exit 1
fi
"$PY" - "$tmp/a/train.pt" <<'EOF'
import sys
import torch
a = torch.load(sys.argv[1])["args"]
assert a["data_kind"] == "general" and a["n_images"] == 12 and len(a["neighbours_sha256"]) == 16, a
EOF
echo "== export: general model card and licence"
$T export --ckpt-dir "$tmp/a" --out-dir "$tmp/w"
"$PY" - "$tmp/w" <<'EOF'
import sys
sys.path.insert(0, "training")
import export
for n in ("pconv", "sim1", "sim0"):
    m, meta = export.load_module(f"{sys.argv[1]}/{n}.safetensors")
    assert "non-commercial" in meta["licence"].lower() and "CamVid" in meta["licence"], meta["licence"]
    assert "general photographs" in meta["trained_on"] and "strokes and blobs" in meta["notes"], meta
EOF
SO="$BUILD/lib/libsemipaint_telea.so"
if [ -f "$SO" ]; then
  echo "== fit_blend on the general stream (the data kind from the model card; Sim-1 with the rows' neighbours)"
  for n in pconv sim1; do
    "$PY" training/fit_blend.py --net "$tmp/w/$n.safetensors" --out "$tmp/w/${n}_b.safetensors" --count 10 \
      --distances 4 --cache-dir "$tmp/cache" --lib "$SO" --threads 1 > "$tmp/fit_$n.log"
    grep -q "general/train crops with mixed QD-IMD, stroke and blob masks" "$tmp/fit_$n.log" &&
      grep -q "^all " "$tmp/fit_$n.log" || { echo "FAIL: fit_blend on the general stream"; cat "$tmp/fit_$n.log"; exit 1; }
  done
  "$PY" - "$tmp/w/sim1_b.safetensors" "$tmp/fit_sim1.log" <<'EOF'
import json, sys
sys.path.insert(0, "training")
import safetensors_io
m = json.loads(safetensors_io.load(sys.argv[1])[1]["semipaint"])
t = m["telea_blend"]
assert 1 <= len(t) <= 4 and t == sorted(t, reverse=True) and "general/train crops" in m["notes"], m
net, blend = [float(x) for x in next(l for l in open(sys.argv[2]) if l.startswith("all ")).split()[2:5:2]]
assert blend <= net + 1e-9, (net, blend)
print("fit_blend general: telea_blend", t, f"hole L1 {net:.2f}% -> {blend:.2f}%")
EOF
  if "$PY" training/fit_blend.py --net "$tmp/w/sim0.safetensors" --out "$tmp/w/x.safetensors" --count 13 \
    --cache-dir "$tmp/cache" --lib "$SO" --threads 1 > "$tmp/fit_x.log" 2>&1 || ! grep -q "holds 12 images" "$tmp/fit_x.log"; then
    echo "FAIL: fit_blend --count 13 on 12 images"; cat "$tmp/fit_x.log"; exit 1
  fi
else
  echo "($SO absent, e.g. under the sanitizers: the general fit_blend check skipped)"
fi
echo "it_train_general: OK"
