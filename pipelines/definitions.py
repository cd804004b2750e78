"""The bundled pipelines (``autolabel run pipeline=NAME``) and their config schema.

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
from autolabel.config.hilander import HiLanderClusterConfig, HiLanderTrainConfig, LanderModelConfig
from autolabel.errors import ConfigError
from pipelines.runner import Pipeline, Stage, StageContext

SOURCES = ("digits", "fashion_mnist", "folders")


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
        overlap = set(self.train_classes) & set(self.pool_classes)
        if not 0.0 <= self.gnn_fraction < 1.0:
            raise ConfigError(f"data.gnn_fraction={self.gnn_fraction} must be in [0, 1)")
        if self.source != "folders" and overlap:
            raise ConfigError(
                f"data.train_classes and data.pool_classes share {sorted(overlap)}: the pool must hold unseen classes"
            )


@dataclass
class ClassifierStageConfig:
    model: ClassifierConfig = field(default_factory=lambda: ClassifierConfig(image_size=16, width=24))
    max_epochs: int = 8


@dataclass
class HiLanderStageConfig:
    model: LanderModelConfig = field(default_factory=lambda: LanderModelConfig(hidden=256))
    train: HiLanderTrainConfig = field(default_factory=HiLanderTrainConfig)
    cluster: HiLanderClusterConfig = field(default_factory=HiLanderClusterConfig)
    max_epochs: int = 150
    baselines: list[str] = field(default_factory=lambda: ["kmeans", "agglomerative"])


@dataclass
class PipelineConfig:
    pipeline: str = "hilander"
    from_stage: Optional[str] = None  # force this stage and everything after it to run again
    until_stage: Optional[str] = None  # stop after this stage
    data: PoolDataConfig = field(default_factory=PoolDataConfig)
    classifier: ClassifierStageConfig = field(default_factory=ClassifierStageConfig)
    hilander: HiLanderStageConfig = field(default_factory=HiLanderStageConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(name="pipeline"))
    progress: bool = True


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
    return train_classifier(ctx.input_path("data", "train_dir"), c.model, stage_trainer(ctx.cfg, c.max_epochs), ctx.dir)


def stage_embed(ctx: StageContext) -> dict[str, Any]:
    import torch

    from autolabel.tasks.classifier import embed_folder

    device = "cuda" if torch.cuda.is_available() and ctx.cfg.trainer.accelerator in ("auto", "gpu", "cuda") else "cpu"
    ckpt = ctx.input_path("classifier", "checkpoint")
    tr = embed_folder(ckpt, ctx.input_path("data", "meta_dir"), ctx.dir / "train.npz", device=device,
                      progress=ctx.cfg.progress)  # fmt: skip
    po = embed_folder(ckpt, ctx.input_path("data", "pool_dir"), ctx.dir / "pool.npz", device=device,
                      progress=ctx.cfg.progress)  # fmt: skip
    return {"outputs": {"train_features": tr["path"], "pool_features": po["path"]},
            "metrics": {"train_n": tr["n"], "pool_n": po["n"], "dim": tr["dim"]}}  # fmt: skip


def stage_hilander(ctx: StageContext) -> dict[str, Any]:
    from pipelines.stages.hilander import train_hilander

    h: HiLanderStageConfig = ctx.cfg.hilander
    return train_hilander(ctx.input_path("embed", "train_features"), None, h.model, h.train,
                          stage_trainer(ctx.cfg, h.max_epochs), ctx.dir)  # fmt: skip


def stage_cluster(ctx: StageContext) -> dict[str, Any]:
    from autolabel.data.images import list_images
    from autolabel.engine.io import write_json
    from autolabel.viz import cluster_gallery
    from pipelines.stages.hilander import cluster_features, write_clusters_csv

    h: HiLanderStageConfig = ctx.cfg.hilander
    res = cluster_features(ctx.input_path("hilander", "checkpoint"), ctx.input_path("embed", "pool_features"),
                           h.cluster, list(h.baselines))  # fmt: skip
    csv_path = write_clusters_csv(ctx.dir / "clusters.csv", res["ids"], res["labels"])
    metrics: dict[str, Any] = dict(res.get("metrics", {}))
    metrics["levels"] = len(res["levels"])
    if "baselines" in res:
        metrics["baselines"] = res["baselines"]
    write_json(ctx.dir / "metrics.json", metrics)
    pool_dir = ctx.input_path("data", "pool_dir")
    files = list_images(pool_dir)
    truth = None
    if "metrics" in res:
        from autolabel.data.pools import load_feature_pool

        truth = load_feature_pool(ctx.input_path("embed", "pool_features")).labels
    gallery = cluster_gallery(files, res["labels"], ctx.dir / "cluster_gallery.png", truth=truth)
    return {"outputs": {"clusters": csv_path}, "metrics": metrics, "figures": [str(gallery)],
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
        for key in ("pairwise_f", "bcubed_f", "nmi", "n_clusters", "n_true_clusters", "seconds"):
            if key in m and isinstance(m[key], (int, float, np.integer, np.floating)):
                out[key] = m[key]
        if "baselines" in m:
            out["baselines"] = {k: {x: v[x] for x in ("pairwise_f", "bcubed_f", "nmi", "n_clusters", "seconds")}
                                for k, v in m["baselines"].items()}  # fmt: skip
    return out
