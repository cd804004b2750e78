"""k-nearest-neighbour search on unit vectors with faiss (inner product = cosine similarity).

``method="flat"`` is exact (``IndexFlatIP``); ``"ivf"`` (inverted lists, ``nprobe`` lists probed), ``"ivfpq"`` (the
same lists holding product-quantized codes, the candidates re-ranked by exact inner products) and ``"hnsw"`` are
approximate and scale past a few hundred thousand points; ``"auto"`` is exact up to ``exact_max`` points and IVF above
(nlist = 8 sqrt(N), nprobe raised from ``nprobe`` until the recall measured against exact search on sampled queries
reaches ``target_recall``; exact search when that would take more than 1/16 of the lists). faiss runs on all cores
(OpenMP; ``OMP_NUM_THREADS`` limits it). With CUDA and a GPU build of faiss, flat and IVF indexes are sharded over all
visible GPUs. Check an approximate index against the exact one on a sample with :func:`knn_recall`.
"""

from __future__ import annotations

import math
import warnings

import faiss
import numpy as np

from autolabel.errors import ConfigError, DataError

METHODS = ("auto", "flat", "ivf", "ivfpq", "hnsw")
# method=auto gives up on IVF (and searches exactly) when the recall target needs more than this share of the lists
# probed: faiss scans IVF lists one query at a time, ~10x slower per pair than exact search's matrix products (on the
# scaling benchmark's 1M pool, nprobe 128 of 3,984 lists cost a third of one exact search)
AUTO_MAX_PROBED_SHARE = 1 / 16
PQ_MIN_POINTS = 40 * 256  # a product quantizer trains 256 centroids per sub-space (faiss wants >= 39 points each)


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


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a base dependency
        return False
    return bool(torch.cuda.is_available())


def num_gpus() -> int:
    try:
        return int(faiss.get_num_gpus())
    except AttributeError:  # CPU-only build
        return 0


