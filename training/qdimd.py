"""qdimd.py: QD-IMD hole masks (Iskakov 2018, Algorithm 1), a pixel-exact port of `semipaint masks` (imaging/qdimd.c).

Usage:
  qdimd.py --out DIR [--ndjson DIR] [--count N] [--start I] [--size S] [--seed N]
           [--strokes-mean M] [--strokes-std STD] [--width-min W] [--width-max W]
           [--scale-min R] [--scale-max R] [--whole-drawings]

Mask i depends only on (seed, i), the parameters and the Quick Draw files, and equals the C
tool's mask i bit for bit: the same splitmix64/xoshiro256** stream, the same order of draws,
the same logarithm built from + - * / only, and the same IEEE double arithmetic, operation by
operation, in the rasteriser (tests/it_qdimd.sh checks this). For training, QDIMDMasks(dir,
params)[i] gives mask i as a (size, size) uint8 array (255 = hole, 0 = keep).
"""
import argparse
import json
import math
import os
import struct
import sys
import time
import zlib
from dataclasses import dataclass

import numpy as np

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MAX_ATTEMPTS = 100
DEFAULT_NDJSON = "../shared/data/quickdraw/simplified"


@dataclass
class Params:
    size: int = 256
    seed: int = 0
    strokes_mean: float = 4.0
    strokes_std: float = 2.0
    width_min: float = 5.0
    width_max: float = 15.0
    scale_min: float = 1.0
    scale_max: float = 1.5
    whole_drawings: bool = False

    def check(self):
        """Raises ValueError naming the first unusable field (the limits of qd_params_check)."""
        if not 8 <= self.size <= 8192:
            raise ValueError(f"size {self.size} is not in 8-8192")
        if not 0 <= self.strokes_mean <= 1000:
            raise ValueError(f"strokes mean {self.strokes_mean} is not in 0-1000")
        if not 0 <= self.strokes_std <= 1000:
            raise ValueError(f"strokes std {self.strokes_std} is not in 0-1000")
        if not 0 < self.width_min <= self.width_max <= 1000:
            raise ValueError(f"widths {self.width_min}-{self.width_max} need 0 < min <= max <= 1000")
        if not 0 < self.scale_min <= self.scale_max <= 100:
            raise ValueError(f"scales {self.scale_min}-{self.scale_max} need 0 < min <= max <= 100")
        if not 0 <= self.seed <= M64:
            raise ValueError(f"seed {self.seed} is not a 64-bit unsigned integer")


# ---- random stream (qd_rng_* in imaging/qdimd.c) ----

def _splitmix64(x):
    """Returns (new state, output)."""
    x = (x + GOLDEN) & M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return x, z ^ (z >> 31)


def _rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M64


class Rng:
    """xoshiro256** seeded from (seed, index) through splitmix64."""

    def __init__(self, seed, index):
        _, h = _splitmix64(seed & M64)
        y = (h + index * GOLDEN) & M64
        s = []
        for _ in range(4):
            y, v = _splitmix64(y)
            s.append(v)
        self.s = s

    def next(self):
        s0, s1, s2, s3 = self.s
        out = (_rotl((s1 * 5) & M64, 7) * 9) & M64
        t = (s1 << 17) & M64
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = _rotl(s3, 45)
        self.s = [s0, s1, s2, s3]
        return out

    def uniform(self):
        return (self.next() >> 11) * 2.0 ** -53

    def below(self, n):
        threshold = ((1 << 64) - n) % n
        while True:
            x = self.next()
            if x >= threshold:
                return x % n

    def normal(self):
        while True:
            u = 2.0 * self.uniform() - 1.0
            v = 2.0 * self.uniform() - 1.0
            s = u * u + v * v
            if not (s >= 1.0 or s == 0.0):
                break
        return u * math.sqrt(-2.0 * qd_log(s) / s)


def qd_log(x):
    """Natural logarithm from + - * / only, operation for operation as qd_log() in C."""
    m, e = math.frexp(x)
    if m < 0.7071067811865476:
        m = m * 2.0
        e = e - 1
    z = (m - 1.0) / (m + 1.0)
    z2 = z * z
    s = 1.0 / 23.0
    for k in range(10, -1, -1):
        s = s * z2 + 1.0 / float(2 * k + 1)
    return float(e) * 0.6931471805599453 + 2.0 * z * s


