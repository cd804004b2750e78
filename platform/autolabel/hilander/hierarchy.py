"""The Hi-LANDER hierarchy: decode a level into a forest, merge trees into supernodes, repeat.

Shared by training (levels built from ground-truth density and similarity) and inference (levels built from
predicted density and link probability). Everything is vectorized: the best in-edge per node is a sort-based
scatter-argmax, tree roots come from pointer jumping, supernode features from scatter means.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from autolabel.errors import ConfigError
from autolabel.hilander.graphs import build_level_graph
from autolabel.hilander.search import knn_search


def best_parent(edge_index: np.ndarray, score: np.ndarray, keep: np.ndarray, n: int) -> np.ndarray:
    """Each node's parent: the source of its highest-scoring kept in-edge, or itself when it has none."""
    parent = np.arange(n, dtype=np.int64)
    if not keep.any():
        return parent
    src, dst, s = edge_index[0][keep], edge_index[1][keep], score[keep]
    order = np.lexsort((-s, dst))  # by target, best score first
    dst_sorted = dst[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = dst_sorted[1:] != dst_sorted[:-1]
    parent[dst_sorted[first]] = src[order][first]
    return parent


def find_roots(parent: np.ndarray) -> np.ndarray:
    """Root of every node by pointer jumping (``p <- p[p]``, O(log depth) rounds). Raises on a cycle."""
    root = parent.copy()
    for _ in range(64):
        nxt = root[root]
        if np.array_equal(nxt, root):
            if np.array_equal(parent[root], root):  # every root must be its own parent
                return root
            break
        root = nxt
    raise RuntimeError("parent pointers contain a cycle; decode requires strictly increasing density along edges")


def forest_clusters(parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(cluster_id [n], peaks [C])``: trees of the forest, numbered by their root; ``peaks[c]`` is cluster c's root."""
    roots = find_roots(parent)
    peaks, cluster_id = np.unique(roots, return_inverse=True)
    return cluster_id.astype(np.int64), peaks.astype(np.int64)


def decode_level(
    edge_index: torch.Tensor, density: torch.Tensor, score: torch.Tensor, threshold: float, n: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Keep edge j->i iff density_j > density_i and score_ij > threshold; each node keeps its best such in-edge.

    Returns ``(cluster_id, peaks, edges_added)``. Density strictly rises along kept edges, so the result is a forest.
    """
    ei = edge_index.cpu().numpy()
    d = density.detach().cpu().numpy()
    s = score.detach().cpu().numpy()
    keep = (d[ei[0]] > d[ei[1]]) & (s > threshold)
    parent = best_parent(ei, s, keep, n)
    cluster_id, peaks = forest_clusters(parent)
    return cluster_id, peaks, int((parent != np.arange(n)).sum())


def supernode_features(base_features: np.ndarray, assign: np.ndarray, n_clusters: int) -> np.ndarray:
    """L2-normalized mean of each cluster's ORIGINAL member features (``assign`` maps samples to clusters)."""
    sums = np.zeros((n_clusters, base_features.shape[1]), dtype=np.float64)
    np.add.at(sums, assign, base_features)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)


def build_training_levels(
    features: np.ndarray,
    labels: np.ndarray,
    k_list: list[int],
    levels_list: list[int],
    knn_kwargs: dict[str, Any] | None = None,
) -> list[Data]:
    """Level graphs for meta-training, built from ground truth (DESIGN 3.7).

    For each ``(k, levels)`` pair: level 0 is the kNN graph of the samples; a level's forest keeps edge j->i when
    d_j > d_i and a_ij > 0, each node its most similar such parent; the roots (peaks) become the next level's nodes with
    identity feature = the peak's feature and cluster feature = mean of all original members; kNN is rebuilt on the peak
    features. A pair stops early when the next level would have <= k nodes.
    """
    knn_kwargs = dict(knn_kwargs or {})
    labels = np.asarray(labels, dtype=np.int64)
    graphs: list[Data] = []
    for k, n_levels in zip(k_list, levels_list):
        identity, cluster, lab = features, features, labels
        assign = np.arange(len(features), dtype=np.int64)
        for level in range(n_levels):
            n = len(identity)
            if n < 2:
                break
            nbrs, sims = knn_search(identity, min(k, n - 1), **knn_kwargs)
            g = build_level_graph(identity, nbrs, sims, cluster=cluster, labels=lab)
            g.level = torch.tensor([level])
            g.k = torch.tensor([k])
            graphs.append(g)
            if level == n_levels - 1:
                break
            cluster_id, peaks, added = decode_level(g.edge_index, g.density, g.edge_sim, 0.0, n)
            if added == 0 or len(peaks) <= k:
                break
            assign = cluster_id[assign]
            identity, lab = identity[peaks], lab[peaks]
            cluster = supernode_features(features, assign, len(peaks))
    return graphs


@dataclass
class ClusterResult:
    labels: np.ndarray  # int64 [N] cluster per sample
    levels: list[dict] = field(default_factory=list)  # per level: nodes, edges_added, clusters, seconds
    seconds: dict[str, float] = field(default_factory=dict)  # knn / gnn / decode totals

    @property
    def n_clusters(self) -> int:
        return int(len(np.unique(self.labels)))


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def cluster_pool(
    model: torch.nn.Module,
    features: np.ndarray,
    *,
    k: int = 10,
    tau: float = 0.8,
    levels: int = 3,
    early_stop: bool = True,
    device: str = "auto",
    knn_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> ClusterResult:
    """Hierarchical inference (DESIGN 3.8): per level predict p_ij and d̂_i on the whole graph, keep j->i iff
    d̂_j > d̂_i and p_ij > tau, each node its best in-edge; trees become supernodes; repeat until the level limit, no
    edge added, or (``early_stop``) the reference's rule that two levels add similar numbers of edges."""
    from tqdm.auto import tqdm

    dev = _resolve_device(device)
    model = model.to(dev).eval()
    knn_kwargs = dict(knn_kwargs or {})
    feats = np.ascontiguousarray(features, dtype=np.float32)
    n0 = len(feats)
    assign = np.arange(n0, dtype=np.int64)
    identity, cluster = feats, feats
    stats: list[dict] = []
    totals = {"knn": 0.0, "gnn": 0.0, "decode": 0.0}
    last_added = float("inf")
    bar = tqdm(total=levels, desc="hi-lander levels", disable=not progress, leave=False)
    for level in range(levels):
        n = len(identity)
        if n < 2:
            break
        t0 = time.perf_counter()
        nbrs, sims = knn_search(identity, min(k, n - 1), **knn_kwargs)
        t1 = time.perf_counter()
        g = build_level_graph(identity, nbrs, sims, cluster=cluster).to(dev)
        logits, density = model(g)
        prob = logits.softmax(-1)[:, 1]
        t2 = time.perf_counter()
        cluster_id, peaks, added = decode_level(g.edge_index, density, prob, tau, n)
        assign = cluster_id[assign]
        t3 = time.perf_counter()
        totals["knn"] += t1 - t0
        totals["gnn"] += t2 - t1
        totals["decode"] += t3 - t2
        stats.append({"level": level, "nodes": n, "edges_added": added, "clusters": len(peaks),
                      "seconds": round(t3 - t0, 4)})  # fmt: skip
        bar.update(1)
        bar.set_postfix(nodes=n, clusters=len(peaks))
        if added == 0 or level == levels - 1 or len(peaks) < 2:
            break
        if early_stop and last_added / added < k - 1:
            break
        last_added = added
        identity = identity[peaks]
        cluster = supernode_features(feats, assign, len(peaks))
    bar.close()
    _, labels = np.unique(assign, return_inverse=True)
    return ClusterResult(labels.astype(np.int64), stats, totals)


def select_tau(
    model: torch.nn.Module,
    features: np.ndarray,
    labels: np.ndarray,
    candidates: Sequence[float],
    *,
    metric: str = "bcubed_f",
    **cluster_kwargs: Any,
) -> tuple[float, dict[float, float]]:
    """Pick the edge threshold on a *labeled* calibration pool (e.g. held-out meta-training classes): cluster it with
    every candidate tau and return the best one by ``metric`` plus every candidate's score. Ties go to the larger tau
    (fewer, surer edges)."""
    from autolabel.metrics.clustering import evaluate_clustering

    if not len(candidates):
        raise ConfigError("select_tau needs at least one candidate tau, e.g. [0.1, 0.2, ..., 0.9]")
    scores: dict[float, float] = {}
    for tau in sorted({float(t) for t in candidates}, reverse=True):
        result = cluster_pool(model, features, tau=tau, progress=False, **cluster_kwargs)
        scores[tau] = float(evaluate_clustering(labels, result.labels)[metric])
    best = max(scores, key=lambda t: (scores[t], t))
    return best, scores
