"""gen_fixtures.py: writes the golden fixtures the C engine is tested against (weights, network I/O, single ops).

Usage: gen_fixtures.py --config small|paper256 --out DIR [--seed 1]

Writes into DIR (all F32, every byte determined by --seed on a given machine):
  pconv_unet.safetensors, simk_unet_k{0,1,2}.safetensors, vgg16_features.safetensors
      randomly initialised weights (nets.init_random, seed*100 + 1..5);
  io_b1.safetensors, io_b3.safetensors  batch 1 and 3 at the config's size S:
      image (n,3,S,S) uniform over {k/255} in [0,1]; mask (n,1,S,S) 1 = keep, 0 = hole; pconv_out (n,3,S,S);
      simk{K}_in (n,4+3K,S,S) = [image*mask, mask, neighbours...] and simk{K}_out (n,3,S,S)
      for K = 0,1,2; vgg_feat (n,C,S/16,S/16) conv5_3 after ReLU; vgg_desc_avg, vgg_desc_max (n,C);
  ops.safetensors  single-op inputs and outputs (conv, conv7, pconv, pconv3, up, pool, act, cat, desc, conv3).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export  # noqa: E402
import nets  # noqa: E402
import safetensors_io  # noqa: E402

WEIGHT_SEEDS = {"pconv_unet": 1, "simk_unet_k0": 2, "simk_unet_k1": 3, "simk_unet_k2": 4, "vgg16_features": 5}


# ---- masks: 1 = keep, 0 = hole -------------------------------------------------------------

def _segment_dist(yy, xx, p, q):
    """Distance of every pixel centre to the segment p-q."""
    d = q - p
    t = ((yy - p[0]) * d[0] + (xx - p[1]) * d[1]) / max(float(d @ d), 1e-9)
    t = np.clip(t, 0.0, 1.0)
    return np.hypot(yy - (p[0] + t * d[0]), xx - (p[1] + t * d[1]))


def _ellipse(yy, xx, cy, cx, ry, rx, angle):
    c, s = np.cos(angle), np.sin(angle)
    u = (yy - cy) * c + (xx - cx) * s
    v = -(yy - cy) * s + (xx - cx) * c
    return (u / ry) ** 2 + (v / rx) ** 2 <= 1.0


def irregular_mask(rng, S):
    """An irregular mask: thick random strokes, small ellipses, one large rounded square about
    40% of the side (so deep layers see windows without a valid pixel), and an S/4 corner
    square opposite it kept free of holes (windows all valid)."""
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float64) + 0.5
    hole = np.zeros((S, S), bool)
    q = int(rng.integers(4))
    qy, qx = q // 2, q % 2
    cy = S * (0.3 if qy == 0 else 0.7) + rng.uniform(-0.03, 0.03) * S
    cx = S * (0.3 if qx == 0 else 0.7) + rng.uniform(-0.03, 0.03) * S
    ry, rx = 0.2 * S * rng.uniform(1.05, 1.15), 0.2 * S * rng.uniform(1.05, 1.15)
    hole |= ((yy - cy) / ry) ** 4 + ((xx - cx) / rx) ** 4 <= 1.0  # a rounded square
    for _ in range(int(rng.integers(2, 5))):
        p = rng.uniform(0, S, 2)
        ang = rng.uniform(0, 2 * np.pi)
        r = max(1.0, rng.uniform(0.02, 0.05) * S)
        for _ in range(int(rng.integers(2, 5))):
            ang += rng.uniform(-1.2, 1.2)
            q2 = np.clip(p + rng.uniform(0.15, 0.35) * S * np.array([np.sin(ang), np.cos(ang)]), 0, S)
            hole |= _segment_dist(yy, xx, p, q2) <= r
            p = q2
    for _ in range(int(rng.integers(1, 3))):
        hole |= _ellipse(yy, xx, rng.uniform(0, S), rng.uniform(0, S), rng.uniform(0.04, 0.1) * S,
                         rng.uniform(0.04, 0.1) * S, rng.uniform(0, np.pi))
    c = S // 4
    ys = slice(S - c, S) if qy == 0 else slice(0, c)
    xs = slice(S - c, S) if qx == 0 else slice(0, c)
    hole[ys, xs] = False
    return (~hole).astype(np.float32)


def tiny_hole_mask(rng, S):
    """A mask whose only hole is one small square (side S/32, at least 2)."""
    a = max(2, S // 32)
    m = np.ones((S, S), np.float32)
    y, x = (int(v) for v in rng.integers(0, S - a, 2))
    m[y:y + a, x:x + a] = 0
    return m


# ---- network I/O ---------------------------------------------------------------------------

def _weights(cfg, seed):
    """The five randomly initialised networks, by file stem."""
    out = {"pconv_unet": nets.build("pconv_unet", cfg), "vgg16_features": nets.build("vgg16_features", cfg)}
    for k in (0, 1, 2):
        out[f"simk_unet_k{k}"] = nets.build("simk_unet", cfg, k=k)
    for stem, model in out.items():
        nets.init_random(model, seed * 100 + WEIGHT_SEEDS[stem]).eval()
    return out


def _enc_hole_fractions(pconv, x, m1):
    """Fraction of hole positions in the mask after each encoder level (diagnostics)."""
    m = m1.expand(-1, 3, -1, -1)
    h, fr = x * m, []
    for conv in pconv.enc:
        h, m = conv(h, m)
        h = F.relu(h)
        fr.append(float((m[:, 0] == 0).float().mean()))
    return fr


def random_image(rng, n, S):
    """n images (n,3,S,S) uniform over the 8-bit levels k/255 in [0,1], like decoded files
    (and compressible in git)."""
    return (rng.integers(0, 256, (n, 3, S, S)).astype(np.float32) / np.float32(255.0)).astype(np.float32)


def io_tensors(models, rng, n, S, tiny_index=None):
    """Inputs and reference outputs of every network for a batch of n."""
    image = random_image(rng, n, S)
    mask = np.stack([(tiny_hole_mask if i == tiny_index else irregular_mask)(rng, S) for i in range(n)])[:, None]
    neighbours = [random_image(rng, n, S) for _ in range(2)]
    x, m = torch.from_numpy(image), torch.from_numpy(mask)
    t = {"image": x, "mask": m, "pconv_out": models["pconv_unet"](x, m)}
    for k in (0, 1, 2):
        inp = torch.cat([x * m, m] + [torch.from_numpy(nb) for nb in neighbours[:k]], 1)
        t[f"simk{k}_in"] = inp
        t[f"simk{k}_out"] = models[f"simk_unet_k{k}"](inp)
    vgg = models["vgg16_features"]
    t["vgg_feat"] = vgg(x)
    t["vgg_desc_avg"] = nets.pool_descriptor(t["vgg_feat"], "avg")
    t["vgg_desc_max"] = nets.pool_descriptor(t["vgg_feat"], "max")
    return t, _enc_hole_fractions(models["pconv_unet"], x, m)


# ---- single ops ----------------------------------------------------------------------------

def _he(rng, shape):
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _pconv_case(rng, k, stride, pad):
    """pconv op inputs: x (2,6,16,16); m binary with channels 0-3 sharing one plane and 4-5
    another (a decoder concat), plus a zero block holding windows without a valid pixel."""
    x = rng.standard_normal((2, 6, 16, 16)).astype(np.float32)
    m = np.empty((2, 6, 16, 16), np.float32)
    for n in range(2):
        a = (rng.random((16, 16)) < 0.7).astype(np.float32)
        b = (rng.random((16, 16)) < 0.5).astype(np.float32)
        m[n, :4], m[n, 4:] = a, b
    m[0, :, 2:10, 4:12] = 0
    m[1, :, 8:16, 0:7] = 0
    w, b = _he(rng, (8, 6, k, k)), rng.uniform(-0.1, 0.1, 8).astype(np.float32)
    conv = nets.PartialConv2d(6, 8, k, stride=stride, padding=pad)
    conv.weight.copy_(torch.from_numpy(w))
    conv.bias.copy_(torch.from_numpy(b))
    y, mo = conv(torch.from_numpy(x), torch.from_numpy(m))
    assert (mo == 0).any(), "pconv fixture has no window without a valid pixel"
    return {"x": x, "m": m, "w": w, "b": b, "y": y, "m_out": mo.contiguous()}


def ops_tensors(rng):
    t = {}
    x, w, b = rng.standard_normal((2, 5, 17, 19)).astype(np.float32), _he(rng, (6, 5, 3, 3)), \
        rng.uniform(-0.1, 0.1, 6).astype(np.float32)
    t.update({"conv.x": x, "conv.w": w, "conv.b": b,
              "conv.y": F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), 2, 1)})
    x, w, b = rng.random((1, 3, 20, 20), dtype=np.float32), _he(rng, (4, 3, 7, 7)), \
        rng.uniform(-0.1, 0.1, 4).astype(np.float32)
    t.update({"conv7.x": x, "conv7.w": w, "conv7.b": b,
              "conv7.y": F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), 2, 3)})
    for name, (k, s, p) in (("pconv", (5, 2, 2)), ("pconv3", (3, 1, 1))):
        for key, v in _pconv_case(rng, k, s, p).items():
            t[f"{name}.{key}"] = v
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    t.update({"up.x": x, "up.y": nets.up2(torch.from_numpy(x))})
    x = rng.standard_normal((2, 4, 8, 10)).astype(np.float32)
    t.update({"pool.x": x, "pool.y": F.max_pool2d(torch.from_numpy(x), 2, 2)})
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    t.update({"act.x": x, "relu.y": F.relu(torch.from_numpy(x)),
              "lrelu.y": F.leaky_relu(torch.from_numpy(x), nets.LEAKY_SLOPE)})
    a, b = rng.standard_normal((2, 3, 4, 4)).astype(np.float32), rng.standard_normal((2, 5, 4, 4)).astype(np.float32)
    t.update({"cat.a": a, "cat.b": b, "cat.y": torch.cat([torch.from_numpy(a), torch.from_numpy(b)], 1)})
    x = rng.standard_normal((2, 32, 4, 4)).astype(np.float32)
    t.update({"desc.x": x, "desc.avg": nets.pool_descriptor(torch.from_numpy(x), "avg"),
              "desc.max": nets.pool_descriptor(torch.from_numpy(x), "max")})
    # 3x3 stride 1 (the Winograd path): odd sizes, 20 -> 12 channels (not multiples of 8), batch 2
    x, w, b = rng.standard_normal((2, 20, 13, 11)).astype(np.float32), _he(rng, (12, 20, 3, 3)), \
        rng.uniform(-0.1, 0.1, 12).astype(np.float32)
    t.update({"conv3.x": x, "conv3.w": w, "conv3.b": b,
              "conv3.y": F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), 1, 1)})
    return t


def _meta(config, cfg, seed, what):
    return {"fixture": json.dumps({"what": what, "config": config, "size": cfg["size"], "seed": seed,
                                   "generator": "training/gen_fixtures.py", "torch": torch.__version__})}


@torch.no_grad()
def generate(config, out, seed=1, log=sys.stderr):
    """Writes the fixture set of `config` into directory `out`; returns {file name: seconds}."""
    torch.set_num_threads(2)
    cfg = nets.resolve_config(config)
    S = cfg["size"]
    os.makedirs(out, exist_ok=True)
    times = {}
    t0 = time.perf_counter()
    models = _weights(cfg, seed)
    for stem, model in models.items():
        arch = "simk_unet" if stem.startswith("simk") else stem
        export.export_module(model, arch, cfg, os.path.join(out, stem + ".safetensors"),
                             trained_on=f"none (random init, seed {seed * 100 + WEIGHT_SEEDS[stem]})",
                             licence="test fixture", notes=f"semipaint golden fixture, config {config}")
    times["weights"] = time.perf_counter() - t0
    for n, tiny in ((1, None), (3, 2)):
        t0 = time.perf_counter()
        rng = np.random.default_rng([seed, n])
        tensors, fr = io_tensors(models, rng, n, S, tiny_index=tiny)
        safetensors_io.save(os.path.join(out, f"io_b{n}.safetensors"), tensors,
                            _meta(config, cfg, seed, f"network I/O, batch {n}"))
        times[f"io_b{n}"] = time.perf_counter() - t0
        hole = 1.0 - float(tensors["mask"].mean())
        print(f"io_b{n}: hole ratio {hole:.3f}; hole fraction after each encoder level: "
              + " ".join(f"{v:.3f}" for v in fr), file=log)
    t0 = time.perf_counter()
    safetensors_io.save(os.path.join(out, "ops.safetensors"), ops_tensors(np.random.default_rng([seed, 99])),
                        _meta(config, cfg, seed, "single ops"))
    times["ops"] = time.perf_counter() - t0
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description="Write semipaint's golden fixtures (weights, network I/O, ops).")
    ap.add_argument("--config", required=True, choices=sorted(nets.CONFIGS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    times = generate(a.config, a.out, a.seed)
    print(f"gen_fixtures: {a.config} seed {a.seed} -> {a.out} in {time.perf_counter() - t0:.1f}s ("
          + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()) + ")", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
