"""Level graphs for LANDER: kNN edges, similarity weights, ground-truth density and link labels, as PyG ``Data``.

Edge convention: edge ``j -> i`` (``edge_index[0] = j`` source, ``edge_index[1] = i`` target) for each neighbour ``j``
in node ``i``'s kNN list, so a node's in-edges are its neighbours. Every array is O(N*k).
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.utils import scatter


def knn_edges(nbrs: np.ndarray, sims: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``(edge_index [2, E] long, edge_sim [E] float)`` from kNN arrays.

    Missing neighbours (-1) and neighbours with a negative cosine similarity are dropped, as the reference does
    (``fast_knns2spmat`` keeps ``sim >= th_sim`` with ``th_sim = 0``): an anti-correlated "neighbour" (possible in
    sparse regions or tiny pools) is no evidence of anything, so it neither enters the neighbour means nor becomes a
    decode candidate. A node whose neighbours are all negative has no in-edges: it stays a singleton. Similarities
    above 1 (float rounding) are clipped to 1.
    """
    n, k = nbrs.shape
    dst = np.repeat(np.arange(n, dtype=np.int64), k)
    src = nbrs.reshape(-1).astype(np.int64)
    sim = np.nan_to_num(sims.reshape(-1).astype(np.float32), nan=-1.0, neginf=-1.0)
    valid = (src >= 0) & (sim >= 0)
    edge_index = torch.from_numpy(np.stack([src[valid], dst[valid]]))
    edge_sim = torch.from_numpy(np.minimum(sim[valid], 1.0))
    return edge_index, edge_sim


def row_normalized(edge_index: torch.Tensor, edge_sim: torch.Tensor, n: int) -> torch.Tensor:
    """Weights â_ij = a_ij / Σ_j a_ij over each target's in-edges (uniform where all similarities are 0)."""
    dst = edge_index[1]
    total = scatter(edge_sim, dst, dim=0, dim_size=n, reduce="sum")
    deg = scatter(torch.ones_like(edge_sim), dst, dim=0, dim_size=n, reduce="sum").clamp_min(1)
    zero = total[dst] <= 0
    return torch.where(zero, 1.0 / deg[dst], edge_sim / total[dst].clamp_min(1e-12))


def gt_density(edge_index: torch.Tensor, edge_sim: torch.Tensor, labels: torch.Tensor, n: int) -> torch.Tensor:
    """d_i = mean over i's in-edges j of a_ij * (+1 if y_j == y_i else -1); 0 for a node without in-edges.

    The reference divides by k-1 with k counting the node itself, i.e. by the number of real neighbours; our kNN lists
    exclude self, so without dropped edges this is the same mean. After dropping negative-similarity neighbours we
    average over the kept in-edges: the predicted density d̂_i is a mean over exactly those edges, so the target stays
    reachable (the reference's target still sums the negative terms over k-1 while its prediction averages over the
    graph's edges).
    """
    src, dst = edge_index
    sign = (labels[src] == labels[dst]).float() * 2 - 1
    return scatter(edge_sim * sign, dst, dim=0, dim_size=n, reduce="mean")


def build_level_graph(
    identity: np.ndarray | torch.Tensor,
    nbrs: np.ndarray,
    sims: np.ndarray,
    *,
    cluster: np.ndarray | torch.Tensor | None = None,
    labels: np.ndarray | torch.Tensor | None = None,
) -> Data:
    """One level's graph: ``x = [identity ‖ cluster-mean]`` (``cluster`` defaults to ``identity``), kNN edges with
    similarities and row-normalized weights, and -- with labels -- ground-truth density and link labels."""
    ident = torch.as_tensor(np.asarray(identity), dtype=torch.float32)
    clus = ident if cluster is None else torch.as_tensor(np.asarray(cluster), dtype=torch.float32)
    n = ident.shape[0]
    edge_index, edge_sim = knn_edges(nbrs, sims)
    data = Data(
        x=torch.cat([ident, clus], dim=1),
        edge_index=edge_index,
        edge_sim=edge_sim,
        edge_weight=row_normalized(edge_index, edge_sim, n),
        num_nodes=n,
    )
    if labels is not None:
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        data.y = y
        data.density = gt_density(edge_index, edge_sim, y, n)
        data.edge_label = (y[edge_index[0]] == y[edge_index[1]]).long()
    return data
