"""AdaBN (Li et al., 2016): a net's BatchNorm statistics recomputed on unlabeled images of the test domain.

A downstream net normalizes its features with the statistics of the images it trained on -- synthetic ones, or a
few augmented real ones -- while the photos it is scored on may differ. Recomputing every BatchNorm layer's running
mean and variance on unlabeled real photos (which HandsOff always has: the GAN trained on them) moves the net to them
without a label or a gradient step; the weights are untouched. On the horses (benchmarks/README.md, "AdaBN") it
helped the net trained on the 16 real photos (+0.008 / +0.017 mIoU) and not the synthetic-trained one, whose images
already carry the photos' statistics.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from autolabel.errors import ConfigError, DataError

__all__ = ["AdaptBatchNorm", "adapt_batchnorm"]


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> int:
    """Replace the running mean/variance of every BatchNorm layer of ``model`` by their average over ``images``
    (``[N, C, H, W]``, the net's input scale), one forward pass per batch. Every other module keeps its mode and the
    weights are untouched. Returns the number of layers adapted (0: the net has no BatchNorm, nothing changes)."""
    if images.ndim != 4 or len(images) == 0:
        raise DataError(f"AdaBN needs a non-empty image batch [N, C, H, W], got shape {tuple(images.shape)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    bns = _batchnorms(model)
    if not bns:
        return 0
    modes = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for m in bns]
    model.eval()  # dropout and friends in inference mode
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch counts equally
            m.train()
        device = next((p.device for p in model.parameters()), images.device)
        for i in range(0, len(images), batch_size):
            model(images[i : i + batch_size].to(device))
    finally:
        for m, momentum in momenta:
            m.momentum = momentum
        for m, training in modes:
            m.training = training
    return len(bns)


class AdaptBatchNorm(pl.Callback):
    """Re-estimates the BatchNorm statistics on ``images`` before every validation, so the checkpoint chosen on the
    validation slice -- and stored with those statistics -- is the adapted net; and once more when training ends (the
    final weights, for runs without validation)."""

    def __init__(self, images: torch.Tensor, batch_size: int = 64):
        self.images, self.batch_size = images, batch_size

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        adapt_batchnorm(pl_module, self.images, self.batch_size)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        adapt_batchnorm(pl_module, self.images, self.batch_size)
