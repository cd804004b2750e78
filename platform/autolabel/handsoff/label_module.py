"""Training the HandsOff label-generator ensemble on streamed hypercolumns (Lightning).

Memory is flat in the number of labeled images: each step picks a few images, samples random pixels, and computes only
those pixels' hypercolumns from the frozen generator (:meth:`HypercolumnExtractor.pixels`). Nothing is cached.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

from autolabel.errors import CheckpointError, ConfigError, DataError
from autolabel.handsoff.hypercolumns import HypercolumnExtractor
from autolabel.handsoff.label_generator import LabelGeneratorEnsemble, keypoint_heatmaps


def suppress_small_classes(labels: Tensor, min_class_pixels: int = 30) -> Tensor:
    """Per image, classes with fewer than ``min_class_pixels`` pixels become background (0). ``labels [N, H, W]``."""
    out = labels.clone().long()
    if min_class_pixels <= 0:
        return out
    for i in range(out.shape[0]):
        cls, counts = out[i].unique(return_counts=True)
        for c, n in zip(cls.tolist(), counts.tolist()):
            if c != 0 and n < min_class_pixels:
                out[i][out[i] == c] = 0
    return out


class HypercolumnPixelDataset(IterableDataset):
    """Endless stream of ``(hypercolumns [P, C], targets)`` batches computed on the fly from a frozen generator.

    ``labels``: segmentation ``[N, H, W]`` class indices; keypoints ``[N, K, 2]`` (x, y) pixel coordinates at the
    working resolution; depth ``[N, H, W]`` floats. Dense labels are resized (nearest / bilinear) to the working
    resolution. Each item holds ``images_per_step * pixels_per_image`` pixels.
    """

    def __init__(
        self,
        generator: nn.Module,
        ws: Tensor,
        labels: Tensor,
        task: str = "segmentation",
        pixels_per_image: int = 4096,
        images_per_step: int = 1,
        layers: Sequence[int] | None = None,
        working_resolution: int | None = None,
        fp16: bool = False,
        min_class_pixels: int = 30,
        heatmap_sigma: float = 2.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.extractor = HypercolumnExtractor(
            generator, working_resolution, layers, torch.float16 if fp16 else torch.float32
        )
        r = self.extractor.resolution
        if ws.ndim == 2:
            ws = ws[:, None].repeat(1, generator.num_ws, 1)
        self.extractor._check_ws(ws)
        labels = torch.as_tensor(labels)
        if labels.shape[0] != ws.shape[0]:
            raise DataError(f"{labels.shape[0]} labels for {ws.shape[0]} latents: pass one label per inverted image")
        if task == "segmentation":
            if labels.ndim != 3:
                raise DataError(f"segmentation labels have shape {tuple(labels.shape)}: pass [N, H, W] class indices")
            if labels.min() < 0:
                raise DataError("segmentation labels contain negative classes: use 0 for background, 1..K-1 for parts")
            if labels.shape[-1] != r or labels.shape[-2] != r:
                labels = F.interpolate(labels[:, None].float(), size=(r, r), mode="nearest")[:, 0]
            n_outputs = int(labels.max()) + 1
            labels = suppress_small_classes(labels.long(), min_class_pixels)
        elif task == "keypoints":
            if labels.ndim != 3 or labels.shape[-1] != 2:
                raise DataError(f"keypoints have shape {tuple(labels.shape)}: pass [N, K, 2] (x, y) in pixels")
            n_outputs = labels.shape[1]
            labels = keypoint_heatmaps(labels.float(), r, heatmap_sigma)  # [N, K, R, R]
        elif task == "depth":
            if labels.ndim != 3:
                raise DataError(f"depth labels have shape {tuple(labels.shape)}: pass [N, H, W] depth maps")
            if not torch.isfinite(labels).all():
                raise DataError("depth labels contain NaN/Inf: fill or mask invalid pixels before training")
            if labels.shape[-1] != r or labels.shape[-2] != r:
                labels = F.interpolate(labels[:, None].float(), size=(r, r), mode="bilinear", align_corners=False)[:, 0]
            labels = labels.float()
            n_outputs = 1
        else:
            raise ConfigError(f"task={task!r} unknown: use segmentation, keypoints or depth")
        if not 0 < pixels_per_image <= r * r:
            raise ConfigError(f"pixels_per_image={pixels_per_image} must be in [1, {r * r}]")
        self.task = task
        # output width from data: classes (max label + 1, before small-class suppression) / keypoints / 1 (depth)
        self.n_outputs = n_outputs
        self.ws = ws.detach()
        self.labels = labels
        self.pixels_per_image = int(pixels_per_image)
        self.images_per_step = min(int(images_per_step), ws.shape[0])
        self.seed = int(seed)

    def targets(self, img_idx: Tensor, pix: Tensor) -> Tensor:
        """Targets of flat pixel positions ``pix [B, P]`` in images ``img_idx [B]`` -> ``[B*P]`` or ``[B*P, K]``."""
        lab = self.labels[img_idx]
        if self.task == "keypoints":
            flat = lab.flatten(2)  # [B, K, R*R]
            return (
                torch.gather(flat, 2, pix[:, None].expand(-1, flat.shape[1], -1))
                .transpose(1, 2)
                .reshape(-1, flat.shape[1])
            )
        return torch.gather(lab.flatten(1), 1, pix).reshape(-1)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        rng = torch.Generator().manual_seed(self.seed)
        n = self.ws.shape[0]
        while True:
            img_idx = torch.randperm(n, generator=rng)[: self.images_per_step]
            x, pix = self.extractor.sample_pixels(self.ws[img_idx], self.pixels_per_image, rng)
            yield x.reshape(-1, x.shape[-1]), self.targets(img_idx, pix)


class LabelDataModule(pl.LightningDataModule):
    """Wraps a :class:`HypercolumnPixelDataset` (batches are already formed, so ``batch_size=None``)."""

    def __init__(self, dataset: HypercolumnPixelDataset) -> None:
        super().__init__()
        self.dataset = dataset

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=None, num_workers=0)


class LabelGeneratorModule(pl.LightningModule):
    """Trains every ensemble member on the streamed pixels, each member on its own random ``batch_pixels`` subset.

    The checkpoint is self-contained for synthesis: hparams hold the ensemble shape, task, class names, hypercolumn
    layers and working resolution, and the generator's path (the generator itself is not stored).
    """

    def __init__(
        self,
        in_channels: int,
        task: str = "segmentation",
        n_classes: int | None = None,
        n_keypoints: int | None = None,
        n_members: int = 10,
        hidden: Sequence[int] = (256, 32),
        lr: float = 1e-3,
        batch_pixels: int = 64,
        class_names: Sequence[str] | None = None,
        layers: Sequence[int] | None = None,
        working_resolution: int = -1,
        fp16: bool = False,
        heatmap_sigma: float = 2.0,
        depth_loss: str = "l1",
        generator_path: str | None = None,
    ) -> None:
        super().__init__()
        if class_names is not None and n_classes is not None and len(class_names) != n_classes:
            raise ConfigError(f"{len(class_names)} class_names for n_classes={n_classes}: give one name per class")
        if batch_pixels < 2:
            raise ConfigError(f"batch_pixels={batch_pixels} must be >= 2 (BatchNorm needs a batch; 64 in reference)")
        self.save_hyperparameters()
        self.ensemble = LabelGeneratorEnsemble(in_channels, task, n_classes, n_keypoints, n_members, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.ensemble(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        x = x.float()
        p = x.shape[0]
        bp = min(self.hparams.batch_pixels, p)
        losses = []
        correct = []
        for member in self.ensemble.members:
            sel = torch.randperm(p, device=x.device)[:bp]  # each member its own pixel order
            out = member(x[sel])
            loss = self.ensemble.member_losses(out[None], y[sel], self.hparams.depth_loss)[0]
            losses.append(loss)
            if self.ensemble.task == "segmentation":
                correct.append((out.argmax(-1) == y[sel].long()).float().mean())
        total = torch.stack(losses).sum()
        self.log("train/loss", total / len(losses), prog_bar=True, batch_size=bp)
        if correct:
            self.log("train/acc", torch.stack(correct).mean(), batch_size=bp)
        return total

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Adam is per-parameter, so one optimizer over all members equals one per member.
        return torch.optim.Adam(self.ensemble.parameters(), lr=self.hparams.lr)

    def make_extractor(self, generator: nn.Module) -> HypercolumnExtractor:
        """The hypercolumn extractor this ensemble was trained with, on ``generator``."""
        res = self.hparams.working_resolution
        ext = HypercolumnExtractor(
            generator, None if res is None or res <= 0 else res, self.hparams.layers,
            torch.float16 if self.hparams.fp16 else torch.float32,
        )  # fmt: skip
        if ext.channels != self.ensemble.in_channels:
            raise CheckpointError(
                f"generator gives {ext.channels}-wide hypercolumns but the ensemble expects {self.ensemble.in_channels}: "
                "load the generator this label generator was trained with"
            )
        return ext
