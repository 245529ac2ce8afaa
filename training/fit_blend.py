"""fit_blend.py: fits a weights file's `telea_blend`, the share of Telea's fill in each hole pixel by its distance to the border.

Usage:
  fit_blend.py --net FILE.safetensors [--out FILE] [--count N] [--seed S] [--lib SO] [--data-kind faces|general]
               [--cache-dir DIR] [--neighbours NPY] [--descriptor D] [--ndjson DIR] [--distances D] [--threads T]
  fit_blend.py --net FILE --set B1,B2,... [--out FILE]
  fit_blend.py --check [--lib SO]

A small UNet trained for hours on two cores leaves the pixels next to the hole's border worse
than Telea's fast marching does (it continues the known pixels' values and gradients exactly),
while deep inside a hole the network wins by far. The service therefore blends, per hole pixel
at chessboard distance d from the nearest known pixel, b[d]*Telea + (1-b[d])*net (imaging/telea.c
telea_blend). This script picks the b[d] from a grid of 0, 0.05, ..., 1, non-increasing in d, with the
least L1 error pooled over `--count` training images (from train.py's cache) with QD-IMD masks (Algorithm 1,
training/qdimd.py, seed `--seed`; hole ratios outside [0.01, 0.6] skipped, as in the paper's
buckets); Sim-K nets see their training neighbours (train.py's neighbour file). Telea and the
distance come from the C engine itself (build/lib/libsemipaint_telea.so, `make` builds it), so
the fit and the service compute the same thing. It prints the L1 by distance with and without the
blend and writes the table into the file's metadata (`--out`, default: the file itself,
replaced atomically). No validation image is looked at.

--data-kind general (the general family; the default for a file whose `trained_on` says "general
photographs", as train.py's --init-from reads it): the samples come from train.py's GeneralStream
on its native-size cache of general/train (.deps/general, `train.py cache --data-kind general`),
with seed `--seed`: multi-scale square crops resampled to the net's working size, flips, and the
mixed masks (half QD-IMD, half strokes and blobs; the same hole-ratio filter); Sim-K's neighbours
are the database rows of the nearest other training images by `--descriptor` (train.py's
general_neighbours, built on first use), as in training.

--set writes a given table instead of fitting one; --check compares telea_blend of the C library
with this script's blend on random crops (tests).
"""
import argparse
import ctypes
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

GRID = np.linspace(0.0, 1.0, 21).astype(np.float32)
RADIUS = 5  # TELEA_DEFAULT_RADIUS, what the service blends with


class _Img(ctypes.Structure):
    _fields_ = [("w", ctypes.c_int), ("h", ctypes.c_int), ("c", ctypes.c_int), ("px", ctypes.c_void_p)]


class CTelea:
    """Telea, the hole distance and the blend of the C engine, through ctypes."""

    def __init__(self, path):
        if not os.path.exists(path):
            raise SystemExit(f"fit_blend: {path} not found; run `make` first")
        self.lib = ctypes.CDLL(path)
        self.lib.telea_inpaint.argtypes = [ctypes.POINTER(_Img), ctypes.c_void_p, ctypes.c_int]
        self.lib.telea_hole_distance.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        self.lib.telea_blend.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                         ctypes.c_int, ctypes.c_void_p]

    def inpaint(self, u8, hole):
        """u8 (H,W,3) uint8, hole (H,W) bool -> Telea's fill (H,W,3) uint8 (a new array)."""
        a = np.ascontiguousarray(u8, dtype=np.uint8).copy()
        h = np.ascontiguousarray(hole, dtype=np.uint8)
        im = _Img(a.shape[1], a.shape[0], 3, a.ctypes.data)
        st = self.lib.telea_inpaint(ctypes.byref(im), h.ctypes.data, RADIUS)
        if st != 0:
            raise RuntimeError(f"telea_inpaint failed with status {st}")
        return a

    def distance(self, hole):
        """hole (H,W) bool -> chessboard distance to the nearest known pixel (H,W) int32."""
        h = np.ascontiguousarray(hole, dtype=np.uint8)
        d = np.empty(hole.shape, np.int32)
        self.lib.telea_hole_distance(h.ctypes.data, hole.shape[1], hole.shape[0], d.ctypes.data)
        return d

    def blend(self, out, keep, table):
        """The C telea_blend on (n,3,s,s) float32 composites and (n,1,s,s) keep masks, in place."""
        out = np.ascontiguousarray(out, np.float32)
        keep = np.ascontiguousarray(keep, np.float32)
        t = np.ascontiguousarray(table, np.float32)
        st = self.lib.telea_blend(out.shape[0], out.shape[-1], keep.ctypes.data, t.ctypes.data, len(t), RADIUS,
                                  out.ctypes.data)
        if st != 0:
            raise RuntimeError(f"telea_blend failed with status {st}")
        return out


