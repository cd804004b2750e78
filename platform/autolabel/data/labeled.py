"""Labeled image folders: ``images/`` + one of ``masks/`` | ``keypoints.csv`` | ``depth/``.

Layout (stems must match between ``images/`` and the label files)::

    root/images/<stem>.png|jpg     RGB or grey photos
    root/masks/<stem>.png|jpg      class index per pixel (mode L/P) or a binary 0/255 mask (JPEG allowed)
    root/keypoints.csv             header ``image,x0,y0,x1,y1,...`` in pixels; ``-1,-1`` = invisible
    root/depth/<stem>.npy|png      float depth (.npy) or 16-bit PNG

Other layouts -- COCO JSON (a ``.json`` file or a folder with ``annotations.json``), PASCAL VOC / CVAT "Segmentation
mask" folders (``SegmentationClass/`` + ``labelmap.txt``), YOLO folders (``data.yaml``) -- are read through
:mod:`autolabel.data.formats`; names come from them, or from ``labels.json`` / ``labelmap.txt`` next to ``images/``
(``labelmap.txt`` also maps RGB colour masks to classes). Mask pixels equal to ``ignore_index`` (255 by default, the
VOC "void" border; None to disable) stay ``ignore_index``: they are no class, losses and metrics skip them.

``mask_mode="auto"`` treats the masks as binary (threshold 128, >=128 -> class 1) when any mask is a JPEG, or when
mask values are near 0 or 255 (<= 32 or >= 223 on >= 95% of pixels, JPEG ringing allowed) and some value is >= 223;
otherwise masks hold class indices. PNG masks whose values other than ``ignore_index`` are all small (< 128, some
non-zero) are VOC-style index masks with void borders, never binary. Items are dicts ``image`` float [C,H,W] in
[-1,1], ``mask`` long [H,W] | ``keypoints`` float [K,2] (x, y pixels after resizing) + ``visible`` bool [K] |
``depth`` float [1,H,W], and ``id``.
All samples are decoded and resized once at construction (small datasets: a few thousand images). ``n_classes``
(segmentation) is counted on the masks as stored, before any resizing (a thin class that resizing erases still
counts); a given ``n_classes`` below a mask's largest class is a clear error.

Synthetic datasets (``autolabel synthesize`` output: ``images/``, ``labels/<id>.png|.json|.npy`` at the image
resolution, ``manifest.jsonl`` listing the kept samples) open with :func:`open_synthetic`, which reads only the ids
in ``manifest.jsonl`` (an unmerged run, whose folder still holds the unfiltered candidates, is refused).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from autolabel.data.images import image_array, open_image
from autolabel.data.mask_checks import check_mask_values, resolve_mask_check, single_channel_mask
from autolabel.engine.io import atomic_save_npy, atomic_write_bytes, atomic_write_text
from autolabel.errors import ConfigError, DataError

_IMG_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
TASKS = ("segmentation", "keypoints", "depth")


def _list(folder: Path, exts: Sequence[str]) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in exts}


def _open(path: Path) -> Image.Image:
    return open_image(path)  # one-line errors, decompression-bomb guard


def _rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB of a photo in any mode (16-bit / float images scaled, not clipped to white)."""
    return Image.fromarray(image_array(im, 3))


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
        ids: Sequence[str] | None = None,
        progress: bool = False,
        ignore_index: int | None = 255,
        _images_dir: str | os.PathLike | None = None,
        _masks_dir: str | os.PathLike | None = None,
        mask_check: str | None = None,
    ):
        self.root = Path(root)
        self.ignore_index = None if ignore_index is None or ignore_index < 0 else int(ignore_index)
        foreign = _foreign_labels(self.root, task, self.ignore_index) if _images_dir is None else None
        if foreign is not None:
            self.root, mask_mode = foreign.images[0].parent if self.root.is_file() else self.root, "index"
        if not self.root.is_dir():
            raise DataError(
                f"labeled folder not found: {self.root} -- give a folder with images/ and masks/, "
                "keypoints.csv or depth/"
            )
        if mask_mode not in ("auto", "index", "binary"):
            raise ConfigError(f"mask_mode={mask_mode!r}: use auto, index or binary")
        self.mask_check = resolve_mask_check(mask_check)
        img_dir = Path(_images_dir) if _images_dir is not None else self.root / "images"
        if foreign is not None:
            images, task, img_dir = dict(zip(foreign.ids, foreign.images)), foreign.task, foreign.images[0].parent
            names = foreign.names
        else:
            if not img_dir.is_dir():
                raise DataError(f"images folder missing: {img_dir} -- put the photos in {img_dir}")
            images = _list(img_dir, _IMG_EXT)
            if not images:
                raise DataError(f"images folder is empty: {img_dir} -- add .png/.jpg images")
            names = _read_names(self.root if _masks_dir is None else Path(_masks_dir).parent)
        masks_dir = Path(_masks_dir) if _masks_dir is not None else self.root / "masks"
        task = task if foreign is not None else self._detect_task(task, masks_dir, _masks_dir is not None)
        self.class_names, self.keypoint_names = list(names.classes) or None, list(names.keypoints) or None
        self.skeleton = [tuple(p) for p in names.skeleton]
        colors = names.colors or None
        self.task, self.size, self.mask_mode = task, _size_hw(size), mask_mode
        self.resize_images_to_mask = resize_images_to_mask

        stems = sorted(images)
        if ids is not None:
            absent = [s for s in ids if s not in images]
            if absent:
                raise DataError(f"{len(absent)} listed id(s) have no image in {img_dir}, e.g. {', '.join(absent[:3])}: "
                                "the folder is incomplete -- regenerate it or remove those ids")  # fmt: skip
            stems = sorted(set(ids))
        labels: dict[str, object]
        if foreign is not None:
            labels = _foreign_dict(foreign)
        elif task == "segmentation":
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
        raw_max: list[int] = []  # per mask, before resizing: a thin class that resizing erases still counts
        raw_counts: list[np.ndarray] = []  # per mask, pixels per value as stored (for the stray-value check)
        raw_top: list[int] = []  # the same without ignore_index pixels
        mask_paths = [labels[s] if foreign is None else images[s] for s in stems] if task == "segmentation" else []
        for s in tqdm(stems, desc="load labeled folder", disable=not progress):
            im = _rgb(_open(images[s]))
            isz = (im.height, im.width)
            if task == "segmentation":
                m = _mask_image(labels[s], colors, self.ignore_index)
                arr = np.asarray(m, dtype=np.uint8)
                counts = np.bincount(arr.ravel(), minlength=256)
                raw_max.append(int(np.flatnonzero(counts).max()))
                if self.ignore_index is not None:
                    raw_top.append(_top(arr, self.ignore_index))
                    counts[self.ignore_index] = 0  # void pixels are no class: not a stray value either
                raw_counts.append(counts)
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
                        if foreign is not None:  # COCO/YOLO edge points (continuous coordinates) land on the border
                            kp[k] = np.clip(kp[k], 0, [w - 1, h - 1])
                            continue
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
            self._finish_masks(raw_masks, mask_paths, n_classes, raw_max, raw_top)
            if n_classes is None and self.mask_mode_resolved == "index":
                check_mask_values(raw_counts, mask_paths, self.mask_check)
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

    def _finish_masks(
        self,
        raw: list[np.ndarray],
        paths: list[Path],
        n_classes: int | None,
        raw_max: list[int] | None = None,
        raw_top: list[int] | None = None,
    ) -> None:
        mode = self.mask_mode
        if mode == "auto":
            mode = "index"
            if any(p.suffix.lower() in (".jpg", ".jpeg") for p in paths):
                mode = "binary"
            elif raw and not _voc_like(raw, self.ignore_index):
                mx = max(int(m.max()) for m in raw)
                mid = sum(int(((m > 32) & (m < 223)).sum()) for m in raw)
                tot = sum(m.size for m in raw)
                if mx >= 223 and mid <= 0.05 * tot:
                    mode = "binary"
        self.mask_mode_resolved = mode
        if mode == "binary":
            masks = [(m >= 128).astype(np.int64) for m in raw]
            tops = [1 if top >= 128 else 0 for top in raw_max] if raw_max else [int(m.max()) for m in masks]
            inferred = 2
        else:
            masks = [m.astype(np.int64) for m in raw]
            ign = self.ignore_index
            tops = list(raw_top if ign is not None else raw_max or [])
            tops = tops or [_top(m, ign) if ign is not None else int(m.max()) for m in masks]
            inferred = max(max(tops) + 1 if tops else 1, len(self.class_names or ()))
        if n_classes is not None:
            for p, top in zip(paths, tops):
                if top >= n_classes:
                    raise DataError(
                        f"{p.name}: class index {top} >= n_classes={n_classes} -- raise "
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
    @property
    def names(self) -> dict[str, object]:
        """Class names (one per class, background first), keypoint names and skeleton: what exports and reports
        show; unnamed classes are ``class_<i>``, unnamed keypoints ``kp<i>``."""
        from autolabel.data.formats.meta import LabelNames

        ln = LabelNames(classes=list(self.class_names or []), keypoints=list(self.keypoint_names or []))
        out: dict[str, object] = {}
        if self.task == "segmentation":
            out["classes"] = ln.class_names(int(self.n_classes))
        if self.task == "keypoints":
            out["keypoint_names"] = ln.keypoint_names(self.n_keypoints)
            out["skeleton"] = [list(p) for p in self.skeleton]
        return out

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


def _foreign_labels(root: Path, task: str, ignore_index: int | None):
    """A COCO / VOC / YOLO dataset at ``root`` read as a LabelSet, or None for this platform's own folders."""
    from autolabel.data.formats.detect import FOREIGN, detect_format, read_foreign

    want = None if task == "auto" else task
    fmt = detect_format(root, want)
    if fmt not in FOREIGN:
        return None
    ls = read_foreign(root, fmt, want, ignore_index)
    if want is not None and ls.task != want:
        raise DataError(f"{root} holds {ls.task} labels but task={want} was asked: set the task to {ls.task}")
    return ls


def _foreign_dict(ls) -> dict[str, object]:
    if ls.task == "segmentation":
        return {s: ls.mask(i) for i, s in enumerate(ls.ids)}
    return {s: np.where(ls.visible[i][:, None], ls.keypoints[i], -1.0).astype(np.float32) for i, s in enumerate(ls.ids)}


def _read_names(root: Path):
    from autolabel.data.formats.meta import read_names

    return read_names(root)


def _mask_image(label: object, colors: list | None, ignore_index: int | None) -> Image.Image:
    """A mask as an 8-bit class-index image: a file (grey / palette as stored; RGB through ``labelmap.txt``
    colours) or an index array from an importer."""
    if isinstance(label, np.ndarray):
        arr = label
    else:
        m = _open(label)  # type: ignore[arg-type]
        if m.mode in ("L", "P"):
            return m
        if m.mode in ("RGB", "RGBA") and colors:
            from autolabel.data.formats.core import colors_to_index

            arr = colors_to_index(np.asarray(m.convert("RGB")), colors, ignore_index, where=str(label))
        else:
            return single_channel_mask(m, Path(str(label)))
    if arr.size and int(arr.max()) > 255:
        raise DataError(f"mask with class {int(arr.max())} > 255: masks are 8-bit here -- merge classes")
    return Image.fromarray(arr.astype(np.uint8), mode="L")


def _top(mask: np.ndarray, ignore_index: int) -> int:
    valid = mask[mask != ignore_index]
    return int(valid.max()) if valid.size else 0


def _voc_like(raw: list[np.ndarray], ignore_index: int | None) -> bool:
    """Index masks with void borders (VOC): ``ignore_index`` present and every other value small (< 128) with some
    non-zero class -- not a 0/255 binary mask, whose only values are 0 and 255 (or JPEG ringing near them)."""
    if ignore_index is None:
        return False
    vals = np.unique(np.concatenate([np.unique(m) for m in raw]))
    rest = vals[vals != ignore_index]
    return bool((vals == ignore_index).any() and rest.size and rest.max() < 128 and (rest > 0).any())


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


# ---------------------------------------------------------------- subsets and synthetic datasets
class FolderSubset(Dataset):
    """The items ``indices`` of a labeled dataset, keeping its ``task``, ``n_classes``, ``n_keypoints`` and ``ids``."""

    def __init__(self, base: Dataset, indices: Sequence[int]) -> None:
        self.base, self.indices = base, [int(i) for i in indices]
        self.task = getattr(base, "task", None)
        self.n_classes = getattr(base, "n_classes", None)
        self.class_names = getattr(base, "class_names", None)
        self.keypoint_names, self.skeleton = getattr(base, "keypoint_names", None), getattr(base, "skeleton", [])
        self.ignore_index = getattr(base, "ignore_index", None)
        base_ids = getattr(base, "ids", None)
        self.ids = [base_ids[i] for i in self.indices] if base_ids is not None else None

    @property
    def n_keypoints(self) -> int:
        return int(getattr(self.base, "n_keypoints", 0))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, object]:
        return self.base[self.indices[i]]


