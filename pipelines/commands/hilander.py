"""``autolabel fit hilander`` (meta-train the GNN on a labeled feature pool) and ``autolabel cluster``."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import MISSING

from autolabel.config import RunConfig, TrainerConfig
from autolabel.config.hilander import CalibrationConfig, HiLanderClusterConfig, HiLanderTrainConfig, LanderModelConfig
from autolabel.errors import ConfigError
from pipelines.commands.base import Command, Invocation, print_metrics, run_stage
from pipelines.runner import Stage
from pipelines.stages.hilander import BASELINES, train_hilander


@dataclass
class FitHiLanderCommand:
    train_features: str = MISSING  # .npz with features + labels of the meta-training classes
    val_features: Optional[str] = None  # optional labeled pool: validation losses + clustering metrics
    val_cluster_every: int = 10  # with val_features: cluster it (pairwise/BCubed F, NMI) every N epochs and at the end
    model: LanderModelConfig = field(default_factory=LanderModelConfig)
    train: HiLanderTrainConfig = field(default_factory=HiLanderTrainConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)  # held-out classes -> links + tau
    cluster: HiLanderClusterConfig = field(default_factory=HiLanderClusterConfig)  # how calibration/val cluster
    # 30 epochs: validation link accuracy and clustering F are flat from about epoch 20 on (measured on a 7k-point
    # mixture and two 1.5k-point identity mixtures, benchmarks/README.md), at a third of 100 epochs' time
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_epochs=30))
    run: RunConfig = field(default_factory=lambda: RunConfig(name="hilander"))


def fit_hilander(cfg: FitHiLanderCommand, inv: Invocation) -> int:
    def stage(ctx):
        return train_hilander(
            cfg.train_features,
            cfg.val_features,
            cfg.model,
            cfg.train,
            cfg.trainer,
            ctx.dir,
            cfg.calibration,
            cfg.cluster,
            cfg.val_cluster_every,
        )

    return run_stage(
        cfg, inv, Stage("hilander", stage, description="meta-train Hi-LANDER", distributed=True), "fit hilander"
    )


@dataclass
class ClusterCommand:
    checkpoint: str = MISSING  # written by `autolabel fit hilander`
    features: str = MISSING  # the pool to cluster (.npz / .npy)
    out: str = "clusters.csv"  # id,cluster,confidence,level,density per sample
    metrics_out: Optional[str] = None  # default: <out stem>.metrics.json (written when the pool has labels)
    cluster: HiLanderClusterConfig = field(default_factory=HiLanderClusterConfig)
    baselines: list[str] = field(default_factory=list)  # any of: kmeans, agglomerative, dbscan (need labels for k)
    calibrate: Optional[str] = None  # labeled pool of seen classes: recalibrate links + tau on it

    def __post_init__(self) -> None:
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ConfigError(f"unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}")


def _show_warnings(caught: list[warnings.WarningMessage], ours: type[Warning]) -> None:
    """Our own warnings (k capped, ...) as one ``warning: ...`` line each, deduplicated (tau calibration clusters the
    same pool many times); any other warning goes back to Python's normal display."""
    seen: set[str] = set()
    for w in caught:
        if issubclass(w.category, ours):
            msg = str(w.message)
            if msg not in seen:
                seen.add(msg)
                print(f"warning: {msg}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def cluster(cfg: ClusterCommand, inv: Invocation) -> int:
    from autolabel.engine.io import write_json
    from autolabel.engine.paths import check_output_file
    from autolabel.hilander.clustering import cluster_features, format_ladder, write_clusters_csv
    from autolabel.hilander.search import KCapWarning

    inputs = {"features": cfg.features, "checkpoint": cfg.checkpoint, "calibrate": cfg.calibrate}
    check_output_file(cfg.out, inputs, example="clusters.csv")
    check_output_file(cfg.metrics_out or Path(cfg.out).with_suffix(".metrics.json"), inputs, key="metrics_out")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", KCapWarning)
        res = cluster_features(cfg.checkpoint, cfg.features, cfg.cluster, list(cfg.baselines), cfg.calibrate)
    _show_warnings(caught, KCapWarning)
    print(f"tau={res['tau']:g} ({res['tau_source']})")
    if "tau_scores" in res:
        print(f"{cfg.cluster.tau_metric} vs tau on {cfg.calibrate}: {res['tau_scores']}")
    path = write_clusters_csv(cfg.out, res["ids"], res["labels"], res["columns"])
    n_clusters = len(set(res["labels"].tolist()))
    print(f"{len(res['labels'])} samples -> {n_clusters} clusters in {res['seconds']:.2f}s: {path}")
    if "warning" in res:
        print(f"warning: {res['warning']}", file=sys.stderr)
    if res.get("tau_ladder"):  # a degenerate result, or a tau calibrated on few classes: what other taus give
        print(f"clusters by tau on this pool: {format_ladder(res['tau_ladder'])}", file=sys.stderr)
    for lvl in res["levels"]:  # approximate kNN: the recall measured against exact search
        kn = lvl.get("knn", {})
        if "recall_at_k" in kn:
            effort = ", ".join(f"{key}={kn[key]}" for key in ("nprobe", "ef_search") if key in kn)
            print(
                f"knn level {lvl['level']}: {kn['method']} ({effort}) recall@{kn['k']}={kn['recall_at_k']:.3f} "
                f"on {kn['recall_queries']} queries (target {kn['target_recall']})"
            )
    if "metrics" in res:
        mpath = Path(cfg.metrics_out) if cfg.metrics_out else Path(cfg.out).with_suffix(".metrics.json")
        payload = {"hilander": res["metrics"], **({"baselines": res["baselines"]} if "baselines" in res else {}),
                   "tau": res["tau"], "tau_source": res["tau_source"], "seconds": res["timings"], "levels": res["levels"],
                   **{key: res[key] for key in ("warning", "tau_ladder", "calibrated_tau") if key in res}}  # fmt: skip
        write_json(mpath, payload)
        print_metrics("Hi-LANDER", res["metrics"])
        for name, m in res.get("baselines", {}).items():
            print_metrics(name, m)
        print(f"metrics: {mpath}")
    return 0


COMMANDS = (
    Command("fit hilander", "meta-train the Hi-LANDER GNN on a labeled feature pool", FitHiLanderCommand, fit_hilander),
    Command(
        "cluster",
        "cluster a feature pool with a trained Hi-LANDER checkpoint -> clusters CSV",
        ClusterCommand,
        cluster,
    ),
)
