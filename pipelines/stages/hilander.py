"""Hi-LANDER commands: ``autolabel fit hilander`` and ``autolabel cluster``; plus the functions the pipelines reuse."""

from __future__ import annotations

import csv
import io
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from autolabel.config import RunConfig, TrainerConfig
from autolabel.config.hilander import HiLanderClusterConfig, HiLanderTrainConfig, LanderModelConfig
from autolabel.engine.io import atomic_write_bytes, write_json
from autolabel.errors import ConfigError, DataError
from pipelines.registry import command
from pipelines.stages.common import finish_stage, open_run, print_metrics


@dataclass
class FitHiLanderCommand:
    train_features: str = MISSING  # .npz with features + labels of the meta-training classes
    val_features: Optional[str] = None  # optional labeled pool for validation losses
    model: LanderModelConfig = field(default_factory=LanderModelConfig)
    train: HiLanderTrainConfig = field(default_factory=HiLanderTrainConfig)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_epochs=100))
    run: RunConfig = field(default_factory=lambda: RunConfig(name="hilander"))


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


@command("fit hilander", "meta-train the Hi-LANDER GNN on a labeled feature pool", FitHiLanderCommand)
def fit_hilander(cfg: FitHiLanderCommand) -> int:
    run = open_run(cfg, cfg.run)
    stage_dir = run.stage("hilander")
    out = train_hilander(cfg.train_features, cfg.val_features, cfg.model, cfg.train, cfg.trainer, stage_dir)
    finish_stage(run, stage_dir, out, "fit hilander")
    return 0


@dataclass
class ClusterCommand:
    checkpoint: str = MISSING  # written by `autolabel fit hilander`
    features: str = MISSING  # the pool to cluster (.npz / .npy)
    out: str = "clusters.csv"  # id,cluster per sample
    metrics_out: Optional[str] = None  # default: <out stem>.metrics.json (written when the pool has labels)
    cluster: HiLanderClusterConfig = field(default_factory=HiLanderClusterConfig)
    baselines: list[str] = field(default_factory=list)  # any of: kmeans, agglomerative, dbscan (need labels for k)
    calibrate: Optional[str] = None  # labeled pool of seen classes for choosing tau among cluster.tau_candidates


def write_clusters_csv(path: str | Path, ids: Any, clusters: Any) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "cluster"])
    for i, c in zip(ids, clusters):
        w.writerow([i, int(c)])
    return atomic_write_bytes(path, buf.getvalue().encode())


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
    from autolabel.hilander.hierarchy import cluster_pool, select_tau
    from autolabel.hilander.lightning import load_lander

    model, hp = load_lander(checkpoint)
    pool = load_feature_pool(features)
    check_feature_dim(hp, pool.dim, checkpoint, features)
    kwargs = dict(k=cluster_cfg.k, levels=cluster_cfg.levels, early_stop=cluster_cfg.early_stop,
                  device=cluster_cfg.device, knn_kwargs=cluster_cfg.knn.kwargs())  # fmt: skip
    tau, tau_scores = cluster_cfg.tau, None
    if cluster_cfg.tau_candidates:
        if calibrate is None:
            raise ConfigError("cluster.tau_candidates is set but no labeled calibration pool: pass calibrate=POOL.npz "
                              "(features of seen classes, with labels) or clear cluster.tau_candidates")  # fmt: skip
        cal = load_feature_pool(calibrate)
        check_feature_dim(hp, cal.dim, checkpoint, calibrate)
        if not cal.has_labels:
            raise DataError(f"calibrate={calibrate} has no labels: tau is chosen by scoring clusters against them")
        tau, tau_scores = select_tau(model, cal.features, cal.labels, list(cluster_cfg.tau_candidates),
                                     metric=cluster_cfg.tau_metric, **kwargs)  # fmt: skip
    t0 = time.perf_counter()
    result = cluster_pool(model, pool.features, tau=tau, **kwargs)
    seconds = time.perf_counter() - t0
    ids = pool.ids if pool.ids is not None else np.arange(pool.n).astype(str)
    out: dict[str, Any] = {"labels": result.labels, "ids": ids, "seconds": seconds, "levels": result.levels,
                           "timings": result.seconds, "tau": tau}  # fmt: skip
    if tau_scores is not None:
        out["tau_scores"] = {f"{t:g}": v for t, v in sorted(tau_scores.items())}
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


@command("cluster", "cluster a feature pool with a trained Hi-LANDER checkpoint -> id,cluster CSV", ClusterCommand)
def cluster(cfg: ClusterCommand) -> int:
    from autolabel.engine.paths import check_output_file
    from autolabel.hilander.search import KCapWarning

    inputs = {"features": cfg.features, "checkpoint": cfg.checkpoint, "calibrate": cfg.calibrate}
    check_output_file(cfg.out, inputs, example="clusters.csv")
    check_output_file(cfg.metrics_out or Path(cfg.out).with_suffix(".metrics.json"), inputs, key="metrics_out")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", KCapWarning)
        res = cluster_features(cfg.checkpoint, cfg.features, cfg.cluster, list(cfg.baselines), cfg.calibrate)
    _show_warnings(caught, KCapWarning)
    if "tau_scores" in res:
        print(f"tau={res['tau']:g} chosen on {cfg.calibrate} ({cfg.cluster.tau_metric}: {res['tau_scores']})")
    path = write_clusters_csv(cfg.out, res["ids"], res["labels"])
    n_clusters = len(set(res["labels"].tolist()))
    print(f"{len(res['labels'])} samples -> {n_clusters} clusters in {res['seconds']:.2f}s: {path}")
    if "metrics" in res:
        mpath = Path(cfg.metrics_out) if cfg.metrics_out else Path(cfg.out).with_suffix(".metrics.json")
        payload = {"hilander": res["metrics"], **({"baselines": res["baselines"]} if "baselines" in res else {})}
        write_json(mpath, payload)
        print_metrics("Hi-LANDER", res["metrics"])
        for name, m in res.get("baselines", {}).items():
            print_metrics(name, m)
        print(f"metrics: {mpath}")
    return 0
