"""The Hi-LANDER hierarchy: decode a level into a forest, merge trees into supernodes, repeat.

Shared by training (levels built from ground-truth density and similarity) and inference (levels built from
predicted density and link probability). Everything is vectorized: the best in-edge per node is a sort-based
scatter-argmax, tree roots come from pointer jumping, supernode features from scatter means.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
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
    return best_in_edge(edge_index, score, keep, n)[0]


def best_in_edge(edge_index: np.ndarray, score: np.ndarray, keep: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(parent [n], edge [n])``: each node's highest-scoring kept in-edge (its source and its position in
    ``edge_index``), or itself and -1 when it has none. Equal scores go to the edge listed first."""
    parent = np.arange(n, dtype=np.int64)
    edge = np.full(n, -1, dtype=np.int64)
    if not keep.any():
        return parent, edge
    kept = np.flatnonzero(keep)
    src, dst, s = edge_index[0][kept], edge_index[1][kept], score[kept]
    order = np.lexsort((-s, dst))  # by target, best score first (stable: ties keep edge order)
    dst_sorted = dst[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = dst_sorted[1:] != dst_sorted[:-1]
    parent[dst_sorted[first]] = src[order][first]
    edge[dst_sorted[first]] = kept[order][first]
    return parent, edge


def uphill(src: np.ndarray, dst: np.ndarray, density: np.ndarray) -> np.ndarray:
    """Edges j -> i that go strictly uphill in the order (density, then lower index first): ``d_j > d_i``, or
    ``d_j == d_i`` and ``j < i``. A strict total order on the nodes, so any parent choice among these edges is a forest,
    and exact duplicates (equal density) still link: the lowest index of a group of equals is its peak."""
    dj, di = density[src], density[dst]
    return (dj > di) | ((dj == di) & (src < dst))


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
    """Keep edge j->i iff it goes uphill in density (ties broken by index, see :func:`uphill`) and
    score_ij > threshold; each node keeps its best such in-edge.

    Returns ``(cluster_id, peaks, edges_added)``. The order along kept edges is strict, so the result is a forest."""
    cluster_id, peaks, parent, _ = decode_level_edges(edge_index, density, score, threshold, n)
    return cluster_id, peaks, int((parent != np.arange(n)).sum())


def decode_level_edges(
    edge_index: torch.Tensor | np.ndarray,
    density: torch.Tensor | np.ndarray,
    score: torch.Tensor | np.ndarray,
    threshold: float,
    n: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`decode_level` plus each node's parent and the position of the edge it joined by (-1: none)."""
    ei = edge_index.cpu().numpy() if isinstance(edge_index, torch.Tensor) else np.asarray(edge_index)
    d = density.detach().cpu().numpy() if isinstance(density, torch.Tensor) else np.asarray(density)
    s = score.detach().cpu().numpy() if isinstance(score, torch.Tensor) else np.asarray(score)
    keep = uphill(ei[0], ei[1], d) & (s > threshold)
    parent, edge = best_in_edge(ei, s, keep, n)
    cluster_id, peaks = forest_clusters(parent)
    return cluster_id, peaks, parent, edge


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
    # Per sample: the (calibrated) link probability of the edge by which it joined its parent (for a cluster's peak:
    # its strongest direct child's; 0 for a singleton), the level at which it joined (-1: it is its cluster's peak or
    # a singleton), and its predicted level-0 density.
    confidence: np.ndarray | None = None
    join_level: np.ndarray | None = None
    density: np.ndarray | None = None

    @property
    def n_clusters(self) -> int:
        return int(len(np.unique(self.labels)))

    def columns(self) -> dict[str, np.ndarray]:
        """The per-sample columns of ``clusters.csv`` after ``id,cluster``: confidence, level, density."""
        cols: dict[str, np.ndarray] = {}
        for name, arr in (("confidence", self.confidence), ("level", self.join_level), ("density", self.density)):
            if arr is not None:
                cols[name] = arr
        return cols


def clusters_table(ids: Any, clusters: Any, extra: dict[str, Any] | None = None) -> str:
    """CSV text: ``id,cluster`` (always the first two columns), then each ``extra`` column (floats to 4 decimals)."""
    import csv
    import io

    extra = extra or {}
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "cluster", *extra])
    cols = [np.asarray(v) for v in extra.values()]
    for row, (i, c) in enumerate(zip(ids, clusters)):
        vals = [f"{v[row]:.4f}" if np.issubdtype(v.dtype, np.floating) else int(v[row]) for v in cols]
        w.writerow([i, int(c), *vals])
    return buf.getvalue()


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def link_probability(logits: torch.Tensor) -> torch.Tensor:
    """P(same class) from the 2-way link logits, uncalibrated: ``softmax(logits)[:, 1]``."""
    return logits.softmax(-1)[:, 1]


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
    link_prob: Callable[[torch.Tensor], torch.Tensor] | None = None,
    level0_knn: tuple[np.ndarray, np.ndarray] | None = None,
    level0_cache: dict | None = None,
) -> ClusterResult:
    """Hierarchical inference (DESIGN 3.8): per level predict p_ij and d̂_i on the whole graph, keep j->i iff
    it goes uphill in d̂ (index tie-break, :func:`uphill`) and p_ij > tau, each node its best in-edge; trees become
    supernodes; repeat until the level limit, no edge added, or (``early_stop``) the reference's rule that two levels
    add similar numbers of edges.

    ``link_prob`` maps the link logits to the probabilities compared with tau (default: the raw softmax; a
    checkpoint's calibration otherwise). ``level0_knn`` = ``(nbrs, sims)`` of the pool with at least ``k`` columns
    reuses a search already done (tau calibration clusters one pool many times); ``level0_cache``, a dict shared by
    calls on the same pool, model and kNN settings, keeps the level-0 search (when this call did it), graph and GNN
    outputs (they do not depend on tau), so only the decoding and the (smaller) upper levels are redone per tau.

    ``k >= N`` is capped at N-1 with one :class:`KCapWarning` (later levels, with fewer supernodes, cap silently);
    N < 2 and features of another width than the model's are :class:`DataError`.

    Near-exact duplicates (cosine >= ``1 - DUPLICATE_EPS``: the same photo twice, scaled copies of one feature) are
    merged before level 0: among equals the kNN lists are arbitrary, and with no density step between them many would
    stay peaks. Each duplicate joins its group's first row at level 0 with confidence 1."""
    feats = np.ascontiguousarray(features, dtype=np.float32)
    if feats.ndim != 2 or len(feats) < 2:
        raise DataError(f"cluster_pool needs a [N, D] array with N >= 2, got shape {feats.shape}")
    want = getattr(model, "feature_dim", None)
    if want is not None and feats.shape[1] != want:
        raise DataError(f"the model was trained on {want}-d features, the pool has {feats.shape[1]}-d: "
                        "embed the pool with the same encoder as the meta-training features")  # fmt: skip
    kwargs = dict(k=k, tau=tau, levels=levels, early_stop=early_stop, device=device, knn_kwargs=knn_kwargs,
                  progress=progress, link_prob=link_prob, level0_cache=level0_cache)  # fmt: skip
    knn_info: dict = {}
    knn_seconds = 0.0
    if level0_knn is None and level0_cache is not None and "knn" in level0_cache:
        # an earlier call on this pool searched it: reuse, and report the search this result rests on
        level0_knn, knn_info, knn_seconds = level0_cache["knn"], level0_cache["knn_info"], level0_cache["knn_seconds"]
    elif level0_knn is None:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KCapWarning)  # _cluster_distinct warns once with the user's key
            level0_knn = knn_search(feats, min(k, len(feats) - 1), info=knn_info, **dict(knn_kwargs or {}))
        knn_seconds = time.perf_counter() - t0
        if level0_cache is not None:
            level0_cache.update(knn=level0_knn, knn_info=knn_info, knn_seconds=knn_seconds)
    res = _dedupe_and_cluster(model, feats, level0_knn, kwargs)
    res.seconds["knn"] = res.seconds.get("knn", 0.0) + knn_seconds  # the level-0 search is done here, once
    if res.levels and knn_info and not res.levels[0].get("knn"):
        res.levels[0]["knn"] = knn_info  # method, effort and recall reached (approximate indexes)
        res.levels[0]["seconds"] = round(res.levels[0]["seconds"] + knn_seconds, 4)
    return res


