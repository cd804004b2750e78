"""Schema of the downstream comparison (``autolabel.tasks.compare``): torch-free, so the CLI loads it instantly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from autolabel.errors import ConfigError

TRAINING_SETS = ("synthetic", "real_few", "mixed", "finetuned")
# the metrics a person reads first, per task: the headline shows f"{metric}_{set}" for every training set + constant
HEADLINE_METRICS = {
    "segmentation": ("miou",),
    "keypoints": ("pck@0.1", "pck@0.05", "nme", "nme_bbox", "nme_io"),
    "depth": ("rmse", "abs_rel"),
}


@dataclass
class SegmentationNetConfig:
    """The downstream UNet of :class:`~autolabel.tasks.segmentation_module.SegmentationModule` and its optimizer."""

    task: str = "segmentation"  # segmentation (cross-entropy, mIoU) | depth (L1, RMSE)
    base: int = 16  # UNet width
    depth: int = 3  # UNet depth
    lr: float = 1e-3
    ignore_index: int = 255  # segmentation: mask value left out of the loss and the metrics

    def __post_init__(self) -> None:
        if self.task not in ("segmentation", "depth"):
            raise ConfigError(f"SegmentationModule task={self.task!r}: use segmentation or depth (keypoints: "
                              "KeypointModule)")  # fmt: skip
        _check_net(self.base, self.depth, self.lr)


@dataclass
class KeypointNetConfig:
    """The downstream keypoint net of :class:`~autolabel.tasks.keypoints_module.KeypointModule` and its loss."""

    base: int = 16
    depth: int = 3
    lr: float = 1e-3
    sigma: float = 1.5  # heatmap target width in pixels
    pck_threshold: float = 0.1  # val/pck: a keypoint counts within this share of the image diagonal
    prior_sigma: float = 0.15  # width of the mean-shape prior, in units of the image size
    heatmap_weight: float = 0.1  # heatmap cross-entropy next to the soft-argmax L1
    eye_keypoints: Optional[list[int]] = None  # [left_eye, right_eye]: also log val/nme_io (inter-ocular)

    def __post_init__(self) -> None:
        if self.sigma <= 0 or self.heatmap_weight < 0:
            raise ConfigError(f"sigma={self.sigma}, heatmap_weight={self.heatmap_weight}: need sigma > 0, "
                              "heatmap_weight >= 0")  # fmt: skip
        _check_net(self.base, self.depth, self.lr)


def _check_net(base: int, depth: int, lr: float) -> None:
    if base < 1 or depth < 1 or lr <= 0:
        raise ConfigError(f"downstream net base={base}, depth={depth}, lr={lr}: need base, depth >= 1 and lr > 0")


@dataclass
class DownstreamConfig:
    """Settings of the downstream comparison, the same for every training set (the task comes from the labels)."""

    steps: int = 300  # optimizer steps for EVERY training set (equal budgets, not equal epochs)
    val_every: int = 50  # validate on the validation slice every this many steps; the best one is scored
    val_fraction: float = 0.2  # share of the test folder that picks the checkpoint (the same slice for every set)
    batch_size: int = 16
    lr: float = 1e-3
    base: int = 16  # UNet width
    depth: int = 2  # UNet depth
    real_share: float = 0.5  # mixed set: about this share of the draws are real images (oversampled)
    pretrain_share: float = 0.5  # finetuned set: share of the steps on the synthetic set before the real images
    sets: list[str] = field(default_factory=lambda: list(TRAINING_SETS))  # which training sets to train
    augment: bool = True  # segmentation/depth: horizontal flips; keypoints: random affine (+ flips with flip_pairs)
    photometric: bool = True  # with augment: random saturation/contrast/brightness/blur of the image (labels untouched)
    ignore_index: int = 255  # segmentation: mask value left out of the loss and the metrics
    sigma: float = 1.5  # keypoints: heatmap target width in pixels
    pck_thresholds: list[float] = field(default_factory=lambda: [0.1, 0.05])
    eye_keypoints: Optional[list[int]] = None  # keypoints: [left_eye, right_eye] indices -> NME/PCK by inter-ocular
    flip_pairs: Optional[list[Any]] = None  # keypoints: index pairs swapped by a mirror; null = no flips
    min_confidence: float = 0.0  # synthetic keypoints below this confidence count as invisible
    # AdaBN: every net's BatchNorm statistics re-estimated on the unlabeled real images (the GAN's training images)
    # before each validation and the final score, no labels (horses: the 16-real net +0.01-0.02 mIoU, synthetic +-0)
    adapt_bn: bool = False
    adapt_bn_images: int = 512  # at most this many unlabeled images (a seeded sample of larger folders)
    # trainings per set, seeds trainer.seed, +1, ...: each set's metrics are their mean, <metric>_sd their spread
    # (DESIGN section 7: at least two seeds before calling one set better than another); every set gets each seed
    repeats: int = 1

    def __post_init__(self) -> None:
        if self.steps < 1 or self.val_every < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(
                f"downstream.steps={self.steps}, val_every={self.val_every}, batch_size={self.batch_size}, "
                f"lr={self.lr}: need steps, val_every, batch_size >= 1 and lr > 0"
            )
        if self.base < 1 or self.depth < 1:
            raise ConfigError(
                f"downstream.base={self.base}, depth={self.depth}: the net needs base >= 1 and depth >= 1"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"downstream.val_fraction={self.val_fraction} must be in [0, 1) (0: no selection)")
        if not 0.0 < self.real_share < 1.0:
            raise ConfigError(f"downstream.real_share={self.real_share} must be in (0, 1): the mixed set's real share")
        if not 0.0 < self.pretrain_share < 1.0:
            raise ConfigError(
                f"downstream.pretrain_share={self.pretrain_share} must be in (0, 1): the finetuned set's share of "
                "steps on the synthetic images"
            )
        if "finetuned" in self.sets and self.steps < 2:
            raise ConfigError(f"downstream.steps={self.steps}: the finetuned set needs >= 2 (pretrain, then tune)")
        bad = [s for s in self.sets if s not in TRAINING_SETS]
        if bad:
            raise ConfigError(
                f"downstream.sets={list(self.sets)}: unknown {bad}; use some of {', '.join(TRAINING_SETS)}"
            )
        if self.repeats < 1:
            raise ConfigError(f"downstream.repeats={self.repeats} must be >= 1 (trainings per set, one per seed)")
        if self.adapt_bn_images < 1:
            raise ConfigError(f"downstream.adapt_bn_images={self.adapt_bn_images} must be >= 1 (how many unlabeled "
                              "images AdaBN averages over)")  # fmt: skip
        if self.eye_keypoints is not None and len(self.eye_keypoints) != 2:
            raise ConfigError(
                f"downstream.eye_keypoints={self.eye_keypoints}: name exactly two keypoints, e.g. [36,45]"
            )

    @property
    def pretrain_steps(self) -> int:
        """The finetuned set's steps on the synthetic images (at least 1, leaving at least 1 for the real ones)."""
        return min(self.steps - 1, max(1, round(self.steps * self.pretrain_share)))

    def segmentation_net(self, task: str = "segmentation") -> SegmentationNetConfig:
        """The net every training set gets for ``task`` (segmentation or depth)."""
        return SegmentationNetConfig(task, self.base, self.depth, self.lr, self.ignore_index)

    def keypoint_net(self) -> KeypointNetConfig:
        """The keypoint net every training set gets (PCK at the first of ``pck_thresholds``)."""
        return KeypointNetConfig(self.base, self.depth, self.lr, self.sigma, self.pck_thresholds[0],
                                 eye_keypoints=self.eye_keypoints)  # fmt: skip