# ---- Quick Draw ----

class Source:
    """Every drawing of the *.ndjson files of a folder (files in byte order of their names,
    empty strokes and drawings without points dropped); drawings[d] is a list of (n, 2) float64
    arrays of (x, y) points."""

    def __init__(self, folder):
        names = sorted(n for n in os.listdir(folder) if n.endswith(".ndjson"))
        if not names:
            raise ValueError(f"{folder}: no .ndjson files")
        self.drawings = []
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                data = f.read()
            for lineno, line in enumerate(data.split(b"\n"), 1):
                if not line.strip(b" \t\r"):
                    continue
                try:
                    drawing = self._drawing(json.loads(line))
                except (ValueError, TypeError, KeyError, IndexError) as e:
                    raise ValueError(f"{path}:{lineno}: {e}") from None
                if drawing:
                    self.drawings.append(drawing)
        if not self.drawings:
            raise ValueError(f"{folder}: no drawings with points")
        self.nstrokes = sum(len(d) for d in self.drawings)

    @staticmethod
    def _drawing(obj):
        drawing = obj["drawing"]
        if not isinstance(drawing, list):
            raise ValueError('"drawing" is not an array')
        strokes = []
        for stroke in drawing:
            if not isinstance(stroke, list) or len(stroke) < 2 or not isinstance(stroke[0], list) \
                    or not isinstance(stroke[1], list):
                raise ValueError("a stroke is not [[x...],[y...]]")
            xs, ys = stroke[0], stroke[1]
            if len(xs) != len(ys):
                raise ValueError("a stroke has different numbers of x and y values")
            if not xs:
                continue
            for v in xs + ys:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError("a stroke has a coordinate that is not a number")
            strokes.append(np.array([[float(x), float(y)] for x, y in zip(xs, ys)], dtype=np.float64))
        return strokes


# ---- rasterisation (qd_draw_segment) ----

def draw_segment(mask, ax, ay, bx, by, radius):
    """Sets to 255 every pixel of the square uint8 `mask` whose centre (i+0.5, j+0.5) lies within
    `radius` of the segment (a, b)."""
    size = mask.shape[0]
    minx, maxx = min(ax, bx) - radius, max(ax, bx) + radius
    miny, maxy = min(ay, by) - radius, max(ay, by) + radius
    if not (maxx >= 0 and maxy >= 0 and minx <= size and miny <= size):
        return
    i0 = 0 if minx < 0 else math.floor(minx - 0.5) - 1
    i1 = size - 1 if maxx > size else math.ceil(maxx - 0.5) + 1
    j0 = 0 if miny < 0 else math.floor(miny - 0.5) - 1
    j1 = size - 1 if maxy > size else math.ceil(maxy - 0.5) + 1
    i0, j0 = max(i0, 0), max(j0, 0)
    i1, j1 = min(i1, size - 1), min(j1, size - 1)
    if i0 > i1 or j0 > j1:
        return
    dx, dy = bx - ax, by - ay
    len2 = dx * dx + dy * dy
    r2 = radius * radius
    px = np.arange(i0, i1 + 1, dtype=np.float64)[None, :] + 0.5
    py = np.arange(j0, j1 + 1, dtype=np.float64)[:, None] + 0.5
    if len2 > 0:
        t = ((px - ax) * dx + (py - ay) * dy) / len2
        t = np.clip(t, 0.0, 1.0)
    else:
        t = np.zeros((j1 - j0 + 1, i1 - i0 + 1))
    ex = px - (ax + t * dx)
    ey = py - (ay + t * dy)
    hit = ex * ex + ey * ey <= r2
    mask[j0:j1 + 1, i0:i1 + 1][hit] = 255


def _draw_stroke(pts, size, scale, radius, mask):
    f, c = size / 256.0, size / 2.0
    q = c + scale * ((pts + 0.5) * f - c)
    if len(q) == 1:
        draw_segment(mask, q[0, 0], q[0, 1], q[0, 0], q[0, 1], radius)
    for k in range(1, len(q)):
        draw_segment(mask, q[k - 1, 0], q[k - 1, 1], q[k, 0], q[k, 1], radius)