def _dedupe_and_cluster(model: torch.nn.Module, feats: np.ndarray, level0_knn: tuple[np.ndarray, np.ndarray],
                        kwargs: dict[str, Any]) -> ClusterResult:  # fmt: skip
    """Merge near-exact duplicates (found among the level-0 neighbours), cluster the distinct rows, spread back."""
    k = kwargs["k"]
    t0 = time.perf_counter()
    rep = duplicate_groups(feats, *level0_knn)
    first = np.flatnonzero(rep == np.arange(len(feats)))
    dedupe_seconds = time.perf_counter() - t0
    if len(first) == len(feats):
        return _cluster_distinct(model, feats, level0_knn=level0_knn, **kwargs)
    if len(first) < 2:  # the whole pool is one row repeated
        n = len(feats)
        res = ClusterResult(np.zeros(n, dtype=np.int64), [], {"knn": 0.0, "gnn": 0.0, "decode": 0.0},
                            np.ones(n, dtype=np.float32), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.float32))  # fmt: skip
        res.join_level[0] = -1
    else:
        with warnings.catch_warnings():
            if k < len(feats):  # the user's k fits the pool; only the de-duplicated one is smaller
                warnings.simplefilter("ignore", KCapWarning)
            res = _cluster_distinct(model, feats[first], **kwargs)
        t1 = time.perf_counter()
        res = _expand_duplicates(res, rep, first)
        dedupe_seconds += time.perf_counter() - t1
    res.seconds["dedupe"] = dedupe_seconds
    if res.levels:
        res.levels[0]["duplicates_merged"] = int(len(feats) - len(first))
    return res


