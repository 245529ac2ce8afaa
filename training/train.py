"""train.py: trains semipaint's coarse pconv_unet and the Sim-1 / Sim-0 refinement UNets on CelebA-HQ with QD-IMD masks (or, with --data-kind general, on general photographs).

Subcommands (run with /usr/bin/python3 from the repository root):
  cache       decode the training JPEGs once into a uint8 memory map (.deps/celebahq/train<S>.u8;
              general: .deps/general/images.u8 at native size plus an offset/shape table)
  neighbours  the K most similar other training images of every training image, by the
              database's thumbnail descriptor (retrieval/rt_desc.c, re-implemented in numpy)
  bench       time one training step of candidate configurations
  run         train (or resume) pconv, sim1 and sim0 together, checkpointing every few minutes
              into .train/<data kind>/ (outside git); --init-from DIR starts from exported weights
  export      write the latest checkpoint's nets as semipaint safetensors with a model card

The loss is the paper's equation (1) (Iskakov 2018, after Liu et al. 2018):
  L = L_valid + 6 L_hole + 0.1 L_tv [+ 0.05 L_perc + 120 L_style with --vgg16 WEIGHTS]
L_valid / L_hole: mean absolute error over all N = 3*H*W values of M*(out - I) / (1-M)*(out - I);
L_tv: total variation of the composite over the 1-pixel-dilated hole region, per value;
L_perc / L_style: VGG-16 pool1..pool3 of out and of the composite against the original
(Gram matrices normalised by C*H*W for the style); only when ImageNet VGG-16 weights are given.

The training stream is a pure function of (seed, step): image order (one permutation per epoch),
horizontal flips and QD-IMD mask indices. A checkpoint holds the nets, the Adam states, the torch
RNG state, the step and the whole loss log, so `run` resumes exactly where it stopped. SIGSTOP /
SIGCONT do no harm (nothing depends on wall time but when checkpoints are written); SIGTERM and
SIGINT write a checkpoint at the end of the current step, then exit.

Training state never goes into git (a checkpoint is tens to hundreds of MB, and every committed
one stays in every clone): checkpoints live in .train/faces or .train/general (git-ignored; the
default --ckpt-dir by --data-kind). Without a local checkpoint, `run --init-from weights` starts
from the shipped safetensors: the nets' weights exactly, fresh Adam moments (with a linear
learning-rate warm-up, --warmup), the step counter and schedule from the model card's notes, and
the loss log from <DIR>/loss_log.jsonl or <DIR>/training-logs/loss_log.jsonl when present.

--data-kind general (the "general" family, recorded in the checkpoint): photographs of any size
and aspect. Each sample is a square crop (side log-uniform between min(S, short side) and the
short side, uniform position) resampled to S x S as the service's `crop` strategy does; masks are
half QD-IMD, half random brush strokes and blobs; Sim-K's neighbours are the database rows
(`semipaint index build`: the centred square, resampled to S) of the nearest other images by the
descriptor on those rows. The stream is again a pure function of (seed, step).
"""
import argparse
import hashlib
import json
import math
import os
import re
import shutil
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import nets  # noqa: E402
import qdimd  # noqa: E402

DEFAULT_TRAIN = "../shared/data/celebahq256/train"
DEFAULT_CACHE_DIR = ".deps/celebahq"
TRAIN_STATE_DIR = os.path.join(os.path.dirname(HERE), ".train")  # git-ignored: checkpoints never go into git
DEFAULT_NEIGHBOURS = os.path.join(HERE, "neighbours_thumb16.npy")
GENERAL_TRAIN = "../shared/data/general/train"
GENERAL_CACHE_DIR = ".deps/general"
GENERAL_QD_SHARE = 0.5  # share of QD-IMD masks in the general family's mask stream (the rest: strokes, blobs)
LICENCE = ("CelebA-HQ terms: non-commercial research use only (weights derived from CelebA-HQ inherit them); "
           "QD-IMD masks from Google Quick, Draw! (CC BY 4.0)")
LICENCE_GENERAL = ("Non-commercial research use only, inherited from the training photographs: Imagenette (ImageNet "
                   "terms), Intel scenes (no licence stated), BSDS500 (research use), CamVid (CC BY-NC 4.0); "
                   "QD-IMD masks from Google Quick, Draw! (CC BY 4.0)")
W_VALID, W_HOLE, W_TV, W_PERC, W_STYLE = 1.0, 6.0, 0.1, 0.05, 120.0
NETS = ("pconv", "sim1", "sim0")
DATA_KINDS = ("faces", "general")


# ---------------------------------------------------------------------------------------------
# data

def cache_path(cache_dir, size):
    return os.path.join(cache_dir, f"train{size}.u8")


def list_images(folder):
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpg", ".jpeg", ".png")))
    if not names:
        raise SystemExit(f"train: no images in {folder}")
    return names


