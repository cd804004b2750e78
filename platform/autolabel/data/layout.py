"""The layout of a user's data folders, checked before any work: labeled folders (``images/`` + ``masks/`` |
``keypoints.csv`` | ``depth/``), plain image folders, class-subfolder folders, and synthetic datasets.

Nothing here imports torch at module level (the CLI's help reads :data:`MAX_LABELED`). Every check raises a one-line
error naming the config key (``data.<key>``, ``train=``, ...) that points at the folder.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autolabel.errors import ConfigError, DataError

MAX_LABELED = 50  # HandsOff's premise: at most 50 labeled images
LABEL_KIND = {"segmentation": "masks", "keypoints": "keypoints.csv", "depth": "depth"}  # task -> labels in a folder


@dataclass
class LabeledSelection:
    """The labeled images a run uses: ``stems`` of ``images`` (a folder) and their labels."""

    key: str  # "labeled" | "test" (the data.* key, for messages)
    root: Path  # the folder the user gave
    images: Path
    labels: Path  # masks folder, depth folder or keypoints.csv
    task: str
    stems: list[str]
    files: dict[str, Path]  # stem -> image file
    total: int  # labeled images in the folder before selection
    separate_masks: bool

    @property
    def needs_copy(self) -> bool:
        return self.separate_masks or len(self.stems) < self.total

    def materialize(self, dst: Path) -> Path:
        """Write the selection as a standard labeled folder ``dst/images`` + ``dst/<labels>``; returns ``dst``."""
        (dst / "images").mkdir(parents=True, exist_ok=True)
        for s in self.stems:
            shutil.copy2(self.files[s], dst / "images" / self.files[s].name)
        for side in ("labels.json", "labelmap.txt"):  # class / keypoint names (and mask colours)
            if (self.root / side).is_file():
                shutil.copy2(self.root / side, dst / side)
        if self.task == "keypoints":
            with open(self.labels, newline="") as f:
                rows = list(csv.reader(f))
            keep = [r for r in rows[1:] if r and Path(r[0].strip()).stem in set(self.stems)]
            with open(dst / "keypoints.csv", "w", newline="") as f:
                csv.writer(f).writerows([rows[0], *keep])
        else:
            out = dst / LABEL_KIND[self.task]
            out.mkdir(exist_ok=True)
            by_stem = {p.stem: p for p in self.labels.iterdir() if p.is_file()}
            for s in self.stems:
                shutil.copy2(by_stem[s], out / by_stem[s].name)
        return dst


def label_stems(labels: Path, task: str) -> set[str]:
    """The file stems that have a label in ``labels`` (a masks / depth folder, or keypoints.csv)."""
    from autolabel.data.images import IMAGE_EXTENSIONS

    if task == "keypoints":
        with open(labels, newline="") as f:
            return {Path(r[0].strip()).stem for r in list(csv.reader(f))[1:] if r}
    exts = IMAGE_EXTENSIONS if task == "segmentation" else (".npy", ".png")
    return {p.stem for p in labels.iterdir() if p.is_file() and p.suffix.lower() in exts}


def select_labeled(
    key: str, folder: str, masks: str | None, task: str, limit: int = -1, exclude: Sequence[str] = ()
) -> LabeledSelection:
    """Check a user's labeled folder (``data.labeled`` / ``data.test``) and pick the images to use. A COCO / VOC /
    YOLO dataset is read through :mod:`autolabel.data.formats` (an ``ImportedSelection`` with the same fields)."""
    from autolabel.data.formats import FOREIGN, ImportedSelection, detect_format
    from autolabel.data.images import IMAGE_EXTENSIONS

    root = Path(folder).expanduser().resolve()
    if not masks and detect_format(root, task) in FOREIGN:  # imported into a labeled folder by materialize()
        return ImportedSelection(key, root, task, limit, exclude)  # type: ignore[return-value]
    if not root.is_dir():
        raise DataError(
            f"data.{key}={folder}: folder not found -- give a labeled folder (images/ + masks/, keypoints.csv or depth/)"
        )
    if masks:
        labels = Path(masks).expanduser().resolve()
        if task != "segmentation":
            raise ConfigError(
                f"data.{key}_masks is set but labels.model.task={task}: masks are segmentation labels; "
                f"set labels.model.task=segmentation or clear data.{key}_masks"
            )
        if not labels.is_dir():
            raise DataError(f"data.{key}_masks={masks}: folder not found -- give the folder of masks (same stems)")
        images = root
    else:
        images, labels = root / "images", root / LABEL_KIND[task]
        if not images.is_dir():
            raise DataError(
                f"data.{key}={folder} has no images/ folder: a labeled folder holds images/ plus masks/ "
                f"(or keypoints.csv, depth/); masks kept elsewhere: set data.{key}_masks=DIR"
            )
        if not labels.exists():
            raise DataError(
                f"data.{key}={folder} has no {LABEL_KIND[task]} for labels.model.task={task}: add it "
                "(same file stems as images/) or set labels.model.task to the labels it holds"
            )
    files = {p.stem: p for p in sorted(images.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}
    if not files:
        raise DataError(f"data.{key}: no images in {images} (accepted: {', '.join(IMAGE_EXTENSIONS)})")
    have = label_stems(labels, task)
    missing = [s for s in files if s not in have]
    if missing:
        raise DataError(
            f"data.{key}: {len(missing)} image(s) in {images} have no label in {labels}, e.g. "
            f"{', '.join(missing[:3])}: add them (same stem) or remove those images"
        )
    stems = [s for s in sorted(files) if s not in set(exclude)]
    total = len(stems)
    if limit > 0:
        stems = stems[:limit]
    if not stems:
        raise DataError(
            f"data.{key}={folder}: no images left once the labeled ones are left out; give a separate data.{key} folder"
        )
    return LabeledSelection(key, root, images, labels, task, stems, files, total, bool(masks))


def image_folder(key: str, folder: str) -> list[Path]:
    """The images of ``data.<key>``; a missing or empty folder is an error naming that key."""
    from autolabel.data.images import list_images

    try:
        return list_images(Path(folder).expanduser())
    except DataError as e:
        raise DataError(f"data.{key}={folder}: {e}") from e


def class_folders(key: str, folder: str) -> Path:
    """``data.<key>``: a folder with at least two class subfolders of images (Hi-LANDER's meta-training classes)."""
    root = Path(folder).expanduser().resolve()
    image_folder(key, folder)  # exists and holds images
    classes = [p for p in root.iterdir() if p.is_dir()]
    if len(classes) < 2:
        raise DataError(
            f"data.{key}={folder} has {len(classes)} class subfolder(s): Hi-LANDER meta-trains on at "
            "least 2 labeled classes, one subfolder each (DIR/<class>/<image>)"
        )
    return root


def copy_categories(src: Path, dst: Path, categories: Sequence[int]) -> Path:
    """Copy the class subfolders ``src/<cc>`` (two-digit category ids) of ``categories`` into ``dst``."""
    for c in categories:
        s = src / f"{c:02d}"
        if s.is_dir() and not (dst / f"{c:02d}").is_dir():
            shutil.copytree(s, dst / f"{c:02d}")
    return dst


def open_labeled(
    root: str | Path,
    task: str,
    size: int,
    n_classes: int | None = None,
    limit: int | None = None,
    role: str = "train",
    min_confidence: float = 0.0,
) -> Any:
    """A labeled folder (``images/`` + ``masks/`` | ``keypoints.csv`` | ``depth/``), a COCO / VOC / YOLO dataset or a
    synthetic dataset (``images/`` + ``labels/``); ``role`` (train | test) names the command argument in errors."""
    from autolabel.data.formats import FOREIGN, detect_format
    from autolabel.data.labeled import LabeledFolder, open_synthetic, synthetic_task

    r = Path(root)
    if not r.exists():
        raise DataError(f"{role}={root}: folder not found -- give an existing labeled folder or synthesis output")
    if (r / LABEL_KIND[task]).exists() or detect_format(r, task) in FOREIGN:
        return LabeledFolder(r, task=task, size=size, n_classes=n_classes, limit=limit)
    synth = synthetic_task(r)
    if synth == task:
        return open_synthetic(r, task, size, n_classes=n_classes, limit=limit, min_confidence=min_confidence)
    cmd = "fit keypoints" if task == "keypoints" else f"fit segmentation task={task}"
    layout = {
        "segmentation": "images/ + masks/",
        "keypoints": "images/ + keypoints.csv (header image,x0,y0,x1,y1,...)",
        "depth": "images/ + depth/",
    }[task]
    if synth is not None:
        other = "fit keypoints" if synth == "keypoints" else f"fit segmentation task={synth}"
        raise DataError(
            f"{role}={root} is a synthetic {synth} dataset, but `autolabel {cmd}` needs {task} labels: "
            f"use `autolabel {other}` or a folder with {task} labels"
        )
    raise DataError(
        f"{role}={root} has no {LABEL_KIND[task]}: `autolabel {cmd}` needs {layout}, or a synthetic "
        f"{task} dataset from `autolabel synthesize`"
    )


def load_labeled(
    labeled: str | Path, masks: str | Path | None, size: int, task: str, n_classes: int | None = None
) -> Any:
    """A labeled folder for the label generator: ``labeled`` (images/ + labels), or images in ``labeled`` with the
    masks in ``masks``."""
    from autolabel.data.labeled import LabeledFolder

    kw = {"n_classes": n_classes} if task == "segmentation" else {}
    if masks:
        return LabeledFolder.from_dirs(labeled, masks, size=size, **kw)
    return LabeledFolder(labeled, task=task, size=size, **kw)
