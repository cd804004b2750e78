"""Downstream dense-prediction nets used to measure label quality: a small UNet for segmentation and depth.

:class:`~autolabel.tasks.segmentation_module.SegmentationModule` trains a :class:`UNet` on a
:class:`~autolabel.data.labeled.LabeledFolder` (cross-entropy for segmentation, L1 for depth; Adam + cosine schedule)
and logs ``train/loss`` and ``val/miou`` (or ``val/rmse``).
``DenseDataModule`` trains on one folder (synthetic or real) and validates on another (or a held-out slice).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from autolabel.data.labeled import LabeledFolder
from autolabel.data.sampling import EpochShuffleSampler
from autolabel.errors import ConfigError
from autolabel.metrics.dense import confusion_matrix, depth_errors, miou, pixel_accuracy
from autolabel.tasks.augment import SeededAugmentation


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """UNet with ``depth`` down/up stages; channels ``base * 2**i``; any input size (padded to a multiple of 2**depth)."""

    def __init__(self, in_channels: int = 3, n_classes: int = 2, base: int = 16, depth: int = 3):
        super().__init__()
        if in_channels < 1 or n_classes < 1 or base < 1 or depth < 1:
            raise ConfigError("UNet needs in_channels >= 1, n_classes >= 1, base >= 1 and depth >= 1")
        self.depth = depth
        ch = [base * 2**i for i in range(depth + 1)]
        self.inc = _block(in_channels, ch[0])
        self.down = nn.ModuleList(_block(ch[i], ch[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in reversed(range(depth)))
        self.dec = nn.ModuleList(_block(2 * ch[i], ch[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(ch[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> logits ``[B, n_classes, H, W]``."""
        h, w = x.shape[-2:]
        m = 2**self.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips = [self.inc(x)]
        for d in self.down:
            skips.append(d(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up, dec in zip(self.up, self.dec):
            y = dec(torch.cat([up(y), skips.pop()], dim=1))
        return self.head(y)[..., :h, :w]


class FlipDataset(SeededAugmentation):
    """Random horizontal flip of image and labels; keypoints get ``x -> W-1-x`` and optional index swaps."""

    def __init__(self, base: Dataset, p: float = 0.5, flip_pairs: Sequence[tuple[int, int]] = (), seed: int = 0):
        super().__init__(base, seed)
        self.p, self.flip_pairs = p, list(flip_pairs)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i])
        if float(torch.rand((), generator=self.gen)) >= self.p:
            return item
        return flip_item(item, self.flip_pairs)


def flip_item(item: dict, flip_pairs: Sequence[tuple[int, int]] = ()) -> dict:
    """Horizontally flip one dataset item (image, mask/depth, keypoints with visibility)."""
    item = dict(item)
    w = item["image"].shape[-1]
    item["image"] = item["image"].flip(-1)
    for key in ("mask", "depth"):
        if key in item:
            item[key] = item[key].flip(-1)
    if "keypoints" in item:
        kp, vis = item["keypoints"].clone(), item["visible"].clone()
        kp[:, 0] = torch.where(vis, (w - 1) - kp[:, 0], kp[:, 0])
        for a, b in flip_pairs:
            kp[[a, b]] = kp[[b, a]]
            vis[[a, b]] = vis[[b, a]]
        item["keypoints"], item["visible"] = kp, vis
    return item


class DenseDataModule(pl.LightningDataModule):
    """Train on ``train_root`` and validate on ``val_root`` (or a ``val_fraction`` slice of the training folder)."""

    def __init__(
        self,
        train_root: str | os.PathLike,
        val_root: str | os.PathLike | None = None,
        task: str = "segmentation",
        size: int | None = 32,
        batch_size: int = 8,
        val_fraction: float = 0.1,
        n_classes: int | None = None,
        augment: bool = True,
        flip_pairs: Sequence[tuple[int, int]] = (),
        num_workers: int = 0,
        seed: int = 0,
        limit: int | None = None,
    ):
        super().__init__()
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"val_fraction={val_fraction} must be in [0, 1)")
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1")
        self.train_root, self.val_root, self.task, self.size = train_root, val_root, task, size
        self.batch_size, self.val_fraction, self.n_classes = batch_size, val_fraction, n_classes
        self.augment, self.flip_pairs, self.num_workers, self.seed, self.limit = (
            augment,
            flip_pairs,
            num_workers,
            seed,
            limit,
        )
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        full = LabeledFolder(
            self.train_root, task=self.task, size=self.size, n_classes=self.n_classes, limit=self.limit
        )
        self.n_classes = full.n_classes
        if self.val_root is not None:
            train, val = full, LabeledFolder(self.val_root, task=self.task, size=self.size, n_classes=full.n_classes)
        else:
            n_val = int(round(len(full) * self.val_fraction))
            perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(self.seed)).tolist()
            train, val = Subset(full, perm[n_val:]), (Subset(full, perm[:n_val]) if n_val else None)
        self.train_set = FlipDataset(train, flip_pairs=self.flip_pairs, seed=self.seed) if self.augment else train
        self.val_set = val

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            self.batch_size,
            sampler=EpochShuffleSampler(self.train_set, self.seed),
            num_workers=self.num_workers,
            drop_last=len(self.train_set) > self.batch_size,
        )  # type: ignore[arg-type]

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, self.batch_size, shuffle=False, num_workers=self.num_workers)


def _model_out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module,
    folder: LabeledFolder,
    batch_size: int = 16,
    n_classes: int | None = None,
    progress: bool = False,
    ignore_index: int | None = 255,
) -> dict:
    """mIoU (all classes incl. background present in gt or pred), per-class IoU and pixel accuracy on ``folder``;
    ground-truth pixels equal to ``ignore_index`` are skipped."""
    from tqdm import tqdm

    if folder.task != "segmentation":
        raise ConfigError(f"evaluate_segmentation needs a segmentation folder, got task={folder.task}")
    k = n_classes or getattr(getattr(model, "hparams", None), "n_classes", None) or folder.n_classes
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    conf = torch.zeros(k, k, dtype=torch.long)
    for batch in tqdm(DataLoader(folder, batch_size), desc="eval seg", disable=not progress):
        pred = _model_out(model, batch["image"].to(dev)).argmax(1).cpu()
        conf += confusion_matrix(pred, batch["mask"], k, ignore_index=ignore_index)
    model.train(was)
    m, per = miou(conf)
    return {"miou": m, "per_class_iou": per, "pixel_acc": pixel_accuracy(conf)}


@torch.no_grad()
def evaluate_depth(
    model: nn.Module, folder: LabeledFolder, batch_size: int = 16, min_depth: float = 1e-3, max_depth: float = 80.0
) -> dict:
    """RMSE, RMSE-log, AbsRel, SqRel over all pixels of ``folder`` (clamped to ``[min_depth, max_depth]``)."""
    if folder.task != "depth":
        raise ConfigError(f"evaluate_depth needs a depth folder, got task={folder.task}")
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    preds, gts = [], []
    for batch in DataLoader(folder, batch_size):
        preds.append(_model_out(model, batch["image"].to(dev)).cpu())
        gts.append(batch["depth"])
    model.train(was)
    return depth_errors(torch.cat(preds), torch.cat(gts), min_depth, max_depth)
