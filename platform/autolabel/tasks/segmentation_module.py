"""Lightning wrapper of the downstream :class:`~autolabel.tasks.segmentation.UNet`: segmentation (cross-entropy,
mIoU) or depth (L1, RMSE)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from autolabel.config.core import as_config
from autolabel.config.downstream import SegmentationNetConfig
from autolabel.errors import ConfigError
from autolabel.metrics.dense import DepthRMSE, MeanIoU
from autolabel.tasks.segmentation import UNet


class SegmentationModule(pl.LightningModule):
    """Lightning wrapper: ``task="segmentation"`` (cross-entropy, mIoU) or ``"depth"`` (L1, RMSE).

    Pixels labeled ``ignore_index`` (255 by default, e.g. VOC's object borders) count neither in the loss nor in the
    metrics. Validation metrics are torchmetrics (:class:`~autolabel.metrics.dense.MeanIoU`, ``DepthRMSE``), so under
    DDP ``val/miou`` is computed over every rank's share of the validation set, equal to the single-process value.
    """

    def __init__(self, cfg: SegmentationNetConfig | Mapping | None = None, *, n_classes: int = 2,
                 in_channels: int = 3, **flat: Any):  # fmt: skip
        super().__init__()
        # flat keywords: a checkpoint saved before SegmentationNetConfig
        cfg = as_config(cfg, SegmentationNetConfig, flat)
        if cfg.task == "segmentation" and 0 <= cfg.ignore_index < n_classes:
            raise ConfigError(f"ignore_index={cfg.ignore_index} is a real class (n_classes={n_classes}): use 255 or "
                              "-100")  # fmt: skip
        self.cfg = cfg
        self.save_hyperparameters({"cfg": asdict(cfg), "n_classes": n_classes, "in_channels": in_channels})
        self.model = UNet(in_channels, 1 if cfg.task == "depth" else n_classes, cfg.base, cfg.depth)
        if cfg.task == "depth":
            self.val_rmse = DepthRMSE()
        else:
            self.val_miou = MeanIoU(n_classes, ignore_index=cfg.ignore_index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (segmentation) or depth ``[B, 1, H, W]``."""
        return self.model(x)

    def _loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        out = self(batch["image"])
        if self.cfg.task == "depth":
            return F.l1_loss(out, batch["depth"]), out
        return F.cross_entropy(out, batch["mask"], ignore_index=self.cfg.ignore_index), out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, out = self._loss(batch)
        self.log("val/loss", loss, batch_size=batch["image"].shape[0], sync_dist=True)
        if self.cfg.task == "depth":
            self.val_rmse.update(out.detach(), batch["depth"])
        else:
            self.val_miou.update(out.detach().argmax(1), batch["mask"])

    def on_validation_epoch_end(self) -> None:
        # compute() all-reduces the metric states across ranks (torchmetrics), so every rank logs the global value
        if self.cfg.task == "depth":
            self.log("val/rmse", self.val_rmse.compute().float())
            self.val_rmse.reset()
            return
        self.log("val/miou", self.val_miou.compute().float(), prog_bar=True)
        self.log("val/pixel_acc", float(self.val_miou.pixel_accuracy()))
        self.val_miou.reset()

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.cfg.lr)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
