"""Downstream checks of label quality, each trained on a labeled folder -- real, or synthetic from ``autolabel
synthesize`` -- and scored on a real labeled test folder:

- ``fit segmentation``: a UNet for masks (mIoU per class + mean, pixel accuracy) or depth (RMSE, abs-rel, ...);
- ``fit keypoints``: a UNet heatmap regressor (PCK@t and NME, normalized by the image diagonal).

Synthetic datasets hold ``images/`` + ``labels/`` (``<id>.png`` masks, ``<id>.json`` keypoints, ``<id>.npy`` depth) at
the image resolution; only the samples listed in ``manifest.jsonl`` (the filtered, merged set) are read, and they are
rescaled to ``size`` like the images. Checkpoint selection: see :mod:`pipelines.stages.downstream`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from autolabel.config import RunConfig, TrainerConfig
from autolabel.errors import ConfigError
from pipelines.commands.base import Command, Invocation, run_stage
from pipelines.runner import Stage
from pipelines.stages.downstream import (
    DenseFitConfig,
    check_size,
    open_dense_folders,
    open_keypoint_folders,
    split_test,
    train_keypoints,
    train_segmentation,
)


@dataclass
class DownstreamCommand(DenseFitConfig):
    """A downstream check's net and training (:class:`DenseFitConfig`) plus its folders."""

    train: str = MISSING  # a labeled folder, or a synthetic dataset written by `autolabel synthesize`
    test: str = MISSING  # a real labeled folder
    size: int = 64
    limit: int = -1  # use at most this many training images (-1: all)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_size(self.size, self.depth)


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
            ok = hasattr(p, "__len__") and len(p) == 2 and all(isinstance(i, int) and i >= 0 for i in p)
            if not ok or p[0] == p[1]:
                raise ConfigError(
                    f"flip_pairs={self.flip_pairs!r}: give pairs of distinct keypoint indices, "
                    "e.g. flip_pairs=[[2,3]] (or leave it null to disable flips)"
                )


def fit_segmentation(cfg: FitSegmentationCommand, inv: Invocation) -> int:
    folders = open_dense_folders(cfg.train, cfg.test, cfg.task, cfg.size, cfg.limit)  # bad folders fail before a run
    split_test(folders[1], cfg.val_fraction)  # directory is made

    def stage(ctx):
        return train_segmentation(
            cfg, cfg.train, cfg.test, cfg.task, cfg.size, cfg.trainer, ctx.dir, cfg.limit, folders, cfg.ignore_index
        )

    entry = Stage("segmentation", stage, description="train and score a UNet", distributed=True)
    return run_stage(cfg, inv, entry, f"fit segmentation ({cfg.task})")


def fit_keypoints(cfg: FitKeypointsCommand, inv: Invocation) -> int:
    folders = open_keypoint_folders(cfg.train, cfg.test, cfg.size, cfg.limit, cfg.min_confidence, cfg.flip_pairs)

    def stage(ctx):
        return train_keypoints(
            cfg,
            cfg.train,
            cfg.test,
            cfg.size,
            cfg.trainer,
            ctx.dir,
            limit=cfg.limit,
            sigma=cfg.sigma,
            pck_threshold=cfg.pck_threshold,
            min_confidence=cfg.min_confidence,
            flip_pairs=cfg.flip_pairs,
            folders=folders,
        )

    entry = Stage("keypoints", stage, description="train and score a keypoint net", distributed=True)
    return run_stage(cfg, inv, entry, f"fit keypoints (PCK@{cfg.pck_threshold:g}, NME)")


COMMANDS = (
    Command(
        "fit segmentation",
        "downstream check: train a UNet on real or synthetic labels, score it on a real test folder",
        FitSegmentationCommand,
        fit_segmentation,
    ),
    Command(
        "fit keypoints",
        "downstream check: train a keypoint heatmap net on real or synthetic labels, score "
        "PCK/NME on a real test folder",
        FitKeypointsCommand,
        fit_keypoints,
    ),
)
