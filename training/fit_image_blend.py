"""fit_image_blend.py: fits a family's `telea_blend_image` tables, the share of Telea in each hole pixel of the pasted answer, by its distance in image pixels.

Rerun (from the repository root, after `make`; about 6 minutes on one core for the general family):

  /usr/bin/python3 training/fit_image_blend.py [--family general] [--count 600] [--seed 7]
      [--nets pconv,sim1,sim0] [--distances 32] [--semipaint build/semipaint] [--work build/image-blend-fit]
      [--dry-run]

Why: a family's nets work at a fixed size (128 px for general). A photograph of another size is cut
into crops that are resampled to that size and back (imaging/plan.h), so the nets' fill is pasted
at a coarser resolution than the photograph's, while Telea fills at the photograph's own. Near the
hole's border Telea is then better than the resampled fill; deeper inside, the two errors are
partly independent, so a mix beats either. The service mixes, after the paste-back, each hole pixel
at chessboard distance d (image pixels) from the nearest known pixel as b[d]*Telea + (1-b[d])*pasted
(imaging/telea.c telea_image_blend, docs/weights.md#telea_blend_image), with b the table of the net
that painted the answer (sim1, or sim0 without a database; pconv for method=coarse).

How: `--count` photographs of the family's training folder (general: DATA/general/train, faces:
DATA/celebahq256/train; none of val) with training masks (training/fit_router.py's pools: QD-IMD
strokes, wider strokes, train.py's strokes and blobs, placed at a random scale and position, hole
ratios spread evenly over the six buckets [0.01,0.1] ... (0.5,0.6]); a database of the other
training photographs (Sim-1 must not find the photograph itself); each photograph inpainted through
the service's own request path (`semipaint inpaint`, the crop strategy at the photograph's size) by
Telea and by each net, the nets from copies of the weights without `telea_blend_image` (their
`telea_blend`, the working-size blend, stays on, as served). For each net the table is picked from
a grid of 0, 0.05, ..., 1, non-increasing in d (fit_blend.monotone_argmin over the classes
1..D-1 and D+), minimizing the mean over photographs of the hole L1 (each photograph weighs
the same, as the evaluation tables count them). The log shows hole L1 per bucket without and with
the table, on the held-out half of a two-fold split (fit on one half, measured on the other), then
the table fit on all photographs is written into the weights file (`telea_blend_image` and a line in
`notes`), unless --dry-run. Refit after every export (`train.py export` does not keep the key) and
after `fit_blend.py` (it changes the pasted answer); then refit the router (fit_router.py).
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time

import numpy as np
from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import fit_blend  # noqa: E402  (CTelea, monotone_argmin)
import fit_router as fr  # noqa: E402  (mask pools, sets, buckets)

GRID = np.linspace(0.0, 1.0, 21)
DATA_OF = {"faces": "celebahq256", "general": "general"}
WEIGHTS_OF = {"faces": "weights", "general": "weights/general"}
DB_OF = {"faces": "build/db", "general": "build/db-general"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def strip_copy(src, dst):
    """dst: weights file src without `telea_blend_image` (the nets' answers before the image blend)."""
    import safetensors_io
    tensors, raw = safetensors_io.load(src)
    meta = json.loads(raw["semipaint"])
    meta.pop("telea_blend_image", None)
    raw["semipaint"] = json.dumps(meta)
    safetensors_io.save(dst, tensors, raw)


def write_table(path, table, note):
    """Writes `table` as the `telea_blend_image` of weights file `path` (atomically) with `note` in
    place of an earlier fit's line in `notes`."""
    import safetensors_io
    tensors, raw = safetensors_io.load(path)
    meta = json.loads(raw["semipaint"])
    if meta.get("arch") not in ("pconv_unet", "simk_unet"):
        raise SystemExit(f"fit_image_blend: {path} is {meta.get('arch')}; only the UNets are blended")
    meta["telea_blend_image"] = [round(float(v), 2) for v in table]
    notes = [p for p in meta.get("notes", "").split("; ") if p and not p.startswith("telea_blend_image ")]
    meta["notes"] = "; ".join(notes + [note])
    raw["semipaint"] = json.dumps(meta)
    safetensors_io.save(path, tensors, raw)
    log(f"fit_image_blend: wrote telea_blend_image {meta['telea_blend_image']} into {path}")


def descriptor_of(db):
    m = os.path.join(db, "manifest.json")
    if not os.path.exists(m):
        raise SystemExit(f"fit_image_blend: {m} not found: build the family's database first (make db / make db-general)")
    return json.load(open(m))["descriptor"]


def load_samples(set_dir, samples, out_dirs, ct, nd):
    """Per sample: bucket, class (min(d, nd) - 1) and ground truth of its hole pixels, and each
    output folder's values there (float32, 0..255)."""
    rows = []
    for s in samples:
        b = fr.bucket_of(s["ratio"])
        if b < 0:
            continue
        hole = np.asarray(Image.open(os.path.join(set_dir, "mask", s["stem"] + ".png"))) > 127
        gt = np.asarray(ImageOps.exif_transpose(Image.open(s["src"])).convert("RGB"), np.float32)[hole]
        cls = np.minimum(ct.distance(hole)[hole], nd) - 1
        outs = {k: np.asarray(Image.open(os.path.join(d, s["stem"] + ".png")).convert("RGB"), np.float32)[hole]
                for k, d in out_dirs.items()}
        rows.append((b, cls, gt, outs))
    return rows


def blended(t, n, b):
    """The C blend of Telea t and pasted n (float32 0..255) with per-pixel shares b: rounded to 8 bits."""
    return np.floor(b[:, None].astype(np.float32) * t + (1 - b[:, None].astype(np.float32)) * n + 0.5)


def fit_table(rows, net, nd):
    """The monotone table (nd entries) minimizing the mean per-photograph hole L1."""
    err = np.zeros((nd, len(GRID)))
    for _, cls, gt, outs in rows:
        t, n = outs["telea"], outs[net]
        w = 1.0 / len(cls)
        for gi, g in enumerate(GRID):
            e = np.abs(blended(t, n, np.full(len(cls), g)) - gt).mean(1)
            err[:, gi] += np.bincount(cls, e, nd) * w
    return GRID[fit_blend.monotone_argmin(err)]


def per_bucket(rows, net, table):
    """{bucket: (Telea, pasted, blended) mean hole L1 %}."""
    acc = {}
    for b, cls, gt, outs in rows:
        t, n = outs["telea"], outs[net]
        bl = blended(t, n, table[cls])
        a = acc.setdefault(b, [[], [], []])
        for i, y in enumerate((t, n, bl)):
            a[i].append(float(np.abs(y - gt).mean() / 2.55))
    return {b: tuple(np.mean(x) for x in v) + (len(v[0]),) for b, v in sorted(acc.items())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="general", choices=sorted(DATA_OF))
    ap.add_argument("--count", type=int, default=600, help="training photographs [600]")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--nets", default="pconv,sim1,sim0", help="which of the family's nets to fit [pconv,sim1,sim0]")
    ap.add_argument("--distances", type=int, default=32, help="classes 1..D-1 and D+: the table's length [32]")
    ap.add_argument("--semipaint", default=os.path.join(ROOT, "build", "semipaint"))
    ap.add_argument("--lib", default=os.path.join(ROOT, "build", "lib", "libsemipaint_telea.so"))
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "image-blend-fit"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dry-run", action="store_true", help="fit and report, write nothing")
    a = ap.parse_args(argv)
    if not 2 <= a.distances <= 64:
        raise SystemExit("fit_image_blend: --distances must be 2..64 (the loader takes 1..64 entries)")
    t_start = time.time()
    ct = fit_blend.CTelea(a.lib)
    run = fr.Runner(a.semipaint, a.work)
    wdir = os.path.join(ROOT, WEIGHTS_OF[a.family])
    nets = a.nets.split(",")
    for n in nets:
        if n not in ("pconv", "sim1", "sim0"):
            raise SystemExit(f"fit_image_blend: --nets: {n} is not pconv, sim1 or sim0")
    photos = os.path.join(a.data, DATA_OF[a.family], "train")
    if not os.path.isdir(photos):
        raise SystemExit(f"fit_image_blend: {photos} not found (the family's training photographs)")
    size = fr.weights_size(run, os.path.join(wdir, "pconv.safetensors"))

    # 1. photographs with training masks, and a database of the others
    pools = []
    for i, extra in enumerate(([], ["--strokes-mean", "6", "--width-min", "8", "--width-max", "24"])):
        d = os.path.join(a.work, f"qdimd{i}")
        if len([f for f in os.listdir(d) if f.endswith(".png")] if os.path.isdir(d) else []) != 600:
            shutil.rmtree(d, ignore_errors=True)
            run("masks", "--out", d, "--count", "600", "--seed", str(3100 + i), *extra)
        pools.append(fr.load_pool(d))
    pools.append(fr.blob_pool(os.path.join(a.work, "blobs"), 600, 3200))
    files = fr.list_images(photos)
    rng = random.Random(a.seed)
    rng.shuffle(files)
    held = sorted(files[:a.count])
    mrng = random.Random(a.seed + 1)
    set_dir, samples = fr.make_set(a.work, "held", photos, held, lambda j, w, h: fr.training_mask(pools, w, h, mrng))
    rest = os.path.join(a.work, "rest")
    shutil.rmtree(rest, ignore_errors=True)
    os.makedirs(rest)
    hs = set(held)
    for f in files:
        if f not in hs:
            os.symlink(os.path.join(photos, f), os.path.join(rest, f))
    db = os.path.join(a.work, "db")
    if "sim1" in nets:
        run("index", "build", "--images", rest, "--out", db, "--size", str(size), "--force",
            "--descriptor", descriptor_of(os.path.join(ROOT, DB_OF[a.family])))
    log(f"fit_image_blend: {len(samples)} {a.family} training photographs with training masks, working size {size} "
        f"({time.time() - t_start:.0f} s)")

    # 2. Telea and each net through the request path, without the image blend
    ndir = os.path.join(a.work, "nets")
    os.makedirs(ndir, exist_ok=True)
    for n in ("pconv", "sim1", "sim0"):
        strip_copy(os.path.join(wdir, f"{n}.safetensors"), os.path.join(ndir, f"{n}.safetensors"))
    outs = {"telea": os.path.join(a.work, "out_telea")}
    cfg = os.path.join(a.work, "family.yaml")
    with open(cfg, "w") as f:
        f.write(f"# {a.family} family for training/fit_image_blend.py\nmodel:\n  family: {a.family}\n  router: \"\"\n"
                f"  coarse: {ndir}/pconv.safetensors\n  refine: {ndir}/sim1.safetensors\n"
                f"  refine_fallback: {ndir}/sim0.safetensors\nretrieval:\n  database: \"\"\n")
    run.inpaint(cfg, set_dir, outs["telea"], "telea", a.threads)
    for n in nets:
        outs[n] = os.path.join(a.work, f"out_{n}")
        env_db = db if n == "sim1" else ""
        method = "coarse" if n == "pconv" else "sim"
        shutil.rmtree(outs[n], ignore_errors=True)
        run("inpaint", "-c", cfg, "--image", set_dir + "/img", "--mask", set_dir + "/mask", "--out", outs[n],
            "--method", method, "--format", "png", "--threads", str(a.threads),
            env={"SEMIPAINT_RETRIEVAL_DATABASE": env_db})
    log(f"fit_image_blend: inpainted ({time.time() - t_start:.0f} s)")

    # 3. the tables
    rows = load_samples(set_dir, samples, outs, ct, a.distances)
    for n in nets:
        half = fit_table(rows[0::2], n, a.distances)
        rep = per_bucket(rows[1::2], n, half)
        log(f"\n{a.family} {n}: hole L1 % on the held-out half (fit on the other), per bucket")
        log("| bucket | photographs | Telea | pasted | pasted + image blend |\n|---|---|---|---|---|")
        for b, (t, p, bl, cnt) in rep.items():
            log(f"| {fr.BUCKETS[b]} | {cnt} | {t:.2f} | {p:.2f} | {bl:.2f} |")
        table = fit_table(rows, n, a.distances)
        log(f"{n}: table fit on all {len(rows)}: {[round(float(v), 2) for v in table]}")
        note = (f"telea_blend_image fit by training/fit_image_blend.py on {len(rows)} {a.family} training "
                f"photographs (seed {a.seed})")
        if not a.dry_run:
            write_table(os.path.join(wdir, f"{n}.safetensors"), table, note)
    log(f"fit_image_blend: done in {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
