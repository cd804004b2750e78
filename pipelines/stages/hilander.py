"""The Hi-LANDER stages: ``hilander`` meta-trains the GNN on labeled features of seen classes (holding a share of the
classes out to calibrate its links and tau, stored in the checkpoint), ``cluster`` clusters the unseen pool with it
and compares classic baselines."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolabel.config import TrainerConfig
from autolabel.config.hilander import CalibrationConfig, HiLanderClusterConfig, HiLanderTrainConfig, LanderModelConfig
from autolabel.errors import ConfigError, DataError
from pipelines.runner import Stage, StageContext
from pipelines.stages.classifier import check_epochs

BASELINES = ("kmeans", "agglomerative", "dbscan")


@dataclass
class HiLanderStageConfig:
    model: LanderModelConfig = field(default_factory=lambda: LanderModelConfig(hidden=256))
    train: HiLanderTrainConfig = field(default_factory=HiLanderTrainConfig)
    # tau (and the link calibration) come from the checkpoint: fit holds out a share of the meta-training classes
    cluster: HiLanderClusterConfig = field(default_factory=HiLanderClusterConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    max_epochs: int = 150
    baselines: list[str] = field(default_factory=lambda: ["kmeans", "agglomerative"])

    def __post_init__(self) -> None:
        check_epochs(self.max_epochs, "hilander.max_epochs")
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
    calibration: CalibrationConfig | None = None,
    cluster_cfg: HiLanderClusterConfig | None = None,
    val_cluster_every: int = 0,
) -> dict[str, Any]:
    """Meta-train LANDER on a labeled feature pool (identities held out for calibrating links + tau, see
    :func:`autolabel.hilander.fitting.meta_train`); returns the stage manifest."""
    from autolabel.data.pools import load_feature_pool
    from autolabel.hilander.fitting import meta_train

    train_pool = load_feature_pool(train_features)
    if not train_pool.has_labels:
        raise DataError(
            f"{train_features} has no 'labels' array: Hi-LANDER meta-training needs the true classes "
            "(save the pool with labels, e.g. `autolabel embed` on a folder with class subfolders)"
        )
    val_pool = load_feature_pool(val_features) if val_features else None
    if val_pool is not None and not val_pool.has_labels:
        raise DataError(f"{val_features} has no 'labels' array: validation needs labels (or leave val_features unset)")
    return meta_train(
        train_pool, val_pool, model_cfg, train_cfg, trainer_cfg, stage_dir, calibration, cluster_cfg, val_cluster_every
    )


def stage_hilander(ctx: StageContext) -> dict[str, Any]:
    h: HiLanderStageConfig = ctx.cfg.hilander
    tc = dataclasses.replace(ctx.cfg.trainer, max_epochs=h.max_epochs, max_steps=-1)
    train = ctx.input_path("embed", "train_features")
    return train_hilander(train, None, h.model, h.train, tc, ctx.dir, h.calibration, h.cluster)


def stage_cluster(ctx: StageContext) -> dict[str, Any]:
    from autolabel.data.images import list_images
    from autolabel.engine.io import write_json
    from autolabel.hilander.clustering import cluster_features, format_ladder, write_clusters_csv
    from autolabel.viz import cluster_gallery, gallery_caption

    h: HiLanderStageConfig = ctx.cfg.hilander
    checkpoint, pool = ctx.input_path("hilander", "checkpoint"), ctx.input_path("embed", "pool_features")
    res = cluster_features(checkpoint, pool, h.cluster, list(h.baselines), progress=ctx.cfg.progress)
    csv_path = write_clusters_csv(ctx.dir / "clusters.csv", res["ids"], res["labels"], res["columns"])
    metrics: dict[str, Any] = dict(res.get("metrics", {}))
    metrics["levels"] = len(res["levels"])
    metrics["tau"] = res["tau"]
    metrics["tau_source"] = res["tau_source"]
    if "baselines" in res:
        metrics["baselines"] = res["baselines"]
    # nearly one cluster, or nearly all singletons (a warning), or a tau calibrated on few classes: say so, with what
    # other taus give
    metrics.update({key: res[key] for key in ("warning", "tau_ladder", "calibrated_tau") if key in res})
    if "warning" in res:
        print(f"[cluster] warning: {res['warning']}", flush=True)
    if res.get("tau_ladder"):
        print(f"[cluster] clusters by tau on this pool: {format_ladder(res['tau_ladder'])}", flush=True)
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
        "hilander.calibration",
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
