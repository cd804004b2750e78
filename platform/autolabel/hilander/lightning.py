"""Lightning wrappers for LANDER: a module that trains on whole level graphs and a datamodule that serves them."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torch_geometric.data import Data

from autolabel.config.hilander import HiLanderTrainConfig, LanderModelConfig
from autolabel.data.pools import FeaturePool
from autolabel.data.sampling import EpochShuffleSampler
from autolabel.errors import CheckpointError, DataError
from autolabel.hilander.gnn import LANDER, lander_loss
from autolabel.hilander.hierarchy import build_training_levels

KIND = "hilander.lander"


def _as_dict(cfg: Any) -> dict:
    if isinstance(cfg, dict):
        return dict(cfg)
    if hasattr(cfg, "__dataclass_fields__"):
        return asdict(cfg)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


class LanderModule(pl.LightningModule):
    """Trains :class:`LANDER` round-robin over level graphs (one whole graph per step), SGD (or Adam) + cosine LR."""

    def __init__(self, model: Any = None, train: Any = None, feature_dim: int = -1, kind: str = KIND):
        super().__init__()
        model_cfg = LanderModelConfig(**_as_dict(model)) if model is not None else LanderModelConfig()
        train_cfg = _as_train_cfg(train)
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


def _as_train_cfg(train: Any) -> HiLanderTrainConfig:
    if isinstance(train, HiLanderTrainConfig):
        return train
    if train is None:
        return HiLanderTrainConfig()
    from autolabel.config.hilander import KnnConfig

    d = _as_dict(train)
    knn = d.pop("knn", None)
    return HiLanderTrainConfig(**d, knn=KnnConfig(**knn) if isinstance(knn, dict) else KnnConfig())


class _GraphList(Dataset):
    def __init__(self, graphs: list[Data]):
        self.graphs = graphs

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i: int) -> Data:
        return self.graphs[i]


def _first(batch: list[Data]) -> Data:
    return batch[0]


class LevelGraphDataModule(pl.LightningDataModule):
    """Builds the training level graphs of a labeled pool once (per process) and serves them, shuffled each epoch.

    With DDP each rank gets a disjoint share of the graphs (Lightning inserts a DistributedSampler).
    """

    def __init__(self, train_pool: FeaturePool, train: HiLanderTrainConfig, val_pool: FeaturePool | None = None):
        super().__init__()
        if not train_pool.has_labels:
            raise DataError("Hi-LANDER meta-training needs labels in the training pool")
        self.train_pool, self.val_pool, self.cfg = train_pool, val_pool, train
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
        return DataLoader(
            _GraphList(self.train_graphs),
            batch_size=1,
            sampler=EpochShuffleSampler(len(self.train_graphs)),
            collate_fn=_first,
        )

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_graphs:
            return []
        return DataLoader(_GraphList(self.val_graphs), batch_size=1, shuffle=False, collate_fn=_first)


def load_lander(path: str | os.PathLike, map_location: str = "cpu") -> tuple[LANDER, dict]:
    """The LANDER model and its hyperparameters from a checkpoint written by ``autolabel fit hilander``."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(
            f"checkpoint not found: {p} -- train one with `autolabel fit hilander train_features=...`"
        )
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=False)
    except Exception as e:
        raise CheckpointError(
            f"{p} is not a readable torch checkpoint ({type(e).__name__}); is the file complete?"
        ) from e
    hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if hp.get("kind") != KIND:
        found = hp.get("kind") or (", ".join(list(hp)[:5]) if hp else "no hyperparameters")
        raise CheckpointError(
            f"{p} is not a Hi-LANDER checkpoint (it holds {found}); pass a checkpoint written by `autolabel fit hilander`"
        )
    model = LANDER(hp["feature_dim"], **hp["model"])
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.eval(), hp
