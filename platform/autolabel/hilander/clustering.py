"""Clustering a feature pool with a trained Hi-LANDER checkpoint: the checkpoint's calibrated tau (or one given, or
recalibrated on seen classes), the hierarchy, metrics against the pool's labels when it has them, classic baselines
beside it, and the clusters CSV (``id,cluster,confidence,level,density``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolabel.config.hilander import HiLanderClusterConfig
from autolabel.engine.io import atomic_write_bytes
from autolabel.errors import ConfigError, DataError

if TYPE_CHECKING:
    from autolabel.data.pools import FeaturePool
    from autolabel.hilander.calibration import Calibration


def write_clusters_csv(path: str | Path, ids: Any, clusters: Any, extra: dict[str, Any] | None = None) -> Path:
    """``id,cluster`` first, then the ``extra`` columns (confidence, level, density: ``ClusterResult.columns()``)."""
    from autolabel.hilander.hierarchy import clusters_table

    return atomic_write_bytes(path, clusters_table(ids, clusters, extra).encode())


def check_feature_dim(hp: dict, dim: int, checkpoint: str | Path, features: str | Path) -> None:
    """A pool must have the feature width the checkpoint was meta-trained on (else a raw matmul shape error)."""
    want = int(hp["feature_dim"])
    if dim != want:
        raise DataError(
            f"checkpoint {checkpoint} was trained on {want}-d features, pool {features} has {dim}-d: "
            "embed the pool with the same encoder as the meta-training features"
        )


def cluster_features(
    checkpoint: str | Path,
    features: str | Path,
    cluster_cfg: HiLanderClusterConfig,
    baselines: list[str] = (),
    calibrate: str | Path | None = None,
) -> dict[str, Any]:
    """Cluster a pool with a trained checkpoint; returns labels, ids, timings, the per-sample CSV columns, the tau used
    and where it came from (``cluster.tau``, the checkpoint's calibration, or a recalibration on ``calibrate``, a
    labeled pool of seen classes, among ``cluster_cfg.tau_candidates`` + the default grid), and (with labels) metrics."""
    import numpy as np

    from autolabel.data.pools import load_feature_pool
    from autolabel.hilander.checkpoint import load_lander
    from autolabel.hilander.hierarchy import cluster_pool

    model, hp = load_lander(checkpoint)
    pool = load_feature_pool(features)
    check_feature_dim(hp, pool.dim, checkpoint, features)
    kwargs = cluster_cfg.pool_kwargs()
    cal_pool = None
    if calibrate is not None:
        cal_pool = load_feature_pool(calibrate)
        check_feature_dim(hp, cal_pool.dim, checkpoint, calibrate)
    elif cluster_cfg.tau_candidates:
        raise ConfigError(
            "cluster.tau_candidates is set but no labeled calibration pool: pass calibrate=POOL.npz "
            "(features of seen classes, with labels) or clear cluster.tau_candidates"
        )
    tau, cal, tau_source = cluster_tau(model, hp, cluster_cfg, cal_pool, str(calibrate or ""))
    t0 = time.perf_counter()
    result = cluster_pool(model, pool.features, tau=tau, link_prob=cal.prob if cal else None, **kwargs)
    seconds = time.perf_counter() - t0
    ids = pool.ids if pool.ids is not None else np.arange(pool.n).astype(str)
    out: dict[str, Any] = {
        "labels": result.labels,
        "ids": ids,
        "seconds": seconds,
        "levels": result.levels,
        "timings": result.seconds,
        "tau": tau,
        "tau_source": tau_source,
        "columns": result.columns(),
    }
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


def cluster_tau(
    model: Any,
    hp: dict,
    cluster: HiLanderClusterConfig,
    calibration_pool: FeaturePool | None = None,
    source: str = "",
) -> tuple[float, Calibration | None, str]:
    """``(tau, calibration, where_from)`` for ``autolabel cluster``: ``cluster.tau`` when given, else the tau that
    ``fit hilander`` calibrated and stored in the checkpoint (``hp["calibration"]``, see
    :func:`~autolabel.hilander.checkpoint.load_lander`), else DEFAULT_TAU. With ``calibration_pool`` (labeled seen
    classes) the link map and tau are recalibrated on it (candidates: ``cluster.tau_candidates`` or the default grid).
    The returned calibration's link map applies whichever tau is used."""
    from autolabel.config.hilander import DEFAULT_TAU, CalibrationConfig
    from autolabel.hilander.calibration import calibrate, read_calibration, resolve_tau

    cal = read_calibration({"hilander_calibration": hp.get("calibration")}) if hp.get("calibration") else None
    if calibration_pool is not None:
        if not calibration_pool.has_labels:
            raise DataError(f"calibrate={source} has no labels: tau is chosen by scoring clusters against them")
        grid = list(cluster.tau_candidates) or list(CalibrationConfig().candidates)
        method = cal.method if cal is not None and cal.method != "none" else CalibrationConfig().method
        cal = calibrate(model, calibration_pool.features, calibration_pool.labels, candidates=grid,
                        metric=cluster.tau_metric, method=method, source=source,
                        **cluster.pool_kwargs())  # fmt: skip
    tau, where = resolve_tau(cluster.tau, cal, DEFAULT_TAU)
    return tau, cal, where
