"""Classic clusterers to compare Hi-LANDER against: k-means (faiss), agglomerative, DBSCAN (scikit-learn).

All take L2-normalized features and return int64 cluster ids [N].
"""

from __future__ import annotations

import faiss
import numpy as np

from autolabel.errors import DataError

AGGLOMERATIVE_MAX = 30_000


def kmeans_cluster(features: np.ndarray, n_clusters: int, *, seed: int = 0, niter: int = 25,
                   spherical: bool = True) -> np.ndarray:  # fmt: skip
    """faiss k-means (spherical by default: centroids renormalized, i.e. cosine k-means)."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    if not 1 <= n_clusters <= len(x):
        raise DataError(f"k-means needs 1 <= n_clusters <= N, got n_clusters={n_clusters}, N={len(x)}")
    km = faiss.Kmeans(x.shape[1], n_clusters, niter=niter, seed=seed, spherical=spherical, verbose=False,
                      min_points_per_centroid=1)  # fmt: skip
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign[:, 0].astype(np.int64)


def agglomerative_cluster(
    features: np.ndarray,
    n_clusters: int | None = None,
    *,
    distance_threshold: float | None = None,
    linkage: str = "average",
) -> np.ndarray:
    """Cosine agglomerative clustering (O(N²) memory: refused above 30k points)."""
    from sklearn.cluster import AgglomerativeClustering

    if len(features) > AGGLOMERATIVE_MAX:
        raise DataError(f"agglomerative clustering is O(N^2): N={len(features)} > {AGGLOMERATIVE_MAX}; "
                        "use kmeans or Hi-LANDER for pools this large")  # fmt: skip
    if (n_clusters is None) == (distance_threshold is None):
        raise DataError("agglomerative clustering needs exactly one of n_clusters or distance_threshold")
    model = AgglomerativeClustering(n_clusters=n_clusters, distance_threshold=distance_threshold, linkage=linkage,
                                    metric="cosine")  # fmt: skip
    return model.fit_predict(features).astype(np.int64)


def dbscan_cluster(features: np.ndarray, *, eps: float = 0.3, min_samples: int = 5) -> np.ndarray:
    """Cosine DBSCAN; noise points become singleton clusters so every sample has a label."""
    from sklearn.cluster import DBSCAN

    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="cosine").fit_predict(features).astype(np.int64)
    noise = labels < 0
    labels[noise] = labels.max() + 1 + np.arange(int(noise.sum()))
    return labels
