"""Assign new samples to the clusters of an earlier Hi-LANDER run, without clustering everything again.

The new features join the clustered pool in one level-0 kNN graph (``k`` neighbours each, faiss); the trained GNN
predicts the link probability ``p_ij`` (P(same class)) of every edge ``j -> i``. A new sample ``i`` takes the cluster
of the clustered neighbour ``j`` with the highest ``p_ij``; that probability is its ``confidence``. When no clustered
neighbour is linked with ``p > tau`` (the run's threshold), the sample is far from every cluster: outcome ``new``.
New samples linked to each other with ``p > tau`` share a new cluster (connected components), named ``new-<i>``.
Unlike clustering, no density condition is applied: a new sample may be denser than the members it joins.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import torch

from autolabel.errors import ConfigError, DataError


@torch.no_grad()
def assign_to_clusters(model: torch.nn.Module, pool_features: np.ndarray, pool_clusters: np.ndarray,
                       new_features: np.ndarray, *, k: int = 10, tau: float = 0.8, device: str = "cpu",
                       knn_kwargs: dict | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Returns ``cluster`` (object array: the pool's cluster id, or ``new-<i>``), ``confidence`` (float, the best
    link probability to a clustered neighbour, 0 when none), ``outcome`` (``existing`` | ``new``) and ``nearest``
    (the pool row of that neighbour, -1 when none)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from autolabel.hilander.graphs import build_level_graph
    from autolabel.hilander.search import knn_search

    pool = np.ascontiguousarray(pool_features, dtype=np.float32)
    new = np.ascontiguousarray(new_features, dtype=np.float32)
    if pool.ndim != 2 or new.ndim != 2 or pool.shape[1] != new.shape[1]:
        raise DataError(f"pool features {pool.shape} and new features {new.shape} differ in width: embed the new "
                        "images with the encoder that embedded the clustered pool")  # fmt: skip
    if len(pool_clusters) != len(pool):
        raise DataError(f"{len(pool_clusters)} cluster labels for {len(pool)} pool features: pass the clusters.csv "
                        "written for that pool")  # fmt: skip
    if not 0.0 <= tau <= 1.0:
        raise ConfigError(f"tau={tau} must be in [0, 1] (a probability threshold)")
    npool, nnew = len(pool), len(new)
    x = np.concatenate([pool, new])
    kk = min(int(k), len(x) - 1)
    nbrs, sims = knn_search(x, kk, **(knn_kwargs or {}))
    g = build_level_graph(x, nbrs, sims).to(device)
    logits, _ = model.to(device).eval()(g)
    prob = logits.softmax(-1)[:, 1].cpu().numpy()
    src, dst = (t.cpu().numpy() for t in g.edge_index)
    best = np.zeros(nnew, np.float64)
    nearest = np.full(nnew, -1, np.int64)
    into_new = dst >= npool
    from_pool = into_new & (src < npool)
    order = np.argsort(prob[from_pool], kind="stable")  # ascending: the last write per node is its best edge
    d, s, p = dst[from_pool][order] - npool, src[from_pool][order], prob[from_pool][order]
    best[d], nearest[d] = p, s
    linked = (nearest >= 0) & (best > tau)
    cluster = np.empty(nnew, dtype=object)
    cluster[linked] = np.asarray(pool_clusters, dtype=object)[nearest[linked]]
    far = np.flatnonzero(~linked)
    if far.size:
        among = into_new & (src >= npool) & (prob > tau)
        a, b = src[among] - npool, dst[among] - npool
        keep = ~linked[a] & ~linked[b]
        adj = coo_matrix((np.ones(int(keep.sum())), (a[keep], b[keep])), shape=(nnew, nnew))
        _, comp = connected_components(adj, directed=True, connection="weak")
        _, local = np.unique(comp[far], return_inverse=True)
        cluster[far] = [f"new-{int(c)}" for c in local]
    outcome = np.where(linked, "existing", "new")
    return {"cluster": cluster, "confidence": best, "outcome": outcome, "nearest": nearest}


def read_clusters_csv(path: str | os.PathLike) -> dict[str, str]:
    """``id -> cluster`` from a ``clusters.csv`` (``id,cluster[,...]``)."""
    p = Path(path)
    try:
        rows = list(csv.DictReader(p.read_text(encoding="utf-8").splitlines()))
    except OSError as e:
        raise DataError(f"cannot read {p}: {e.__class__.__name__} -- pass the clusters.csv of a cluster run") from e
    if not rows or "id" not in rows[0] or "cluster" not in rows[0]:
        raise DataError(f"{p} is not a clusters.csv (header id,cluster) -- pass the file `autolabel cluster` wrote")
    return {r["id"]: r["cluster"] for r in rows}


def find_cluster_run(clusters: str | os.PathLike, pool: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``(clusters.csv, pool features)`` of an earlier run: ``clusters`` is the CSV or a run directory holding one
    ``clusters.csv`` (and, unless ``pool`` is given, one ``pool.npz``: the features that were clustered)."""
    c = Path(clusters)
    if c.is_dir():
        found = [c / "clusters.csv"] if (c / "clusters.csv").is_file() else sorted(c.rglob("clusters.csv"))
        if len(found) != 1:
            raise DataError(f"clusters={c} holds {len(found)} clusters.csv files: pass the one to extend "
                            "(clusters=RUN/cluster/clusters.csv pool=POOL.npz)")  # fmt: skip
        csv_path = found[0]
        if pool is None:
            pools = sorted(c.rglob("pool.npz"))
            if len(pools) != 1:
                raise DataError(f"clusters={c}: found {len(pools)} pool.npz files -- pass pool=FEATURES.npz, the "
                                "features that were clustered")  # fmt: skip
            pool = pools[0]
    elif c.is_file():
        csv_path = c
        if pool is None:
            raise DataError(f"clusters={c} is a CSV: also pass pool=FEATURES.npz (the features that were clustered) "
                            "or clusters=RUN_DIR")  # fmt: skip
    else:
        raise DataError(f"clusters={c} not found -- pass a run directory or the clusters.csv of `autolabel cluster`")
    if not Path(pool).is_file():
        raise DataError(f"pool={pool} not found -- pass the features that were clustered (.npz)")
    return csv_path, Path(pool)


