"""Synthetic feature pools for tests, demos and benchmarks (no files, no downloads)."""

from __future__ import annotations

import numpy as np

from autolabel.data.pools import l2_normalize
from autolabel.errors import ConfigError


def make_blob_features(
    n_classes: int, per_class: int, dim: int, spread: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around random unit centres, projected back to the sphere: ``(features [N, dim], labels [N])``.

    ``spread`` is the per-dimension noise std; the noise norm is about ``spread * sqrt(dim)`` (keep it below ~0.7 for
    separable classes).
    """
    if n_classes < 1 or per_class < 1 or dim < 2 or spread < 0:
        raise ConfigError("make_blob_features needs n_classes >= 1, per_class >= 1, dim >= 2 and spread >= 0")
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.normal(size=(n_classes, dim)))
    x = np.repeat(centres, per_class, axis=0) + spread * rng.normal(size=(n_classes * per_class, dim))
    return l2_normalize(x), np.repeat(np.arange(n_classes, dtype=np.int64), per_class)


def random_unit_features(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Uniform directions on the unit sphere (the hardest case for approximate kNN)."""
    return l2_normalize(np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32))
