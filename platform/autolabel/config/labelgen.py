"""HandsOff label-generator, label-training and synthesis schemas (OmegaConf-structured dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field

from autolabel.errors import ConfigError


@dataclass
class LabelGeneratorConfig:
    task: str = "segmentation"  # segmentation | keypoints | depth
    n_classes: int = -1  # -1 = from data (max label + 1)
    n_keypoints: int = 0
    n_members: int = 10
    hidden: list[int] = field(default_factory=lambda: [256, 32])
    working_resolution: int = -1  # -1 = the generator's image resolution
    layers: list[int] = field(default_factory=list)  # empty = every feature map
    fp16: bool = True
    heatmap_sigma: float = 2.0
    min_class_pixels: int = 30
    depth_loss: str = "l1"  # l1 | l2

    def __post_init__(self) -> None:
        if self.task not in ("segmentation", "keypoints", "depth"):
            raise ConfigError(f"label_generator.task={self.task!r}: use segmentation, keypoints or depth")
        if self.n_members < 1:
            raise ConfigError(f"label_generator.n_members={self.n_members} must be >= 1 (10 in the reference)")
        if len(self.hidden) != 2 or min(self.hidden) < 1:
            raise ConfigError(f"label_generator.hidden={list(self.hidden)} must be two positive widths, e.g. [256, 32]")
        if self.task == "keypoints" and self.n_keypoints < 1:
            raise ConfigError(
                "label_generator.n_keypoints must be >= 1 for task=keypoints: set it to the keypoint count"
            )
        if self.heatmap_sigma <= 0:
            raise ConfigError(f"label_generator.heatmap_sigma={self.heatmap_sigma} must be > 0 (2 pixels is typical)")
        if self.min_class_pixels < 0:
            raise ConfigError(
                f"label_generator.min_class_pixels={self.min_class_pixels} must be >= 0 (30 in reference)"
            )
        if self.depth_loss not in ("l1", "l2"):
            raise ConfigError(f"label_generator.depth_loss={self.depth_loss!r}: use l1 or l2")


@dataclass
class LabelTrainConfig:
    lr: float = 1e-3
    batch_pixels: int = 64  # pixels per member per step (reference 64); larger is faster
    pixels_per_image: int = 4096  # pixels sampled from each picked image per step
    images_per_step: int = 1
    max_steps: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"label_train.lr={self.lr} must be > 0 (1e-3 in the reference)")
        for name in ("batch_pixels", "pixels_per_image", "images_per_step", "max_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"label_train.{name}={getattr(self, name)} must be >= 1")


@dataclass
class SynthesisConfig:
    n: int = 1000
    seed: int = 0
    truncation_psi: float = 0.7
    batch_size: int = 8
    filter_fraction: float = 0.1
    drop_least_uncertain: int = 30
    out: str = "synthetic"
    save_uncertainty: bool = True

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"synthesis.n={self.n} must be >= 1 (number of labeled images to keep)")
        if self.batch_size < 1:
            raise ConfigError(f"synthesis.batch_size={self.batch_size} must be >= 1")
        if not 0.0 <= self.filter_fraction < 1.0:
            raise ConfigError(f"synthesis.filter_fraction={self.filter_fraction} must be in [0, 1) (0.1 = DatasetGAN)")
        if self.drop_least_uncertain < 0:
            raise ConfigError(
                f"synthesis.drop_least_uncertain={self.drop_least_uncertain} must be >= 0 (30 = DatasetGAN)"
            )
