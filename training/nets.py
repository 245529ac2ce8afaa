"""nets.py: the PyTorch reference networks of semipaint (docs/weights.md), the C engine's ground truth.

- PartialConv2d: NVIDIA partial convolution with a multi-channel mask.
- PConvUNet: the coarse network (partial-convolution UNet).
- SimKUNet: the refinement network (same topology, plain convolutions, 3+1+3K input channels).
- VGG16Features: torchvision's vgg16().features layout with configurable widths; descriptor().

Module names are the tensor names of the weights files: enc.i.weight, dec.i.bias,
features.N.weight. All tensors are NCHW float32; images are RGB in [0,1]; masks are 1 = keep,
0 = hole. Run `python3 nets.py --self-check` for the checks against direct reimplementations.
"""
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    "paper256": dict(size=256, enc_kernels=[7, 5, 5, 3, 3, 3], enc_channels=[64, 128, 256, 512, 512, 512],
                     vgg_widths=[64, 128, 256, 512, 512]),
    "small": dict(size=64, enc_kernels=[5, 3, 3, 3], enc_channels=[16, 32, 32, 48], vgg_widths=[8, 16, 16, 32, 32]),
    # The shipped default models (weights/README.md: trained on 2 CPU cores; chosen by measured step
    # time): cpu256m to step 11,922, then widened (train.py widen) to cpu256.
    "cpu256m": dict(size=256, enc_kernels=[7, 5, 5, 3, 3, 3], enc_channels=[8, 32, 64, 128, 128, 128],
                    vgg_widths=[8, 16, 32, 64, 64]),
    "cpu256": dict(size=256, enc_kernels=[7, 5, 5, 3, 3, 3], enc_channels=[16, 32, 64, 128, 128, 128],
                   vgg_widths=[8, 16, 32, 64, 64]),
}
ARCHS = ("pconv_unet", "simk_unet", "vgg16_features")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PCONV_EPS = 1e-8
LEAKY_SLOPE = 0.2


def up2(t):
    """Nearest-neighbour x2 upsampling: (n,c,h,w) -> (n,c,2h,2w)."""
    return F.interpolate(t, scale_factor=2, mode="nearest")


