"""COCO JSON in and out, through pycocotools (the ``formats`` extra).

Import: ``instances``-style files (polygons, RLE or uncompressed RLE) become one class-index mask per image
(background 0, category ``c`` -> its rank among the categories sorted by id, + 1; overlapping objects are painted
largest first, so a small object on a large one stays visible); ``person_keypoints``-style files become one object's
keypoints per image (the annotation with the most labeled keypoints; ``v = 0`` -> not labeled, ``v = 1, 2`` ->
labeled), with ``categories[].keypoints`` names and the 1-based ``skeleton``. Images without a keypoint annotation
are left out of a keypoint set. ``file_name`` is looked up next to the JSON, in ``images/`` beside it, or in
``../images``.

Export: ``annotations.json`` + ``images/``; one annotation per (image, class) holding the class's pixels as
compressed RLE (``iscrowd = 0``), or one per image with ``keypoints`` ``[x, y, v]`` (``v = 2`` labeled, ``v = 0`` and
x = y = 0 not labeled). A synthetic sample's uncertainty goes into ``attributes.uncertainty`` (CVAT's attribute
field) of each of its annotations.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np

from autolabel.data.formats.core import LabelSet, image_size
from autolabel.data.formats.meta import LabelNames
from autolabel.engine.io import atomic_write_text
from autolabel.errors import ConfigError, DataError


def require_pycocotools():
    try:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
    except ImportError as e:
        raise ConfigError("COCO needs pycocotools: pip install -e '.[formats]' (or pip install pycocotools)") from e
    return COCO, mask_utils


def load_coco(path: str | os.PathLike):
    """pycocotools' own ``COCO`` object for ``path`` (its loading chatter silenced)."""
    COCO, _ = require_pycocotools()
    p = Path(path)
    if not p.is_file():
        raise DataError(f"COCO file not found: {p} -- give the annotations .json")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(p))
    except (ValueError, KeyError, TypeError, AssertionError) as e:
        raise DataError(f"{p} is not a COCO annotation file ({e.__class__.__name__}: {e}) -- export it as COCO 1.0 "
                        "JSON (images, annotations, categories)") from e  # fmt: skip


def _image_path(json_path: Path, file_name: str, images_dir: Path | None) -> Path:
    base = json_path.parent
    cands = [images_dir / file_name, images_dir / Path(file_name).name] if images_dir else []
    cands += [base / file_name, base / "images" / file_name, base.parent / "images" / file_name,
              base.parent / file_name, base / "images" / Path(file_name).name]  # fmt: skip
    for c in cands:
        if c.is_file():
            return c
    raise DataError(f"{json_path}: image {file_name} not found next to it, in images/ or ../images -- put the images "
                    "there (or pass images=DIR)")  # fmt: skip


def read_coco(path: str | os.PathLike, task: str | None = None, images_dir: str | os.PathLike | None = None,
              ignore_index: int | None = 255) -> LabelSet:  # fmt: skip
    """A COCO file as a :class:`LabelSet` (see the module docstring); ``task`` None = keypoints when the file has
    keypoint annotations, else segmentation."""
    json_path = Path(path)
    coco = load_coco(json_path)
    cats = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
    kp_cats = [c for c in cats if c.get("keypoints")]
    has_kp = any(a.get("keypoints") for a in coco.dataset.get("annotations", []))
    if task is None or task == "auto":
        task = "keypoints" if kp_cats and has_kp else "segmentation"
    if task not in ("segmentation", "keypoints"):
        raise ConfigError(f"task={task}: a COCO file holds segmentation (instances) or keypoints, not {task}")
    imgs = sorted(coco.loadImgs(coco.getImgIds()), key=lambda im: im["id"])
    if not imgs:
        raise DataError(f"{json_path} lists no images -- export the annotations together with their images")
    idir = Path(images_dir) if images_dir else None
    stems: dict[str, str] = {}
    for im in imgs:
        s = Path(im["file_name"]).stem
        if s in stems:
            raise DataError(
                f"{json_path}: two images named {s} ({stems[s]}, {im['file_name']}) -- names must be unique"
            )
        stems[s] = im["file_name"]
    if task == "segmentation":
        if not cats:
            raise DataError(f"{json_path} has no categories -- a COCO file needs categories for its masks")
        index = {c["id"]: i + 1 for i, c in enumerate(cats)}
        names = LabelNames(classes=["background", *[str(c["name"]) for c in cats]], ignore_index=ignore_index)
        ids, paths, masks = [], [], []
        for im in imgs:
            h, w = int(im["height"]), int(im["width"])
            m = np.zeros((h, w), np.int32)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=im["id"], iscrowd=None))
            for a in sorted(anns, key=lambda a: -float(a.get("area", 0.0))):
                if not a.get("segmentation"):
                    continue
                try:
                    m[coco.annToMask(a) > 0] = index[a["category_id"]]
                except (KeyError, TypeError, ValueError, IndexError) as e:
                    raise DataError(f"{json_path}: annotation {a.get('id')} has an unreadable segmentation "
                                    f"({e.__class__.__name__}) -- re-export it as polygons or RLE") from e  # fmt: skip
            ids.append(Path(im["file_name"]).stem)
            paths.append(_image_path(json_path, im["file_name"], idir))
            masks.append(m)
        return LabelSet("segmentation", ids, paths, masks=masks, names=names, ignore_index=ignore_index,
                        n_classes=len(cats) + 1)  # fmt: skip
    if not kp_cats:
        raise DataError(f"{json_path} has no category with keypoints -- a person_keypoints-style file lists "
                        "categories[].keypoints")  # fmt: skip
    cat = kp_cats[0]
    k = len(cat["keypoints"])
    skeleton = [(int(a) - 1, int(b) - 1) for a, b in cat.get("skeleton", [])]
    names = LabelNames(classes=[str(cat["name"])], keypoints=[str(n) for n in cat["keypoints"]], skeleton=skeleton)
    ids, paths, kps, vis = [], [], [], []
    for im in imgs:
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=im["id"], catIds=[cat["id"]], iscrowd=None))
                if a.get("keypoints")]  # fmt: skip
        if not anns:
            continue
        best = max(anns, key=lambda a: sum(1 for v in a["keypoints"][2::3] if v > 0))
        arr = np.asarray(best["keypoints"], dtype=np.float32)
        if arr.size != 3 * k:
            raise DataError(f"{json_path}: annotation {best.get('id')} has {arr.size // 3} keypoints, its category "
                            f"names {k} -- fix the file")  # fmt: skip
        arr = arr.reshape(k, 3)
        v = arr[:, 2] > 0
        xy = arr[:, :2].copy()
        xy[~v] = -1.0
        ids.append(Path(im["file_name"]).stem)
        paths.append(_image_path(json_path, im["file_name"], idir))
        kps.append(xy)
        vis.append(v)
    if not ids:
        raise DataError(f"{json_path}: no image has a keypoint annotation of category {cat['name']!r}")
    return LabelSet("keypoints", ids, paths, keypoints=np.stack(kps), visible=np.stack(vis), names=names,
                    ignore_index=None)  # fmt: skip


