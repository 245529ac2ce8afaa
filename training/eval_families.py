"""eval_families.py: the model families and `auto` measured through the service's own request path, on val photos at their own sizes.

Usage:
  /usr/bin/python3 training/eval_families.py [--semipaint build/semipaint] [-c config/semipaintd.yaml]
      [--general DIR] [--faces DIR] [--masks DIR] [--limit N] [--threads T] [--out DIR]
      [--runs telea,general,faces,auto] [--skip-faces]

For each val set (general photographs, CelebA-HQ faces) it pairs image i of N with NVIDIA mask
i*M/N of the M sorted masks (the test masks are sorted by hole ratio, so the pairs spread over
every bucket), scales the 512x512 mask to the photo's own size (area average, then > 127 = hole),
and runs `semipaint inpaint` on the folder once per run: `--method telea`, `--model general`,
`--model faces` and `--model auto` (with `--report`, which says what auto chose for each image).
Each output is measured against the original: hole L1 (mean absolute error over the hole pixels,
% of 255) and PSNR of the whole image (the kept pixels are the original's), per hole-ratio bucket
[0.01,0.1], (0.1,0.2], ..., (0.5,0.6] (pairs outside are skipped). It prints Markdown tables (mean
per bucket, and the number of images) and auto's routing: the share of each set sent to each
family and to Telea. Nothing is fit here, and val is only looked at.
"""
import argparse
import csv
import glob
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

BUCKETS = [(0.01, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.6)]
BUCKET_NAMES = ["[0.01,0.1]", "(0.1,0.2]", "(0.2,0.3]", "(0.3,0.4]", "(0.4,0.5]", "(0.5,0.6]"]


def bucket_of(r):
    if 0.01 <= r <= 0.1:
        return 0
    for i, (lo, hi) in enumerate(BUCKETS[1:], 1):
        if lo < r <= hi:
            return i
    return -1


def stem(p):
    return os.path.splitext(os.path.basename(p))[0]


