#!/usr/bin/env bash
# it_eval.sh: `semipaint eval` on a few real faces and masks with random-init nets: report tables, grid, and every per-sample L1/PSNR/SSIM recomputed independently in numpy from the grid's tiles.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/usr/bin/python3}
BUILD=${BUILD:-build}
SP=$BUILD/semipaint
VAL=../shared/data/celebahq256/val
TRAIN=../shared/data/celebahq256/train
MASKS=../shared/data/masks/nvidia-irregular-test
[ -x "$SP" ] || { echo "SKIP: $SP not built"; exit 0; }
if ! "$PY" -c 'import torch, numpy, PIL' 2>/dev/null; then echo "SKIP: $PY lacks torch/numpy/PIL"; exit 0; fi
for d in "$VAL" "$TRAIN" "$MASKS"; do [ -d "$d" ] || { echo "SKIP: $d is absent"; exit 0; }; done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/img" "$tmp/masks" "$tmp/train"
for f in $(ls "$VAL" | sort | head -6); do ln -s "$(cd "$VAL" && pwd)/$f" "$tmp/img/$f"; done
# six masks spread over the hole ratios (the folder is sorted by ratio)
for f in $(ls "$MASKS" | sort | awk 'NR % 200 == 1'); do ln -s "$(cd "$MASKS" && pwd)/$f" "$tmp/masks/$f"; done
for f in $(ls "$TRAIN" | sort | head -10); do ln -s "$(cd "$TRAIN" && pwd)/$f" "$tmp/train/$f"; done

echo "== usage errors"
set +e
"$SP" eval --images "$tmp/img" > /dev/null 2>&1; [ $? -eq 2 ] || { echo "FAIL: missing --masks/--out not a usage error"; exit 1; }
"$SP" eval --images "$tmp/img" --masks "$tmp/masks" --out "$tmp/x" --methods telea,bogus > /dev/null 2>&1
[ $? -eq 2 ] || { echo "FAIL: unknown method accepted"; exit 1; }
"$SP" eval --images "$tmp/img" --masks "$tmp/masks" --out "$tmp/x" --coarse "$tmp/none.safetensors" > /dev/null 2> "$tmp/err"
[ $? -eq 1 ] && grep -q none.safetensors "$tmp/err" || { echo "FAIL: missing weights file not reported"; cat "$tmp/err"; exit 1; }
set -e

echo "== random-init nets (cpu256m) and a 10-image database"
for spec in "pconv_unet pconv 1" "simk_unet sim0 0" "simk_unet sim1 1"; do
  set -- $spec
  "$PY" training/export.py --arch "$1" --config cpu256m --k "$3" --seed 3 --out "$tmp/$2.safetensors" 2>/dev/null
done
"$SP" index build --images "$tmp/train" --out "$tmp/db" --descriptor thumb16 --threads 1 > /dev/null 2>&1

echo "== eval"
"$SP" eval --images "$tmp/img" --masks "$tmp/masks" --out "$tmp/out" --coarse "$tmp/pconv.safetensors" \
  --sim0 "$tmp/sim0.safetensors" --sim1 "$tmp/sim1.safetensors" --db "$tmp/db" --batch 4 --grid-rows 6 \
  --threads 1 --title "it_eval" > "$tmp/stdout"
cmp -s "$tmp/stdout" "$tmp/out/report.md" || { echo "FAIL: stdout differs from report.md"; exit 1; }

"$PY" - "$tmp/out" "$tmp/masks" <<'EOF'
import csv, sys
import numpy as np
from PIL import Image
out, masks_dir = sys.argv[1], sys.argv[2]
rep = open(f"{out}/report.md").read()
for needle in ("**L1 (%), lower is better**", "**PSNR (dB), higher is better**", "**SSIM, higher is better**",
               "| telea |", "| coarse |", "| sim0 |", "| sim1 |", "| sim1-true |", "| sim1-random |", "| sim1-noise |",
               "Section 5.6", "![grid](grid.png)", "(0.5,0.6]"):
    assert needle in rep, f"report lacks {needle!r}"
