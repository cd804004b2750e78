"""Clustering quality: pairwise and BCubed precision/recall/F-score, NMI, cluster statistics.

All counts come from the sparse contingency table of (true class, predicted cluster), so every metric is O(N).
Conventions (the reference returns NaN here): with no predicted pairs (all singletons) pairwise precision is 1.0
(no wrong pair was predicted); with no true pairs recall is 1.0; F is 0 when precision + recall is 0.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from sklearn.metrics import normalized_mutual_info_score

from autolabel.errors import DataError


def _check(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g, p = np.asarray(gt), np.asarray(pred)
    if g.ndim != 1 or p.ndim != 1:
        raise DataError(f"labels must be 1-D arrays, got shapes {g.shape} and {p.shape}")
    if len(g) != len(p):
        raise DataError(f"ground truth has {len(g)} labels but prediction has {len(p)}; they must align per sample")
    if len(g) == 0:
        raise DataError("cannot score an empty clustering (N = 0)")
    for name, a in (("ground truth", g), ("prediction", p)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == object or np.issubdtype(a.dtype, np.str_)):
            raise DataError(f"{name} labels must be integers or strings, got dtype {a.dtype}")
    _, g = np.unique(g, return_inverse=True)
    _, p = np.unique(p, return_inverse=True)
    return g.astype(np.int64), p.astype(np.int64)


def contingency(gt: np.ndarray, pred: np.ndarray) -> csr_matrix:
    """Sparse [n_classes, n_clusters] count matrix."""
    g, p = _check(gt, pred)
    return coo_matrix((np.ones(len(g), dtype=np.int64), (g, p))).tocsr()


def _prf(tp: float, p_den: float, r_den: float) -> tuple[float, float, float]:
    precision = tp / p_den if p_den > 0 else 1.0
    recall = tp / r_den if r_den > 0 else 1.0
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return float(precision), float(recall), float(f)


def pairwise_fscore(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    """Precision/recall/F over same-cluster pairs: tk = ΣC² − N, pk = Σcol² − N, qk = Σrow² − N."""
    c = contingency(gt, pred)
    n = c.sum()
    tk = float((c.data.astype(np.float64) ** 2).sum() - n)
    pk = float((np.asarray(c.sum(axis=0), dtype=np.float64) ** 2).sum() - n)
    qk = float((np.asarray(c.sum(axis=1), dtype=np.float64) ** 2).sum() - n)
    return _prf(tk, pk, qk)


def bcubed_fscore(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    """BCubed: per sample, the share of its predicted cluster that shares its class (precision) and the share of its
    class found in its cluster (recall), averaged over samples: Σ n²/|pred| / N and Σ n²/|gt| / N over overlaps n."""
    c = contingency(gt, pred).tocoo()
    n = float(c.sum())
    col = np.asarray(c.tocsr().sum(axis=0)).ravel().astype(np.float64)
    row = np.asarray(c.tocsr().sum(axis=1)).ravel().astype(np.float64)
    sq = c.data.astype(np.float64) ** 2
    precision = float((sq / col[c.col]).sum() / n)
    recall = float((sq / row[c.row]).sum() / n)
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, float(f)


def nmi(gt: np.ndarray, pred: np.ndarray) -> float:
    """Normalized mutual information (scikit-learn, arithmetic-mean normalization)."""
    g, p = _check(gt, pred)
    return float(normalized_mutual_info_score(g, p, average_method="arithmetic"))


def cluster_stats(pred: np.ndarray) -> dict[str, float]:
    """Number of clusters, share of samples that sit alone in their cluster, size of the largest cluster."""
    p = np.asarray(pred)
    if p.ndim != 1 or len(p) == 0:
        raise DataError(f"cluster ids must be a non-empty 1-D array, got shape {p.shape}")
    _, counts = np.unique(p, return_counts=True)
    largest = int(counts.max())
    return {
        "n_clusters": int(len(counts)),
        "singleton_share": float((counts == 1).sum() / counts.sum()),
        "largest": largest,
        "largest_cluster": largest,
    }


def evaluate_clustering(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Every clustering metric in one flat dict."""
    pp, pr, pf = pairwise_fscore(gt, pred)
    bp, br, bf = bcubed_fscore(gt, pred)
    stats = cluster_stats(pred)
    return {
        "pairwise_precision": pp,
        "pairwise_recall": pr,
        "pairwise_f": pf,
        "bcubed_precision": bp,
        "bcubed_recall": br,
        "bcubed_f": bf,
        "nmi": nmi(gt, pred),
        "n_clusters": stats["n_clusters"],
        "n_true_clusters": int(len(np.unique(np.asarray(gt)))),
        "singleton_share": stats["singleton_share"],
    }
