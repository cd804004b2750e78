"""The bundled pipelines (``autolabel run pipeline=NAME``) and their config schema.

``handsoff_then_hilander`` (the default): render the procedural dataset -> train StyleGAN2 -> train the inversion
encoder -> invert the few labeled images and train the label generator -> synthesize a filtered labeled dataset ->
train a segmentation net on it and on the few real labels, score both on real test images -> then the ``hilander``
stages below on the dataset's unlabeled pool. ``handsoff`` stops after the downstream check.

``hilander``: prepare data -> train the feature encoder on the meta-training classes -> embed the held-out
meta-training images and the pool ->
meta-train Hi-LANDER -> cluster the unlabeled pool (with baselines when it has labels) -> report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from autolabel.config import RunConfig, TrainerConfig
from autolabel.config.classifier import ClassifierConfig
from autolabel.config.gan import GANTrainConfig, GeneratorConfig
from autolabel.config.hilander import HiLanderClusterConfig, HiLanderTrainConfig, LanderModelConfig
from autolabel.config.inversion import EncoderConfig, EncoderTrainConfig
from autolabel.config.labelgen import LabelGeneratorConfig, LabelTrainConfig
from autolabel.errors import ConfigError
from pipelines.runner import Pipeline, Stage, StageContext

SOURCES = ("digits", "fashion_mnist", "folders", "features")


@dataclass
class PoolDataConfig:
    """Where the clustering data comes from. ``digits`` (scikit-learn, bundled) and ``fashion_mnist`` (Debian package)
    are split by class: ``train_classes`` train the encoder and Hi-LANDER, ``pool_classes`` form the pool to cluster
    (disjoint: Hi-LANDER clusters categories it never saw). ``folders`` takes your own ``train_dir`` (class subfolders)
    and ``pool_dir`` (images; class subfolders, if any, are used only for scoring)."""

    source: str = "digits"
    root: Optional[str] = None  # fashion_mnist: folder of the IDX .gz files
    train_dir: Optional[str] = None
    pool_dir: Optional[str] = None
    train_features: Optional[str] = None  # source=features: your own labeled meta-training pool (.npz with labels)
    pool_features: Optional[str] = None  # source=features: your own pool to cluster (.npz/.npy)
    train_classes: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    pool_classes: list[int] = field(default_factory=lambda: [5, 6, 7, 8, 9])
    per_class: int = -1  # cap per class (-1: all)
    # Share of the meta-training images held out from the encoder and used only to meta-train Hi-LANDER: embeddings of
    # images the encoder never saw are as noisy as those of the pool, so the GNN learns to link under realistic noise
    # (trained on the encoder's own training images it sees near-perfect clusters and learns to link everything).
    gnn_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"data.source={self.source!r}: use one of {', '.join(SOURCES)}")
        if self.source == "folders" and not (self.train_dir and self.pool_dir):
            raise ConfigError("data.source=folders needs data.train_dir=DIR (class subfolders) and data.pool_dir=DIR")
        if self.source == "features" and not (self.train_features and self.pool_features):
            raise ConfigError("data.source=features needs data.train_features=TRAIN.npz (with labels) and "
                              "data.pool_features=POOL.npz: bring your own embeddings, the encoder stages are skipped")  # fmt: skip
        overlap = set(self.train_classes) & set(self.pool_classes)
        if not 0.0 <= self.gnn_fraction < 1.0:
            raise ConfigError(f"data.gnn_fraction={self.gnn_fraction} must be in [0, 1)")
        if self.source != "folders" and overlap:
            raise ConfigError(
                f"data.train_classes and data.pool_classes share {sorted(overlap)}: the pool must hold unseen classes"
            )


@dataclass
class ClassifierStageConfig:
    model: ClassifierConfig = field(default_factory=lambda: ClassifierConfig(image_size=16, width=24, batch_size=32))
    max_epochs: int = 30


@dataclass
class HiLanderStageConfig:
    model: LanderModelConfig = field(default_factory=lambda: LanderModelConfig(hidden=256))
    train: HiLanderTrainConfig = field(default_factory=HiLanderTrainConfig)
    # tau is chosen on the held-out meta-training features (seen classes, labeled): the threshold that suits a
    # given encoder's feature quality varies widely (the reference hand-set 0.8 for faces, 0.1 for iNat)
    cluster: HiLanderClusterConfig = field(
        default_factory=lambda: HiLanderClusterConfig(tau_candidates=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    )
    max_epochs: int = 150
    # Share of the meta-training features held out from the GNN and used only to choose tau: calibrating on the GNN's
    # own training samples favours the too-confident thresholds (Fashion-MNIST: pool NMI 0.18 -> 0.33 held out).
    calibration_fraction: float = 0.2
    baselines: list[str] = field(default_factory=lambda: ["kmeans", "agglomerative"])

    def __post_init__(self) -> None:
        if not 0.0 <= self.calibration_fraction < 1.0:
            raise ConfigError(f"hilander.calibration_fraction={self.calibration_fraction} must be in [0, 1)")


def stage_trainer(cfg: PipelineConfig, max_epochs: int) -> TrainerConfig:
    return dataclasses.replace(cfg.trainer, max_epochs=max_epochs, max_steps=-1)


# ----------------------------------------------------------------------------------------------- stages


def stage_data(ctx: StageContext) -> dict[str, Any]:
    from autolabel.data.arrays import (
        FASHION_MNIST_CLASSES,
        FASHION_MNIST_ROOT,
        export_class_folders,
        load_digits_arrays,
        load_fashion_mnist,
        select_classes,
    )

    d: PoolDataConfig = ctx.cfg.data
    if d.source == "features":
        from autolabel.data.pools import load_feature_pool

        train, pool = load_feature_pool(d.train_features), load_feature_pool(d.pool_features)  # type: ignore[arg-type]
        if not train.has_labels:
            raise ConfigError(f"data.train_features={d.train_features} has no labels: Hi-LANDER meta-trains on them")
        if train.dim != pool.dim:
            raise ConfigError(f"data.train_features has {train.dim}-d features but data.pool_features {pool.dim}-d: "
                              "embed both with the same encoder")  # fmt: skip
        return {"outputs": {"train_features": Path(d.train_features), "pool_features": Path(d.pool_features)},  # type: ignore[arg-type]
                "metrics": {"meta_images": train.n, "pool_images": pool.n}}  # fmt: skip
    if d.source == "folders":
        return {"outputs": {"train_dir": Path(d.train_dir), "meta_dir": Path(d.train_dir),  # type: ignore[arg-type]
                            "pool_dir": Path(d.pool_dir)}}  # type: ignore[arg-type]  # fmt: skip
    if d.source == "digits":
        x_tr, y_tr = load_digits_arrays()
        x_te, y_te = x_tr, y_tr
        names = [f"digit{i}" for i in range(10)]
    else:
        root = d.root or FASHION_MNIST_ROOT
        x_tr, y_tr = load_fashion_mnist(root, "train")
        x_te, y_te = load_fashion_mnist(root, "test")
        names = list(FASHION_MNIST_CLASSES)
    x_a, y_a = select_classes(x_tr, y_tr, d.train_classes, d.per_class, d.seed)
    x_b, y_b = select_classes(x_te, y_te, d.pool_classes, d.per_class, d.seed)
    gnn = np.random.default_rng(d.seed).random(len(x_a)) < d.gnn_fraction
    train_dir = export_class_folders(x_a[~gnn], y_a[~gnn], ctx.dir / "train", class_names=names,
                                     progress=ctx.cfg.progress)  # fmt: skip
    meta_dir = train_dir
    if gnn.any():
        meta_dir = export_class_folders(x_a[gnn], y_a[gnn], ctx.dir / "meta", class_names=names,
                                        progress=ctx.cfg.progress)  # fmt: skip
    pool_dir = export_class_folders(x_b, y_b, ctx.dir / "pool", class_names=names, progress=ctx.cfg.progress)
    return {"outputs": {"train_dir": train_dir, "meta_dir": meta_dir, "pool_dir": pool_dir},
            "metrics": {"encoder_images": int((~gnn).sum()), "meta_images": int(gnn.sum()),
                        "pool_images": len(x_b)}}  # fmt: skip


def stage_classifier(ctx: StageContext) -> dict[str, Any]:
    from pipelines.stages.classifier import train_classifier

    c: ClassifierStageConfig = ctx.cfg.classifier
    if "train_features" in ctx.inputs["data"].get("outputs", {}):
        return {"metrics": {"skipped": "features given (data.source=features)"}}
    return train_classifier(ctx.input_path("data", "train_dir"), c.model, stage_trainer(ctx.cfg, c.max_epochs), ctx.dir)


def stage_embed(ctx: StageContext) -> dict[str, Any]:
    import torch

    from autolabel.tasks.classifier import embed_folder

    given = ctx.inputs["data"].get("outputs", {})
    if "train_features" in given:  # bring-your-own embeddings: pass them on
        return {
            "outputs": {"train_features": Path(given["train_features"]), "pool_features": Path(given["pool_features"])}
        }
    device = "cuda" if torch.cuda.is_available() and ctx.cfg.trainer.accelerator in ("auto", "gpu", "cuda") else "cpu"
    ckpt = ctx.input_path("classifier", "checkpoint")
    tr = embed_folder(ckpt, ctx.input_path("data", "meta_dir"), ctx.dir / "train.npz", device=device,
                      progress=ctx.cfg.progress)  # fmt: skip
    po = embed_folder(ckpt, ctx.input_path("data", "pool_dir"), ctx.dir / "pool.npz", device=device,
                      progress=ctx.cfg.progress)  # fmt: skip
    return {"outputs": {"train_features": tr["path"], "pool_features": po["path"]},
            "metrics": {"train_n": tr["n"], "pool_n": po["n"], "dim": tr["dim"]}}  # fmt: skip


def stage_hilander(ctx: StageContext) -> dict[str, Any]:
    from autolabel.data.pools import load_feature_pool, save_feature_pool
    from pipelines.stages.hilander import train_hilander

    h: HiLanderStageConfig = ctx.cfg.hilander
    train = ctx.input_path("embed", "train_features")
    calibration = train
    if h.calibration_fraction > 0:
        pool = load_feature_pool(train)
        held = np.random.default_rng(ctx.cfg.trainer.seed).random(pool.n) < h.calibration_fraction
        if held.any() and (~held).any():
            train = save_feature_pool(ctx.dir / "gnn_train.npz", pool.subset(np.flatnonzero(~held)))
            calibration = save_feature_pool(ctx.dir / "calibration.npz", pool.subset(np.flatnonzero(held)))
    out = train_hilander(train, None, h.model, h.train, stage_trainer(ctx.cfg, h.max_epochs), ctx.dir)
    out["outputs"]["calibration"] = calibration
    return out


def stage_cluster(ctx: StageContext) -> dict[str, Any]:
    from autolabel.data.images import list_images
    from autolabel.engine.io import write_json
    from autolabel.viz import cluster_gallery
    from pipelines.stages.hilander import cluster_features, write_clusters_csv

    h: HiLanderStageConfig = ctx.cfg.hilander
    res = cluster_features(ctx.input_path("hilander", "checkpoint"), ctx.input_path("embed", "pool_features"),
                           h.cluster, list(h.baselines), calibrate=ctx.input_path("hilander", "calibration"))  # fmt: skip
    csv_path = write_clusters_csv(ctx.dir / "clusters.csv", res["ids"], res["labels"])
    metrics: dict[str, Any] = dict(res.get("metrics", {}))
    metrics["levels"] = len(res["levels"])
    metrics["tau"] = res["tau"]
    if "tau_scores" in res:
        metrics["tau_scores"] = {"calibration": res["tau_scores"]}
    if "baselines" in res:
        metrics["baselines"] = res["baselines"]
    write_json(ctx.dir / "metrics.json", metrics)
    figures = []
    if "pool_dir" in ctx.inputs["data"].get("outputs", {}):  # a gallery needs the images (not given with features)
        files = list_images(ctx.input_path("data", "pool_dir"))
        truth = None
        if "metrics" in res:
            from autolabel.data.pools import load_feature_pool

            truth = load_feature_pool(ctx.input_path("embed", "pool_features")).labels
        figures.append(str(cluster_gallery(files, res["labels"], ctx.dir / "cluster_gallery.png", truth=truth)))
    return {"outputs": {"clusters": csv_path}, "metrics": metrics, "figures": figures,
            "timings": res["timings"], "hierarchy": res["levels"]}  # fmt: skip


HILANDER = Pipeline(
    "hilander",
    [
        Stage("data", stage_data, config_keys=["data"], description="prepare meta-training and pool image folders"),
        Stage(
            "classifier",
            stage_classifier,
            needs=["data"],
            config_keys=["classifier", "trainer.precision", "trainer.seed"],
            description="train the feature encoder on the meta-training classes",
        ),  # fmt: skip
        Stage("embed", stage_embed, needs=["data", "classifier"], description="embed both image folders"),
        Stage(
            "hilander",
            stage_hilander,
            needs=["embed"],
            config_keys=[
                "hilander.model",
                "hilander.train",
                "hilander.max_epochs",
                "hilander.calibration_fraction",
                "trainer.precision",
                "trainer.seed",
            ],
            description="meta-train Hi-LANDER",
        ),  # fmt: skip
        Stage(
            "cluster",
            stage_cluster,
            needs=["data", "embed", "hilander"],
            config_keys=["hilander.cluster", "hilander.baselines"],
            description="cluster the unseen pool, compare baselines",
        ),  # fmt: skip
    ],
    description="cluster an unlabeled pool into unseen categories",
)

PIPELINES: dict[str, Pipeline] = {"hilander": HILANDER}


def get_pipeline(name: str) -> Pipeline:
    if name not in PIPELINES:
        import difflib

        near = difflib.get_close_matches(name, list(PIPELINES), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise ConfigError(f"pipeline={name!r} is unknown{hint} (available: {', '.join(PIPELINES)})")
    return PIPELINES[name]


def headline(results: list[Any]) -> dict[str, Any]:
    """The numbers a person wants first, from the last stage that produced clustering metrics."""
    out: dict[str, Any] = {}
    for r in results:
        m = r.manifest.get("metrics", {})
        for key in (
            "miou_synthetic",
            "miou_real_few",
            "pairwise_f",
            "bcubed_f",
            "nmi",
            "n_clusters",
            "n_true_clusters",
            "tau",
        ):
            if key in m and isinstance(m[key], (int, float, np.integer, np.floating)):
                out[key] = m[key]
        if "baselines" in m:
            out["baselines"] = {k: {x: v[x] for x in ("pairwise_f", "bcubed_f", "nmi", "n_clusters", "seconds")}
                                for k, v in m["baselines"].items()}  # fmt: skip
    return out


# ------------------------------------------------------------------------------------- handsoff (+ hilander)


@dataclass
class ShapesDataConfig:
    """The bundled procedural dataset (``autolabel.data.procedural``): objects with masks, keypoints, depth and 12
    categories (shape x colour), rendered from a seed -- nothing is downloaded."""

    size: int = 16
    n_pool: int = 480  # unlabeled images: GAN + encoder training, and the pool clustered by Hi-LANDER
    n_labeled: int = 16  # HandsOff's few labeled images (<= 50)
    n_test: int = 120  # real labeled images for the downstream check
    meta_categories: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5])  # encoder + GNN training
    pool_categories: list[int] = field(default_factory=lambda: [6, 7, 8, 9, 10, 11])  # clustered, never trained on
    seed: int = 0


@dataclass
class GANStageConfig:
    # Bring your own GAN: a rosinality .pt, NVIDIA stylegan2-ada .pkl or autolabel generator.pt -> no GAN training
    pretrained: Optional[str] = None
    kimg: float = 6.0
    model: GeneratorConfig = field(
        default_factory=lambda: GeneratorConfig(
            resolution=16, z_dim=64, w_dim=64, n_mapping=2, channel_base=512, channel_max=64
        )  # fmt: skip
    )
    train: GANTrainConfig = field(default_factory=lambda: GANTrainConfig(batch_size=16, r1_gamma=1.0))


@dataclass
class EncoderStageConfig:
    model: EncoderConfig = field(default_factory=lambda: EncoderConfig(width=16, max_width=64))
    # lpips_weight=0: pixel MSE only, so the demo needs no ImageNet weights; set 10 once `autolabel weights lpips` ran
    train: EncoderTrainConfig = field(
        default_factory=lambda: EncoderTrainConfig(
            phase1_steps=300, finetune_steps=60, batch_size=16, lr=1e-3, lpips_weight=0.0
        )  # fmt: skip
    )


@dataclass
class LabelsStageConfig:
    refine_steps: int = 0
    model: LabelGeneratorConfig = field(
        default_factory=lambda: LabelGeneratorConfig(n_members=5, hidden=[64, 32], fp16=False, min_class_pixels=4)
    )
    train: LabelTrainConfig = field(
        default_factory=lambda: LabelTrainConfig(
            max_steps=300, pixels_per_image=256, batch_pixels=256, images_per_step=4
        )  # fmt: skip
    )


@dataclass
class SynthesisStageConfig:
    n: int = 300
    seed: int = 0
    truncation_psi: float = 0.7
    batch_size: int = 16
    filter_fraction: float = 0.1
    drop_least_uncertain: int = 30
    devices: int = 1


@dataclass
class DownstreamStageConfig:
    max_epochs: int = 15
    base: int = 16
    depth: int = 2
    batch_size: int = 16


@dataclass
class PipelineConfig:
    """``autolabel run``: which pipeline, and the settings of every stage any bundled pipeline has."""

    pipeline: str = "handsoff_then_hilander"  # handsoff_then_hilander | handsoff | hilander
    from_stage: Optional[str] = None  # force this stage and everything after it to run again
    until_stage: Optional[str] = None  # stop after this stage
    shapes: ShapesDataConfig = field(default_factory=ShapesDataConfig)  # data of the handsoff pipelines
    data: PoolDataConfig = field(default_factory=PoolDataConfig)  # data of the hilander pipeline
    gan: GANStageConfig = field(default_factory=GANStageConfig)
    encoder: EncoderStageConfig = field(default_factory=EncoderStageConfig)
    labels: LabelsStageConfig = field(default_factory=LabelsStageConfig)
    synthesis: SynthesisStageConfig = field(default_factory=SynthesisStageConfig)
    downstream: DownstreamStageConfig = field(default_factory=DownstreamStageConfig)
    classifier: ClassifierStageConfig = field(default_factory=ClassifierStageConfig)
    hilander: HiLanderStageConfig = field(default_factory=HiLanderStageConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(name="pipeline"))
    progress: bool = True


def _copy_categories(src: Path, dst: Path, categories: list[int]) -> Path:
    import shutil

    for c in categories:
        s = src / f"{c:02d}"
        if s.is_dir() and not (dst / f"{c:02d}").is_dir():
            shutil.copytree(s, dst / f"{c:02d}")
    return dst


def stage_shapes(ctx: StageContext) -> dict[str, Any]:
    from autolabel.data.procedural import make_shapes_dataset

    d: ShapesDataConfig = ctx.cfg.shapes
    if d.n_labeled > 50:
        raise ConfigError(f"data.n_labeled={d.n_labeled}: HandsOff is built for at most 50 labeled images")
    if set(d.meta_categories) & set(d.pool_categories):
        raise ConfigError("data.meta_categories and data.pool_categories must be disjoint (the pool holds unseen ones)")
    pool = make_shapes_dataset(ctx.dir / "pool", d.n_pool, size=d.size, seed=d.seed)
    labeled = make_shapes_dataset(ctx.dir / "labeled", d.n_labeled, size=d.size, seed=d.seed + 1)
    test = make_shapes_dataset(ctx.dir / "test", d.n_test, size=d.size, seed=d.seed + 2)
    # The feature encoder and the GNN meta-train on different renderings of the meta categories: embeddings of images
    # the encoder never saw are as noisy as the pool's (see PoolDataConfig.gnn_fraction).
    enc = make_shapes_dataset(ctx.dir / "meta_encoder", d.n_pool, size=d.size, seed=d.seed + 3)
    gnn = make_shapes_dataset(ctx.dir / "meta_gnn", d.n_pool, size=d.size, seed=d.seed + 4)
    train_dir = _copy_categories(enc / "unlabeled", ctx.dir / "encoder_train", list(d.meta_categories))
    meta_dir = _copy_categories(gnn / "unlabeled", ctx.dir / "gnn_train", list(d.meta_categories))
    pool_dir = _copy_categories(pool / "unlabeled", ctx.dir / "pool_unseen", list(d.pool_categories))
    return {"outputs": {"images": pool / "images", "labeled": labeled, "test": test, "train_dir": train_dir,
                        "meta_dir": meta_dir, "pool_dir": pool_dir},
            "metrics": {"pool_images": d.n_pool, "labeled_images": d.n_labeled, "test_images": d.n_test}}  # fmt: skip


def stage_gan(ctx: StageContext) -> dict[str, Any]:
    from pipelines.stages.gan import train_gan

    g: GANStageConfig = ctx.cfg.gan
    if g.pretrained:
        from pipelines.stages.gan import import_gan

        return import_gan(g.pretrained, ctx.dir)
    return train_gan(ctx.input_path("data", "images"), g.kimg, g.model, g.train, ctx.cfg.trainer, ctx.dir)


def stage_encoder(ctx: StageContext) -> dict[str, Any]:
    from pipelines.stages.handsoff import train_encoder

    e: EncoderStageConfig = ctx.cfg.encoder
    return train_encoder(ctx.input_path("gan", "generator"), ctx.input_path("data", "images"), e.model, e.train,
                         False, ctx.cfg.trainer, ctx.dir)  # fmt: skip


def stage_labels(ctx: StageContext) -> dict[str, Any]:
    from pipelines.stages.handsoff import FitLabelsCommand, train_labels

    lab: LabelsStageConfig = ctx.cfg.labels
    cmd = FitLabelsCommand(
        generator=str(ctx.input_path("gan", "generator")), encoder=str(ctx.input_path("encoder", "checkpoint")),
        labeled=str(ctx.input_path("data", "labeled")), refine_steps=lab.refine_steps, label_generator=lab.model,
        label_train=lab.train, trainer=ctx.cfg.trainer,
    )  # fmt: skip
    return train_labels(cmd, ctx.dir, progress=ctx.cfg.progress)


def stage_synthesis(ctx: StageContext) -> dict[str, Any]:
    from pipelines.stages.handsoff import SynthesizeCommand, run_synthesis, synthesis_figures

    s: SynthesisStageConfig = ctx.cfg.synthesis
    out = ctx.dir / "synthetic"
    cmd = SynthesizeCommand(checkpoint=str(ctx.input_path("labels", "checkpoint")), n=s.n, out=str(out), seed=s.seed,
                            truncation_psi=s.truncation_psi, batch_size=s.batch_size,
                            filter_fraction=s.filter_fraction, drop_least_uncertain=s.drop_least_uncertain,
                            devices=s.devices, accelerator="cpu" if ctx.cfg.trainer.accelerator == "cpu" else "auto",
                            progress=ctx.cfg.progress)  # fmt: skip
    stats = run_synthesis(cmd)
    figures = synthesis_figures(out, ctx.dir)
    metrics = {k: v for k, v in stats.items() if isinstance(v, (int, float))}
    return {"outputs": {"dataset": out}, "metrics": metrics, "figures": [str(f) for f in figures]}


def stage_downstream(ctx: StageContext) -> dict[str, Any]:
    from pipelines.stages.downstream import FitSegmentationCommand, train_segmentation

    d: DownstreamStageConfig = ctx.cfg.downstream
    size = ctx.cfg.shapes.size
    results = {}
    for name, train in (
        ("synthetic", ctx.input_path("synthesis", "dataset")),
        ("real_few", ctx.input_path("data", "labeled")),
    ):
        cmd = FitSegmentationCommand(train=str(train), test=str(ctx.input_path("data", "test")), size=size, base=d.base,
                                     depth=d.depth, batch_size=d.batch_size, max_epochs=d.max_epochs,
                                     trainer=ctx.cfg.trainer)  # fmt: skip
        sub = ctx.dir / name
        sub.mkdir(exist_ok=True)
        results[name] = train_segmentation(cmd, sub)["metrics"]
    return {"outputs": {"synthetic_model": ctx.dir / "synthetic" / "checkpoints" / "last.ckpt"},
            "metrics": {"miou_synthetic": results["synthetic"]["miou"], "miou_real_few": results["real_few"]["miou"],
                        "downstream": {k: {"miou": v["miou"], "pixel_acc": v["pixel_acc"],
                                           "train_images": v["train_images"]} for k, v in results.items()}}}  # fmt: skip


_HANDSOFF_STAGES = [
    Stage("data", stage_shapes, config_keys=["shapes"], description="render the procedural dataset"),
    Stage(
        "gan",
        stage_gan,
        needs=["data"],
        config_keys=["gan", "trainer.precision", "trainer.seed"],
        description="train StyleGAN2 on the unlabeled pool",
    ),  # fmt: skip
    Stage(
        "encoder",
        stage_encoder,
        needs=["data", "gan"],
        config_keys=["encoder", "trainer.precision"],
        description="train the inversion encoder (generator frozen)",
    ),  # fmt: skip
    Stage(
        "labels",
        stage_labels,
        needs=["data", "gan", "encoder"],
        config_keys=["labels"],
        description="invert the labeled images, train the label generator on hypercolumns",
    ),  # fmt: skip
    Stage(
        "synthesis",
        stage_synthesis,
        needs=["labels"],
        config_keys=["synthesis"],
        description="synthesize labeled images, filter by uncertainty",
    ),  # fmt: skip
    Stage(
        "downstream",
        stage_downstream,
        needs=["data", "synthesis"],
        config_keys=["downstream"],
        description="train a segmentation net on synthetic vs few real labels, score on real test images",
    ),  # fmt: skip
]

HANDSOFF = Pipeline("handsoff", list(_HANDSOFF_STAGES), description="generate labeled images from a GAN + few labels")
HANDSOFF_THEN_HILANDER = Pipeline(
    "handsoff_then_hilander",
    [*_HANDSOFF_STAGES, *HILANDER.stages[1:]],
    description="synthesize labeled data, then cluster an unlabeled pool into unseen categories",
)
PIPELINES.update({"handsoff": HANDSOFF, "handsoff_then_hilander": HANDSOFF_THEN_HILANDER})
