"""PASCAL VOC / CVAT "Segmentation mask" folders in and out::

    root/JPEGImages/<stem>.jpg|png           (or images/)
    root/SegmentationClass/<stem>.png        palette PNG of class indices (VOC), or RGB colours listed in labelmap.txt
    root/labelmap.txt                        name:r,g,b:: per class, in index order (CVAT / Datumaro); optional for
                                             index PNGs (then classes are named class_<i>)
    root/ImageSets/Segmentation/default.txt  optional list of stems (written on export, not needed on import)

Pixels of ``ignore_index`` (255 by default; the VOC "void" object borders, colour 224,224,192) stay ``ignore_index``
in the masks: losses and metrics skip them, they are never a class.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
from PIL import Image

from autolabel.data.formats.coco import _copy_image
from autolabel.data.formats.core import IMAGE_EXT, LabelSet, read_mask
from autolabel.data.formats.meta import LABELMAP, VOC_VOID, read_names, write_labelmap, write_names
from autolabel.engine.io import atomic_write_bytes, atomic_write_text
from autolabel.errors import DataError

MASK_DIR = "SegmentationClass"


def is_voc(root: Path) -> bool:
    return (root / MASK_DIR).is_dir()


def read_voc(root: str | os.PathLike, ignore_index: int | None = 255) -> LabelSet:
    root = Path(root)
    img_dir = next((root / d for d in ("JPEGImages", "images") if (root / d).is_dir()), None)
    if img_dir is None:
        raise DataError(f"{root} has {MASK_DIR}/ but no JPEGImages/ or images/ -- export the images with the masks "
                        "(CVAT: 'Save images')")  # fmt: skip
    images = {p.stem: p for p in sorted(img_dir.iterdir()) if p.suffix.lower() in IMAGE_EXT}
    masks = {p.stem: p for p in sorted((root / MASK_DIR).iterdir()) if p.suffix.lower() == ".png"}
    if not masks:
        raise DataError(f"{root / MASK_DIR} holds no .png masks -- export 'Segmentation mask' with masks")
    missing = [s for s in masks if s not in images]
    if missing:
        raise DataError(f"{len(missing)} mask(s) in {root / MASK_DIR} have no image in {img_dir}, e.g. "
                        f"{', '.join(missing[:3])}: add the images (same stem)")  # fmt: skip
    names = read_names(root)
    names.ignore_index = ignore_index
    colors = names.colors if (root / LABELMAP).is_file() else None
    ids = sorted(masks)
    arrays = [read_mask(masks[s], colors, ignore_index) for s in ids]
    return LabelSet("segmentation", ids, [images[s] for s in ids], masks=arrays, names=names,
                    ignore_index=ignore_index, n_classes=len(names.classes) or None)  # fmt: skip


def _png(arr: np.ndarray, palette: list[tuple[int, int, int]]) -> bytes:
    import io

    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    im.putpalette([v for c in palette for v in c])
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_voc(ls: LabelSet, out: str | os.PathLike) -> Path:
    """Palette index PNGs (colours = the label map's, void = 224,224,192) + ``labelmap.txt`` + ``labels.json``."""
    if ls.task != "segmentation":
        raise DataError("VOC folders carry segmentation masks: export keypoints with format=coco or format=yolo")
    out = Path(out)
    n = ls.class_count()
    if n > 255:
        raise DataError(f"{n} classes do not fit a VOC palette PNG (<= 255 + void): use format=coco")
    names, colors = ls.class_names(), ls.names.class_colors(n)
    palette = colors + [(0, 0, 0)] * (256 - n)
    if ls.ignore_index is not None and 0 <= ls.ignore_index < 256:
        palette[ls.ignore_index] = VOC_VOID
    for i, stem in enumerate(ls.ids):
        _copy_image(ls.images[i], out / "JPEGImages", stem)
        m = ls.mask(i)
        atomic_write_bytes(out / MASK_DIR / f"{stem}.png", _png(m, palette))
    write_labelmap(out / LABELMAP, names, colors)
    write_names(out, dataclasses.replace(ls.names, classes=names, ignore_index=ls.ignore_index))
    atomic_write_text(out / "ImageSets" / "Segmentation" / "default.txt", "\n".join(ls.ids) + "\n")
    return out
