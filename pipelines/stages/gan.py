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


def candidate_seed(seed: int, i: int) -> int:
    """The seed of GAN start ``i`` (``gan_train.candidates``): start 0 is the run's own seed."""
    return int(seed) + 1000 * i


def train_gan(
    images: str | Path,
    kimg: float,
    gcfg: GeneratorConfig,
    tcfg: GANTrainConfig,
    trainer_cfg: TrainerConfig,
    stage_dir: Path,
) -> dict[str, Any]:
    """Train StyleGAN2; writes ``generator.pt`` (the EMA generator, native format) and a sample grid.

    With ``tcfg.candidates > 1``: starts ``i`` train in ``candidates/<i>/`` for ``candidate_kimg`` each, the one with
    the lowest quality metric goes on to ``kimg`` in its own folder (the others stay as they are), ``candidates.png``
    shows their curves. Every start resumes from its own ``last.ckpt``, so a killed stage continues where it was."""
    from torchvision.utils import save_image

    from autolabel.data.images import ImageFolderDataset
    from autolabel.engine import fit
    from autolabel.engine.dist import global_rank
    from autolabel.engine.io import read_json, write_json
    from autolabel.engine.trainer import seed_all
    from autolabel.gan import save_generator
    from autolabel.gan.quality import GANQualityCallback
    from autolabel.gan.stylegan2_module import GANDataModule, GANModule
    from autolabel.viz import plot_gan_starts

    ds = ImageFolderDataset(images, size=gcfg.resolution, channels=gcfg.img_channels, with_labels=False)

    def epochs_for(k: float) -> int:
        return max(1, math.ceil(k * 1000 / len(ds)))

    def train(seed: int, run_dir: Path, k: float):
        dm = GANDataModule(size=gcfg.resolution, channels=gcfg.img_channels, batch_size=tcfg.batch_size,
                           num_workers=tcfg.num_workers, dataset=ds)  # fmt: skip
        seed_all(seed)  # the initial weights follow this start's seed, not what trained before in the process
        module = GANModule(gcfg, tcfg)
        tc = dataclasses.replace(trainer_cfg, seed=seed, max_epochs=epochs_for(k), max_steps=-1)
        trainer = fit(module, dm, dataclasses.replace(tc, strategy=gan_strategy(tc)), run_dir)
        quality = next((c for c in trainer.callbacks if isinstance(c, GANQualityCallback)), None)
        if quality is not None:
            quality.load_best(module)  # also when Lightning skipped the loop (a finished run resumed)
        return module, trainer, quality

    run_dir, seed, starts = stage_dir, trainer_cfg.seed, []
    if tcfg.candidates > 1:
        choice = stage_dir / "candidates" / "choice.json"  # written once the starts are done; a resume reads it
        if choice.is_file():
            starts = read_json(choice)
        else:
            head = min(tcfg.candidate_kimg, kimg)
            for i in range(tcfg.candidates):
                cand_seed, cand_dir = candidate_seed(trainer_cfg.seed, i), stage_dir / "candidates" / str(i)
                _, trainer, quality = train(cand_seed, cand_dir, head)
                assert quality is not None  # GANTrainConfig requires the metric with candidates > 1
                starts.append({"candidate": i, "seed": cand_seed, "best_fd_vgg": quality.best,
                               "history": quality.history})  # fmt: skip
                if trainer.is_global_zero:
                    print(f"GAN start {i + 1}/{tcfg.candidates} (seed {cand_seed}): best fd_vgg {quality.best:.1f} "
                          f"in {head:g} kimg", flush=True)  # fmt: skip
            if trainer.is_global_zero:
                write_json(choice, starts)
        win = min(starts, key=lambda c: c["best_fd_vgg"])
        run_dir, seed = stage_dir / "candidates" / str(win["candidate"]), win["seed"]
        if global_rank() == 0:
            print(f"GAN: continuing start {win['candidate'] + 1} (seed {seed}) to {kimg:g} kimg", flush=True)
    module, trainer, quality = train(seed, run_dir, kimg)
    gen_path, samples = stage_dir / "generator.pt", stage_dir / "samples.png"
    figures = [str(samples)]
    if trainer.is_global_zero:  # under DDP every rank holds the same g_ema; one writer
        save_generator(module.g_ema.cpu(), gen_path)
        save_image(module.sample_grid(16, seed=0), samples)
        if starts:
            kept = quality.history if quality is not None else win["history"]
            figures.append(str(plot_gan_starts(starts, win["candidate"], kept, stage_dir / "candidates.png")))
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    metrics["images"] = len(ds)
    metrics["epochs"] = epochs_for(kimg)
    if starts:
        metrics["candidate"] = win["candidate"]
        metrics["candidate_seed"] = seed
        metrics.update({f"candidate{c['candidate']}_best_fd_vgg": c["best_fd_vgg"] for c in starts})
    return {
        "outputs": {"generator": gen_path, "checkpoint": run_dir / "checkpoints" / "last.ckpt"},
        "metrics": metrics,
        "figures": figures,
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
