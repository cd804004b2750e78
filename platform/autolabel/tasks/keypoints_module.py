"""Lightning wrapper of :class:`~autolabel.tasks.keypoints.KeypointNet`: soft-argmax + heatmap training, PCK/NME
validation (torchmetrics, synchronized across DDP ranks)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import pytorch_lightning as pl
import torch

from autolabel.config.core import as_config
from autolabel.config.downstream import KeypointNetConfig
from autolabel.metrics.dense import NME, PCK
from autolabel.tasks.keypoints import KeypointNet, keypoint_loss


class KeypointModule(pl.LightningModule):
    """Lightning wrapper for :class:`KeypointNet`: soft-argmax L1 + heatmap cross-entropy over visible keypoints,
    Adam + cosine; logs ``val/pck`` (diagonal, ``pck_threshold``), ``val/pck_bbox``, ``val/nme``, ``val/nme_bbox``
    (and ``val/nme_io`` with ``eye_keypoints``) through torchmetrics, so they are synchronized across DDP ranks."""

    def __init__(self, cfg: KeypointNetConfig | Mapping | None = None, *, n_keypoints: int, in_channels: int = 3,
                 mean_shape: list | torch.Tensor | None = None, **flat: Any):  # fmt: skip
        super().__init__()
        cfg = as_config(cfg, KeypointNetConfig, flat)  # flat keywords: a checkpoint saved before KeypointNetConfig
        if isinstance(mean_shape, torch.Tensor):
            mean_shape = mean_shape.tolist()
        self.cfg = cfg
        self.save_hyperparameters({"cfg": asdict(cfg), "n_keypoints": n_keypoints, "in_channels": in_channels,
                                   "mean_shape": mean_shape})  # fmt: skip
        self.model = KeypointNet(n_keypoints, in_channels, cfg.base, cfg.depth, mean_shape, cfg.prior_sigma)
        self.val_pck = PCK(cfg.pck_threshold, "diagonal")
        self.val_pck_bbox = PCK(cfg.pck_threshold, "bbox")
        self.val_nme = NME("diagonal")
        self.val_nme_bbox = NME("bbox")
        self.val_nme_io = NME("interocular", cfg.eye_keypoints) if cfg.eye_keypoints else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logit maps ``[B, K, H, W]``."""
        return self.model(x)

    def _loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        out = self(batch["image"])
        return keypoint_loss(out, batch["keypoints"], batch["visible"], self.cfg.sigma,
                             self.cfg.heatmap_weight)  # fmt: skip

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def _metrics(self) -> dict[str, object]:
        m = {"val/pck": self.val_pck, "val/pck_bbox": self.val_pck_bbox, "val/nme": self.val_nme,
             "val/nme_bbox": self.val_nme_bbox}  # fmt: skip
        if self.val_nme_io is not None:
            m["val/nme_io"] = self.val_nme_io
        return m

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, pred = self._loss(batch)
        self.log("val/loss", loss, batch_size=batch["image"].shape[0], sync_dist=True)
        hw = tuple(batch["image"].shape[-2:])
        for metric in self._metrics().values():
            metric.update(pred.detach(), batch["keypoints"], batch["visible"], hw)

    def on_validation_epoch_end(self) -> None:
        for name, metric in self._metrics().items():
            if float(metric.count) > 0 or self.trainer.world_size > 1:
                self.log(name, metric.compute().float(), prog_bar=name == "val/pck")  # compute() syncs ranks
            metric.reset()

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.cfg.lr)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
