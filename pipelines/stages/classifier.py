"""The feature-encoder stages: ``classifier`` trains it on the meta-training classes, ``embed`` embeds the held-out
meta-training images and the pool into feature pools (both pass your own features on with ``data.source=features``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolabel.config import TrainerConfig
from autolabel.config.classifier import ClassifierConfig
from autolabel.errors import ConfigError
from pipelines.runner import Stage, StageContext


def check_epochs(max_epochs: int, key: str) -> None:
    if max_epochs < 1:
        raise ConfigError(f"{key}={max_epochs} must be >= 1")


@dataclass
class ClassifierStageConfig:
    model: ClassifierConfig = field(default_factory=lambda: ClassifierConfig(image_size=16, width=24, batch_size=32))
    max_epochs: int = 30

    def __post_init__(self) -> None:
        check_epochs(self.max_epochs, "classifier.max_epochs")


def train_classifier(
    train_dir: str | Path, cfg: ClassifierConfig, trainer_cfg: TrainerConfig, stage_dir: Path
) -> dict[str, Any]:
    """Train the feature encoder; returns the stage manifest (checkpoint + final metrics)."""
    from autolabel.engine import fit
    from autolabel.tasks.classifier import ClassifierDataModule
    from autolabel.tasks.classifier_module import ClassifierModule

    dm = ClassifierDataModule(train_dir, cfg)
    module = ClassifierModule(cfg, n_classes=len(dm.classes), class_names=dm.classes)
    trainer = fit(module, dm, trainer_cfg, stage_dir)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    outputs = {"checkpoint": stage_dir / "checkpoints" / "last.ckpt"}
    return {"outputs": outputs, "metrics": metrics, "classes": dm.classes}


def stage_classifier(ctx: StageContext) -> dict[str, Any]:
    c: ClassifierStageConfig = ctx.cfg.classifier
    if "train_features" in ctx.inputs["data"].get("outputs", {}):
        return {"metrics": {"skipped": "features given (data.source=features)"}}
    tc = dataclasses.replace(ctx.cfg.trainer, max_epochs=c.max_epochs, max_steps=-1)
    return train_classifier(ctx.input_path("data", "train_dir"), c.model, tc, ctx.dir)


def stage_embed(ctx: StageContext) -> dict[str, Any]:
    from autolabel.engine.dist import inference_device
    from autolabel.tasks.classifier_module import embed_folder

    given = ctx.inputs["data"].get("outputs", {})
    if "train_features" in given:  # bring-your-own embeddings: pass them on
        return {
            "outputs": {"train_features": Path(given["train_features"]), "pool_features": Path(given["pool_features"])}
        }
    device = inference_device(ctx.cfg.trainer.accelerator)
    ckpt, progress = ctx.input_path("classifier", "checkpoint"), ctx.cfg.progress
    tr = embed_folder(ckpt, ctx.input_path("data", "meta_dir"), ctx.dir / "train.npz", device=device, progress=progress)
    po = embed_folder(ckpt, ctx.input_path("data", "pool_dir"), ctx.dir / "pool.npz", device=device, progress=progress)
    return {
        "outputs": {"train_features": tr["path"], "pool_features": po["path"]},
        "metrics": {"train_n": tr["n"], "pool_n": po["n"], "dim": tr["dim"]},
    }


STAGE = Stage(
    "classifier",
    stage_classifier,
    needs=["data"],
    config_keys=["classifier", "trainer.precision", "trainer.seed"],
    description="train the feature encoder on the meta-training classes",
    distributed=True,
)
EMBED = Stage("embed", stage_embed, needs=["data", "classifier"], description="embed both image folders")
