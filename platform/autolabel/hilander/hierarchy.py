"""The Hi-LANDER hierarchy: decode a level into a forest, merge trees into supernodes, repeat.

Shared by training (levels built from ground-truth density and similarity) and inference (levels built from
predicted density and link probability). Everything is vectorized: the best in-edge per node is a sort-based
scatter-argmax, tree roots come from pointer jumping, supernode features from scatter means.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from autolabel.errors import ConfigError, DataError
from autolabel.hilander.graphs import build_level_graph
from autolabel.hilander.search import KCapWarning, knn_search


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
    """Plain mean of each cluster's ORIGINAL member features (``assign`` maps samples to clusters), float32.

    Not re-normalized, as in the reference (``build_next_level``: ``np.mean`` of the members): this vector is only the
    GNN's cluster-feature input (kNN at the next level runs on the peaks' unit identity features), and its norm -- 1 for
    a singleton, shrinking as members spread out -- tells the GNN how coherent the supernode is, which a unit vector
    would hide. Training and inference build it the same way, so the GNN sees one distribution.

    One sparse [C, N] x [N, D] product per column block, accumulated in float64 in sample order: the same sums as a
    per-sample ``np.add.at`` loop, ~15x faster, and the float64 copy is bounded to ~256 MB per block.
    """
    from scipy.sparse import csr_matrix

    x = np.asarray(base_features)
    a = np.asarray(assign, dtype=np.int64)
    n, d = x.shape
    if a.shape != (n,):
        raise ValueError(f"assign has shape {a.shape}, expected ({n},): one cluster id per sample")
    members = csr_matrix((np.ones(n, dtype=np.float64), (a, np.arange(n))), shape=(n_clusters, n))
    counts = np.bincount(a, minlength=n_clusters).astype(np.float64)
    out = np.empty((n_clusters, d), dtype=np.float32)
    block = max(1, (1 << 25) // max(1, n))  # columns per block: n * block * 8 bytes <= 256 MB
    for start in range(0, d, block):
        sums = members @ x[:, start : start + block].astype(np.float64)
        out[:, start : start + block] = sums / np.maximum(counts, 1.0)[:, None]
    return out


def _cap_k(k: int, n: int, what: str) -> int:
    """``min(k, n - 1)``, with a :class:`KCapWarning` when that changes k (a point has only N-1 others)."""
    if k > n - 1:
        warnings.warn(f"{what}: k={k} >= N={n} points; using k={n - 1} (each point has only N-1 others)",
                      KCapWarning, stacklevel=3)  # fmt: skip
        return n - 1
    return k


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

    A k >= N (only possible at level 0: later levels stop first) is capped at N-1 with a :class:`KCapWarning`.
    """
    knn_kwargs = dict(knn_kwargs or {})
    labels = np.asarray(labels, dtype=np.int64)
    if len(features) < 2:
        raise DataError(f"meta-training needs at least 2 labeled samples, got N={len(features)}")
    graphs: list[Data] = []
    for k, n_levels in zip(k_list, levels_list):
        identity, cluster, lab = features, features, labels
        assign = np.arange(len(features), dtype=np.int64)
        for level in range(n_levels):
            n = len(identity)
            if n < 2:
                break
            kk = _cap_k(k, n, "train.k_list") if level == 0 else min(k, n - 1)
            nbrs, sims = knn_search(identity, kk, **knn_kwargs)
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
    edge added, or (``early_stop``) the reference's rule that two levels add similar numbers of edges.

    ``k >= N`` is capped at N-1 with one :class:`KCapWarning` (later levels, with fewer supernodes, cap silently);
    N < 2 and features of another width than the model's are :class:`DataError`."""
    from tqdm.auto import tqdm

    feats = np.ascontiguousarray(features, dtype=np.float32)
    if feats.ndim != 2 or len(feats) < 2:
        raise DataError(f"cluster_pool needs a [N, D] array with N >= 2, got shape {feats.shape}")
    want = getattr(model, "feature_dim", None)
    if want is not None and feats.shape[1] != want:
        raise DataError(f"the model was trained on {want}-d features, the pool has {feats.shape[1]}-d: "
                        "embed the pool with the same encoder as the meta-training features")  # fmt: skip
    dev = _resolve_device(device)
    model = model.to(dev).eval()
    knn_kwargs = dict(knn_kwargs or {})
    n0 = len(feats)
    k0 = _cap_k(k, n0, "cluster.k")
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
        nbrs, sims = knn_search(identity, min(k0, n - 1), **knn_kwargs)
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
        if early_stop and last_added / added < k0 - 1:
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
    every candidate tau and return the best one by ``metric`` plus every candidate's score.

    Several candidates often tie exactly (the calibration pool's clusters do not change over a range of tau). Then the
    median of the tied taus is taken (the upper one of the two middle ones for an even count: fewer, surer edges):
    the unseen pool's link probabilities are shifted against the seen classes', and the middle of the plateau leaves
    the most room on both sides, where its top end over-splits the pool and its bottom end over-merges it."""
    from autolabel.metrics.clustering import evaluate_clustering

    if not len(candidates):
        raise ConfigError("select_tau needs at least one candidate tau, e.g. [0.1, 0.2, ..., 0.9]")
    scores: dict[float, float] = {}
    for tau in sorted({float(t) for t in candidates}, reverse=True):
        result = cluster_pool(model, features, tau=tau, progress=False, **cluster_kwargs)
        scores[tau] = float(evaluate_clustering(labels, result.labels)[metric])
    top = max(scores.values())
    tied = sorted(t for t, v in scores.items() if v >= top - 1e-12)
    best = tied[len(tied) // 2]
    return best, scores