class PartialConv2d(nn.Conv2d):
    """Partial convolution (Liu et al. 2018, NVIDIA reference, multi-channel mask).

    forward(x, m), m of x's shape with values in {0,1}:
      raw = conv(x*m, W) (no bias); s = conv(m, ones(1,Cin,k,k)) (valid count per window);
      u = clamp(s, 0, 1); out = (raw * (Cin*k*k)/(s+1e-8) + b) * u.
    Returns (out, new_mask) with new_mask = u repeated over the output channels.
    Parameters: `weight` (Cout,Cin,k,k) and `bias` (Cout) only.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=True)

    def forward(self, x, m):
        if x.shape != m.shape:
            raise ValueError(f"PartialConv2d: mask shape {tuple(m.shape)} != input shape {tuple(x.shape)}")
        out, u = self.forward_premasked(x * m, m.sum(dim=1, keepdim=True))
        return out, u.expand(-1, self.out_channels, -1, -1)

    def forward_premasked(self, xm, msum):
        """The same computation from xm = x*m (n,Cin,h,w) and msum = m summed over channels
        (n,1,h,w); returns (out, u) with u (n,1,h',w'). Summing the mask over channels, then
        over each window, gives the same integer count as convolving it with ones(1,Cin,k,k)."""
        kh, kw = self.kernel_size
        raw = F.conv2d(xm, self.weight, None, self.stride, self.padding)
        s = F.avg_pool2d(msum, (kh, kw), self.stride, self.padding, count_include_pad=True, divisor_override=1)
        u = s.clamp(0.0, 1.0)
        # ratio * u is exact (u is 0 or 1) and keeps windows without valid pixels at 0, not inf.
        ratio = (self.in_channels * kh * kw) / (s + PCONV_EPS) * u
        return raw.mul_(ratio).add_(self.bias.view(1, -1, 1, 1)).mul_(u), u


def _unet_channels(enc_channels, in_channels, out_channels):
    """Returns ([(cin, cout)] of the encoder, [(cin, cout)] of the decoder) of the UNet topology."""
    L = len(enc_channels)
    enc = [(in_channels if i == 0 else enc_channels[i - 1], enc_channels[i]) for i in range(L)]
    skip = [in_channels] + list(enc_channels[:-1])  # skip j: 0 = the input, j >= 1 = enc j-1 output
    dec, prev = [], enc_channels[-1]
    for i in range(L):
        cout = enc_channels[L - 2 - i] if i < L - 1 else out_channels
        dec.append((prev + skip[L - 1 - i], cout))
        prev = cout
    return enc, dec


class PConvUNet(nn.Module):
    """The coarse network: L partial-convolution encoder levels (stride 2, ReLU) and L decoder
    levels (nearest x2 up of features and mask, concat [upsampled, skip], pconv 3x3, LeakyReLU
    0.2 except the last). forward(x (n,3,h,w), m1 (n,1,h,w)) -> raw output (n,3,h,w)."""

    def __init__(self, enc_kernels, enc_channels, in_channels=3, out_channels=3):
        super().__init__()
        if len(enc_kernels) != len(enc_channels) or len(enc_kernels) < 1:
            raise ValueError("enc_kernels and enc_channels must have the same non-zero length")
        self.levels = len(enc_kernels)
        self.in_channels, self.out_channels, self.k = in_channels, out_channels, -1
        enc_io, dec_io = _unet_channels(enc_channels, in_channels, out_channels)
        self.enc = nn.ModuleList(PartialConv2d(ci, co, k, stride=2, padding=(k - 1) // 2)
                                 for (ci, co), k in zip(enc_io, enc_kernels))
        self.dec = nn.ModuleList(PartialConv2d(ci, co, 3, stride=1, padding=1) for ci, co in dec_io)

    def forward(self, x, m1):
        # Every feature map here is zero wherever its mask is (pconv outputs are multiplied by
        # u; ReLU and LeakyReLU keep 0), and all channels of a map share one validity plane u.
        # So x*m is x, and the channel sum of a concatenated mask is Cup*up(u) + Cskip*u_skip:
        # the same numbers as PartialConv2d.forward on the full masks, without building them.
        h, u = x * m1, m1
        skips = [(h, u)]
        for conv in self.enc:
            h, u = conv.forward_premasked(h, u * h.shape[1])
            h = F.relu(h, inplace=True)
            skips.append((h, u))
        for i, conv in enumerate(self.dec):
            sh, su = skips[self.levels - 1 - i]
            hu, uu = up2(h), up2(u)
            h, u = conv.forward_premasked(torch.cat([hu, sh], 1), uu * hu.shape[1] + su * sh.shape[1])
            if i < self.levels - 1:
                h = F.leaky_relu(h, LEAKY_SLOPE, inplace=True)
        return h

    def forward_full_masks(self, x, m1):
        """forward() written with PartialConv2d.forward on explicit full masks, docs/weights.md word
        for word (slower; the self-check compares the two)."""
        m = m1.expand(-1, self.in_channels, -1, -1)
        h = x * m
        feats, masks = [h], [m]
        for conv in self.enc:
            h, m = conv(h, m)
            h = F.relu(h)
            feats.append(h)
            masks.append(m)
        h, m = feats.pop(), masks.pop()
        for i, conv in enumerate(self.dec):
            sf, sm = feats[self.levels - 1 - i], masks[self.levels - 1 - i]
            h, m = conv(torch.cat([up2(h), sf], 1), torch.cat([up2(m), sm], 1))
            if i < self.levels - 1:
                h = F.leaky_relu(h, LEAKY_SLOPE)
        return h


class SimKUNet(nn.Module):
    """The refinement network: PConvUNet's topology with plain convolutions (with bias) and no
    masks. Input (n, 3+1+3k, h, w) = [I*M, M, S_1..S_k]; output (n,3,h,w). k >= 0."""

    def __init__(self, enc_kernels, enc_channels, k, out_channels=3):
        super().__init__()
        if k < 0:
            raise ValueError("SimKUNet: k must be >= 0")
        if len(enc_kernels) != len(enc_channels) or len(enc_kernels) < 1:
            raise ValueError("enc_kernels and enc_channels must have the same non-zero length")
        self.levels, self.k = len(enc_kernels), k
        self.in_channels, self.out_channels = 3 + 1 + 3 * k, out_channels
        enc_io, dec_io = _unet_channels(enc_channels, self.in_channels, out_channels)
        self.enc = nn.ModuleList(nn.Conv2d(ci, co, kk, stride=2, padding=(kk - 1) // 2)
                                 for (ci, co), kk in zip(enc_io, enc_kernels))
        self.dec = nn.ModuleList(nn.Conv2d(ci, co, 3, stride=1, padding=1) for ci, co in dec_io)

    def forward(self, x):
        feats, h = [x], x
        for conv in self.enc:
            h = F.relu(conv(h), inplace=True)
            feats.append(h)
        h = feats.pop()
        for i, conv in enumerate(self.dec):
            h = conv(torch.cat([up2(h), feats[self.levels - 1 - i]], 1))
            if i < self.levels - 1:
                h = F.leaky_relu(h, LEAKY_SLOPE, inplace=True)
        return h


VGG_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG_POOL_INDICES = (4, 9, 16, 23, 30)
VGG_BLOCK_CONVS = (2, 2, 3, 3, 3)


class VGG16Features(nn.Module):
    """torchvision's vgg16().features layout (13 conv3x3+ReLU, 5 max-pools, same indices) with
    configurable block widths. forward(x in [0,1]) -> conv5_3 after ReLU (n, widths[-1], h/16,
    w/16): ImageNet normalisation, then features[:30] (the last max-pool is not applied)."""

    def __init__(self, widths=(64, 128, 256, 512, 512)):
        super().__init__()
        if len(widths) != 5:
            raise ValueError("VGG16Features: 5 block widths expected")
        self.widths = list(widths)
        self.in_channels, self.out_channels, self.k = 3, widths[-1], -1
        layers, cin = [], 3
        for w, n in zip(widths, VGG_BLOCK_CONVS):
            for _ in range(n):
                layers += [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU(inplace=True)]
                cin = w
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return self.features[:30]((x - self.mean) / self.std)

    def descriptor(self, x, pool="avg"):
        """forward(x) pooled over all positions ('avg' or 'max') and L2-normalised: (n, widths[-1])."""
        return pool_descriptor(self(x), pool)


def pool_descriptor(f, pool="avg"):
    """A feature map (n,c,h,w) pooled over all positions ('avg' or 'max') then L2-normalised
    (F.normalize, eps 1e-12): (n,c)."""
    if pool == "avg":
        d = f.mean(dim=(2, 3))
    elif pool == "max":
        d = f.amax(dim=(2, 3))
    else:
        raise ValueError(f"pool must be 'avg' or 'max', not {pool!r}")
    return F.normalize(d, p=2, dim=1, eps=1e-12)


def resolve_config(config):
    """A configuration name of CONFIGS or a dict with size, enc_kernels, enc_channels (and
    vgg_widths for VGG) -> a dict copy."""
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ValueError(f"unknown config {config!r} (have: {', '.join(CONFIGS)})")
        return dict(CONFIGS[config])
    return dict(config)


def build(arch, config, k=1):
    """Builds `arch` ('pconv_unet', 'simk_unet', 'vgg16_features') for a config name or dict;
    k is the number of neighbours of simk_unet (ignored otherwise)."""
    cfg = resolve_config(config)
    if arch == "pconv_unet":
        return PConvUNet(cfg["enc_kernels"], cfg["enc_channels"])
    if arch == "simk_unet":
        return SimKUNet(cfg["enc_kernels"], cfg["enc_channels"], k)
    if arch == "vgg16_features":
        return VGG16Features(cfg.get("vgg_widths") or cfg["enc_channels"])
    raise ValueError(f"unknown arch {arch!r} (have: {', '.join(ARCHS)})")


@torch.no_grad()
def init_random(model, seed):
    """Deterministic init from a torch.Generator seeded with `seed`, in named_parameters() order:
    weights ~ N(0, sqrt(2/fan_in)) (He), biases ~ U(-0.1, 0.1). Returns the model."""
    g = torch.Generator().manual_seed(int(seed))
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=g) * math.sqrt(2.0 / fan_in))
        elif name.endswith("bias"):
            p.copy_(torch.rand(p.shape, generator=g) * 0.2 - 0.1)
        else:
            raise ValueError(f"init_random: unexpected parameter {name}")
    return model


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Self-check: direct per-formula reimplementations in numpy, independent of the modules above.

def _np_conv_window(x, n, y0, x0, k):
    """The (Cin,k,k) window of padded image x[n] whose top-left corner is (y0, x0)."""
    return x[n, :, y0:y0 + k, x0:x0 + k]


def _np_pconv(x, m, w, b, stride, pad):
    """Partial convolution straight from docs/weights.md, one output pixel at a time (float64)."""
    import numpy as np
    n_, cin, h, wd = x.shape
    cout, _, k, _ = w.shape
    xp = np.pad(x * m, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    mp = np.pad(m, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n_, cout, ho, wo))
    mout = np.zeros((n_, cout, ho, wo))
    for n in range(n_):
        for i in range(ho):
            for j in range(wo):
                win = _np_conv_window(xp, n, i * stride, j * stride, k)
                s = _np_conv_window(mp, n, i * stride, j * stride, k).sum()
                u = min(max(s, 0.0), 1.0)
                for o in range(cout):
                    raw = (w[o] * win).sum()
                    out[n, o, i, j] = (raw * (cin * k * k) / (s + 1e-8) + b[o]) * u
                    mout[n, o, i, j] = u
    return out, mout


def _np_plain_conv(x, w, b, stride, pad):
    """Plain convolution with bias, vectorised over batch and channels only (float64)."""
    import numpy as np
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cout, _, k, _ = w.shape
    ho, wo = (x.shape[2] + 2 * pad - k) // stride + 1, (x.shape[3] + 2 * pad - k) // stride + 1
    out = np.zeros((x.shape[0], cout, ho, wo))
    for i in range(ho):
        for j in range(wo):
            win = xp[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            out[:, :, i, j] = np.einsum("nckl,ockl->no", win, w) + b
    return out


def _np_up(t):
    """Nearest x2 upsampling of a numpy NCHW array."""
    return t.repeat(2, axis=2).repeat(2, axis=3)


def _np_pconv_unet(x, m1, params, enc_kernels):
    """The PConv UNet as docs/weights.md words it, with numpy ops; params = state_dict as numpy."""
    import numpy as np
    L = len(enc_kernels)
    m = np.repeat(m1, 3, axis=1)
    h = x * m
    skips = [(h, m)]
    for i, k in enumerate(enc_kernels):
        h, m = _np_pconv(h, m, params[f"enc.{i}.weight"], params[f"enc.{i}.bias"], 2, (k - 1) // 2)
        h = np.maximum(h, 0)
        skips.append((h, m))
    h, m = skips[L]
    for i in range(L):
        sh, sm = skips[L - 1 - i]
        h = np.concatenate([_np_up(h), sh], 1)
        m = np.concatenate([_np_up(m), sm], 1)
        h, m = _np_pconv(h, m, params[f"dec.{i}.weight"], params[f"dec.{i}.bias"], 1, 1)
        if i < L - 1:
            h = np.where(h > 0, h, 0.2 * h)
    return h


def _np_simk_unet(x, params, enc_kernels):
    import numpy as np
    L = len(enc_kernels)
    h, skips = x, [x]
    for i, k in enumerate(enc_kernels):
        h = np.maximum(_np_plain_conv(h, params[f"enc.{i}.weight"], params[f"enc.{i}.bias"], 2, (k - 1) // 2), 0)
        skips.append(h)
    for i in range(L):
        h = _np_plain_conv(np.concatenate([_np_up(h), skips[L - 1 - i]], 1),
                           params[f"dec.{i}.weight"], params[f"dec.{i}.bias"], 1, 1)
        if i < L - 1:
            h = np.where(h > 0, h, 0.2 * h)
    return h


def expected_unet_params(enc_kernels, enc_channels, in_channels, out_channels=3):
    """Parameter count of the UNet topology, counted from docs/weights.md's description."""
    L, total = len(enc_kernels), 0
    cin = in_channels
    for k, c in zip(enc_kernels, enc_channels):
        total += cin * c * k * k + c
        cin = c
    dec_out = [enc_channels[L - 2 - i] for i in range(L - 1)] + [out_channels]
    skip_ch = [in_channels] + list(enc_channels[:-1])
    prev = enc_channels[-1]
    for i, c in enumerate(dec_out):
        total += (prev + skip_ch[L - 1 - i]) * c * 9 + c
        prev = c
    return total


