#!/usr/bin/env bash
# it_qdimd.sh: `semipaint masks` and training/qdimd.py must draw the same QD-IMD masks, pixel for pixel.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
QD=${SEMIPAINT_DATA:-../shared/data}/quickdraw/simplified
if [ ! -d "$QD" ]; then
  echo "it_qdimd: SKIP ($QD absent)"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Two parameter sets: the defaults, and every parameter changed (whole drawings, another size).
set1=(--count 20 --seed 7)
set2=(--count 20 --seed 123456789012 --start 1000 --size 200 --strokes-mean 2.5 --strokes-std 1
      --width-min 3 --width-max 9.5 --scale-min 1.1 --scale-max 2 --whole-drawings)
for s in 1 2; do
  eval "args=(\"\${set$s[@]}\")"
  "$BUILD/semipaint" masks "${args[@]}" --ndjson "$QD" --out "$tmp/c$s" > "$tmp/c$s.txt"
  "$PY" training/qdimd.py "${args[@]}" --ndjson "$QD" --out "$tmp/py$s" > "$tmp/py$s.txt"
  cat "$tmp/c$s.txt"
done
"$PY" - "$tmp" <<'PYEOF'
import os, struct, sys, zlib
import numpy as np
tmp = sys.argv[1]


def read_grey_png(path):
    """8-bit grey, non-interlaced PNG (what both writers produce) -> 2-D uint8 array, or None."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    pos, idat, hdr = 8, b"", None
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    if hdr is None or hdr[2:5] != (8, 0, 0) or hdr[6] != 0:
        return None
    w, h = hdr[0], hdr[1]
    raw = zlib.decompress(idat)
    out = np.zeros((h, w), np.int32)
    prev = np.zeros(w, np.int32)
    for y in range(h):
        f, row = raw[y * (w + 1)], np.frombuffer(raw, np.uint8, w, y * (w + 1) + 1).astype(np.int32)
        if f in (0, 1, 2):
            cur = row if f == 0 else np.cumsum(row) & 255 if f == 1 else (row + prev) & 255
            out[y], prev = cur, cur
            continue
        cur = np.zeros(w, np.int32)
        for x in range(w):
            a = cur[x - 1] if x else 0
            b, c = prev[x], prev[x - 1] if x else 0
            if f == 0: pred = 0
            elif f == 1: pred = a
            elif f == 2: pred = b
            elif f == 3: pred = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
            cur[x] = (row[x] + pred) & 255
        out[y], prev = cur, cur
    return out.astype(np.uint8)

bad = 0
for s in (1, 2):
    names = sorted(os.listdir(f"{tmp}/c{s}"))
    pnames = sorted(os.listdir(f"{tmp}/py{s}"))
    if names != pnames or len(names) != 20:
        print(f"set {s}: file lists differ: {names[:3]}... vs {pnames[:3]}...")
        bad += 1
        continue
    for n in names:
        a = read_grey_png(f"{tmp}/c{s}/{n}")
        b = read_grey_png(f"{tmp}/py{s}/{n}")
        if a is None or b is None or a.shape != b.shape or a.ndim != 2:
            print(f"set {s} {n}: unreadable or shapes differ")
            bad += 1
        elif not np.array_equal(a, b):
            print(f"set {s} {n}: {int((a != b).sum())} pixels differ")
            bad += 1
        elif not set(np.unique(a)) <= {0, 255} or not (a == 255).any():
            print(f"set {s} {n}: not a binary non-empty mask")
            bad += 1
    print(f"set {s}: {len(names)} masks compared")
print("it_qdimd:", "FAIL" if bad else "PASS", f"({bad} mismatches)")
sys.exit(1 if bad else 0)
PYEOF
# The histograms printed by both must agree too.
for s in 1 2; do
  diff <(grep -v masks/s "$tmp/c$s.txt") <(grep -v masks/s "$tmp/py$s.txt")
done
