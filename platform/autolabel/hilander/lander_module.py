"""Lightning wrappers for LANDER: a module that trains on whole level graphs and a datamodule that serves them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch_geometric.data import Data

from autolabel.config.core import as_config
from autolabel.config.hilander import HiLanderTrainConfig, LanderModelConfig
from autolabel.data.pools import FeaturePool
from autolabel.errors import DataError
from autolabel.hilander.checkpoint import KIND
from autolabel.hilander.hierarchy import build_training_levels
from autolabel.hilander.lander import LANDER, lander_loss


class LanderModule(pl.LightningModule):
    """Trains :class:`LANDER` round-robin over level graphs (one whole graph per step), SGD (or Adam) + cosine LR."""

    def __init__(self, model: LanderModelConfig | Mapping | None = None, train: HiLanderTrainConfig | Mapping | None = None,
                 *, feature_dim: int = -1, kind: str = KIND):  # fmt: skip
        super().__init__()
        model_cfg, train_cfg = as_config(model, LanderModelConfig), as_config(train, HiLanderTrainConfig)
        if feature_dim < 1:
            raise DataError(f"LanderModule needs the feature dimension (got {feature_dim}); pass feature_dim=pool.dim")
        self.save_hyperparameters({"model": asdict(model_cfg), "train": asdict(train_cfg), "feature_dim": feature_dim,
                                   "kind": KIND})  # fmt: skip
        self.train_cfg = train_cfg
        self.model = LANDER(feature_dim, **asdict(model_cfg))

    def forward(self, data: Data) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(data)

    def _step(self, data: Data, stage: str) -> torch.Tensor:
        logits, density = self.model(data)
        loss, parts = lander_loss(
            logits, density, data, balance=self.train_cfg.balance, focal=self.train_cfg.focal,
            gamma=self.train_cfg.focal_gamma,
        )  # fmt: skip
        for name, v in parts.items():
            if name == "link_acc" and torch.isnan(v):
                continue
            self.log(f"{stage}/{name}", v, prog_bar=name == "loss", batch_size=1, sync_dist=stage == "val",
                     on_step=stage == "train", on_epoch=True)  # fmt: skip
        return loss

    def training_step(self, data: Data, batch_idx: int) -> torch.Tensor:
        return self._step(data, "train")

    def validation_step(self, data: Data, batch_idx: int) -> None:
        self._step(data, "val")

    def configure_optimizers(self) -> Any:
        t = self.train_cfg
        if t.optimizer == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(self.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        else:
            opt = torch.optim.SGD(self.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class _GraphList(Dataset):
    def __init__(self, graphs: list[Data]):
        self.graphs = graphs

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i: int) -> Data:
        return self.graphs[i]


def seed_subgraph(g: Data, seeds: torch.Tensor, num_hops: int) -> Data:
    """The part of level graph ``g`` that the loss on ``seeds`` depends on: every node within ``num_hops`` hops
    upstream of a seed and every edge among them, with ``seed_mask`` marking the seeds.

    With ``num_hops = num_conv + 1`` the GNN output is exact for the seeds and their in-neighbours (each node up to
    ``num_conv`` hops away keeps its whole in-neighbourhood, and edge weights are the full graph's), so the seeds'
    link logits and densities equal those of the full-graph forward.
    """
    from torch_geometric.utils import k_hop_subgraph

    subset, edge_index, mapping, edge_mask = k_hop_subgraph(
        seeds, num_hops, g.edge_index, relabel_nodes=True, num_nodes=g.num_nodes, flow="source_to_target"
    )
    seed_mask = torch.zeros(subset.numel(), dtype=torch.bool)
    seed_mask[mapping] = True
    return Data(x=g.x[subset], edge_index=edge_index, edge_sim=g.edge_sim[edge_mask],
                edge_weight=g.edge_weight[edge_mask], density=g.density[subset], edge_label=g.edge_label[edge_mask],
                y=g.y[subset], num_nodes=int(subset.numel()), seed_mask=seed_mask)  # fmt: skip


class SeedBatches(Dataset):
    """One epoch of optimizer steps over level graphs, as the reference's sampled training schedules them.

    Each of the G graphs gets ``R = ceil(N_max / batch_nodes)`` steps per epoch (``N_max``: the largest graph, the
    level-0 pool). Graph g's steps walk an endless stream of random permutations of its nodes cut into chunks of
    ``batch_nodes`` (the last chunk of a pass is shorter), so a small graph is passed over several times per epoch,
    as the reference's re-created per-graph loaders do. A graph with at most ``batch_nodes`` nodes is served whole.
    Indices are ``epoch * len(self) + step`` (:class:`_EpochSteps` encodes the epoch), so every batch is a pure
    function of ``(seed, epoch, step)``: a resumed run sees the same batches.
    """

    def __init__(self, graphs: list[Data], batch_nodes: int, num_hops: int, seed: int = 0):
        if not graphs:
            raise DataError("no training level graphs: the meta-training pool needs at least 2 labeled samples")
        self.graphs, self.batch, self.hops, self.seed = graphs, int(batch_nodes), int(num_hops), int(seed)
        n_max = max(g.num_nodes for g in graphs)
        self.rounds = 1 if self.batch <= 0 else -(-n_max // self.batch)

    def __len__(self) -> int:
        return len(self.graphs) * self.rounds

    def seeds(self, gi: int, t: int) -> torch.Tensor:
        """Seed nodes of graph ``gi``'s ``t``-th step (counted over all epochs)."""
        n = self.graphs[gi].num_nodes
        per_pass = -(-n // self.batch)  # batches per pass over the graph's nodes
        p, c = divmod(t, per_pass)
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + gi) * 1_000_003 + p)
        return torch.randperm(n, generator=gen)[c * self.batch : (c + 1) * self.batch]

    def __getitem__(self, index: int) -> Data:
        epoch, step = divmod(int(index), len(self))
        r, gi = divmod(step, len(self.graphs))
        g = self.graphs[gi]
        if self.batch <= 0 or g.num_nodes <= self.batch:
            return g
        return seed_subgraph(g, self.seeds(gi, epoch * self.rounds + r), self.hops)