def prepare(images, masks, limit, work):
    """Links the images and writes each one's mask at its size; returns [(stem, image path, ratio)]."""
    os.makedirs(work + "/img", exist_ok=True)
    os.makedirs(work + "/mask", exist_ok=True)
    if limit:
        step = max(1, len(images) // limit)  # spread over the folder, not its first classes only
        images = images[::step][:limit]
    out = []
    n, m = len(images), len(masks)
    for i, path in enumerate(images):
        im = Image.open(path)
        w, h = im.size
        mk = Image.open(masks[i * m // n]).convert("L").resize((w, h), Image.BOX)
        hole = np.asarray(mk) > 127
        ratio = float(hole.mean())
        if bucket_of(ratio) < 0:
            continue
        s = stem(path)
        ext = os.path.splitext(path)[1].lower()
        dst = f"{work}/img/{s}{ext}"
        if not os.path.exists(dst):
            os.symlink(os.path.abspath(path), dst)
        Image.fromarray((hole * 255).astype(np.uint8)).save(f"{work}/mask/{s}.png")
        out.append((s, path, ratio))
    return out


def run(args, work, name, extra):
    out = f"{work}/{name}"
    cmd = [args.semipaint, "inpaint", "-c", args.config, "--image", work + "/img", "--mask", work + "/mask",
           "--out", out, "--format", "png", "--threads", str(args.threads)] + extra
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit(f"eval_families: {' '.join(cmd)} failed")
    print(f"  {name}: {time.time() - t0:.0f} s ({r.stdout.strip().splitlines()[0] if r.stdout.strip() else ''})",
          file=sys.stderr)
    return out


def measure(pairs, out, work):
    """Per pair (bucket, hole L1 %, PSNR dB) of the output folder `out`."""
    res = {}
    for s, path, ratio in pairs:
        gt = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        y = np.asarray(Image.open(f"{out}/{s}.png").convert("RGB"), dtype=np.float64)
        hole = np.asarray(Image.open(f"{work}/mask/{s}.png")) > 127
        d = np.abs(gt - y)
        l1 = float(d[hole].mean() / 255 * 100)
        mse = float(((gt - y) ** 2).mean())
        psnr = 10 * math.log10(255 * 255 / mse) if mse > 0 else 99.0
        res[s] = (bucket_of(ratio), l1, psnr)
    return res


def table(title, runs, results):
    print(f"\n{title}\n")
    print("| method | " + " | ".join(BUCKET_NAMES) + " |")
    print("|---" * (len(BUCKETS) + 1) + "|")
    for q, qname in ((1, "hole L1 %"), (2, "PSNR dB")):
        for name in runs:
            cells = []
            for b in range(len(BUCKETS)):
                v = [r[q] for r in results[name].values() if r[0] == b]
                cells.append(f"{np.mean(v):.2f}" if v else "-")
            print(f"| {name}, {qname} | " + " | ".join(cells) + " |")
    counts = []
    any_run = next(iter(results.values()))
    for b in range(len(BUCKETS)):
        counts.append(str(sum(1 for r in any_run.values() if r[0] == b)))
    print("| images | " + " | ".join(counts) + " |")


def routing(report, title):
    rows = list(csv.DictReader(open(report)))
    n = len(rows)
    by = {}
    for r in rows:
        key = f"{r['model']} {'(Telea)' if r['method'] == 'telea' else '(nets)'}"
        by[key] = by.get(key, 0) + 1
    fams = {}
    for r in rows:
        fams[r["model"]] = fams.get(r["model"], 0) + 1
    parts = ", ".join(f"{k}: {v} ({100 * v / n:.1f}%)" for k, v in sorted(by.items()))
    fparts = ", ".join(f"{k} {100 * v / n:.1f}%" for k, v in sorted(fams.items()))
    print(f"\n{title}: {n} images; family: {fparts}; served by: {parts}")
    return fams, n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--semipaint", default="build/semipaint")
    ap.add_argument("-c", "--config", default="config/semipaintd.yaml")
    ap.add_argument("--general", default="../shared/data/general/val")
    ap.add_argument("--faces", default="../shared/data/celebahq256/val")
    ap.add_argument("--masks", default="../shared/data/masks/nvidia-irregular-test")
    ap.add_argument("--limit", type=int, default=0, help="images per set, spread over the folder [all]")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", default="telea,general,faces,auto")
    ap.add_argument("--skip-faces", action="store_true", help="only the general set")
    ap.add_argument("--out", default="", help="keep the work folder here [a temporary one]")
    args = ap.parse_args()
    masks = sorted(glob.glob(args.masks + "/*.png"))
    if not masks:
        raise SystemExit(f"eval_families: no masks in {args.masks}")
    runs = args.runs.split(",")
    extra = {"telea": ["--method", "telea"], "general": ["--model", "general"], "faces": ["--model", "faces"],
             "auto": ["--model", "auto"]}
    sets = [("general", args.general)] + ([] if args.skip_faces else [("faces", args.faces)])
    base = args.out or tempfile.mkdtemp(prefix="eval_families.")
    for set_name, folder in sets:
        images = sorted(p for p in glob.glob(folder + "/*") if p.lower().endswith((".jpg", ".jpeg", ".png")))
        work = f"{base}/{set_name}"
        pairs = prepare(images, masks, args.limit, work)
        print(f"{set_name}: {len(pairs)} images in the buckets ({folder})", file=sys.stderr)
        results = {}
        for name in runs:
            ex = list(extra[name])
            if name == "auto":
                ex += ["--report", f"{work}/auto_report.csv"]
            out = run(args, work, name, ex)
            results[name] = measure(pairs, out, work)
        table(f"{set_name} val ({folder}), NVIDIA masks at each photo's own size, {len(pairs)} images", runs,
              results)
        if "auto" in runs:
            routing(f"{work}/auto_report.csv", f"auto on {set_name} val")
    if not args.out:
        subprocess.run(["rm", "-rf", base])


if __name__ == "__main__":
    main()
