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
    progress: bool = True,
) -> dict[str, Any]:
    """Cluster a pool with a trained checkpoint; returns labels, ids, timings, the per-sample CSV columns, the tau used
    and where it came from (``cluster.tau``, the checkpoint's calibration, or a recalibration on ``calibrate``, a
    labeled pool of seen classes, among ``cluster_cfg.tau_candidates`` + the default grid), and (with labels) metrics."""
    import numpy as np

    from autolabel.data.pools import load_feature_pool
    from autolabel.hilander.calibration import few_classes_caution
    from autolabel.hilander.checkpoint import load_lander

    model, hp = load_lander(checkpoint)
    pool = load_feature_pool(features)
    check_feature_dim(hp, pool.dim, checkpoint, features)
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
    rough = cluster_cfg.tau is None and few_classes_caution(cal) is not None  # then show the clusters other taus give
    result, extra = cluster_usable(model, pool.features, tau, cal.prob if cal else None, cluster_cfg, progress, rough)
    if "calibrated_tau" in extra:
        tau = extra.pop("tau")
        tau_source += "; it left this pool degenerate, replaced by the nearest usable tau"
    seconds = time.perf_counter() - t0
    ids = pool.ids if pool.ids is not None else np.arange(pool.n).astype(str)
    out: dict[str, Any] = {
        **extra,
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


# A result is degenerate when one cluster holds COLLAPSED_SHARE of the pool (a pool of two classes 80/20 is not), or
# when SINGLETON_SHARE of it is left alone (most of the pool not grouped at all).
COLLAPSED_SHARE = 0.9
SINGLETON_SHARE = 0.5
# Above this many points the ladder of alternative taus is not computed for a degenerate result (each rung reclusters
# the upper levels), nor above ROUGH_LADDER_MAX_N for a useful one whose tau was calibrated on few classes: there it
# is advice, not a rescue, and it costs 7-8x the clustering itself (80k points: 5.5 s -> 47 s; 20k: 1.4 s -> 9.5 s).
LADDER_MAX_N = 200_000
ROUGH_LADDER_MAX_N = 20_000
# The ladder's taus: these quantiles of the pool's own level-0 link probabilities (where its edges actually are).
LADDER_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.9, 0.97, 0.99)


def degenerate(labels: Any) -> str | None:
    """A sentence when the clustering is useless (nearly everything in one cluster, or most points alone)."""
    import numpy as np

    n = len(labels)
    if n < 20:
        return None
    counts = np.bincount(np.unique(labels, return_inverse=True)[1])
    if counts.max() >= COLLAPSED_SHARE * n:
        return f"{counts.max()} of {n} points are in one cluster"
    singles = int((counts == 1).sum())
    if singles >= SINGLETON_SHARE * n:
        return f"{singles} of {n} points are singletons"
    return None


def tau_ladder(model: Any, features: Any, link_prob: Any, cluster_kwargs: dict[str, Any],
               quantiles: tuple[float, ...] = LADDER_QUANTILES) -> list[dict[str, float]]:  # fmt: skip
    """The pool clustered at taus placed at ``quantiles`` of its own level-0 link probabilities: per tau the number of
    clusters, the largest cluster's share and the singletons' share -- what a user needs to pick ``cluster.tau`` when
    the calibrated one does not fit this pool. The level-0 search and GNN pass are done once for all taus (none at all
    when ``cluster_kwargs["level0_cache"]`` holds them from an earlier clustering of the pool)."""
    import numpy as np

    from autolabel.hilander.hierarchy import cluster_pool, link_probability

    kw = {**cluster_kwargs, "progress": False, "link_prob": link_prob}
    feats = np.ascontiguousarray(features, dtype=np.float32)
    cache = kw.setdefault("level0_cache", {})  # given: the caller's clustering of this pool already filled it
    if "logits" not in cache:
        cluster_pool(model, feats, tau=1.0, **kw)  # fills the cache: level 0's search, graph and link logits
    if "logits" not in cache:  # a pool of one repeated row: nothing to threshold
        return []
    prob = (link_prob or link_probability)(cache["logits"]).detach().float().cpu().numpy()
    rows = []
    for tau in sorted({round(float(t), 6) for t in np.quantile(prob, quantiles)}):
        counts = np.bincount(np.unique(cluster_pool(model, feats, tau=tau, **kw).labels, return_inverse=True)[1])
        rows.append({"tau": tau, "clusters": int(len(counts)), "largest_share": round(float(counts.max() / len(feats)), 4),
                     "singleton_share": round(float((counts == 1).sum() / len(feats)), 4)})  # fmt: skip
    return rows


