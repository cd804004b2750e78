"""Downstream checks of label quality, each trained on a labeled folder -- real, or synthetic from ``autolabel
synthesize`` -- and scored on a real labeled test folder:

- ``fit segmentation``: a UNet for masks (mIoU per class + mean, pixel accuracy) or depth (RMSE, abs-rel, ...);
- ``fit keypoints``: a UNet heatmap regressor (PCK@t and NME, normalized by the image diagonal).

Synthetic datasets hold ``images/`` + ``labels/`` (``<id>.png`` masks, ``<id>.json`` keypoints, ``<id>.npy`` depth) at
the image resolution; only the samples listed in ``manifest.jsonl`` (the filtered, merged set) are read, and they are
rescaled to ``size`` like the images.

Checkpoint selection (DESIGN 3.6): a fixed ``val_fraction`` slice of the test folder (seed 0, the same for every run
on that folder) validates every epoch; the epoch with the best validation score (mIoU / RMSE / NME) is kept as
``checkpoints/best.ckpt`` and scored on the REST of the test folder. ``val_fraction=0`` scores the final weights on
the whole test folder (no selection).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from autolabel.config import RunConfig, TrainerConfig
from autolabel.errors import ConfigError, DataError
from pipelines.registry import command
from pipelines.stages.common import finish_stage, open_run

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
    val_fraction: float = 0.2  # share of `test` held out to pick the best epoch; metrics are on the rest (0: none)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction={self.val_fraction} must be in [0, 1): the share of the test folder "
                              "used to pick the checkpoint (0.2 by default, 0 = score the final weights)")  # fmt: skip
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
    ignore_index: int = 255  # mask value left out of the loss and the metrics (e.g. VOC's object borders)
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


def __getattr__(name: str) -> Any:
    if name == "SyntheticLabels":  # it used to live here; importing it pulls in torch, so only on demand
        from autolabel.data.labeled import SyntheticLabels

        return SyntheticLabels
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_labeled(root: str | Path, task: str, size: int, n_classes: int | None = None, limit: int | None = None,
                 role: str = "train", min_confidence: float = 0.0) -> Any:  # fmt: skip
    """A labeled folder (``images/`` + ``masks/`` | ``keypoints.csv`` | ``depth/``) or a synthetic dataset
    (``images/`` + ``labels/``); ``role`` (train | test) names the command argument in error messages."""
    from autolabel.data.labeled import LabeledFolder, open_synthetic, synthetic_task

    r = Path(root)
    if not r.is_dir():
        raise DataError(f"{role}={root}: folder not found -- give an existing labeled folder or synthesis output")
    if (r / _REAL_LABELS[task]).exists():
        return LabeledFolder(r, task=task, size=size, n_classes=n_classes, limit=limit)
    synth = synthetic_task(r)
    if synth == task:
        return open_synthetic(r, task, size, n_classes=n_classes, limit=limit, min_confidence=min_confidence)
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


def split_test(test: Any, val_fraction: float) -> tuple[Any, Any]:
    """``(val, scored)``: the fixed ``val_fraction`` slice of ``test`` that picks the checkpoint and the rest, which
    is scored (``(None, test)`` for ``val_fraction=0``)."""
    from autolabel.data.labeled import FolderSubset, holdout_split

    val_idx, rest_idx = holdout_split(len(test), val_fraction, seed=0)
    if not val_idx:
        return None, test
    return FolderSubset(test, val_idx), FolderSubset(test, rest_idx)


def _fit_selected(module: Any, dm: Any, cfg: DownstreamCommand, stage_dir: Path, monitor: str,
                  mode: str) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """Train; with a validation slice keep the best epoch by ``monitor`` and load its weights into ``module``.
    Returns the scored checkpoint and selection metrics (``val_images``, ``best_epoch``, ``val_score``)."""
    import torch

    from autolabel.engine import fit

    tc = dataclasses.replace(cfg.trainer, max_epochs=cfg.max_epochs, max_steps=-1)
    ckpts = stage_dir / "checkpoints"
    if dm.val_set is None:
        fit(module, dm, tc, stage_dir)
        return ckpts / "last.ckpt", {"val_images": 0}
    trainer = fit(module, dm, tc, stage_dir, monitor=monitor, monitor_mode=mode)
    best = ckpts / "best.ckpt"
    if not best.is_file():
        raise DataError(f"no {best} after training: the validation slice logged no {monitor} -- check val_fraction")
    state = torch.load(best, map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"])
    score = next((cb.best_model_score for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)), None)
    info = {"val_images": len(dm.val_set), "best_epoch": int(state["epoch"])}
    if score is not None:
        info["val_score"] = float(score)
    return best, info


def open_dense_folders(cfg: FitSegmentationCommand) -> tuple[Any, Any]:
    """Load ``train`` and ``test`` for ``fit segmentation`` (segmentation or depth labels)."""
    limit = cfg.limit if cfg.limit > 0 else None
    return (open_labeled(cfg.train, cfg.task, cfg.size, limit=limit, role="train"),
            open_labeled(cfg.test, cfg.task, cfg.size, role="test"))  # fmt: skip


def train_segmentation(cfg: FitSegmentationCommand, stage_dir: Path, folders: tuple | None = None) -> dict[str, Any]:
    from autolabel.tasks.segmentation import (
        DenseDataModule,
        FlipDataset,
        SegmentationModule,
        evaluate_depth,
        evaluate_segmentation,
    )

    train, test = folders or open_dense_folders(cfg)
    val, scored = split_test(test, cfg.val_fraction)
    n_classes = max(train.n_classes, test.n_classes) if cfg.task == "segmentation" else None
    dm = DenseDataModule(cfg.train, cfg.test, cfg.task, cfg.size, cfg.batch_size)
    dm.train_set, dm.val_set, dm.n_classes = FlipDataset(train), val, n_classes  # folders opened above
    channels = int(train[0]["image"].shape[0])
    _seed(cfg.trainer)
    module = SegmentationModule(n_classes or 1, channels, cfg.base, cfg.depth, cfg.lr, cfg.task, cfg.ignore_index)
    monitor, mode = ("val/miou", "max") if cfg.task == "segmentation" else ("val/rmse", "min")
    ckpt, selection = _fit_selected(module, dm, cfg, stage_dir, monitor, mode)
    if cfg.task == "segmentation":
        scores = evaluate_segmentation(module, scored, n_classes=n_classes, ignore_index=cfg.ignore_index)
        metrics = {"miou": scores["miou"], "pixel_acc": scores["pixel_acc"],
                   **{f"iou_class{i}": v for i, v in enumerate(scores["per_class_iou"])}}  # fmt: skip
    else:
        metrics = evaluate_depth(module, scored)
    metrics.update(train_images=len(train), test_images=len(scored), **selection)
    return {"outputs": {"checkpoint": ckpt}, "metrics": _scalars(metrics)}


@command("fit segmentation", "downstream check: train a UNet on real or synthetic labels, score it on a real test folder",
         FitSegmentationCommand)  # fmt: skip
def fit_segmentation(cfg: FitSegmentationCommand) -> int:
    folders = open_dense_folders(cfg)  # bad folders fail before a run directory is made
    split_test(folders[1], cfg.val_fraction)
    run = open_run(cfg, cfg.run)
    stage = run.stage("segmentation")
    out = train_segmentation(cfg, stage, folders)
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
    from autolabel.tasks.compare import augment, relative_mean_shape
    from autolabel.tasks.keypoints import KeypointModule, evaluate_keypoints
    from autolabel.tasks.segmentation import DenseDataModule

    train, test, pairs = folders or open_keypoint_folders(cfg)
    val, scored = split_test(test, cfg.val_fraction)
    dm = DenseDataModule(cfg.train, cfg.test, "keypoints", cfg.size, cfg.batch_size)
    dm.train_set = augment(train, "keypoints", cfg.trainer.seed, pairs)  # random affine (+ flips with pairs)
    dm.val_set = val
    _seed(cfg.trainer)
    module = KeypointModule(train.n_keypoints, int(train[0]["image"].shape[0]), cfg.base, cfg.depth, cfg.lr,
                            cfg.sigma, cfg.pck_threshold, mean_shape=relative_mean_shape(train))  # fmt: skip
    ckpt, selection = _fit_selected(module, dm, cfg, stage_dir, "val/nme", "min")
    scores = evaluate_keypoints(module.model, scored, threshold=cfg.pck_threshold, per_keypoint=True)
    per = scores.pop("per_keypoint_pck")
    metrics = {**scores, **{f"pck_kp{i}": v for i, v in enumerate(per)}, "n_keypoints": train.n_keypoints,
               "train_images": len(train), "test_images": len(scored), **selection}  # fmt: skip
    return {"outputs": {"checkpoint": ckpt}, "metrics": _scalars(metrics)}


@command("fit keypoints", "downstream check: train a keypoint heatmap net on real or synthetic labels, score PCK/NME "
         "on a real test folder", FitKeypointsCommand)  # fmt: skip
def fit_keypoints(cfg: FitKeypointsCommand) -> int:
    folders = open_keypoint_folders(cfg)  # bad folders fail before a run directory is made
    run = open_run(cfg, cfg.run)
    stage = run.stage("keypoints")
    out = train_keypoints(cfg, stage, folders)
    finish_stage(run, stage, out, f"fit keypoints (PCK@{cfg.pck_threshold:g}, NME)")
    return 0
