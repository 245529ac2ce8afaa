"""fit_router.py: fits model=auto's router (weights/router.safetensors): which family a request fits, and per family a gate that sends it to Telea when the family's nets are not expected to beat Telea.

Rerun (from the repository root, after `make`; 10 to 13 minutes on one core with the defaults):

  /usr/bin/python3 training/fit_router.py
  /usr/bin/python3 training/fit_router.py --family faces=CFG_FACES --family general=CFG_GENERAL \
      [--semipaint build/semipaint] [--work build/router-fit] [--out weights/router.safetensors]

Refit whenever a family's nets or database change (the general nets are still in training), or the
C feature definitions do (core/route.h: the router refuses a file fit on other feature versions).
Without --family it writes the two single-family configurations itself (WORK/families/*.yaml):
faces = weights/pconv, sim1 and sim0 with the database build/db when it exists (else Sim-0), general
= weights/general/pconv, sim1 and sim0 with build/db-general when it exists (else Sim-0). A family
given as NAME=CFG is a configuration file of today's format (model.coarse, model.refine,
model.refine_fallback, retrieval.database, ...); its photographs are DATA/celebahq256 for `faces`,
DATA/general for `general`, or DATA/SUBDIR with NAME=CFG@SUBDIR. The nets run without a router
(SEMIPAINT_MODEL_ROUTER empty), so that `--method sim` is the family's nets on every request.

What it does (every feature is computed by the C code, `semipaint route --dump`, so the fit sees
what the daemon computes; the nets and Telea run through `semipaint inpaint`):

 1. Training masks: three pools of 256-px masks, QD-IMD (`semipaint masks`: the default strokes,
    and wider ones) and train.py's random strokes and blobs (the general nets' second mask
    source), each placed on a photograph at a random scale (0.6-1.6 of its long side), position,
    flip and quarter turn, the hole ratio drawn evenly over the six buckets [0.01,0.1],
    (0.1,0.2], ..., (0.5,0.6]. Validation uses the NVIDIA irregular masks (512 px, scaled to each
    photograph by area averaging, thresholded at 127), sample j of N taking mask j*M/N of the M,
    which are sorted by hole ratio.
 2. Domain: --domain-count training photographs of each family with training masks; the domain
    features of each crop at the router's domain size (256); a softmax regression or a one-hidden-
    layer MLP, chosen (with its L2 weight) by balanced accuracy on a held-out fifth of those
    photographs, then refit on all of them. A request goes to its most probable family.
 3. Gates: a family's gate learns from the requests it will see: its own --gate-count training
    photographs (others than the domain ones) that the domain decision sends to it, and the
    photographs of each other family's pool (--cross-pool further training photographs, with
    training masks) that the domain decision sends to it by mistake; each inpainted by the family's
    nets (`--method sim`) and by Telea; label = the nets' hole L1 is lower. Sim-K retrieves from a copy of the family's database without the gate photographs (a
    database of the training photographs would hand each one back as its own neighbour). A
    logistic regression or a small MLP on the gate features (core_route_features), weighted by the
    L1 difference, is chosen by the mean routed hole L1 of 5-fold out-of-fold predictions, and its
    threshold is the one that minimises that routed L1 on the training requests while doing no
    harm: in each hole-ratio bucket (of 20 requests or more) and in the whole, of the family's own
    photographs, where the gate sends any request to the nets, the routed choice must beat Telea
    by two standard errors (the general nets look better on their training photographs than on
    new ones). Unless the
    gate's gain over the better constant choice (the nets always: threshold 0; Telea always:
    threshold 1) is two standard errors, the constant choice is kept.
 4. Validation (measured, never fit on): each val folder routed as the daemon would (the domain
    decision at 256, then the chosen family's gate at its working size), inpainted by its family's
    nets and by Telea, and requests routed to another family's nets by that family's; the share of
    each val folder routed to each family, and the hole L1 (% of 255, mean over hole pixels and
    channels) per hole-ratio bucket of nets / Telea / auto.

Writes --out (atomically) with the fit's report in its metadata and a few golden rows
(golden.*: feature vectors and the probabilities this script computes for them;
tests/test_route.c checks the C router against them), WORK/report.json and WORK/report.txt.
"""
import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

import numpy as np
from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402

DOMAIN_FEATURES = "grid8-v1"  # core/route.h CORE_ROUTE_DOMAIN_FEATURES
GATE_FEATURES = "gate-v1"     # core/route.h CORE_ROUTE_GATE_FEATURES
DOMAIN_NFEAT = 8 * 8 * 7 + 8  # CORE_ROUTE_DOMAIN_NFEAT
GATE_NAMES = ["hole_ratio", "crop_hole", "log_scale", "log_crops", "thick_mean", "thick_max", "texture", "p_class"]
DOMAIN_SIZE = 256
BUCKETS = [(0.01, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.6)]
BUCKET_NAMES = ["[0.01,0.1]", "(0.1,0.2]", "(0.2,0.3]", "(0.3,0.4]", "(0.4,0.5]", "(0.5,0.6]"]
DATA_OF = {"faces": "celebahq256", "general": "general"}
MASK_SCALE = (0.6, 1.6)  # a training mask's side, relative to the photograph's long side


def bucket_of(r):
    """The hole-ratio bucket index (BUCKETS), or -1 outside [0.01, 0.6]."""
    if 0.01 <= r <= 0.1:
        return 0
    for i in range(1, 6):
        if 0.1 * i < r <= 0.1 * (i + 1):
            return i
    return -1


def log(msg):
    print(msg, flush=True)


