"""Feature-encoder commands: ``autolabel fit classifier`` and ``autolabel embed``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from autolabel.config import RunConfig, TrainerConfig
from autolabel.config.classifier import ClassifierConfig
from autolabel.errors import ConfigError
from pipelines.registry import command
from pipelines.stages.common import finish_stage, open_run


@dataclass
class FitClassifierCommand:
    train_dir: str = MISSING  # image folder with one subfolder per meta-training class
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_epochs=10))
    run: RunConfig = field(default_factory=lambda: RunConfig(name="classifier"))


def train_classifier(
    train_dir: str | Path, cfg: ClassifierConfig, trainer_cfg: TrainerConfig, stage_dir: Path
) -> dict[str, Any]:
    """Train the feature encoder; returns the stage manifest (checkpoint + final metrics)."""
    from autolabel.engine import fit
    from autolabel.tasks.classifier import ClassifierDataModule, ClassifierModule

    dm = ClassifierDataModule(train_dir, cfg)
    module = ClassifierModule(cfg, len(dm.classes), dm.classes)
    trainer = fit(module, dm, trainer_cfg, stage_dir)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    return {"outputs": {"checkpoint": stage_dir / "checkpoints" / "last.ckpt"}, "metrics": metrics,
            "classes": dm.classes}  # fmt: skip


@command("fit classifier", "train the feature encoder on an image folder with class subfolders", FitClassifierCommand)
def fit_classifier(cfg: FitClassifierCommand) -> int:
    run = open_run(cfg, cfg.run)
    stage = run.stage("classifier")
    out = train_classifier(cfg.train_dir, cfg.classifier, cfg.trainer, stage)
    finish_stage(run, stage, out, "fit classifier")
    return 0


@dataclass
class EmbedCommand:
    checkpoint: Optional[str] = None  # written by `autolabel fit classifier` (or use embedder=)
    images: str = MISSING  # image folder (class subfolders become labels)
    out: str = "pool.npz"
    batch_size: int = 256
    device: str = "auto"
    embedder: Optional[str] = None  # torchscript:FILE.pt | timm:NAME (with weights=FILE); nothing is downloaded
    weights: Optional[str] = None  # embedder=timm:NAME: the local weights file (.safetensors / .pth)
    image_size: int = 0  # embedder=: input side in pixels (0 = the model's, else 224)


@command("embed", "embed an image folder into a feature pool .npz (trained encoder, TorchScript or timm)", EmbedCommand)
def embed(cfg: EmbedCommand) -> int:
    import torch

    from autolabel.tasks.classifier import embed_folder

    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    if cfg.embedder:
        from autolabel.data.embedders import embed_with, load_embedder

        model, spec = load_embedder(cfg.embedder, cfg.weights)
        info = embed_with(model, cfg.images, cfg.out, image_size=cfg.image_size or spec.get("image_size", 224),
                          mean=spec["mean"], std=spec["std"], batch_size=cfg.batch_size, device=device)  # fmt: skip
    elif not cfg.checkpoint:
        raise ConfigError("embed needs checkpoint=CKPT (from `autolabel fit classifier`) or embedder=torchscript:FILE "
                          "| embedder=timm:NAME weights=FILE")  # fmt: skip
    else:
        info = embed_folder(cfg.checkpoint, cfg.images, cfg.out, batch_size=cfg.batch_size, device=device)
    print(f"embedded {info['n']} images -> {info['dim']}-d features: {info['path']}")
    return 0
