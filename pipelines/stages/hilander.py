"""Hi-LANDER commands: ``autolabel fit hilander`` and ``autolabel cluster``; plus the functions the pipelines reuse."""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from autolabel.config import RunConfig, TrainerConfig
from autolabel.config.hilander import (
    CalibrationConfig,
    HiLanderClusterConfig,
    HiLanderTrainConfig,
    LanderModelConfig,
)
from autolabel.engine.io import atomic_write_bytes, write_json
from autolabel.errors import ConfigError, DataError
from pipelines.registry import command
from pipelines.stages.common import finish_stage, open_run, print_metrics


@dataclass
class FitHiLanderCommand:
    train_features: str = MISSING  # .npz with features + labels of the meta-training classes
    val_features: Optional[str] = None  # optional labeled pool: validation losses + clustering metrics
    val_cluster_every: int = 10  # with val_features: cluster it (pairwise/BCubed F, NMI) every N epochs and at the end
    model: LanderModelConfig = field(default_factory=LanderModelConfig)
    train: HiLanderTrainConfig = field(default_factory=HiLanderTrainConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)  # held-out classes -> links + tau
    cluster: HiLanderClusterConfig = field(default_factory=HiLanderClusterConfig)  # how calibration/val cluster
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_epochs=100))
    run: RunConfig = field(default_factory=lambda: RunConfig(name="hilander"))


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
    return meta_train(train_pool, val_pool, model_cfg, train_cfg, trainer_cfg, stage_dir, calibration, cluster_cfg,
                      val_cluster_every)  # fmt: skip


@command("fit hilander", "meta-train the Hi-LANDER GNN on a labeled feature pool", FitHiLanderCommand)
def fit_hilander(cfg: FitHiLanderCommand) -> int:
    run = open_run(cfg, cfg.run)
    stage_dir = run.stage("hilander")
    out = train_hilander(cfg.train_features, cfg.val_features, cfg.model, cfg.train, cfg.trainer, stage_dir,
                         cfg.calibration, cfg.cluster, cfg.val_cluster_every)  # fmt: skip
    finish_stage(run, stage_dir, out, "fit hilander")
    return 0


@dataclass
class ClusterCommand:
    checkpoint: str = MISSING  # written by `autolabel fit hilander`
    features: str = MISSING  # the pool to cluster (.npz / .npy)
    out: str = "clusters.csv"  # id,cluster,confidence,level,density per sample
    metrics_out: Optional[str] = None  # default: <out stem>.metrics.json (written when the pool has labels)
    cluster: HiLanderClusterConfig = field(default_factory=HiLanderClusterConfig)
    baselines: list[str] = field(default_factory=list)  # any of: kmeans, agglomerative, dbscan (need labels for k)
    calibrate: Optional[str] = None  # labeled pool of seen classes: recalibrate links + tau on it


def write_clusters_csv(path: str | Path, ids: Any, clusters: Any, extra: dict[str, Any] | None = None) -> Path:
    """``id,cluster`` first, then ``extra`` columns (confidence, level, density; see autolabel.hilander.io)."""
    from autolabel.hilander.hierarchy import clusters_table

    return atomic_write_bytes(path, clusters_table(ids, clusters, extra).encode())


def check_feature_dim(hp: dict, dim: int, checkpoint: str | Path, features: str | Path) -> None:
    """A pool must have the feature width the checkpoint was meta-trained on (else a raw matmul shape error)."""
    want = int(hp["feature_dim"])
    if dim != want:
        raise DataError(f"checkpoint {checkpoint} was trained on {want}-d features, pool {features} has {dim}-d: "
                        "embed the pool with the same encoder as the meta-training features")  # fmt: skip


