"""Clustering a feature pool with a trained Hi-LANDER checkpoint: tau calibration on seen classes, the hierarchy,
metrics against the pool's labels when it has them, classic baselines beside it, and the ``id,cluster`` CSV."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

from autolabel.config.hilander import HiLanderClusterConfig
from autolabel.engine.io import atomic_write_bytes
from autolabel.errors import ConfigError, DataError


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
    """Cluster a pool with a trained checkpoint; returns labels, ids, timings and (with labels) metrics. With
    ``calibrate`` (a labeled pool of seen classes) and ``cluster_cfg.tau_candidates``, tau is chosen on it first."""
    import numpy as np

    from autolabel.data.pools import load_feature_pool
    from autolabel.hilander.hierarchy import cluster_pool, select_tau
    from autolabel.hilander.lightning import load_lander

    model, hp = load_lander(checkpoint)
    pool = load_feature_pool(features)
    check_feature_dim(hp, pool.dim, checkpoint, features)
    kwargs = dict(
        k=cluster_cfg.k,
        levels=cluster_cfg.levels,
        early_stop=cluster_cfg.early_stop,
        device=cluster_cfg.device,
        knn_kwargs=cluster_cfg.knn.kwargs(),
    )
    tau, tau_scores = cluster_cfg.tau, None
    if cluster_cfg.tau_candidates:
        if calibrate is None:
            raise ConfigError(
                "cluster.tau_candidates is set but no labeled calibration pool: pass calibrate=POOL.npz "
                "(features of seen classes, with labels) or clear cluster.tau_candidates"
            )
        cal = load_feature_pool(calibrate)
        check_feature_dim(hp, cal.dim, checkpoint, calibrate)
        if not cal.has_labels:
            raise DataError(f"calibrate={calibrate} has no labels: tau is chosen by scoring clusters against them")
        tau, tau_scores = select_tau(
            model, cal.features, cal.labels, list(cluster_cfg.tau_candidates), metric=cluster_cfg.tau_metric, **kwargs
        )
    t0 = time.perf_counter()
    result = cluster_pool(model, pool.features, tau=tau, **kwargs)
    seconds = time.perf_counter() - t0
    ids = pool.ids if pool.ids is not None else np.arange(pool.n).astype(str)
    out: dict[str, Any] = {
        "labels": result.labels,
        "ids": ids,
        "seconds": seconds,
        "levels": result.levels,
        "timings": result.seconds,
        "tau": tau,
    }
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
