"""Lightning wrapper of :class:`~autolabel.tasks.keypoints.KeypointNet`: soft-argmax + heatmap training, PCK/NME
validation (torchmetrics, synchronized across DDP ranks)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from autolabel.errors import ConfigError
from autolabel.metrics.dense import NME, PCK
from autolabel.tasks.keypoints import KeypointNet, keypoint_loss


class KeypointModule(pl.LightningModule):
    """Lightning wrapper for :class:`KeypointNet`: soft-argmax L1 + heatmap cross-entropy over visible keypoints,
    Adam + cosine; logs ``val/pck`` (diagonal, ``pck_threshold``), ``val/pck_bbox``, ``val/nme``, ``val/nme_bbox``
    (and ``val/nme_io`` with ``eye_keypoints``) through torchmetrics, so they are synchronized across DDP ranks."""

    def __init__(
        self,
        n_keypoints: int,
        in_channels: int = 3,
        base: int = 16,
        depth: int = 3,
        lr: float = 1e-3,
        sigma: float = 1.5,
        pck_threshold: float = 0.1,
        mean_shape: list | None = None,
        prior_sigma: float = 0.15,
        heatmap_weight: float = 0.1,
        eye_keypoints: list | None = None,
    ):
        super().__init__()
        if sigma <= 0 or heatmap_weight < 0:
            raise ConfigError(f"sigma={sigma}, heatmap_weight={heatmap_weight}: need sigma > 0, heatmap_weight >= 0")
        if isinstance(mean_shape, torch.Tensor):
            mean_shape = mean_shape.tolist()
        self.save_hyperparameters(dict(n_keypoints=n_keypoints, in_channels=in_channels, base=base, depth=depth,
                                       lr=lr, sigma=sigma, pck_threshold=pck_threshold, mean_shape=mean_shape,
                                       prior_sigma=prior_sigma, heatmap_weight=heatmap_weight,
                                       eye_keypoints=eye_keypoints))  # fmt: skip
        self.model = KeypointNet(n_keypoints, in_channels, base, depth, mean_shape, prior_sigma)
        self.val_pck = PCK(pck_threshold, "diagonal")
        self.val_pck_bbox = PCK(pck_threshold, "bbox")
        self.val_nme = NME("diagonal")
        self.val_nme_bbox = NME("bbox")
        self.val_nme_io = NME("interocular", eye_keypoints) if eye_keypoints else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logit maps ``[B, K, H, W]``."""
        return self.model(x)

    def _loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        out = self(batch["image"])
        return keypoint_loss(out, batch["keypoints"], batch["visible"], self.hparams.sigma,
                             self.hparams.heatmap_weight)  # fmt: skip

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
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
