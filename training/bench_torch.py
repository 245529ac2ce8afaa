"""bench_torch.py: times the PyTorch reference networks on the CPU, the baseline of `semipaint bench --vs-torch`.

Usage: bench_torch.py --weights-dir DIR [--size 256] [--batch N] [--threads T] [--iters I]
                      [--warmup W] [--nets pconv,vgg,simk1,pipeline]

Loads pconv_unet.safetensors, vgg16_features.safetensors and simk_unet_k1.safetensors from DIR
into the reference nets (eval, no_grad, torch.set_num_threads(T)) and prints one JSON line per
net on stdout: {"net": ..., "batch": N, "ms_per_image": mean, "min_ms_per_image": fastest}.
Nets: pconv (coarse forward), vgg (descriptor: features + avg pool + L2), simk1 (refine
forward), pipeline (coarse, composite, descriptor, refine with one neighbour, composite).
Progress goes to stderr.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export  # noqa: E402
import gen_fixtures  # noqa: E402

NETS = ("pconv", "vgg", "simk1", "pipeline")
FILES = {"pconv": ("pconv_unet.safetensors", "pconv_unet"), "vgg": ("vgg16_features.safetensors", "vgg16_features"),
         "simk1": ("simk_unet_k1.safetensors", "simk_unet")}


def _load(wdir, key):
    name, arch = FILES[key]
    path = os.path.join(wdir, name)
    model, meta = export.load_module(path)
    if meta["arch"] != arch or (key == "simk1" and meta["k"] != 1):
        raise SystemExit(f"bench_torch: {path} holds {meta['arch']} k={meta['k']}, expected {arch}"
                         + (" k=1" if key == "simk1" else ""))
    return model, meta


def _composite(x, m, fill):
    """Known pixels (m = 1) from x exactly, hole pixels from fill."""
    return torch.where(m > 0.5, x, fill)


def _time(fn, iters, warmup):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def main(argv=None):
    ap = argparse.ArgumentParser(description="Time the PyTorch reference networks (CPU).")
    ap.add_argument("--weights-dir", required=True)
    ap.add_argument("--size", type=int, default=0, help="working size (default: the weights' size)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--nets", default=",".join(NETS))
    a = ap.parse_args(argv)
    wanted = [n for n in a.nets.split(",") if n]
    bad = [n for n in wanted if n not in NETS]
    if bad or not wanted:
        ap.error(f"--nets: unknown {','.join(bad) or '(empty)'}; choose from {','.join(NETS)}")
    if a.batch < 1 or a.threads < 1 or a.iters < 1 or a.warmup < 0:
        ap.error("--batch, --threads and --iters must be >= 1, --warmup >= 0")
    torch.set_num_threads(a.threads)

    need = set(wanted) - {"pipeline"} | ({"pconv", "vgg", "simk1"} if "pipeline" in wanted else set())
    models = {k: _load(a.weights_dir, k) for k in sorted(need)}
    size = a.size or next(iter(models.values()))[1]["size"]
    for k, (model, meta) in models.items():
        if k != "vgg" and size % (2 ** len(meta["enc_kernels"])):
            ap.error(f"--size {size} is not divisible by 2^{len(meta['enc_kernels'])} ({k})")
    if size % 16:
        ap.error(f"--size {size} is not divisible by 16")

    rng = np.random.default_rng(0)
    n = a.batch
    x = torch.from_numpy(gen_fixtures.random_image(rng, n, size))
    m = torch.from_numpy(np.stack([gen_fixtures.irregular_mask(rng, size) for _ in range(n)])[:, None])
    nb = torch.from_numpy(gen_fixtures.random_image(rng, n, size))
    simk_in = torch.cat([x * m, m, nb], 1)
    pconv = models.get("pconv", (None,))[0]
    vgg = models.get("vgg", (None,))[0]
    simk = models.get("simk1", (None,))[0]

    def pipeline():
        comp = _composite(x, m, pconv(x, m))
        vgg.descriptor(comp, "avg")
        # The neighbour stands in for the retrieval result; search itself is not timed here.
        return _composite(x, m, simk(torch.cat([x * m, m, nb], 1)))

    fns = {"pconv": lambda: pconv(x, m), "vgg": lambda: vgg.descriptor(x, "avg"), "simk1": lambda: simk(simk_in),
           "pipeline": pipeline}
    print(f"bench_torch: torch {torch.__version__}, {a.threads} threads, size {size}, batch {n}, "
          f"{a.iters} iters after {a.warmup} warm-up", file=sys.stderr)
    with torch.no_grad():
        for name in wanted:
            ts = _time(fns[name], a.iters, a.warmup)
            rec = {"net": name, "batch": n, "ms_per_image": round(1000 * sum(ts) / len(ts) / n, 3),
                   "min_ms_per_image": round(1000 * min(ts) / n, 3)}
            print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
