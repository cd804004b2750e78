"""Downstream checks of label quality: ``fit segmentation`` (a UNet for masks or depth) trained on a labeled folder --
real, or synthetic from ``autolabel synthesize`` -- and scored on a real labeled test folder."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from autolabel.config import RunConfig, TrainerConfig
from autolabel.errors import ConfigError
from pipelines.registry import command
from pipelines.stages.common import finish_stage, open_run


@dataclass
class FitSegmentationCommand:
    """Downstream check of label quality: train a small UNet on ``train`` (a labeled folder, or a synthetic dataset
    written by ``autolabel synthesize``) and score it on the real labeled folder ``test``."""

    train: str = MISSING
    test: str = MISSING
    task: str = "segmentation"  # segmentation | depth
    size: int = 64
    base: int = 16
    depth: int = 3
    lr: float = 1e-3
    batch_size: int = 8
    max_epochs: int = 20
    limit: int = -1  # use at most this many training images (-1: all)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(name="segmentation"))

    def __post_init__(self) -> None:
        if self.task not in ("segmentation", "depth"):
            raise ConfigError(
                f"task={self.task!r}: use segmentation or depth (keypoint nets: autolabel.tasks.keypoints)"
            )


def open_labeled(root: str | Path, task: str, size: int, n_classes: int | None = None, limit: int | None = None) -> Any:
    """A labeled folder (``images/`` + ``masks/``/``depth/``) or a synthetic dataset (``images/`` + ``labels/``)."""
    from autolabel.data.labeled import LabeledFolder

    r = Path(root)
    if task == "segmentation" and (r / "labels").is_dir() and not (r / "masks").is_dir():
        return LabeledFolder.from_dirs(r / "images", r / "labels", size=size, n_classes=n_classes, limit=limit,
                                       mask_mode="index")  # fmt: skip
    return LabeledFolder(r, task=task, size=size, n_classes=n_classes, limit=limit)


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
    train = open_labeled(cfg.train, cfg.task, cfg.size, limit=limit)
    test = open_labeled(cfg.test, cfg.task, cfg.size)
    n_classes = max(train.n_classes, test.n_classes) if cfg.task == "segmentation" else None
    dm = DenseDataModule(cfg.train, cfg.test, cfg.task, cfg.size, cfg.batch_size)
    dm.train_set, dm.val_set, dm.n_classes = FlipDataset(train), test, n_classes  # folders opened above
    channels = int(train[0]["image"].shape[0])
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
            "metrics": {k: float(v) for k, v in metrics.items()}}  # fmt: skip


@command("fit segmentation", "downstream check: train a UNet on real or synthetic labels, score it on a real test folder",
         FitSegmentationCommand)  # fmt: skip
def fit_segmentation(cfg: FitSegmentationCommand) -> int:
    run = open_run(cfg, cfg.run)
    stage = run.stage("segmentation")
    out = train_segmentation(cfg, stage)
    finish_stage(run, stage, out, f"fit segmentation ({cfg.task})")
    return 0
