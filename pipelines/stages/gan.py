"""GAN commands: ``autolabel fit gan`` (train StyleGAN2 on an image folder) and ``autolabel weights gan`` (convert a
rosinality ``.pt`` / NVIDIA ``.pkl`` / Lightning checkpoint into the native generator file)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from autolabel.config import RunConfig, TrainerConfig
from autolabel.config.gan import GANTrainConfig, GeneratorConfig
from pipelines.registry import command
from pipelines.stages.common import finish_stage, open_run


@dataclass
class FitGANCommand:
    images: str = MISSING  # folder of training images (any layout; class subfolders are ignored)
    kimg: float = 50.0  # training length in thousands of real images shown
    gan: GeneratorConfig = field(default_factory=GeneratorConfig)
    gan_train: GANTrainConfig = field(default_factory=GANTrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(name="gan"))


_DDP_FAMILY = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")


def _multi_device(tc: TrainerConfig) -> bool:
    """Whether ``tc`` places the run on more than one process (several devices or nodes)."""
    d = tc.devices
    if tc.num_nodes > 1:
        return True
    if not isinstance(d, (int, str)):  # a list of device ids
        return len(d) > 1
    s = str(d).strip()
    if "," in s:  # Lightning's "0,1" form
        return len([x for x in s.split(",") if x.strip()]) > 1
    if s.isdigit():
        return int(s) > 1
    if s not in ("auto", "-1") or str(tc.accelerator) == "cpu":  # auto / -1 on CPU is one process
        return False
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() > 1


def gan_strategy(tc: TrainerConfig) -> str:
    """The trainer strategy for GAN training: G and D are stepped in separate backward passes (each leaving the other
    network without gradients), so DDP needs unused-parameter detection -- ``ddp``/``ddp_spawn``/``ddp_fork``/
    ``ddp_notebook`` become their ``*_find_unused_parameters_true`` form, and ``auto`` on several devices becomes
    ``ddp_find_unused_parameters_true``. Anything else is passed through unchanged."""
    s = str(tc.strategy)
    if s in _DDP_FAMILY:
        return f"{s}_find_unused_parameters_true"
    if s == "auto" and _multi_device(tc):
        return "ddp_find_unused_parameters_true"
    return s


def train_gan(images: str | Path, kimg: float, gcfg: GeneratorConfig, tcfg: GANTrainConfig, trainer_cfg: TrainerConfig,
              stage_dir: Path) -> dict[str, Any]:  # fmt: skip
    """Train StyleGAN2; writes ``generator.pt`` (the EMA generator, native format) and a sample grid."""
    from torchvision.utils import save_image

    from autolabel.data.images import ImageFolderDataset
    from autolabel.engine import fit
    from autolabel.gan import save_generator
    from autolabel.gan.module import GANDataModule, GANModule

    ds = ImageFolderDataset(images, size=gcfg.resolution, channels=gcfg.img_channels, with_labels=False)
    epochs = max(1, math.ceil(kimg * 1000 / len(ds)))
    dm = GANDataModule(size=gcfg.resolution, channels=gcfg.img_channels, batch_size=tcfg.batch_size,
                       num_workers=tcfg.num_workers, dataset=ds)  # fmt: skip
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
    return {"outputs": {"generator": gen_path, "checkpoint": stage_dir / "checkpoints" / "last.ckpt"},
            "metrics": metrics, "figures": [str(samples)]}  # fmt: skip


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
    return {"outputs": {"generator": gen_path}, "figures": [str(samples)],
            "metrics": {"resolution": gen.resolution, "num_ws": gen.num_ws, "pretrained": str(src)}}  # fmt: skip


@command("fit gan", "train StyleGAN2 on an image folder (DiffAugment, lazy R1, EMA) -> generator.pt", FitGANCommand)
def fit_gan(cfg: FitGANCommand) -> int:
    run = open_run(cfg, cfg.run)
    stage = run.stage("gan")
    out = train_gan(cfg.images, cfg.kimg, cfg.gan, cfg.gan_train, cfg.trainer, stage)
    finish_stage(run, stage, out, "fit gan")
    return 0


@dataclass
class WeightsGANCommand:
    src: str = MISSING  # rosinality .pt, NVIDIA stylegan2-ada .pkl, autolabel generator.pt or a `fit gan` .ckpt
    out: str = "generator.pt"


@command("weights gan", "convert a pretrained StyleGAN2 (.pt/.pkl/.ckpt) into autolabel's generator file",
         WeightsGANCommand)  # fmt: skip
def weights_gan(cfg: WeightsGANCommand) -> int:
    from autolabel.engine.paths import check_output_file
    from autolabel.gan import load_generator, save_generator

    check_output_file(cfg.out, {"src": cfg.src}, example="generator.pt")
    gen = load_generator(cfg.src)
    path = save_generator(gen, cfg.out)
    print(f"{cfg.src} -> {path}: resolution {gen.resolution}, num_ws {gen.num_ws}, "
          f"hypercolumn width {sum(gen.feature_channels)}")  # fmt: skip
    return 0
