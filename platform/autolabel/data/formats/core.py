"""The in-memory form every importer produces and every exporter consumes: :class:`LabelSet`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from autolabel.data.formats.meta import VOC_VOID, LabelNames
from autolabel.errors import DataError

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def open_image(path: Path) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()
        return im
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read {path}: {e.__class__.__name__}; remove or re-save the file") from e


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, read from its header."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read {path}: {e.__class__.__name__}; remove or re-save the file") from e


def colors_to_index(rgb: np.ndarray, colors: list[tuple[int, int, int]], ignore_index: int | None,
                    where: str = "mask") -> np.ndarray:  # fmt: skip
    """A colour mask ``[H, W, 3]`` as class indices: colour ``colors[i]`` -> ``i``; the VOC void colour (224,224,192)
    -> ``ignore_index``; any other colour is an error naming it."""
    rgb = np.asarray(rgb)[..., :3].astype(np.int64)
    key = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    lut = {(c[0] << 16) | (c[1] << 8) | c[2]: i for i, c in reversed(list(enumerate(colors)))}
    if ignore_index is not None:
        lut.setdefault((VOC_VOID[0] << 16) | (VOC_VOID[1] << 8) | VOC_VOID[2], int(ignore_index))
    uniq, inv = np.unique(key.reshape(-1), return_inverse=True)
    unknown = [int(u) for u in uniq if int(u) not in lut]
    if unknown:
        u = unknown[0]
        rgb_s = f"{u >> 16},{(u >> 8) & 255},{u & 255}"
        raise DataError(f"{where}: colour ({rgb_s}) is not in labelmap.txt -- add a line name:{rgb_s}:: for it "
                        f"({len(unknown)} unknown colour(s))")  # fmt: skip
    out = np.array([lut[int(u)] for u in uniq], dtype=np.int32)[inv]
    return out.reshape(key.shape)


def read_mask(
    path: Path, colors: list[tuple[int, int, int]] | None = None, ignore_index: int | None = 255
) -> np.ndarray:
    """A mask file as int32 class indices: palette (P) PNGs give their indices (VOC), grey PNGs their values, colour
    PNGs are mapped through ``colors`` (from ``labelmap.txt``; needed)."""
    im = open_image(path)
    if im.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
        return np.asarray(im).astype(np.int32)
    if im.mode in ("LA", "1"):
        return np.asarray(im.convert("L")).astype(np.int32)
    if not colors:
        raise DataError(f"{path} is an RGB colour mask: put a labelmap.txt (name:r,g,b:: per class, background "
                        "first) next to the masks' folder, or save class-index PNGs")  # fmt: skip
    return colors_to_index(np.asarray(im.convert("RGB")), colors, ignore_index, where=str(path))


@dataclass
class LabelSet:
    """Labeled images in memory: ``task`` segmentation | keypoints, one entry per image in ``ids`` order.

    ``masks[i]``: an int array ``[H, W]`` of class indices (``ignore_index`` = void, skipped by losses and metrics) or
    the path of a class-index PNG, read on demand by :meth:`mask`. ``keypoints [N, K, 2]``: (x, y) in pixels of the
    image (pixel centres at integers); ``visible [N, K]``: False = not labeled (its coordinates are meaningless).
    ``scores``: an optional per-image uncertainty (synthetic datasets). ``names``: class / keypoint names, skeleton.
    """

    task: str
    ids: list[str]
    images: list[Path]
    masks: list[np.ndarray | Path] | None = None
    keypoints: np.ndarray | None = None
    visible: np.ndarray | None = None
    names: LabelNames = field(default_factory=LabelNames)
    ignore_index: int | None = 255
    scores: list[float] | None = None
    n_classes: int | None = None  # segmentation; default: largest class (not ignore) + 1 over all masks

    def __post_init__(self) -> None:
        if self.task not in ("segmentation", "keypoints"):
            raise DataError(f"task={self.task}: label formats carry segmentation masks or keypoints")
        if len(self.ids) != len(self.images):
            raise DataError(f"{len(self.ids)} ids for {len(self.images)} images")
        if self.task == "segmentation" and (self.masks is None or len(self.masks) != len(self.ids)):
            raise DataError("segmentation LabelSet needs one mask per image")
        if self.task == "keypoints":
            if self.keypoints is None or self.keypoints.ndim != 3 or self.keypoints.shape[0] != len(self.ids):
                raise DataError("keypoint LabelSet needs keypoints [N, K, 2]")
            if self.visible is None:
                self.visible = ~((self.keypoints[..., 0] == -1) & (self.keypoints[..., 1] == -1))

    def __len__(self) -> int:
        return len(self.ids)

    def mask(self, i: int) -> np.ndarray:
        m = self.masks[i]  # type: ignore[index]
        if isinstance(m, (str, os.PathLike)):
            return read_mask(Path(m), None, self.ignore_index)
        return np.asarray(m)

    @property
    def n_keypoints(self) -> int:
        return int(self.keypoints.shape[1]) if self.keypoints is not None else 0

    def class_count(self) -> int:
        """Classes including background: given, named, or the largest class present (void excluded) + 1."""
        if self.n_classes:
            return int(self.n_classes)
        top = 0
        if self.task == "segmentation":
            for i in range(len(self)):
                m = self.mask(i)
                valid = m[m != self.ignore_index] if self.ignore_index is not None else m
                top = max(top, int(valid.max()) if valid.size else 0)
        self.n_classes = max(top + 1, len(self.names.classes), 2 if self.task == "segmentation" else 1)
        return self.n_classes

    def class_names(self) -> list[str]:
        if self.task == "keypoints":
            return self.names.classes[:1] or ["object"]
        return self.names.class_names(self.class_count())

    def keypoint_names(self) -> list[str]:
        return self.names.keypoint_names(self.n_keypoints)

    def image_hw(self, i: int) -> tuple[int, int]:
        if self.task == "segmentation":
            m = self.masks[i]  # type: ignore[index]
            if not isinstance(m, (str, os.PathLike)):
                return tuple(np.asarray(m).shape[:2])  # type: ignore[return-value]
        return image_size(self.images[i])
