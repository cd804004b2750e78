"""The label-generator stage: invert the few labeled images, train the pixel-wise ensemble on hypercolumns
(:func:`autolabel.handsoff.prepare.train_label_generator`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autolabel.config.labelgen import LabelGeneratorConfig, LabelTrainConfig
from autolabel.errors import ConfigError
from pipelines.runner import Stage, StageContext


@dataclass
class LabelsStageConfig:
    refine_steps: int = 0  # per-image latent refinement after the encoder (reference: ~500)
    model: LabelGeneratorConfig = field(
        default_factory=lambda: LabelGeneratorConfig(n_members=5, hidden=[64, 32], fp16=False, min_class_pixels=4)
    )
    train: LabelTrainConfig = field(
        default_factory=lambda: LabelTrainConfig(
            max_steps=300, pixels_per_image=256, batch_pixels=256, images_per_step=5
        )
    )

    def __post_init__(self) -> None:
        if self.refine_steps < 0:
            raise ConfigError(f"labels.refine_steps={self.refine_steps} must be >= 0 (0: the encoder's latents)")


def stage_labels(ctx: StageContext) -> dict[str, Any]:
    from autolabel.handsoff.prepare import train_label_generator

    lab: LabelsStageConfig = ctx.cfg.labels
    return train_label_generator(
        ctx.input_path("gan", "generator"),
        ctx.input_path("encoder", "checkpoint"),
        ctx.input_path("data", "labeled"),
        lab.model,
        lab.train,
        ctx.cfg.trainer,
        ctx.dir,
        refine_steps=lab.refine_steps,
        progress=ctx.cfg.progress,
    )


STAGE = Stage(
    "labels",
    stage_labels,
    needs=["data", "gan", "encoder"],
    config_keys=["labels"],
    description="invert the labeled images, train the label generator on hypercolumns",
    distributed=True,
)