def run_tau(csv_path: Path) -> float | None:
    """The tau the run clustered with, when its ``metrics.json`` recorded it (pipeline runs)."""
    import json

    m = csv_path.parent / "metrics.json"
    try:
        tau = json.loads(m.read_text()).get("tau") if m.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None
    return float(tau) if tau is not None else None


def assign_csv(rows: dict, ids: np.ndarray, pool_ids: np.ndarray) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "cluster", "confidence", "outcome", "nearest"])
    for i, sid in enumerate(ids):
        near = rows["nearest"][i]
        w.writerow([sid, rows["cluster"][i], f"{rows['confidence'][i]:.4f}", rows["outcome"][i],
                    pool_ids[near] if near >= 0 else ""])  # fmt: skip
    return buf.getvalue().encode()


def assign_files(checkpoint: str | os.PathLike, clusters: str | os.PathLike, features: str | os.PathLike,
                 out: str | os.PathLike, *, pool: str | os.PathLike | None = None, k: int = 10,
                 tau: float | None = None, device: str = "cpu", knn_kwargs: dict | None = None) -> dict:  # fmt: skip
    """The ``autolabel assign`` job: read the run, assign, write ``out`` (id,cluster,confidence,outcome,nearest)."""
    from autolabel.data.pools import load_feature_pool
    from autolabel.engine.io import atomic_write_bytes
    from autolabel.hilander.checkpoint import load_lander

    model, hp = load_lander(checkpoint)
    csv_path, pool_path = find_cluster_run(clusters, pool)
    table = read_clusters_csv(csv_path)
    p = load_feature_pool(pool_path)
    pool_ids = p.ids if p.ids is not None else np.arange(p.n).astype(str)
    missing = [s for s in pool_ids if str(s) not in table]
    if missing:
        raise DataError(f"{len(missing)} pool sample(s) of {pool_path} are not in {csv_path} (e.g. {missing[0]}): "
                        "pass the pool that was clustered")  # fmt: skip
    labels = np.array([table[str(s)] for s in pool_ids], dtype=object)
    newp = load_feature_pool(features)
    want = int(hp["feature_dim"])
    if newp.dim != want or p.dim != want:
        raise DataError(f"checkpoint {checkpoint} works on {want}-d features; pool {p.dim}-d, new {newp.dim}-d: embed "
                        "both with the encoder of the meta-training features")  # fmt: skip
    tau = tau if tau is not None else run_tau(csv_path)
    tau = 0.8 if tau is None else tau
    res = assign_to_clusters(model, p.features, labels, newp.features, k=k, tau=tau, device=device,
                             knn_kwargs=knn_kwargs)  # fmt: skip
    ids = newp.ids if newp.ids is not None else np.array([f"new{i}" for i in range(newp.n)])
    path = atomic_write_bytes(out, assign_csv(res, ids, pool_ids))
    n_new = int((res["outcome"] == "new").sum())
    return {"path": str(path), "n": int(newp.n), "n_existing": int(newp.n - n_new), "n_new": n_new, "tau": tau,
            "new_clusters": len({c for c in res["cluster"] if str(c).startswith("new-")})}  # fmt: skip