class Runner:
    """Runs the semipaint CLI, logging each command's output under WORK/logs."""

    def __init__(self, exe, work):
        self.exe, self.logs, self.n = exe, os.path.join(work, "logs"), 0
        shutil.rmtree(self.logs, ignore_errors=True)
        os.makedirs(self.logs)

    def __call__(self, *args, env=None):
        self.n += 1
        path = os.path.join(self.logs, f"{self.n:03d}_{args[0]}.log")
        t0 = time.time()
        with open(path, "w") as f:
            f.write("$ " + " ".join([self.exe] + list(args)) + "\n")
            f.flush()
            r = subprocess.run([self.exe] + list(args), stdout=f, stderr=subprocess.STDOUT,
                               env=dict(os.environ, **(env or {})))
        if r.returncode != 0:
            raise SystemExit(f"fit_router: `semipaint {' '.join(args)}` failed (exit {r.returncode}); see {path}:\n"
                             + "".join(open(path).readlines()[-15:]))
        self.last_log = path
        return time.time() - t0

    def inpaint(self, cfg, d, out, method, threads, *extra):
        """`semipaint inpaint` of set folder d (img/, mask/) into `out` (PNG, replaced) with the family
        configuration `cfg`, without a router (SEMIPAINT_MODEL_ROUTER empty: `--method sim` is then
        the family's nets on every request; a run that reports any image by Telea is refused)."""
        shutil.rmtree(out, ignore_errors=True)
        self("inpaint", "-c", cfg, "--image", d + "/img", "--mask", d + "/mask", "--out", out, "--method", method,
             "--format", "png", "--threads", str(threads), *extra, env={"SEMIPAINT_MODEL_ROUTER": ""})
        m = re.search(r"(\d+) by Telea", open(self.last_log).read())
        if method == "sim" and m and int(m.group(1)):
            raise SystemExit(f"fit_router: {self.last_log}: the nets' run sent {m.group(1)} images to Telea")


# ---- configurations ----

def read_config(path):
    """The YAML configuration `path` as a dict of sections (PyYAML)."""
    import yaml
    with open(path) as f:
        c = yaml.safe_load(f) or {}
    if not isinstance(c, dict):
        raise SystemExit(f"fit_router: {path}: not a configuration (a YAML mapping)")
    return c


def default_families(work, data):
    """Writes the faces and general configurations of the module docstring; returns [(name, cfg, data dir, note)]."""
    d = os.path.join(work, "families")
    os.makedirs(d, exist_ok=True)
    out = []
    for name, w, db in (("faces", "weights", "build/db"), ("general", "weights/general", "build/db-general")):
        have_db = os.path.exists(os.path.join(ROOT, db, "manifest.json"))
        note = f"database {db}" if have_db else f"Sim-0: {db} does not exist"
        path = os.path.join(d, f"{name}.yaml")
        with open(path, "w") as f:
            f.write(f"# {name} family for training/fit_router.py ({note})\n"
                    f"model:\n  coarse: {w}/pconv.safetensors\n  refine: {w}/sim1.safetensors\n"
                    f"  refine_fallback: {w}/sim0.safetensors\n"
                    f"retrieval:\n  database: \"{db if have_db else ''}\"\n")
        out.append((name, path, os.path.join(data, DATA_OF[name]), note))
    return out


def weights_size(run, path):
    """The working size of a weights file (`semipaint weights info`)."""
    out = subprocess.run([run.exe, "weights", "info", path], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("size"):
            return int(line.split()[1])
    raise SystemExit(f"fit_router: cannot read the size of {path}: {out.stderr.strip()}")


def family_info(run, name, cfg_path):
    """(working size, database or '', {weights file: sha256}) of a single-family configuration."""
    c = read_config(cfg_path)
    model = c.get("model", {}) or {}
    coarse = model.get("coarse", "weights/pconv.safetensors")
    db = (c.get("retrieval", {}) or {}).get("database", "build/db")
    if db and not os.path.exists(os.path.join(db, "manifest.json")):
        log(f"  {name}: database {db} not found: the nets run Sim-0")
        db = ""
    sums = {}
    for key, default in (("coarse", "weights/pconv.safetensors"), ("refine", "weights/sim1.safetensors"),
                         ("refine_fallback", "weights/sim0.safetensors")):
        path = model.get(key, default)
        if path and os.path.exists(path):
            with open(path, "rb") as f:
                sums[path] = hashlib.sha256(f.read()).hexdigest()
    return weights_size(run, coarse), db or "", sums


# ---- samples: photographs with masks ----

def list_images(d):
    return sorted(f for f in os.listdir(d) if f.lower().endswith((".jpg", ".jpeg", ".png", ".webp")))


def load_pool(d):
    """The masks of folder d as (256, 256) bool arrays (True = hole)."""
    return [np.asarray(Image.open(os.path.join(d, f)).convert("L")) > 127 for f in sorted(os.listdir(d)) if f.endswith(".png")]


def place(pool, w, h, rng):
    """A w x h hole map: a pool mask at a random scale, position, flip and quarter turn."""
    m = pool[rng.randrange(len(pool))]
    m = np.rot90(m, rng.randrange(4))
    if rng.random() < 0.5:
        m = m[:, ::-1]
    side = max(8, int(round(rng.uniform(*MASK_SCALE) * max(w, h))))
    im = Image.fromarray(np.ascontiguousarray(m).astype(np.uint8) * 255).resize((side, side), Image.BILINEAR)
    a = np.asarray(im) > 127
    ox = rng.randint(min(0, w - side), max(0, w - side))
    oy = rng.randint(min(0, h - side), max(0, h - side))
    out = np.zeros((h, w), bool)
    x0, y0, x1, y1 = max(0, ox), max(0, oy), min(w, ox + side), min(h, oy + side)
    out[y0:y1, x0:x1] = a[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    return out


def training_mask(pools, w, h, rng):
    """A placed training mask (from a pool drawn at random) whose hole ratio falls in a bucket
    drawn uniformly; after 60 tries, the nearest one inside [0.01, 0.6]."""
    want = rng.randrange(len(BUCKETS))
    lo, hi = BUCKETS[want]
    best, bd = None, 9.0
    for _ in range(60):
        m = place(pools[rng.randrange(len(pools))], w, h, rng)
        r = float(m.mean())
        if bucket_of(r) == want:
            return m
        d = min(abs(r - lo), abs(r - hi))
        if bucket_of(r) >= 0 and d < bd:
            best, bd = m, d
    return best if best is not None else place(pools[0], w, h, rng)


def blob_pool(d, count, seed):
    """Folder d of `count` strokes-and-blobs masks (train.py's second mask source, 256 px), made
    once; returns them as a pool."""
    have = sorted(f for f in os.listdir(d) if f.endswith(".png")) if os.path.isdir(d) else []
    if len(have) != count:
        import train  # torch and the QD-IMD port: only when the pool is made
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for i in range(count):
            Image.fromarray(train.stroke_blob_mask(256, seed, i)).save(os.path.join(d, f"blob_{i:05d}.png"))
    return load_pool(d)


def nvidia_mask(path, w, h):
    """An NVIDIA mask scaled to w x h by area averaging, thresholded as img_hole_map does."""
    m = Image.open(path).convert("L").resize((w, h), Image.BOX)
    return np.asarray(m) > 127


def image_size(path):
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).size


def make_set(work, name, src_dir, files, mask_fn):
    """WORK/sets/NAME/{img,mask}: a link to each photograph and its mask (PNG, 255 = hole) at its
    size; returns [{stem, file, w, h, ratio}]."""
    d = os.path.join(work, "sets", name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "img"))
    os.makedirs(os.path.join(d, "mask"))
    out = []
    for j, f in enumerate(files):
        src = os.path.abspath(os.path.join(src_dir, f))
        w, h = image_size(src)
        m = mask_fn(j, w, h)
        stem = os.path.splitext(f)[0]
        os.symlink(src, os.path.join(d, "img", f))
        Image.fromarray(m.astype(np.uint8) * 255).save(os.path.join(d, "mask", stem + ".png"))
        out.append({"stem": stem, "file": f, "src": src, "w": w, "h": h, "ratio": float(m.mean())})
    return d, out