DUPLICATE_EPS = 1e-6


def duplicate_groups(
    features: np.ndarray, nbrs: np.ndarray, sims: np.ndarray, eps: float = DUPLICATE_EPS
) -> np.ndarray:
    """Each row's group representative (the group's lowest row index): rows joined by a kNN edge whose cosine
    similarity is >= ``1 - eps``, closed transitively (union-find). ``sims`` may be inner products of unnormalized
    rows; the cosine is recomputed from the row norms."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    n = len(features)
    norms = np.empty(n, dtype=np.float64)  # in float64, a block of rows at a time (no float64 copy of the pool)
    for start in range(0, n, 65536):
        block = features[start : start + 65536].astype(np.float64)
        norms[start : start + 65536] = np.sqrt(np.einsum("ij,ij->i", block, block))
    rows = np.repeat(np.arange(n), nbrs.shape[1])
    cols = nbrs.reshape(-1)
    ok = cols >= 0
    rows, cols, s = rows[ok], cols[ok], sims.reshape(-1)[ok].astype(np.float64)
    cos = s / np.maximum(norms[rows] * norms[cols], 1e-30)
    dup = cos >= 1.0 - eps
    if not dup.any():
        return np.arange(n, dtype=np.int64)
    adj = sp.coo_matrix((np.ones(int(dup.sum())), (rows[dup], cols[dup])), shape=(n, n))
    _, comp = connected_components(adj, directed=True, connection="weak")
    lowest = np.full(comp.max() + 1, n, dtype=np.int64)
    np.minimum.at(lowest, comp, np.arange(n))
    return lowest[comp]


def _expand_duplicates(res: ClusterResult, rep: np.ndarray, first: np.ndarray) -> ClusterResult:
    """The result on the distinct rows ``first`` spread to every row: each duplicate takes its representative's
    cluster and density, joined at level 0 with confidence 1 (a representative with duplicates, if it was its
    cluster's peak, gets confidence 1: its strongest direct child is an exact match)."""
    n = len(rep)
    pos = np.full(n, -1, dtype=np.int64)
    pos[first] = np.arange(len(first))
    src = pos[rep]
    labels = res.labels[src]
    confidence = res.confidence[src].copy() if res.confidence is not None else np.ones(n, dtype=np.float32)
    join_level = res.join_level[src].copy() if res.join_level is not None else np.zeros(n, dtype=np.int64)
    density = res.density[src].copy() if res.density is not None else None
    member = rep != np.arange(n)
    confidence[member] = 1.0
    join_level[member] = 0
    has_dup = np.zeros(n, dtype=bool)
    has_dup[rep[member]] = True
    peak_with_dup = has_dup & (join_level < 0)
    confidence[peak_with_dup] = 1.0
    return ClusterResult(labels, res.levels, res.seconds, confidence, join_level, density)


def _cluster_distinct(model: torch.nn.Module, features: np.ndarray, *, k: int, tau: float, levels: int,
                      early_stop: bool, device: str, knn_kwargs: dict[str, Any] | None, progress: bool,
                      link_prob: Callable | None, level0_knn: tuple[np.ndarray, np.ndarray] | None = None,
                      level0_cache: dict | None = None) -> ClusterResult:  # fmt: skip
    """:func:`cluster_pool` on a pool without near-exact duplicate rows."""
    from tqdm.auto import tqdm

    feats = features
    to_prob = link_prob or link_probability
    dev = _resolve_device(device)
    model = model.to(dev).eval()
    knn_kwargs = dict(knn_kwargs or {})
    n0 = len(feats)
    k0 = _cap_k(k, n0, "cluster.k")
    assign = np.arange(n0, dtype=np.int64)
    node_sample = np.arange(n0, dtype=np.int64)  # the sample whose feature is each node's identity (its peak)
    confidence = np.zeros(n0, dtype=np.float32)
    join_level = np.full(n0, -1, dtype=np.int64)
    peak_conf = np.zeros(n0, dtype=np.float32)
    density0 = np.zeros(n0, dtype=np.float32)
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
        kk = min(k0, n - 1)
        knn_info: dict = {}
        cached = level == 0 and level0_cache is not None and "logits" in level0_cache  # no kNN, no GNN pass
        if cached:
            pass
        elif level == 0 and level0_knn is not None and level0_knn[0].shape[1] >= kk:
            nbrs, sims = level0_knn[0][:, :kk], level0_knn[1][:, :kk]
        else:
            # upper levels hold supernodes, far fewer than the pool: exact up to exact_max whatever index level 0 used
            kw = (
                knn_kwargs
                if level == 0 or knn_kwargs.get("method", "auto") == "flat"
                else {**knn_kwargs, "method": "auto"}
            )
            nbrs, sims = knn_search(identity, kk, info=knn_info, **kw)
        t1 = time.perf_counter()
        if cached:
            g, logits, density = level0_cache["graph"], level0_cache["logits"], level0_cache["density"]
        else:
            g = build_level_graph(identity, nbrs, sims, cluster=cluster).to(dev)
            logits, density = model(g)
            if level == 0 and level0_cache is not None:
                level0_cache.update(graph=g, logits=logits, density=density)
        prob = to_prob(logits)
        t2 = time.perf_counter()
        cluster_id, peaks, parent, edge = decode_level_edges(g.edge_index, density, prob, tau, n)
        joined = edge >= 0
        added = int(joined.sum())
        p_np = prob.detach().float().cpu().numpy()
        node_conf = np.zeros(n, dtype=np.float32)
        node_conf[joined] = p_np[edge[joined]]
        child_max = np.zeros(n, dtype=np.float32)  # each node's strongest direct child link
        np.maximum.at(child_max, parent[joined], node_conf[joined])
        np.maximum.at(peak_conf, node_sample, child_max)
        first = joined[assign] & (join_level < 0)  # samples whose node joins a parent for the first time
        join_level[first] = level
        confidence[first] = node_conf[assign[first]]
        if level == 0:
            density0 = density.detach().float().cpu().numpy().astype(np.float32)
        assign = cluster_id[assign]
        node_sample = node_sample[peaks]
        t3 = time.perf_counter()
        totals["knn"] += t1 - t0
        totals["gnn"] += t2 - t1
        totals["decode"] += t3 - t2
        stats.append({"level": level, "nodes": n, "edges_added": added, "clusters": len(peaks),
                      "seconds": round(t3 - t0, 4), "knn": knn_info})  # fmt: skip
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
    roots = join_level < 0
    confidence[roots] = peak_conf[roots]
    _, labels = np.unique(assign, return_inverse=True)
    return ClusterResult(labels.astype(np.int64), stats, totals, confidence, join_level, density0)


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
    every candidate tau and return the best one by ``metric`` plus every candidate's score. The level-0 kNN search is
    done once for all candidates.

    Several candidates often tie exactly (the calibration pool's clusters do not change over a range of tau). Then the
    median of the tied taus is taken (the upper one of the two middle ones for an even count: fewer, surer edges):
    the unseen pool's link probabilities are shifted against the seen classes', and the middle of the plateau leaves
    the most room on both sides, where its top end over-splits the pool and its bottom end over-merges it."""
    from autolabel.metrics.clustering import evaluate_clustering

    if not len(candidates):
        raise ConfigError("select_tau needs at least one candidate tau, e.g. [0.1, 0.2, ..., 0.9]")
    if "level0_knn" not in cluster_kwargs and isinstance(features, np.ndarray) and len(features) >= 2:
        k = _cap_k(int(cluster_kwargs.get("k", 10)), len(features), "cluster.k")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KCapWarning)
            cluster_kwargs["level0_knn"] = knn_search(features, k, **dict(cluster_kwargs.get("knn_kwargs") or {}))
    cluster_kwargs.setdefault("level0_cache", {})  # level 0's graph and GNN outputs do not depend on tau
    scores: dict[float, float] = {}
    for tau in sorted({float(t) for t in candidates}, reverse=True):
        result = cluster_pool(model, features, tau=tau, progress=False, **cluster_kwargs)
        scores[tau] = float(evaluate_clustering(labels, result.labels)[metric])
    top = max(scores.values())
    tied = sorted(t for t, v in scores.items() if v >= top - 1e-12)
    best = tied[len(tied) // 2]
    return best, scores
