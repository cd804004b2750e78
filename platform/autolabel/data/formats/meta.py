"""Label names that travel with a dataset: ``labelmap.txt`` (CVAT / Datumaro) and ``labels.json`` (this platform).

``labelmap.txt`` (the "Segmentation mask" export of CVAT and Datumaro): one class per line in index order,
``name:r,g,b:parts:actions``; lines starting with ``#`` are comments::

    # label:color_rgb:parts:actions
    background:0,0,0::
    horse:128,0,0::

``labels.json`` (optional, next to ``images/``; written by every importer and exporter of this package)::

    {"classes": ["background", "horse"], "keypoints": ["nose", "tail"], "skeleton": [[0, 1]], "ignore_index": 255}

``skeleton`` pairs are 0-based keypoint indices (COCO files store them 1-based; the COCO reader/writer converts).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from autolabel.engine.io import atomic_write_text
from autolabel.errors import DataError

LABELMAP = "labelmap.txt"
LABELS_JSON = "labels.json"
VOC_VOID = (224, 224, 192)  # the colour of index 255 in the VOC palette (object borders, "void")


def voc_palette() -> list[tuple[int, int, int]]:
    """The 256-entry PASCAL VOC colour map (bit-interleaved class index), index 255 = (224, 224, 192)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal.append((r, g, b))
    return pal


@dataclass
class LabelNames:
    """Class names (index order, background first), optional colours, keypoint names and skeleton (0-based)."""

    classes: list[str] = field(default_factory=list)
    colors: list[tuple[int, int, int]] = field(default_factory=list)
    keypoints: list[str] = field(default_factory=list)
    skeleton: list[tuple[int, int]] = field(default_factory=list)
    ignore_index: int | None = None

    def class_names(self, n: int) -> list[str]:
        """``n`` class names: the known ones, then ``class_<i>`` (index 0 is ``background`` when unnamed)."""
        names = list(self.classes[:n])
        names += ["background" if i == 0 else f"class_{i}" for i in range(len(names), n)]
        return names

    def keypoint_names(self, k: int) -> list[str]:
        names = list(self.keypoints[:k])
        return names + [f"kp{i}" for i in range(len(names), k)]

    def class_colors(self, n: int) -> list[tuple[int, int, int]]:
        pal = voc_palette()
        return [tuple(self.colors[i]) if i < len(self.colors) else pal[i % 255] for i in range(n)]

    def to_json(self) -> dict:
        out: dict = {"classes": list(self.classes)}
        if self.keypoints:
            out["keypoints"] = list(self.keypoints)
            out["skeleton"] = [list(map(int, p)) for p in self.skeleton]
        if self.ignore_index is not None:
            out["ignore_index"] = int(self.ignore_index)
        return out


def read_labelmap(path: str | os.PathLike) -> LabelNames:
    """Parse a CVAT/Datumaro ``labelmap.txt`` (see the module docstring)."""
    p = Path(path)
    names, colors = [], []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        name = parts[0].strip()
        if not name:
            raise DataError(f"{p} line {n}: empty label name -- write name:r,g,b:: (e.g. horse:128,0,0::)")
        names.append(name)
        if len(parts) > 1 and parts[1].strip():
            try:
                rgb = tuple(int(v) for v in parts[1].split(","))
            except ValueError as e:
                raise DataError(f"{p} line {n}: colour {parts[1]!r} is not r,g,b -- write e.g. horse:128,0,0::") from e
            if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
                raise DataError(f"{p} line {n}: colour {parts[1]!r} must be three values 0..255, e.g. 128,0,0")
            colors.append(rgb)
        else:
            colors.append(None)
    if not names:
        raise DataError(f"{p} lists no labels: one line per class, e.g. background:0,0,0::")
    pal = voc_palette()
    return LabelNames(classes=names, colors=[c if c is not None else pal[i] for i, c in enumerate(colors)])


def write_labelmap(path: str | os.PathLike, names: list[str], colors: list[tuple[int, int, int]]) -> Path:
    lines = ["# label:color_rgb:parts:actions"]
    lines += [f"{n}:{c[0]},{c[1]},{c[2]}::" for n, c in zip(names, colors)]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_names(root: str | os.PathLike) -> LabelNames:
    """The names stored next to a dataset: ``labels.json`` and/or ``labelmap.txt`` (``labels.json`` wins for class
    names, ``labelmap.txt`` gives colours); empty when neither exists."""
    root = Path(root)
    names = read_labelmap(root / LABELMAP) if (root / LABELMAP).is_file() else LabelNames()
    js = root / LABELS_JSON
    if js.is_file():
        try:
            obj = json.loads(js.read_text(encoding="utf-8"))
            if obj.get("classes"):
                names.classes = [str(c) for c in obj["classes"]]
            names.keypoints = [str(k) for k in obj.get("keypoints", [])]
            names.skeleton = [(int(a), int(b)) for a, b in obj.get("skeleton", [])]
            if obj.get("ignore_index") is not None:
                names.ignore_index = int(obj["ignore_index"])
        except (ValueError, TypeError, AttributeError) as e:
            raise DataError(f"{js} is not a labels.json ({e.__class__.__name__}): expected "
                            '{"classes": [...], "keypoints": [...], "skeleton": [[0, 1]]} -- fix or delete '
                            "it") from e  # fmt: skip
    return names


def write_names(root: str | os.PathLike, names: LabelNames) -> Path:
    return atomic_write_text(Path(root) / LABELS_JSON, json.dumps(names.to_json(), indent=1) + "\n")
