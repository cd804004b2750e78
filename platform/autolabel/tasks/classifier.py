"""The feature encoder of Hi-LANDER: a small residual CNN trained to classify the meta-training classes; its
L2-normalized penultimate layer embeds any image folder into a feature pool."""

from __future__ import annotations

import os

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from autolabel.config.classifier import ClassifierConfig
from autolabel.data.images import ImageFolderDataset
from autolabel.data.sampling import EpochShuffleSampler
from autolabel.errors import DataError

KIND = "tasks.classifier"


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.skip(x))


class EmbeddingNet(nn.Module):
    """Residual CNN -> ``embed_dim`` features; ``embed`` returns unit vectors. Any input size (adaptive pooling)."""

    def __init__(self, n_classes: int, channels: int = 3, width: int = 32, depth: int = 3, embed_dim: int = 128,
                 head: str = "cosine", scale: float = 16.0):  # fmt: skip
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages, c = [], width
        for i in range(depth):
            cout = width * 2**i
            stages += [_Block(c, cout, 1 if i == 0 else 2), _Block(cout, cout, 1)]
            c = cout
        self.stages = nn.Sequential(*stages)
        self.proj = nn.Linear(c, embed_dim)
        self.head_type, self.scale = head, scale
        self.head = nn.Linear(embed_dim, n_classes, bias=head == "linear")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(x))
        return self.proj(F.adaptive_avg_pool2d(h, 1).flatten(1))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(x), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if self.head_type == "cosine":
            return self.scale * F.linear(F.normalize(f, dim=1), F.normalize(self.head.weight, dim=1))
        return self.head(f)


def augment(x: torch.Tensor, hflip: bool = False, pad: int = 2) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (reflect padding + crop), optional horizontal flip; per sample."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    rows = (
        (dy[:, None] + torch.arange(h, device=x.device)[None]).view(b, 1, h, 1).expand(-1, x.shape[1], h, w + 2 * pad)
    )
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None]).view(b, 1, 1, w).expand(-1, x.shape[1], h, w)
    out = out.gather(3, cols)
    if hflip:
        flip = torch.rand(b, device=x.device) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


class ClassifierDataModule(pl.LightningDataModule):
    """An image folder with class subfolders, split into train/val with a fixed seed."""

    def __init__(self, root: str | os.PathLike, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.dataset = ImageFolderDataset(root, cfg.image_size, cfg.channels, with_labels=True)
        if len(self.dataset.classes) < 2:
            raise DataError(f"{root}: the feature encoder needs class subfolders for >= 2 classes")
        n = len(self.dataset)
        perm = np.random.default_rng(cfg.seed).permutation(n)
        n_val = int(round(cfg.val_fraction * n))
        self.train_idx, self.val_idx = perm[n_val:], perm[:n_val]

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Subset(self.dataset, self.train_idx.tolist()), batch_size=self.cfg.batch_size,
                          sampler=EpochShuffleSampler(len(self.train_idx), self.cfg.seed),
                          num_workers=self.cfg.num_workers, drop_last=len(self.train_idx) > self.cfg.batch_size)  # fmt: skip

    def val_dataloader(self) -> DataLoader | list:
        if len(self.val_idx) == 0:
            return []
        return DataLoader(Subset(self.dataset, self.val_idx.tolist()), batch_size=self.cfg.batch_size,
                          num_workers=self.cfg.num_workers)  # fmt: skip
