"""Classic clustering baselines recover well separated blobs; bad input gives one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.errors import DataError
from autolabel.hilander import baselines as B
from autolabel.metrics.clustering import pairwise_fscore


def _blobs(n_per: int = 30, k: int = 4, dim: int = 16, noise: float = 0.05, seed: int = 0):
    """Unit vectors around k orthogonal directions (cosine-separated blobs)."""
    rng = np.random.default_rng(seed)
    centers = np.eye(dim, dtype=np.float32)[:k]
    x = np.repeat(centers, n_per, axis=0) + noise * rng.standard_normal((k * n_per, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, np.repeat(np.arange(k), n_per)


def test_kmeans_recovers_blobs_and_is_deterministic():
    x, y = _blobs()
    a = B.kmeans_cluster(x, 4, seed=3, niter=20)
    assert a.dtype == np.int64 and a.shape == (len(x),)
    assert pairwise_fscore(y, a)[2] > 0.95
    assert np.array_equal(a, B.kmeans_cluster(x, 4, seed=3, niter=20))
    assert pairwise_fscore(y, B.kmeans_cluster(x * 7.0, 4, seed=3, spherical=True))[2] > 0.95  # scale-free


def test_agglomerative_by_count_and_by_threshold():
    x, y = _blobs()
    a = B.agglomerative_cluster(x, n_clusters=4)
    assert a.dtype == np.int64 and pairwise_fscore(y, a)[2] > 0.95
    # within-blob cosine distance ~0.005-0.05, between blobs ~1: a 0.5 threshold cuts exactly between
    t = B.agglomerative_cluster(x, distance_threshold=0.5)
    assert len(np.unique(t)) == 4 and pairwise_fscore(y, t)[2] > 0.95
    e = B.agglomerative_cluster(x, n_clusters=4, linkage="ward", metric="euclidean")
    assert pairwise_fscore(y, e)[2] > 0.95


def test_dbscan_recovers_blobs_and_noise_becomes_singletons():
    x, y = _blobs()
    outlier = np.zeros((1, x.shape[1]), np.float32)
    outlier[0, -1] = 1.0  # a direction no blob uses: noise for DBSCAN
    xs = np.concatenate([x, outlier])
    a = B.dbscan_cluster(xs, eps=0.1, min_samples=3)
    assert a.dtype == np.int64 and (a >= 0).all()
    assert pairwise_fscore(y, a[:-1])[2] > 0.95
    assert (a == a[-1]).sum() == 1  # the outlier sits alone, with its own id
    every_noise = B.dbscan_cluster(x, eps=1e-6, min_samples=5)
    assert len(np.unique(every_noise)) == len(x)


def test_baseline_errors():
    x, _ = _blobs(n_per=3)
    with pytest.raises(DataError, match="n_clusters"):
        B.kmeans_cluster(x, 0)
    with pytest.raises(DataError, match="n_clusters"):
        B.kmeans_cluster(x, len(x) + 1)
    with pytest.raises(DataError, match="2-D"):
        B.kmeans_cluster(x[0], 2)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        B.dbscan_cluster(bad)
    with pytest.raises(DataError, match="exactly one"):
        B.agglomerative_cluster(x)
    with pytest.raises(DataError, match="exactly one"):
        B.agglomerative_cluster(x, n_clusters=2, distance_threshold=0.5)
    with pytest.raises(DataError, match="ward"):
        B.agglomerative_cluster(x, n_clusters=2, linkage="ward")
    with pytest.raises(DataError, match="eps"):
        B.dbscan_cluster(x, eps=0.0)


def test_agglomerative_refuses_huge_pools(monkeypatch):
    monkeypatch.setattr(B, "AGGLOMERATIVE_MAX", 10)
    x, _ = _blobs(n_per=3, k=4)
    with pytest.raises(DataError, match="kmeans or Hi-LANDER"):
        B.agglomerative_cluster(x, n_clusters=2)


def test_dbscan_default_radius_follows_the_data_scale():
    from autolabel.data.synthetic import make_blob_features

    for spread in (0.02, 0.1):  # the same call separates tight and loose blobs: eps comes from the k-distances
        x, y = make_blob_features(4, 30, 16, spread=spread, seed=1)
        eps = B.dbscan_eps(x, min_samples=5)
        assert 0 < eps < 1
        labels = B.dbscan_cluster(x, min_samples=5)
        big = np.unique(labels, return_counts=True)[1]
        assert (big >= 5).sum() == 4  # four real clusters (plus possibly a few noise singletons)
