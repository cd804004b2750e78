"""Classic clusterers to compare Hi-LANDER against: k-means (faiss), agglomerative, DBSCAN (scikit-learn).

All take L2-normalized features and return int64 cluster ids [N].
"""

from __future__ import annotations

import faiss
import numpy as np

from autolabel.errors import DataError

AGGLOMERATIVE_MAX = 30_000


def _features(features: np.ndarray) -> np.ndarray:
    """Validated float32 C-contiguous [N, D] copy of ``features``."""
    x = np.asarray(features)
    if x.ndim != 2 or len(x) == 0 or x.shape[1] == 0:
        raise DataError(f"features must be a non-empty 2-D array [N, D], got shape {x.shape}; reshape or re-embed")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise DataError("features contain NaN or inf; drop those rows or re-run the embedding")
    return x


def kmeans_cluster(features: np.ndarray, n_clusters: int, *, seed: int = 0, niter: int = 25,
                   spherical: bool = True, nredo: int = 5) -> np.ndarray:  # fmt: skip
    """faiss k-means (spherical by default: centroids renormalized, i.e. cosine k-means).

    faiss seeds with random points, so one run can merge two true clusters; ``nredo`` runs keep the lowest objective.
    """
    x = _features(features)
    if spherical:  # cosine k-means: assignments by L2 on unit vectors == by inner product
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if not 1 <= n_clusters <= len(x):
        raise DataError(f"k-means needs 1 <= n_clusters <= N, got n_clusters={n_clusters}, N={len(x)}")
    km = faiss.Kmeans(x.shape[1], n_clusters, niter=niter, seed=seed, spherical=spherical, verbose=False,
                      min_points_per_centroid=1, nredo=max(1, int(nredo)))  # fmt: skip
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign[:, 0].astype(np.int64)


def agglomerative_cluster(
    features: np.ndarray,
    n_clusters: int | None = None,
    *,
    distance_threshold: float | None = None,
    linkage: str = "average",
    metric: str = "cosine",
) -> np.ndarray:
    """Agglomerative clustering (cosine by default; O(N²) memory: refused above 30k points)."""
    from sklearn.cluster import AgglomerativeClustering

    x = _features(features)
    if len(x) > AGGLOMERATIVE_MAX:
        raise DataError(f"agglomerative clustering is O(N^2): N={len(x)} > {AGGLOMERATIVE_MAX}; "
                        "use kmeans or Hi-LANDER for pools this large")  # fmt: skip
    if (n_clusters is None) == (distance_threshold is None):
        raise DataError("agglomerative clustering needs exactly one of n_clusters or distance_threshold")
    if n_clusters is not None and not 1 <= n_clusters <= len(x):
        raise DataError(f"agglomerative clustering needs 1 <= n_clusters <= N, got n_clusters={n_clusters}, N={len(x)}")
    if linkage == "ward" and metric != "euclidean":
        raise DataError("linkage='ward' only works with metric='euclidean'; use linkage='average' for cosine")
    if len(x) == 1:
        return np.zeros(1, dtype=np.int64)
    model = AgglomerativeClustering(n_clusters=n_clusters, distance_threshold=distance_threshold, linkage=linkage,
                                    metric=metric)  # fmt: skip
    return model.fit_predict(x).astype(np.int64)


def dbscan_eps(features: np.ndarray, min_samples: int = 5, quantile: float = 0.5) -> float:
    """The k-distance heuristic for DBSCAN's radius: a quantile of every point's cosine distance to its
    ``min_samples``-th nearest neighbour (faiss search), so the radius follows the data's own density scale."""
    from autolabel.hilander.search import knn_search

    x = _features(features)
    k = max(1, min(min_samples, len(x) - 1))
    _, sims = knn_search(x, k)
    return float(max(np.quantile(1.0 - sims[:, k - 1], quantile), 1e-6))


def dbscan_cluster(features: np.ndarray, *, eps: float | None = None, min_samples: int = 5) -> np.ndarray:
    """Cosine DBSCAN; noise points become singleton clusters so every sample has a label. ``eps=None`` picks the
    radius with :func:`dbscan_eps`."""
    from sklearn.cluster import DBSCAN

    x = _features(features)
    if eps is None and min_samples >= 1 and len(x) > 1:
        eps = dbscan_eps(x, min_samples)
    if eps is None or eps <= 0 or min_samples < 1:
        raise DataError(f"dbscan needs eps > 0 and min_samples >= 1, got eps={eps}, min_samples={min_samples}")
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="cosine").fit_predict(x).astype(np.int64)
    noise = labels < 0
    labels[noise] = labels.max() + 1 + np.arange(int(noise.sum()))
    return labels
