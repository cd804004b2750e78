"""k-nearest-neighbour search on unit vectors with faiss (inner product = cosine similarity).

``method="flat"`` is exact (``IndexFlatIP``); ``"ivf"`` (inverted lists, ``nprobe`` lists probed) and ``"hnsw"`` are
approximate and scale past a few hundred thousand points; ``"auto"`` is exact up to ``exact_max`` points. With CUDA and a
GPU build of faiss, flat and IVF indexes are sharded over all visible GPUs. Check an approximate index against the exact
one on a sample with :func:`knn_recall`.
"""

from __future__ import annotations

import math
import warnings

import faiss
import numpy as np

from autolabel.errors import ConfigError, DataError

METHODS = ("auto", "flat", "ivf", "hnsw")


class KCapWarning(UserWarning):
    """k was larger than the number of other points and has been capped at N-1."""


GPU_DISTRIBUTIONS = ("faiss-gpu-cu12", "faiss-gpu-cu11", "faiss-gpu")
FAISS_FIX = "pip uninstall -y faiss-cpu && pip install --force-reinstall --no-deps faiss-gpu-cu12"


def faiss_install_conflict(installed=None) -> str | None:
    """A one-line warning when faiss-cpu and a faiss-gpu wheel are both installed: both write the same ``faiss/``
    package, so which build Python imports depends on the install order. ``installed(name)`` -> version or None."""
    from importlib import metadata

    def _version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    installed = installed or _version
    gpu = [name for name in GPU_DISTRIBUTIONS if installed(name)]
    if not (installed("faiss-cpu") and gpu):
        return None
    build = "a GPU" if hasattr(faiss, "StandardGpuResources") else "the CPU-only"
    return (f"faiss-cpu and {gpu[0]} are both installed and overwrite each other's faiss/ package ({build} build is "
            f"in use); keep one: {FAISS_FIX}")  # fmt: skip


_warned_conflict = False


def _warn_install_conflict() -> None:
    global _warned_conflict
    if not _warned_conflict:
        _warned_conflict = True
        conflict = faiss_install_conflict()
        if conflict:
            warnings.warn(conflict, RuntimeWarning, stacklevel=3)


def num_gpus() -> int:
    try:
        return int(faiss.get_num_gpus())
    except AttributeError:  # CPU-only build
        return 0


def build_index(
    x: np.ndarray,
    method: str,
    nlist: int | None = None,
    nprobe: int = 64,
    hnsw_m: int = 32,
    ef_search: int = 128,
    seed: int = 0,
):
    """An empty (trained, for IVF) CPU faiss index of `method` for the rows of `x`; `knn_search` adds and queries it."""
    n, d = x.shape
    if method == "flat":
        return faiss.IndexFlatIP(d)
    if method == "ivf":
        nlist = nlist or int(min(max(1, 4 * math.sqrt(n)), max(1, n // 39)))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = x if n <= 64 * nlist else x[rng.choice(n, 64 * nlist, replace=False)]  # faiss wants >= 39/list
        index.train(sample)
        index.nprobe = min(nprobe, nlist)
        return index
    if method == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = ef_search
        return index
    raise ConfigError(f"knn method {method!r} is unknown; use one of {', '.join(METHODS)}")


def _to_gpus(index, method: str):
    co = faiss.GpuMultipleClonerOptions()
    co.shard = True  # each GPU holds 1/G of the database; queries go to all shards
    co.useFloat16 = method == "ivf"
    return faiss.index_cpu_to_all_gpus(index, co=co)


def knn_search(
    features: np.ndarray,
    k: int,
    *,
    method: str = "auto",
    nprobe: int = 64,
    nlist: int | None = None,
    hnsw_m: int = 32,
    ef_search: int = 128,
    use_gpu: str | bool = "auto",
    batch_size: int = 65536,
    exact_max: int = 100_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` most similar *other* rows.

    Returns ``(nbrs int64 [N, k], sims float32 [N, k])`` sorted by decreasing similarity. The query itself is removed
    by id (robust to exact duplicates); ``k`` is capped at ``N - 1`` with a warning. Missing neighbours (possible with
    IVF when few lists are probed) have id ``-1`` and similarity ``-inf``.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise DataError(f"knn_search needs a 2-D [N, D] array, got shape {x.shape}")
    n = x.shape[0]
    if n < 2:
        raise DataError(f"knn_search needs at least 2 points, got N={n}")
    if k < 1:
        raise ConfigError(f"k={k} must be >= 1")
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise DataError(f"knn_search: {int((~finite).sum())} of {n} rows contain NaN/inf; clean or drop them first")
    if k > n - 1:
        warnings.warn(f"k={k} >= N={n}: using k={n - 1} (each point has only N-1 others)", KCapWarning, stacklevel=2)
        k = n - 1
    if method == "auto":
        method = "flat" if n <= exact_max else "ivf"
    index = build_index(x, method, nlist, nprobe, hnsw_m, ef_search, seed)
    _warn_install_conflict()
    gpu = num_gpus() > 0 if use_gpu == "auto" else bool(use_gpu)
    if gpu and method != "hnsw":
        if num_gpus() == 0:
            conflict = faiss_install_conflict()
            raise ConfigError(conflict if conflict else "use_gpu=true but faiss sees no GPU; install faiss-gpu (pip "
                              f"install -e '.[gpu]', then {FAISS_FIX}) or use_gpu=auto")  # fmt: skip
        index = _to_gpus(index, method)
    index.add(x)
    kk = min(k + 1, n)
    nbrs = np.empty((n, kk), dtype=np.int64)
    sims = np.empty((n, kk), dtype=np.float32)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        s, i = index.search(x[start:stop], kk)
        sims[start:stop], nbrs[start:stop] = s, i
    nbrs, sims = _drop_self(nbrs, sims, k)
    missing = nbrs < 0
    if missing.any():
        sims[missing] = -np.inf
    return nbrs, sims


def _drop_self(nbrs: np.ndarray, sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own id (wherever it ranks); rows without it lose their last column instead."""
    n, kk = nbrs.shape
    is_self = nbrs == np.arange(n)[:, None]
    first_self = np.where(is_self.any(1), is_self.argmax(1), kk - 1)
    keep = np.ones_like(is_self)
    keep[np.arange(n), first_self] = False
    out_n = nbrs[keep].reshape(n, kk - 1)[:, :k]
    out_s = sims[keep].reshape(n, kk - 1)[:, :k]
    return out_n, out_s


def knn_recall(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each row's exact neighbours that the approximate search found (vectorized)."""
    a, e = np.asarray(approx), np.asarray(exact)
    if a.shape != e.shape:
        raise DataError(f"knn_recall: shapes differ {a.shape} vs {e.shape}")
    both = np.sort(np.concatenate([a, e], axis=1), axis=1)
    hits = ((both[:, 1:] == both[:, :-1]) & (both[:, 1:] >= 0)).sum(1)
    return float(hits.mean() / e.shape[1])
