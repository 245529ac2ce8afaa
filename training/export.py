"""export.py: writes a reference network's weights as a semipaint safetensors file (docs/weights.md).

Usage:
  export.py --arch pconv_unet|simk_unet|vgg16_features --config paper256|small [--k 1]
            [--seed S | --checkpoint CKPT.pt | --torchvision-vgg16 [PTH]] --out FILE.safetensors
            [--trained-on TEXT] [--licence TEXT] [--notes TEXT] [--dtype f32|f16]

Tensor names are the modules' state_dict() names (enc.0.weight, ..., features.28.bias).
`__metadata__` holds "semipaint": a JSON string with format, arch, size, enc_kernels,
enc_channels, in_channels, out_channels, k, trained_on, licence, notes.
export_module() and load_module() are the library entry points for other scripts.
"""
import argparse
import hashlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nets  # noqa: E402
import safetensors_io  # noqa: E402

FORMAT = 1
# torchvision's VGG16_Weights.IMAGENET1K_V1 file name in the torch hub cache.
TORCHVISION_VGG16_FILE = "vgg16-397923af.pth"


def semipaint_metadata(model, arch, cfg, trained_on="", licence="", notes=""):
    """The "semipaint" metadata dict of `model` (built by nets.build(arch, cfg))."""
    cfg = nets.resolve_config(cfg)
    if arch in ("pconv_unet", "simk_unet"):
        enc_kernels = [c.kernel_size[0] for c in model.enc]
        enc_channels = [c.out_channels for c in model.enc]
        k = model.k if arch == "simk_unet" else -1
    elif arch == "vgg16_features":
        enc_kernels = [3] * len(nets.VGG_CONV_INDICES)
        enc_channels = list(model.widths)
        k = -1
    else:
        raise ValueError(f"unknown arch {arch!r}")
    return {"format": FORMAT, "arch": arch, "size": int(cfg["size"]), "enc_kernels": enc_kernels,
            "enc_channels": enc_channels, "in_channels": model.in_channels, "out_channels": model.out_channels,
            "k": k, "trained_on": trained_on, "licence": licence, "notes": notes}


def export_module(model, arch, cfg, path, trained_on="", licence="", notes="", dtype="f32"):
    """Writes model.state_dict() to `path` (atomically) with the semipaint metadata; dtype 'f32'
    or 'f16' (floating tensors converted). Returns the metadata dict written."""
    if dtype not in ("f32", "f16"):
        raise ValueError(f"dtype must be f32 or f16, not {dtype!r}")
    meta = semipaint_metadata(model, arch, cfg, trained_on, licence, notes)
    want = torch.float16 if dtype == "f16" else torch.float32
    tensors = {name: (t.to(want) if t.is_floating_point() else t) for name, t in model.state_dict().items()}
    safetensors_io.save(path, tensors, {"semipaint": json.dumps(meta)})
    return meta


def load_module(path):
    """Reads a semipaint weights file; returns (model in eval mode, metadata dict). Raises
    ValueError naming the file and the tensor when names or shapes do not match the arch."""
    tensors, raw = safetensors_io.load(path)
    if "semipaint" not in raw:
        raise ValueError(f"{path}: no 'semipaint' entry in __metadata__")
    meta = json.loads(raw["semipaint"])
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unsupported format {meta.get('format')!r}")
    arch = meta["arch"]
    cfg = {"size": meta["size"], "enc_kernels": meta["enc_kernels"], "enc_channels": meta["enc_channels"]}
    if arch == "vgg16_features":
        cfg["vgg_widths"] = meta["enc_channels"]
    k = meta["k"]
    if arch == "simk_unet" and meta["in_channels"] != 4 + 3 * k:
        raise ValueError(f"{path}: simk_unet in_channels {meta['in_channels']} != 3+1+3k for k={k}")
    model = nets.build(arch, cfg, k=k)
    sd = model.state_dict()
    for name in sd:
        if name not in tensors:
            raise ValueError(f"{path}: missing tensor {name}")
        if tuple(tensors[name].shape) != tuple(sd[name].shape):
            raise ValueError(f"{path}: tensor {name} has shape {tensors[name].shape}, expected {tuple(sd[name].shape)}")
    extra = sorted(set(tensors) - set(sd))
    if extra:
        raise ValueError(f"{path}: unexpected tensor {extra[0]}")
    model.load_state_dict({n: torch.from_numpy(tensors[n]).float() for n in sd})
    return model.eval(), meta