def py_blend(ct, comp, hole, table):
    """This script's blend of one composite (3,s,s) in [0,1] with hole (s,s) bool."""
    u8 = np.clip(np.floor(comp.transpose(1, 2, 0) * 255 + 0.5), 0, 255).astype(np.uint8)
    u8[hole] = 0
    tel = ct.inpaint(u8, hole).transpose(2, 0, 1).astype(np.float32) / 255
    d = ct.distance(hole)
    b = np.asarray(table, np.float32)[np.clip(d, 1, len(table)) - 1]
    o = np.clip(comp, 0, 1)
    mixed = b * tel + (1 - b) * o
    return np.where(hole[None], mixed, comp).astype(np.float32)


def check(ct):
    """telea_blend of the C library against py_blend on random smooth crops; returns the max diff."""
    rng = np.random.default_rng(3)
    s = 48
    yy, xx = np.mgrid[0:s, 0:s] / s
    worst = 0.0
    for trial in range(4):
        base = np.stack([np.sin(3 * xx + c + trial) * 0.4 + 0.5 + 0.2 * yy for c in range(3)]).astype(np.float32)
        base = np.round(base * 255) / 255
        hole = np.zeros((s, s), bool)
        for _ in range(3):
            x0, y0 = rng.integers(0, s - 10, 2)
            hole[y0:y0 + rng.integers(3, 14), x0:x0 + rng.integers(3, 14)] = True
        fill = rng.random((3, s, s)).astype(np.float32) * 1.2 - 0.1  # the net's raw fill, out of range too
        comp = np.where(hole[None], fill, base).astype(np.float32)
        table = rng.random(rng.integers(1, 9)).astype(np.float32)
        want = py_blend(ct, comp, hole, table)
        got = ct.blend(comp[None].copy(), (~hole)[None, None].astype(np.float32), table)[0]
        worst = max(worst, float(np.abs(want - got).max()))
        if not np.array_equal(got[:, ~hole], comp[:, ~hole]):
            raise SystemExit("fit_blend --check: telea_blend changed a known pixel")
    return worst


def monotone_argmin(err):
    """err (D, W) summed errors per distance class and grid weight -> the grid indices, one per
    class, with the least total error among the non-increasing sequences (Telea extrapolates
    from the border, so its share should not grow with the distance; this also keeps the sparse
    far classes from picking noise). Dynamic programming over the classes."""
    nd, nw = err.shape
    cost = err[0].copy()
    back = np.zeros((nd, nw), np.int64)
    for d in range(1, nd):
        # best predecessor with weight index >= w: suffix minimum of cost
        suf = np.minimum.accumulate(cost[::-1])[::-1]
        arg = np.array([w + int(np.argmin(cost[w:])) for w in range(nw)])
        back[d] = arg
        cost = err[d] + suf
    idx = [int(np.argmin(cost))]
    for d in range(nd - 1, 0, -1):
        idx.append(int(back[d][idx[-1]]))
    return np.array(idx[::-1])


def faces_batches(a, s, k, B):
    """The faces samples: `a.count` distinct images of train.py's cache at size s (chosen by the
    seed) with QD-IMD masks i = 0, 1, ...; yields batches of at most B as (u8 (b,s,s,3) uint8,
    img (b,3,s,s), m1 (b,1,s,s) 1 = keep, neighbours (b,k,3,s,s) or None)."""
    import torch

    import qdimd
    import train

    cache_dir = a.cache_dir or os.path.join(ROOT, train.DEFAULT_CACHE_DIR)
    images = train.open_cache(cache_dir, s)
    nbr = None
    if k:
        neighbours = a.neighbours or train.DEFAULT_NEIGHBOURS
        nbr = np.load(neighbours)
        if nbr.shape[0] != images.shape[0] or nbr.shape[1] < k:
            raise SystemExit(f"fit_blend: {neighbours} has shape {nbr.shape}, need ({images.shape[0]}, >={k})")
    if a.count > images.shape[0]:
        raise SystemExit(f"fit_blend: --count {a.count}: the cache {cache_dir} holds {images.shape[0]} images")
    masks = qdimd.QDIMDMasks(a.ndjson, qdimd.Params(size=s, seed=a.seed))
    ids = np.random.default_rng(a.seed).choice(images.shape[0], a.count, replace=False)
    for b0 in range(0, a.count, B):
        sel = ids[b0:b0 + B]
        u8 = np.stack([images[i] for i in sel])
        holes = np.stack([masks[b0 + j] > 127 for j in range(len(sel))])
        img = torch.from_numpy(u8.astype(np.float32) / 255).permute(0, 3, 1, 2)
        m1 = torch.from_numpy((~holes).astype(np.float32))[:, None]
        nb = None
        if k:
            nb = torch.from_numpy(np.stack([[images[nbr[i, q]] for q in range(k)] for i in sel]).astype(np.float32) / 255)
            nb = nb.permute(0, 1, 4, 2, 3)
        yield u8, img, m1, nb