def subset(work, name, base, samples):
    """A set of some samples of set folder `base` (links to its images and masks)."""
    d = os.path.join(work, "sets", name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "img"))
    os.makedirs(os.path.join(d, "mask"))
    for s in samples:
        os.symlink(s["src"], os.path.join(d, "img", s["file"]))
        os.symlink(os.path.abspath(os.path.join(base, "mask", s["stem"] + ".png")), os.path.join(d, "mask", s["stem"] + ".png"))
    return d


def read_dump(path):
    """The JSON lines of `semipaint route --dump`, by image stem."""
    out = {}
    with open(path) as f:
        for line in f:
            o = json.loads(line)
            out[os.path.splitext(o["image"])[0]] = o
    return out


def hole_l1(samples, set_dir, out_dir):
    """Hole L1 (% of 255, over hole pixels and channels) of each sample's output PNG in out_dir."""
    res = []
    for s in samples:
        a = np.asarray(ImageOps.exif_transpose(Image.open(s["src"])).convert("RGB"), dtype=np.int16)
        b = np.asarray(Image.open(os.path.join(out_dir, s["stem"] + ".png")).convert("RGB"), dtype=np.int16)
        m = np.asarray(Image.open(os.path.join(set_dir, "mask", s["stem"] + ".png"))) > 127
        res.append(float(np.abs(a - b)[m].mean()) / 255.0 * 100.0)
    return np.array(res)


# ---- models (torch, full batch) ----

def fit_model(X, Y, sw, nout, hidden, l2, seed=0, iters=400):
    """Fits a standardised linear layer (hidden 0) or one-hidden-layer ReLU MLP: softmax cross
    entropy over nout classes (Y class indices) or, nout 1, a logistic loss (Y 0/1); samples
    weighted by sw; L2 `l2` on the weights. Returns the numpy parameters (core/route.h names)."""
    import torch
    torch.manual_seed(seed)
    X = np.asarray(X, np.float64)
    mu = X.mean(0)
    sd = X.std(0)
    sd = np.where(sd > 1e-6, sd, 1.0)
    Z = torch.tensor((X - mu) / sd, dtype=torch.float64)
    Yt = torch.tensor(Y, dtype=torch.float64 if nout == 1 else torch.long)
    W = torch.tensor(sw / sw.mean(), dtype=torch.float64)
    F = X.shape[1]
    layers = [torch.nn.Linear(F, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, nout)] if hidden else [torch.nn.Linear(F, nout)]
    net = torch.nn.Sequential(*layers).double()
    opt = torch.optim.LBFGS(net.parameters(), lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        out = net(Z)
        if nout == 1:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], Yt, reduction="none")
        else:
            loss = torch.nn.functional.cross_entropy(out, Yt, reduction="none")
        loss = (loss * W).mean() + l2 * sum((p ** 2).sum() for n, p in net.named_parameters() if n.endswith("weight"))
        loss.backward()
        return loss

    opt.step(closure)
    lin = [m for m in net if isinstance(m, torch.nn.Linear)]
    p = {"mu": mu.astype(np.float32), "sd": sd.astype(np.float32)}
    if hidden:
        p["w1"] = lin[0].weight.detach().numpy().astype(np.float32)
        p["b1"] = lin[0].bias.detach().numpy().astype(np.float32)
    p["w"] = lin[-1].weight.detach().numpy().astype(np.float32)
    p["b"] = lin[-1].bias.detach().numpy().astype(np.float32)
    return p