def cluster_usable(model: Any, features: Any, tau: float, link_prob: Any, cluster_cfg: HiLanderClusterConfig,
                   progress: bool = True, ladder: bool = False) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """``cluster_pool`` at ``tau``, checked: ``(result, extra)`` with ``extra = {}`` for a useful clustering (with
    ``ladder``, e.g. for a tau calibrated on few classes: ``{"tau_ladder": rows}``, up to ROUGH_LADDER_MAX_N points). A
    degenerate one adds ``warning`` and ``tau_ladder``; unless ``cluster.tau`` was given or ``cluster.degenerate=keep``,
    the pool is then reclustered at the nearest usable rung (``extra["tau"]``; ``extra["calibrated_tau"]``: the one
    replaced). What ``cluster`` returns and what ``fit``'s validation scores, so sweeps rank what users get."""
    from autolabel.hilander.hierarchy import cluster_pool

    kwargs = cluster_cfg.pool_kwargs()
    if len(features) <= LADDER_MAX_N:  # the ladder and a reclustering may follow: one level-0 search and GNN pass
        kwargs["level0_cache"] = {}  # (not above: it would hold a large pool's level-0 graph through the whole run)
    result = cluster_pool(model, features, tau=tau, link_prob=link_prob, progress=progress, **kwargs)
    check = degenerate_check(model, features, result.labels, tau, link_prob, kwargs)
    if not check:
        show = ladder and len(features) <= ROUGH_LADDER_MAX_N
        return result, ({"tau_ladder": tau_ladder(model, features, link_prob, kwargs)} if show else {})
    replace = check["nearest"] is not None and cluster_cfg.tau is None and cluster_cfg.degenerate == "nearest"
    extra = {"warning": degenerate_warning(check, tau, check["nearest"] if replace else None),
             "tau_ladder": check["tau_ladder"]}  # fmt: skip
    if replace:
        extra.update(calibrated_tau=tau, tau=check["nearest"])
        result = cluster_pool(model, features, tau=check["nearest"], link_prob=link_prob, progress=progress, **kwargs)
    return result, extra


def degenerate_check(model: Any, features: Any, labels: Any, tau: float, link_prob: Any,
                     cluster_kwargs: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """``{}`` for a useful clustering; else ``{"degenerate": what is wrong, "tau_ladder": rows, "nearest": the tau of
    the usable rung nearest to ``tau`` in logit space (the smallest step away from it), or None}``. The ladder is
    computed up to LADDER_MAX_N points."""
    what = degenerate(labels)
    if what is None:
        return {}
    ladder = tau_ladder(model, features, link_prob, cluster_kwargs) if len(labels) <= LADDER_MAX_N else []
    useful = [r for r in ladder if r["largest_share"] < COLLAPSED_SHARE and r["singleton_share"] < SINGLETON_SHARE]
    nearest = min(useful, key=lambda r: abs(_logit(r["tau"]) - _logit(tau)), default=None)
    return {"degenerate": what, "tau_ladder": ladder, "nearest": nearest["tau"] if nearest else None}


def degenerate_warning(check: dict[str, Any], tau: float, replaced_by: float | None) -> str:
    """One line: what went wrong at ``tau``, and what was done about it or what the user can do."""
    head = (f"{check['degenerate']} at tau={tau:g}: this pool's links are stronger or weaker than on the classes tau "
            "was calibrated on")  # fmt: skip
    if replaced_by is not None:
        return (f"{head}; reclustered at tau={replaced_by:g}, the nearest usable tau on this pool "
                "(cluster.degenerate=keep keeps the first result)")  # fmt: skip
    nearest = check["nearest"]
    hint = f"e.g. cluster.tau={nearest:g}, the nearest usable one" if nearest is not None else "cluster.tau=T"
    return (f"{head}. Rerun with another tau ({hint}; clusters by tau below) or recalibrate with calibrate=SEEN.npz "
            f"on labeled classes that resemble this pool")  # fmt: skip


def _logit(p: float) -> float:
    import math

    p = min(max(float(p), 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def format_ladder(ladder: list[dict[str, float]]) -> str:
    """``tau -> clusters (largest share, singletons)`` per rung, one line."""
    return "; ".join(f"{r['tau']:g} -> {r['clusters']} clusters (largest {r['largest_share']:.0%}, singletons "
                     f"{r['singleton_share']:.0%})" for r in ladder)  # fmt: skip


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
