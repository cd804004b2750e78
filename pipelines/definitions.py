"""The bundled pipelines (``autolabel run pipeline=NAME``) as lists of stages, and their config schema.

``handsoff_then_hilander`` (the default): render the procedural dataset -> train StyleGAN2 -> train the inversion
encoder -> invert the few labeled images and train the label generator -> synthesize a filtered labeled dataset ->
train a segmentation net on it and on the few real labels, score both on real test images -> then the ``hilander``
stages below on the dataset's unlabeled pool. ``handsoff`` stops after the downstream check.

``label_loop``: the unlabeled pool -> pick the images to label (embed + cluster, one per largest cluster) -> wait for
their masks (or copy ground truth with ``select.oracle=true``) -> GAN, encoder, label generator, synthesis -> label
the real pool (and the test images) by inversion -> the downstream check.

``hilander``: prepare data -> train the feature encoder on the meta-training classes -> embed the held-out
meta-training images and the pool -> meta-train Hi-LANDER -> cluster the unlabeled pool (with baselines when it has
labels) -> report.

Each stage lives in ``pipelines/stages/<x>.py`` with its config section; this module only assembles them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from autolabel.config import RunConfig, TrainerConfig
from autolabel.config.downstream import HEADLINE_METRICS, TRAINING_SETS, DownstreamConfig
from autolabel.errors import ConfigError
from pipelines.runner import Pipeline, Stage, StageContext
from pipelines.stages import classifier, data, downstream, encoder, gan, hilander, label_real, labels, select, synthesis
from pipelines.stages.classifier import ClassifierStageConfig
from pipelines.stages.data import HANDSOFF_SOURCES, HILANDER_SOURCES, DataConfig, ShapesDataConfig
from pipelines.stages.encoder import EncoderStageConfig
from pipelines.stages.gan import GANStageConfig
from pipelines.stages.hilander import HiLanderStageConfig
from pipelines.stages.label_real import LabelRealStageConfig
from pipelines.stages.labels import LabelsStageConfig
from pipelines.stages.select import SelectStageConfig
from pipelines.stages.synthesis import SynthesisStageConfig


@dataclass
class PipelineConfig:
    """``autolabel run``: which pipeline, and the settings of every stage any bundled pipeline has."""

    pipeline: str = "handsoff_then_hilander"  # handsoff_then_hilander | handsoff | hilander | label_loop
    from_stage: Optional[str] = None  # force this stage and everything after it to run again
    until_stage: Optional[str] = None  # stop after this stage
    shapes: ShapesDataConfig = field(default_factory=ShapesDataConfig)  # data.source=procedural (handsoff pipelines)
    data: DataConfig = field(default_factory=DataConfig)  # where the data comes from (procedural / your folders ...)
    gan: GANStageConfig = field(default_factory=GANStageConfig)
    encoder: EncoderStageConfig = field(default_factory=EncoderStageConfig)
    labels: LabelsStageConfig = field(default_factory=LabelsStageConfig)
    synthesis: SynthesisStageConfig = field(default_factory=SynthesisStageConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)  # synthetic/real_few/mixed + constant
    classifier: ClassifierStageConfig = field(default_factory=ClassifierStageConfig)
    hilander: HiLanderStageConfig = field(default_factory=HiLanderStageConfig)
    select: SelectStageConfig = field(default_factory=SelectStageConfig)  # label_loop: which pool images to label
    label_real: LabelRealStageConfig = field(default_factory=LabelRealStageConfig)  # label_loop: label the real pool
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(name="pipeline"))
    progress: bool = True

    def __post_init__(self) -> None:
        d = self.data
        if self.pipeline == "hilander":
            source = d.source_for(handsoff=False)
            if source not in HILANDER_SOURCES:
                raise ConfigError(
                    f"data.source={source} feeds the handsoff pipelines; pipeline=hilander takes "
                    f"data.source={' | '.join(HILANDER_SOURCES)}"
                )
            if source == "folders" and not (d.folder("train_dir") and d.folder("pool_dir")):
                raise ConfigError(
                    "data.source=folders needs data.train_dir=DIR (class subfolders) and "
                    "data.pool_dir=DIR (or data.root=DIR holding train/ and pool/)"
                )
        elif self.pipeline == "label_loop":
            if d.source is None and d.images:  # `run pipeline=label_loop data.images=PHOTOS`: your photos, not shapes
                d.source = "folders"
            source = d.source_for(handsoff=True)
            if source not in HANDSOFF_SOURCES:
                raise ConfigError(
                    f"data.source={source} feeds pipeline=hilander only; pipeline=label_loop takes "
                    "data.source=procedural (the default) or folders"
                )
            if source == "folders" and not d.folder("images"):
                raise ConfigError(
                    "data.source=folders for pipeline=label_loop needs data.images=DIR (the unlabeled pool; "
                    "optional data.test=DIR, labeled, for the checks), or data.root=DIR holding images/"
                )
        elif self.pipeline in ("handsoff", "handsoff_then_hilander"):
            source = d.source_for(handsoff=True)
            if source not in HANDSOFF_SOURCES:
                raise ConfigError(
                    f"data.source={source} feeds pipeline=hilander only; pipeline={self.pipeline} takes "
                    "data.source=procedural (the default) or folders"
                )
            if source == "folders" and not (d.folder("images") and d.folder("labeled")):
                raise ConfigError(
                    f"data.source=folders for pipeline={self.pipeline} needs data.images=DIR (unlabeled images) and "
                    "data.labeled=DIR (<= 50 labeled: images/ + masks/), or data.root=DIR holding images/ and labeled/"
                )


_HILANDER_STAGES = [classifier.STAGE, classifier.EMBED, hilander.STAGE, hilander.CLUSTER]
_HANDSOFF_STAGES = [data.HANDSOFF_DATA, gan.STAGE, encoder.STAGE, labels.STAGE, synthesis.STAGE, downstream.STAGE]

HILANDER = Pipeline(
    "hilander",
    [data.HILANDER_DATA, *_HILANDER_STAGES],
    description="cluster an unlabeled pool into unseen categories",
    validate=data.validate_hilander_data,
)
HANDSOFF = Pipeline(
    "handsoff",
    list(_HANDSOFF_STAGES),
    description="generate labeled images from a GAN + few labels",
    validate=lambda cfg: data.validate_handsoff_data(cfg, with_hilander=False),
)
HANDSOFF_THEN_HILANDER = Pipeline(
    "handsoff_then_hilander",
    [*_HANDSOFF_STAGES, *_HILANDER_STAGES],
    description="synthesize labeled data, then cluster an unlabeled pool into unseen categories",
    validate=lambda cfg: data.validate_handsoff_data(cfg, with_hilander=True),
)


def reading(stage: Stage, needs: list[str], data: str) -> Stage:
    """``stage`` reading its ``data`` inputs (``ctx.input_path("data", ...)``) from the stage ``data`` instead, with
    ``needs`` as its dependencies: the handsoff stages reused in a pipeline whose data come from other stages."""

    def fn(ctx: StageContext) -> dict:
        return stage.fn(dataclasses.replace(ctx, inputs={**ctx.inputs, "data": ctx.inputs[data]}))

    return dataclasses.replace(stage, fn=fn, needs=needs)


# The GAN and the encoder train on the pool (they never wait for labels' hash); the label generator and the
# downstream check read the labeled stage (the selected images + their masks, the pool and the test folder).
LABEL_LOOP = Pipeline(
    "label_loop",
    [
        select.POOL,
        select.SELECT,
        select.LABELED,
        reading(gan.STAGE, ["pool"], data="pool"),
        reading(encoder.STAGE, ["pool", "gan"], data="pool"),
        reading(labels.STAGE, ["labeled", "gan", "encoder"], data="labeled"),
        synthesis.STAGE,
        reading(label_real.STAGE, ["labeled", "gan", "encoder", "labels"], data="labeled"),
        reading(downstream.STAGE, ["labeled", "synthesis"], data="labeled"),
    ],
    description="pick the images to label, train HandsOff on their labels, label the real pool too",
    validate=select.validate_pool,
)
PIPELINES: dict[str, Pipeline] = {p.name: p for p in (HILANDER, HANDSOFF, HANDSOFF_THEN_HILANDER, LABEL_LOOP)}


def get_pipeline(name: str) -> Pipeline:
    if name not in PIPELINES:
        import difflib

        near = difflib.get_close_matches(name, list(PIPELINES), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise ConfigError(f"pipeline={name!r} is unknown{hint} (available: {', '.join(PIPELINES)})")
    return PIPELINES[name]


HEADLINE_KEYS = (
    # the downstream check's per-task metrics per training set and the constant: miou_synthetic, nme_constant, ...,
    # each set's spread over seeds right after it when downstream.repeats > 1 (miou_synthetic_sd)
    *(
        k
        for ms in HEADLINE_METRICS.values()
        for m in ms
        for s in (*TRAINING_SETS, "constant")
        for k in (f"{m}_{s}", f"{m}_{s}_sd")
    ),
    # the synthetic-only net scored on the few labeled images (no test images needed; flattering, but it ranks GANs as
    # the test images do): what configs/sweep/handsoff_gan_seeds.yaml ranks GAN seeds by
    *(f"{m}_synthetic_on_labeled" for ms in HEADLINE_METRICS.values() for m in ms),
    "miou_direct",  # label_loop: `autolabel label`'s own masks of the test images against their ground truth
    # the label generator's score on held-out labeled images (labels.train.select_folds >= 2; higher is better)
    "length_heldout_score",
    "pairwise_f",
    "bcubed_f",
    "nmi",
    "n_clusters",
    "n_true_clusters",
    "tau",
)
BASELINE_KEYS = ("pairwise_f", "bcubed_f", "nmi", "n_clusters", "seconds")


def headline(results: list[Any]) -> dict[str, Any]:
    """The numbers a person wants first, from the stages that produced them (later stages win)."""
    import numpy as np

    out: dict[str, Any] = {}
    for r in results:
        m = r.manifest.get("metrics", {})
        for key in HEADLINE_KEYS:
            if key in m and isinstance(m[key], (int, float, np.integer, np.floating)):
                out[key] = m[key]
        if "baselines" in m:
            out["baselines"] = {k: {x: v[x] for x in BASELINE_KEYS} for k, v in m["baselines"].items()}
    return out


# The smallest settings that run every stage of the default pipeline on the bundled shapes in seconds: the test suite
# and benchmarks/gpu_check.py start from them (the shapes of every tensor shrink; no stage is skipped).
TINY_OVERRIDES = (
    "shapes.n_pool=60", "shapes.n_labeled=6", "shapes.n_test=8",
    "gan.kimg=0.032", "gan.model.z_dim=16", "gan.model.w_dim=16", "gan.model.channel_max=16", "gan.train.batch_size=4",
    "encoder.model.width=8", "encoder.model.max_width=16", "encoder.train.phase1_steps=3",
    "encoder.train.finetune_steps=2", "encoder.train.batch_size=4",
    "labels.model.n_members=2", "labels.model.hidden=[8,8]", "labels.model.min_class_pixels=1",
    "labels.train.max_steps=3", "labels.train.pixels_per_image=32", "labels.train.batch_pixels=32",
    "synthesis.n=8", "synthesis.drop_least_uncertain=1", "synthesis.batch_size=4",
    "downstream.steps=4", "downstream.val_every=2", "downstream.base=4", "downstream.batch_size=4",
    "classifier.max_epochs=1", "classifier.model.width=8", "classifier.model.depth=1", "classifier.model.embed_dim=16",
    "hilander.max_epochs=2", "hilander.model.hidden=16", "hilander.train.k_list=[4]", "hilander.train.levels_list=[2]",
    "hilander.cluster.k=4", "hilander.baselines=[kmeans]",
)  # fmt: skip
