"""Exact k-nearest-neighbour search in torch: a chunked ``matmul + topk`` on any device (CUDA, CPU, MPS).

The GPU path when no working faiss GPU build is installed (faiss-gpu wheels are built for one CUDA major version, and
the CPU wheel has no GPU index). Same convention as :func:`autolabel.hilander.search.knn_search`: inner product on
the rows as given (cosine similarity for unit vectors), each row's ``k`` most similar *other* rows sorted by decreasing
similarity, the query removed by id (so exact duplicates stay neighbours), ``k`` capped at ``N - 1`` with a
``UserWarning``, and ``(nbrs int64 [Q, k], sims float32 [Q, k])`` as numpy arrays. This module imports nothing from
``search.py``, so ``search.py`` can dispatch here (it caps k itself, with its ``KCapWarning``) without an import cycle.

Memory is bounded by ``block_elems``: queries are scored ``q_chunk`` at a time against ``db_chunk`` database rows,
keeping a running top-k per query, so 1M x 1M runs in ~1 GiB of scores on a GPU. Products run in full fp32 (TF32 is
switched off for the call), so the result is exact up to float rounding, like faiss's ``IndexFlatIP``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from autolabel.errors import ConfigError, DataError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> the first CUDA device when one is visible, else the CPU; anything else as torch reads it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"knn device={device} but torch sees no CUDA device; use device=auto or device=cpu")
    return dev


def _default_block_elems(dev: torch.device) -> int:
    return 1 << 28 if dev.type == "cuda" else 1 << 23  # 1 GiB of fp32 scores on a GPU, 32 MiB on the CPU


def knn_search_torch(
    features: np.ndarray | torch.Tensor,
    k: int,
    *,
    rows: np.ndarray | torch.Tensor | None = None,
    device: str | torch.device = "auto",
    block_elems: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner-product neighbours of ``features[rows]`` (default: every row) among all rows.

    Returns ``(nbrs int64 [Q, k], sims float32 [Q, k])``, sorted by decreasing similarity, the query row excluded by
    id. ``block_elems`` bounds the scores held at once (queries x database rows per block).
    """
    x = torch.as_tensor(features)
    if x.ndim != 2:
        raise DataError(f"knn_search_torch needs a 2-D [N, D] array, got shape {tuple(x.shape)}")
    n = x.shape[0]
    if n < 2:
        raise DataError(f"knn_search_torch needs at least 2 points, got N={n}")
    if k < 1:
        raise ConfigError(f"k={k} must be >= 1")
    finite = torch.isfinite(x).all(dim=1)
    if not bool(finite.all()):
        raise DataError(
            f"knn_search_torch: {int((~finite).sum())} of {n} rows contain NaN/inf; clean or drop them first"
        )
    if k > n - 1:
        warnings.warn(f"k={k} >= N={n}: using k={n - 1} (each point has only N-1 others)", UserWarning, stacklevel=2)
        k = n - 1
    q_ids = torch.arange(n) if rows is None else torch.as_tensor(rows, dtype=torch.long).reshape(-1)
    if q_ids.numel() and (int(q_ids.min()) < 0 or int(q_ids.max()) >= n):
        raise DataError(f"knn_search_torch: rows must index the {n} features (got ids outside [0, {n}))")
    dev = resolve_device(device)
    budget = int(block_elems or _default_block_elems(dev))
    if budget < 1:
        raise ConfigError(f"block_elems={block_elems} must be >= 1")
    db = x.to(dev, dtype=torch.float32).contiguous()
    q_chunk = max(1, min(len(q_ids), 4096, budget // max(k + 1, 1)))
    db_chunk = max(k + 1, budget // q_chunk)
    nbrs = torch.empty((len(q_ids), k), dtype=torch.int64)
    sims = torch.empty((len(q_ids), k), dtype=torch.float32)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # no TF32: exact fp32 products
    try:
        with torch.no_grad():
            for qs in range(0, len(q_ids), q_chunk):
                ids = q_ids[qs : qs + q_chunk].to(dev)
                s, i = _search_block(db, ids, k, db_chunk)
                sims[qs : qs + len(ids)], nbrs[qs : qs + len(ids)] = s.cpu(), i.cpu()
    finally:
        torch.set_float32_matmul_precision(previous)
    return nbrs.numpy(), sims.numpy()


def _search_block(db: torch.Tensor, ids: torch.Tensor, k: int, db_chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of the queries ``db[ids]`` over ``db`` in column blocks of ``db_chunk``, each query's own row excluded."""
    q = db[ids]
    best_s = torch.full((len(ids), k), -torch.inf, device=db.device)
    best_i = torch.full((len(ids), k), -1, dtype=torch.int64, device=db.device)
    for start in range(0, db.shape[0], db_chunk):
        stop = min(db.shape[0], start + db_chunk)
        scores = q @ db[start:stop].T
        # each query's own column -> -inf where it falls in this block (no host sync: a masked scatter)
        col = (ids - start).clamp(0, stop - start - 1)[:, None]
        own = ((ids >= start) & (ids < stop))[:, None]
        scores.scatter_(1, col, torch.where(own, -torch.inf, scores.gather(1, col)))
        kk = min(k, stop - start)
        s, i = scores.topk(kk, dim=1)
        cand_s = torch.cat([best_s, s], dim=1)
        cand_i = torch.cat([best_i, i + start], dim=1)
        top = cand_s.topk(k, dim=1)
        best_s, best_i = top.values, cand_i.gather(1, top.indices)
    return best_s, best_i