def holdout_split(n: int, fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """A fixed random split of ``n`` items: ``(held_out, rest)`` with ``round(n * fraction)`` held out (at least 1 when
    ``fraction > 0``, and at least 1 item left); the same for every run with the same ``n`` and ``seed``."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"val_fraction={fraction} must be in [0, 1)")
    if fraction == 0.0:
        return [], list(range(n))
    if n < 2:
        raise DataError(f"cannot hold out a validation slice of {n} image(s): add test images or set val_fraction=0")
    k = min(max(1, int(round(n * fraction))), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    return sorted(perm[:k]), sorted(perm[k:])


SYNTHETIC_EXT = {"segmentation": ".png", "keypoints": ".json", "depth": ".npy"}


def synthetic_task(root: str | os.PathLike) -> str | None:
    """The task a synthetic dataset (``autolabel synthesize`` output) was written for, or None when ``root`` is none."""
    import json

    root = Path(root)
    plan = root / "plan.json"
    if plan.is_file():
        try:
            task = json.loads(plan.read_text()).get("task")
        except (OSError, ValueError, AttributeError):
            task = None
        if task in SYNTHETIC_EXT:
            return task
    labels = root / "labels"
    if labels.is_dir():
        for t, ext in SYNTHETIC_EXT.items():
            if next(labels.glob(f"*{ext}"), None) is not None:
                return t
    return None


def synthetic_ids(root: str | os.PathLike) -> list[str]:
    """The kept sample ids of a synthetic dataset, read from its ``manifest.jsonl`` (written by the final merge)."""
    import json

    path = Path(root) / "manifest.jsonl"
    if not path.is_file():
        raise DataError(f"{root} has no manifest.jsonl: the synthesis run is unfinished or unmerged, so its "
                        "candidates are unfiltered -- rerun `autolabel synthesize` with the same out= (it resumes and "
                        "merges)")  # fmt: skip
    ids = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            ids.append(str(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path} line {n} is not a manifest record ({e.__class__.__name__}): rerun the merge "
                            "(`autolabel synthesize` with the same out=)") from e  # fmt: skip
    if not ids:
        raise DataError(f"{path} lists no samples: rerun `autolabel synthesize` with n >= 1")
    return ids


class SyntheticLabels(Dataset):
    """A keypoint or depth dataset written by ``autolabel synthesize`` (``images/`` + ``labels/<id>.json|.npy``,
    the samples listed in ``manifest.jsonl``), with :class:`LabeledFolder`'s item format: ``image`` [C,H,W] in [-1,1]
    and ``keypoints`` [K,2] (x, y pixels at ``size``) + ``visible`` [K] (confidence >= ``min_confidence``), or
    ``depth`` [1,H,W]; plus ``id``. Keypoint files give pixels of a ``resolution``-sized image (default: the image's
    size) and are rescaled to ``size`` like :class:`LabeledFolder` rescales ``keypoints.csv``."""

    def __init__(self, root: str | os.PathLike, task: str, size: int, limit: int | None = None,
                 min_confidence: float = 0.0) -> None:  # fmt: skip
        if task not in ("keypoints", "depth"):
            raise ConfigError(f"SyntheticLabels task={task!r}: use keypoints or depth (segmentation: open_synthetic)")
        self.root, self.task, self.n_classes = Path(root), task, None
        ext = SYNTHETIC_EXT[task]
        ids = synthetic_ids(self.root)
        images = {p.stem: p for p in sorted((self.root / "images").glob("*")) if p.suffix.lower() in _IMG_EXT}
        missing = [s for s in ids if s not in images or not (self.root / "labels" / f"{s}{ext}").is_file()]
        if missing:
            raise DataError(f"{len(missing)} sample(s) of manifest.jsonl lack images/<id>.png or labels/<id>{ext}, "
                            f"e.g. {', '.join(missing[:3])}: rerun `autolabel synthesize` with the same out= to "
                            "finish it")  # fmt: skip
        stems = sorted(ids)[: limit if limit else None]
        self.ids = stems
        self._images: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._visible: list[torch.Tensor] = []
        for s in stems:
            label_path = self.root / "labels" / f"{s}{ext}"
            im = _rgb(_open(images[s]))
            w0, h0 = im.width, im.height
            if (h0, w0) != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()
            self._images.append(torch.from_numpy(arr).float().div(127.5).sub(1.0))
            if task == "keypoints":
                kp, vis = self._read_json(label_path, (h0, w0), min_confidence)
                sx, sy = (size - 1) / max(kp["w"] - 1, 1), (size - 1) / max(kp["h"] - 1, 1)
                xy = kp["xy"] * np.array([sx, sy], dtype=np.float32)
                xy[~vis] = -1.0
                if self._labels and xy.shape[0] != self._labels[0].shape[0]:
                    raise DataError(f"{label_path}: {xy.shape[0]} keypoints but {stems[0]}{ext} has "
                                    f"{self._labels[0].shape[0]}: every label file must list the same "
                                    "keypoints")  # fmt: skip
                self._labels.append(torch.from_numpy(xy.astype(np.float32)))
                self._visible.append(torch.from_numpy(vis))
            else:
                try:
                    d = np.squeeze(np.load(label_path)).astype(np.float32)
                except (OSError, ValueError) as e:
                    raise DataError(f"cannot read {label_path}: {e.__class__.__name__}; rerun synthesis") from e
                if d.ndim != 2 or not np.isfinite(d).all():
                    raise DataError(f"{label_path}: need one finite [H, W] depth map, got shape {d.shape}")
                dt = torch.nn.functional.interpolate(torch.from_numpy(d)[None, None], size=(size, size), mode="nearest")
                self._labels.append(dt[0])

    @staticmethod
    def _read_json(path: Path, image_hw: tuple[int, int], min_confidence: float) -> tuple[dict, np.ndarray]:
        import json

        try:
            obj = json.loads(path.read_text())
            pts = obj["keypoints"]
            xy = np.array([[float(p["x"]), float(p["y"])] for p in pts], dtype=np.float32).reshape(-1, 2)
            conf = np.array([float(p.get("confidence", 1.0)) for p in pts], dtype=np.float32)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"cannot read keypoints from {path} ({e.__class__.__name__}): expected "
                            '{"resolution": R, "keypoints": [{"x": .., "y": .., "confidence": ..}, ...]}') from e  # fmt: skip
        if xy.shape[0] == 0 or not np.isfinite(xy).all():
            raise DataError(f"{path}: no keypoints or NaN coordinates -- rerun synthesis or drop that sample")
        res = obj.get("resolution")
        if res is None:
            h, w = image_hw
        elif isinstance(res, (list, tuple)):
            h, w = int(res[0]), int(res[1])
        else:
            h = w = int(res)
        return {"xy": xy, "h": h, "w": w}, conf >= min_confidence

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, object]:
        item: dict[str, object] = {"image": self._images[i], "id": self.ids[i]}
        if self.task == "keypoints":
            item["keypoints"], item["visible"] = self._labels[i], self._visible[i]
        else:
            item["depth"] = self._labels[i]
        return item

    @property
    def n_keypoints(self) -> int:
        return int(self._labels[0].shape[0]) if self.task == "keypoints" and self._labels else 0


def open_synthetic(root: str | os.PathLike, task: str, size: int, n_classes: int | None = None,
                   limit: int | None = None, min_confidence: float = 0.0) -> Dataset:  # fmt: skip
    """A synthetic dataset's kept samples (``manifest.jsonl``): a :class:`LabeledFolder` over ``images/`` +
    ``labels/`` (segmentation) or a :class:`SyntheticLabels` (keypoints, depth)."""
    root = Path(root)
    if task == "segmentation":
        return LabeledFolder.from_dirs(root / "images", root / "labels", size=size, n_classes=n_classes, limit=limit,
                                       mask_mode="index", ids=synthetic_ids(root), mask_check="off")  # fmt: skip
    return SyntheticLabels(root, task, size, limit=limit, min_confidence=min_confidence)
