"""Image folders: unlabeled pools (``DIR/*.png``) or classed folders (``DIR/<class>/*.png``).

Images come out as float tensors ``[C, H, W]`` in ``[-1, 1]`` (the GAN's range; classifiers use it as is).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from autolabel.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def list_images(root: str | os.PathLike) -> list[Path]:
    """All images under ``root`` (recursive, sorted); raises when the folder is missing or holds none."""
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"image folder not found: {r} -- give a directory of images (optionally in class subfolders)")
    files = sorted(p for p in r.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"no images in {r}: accepted extensions are {', '.join(IMAGE_EXTENSIONS)}")
    return files


def load_image(path: str | os.PathLike, size: int | None = None, channels: int = 3) -> np.ndarray:
    """uint8 ``[H, W, C]``, resized to ``size x size`` (bilinear, antialiased) when given."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR, reducing_gap=None)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read image {path}: {e.__class__.__name__}; remove or re-save the file") from e
    return arr[..., None] if arr.ndim == 2 else arr


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, C]`` -> float ``[C, H, W]`` in [-1, 1]."""
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()).float().div(127.5).sub(1.0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """float ``[C, H, W]`` (or batch) in [-1, 1] -> uint8 ``[H, W, C]`` (or ``[B, H, W, C]``)."""
    x = ((t.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    return np.moveaxis(x, -3, -1)


class ImageFolderDataset(Dataset):
    """Images of a folder; with class subfolders, also integer labels (sorted class names -> 0..C-1).

    ``with_labels="auto"`` uses labels when every image sits in a first-level subfolder.
    Items are ``(image [C, size, size] in [-1, 1], label)`` (label -1 without classes); ``ids`` are relative paths
    without extension.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        size: int = 64,
        channels: int = 3,
        with_labels: str | bool = "auto",
        files: Sequence[Path] | None = None,
    ):
        if channels not in (1, 3):
            raise ConfigError(f"channels={channels}: use 1 (greyscale) or 3 (RGB)")
        if size is not None and size < 1:
            raise ConfigError(f"size={size}: give a positive square side in pixels")
        if with_labels not in ("auto", True, False):
            raise ConfigError(f"with_labels={with_labels!r}: use 'auto', true or false")
        self.root = Path(root)
        self.files = list(files) if files is not None else list_images(self.root)
        self.size, self.channels = size, channels
        rel = [f.relative_to(self.root) for f in self.files]
        self.ids = [str(r.with_suffix("")) for r in rel]
        nested = all(len(r.parts) == 2 for r in rel)
        use = nested if with_labels == "auto" else bool(with_labels)
        if use and not nested:
            raise DataError(f"{self.root}: with_labels=true needs every image in a class subfolder (DIR/<class>/img)")
        self.classes: list[str] = sorted({r.parts[0] for r in rel}) if use else []
        index = {c: i for i, c in enumerate(self.classes)}
        self.labels = np.array([index[r.parts[0]] for r in rel] if use else [-1] * len(rel), dtype=np.int64)

    @property
    def has_labels(self) -> bool:
        return bool(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return to_tensor(load_image(self.files[i], self.size, self.channels)), int(self.labels[i])