def general_batches(a, s, k, B):
    """The general family's samples, as faces_batches yields them: the first `a.count` samples of
    train.py's GeneralStream (train.general_stream, seed and mask seed `a.seed`) on the general
    cache, at the net's working size s, with k neighbours from the database rows."""
    import train

    cache_dir = a.cache_dir or os.path.join(ROOT, train.GENERAL_CACHE_DIR)
    targs = {"cfg": {"size": s}, "descriptor": a.descriptor, "mask_seed": a.seed,
             "mask_qd_share": train.GENERAL_QD_SHARE, "batch": B, "seed": a.seed}
    stream = train.general_stream(argparse.Namespace(cache_dir=cache_dir, neighbours=a.neighbours, ndjson=a.ndjson),
                                  targs, k)
    if a.count > stream.n:
        raise SystemExit(f"fit_blend: --count {a.count}: the general cache {cache_dir} holds {stream.n} images")
    for step in range((a.count + B - 1) // B):
        img, m1, nb, _ = stream.batch_at(step, k)
        b = min(B, a.count - step * B)
        img, m1, nb = img[:b], m1[:b], nb[:b]
        u8 = np.floor(img.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)  # exact: img is u8 / 255
        yield u8, img, m1, nb if k else None


def data_kind_of(meta):
    """The data kind a weights file was trained on, as train.py's init_from_weights reads its card."""
    return "general" if "general photographs" in meta.get("trained_on", "") else "faces"


def fit(a):
    import torch

    import export
    import train

    torch.set_num_threads(a.threads)
    ct = CTelea(a.lib)
    net, meta = export.load_module(a.net)
    if meta["arch"] not in ("pconv_unet", "simk_unet"):
        raise SystemExit(f"fit_blend: {a.net} is {meta['arch']}; only the UNets are blended")
    s, k = meta["size"], meta["k"] if meta["arch"] == "simk_unet" else 0
    name = "pconv" if meta["arch"] == "pconv_unet" else f"sim{k}"
    kind = a.data_kind or data_kind_of(meta)
    if kind != data_kind_of(meta):
        print(f"fit_blend: warning: {a.net} was trained on {meta.get('trained_on', '?')!r}; fitting on --data-kind "
              f"{kind}", flush=True)
    B = 8
    batches = (general_batches if kind == "general" else faces_batches)(a, s, k, B)
    what = ("general/train crops with mixed QD-IMD, stroke and blob masks" if kind == "general"
            else "training images with QD-IMD masks")
    nd = a.distances
    err = np.zeros((nd, len(GRID)))  # summed |error| (RGB, 0..1 units) per distance class and weight
    cnt = np.zeros(nd)
    used, t0 = 0, time.time()
    for bi, (u8s, img, m1, nb) in enumerate(batches):
        holes = m1[:, 0].numpy() == 0
        with torch.no_grad():
            raw = train.forward(name, net, img, m1, nb).clamp(0, 1).numpy()
        gt = img.numpy()
        for j, hole in enumerate(holes):
            r = hole.mean()
            if r < 0.01 or r > 0.6:
                continue
            used += 1
            u8 = u8s[j].copy()
            u8[hole] = 0
            tel = ct.inpaint(u8, hole).transpose(2, 0, 1).astype(np.float32) / 255
            dcls = np.minimum(ct.distance(hole)[hole], nd) - 1
            t, o, g = tel[:, hole], raw[j][:, hole], gt[j][:, hole]
            cnt += np.bincount(dcls, minlength=nd)
            for wi, w in enumerate(GRID):
                mixed = np.floor((w * t + (1 - w) * o) * 255 + 0.5) / 255
                err[:, wi] += np.bincount(dcls, weights=np.abs(mixed - g).sum(0), minlength=nd)
        if bi % 25 == 0:
            print(f"fit_blend: {min((bi + 1) * B, a.count)}/{a.count} images, {time.time() - t0:.0f} s", flush=True)
    best = monotone_argmin(err)
    table = [round(float(GRID[i]), 2) for i in best]
    while len(table) > 1 and table[-1] == table[-2]:
        table.pop()  # the last entry covers every larger distance
    l1 = lambda e, c: 100 * e / (3 * np.maximum(c, 1))  # noqa: E731  % of 255 over RGB
    print(f"fit_blend: {a.net}: {used} {what} (seed {a.seed}); hole L1 % by distance")
    print(" d  pixels%   net   telea  blend  b")
    for d in range(nd):
        print(f"{d + 1:2d}{'+' if d == nd - 1 else ' '} {100 * cnt[d] / cnt.sum():6.2f}  {l1(err[d, 0], cnt[d]):5.2f}  "
              f"{l1(err[d, -1], cnt[d]):5.2f}  {l1(err[d, best[d]], cnt[d]):5.2f}  {GRID[best[d]]:.2f}")
    tot = lambda wi: l1(sum(err[d, wi[d]] for d in range(nd)), cnt.sum())  # noqa: E731
    print(f"all  100.00  {tot([0] * nd):5.2f}  {tot([len(GRID) - 1] * nd):5.2f}  {tot(best):5.2f}")
    note = (f"telea_blend fit by training/fit_blend.py on {used} {what} "
            f"(seed {a.seed}): hole L1 {tot([0] * nd):.2f}% -> {tot(best):.2f}%")
    write_table(a.net, a.out or a.net, table, note)


def write_table(src, dst, table, note):
    """Copies weights file `src` to `dst` (atomically; they may be the same) with `table` as its
    telea_blend and `note` in place of an earlier fit's note."""
    import safetensors_io
    tensors, raw_meta = safetensors_io.load(src)
    meta = json.loads(raw_meta["semipaint"])
    if meta.get("arch") not in ("pconv_unet", "simk_unet"):
        raise SystemExit(f"fit_blend: {src} is {meta.get('arch')}; only the UNets are blended")
    meta["telea_blend"] = table
    notes = [p for p in meta.get("notes", "").split("; ") if p and not p.startswith("telea_blend ")]
    meta["notes"] = "; ".join(notes + [note])
    raw_meta["semipaint"] = json.dumps(meta)
    safetensors_io.save(dst, tensors, raw_meta)
    print(f"fit_blend: wrote telea_blend {table} into {dst}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--net", help="pconv or Sim-K weights file")
    p.add_argument("--out", help="where to write (default: --net, replaced atomically)")
    p.add_argument("--count", type=int, default=1200, help="training images to fit on [1200]")
    p.add_argument("--seed", type=int, default=5, help="image choice and QD-IMD mask seed [5]")
    p.add_argument("--distances", type=int, default=20, help="distance classes 1..D-1 and D+ [20]")
    p.add_argument("--lib", default=os.path.join(ROOT, "build", "lib", "libsemipaint_telea.so"))
    p.add_argument("--data-kind", default=None, choices=("faces", "general"),
                   help="faces (CelebA-HQ cache) or general (train.py's general stream); default: from the "
                        "file's trained_on")
    p.add_argument("--cache-dir", default=None, help="train.py's cache [.deps/celebahq, general: .deps/general]")
    p.add_argument("--neighbours", default=None,
                   help="Sim-K neighbour ids [training/neighbours_thumb16.npy; general: "
                        "<cache-dir>/neighbours_<descriptor>_<size>.npy, computed on first use]")
    p.add_argument("--descriptor", default="thumb16", help="general: the neighbours' descriptor [thumb16]")
    p.add_argument("--ndjson", default=os.path.join(ROOT, "..", "shared", "data", "quickdraw", "simplified"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--check", action="store_true", help="compare the C blend with this script's")
    p.add_argument("--set", metavar="B1,B2,...", help="write this table instead of fitting one (tests, experiments)")
    a = p.parse_args(argv)
    if a.check:
        worst = check(CTelea(a.lib))
        print(f"fit_blend --check: C telea_blend vs Python blend, max |diff| {worst:.2e}")
        if worst > 1e-6:
            raise SystemExit("fit_blend --check: the C and Python blends differ")
        return
    if not a.net:
        p.error("--net is required (or --check)")
    if a.set is not None:
        try:
            table = [float(v) for v in a.set.split(",")]
        except ValueError:
            p.error(f"--set {a.set!r}: expected comma-separated numbers")
        if not 1 <= len(table) <= 64 or not all(0 <= v <= 1 for v in table):
            p.error(f"--set {a.set!r}: 1 to 64 numbers in [0,1]")
        write_table(a.net, a.out or a.net, table, "telea_blend set by hand (training/fit_blend.py --set)")
        return
    if not 1 <= a.distances <= 64 or a.count < 1:
        p.error("--distances must be 1..64 and --count >= 1")
    fit(a)


if __name__ == "__main__":
    main()
