"""The Hi-LANDER stages: ``hilander`` meta-trains the GNN on labeled features of seen classes (holding a share out to
choose tau), ``cluster`` clusters the unseen pool with it and compares classic baselines."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolabel.config import TrainerConfig
from autolabel.config.hilander import HiLanderClusterConfig, HiLanderTrainConfig, LanderModelConfig
from autolabel.errors import ConfigError, DataError
from pipelines.runner import Stage, StageContext
from pipelines.stages.classifier import check_epochs

BASELINES = ("kmeans", "agglomerative", "dbscan")


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
        check_epochs(self.max_epochs, "hilander.max_epochs")
        if not 0.0 <= self.calibration_fraction < 1.0:
            raise ConfigError(f"hilander.calibration_fraction={self.calibration_fraction} must be in [0, 1)")
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ConfigError(f"hilander.baselines has {unknown}: choose from {', '.join(BASELINES)}")


def train_hilander(
    train_features: str | Path,
    val_features: str | Path | None,
    model_cfg: LanderModelConfig,
    train_cfg: HiLanderTrainConfig,
    trainer_cfg: TrainerConfig,
    stage_dir: Path,
) -> dict[str, Any]:
    """Meta-train LANDER on a labeled feature pool; returns the stage manifest (checkpoint path + final losses)."""
    from autolabel.data.pools import load_feature_pool
    from autolabel.engine import fit
    from autolabel.hilander.lightning import LanderModule, LevelGraphDataModule

    train_pool = load_feature_pool(train_features)
    if not train_pool.has_labels:
        raise DataError(
            f"{train_features} has no 'labels' array: Hi-LANDER meta-training needs the true classes "
            "(save the pool with labels, e.g. `autolabel embed` on a folder with class subfolders)"
        )
    val_pool = load_feature_pool(val_features) if val_features else None
    if val_pool is not None and not val_pool.has_labels:
        raise DataError(f"{val_features} has no 'labels' array: validation needs labels (or leave val_features unset)")
    dm = LevelGraphDataModule(train_pool, train_cfg, val_pool=val_pool, num_conv=model_cfg.num_conv)
    module = LanderModule(model_cfg, train_cfg, feature_dim=train_pool.dim)
    trainer = fit(module, dm, trainer_cfg, stage_dir, monitor="val/loss" if val_pool is not None else None)
    ckpt = stage_dir / "checkpoints" / "last.ckpt"
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    return {"outputs": {"checkpoint": ckpt}, "metrics": metrics}


def stage_hilander(ctx: StageContext) -> dict[str, Any]:
    import numpy as np

    from autolabel.data.pools import load_feature_pool, save_feature_pool

    h: HiLanderStageConfig = ctx.cfg.hilander
    train = ctx.input_path("embed", "train_features")
    calibration = train
    if h.calibration_fraction > 0:
        pool = load_feature_pool(train)
        held = np.random.default_rng(ctx.cfg.trainer.seed).random(pool.n) < h.calibration_fraction
        if held.any() and (~held).any():
            train = save_feature_pool(ctx.dir / "gnn_train.npz", pool.subset(np.flatnonzero(~held)))
            calibration = save_feature_pool(ctx.dir / "calibration.npz", pool.subset(np.flatnonzero(held)))
    tc = dataclasses.replace(ctx.cfg.trainer, max_epochs=h.max_epochs, max_steps=-1)
    out = train_hilander(train, None, h.model, h.train, tc, ctx.dir)
    out["outputs"]["calibration"] = calibration
    return out


def stage_cluster(ctx: StageContext) -> dict[str, Any]:
    from autolabel.data.images import list_images
    from autolabel.engine.io import write_json
    from autolabel.hilander.clustering import cluster_features, write_clusters_csv
    from autolabel.viz import cluster_gallery, gallery_caption

    h: HiLanderStageConfig = ctx.cfg.hilander
    checkpoint, pool = ctx.input_path("hilander", "checkpoint"), ctx.input_path("embed", "pool_features")
    calibration = ctx.input_path("hilander", "calibration")
    res = cluster_features(checkpoint, pool, h.cluster, list(h.baselines), calibrate=calibration)
    csv_path = write_clusters_csv(ctx.dir / "clusters.csv", res["ids"], res["labels"])
    metrics: dict[str, Any] = dict(res.get("metrics", {}))
    metrics["levels"] = len(res["levels"])
    metrics["tau"] = res["tau"]
    if "tau_scores" in res:
        metrics["tau_scores"] = {"calibration": res["tau_scores"]}
    if "baselines" in res:
        metrics["baselines"] = res["baselines"]
    write_json(ctx.dir / "metrics.json", metrics)
    figures, captions = [], {}
    if "pool_dir" in ctx.inputs["data"].get("outputs", {}):  # a gallery needs the images (not given with features)
        files = list_images(ctx.input_path("data", "pool_dir"))
        truth = None
        if "metrics" in res:
            from autolabel.data.pools import load_feature_pool

            truth = load_feature_pool(pool).labels
        gallery = str(cluster_gallery(files, res["labels"], ctx.dir / "cluster_gallery.png", truth=truth))
        figures.append(gallery)
        captions[gallery] = "cluster gallery: " + gallery_caption(res["labels"])
    return {
        "outputs": {"clusters": csv_path},
        "metrics": metrics,
        "figures": figures,
        "captions": captions,
        "timings": res["timings"],
        "hierarchy": res["levels"],
    }


STAGE = Stage(
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
    distributed=True,
)
CLUSTER = Stage(
    "cluster",
    stage_cluster,
    needs=["data", "embed", "hilander"],
    config_keys=["hilander.cluster", "hilander.baselines"],
    description="cluster the unseen pool, compare baselines",
)
