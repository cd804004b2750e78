"""Lightning wrapper of :class:`~autolabel.tasks.classifier.EmbeddingNet` (Hi-LANDER's feature encoder), loading a
trained one back, and embedding image folders with it into feature pools."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy

from autolabel.config.classifier import ClassifierConfig
from autolabel.config.core import as_config
from autolabel.data.images import ImageFolderDataset
from autolabel.data.pools import FeaturePool, save_feature_pool
from autolabel.errors import CheckpointError, ConfigError, DataError
from autolabel.tasks.classifier import KIND, EmbeddingNet, augment


class ClassifierModule(pl.LightningModule):
    """Trains ``EmbeddingNet`` with (label-smoothed) cross-entropy, AdamW and a one-cycle (warm-up + cosine) LR."""

    def __init__(self, cfg: ClassifierConfig | Mapping | None, *, n_classes: int, class_names: list[str] | None = None,
                 kind: str = KIND):  # fmt: skip
        super().__init__()
        c = as_config(cfg, ClassifierConfig)
        if n_classes < 2:
            raise DataError(f"the feature encoder needs >= 2 training classes, got {n_classes}")
        self.save_hyperparameters({"cfg": asdict(c), "n_classes": n_classes,
                                   "class_names": list(class_names or []), "kind": KIND})  # fmt: skip
        self.cfg = c
        self.net = EmbeddingNet(n_classes, c.channels, c.width, c.depth, c.embed_dim, c.head, c.scale)
        self.train_acc = MulticlassAccuracy(n_classes, average="micro")
        self.val_acc = MulticlassAccuracy(n_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.embed(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.cfg.augment:
            x = augment(x, self.cfg.hflip)
        logits = self.net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
        self.train_acc(logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.val_acc(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        est = float(self.trainer.estimated_stepping_batches)
        if not math.isfinite(est):
            raise ConfigError("the classifier's LR schedule needs a finite length: set trainer.max_steps or max_epochs")
        total = max(1, int(est))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.cfg.lr, total_steps=total, pct_start=0.15)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def load_classifier(path: str | os.PathLike, map_location: str = "cpu") -> ClassifierModule:
    """A trained feature encoder from a Lightning checkpoint written by ``autolabel fit classifier`` (eval mode)."""
    from autolabel.engine.checkpoint_io import load_checkpoint

    p = Path(path)
    ckpt = load_checkpoint(p, map_location, what="feature-encoder checkpoint",
                           hint="train one with `autolabel fit classifier train_dir=...`")  # fmt: skip
    hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if hp.get("kind") != KIND:
        found = hp.get("kind") or "no autolabel hyperparameters"
        raise CheckpointError(f"{p} is not a feature-encoder checkpoint (it holds {found}); "
                              "pass one written by `autolabel fit classifier`")  # fmt: skip
    try:
        module = ClassifierModule(hp["cfg"], n_classes=hp["n_classes"], class_names=hp.get("class_names"))
        module.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{p} is a damaged or incompatible feature-encoder checkpoint ({type(e).__name__}); "
                              "retrain it with `autolabel fit classifier`") from e  # fmt: skip
    return module.eval()


@torch.no_grad()
def embed_dataset(module: ClassifierModule, dataset: ImageFolderDataset, batch_size: int = 256, device: str = "cpu",
                  progress: bool = True) -> np.ndarray:  # fmt: skip
    """Unit-norm float32 embeddings ``[N, embed_dim]`` of a dataset, in its order."""
    from tqdm.auto import tqdm

    module = module.to(device).eval()
    out = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for x, _ in tqdm(loader, desc="embed", disable=not progress, leave=False):
        out.append(module(x.to(device)).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def embed_folder(checkpoint: str | os.PathLike | ClassifierModule, images: str | os.PathLike, out: str | os.PathLike,
                 batch_size: int = 256, device: str = "cpu", progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Embed every image of a folder into a feature pool ``.npz`` (``features``, ``ids``; ``labels`` and
    ``class_names`` when the folder has class subfolders)."""
    from autolabel.engine.paths import check_output_file

    ckpt_path = None if isinstance(checkpoint, ClassifierModule) else checkpoint
    check_output_file(out, {"checkpoint": ckpt_path, "images": images}, example="pool.npz")
    module = checkpoint if isinstance(checkpoint, ClassifierModule) else load_classifier(checkpoint)
    ds = ImageFolderDataset(images, module.cfg.image_size, module.cfg.channels)
    feats = embed_dataset(module, ds, batch_size, device, progress)
    pool = FeaturePool(feats, ds.labels if ds.has_labels else None, np.array(ds.ids))
    path = save_feature_pool(out, pool, class_names=ds.classes)
    return {"n": len(ds), "dim": int(feats.shape[1]), "path": str(path), "classes": ds.classes}
