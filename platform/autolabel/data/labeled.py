"""Labeled image folders: ``images/`` + one of ``masks/`` | ``keypoints.csv`` | ``depth/``.

Layout (stems must match between ``images/`` and the label files)::

    root/images/<stem>.png|jpg     RGB or grey photos
    root/masks/<stem>.png|jpg      class index per pixel (mode L/P) or a binary 0/255 mask (JPEG allowed)
    root/keypoints.csv             header ``image,x0,y0,x1,y1,...`` in pixels; ``-1,-1`` = invisible
    root/depth/<stem>.npy|png      float depth (.npy) or 16-bit PNG

``mask_mode="auto"`` treats the masks as binary (threshold 128, >=128 -> class 1) when any mask is a JPEG, or when
mask values are near 0 or 255 (<= 32 or >= 223 on >= 95% of pixels, JPEG ringing allowed) and some value is >= 223;
otherwise masks hold class indices. Items are dicts ``image`` float [C,H,W] in [-1,1], ``mask`` long [H,W] |
``keypoints`` float [K,2] (x, y pixels after resizing) + ``visible`` bool [K] | ``depth`` float [1,H,W], and ``id``.
All samples are decoded and resized once at construction (small datasets: a few thousand images).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from autolabel.engine.io import atomic_save_npy, atomic_write_bytes, atomic_write_text
from autolabel.errors import ConfigError, DataError

_IMG_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
TASKS = ("segmentation", "keypoints", "depth")


def _list(folder: Path, exts: Sequence[str]) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in exts}


def _open(path: Path) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()
        return im
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read {path}: {e.__class__.__name__}; remove or re-save the file") from e


def _size_hw(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    if len(size) != 2:
        raise ConfigError(f"size={size!r}: give an int or (height, width)")
    return (int(size[0]), int(size[1]))


def _same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return abs(a[0] / a[1] - b[0] / b[1]) <= 0.02 * (a[0] / a[1])


class LabeledFolder(Dataset):
    """A labeled folder as a torch Dataset (see the module docstring for layout and item format)."""

    def __init__(
        self,
        root: str | os.PathLike,
        task: str = "auto",
        size: int | Sequence[int] | None = None,
        n_classes: int | None = None,
        mask_mode: str = "auto",
        limit: int | None = None,
        indices: Sequence[int] | None = None,
        resize_images_to_mask: bool = True,
        progress: bool = False,
        _images_dir: str | os.PathLike | None = None,
        _masks_dir: str | os.PathLike | None = None,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(
                f"labeled folder not found: {self.root} -- give a folder with images/ and masks/, "
                "keypoints.csv or depth/"
            )
        if mask_mode not in ("auto", "index", "binary"):
            raise ConfigError(f"mask_mode={mask_mode!r}: use auto, index or binary")
        img_dir = Path(_images_dir) if _images_dir is not None else self.root / "images"
        if not img_dir.is_dir():
            raise DataError(f"images folder missing: {img_dir} -- put the photos in {img_dir}")
        images = _list(img_dir, _IMG_EXT)
        if not images:
            raise DataError(f"images folder is empty: {img_dir} -- add .png/.jpg images")
        masks_dir = Path(_masks_dir) if _masks_dir is not None else self.root / "masks"
        task = self._detect_task(task, masks_dir, _masks_dir is not None)
        self.task, self.size, self.mask_mode = task, _size_hw(size), mask_mode
        self.resize_images_to_mask = resize_images_to_mask

        stems = sorted(images)
        labels: dict[str, object]
        if task == "segmentation":
            labels = _list(masks_dir, _IMG_EXT)
        elif task == "depth":
            labels = _list(self.root / "depth", (".npy", ".png"))
        else:
            labels = self._read_csv(self.root / "keypoints.csv")
        missing = [s for s in stems if s not in labels]
        if missing:
            kind = {"segmentation": "mask", "depth": "depth map", "keypoints": "keypoints.csv row"}[task]
            raise DataError(
                f"{len(missing)} image(s) without a {kind}, e.g. {', '.join(missing[:5])}: "
                f"add the {kind}s (same stem) or remove those images"
            )
        if indices is not None:
            try:
                stems = [stems[i] for i in indices]
            except IndexError as e:
                raise ConfigError(f"indices out of range for {len(stems)} images: pass indices < {len(stems)}") from e
        if limit is not None:
            stems = stems[: int(limit)]
        self.ids = stems
        self.image_paths = [images[s] for s in stems]

        from tqdm import tqdm

        self._images: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._visible: list[torch.Tensor] = []
        raw_masks: list[np.ndarray] = []
        mask_paths = [labels[s] for s in stems] if task == "segmentation" else []
        for s in tqdm(stems, desc="load labeled folder", disable=not progress):
            im = _open(images[s]).convert("RGB")
            isz = (im.height, im.width)
            if task == "segmentation":
                m = _open(labels[s])
                m = m if m.mode in ("L", "P") else m.convert("L")
                lsz = (m.height, m.width)
            elif task == "depth":
                d = self._read_depth(labels[s])
                lsz = d.shape
            else:
                lsz = isz
            if isz != lsz:
                if not resize_images_to_mask or not _same_aspect(isz, lsz):
                    raise DataError(
                        f"{images[s].name}: image {isz[1]}x{isz[0]} but label {lsz[1]}x{lsz[0]} (WxH); "
                        "labels must be pixel-aligned -- resize one of them (same aspect ratio can be "
                        "fixed with resize_images_to_mask=True)"
                    )
                im = im.resize((lsz[1], lsz[0]), Image.BILINEAR)
            out = self.size or lsz
            if (im.height, im.width) != out:
                im = im.resize((out[1], out[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
            self._images.append(torch.from_numpy(arr.transpose(2, 0, 1).copy()).float().div(127.5).sub(1.0))
            if task == "segmentation":
                if (m.height, m.width) != out:
                    m = m.resize((out[1], out[0]), Image.NEAREST)
                raw_masks.append(np.asarray(m, dtype=np.uint8))
            elif task == "depth":
                if not np.isfinite(d).all():
                    raise DataError(f"depth map for {s} contains NaN/inf: fix or drop that file")
                dt = torch.from_numpy(d.astype(np.float32))[None, None]
                if tuple(dt.shape[-2:]) != out:
                    dt = torch.nn.functional.interpolate(dt, size=out, mode="nearest")
                self._labels.append(dt[0])
            else:
                kp = labels[s]
                vis = ~((kp[:, 0] == -1) & (kp[:, 1] == -1))
                h, w = isz
                for k in range(kp.shape[0]):
                    x, y = kp[k]
                    if vis[k] and not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                        row = self._csv_rows[s]
                        raise DataError(
                            f"keypoints.csv row {row}: keypoint {k} = ({x:g}, {y:g}) outside image "
                            f"{w}x{h} (WxH) -- fix it or mark it invisible with -1,-1"
                        )
                sx, sy = (out[1] - 1) / max(w - 1, 1), (out[0] - 1) / max(h - 1, 1)
                scaled = kp * np.array([sx, sy], dtype=np.float32)
                scaled[~vis] = -1.0
                self._labels.append(torch.from_numpy(scaled.astype(np.float32)))
                self._visible.append(torch.from_numpy(vis))
        if task == "segmentation":
            self._finish_masks(raw_masks, mask_paths, n_classes)
        else:
            self.n_classes = n_classes

    # ---------------------------------------------------------------- construction helpers
    def _detect_task(self, task: str, masks_dir: Path, explicit_masks: bool) -> str:
        if task != "auto":
            if task not in TASKS:
                raise ConfigError(f"task={task!r}: use auto, segmentation, keypoints or depth")
            need = {"segmentation": masks_dir, "keypoints": self.root / "keypoints.csv", "depth": self.root / "depth"}
            if not need[task].exists():
                raise DataError(f"task={task} but {need[task]} is missing -- add it or choose another task")
            return task
        if explicit_masks:
            return "segmentation"
        found = [
            t
            for t, p in (
                ("segmentation", masks_dir),
                ("keypoints", self.root / "keypoints.csv"),
                ("depth", self.root / "depth"),
            )
            if p.exists()
        ]
        if not found:
            raise DataError(f"no labels in {self.root}: add masks/, keypoints.csv or depth/ next to images/")
        if len(found) > 1:
            raise DataError(f"{self.root} holds several label kinds ({', '.join(found)}): pass task= to pick one")
        return found[0]

    def _read_csv(self, path: Path) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        self._csv_rows: dict[str, int] = {}
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows or not rows[0] or rows[0][0].strip() != "image" or (len(rows[0]) - 1) % 2 or len(rows[0]) < 3:
            raise DataError(f"{path} row 1: header must be image,x0,y0,x1,y1,... -- fix the header")
        n = len(rows[0]) - 1
        for r, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            if len(row) != n + 1:
                raise DataError(f"{path} row {r}: {len(row)} fields, header has {n + 1} -- fix that row")
            try:
                vals = np.array([float(v) for v in row[1:]], dtype=np.float32)
            except ValueError as e:
                raise DataError(f"{path} row {r}: non-numeric coordinate ({e}) -- fix that row") from e
            if not np.isfinite(vals).all():
                raise DataError(f"{path} row {r}: NaN/inf coordinate -- use -1,-1 for invisible keypoints")
            stem = Path(row[0].strip()).stem
            out[stem] = vals.reshape(-1, 2)
            self._csv_rows[stem] = r
        return out

    @staticmethod
    def _read_depth(path: Path) -> np.ndarray:
        if path.suffix == ".npy":
            try:
                d = np.load(path)
            except (OSError, ValueError) as e:
                raise DataError(f"cannot read depth {path}: {e}; re-save it with numpy.save") from e
            d = np.squeeze(d)
        else:
            d = np.asarray(_open(path)).astype(np.float32)
        if d.ndim != 2:
            raise DataError(f"depth {path} has shape {d.shape}: save one [H, W] map per image")
        return d.astype(np.float32)

    def _finish_masks(self, raw: list[np.ndarray], paths: list[Path], n_classes: int | None) -> None:
        mode = self.mask_mode
        if mode == "auto":
            mode = "index"
            if any(p.suffix.lower() in (".jpg", ".jpeg") for p in paths):
                mode = "binary"
            elif raw:
                mx = max(int(m.max()) for m in raw)
                mid = sum(int(((m > 32) & (m < 223)).sum()) for m in raw)
                tot = sum(m.size for m in raw)
                if mx >= 223 and mid <= 0.05 * tot:
                    mode = "binary"
        self.mask_mode_resolved = mode
        if mode == "binary":
            masks = [(m >= 128).astype(np.int64) for m in raw]
            inferred = 2
        else:
            masks = [m.astype(np.int64) for m in raw]
            inferred = max(int(m.max()) for m in masks) + 1 if masks else 1
        if n_classes is not None:
            for p, m in zip(paths, masks):
                if int(m.max()) >= n_classes:
                    raise DataError(
                        f"{p.name}: class index {int(m.max())} >= n_classes={n_classes} -- raise "
                        "n_classes or fix the mask (binary masks: mask_mode='binary')"
                    )
        self.n_classes = int(n_classes) if n_classes is not None else inferred
        self._labels = [torch.from_numpy(m) for m in masks]

    @classmethod
    def from_dirs(cls, images_dir: str | os.PathLike, masks_dir: str | os.PathLike, **kwargs: object) -> LabeledFolder:
        """Segmentation folder from two separate directories (e.g. Weizmann ``rgb/`` + ``figure_ground/``)."""
        images_dir, masks_dir = Path(images_dir), Path(masks_dir)
        for d, what in ((images_dir, "images"), (masks_dir, "masks")):
            if not d.is_dir():
                raise DataError(f"{what} folder not found: {d} -- pass an existing directory")
        kwargs.setdefault("task", "segmentation")
        return cls(images_dir.parent, _images_dir=images_dir, _masks_dir=masks_dir, **kwargs)  # type: ignore[arg-type]

    # ---------------------------------------------------------------- Dataset API
    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, object]:
        item: dict[str, object] = {"image": self._images[i], "id": self.ids[i]}
        if self.task == "segmentation":
            item["mask"] = self._labels[i]
        elif self.task == "depth":
            item["depth"] = self._labels[i]
        else:
            item["keypoints"] = self._labels[i]
            item["visible"] = self._visible[i]
        return item

    @property
    def n_keypoints(self) -> int:
        """Keypoints per image (0 for other tasks)."""
        return int(self._labels[0].shape[0]) if self.task == "keypoints" and self._labels else 0

    def class_histogram(self) -> np.ndarray:
        """Pixel count per class over the whole folder (segmentation only)."""
        if self.task != "segmentation":
            raise ConfigError(f"class_histogram() needs task=segmentation, this folder is {self.task}")
        h = np.zeros(self.n_classes, dtype=np.int64)
        for m in self._labels:
            h += np.bincount(m.reshape(-1).numpy(), minlength=self.n_classes)[: self.n_classes]
        return h


def _png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG") if mode else Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_labeled_folder(
    out_dir: str | os.PathLike,
    images: np.ndarray,
    task: str,
    labels: np.ndarray,
    ids: Sequence[str] | None = None,
    write_images: bool = True,
) -> Path:
    """Write ``images`` (uint8 [N,H,W,C]) and ``labels`` as a labeled folder; every file is written atomically.

    ``labels``: segmentation uint8/int [N,H,W] class indices; keypoints float [N,K,2] (``-1,-1`` = invisible);
    depth float [N,H,W] (saved as ``.npy``). ``write_images=False`` adds labels to an existing folder.
    """
    out = Path(out_dir)
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3):
        raise DataError(f"images must be uint8 [N,H,W,1|3], got {images.dtype} {images.shape}")
    n = images.shape[0]
    ids = list(ids) if ids is not None else [f"{i:06d}" for i in range(n)]
    labels = np.asarray(labels)
    if len(ids) != n or labels.shape[0] != n:
        raise DataError(f"{n} images but {len(ids)} ids and {labels.shape[0]} labels: pass one of each per image")
    if task not in TASKS:
        raise ConfigError(f"task={task!r}: use segmentation, keypoints or depth")
    if write_images:
        for i, s in enumerate(ids):
            im = images[i, ..., 0] if images.shape[-1] == 1 else images[i]
            atomic_write_bytes(out / "images" / f"{s}.png", _png_bytes(im))
    if task == "segmentation":
        if labels.shape[1:] != images.shape[1:3] or labels.min() < 0 or labels.max() > 255:
            raise DataError(f"masks must be [N,H,W] with values 0..255 matching images, got {labels.shape}")
        for i, s in enumerate(ids):
            atomic_write_bytes(out / "masks" / f"{s}.png", _png_bytes(labels[i].astype(np.uint8), "L"))
    elif task == "depth":
        if labels.shape[1:] != images.shape[1:3]:
            raise DataError(f"depth must be [N,H,W] matching images {images.shape[1:3]}, got {labels.shape}")
        for i, s in enumerate(ids):
            atomic_save_npy(out / "depth" / f"{s}.npy", labels[i].astype(np.float32))
    else:
        if labels.ndim != 3 or labels.shape[2] != 2:
            raise DataError(f"keypoints must be [N,K,2], got {labels.shape}")
        k = labels.shape[1]
        lines = ["image," + ",".join(f"x{j},y{j}" for j in range(k))]
        for i, s in enumerate(ids):
            lines.append(f"{s}.png," + ",".join(f"{v:.3f}" for v in labels[i].reshape(-1)))
        atomic_write_text(out / "keypoints.csv", "\n".join(lines) + "\n")
    return out