def _torchvision_vgg16_state(path):
    """The `features.*` tensors of torchvision's pretrained VGG-16 from `path` or the torch hub cache."""
    if not path:
        path = os.path.join(torch.hub.get_dir(), "checkpoints", TORCHVISION_VGG16_FILE)
    if not os.path.isfile(path):
        raise SystemExit(f"export: torchvision's pretrained VGG-16 weights are not on this machine "
                         f"(looked for {path}); this machine cannot download them. Copy {TORCHVISION_VGG16_FILE} "
                         f"there from a machine with torchvision, or pass its path to --torchvision-vgg16.")
    sd = torch.load(path, map_location="cpu")
    feats = {k: v for k, v in sd.items() if k.startswith("features.")}
    if not feats:
        raise SystemExit(f"export: {path} has no features.* tensors; is it torchvision's vgg16?")
    return feats


def _checkpoint_state(path):
    ck = torch.load(path, map_location="cpu")
    if isinstance(ck, dict):
        for key in ("model", "state_dict"):
            if key in ck and isinstance(ck[key], dict):
                return ck[key]
    return ck


def main(argv=None):
    ap = argparse.ArgumentParser(description="Export a semipaint reference network to safetensors.")
    ap.add_argument("--arch", required=True, choices=nets.ARCHS)
    ap.add_argument("--config", required=True, choices=sorted(nets.CONFIGS))
    ap.add_argument("--k", type=int, default=1, help="neighbours of simk_unet (default 1)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--seed", type=int, help="random init (He normal weights, U(-0.1,0.1) biases); default 1")
    src.add_argument("--checkpoint", help="a .pt with a state_dict, or a dict holding it under 'model' or 'state_dict'")
    src.add_argument("--torchvision-vgg16", nargs="?", const="", metavar="PTH",
                     help=f"torchvision's ImageNet VGG-16 ({TORCHVISION_VGG16_FILE} in the torch hub cache, or PTH)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--trained-on", default=None)
    ap.add_argument("--licence", default=None)
    ap.add_argument("--notes", default="")
    ap.add_argument("--dtype", choices=("f32", "f16"), default="f32")
    a = ap.parse_args(argv)

    model = nets.build(a.arch, a.config, k=a.k)
    trained_on, licence = a.trained_on, a.licence
    if a.torchvision_vgg16 is not None:
        if a.arch != "vgg16_features" or list(model.widths) != [64, 128, 256, 512, 512]:
            ap.error("--torchvision-vgg16 needs --arch vgg16_features with the paper256 widths")
        model.load_state_dict(_torchvision_vgg16_state(a.torchvision_vgg16))
        trained_on = trained_on if trained_on is not None else "ImageNet-1k (torchvision VGG16_Weights.IMAGENET1K_V1)"
        licence = licence if licence is not None else "torchvision pretrained weights; ImageNet terms of access apply"
    elif a.checkpoint:
        try:
            model.load_state_dict(_checkpoint_state(a.checkpoint))
        except RuntimeError as e:
            raise SystemExit(f"export: {a.checkpoint} does not match {a.arch}/{a.config}: {e}")
    else:
        seed = 1 if a.seed is None else a.seed
        nets.init_random(model, seed)
        trained_on = trained_on if trained_on is not None else f"none (random init, seed {seed})"
    meta = export_module(model, a.arch, a.config, a.out, trained_on=trained_on or "", licence=licence or "",
                         notes=a.notes, dtype=a.dtype)
    with open(a.out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"wrote {a.out}: {meta['arch']} {a.config} k={meta['k']} {nets.count_params(model):,} params "
          f"{a.dtype} sha256 {digest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