def _copy_image(src: Path, dst_dir: Path, stem: str) -> str:
    dst_dir.mkdir(parents=True, exist_ok=True)
    name = f"{stem}{src.suffix.lower()}"
    if not (dst_dir / name).exists() or (dst_dir / name).stat().st_size != src.stat().st_size:
        shutil.copy2(src, dst_dir / name)
    return name


def write_coco(ls: LabelSet, out: str | os.PathLike) -> Path:
    """``out/annotations.json`` + ``out/images/`` (see the module docstring); returns the JSON path."""
    _, mask_utils = require_pycocotools()
    out = Path(out)
    images, anns = [], []
    if ls.task == "segmentation":
        names = ls.class_names()
        categories = [{"id": c, "name": names[c], "supercategory": ""} for c in range(1, len(names))]
    else:
        categories = [{"id": 1, "name": ls.class_names()[0], "supercategory": "",
                       "keypoints": ls.keypoint_names(),
                       "skeleton": [[a + 1, b + 1] for a, b in ls.names.skeleton]}]  # fmt: skip
    for i, stem in enumerate(ls.ids):
        file_name = _copy_image(ls.images[i], out / "images", stem)
        h, w = image_size(ls.images[i])
        images.append({"id": i + 1, "file_name": file_name, "height": h, "width": w})
        extra = {"attributes": {"uncertainty": float(ls.scores[i])}} if ls.scores is not None else {}
        if ls.task == "segmentation":
            m = ls.mask(i)
            if m.shape != (h, w):
                raise DataError(f"{stem}: mask {m.shape[1]}x{m.shape[0]} but image {w}x{h} (WxH) -- COCO masks are "
                                "in image pixels; resize the mask or the image")  # fmt: skip
            for c in np.unique(m).tolist():
                if c == 0 or c == ls.ignore_index or c >= len(names):
                    continue
                rle = mask_utils.encode(np.asfortranarray((m == c).astype(np.uint8)))
                area, bbox = float(mask_utils.area(rle)), [float(v) for v in mask_utils.toBbox(rle)]
                rle["counts"] = rle["counts"].decode("ascii")
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c), "segmentation": rle,
                             "area": area, "bbox": bbox, "iscrowd": 0, **extra})  # fmt: skip
        else:
            xy, v = ls.keypoints[i], ls.visible[i]
            flat = []
            for (x, y), vis in zip(xy, v):
                flat += [round(float(x), 3), round(float(y), 3), 2] if vis else [0, 0, 0]
            if v.any():
                x0, y0 = xy[v].min(0)
                x1, y1 = xy[v].max(0)
                bbox = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
            else:
                bbox = [0.0, 0.0, float(w), float(h)]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "keypoints": flat,
                         "num_keypoints": int(v.sum()), "bbox": bbox, "area": float(bbox[2] * bbox[3]),
                         "iscrowd": 0, "segmentation": [], **extra})  # fmt: skip
    doc = {"info": {"description": "exported by autolabel"}, "images": images, "annotations": anns,
           "categories": categories}  # fmt: skip
    return atomic_write_text(out / "annotations.json", json.dumps(doc) + "\n")