def generate(params, source, index):
    """Mask number `index`: a (size, size) uint8 array, 255 = hole. Same as qd_generate()."""
    params.check()
    size = params.size
    rng = Rng(params.seed, index)
    mask = np.zeros((size, size), dtype=np.uint8)
    nd = len(source.drawings)
    for _ in range(MAX_ATTEMPTS):
        mask[:] = 0
        k = math.floor(params.strokes_mean + params.strokes_std * rng.normal() + 0.5)
        strokes = max(1, int(k))
        scale = params.scale_min + (params.scale_max - params.scale_min) * rng.uniform()
        for _ in range(strokes):
            drawing = source.drawings[rng.below(nd)]
            if params.whole_drawings:
                chosen = drawing
            else:
                chosen = [drawing[rng.below(len(drawing))]]
            width = params.width_min + (params.width_max - params.width_min) * rng.uniform()
            radius = width * scale / 2.0
            for pts in chosen:
                _draw_stroke(pts, size, scale, float(radius), mask)
        if mask.any():
            return mask
    raise ValueError(f"mask {index} came out empty {MAX_ATTEMPTS} times")


class QDIMDMasks:
    """Masks 0..count-1 of one parameter set, indexable (for a training data loader)."""

    def __init__(self, ndjson_dir=DEFAULT_NDJSON, params=None, count=1 << 62):
        self.params = params or Params()
        self.params.check()
        self.source = Source(ndjson_dir)
        self.count = count

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        if not 0 <= i < self.count:
            raise IndexError(i)
        return generate(self.params, self.source, i)


# ---- output ----

def write_png_grey(path, a):
    """Writes an 8-bit grey PNG of the 2-D uint8 array `a` (filter 0 on every row)."""
    h, w = a.shape
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(png)
    os.replace(tmp, path)


BUCKETS = ["<0.01", "[0.01,0.1]", "(0.1,0.2]", "(0.2,0.3]", "(0.3,0.4]", "(0.4,0.5]", "(0.5,0.6]", ">0.6"]


def bucket_of(r):
    if r < 0.01:
        return 0
    for b in range(1, 7):
        if r <= 0.1 * b:
            return b
    return 7


def main(argv=None):
    d = Params()
    ap = argparse.ArgumentParser(description="QD-IMD hole masks, the same as `semipaint masks`.")
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--ndjson", default=DEFAULT_NDJSON, help="Quick Draw simplified *.ndjson folder")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--size", type=int, default=d.size)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--strokes-mean", type=float, default=d.strokes_mean)
    ap.add_argument("--strokes-std", type=float, default=d.strokes_std)
    ap.add_argument("--width-min", type=float, default=d.width_min)
    ap.add_argument("--width-max", type=float, default=d.width_max)
    ap.add_argument("--scale-min", type=float, default=d.scale_min)
    ap.add_argument("--scale-max", type=float, default=d.scale_max)
    ap.add_argument("--whole-drawings", action="store_true")
    a = ap.parse_args(argv)
    p = Params(a.size, a.seed, a.strokes_mean, a.strokes_std, a.width_min, a.width_max, a.scale_min, a.scale_max,
               a.whole_drawings)
    try:
        p.check()
    except ValueError as e:
        ap.error(str(e))
    if a.count < 1 or a.start < 0:
        ap.error("--count must be >= 1 and --start >= 0")
    src = Source(a.ndjson)
    print(f"masks: {len(src.drawings)} drawings, {src.nstrokes} strokes from {a.ndjson}", file=sys.stderr)
    os.makedirs(a.out, exist_ok=True)
    hist = [0] * len(BUCKETS)
    total = 0.0
    t0 = time.time()
    for i in range(a.count):
        idx = a.start + i
        m = generate(p, src, idx)
        r = float(np.count_nonzero(m)) / m.size
        hist[bucket_of(r)] += 1
        total += r
        write_png_grey(os.path.join(a.out, "qdimd_%05d.png" % idx), m)
    dt = time.time() - t0
    print(f"{a.count} masks {p.size}x{p.size} in {a.out} ({a.count / max(dt, 1e-9):.1f} masks/s), "
          f"mean hole ratio {total / a.count:.3f}")
    print(f"{'hole ratio':<12} {'masks':>8} {'share':>7}")
    for b, name in enumerate(BUCKETS):
        if b == 0 and hist[0] == 0:
            continue
        print(f"{name:<12} {hist[b]:>8} {100.0 * hist[b] / a.count:6.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
