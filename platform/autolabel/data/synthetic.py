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


def make_identity_mixture(
    n_classes: int,
    dim: int = 128,
    mean_size: float = 16.0,
    seed: int = 0,
    family_size: int = 5,
    family_spread: float = 0.9,
    noise: tuple[float, float] = (0.6, 1.1),
    outliers: float = 0.02,
) -> tuple[np.ndarray, np.ndarray]:
    """A structured stand-in for embeddings of identities (faces, products): ``(features [N, dim], labels [N])``.

    Realistic traits that make thresholds hard: class sizes are heavy-tailed (log-normal around ``mean_size``, at
    least 2), classes come in "families" of ``family_size`` whose centres lie close together (look-alike identities,
    ``family_spread`` = centre offset norm inside a family), every class has its own noise norm drawn uniformly from
    ``noise`` (tight and loose identities), and a share ``outliers`` of samples is pushed far off its centre
    (mislabeled or bad crops). All on the unit sphere; seeded.
    """
    if n_classes < 1 or dim < 2 or mean_size < 2 or family_size < 1:
        raise ConfigError("make_identity_mixture needs n_classes >= 1, dim >= 2, mean_size >= 2, family_size >= 1")
    rng = np.random.default_rng(seed)
    n_fam = -(-n_classes // family_size)
    fam = l2_normalize(rng.normal(size=(n_fam, dim)))
    offs = rng.normal(size=(n_classes, dim)) / np.sqrt(dim) * family_spread
    centres = l2_normalize(fam[np.arange(n_classes) // family_size] + offs)
    sizes = np.maximum(2, np.round(rng.lognormal(np.log(mean_size) - 0.18, 0.6, size=n_classes))).astype(int)
    labels = np.repeat(np.arange(n_classes, dtype=np.int64), sizes)
    spread = rng.uniform(noise[0], noise[1], size=n_classes)[labels] / np.sqrt(dim)
    x = centres[labels] + spread[:, None] * rng.normal(size=(len(labels), dim))
    far = rng.random(len(labels)) < outliers
    x[far] += 2.0 * rng.normal(size=(int(far.sum()), dim)) / np.sqrt(dim)
    return l2_normalize(x.astype(np.float32)), labels