def forward(p, X):
    """The model's outputs, computed as core/route.c does (float32 inputs and parameters)."""
    Z = (np.asarray(X, np.float32) - p["mu"]) / p["sd"]
    if "w1" in p:
        Z = np.maximum(Z @ p["w1"].T + p["b1"], 0)
    return Z @ p["w"].T + p["b"]


def softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def best_threshold(g, l_nets, l_telea, ratio=None, own=None, min_bucket=20, z=2.0):
    """The threshold t (nets when g >= t and t < 1, as core_router_use_nets) with the least mean
    routed L1 (over all requests, the other families' photographs routed to the family too), among
    those that do the family's own photographs no harm: in every hole-ratio bucket holding at
    least `min_bucket` of the requests `own` selects (all when None; no guard without `ratio`), and
    in their whole, a group where some request goes to the nets must gain on Telea by at least z
    standard errors (t = 1, Telea alone, always qualifies). The other families' photographs are
    left to the objective: no threshold keeps them all from the nets without sending the family's
    own look-alikes to Telea. Among equals, the middle one. Returns (t, its mean routed L1)."""
    cands = np.unique(np.concatenate([[0.0, 1.0], g]))
    mids = np.concatenate([[0.0], (cands[1:] + cands[:-1]) / 2, [1.0]])
    buckets = []
    if ratio is not None:
        b = np.array([bucket_of(r) for r in ratio])
        grp = np.ones(len(b), bool) if own is None else own
        buckets = [grp & (b == k) for k in range(len(BUCKETS)) if (grp & (b == k)).sum() >= min_bucket]
        if grp.sum() >= min_bucket:
            buckets.append(grp)  # and the group as a whole
    costs = []
    for t in mids:
        use = (g >= t) & (t < 1)  # core_router_use_nets
        routed = np.where(use, l_nets, l_telea)
        ok = True
        for sel in buckets:
            if use[sel].any():
                gain = l_telea[sel] - routed[sel]
                ok = ok and gain.mean() >= z * gain.std(ddof=1) / np.sqrt(sel.sum())
        costs.append(routed.mean() if ok else np.inf)
    costs = np.array(costs)
    best = np.flatnonzero(costs <= costs.min() + 1e-12)
    t = float(mids[best[len(best) // 2]])
    return t, float(costs.min())


def fit_gate(X, l_nets, l_telea, ratio, own, seed):
    """Chooses and fits a family's gate: the candidate (model, L2) with the least routed L1 over
    5-fold out-of-fold predictions, its threshold the one best_threshold picks on those
    predictions (the per-bucket guard on the family's own photographs), then the model refit on
    all. Returns (params, threshold, the choice's description)."""
    y = (l_nets < l_telea).astype(np.float64)
    sw = np.abs(l_nets - l_telea) + 1e-3
    cands = [("logistic", 0, 1e-3), ("logistic", 0, 1e-2), ("logistic", 0, 1e-1), ("mlp16", 16, 1e-3), ("mlp16", 16, 1e-2)]
    rng = np.random.RandomState(seed)
    folds = rng.permutation(len(y)) % 5
    scores, ts, oof = [], [], []
    for name, hid, l2 in cands:
        g = np.zeros(len(y))
        for k in range(5):
            tr, te = folds != k, folds == k
            p = fit_model(X[tr], y[tr], sw[tr], 1, hid, l2, seed)
            g[te] = sigmoid(forward(p, X[te])[:, 0])
        t, cost = best_threshold(g, l_nets, l_telea, ratio, own)
        scores.append(cost)
        ts.append(t)
        oof.append(g)
    i = int(np.argmin(scores))  # the first best: simpler models come first
    name, hid, l2 = cands[i]
    p = fit_model(X, y, sw, 1, hid, l2, seed)
    desc = {"model": name, "l2": l2,
            "out_of_fold_routed_l1": {f"{c[0]} l2={c[2]}": round(s, 4) for c, s in zip(cands, scores)}}
    # A gate must earn its keep: unless its out-of-fold gain over the better constant choice (nets
    # always, threshold 0, or Telea always, threshold 1, if it passes the bucket guard) is at least
    # two standard errors of the paired differences, the constant choice is kept.
    t = ts[i]
    routed = np.where((oof[i] >= t) & (t < 1), l_nets, l_telea)
    consts = []
    for tc, lc in ((0.0, l_nets), (1.0, l_telea)):
        if tc == 0.0 and best_threshold(np.zeros(len(y)), l_nets, l_telea, ratio, own)[0] != 0.0:
            continue  # nets always fail the bucket guard
        consts.append((float(lc.mean()), tc, lc))
    cost_c, t_c, l_c = min(consts, key=lambda c: c[0])
    diff = l_c - routed
    se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    desc["gain_over_constant"] = {"constant": "nets" if t_c == 0.0 else "telea", "gain": round(float(diff.mean()), 4),
                                  "se": round(se, 4)}
    if diff.mean() < 2 * se:
        t = t_c
        desc["gain_over_constant"]["kept"] = "constant"
    return p, t, desc


def fit_domain(X, Y, nclass, seed):
    """Chooses (held-out fifth of the training photographs) and fits the domain classifier."""
    rng = np.random.RandomState(seed)
    hold = rng.rand(len(Y)) < 0.2
    sw = np.ones(len(Y))
    for c in range(nclass):  # balanced classes
        sw[Y == c] = len(Y) / (nclass * max(1, (Y == c).sum()))
    cands = [("softmax", 0, 1e-3), ("softmax", 0, 1e-2), ("mlp32", 32, 1e-3), ("mlp32", 32, 1e-2), ("mlp64", 64, 1e-3)]
    accs = []
    for name, hid, l2 in cands:
        p = fit_model(X[~hold], Y[~hold], sw[~hold], nclass, hid, l2, seed)
        pr = softmax(forward(p, X[hold])).argmax(1)
        # balanced accuracy: the mean of the per-class rates
        accs.append(float(np.mean([(pr[Y[hold] == c] == c).mean() for c in range(nclass)])))
    i = int(np.argmax(accs))  # the first best: simpler models come first
    name, hid, l2 = cands[i]
    p = fit_model(X, Y, sw, nclass, hid, l2, seed)
    desc = {"model": name, "l2": l2, "held_out_balanced_accuracy": {f"{c[0]} l2={c[2]}": round(a, 4) for c, a in zip(cands, accs)}}
    return p, desc


# ---- the router file ----

def write_router(path, classes, domain, gates, thresholds, sizes, golden, report):
    tensors = {}
    for k, v in domain.items():
        tensors[f"domain.{k}"] = v
    for c in classes:
        for k, v in gates[c].items():
            tensors[f"gate.{c}.{k}"] = v
    for k, v in (golden or {}).items():
        tensors[f"golden.{k}"] = np.asarray(v, np.float32)
    meta = {"kind": "semipaint router", "format": "1", "classes": ",".join(classes),
            "domain_features": DOMAIN_FEATURES, "gate_features": GATE_FEATURES, "domain_size": str(DOMAIN_SIZE),
            "gate_inputs": ",".join(GATE_NAMES)}
    for c in classes:
        meta[f"threshold.{c}"] = f"{thresholds[c]:.6f}"
        meta[f"size.{c}"] = str(sizes[c])
    if report is not None:
        meta["report"] = json.dumps(report, separators=(",", ":"))
        meta["notes"] = ("fit by training/fit_router.py on training photographs only (CelebA-HQ train and the "
                         "general train folder; non-commercial research terms, as the data); see its docstring to refit")
    safetensors_io.save(path, tensors, meta)


def zero_gate():
    return {"mu": np.zeros(len(GATE_NAMES), np.float32), "sd": np.ones(len(GATE_NAMES), np.float32),
            "w": np.zeros((1, len(GATE_NAMES)), np.float32), "b": np.zeros(1, np.float32)}


def domain_rows(dump, stems):
    """Per-crop domain features and hole weights of the given samples: (X, weight, sample index)."""
    X, W, I = [], [], []
    for i, s in enumerate(stems):
        o = dump[s]
        h = np.array(o["domain_holes"], np.float64)
        w = h / h.sum() if h.sum() > 0 else np.full(len(h), 1.0 / len(h))
        for f, wi in zip(o["domain"], w):
            X.append(f)
            W.append(wi)
            I.append(i)
    return np.array(X, np.float32), np.array(W), np.array(I)


def bucket_table(rows, cols):
    """Mean of each column per bucket of rows' "ratio": {bucket: {"n", col: mean}}."""
    out = {}
    for b, name in enumerate(BUCKET_NAMES):
        sel = [r for r in rows if bucket_of(r["ratio"]) == b]
        out[name] = {"n": len(sel)}
        for c in cols:
            out[name][c] = round(float(np.mean([r[c] for r in sel])), 3) if sel else None
    sel = [r for r in rows if bucket_of(r["ratio"]) >= 0]
    out["all"] = {"n": len(sel)}
    for c in cols:
        out["all"][c] = round(float(np.mean([r[c] for r in sel])), 3) if sel else None
    return out


def format_table(title, tab, cols):
    lines = [title, f"  {'hole ratio':<12}{'n':>5}" + "".join(f"{c:>10}" for c in cols)]
    for name, row in tab.items():
        lines.append(f"  {name:<12}{row['n']:>5}" + "".join(f"{row[c]:>10.2f}" if row[c] is not None else f"{'-':>10}" for c in cols))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", action="append", default=[], metavar="NAME=CFG[@SUBDIR]",
                    help="a family and its single-family configuration (repeat; default: faces and general, see above)")
    ap.add_argument("--semipaint", default="build/semipaint", help="the CLI [build/semipaint]")
    ap.add_argument("--data", default="../shared/data", help="the shared data folder [../shared/data]")
    ap.add_argument("--work", default="build/router-fit", help="work folder (replaced parts each run) [build/router-fit]")
    ap.add_argument("--out", default="weights/router.safetensors", help="the router file [weights/router.safetensors]")
    ap.add_argument("--domain-count", type=int, default=2000, help="training photographs per family for the domain classifier [2000]")
    ap.add_argument("--gate-count", type=int, default=1200, help="training photographs per family for its gate [1200]")
    ap.add_argument("--cross-pool", type=int, default=3000,
                    help="further training photographs per family, routed by the domain decision: those it sends "
                         "to another family teach that family's gate [3000]")
    ap.add_argument("--val-limit", type=int, default=0, help="val photographs per folder, 0 = all [0]")
    ap.add_argument("--pool", type=int, default=1000, help="QD-IMD masks per pool [1000]")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of the nets [1]")
    ap.add_argument("--seed", type=int, default=17, help="random seed [17]")
    a = ap.parse_args(argv)
    os.chdir(ROOT)
    t_start = time.time()
    timing = {}
    work = os.path.abspath(a.work)
    os.makedirs(os.path.join(work, "out"), exist_ok=True)
    run = Runner(os.path.abspath(a.semipaint), work)
    if not os.path.exists(run.exe):
        raise SystemExit(f"fit_router: {a.semipaint} not found: run `make` first")
    data = os.path.abspath(a.data)

    # families
    if a.family:
        fams = []
        for spec in a.family:
            if "=" not in spec:
                raise SystemExit(f"fit_router: --family {spec}: expected NAME=CFG[@SUBDIR]")
            name, rest = spec.split("=", 1)
            cfg, _, sub = rest.partition("@")
            sub = sub or DATA_OF.get(name)
            if not sub:
                raise SystemExit(f"fit_router: --family {spec}: no photographs known for {name}: add @SUBDIR")
            fams.append((name, os.path.abspath(cfg), os.path.join(data, sub), "given"))
    else:
        fams = default_families(work, data)
    classes = [f[0] for f in fams]
    info = {}
    log(f"fit_router: families {', '.join(classes)}; work folder {work}")
    for name, cfg, d, note in fams:
        size, db, sums = family_info(run, name, cfg)
        info[name] = {"cfg": cfg, "data": d, "size": size, "db": db, "weights": sums}
        log(f"  {name}: {cfg} ({note}), working size {size}, {'database ' + db if db else 'Sim-0 (no database)'}, photographs {d}")
        for split in ("train", "val"):
            if not os.path.isdir(os.path.join(d, split)):
                raise SystemExit(f"fit_router: {os.path.join(d, split)} is missing")

    # 1. masks
    t0 = time.time()
    pools = []
    for i, extra in enumerate(([], ["--strokes-mean", "6", "--width-min", "8", "--width-max", "24"])):
        d = os.path.join(work, f"qdimd{i}")
        if len([f for f in os.listdir(d) if f.endswith(".png")] if os.path.isdir(d) else []) != a.pool:
            shutil.rmtree(d, ignore_errors=True)
            run("masks", "--out", d, "--count", str(a.pool), "--seed", str(1100 + i), *extra)
        pools.append(load_pool(d))
    pools.append(blob_pool(os.path.join(work, "blobs"), a.pool, 1200))
    nvidia_dir = os.path.join(data, "masks", "nvidia-irregular-test")
    nvidia = sorted(f for f in os.listdir(nvidia_dir) if f.endswith(".png"))
    rng = random.Random(a.seed)
    sets = {}
    for name in classes:
        d = info[name]["data"]
        train = list_images(os.path.join(d, "train"))
        rng.shuffle(train)
        need = a.domain_count + a.gate_count
        if len(train) < need:
            raise SystemExit(f"fit_router: {d}/train has {len(train)} photographs; --domain-count + --gate-count = {need}")
        mrng = random.Random(a.seed * 1000 + classes.index(name))
        pool_files = train[need:need + a.cross_pool]
        for kind, files in (("dom", train[:a.domain_count]), ("gate", train[a.domain_count:need]), ("cross", pool_files)):
            sets[f"{kind}_{name}"] = make_set(work, f"{kind}_{name}", os.path.join(d, "train"), sorted(files),
                                              lambda j, w, h: training_mask(pools, w, h, mrng))
            info[name][f"{kind}_files"] = set(files)
        val = list_images(os.path.join(d, "val"))
        if a.val_limit:
            val = [val[int(j * len(val) / a.val_limit)] for j in range(min(a.val_limit, len(val)))]
        n = len(val)
        sets[f"val_{name}"] = make_set(work, f"val_{name}", os.path.join(d, "val"), val,
                                       lambda j, w, h, n=n: nvidia_mask(os.path.join(nvidia_dir, nvidia[j * len(nvidia) // n]), w, h))
    timing["sets"] = time.time() - t0
    log(f"  sets: {', '.join(f'{k} {len(v[1])}' for k, v in sets.items())} ({timing['sets']:.0f} s)")

    # 2. domain classifier
    t0 = time.time()
    dumps = {}
    for name in classes:
        path = os.path.join(work, f"dom_{name}.jsonl")
        d = sets[f"dom_{name}"][0]
        run("route", "--image", d + "/img", "--mask", d + "/mask", "--router", "none", "--dump", path)
        dumps[name] = read_dump(path)
    Xs, Ys, Ws = [], [], []
    for c, name in enumerate(classes):
        X, W, _ = domain_rows(dumps[name], [s["stem"] for s in sets[f"dom_{name}"][1]])
        Xs.append(X)
        Ys.append(np.full(len(X), c))
        Ws.append(W)
    X, Y = np.concatenate(Xs), np.concatenate(Ys)
    domain, domain_desc = fit_domain(X, Y, len(classes), a.seed)
    pr = softmax(forward(domain, X)).argmax(1)
    domain_desc["train_accuracy"] = {name: round(float((pr[Y == c] == c).mean()), 4) for c, name in enumerate(classes)}
    timing["domain"] = time.time() - t0
    log(f"  domain classifier: {domain_desc['model']} (L2 {domain_desc['l2']}), held-out balanced accuracy "
        f"{max(domain_desc['held_out_balanced_accuracy'].values()):.4f}, training accuracy {domain_desc['train_accuracy']} "
        f"({timing['domain']:.0f} s)")
    sizes = {c: info[c]["size"] for c in classes}
    prov = os.path.join(work, "router-domain.safetensors")
    write_router(prov, classes, domain, {c: zero_gate() for c in classes}, {c: 0.5 for c in classes}, sizes, None, None)

    # 3. gates: each family's nets against Telea on the requests its gate will see: its own gate
    # photographs that the domain decision sends to it, and the photographs of the other families'
    # pools (--cross-pool) that it sends to it by mistake
    t0 = time.time()
    telea, routed_to = {}, {}
    for g in classes:  # Telea does not depend on the family: once per gate set
        d, samples = sets[f"gate_{g}"]
        o = os.path.join(work, "out", f"gate_{g}_telea")
        run.inpaint(info[g]["cfg"], d, o, "telea", a.threads)
        telea[g] = dict(zip([s["stem"] for s in samples], hole_l1(samples, d, o)))
        d, samples = sets[f"cross_{g}"]
        if samples:
            path = os.path.join(work, f"cross_{g}.jsonl")
            run("route", "--image", d + "/img", "--mask", d + "/mask", "--router", prov, "--dump", path)
            routed_to[g] = {k: v["class"] for k, v in read_dump(path).items()}
    timing["gate_telea"] = time.time() - t0
    gates, thresholds, gate_desc = {}, {}, {}
    gate_rows = {}
    for name in classes:
        t0 = time.time()
        fi = info[name]
        db_args = []
        if fi["db"]:  # a copy of the database without the gate's photographs
            man = json.load(open(os.path.join(fi["db"], "manifest.json")))
            keep = os.path.join(work, "sets", f"dbsrc_{name}")
            shutil.rmtree(keep, ignore_errors=True)
            os.makedirs(keep)
            src = os.path.join(fi["data"], "train")
            for f in list_images(src):
                if f not in fi["gate_files"]:
                    os.symlink(os.path.join(src, f), os.path.join(keep, f))
            fitdb = os.path.join(work, f"db_{name}")
            size_args = ["--size", str(man["size"])] if int(man.get("size", 256)) != 256 else []
            stamp = {"source": os.path.abspath(fi["db"]), "updated": man.get("updated"), "count": man.get("count"),
                     "descriptor": man["descriptor"], "size": man.get("size"),
                     "without": hashlib.sha256("\n".join(sorted(fi["gate_files"])).encode()).hexdigest()}
            stamp_path = fitdb + ".stamp.json"
            if not (os.path.exists(stamp_path) and json.load(open(stamp_path)) == stamp
                    and os.path.exists(os.path.join(fitdb, "manifest.json"))):  # else the copy of an earlier run
                run("index", "build", "--images", keep, "--out", fitdb, "--descriptor", man["descriptor"], "--force", *size_args)
                with open(stamp_path, "w") as f:
                    json.dump(stamp, f)
            db_args = ["--db", fitdb]
        X, l_nets, l_telea, ratio, own = [], [], [], [], []
        n_own_away = 0
        for g in classes:
            if g == name:
                tag = f"gate_{g}"
                d, samples = sets[tag]
            else:  # the photographs of g's pool that the domain decision sends here
                tag = f"cross_{g}_to_{name}"
                samples = [s for s in sets[f"cross_{g}"][1] if routed_to.get(g, {}).get(s["stem"]) == name]
                if not samples:
                    continue
                d = subset(work, tag, sets[f"cross_{g}"][0], samples)
                o = os.path.join(work, "out", f"{tag}_telea")
                run.inpaint(info[g]["cfg"], d, o, "telea", a.threads)
                telea.setdefault(tag, {}).update(zip([s["stem"] for s in samples], hole_l1(samples, d, o)))
            path = os.path.join(work, f"{tag}.jsonl")
            run("route", "--image", d + "/img", "--mask", d + "/mask", "--router", prov, "--size", str(fi["size"]), "--dump", path)
            dump = read_dump(path)
            o = os.path.join(work, "out", f"{tag}_sim")
            run.inpaint(fi["cfg"], d, o, "sim", a.threads, *db_args)
            ln = hole_l1(samples, d, o)
            keep_rows = np.array([dump[s["stem"]]["class"] == name for s in samples])  # requests this gate sees
            if g == name:
                n_own_away = int((~keep_rows).sum())
            tl = telea[g] if g == name else telea[tag]
            l_nets.append(ln[keep_rows])
            l_telea.append(np.array([tl[s["stem"]] for s in samples])[keep_rows])
            X.append(np.array([dump[s["stem"]]["gate"][name] for s in samples], np.float32)[keep_rows])
            ratio.append(np.array([s["ratio"] for s in samples])[keep_rows])
            own.append(np.full(int(keep_rows.sum()), g == name))
        X, l_nets, l_telea, ratio, own = (np.concatenate(v) for v in (X, l_nets, l_telea, ratio, own))
        p, t, desc = fit_gate(X, l_nets, l_telea, ratio, own, a.seed)
        g = sigmoid(forward(p, X)[:, 0])
        use = (g >= t) & (t < 1)  # core_router_use_nets
        better = l_nets < l_telea

        def stats(sel):
            if not sel.any():
                return {"n": 0, "nets_better": 0.0, "nets_used": 0.0, "accuracy": 1.0,
                        "l1": {"nets": 0.0, "telea": 0.0, "routed": 0.0, "oracle": 0.0}}
            return {"n": int(sel.sum()), "nets_better": round(float(better[sel].mean()), 4),
                    "nets_used": round(float(use[sel].mean()), 4), "accuracy": round(float((use == better)[sel].mean()), 4),
                    "l1": {"nets": round(float(l_nets[sel].mean()), 4), "telea": round(float(l_telea[sel].mean()), 4),
                           "routed": round(float(np.where(use, l_nets, l_telea)[sel].mean()), 4),
                           "oracle": round(float(np.minimum(l_nets, l_telea)[sel].mean()), 4)}}

        desc.update({"threshold": round(t, 4), "train_own": stats(own), "train_other_families": stats(~own),
                     "own_routed_elsewhere": n_own_away,
                     "database": "leave-out copy of " + fi["db"] if fi["db"] else "none (Sim-0)"})
        gates[name], thresholds[name], gate_desc[name] = p, t, desc
        gate_rows[name] = X
        timing[f"gate_{name}"] = time.time() - t0
        so, sx = desc["train_own"], desc["train_other_families"]
        log(f"  gate {name}: {desc['model']} (L2 {desc['l2']}), threshold {t:.3f} (out-of-fold); own photographs: nets "
            f"better on {100 * so['nets_better']:.1f}%, used on {100 * so['nets_used']:.1f}%, accuracy "
            f"{100 * so['accuracy']:.1f}%, hole L1 nets {so['l1']['nets']:.3f} telea {so['l1']['telea']:.3f} routed "
            f"{so['l1']['routed']:.3f} oracle {so['l1']['oracle']:.3f}; other families' routed here ({sx['n']}): "
            f"nets better on {100 * sx['nets_better']:.1f}%, used on {100 * sx['nets_used']:.1f}%, hole L1 nets "
            f"{sx['l1']['nets']:.3f} telea {sx['l1']['telea']:.3f} routed {sx['l1']['routed']:.3f} "
            f"({timing[f'gate_{name}']:.0f} s)")

    # golden rows: a few real feature vectors and what this script computes for them
    golden = {}
    gx = np.concatenate([Xs[c][:2] for c in range(len(classes))] + [np.zeros((1, DOMAIN_NFEAT), np.float32)])
    golden["domain.x"], golden["domain.p"] = gx, softmax(forward(domain, gx).astype(np.float64))
    for name in classes:
        rows = np.concatenate([gate_rows[name][:3], gate_rows[name][-1:], np.zeros((1, len(GATE_NAMES)), np.float32)])
        golden[f"gate.{name}.x"], golden[f"gate.{name}.p"] = rows, sigmoid(forward(gates[name], rows)[:, 0].astype(np.float64))
    write_router(prov, classes, domain, gates, thresholds, sizes, golden, None)

    # 4. validation: routed as the daemon would, measured per bucket
    t0 = time.time()
    val = {}
    outs_val = {}
    for name in classes:  # each val folder through its own family's nets and Telea
        d, samples = sets[f"val_{name}"]
        for method in ("sim", "telea"):
            o = os.path.join(work, "out", f"val_{name}_{method}")
            run.inpaint(info[name]["cfg"], d, o, method, a.threads)
            outs_val[(name, name, method)] = dict(zip([s["stem"] for s in samples], hole_l1(samples, d, o)))
    for vname in classes:
        d, samples = sets[f"val_{vname}"]
        auto_path = os.path.join(work, f"val_{vname}_auto.jsonl")
        own_path = os.path.join(work, f"val_{vname}_own.jsonl")
        run("route", "--image", d + "/img", "--mask", d + "/mask", "--router", prov, "--dump", auto_path)
        run("route", "--image", d + "/img", "--mask", d + "/mask", "--router", prov, "--size", str(info[vname]["size"]),
            "--dump", own_path)
        auto, own = read_dump(auto_path), read_dump(own_path)
        # requests routed to another family whose gate picks its nets: that family's nets on them
        for other in classes:
            if other == vname:
                continue
            sub = [s for s in samples if auto[s["stem"]]["class"] == other and auto[s["stem"]]["nets"]]
            outs_val[(vname, other, "sim")] = {}
            if sub:
                sd = subset(work, f"val_{vname}_to_{other}", d, sub)
                o = os.path.join(work, "out", f"val_{vname}_to_{other}_sim")
                run.inpaint(info[other]["cfg"], sd, o, "sim", a.threads)
                outs_val[(vname, other, "sim")] = dict(zip([s["stem"] for s in sub], hole_l1(sub, sd, o)))
        rows = []
        ci = classes.index(vname)
        for s in samples:
            st = s["stem"]
            cls = auto[st]["class"]
            l_nets, l_telea = outs_val[(vname, vname, "sim")][st], outs_val[(vname, vname, "telea")][st]
            use_own = own[st]["gate_p"][ci] >= thresholds[vname] and thresholds[vname] < 1
            if auto[st]["nets"]:
                l_auto = outs_val[(vname, cls, "sim")][st]
            else:
                l_auto = l_telea
            rows.append({"ratio": s["ratio"], "nets": l_nets, "telea": l_telea, "auto": l_auto,
                         "gate_only": l_nets if use_own else l_telea, "class": cls, "nets_used": bool(auto[st]["nets"]),
                         "gate_right": bool(use_own == (l_nets < l_telea))})
        n = len(rows)
        val[vname] = {
            "n": n,
            "routed_to": {c: round(sum(r["class"] == c for r in rows) / n, 4) for c in classes},
            "nets_used": round(sum(r["nets_used"] for r in rows) / n, 4),
            "gate_accuracy": round(sum(r["gate_right"] for r in rows) / n, 4),
            "nets_better": round(sum(r["nets"] < r["telea"] for r in rows) / n, 4),
            "buckets": bucket_table(rows, ["nets", "telea", "auto", "gate_only"]),
        }
    timing["val"] = time.time() - t0
    timing["total"] = time.time() - t_start

    # 5. report and the final file
    report = {"classes": classes, "families": {c: {"config": os.path.relpath(info[c]["cfg"], ROOT), "size": info[c]["size"],
                                                   "database": info[c]["db"] or "none (Sim-0)",
                                                   "weights_sha256": info[c]["weights"]} for c in classes},
              "counts": {"domain_per_family": a.domain_count, "gate_per_family": a.gate_count, "seed": a.seed},
              "domain": domain_desc, "gates": gate_desc, "thresholds": {c: round(thresholds[c], 4) for c in classes},
              "val": val, "timing_s": {k: round(v, 1) for k, v in timing.items()}}
    write_router(a.out, classes, domain, gates, thresholds, sizes, golden, report)
    lines = [f"router written to {a.out} (classes {', '.join(classes)}; thresholds "
             + ", ".join(f"{c} {thresholds[c]:.3f}" for c in classes) + ")"]
    for vname in classes:
        v = val[vname]
        lines.append(f"val {vname} ({v['n']} photographs, NVIDIA masks): routed to "
                     + ", ".join(f"{c} {100 * r:.1f}%" for c, r in v["routed_to"].items())
                     + f"; nets used {100 * v['nets_used']:.1f}%; {vname} gate right on {100 * v['gate_accuracy']:.1f}% "
                       f"(nets better on {100 * v['nets_better']:.1f}%)")
        lines.append(format_table(f"  hole L1 (%) on {vname} val: {vname} nets, Telea, auto (domain + gate), "
                                  f"gate only (own family)", v["buckets"], ["nets", "telea", "auto", "gate_only"]))
    lines.append("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timing.items()))
    text = "\n".join(lines)
    log(text)
    with open(os.path.join(work, "report.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(work, "report.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