def cluster_features(
    checkpoint: str | Path,
    features: str | Path,
    cluster_cfg: HiLanderClusterConfig,
    baselines: list[str] = (),
    calibrate: str | Path | None = None,
) -> dict[str, Any]:
    """Cluster a pool with a trained checkpoint; returns labels, ids, timings and (with labels) metrics. With
    ``calibrate`` (a labeled pool of seen classes) and ``cluster_cfg.tau_candidates``, tau is chosen on it first."""
    import numpy as np

    from autolabel.data.pools import load_feature_pool
    from autolabel.hilander.fitting import cluster_tau
    from autolabel.hilander.hierarchy import cluster_pool
    from autolabel.hilander.lightning import load_lander

    model, hp = load_lander(checkpoint)
    pool = load_feature_pool(features)
    check_feature_dim(hp, pool.dim, checkpoint, features)
    kwargs = dict(k=cluster_cfg.k, levels=cluster_cfg.levels, early_stop=cluster_cfg.early_stop,
                  device=cluster_cfg.device, knn_kwargs=cluster_cfg.knn.kwargs())  # fmt: skip
    cal_pool = None
    if calibrate is not None:
        cal_pool = load_feature_pool(calibrate)
        check_feature_dim(hp, cal_pool.dim, checkpoint, calibrate)
    elif cluster_cfg.tau_candidates:
        raise ConfigError("cluster.tau_candidates is set but no labeled calibration pool: pass calibrate=POOL.npz "
                          "(features of seen classes, with labels) or clear cluster.tau_candidates")  # fmt: skip
    tau, cal, tau_source = cluster_tau(model, hp, cluster_cfg, cal_pool, str(calibrate or ""))
    t0 = time.perf_counter()
    result = cluster_pool(model, pool.features, tau=tau, link_prob=cal.prob if cal else None, **kwargs)
    seconds = time.perf_counter() - t0
    ids = pool.ids if pool.ids is not None else np.arange(pool.n).astype(str)
    out: dict[str, Any] = {"labels": result.labels, "ids": ids, "seconds": seconds, "levels": result.levels,
                           "timings": result.seconds, "tau": tau, "tau_source": tau_source,
                           "columns": result.columns()}  # fmt: skip
    if calibrate is not None and cal is not None:
        out["tau_scores"] = cal.curve
    if pool.has_labels:
        from autolabel.metrics.clustering import evaluate_clustering

        metrics = evaluate_clustering(pool.labels, result.labels)
        metrics["seconds"] = seconds
        out["metrics"] = metrics
        if baselines:
            out["baselines"] = run_baselines(pool.features, pool.labels, baselines)
    return out


def run_baselines(features: Any, labels: Any, names: list[str], seed: int = 0) -> dict[str, dict[str, float]]:
    """Classic clusterers for comparison; k-means and agglomerative get the TRUE number of classes."""
    import numpy as np

    from autolabel.hilander import baselines as B
    from autolabel.metrics.clustering import evaluate_clustering

    k = int(len(np.unique(labels)))
    fns = {
        "kmeans": lambda: B.kmeans_cluster(features, k, seed=seed),
        "agglomerative": lambda: B.agglomerative_cluster(features, n_clusters=k),
        "dbscan": lambda: B.dbscan_cluster(features, min_samples=5),  # eps from the k-distance heuristic
    }
    res = {}
    for name in names:
        if name not in fns:
            raise DataError(f"unknown baseline {name!r}; choose from {', '.join(fns)}")
        t0 = time.perf_counter()
        pred = fns[name]()
        m = evaluate_clustering(labels, pred)
        m["seconds"] = time.perf_counter() - t0
        res[name] = m
    return res


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


@command("cluster", "cluster a feature pool with a trained Hi-LANDER checkpoint -> clusters CSV", ClusterCommand)
def cluster(cfg: ClusterCommand) -> int:
    from autolabel.hilander.search import KCapWarning

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
    for lvl in res["levels"]:  # approximate kNN: the recall measured against exact search
        if "recall_at_k" in lvl.get("knn", {}):
            kn = lvl["knn"]
            effort = ", ".join(f"{key}={kn[key]}" for key in ("nprobe", "ef_search") if key in kn)
            print(f"knn level {lvl['level']}: {kn['method']} ({effort}) recall@{kn['k']}={kn['recall_at_k']:.3f} "
                  f"on {kn['recall_queries']} queries (target {kn['target_recall']})")  # fmt: skip
    if "metrics" in res:
        mpath = Path(cfg.metrics_out) if cfg.metrics_out else Path(cfg.out).with_suffix(".metrics.json")
        payload = {"hilander": res["metrics"], **({"baselines": res["baselines"]} if "baselines" in res else {})}
        write_json(mpath, payload)
        print_metrics("Hi-LANDER", res["metrics"])
        for name, m in res.get("baselines", {}).items():
            print_metrics(name, m)
        print(f"metrics: {mpath}")
    return 0
