"""``autolabel fit gan`` (train StyleGAN2 on an image folder) and ``autolabel weights gan`` (convert a rosinality
``.pt`` / NVIDIA ``.pkl`` / Lightning checkpoint into the native generator file)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from autolabel.config import RunConfig, TrainerConfig
from autolabel.config.gan import GANTrainConfig, GeneratorConfig
from pipelines.commands.base import Command, Invocation, run_stage
from pipelines.runner import Stage
from pipelines.stages.gan import check_kimg, train_gan


@dataclass
class FitGANCommand:
    images: str = MISSING  # folder of training images (any layout; class subfolders are ignored)
    kimg: float = 50.0  # training length in thousands of real images shown
    gan: GeneratorConfig = field(default_factory=GeneratorConfig)
    gan_train: GANTrainConfig = field(default_factory=GANTrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(name="gan"))

    def __post_init__(self) -> None:
        check_kimg(self.kimg, "kimg")


def fit_gan(cfg: FitGANCommand, inv: Invocation) -> int:
    def stage(ctx):
        return train_gan(cfg.images, cfg.kimg, cfg.gan, cfg.gan_train, cfg.trainer, ctx.dir)

    return run_stage(cfg, inv, Stage("gan", stage, description="train StyleGAN2", distributed=True), "fit gan")


@dataclass
class WeightsGANCommand:
    src: str = MISSING  # rosinality .pt, NVIDIA stylegan2-ada .pkl, autolabel generator.pt or a `fit gan` .ckpt
    out: str = "generator.pt"


def weights_gan(cfg: WeightsGANCommand, inv: Invocation) -> int:
    from autolabel.engine.paths import check_output_file
    from autolabel.gan import load_generator, save_generator

    check_output_file(cfg.out, {"src": cfg.src}, example="generator.pt")
    gen = load_generator(cfg.src)
    path = save_generator(gen, cfg.out)
    print(
        f"{cfg.src} -> {path}: resolution {gen.resolution}, num_ws {gen.num_ws}, "
        f"hypercolumn width {sum(gen.feature_channels)}"
    )
    return 0


COMMANDS = (
    Command(
        "fit gan",
        "train StyleGAN2 on an image folder (DiffAugment, lazy R1, EMA) -> generator.pt",
        FitGANCommand,
        fit_gan,
    ),
    Command(
        "weights gan",
        "convert a pretrained StyleGAN2 (.pt/.pkl/.ckpt) into autolabel's generator file",
        WeightsGANCommand,
        weights_gan,
    ),
)
