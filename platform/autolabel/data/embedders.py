"""Bring your own embedder: a TorchScript file or a timm architecture with a local weights file, used to embed an
image folder into a feature pool (``.npz``) for Hi-LANDER. Nothing is downloaded: timm models are built with
``pretrained=False`` and filled from ``weights`` (a ``.safetensors`` or a torch state dict, read with
``weights_only=True``).

``embedder=torchscript:FILE`` -- any scripted / traced module mapping ``[B, 3, S, S]`` normalized images to ``[B, D]``
features (a ``[B, C, H, W]`` output is average-pooled). ``embedder=timm:NAME weights=FILE`` -- ``timm.create_model(NAME,
num_classes=0)`` (the pooled pre-logits features). Images are resized to ``image_size`` and normalized with the
model's mean/std (timm's pretrained config; ImageNet's for TorchScript unless given).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autolabel.errors import CheckpointError, ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def parse_embedder(spec: str) -> tuple[str, str]:
    """``"torchscript:FILE"`` -> ``("torchscript", FILE)``; ``"timm:NAME"`` -> ``("timm", NAME)``."""
    kind, _, arg = str(spec).partition(":")
    if kind not in ("torchscript", "timm") or not arg:
        raise ConfigError(f"embedder={spec!r}: use torchscript:FILE.pt or timm:NAME (with weights=FILE), or leave it "
                          "unset and pass checkpoint= (a `fit classifier` checkpoint)")  # fmt: skip
    return kind, arg


def load_embedder(spec: str, weights: str | os.PathLike | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The module and its input config (``mean``, ``std``, ``image_size`` when the model states one)."""
    kind, arg = parse_embedder(spec)
    if kind == "torchscript":
        p = Path(arg)
        if not p.is_file():
            raise CheckpointError(f"TorchScript file not found: {p} -- export one with torch.jit.script(model)"
                                  ".save(PATH) (or torch.jit.trace) and pass embedder=torchscript:PATH")  # fmt: skip
        try:
            model = torch.jit.load(str(p), map_location="cpu")
        except (RuntimeError, ValueError) as e:
            raise CheckpointError(f"{p} is not a TorchScript file ({e.__class__.__name__}) -- save it with "
                                  "torch.jit.save") from e  # fmt: skip
        return model.eval(), {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    try:
        import timm
    except ImportError as e:
        raise ConfigError("embedder=timm:... needs timm: pip install -e '.[timm]' (or pip install timm)") from e
    if weights is None:
        raise CheckpointError(f"embedder=timm:{arg} needs weights=FILE (a local .safetensors or .pth state dict); "
                              "nothing is downloaded -- fetch the weights once and pass their path")  # fmt: skip
    wp = Path(weights)
    if not wp.is_file():
        raise CheckpointError(f"weights file not found: {wp} -- download {arg}'s weights (.safetensors / .pth) once "
                              "and pass weights=PATH")  # fmt: skip
    try:
        model = timm.create_model(arg, pretrained=False, num_classes=0)
    except RuntimeError as e:  # unknown model name
        raise ConfigError(f"embedder=timm:{arg}: {e} -- see timm.list_models()") from e
    state = _read_state(wp)
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head.fc.", "classifier.", "head."))
             or k in model.state_dict()}  # fmt: skip
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise CheckpointError(f"{wp} does not fit timm:{arg} ({len(result.missing_keys)} missing tensors, e.g. "
                              f"{result.missing_keys[0]}) -- pass the weights of that architecture")  # fmt: skip
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    info: dict[str, Any] = {"mean": tuple(cfg.get("mean", IMAGENET_MEAN)), "std": tuple(cfg.get("std", IMAGENET_STD))}
    if cfg.get("input_size"):
        info["image_size"] = int(cfg["input_size"][-1])
    return model.eval(), info


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- any unreadable file is the same user error
        raise CheckpointError(f"cannot read weights {path} ({e.__class__.__name__}) -- pass a .safetensors or a "
                              "torch state dict (.pth)") from e  # fmt: skip
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no state dict -- pass the model's weights (.safetensors / .pth)")
    return state


@torch.no_grad()
def embed_with(model: nn.Module, images: str | os.PathLike, out: str | os.PathLike, *, image_size: int = 224,
               mean=IMAGENET_MEAN, std=IMAGENET_STD, batch_size: int = 64, device: str = "cpu",
               progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Embed every image of ``images`` with ``model`` into a feature pool ``.npz`` (``features``, ``ids``; ``labels``
    and ``class_names`` with class subfolders), like ``autolabel embed`` with a trained classifier."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from autolabel.data.images import ImageFolderDataset
    from autolabel.data.pools import FeaturePool, save_feature_pool

    if image_size < 8:
        raise ConfigError(f"image_size={image_size} must be >= 8")
    ds = ImageFolderDataset(images, image_size, 3)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1).to(device)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1).to(device)
    model = model.to(device).eval()
    feats = []
    for x, _ in tqdm(DataLoader(ds, batch_size=batch_size), desc="embed", disable=not progress):
        x = ((x.to(device) + 1) / 2 - m) / s  # the dataset gives [-1, 1]
        f = model(x)
        if isinstance(f, (tuple, list)):
            f = f[0]
        if f.ndim == 4:
            f = f.mean((2, 3))
        if f.ndim != 2:
            raise ConfigError(f"the embedder returned shape {tuple(f.shape)}: it must give [B, D] features (or a "
                              "[B, C, H, W] map, average-pooled)")  # fmt: skip
        feats.append(f.float().cpu())
    x = torch.cat(feats).numpy().astype(np.float32)
    pool = FeaturePool(x, ds.labels if ds.has_labels else None, np.array(ds.ids))
    path = save_feature_pool(out, pool, class_names=ds.classes)
    return {"n": len(ds), "dim": int(x.shape[1]), "path": str(path), "classes": ds.classes}