def build_cache(folder, cache_dir, sizes):
    """Decodes every image of `folder` (sorted by name) to (N,S,S,3) uint8 maps, one per size S
    (area-averaged when S < 256); writes <cache_dir>/train<S>.u8 and a names file atomically."""
    from PIL import Image
    names = list_images(folder)
    os.makedirs(cache_dir, exist_ok=True)
    maps = {}
    for s in sizes:
        maps[s] = np.lib.format.open_memmap(cache_path(cache_dir, s) + ".tmp.npy", mode="w+", dtype=np.uint8,
                                            shape=(len(names), s, s, 3))
    t0 = time.time()
    for i, n in enumerate(names):
        with Image.open(os.path.join(folder, n)) as im:
            im = im.convert("RGB")
            if im.size != (256, 256):
                raise SystemExit(f"train: {n} is {im.size[0]}x{im.size[1]}, expected 256x256")
            a = np.asarray(im, dtype=np.uint8)
        for s, m in maps.items():
            if s == 256:
                m[i] = a
            else:
                f = 256 // s
                m[i] = np.rint(a.reshape(s, f, s, f, 3).astype(np.float32).mean(axis=(1, 3))).astype(np.uint8)
        if (i + 1) % 2000 == 0:
            print(f"cache: {i + 1}/{len(names)} images, {time.time() - t0:.0f} s", flush=True)
    for s, m in maps.items():
        m.flush()
        del m
        os.replace(cache_path(cache_dir, s) + ".tmp.npy", cache_path(cache_dir, s))
    with open(os.path.join(cache_dir, "names.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    print(f"cache: {len(names)} images at sizes {sizes} in {time.time() - t0:.0f} s")


def open_cache(cache_dir, size):
    p = cache_path(cache_dir, size)
    if not os.path.exists(p):
        raise SystemExit(f"train: no cache {p}; run `train.py cache --sizes {size}` first")
    return np.load(p, mmap_mode="r")


# ---------------------------------------------------------------------------------------------
# thumbnail descriptor (numpy port of retrieval/rt_desc.c thumb_one) and neighbours

THUMBS = {"thumb8": (8, False), "thumb16": (16, False), "thumb16_zm": (16, True), "thumb32": (32, False)}


def thumb_descriptor(images_u8, name):
    """(n,s,s,3) uint8 -> (n, 3*T*T) float32, rt_desc.c's thumbnail: each T x T cell's mean R,G,B
    (pixels / 255), converted to YCbCr (JPEG full range; Y - 0.5), laid out [Y, Cb, Cr] cells,
    channel means removed for _zm, L2-normalised (a zero vector stays zero). Needs T | s."""
    t, zm = THUMBS[name]
    n, s = images_u8.shape[0], images_u8.shape[1]
    if s % t:
        raise ValueError(f"{name}: size {s} is not a multiple of {t}")
    f = s // t
    x = images_u8.astype(np.float64) / 255.0
    cells = x.reshape(n, t, f, t, f, 3).mean(axis=(2, 4))  # (n,t,t,3)
    r, g, b = cells[..., 0], cells[..., 1], cells[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b - 0.5
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    d = np.stack([y, cb, cr], axis=1).reshape(n, 3, t * t)
    if zm:
        d = d - d.mean(axis=2, keepdims=True)
    d = d.reshape(n, 3 * t * t)
    nrm = np.sqrt((d * d).sum(axis=1, keepdims=True))
    d = np.where(nrm > 1e-12, d / np.maximum(nrm, 1e-300), d)
    return d.astype(np.float32)


def compute_neighbours(images, descriptor, k, chunk=500):
    """For every image, the ids (int32) and cosine scores of the k most similar *other* images."""
    n = images.shape[0]
    desc = np.concatenate([thumb_descriptor(np.asarray(images[i:i + chunk]), descriptor) for i in range(0, n, chunk)])
    ids = np.zeros((n, k), np.int32)
    scores = np.zeros((n, k), np.float32)
    for i in range(0, n, chunk):
        sim = desc[i:i + chunk] @ desc.T
        rows = np.arange(sim.shape[0])
        sim[rows, i + rows] = -np.inf  # exclude the image itself
        part = np.argpartition(-sim, k, axis=1)[:, :k]
        ps = np.take_along_axis(sim, part, 1)
        order = np.argsort(-ps, axis=1, kind="stable")
        ids[i:i + chunk] = np.take_along_axis(part, order, 1)
        scores[i:i + chunk] = np.take_along_axis(ps, order, 1)
    return ids, scores, desc


# ---------------------------------------------------------------------------------------------
# general photographs (--data-kind general): native-size cache, the database's rows, resampling

def general_paths(cache_dir):
    """The general cache's files: flat pixels, the (N,3) int64 table [offset, height, width], names."""
    return (os.path.join(cache_dir, "images.u8"), os.path.join(cache_dir, "index.npy"),
            os.path.join(cache_dir, "names.txt"))


def _write_atomic(path, write):
    """Calls write(tmp_path), fsyncs the file, then renames it to `path`."""
    tmp = path + ".tmp"
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


def _write_npy(path, a):
    with open(path, "wb") as f:
        np.save(f, a)


def build_general_cache(folder, cache_dir):
    """Decodes every image of `folder` (sorted by name) at its native size to RGB (grey replicated)
    into one flat uint8 file, row-major (h, w, 3) per image, plus a table of offsets and shapes.
    The old table and the files derived from the old cache (rows, neighbours) are removed first,
    the pixels renamed into place before the new table, and GeneralImages checks that they agree."""
    from PIL import Image
    names = list_images(folder)
    os.makedirs(cache_dir, exist_ok=True)
    pix_path, idx_path, names_path = general_paths(cache_dir)
    table = np.zeros((len(names), 3), np.int64)
    t0 = time.time()
    with open(pix_path + ".tmp", "wb") as f:
        off = 0
        for i, n in enumerate(names):
            with Image.open(os.path.join(folder, n)) as im:
                a = np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
            f.write(a.tobytes())
            table[i] = (off, a.shape[0], a.shape[1])
            off += a.size
            if (i + 1) % 2000 == 0:
                print(f"cache: {i + 1}/{len(names)} images, {time.time() - t0:.0f} s", flush=True)
        f.flush()
        os.fsync(f.fileno())
    for n in os.listdir(cache_dir):
        if n == "index.npy" or (n.startswith(("rows", "neighbours_")) and not n.endswith(".tmp")):
            os.remove(os.path.join(cache_dir, n))
    os.replace(pix_path + ".tmp", pix_path)
    _write_atomic(names_path, lambda p: _write_text(p, "\n".join(names) + "\n"))
    _write_atomic(idx_path, lambda p: _write_npy(p, table))
    print(f"cache: {len(names)} images at native size, {off / 1e6:.0f} MB, in {time.time() - t0:.0f} s")


class GeneralImages:
    """The general cache: images[i] is image i as an (h, w, 3) uint8 view of the memory map."""

    def __init__(self, cache_dir):
        pix_path, idx_path, _ = general_paths(cache_dir)
        if not os.path.exists(idx_path) or not os.path.exists(pix_path):
            raise SystemExit(f"train: no general cache in {cache_dir}; run `train.py cache --data-kind general` first")
        self.table = np.load(idx_path)
        self.pix = np.memmap(pix_path, dtype=np.uint8, mode="r")
        last = self.table[-1]
        if int(last[0] + last[1] * last[2] * 3) != self.pix.size:
            raise SystemExit(f"train: {pix_path} and {idx_path} disagree (interrupted cache?); rebuild it")

    def __len__(self):
        return self.table.shape[0]

    def __getitem__(self, i):
        off, h, w = (int(v) for v in self.table[i])
        return self.pix[off:off + h * w * 3].reshape(h, w, 3)


def axis_weights(n_in, n_out):
    """(n_out, n_in) float32 resampling matrix of imaging/img.c rs_axis_plan: area averaging when
    shrinking, bilinear with pixel centres aligned (edges clamped) when enlarging or keeping."""
    wm = np.zeros((n_out, n_in), np.float64)
    s = n_in / n_out
    for i in range(n_out):
        if n_out < n_in:
            lo, hi = i * s, (i + 1) * s
            j0 = min(int(math.floor(lo)), n_in - 1)
            for j in range(j0, min(j0 + int(math.ceil(s)) + 1, n_in)):
                ov = min(hi, j + 1.0) - max(lo, float(j))
                if ov > 0:
                    wm[i, j] = ov
            wm[i] /= wm[i].sum()
        else:
            pos = (i + 0.5) * s - 0.5
            j0 = int(math.floor(pos))
            f = pos - j0
            if j0 < 0:
                j0, f = 0, 0.0
            if j0 >= n_in - 1:
                j0, f = n_in - 1, 0.0
            wm[i, j0] += 1.0 - f
            if f:
                wm[i, j0 + 1] += f
    return wm.astype(np.float32)


_AXIS_CACHE = {}


def _axis(n_in, n_out):
    key = (n_in, n_out)
    if key not in _AXIS_CACHE:
        if len(_AXIS_CACHE) > 4096:
            _AXIS_CACHE.clear()
        _AXIS_CACHE[key] = axis_weights(n_in, n_out)
    return _AXIS_CACHE[key]


def resize_rect(a, x0, y0, cw, ch, w, h):
    """imaging/img.c img_resize_rect in numpy: the rectangle (x0, y0, cw, ch) of the (H, W, 3) uint8
    image `a` resampled to (h, w, 3) uint8 (rows first, in float32; clamped, rounded half up)."""
    if (cw, ch) == (w, h):
        return np.array(a[y0:y0 + ch, x0:x0 + cw], dtype=np.uint8)
    src = np.asarray(a[y0:y0 + ch, x0:x0 + cw], dtype=np.float32)
    tmp = _axis(cw, w) @ src  # (ch, w, 3): every row resampled
    out = (_axis(ch, h) @ tmp.reshape(ch, w * 3)).reshape(h, w, 3)
    return np.floor(np.clip(out, 0, 255) + 0.5).astype(np.uint8)


def square_row(a, size):
    """imaging/img.c img_square: the centred square of the short side, resampled to size x size;
    the row `semipaint index build` stores for an image (an image already at size is kept as is)."""
    h, w = a.shape[:2]
    side = min(h, w)
    return resize_rect(a, (w - side) // 2, (h - side) // 2, side, side, size, size)


def rows_path(cache_dir, size):
    return os.path.join(cache_dir, f"rows{size}.u8")


def general_rows(images, cache_dir, size):
    """(N, size, size, 3) uint8 memory map of every image's database row, built once (atomically)."""
    p = rows_path(cache_dir, size)
    if not os.path.exists(p):
        t0 = time.time()
        m = np.lib.format.open_memmap(p + ".tmp.npy", mode="w+", dtype=np.uint8, shape=(len(images), size, size, 3))
        for i in range(len(images)):
            m[i] = square_row(images[i], size)
        m.flush()
        del m
        with open(p + ".tmp.npy", "rb") as f:
            os.fsync(f.fileno())
        os.replace(p + ".tmp.npy", p)
        print(f"train: database rows of {len(images)} images at {size}x{size} in {time.time() - t0:.1f} s "
              f"written to {p}", flush=True)
    return np.load(p, mmap_mode="r")


def general_neighbours_path(cache_dir, size, descriptor="thumb16"):
    return os.path.join(cache_dir, f"neighbours_{descriptor}_{size}.npy")


def general_neighbours(rows, path, k, descriptor="thumb16"):
    """Top-k other images by `descriptor` on the database rows, (N, k) int32, saved to `path` once."""
    if os.path.exists(path):
        ids = np.load(path)
        if ids.shape[0] == rows.shape[0] and ids.shape[1] >= k:
            return ids
    t0 = time.time()
    ids, scores, _ = compute_neighbours(rows, descriptor, max(k, 4))
    _write_atomic(path, lambda p: _write_npy(p, ids))
    print(f"train: neighbours {ids.shape} by {descriptor} on the rows in {time.time() - t0:.1f} s, mean top-1 "
          f"cosine {scores[:, 0].mean():.4f}; written to {path}", flush=True)
    return ids


# ---------------------------------------------------------------------------------------------
# random strokes and blobs (the general family's second mask source)

def _ellipse(mask, cx, cy, rx, ry, theta):
    """Sets to 255 the pixels of `mask` whose centres lie in the rotated ellipse."""
    s = mask.shape[0]
    e = max(rx, ry)
    x0, x1 = max(0, int(cx - e) - 1), min(s, int(cx + e) + 2)
    y0, y1 = max(0, int(cy - e) - 1), min(s, int(cy + e) + 2)
    if x0 >= x1 or y0 >= y1:
        return
    px = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5 - cx
    py = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5 - cy
    c, sn = math.cos(theta), math.sin(theta)
    u, v = (px * c + py * sn) / rx, (-px * sn + py * c) / ry
    mask[y0:y1, x0:x1][u * u + v * v <= 1.0] = 255


def _brush_stroke(mask, rng):
    """A thick random brush stroke: a polyline of 2-8 segments turning gently, one width."""
    s = mask.shape[0]
    r = s * rng.uniform(0.015, 0.07)
    x, y = rng.uniform(0, s, 2)
    ang = rng.uniform(0, 2 * math.pi)
    for _ in range(int(rng.integers(2, 9))):
        ang += rng.normal(0.0, 0.7)
        ln = s * rng.uniform(0.08, 0.35)
        nx, ny = x + ln * math.cos(ang), y + ln * math.sin(ang)
        qdimd.draw_segment(mask, x, y, nx, ny, r)
        x, y = nx, ny


def _blob(mask, rng):
    """A random blob: 1-4 rotated ellipses around one centre."""
    s = mask.shape[0]
    cx, cy = rng.uniform(0, s, 2)
    for _ in range(int(rng.integers(1, 5))):
        rx, ry = s * rng.uniform(0.03, 0.2, 2)
        ox, oy = rng.normal(0.0, 0.08 * s, 2)
        _ellipse(mask, cx + ox, cy + oy, rx, ry, rng.uniform(0, math.pi))


def stroke_blob_mask(size, seed, index):
    """Mask `index` of the strokes-and-blobs source: (size, size) uint8, 255 = hole, a pure
    function of (size, seed, index). A target hole ratio is drawn uniformly in 5-60%, a style
    (strokes, blobs or both), and shapes are added until the ratio reaches the target; a shape
    that would take it above 65% is left out."""
    rng = np.random.default_rng([seed, 3, index])
    target = rng.uniform(0.05, 0.60)
    style = int(rng.integers(0, 3))  # 0 strokes, 1 blobs, 2 both
    mask = np.zeros((size, size), np.uint8)
    for _ in range(60):
        trial = mask.copy()
        if style == 0 or (style == 2 and rng.random() < 0.5):
            _brush_stroke(trial, rng)
        else:
            _blob(trial, rng)
        ratio = np.count_nonzero(trial) / trial.size
        if ratio > 0.65:
            continue
        mask = trial
        if ratio >= target:
            break
    if not mask.any():
        _ellipse(mask, size / 2, size / 2, size / 6, size / 8, 0.0)
    return mask


class MixedMasks:
    """The general family's masks: sample i is QD-IMD mask i (training/qdimd.py) when its draw
    `u` is below `qd_share`, else strokes-and-blobs mask i, both at the working size."""

    def __init__(self, ndjson, qd_params, seed, qd_share):
        self.qd = qdimd.QDIMDMasks(ndjson, qd_params)
        self.size, self.seed, self.qd_share = qd_params.size, seed, qd_share

    def get(self, i, u):
        if u < self.qd_share:
            return self.qd[i]
        return stroke_blob_mask(self.size, self.seed, i)


# ---------------------------------------------------------------------------------------------
# configurations, nets, loss

# Candidate configurations measured by `bench` (weights/README.md records the choice).
CANDIDATES = {
    "cpu128": dict(size=128, enc_kernels=[7, 5, 5, 3, 3], enc_channels=[32, 64, 128, 128, 128]),
    "cpu128n": dict(size=128, enc_kernels=[5, 5, 3, 3, 3], enc_channels=[24, 48, 96, 96, 96]),
    "cpu128w": dict(size=128, enc_kernels=[7, 5, 5, 3, 3, 3], enc_channels=[48, 96, 192, 192, 192, 192]),
    # the shipped cpu256 widths at 128 (six levels down to 2x2), a candidate of the general family
    "cpu128m": dict(size=128, enc_kernels=[7, 5, 5, 3, 3, 3], enc_channels=[16, 32, 64, 128, 128, 128]),
    "cpu256n": dict(size=256, enc_kernels=[7, 5, 5, 3, 3, 3], enc_channels=[8, 16, 32, 64, 64, 64]),
    "cpu256s": dict(size=256, enc_kernels=[7, 5, 5, 3, 3, 3], enc_channels=[12, 24, 48, 96, 96, 96]),
    # "small" widened at two levels, for the tests of `widen`.
    "smallw": dict(size=64, enc_kernels=[5, 3, 3, 3], enc_channels=[24, 32, 40, 48]),
}


def config_of(name):
    if name in CANDIDATES:
        return dict(CANDIDATES[name])
    return nets.resolve_config(name)


def build_nets(cfg, names):
    out = {}
    for n in names:
        if n == "pconv":
            out[n] = nets.build("pconv_unet", cfg)
        elif n.startswith("sim"):
            out[n] = nets.build("simk_unet", cfg, k=int(n[3:]))
        else:
            raise ValueError(f"unknown net {n!r}")
    return out


def net_k(name):
    return int(name[3:]) if name.startswith("sim") else -1


def forward(name, net, img, m1, nbrs):
    """img (B,3,S,S), m1 (B,1,S,S) 1 = keep, nbrs (B,K,3,S,S) -> raw output (B,3,S,S)."""
    if name == "pconv":
        return net(img, m1)
    k = net_k(name)
    parts = [img * m1, m1] + [nbrs[:, j] for j in range(k)]
    return net(torch.cat(parts, 1))


class VGGLoss:
    """Perceptual and style terms on VGG-16 pool1..pool3 (ImageNet weights)."""

    def __init__(self, path):
        import export
        self.vgg = nets.build("vgg16_features", "paper256")
        self.vgg.load_state_dict(export._torchvision_vgg16_state(path))
        self.vgg.eval()
        for p in self.vgg.parameters():
            p.requires_grad_(False)

    def feats(self, x):
        h = (x - self.vgg.mean) / self.vgg.std
        out = []
        for i, layer in enumerate(self.vgg.features[:17]):
            h = layer(h)
            if i in (4, 9, 16):
                out.append(h)
        return out

    @staticmethod
    def gram(f):
        b, c, h, w = f.shape
        f = f.reshape(b, c, h * w)
        return f @ f.transpose(1, 2) / (c * h * w)

    def __call__(self, out, comp, gt):
        fo, fc, fg = self.feats(out), self.feats(comp), [t.detach() for t in self.feats(gt)]
        perc = sum((a - g).abs().mean() + (c - g).abs().mean() for a, c, g in zip(fo, fc, fg))
        style = sum((self.gram(a) - self.gram(g)).abs().mean() + (self.gram(c) - self.gram(g)).abs().mean()
                    for a, c, g in zip(fo, fc, fg))
        return perc, style


def loss_terms(out, img, m1, vgg=None):
    """Equation (1)'s terms (tensors) for raw output `out`, target `img`, mask m1 (1 = keep)."""
    hole = 1.0 - m1
    l_valid = (m1 * (out - img)).abs().mean()
    l_hole = (hole * (out - img)).abs().mean()
    comp = m1 * img + hole * out
    region = F.max_pool2d(hole, 3, 1, 1)  # the hole dilated by one pixel
    rh = region[:, :, :, 1:] * region[:, :, :, :-1]
    rv = region[:, :, 1:, :] * region[:, :, :-1, :]
    n = out.numel()
    l_tv = ((rh * (comp[:, :, :, 1:] - comp[:, :, :, :-1]).abs()).sum()
            + (rv * (comp[:, :, 1:, :] - comp[:, :, :-1, :]).abs()).sum()) / n
    terms = {"valid": l_valid, "hole": l_hole, "tv": l_tv}
    total = W_VALID * l_valid + W_HOLE * l_hole + W_TV * l_tv
    if vgg is not None:
        perc, style = vgg(out, comp, img)
        terms["perc"], terms["style"] = perc, style
        total = total + W_PERC * perc + W_STYLE * style
    terms["total"] = total
    return terms


# ---------------------------------------------------------------------------------------------
# the training stream: a pure function of (seed, step)

def flip_mask(m, code):
    """The mask augmentation of the streams: code bit 1 flips it horizontally, bit 2 vertically."""
    if code & 1:
        m = m[:, ::-1]
    if code & 2:
        m = m[::-1]
    return m


def batch_tensors(img, masks, nb):
    """uint8 (B,S,S,3) images, (B,S,S) masks (< 128 = keep) and (B,K,S,S,3) neighbours -> the
    float tensors (img (B,3,S,S), m1 (B,1,S,S) 1 = keep, nbrs (B,K,3,S,S)) in [0,1]."""
    t_img = torch.from_numpy(img).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    t_nb = torch.from_numpy(nb).permute(0, 1, 4, 2, 3).float().div_(255.0).contiguous()
    t_m = torch.from_numpy((masks < 128).astype(np.float32)).unsqueeze(1)
    return t_img, t_m, t_nb


class Stream:
    def __init__(self, images, nbr_ids, batch, seed, mask_params, ndjson):
        self.images, self.nbr_ids, self.batch, self.seed = images, nbr_ids, batch, seed
        self.n = images.shape[0]
        self.size = images.shape[1]
        self.masks = qdimd.QDIMDMasks(ndjson, mask_params)
        self._perm_epoch, self._perm = -1, None

    def _perm_for(self, epoch):
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, 1, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return self._perm

    def batch_at(self, step, kmax):
        """(img (B,3,S,S), m1 (B,1,S,S), nbrs (B,kmax,3,S,S), ids) for training step `step`."""
        b = self.batch
        ids = np.empty(b, np.int64)
        for j in range(b):
            pos = step * b + j
            ids[j] = self._perm_for(pos // self.n)[pos % self.n]
        rng = np.random.default_rng([self.seed, 2, step])
        flips = rng.random(b) < 0.5
        mflip = rng.integers(0, 4, b)  # mask augmentation: none, h, v, both flips
        img = np.asarray(self.images[np.sort(ids)])[np.argsort(np.argsort(ids))]
        img = img.copy()
        nb = np.zeros((b, kmax, self.size, self.size, 3), np.uint8)
        masks = np.empty((b, self.size, self.size), np.uint8)
        for j in range(b):
            for q in range(kmax):
                nb[j, q] = self.images[self.nbr_ids[ids[j], q]]
            if flips[j]:
                img[j] = img[j, :, ::-1]
                nb[j] = nb[j, :, :, ::-1]
            m = self.masks[step * b + j]
            masks[j] = flip_mask(m, mflip[j])
        return batch_tensors(img, masks, nb) + (ids,)


class GeneralStream:
    """The general family's stream, a pure function of (seed, step) like Stream: image order (one
    permutation per epoch), then per sample a square crop of side between min(S, short side) and
    the short side (log-uniform), at a uniform position, resampled to S x S as the service's
    `crop` strategy does (imaging/plan.c, img_resize_rect: area averaging when shrinking); a
    horizontal flip (of the crop and its neighbours); a mask from the mixed source, flipped at
    random. Neighbours are the database rows (square_row) of the image's nearest other images."""

    def __init__(self, images, rows, nbr_ids, batch, seed, size, masks):
        self.images, self.rows, self.nbr_ids = images, rows, nbr_ids
        self.batch, self.seed, self.size, self.masks = batch, seed, size, masks
        self.n = len(images)
        self._perm_epoch, self._perm = -1, None

    _perm_for = Stream._perm_for

    def crop_box(self, i, u_side, u_x, u_y):
        """(x0, y0, side) of the crop of image i for the draws u_side, u_x, u_y in [0, 1)."""
        _, h, w = (int(v) for v in self.images.table[i])
        short = min(h, w)
        lo = min(self.size, short)
        side = int(math.floor(math.exp(math.log(lo) + u_side * (math.log(short + 1) - math.log(lo)))))
        side = max(lo, min(side, short))
        return int(u_x * (w - side + 1)), int(u_y * (h - side + 1)), side

    def batch_at(self, step, kmax):
        """(img (B,3,S,S), m1 (B,1,S,S), nbrs (B,kmax,3,S,S), ids) for training step `step`."""
        b, s = self.batch, self.size
        ids = np.empty(b, np.int64)
        for j in range(b):
            pos = step * b + j
            ids[j] = self._perm_for(pos // self.n)[pos % self.n]
        rng = np.random.default_rng([self.seed, 2, step])
        flips = rng.random(b) < 0.5
        mflip = rng.integers(0, 4, b)  # mask augmentation: none, h, v, both flips
        u = rng.random((b, 4))  # crop side, crop x, crop y, mask source
        img = np.empty((b, s, s, 3), np.uint8)
        nb = np.zeros((b, kmax, s, s, 3), np.uint8)
        masks = np.empty((b, s, s), np.uint8)
        for j in range(b):
            x0, y0, side = self.crop_box(ids[j], u[j, 0], u[j, 1], u[j, 2])
            img[j] = resize_rect(self.images[ids[j]], x0, y0, side, side, s, s)
            for q in range(kmax):
                nb[j, q] = self.rows[self.nbr_ids[ids[j], q]]
            if flips[j]:
                img[j] = img[j, :, ::-1]
                nb[j] = nb[j, :, :, ::-1]
            m = self.masks.get(step * b + j, u[j, 3])
            masks[j] = flip_mask(m, mflip[j])
        return batch_tensors(img, masks, nb) + (ids,)


# ---------------------------------------------------------------------------------------------
# checkpoints

def default_ckpt_dir(kind):
    """.train/<kind> at the repository's root: git-ignored, so no checkpoint is ever committed."""
    return os.path.join(TRAIN_STATE_DIR, kind or "faces")


def ckpt_file(ckpt_dir):
    return os.path.join(ckpt_dir, "train.pt")


def load_checkpoint(ckpt_dir):
    path = ckpt_file(ckpt_dir)
    if not os.path.isfile(path):
        raise SystemExit(f"train: no checkpoint {path} (checkpoints live outside git, in .train/; start one from "
                         f"the shipped weights with `train.py run --init-from weights`)")
    return torch.load(path, map_location="cpu")


def save_checkpoint(ckpt_dir, state):
    os.makedirs(ckpt_dir, exist_ok=True)
    path = ckpt_file(ckpt_dir)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def lr_at(args, step):
    """Adam's learning rate at `step`: lr_high before lr_high_steps, then lr, then lr_final from
    step lr_final_from on (when set); times (i+1)/N for the i-th of the N warm-up steps after an
    --init-from (args["warmup"] = {"from": first step, "steps": N})."""
    if step < args["lr_high_steps"]:
        lr = args["lr_high"]
    elif args.get("lr_final_from") is not None and step >= args["lr_final_from"]:
        lr = args["lr_final"]
    else:
        lr = args["lr"]
    w = args.get("warmup")
    if w and w["from"] <= step < w["from"] + w["steps"]:
        lr *= (step - w["from"] + 1) / w["steps"]
    return lr


def samples_at(args, step):
    """Training samples seen after `step` steps (an --init-from run adds its own batches to the
    samples the model card counted, whatever batch size those had)."""
    init = args.get("init_from")
    if init:
        return init["samples"] + (step - init["step"]) * args["batch"]
    return step * args["batch"]


# what `export` writes into the model card's notes (model_card), read back by --init-from
CARD_STEPS = re.compile(r"\b(\d+) steps of batch (\d+) \((\d+) samples\)")
CARD_LR_HIGH_STEPS = re.compile(r"for the first (\d+) steps")
CARD_LR_FINAL = re.compile(r", ([0-9.eE+-]+) from step (\d+)")


def init_from_weights(d, cfg, config_name, names, kind):
    """The start of an --init-from run: the exported nets of folder `d` (<d>/<net>.safetensors,
    as `export` writes them and weights/ ships them). Refuses a file whose arch, size, kernels,
    channels or k differ from `cfg` (the --config). Returns (state dicts by net, info) where info
    has the step and samples the model cards record (0 when they record none), the schedule they
    state and the sha256 prefixes of the files."""
    import export as ex
    states, steps, info = {}, set(), {"dir": os.path.abspath(d), "sha256": {}}
    for n in names:
        path = os.path.join(d, f"{n}.safetensors")
        if not os.path.isfile(path):
            raise SystemExit(f"train: --init-from {d}: there is no {n}.safetensors (the run's nets are "
                             f"{','.join(names)}; choose them with --nets)")
        try:
            model, meta = ex.load_module(path)
        except (ValueError, KeyError, OSError) as e:
            raise SystemExit(f"train: --init-from: cannot read {path}: {e}")
        want = {"arch": "pconv_unet" if n == "pconv" else "simk_unet", "size": cfg["size"],
                "enc_kernels": list(cfg["enc_kernels"]), "enc_channels": list(cfg["enc_channels"]), "k": net_k(n)}
        bad = [f"{key} {meta.get(key)} where --config {config_name} has {v}" for key, v in want.items()
               if meta.get(key) != v]
        if bad:
            named = re.search(r"config (\S+),", meta.get("notes", ""))
            raise SystemExit(f"train: --init-from: {path} does not match --config {config_name}: {'; '.join(bad)}. "
                             f"Pass the configuration the file was trained at"
                             + (f" (its model card says --config {named.group(1)})" if named else "") + ".")
        card_kind = ("general" if "general photographs" in meta.get("trained_on", "") else
                     "faces" if "CelebA-HQ" in meta.get("trained_on", "") else None)
        if card_kind and card_kind != kind:
            print(f"train: note: {path} was trained on {card_kind} data; this run trains it on {kind}", flush=True)
        states[n] = model.state_dict()
        with open(path, "rb") as f:
            info["sha256"][n] = hashlib.sha256(f.read()).hexdigest()[:16]
        notes = meta.get("notes", "")
        m = CARD_STEPS.search(notes)
        steps.add((int(m.group(1)), int(m.group(3))) if m else None)
        if m:
            h, fin = CARD_LR_HIGH_STEPS.search(notes), CARD_LR_FINAL.search(notes)
            info["lr_high_steps"] = int(h.group(1)) if h else None
            info["lr_final"] = (float(fin.group(1)), int(fin.group(2))) if fin else None
    if len(steps) > 1:
        raise SystemExit(f"train: --init-from {d}: the model cards record different steps "
                         f"({', '.join(sorted(str(s[0]) if s else 'none' for s in steps))}); the nets were not "
                         f"exported together")
    st = steps.pop()
    info["step"], info["samples"] = st if st else (0, 0)
    if not st:
        print(f"train: the model cards in {d} record no step count: the step counter starts at 0", flush=True)
    return states, info


def init_log(d, step):
    """The loss log that goes with weights exported at `step`: the rows up to `step` of
    <d>/loss_log.jsonl or <d>/training-logs/loss_log.jsonl (the first that exists), else []."""
    for path in (os.path.join(d, "loss_log.jsonl"), os.path.join(d, "training-logs", "loss_log.jsonl")):
        if os.path.isfile(path):
            with open(path) as f:
                rows = [json.loads(ln) for ln in f if ln.strip()]
            kept = [r for r in rows if r.get("step", 0) <= step]
            print(f"train: loss log continued from {path} ({len(kept)} rows up to step {step}"
                  + (f"; {len(rows) - len(kept)} later rows left out" if len(kept) < len(rows) else "") + ")",
                  flush=True)
            return kept
    return []


def general_stream(a, targs, kmax):
    """The GeneralStream of a --data-kind general run: the native cache, the database rows at the
    working size and their neighbours (both built on first use); records the image count and a
    digest of the neighbours in `targs` and refuses to resume on other data."""
    import hashlib
    cache_dir = a.cache_dir or GENERAL_CACHE_DIR
    size = targs["cfg"]["size"]
    images = GeneralImages(cache_dir)
    if targs.setdefault("n_images", len(images)) != len(images):
        raise SystemExit(f"train: the run was on {targs['n_images']} images, the cache {cache_dir} has {len(images)}")
    rows = general_rows(images, cache_dir, size)
    nbr_ids = np.zeros((len(images), max(kmax, 1)), np.int32)
    if kmax > 0:
        path = a.neighbours or general_neighbours_path(cache_dir, size, targs["descriptor"])
        nbr_ids = general_neighbours(rows, path, kmax, targs["descriptor"])
        digest = hashlib.sha256(np.ascontiguousarray(nbr_ids[:, :kmax], dtype="<i4").tobytes()).hexdigest()[:16]
        if targs.setdefault("neighbours_sha256", digest) != digest:
            raise SystemExit(f"train: {path} differs from the run's neighbours (sha256 {digest}, "
                             f"run {targs['neighbours_sha256']})")
    mp = qdimd.Params(size=size, seed=targs["mask_seed"])
    masks = MixedMasks(a.ndjson, mp, targs["mask_seed"], targs["mask_qd_share"])
    return GeneralStream(images, rows, nbr_ids, targs["batch"], targs["seed"], size, masks)


def run(a):
    torch.set_num_threads(a.threads)
    ckpt_path = ckpt_file(a.ckpt_dir)
    init_states = None
    if a.init_from and os.path.exists(ckpt_path):
        raise SystemExit(f"train: --init-from {a.init_from}: {ckpt_path} exists; without --init-from `run` resumes "
                         f"it exactly (Adam moments included). To start over from the exported weights, move it "
                         f"away or pass another --ckpt-dir.")
    if a.warmup is not None and (not a.init_from or a.warmup < 0):
        raise SystemExit("train: --warmup N (N >= 0) is for --init-from runs (fresh Adam moments)")
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location="cpu")
        targs = ck["args"]
        print(f"train: resuming {ckpt_path} at step {ck['step']} ({targs['config']}, nets {targs['nets']})",
              flush=True)
    else:
        ck = None
        kind = a.data_kind or "faces"
        targs = {"config": a.config, "nets": a.nets.split(","), "batch": a.batch, "seed": a.seed, "lr": a.lr,
                 "lr_high": a.lr_high, "lr_high_steps": a.lr_high_steps, "descriptor": a.descriptor,
                 "mask_seed": a.mask_seed, "vgg16": bool(a.vgg16), "data_kind": kind,
                 "data": os.path.abspath(a.data or (GENERAL_TRAIN if kind == "general" else DEFAULT_TRAIN)),
                 "cfg": config_of(a.config)}
        if kind == "general":
            targs["mask_qd_share"] = GENERAL_QD_SHARE
        if a.init_from:
            init_states, info = init_from_weights(a.init_from, targs["cfg"], a.config, targs["nets"], kind)
            start = info["step"]
            if a.lr_high_steps is None:
                targs["lr_high_steps"] = info.get("lr_high_steps") or 8000
            if a.lr_final_from is None and info.get("lr_final"):
                targs["lr_final"], targs["lr_final_from"] = info["lr_final"]
            warmup = 200 if a.warmup is None else a.warmup
            if warmup > 0:
                targs["warmup"] = {"from": start, "steps": warmup}
            targs["init_from"] = {"dir": info["dir"], "step": start, "samples": info["samples"] or start * a.batch,
                                  "warmup": warmup, "sha256": info["sha256"]}
            init_log_rows = init_log(a.init_from, start)
    kind = targs.get("data_kind", "faces")
    if a.data_kind is not None and a.data_kind != kind:
        raise SystemExit(f"train: {ckpt_path} is a --data-kind {kind} run, not {a.data_kind}")
    if a.lr_high_steps is not None and ck is not None:
        targs["lr_high_steps"] = a.lr_high_steps  # the schedule may be changed on resume; logged
    if a.lr_final_from is not None:
        targs["lr_final"], targs["lr_final_from"] = a.lr_final, a.lr_final_from
    if init_states is not None:
        start, warmup = targs["init_from"]["step"], targs["init_from"]["warmup"]
        print(f"train: starting from the exported nets of {a.init_from} at step {start} ({a.config}, nets "
              f"{','.join(targs['nets'])}) with fresh Adam moments; "
              + (f"learning rate warmed up linearly over steps {start + 1}-{start + warmup}; "
                 if warmup > 0 else "no warm-up; ")
              + f"lr {targs['lr_high']:g} before step {targs['lr_high_steps']}, then {targs['lr']:g}"
              + (f", {targs['lr_final']:g} from step {targs['lr_final_from']}"
                 if targs.get("lr_final_from") is not None else ""), flush=True)
    cfg = targs["cfg"]
    size = cfg["size"]
    kmax = max([net_k(n) for n in targs["nets"]] + [0])
    if kind == "general":
        stream = general_stream(a, targs, kmax)
    else:
        cache_dir = a.cache_dir or DEFAULT_CACHE_DIR
        neighbours = a.neighbours or DEFAULT_NEIGHBOURS
        images = open_cache(cache_dir, size)
        nbr_ids = np.zeros((images.shape[0], max(kmax, 1)), np.int32)
        if kmax > 0:
            nb = np.load(neighbours)
            if nb.shape[0] != images.shape[0] or nb.shape[1] < kmax:
                raise SystemExit(f"train: {neighbours} has shape {nb.shape}, need ({images.shape[0]}, >={kmax})")
            nbr_ids = nb
        mp = qdimd.Params(size=size, seed=targs["mask_seed"])
        stream = Stream(images, nbr_ids, targs["batch"], targs["seed"], mp, a.ndjson)
    torch.manual_seed(targs["seed"])
    models = build_nets(cfg, targs["nets"])
    opts = {n: torch.optim.Adam(m.parameters(), lr=lr_at(targs, 0)) for n, m in models.items()}
    log, step = [], 0
    if ck is not None:
        for n in targs["nets"]:
            models[n].load_state_dict(ck["models"][n])
            opts[n].load_state_dict(ck["opts"][n])
        torch.set_rng_state(ck["torch_rng"])
        log, step = ck["log"], ck["step"]
    elif init_states is not None:
        for n in targs["nets"]:
            models[n].load_state_dict(init_states[n])
        log, step = init_log_rows, targs["init_from"]["step"]
    vgg = VGGLoss(a.vgg16) if targs["vgg16"] else None
    for m in models.values():
        m.train()

    stop = {"flag": False}

    def on_signal(signum, _frame):
        stop["flag"] = True
        print(f"train: signal {signum}, checkpointing after this step", flush=True)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def checkpoint():
        save_checkpoint(a.ckpt_dir, {"args": targs, "step": step, "log": log, "torch_rng": torch.get_rng_state(),
                                     "models": {n: m.state_dict() for n, m in models.items()},
                                     "opts": {n: o.state_dict() for n, o in opts.items()}})
        with open(os.path.join(a.ckpt_dir, "loss_log.jsonl.tmp"), "w") as f:
            for row in log:
                f.write(json.dumps(row) + "\n")
        os.replace(os.path.join(a.ckpt_dir, "loss_log.jsonl.tmp"), os.path.join(a.ckpt_dir, "loss_log.jsonl"))

    t_start = time.time()
    last_ck = time.time()
    acc = {n: {} for n in targs["nets"]}
    acc_steps, acc_time = 0, 0.0
    end_step = step + a.steps if a.steps else None
    deadline = t_start + a.minutes * 60 if a.minutes else None
    while not stop["flag"]:
        if end_step is not None and step >= end_step:
            break
        if deadline is not None and time.time() >= deadline:
            break
        t0 = time.process_time()
        img, m1, nb, _ = stream.batch_at(step, kmax)
        lr = lr_at(targs, step)
        for n, net in models.items():
            for g in opts[n].param_groups:
                g["lr"] = lr
            out = forward(n, net, img, m1, nb)
            terms = loss_terms(out, img, m1, vgg)
            opts[n].zero_grad(set_to_none=True)
            terms["total"].backward()
            opts[n].step()
            for key, v in terms.items():
                acc[n][key] = acc[n].get(key, 0.0) + float(v)
        step += 1
        acc_steps += 1
        acc_time += time.process_time() - t0
        if step % a.log_every == 0:
            row = {"step": step, "samples": samples_at(targs, step), "lr": lr, "cpu_s_per_step": acc_time / acc_steps,
                   "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            for n in targs["nets"]:
                row[n] = {key: round(v / acc_steps, 6) for key, v in acc[n].items()}
            log.append(row)
            print(json.dumps(row), flush=True)
            acc = {n: {} for n in targs["nets"]}
            acc_steps, acc_time = 0, 0.0
        if time.time() - last_ck >= a.checkpoint_minutes * 60:
            checkpoint()
            last_ck = time.time()
    checkpoint()
    print(f"train: checkpoint at step {step} written to {ckpt_path}", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# export

def model_card(targs, step, log, name):
    last = [r for r in log if name in r][-5:]
    losses = {}
    for r in last:
        for key, v in r[name].items():
            losses[key] = losses.get(key, 0.0) + v / len(last)
    terms = "L_valid + 6 L_hole + 0.1 L_tv" + (" + 0.05 L_perc + 120 L_style" if targs["vgg16"] else "")
    init = targs.get("init_from")
    notes = (f"semipaint training/train.py, config {targs['config']}, {step} steps of batch {targs['batch']} "
             f"({samples_at(targs, step)} samples)"
             + (f" (continued at step {init['step']} from exported weights, Adam moments rebuilt"
                + (f", {init['warmup']}-step warm-up)" if init["warmup"] else ")") if init else "")
             + f", Adam lr {targs['lr_high']:g} for the first "
             f"{targs['lr_high_steps']} steps then {targs['lr']:g}"
             + (f", {targs['lr_final']:g} from step {targs['lr_final_from']}" if targs.get("lr_final_from") is not None
                else "")
             + f"; loss {terms}"
             + ("" if targs["vgg16"] else " (perceptual and style terms off: no ImageNet VGG-16 weights here)")
             + (f"; QD-IMD masks (seed {targs['mask_seed']}, Quick Draw simplified, flips)"
                if targs.get("data_kind", "faces") == "faces" else
                f"; masks {targs['mask_qd_share']:.0%} QD-IMD, the rest random strokes and blobs (seed "
                f"{targs['mask_seed']}, flips); multi-scale square crops resampled to the working size")
             + (f"; neighbours: top-{net_k(name)} by {targs['descriptor']} over the unmasked training images, "
                f"excluding the image itself" if net_k(name) > 0 else "")
             + "; mean loss terms over the last logged steps: "
             + ", ".join(f"{key} {v:.4f}" for key, v in sorted(losses.items())))
    return notes[:1023]  # what the engine keeps (docs/weights.md)


def export(a):
    import export as ex
    ck = load_checkpoint(a.ckpt_dir)
    targs, step = ck["args"], ck["step"]
    os.makedirs(a.out_dir, exist_ok=True)
    for n in targs["nets"]:
        model = build_nets(targs["cfg"], [n])[n]
        model.load_state_dict(ck["models"][n])
        arch = "pconv_unet" if n == "pconv" else "simk_unet"
        if targs.get("data_kind", "faces") == "general":
            trained_on = (f"general photographs train ({targs['n_images']:,} images: Imagenette, Intel scenes, "
                          f"BSDS500, CamVid), crops at {targs['cfg']['size']}x{targs['cfg']['size']}, "
                          f"{samples_at(targs, step)} samples")
            licence = LICENCE_GENERAL
        else:
            trained_on = (f"CelebA-HQ 256 train (12,000 images, 00001-12000) at {targs['cfg']['size']}x"
                          f"{targs['cfg']['size']}, {samples_at(targs, step)} samples")
            licence = LICENCE
        path = os.path.join(a.out_dir, f"{n}.safetensors")
        ex.export_module(model, arch, targs["cfg"], path, trained_on=trained_on[:255], licence=licence[:255],
                         notes=model_card(targs, step, ck["log"], n), dtype=a.dtype)
        print(f"export: {path} ({arch}, step {step}, {nets.count_params(model):,} params, {a.dtype})")
    return 0


# ---------------------------------------------------------------------------------------------
# widen: continue training at a wider configuration (function-preserving, Net2Net style)

def _segments(cfg, in_channels, out_channels=3):
    """Per parameter-bearing layer of the UNet: (out channels, [input segment sizes]); a decoder's
    input is [upsampled previous output, skip], an encoder's a single segment."""
    enc_io, dec_io = nets._unet_channels(cfg["enc_channels"], in_channels, out_channels)
    layers = {f"enc.{i}": (co, [ci]) for i, (ci, co) in enumerate(enc_io)}
    prev = cfg["enc_channels"][-1]
    for i, (ci, co) in enumerate(dec_io):
        layers[f"dec.{i}"] = (co, [prev, ci - prev])
        prev = co
    return layers


def widen_tensor(old, new, seg_old, seg_new):
    """The widened copy of a parameter `old`: `new` (the wider net's freshly initialised tensor) with
    the old values in the old output rows and old input positions of every input segment, and the
    new input positions of the old output rows set to 0, so the old outputs do not see the new
    channels. Works for weights (out, in, k, k), biases (out,) and Adam's moments of either."""
    out = new.clone()
    co_old = seg_old[0]
    if old.dim() == 1:
        out[:co_old] = old
        return out
    oo, on = 0, 0
    for so, sn in zip(seg_old[1], seg_new[1]):
        out[:co_old, on:on + sn] = 0
        out[:co_old, on:on + so] = old[:, oo:oo + so]
        oo, on = oo + so, on + sn
    return out


def widen(a):
    ck = load_checkpoint(a.ckpt_dir)
    targs, step = ck["args"], ck["step"]
    cfg_old, cfg_new = targs["cfg"], config_of(a.to)
    if cfg_old["size"] != cfg_new["size"] or cfg_old["enc_kernels"] != cfg_new["enc_kernels"] or any(
            n < o for n, o in zip(cfg_new["enc_channels"], cfg_old["enc_channels"])) or len(
            cfg_new["enc_channels"]) != len(cfg_old["enc_channels"]):
        raise SystemExit(f"widen: {a.to} is not a widening of {targs['config']} (same size, kernels and depth, "
                         f"no narrower level)")
    torch.manual_seed(a.seed)
    new_models, new_opt_states = {}, {}
    g = torch.Generator().manual_seed(a.seed)
    for n in targs["nets"]:
        old = build_nets(cfg_old, [n])[n]
        old.load_state_dict(ck["models"][n])
        new = build_nets(cfg_new, [n])[n]
        segs_old, segs_new = _segments(cfg_old, old.in_channels), _segments(cfg_new, new.in_channels)
        sd_old, sd_new = old.state_dict(), new.state_dict()
        names = list(sd_new)
        opt_old = ck["opts"][n]
        wide = {}
        for key in names:
            layer = key.rsplit(".", 1)[0]
            wide[key] = widen_tensor(sd_old[key], sd_new[key], segs_old[layer], segs_new[layer])
        new.load_state_dict(wide)
        # Adam: the old moments in the old slots, zeros in the new ones; the step counts carry on.
        state = {}
        for pid, key in enumerate(names):
            st, layer = opt_old["state"][pid], key.rsplit(".", 1)[0]
            state[pid] = {"step": st["step"].clone() if torch.is_tensor(st["step"]) else st["step"]}
            for mom in ("exp_avg", "exp_avg_sq"):
                state[pid][mom] = widen_tensor(st[mom], torch.zeros_like(sd_new[key]), segs_old[layer], segs_new[layer])
        opt = torch.optim.Adam(new.parameters(), lr=lr_at(targs, step))
        sd_opt = opt.state_dict()
        sd_opt["state"] = state
        sd_opt["param_groups"][0].update({k: v for k, v in opt_old["param_groups"][0].items() if k != "params"})
        opt.load_state_dict(sd_opt)
        # The widened net computes what the old one did (exactly for simk_unet; for pconv_unet the
        # decoder's mask renormalisation weighs the concatenated halves by their widths, so windows
        # across a hole's border move slightly).
        img = torch.rand(2, 3, cfg_new["size"], cfg_new["size"], generator=g)
        m1 = (torch.rand(2, 1, cfg_new["size"], cfg_new["size"], generator=g) > 0.3).float()
        nb = torch.rand(2, max(net_k(n), 1), 3, cfg_new["size"], cfg_new["size"], generator=g)
        with torch.no_grad():
            d = (forward(n, old.eval(), img, m1, nb) - forward(n, new.eval(), img, m1, nb)).abs()
        print(f"widen: {n}: {nets.count_params(old):,} -> {nets.count_params(new):,} params; output change "
              f"max {float(d.max()):.2e}, mean {float(d.mean()):.2e}", flush=True)
        if n != "pconv" and float(d.max()) > 1e-4:
            raise SystemExit(f"widen: {n}: the widened net's output differs by {float(d.max()):.2e}")
        new_models[n], new_opt_states[n] = new.state_dict(), opt.state_dict()
    if a.keep:
        shutil.copyfile(ckpt_file(a.ckpt_dir), a.keep)
        print(f"widen: the {targs['config']} checkpoint kept as {a.keep}")
    targs = dict(targs, config=a.to, cfg=cfg_new)
    targs.setdefault("widened", []).append({"step": step, "from": ck["args"]["config"], "to": a.to})
    save_checkpoint(a.ckpt_dir, {"args": targs, "step": step, "log": ck["log"], "torch_rng": ck["torch_rng"],
                                 "models": new_models, "opts": new_opt_states})
    print(f"widen: {ckpt_file(a.ckpt_dir)} is now {a.to} at step {step}")
    return 0


# ---------------------------------------------------------------------------------------------
# bench

def bench(a):
    torch.set_num_threads(a.threads)
    for cname in a.configs.split(","):
        cfg = config_of(cname)
        s = cfg["size"]
        g = torch.Generator().manual_seed(0)
        img = torch.rand(a.batch, 3, s, s, generator=g)
        m1 = (torch.rand(a.batch, 1, s, s, generator=g) > 0.3).float()
        nb = torch.rand(a.batch, 1, 3, s, s, generator=g)
        line = f"{cname}: size {s}, batch {a.batch}"
        for n in ("pconv", "sim1"):
            net = build_nets(cfg, [n])[n]
            opt = torch.optim.Adam(net.parameters(), lr=1e-4)
            times = []
            for it in range(a.iters + 1):
                t0 = time.process_time()
                out = forward(n, net, img, m1, nb)
                loss = loss_terms(out, img, m1)["total"]
                opt.zero_grad()
                loss.backward()
                opt.step()
                if it:
                    times.append(time.process_time() - t0)
            line += f", {n} {nets.count_params(net):,} params {min(times):.3f} cpu-s/step"
        print(line, flush=True)
    mp = qdimd.Params(size=a.mask_size)
    src = qdimd.QDIMDMasks(a.ndjson, mp)
    t0 = time.process_time()
    for i in range(20):
        src[i]
    print(f"qdimd python masks at {a.mask_size}: {(time.process_time() - t0) / 20 * 1e3:.1f} cpu-ms each")
    if os.path.exists(general_paths(a.general_cache_dir)[1]):
        bench_general_stream(a)
    return 0


def bench_general_stream(a):
    """Times GeneralStream.batch_at (crops, mixed masks, one neighbour) at each configuration's size."""
    images = GeneralImages(a.general_cache_dir)
    for size in sorted({config_of(c)["size"] for c in a.configs.split(",")}):
        rows = general_rows(images, a.general_cache_dir, size)
        masks = MixedMasks(a.ndjson, qdimd.Params(size=size, seed=1000), 1000, GENERAL_QD_SHARE)
        stream = GeneralStream(images, rows, np.zeros((len(images), 1), np.int32), a.batch, 1, size, masks)
        t0 = time.process_time()
        for step in range(10):
            stream.batch_at(step, 1)
        t_sb = time.process_time()
        for i in range(40):
            stroke_blob_mask(size, 1000, i)
        t1 = time.process_time()
        print(f"general stream at {size}, batch {a.batch}: {(t_sb - t0) / 10:.3f} cpu-s per batch "
              f"(strokes-and-blobs masks {(t1 - t_sb) / 40 * 1e3:.1f} cpu-ms each)", flush=True)


def check_thumb(a):
    """Compares thumb_descriptor with the C descriptor: builds a database of the first --n images
    of --data with `semipaint index build`, queries --queries of them with `index query -k 5`, and
    checks ids and cosines against numpy on the same (PIL-decoded) pixels."""
    import subprocess
    import tempfile
    from PIL import Image
    names = list_images(a.data)[:a.n]
    imgs = np.stack([np.asarray(Image.open(os.path.join(a.data, n)).convert("RGB")) for n in names])
    desc = thumb_descriptor(imgs, a.descriptor)
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "img")
        os.mkdir(src)
        for n in names:
            os.symlink(os.path.abspath(os.path.join(a.data, n)), os.path.join(src, n))
        db = os.path.join(tmp, "db")
        subprocess.run([a.semipaint, "index", "build", "--images", src, "--out", db, "--descriptor", a.descriptor,
                        "--threads", "1"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for qi in range(0, a.n, max(1, a.n // a.queries))[:a.queries]:
            out = subprocess.run([a.semipaint, "index", "query", db, os.path.join(a.data, names[qi]), "-k", "5"],
                                 check=True, capture_output=True, text=True).stdout
            rows = [ln.split() for ln in out.splitlines() if ln.strip() and ln.split()[0].isdigit()]
            if len(rows) != 5:
                raise SystemExit(f"check-thumb: cannot read `index query` output:\n{out}")
            sims = desc @ desc[qi]
            want = np.argsort(-sims, kind="stable")[:5]
            for r, w in zip(rows, want):
                cid, cscore = int(r[1]), float(r[2])
                worst = max(worst, abs(cscore - sims[cid]))
                if abs(sims[cid] - sims[w]) > 1e-5:
                    raise SystemExit(f"check-thumb: query {names[qi]}: C ranks id {cid} (cos {cscore:.6f}), numpy "
                                     f"ranks id {w} (cos {sims[w]:.6f}) there")
                if abs(cscore - sims[cid]) > 1e-4:
                    raise SystemExit(f"check-thumb: query {names[qi]}, id {cid}: C cosine {cscore:.6f}, numpy "
                                     f"{sims[cid]:.6f}")
    print(f"check-thumb: {a.descriptor} numpy == C on {a.queries} queries over {a.n} images "
          f"(top-5 ids equal, max cosine difference {worst:.2e})")
    return 0


def same_checkpoints(a):
    """Exit status 0 when two checkpoints hold bit-identical nets, optimizer moments and steps."""
    x, y = torch.load(a.a, map_location="cpu"), torch.load(a.b, map_location="cpu")
    if x["step"] != y["step"]:
        raise SystemExit(f"same-checkpoints: steps {x['step']} != {y['step']}")
    for n in x["models"]:
        for key, t in x["models"][n].items():
            if not torch.equal(t, y["models"][n][key]):
                raise SystemExit(f"same-checkpoints: {n}.{key} differs (max {float((t - y['models'][n][key]).abs().max()):.3e})")
        for pid, st in x["opts"][n]["state"].items():
            for key in ("exp_avg", "exp_avg_sq"):
                if not torch.equal(st[key], y["opts"][n]["state"][pid][key]):
                    raise SystemExit(f"same-checkpoints: {n} Adam {key} of parameter {pid} differs")
    lx = [{k: v for k, v in r.items() if k not in ("time", "cpu_s_per_step")} for r in x["log"]]
    ly = [{k: v for k, v in r.items() if k not in ("time", "cpu_s_per_step")} for r in y["log"]]
    if lx != ly:
        raise SystemExit("same-checkpoints: the loss logs differ")
    print(f"same-checkpoints: identical at step {x['step']}")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache")
    c.add_argument("--data-kind", default="faces", choices=DATA_KINDS,
                   help="faces: 256x256 CelebA-HQ, one map per size; general: photographs at native size")
    c.add_argument("--data", default=None, help=f"default {DEFAULT_TRAIN} (faces), {GENERAL_TRAIN} (general)")
    c.add_argument("--cache-dir", default=None, help=f"default {DEFAULT_CACHE_DIR}, {GENERAL_CACHE_DIR}")
    c.add_argument("--sizes", default="256,128", help="faces only")
    c = sub.add_parser("neighbours")
    c.add_argument("--data-kind", default="faces", choices=DATA_KINDS)
    c.add_argument("--cache-dir", default=None, help=f"default {DEFAULT_CACHE_DIR}, {GENERAL_CACHE_DIR}")
    c.add_argument("--descriptor", default="thumb16", choices=sorted(THUMBS))
    c.add_argument("--k", type=int, default=4)
    c.add_argument("--size", type=int, default=256,
                   help="cache size (faces) or database row size (general) to compute them on")
    c.add_argument("--out", default=None, help="required for faces; general: default <cache-dir>/"
                                              "neighbours_<descriptor>_<size>.npy, where `run` looks")
    c = sub.add_parser("check-thumb")
    c.add_argument("--data", default=DEFAULT_TRAIN)
    c.add_argument("--semipaint", default="build/semipaint")
    c.add_argument("--descriptor", default="thumb16", choices=sorted(THUMBS))
    c.add_argument("--n", type=int, default=60)
    c.add_argument("--queries", type=int, default=4)
    c = sub.add_parser("same-checkpoints")
    c.add_argument("a")
    c.add_argument("b")
    c = sub.add_parser("bench")
    c.add_argument("--configs", required=True)
    c.add_argument("--batch", type=int, default=8)
    c.add_argument("--iters", type=int, default=3)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--mask-size", type=int, default=256)
    c.add_argument("--ndjson", default=qdimd.DEFAULT_NDJSON)
    c.add_argument("--general-cache-dir", default=GENERAL_CACHE_DIR,
                   help="also time the general stream's batches (crops, mixed masks) from this cache when it exists")
    c = sub.add_parser("run")
    c.add_argument("--data-kind", default=None, choices=DATA_KINDS,
                   help="faces (default for a new run) or general; recorded in the checkpoint, so a resume needs "
                        "no flag")
    c.add_argument("--config", default="cpu256", help="network configuration of a new run")
    c.add_argument("--nets", default=",".join(NETS))
    c.add_argument("--data", default=None, help=f"training images (recorded only; default {DEFAULT_TRAIN} or "
                                                f"{GENERAL_TRAIN})")
    c.add_argument("--cache-dir", default=None, help=f"default {DEFAULT_CACHE_DIR} or {GENERAL_CACHE_DIR}")
    c.add_argument("--neighbours", default=None,
                   help=f"default {DEFAULT_NEIGHBOURS}; general: <cache-dir>/neighbours_<descriptor>_<size>.npy "
                        f"(computed on first use)")
    c.add_argument("--descriptor", default="thumb16")
    c.add_argument("--ndjson", default=qdimd.DEFAULT_NDJSON)
    c.add_argument("--ckpt-dir", default=None,
                   help="checkpoint folder (train.pt, loss_log.jsonl), outside git; default .train/<data kind>, "
                        "resumed when it holds a checkpoint")
    c.add_argument("--init-from", default="", metavar="DIR",
                   help="start a new run from DIR's exported pconv/sim1/sim0 .safetensors (e.g. weights) instead of "
                        "random weights: fresh Adam moments, step and schedule from the model cards, loss log from "
                        "DIR/loss_log.jsonl or DIR/training-logs/loss_log.jsonl; --config must be the files'")
    c.add_argument("--warmup", type=int, default=None, metavar="N",
                   help="with --init-from: the learning rate rises linearly over the first N steps (default 200; 0: "
                        "none), so that the fresh Adam moments do not jolt the trained nets")
    c.add_argument("--batch", type=int, default=8)
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--mask-seed", type=int, default=1000)
    c.add_argument("--lr", type=float, default=1e-4, help="the paper's Adam learning rate")
    c.add_argument("--lr-high", type=float, default=3e-4, help="learning rate of the first --lr-high-steps steps")
    c.add_argument("--lr-high-steps", type=int, default=None,
                   help="steps at --lr-high (default 8000; on resume, overrides the checkpoint's)")
    c.add_argument("--lr-final", type=float, default=3e-5, help="learning rate from step --lr-final-from on")
    c.add_argument("--lr-final-from", type=int, default=None,
                   help="step at which the rate drops to --lr-final (default: never; on resume, overrides "
                        "the checkpoint's)")
    c.add_argument("--vgg16", default="", help="torchvision's ImageNet vgg16-397923af.pth: turns on L_perc, L_style")
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--steps", type=int, default=0, help="stop after this many more steps (0: no limit)")
    c.add_argument("--minutes", type=float, default=0, help="stop after this many minutes (0: no limit)")
    c.add_argument("--checkpoint-minutes", type=float, default=5)
    c.add_argument("--log-every", type=int, default=25)
    c = sub.add_parser("widen", help="turn the checkpoint into a wider configuration's (same function)")
    c.add_argument("--ckpt-dir", default=None, help="default .train/faces")
    c.add_argument("--to", required=True, help="the wider configuration (same size, kernels and depth)")
    c.add_argument("--keep", default="", help="copy the old checkpoint to this file first")
    c.add_argument("--seed", type=int, default=7, help="seed of the new channels' initial weights")
    c = sub.add_parser("export")
    c.add_argument("--ckpt-dir", default=None, help="default .train/faces")
    c.add_argument("--out-dir", default="weights")
    c.add_argument("--dtype", choices=("f32", "f16"), default="f32",
                   help="tensor type in the files (f16 halves them; the engine widens to f32 at load)")
    a = ap.parse_args(argv)
    if a.cmd in ("run", "widen", "export") and a.ckpt_dir is None:
        a.ckpt_dir = default_ckpt_dir(getattr(a, "data_kind", None))
    if a.cmd == "cache":
        if a.data_kind == "general":
            build_general_cache(a.data or GENERAL_TRAIN, a.cache_dir or GENERAL_CACHE_DIR)
        else:
            build_cache(a.data or DEFAULT_TRAIN, a.cache_dir or DEFAULT_CACHE_DIR, [int(s) for s in a.sizes.split(",")])
        return 0
    if a.cmd == "neighbours" and a.data_kind == "general":
        cache_dir = a.cache_dir or GENERAL_CACHE_DIR
        rows = general_rows(GeneralImages(cache_dir), cache_dir, a.size)
        general_neighbours(rows, a.out or general_neighbours_path(cache_dir, a.size, a.descriptor), a.k, a.descriptor)
        return 0
    if a.cmd == "neighbours":
        if not a.out:
            raise SystemExit("neighbours: --out is required for faces")
        imgs = open_cache(a.cache_dir or DEFAULT_CACHE_DIR, a.size)
        t0 = time.time()
        ids, scores, _ = compute_neighbours(imgs, a.descriptor, a.k)
        np.save(a.out, ids)
        print(f"neighbours: {ids.shape} by {a.descriptor} in {time.time() - t0:.1f} s; mean top-1 cosine "
              f"{scores[:, 0].mean():.4f}; written to {a.out}")
        return 0
    if a.cmd == "check-thumb":
        return check_thumb(a)
    if a.cmd == "same-checkpoints":
        return same_checkpoints(a)
    if a.cmd == "bench":
        return bench(a)
    if a.cmd == "run":
        if a.lr_high_steps is None and not a.init_from and not os.path.exists(ckpt_file(a.ckpt_dir)):
            a.lr_high_steps = 8000
        return run(a)
    if a.cmd == "export":
        return export(a)
    if a.cmd == "widen":
        return widen(a)
    return 2


if __name__ == "__main__":
    sys.exit(main())
