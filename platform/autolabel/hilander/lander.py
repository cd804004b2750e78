"""LANDER: a GNN that jointly predicts links and density (Hi-LANDER, ICCV 2021), as a plain ``nn.Module`` on PyG.

Forward on a whole level graph (full-graph sparse message passing, no per-seed sampling):

* node input ``[identity ‖ cluster-mean]`` (or identity only),
* ``num_conv`` layers of ``h_i' = ReLU(W [h_i ‖ Σ_j â_ij h_j])`` (``â`` row-normalized similarities), or GAT layers,
* link head ``MLP(src_mlp(h_j) + dst_mlp(h_i) [+ sim_mlp(a_ij)]) -> 2 logits``; ``p_ij = softmax(...)[1]`` =
  P(same class) (``link_similarity=False`` is the reference head exactly),
* density ``d̂_i = mean_j a_ij (p1 - p0)`` over i's in-edges (no separate head).
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import GATConv, MessagePassing
from torch_geometric.utils import scatter


def remove_pyg_template_files() -> list[str]:
    """Delete the source files PyG writes to the temp folder for every ``MessagePassing`` class a process builds.

    PyG renders each class's ``propagate`` (and ``edge_updater``) from a jinja template into
    ``$TMPDIR/<module>_<Class>_propagate_<random>.py``, imports it and never deletes it, so every ``fit hilander`` or
    ``cluster`` process left two files behind (thousands over a sweep). The code is already imported when the layer
    exists; only ``inspect.getsource`` / TorchScript would read the file again, and neither is used here."""
    tmp = os.path.realpath(tempfile.gettempdir())
    removed = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not path or not name.endswith(("_propagate", "_edge_updater")):
            continue
        if os.path.dirname(os.path.realpath(path)) == tmp and os.path.basename(path).startswith(f"{name}_"):
            try:
                os.unlink(path)
                removed.append(path)
            except FileNotFoundError:
                pass
    return removed


class SimilarityConv(MessagePassing):
    """``h_i' = Linear([h_i ‖ Σ_j â_ij h_j])``: a node concatenated with its similarity-weighted neighbour mean.

    Given a sparse adjacency (``adj_t[i, j] = â_ij``) the aggregation is one sparse-dense product
    (``message_and_aggregate``), so memory stays O(E + N*d) instead of materializing one message per edge.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(aggr="add")
        self.lin = nn.Linear(2 * in_dim, out_dim)

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        agg = self.propagate(edge_index, x=x, edge_weight=edge_weight)
        # lin([x ‖ agg]) as two products into one output: no [N, 2*in] concatenation (2 GB at 1M nodes, 256-d input)
        d = x.shape[-1]
        w = self.lin.weight
        out = F.linear(x, w[:, :d], self.lin.bias)
        return out.addmm_(agg.to(out.dtype), w[:, d:].t().to(out.dtype))

    def message(self, x_j: torch.Tensor, edge_weight: torch.Tensor) -> torch.Tensor:
        return edge_weight.unsqueeze(-1) * x_j

    def message_and_aggregate(self, adj_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # The sparse product runs in the adjacency's dtype (fp32) with autocast off: torch.sparse.mm has no bf16/fp16
        # CPU kernel, and a similarity-weighted sum of up to k neighbours gains nothing from half precision.
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = torch.sparse.mm(adj_t, x.to(adj_t.dtype))
        return out.to(x.dtype)


def sparse_adjacency(edge_index: torch.Tensor, edge_weight: torch.Tensor, n: int) -> torch.Tensor:
    """``adj_t[i, j] = w_ij`` for edges j -> i (rows = targets): sparse CSR on CPU, coalesced COO on CUDA.

    The layouts differ on purpose and give the same product: CSR is the fast CPU layout for ``torch.sparse.mm``
    (several times faster than COO there); on CUDA the coalesced COO product (cuSPARSE) and its backward are the
    long-standing, well-tested path, so we do not convert. Callers only ever pass the result to ``torch.sparse.mm``.
    """
    adj = torch.sparse_coo_tensor(edge_index.flip(0), edge_weight, (n, n), check_invariants=False).coalesce()
    if adj.device.type != "cpu":
        return adj
    with warnings.catch_warnings():  # "CSR support is in beta": CSR is the fast CPU layout for spmm
        warnings.simplefilter("ignore", UserWarning)
        return adj.to_sparse_csr()


class LANDER(nn.Module):
    def __init__(
        self,
        feature_dim: int,
        hidden: int = 512,
        num_conv: int = 1,
        conv: str = "graphconv",
        dropout: float = 0.0,
        use_cluster_feat: bool = True,
        gat_heads: int = 1,
        link_similarity: bool = True,
    ):
        super().__init__()
        if conv not in ("graphconv", "gat"):
            raise ValueError(f"conv={conv!r}: use 'graphconv' or 'gat'")
        self.feature_dim = feature_dim
        self.use_cluster_feat = use_cluster_feat
        self.conv_type = conv
        in_dim = 2 * feature_dim if use_cluster_feat else feature_dim
        half = max(1, hidden // 2)
        dims = [in_dim] + [hidden] * num_conv
        self.convs = nn.ModuleList()
        for a, b in zip(dims[:-1], dims[1:]):
            if conv == "gat":
                self.convs.append(GATConv(a, b, heads=gat_heads, concat=False, add_self_loops=False, edge_dim=1))
            else:
                self.convs.append(SimilarityConv(a, b))
        self.dropout = dropout
        self.src_mlp = nn.Linear(hidden, half)
        self.dst_mlp = nn.Linear(hidden, half)
        # Beyond the reference: feed the edge's cosine similarity to the link head too. The sum of per-node projections
        # cannot express "how similar are i and j", which is what separates same-class supernodes at higher levels.
        self.sim_mlp = nn.Linear(1, half) if link_similarity else None
        self.link_head = nn.Sequential(nn.PReLU(half), nn.Linear(half, half), nn.PReLU(half), nn.Linear(half, 2))
        remove_pyg_template_files()  # the convs above rendered PyG's templates into the temp folder

    def node_input(self, data: Data) -> torch.Tensor:
        x = data.x
        return x if self.use_cluster_feat else x[:, : self.feature_dim]

    def embed(self, data: Data) -> torch.Tensor:
        h = self.node_input(data)
        adj = None if self.conv_type == "gat" else sparse_adjacency(data.edge_index, data.edge_weight, data.num_nodes)
        for conv in self.convs:
            if self.conv_type == "gat":
                h = conv(h, data.edge_index, edge_attr=data.edge_sim.unsqueeze(-1))
            else:
                h = conv(h, adj)
            h = F.relu(h, inplace=True)  # on a fresh conv output: autograd needs only relu's own result
            if self.dropout > 0:
                h = F.dropout(h, p=self.dropout, training=self.training)
        return h

    def forward(self, data: Data, edge_chunk: int = 1 << 16) -> tuple[torch.Tensor, torch.Tensor]:
        """``(link_logits [E, 2], pred_density [N])``. The link head runs over at most ``edge_chunk`` edges at a time
        (the per-node projections are computed once, then gathered per edge and summed in place), so the per-edge
        activations stay at a few ``edge_chunk x hidden/2`` buffers whatever the graph's size."""
        h = self.embed(data)
        src_h, dst_h = self.src_mlp(h), self.dst_mlp(h)
        del h
        src, dst = data.edge_index
        chunks = []
        for start in range(0, max(1, src.numel()), edge_chunk):
            sl = slice(start, start + edge_chunk)
            pair = src_h.index_select(0, src[sl])
            pair += dst_h.index_select(0, dst[sl])
            if self.sim_mlp is not None:  # sim_mlp is Linear(1, half): a_ij * w + b, added in place
                sim = data.edge_sim[sl].to(pair.dtype)
                pair.addr_(sim, self.sim_mlp.weight[:, 0].to(pair.dtype)).add_(self.sim_mlp.bias.to(pair.dtype))
            chunks.append(self.link_head(pair))
        logits = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
        prob = logits.softmax(-1)
        msg = data.edge_sim * (prob[:, 1] - prob[:, 0])
        density = scatter(msg, dst, dim=0, dim_size=data.num_nodes, reduce="mean")
        return logits, density


def lander_loss(
    link_logits: torch.Tensor,
    pred_density: torch.Tensor,
    data: Data,
    *,
    balance: bool = False,
    focal: bool = False,
    gamma: float = 2.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Density MSE + link cross-entropy (equal weight). The link term covers only edges whose ground-truth density is
    higher at the source (d_j > d_i), as in the reference; ``balance`` drops surplus positives/negatives at random;
    ``focal`` uses the focal loss (gamma).

    With ``data.seed_mask`` (a mini-batch of seed nodes, as the reference's sampled training) both terms cover only
    the seeds: their densities and their in-edges."""
    src, dst = data.edge_index
    seeds = getattr(data, "seed_mask", None)
    if seeds is None:
        density_loss = F.mse_loss(pred_density, data.density)
        mask = data.density[src] > data.density[dst]
    else:
        density_loss = F.mse_loss(pred_density[seeds], data.density[seeds])
        mask = (data.density[src] > data.density[dst]) & seeds[dst]
    labels = data.edge_label
    if balance and mask.any():
        pos = torch.nonzero(mask & (labels == 1)).squeeze(1)
        neg = torch.nonzero(mask & (labels == 0)).squeeze(1)
        big, small = (pos, neg) if len(pos) > len(neg) else (neg, pos)
        surplus = len(big) - len(small)
        if surplus > 0:
            drop = big[torch.randperm(len(big), generator=generator, device=big.device)[:surplus]]
            mask = mask.clone()
            mask[drop] = False
    if mask.any():
        logits, y = link_logits[mask], labels[mask]
        if focal:
            logp = F.log_softmax(logits, -1).gather(1, y[:, None]).squeeze(1)
            link_loss = (-((1 - logp.exp()) ** gamma) * logp).mean()
        else:
            link_loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean()
    else:
        link_loss = link_logits.sum() * 0.0
        acc = torch.full((), float("nan"), device=link_logits.device)
    total = density_loss + link_loss
    return total, {"loss": total.detach(), "density_loss": density_loss.detach(), "link_loss": link_loss.detach(),
                   "link_acc": acc.detach(), "link_edges": mask.sum().detach().float()}  # fmt: skip
