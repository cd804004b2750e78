"""Image folders: unlabeled pools (``DIR/*.png``) or classed folders (``DIR/<class>/*.png``).

Images come out as float tensors ``[C, H, W]`` in ``[-1, 1]`` (the GAN's range; classifiers use it as is).

Every image the project reads goes through :func:`open_image` (one-line errors; a decompression-bomb guard whose
pixel limit is ``$AUTOLABEL_MAX_IMAGE_PIXELS``, default PIL's 178,956,970, or :func:`set_max_image_pixels`) and
:func:`image_array` (8-bit RGB/grey from any mode: 16-bit ``I;16*`` and 32-bit ``I`` images are scaled from their
16-bit range instead of clipped to white, float ``F`` images from [0, 1] or [0, 255]).
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
MAX_PIXELS_ENV = "AUTOLABEL_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 178_956_970  # PIL's own hard limit (2 x Image.MAX_IMAGE_PIXELS)
_max_pixels: list[int] = []  # set by set_max_image_pixels (overrides the environment)


def set_max_image_pixels(n: int | None) -> None:
    """Largest image (width x height) :func:`open_image` accepts; ``None`` restores the default / environment."""
    _max_pixels.clear()
    if n is not None:
        if int(n) < 1:
            raise ConfigError(f"max image pixels {n} must be >= 1")
        _max_pixels.append(int(n))


def max_image_pixels() -> int:
    """The active pixel limit: :func:`set_max_image_pixels`, else ``$AUTOLABEL_MAX_IMAGE_PIXELS``, else PIL's."""
    if _max_pixels:
        return _max_pixels[0]
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        n = int(float(raw))
    except ValueError:
        raise ConfigError(f"{MAX_PIXELS_ENV}={raw!r} is not a number: give the pixel limit, e.g. 400000000") from None
    if n < 1:
        raise ConfigError(f"{MAX_PIXELS_ENV}={raw} must be >= 1")
    return n


def _bomb(path: str | os.PathLike, pixels: str, limit: int) -> DataError:
    return DataError(f"image {path} has {pixels} pixels, over the limit of {limit:,} (decompression-bomb guard): "
                     f"shrink the image, or raise the limit with max_image_pixels=N (or {MAX_PIXELS_ENV}=N) if you trust the file")  # fmt: skip


def open_image(path: str | os.PathLike, max_pixels: int | None = None) -> Image.Image:
    """The decoded image at ``path``; one-line DataError when it is unreadable or larger than the pixel limit
    (checked from the header, before decoding)."""
    import warnings

    limit = int(max_pixels) if max_pixels is not None else max_image_pixels()
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limit:
        Image.MAX_IMAGE_PIXELS = limit  # PIL's own guard must not fire below ours (ours gives the one-line error)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            im = Image.open(path)
    except Image.DecompressionBombError:
        raise _bomb(path, "too many", limit) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot read image {path}: {e.__class__.__name__}; remove or re-save the file") from None
    w, h = im.size
    if w * h > limit:
        im.close()
        raise _bomb(path, f"{w}x{h} = {w * h:,}", limit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
    except Image.DecompressionBombError:
        raise _bomb(path, f"{w}x{h} = {w * h:,}", limit) from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot read image {path}: {e.__class__.__name__} (truncated or damaged); remove or "
                        "re-save the file") from None  # fmt: skip
    return im


def _to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """Map a high-bit-depth single-channel array to uint8 by its mode's range (not clipped)."""
    if mode.startswith("I;16") or a.dtype == np.uint16:
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if mode == "F":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if a.size and a.max() <= 1.0 else 1.0  # [0, 1] floats, else already 0..255
        return np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
    # "I" (int32): 16-bit data (PNG, TIFF) unless every value fits 8 bits
    a = a.astype(np.int64)
    if a.size and a.max() > 255:
        return ((np.clip(a, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
    return np.clip(a, 0, 255).astype(np.uint8)


def image_array(im: Image.Image, channels: int = 3) -> np.ndarray:
    """uint8 ``[H, W, channels]`` of a PIL image in any mode: 16-bit and 32-bit integer images are scaled from their
    16-bit range, float images from [0, 1] (or taken as 0..255), palette/alpha/CMYK images converted by PIL."""
    if im.mode.startswith("I") or im.mode == "F":
        grey = _to_uint8(np.asarray(im), im.mode)
        arr = grey[..., None] if channels == 1 else np.repeat(grey[..., None], 3, axis=2)
        return np.ascontiguousarray(arr)
    if im.mode in ("P", "PA") and "transparency" in im.info:
        im = im.convert("RGBA")
    arr = np.asarray(im.convert("RGB" if channels == 3 else "L"), dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


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
    """uint8 ``[H, W, C]`` (any source mode, see :func:`image_array`), resized to ``size x size`` (bilinear,
    antialiased) when given."""
    with open_image(path) as src:
        arr = image_array(src, channels)
    if size is not None and arr.shape[:2] != (size, size):
        im = Image.fromarray(arr[..., 0] if channels == 1 else arr)
        arr = np.asarray(im.resize((size, size), Image.BILINEAR, reducing_gap=None), dtype=np.uint8)
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


def sample_images(dataset: Dataset, limit: int, seed: int = 0) -> torch.Tensor:
    """A seeded sample of up to ``limit`` images of ``dataset`` (items ``(image, label)``, ``{"image": ...}`` or the
    image itself), stacked ``[N, C, H, W]`` in a seeded random order: the GAN quality metric's real images, AdaBN's
    pool."""
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0 or limit < 1:
        raise DataError(f"cannot sample {limit} images from a dataset of {n}: need a non-empty folder and limit >= 1")
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].tolist()
    items = [dataset[i] for i in idx]
    images = [it["image"] if isinstance(it, dict) else it[0] if isinstance(it, (list, tuple)) else it for it in items]
    return torch.stack(images).float()
