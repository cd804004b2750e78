"""A discriminator on frozen pretrained features (Projected GAN, Sauer et al. 2021; Vision-aided GAN, Kumari et al. 2022).

The image goes through a frozen ImageNet backbone (VGG16 or AlexNet, the weights LPIPS uses, loaded from a local file by
:class:`autolabel.backbones.FrozenFeatures`); at each of its ``n_scales`` taps a small trainable head -- an optional
*fixed* random 1x1 projection (Projected GAN's cross-channel mixing), then spectrally normalized stride-2 4x4 convs
down to <= 4x4, then a 1x1 conv to one logit per patch -- judges that scale. The output is every head's patch logits,
concatenated: ``[B, n_logits]``. Only the heads train; gradients still flow through the frozen backbone to the image
(that is how G learns). Trained with the hinge loss and DiffAugment, and without R1, as in Projected GAN.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from autolabel.backbones import FrozenFeatures
from autolabel.errors import ConfigError, DataError


class _Head(nn.Module):
    def __init__(self, in_ch: int, size: int, width: int, project: bool, seed: int):
        super().__init__()
        if project:
            gen = torch.Generator().manual_seed(seed)
            w = torch.randn(width, in_ch, 1, 1, generator=gen) / in_ch**0.5
            self.register_buffer("proj", w, persistent=True)  # fixed: saved so a resumed run sees the same mixing
            ch = width
        else:
            self.proj = None
            ch = in_ch
        layers: list[nn.Module] = []
        while size > 4:
            layers += [spectral_norm(nn.Conv2d(ch, width, 4, 2, 1)), nn.LeakyReLU(0.2)]
            ch, size = width, size // 2
        if not layers:
            layers += [spectral_norm(nn.Conv2d(ch, width, 3, 1, 1)), nn.LeakyReLU(0.2)]
            ch = width
        layers.append(spectral_norm(nn.Conv2d(ch, 1, 1)))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.proj is not None:
            x = nn.functional.conv2d(x, self.proj.to(x.dtype))
        return self.body(x).flatten(1)


class ProjectedDiscriminator(nn.Module):
    """Frozen backbone + trainable multi-scale patch heads; ``forward(img [B, C, R, R] in [-1, 1]) -> [B, n_logits]``.

    ``backbone``: ``vgg`` (VGG16) or ``alex``; ``n_scales``: how many LPIPS taps to judge (VGG16: relu1_2 .. relu5_3);
    ``head_channels``: width of each head; ``project``: a fixed random 1x1 projection before each head;
    ``weights``: the backbone file (default: torchvision's cache file, see :mod:`autolabel.backbones`);
    ``random_backbone``: random backbone weights when no file is found (tests only).
    """

    def __init__(self, resolution: int, img_channels: int = 3, backbone: str = "vgg", n_scales: int = 4,
                 head_channels: int = 64, project: bool = True, weights: str | os.PathLike | None = None,
                 random_backbone: bool = False):  # fmt: skip
        super().__init__()
        if img_channels not in (1, 3):
            raise ConfigError(f"the projected discriminator needs 1 or 3 image channels, got {img_channels}")
        self.resolution, self.img_channels = int(resolution), int(img_channels)
        self.backbone = FrozenFeatures(backbone, n_scales, weights=weights, random_backbone=random_backbone)
        with torch.no_grad():
            sizes = [f.shape[-1] for f in self.backbone(torch.zeros(1, 3, self.resolution, self.resolution))]
        if min(sizes) < 1:
            raise ConfigError(f"gan.resolution={resolution} is too small for {n_scales} {backbone} scales")
        self.heads = nn.ModuleList(
            _Head(c, s, head_channels, project, seed=i) for i, (c, s) in enumerate(zip(self.backbone.channels, sizes))
        )
        self.init_kwargs = dict(resolution=self.resolution, img_channels=self.img_channels, backbone=backbone,
                                n_scales=int(n_scales), head_channels=int(head_channels), project=bool(project))  # fmt: skip

    def forward(self, img: Tensor) -> Tensor:
        if img.ndim != 4 or img.shape[1] != self.img_channels or img.shape[-1] != self.resolution:
            raise DataError(
                f"discriminator input must be [B, {self.img_channels}, {self.resolution}, {self.resolution}], got "
                f"{tuple(img.shape)} -- resize images to the GAN resolution"
            )
        feats = self.backbone(img)
        return torch.cat([head(f) for head, f in zip(self.heads, feats)], dim=1)


def d_hinge_loss(real_pred: Tensor, fake_pred: Tensor) -> Tensor:
    """Discriminator hinge loss: relu(1 - D(x)) + relu(1 + D(G(z))), averaged over samples and patches."""
    return torch.relu(1 - real_pred.float()).mean() + torch.relu(1 + fake_pred.float()).mean()


def g_hinge_loss(fake_pred: Tensor) -> Tensor:
    """Generator hinge loss: -D(G(z))."""
    return -fake_pred.float().mean()
