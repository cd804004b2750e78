"""Small real datasets as arrays, read from local files (no downloads), and exported as image folders.

* Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (IDX files in ``/usr/share/datasets/fashion-mnist``).
* scikit-learn's bundled 8x8 digits (1,797 images), the offline fixture.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from autolabel.engine.io import atomic_write_bytes
from autolabel.errors import DataError

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): magic 0x0000TTDD, D big-endian uint32 dims, then the data."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{p} is not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=_IDX_TYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{p}: header says {dims.tolist()} but holds {data.size} values (truncated file?)")
    return data.reshape(dims)


def load_fashion_mnist(
    root: str | os.PathLike = FASHION_MNIST_ROOT, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 28, 28], labels int64 [N])`` for ``split`` train (60k) or test (10k)."""
    if split not in ("train", "test"):
        raise DataError(f"split={split!r}: use train or test")
    prefix = "train" if split == "train" else "t10k"
    r = Path(root)
    files = [r / f"{prefix}-images-idx3-ubyte.gz", r / f"{prefix}-labels-idx1-ubyte.gz"]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataError(
            f"Fashion-MNIST not found ({missing[0]}): install it with `apt-get install dataset-fashion-mnist` "
            "or set data.root to the folder holding the IDX .gz files"
        )
    images, labels = read_idx(files[0]), read_idx(files[1]).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{r}: {len(images)} images but {len(labels)} labels")
    return images, labels


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: ``(images uint8 [1797, 8, 8] in 0..255, labels int64)``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images * (255.0 / 16.0)).round().astype(np.uint8), d.target.astype(np.int64)


def select_classes(
    images: np.ndarray, labels: np.ndarray, classes: Sequence[int], per_class: int = -1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The samples of ``classes`` (at most ``per_class`` each, chosen with ``seed``), in a stable order."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if len(idx) == 0:
            raise DataError(f"class {c} has no samples (available: {sorted(set(labels.tolist()))})")
        if 0 < per_class < len(idx):
            idx = np.sort(rng.choice(idx, per_class, replace=False))
        keep.append(idx)
    sel = np.concatenate(keep)
    return images[sel], labels[sel]


def export_class_folders(
    images: np.ndarray,
    labels: np.ndarray,
    out_dir: str | os.PathLike,
    ids: Sequence[str] | None = None,
    upscale: int | None = None,
    *,
    class_names: Sequence[str] | None = None,
    size: int | None = None,
    progress: bool = True,
) -> Path:
    """Write ``out_dir/<class>/<id>.png`` for each image (atomically); skips files that already exist.

    ``images`` uint8 ``[N, H, W]`` (grey) or ``[N, H, W, 3]``; ``ids`` default to the zero-padded index;
    ``upscale`` enlarges by an integer factor (nearest), ``size`` resizes to ``size x size`` (bilinear) instead.
    Class folders are ``class_names[label]`` or ``class_NNN``.
    """
    from tqdm.auto import tqdm

    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3)):
        raise DataError(f"images must be uint8 [N, H, W] or [N, H, W, 3], got shape {images.shape}")
    if images.dtype != np.uint8:
        raise DataError(f"images must be uint8 (0..255), got {images.dtype}; convert with (x * 255).astype(np.uint8)")
    if labels.shape != (len(images),):
        raise DataError(f"labels must be 1-D with one entry per image ({len(images)}), got shape {labels.shape}")
    if ids is not None and len(ids) != len(images):
        raise DataError(f"ids has {len(ids)} entries for {len(images)} images; give one id per image")
    if upscale is not None and (int(upscale) != upscale or upscale < 1):
        raise DataError(f"upscale={upscale} must be a positive integer factor")
    if class_names is not None and len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(class_names):
        raise DataError(f"labels span {labels.min()}..{labels.max()} but {len(class_names)} class_names were given")
    if images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]
    out = Path(out_dir)
    for i in tqdm(range(len(images)), desc=f"export {out.name}", disable=not progress, leave=False):
        name = class_names[labels[i]] if class_names is not None else f"class_{int(labels[i]):03d}"
        path = out / name / f"{ids[i] if ids is not None else f'{i:06d}'}.png"
        if path.exists():
            continue
        im = Image.fromarray(images[i])
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        elif upscale is not None and upscale > 1:
            im = im.resize((im.size[0] * int(upscale), im.size[1] * int(upscale)), Image.NEAREST)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        atomic_write_bytes(path, buf.getvalue())
    return out