rows = list(csv.DictReader(open(f"{out}/samples.csv")))
methods = ["telea", "coarse", "sim0", "sim1", "sim1-true", "sim1-random", "sim1-noise"]
assert len(rows) == 6 * len(methods), len(rows)
grid = np.asarray(Image.open(f"{out}/grid.png").convert("RGB")).astype(np.float64)
S = 256
assert grid.shape == (6 * S, 7 * S, 3), grid.shape  # original, masked, 4 methods, neighbour

def ssim(a, b):
    """Wang et al.: 11x11 Gaussian (sigma 1.5) as a full 2-D kernel over every window inside the image."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2)); g /= g.sum()
    w = np.outer(g, g)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    res = []
    for c in range(3):
        x = np.lib.stride_tricks.sliding_window_view(a[..., c], (11, 11))
        y = np.lib.stride_tricks.sliding_window_view(b[..., c], (11, 11))
        mx, my = (x * w).sum((-1, -2)), (y * w).sum((-1, -2))
        vx = (x * x * w).sum((-1, -2)) - mx * mx
        vy = (y * y * w).sum((-1, -2)) - my * my
        cxy = (x * y * w).sum((-1, -2)) - mx * my
        res.append((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))).mean())
    return float(np.mean(res))

ratios = []
for r in rows:
    j, m = int(r["sample"]), r["method"]
    if m not in ("telea", "coarse", "sim0", "sim1"):
        continue
    col = 2 + ["telea", "coarse", "sim0", "sim1"].index(m)
    orig = grid[j * S:(j + 1) * S, 0:S]
    masked = grid[j * S:(j + 1) * S, S:2 * S]
    res = grid[j * S:(j + 1) * S, col * S:(col + 1) * S]
    changed = (res != orig).any(-1)
    assert (masked[changed] == 255).all(), f"sample {j} {m}: a pixel outside the hole changed"
    d = res - orig
    l1 = 100 * np.abs(d).mean() / 255
    psnr = 10 * np.log10(255 ** 2 / (d * d).mean())
    s = ssim(res, orig)
    assert abs(l1 - float(r["l1_pct"])) < 1e-3, (j, m, l1, r["l1_pct"])
    assert abs(psnr - float(r["psnr"])) < 1e-3, (j, m, psnr, r["psnr"])
    assert abs(s - float(r["ssim"])) < 1e-4, (j, m, s, r["ssim"])
    if m == "sim1":
        assert r["neighbour"].endswith(".jpg"), r
    ratios.append(float(r["hole_ratio"]))
assert max(ratios) > 0.4 and min(ratios) < 0.15, ratios  # spread over the buckets

# The table of hole L1 by distance to the known region, recomputed from the grid's tiles: the
# chessboard distance by repeated 3x3 dilation of the known region (outside the image: not known).
sec = rep.split("by their distance to the nearest known pixel")[1].split("\n\n")[1].splitlines()
assert sec[0].startswith("| method | 1 | 2 | 3-4 | 5-8 | 9-16 | 17+ |"), sec[0]
got = {l.split("|")[1].strip(): [float(v) if v.strip() != "-" else None for v in l.split("|")[2:-1]] for l in sec[2:]}
edges = [1, 2, 4, 8, 16, 10 ** 9]
err = {m: np.zeros(6) for m in ("telea", "coarse", "sim0", "sim1")}
cnt = np.zeros(6)
for j in range(6):
    hr = [r for r in rows if int(r["sample"]) == j][0]
    if not (0.01 <= float(hr["hole_ratio"]) <= 0.6):
        continue
    orig = grid[j * S:(j + 1) * S, 0:S]
    # the hole from the mask file (area-averaged to 256, luminance > 127), checked against the masked tile
    mk = np.asarray(Image.open(f"{masks_dir}/{hr['mask']}").convert("L").resize((S, S), Image.BOX)).astype(np.float64)
    hole = mk > 127
    masked = grid[j * S:(j + 1) * S, S:2 * S]
    assert (masked[hole] == 255).all() and (masked[~hole] == orig[~hole]).all(), f"sample {j}: hole != masked tile"
    assert abs(hole.mean() - float(hr["hole_ratio"])) < 1e-4, (j, hole.mean(), hr["hole_ratio"])
    known = ~hole
    dist = np.where(known, 0, 10 ** 9)
    reach, d = known.copy(), 0
    while not reach.all() and d < 2 * S:
        d += 1
        p = np.pad(reach, 1)
        grown = np.zeros_like(reach)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                grown |= p[1 + dy:1 + dy + S, 1 + dx:1 + dx + S]
        dist[grown & ~reach] = d
        reach = grown
    ring = np.searchsorted(edges, dist)  # 1 -> 0, 2 -> 1, 3-4 -> 2, ...
    for r in range(6):
        sel = hole & (ring == r)
        cnt[r] += sel.sum()
        for m in err:
            col = 2 + ["telea", "coarse", "sim0", "sim1"].index(m)
            res = grid[j * S:(j + 1) * S, col * S:(col + 1) * S]
            err[m][r] += np.abs(res[sel] - orig[sel]).sum()
share = got["share of hole pixels (%)"]
for r in range(6):
    assert abs(share[r] - 100 * cnt[r] / cnt.sum()) < 0.051, (r, share, cnt)
for m in err:
    for r in range(6):
        if cnt[r]:
            want = 100 * err[m][r] / (3 * 255 * cnt[r])
            assert abs(got[m][r] - want) < 0.0051, (m, r, got[m][r], want)
        else:
            assert got[m][r] is None, (m, r, got[m])
print(f"it_eval: hole L1 by distance ring matches numpy over {int(cnt.sum())} hole pixels")
print(f"it_eval: {len(rows)} rows, L1/PSNR/SSIM of 24 method outputs match numpy; hole ratios {sorted(set(ratios))}")
EOF

echo "== telea_blend: a net whose table is all Telea paints what the telea method paints"
"$PY" training/fit_blend.py --net "$tmp/sim0.safetensors" --set 1 --out "$tmp/sim0_t.safetensors"
"$SP" weights info "$tmp/sim0_t.safetensors" | grep -q "^telea blend *1 " || { echo "FAIL: weights info shows no telea blend"; exit 1; }
for b in on off; do
  "$SP" eval --images "$tmp/img" --masks "$tmp/masks" --out "$tmp/blend_$b" --coarse "$tmp/pconv.safetensors" \
    --sim0 "$tmp/sim0_t.safetensors" --methods telea,sim0 --blend $b --grid-rows 0 --threads 1 > /dev/null
done
grep -q "telea blend: on" "$tmp/blend_on/report.md" && grep -q "telea blend: off (--blend off)" "$tmp/blend_off/report.md" \
  || { echo "FAIL: the report does not say whether the blend was on"; exit 1; }
"$PY" - "$tmp/blend_on/samples.csv" "$tmp/blend_off/samples.csv" <<'EOF'
import csv, sys
def by(path):
    r = {}
    for row in csv.DictReader(open(path)):
        r.setdefault(row["method"], []).append((row["l1_pct"], row["psnr"], row["ssim"]))
    return r
on, off = by(sys.argv[1]), by(sys.argv[2])
assert on["sim0"] == on["telea"], "sim0 with telea_blend [1] differs from telea"
assert off["sim0"] != off["telea"], "--blend off still blends"
print(f"it_eval: telea_blend [1] reproduces telea on {len(on['sim0'])} samples; --blend off gives the net's own output")
EOF
echo "it_eval: OK"