class _EpochSteps(Sampler[int]):
    """A fresh permutation of the epoch's steps, yielded as ``epoch * n + step`` (a pure function of seed, epoch)."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        base = self.epoch * self.n
        return iter((base + torch.randperm(self.n, generator=g)).tolist())

    def __len__(self) -> int:
        return self.n


def _first(batch: list[Data]) -> Data:
    return batch[0]


class LevelGraphDataModule(pl.LightningDataModule):
    """Builds the training level graphs of a labeled pool once (per process) and serves one optimizer step's graph at
    a time: a whole level graph, or (``train.batch_nodes``) a seed mini-batch's subgraph, see :class:`SeedBatches`.

    With DDP each rank gets a disjoint share of the steps (Lightning wraps the sampler in a distributed one).
    """

    def __init__(
        self,
        train_pool: FeaturePool,
        train: HiLanderTrainConfig,
        val_pool: FeaturePool | None = None,
        num_conv: int = 1,
    ):
        super().__init__()
        if not train_pool.has_labels:
            raise DataError("Hi-LANDER meta-training needs labels in the training pool")
        check_meta_training_pool(train_pool, list(train.k_list), "training")
        self.train_pool, self.val_pool, self.cfg = train_pool, val_pool, train
        self.num_conv = int(num_conv)
        self.train_graphs: list[Data] = []
        self.val_graphs: list[Data] = []

    def _levels(self, pool: FeaturePool) -> list[Data]:
        return build_training_levels(
            pool.features, pool.labels, list(self.cfg.k_list), list(self.cfg.levels_list), self.cfg.knn.kwargs()
        )

    def setup(self, stage: str | None = None) -> None:
        if not self.train_graphs:
            self.train_graphs = self._levels(self.train_pool)
        if self.val_pool is not None and not self.val_graphs:
            self.val_graphs = self._levels(self.val_pool)

    def train_dataloader(self) -> DataLoader:
        steps = SeedBatches(self.train_graphs, self.cfg.batch_nodes, self.num_conv + 1)
        return DataLoader(steps, batch_size=1, sampler=_EpochSteps(len(steps)), collate_fn=_first)

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_graphs:
            return []
        return DataLoader(_GraphList(self.val_graphs), batch_size=1, shuffle=False, collate_fn=_first)


def check_meta_training_pool(pool: FeaturePool, k_list: list[int], role: str = "training") -> None:
    """A pool Hi-LANDER can meta-train on: >= 2 classes (links and densities are learned from same- vs other-class
    neighbours) and more samples than the largest k (every node needs k neighbours)."""
    import numpy as np

    n = len(pool.features)
    n_classes = len(np.unique(pool.labels)) if pool.labels is not None else 0
    if n_classes < 2:
        raise DataError(f"the {role} pool has {n_classes} class(es) in {n} samples: Hi-LANDER meta-training learns "
                        "from same- vs other-class neighbours, so it needs >= 2 classes -- add labeled samples of "
                        "other classes")  # fmt: skip
    k = max(k_list)
    if k >= n:
        raise DataError(f"train.k_list has k={k} but the {role} pool has only {n} samples (each node needs k "
                        f"neighbours): use k <= {n - 1} in train.k_list or a larger pool")  # fmt: skip
