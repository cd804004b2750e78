"""Feature pools: the input of Hi-LANDER. ``.npz`` with ``features`` [N, D] (+ optional ``labels`` [N], ``ids`` [N]),
or a plain ``.npy`` of features. Features are L2-normalized on load; every malformed input gets a one-line error."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autolabel.engine.io import atomic_save_npz
from autolabel.errors import DataError


@dataclass
class FeaturePool:
    features: np.ndarray  # float32 [N, D], unit rows
    labels: np.ndarray | None = None  # int64 [N]
    ids: np.ndarray | None = None  # str [N]

    @property
    def n(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def subset(self, index: np.ndarray) -> FeaturePool:
        return FeaturePool(
            self.features[index],
            None if self.labels is None else self.labels[index],
            None if self.ids is None else self.ids[index],
        )


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)


def validate_features(features: np.ndarray, source: str = "features") -> np.ndarray:
    """Check shape/finiteness/norms; return float32 unit rows."""
    f = np.asarray(features)
    if f.ndim != 2:
        raise DataError(f"{source}: features must be a 2-D array [N, D], got shape {f.shape}; reshape to (N, -1)")
    if not np.issubdtype(f.dtype, np.number):
        raise DataError(f"{source}: features must be numeric, got dtype {f.dtype}")
    if f.shape[0] < 2:
        raise DataError(f"{source}: need at least 2 samples to cluster, got N={f.shape[0]}")
    if f.shape[1] < 1:
        raise DataError(f"{source}: features have 0 dimensions")
    f = f.astype(np.float32, copy=False)
    bad = ~np.isfinite(f).all(axis=1)
    if bad.any():
        first = np.flatnonzero(bad)[:5].tolist()
        raise DataError(
            f"{source}: {int(bad.sum())} of {f.shape[0]} rows contain NaN/inf (first rows {first}); "
            "drop or recompute them before clustering"
        )
    zero = np.linalg.norm(f, axis=1) == 0
    if zero.any():
        first = np.flatnonzero(zero)[:5].tolist()
        raise DataError(
            f"{source}: {int(zero.sum())} rows are all zeros (first rows {first}); they have no direction to compare "
            "-- drop them"
        )
    return l2_normalize(f)


def _validate_labels(labels: np.ndarray, n: int, source: str) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1:
        lab = lab.reshape(-1) if lab.size == n else lab
    if lab.ndim != 1 or lab.shape[0] != n:
        raise DataError(f"{source}: labels have shape {np.asarray(labels).shape} but there are N={n} features; "
                        "give one integer label per row")  # fmt: skip
    if not np.issubdtype(lab.dtype, np.integer):
        if np.issubdtype(lab.dtype, np.floating) and np.all(np.isfinite(lab)) and np.all(lab == np.round(lab)):
            lab = lab.astype(np.int64)
        else:
            raise DataError(f"{source}: labels must be integers, got dtype {lab.dtype}; map class names to ids first")
    return lab.astype(np.int64, copy=False)


# how to re-save an array that numpy refuses to load without pickle (an object array, e.g. from pandas)
_OBJECT_FIX = {
    "features": "save features as a float array: np.asarray(features, dtype=np.float32)",
    "labels": "save labels as an int array: np.asarray(labels, dtype=np.int64)",
    "ids": "save ids as a str array: np.asarray(ids, dtype=str)",
}


def _read_array(z: np.lib.npyio.NpzFile, name: str, p: Path) -> np.ndarray:
    """One array of an ``.npz`` opened without pickle; an object array (pickled) gets a one-line fix."""
    try:
        return z[name]
    except ValueError as e:
        if "allow_pickle" in str(e):  # "Object arrays cannot be loaded when allow_pickle=False"
            fix = _OBJECT_FIX.get(name, f"save {name} as a numeric or str array")
            raise DataError(
                f"{p}: '{name}' is an object array, which is not loaded (it would need pickle); {fix}"
            ) from e
        raise DataError(f"{p}: array '{name}' is unreadable ({e}); re-save the pool with numpy.savez") from e
    except Exception as e:  # a truncated member: zipfile.BadZipFile, zlib.error, EOFError, OSError
        raise DataError(f"{p}: array '{name}' is unreadable ({type(e).__name__}); re-save the pool") from e


def load_feature_pool(path: str | os.PathLike) -> FeaturePool:
    """Read a pool from ``.npz`` (``features`` [+ ``labels``, ``ids``]) or ``.npy`` (features only)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"feature pool not found: {p} -- give an existing .npz/.npy path (see `autolabel embed`)")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as e:
            raise DataError(f"{p}: cannot read as a numeric .npy array ({e})") from e
        return FeaturePool(validate_features(arr, str(p)))
    if suffix != ".npz":
        raise DataError(f"{p}: unsupported feature file type '{suffix}'; use .npz (features, labels, ids) or .npy")
    try:
        z = np.load(p, allow_pickle=False)
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError
        raise DataError(f"{p}: not a readable .npz archive ({type(e).__name__}); re-save it with numpy.savez") from e
    with z:
        names = list(z.files)
        if "features" not in names:
            raise DataError(f"{p}: no array named 'features' (found: {', '.join(names) or 'none'}); "
                            "save the [N, D] matrix as features=...")  # fmt: skip
        feats = validate_features(_read_array(z, "features", p), str(p))
        labels = _validate_labels(_read_array(z, "labels", p), feats.shape[0], str(p)) if "labels" in names else None
        ids = None
        if "ids" in names:
            ids = np.asarray(_read_array(z, "ids", p)).astype(str)
            if ids.ndim != 1 or ids.shape[0] != feats.shape[0]:
                raise DataError(f"{p}: ids have shape {ids.shape} but there are N={feats.shape[0]} features; "
                                "save one id per row as a 1-D str array of length N")  # fmt: skip
    return FeaturePool(feats, labels, ids)


def save_feature_pool(path: str | os.PathLike, pool: FeaturePool, class_names: list[str] | None = None) -> Path:
    """Write a pool atomically (``class_names``, when given, maps label ids back to names)."""
    arrays: dict[str, np.ndarray] = {"features": np.asarray(pool.features, dtype=np.float32)}
    if class_names:
        arrays["class_names"] = np.asarray(class_names).astype(str)
    if pool.labels is not None:
        arrays["labels"] = np.asarray(pool.labels, dtype=np.int64)
    if pool.ids is not None:
        arrays["ids"] = np.asarray(pool.ids).astype(str)
    return atomic_save_npz(path, **arrays)
