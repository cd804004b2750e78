"""``autolabel fit classifier`` (the feature encoder) and ``autolabel embed`` (an image folder -> feature pool)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from autolabel.config import RunConfig, TrainerConfig
from autolabel.config.classifier import ClassifierConfig
from autolabel.errors import ConfigError
from pipelines.commands.base import Command, Invocation, run_stage
from pipelines.runner import Stage
from pipelines.stages.classifier import train_classifier


@dataclass
class FitClassifierCommand:
    train_dir: str = MISSING  # image folder with one subfolder per meta-training class
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_epochs=10))
    run: RunConfig = field(default_factory=lambda: RunConfig(name="classifier"))


def fit_classifier(cfg: FitClassifierCommand, inv: Invocation) -> int:
    def stage(ctx):
        return train_classifier(cfg.train_dir, cfg.classifier, cfg.trainer, ctx.dir)

    entry = Stage("classifier", stage, description="train the feature encoder", distributed=True)
    return run_stage(cfg, inv, entry, "fit classifier")


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


def embed(cfg: EmbedCommand, inv: Invocation) -> int:
    from autolabel.engine.dist import inference_device
    from autolabel.tasks.classifier_module import embed_folder

    device = inference_device("auto") if cfg.device == "auto" else cfg.device
    if cfg.embedder:
        from autolabel.data.embedders import embed_with, load_embedder

        model, spec = load_embedder(cfg.embedder, cfg.weights)
        size = cfg.image_size or spec.get("image_size", 224)
        info = embed_with(
            model,
            cfg.images,
            cfg.out,
            image_size=size,
            mean=spec["mean"],
            std=spec["std"],
            batch_size=cfg.batch_size,
            device=device,
        )
    elif not cfg.checkpoint:
        raise ConfigError(
            "embed needs checkpoint=CKPT (from `autolabel fit classifier`) or embedder=torchscript:FILE "
            "| embedder=timm:NAME weights=FILE"
        )
    else:
        info = embed_folder(cfg.checkpoint, cfg.images, cfg.out, batch_size=cfg.batch_size, device=device)
    print(f"embedded {info['n']} images -> {info['dim']}-d features: {info['path']}")
    return 0


COMMANDS = (
    Command(
        "fit classifier",
        "train the feature encoder on an image folder with class subfolders",
        FitClassifierCommand,
        fit_classifier,
    ),
    Command(
        "embed",
        "embed an image folder into a feature pool .npz (trained encoder, TorchScript or timm)",
        EmbedCommand,
        embed,
    ),
)
