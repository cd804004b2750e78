"""The GAN stage: train StyleGAN2 on the unlabeled pool (DiffAugment, lazy R1, EMA), or bring your own generator."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from autolabel.config import TrainerConfig
from autolabel.config.gan import GANTrainConfig, GeneratorConfig
from autolabel.errors import ConfigError
from pipelines.runner import Stage, StageContext


@dataclass
class GANStageConfig:
    # Bring your own GAN: a rosinality .pt, NVIDIA stylegan2-ada .pkl or autolabel generator.pt -> no GAN training
    pretrained: Optional[str] = None
    kimg: float = 6.0
    model: GeneratorConfig = field(
        default_factory=lambda: GeneratorConfig(
            resolution=16, z_dim=64, w_dim=64, n_mapping=2, channel_base=512, channel_max=64
        )
    )
    train: GANTrainConfig = field(default_factory=lambda: GANTrainConfig(batch_size=16, r1_gamma=1.0))

    def __post_init__(self) -> None:
        check_kimg(self.kimg, "gan.kimg")


def check_kimg(kimg: float, key: str) -> None:
    if not kimg > 0:
        raise ConfigError(f"{key}={kimg} must be > 0 (training length in thousands of real images shown)")


_DDP_FAMILY = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")


def gan_strategy(tc: TrainerConfig) -> str:
    """The trainer strategy for GAN training: G and D are stepped in separate backward passes (each leaving the other
    network without gradients), so DDP needs unused-parameter detection -- ``ddp``/``ddp_spawn``/``ddp_fork``/
    ``ddp_notebook`` become their ``*_find_unused_parameters_true`` form, and ``auto`` on several devices becomes
    ``ddp_find_unused_parameters_true``. Anything else is passed through unchanged."""
    from autolabel.engine.dist import multi_device

    s = str(tc.strategy)
    if s in _DDP_FAMILY:
        return f"{s}_find_unused_parameters_true"
    if s == "auto" and multi_device(tc):
        return "ddp_find_unused_parameters_true"
    return s


def train_gan(
    images: str | Path,
    kimg: float,
    gcfg: GeneratorConfig,
    tcfg: GANTrainConfig,
    trainer_cfg: TrainerConfig,
    stage_dir: Path,
) -> dict[str, Any]:
    """Train StyleGAN2; writes ``generator.pt`` (the EMA generator, native format) and a sample grid."""
    from torchvision.utils import save_image

    from autolabel.data.images import ImageFolderDataset
    from autolabel.engine import fit
    from autolabel.gan import save_generator
    from autolabel.gan.stylegan2_module import GANDataModule, GANModule

    ds = ImageFolderDataset(images, size=gcfg.resolution, channels=gcfg.img_channels, with_labels=False)
    epochs = max(1, math.ceil(kimg * 1000 / len(ds)))
    dm = GANDataModule(
        size=gcfg.resolution,
        channels=gcfg.img_channels,
        batch_size=tcfg.batch_size,
        num_workers=tcfg.num_workers,
        dataset=ds,
    )
    module = GANModule(gcfg, tcfg)
    tc = dataclasses.replace(trainer_cfg, max_epochs=epochs, max_steps=-1)
    trainer = fit(module, dm, dataclasses.replace(tc, strategy=gan_strategy(tc)), stage_dir)
    gen_path, samples = stage_dir / "generator.pt", stage_dir / "samples.png"
    if trainer.is_global_zero:  # under DDP every rank holds the same g_ema; one writer
        save_generator(module.g_ema.cpu(), gen_path)
        save_image(module.sample_grid(16, seed=0), samples)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    metrics["images"] = len(ds)
    metrics["epochs"] = epochs
    return {
        "outputs": {"generator": gen_path, "checkpoint": stage_dir / "checkpoints" / "last.ckpt"},
        "metrics": metrics,
        "figures": [str(samples)],
    }


def import_gan(src: str | Path, stage_dir: Path) -> dict[str, Any]:
    """Bring your own GAN: convert a pretrained generator into ``generator.pt`` (+ a sample grid) instead of training."""
    import torch
    from torchvision.utils import make_grid, save_image

    from autolabel.gan import load_generator, save_generator

    gen = load_generator(src).eval()
    gen_path = save_generator(gen, stage_dir / "generator.pt")
    with torch.no_grad():
        z = torch.randn(16, gen.z_dim, generator=torch.Generator().manual_seed(0))
        img = gen(z, truncation_psi=0.7, noise_mode="const").float()
    samples = stage_dir / "samples.png"
    save_image(make_grid((img.clamp(-1, 1) + 1) / 2, nrow=4), samples)
    return {
        "outputs": {"generator": gen_path},
        "figures": [str(samples)],
        "metrics": {"resolution": gen.resolution, "num_ws": gen.num_ws, "pretrained": str(src)},
    }


def stage_gan(ctx: StageContext) -> dict[str, Any]:
    g: GANStageConfig = ctx.cfg.gan
    if g.pretrained:
        return import_gan(g.pretrained, ctx.dir)
    return train_gan(ctx.input_path("data", "images"), g.kimg, g.model, g.train, ctx.cfg.trainer, ctx.dir)


STAGE = Stage(
    "gan",
    stage_gan,
    needs=["data"],
    config_keys=["gan", "trainer.precision", "trainer.seed"],
    description="train StyleGAN2 on the unlabeled pool",
    distributed=True,
)
