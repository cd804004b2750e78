"""Schema of the downstream dense-task evaluation (segmentation / keypoints / depth nets on labeled folders)."""

from __future__ import annotations

from dataclasses import dataclass

from autolabel.errors import ConfigError


@dataclass
class DenseTaskConfig:
    task: str = "segmentation"  # segmentation | keypoints | depth
    base: int = 16  # UNet width of the first stage; stages double it
    depth: int = 3  # UNet down/up stages
    size: int = 32  # images (and labels) are resized to size x size
    batch_size: int = 8
    lr: float = 1e-3
    max_epochs: int = 20
    max_steps: int = -1  # -1: run max_epochs
    val_fraction: float = 0.1  # used when no separate validation folder is given
    augment: bool = True  # random horizontal flips
    pck_threshold: float = 0.1  # fraction of the image diagonal
    heatmap_sigma: float = 1.5  # keypoint target Gaussian, pixels
    min_depth: float = 1e-3
    max_depth: float = 80.0
    num_workers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in ("segmentation", "keypoints", "depth"):
            raise ConfigError(f"dense.task={self.task!r}: use segmentation, keypoints or depth")
        if self.base < 1 or self.depth < 1 or self.size < 2**self.depth:
            raise ConfigError(f"dense.base >= 1, depth >= 1 and size >= 2**depth required (size={self.size})")
        if self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"dense.batch_size={self.batch_size} must be >= 1 and lr={self.lr} > 0")
        if self.max_epochs < 1 or self.max_steps == 0 or self.max_steps < -1 or self.num_workers < 0:
            raise ConfigError(f"dense.max_epochs={self.max_epochs} must be >= 1, max_steps={self.max_steps} -1 or "
                              f">= 1 and num_workers={self.num_workers} >= 0")  # fmt: skip
        if self.heatmap_sigma <= 0:
            raise ConfigError(f"dense.heatmap_sigma={self.heatmap_sigma} must be > 0 (pixels)")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"dense.val_fraction={self.val_fraction} must be in [0, 1)")
        if not 0.0 < self.pck_threshold <= 1.0:
            raise ConfigError(f"dense.pck_threshold={self.pck_threshold} must be in (0, 1]")
        if not 0.0 < self.min_depth < self.max_depth:
            raise ConfigError(f"dense.min_depth={self.min_depth} / max_depth={self.max_depth}: need 0 < min < max")
