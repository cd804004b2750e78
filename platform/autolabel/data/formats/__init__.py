"""Label formats in and out: COCO JSON, PASCAL VOC / CVAT "Segmentation mask" folders, YOLO folders, this
platform's labeled folders and synthetic datasets -- all through one in-memory :class:`LabelSet`.

What a path holds decides how it is read (:func:`detect_format`):

==============  ==========================================================================================
``coco``        a ``.json`` file, or a folder with ``annotations.json`` / ``annotations/*.json``
``voc``         a folder with ``SegmentationClass/`` (+ ``JPEGImages/`` or ``images/``, ``labelmap.txt``)
``yolo``        a folder with ``data.yaml`` + ``labels/*.txt`` + ``images/``
``synthetic``   ``autolabel synthesize`` output (``plan.json`` + ``manifest.jsonl`` + ``labels/``)
``folder``      ``images/`` + ``masks/`` | ``keypoints.csv`` | ``depth/`` (optionally ``labels.json`` /
                ``labelmap.txt`` with names)
==============  ==========================================================================================
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from autolabel.data.formats.core import LabelSet, read_mask
from autolabel.data.formats.detect import FOREIGN, detect_format, read_foreign
from autolabel.data.formats.meta import LabelNames, read_names, write_names
from autolabel.errors import ConfigError, DataError

__all__ = ["EXPORTS", "FOREIGN", "LabelSet", "LabelNames", "detect_format", "export_dataset", "read_labels", "read_mask",
           "read_names", "write_labels", "write_names"]  # fmt: skip

EXPORTS = ("coco", "yolo", "voc", "folder")


def read_synthetic(root: str | os.PathLike, min_confidence: float = 0.0) -> LabelSet:
    """The kept samples of an ``autolabel synthesize`` output, with their uncertainty scores and names."""
    from autolabel.data.labeled import synthetic_ids

    root = Path(root)
    plan = json.loads((root / "plan.json").read_text())
    task = plan.get("task")
    if task not in ("segmentation", "keypoints"):
        raise DataError(f"{root} is a synthetic {task} dataset: COCO/YOLO/VOC carry masks or keypoints, not {task}")
    ids = synthetic_ids(root)
    scores = {}
    for line in (root / "manifest.jsonl").read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            scores[str(rec["id"])] = float(rec.get("uncertainty", float("nan")))
    names = LabelNames(classes=list(plan.get("classes") or []), keypoints=list(plan.get("keypoint_names") or []),
                       skeleton=[tuple(p) for p in plan.get("skeleton") or []])  # fmt: skip
    images = []
    for s in ids:
        img = root / "images" / f"{s}.png"
        if not img.is_file():
            raise DataError(f"{img} missing: rerun `autolabel synthesize` with the same out= to finish the dataset")
        images.append(img)
    common = dict(names=names, scores=[scores[s] for s in ids])
    if task == "segmentation":
        n = plan.get("n_classes") or (len(names.classes) or None)
        return LabelSet("segmentation", ids, images, masks=[root / "labels" / f"{s}.png" for s in ids],
                        ignore_index=None, n_classes=n, **common)  # fmt: skip
    kps, vis = [], []
    for s in ids:
        obj = json.loads((root / "labels" / f"{s}.json").read_text())
        pts = obj["keypoints"]
        kps.append(np.array([[p["x"], p["y"]] for p in pts], np.float32))
        vis.append(np.array([float(p.get("confidence", 1.0)) >= min_confidence for p in pts]))
    return LabelSet("keypoints", ids, images, keypoints=np.stack(kps), visible=np.stack(vis), ignore_index=None,
                    **common)  # fmt: skip


def read_folder(root: str | os.PathLike, task: str | None = None, ignore_index: int | None = 255) -> LabelSet:
    """A platform labeled folder (``images/`` + ``masks/`` | ``keypoints.csv``) at its stored resolution."""
    from autolabel.data.labeled import LabeledFolder

    ds = LabeledFolder(root, task=task or "auto", ignore_index=ignore_index)
    if ds.task == "depth":
        raise DataError(f"{root} holds depth maps: COCO/YOLO/VOC carry masks or keypoints, not depth")
    names = LabelNames(classes=list(ds.class_names or []), keypoints=list(ds.keypoint_names or []),
                       skeleton=list(ds.skeleton or []))  # fmt: skip
    if ds.task == "segmentation":
        masks = [ds[i]["mask"].numpy().astype(np.int32) for i in range(len(ds))]
        return LabelSet("segmentation", list(ds.ids), list(ds.image_paths), masks=masks, names=names,
                        ignore_index=ds.ignore_index, n_classes=ds.n_classes)  # fmt: skip
    kp = np.stack([ds[i]["keypoints"].numpy() for i in range(len(ds))])
    vis = np.stack([ds[i]["visible"].numpy() for i in range(len(ds))])
    return LabelSet("keypoints", list(ds.ids), list(ds.image_paths), keypoints=kp, visible=vis, names=names,
                    ignore_index=None)  # fmt: skip


def read_labels(path: str | os.PathLike, task: str | None = None, ignore_index: int | None = 255,
                fmt: str | None = None) -> LabelSet:  # fmt: skip
    """Read any supported layout (``fmt`` None = :func:`detect_format`) as a :class:`LabelSet`."""
    task = None if task in (None, "auto") else task
    fmt = fmt or detect_format(path, task)
    p = Path(path)
    if fmt in FOREIGN:
        ls = read_foreign(p, fmt, task, ignore_index)
    elif fmt == "synthetic":
        ls = read_synthetic(p)
    elif fmt == "folder":
        ls = read_folder(p, task, ignore_index)
    else:
        raise DataError(f"{path}: no labels found -- give a COCO .json, a VOC/CVAT folder (SegmentationClass/), a YOLO "
                        "folder (data.yaml + labels/), images/ + masks/ | keypoints.csv, or `autolabel synthesize` "
                        "output")  # fmt: skip
    if task is not None and ls.task != task:
        raise DataError(f"{path} holds {ls.task} labels but task={task} was asked: set the task to {ls.task}")
    return ls


def write_labels(ls: LabelSet, fmt: str, out: str | os.PathLike) -> Path:
    """Write ``ls`` as ``fmt`` (coco | yolo | voc | folder) under ``out``; returns the main file or folder."""
    if fmt == "coco":
        from autolabel.data.formats.coco import write_coco

        return write_coco(ls, out)
    if fmt == "yolo":
        from autolabel.data.formats.yolo import write_yolo

        return write_yolo(ls, out)
    if fmt == "voc":
        from autolabel.data.formats.voc import write_voc

        return write_voc(ls, out)
    if fmt == "folder":
        return write_folder(ls, out)
    raise ConfigError(f"format={fmt!r}: use coco, yolo, voc (or folder)")


def write_folder(ls: LabelSet, out: str | os.PathLike) -> Path:
    """This platform's labeled folder: ``images/`` + ``masks/`` (class-index PNGs) | ``keypoints.csv``, plus
    ``labels.json`` with the names (invisible keypoints are ``-1,-1``)."""
    import io

    from PIL import Image

    from autolabel.data.formats.coco import _copy_image
    from autolabel.engine.io import atomic_write_bytes, atomic_write_text

    out = Path(out)
    for i, stem in enumerate(ls.ids):
        _copy_image(ls.images[i], out / "images", stem)
    if ls.task == "segmentation":
        for i, stem in enumerate(ls.ids):
            m = ls.mask(i)
            if m.max(initial=0) > 255:
                raise DataError(f"{stem}: class {int(m.max())} does not fit an 8-bit mask PNG -- use format=coco")
            buf = io.BytesIO()
            Image.fromarray(m.astype(np.uint8), mode="L").save(buf, format="PNG")
            atomic_write_bytes(out / "masks" / f"{stem}.png", buf.getvalue())
    else:
        k = ls.n_keypoints
        lines = ["image," + ",".join(f"x{j},y{j}" for j in range(k))]
        for i, stem in enumerate(ls.ids):
            xy = np.where(ls.visible[i][:, None], ls.keypoints[i], -1.0)
            lines.append(f"{stem}{ls.images[i].suffix.lower()}," +
                         ",".join(f"{v:.3f}" for v in xy.reshape(-1)))  # fmt: skip
        atomic_write_text(out / "keypoints.csv", "\n".join(lines) + "\n")
    names = LabelNames(classes=ls.class_names(), keypoints=ls.keypoint_names() if ls.task == "keypoints" else [],
                       skeleton=list(ls.names.skeleton), ignore_index=ls.ignore_index)  # fmt: skip
    write_names(out, names)
    return out


def export_dataset(src: str | os.PathLike, fmt: str, out: str | os.PathLike, task: str | None = None,
                   ignore_index: int | None = 255) -> dict:  # fmt: skip
    """Read ``src`` (any layout :func:`read_labels` takes) and write it as ``fmt``; returns a summary."""
    if fmt not in EXPORTS:
        raise ConfigError(f"format={fmt!r}: use coco, yolo or voc (clusters.csv: format=folders)")
    if not Path(src).exists():
        raise DataError(f"src={src}: not found -- give a synthetic dataset, a labeled folder or a COCO file")
    if Path(out).resolve() == Path(src).resolve():
        raise ConfigError(f"out={out} is the source folder: give a new folder")
    ls = read_labels(src, task, ignore_index)
    path = write_labels(ls, fmt, out)
    return {"n": len(ls), "task": ls.task, "format": fmt, "path": str(path), "classes": ls.class_names(),
            "keypoints": ls.keypoint_names() if ls.task == "keypoints" else []}  # fmt: skip


class ImportedSelection:
    """The images of an imported dataset (COCO / VOC / YOLO) that a run uses: the first ``limit`` by name, without
    ``exclude``; :meth:`materialize` writes them as this platform's labeled folder (with ``labels.json``). Duck-types
    the pipeline layer's selection of a native folder (``root``, ``images``, ``stems``, ``total``, ``needs_copy``)."""

    needs_copy = True

    def __init__(self, key: str, path: str | os.PathLike, task: str, limit: int = -1, exclude=(),
                 ignore_index: int | None = 255) -> None:  # fmt: skip
        self.key, self.root, self.task = key, Path(path).expanduser().resolve(), task
        try:
            self.labels = read_labels(self.root, task, ignore_index)
        except DataError as e:
            raise DataError(f"data.{key}={path}: {e}") from e
        order = sorted(range(len(self.labels)), key=lambda i: self.labels.ids[i])
        keep = [i for i in order if self.labels.ids[i] not in set(exclude)]
        self.total = len(keep)
        self._keep = keep[:limit] if limit > 0 else keep
        if not self._keep:
            raise DataError(f"data.{key}={path}: no images left once the labeled ones are left out; give a separate "
                            f"data.{key}")  # fmt: skip
        self.stems = [self.labels.ids[i] for i in self._keep]
        self.images = self.labels.images[self._keep[0]].parent

    def subset(self) -> LabelSet:
        ls, k = self.labels, self._keep
        return LabelSet(ls.task, [ls.ids[i] for i in k], [ls.images[i] for i in k],
                        masks=[ls.masks[i] for i in k] if ls.masks is not None else None,
                        keypoints=ls.keypoints[k] if ls.keypoints is not None else None,
                        visible=ls.visible[k] if ls.visible is not None else None, names=ls.names,
                        ignore_index=ls.ignore_index,
                        n_classes=ls.class_count() if ls.task == "segmentation" else None)  # fmt: skip

    def materialize(self, dst: Path) -> Path:
        return write_folder(self.subset(), dst)
