"""Keypoint regression by heatmaps: a UNet trunk with one output map per keypoint.

Targets are Gaussian heatmaps (``sigma`` pixels) at the labelled positions; the loss is the MSE over visible
keypoints' maps. Decoding takes each map's argmax and refines it with a soft-argmax (softmax-weighted mean) over the
3x3 neighbourhood, giving sub-pixel positions. ``evaluate_keypoints`` normalizes errors by the IMAGE DIAGONAL
(``sqrt(H^2 + W^2)``): PCK@t counts keypoints within ``t * diagonal``; NME is the mean distance / diagonal.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from autolabel.data.labeled import LabeledFolder
from autolabel.errors import ConfigError
from autolabel.metrics.dense import nme, pck
from autolabel.tasks.segmentation import UNet


def render_heatmaps(keypoints: torch.Tensor, height: int, width: int, sigma: float = 1.5) -> torch.Tensor:
    """Gaussian heatmaps ``[B, K, H, W]`` (peak 1) for keypoints ``[B, K, 2]`` in (x, y) pixels."""
    ys = torch.arange(height, dtype=keypoints.dtype, device=keypoints.device)
    xs = torch.arange(width, dtype=keypoints.dtype, device=keypoints.device)
    dx = (xs[None, None, None, :] - keypoints[..., 0, None, None]) ** 2
    dy = (ys[None, None, :, None] - keypoints[..., 1, None, None]) ** 2
    return torch.exp(-(dx + dy) / (2 * sigma**2))


def decode_heatmaps(heatmaps: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Keypoints ``[B, K, 2]`` (x, y): argmax, then soft-argmax over the 3x3 window (weights ``softmax(beta * h)``)."""
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, -1)
    idx = flat.argmax(-1)
    iy, ix = idx // w, idx % w
    offs = torch.tensor([-1, 0, 1], device=heatmaps.device)
    oy, ox = torch.meshgrid(offs, offs, indexing="ij")
    ny = (iy[..., None] + oy.reshape(-1)).clamp(0, h - 1)
    nx = (ix[..., None] + ox.reshape(-1)).clamp(0, w - 1)
    vals = torch.gather(flat, 2, ny * w + nx)
    # out-of-image neighbours were clamped onto border pixels: drop their duplicates by masking them out
    inside = (iy[..., None] + oy.reshape(-1) >= 0) & (iy[..., None] + oy.reshape(-1) < h)
    inside &= (ix[..., None] + ox.reshape(-1) >= 0) & (ix[..., None] + ox.reshape(-1) < w)
    wts = torch.softmax((beta * vals).masked_fill(~inside, float("-inf")), dim=-1)
    x = (wts * nx.to(heatmaps.dtype)).sum(-1)
    y = (wts * ny.to(heatmaps.dtype)).sum(-1)
    return torch.stack([x, y], dim=-1)


class KeypointNet(nn.Module):
    """UNet trunk -> ``n_keypoints`` heatmaps at input resolution."""

    def __init__(self, n_keypoints: int, in_channels: int = 3, base: int = 16, depth: int = 3):
        super().__init__()
        if n_keypoints < 1:
            raise ConfigError(f"n_keypoints={n_keypoints}: need at least one keypoint")
        self.unet = UNet(in_channels, n_keypoints, base, depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> heatmaps ``[B, K, H, W]``."""
        return self.unet(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, beta: float = 10.0) -> torch.Tensor:
        """Decoded keypoints ``[B, K, 2]`` in (x, y) pixels."""
        return decode_heatmaps(self(x), beta)


class KeypointModule(pl.LightningModule):
    """Lightning wrapper for :class:`KeypointNet`: heatmap MSE (visible keypoints), Adam + cosine; logs val/pck, val/nme."""

    def __init__(
        self,
        n_keypoints: int,
        in_channels: int = 3,
        base: int = 16,
        depth: int = 3,
        lr: float = 1e-3,
        sigma: float = 1.5,
        pck_threshold: float = 0.1,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = KeypointNet(n_keypoints, in_channels, base, depth)
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Heatmaps ``[B, K, H, W]``."""
        return self.model(x)

    def _loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        img, kp, vis = batch["image"], batch["keypoints"], batch["visible"]
        out = self(img)
        target = render_heatmaps(kp, img.shape[-2], img.shape[-1], self.hparams.sigma)
        per = ((out - target) ** 2).mean(dim=(-2, -1))
        w = vis.to(per.dtype)
        return (per * w).sum() / w.sum().clamp_min(1.0), out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, out = self._loss(batch)
        self.log("val/loss", loss, batch_size=batch["image"].shape[0])
        h, w = batch["image"].shape[-2:]
        norm = torch.full((out.shape[0],), math.hypot(h, w))
        self._val.append(
            (decode_heatmaps(out.detach(), 10.0).cpu(), batch["keypoints"].cpu(), batch["visible"].cpu(), norm)
        )

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        p, g, v, n = (torch.cat(t) for t in zip(*self._val))
        self.log("val/pck", pck(p, g, n, self.hparams.pck_threshold, v), prog_bar=True)
        self.log("val/nme", nme(p, g, n, v))

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@torch.no_grad()
def evaluate_keypoints(
    model: nn.Module,
    folder: LabeledFolder,
    batch_size: int = 16,
    threshold: float = 0.1,
    beta: float = 10.0,
    per_keypoint: bool = False,
) -> dict:
    """``{"pck@<threshold>": ..., "nme": ...}`` on ``folder``, normalized by the image diagonal.

    ``per_keypoint=True`` adds ``"per_keypoint_pck"``: one PCK per keypoint index (NaN where it is never visible).
    """
    if folder.task != "keypoints":
        raise ConfigError(f"evaluate_keypoints needs a keypoints folder, got task={folder.task}")
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    ps, gs, vs, ns = [], [], [], []
    for batch in DataLoader(folder, batch_size):
        img = batch["image"]
        ps.append(decode_heatmaps(model(img.to(dev)), beta).cpu())
        gs.append(batch["keypoints"])
        vs.append(batch["visible"])
        ns.append(torch.full((img.shape[0],), math.hypot(img.shape[-2], img.shape[-1])))
    model.train(was)
    p, g, v, n = torch.cat(ps), torch.cat(gs), torch.cat(vs), torch.cat(ns)
    out = {f"pck@{threshold:g}": pck(p, g, n, threshold, v), "nme": nme(p, g, n, v)}
    if per_keypoint:
        out["per_keypoint_pck"] = [
            pck(p[:, k : k + 1], g[:, k : k + 1], n, threshold, v[:, k : k + 1]) for k in range(p.shape[1])
        ]
    return out
