"""Downstream checks of label quality, each trained on a labeled folder -- real, or synthetic from ``autolabel
synthesize`` -- and scored on a real labeled test folder:

- ``fit segmentation``: a UNet for masks (mIoU per class + mean, pixel accuracy) or depth (RMSE, abs-rel, ...);
- ``fit keypoints``: a UNet heatmap regressor (PCK@t and NME, normalized by the image diagonal).

Synthetic datasets hold ``images/`` + ``labels/`` (``<id>.png`` masks, ``<id>.json`` keypoints, ``<id>.npy`` depth) with
labels at the synthesis working resolution; they are rescaled to ``size`` like the images.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import MISSING

from autolabel.config import RunConfig, TrainerConfig
from autolabel.errors import ConfigError, DataError
from pipelines.registry import command
from pipelines.stages.common import finish_stage, open_run

_SYNTH_EXT = {"segmentation": ".png", "keypoints": ".json", "depth": ".npy"}
_REAL_LABELS = {"segmentation": "masks", "keypoints": "keypoints.csv", "depth": "depth"}


@dataclass
class DownstreamCommand:
    """Settings every downstream check shares: data, the UNet's size, optimisation."""

    train: str = MISSING  # a labeled folder, or a synthetic dataset written by `autolabel synthesize`
    test: str = MISSING  # a real labeled folder
    size: int = 64
    base: int = 16
    depth: int = 3
    lr: float = 1e-3
    batch_size: int = 8
    max_epochs: int = 20
    limit: int = -1  # use at most this many training images (-1: all)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        if self.size < 2**self.depth or self.base < 1 or self.depth < 1:
            raise ConfigError(f"size={self.size}, base={self.base}, depth={self.depth}: need base, depth >= 1 and "
                              "size >= 2**depth")  # fmt: skip
        if self.batch_size < 1 or self.lr <= 0 or self.max_epochs < 1:
            raise ConfigError(f"batch_size={self.batch_size}, lr={self.lr}, max_epochs={self.max_epochs}: "
                              "need batch_size >= 1, lr > 0 and max_epochs >= 1")  # fmt: skip