def _max_rel(a, b):
    import numpy as np
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def _self_check():
    import numpy as np
    torch.set_num_threads(min(2, torch.get_num_threads()))
    rng = np.random.default_rng(7)
    # 1. PartialConv2d against the per-formula loop: odd sizes, multi-channel masks, windows
    #    with no valid pixel, several kernel/stride/padding combinations.
    for (cin, cout, k, stride, pad, h, w) in ((5, 4, 3, 2, 1, 9, 8), (3, 2, 5, 1, 2, 7, 6), (4, 3, 7, 2, 3, 14, 13)):
        x = rng.standard_normal((2, cin, h, w)).astype(np.float32)
        m = (rng.random((2, cin, h, w)) < 0.6).astype(np.float32)
        m[:, : cin // 2] = m[:, :1]  # channel groups share a plane, like a decoder concat
        m[0, :, 1:k + 3, 1:k + 3] = 0  # holds k x k windows with no valid pixel
        m[1] = 0 if k == 3 else m[1]  # an all-hole image
        conv = PartialConv2d(cin, cout, k, stride, pad)
        init_random(conv, 3)
        with torch.no_grad():
            y, mo = conv(torch.from_numpy(x), torch.from_numpy(m))
        ry, rm = _np_pconv(x.astype(np.float64), m.astype(np.float64), conv.weight.detach().double().numpy(),
                           conv.bias.detach().double().numpy(), stride, pad)
        assert y.shape == ry.shape and mo.shape == rm.shape, (y.shape, ry.shape)
        err = _max_rel(y.numpy(), ry)
        assert err < 1e-5, f"pconv k{k} s{stride}: max rel err {err}"
        assert np.array_equal(mo.numpy(), rm), "pconv mask differs"
        assert (rm == 0).any() and (rm == 1).any(), "test lacks holes or valid windows"
        print(f"pconv k{k} s{stride} p{pad} {x.shape}->{tuple(y.shape)}: max rel err {err:.2e}, "
              f"{int((rm[:, 0] == 0).sum())} empty windows")
    assert [n for n, _ in PartialConv2d(2, 3, 3).named_parameters()] == ["weight", "bias"]

    # 2. Whole UNets at a tiny size against numpy versions of docs/weights.md's wording.
    kernels, chans = [5, 3, 3, 3], [4, 6, 6, 8]
    net = init_random(PConvUNet(kernels, chans), 11)
    params = {k_: v.double().numpy() for k_, v in net.state_dict().items()}
    x = rng.random((1, 3, 16, 16)).astype(np.float32)
    m1 = np.ones((1, 1, 16, 16), np.float32)
    m1[:, :, 2:12, 3:11] = 0
    with torch.no_grad():
        y = net(torch.from_numpy(x), torch.from_numpy(m1)).numpy()
    err = _max_rel(y, _np_pconv_unet(x.astype(np.float64), m1.astype(np.float64), params, kernels))
    assert y.shape == (1, 3, 16, 16) and err < 1e-5, f"pconv_unet: max rel err {err}"
    print(f"pconv_unet tiny 16x16 vs numpy: max rel err {err:.2e}")
    small = init_random(build("pconv_unet", "small"), 4)
    xs = torch.from_numpy(rng.random((2, 3, 64, 64)).astype(np.float32))
    ms = torch.ones(2, 1, 64, 64)
    ms[0, :, 5:40, 10:45] = 0
    ms[1, :, 30:33, 2:60] = 0
    with torch.no_grad():
        fast, full = small(xs, ms), small.forward_full_masks(xs, ms)
    err = _max_rel(fast.numpy(), full.numpy())
    assert err < 1e-6, f"pconv_unet forward vs forward_full_masks: {err}"
    print(f"pconv_unet small 64x64 forward vs forward_full_masks: max rel err {err:.2e}")
    for k in (0, 2):
        sn = init_random(SimKUNet(kernels, chans, k), 12 + k)
        params = {k_: v.double().numpy() for k_, v in sn.state_dict().items()}
        xi = rng.random((1, 4 + 3 * k, 16, 16)).astype(np.float32)
        with torch.no_grad():
            y = sn(torch.from_numpy(xi)).numpy()
        err = _max_rel(y, _np_simk_unet(xi.astype(np.float64), params, kernels))
        assert y.shape == (1, 3, 16, 16) and err < 1e-5, f"simk k={k}: max rel err {err}"
        print(f"simk_unet k={k} tiny 16x16 vs numpy: max rel err {err:.2e}")

    # 3. Names, channel counts and parameter counts of the configurations.
    for cname, cfg in CONFIGS.items():
        pc = build("pconv_unet", cname)
        n_p = count_params(pc)
        assert n_p == expected_unet_params(cfg["enc_kernels"], cfg["enc_channels"], 3), cname
        names = list(pc.state_dict())
        L = len(cfg["enc_kernels"])
        assert names == [f"{p}.{i}.{t}" for p in ("enc", "dec") for i in range(L) for t in ("weight", "bias")]
        for i in range(L - 1):
            assert pc.dec[i].out_channels == cfg["enc_channels"][L - 2 - i]
        assert pc.dec[L - 1].out_channels == 3
        line = f"{cname}: pconv_unet {n_p:,} params"
        for k in (0, 1, 2):
            sk = build("simk_unet", cname, k)
            assert list(sk.state_dict()) == names and sk.enc[0].in_channels == 4 + 3 * k
            assert count_params(sk) == expected_unet_params(cfg["enc_kernels"], cfg["enc_channels"], 4 + 3 * k)
            line += f", simk_unet k={k} {count_params(sk):,}"
        vgg = build("vgg16_features", cname)
        line += f", vgg16_features {count_params(vgg):,}"
        print(line)
    n_paper = count_params(build("pconv_unet", "paper256"))
    assert abs(n_paper - 18.7e6) < 0.05e6, n_paper
    print(f"paper256 pconv_unet parameters: {n_paper} ({n_paper / 1e6:.2f} M, docs/weights.md says 18.7 M)")
    assert count_params(build("vgg16_features", "paper256")) == 14714688  # torchvision vgg16().features

    # 4. VGG layout: torchvision's indices, descriptor = pooled conv5_3 (after ReLU), unit norm.
    vgg = init_random(VGG16Features([4, 4, 8, 8, 8]), 5)
    f = vgg.features
    assert len(f) == 31
    assert [i for i, l in enumerate(f) if isinstance(l, nn.Conv2d)] == list(VGG_CONV_INDICES)
    assert [i for i, l in enumerate(f) if isinstance(l, nn.MaxPool2d)] == list(VGG_POOL_INDICES)
    assert all(isinstance(f[i + 1], nn.ReLU) for i in VGG_CONV_INDICES)
    assert list(vgg.state_dict()) == [f"features.{i}.{t}" for i in VGG_CONV_INDICES for t in ("weight", "bias")]
    xv = torch.from_numpy(rng.random((2, 3, 32, 32)).astype(np.float32))
    with torch.no_grad():
        feat = vgg(xv)
        h = (xv - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        for i in range(30):
            h = f[i](h)
        assert feat.shape == (2, 8, 2, 2) and torch.equal(feat, h)
        for pool, red in (("avg", feat.mean((2, 3))), ("max", feat.amax((2, 3)))):
            d = vgg.descriptor(xv, pool)
            ref = red / red.norm(dim=1, keepdim=True).clamp_min(1e-12)
            assert torch.allclose(d, ref, atol=1e-6) and torch.allclose(d.norm(dim=1), torch.ones(2), atol=1e-5)

    # 5. init_random is deterministic and gives sane output magnitudes.
    net_a = init_random(build("pconv_unet", "small"), 1)
    a, b = net_a.state_dict(), init_random(build("pconv_unet", "small"), 1).state_dict()
    c = init_random(build("pconv_unet", "small"), 2).state_dict()
    assert all(torch.equal(a[k_], b[k_]) for k_ in a) and not torch.equal(a["enc.0.weight"], c["enc.0.weight"])
    with torch.no_grad():
        xs = torch.from_numpy(rng.random((1, 3, 64, 64)).astype(np.float32))
        ms = torch.ones(1, 1, 64, 64)
        ms[:, :, 10:40, 20:50] = 0
        std = float(net_a(xs, ms).std())
    assert 0.05 < std < 20, f"random-init small pconv_unet output std {std}"
    print(f"small pconv_unet random-init output std: {std:.3f}")
    print("nets self-check: OK")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-check"]:
        _self_check()
    else:
        sys.exit("usage: nets.py --self-check")
