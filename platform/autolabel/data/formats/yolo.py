"""Ultralytics YOLO folders (segmentation polygons or pose) in and out, contours through OpenCV (the ``formats``
extra)::

    root/images/<stem>.png
    root/labels/<stem>.txt     segmentation: one polygon per line, ``cls x1 y1 x2 y2 ...``
                               pose: ``cls cx cy w h x1 y1 v1 ... xK yK vK`` (v: 0 not labeled, 1 occluded, 2 visible)
    root/data.yaml             path, train, val, names {0: name, ...}; pose adds kpt_shape [K, 3] and kpt_names

All coordinates are normalized by the image width / height, continuous (a pixel centre at integer x is x + 0.5).
YOLO class ``i`` is this platform's class ``i + 1`` (YOLO has no background class).

Polygons: the outer boundary of each connected region of a class (OpenCV ``findContours``, ``RETR_EXTERNAL``,
vertices at boundary pixel centres), painted back with ``fillPoly`` largest first. Tolerance of export -> import:
pixel-exact for regions without holes; a hole inside a region comes back filled with the region's class unless
another class fills it (that class is painted on top).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from autolabel.data.formats.coco import _copy_image
from autolabel.data.formats.core import IMAGE_EXT, LabelSet, image_size
from autolabel.data.formats.meta import LabelNames, read_names, write_names
from autolabel.engine.io import atomic_write_text
from autolabel.errors import ConfigError, DataError


def require_cv2():
    try:
        import cv2
    except ImportError as e:
        raise ConfigError("YOLO polygons need OpenCV: pip install -e '.[formats]' (or pip install "
                          "opencv-python-headless)") from e  # fmt: skip
    return cv2


def is_yolo(root: Path) -> bool:
    return (root / "data.yaml").is_file() and (root / "labels").is_dir()


def mask_polygons(mask: np.ndarray, cls: int) -> list[np.ndarray]:
    """Outer boundaries ``[P, 2]`` (x, y pixel centres) of the connected regions of class ``cls``."""
    cv2 = require_cv2()
    binary = (mask == cls).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for c in contours:
        pts = c.reshape(-1, 2)
        while len(pts) < 3:  # a single pixel or a 1-pixel line: a degenerate polygon still paints it
            pts = np.concatenate([pts, pts[-1:]])
        out.append(pts)
    return out


def write_yolo(ls: LabelSet, out: str | os.PathLike) -> Path:
    import yaml

    out = Path(out)
    for i, stem in enumerate(ls.ids):
        _copy_image(ls.images[i], out / "images", stem)
        h, w = image_size(ls.images[i])
        lines = []
        if ls.task == "segmentation":
            m = ls.mask(i)
            for c in np.unique(m).tolist():
                if c == 0 or c == ls.ignore_index:
                    continue
                for pts in mask_polygons(m, c):
                    xy = (pts + 0.5) / np.array([w, h])
                    lines.append(f"{c - 1} " + " ".join(f"{v:.6f}" for v in xy.reshape(-1)))
        else:
            xy, v = ls.keypoints[i], ls.visible[i]
            if v.any():
                lo, hi = xy[v].min(0), xy[v].max(0) + 1.0
            else:
                lo, hi = np.zeros(2), np.array([w - 1.0, h - 1.0]) + 1.0
            box = [(lo[0] + hi[0]) / 2 / w, (lo[1] + hi[1]) / 2 / h, (hi[0] - lo[0]) / w, (hi[1] - lo[1]) / h]
            kp = []
            for (x, y), vis in zip(xy, v):
                kp += [(x + 0.5) / w, (y + 0.5) / h, 2] if vis else [0.0, 0.0, 0]
            lines.append("0 " + " ".join(f"{b:.6f}" for b in box) + " " +
                         " ".join(f"{p:.6f}" if j % 3 != 2 else str(p) for j, p in enumerate(kp)))  # fmt: skip
        atomic_write_text(out / "labels" / f"{stem}.txt", "\n".join(lines) + ("\n" if lines else ""))
    names = ls.class_names()
    doc: dict = {"path": str(out.resolve()), "train": "images", "val": "images"}
    if ls.task == "segmentation":
        doc["names"] = {c - 1: names[c] for c in range(1, len(names))}
    else:
        doc["names"] = {0: names[0]}
        doc["kpt_shape"] = [ls.n_keypoints, 3]
        doc["kpt_names"] = {0: ls.keypoint_names()}
    atomic_write_text(out / "data.yaml", yaml.safe_dump(doc, sort_keys=False))
    meta = LabelNames(classes=names, keypoints=ls.keypoint_names() if ls.task == "keypoints" else [],
                      skeleton=list(ls.names.skeleton), ignore_index=ls.ignore_index)  # fmt: skip
    write_names(out, meta)
    return out


def read_yolo(root: str | os.PathLike) -> LabelSet:
    import yaml

    cv2 = require_cv2()
    root = Path(root)
    try:
        doc = yaml.safe_load((root / "data.yaml").read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{root / 'data.yaml'} is not YAML ({e.__class__.__name__}) -- fix it") from e
    raw = doc.get("names", {})
    yolo_names = [str(raw[k]) for k in sorted(raw)] if isinstance(raw, dict) else [str(n) for n in raw]
    sidecar = read_names(root)
    pose = "kpt_shape" in doc
    img_dir = root / "images"
    images = {p.stem: p for p in sorted(img_dir.iterdir()) if p.suffix.lower() in IMAGE_EXT} if img_dir.is_dir() else {}
    ids = sorted(s for s in images if (root / "labels" / f"{s}.txt").is_file())
    if not ids:
        raise DataError(f"{root}: no images/<stem> with a labels/<stem>.txt -- a YOLO folder holds both")
    if not pose:
        names = LabelNames(classes=sidecar.classes or ["background", *yolo_names], colors=sidecar.colors)
        masks = []
        for s in ids:
            h, w = image_size(images[s])
            polys = []
            for n, line in enumerate((root / "labels" / f"{s}.txt").read_text().splitlines(), start=1):
                vals = line.split()
                if not vals:
                    continue
                if len(vals) < 7 or len(vals) % 2 == 0:
                    raise DataError(f"{root}/labels/{s}.txt line {n}: not a polygon (cls x1 y1 x2 y2 x3 y3 ...); "
                                    "detection boxes carry no mask -- export segmentation polygons")  # fmt: skip
                xy = np.asarray(vals[1:], dtype=np.float64).reshape(-1, 2) * np.array([w, h]) - 0.5
                polys.append((int(vals[0]) + 1, np.rint(xy).astype(np.int32)))
            m = np.zeros((h, w), np.int32)
            for c, pts in sorted(polys, key=lambda cp: -abs(cv2.contourArea(cp[1].astype(np.float32)))):
                cv2.fillPoly(m, [pts.reshape(-1, 1, 2)], int(c))
            masks.append(m)
        return LabelSet("segmentation", ids, [images[s] for s in ids], masks=masks, names=names,
                        ignore_index=sidecar.ignore_index if sidecar.ignore_index is not None else 255)  # fmt: skip
    k = int(doc["kpt_shape"][0])
    dims = int(doc["kpt_shape"][1]) if len(doc["kpt_shape"]) > 1 else 3
    kn = doc.get("kpt_names", {})
    kn = kn.get(0, []) if isinstance(kn, dict) else kn
    names = LabelNames(classes=yolo_names[:1], keypoints=sidecar.keypoints or [str(x) for x in kn],
                       skeleton=sidecar.skeleton)  # fmt: skip
    kps, vis = [], []
    for s in ids:
        h, w = image_size(images[s])
        rows = [ln.split() for ln in (root / "labels" / f"{s}.txt").read_text().splitlines() if ln.split()]
        if not rows:
            kps.append(np.full((k, 2), -1.0, np.float32))
            vis.append(np.zeros(k, bool))
            continue
        arrs = [np.asarray(r[5:], dtype=np.float64).reshape(k, dims) for r in rows if len(r) == 5 + k * dims]
        if not arrs:
            raise DataError(f"{root}/labels/{s}.txt: pose lines need 5 + {k}x{dims} values (kpt_shape) -- fix it")
        a = max(arrs, key=lambda a: (a[:, 2] > 0).sum() if dims == 3 else len(a))
        v = a[:, 2] > 0 if dims == 3 else (a[:, 0] > 0) | (a[:, 1] > 0)
        xy = a[:, :2] * np.array([w, h]) - 0.5
        xy[~v] = -1.0
        kps.append(xy.astype(np.float32))
        vis.append(v)
    return LabelSet("keypoints", ids, [images[s] for s in ids], keypoints=np.stack(kps), visible=np.stack(vis),
                    names=names, ignore_index=None)  # fmt: skip
