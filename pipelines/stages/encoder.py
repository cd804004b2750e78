"""The inversion-encoder stage: latent regression on generator samples, then capped LPIPS fine-tuning on real images
(the generator stays frozen)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolabel.config import TrainerConfig
from autolabel.config.inversion import EncoderConfig, EncoderTrainConfig
from pipelines.runner import Stage, StageContext


@dataclass
class EncoderStageConfig:
    model: EncoderConfig = field(default_factory=lambda: EncoderConfig(width=16, max_width=64))
    # lpips_weight=0: pixel MSE only, so the demo needs no ImageNet weights; set 10 once `autolabel weights lpips` ran
    train: EncoderTrainConfig = field(
        default_factory=lambda: EncoderTrainConfig(
            phase1_steps=300, finetune_steps=60, batch_size=16, lr=1e-3, lpips_weight=0.0
        )
    )


def train_encoder(
    generator: str | Path,
    images: str | Path,
    enc: EncoderConfig,
    train: EncoderTrainConfig,
    lpips_random: bool,
    trainer_cfg: TrainerConfig,
    stage_dir: Path,
) -> dict[str, Any]:
    """Phase 1 on generator samples, then ``finetune_steps`` (capped) on real images; the generator stays frozen."""
    from autolabel.data.images import ImageFolderDataset
    from autolabel.engine import fit
    from autolabel.gan import load_generator
    from autolabel.gan.stylegan2_module import GANDataModule
    from autolabel.handsoff.encoder_module import EncoderModule
    from autolabel.handsoff.lpips_weights import build_lpips

    gen = load_generator(generator)
    needs_lpips = train.lpips_weight > 0 or train.phase1_lpips_weight > 0
    lp = build_lpips(train.lpips_net, train.lpips_weights, random_backbone=lpips_random) if needs_lpips else None
    ds = ImageFolderDataset(images, size=gen.resolution, channels=gen.img_channels, with_labels=False)
    dm = GANDataModule(size=gen.resolution, channels=gen.img_channels, batch_size=train.batch_size, dataset=ds)
    module = EncoderModule(enc, train, generator=gen, lpips=lp, generator_path=str(generator))
    tc = dataclasses.replace(trainer_cfg, max_steps=train.max_steps, max_epochs=None)
    trainer = fit(module, dm, tc, stage_dir)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    metrics["steps"] = int(trainer.global_step)
    return {"outputs": {"checkpoint": stage_dir / "checkpoints" / "last.ckpt"}, "metrics": metrics}


def stage_encoder(ctx: StageContext) -> dict[str, Any]:
    e: EncoderStageConfig = ctx.cfg.encoder
    generator, images = ctx.input_path("gan", "generator"), ctx.input_path("data", "images")
    return train_encoder(generator, images, e.model, e.train, False, ctx.cfg.trainer, ctx.dir)


STAGE = Stage(
    "encoder",
    stage_encoder,
    needs=["data", "gan"],
    config_keys=["encoder", "trainer.precision"],
    description="train the inversion encoder (generator frozen)",
    distributed=True,
)
