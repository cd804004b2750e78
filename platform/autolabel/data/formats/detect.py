"""Which layout a path holds (:func:`detect_format`) and reading the foreign ones -- COCO, VOC / CVAT, YOLO --
(:func:`read_foreign`). Kept apart from the package's ``__init__`` so :mod:`autolabel.data.labeled` can dispatch to the
importers without importing the module that reads its own folders through it."""

from __future__ import annotations

import os
from pathlib import Path

from autolabel.data.formats.core import LabelSet
from autolabel.errors import DataError

FOREIGN = ("coco", "voc", "yolo")  # formats a LabeledFolder reads through this package (the others are its own)


def coco_json(root: Path, task: str | None) -> Path | None:
    if (root / "annotations.json").is_file():
        return root / "annotations.json"
    ann = root / "annotations"
    files = sorted(ann.glob("*.json")) if ann.is_dir() else []
    if len(files) > 1 and task in ("keypoints", "segmentation"):
        pref = "person_keypoints" if task == "keypoints" else "instances"
        files = [f for f in files if f.name.startswith(pref)] or files
    if len(files) > 1:
        raise DataError(f"{ann} holds {len(files)} COCO files ({', '.join(f.name for f in files[:4])}): point "
                        "data.labeled / src= at one of them")  # fmt: skip
    return files[0] if files else None


def detect_format(path: str | os.PathLike, task: str | None = None) -> str | None:
    """``coco`` | ``voc`` | ``yolo`` | ``synthetic`` | ``folder`` (see the module docstring), or None."""
    from autolabel.data.formats.voc import is_voc
    from autolabel.data.formats.yolo import is_yolo

    p = Path(path)
    if p.is_file():
        return "coco" if p.suffix.lower() == ".json" else None
    if not p.is_dir():
        return None
    if (p / "plan.json").is_file() and (p / "labels").is_dir():
        return "synthetic"
    if is_voc(p):
        return "voc"
    if is_yolo(p):
        return "yolo"
    if any((p / n).exists() for n in ("masks", "keypoints.csv", "depth")):
        return "folder"
    if coco_json(p, task) is not None:
        return "coco"
    return None


def read_foreign(path: Path, fmt: str, task: str | None = None, ignore_index: int | None = 255) -> LabelSet:
    """A COCO / VOC / YOLO dataset (``fmt`` from :func:`detect_format`) as a :class:`LabelSet`; ``task`` picks the
    COCO annotation file when a folder holds several (the caller checks that the labels are of that task)."""
    if fmt == "coco":
        from autolabel.data.formats.coco import read_coco

        return read_coco(path if path.is_file() else coco_json(path, task), task, ignore_index=ignore_index)
    if fmt == "voc":
        from autolabel.data.formats.voc import read_voc

        return read_voc(path, ignore_index)
    if fmt == "yolo":
        from autolabel.data.formats.yolo import read_yolo

        return read_yolo(path)
    raise DataError(f"{path}: {fmt!r} is not a foreign format ({', '.join(FOREIGN)})")