def default_nlist(n: int) -> int:
    """8 sqrt(N) inverted lists (faiss's guidance: 4-16 sqrt(N)), at most one per 39 points (k-means wants that many).

    Finer lists cost more k-means but need fewer probes: on the scaling benchmark's 1M mixture, 4 sqrt(N) lists
    reached recall@10 0.90 at nprobe 8 and needed nprobe 128 for 0.95 (a 15-minute search on 2 cores), while
    8 sqrt(N) reached 0.98 at nprobe 8 (benchmarks/README.md)."""
    return int(min(max(1, 8 * math.sqrt(n)), max(1, n // 39)))


def build_index(
    x: np.ndarray,
    method: str,
    nlist: int | None = None,
    nprobe: int = 8,
    hnsw_m: int = 32,
    ef_search: int = 128,
    seed: int = 0,
    pq_m: int | None = None,
):
    """An empty (trained, for IVF) CPU faiss index of `method` for the rows of `x`; `knn_search` adds and queries it.

    ``ivfpq`` stores ``pq_m`` bytes per point (default ``d / 4``: 32 bytes for 128-d instead of 512) in the inverted
    lists and re-ranks ``4 k`` candidates per query with the exact vectors (``IndexRefineFlat``), so the similarities
    it returns are exact; the compact codes are what lets one GPU hold tens of millions of points."""
    n, d = x.shape
    if method == "flat":
        return faiss.IndexFlatIP(d)
    if method in ("ivf", "ivfpq"):
        nlist = min(nlist, max(1, n // 39)) if nlist else default_nlist(n)  # a level's pool can be smaller
        quantizer = faiss.IndexFlatIP(d)
        if method == "ivf":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            m = pq_m or max(1, d // 4)
            if d % m:
                raise ConfigError(f"knn.pq_m={m} must divide the feature width {d} (e.g. {max(1, d // 4)})")
            if n < PQ_MIN_POINTS:
                raise ConfigError(f"knn method ivfpq needs >= {PQ_MIN_POINTS} points to train its product quantizer, "
                                  f"the pool has {n}: use method=ivf or auto for pools this small")  # fmt: skip
            index = faiss.IndexIVFPQ(quantizer, d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        # 40 training points per list (faiss wants >= 39): k-means cost grows with the sample, and the recall check
        # below, not the centroids' polish, is what guarantees the neighbours
        want = max(40 * nlist, PQ_MIN_POINTS if method == "ivfpq" else 0)
        sample = x if n <= want else x[np.sort(rng.choice(n, want, replace=False))]
        index.train(sample)
        index.nprobe = min(nprobe, nlist)
        if method == "ivfpq":
            index = faiss.IndexRefineFlat(index)
            index.k_factor = 4.0
        return index
    if method == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = ef_search
        return index
    raise ConfigError(f"knn method {method!r} is unknown; use one of {', '.join(METHODS)}")


def _to_gpus(index, method: str):
    co = faiss.GpuMultipleClonerOptions()
    co.shard = True  # each GPU holds 1/G of the database; queries go to all shards
    if method == "ivfpq":  # the compressed lists go to the GPUs; the exact re-ranking stays on the host
        co.useFloat16LookupTables = True
        return faiss.IndexRefineFlat(faiss.index_cpu_to_all_gpus(faiss.downcast_index(index.base_index), co=co))
    co.useFloat16 = method == "ivf"  # IVF-Flat lists in fp16: half the GPU memory (no-op for flat)
    return faiss.index_cpu_to_all_gpus(index, co=co)


def knn_search(
    features: np.ndarray,
    k: int,
    *,
    method: str = "auto",
    nprobe: int = 8,
    nlist: int | None = None,
    hnsw_m: int = 32,
    ef_search: int = 128,
    use_gpu: str | bool = "auto",
    batch_size: int = 65536,
    exact_max: int = 50_000,
    seed: int = 0,
    target_recall: float = 0.95,
    recall_queries: int = 1000,
    pq_m: int | None = None,
    info: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` most similar *other* rows.

    Returns ``(nbrs int64 [N, k], sims float32 [N, k])`` sorted by decreasing similarity. The query itself is removed
    by id (robust to exact duplicates); ``k`` is capped at ``N - 1`` with a warning. Missing neighbours (possible with
    IVF when few lists are probed) have id ``-1`` and similarity ``-inf``.

    Approximate indexes are checked, not trusted: recall@k is measured on ``recall_queries`` seeded sample rows
    against exact search, and the search effort (IVF ``nprobe``, HNSW ``efSearch``) is doubled until it reaches
    ``target_recall`` (0: no check) or its maximum. ``info`` (a dict) receives the method, effort and recall reached.
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
    auto = method == "auto"
    if auto:
        method = "flat" if n <= exact_max else "ivf"
    if method == "flat" and use_gpu is not False and str(use_gpu) != "false" and num_gpus() == 0 and _torch_cuda():
        # no faiss GPU build but a CUDA device: exact chunked matmul + top-k in torch (issue 13's fallback)
        from autolabel.hilander import torch_knn

        if info is not None:
            info.update({"method": "torch-flat", "n": n, "k": k})
        return torch_knn.knn_search_torch(x, k, device="cuda")
    index = cpu_index = build_index(x, method, nlist, nprobe, hnsw_m, ef_search, seed, pq_m)
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
    stats: dict = {"method": method, "n": n, "k": k}
    if method in ("ivf", "ivfpq", "hnsw") and target_recall > 0:
        nl = int(faiss.extract_index_ivf(cpu_index).nlist) if method != "hnsw" else 0
        start, top = (min(nprobe, nl), nl) if method != "hnsw" else (ef_search, max(ef_search, 4096))
        if auto:  # past this share of the lists IVF's per-query scan costs about what one exact search does
            top = max(start, int(nl * AUTO_MAX_PROBED_SHARE))
        if nl:
            stats["nlist"] = nl
        stats.update(_tune_effort(index, x, k, method, target_recall, recall_queries, seed, start, top))
        if auto and stats["recall_at_k"] < target_recall:
            # the points do not fall into lists (e.g. the supernodes of upper levels): exact search is cheaper
            del index, cpu_index
            exact = {"fallback": f"ivf reached recall {stats['recall_at_k']} at nprobe {stats['nprobe']} of {nl} "
                                 f"lists (< {target_recall}): exact search instead"}  # fmt: skip
            out = knn_search(x, k, method="flat", use_gpu=use_gpu, batch_size=batch_size, info=exact)
            if info is not None:
                info.update(exact)
            return out
    if info is not None:
        info.update(stats)
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


def _set_effort(index, method: str, value: int) -> None:
    if method in ("ivf", "ivfpq"):
        try:
            faiss.extract_index_ivf(index).nprobe = value  # through a re-ranking wrapper too
        except (RuntimeError, AttributeError):  # a GPU shard wrapper
            base = index.base_index if method == "ivfpq" else index
            faiss.GpuParameterSpace().set_index_parameter(base, "nprobe", value)
    else:
        index.hnsw.efSearch = value


def _tune_effort(
    index, x: np.ndarray, k: int, method: str, target: float, queries: int, seed: int, effort: int, top: int
) -> dict:
    """Measure recall@k of ``index`` on a seeded sample of rows against exact search and double the search effort
    (from ``effort``) until ``target`` is met or ``top`` is reached (IVF: nprobe up to nlist, i.e. exhaustive; HNSW:
    efSearch up to 4096)."""
    n = len(x)
    q = np.sort(np.random.default_rng(seed).choice(n, min(queries, n), replace=False))
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    kk = min(k + 1, n)
    exact, _ = _drop_self_rows(*flat.search(x[q], kk)[::-1], q, k)
    while True:
        approx, _ = _drop_self_rows(*index.search(x[q], kk)[::-1], q, k)
        recall = knn_recall(approx, exact)
        if recall >= target or effort >= top:
            break
        effort = min(top, effort * 2)
        _set_effort(index, method, effort)
    key = "ef_search" if method == "hnsw" else "nprobe"
    return {key: effort, "recall_at_k": round(recall, 4), "recall_queries": len(q), "target_recall": target}


def _drop_self_rows(nbrs: np.ndarray, sims: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_drop_self` for a sample of query rows (their own ids are ``rows``)."""
    is_self = nbrs == rows[:, None]
    m, kk = nbrs.shape
    first_self = np.where(is_self.any(1), is_self.argmax(1), kk - 1)
    keep = np.ones_like(is_self)
    keep[np.arange(m), first_self] = False
    return nbrs[keep].reshape(m, kk - 1)[:, :k], sims[keep].reshape(m, kk - 1)[:, :k]


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