@dataclass
class FitSegmentationCommand(DownstreamCommand):
    """Downstream check of label quality: train a small UNet on ``train`` (a labeled folder, or a synthetic dataset
    written by ``autolabel synthesize``) and score it on the real labeled folder ``test``."""

    task: str = "segmentation"  # segmentation | depth
    run: RunConfig = field(default_factory=lambda: RunConfig(name="segmentation"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.task not in ("segmentation", "depth"):
            raise ConfigError(f"task={self.task!r}: use segmentation or depth (keypoints: `autolabel fit keypoints`)")


@dataclass
class FitKeypointsCommand(DownstreamCommand):
    """Downstream check of keypoint labels: train a UNet heatmap regressor on ``train`` (images/ + keypoints.csv, or a
    synthetic keypoint dataset from ``autolabel synthesize``) and score PCK / NME on the real labeled folder ``test``."""

    sigma: float = 1.5  # target heatmap Gaussian, pixels at `size`
    pck_threshold: float = 0.1  # PCK counts keypoints within this fraction of the image diagonal
    min_confidence: float = 0.0  # synthetic labels: keypoints below this confidence count as invisible
    # Horizontal-flip augmentation needs to know which keypoints swap under a mirror: null (default) = unknown, no flips;
    # [] = flip, no index swaps (mirror-symmetric keypoints); [[2,3]] = flip and swap keypoints 2 and 3
    # (the procedural shapes' top, bottom, left, right extreme points).
    flip_pairs: Optional[list[Any]] = None
    run: RunConfig = field(default_factory=lambda: RunConfig(name="keypoints"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sigma <= 0:
            raise ConfigError(f"sigma={self.sigma}: the heatmap Gaussian width must be > 0 pixels")
        if not 0.0 < self.pck_threshold <= 1.0:
            raise ConfigError(f"pck_threshold={self.pck_threshold} must be in (0, 1] (a fraction of the diagonal)")
        pairs = [] if self.flip_pairs is None else list(self.flip_pairs)
        for p in pairs:
            if (
                not hasattr(p, "__len__")
                or len(p) != 2
                or not all(isinstance(i, int) and i >= 0 for i in p)
                or p[0] == p[1]
            ):
                raise ConfigError(f"flip_pairs={self.flip_pairs!r}: give pairs of distinct keypoint indices, "
                                  "e.g. flip_pairs=[[2,3]] (or leave it null to disable flips)")  # fmt: skip


class SyntheticLabels:
    """A keypoint or depth dataset written by ``autolabel synthesize`` (``images/`` + ``labels/<id>.json|.npy``), with
    :class:`~autolabel.data.labeled.LabeledFolder`'s item format: ``image`` [C,H,W] in [-1,1] and ``keypoints`` [K,2]
    (x, y pixels at ``size``) + ``visible`` [K], or ``depth`` [1,H,W]; plus ``id``."""

    def __init__(self, root: str | Path, task: str, size: int, limit: int | None = None, min_confidence: float = 0.0):
        import torch
        from PIL import Image

        from autolabel.data.labeled import _IMG_EXT, _open

        if task not in ("keypoints", "depth"):
            raise ConfigError(f"SyntheticLabels task={task!r}: use keypoints or depth (segmentation: LabeledFolder)")
        self.root, self.task, self.n_classes = Path(root), task, None
        images = {p.stem: p for p in sorted((self.root / "images").glob("*")) if p.suffix.lower() in _IMG_EXT}
        labels = {p.stem: p for p in sorted((self.root / "labels").glob(f"*{_SYNTH_EXT[task]}"))}
        if not images:
            raise DataError(f"no images in {self.root / 'images'}: give a finished `autolabel synthesize` output")
        missing = [s for s in images if s not in labels]
        if missing:
            raise DataError(f"{len(missing)} synthetic image(s) without labels/<id>{_SYNTH_EXT[task]}, e.g. "
                            f"{', '.join(missing[:3])}: rerun `autolabel synthesize` with the same out= to finish "
                            "it")  # fmt: skip
        stems = sorted(images)[: limit if limit else None]
        self.ids = stems
        self._images: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._visible: list[torch.Tensor] = []
        for s in stems:
            im = _open(images[s]).convert("RGB")
            w0, h0 = im.width, im.height
            if (h0, w0) != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()
            self._images.append(torch.from_numpy(arr).float().div(127.5).sub(1.0))
            if task == "keypoints":
                kp, vis = self._read_json(labels[s], (h0, w0), min_confidence)
                sx, sy = (size - 1) / max(kp["w"] - 1, 1), (size - 1) / max(kp["h"] - 1, 1)
                xy = kp["xy"] * np.array([sx, sy], dtype=np.float32)
                xy[~vis] = -1.0
                if self._labels and xy.shape[0] != self._labels[0].shape[0]:
                    raise DataError(f"{labels[s]}: {xy.shape[0]} keypoints but {labels[stems[0]].name} has "
                                    f"{self._labels[0].shape[0]}: every label file must list the same keypoints")  # fmt: skip
                self._labels.append(torch.from_numpy(xy.astype(np.float32)))
                self._visible.append(torch.from_numpy(vis))
            else:
                try:
                    d = np.squeeze(np.load(labels[s])).astype(np.float32)
                except (OSError, ValueError) as e:
                    raise DataError(f"cannot read {labels[s]}: {e.__class__.__name__}; rerun synthesis") from e
                if d.ndim != 2 or not np.isfinite(d).all():
                    raise DataError(f"{labels[s]}: need one finite [H, W] depth map, got shape {d.shape}")
                dt = torch.nn.functional.interpolate(torch.from_numpy(d)[None, None], size=(size, size), mode="nearest")
                self._labels.append(dt[0])

    @staticmethod
    def _read_json(path: Path, image_hw: tuple[int, int], min_confidence: float) -> tuple[dict, np.ndarray]:
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

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"image": self._images[i], "id": self.ids[i]}
        if self.task == "keypoints":
            item["keypoints"], item["visible"] = self._labels[i], self._visible[i]
        else:
            item["depth"] = self._labels[i]
        return item

    @property
    def n_keypoints(self) -> int:
        return int(self._labels[0].shape[0]) if self.task == "keypoints" and self._labels else 0


def _synthetic_task(root: Path) -> str | None:
    """The task a synthetic dataset was written for (``plan.json``), or None when ``root`` is not one."""
    plan = root / "plan.json"
    if plan.is_file():
        try:
            task = json.loads(plan.read_text()).get("task")
        except (OSError, ValueError, AttributeError):
            task = None
        if task in _SYNTH_EXT:
            return task
    labels = root / "labels"
    if labels.is_dir():
        for t, ext in _SYNTH_EXT.items():
            if next(labels.glob(f"*{ext}"), None) is not None:
                return t
    return None


def open_labeled(root: str | Path, task: str, size: int, n_classes: int | None = None, limit: int | None = None,
                 role: str = "train", min_confidence: float = 0.0) -> Any:  # fmt: skip
    """A labeled folder (``images/`` + ``masks/`` | ``keypoints.csv`` | ``depth/``) or a synthetic dataset
    (``images/`` + ``labels/``); ``role`` (train | test) names the command argument in error messages."""
    from autolabel.data.labeled import LabeledFolder

    r = Path(root)
    if not r.is_dir():
        raise DataError(f"{role}={root}: folder not found -- give an existing labeled folder or synthesis output")
    if (r / _REAL_LABELS[task]).exists():
        return LabeledFolder(r, task=task, size=size, n_classes=n_classes, limit=limit)
    synth = _synthetic_task(r)
    if synth == task:
        if task == "segmentation":
            return LabeledFolder.from_dirs(r / "images", r / "labels", size=size, n_classes=n_classes, limit=limit,
                                           mask_mode="index")  # fmt: skip
        return SyntheticLabels(r, task, size, limit=limit, min_confidence=min_confidence)
    cmd = "fit keypoints" if task == "keypoints" else f"fit segmentation task={task}"
    layout = {"segmentation": "images/ + masks/", "keypoints": "images/ + keypoints.csv (header image,x0,y0,x1,y1,...)",
              "depth": "images/ + depth/"}[task]  # fmt: skip
    if synth is not None:
        other = "fit keypoints" if synth == "keypoints" else f"fit segmentation task={synth}"
        raise DataError(f"{role}={root} is a synthetic {synth} dataset, but `autolabel {cmd}` needs {task} labels: "
                        f"use `autolabel {other}` or a folder with {task} labels")  # fmt: skip
    raise DataError(f"{role}={root} has no {_REAL_LABELS[task]}: `autolabel {cmd}` needs {layout}, or a synthetic "
                    f"{task} dataset from `autolabel synthesize`")  # fmt: skip


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """Counts stay ints, scores become plain floats (JSON-friendly)."""
    return {k: v if isinstance(v, int) and not isinstance(v, bool) else float(v) for k, v in metrics.items()}


def _seed(trainer: TrainerConfig) -> None:
    import pytorch_lightning as pl

    pl.seed_everything(trainer.seed, workers=True, verbose=False)  # the model's initial weights follow trainer.seed


def train_segmentation(cfg: FitSegmentationCommand, stage_dir: Path) -> dict[str, Any]:
    from autolabel.engine import fit
    from autolabel.tasks.segmentation import (
        DenseDataModule,
        FlipDataset,
        SegmentationModule,
        evaluate_depth,
        evaluate_segmentation,
    )

    limit = cfg.limit if cfg.limit > 0 else None
    train = open_labeled(cfg.train, cfg.task, cfg.size, limit=limit, role="train")
    test = open_labeled(cfg.test, cfg.task, cfg.size, role="test")
    n_classes = max(train.n_classes, test.n_classes) if cfg.task == "segmentation" else None
    dm = DenseDataModule(cfg.train, cfg.test, cfg.task, cfg.size, cfg.batch_size)
    dm.train_set, dm.val_set, dm.n_classes = FlipDataset(train), test, n_classes  # folders opened above
    channels = int(train[0]["image"].shape[0])
    _seed(cfg.trainer)
    module = SegmentationModule(n_classes or 1, channels, cfg.base, cfg.depth, cfg.lr, cfg.task)
    tc = dataclasses.replace(cfg.trainer, max_epochs=cfg.max_epochs, max_steps=-1)
    fit(module, dm, tc, stage_dir)
    if cfg.task == "segmentation":
        scores = evaluate_segmentation(module, test, n_classes=n_classes)
        metrics = {"miou": scores["miou"], "pixel_acc": scores["pixel_acc"],
                   **{f"iou_class{i}": v for i, v in enumerate(scores["per_class_iou"])}}  # fmt: skip
    else:
        metrics = evaluate_depth(module, test)
    metrics.update(train_images=len(train), test_images=len(test))
    return {"outputs": {"checkpoint": stage_dir / "checkpoints" / "last.ckpt"},
            "metrics": _scalars(metrics)}  # fmt: skip


@command("fit segmentation", "downstream check: train a UNet on real or synthetic labels, score it on a real test folder",
         FitSegmentationCommand)  # fmt: skip
def fit_segmentation(cfg: FitSegmentationCommand) -> int:
    run = open_run(cfg, cfg.run)
    stage = run.stage("segmentation")
    out = train_segmentation(cfg, stage)
    finish_stage(run, stage, out, f"fit segmentation ({cfg.task})")
    return 0


def open_keypoint_folders(cfg: FitKeypointsCommand) -> tuple[Any, Any, list[tuple[int, int]] | None]:
    """Load ``train`` and ``test`` and check they label the same keypoints; returns (train, test, flip pairs)."""
    limit = cfg.limit if cfg.limit > 0 else None
    train = open_labeled(cfg.train, "keypoints", cfg.size, limit=limit, role="train",
                         min_confidence=cfg.min_confidence)  # fmt: skip
    test = open_labeled(cfg.test, "keypoints", cfg.size, role="test")
    if train.n_keypoints != test.n_keypoints:
        raise DataError(f"train has {train.n_keypoints} keypoints per image but test has {test.n_keypoints}: both "
                        "folders must label the same keypoints in the same order")  # fmt: skip
    pairs = None if cfg.flip_pairs is None else [(int(a), int(b)) for a, b in cfg.flip_pairs]
    bad = [p for p in pairs or [] if max(p) >= train.n_keypoints]
    if bad:
        raise ConfigError(f"flip_pairs={cfg.flip_pairs}: index {max(bad[0])} out of range for {train.n_keypoints} "
                          f"keypoints -- use indices 0..{train.n_keypoints - 1}")  # fmt: skip
    return train, test, pairs


def train_keypoints(cfg: FitKeypointsCommand, stage_dir: Path, folders: tuple | None = None) -> dict[str, Any]:
    from autolabel.engine import fit
    from autolabel.tasks.keypoints import KeypointModule, evaluate_keypoints
    from autolabel.tasks.segmentation import DenseDataModule, FlipDataset

    train, test, pairs = folders or open_keypoint_folders(cfg)
    dm = DenseDataModule(cfg.train, cfg.test, "keypoints", cfg.size, cfg.batch_size)
    dm.train_set = train if pairs is None else FlipDataset(train, flip_pairs=pairs, seed=cfg.trainer.seed)
    dm.val_set = test
    _seed(cfg.trainer)
    module = KeypointModule(train.n_keypoints, int(train[0]["image"].shape[0]), cfg.base, cfg.depth, cfg.lr,
                            cfg.sigma, cfg.pck_threshold)  # fmt: skip
    tc = dataclasses.replace(cfg.trainer, max_epochs=cfg.max_epochs, max_steps=-1)
    fit(module, dm, tc, stage_dir)
    scores = evaluate_keypoints(module.model, test, threshold=cfg.pck_threshold, per_keypoint=True)
    per = scores.pop("per_keypoint_pck")
    metrics = {**scores, **{f"pck_kp{i}": v for i, v in enumerate(per)}, "n_keypoints": train.n_keypoints,
               "train_images": len(train), "test_images": len(test)}  # fmt: skip
    return {"outputs": {"checkpoint": stage_dir / "checkpoints" / "last.ckpt"},
            "metrics": _scalars(metrics)}  # fmt: skip


@command("fit keypoints", "downstream check: train a keypoint heatmap net on real or synthetic labels, score PCK/NME "
         "on a real test folder", FitKeypointsCommand)  # fmt: skip
def fit_keypoints(cfg: FitKeypointsCommand) -> int:
    folders = open_keypoint_folders(cfg)  # bad folders fail before a run directory is made
    run = open_run(cfg, cfg.run)
    stage = run.stage("keypoints")
    out = train_keypoints(cfg, stage, folders)
    finish_stage(run, stage, out, f"fit keypoints (PCK@{cfg.pck_threshold:g}, NME)")
    return 0
